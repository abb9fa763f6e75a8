//! What crosses process boundaries, as one JSON object per line: the helper's events to Node on
//! the control socket, Node's requests to the helper on the same socket, and the sandbox init's
//! reports to the helper on its report pipe.

use crate::error::SetupError;
use crate::spec::Tty;
use serde::{Deserialize, Serialize};

/// Why the sandbox ended, as the caller sees it in `result.reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    Exited,
    Signaled,
    Timeout,
    Canceled,
    /// The kernel's OOM killer acted inside the sandbox's cgroup (from its own counters).
    Oom,
    CpuTime,
    OutputLimit,
}

/// What the sandbox used, from its cgroup when it has one, else from the init's rusage (which
/// holds every process the init reaped).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    pub cpu_user_ms: f64,
    pub cpu_system_ms: f64,
    pub peak_memory_bytes: u64,
    pub wall_ms: f64,
    /// Forks and new threads that `limits.pids` refused (the cgroup's `pids.events` max): only
    /// where that limit is the sandbox's cgroup's (else nothing counts the refusals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids_limit_hits: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "event")]
pub enum Event {
    /// The command has been exec'd inside the finished sandbox.
    Spawned { pid: i32 },
    /// A setup step failed; nothing runs and nothing is left.
    Error(SetupError),
    /// The sandbox is gone: the command, everything it started, and its mounts.
    #[serde(rename_all = "camelCase")]
    Exit { exit_code: Option<i32>, signal: Option<String>, reason: Reason, duration_ms: f64, usage: Usage },
    /// A warm helper is ready for its spec (see crate::warm).
    Warm,
    /// A ready warm helper's init made ahead went: the host unmounted something its copy of the
    /// mount table held. The helper still serves its sandbox (with a fresh init); the pool makes
    /// one with an init ahead to take its place.
    Stale,
    /// A ready warm helper's zygote or init made ahead ended (killed, out of memory), the host's
    /// mounts not in question. It still serves (slower); the pool makes another to take its place
    /// at once, with no wait for the host's mount table to go quiet.
    Lost,
    /// A long-lived sandbox is built and its init waits for execs; `pid` is the init's host pid.
    Ready { pid: i32 },
    /// An exec's command has been exec'd; `pid` as the sandbox sees it.
    ExecSpawned { id: u32, pid: i32 },
    /// An exec failed before its command ran; the sandbox itself lives on.
    ExecError {
        id: u32,
        #[serde(flatten)]
        error: SetupError,
    },
    /// An exec's command has ended (its own background children may live on in the sandbox).
    #[serde(rename_all = "camelCase")]
    /// `usage`: what its command and the descendants it waited for used, when the init reaped
    /// it (not when the sandbox ended first).
    ExecExit {
        id: u32,
        exit_code: Option<i32>,
        signal: Option<String>,
        reason: Reason,
        duration_ms: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usage: Option<Usage>,
    },
    /// A long-lived sandbox's processes but its init are all gone, as asked (`kill-all`); the
    /// execs that ended were reported before.
    KilledAll,
}

impl Event {
    pub fn to_line(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).expect("events always serialize");
        v.push(b'\n');
        v
    }
}

/// Node → helper. Closing the socket is the lifeline: the helper kills the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Forward a signal to the command (SIGKILL ends the whole sandbox).
    Signal(i32),
    /// End the whole sandbox; the result says `canceled`.
    Cancel,
    /// The terminal's new size (rows, cols).
    Resize(u16, u16),
    /// A signal for one exec's command (by exec id).
    ExecSignal(u32, i32),
    /// A signal for one exec's whole process group (Node's bound on what it collects, as its timeout does).
    ExecSignalGroup(u32, i32),
    /// One exec ended for the caller's abort: gracefully with its stop, else its process group killed.
    ExecCancel(u32),
    /// One exec's terminal's new size (id, rows, cols).
    ExecResize(u32, u16, u16),
    /// Every process of a long-lived sandbox but its init killed; the sandbox lives on.
    KillAll,
}

impl Request {
    pub fn parse(line: &str) -> Option<Request> {
        let mut words = line.split_whitespace();
        match (words.next()?, words.next()) {
            ("signal", Some(n)) => n.parse().ok().map(Request::Signal),
            ("cancel", None) => Some(Request::Cancel),
            ("resize", Some(r)) => Some(Request::Resize(r.parse().ok()?, words.next()?.parse().ok()?)),
            ("exec-signal", Some(id)) => Some(Request::ExecSignal(id.parse().ok()?, words.next()?.parse().ok()?)),
            ("exec-signal-group", Some(id)) => Some(Request::ExecSignalGroup(id.parse().ok()?, words.next()?.parse().ok()?)),
            ("kill-all", None) => Some(Request::KillAll),
            ("exec-cancel", Some(id)) if words.next().is_none() => id.parse().ok().map(Request::ExecCancel),
            ("exec-resize", Some(id)) => Some(Request::ExecResize(id.parse().ok()?, words.next()?.parse().ok()?, words.next()?.parse().ok()?)),
            _ => None,
        }
    }
}

/// One command to run in a long-lived sandbox: Node → helper on the exec socket, with the
/// command's stdin, stdout and stderr attached as SCM_RIGHTS; helper → init on the work socket
/// (with a tty, the helper keeps the stdio and relays the terminal).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecRequest {
    pub id: u32,
    pub file: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default = "root_dir")]
    pub cwd: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tty: Option<Tty>,
    /// Wall clock for this command alone; its process group is killed when it runs out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// At its timeout or the caller's abort its command is sent a signal first, and its process
    /// group is killed once the grace has passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<crate::spec::Stop>,
}

fn root_dir() -> String {
    "/".into()
}

/// Helper → init on the work socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "work")]
pub enum Work {
    Exec(ExecRequest),
    /// `group`: the command's whole process group (a timeout), else the command alone.
    Signal {
        id: u32,
        signal: i32,
        group: bool,
    },
    /// The helper took the terminal master the init lent it ([`TerminalHandoff::lent`]).
    TerminalTaken {
        id: u32,
    },
    /// Kill and reap every other process of the sandbox ([`Report::KilledAll`] once none is left).
    KillAll,
    /// A graceful end of the sandbox: every other process of it is sent `signal`
    /// ([`Report::Emptied`] once none is left).
    StopAll {
        signal: i32,
    },
}

/// Init → helper on the work socket: an exec's terminal master, attached as SCM_RIGHTS, or, where
/// the init's host user has too many fds in flight to send it, lent: its number in the init,
/// for the helper to take with pidfd_getfd and answer [`Work::TerminalTaken`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TerminalHandoff {
    pub terminal: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lent: Option<i32>,
}

/// Sandbox init → helper.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "report")]
pub enum Report {
    SetupFailed(SetupError),
    /// exec succeeded. `at`: CLOCK_MONOTONIC (ns) when the command went to its execve, taken by
    /// the command itself (the init may see it later: a loaded host, its cgroup's CPU quota).
    Started {
        at: u64,
    },
    /// The command's end. `reaped`: the init had reaped every other process of the sandbox too
    /// (nothing but the init is left), and what they all used.
    Exited {
        code: i32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reaped: Option<Reaped>,
    },
    Signaled {
        signal: i32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reaped: Option<Reaped>,
    },
    /// A long-lived sandbox's init is built and waits for work.
    Ready,
    ExecStarted {
        id: u32,
        pid: i32,
        /// As [`Report::Started`]'s.
        at: u64,
    },
    ExecFailed {
        id: u32,
        error: SetupError,
    },
    /// `used`: what its command and the descendants it waited for used (wait4).
    ExecExited {
        id: u32,
        code: i32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        used: Option<Reaped>,
    },
    ExecSignaled {
        id: u32,
        signal: i32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        used: Option<Reaped>,
    },
    /// After [`Work::KillAll`]: no process of the sandbox is left but the init (the execs it
    /// ended were reported before).
    KilledAll,
    /// After [`Work::StopAll`]: every other process of the sandbox has ended (the execs' ends
    /// were reported before).
    Emptied,
}

/// What a sandbox's processes used, as the init counts it once it reaped them all: its own
/// usage and its children's (what `wait4` on the init would have said).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reaped {
    pub user_us: u64,
    pub system_us: u64,
    pub max_rss_kib: u64,
}

impl Reaped {
    /// As `wait4` fills it: times and the peak, nothing else.
    pub fn as_rusage(&self) -> libc::rusage {
        // SAFETY: rusage is plain data; all zeroes is a valid value.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        let tv = |us: u64| libc::timeval { tv_sec: (us / 1_000_000) as libc::time_t, tv_usec: (us % 1_000_000) as libc::suseconds_t };
        ru.ru_utime = tv(self.user_us);
        ru.ru_stime = tv(self.system_us);
        ru.ru_maxrss = self.max_rss_kib as libc::c_long;
        ru
    }

    /// Times and the peak of one rusage.
    pub fn of(ru: &libc::rusage) -> Reaped {
        let us = |tv: libc::timeval| tv.tv_sec as u64 * 1_000_000 + tv.tv_usec as u64;
        Reaped { user_us: us(ru.ru_utime), system_us: us(ru.ru_stime), max_rss_kib: ru.ru_maxrss.max(0) as u64 }
    }

    /// As a sandbox's or an exec's usage, over `wall_ms`.
    pub fn as_usage(&self, wall_ms: f64) -> Usage {
        Usage {
            cpu_user_ms: self.user_us as f64 / 1000.0,
            cpu_system_ms: self.system_us as f64 / 1000.0,
            peak_memory_bytes: self.max_rss_kib * 1024,
            wall_ms,
            pids_limit_hits: None,
        }
    }

    /// The init's own usage and its reaped children's, summed (peak: the larger).
    pub fn of_init() -> Reaped {
        let get = |who| {
            // SAFETY: rusage is plain data filled by the kernel.
            let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: getrusage with a valid out-pointer.
            unsafe { libc::getrusage(who, &mut ru) };
            ru
        };
        let (me, children) = (Reaped::of(&get(libc::RUSAGE_SELF)), Reaped::of(&get(libc::RUSAGE_CHILDREN)));
        Reaped { user_us: me.user_us + children.user_us, system_us: me.system_us + children.system_us, max_rss_kib: me.max_rss_kib.max(children.max_rss_kib) }
    }
}

impl Report {
    pub fn to_line(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).expect("reports always serialize");
        v.push(b'\n');
        v
    }
}

/// What the addon hands a helper (in the spec memfd, or on a warm helper's handoff socket): the
/// spec, and the seccomp filter the addon compiled for it, once per Node process (none for
/// `seccomp: 'none'`, nor for the built-in one to a warm helper, which has it at hand). One
/// message: the spec's JSON, a NUL byte (JSON text never holds a raw one), the filter's
/// instructions ([`crate::seccomp::Program::to_bytes`]), kept as bytes until they are loaded
/// or handed on to an init.
pub struct SpecMessage {
    pub spec: crate::spec::Spec,
    pub filter: Option<Vec<u8>>,
}

impl SpecMessage {
    pub fn encode(spec: &crate::spec::Spec, filter: Option<&[u8]>) -> Vec<u8> {
        let mut out = spec.to_json();
        if let Some(f) = filter {
            out.push(0);
            out.extend_from_slice(f);
        }
        out
    }

    /// The spec parsed and validated (a helper checks what it is handed, as the addon did), and
    /// the filter when one came (its size checked; the kernel checks its instructions).
    pub fn decode(bytes: &[u8]) -> Result<SpecMessage, String> {
        let (json, filter) = match bytes.iter().position(|b| *b == 0) {
            Some(nul) => (&bytes[..nul], Some(&bytes[nul + 1..])),
            None => (bytes, None),
        };
        if let Some(f) = filter {
            crate::seccomp::Program::check_bytes(f)?;
        }
        let spec = crate::spec::Spec::from_json(json)?;
        crate::validate::validate(&spec).map_err(|e| e.to_string())?;
        Ok(SpecMessage { spec, filter: filter.map(<[u8]>::to_vec) })
    }
}

/// Whether the sandbox's init forwards `signo` to the command: not what the command cannot
/// handle (SIGKILL, SIGSTOP), nor what the kernel sends the init itself (a fault's, a child's
/// end), nor the C library's own real-time signals (32 and 33).
pub fn init_forwards(signo: i32) -> bool {
    let own = [libc::SIGKILL, libc::SIGSTOP, libc::SIGSEGV, libc::SIGBUS, libc::SIGILL, libc::SIGFPE, libc::SIGTRAP, libc::SIGSYS, libc::SIGCHLD];
    (1..=64).contains(&signo) && !(32..34).contains(&signo) && !own.contains(&signo)
}

pub fn signal_name(signo: i32) -> String {
    match nix::sys::signal::Signal::try_from(signo) {
        Ok(s) => s.as_str().to_owned(),
        // Real-time signals as the C library numbers them (32 and 33 are its own).
        Err(_) if signo == crate::sys::SIGRTMIN => "SIGRTMIN".into(),
        Err(_) if (crate::sys::SIGRTMIN + 1..=64).contains(&signo) => format!("SIGRTMIN+{}", signo - crate::sys::SIGRTMIN),
        Err(_) => format!("SIG{signo}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_message_carries_the_spec_and_the_filter_compiled_for_it() {
        let mut spec = crate::spec::Spec::new("/bin/true", vec!["a\u{1}b".into()]);
        spec.hostname = "h".into();
        let filter = crate::seccomp::default_program();
        let bytes = SpecMessage::encode(&spec, Some(&filter.to_bytes()));
        let back = SpecMessage::decode(&bytes).unwrap();
        assert_eq!(back.spec, spec, "control characters in the spec's strings are escaped in its JSON");
        assert_eq!(back.filter.unwrap(), filter.to_bytes());
        let bare = SpecMessage::decode(&SpecMessage::encode(&spec, None)).unwrap();
        assert!(bare.filter.is_none());
        // A filter cut short, or none at all after the NUL, is refused; so is a spec that does not validate.
        assert!(SpecMessage::decode(&bytes[..bytes.len() - 3]).is_err());
        assert!(SpecMessage::decode(&[spec.to_json(), vec![0]].concat()).is_err());
        let mut bad = spec.clone();
        bad.file = String::new();
        assert!(SpecMessage::decode(&SpecMessage::encode(&bad, None)).is_err());
    }

    #[test]
    fn events_are_tagged_json_lines() {
        let usage = Usage { cpu_user_ms: 1.0, cpu_system_ms: 2.0, peak_memory_bytes: 3, wall_ms: 1.5, pids_limit_hits: Some(4) };
        let line = Event::Exit { exit_code: None, signal: Some("SIGKILL".into()), reason: Reason::OutputLimit, duration_ms: 1.5, usage }.to_line();
        let s = String::from_utf8(line).unwrap();
        assert_eq!(
            s,
            "{\"event\":\"exit\",\"exitCode\":null,\"signal\":\"SIGKILL\",\"reason\":\"output-limit\",\"durationMs\":1.5,\"usage\":{\"cpuUserMs\":1.0,\"cpuSystemMs\":2.0,\"peakMemoryBytes\":3,\"wallMs\":1.5,\"pidsLimitHits\":4}}\n"
        );
        assert_eq!(String::from_utf8(Event::Spawned { pid: 7 }.to_line()).unwrap(), "{\"event\":\"spawned\",\"pid\":7}\n");
        // lib/pool.ts reads these two by name.
        assert_eq!(String::from_utf8(Event::Warm.to_line()).unwrap(), "{\"event\":\"warm\"}\n");
        assert_eq!(String::from_utf8(Event::Stale.to_line()).unwrap(), "{\"event\":\"stale\"}\n");
        assert_eq!(String::from_utf8(Event::Lost.to_line()).unwrap(), "{\"event\":\"lost\"}\n");
    }

    #[test]
    fn requests_parse() {
        assert_eq!(Request::parse("signal 15"), Some(Request::Signal(15)));
        assert_eq!(Request::parse("cancel"), Some(Request::Cancel));
        assert_eq!(Request::parse("signal x"), None);
        assert_eq!(Request::parse("rm -rf"), None);
        assert_eq!(Request::parse("resize 30 100"), Some(Request::Resize(30, 100)));
        assert_eq!(Request::parse("resize 30"), None);
        assert_eq!(Request::parse("exec-signal 3 15"), Some(Request::ExecSignal(3, 15)));
        assert_eq!(Request::parse("exec-resize 3 30 100"), Some(Request::ExecResize(3, 30, 100)));
        assert_eq!(Request::parse("exec-signal 3"), None);
        assert_eq!(Request::parse("exec-signal-group 3 9"), Some(Request::ExecSignalGroup(3, 9)));
        assert_eq!(Request::parse("kill-all"), Some(Request::KillAll));
        assert_eq!(Request::parse("exec-cancel 7"), Some(Request::ExecCancel(7)));
        assert_eq!(Request::parse("exec-cancel 7 9"), None);
        assert_eq!(Request::parse("exec-cancel"), None);
        assert_eq!(Request::parse("kill-all 3"), None);
    }

    #[test]
    fn an_exec_end_carries_its_usage_when_the_init_reaped_it() {
        let used = Reaped { user_us: 1_500_000, system_us: 250, max_rss_kib: 4096 };
        assert_eq!(Reaped::of(&used.as_rusage()), used);
        let usage = used.as_usage(12.5);
        assert_eq!((usage.cpu_user_ms, usage.cpu_system_ms, usage.peak_memory_bytes, usage.wall_ms), (1500.0, 0.25, 4 << 20, 12.5));
        let line = String::from_utf8(
            Event::ExecExit { id: 1, exit_code: Some(0), signal: None, reason: Reason::Exited, duration_ms: 12.5, usage: Some(usage) }.to_line(),
        )
        .unwrap();
        assert!(line.contains(r#""usage":{"cpuUserMs":1500.0,"cpuSystemMs":0.25,"peakMemoryBytes":4194304,"wallMs":12.5}"#), "{line}");
        let cut = String::from_utf8(
            Event::ExecExit { id: 1, exit_code: None, signal: Some("SIGKILL".into()), reason: Reason::Canceled, duration_ms: 1.0, usage: None }.to_line(),
        )
        .unwrap();
        assert!(!cut.contains("usage"), "{cut}");
        let r: Report = serde_json::from_str(r#"{"report":"execExited","id":2,"code":0}"#).unwrap();
        assert_eq!(r, Report::ExecExited { id: 2, code: 0, used: None });
    }

    #[test]
    fn exec_events_and_work_are_tagged() {
        let e = SetupError::sys(crate::Step::Execve, libc::ENOENT, Some("/nope"));
        let s = String::from_utf8(Event::ExecError { id: 4, error: e }.to_line()).unwrap();
        assert!(s.starts_with("{\"event\":\"execError\",\"id\":4,\"step\":\"execve\""), "{s}");
        let w: Work = serde_json::from_str(r#"{"work":"signal","id":2,"signal":9,"group":true}"#).unwrap();
        assert_eq!(w, Work::Signal { id: 2, signal: 9, group: true });
        let r: ExecRequest = serde_json::from_str(r#"{"id":1,"file":"/bin/true"}"#).unwrap();
        assert_eq!((r.cwd.as_str(), r.tty, r.timeout_ms), ("/", None, None));
        assert!(serde_json::from_str::<ExecRequest>(r#"{"id":1,"file":"x","bogus":1}"#).is_err());
    }

    #[test]
    fn an_end_reported_alone_carries_usage_as_wait4_would() {
        let reaped = Reaped { user_us: 1_500_000, system_us: 250, max_rss_kib: 4096 };
        let line = String::from_utf8(Report::Exited { code: 3, reaped: Some(reaped) }.to_line()).unwrap();
        assert_eq!(line, "{\"report\":\"exited\",\"code\":3,\"reaped\":{\"userUs\":1500000,\"systemUs\":250,\"maxRssKib\":4096}}\n");
        // Not alone: no usage, and the helper waits for the init as before.
        assert_eq!(serde_json::from_str::<Report>(r#"{"report":"signaled","signal":9}"#).unwrap(), Report::Signaled { signal: 9, reaped: None });
        let ru = reaped.as_rusage();
        assert_eq!((ru.ru_utime.tv_sec, ru.ru_utime.tv_usec, ru.ru_stime.tv_usec, ru.ru_maxrss), (1, 500_000, 250, 4096));
        // The init's own count: a process that used CPU sees some.
        let t = std::time::Instant::now();
        while t.elapsed() < std::time::Duration::from_millis(20) {}
        let mine = Reaped::of_init();
        assert!(mine.user_us + mine.system_us >= 10_000 && mine.max_rss_kib > 0, "{mine:?}");
    }

    #[test]
    fn signal_names() {
        assert_eq!(signal_name(9), "SIGKILL");
        assert_eq!(signal_name(34), "SIGRTMIN");
        assert_eq!(signal_name(40), "SIGRTMIN+6");
        assert_eq!(signal_name(64), "SIGRTMIN+30");
        assert_eq!(signal_name(32), "SIG32");
    }
}
