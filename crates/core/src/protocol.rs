//! What crosses process boundaries, as one JSON object per line: the helper's events to Node on
//! the control socket, Node's requests to the helper on the same socket, and the sandbox init's
//! reports to the helper on its report pipe.

use crate::error::SetupError;
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
    Exit {
        exit_code: Option<i32>,
        signal: Option<String>,
        reason: Reason,
        duration_ms: f64,
        usage: Usage,
    },
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
}

impl Request {
    pub fn parse(line: &str) -> Option<Request> {
        let mut words = line.split_whitespace();
        match (words.next()?, words.next()) {
            ("signal", Some(n)) => n.parse().ok().map(Request::Signal),
            ("cancel", None) => Some(Request::Cancel),
            ("resize", Some(r)) => Some(Request::Resize(r.parse().ok()?, words.next()?.parse().ok()?)),
            _ => None,
        }
    }
}

/// Sandbox init → helper.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "report")]
pub enum Report {
    SetupFailed(SetupError),
    /// exec succeeded.
    Started,
    Exited { code: i32 },
    Signaled { signal: i32 },
}

impl Report {
    pub fn to_line(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).expect("reports always serialize");
        v.push(b'\n');
        v
    }
}

pub fn signal_name(signo: i32) -> String {
    nix::sys::signal::Signal::try_from(signo).map(|s| s.as_str().to_owned()).unwrap_or_else(|_| format!("SIG{signo}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_tagged_json_lines() {
        let usage = Usage { cpu_user_ms: 1.0, cpu_system_ms: 2.0, peak_memory_bytes: 3, wall_ms: 1.5 };
        let line = Event::Exit { exit_code: None, signal: Some("SIGKILL".into()), reason: Reason::OutputLimit, duration_ms: 1.5, usage }.to_line();
        let s = String::from_utf8(line).unwrap();
        assert_eq!(
            s,
            "{\"event\":\"exit\",\"exitCode\":null,\"signal\":\"SIGKILL\",\"reason\":\"output-limit\",\"durationMs\":1.5,\"usage\":{\"cpuUserMs\":1.0,\"cpuSystemMs\":2.0,\"peakMemoryBytes\":3,\"wallMs\":1.5}}\n"
        );
        assert_eq!(String::from_utf8(Event::Spawned { pid: 7 }.to_line()).unwrap(), "{\"event\":\"spawned\",\"pid\":7}\n");
    }

    #[test]
    fn requests_parse() {
        assert_eq!(Request::parse("signal 15"), Some(Request::Signal(15)));
        assert_eq!(Request::parse("cancel"), Some(Request::Cancel));
        assert_eq!(Request::parse("signal x"), None);
        assert_eq!(Request::parse("rm -rf"), None);
        assert_eq!(Request::parse("resize 30 100"), Some(Request::Resize(30, 100)));
        assert_eq!(Request::parse("resize 30"), None);
    }

    #[test]
    fn signal_names() {
        assert_eq!(signal_name(9), "SIGKILL");
    }
}
