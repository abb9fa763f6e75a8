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
use std::sync::Mutex;

/// A server that has not answered in this long is taken for stuck (it answers in the time of a fork).
const ANSWER_WITHIN_S: i64 = 10;
/// Servers started before this process stops trying (each that ends early costs one start).
const MOST_STARTS: u32 = 3;

struct Server {
    /// The helper it was started from: a helper of another path is spawned, not forked.
    path: String,
    pid: Pid,
    sock: OwnedFd,
}

struct State {
    server: Option<Server>,
    starts: u32,
}

/// Requests are one at a time: each waits for its own answer on the one socket.
static STATE: Mutex<State> = Mutex::new(State { server: None, starts: 0 });

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
    let Ok(mut state) = STATE.lock() else { return Forked::No };
    if state.server.is_none() {
        if state.starts >= MOST_STARTS {
            return Forked::No;
        }
        state.starts += 1;
        state.server = start(path, cpath);
    }
    let Some(server) = state.server.as_ref() else { return Forked::No };
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
    // Gone or stuck: end it (our child) and reap it; the next helper starts another.
    let gone = state.server.take().expect("checked above");
    let _ = kill(gone.pid, Signal::SIGKILL);
    let _ = waitpid(gone.pid, None);
    outcome
}

fn start(path: &str, cpath: &CStr) -> Option<Server> {
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
    Some(Server { path: path.to_owned(), pid, sock: ours })
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
