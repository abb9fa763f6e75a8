//! The Node-API binding: JS-shaped options become the typed spec in one conversion, and the
//! helper is forked by the helper server (server.rs), itself started with posix_spawn (vfork
//! semantics: the cost does not grow with Node's heap), or where there is none spawned that way.
//! Nothing here waits on a child or parks a thread (a pool thread waits for the server's answer,
//! a fork's time, as it waits for a posix_spawn); JavaScript owns the returned fds.

use isolate_core::protocol::SpecMessage;
use isolate_core::spec::Seccomp;
use isolate_core::Spec;
use napi::bindgen_prelude::*;
use napi_derive::napi;
use nix::fcntl::OFlag;
use nix::spawn::{posix_spawn, PosixSpawnAttr, PosixSpawnFileActions, PosixSpawnFlags};
use nix::sys::signal::SigSet;
use std::ffi::CString;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, OnceLock};

pub mod handover;
mod server;
mod teardown;
pub mod unreaped;

/// How one of the sandbox's stdio slots is wired, as the TypeScript layer encodes it.
const STDIO_PIPE: i32 = -1;
const STDIO_IGNORE: i32 = -2;
const STDIO_INHERIT: i32 = -3;
/// A pipe the command may open again by path (`/dev/stdout`): for a sandbox with a user namespace
/// of its own (lib/options.ts stdioCode).
const STDIO_REOPENABLE_PIPE: i32 = -4;
/// stdio[2] only: the command's stderr is its stdout, one file (`2>&1`).
const STDIO_AS_STDOUT: i32 = -5;

/// How a helper (or the helper server, which forks them) is spawned: with a clean signal mask and
/// dispositions (Node ignores SIGPIPE and may block signals on this thread), in a session of its
/// own. Not in Node's process group: Ctrl-C or a terminal hanging up signals that whole group,
/// and a helper killed there would leave its sandbox's cgroups behind; Node's end closes the
/// helper's socket instead, and the helper ends its sandbox and cleans up. A session and not only
/// a process group: no terminal of the caller's to hold, and where scheduling autogroups apply,
/// the sandboxes' setup works in a group beside Node's, not among its threads
/// (isolate_core::priority).
pub(crate) fn helper_spawn_flags() -> PosixSpawnFlags {
    PosixSpawnFlags::POSIX_SPAWN_SETSIGMASK
        | PosixSpawnFlags::POSIX_SPAWN_SETSIGDEF
        | PosixSpawnFlags::from_bits_retain(libc::POSIX_SPAWN_SETSID as libc::c_int)
}

#[napi(object)]
pub struct SpawnedHelper {
    /// The helper's pid (reap it with `reapHelper` once its control socket ends); 0 for one the
    /// helper server forked, which is the server's child and reaped there.
    pub pid: i32,
    /// Our end of the control socket: events in, requests out.
    pub control: i32,
    pub stdin: Option<i32>,
    pub stdout: Option<i32>,
    pub stderr: Option<i32>,
    /// A long-lived sandbox: our end of the exec socket (see `sendExec`); never wrapped by libuv.
    pub exec: Option<i32>,
    /// A warm helper: this process's identity epoch when it was made (see `sendSpec`).
    pub epoch: Option<u32>,
}

impl SpawnedHelper {
    /// Every descriptor it hands to JavaScript.
    fn fds(&self) -> impl Iterator<Item = RawFd> {
        [Some(self.control), self.stdin, self.stdout, self.stderr, self.exec].into_iter().flatten()
    }
}

/// Our ends of one exec's stdio pipes.
#[napi(object)]
pub struct ExecStdio {
    pub stdin: Option<i32>,
    pub stdout: Option<i32>,
    pub stderr: Option<i32>,
}

fn option_error(message: String) -> Error {
    Error::new(Status::InvalidArg, message)
}

/// The helper server was sent a helper's descriptors and did not answer: the start fails rather
/// than give them to a second helper, spawned here, beside one the server may have forked.
fn server_silent(errno: nix::errno::Errno) -> Error {
    sys_error("the helper server did not answer a request for a helper, and was ended", errno)
}

fn sys_error(what: &str, e: nix::errno::Errno) -> Error {
    Error::new(Status::GenericFailure, format!("{what}: {} ({e:?})", e.desc()))
}

/// Convert and validate options without spawning (what `spawnIsolated` checks first).
#[napi]
pub fn validate_spec(spec: serde_json::Value) -> Result<()> {
    to_spec(spec).map(|_| ())
}

/// Which of the spec's mounts an init whose root was built ahead makes at its release: the
/// helper's own rule ([`isolate_core::plan::made_at_release`]), which the pool (lib/pool.ts)
/// asks to group sandboxes by the rest of their root.
#[napi]
pub fn made_at_release(spec_json: String) -> Result<Vec<bool>> {
    let spec = Spec::from_json(spec_json.as_bytes()).map_err(|e| option_error(format!("options: {e}")))?;
    Ok(isolate_core::plan::made_at_release(&spec))
}

fn to_spec(value: serde_json::Value) -> Result<Spec> {
    let spec: Spec = serde_json::from_value(value).map_err(|e| option_error(format!("options: {e}")))?;
    isolate_core::validate::validate(&spec).map_err(|e| option_error(e.to_string()))?;
    Ok(spec)
}

struct Wiring {
    /// Fds that become the helper's 0..=4 (and 5, the exec socket), in order.
    child: Vec<OwnedFd>,
    /// Our ends, handed to JavaScript.
    stdin: Option<OwnedFd>,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    control: OwnedFd,
    exec: Option<OwnedFd>,
}

/// The whole environment of a helper, the helper server and the probe: the cgroup parent this
/// process names (isolate_core::cgroup::PARENT_ENV), if it does, and nothing else. Read once per
/// process, on a JavaScript thread, at its first start or probe ([`read_helper_env`]): the pool
/// threads that spawn helpers never read the environment (a getenv there would race a setenv of
/// the main thread's `process.env`), and every helper gets what the helper server got.
static HELPER_ENV: OnceLock<Vec<CString>> = OnceLock::new();

/// On a JavaScript thread, before a helper or the probe is started: see [`HELPER_ENV`].
fn read_helper_env() {
    use std::os::unix::ffi::OsStrExt;
    let name = isolate_core::cgroup::PARENT_ENV;
    HELPER_ENV.get_or_init(|| {
        let value = std::env::var_os(name);
        // What this process's own cgroup sweeps and probe see too, read no more.
        isolate_core::cgroup::fix_parent_env(value.clone());
        value.and_then(|v| CString::new([name.as_bytes(), b"=", v.as_bytes()].concat()).ok()).into_iter().collect()
    });
}

pub(crate) fn helper_env() -> Vec<CString> {
    HELPER_ENV.get().cloned().unwrap_or_default()
}

/// The three stdio slots of a command: the child's ends in slot order, and ours (pipes only).
fn stdio_ends(stdio: &[i32]) -> Result<(Vec<OwnedFd>, [Option<OwnedFd>; 3])> {
    let mut child: Vec<OwnedFd> = Vec::with_capacity(3);
    let mut ours: [Option<OwnedFd>; 3] = [None, None, None];
    // One open of /dev/null for this command's ignored slots (a dup is no path walk); never one
    // shared with another sandbox's.
    let mut null: Option<RawFd> = None;
    for slot in 0..3 {
        let mode = stdio.get(slot).copied().unwrap_or(STDIO_PIPE);
        let fd = match mode {
            STDIO_PIPE | STDIO_REOPENABLE_PIPE => {
                let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| sys_error("pipe2", e))?;
                if mode == STDIO_REOPENABLE_PIPE {
                    isolate_core::sys::let_holders_reopen(&r).map_err(|e| sys_error("fchmod of a stdio pipe", e))?;
                }
                if slot == 0 {
                    ours[0] = Some(w);
                    r
                } else {
                    ours[slot] = Some(r);
                    w
                }
            }
            STDIO_IGNORE => match null {
                // `child` holds the first one until the message is sent.
                Some(fd) => dup_high(fd)?,
                None => {
                    let fd = nix::fcntl::open("/dev/null", OFlag::O_RDWR | OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty())
                        .map_err(|e| sys_error("open /dev/null", e))?;
                    null = Some(fd.as_raw_fd());
                    fd
                }
            },
            STDIO_INHERIT => dup_high(slot as RawFd)?,
            // The same open file as stdout: one pipe, written in the command's own order.
            STDIO_AS_STDOUT if slot == 2 => dup_high(child[1].as_raw_fd())?,
            n if n >= 0 => dup_high(n)?,
            n => return Err(option_error(format!("options.stdio[{slot}]: unknown mode {n}"))),
        };
        child.push(fd);
    }
    Ok((child, ours))
}

/// The helper's fds around the stdio ends `stdio_ends` made: the control socket, the spec
/// memfd, and for a long-lived sandbox the exec socket.
fn wire(spec_json: &[u8], (mut child, ours): (Vec<OwnedFd>, [Option<OwnedFd>; 3]), persistent: bool) -> Result<Wiring> {
    let (control, helper_control) = socket_pair(nix::sys::socket::SockType::Stream)?;
    child.push(helper_control);
    child.push(spec_memfd(spec_json)?);
    let exec = if persistent {
        let (ours, helper_exec) = socket_pair(nix::sys::socket::SockType::SeqPacket)?;
        child.push(helper_exec);
        Some(ours)
    } else {
        None
    };
    let [stdin, stdout, stderr] = ours;
    Ok(Wiring { child, stdin, stdout, stderr, control, exec })
}

/// A close-on-exec unix socket pair: Stream for the control socket's JSON lines, SeqPacket for
/// messages that carry fds.
fn socket_pair(kind: nix::sys::socket::SockType) -> Result<(OwnedFd, OwnedFd)> {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag};
    socketpair(AddressFamily::Unix, kind, None, SockFlag::SOCK_CLOEXEC).map_err(|e| sys_error("socketpair", e))
}

/// A close-on-exec copy above the helper's fixed slots, so the dup2 sequence never clobbers it.
fn dup_high(fd: RawFd) -> Result<OwnedFd> {
    // SAFETY: a descriptor of the caller's (stdio to hand over) or one of ours, open meanwhile;
    // fcntl fails with EBADF on a number that names nothing.
    isolate_core::sys::dup_above(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }, HIGH_FDS).map_err(|e| sys_error(&format!("stdio fd {fd}"), e))
}

/// Where [`dup_high`] copies go: above the helper's fixed slots (0-5).
const HIGH_FDS: RawFd = 10;

/// Close-on-exec copies of `fds` above every slot a helper's descriptors go to: posix_spawn runs
/// its dup2 actions in order, so a source numbered at a slot an earlier action fills (a pipe or
/// socket made while a low descriptor of Node's was free) would be overwritten before its own.
fn above_slots(fds: &[&OwnedFd]) -> Result<Vec<OwnedFd>> {
    fds.iter().map(|fd| dup_high(fd.as_raw_fd())).collect()
}

/// The spec travels in a sealed memfd: no size limit, no blocking write, invisible in argv.
fn spec_memfd(bytes: &[u8]) -> Result<OwnedFd> {
    use nix::sys::memfd::{memfd_create, MFdFlags};
    let fd = memfd_create("isolate-spec", MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING).map_err(|e| sys_error("memfd_create", e))?;
    let mut off = 0;
    while off < bytes.len() {
        off += nix::unistd::write(&fd, &bytes[off..]).map_err(|e| sys_error("write spec", e))?;
    }
    nix::unistd::lseek(&fd, 0, nix::unistd::Whence::SeekSet).map_err(|e| sys_error("lseek spec", e))?;
    // SAFETY: sealing our own memfd.
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, libc::F_SEAL_WRITE | libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL) };
    Ok(fd)
}

/// Start the helper for one sandbox, given the spec as JSON text. `stdio` holds three slots: -1
/// pipe, -2 ignore, -3 inherit, or an fd number to hand over. Everything happens on the libuv
/// thread pool (parsing and validating the spec, which rejects with `InvalidArg`, the pipes, the
/// posix_spawn), so the event loop neither converts objects nor waits for a fork.
#[napi(ts_return_type = "Promise<SpawnedHelper>")]
pub fn spawn_helper(helper_path: String, spec_json: String, stdio: Vec<i32>) -> Result<AsyncTask<SpawnHelper>> {
    let path = CString::new(helper_path.clone()).map_err(|_| option_error("helper path contains NUL".into()))?;
    read_helper_env();
    // Now, not on the pool: an fd number the caller handed over must be taken before it returns.
    let stdio = Some(stdio_ends(&stdio)?);
    Ok(AsyncTask::new(SpawnHelper { helper_path, path, spec_json, stdio }))
}

pub struct SpawnHelper {
    helper_path: String,
    path: CString,
    spec_json: String,
    stdio: Option<(Vec<OwnedFd>, [Option<OwnedFd>; 3])>,
}

/// The spec from JSON text, validated, with the caller's umask of this moment (what a cold
/// helper would inherit; a warm one was spawned earlier).
fn parse_spec(json: &str) -> Result<Spec> {
    let mut spec = Spec::from_json(json.as_bytes()).map_err(|e| option_error(format!("options: {e}")))?;
    isolate_core::validate::validate(&spec).map_err(|e| option_error(e.to_string()))?;
    spec.umask = isolate_core::sys::current_umask();
    Ok(spec)
}

/// The spec's seccomp filter as bytes ([`isolate_core::seccomp::Program::to_bytes`]), compiled once per Node process:
/// the built-in one, and the last few custom profiles (by their text and the capabilities that
/// decide which of their rules apply). Each helper is handed it with its spec ([`SpecMessage`])
/// instead of compiling it again; a warm helper, which has the built-in one at hand, is handed
/// only a custom profile's (`warm`). A profile that does not compile is refused here, as an
/// option, before any process.
fn filter_for(spec: &Spec, warm: bool) -> Result<Option<Arc<[u8]>>> {
    /// A custom profile's text, the capabilities it was compiled for, its filter.
    type Compiled = (String, Vec<String>, Arc<[u8]>);
    /// The built-in one, without and with core dumps.
    static BUILT_IN: [OnceLock<Arc<[u8]>>; 2] = [OnceLock::new(), OnceLock::new()];
    static PROFILES: Mutex<Vec<Compiled>> = Mutex::new(Vec::new());
    const KEPT_PROFILES: usize = 8;
    match &spec.seccomp {
        Seccomp::None => Ok(None),
        Seccomp::Default if warm => Ok(None),
        Seccomp::Default => {
            let dumps = spec.limits.core_dumps;
            Ok(Some(BUILT_IN[usize::from(dumps)].get_or_init(|| isolate_core::seccomp::default_program_for(dumps).to_bytes().into()).clone()))
        }
        Seccomp::Profile { json } => {
            let mut kept = PROFILES.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(i) = kept.iter().position(|(j, caps, _)| j == json && *caps == spec.capabilities) {
                let hit = kept.remove(i);
                let bytes = hit.2.clone();
                kept.insert(0, hit);
                return Ok(Some(bytes));
            }
            let program = isolate_core::supervisor::compile_seccomp(spec)
                .map_err(|e| {
                    option_error(format!(
                        "options.seccomp: {} (it must be a Docker/OCI seccomp profile: defaultAction, syscalls[].names/action/args)",
                        e.message
                    ))
                })?
                .ok_or_else(|| Error::from_reason("a custom seccomp profile compiled to no filter"))?;
            let bytes: Arc<[u8]> = program.to_bytes().into();
            kept.insert(0, (json.clone(), spec.capabilities.clone(), bytes.clone()));
            kept.truncate(KEPT_PROFILES);
            Ok(Some(bytes))
        }
    }
}

impl Task for SpawnHelper {
    type Output = SpawnedHelper;
    type JsValue = SpawnedHelper;

    fn compute(&mut self) -> Result<SpawnedHelper> {
        let spec = parse_spec(&self.spec_json)?;
        let filter = filter_for(&spec, false)?;
        let stdio = self.stdio.take().ok_or_else(|| Error::from_reason("the helper was already spawned"))?;
        let w = wire(&SpecMessage::encode(&spec, filter.as_deref()), stdio, spec.persistent)?;
        let forked = server::fork_helper(&self.helper_path, &self.path, false, &w.child.iter().collect::<Vec<_>>(), spec.umask);
        if let server::Forked::Unknown(errno) = forked {
            // Dropping `w` closes our ends: a helper the server did fork sees its caller gone.
            return Err(server_silent(errno));
        }
        if matches!(forked, server::Forked::Yes) {
            drop(w.child);
            return Ok(SpawnedHelper {
                pid: 0,
                control: w.control.into_raw_fd(),
                stdin: w.stdin.map(IntoRawFd::into_raw_fd),
                stdout: w.stdout.map(IntoRawFd::into_raw_fd),
                stderr: w.stderr.map(IntoRawFd::into_raw_fd),
                exec: w.exec.map(IntoRawFd::into_raw_fd),
                epoch: None,
            });
        }
        let mut actions = PosixSpawnFileActions::init().map_err(|e| sys_error("posix_spawn_file_actions_init", e))?;
        let sources = above_slots(&w.child.iter().collect::<Vec<_>>())?;
        for (slot, fd) in sources.iter().enumerate() {
            actions.add_dup2(fd.as_raw_fd(), slot as RawFd).map_err(|e| sys_error("posix_spawn_file_actions_adddup2", e))?;
        }
        let mut attr = PosixSpawnAttr::init().map_err(|e| sys_error("posix_spawnattr_init", e))?;
        // Node ignores SIGPIPE and may block signals in this thread; the helper starts clean.
        attr.set_sigmask(&SigSet::empty()).map_err(|e| sys_error("posix_spawnattr_setsigmask", e))?;
        attr.set_sigdefault(&SigSet::all()).map_err(|e| sys_error("posix_spawnattr_setsigdefault", e))?;
        attr.set_flags(helper_spawn_flags()).map_err(|e| sys_error("posix_spawnattr_setflags", e))?;
        let argv = [CString::new("isolate-helper").expect("static")];
        let envp = helper_env();
        let pid = isolate_core::priority::born_behind(|| posix_spawn(self.path.as_c_str(), &actions, &attr, &argv, &envp))
            .map_err(|e| Error::new(Status::GenericFailure, format!("posix_spawn {}: {} ({e:?})", self.helper_path, e.desc())))?;
        drop(w.child);
        Ok(SpawnedHelper {
            pid: pid.as_raw(),
            control: w.control.into_raw_fd(),
            stdin: w.stdin.map(IntoRawFd::into_raw_fd),
            stdout: w.stdout.map(IntoRawFd::into_raw_fd),
            stderr: w.stderr.map(IntoRawFd::into_raw_fd),
            exec: w.exec.map(IntoRawFd::into_raw_fd),
            epoch: None,
        })
    }

    fn resolve(&mut self, env: Env, output: SpawnedHelper) -> Result<SpawnedHelper> {
        handover::hold(&env, output.fds());
        Ok(output)
    }
}

/// Hand one exec to a long-lived sandbox's helper: the request and the command's stdio (the
/// child's ends, as SCM_RIGHTS) in one message on the exec socket `exec_fd`. Never blocks: a
/// full socket throws with code `QueueFull` (try again shortly). Returns our ends of the pipes.
#[napi]
pub fn send_exec(env: Env, exec_fd: i32, request_json: String, stdio: Vec<i32>) -> Result<ExecStdio> {
    // JSON text, not an object: napi lists an object's inherited enumerable properties too (a
    // property set on Object.prototype would be read as part of the request).
    let req: isolate_core::protocol::ExecRequest = serde_json::from_str(&request_json).map_err(|e| option_error(format!("options: {e}")))?;
    isolate_core::validate::validate_exec(&req).map_err(|e| option_error(e.to_string()))?;
    let bytes = serde_json::to_vec(&req).map_err(|e| Error::from_reason(e.to_string()))?;
    if bytes.len() > isolate_core::exec_server::MAX_REQUEST {
        return Err(option_error(format!(
            "options.args: the command, its arguments and environment take {} bytes; at most {} fit",
            bytes.len(),
            isolate_core::exec_server::MAX_REQUEST
        )));
    }
    send_with_stdio(&env, exec_fd, &bytes, &stdio)
}

/// One message on a SOCK_SEQPACKET socket of a helper, the child's ends of the stdio attached;
/// never blocks (a full socket throws `QueueFull`). Returns our ends, held for `env`'s thread
/// until JavaScript has wrapped them (`takeFds`): a worker terminated before it did would leave
/// them open in the process (see handover).
fn send_with_stdio(env: &Env, fd: RawFd, bytes: &[u8], stdio: &[i32]) -> Result<ExecStdio> {
    let (child, ours) = stdio_ends(stdio)?;
    let raw: Vec<RawFd> = child.iter().map(AsRawFd::as_raw_fd).collect();
    let iov = [std::io::IoSlice::new(bytes)];
    let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&raw)];
    let flags = nix::sys::socket::MsgFlags::MSG_DONTWAIT | nix::sys::socket::MsgFlags::MSG_NOSIGNAL;
    loop {
        match nix::sys::socket::sendmsg::<()>(fd, &iov, &cmsg, flags, None) {
            Ok(_) => break,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(nix::errno::Errno::EAGAIN) => return Err(Error::new(Status::QueueFull, "the helper's socket is full".to_string())),
            Err(e) => return Err(sys_error("sendmsg to the helper", e)),
        }
    }
    drop(child);
    let [stdin, stdout, stderr] = ours;
    let io = ExecStdio { stdin: stdin.map(IntoRawFd::into_raw_fd), stdout: stdout.map(IntoRawFd::into_raw_fd), stderr: stderr.map(IntoRawFd::into_raw_fd) };
    handover::hold(env, [io.stdin, io.stdout, io.stderr].into_iter().flatten());
    Ok(io)
}

/// Start a warm helper (`isolate-helper --warm`, see isolate_core::warm) on the libuv thread
/// pool: forked by the helper server (see server.rs), or where that cannot be, spawned with
/// stdio /dev/null, 3 the control socket, 5 the handoff socket (returned as `exec`). It
/// says `{"event":"warm"}` when ready; `sendSpec` then gives it its one sandbox. `ahead`: a spec
/// (JSON) in whose namespaces it makes its init ahead, and with `build_root`, whose root it builds
/// ahead too: a guess of what the next sandbox wants (it checks).
#[napi(ts_return_type = "Promise<SpawnedHelper>")]
pub fn spawn_warm_helper(helper_path: String, ahead: Option<String>, build_root: Option<bool>) -> Result<AsyncTask<SpawnWarmHelper>> {
    read_helper_env();
    let path = CString::new(helper_path.clone()).map_err(|_| option_error("helper path contains NUL".into()))?;
    let word = if build_root.unwrap_or(true) { isolate_core::warm::AHEAD_ROOT } else { isolate_core::warm::AHEAD_NAMESPACES };
    let first = match ahead {
        Some(spec) if word.len() + 1 + spec.len() <= isolate_core::warm::MAX_AHEAD => format!("{word} {spec}"),
        _ => isolate_core::warm::AHEAD_ROOT.into(),
    };
    Ok(AsyncTask::new(SpawnWarmHelper { helper_path, path, first }))
}

pub struct SpawnWarmHelper {
    helper_path: String,
    path: CString,
    /// The first message on the handoff socket (see isolate_core::warm::read_ahead).
    first: String,
}

impl Task for SpawnWarmHelper {
    type Output = SpawnedHelper;
    type JsValue = SpawnedHelper;

    fn compute(&mut self) -> Result<SpawnedHelper> {
        let null =
            nix::fcntl::open("/dev/null", OFlag::O_RDWR | OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty()).map_err(|e| sys_error("open /dev/null", e))?;
        let (control, helper_control) = socket_pair(nix::sys::socket::SockType::Stream)?;
        let (handoff, helper_handoff) = socket_pair(nix::sys::socket::SockType::SeqPacket)?;
        // Waiting in the socket when the helper starts: its first read.
        isolate_core::sys::send_message(&handoff, self.first.as_bytes(), &[], isolate_core::Step::ReadSpec)
            .map_err(|e| Error::from_reason(format!("the warm helper's first message: {}", e.message)))?;
        // Before the fork: a change of ids meanwhile makes this helper's epoch the past one.
        let epoch = Some(server::epoch());
        let forked = server::fork_helper(&self.helper_path, &self.path, true, &[&helper_control, &helper_handoff], isolate_core::sys::current_umask());
        if let server::Forked::Unknown(errno) = forked {
            return Err(server_silent(errno));
        }
        let pid = if matches!(forked, server::Forked::Yes) { 0 } else { self.spawn(&null, &helper_control, &helper_handoff)? };
        Ok(SpawnedHelper { pid, control: control.into_raw_fd(), stdin: None, stdout: None, stderr: None, exec: Some(handoff.into_raw_fd()), epoch })
    }

    fn resolve(&mut self, env: Env, output: SpawnedHelper) -> Result<SpawnedHelper> {
        handover::hold(&env, output.fds());
        Ok(output)
    }
}

impl SpawnWarmHelper {
    /// Where the helper server could not fork it: spawned with stdio /dev/null, 3 the control
    /// socket, 5 the handoff socket.
    fn spawn(&self, null: &OwnedFd, helper_control: &OwnedFd, helper_handoff: &OwnedFd) -> Result<i32> {
        let mut actions = PosixSpawnFileActions::init().map_err(|e| sys_error("posix_spawn_file_actions_init", e))?;
        let [null, helper_control, helper_handoff] =
            <[OwnedFd; 3]>::try_from(above_slots(&[null, helper_control, helper_handoff])?).expect("three in, three out");
        for (fd, slot) in [(&null, 0), (&null, 1), (&null, 2), (&helper_control, 3), (&helper_handoff, 5)] {
            actions.add_dup2(fd.as_raw_fd(), slot).map_err(|e| sys_error("posix_spawn_file_actions_adddup2", e))?;
        }
        let mut attr = PosixSpawnAttr::init().map_err(|e| sys_error("posix_spawnattr_init", e))?;
        attr.set_sigmask(&SigSet::empty()).map_err(|e| sys_error("posix_spawnattr_setsigmask", e))?;
        attr.set_sigdefault(&SigSet::all()).map_err(|e| sys_error("posix_spawnattr_setsigdefault", e))?;
        // No POSIX_SPAWN_SETSCHEDULER: glibc refuses SCHED_IDLE there (EINVAL). The helper puts
        // itself at idle priority first thing (isolate_core::warm).
        attr.set_flags(helper_spawn_flags()).map_err(|e| sys_error("posix_spawnattr_setflags", e))?;
        let argv = [CString::new("isolate-helper").expect("static"), CString::new("--warm").expect("static")];
        let envp = helper_env();
        let pid = isolate_core::priority::born_behind(|| posix_spawn(self.path.as_c_str(), &actions, &attr, &argv, &envp))
            .map_err(|e| Error::new(Status::GenericFailure, format!("posix_spawn {}: {} ({e:?})", self.helper_path, e.desc())))?;
        Ok(pid.as_raw())
    }
}

/// Give a warm helper its sandbox: the spec (converted and validated here) and the command's
/// stdio, in one message on its handoff socket. Returns our ends of the stdio pipes. `epoch`:
/// the helper's (from `spawnWarmHelper`); one made before this process changed its ids or
/// cgroups is refused (code `Cancelled`: start cold, and end the other warm helpers).
#[napi]
pub fn send_spec(env: Env, handoff_fd: i32, spec_json: String, stdio: Vec<i32>, epoch: Option<u32>) -> Result<ExecStdio> {
    if epoch.is_some_and(|e| e != server::epoch()) {
        return Err(Error::new(Status::Cancelled, "this process's ids or cgroups changed since the warm helper was made".to_string()));
    }
    let spec = parse_spec(&spec_json)?;
    let filter = filter_for(&spec, true)?;
    let bytes = SpecMessage::encode(&spec, filter.as_deref());
    if bytes.len() > isolate_core::warm::MAX_SPEC {
        return Err(Error::new(Status::GenericFailure, "the spec is too large for a warm helper".to_string()));
    }
    send_with_stdio(&env, handoff_fd, &bytes, &stdio)
}

/// Run `isolate-helper --probe` (real namespace attempts happen there, never in Node). Returns
/// its pid and the read end of its stdout; JavaScript reads the JSON and reaps it (or this
/// thread's teardown does, see unreaped).
#[napi]
pub fn spawn_probe(env: Env, helper_path: String) -> Result<SpawnedHelper> {
    read_helper_env();
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| sys_error("pipe2", e))?;
    let mut actions = PosixSpawnFileActions::init().map_err(|e| sys_error("posix_spawn_file_actions_init", e))?;
    actions.add_dup2(w.as_raw_fd(), 1).map_err(|e| sys_error("posix_spawn_file_actions_adddup2", e))?;
    let mut attr = PosixSpawnAttr::init().map_err(|e| sys_error("posix_spawnattr_init", e))?;
    attr.set_sigmask(&SigSet::empty()).map_err(|e| sys_error("posix_spawnattr_setsigmask", e))?;
    attr.set_flags(PosixSpawnFlags::POSIX_SPAWN_SETSIGMASK).map_err(|e| sys_error("posix_spawnattr_setflags", e))?;
    let path = CString::new(helper_path.clone()).map_err(|_| option_error("helper path contains NUL".into()))?;
    let argv = [CString::new("isolate-helper").expect("static"), CString::new("--probe").expect("static")];
    let envp = helper_env();
    let pid = posix_spawn(path.as_c_str(), &actions, &attr, &argv, &envp)
        .map_err(|e| Error::new(Status::GenericFailure, format!("posix_spawn {helper_path}: {} ({e:?})", e.desc())))?;
    drop(w);
    unreaped::remember(&env, pid.as_raw(), unreaped::End::Wait, None);
    Ok(SpawnedHelper { pid: pid.as_raw(), control: r.into_raw_fd(), stdin: None, stdout: None, stderr: None, exec: None, epoch: None })
}

/// Reap the helper if it has exited. Never blocks: true once reaped (or already gone). `sweep`
/// (default true): whether what it left is looked for should a signal have ended it; false for a
/// child that makes no cgroups (the image tool, the probe).
#[napi]
pub fn reap_helper(pid: i32, sweep: Option<bool>) -> bool {
    // Not a pid: waitpid would take any child of the process group (or any child at all).
    if pid <= 0 {
        return true;
    }
    // The core's waitpid: nix's errs on a child a real-time signal ended, after reaping it.
    let ended = isolate_core::sys::reap_child(Some(nix::unistd::Pid::from_raw(pid))).map(|(ended, started)| {
        if matches!(ended, isolate_core::sys::Ended::Signaled(..)) && sweep.unwrap_or(true) {
            // Killed before it could remove its sandbox's cgroups (what the helper server does for
            // the helpers it forks; this one was spawned here, with no server to fork it). Off
            // the JS thread: an rmdir waits for the sandbox's last processes to go (up to 2 s).
            if std::thread::Builder::new().name("isolate-sweep".into()).spawn(move || isolate_core::cgroup::remove_left_by(pid, started)).is_err() {
                isolate_core::cgroup::remove_left_by(pid, started);
            }
        }
        ended
    });
    let reaped = !matches!(ended, Ok(isolate_core::sys::Ended::StillAlive));
    if reaped {
        unreaped::forget(pid);
    }
    reaped
}

/// A line to a helper's control socket, past the stream that reads it: how many bytes went
/// (all, or the start of it when the socket is nearly full: the caller writes the rest through
/// the stream), -1 when the helper has gone (EPIPE, ECONNRESET: no SIGPIPE, and nothing happens
/// to the stream, whose last unread report, a sandbox's `exit`, is still read; a net.Socket
/// write that fails destroys the socket before that).
#[napi]
pub fn send_control(fd: i32, line: String) -> i32 {
    loop {
        // SAFETY: send(2) of a live buffer on a descriptor JavaScript holds open.
        let n = unsafe { libc::send(fd, line.as_ptr().cast(), line.len(), libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return n as i32;
        }
        match nix::errno::Errno::last() {
            nix::errno::Errno::EINTR => continue,
            nix::errno::Errno::EAGAIN => return 0,
            _ => return -1,
        }
    }
}

/// Close an fd JavaScript received but will not wrap (e.g. after a failed setup).
#[napi]
pub fn close_fd(fd: i32) {
    handover::release(fd);
    // SAFETY: closing a descriptor JavaScript owns and has not handed to a stream.
    unsafe { libc::close(fd) };
}

/// Turn a terminal's output processing (OPOST: `\n` to `\r\n` and the like) on or off; returns
/// whether it was on, or null when `fd` is no terminal. The CLI relays a sandbox's terminal, whose
/// output its own line discipline has processed already, to its own terminal in raw mode, where
/// libuv keeps that processing on: every line would end `\r\r\n`.
#[napi]
pub fn set_output_processing(fd: i32, on: bool) -> Option<bool> {
    // SAFETY: a zeroed termios is valid for tcgetattr to fill in; tcgetattr/tcsetattr on a
    // descriptor number JavaScript names (a bad one fails).
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    if unsafe { libc::tcgetattr(fd, &mut t) } != 0 {
        return None;
    }
    let was = t.c_oflag & libc::OPOST != 0;
    if was != on {
        t.c_oflag = if on { t.c_oflag | libc::OPOST } else { t.c_oflag & !libc::OPOST };
        // SAFETY: as above, with the settings just read.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &t) };
    }
    Some(was)
}

/// What this host allows (see isolate_core::probe).
#[napi]
pub fn probe() -> Result<serde_json::Value> {
    read_helper_env();
    serde_json::to_value(isolate_core::probe::probe()).map_err(|e| Error::from_reason(e.to_string()))
}

/// Start the image tool (`isolate-image unpack|import ARGS...`, see isolate_image::tool) with
/// posix_spawn: stdin from /dev/null, stdout and stderr into one pipe whose read end comes back
/// as `control` (JSON lines, then any panic text). JavaScript reads it, and reaps the pid with
/// `reapHelper` once it ends. `made`: the target directory when the call makes it, removed
/// should this thread be torn down before the call settles (`settleMade`; see unreaped).
#[napi]
pub fn spawn_image_tool(env: Env, tool_path: String, args: Vec<String>, made: Option<String>) -> Result<SpawnedHelper> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| sys_error("pipe2", e))?;
    let null = nix::fcntl::open("/dev/null", OFlag::O_RDONLY | OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty()).map_err(|e| sys_error("open /dev/null", e))?;
    let mut actions = PosixSpawnFileActions::init().map_err(|e| sys_error("posix_spawn_file_actions_init", e))?;
    actions.add_dup2(null.as_raw_fd(), 0).map_err(|e| sys_error("posix_spawn_file_actions_adddup2", e))?;
    for slot in [1, 2] {
        actions.add_dup2(w.as_raw_fd(), slot).map_err(|e| sys_error("posix_spawn_file_actions_adddup2", e))?;
    }
    let mut attr = PosixSpawnAttr::init().map_err(|e| sys_error("posix_spawnattr_init", e))?;
    // SIGPIPE back to its default: the tool ends when nobody reads its report any more.
    attr.set_sigmask(&SigSet::empty()).map_err(|e| sys_error("posix_spawnattr_setsigmask", e))?;
    attr.set_sigdefault(&SigSet::all()).map_err(|e| sys_error("posix_spawnattr_setsigdefault", e))?;
    attr.set_flags(PosixSpawnFlags::POSIX_SPAWN_SETSIGMASK | PosixSpawnFlags::POSIX_SPAWN_SETSIGDEF).map_err(|e| sys_error("posix_spawnattr_setflags", e))?;
    let path = CString::new(tool_path.clone()).map_err(|_| option_error("image tool path contains NUL".into()))?;
    let mut argv = vec![CString::new("isolate-image").expect("static")];
    for a in args {
        argv.push(CString::new(a).map_err(|_| option_error("a path contains a NUL byte".into()))?);
    }
    // It dies with this thread (a SIGKILL of Node too), which it checks is still its parent
    // (isolate_image::tool::PARENT_ENV).
    let envp = [CString::new(format!("ISOLATE_IMAGE_PARENT={}", std::process::id())).expect("no NUL")];
    let pid = posix_spawn(path.as_c_str(), &actions, &attr, &argv, &envp)
        .map_err(|e| Error::new(Status::GenericFailure, format!("posix_spawn {tool_path}: {} ({e:?})", e.desc())))?;
    drop(w);
    unreaped::remember(&env, pid.as_raw(), unreaped::End::Kill, made.map(std::path::PathBuf::from));
    Ok(SpawnedHelper { pid: pid.as_raw(), control: r.into_raw_fd(), stdin: None, stdout: None, stderr: None, exec: None, epoch: None })
}
