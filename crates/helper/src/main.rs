//! isolate-helper: read the spec, build the sandbox, supervise it, report, exit.
//!
//! Started by the Node addon with posix_spawn and this fd layout: 0-2 the sandbox's stdio,
//! 3 the control socket (events out, requests in, EOF = the caller died), 4 a memfd holding the
//! spec as JSON with its compiled seccomp filter (isolate_core::protocol::SpecMessage), and for
//! a long-lived sandbox 5 the exec socket (SOCK_SEQPACKET: one exec request per message, its
//! stdio attached). `--warm` makes a warm helper (isolate_core::warm); `--warm --server` the
//! helper server, which forks the helpers, warm and cold (isolate_core::server).

use isolate_core::protocol::{Event, SpecMessage};
use isolate_core::{SetupError, Step};
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};

const CONTROL_FD: i32 = 3;
const SPEC_FD: i32 = 4;
const EXEC_FD: i32 = 5;

fn main() {
    if std::env::args().nth(1).as_deref() == Some("--probe") {
        // Its attempt's children must hold nothing of Node's (fds it inherited without close-on-exec).
        isolate_core::sys::close_fds_except(&[]);
        // What only a real attempt can tell: print it as JSON on stdout.
        let mut out = std::io::stdout();
        let _ = out.write_all(&serde_json::to_vec(&isolate_core::probe::attempt()).unwrap_or_default());
        std::process::exit(0);
    }
    let warm = std::env::args().nth(1).as_deref() == Some("--warm");
    let server = warm && std::env::args().nth(2).as_deref() == Some("--server");
    // Before any work: this process works for its caller, behind the caller's own threads.
    isolate_core::priority::step_back();
    // A service's stop signals every process of it: the helpers end with their caller instead,
    // cleaning up (see ignore_stop_signals); noted just below, so no command inherits it.
    isolate_core::sys::ignore_stop_signals();
    // Before anything is forked (the zygote, the init and their commands copy the note): each
    // command then resets only the signals that are not at their default. A warm helper does it
    // ahead of its sandbox; the helper server once, for all the helpers it forks.
    isolate_core::sys::note_signal_actions();
    // The helper server returns only in a helper it forked, its descriptors in this layout.
    let warm = if server { serve() } else { warm };
    // Whatever Node left open without close-on-exec (fds it inherited itself) ends here, so
    // neither this process nor the sandbox's init holds it.
    isolate_core::sys::close_fds_except(if warm { &[CONTROL_FD, EXEC_FD] } else { &[CONTROL_FD, SPEC_FD, EXEC_FD] });
    if warm {
        // Made ahead of its sandbox (isolate_core::warm): 3 the control socket, 5 the handoff
        // socket on which the spec and the sandbox's stdio arrive; no spec memfd.
        for fd in [CONTROL_FD, EXEC_FD] {
            // SAFETY: setting FD_CLOEXEC on our own descriptors.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
        // SAFETY: the fd layout of --warm is this program's contract with the addon.
        let (control, handoff) = unsafe { (OwnedFd::from_raw_fd(CONTROL_FD), OwnedFd::from_raw_fd(EXEC_FD)) };
        std::process::exit(isolate_core::warm::run(control, handoff));
    }
    // SAFETY: the fd layout above is this program's contract with the addon.
    let control = unsafe { OwnedFd::from_raw_fd(CONTROL_FD) };
    let mut spec_file = unsafe { std::fs::File::from_raw_fd(SPEC_FD) };
    // Neither may reach the sandbox; the init gets only what it is handed.
    for fd in [CONTROL_FD, SPEC_FD] {
        // SAFETY: setting FD_CLOEXEC on our own descriptors.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    let mut bytes = Vec::new();
    let message = spec_file.read_to_end(&mut bytes).map_err(|e| e.to_string()).and_then(|_| SpecMessage::decode(&bytes));
    drop(spec_file);
    let SpecMessage { spec, filter } = match message {
        Ok(m) => m,
        Err(msg) => {
            let mut f = std::fs::File::from(control);
            let _ = f.write_all(&Event::Error(SetupError::new(Step::ReadSpec, msg)).to_line());
            std::process::exit(2);
        }
    };
    // SAFETY: fd 5 is the addon's exec socket exactly when the spec is persistent.
    let execs = spec.persistent.then(|| unsafe { OwnedFd::from_raw_fd(EXEC_FD) });
    if execs.is_some() {
        // SAFETY: as above, for our own descriptor.
        unsafe { libc::fcntl(EXEC_FD, libc::F_SETFD, libc::FD_CLOEXEC) };
    } else {
        // SAFETY: fd 5 is ours only for a long-lived sandbox; anything else there is a leak.
        unsafe { libc::close(EXEC_FD) };
    }
    std::process::exit(isolate_core::supervisor::run(&spec, control, execs, filter));
}

/// Run the helper server (isolate_core::server) on fd 3. Returns in each helper it forks, for
/// its caller as one exec'd would be: whether it is a warm one.
fn serve() -> bool {
    isolate_core::sys::close_fds_except(&[isolate_core::server::SOCKET_FD]);
    // SAFETY: setting FD_CLOEXEC on our own descriptor.
    unsafe { libc::fcntl(isolate_core::server::SOCKET_FD, libc::F_SETFD, libc::FD_CLOEXEC) };
    // SAFETY: fd 3 is the server's socket in the addon's layout for --server.
    let sock = unsafe { OwnedFd::from_raw_fd(isolate_core::server::SOCKET_FD) };
    match isolate_core::server::run(sock) {
        isolate_core::server::Outcome::Exit(code) => std::process::exit(code),
        isolate_core::server::Outcome::Helper { warm, caller } => {
            // The caller's nice as it is now (the server's note is from its own start).
            isolate_core::priority::step_back_behind(caller);
            warm
        }
    }
}
