//! A command's wall clock, the same for a sandbox's command and for an exec: its `timeoutMs`
//! bounds what comes before the command (the setup, an exec's wait for the init) from when the
//! helper had it, then the command itself from its execve; its duration counts from there too.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct CommandClock {
    /// When the helper had it, then when the command started.
    started: Instant,
    timeout: Option<Duration>,
    /// None once it fired or was disarmed, or when no deadline was set.
    deadline: Option<Instant>,
}

impl CommandClock {
    pub fn new(started: Instant, timeout_ms: Option<u64>) -> CommandClock {
        let timeout = timeout_ms.map(Duration::from_millis);
        // One past what the clock can name is no deadline at all.
        CommandClock { started, timeout, deadline: timeout.and_then(|t| started.checked_add(t)) }
    }

    /// The command's execve at `at`: a setup that waited to run on a loaded host is no part of
    /// its time (and was bounded by the same timeout). A deadline that fired or was disarmed
    /// stays so.
    pub fn command_started(&mut self, at: Instant) {
        self.started = at;
        if self.deadline.is_some() {
            self.deadline = self.timeout.and_then(|t| at.checked_add(t));
        }
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// True once, the first time it is asked at or past the deadline (which is then disarmed).
    pub fn expired(&mut self, now: Instant) -> bool {
        let due = self.deadline.is_some_and(|d| now >= d);
        if due {
            self.deadline = None;
        }
        due
    }

    /// The command ended: nothing is due any more.
    pub fn disarm(&mut self) {
        self.deadline = None;
    }

    /// Milliseconds from the command's start (or the helper's) to `at`.
    pub fn ms_until(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.started).as_secs_f64() * 1000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_moves_to_the_commands_start() {
        let t0 = Instant::now();
        let mut c = CommandClock::new(t0, Some(100));
        assert_eq!(c.deadline(), Some(t0 + Duration::from_millis(100)));
        let exec = t0 + Duration::from_millis(70);
        c.command_started(exec);
        assert_eq!(c.deadline(), Some(exec + Duration::from_millis(100)));
        assert!(!c.expired(t0 + Duration::from_millis(150)));
        assert!(c.expired(t0 + Duration::from_millis(170)));
        // Once: it is disarmed when it fired.
        assert!(!c.expired(t0 + Duration::from_millis(500)));
        assert_eq!(c.ms_until(exec + Duration::from_millis(25)), 25.0);
    }

    #[test]
    fn a_fired_or_disarmed_deadline_stays_off() {
        let t0 = Instant::now();
        let mut c = CommandClock::new(t0, Some(10));
        assert!(c.expired(t0 + Duration::from_millis(10)));
        c.command_started(t0 + Duration::from_millis(20));
        assert_eq!(c.deadline(), None);
        let mut d = CommandClock::new(t0, Some(10));
        d.disarm();
        d.command_started(t0 + Duration::from_millis(1));
        assert_eq!(d.deadline(), None);
    }

    #[test]
    fn no_timeout_is_no_deadline() {
        let t0 = Instant::now();
        let mut c = CommandClock::new(t0, None);
        assert_eq!(c.deadline(), None);
        assert!(!c.expired(t0 + Duration::from_secs(3600)));
        // A start before the helper's (it cannot be, but a clock may say so) counts as 0 ms.
        assert_eq!(CommandClock::new(t0 + Duration::from_millis(5), None).ms_until(t0), 0.0);
    }
}
