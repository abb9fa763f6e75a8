//! This process's helper server (isolate_core::server): started on the first helper, it forks
//! the helpers from then on, warm and cold, and ends when Node does (its socket closes). Where it
//! cannot be started, or stops answering, helpers are spawned the usual way.

use isolate_core::server::{COLD, SOCKET_FD, WARM};
use isolate_core::Step;
use nix::errno::Errno;
use nix::spawn::{posix_spawn, PosixSpawnAttr, PosixSpawnFileActions};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::socket::{setsockopt, sockopt::ReceiveTimeout};
use nix::sys::time::TimeVal;
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use std::ffi::CStr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// A server that has not answered in this long is taken for stuck (it answers in the time of a fork).
const ANSWER_WITHIN_S: i64 = 10;
/// A request that waits this long for the one before it spawns its helper instead: queued behind
/// a stuck server, every start would hold a thread of libuv's pool (4 by default) for up to
/// [`ANSWER_WITHIN_S`], and with them every fs, dns and crypto call of the process.
const WAIT_FOR_TURN: Duration = Duration::from_millis(250);
/// Servers started before this process stops trying (each that ends early costs one start).
const MOST_STARTS: u32 = 3;

struct Server {
    /// The helper it was started from: a helper of another path is spawned, not forked.
    path: String,
    pid: Pid,
    sock: OwnedFd,
    /// This process's [`epoch`] when it was started: a forked helper has the server's
    /// credentials, cgroups and limits, not this process's as they are now.
    epoch: u32,
}

/// This process's ids and cgroups as they were last looked at ([`epoch`]).
static SEEN: Mutex<Option<Identity>> = Mutex::new(None);
static EPOCH: AtomicU32 = AtomicU32::new(0);

#[derive(PartialEq, Eq)]
struct Identity {
    euid: u32,
    egid: u32,
    groups: Vec<u32>,
    /// /proc/self/cgroup's text (empty where /proc cannot say).
    cgroups: Vec<u8>,
}

/// A number that changes whenever this process's effective ids, supplementary groups or cgroups
/// have changed since the last call (a service that drops root with process.setuid once it has
/// started, or is moved to another cgroup): a helper made under another one would work with ids
/// or in a cgroup the caller no longer has. A few syscalls and one pread (~2 us).
pub fn epoch() -> u32 {
    let groups = nix::unistd::getgroups().map(|g| g.iter().map(|g| g.as_raw()).collect()).unwrap_or_default();
    let now = Identity { euid: nix::unistd::geteuid().as_raw(), egid: nix::unistd::getegid().as_raw(), groups, cgroups: own_cgroups() };
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    if seen.as_ref().is_some_and(|before| *before != now) {
        EPOCH.fetch_add(1, Ordering::AcqRel);
    }
    *seen = Some(now);
    EPOCH.load(Ordering::Acquire)
}

/// This process's cgroups, read from a descriptor opened once (the kernel writes the text anew
/// for each read).
fn own_cgroups() -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    static FILE: std::sync::OnceLock<Option<std::fs::File>> = std::sync::OnceLock::new();
    let Some(file) = FILE.get_or_init(|| std::fs::File::open("/proc/self/cgroup").ok()) else { return Vec::new() };
    let mut text = vec![0u8; 4096];
    let mut len = 0;
    loop {
        match file.read_at(&mut text[len..], len as u64) {
            Ok(0) => break,
            Ok(n) => {
                len += n;
                if len == text.len() {
                    text.resize(text.len() * 2, 0);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Vec::new(),
        }
    }
    text.truncate(len);
    text
}

struct State {
    /// None while lent to a request (`busy`), or where there is none.
    server: Option<Server>,
    starts: u32,
    /// A request is out: requests are one at a time, each waits for its own answer on the one socket.
    busy: bool,
}

static STATE: Mutex<State> = Mutex::new(State { server: None, starts: 0, busy: false });
/// Signalled when a request is done with the server.
static TURN: Condvar = Condvar::new();

/// The server, lent to one request (outside the lock, so that others can give up waiting); given
/// back when dropped, unless the request took it to end it. `retired`: a server of a past epoch,
/// for the request to end (also outside the lock: one of root's that this process may no longer
/// kill is waited for up to 2 s).
struct Lent {
    server: Option<Server>,
    retired: Option<Server>,
}

impl Drop for Lent {
    fn drop(&mut self) {
        if let Some(old) = self.retired.take() {
            end(old);
        }
        let mut state = STATE.lock().unwrap_or_else(|e| e.into_inner());
        state.server = self.server.take();
        state.busy = false;
        drop(state);
        TURN.notify_one();
    }
}

/// What became of a request for a helper.
pub enum Forked {
    /// The server forked it (and reaps it).
    Yes,
    /// No helper has these descriptors: spawn one with them.
    No,
    /// The request went out and no answer came: it may have forked a helper that holds these
    /// descriptors, so a second one must not get them. ETIMEDOUT: it stopped answering;
    /// ECONNRESET: it ended.
    Unknown(Errno),
}

/// A helper forked by the server, given its descriptors in the order of their slots (see
/// isolate_core::server) and the umask it takes (this process's, as an exec'd helper would
/// inherit it).
pub fn fork_helper(path: &str, cpath: &CStr, warm: bool, fds: &[&OwnedFd], umask: Option<u32>) -> Forked {
    let Some(mut lent) = lend(path, cpath) else { return Forked::No };
    if let Some(old) = lent.retired.take() {
        end(old);
    }
    let Some(server) = lent.server.as_ref() else { return Forked::No };
    if server.path != path {
        return Forked::No;
    }
    // This process out of descriptors is not the server's failure: spawn (which reports it).
    let Ok(cwd) =
        nix::fcntl::open(".", nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty())
    else {
        return Forked::No;
    };
    let outcome = match ask(&server.sock, warm, umask, &cwd, fds) {
        Answer::Pid(pid) if pid > 0 => return Forked::Yes,
        // The server could not fork now (out of processes or memory): so would a spawn, which
        // reports it.
        Answer::Pid(_) => return Forked::No,
        Answer::NotSent => Forked::No,
        Answer::None(errno) => Forked::Unknown(errno),
    };
    // Gone or stuck: end it (still holding the turn); the next helper starts another.
    end(lent.server.take().expect("checked above"));
    outcome
}

/// The server for one request, started if there is none (or it is of a past [`epoch`]); None when
/// the request before has not ended within [`WAIT_FOR_TURN`], or no server can be had.
fn lend(path: &str, cpath: &CStr) -> Option<Lent> {
    let state = STATE.lock().ok()?;
    let (mut state, waited) = TURN.wait_timeout_while(state, WAIT_FOR_TURN, |s| s.busy).ok()?;
    if waited.timed_out() {
        return None;
    }
    let epoch = epoch();
    let mut retired = None;
    if state.server.as_ref().is_some_and(|s| s.epoch != epoch) {
        // This process is not who it was when the server started: a server of the new one takes
        // over (the old one's helpers keep running, as they do when a server is ended), and
        // warm helpers made before are refused at their spec (their epoch is past).
        retired = state.server.take();
        state.starts = state.starts.saturating_sub(1);
    }
    if state.server.is_none() && state.starts < MOST_STARTS {
        state.starts += 1;
        state.server = start(path, cpath, epoch);
    }
    state.busy = true;
    Some(Lent { server: state.server.take(), retired })
}

/// End a server (our child) and reap it. The helpers it forked run on: it is no parent they die
/// with. Its socket closes first, which ends a server that still reads it; the kill is for one
/// that is stuck, and fails for one of root's once this process dropped root: then it is waited
/// for a while only (it would stay a zombie rather than hold this thread).
fn end(server: Server) {
    let Server { pid, sock, .. } = server;
    drop(sock);
    let killed = kill(pid, Signal::SIGKILL).is_ok();
    if killed {
        let _ = waitpid(pid, None);
        return;
    }
    for _ in 0..2000 {
        match waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
            Ok(nix::sys::wait::WaitStatus::StillAlive) => std::thread::sleep(std::time::Duration::from_millis(1)),
            _ => return,
        }
    }
}

fn start(path: &str, cpath: &CStr, epoch: u32) -> Option<Server> {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    let (ours, theirs) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC).ok()?;
    let timeout = TimeVal::new(ANSWER_WITHIN_S, 0);
    setsockopt(&ours, ReceiveTimeout, &timeout).ok()?;
    let null = nix::fcntl::open("/dev/null", nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty()).ok()?;
    let mut actions = PosixSpawnFileActions::init().ok()?;
    for (fd, slot) in [(&null, 0), (&null, 1), (&null, 2), (&theirs, SOCKET_FD)] {
        actions.add_dup2(fd.as_raw_fd(), slot).ok()?;
    }
    let mut attr = PosixSpawnAttr::init().ok()?;
    attr.set_sigmask(&SigSet::empty()).ok()?;
    attr.set_sigdefault(&SigSet::all()).ok()?;
    attr.set_flags(crate::helper_spawn_flags()).ok()?;
    let argv = [c"isolate-helper".to_owned(), c"--warm".to_owned(), c"--server".to_owned()];
    let envp = crate::helper_env();
    let pid = isolate_core::priority::born_behind(|| posix_spawn(cpath, &actions, &attr, &argv, &envp)).ok()?;
    Some(Server { path: path.to_owned(), pid, sock: ours, epoch })
}

enum Answer {
    /// The helper's pid, or a negative errno.
    Pid(i32),
    /// The request did not go out: the server has none of the descriptors.
    NotSent,
    /// It went out, and no answer came: ETIMEDOUT (none in time) or ECONNRESET (the server ended).
    None(Errno),
}

/// One request: the kind, the umask, this process's working directory and the helper's
/// descriptors go; the pid (or a negative errno) comes back.
fn ask(sock: &OwnedFd, warm: bool, umask: Option<u32>, cwd: &OwnedFd, fds: &[&OwnedFd]) -> Answer {
    let umask = umask.map_or(-1, |m| m as i32);
    let mut request = Vec::with_capacity(8);
    request.extend_from_slice(if warm { WARM } else { COLD });
    request.extend_from_slice(&umask.to_ne_bytes());
    let attached: Vec<RawFd> = std::iter::once(cwd.as_raw_fd()).chain(fds.iter().map(|fd| fd.as_raw_fd())).collect();
    if isolate_core::sys::send_message(sock, &request, &attached, Step::ReadSpec).is_err() {
        return Answer::NotSent;
    }
    let mut answer = [0u8; 4];
    loop {
        // SAFETY: reading into our own 4-byte buffer.
        let n = unsafe { libc::recv(sock.as_raw_fd(), answer.as_mut_ptr().cast(), answer.len(), 0) };
        match n {
            4 => return Answer::Pid(i32::from_ne_bytes(answer)),
            0.. => return Answer::None(Errno::ECONNRESET),
            _ if Errno::last() == Errno::EINTR => continue,
            _ if matches!(Errno::last(), Errno::EAGAIN | Errno::ETIMEDOUT) => return Answer::None(Errno::ETIMEDOUT),
            _ => return Answer::None(Errno::last()),
        }
    }
}
