//! The helper's side of a long-lived sandbox: execs arrive from Node on the exec socket (a
//! request and its stdio), are checked and passed to the sandbox's init on the work socket, and
//! each is followed to its end: its wall clock, its terminal relay, its events to Node.

use crate::command_clock::CommandClock;
use crate::error::{SetupError, Step};
use crate::exec_server::MAX_REQUEST;
use crate::protocol::{signal_name, Event, ExecRequest, Reaped, Reason, Report, TerminalHandoff, Work};
use crate::relay::{Interest, TtyRelay};
use crate::supervisor::Control;
use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// How long a terminal's output is still relayed after its command ended, for background
/// processes that hold it; then the relay closes (as a terminal emulator would).
const TTY_GRACE: Duration = Duration::from_millis(200);

struct Exec {
    /// Its `timeoutMs`, and what its duration counts from: the request, then its command's start.
    clock: CommandClock,
    /// Why we ended it, when we did.
    forced: Option<Reason>,
    /// Its `stop`: at its timeout or an abort, a running command is signalled first.
    stop: Option<crate::spec::Stop>,
    /// Its command runs (the init reported its start).
    running: bool,
    /// A graceful stop is under way: when its process group is killed all the same.
    stop_by: Option<Instant>,
    /// With a tty: the caller's ends until the init hands over the master, then the relay.
    tty_io: Option<(OwnedFd, OwnedFd)>,
    tty: Option<TtyRelay>,
    /// A size asked for before the terminal existed.
    tty_size: Option<(u16, u16)>,
    /// The command's end, held back until its terminal output is delivered (or its grace ran out).
    ended: Option<(Option<i32>, Option<String>, Instant)>,
    /// What its command and the descendants it waited for used, as the init reaped it.
    used: Option<Reaped>,
    /// Its process group was killed while its command ran (its timeout, the caller's abort or
    /// output bound): children whose parent died first were reaped by the init as orphans, so
    /// `used` would miss them, and is not reported.
    group_killed: bool,
    /// Its end was reported; it stays only for its terminal's output, until that is delivered.
    reported: bool,
    /// The sandbox cgroup's OOM kills when it started: none before can have been its own.
    oom_at_start: u64,
    /// The caller sent it a SIGKILL (its abort, its output bound, kill()): a SIGKILL end is that
    /// one, not an OOM kill to put down to it (which would take the kill from its real victim).
    killed_by_caller: bool,
}

pub struct Execs {
    /// From Node: requests with their stdio attached. None once Node closed it.
    requests: Option<OwnedFd>,
    /// To and from the sandbox's init. Non-blocking: the helper never waits on the init (which
    /// may itself be waiting for the helper to read its reports).
    work: OwnedFd,
    /// Messages for the init that did not fit in the socket yet, with their fds, and the exec a
    /// message starts.
    outbox: std::collections::VecDeque<(Vec<u8>, Vec<OwnedFd>, Option<u32>)>,
    /// Execs whose message the socket refused (not for lack of room), to fail in [`Execs::pump`].
    unsent: Vec<(u32, SetupError)>,
    execs: HashMap<u32, Exec>,
    /// The sandbox cgroup's OOM kills already put down to an exec (or before one that was).
    oom_credited: u64,
    /// The count when an exec last started or ended: kills after it are news of the sandbox's
    /// own end (see [`Execs::oom_since`]); those before were another process's (a background job's).
    oom_noted: u64,
    /// Whose tasks the terminal relays look at.
    sandbox: crate::terminal_readers::Sandbox,
    /// killAll() requests not yet answered, oldest first.
    kills: std::collections::VecDeque<KillAll>,
}

/// One killAll(): the execs it ended, and whether the init said that none is left.
struct KillAll {
    ended: Vec<u32>,
    done: bool,
}

/// The sandbox cgroup's count of OOM kills so far (0 without a cgroup).
pub type OomKills<'a> = &'a dyn Fn() -> u64;

impl Execs {
    pub fn new(requests: OwnedFd, work: OwnedFd, sandbox: crate::terminal_readers::Sandbox) -> Execs {
        let _ = crate::relay::set_nonblocking(work.as_raw_fd());
        Execs {
            requests: Some(requests),
            work,
            outbox: Default::default(),
            unsent: Vec::new(),
            execs: HashMap::new(),
            oom_credited: 0,
            oom_noted: 0,
            sandbox,
            kills: Default::default(),
        }
    }

    /// The fds to poll: the request socket, the work socket, then each relay's.
    pub fn interests(&self) -> Vec<Interest<'_>> {
        let mut out = Vec::new();
        if let Some(r) = &self.requests {
            out.push(Interest { fd: r.as_fd(), writable: false });
        }
        out.push(Interest { fd: self.work.as_fd(), writable: false });
        if !self.outbox.is_empty() {
            out.push(Interest { fd: self.work.as_fd(), writable: true });
        }
        for e in self.execs.values() {
            if let Some(t) = &e.tty {
                out.extend(t.interests());
            }
        }
        out
    }

    /// The earliest moment something is due: a deadline, a stop's grace, the end of a terminal's grace.
    pub fn next_due(&self) -> Option<Instant> {
        let grace = |e: &Exec| e.ended.as_ref().filter(|_| !e.reported && (e.tty.is_some() || e.tty_io.is_some())).map(|(_, _, at)| *at + TTY_GRACE);
        self.execs.values().flat_map(|e| [e.clock.deadline(), e.stop_by, grace(e), e.tty.as_ref().and_then(TtyRelay::next_due)]).flatten().min()
    }

    /// Read what the callers typed into every exec's terminal (see [`TtyRelay::take_input`]);
    /// true when something was read.
    pub fn take_tty_input(&mut self) -> bool {
        self.execs.values_mut().filter_map(|e| e.tty.as_mut()).fold(false, |any, t| t.take_input() | any)
    }

    /// Whatever is ready: requests from Node, terminals from the init, relays, deadlines.
    pub fn pump(&mut self, out: &mut Control, oom: OomKills) {
        self.flush_outbox();
        self.take_requests(out, oom);
        for (id, error) in std::mem::take(&mut self.unsent) {
            if self.execs.remove(&id).is_some() {
                out.send(&Event::ExecError { id, error });
            }
        }
        self.take_terminals(out);
        for e in self.execs.values_mut() {
            if let Some(t) = &mut e.tty {
                t.pump();
            }
        }
        let now = Instant::now();
        let expired: Vec<u32> = self.execs.iter_mut().filter(|(_, e)| e.ended.is_none()).filter_map(|(id, e)| e.clock.expired(now).then_some(*id)).collect();
        for id in expired {
            self.stop(id, Reason::Timeout);
        }
        let graced: Vec<u32> = self.execs.iter().filter(|(_, e)| e.stop_by.is_some_and(|by| now >= by)).map(|(id, _)| *id).collect();
        for id in graced {
            self.kill_group(id);
        }
        self.flush_ended(out, oom);
    }

    /// End exec `id` for `why` (its timeout, the caller's abort): with its stop, a running
    /// command is sent the stop's signal and has the grace to end (its group is killed then, or
    /// as soon as it ends); else, and before it runs, its process group is killed at once.
    fn stop(&mut self, id: u32, why: Reason) {
        let Some(e) = self.execs.get_mut(&id).filter(|e| e.ended.is_none() && e.stop_by.is_none()) else { return };
        e.forced.get_or_insert(why);
        e.clock.disarm();
        let grace = e.stop.filter(|_| e.running).and_then(|s| Some((s, Instant::now().checked_add(Duration::from_millis(s.grace_ms))?)));
        match grace {
            Some((stop, by)) => {
                e.stop_by = Some(by);
                self.send_work(&Work::Signal { id, signal: stop.signal, group: stop.group });
            }
            None => self.kill_group(id),
        }
    }

    /// SIGKILL to exec `id`'s whole process group: what it started in the background too.
    fn kill_group(&mut self, id: u32) {
        let Some(e) = self.execs.get_mut(&id) else { return };
        e.stop_by = None;
        e.killed_by_caller = true;
        // Once its command ended, what it used is known; only its leftovers die here.
        e.group_killed |= e.ended.is_none();
        self.send_work(&Work::Signal { id, signal: libc::SIGKILL, group: true });
    }

    /// The caller aborted exec `id` (see [`Execs::stop`]): its end is a cancel. One whose command
    /// ended before the abort reached us (its end on its way to Node) loses what it left in its
    /// group, as the abort of one without a stop would.
    pub fn cancel(&mut self, id: u32) {
        if self.execs.get(&id).is_none_or(|e| e.ended.is_some()) {
            return self.signal(id, libc::SIGKILL, true);
        }
        self.stop(id, Reason::Canceled);
    }

    fn take_requests(&mut self, out: &mut Control, oom: OomKills) {
        let Some(sock) = &self.requests else { return };
        if !crate::sys::readable_now(sock) {
            return;
        }
        let (bytes, fds) = match crate::sys::recv_message(sock, MAX_REQUEST, Step::SendExec) {
            Ok(Some(m)) => m,
            // Node closed it: no more execs (the control socket is the lifeline).
            Ok(None) | Err(_) => {
                self.requests = None;
                return;
            }
        };
        let req = match serde_json::from_slice::<ExecRequest>(&bytes) {
            Ok(r) => r,
            Err(e) => return out.send(&Event::ExecError { id: 0, error: SetupError::new(Step::SendExec, format!("a bad exec request: {e}")) }),
        };
        let id = req.id;
        if let Err(e) = crate::validate::validate_exec(&req) {
            return out.send(&Event::ExecError { id, error: SetupError::new(Step::SendExec, e.to_string()) });
        }
        if self.execs.contains_key(&id) || fds.len() != 3 {
            return out.send(&Event::ExecError { id, error: SetupError::new(Step::SendExec, "an exec id in use, or not three stdio descriptors") });
        }
        let clock = CommandClock::new(Instant::now(), req.timeout_ms);
        let stop = req.stop;
        let oom_at_start = oom();
        self.oom_noted = self.oom_noted.max(oom_at_start);
        let mut fds = fds.into_iter();
        // With a terminal, the caller's stdin and stdout are the relay's; the command gets the pty.
        let (tty_io, passed) = match req.tty {
            Some(_) => (fds.next().zip(fds.next()), Vec::new()),
            None => (None, fds.collect::<Vec<_>>()),
        };
        let msg = serde_json::to_vec(&Work::Exec(req)).unwrap_or_default();
        self.execs.insert(
            id,
            Exec {
                clock,
                forced: None,
                stop,
                running: false,
                stop_by: None,
                tty_io,
                tty: None,
                tty_size: None,
                ended: None,
                used: None,
                group_killed: false,
                reported: false,
                oom_at_start,
                killed_by_caller: false,
            },
        );
        self.outbox.push_back((msg, passed, Some(id)));
        self.flush_outbox();
    }

    fn take_terminals(&mut self, out: &mut Control) {
        while crate::sys::readable_now(&self.work) {
            let Ok(Some((bytes, mut fds))) = crate::sys::recv_message(&self.work, 4096, Step::OpenPty) else { return };
            let Ok(TerminalHandoff { terminal: id, lent }) = serde_json::from_slice(&bytes) else { continue };
            let master = match (fds.pop(), lent) {
                (Some(master), _) => Some(master),
                (None, Some(fd)) => {
                    let taken = crate::sys::take_fd_of(self.sandbox.init, fd);
                    self.send_work(&Work::TerminalTaken { id });
                    if let Err(errno) = taken {
                        // Its command would run with no one at its terminal: it ends, and the exec
                        // fails as the send did (what the init reports of it later finds no exec).
                        self.send_work(&Work::Signal { id, signal: libc::SIGKILL, group: true });
                        if self.execs.remove(&id).is_some() {
                            let mut error = SetupError::sys(Step::OpenPty, libc::ETOOMANYREFS, None);
                            error.message = format!("{} (and the helper could not take the terminal from the sandbox's init: {})", error.message, errno.desc());
                            out.send(&Event::ExecError { id, error });
                        }
                    }
                    taken.ok()
                }
                (None, None) => None,
            };
            if let (Some(e), Some(master)) = (self.execs.get_mut(&id), master) {
                if let Some((input, output)) = e.tty_io.take() {
                    e.tty = TtyRelay::new(master, input, output, e.ended.is_some(), self.sandbox).ok();
                    if let (Some(t), Some((rows, cols))) = (&e.tty, e.tty_size.take()) {
                        t.resize(rows, cols);
                    }
                }
            }
        }
    }

    fn send_work(&mut self, w: &Work) {
        self.outbox.push_back((serde_json::to_vec(w).unwrap_or_default(), Vec::new(), None));
        self.flush_outbox();
    }

    /// Send what the socket takes now, in order; the rest waits for POLLOUT.
    fn flush_outbox(&mut self) {
        while let Some((msg, fds, exec)) = self.outbox.front() {
            let raw: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
            match crate::sys::send_message(&self.work, msg, &raw, Step::SendExec) {
                Err(e) if e.errno.as_deref() == Some("EAGAIN") => return,
                // Refused for itself (its descriptors in flight, memory): that exec fails, where it
                // would have waited for an answer the init never gets.
                Err(e) if exec.is_some() && !matches!(e.errno.as_deref(), Some("EPIPE" | "ECONNRESET")) => {
                    self.unsent.push((exec.expect("matched"), e));
                    self.outbox.pop_front();
                }
                // Sent, or the init is gone (its end then shows in the reports).
                _ => {
                    self.outbox.pop_front();
                }
            }
        }
    }

    /// A report of the init about an exec; false when it is not one.
    pub fn on_report(&mut self, r: &Report, out: &mut Control, oom: OomKills) -> bool {
        match r {
            Report::ExecStarted { id, pid, at } => {
                if let Some(e) = self.execs.get_mut(id) {
                    e.running = true;
                    e.clock.command_started(crate::sys::instant_of_monotonic(*at));
                }
                out.send(&Event::ExecSpawned { id: *id, pid: *pid })
            }
            Report::ExecFailed { id, error } => {
                self.execs.remove(id);
                out.send(&Event::ExecError { id: *id, error: error.clone() });
            }
            Report::ExecExited { id, code, used } => self.ended(*id, Some(*code), None, *used),
            Report::ExecSignaled { id, signal, used } => self.ended(*id, None, Some(signal_name(*signal)), *used),
            // After the ends of the execs it killed (the init reported them before it).
            Report::KilledAll => {
                if let Some(k) = self.kills.iter_mut().find(|k| !k.done) {
                    k.done = true;
                }
            }
            _ => return false,
        }
        self.flush_ended(out, oom);
        true
    }

    fn ended(&mut self, id: u32, code: Option<i32>, signal: Option<String>, used: Option<Reaped>) {
        let Some(e) = self.execs.get_mut(&id) else { return };
        e.ended = Some((code, signal, Instant::now()));
        e.used = used;
        e.clock.disarm();
        if let Some(t) = &mut e.tty {
            t.command_ended();
        }
        // Stopped, it ended within its grace: what it left in its group goes now, as it would
        // have at the grace's end (or at once, without a stop).
        if e.stop_by.is_some() {
            self.kill_group(id);
        }
    }

    /// Report every ended exec whose terminal output is delivered, or whose grace ran out: a
    /// caller who does not read the output still hears of the end (as of a command without a
    /// terminal, whose output waits in its pipe). An exec goes once its output is delivered, or
    /// after the grace when only a silent holder of its terminal (a background job) is left;
    /// output the caller is still reading is relayed to the end.
    fn flush_ended(&mut self, out: &mut Control, oom: OomKills) {
        let now = Instant::now();
        let mut report = Vec::new();
        let mut done = Vec::new();
        for (id, e) in &self.execs {
            let Some((_, _, at)) = &e.ended else { continue };
            // A terminal's output is delivered first: its master may even arrive after the
            // command's end was reported.
            let (delivered, cut) = match (&e.tty, &e.tty_io) {
                (Some(t), _) => (t.finished(), t.drained()),
                (None, Some(_)) => (false, true),
                (None, None) => (true, true),
            };
            let graced = now >= *at + TTY_GRACE;
            if !e.reported && (delivered || graced) {
                report.push(*id);
            }
            if delivered || (cut && graced) {
                done.push(*id);
            }
        }
        for id in report {
            let e = self.execs.get_mut(&id).expect("listed above");
            e.reported = true;
            let (exit_code, signal, at) = e.ended.clone().expect("ended");
            let kills = oom();
            // Kills before it started were not its own (nor were those already put down to
            // another exec): one more since, and a SIGKILL, and the OOM killer is taken for its
            // end (the count, not a guess from SIGKILL alone). One kill per count: two execs the
            // same OOM burst ended are both 'oom'. (Still a guess when a process it did not start
            // died of it meanwhile.)
            let before = e.oom_at_start.max(self.oom_credited);
            let reason = e.forced.unwrap_or_else(|| match signal.as_deref() {
                Some("SIGKILL") if kills > before && !e.killed_by_caller => {
                    self.oom_credited = before + 1;
                    Reason::Oom
                }
                Some(_) => Reason::Signaled,
                None => Reason::Exited,
            });
            // Kills it explains are noted; more of the same burst (the init's, which this report
            // may have reached us after) stay news for the sandbox's end.
            self.oom_noted = self.oom_noted.max(if reason == Reason::Oom { self.oom_credited } else { kills });
            // To the command's end, not to this report (which may wait for its terminal's output).
            let duration_ms = e.clock.ms_until(at);
            let usage = e.used.filter(|_| !e.group_killed).map(|u| u.as_usage(duration_ms));
            out.send(&Event::ExecExit { id, exit_code, signal, reason, duration_ms, usage });
        }
        for id in done {
            self.execs.remove(&id);
        }
        self.report_kills(out);
    }

    /// Whether the sandbox cgroup's OOM killer struck since an exec last started or ended (`kills`,
    /// its count now): what ends the sandbox then is taken for its victim, not an OOM an hour ago.
    pub fn oom_since(&self, kills: u64) -> bool {
        kills > self.oom_noted
    }

    /// `group`: the exec's whole process group (what it started in the background too), which
    /// the init still reaches after the exec's end was reported.
    pub fn signal(&mut self, id: u32, signal: i32, group: bool) {
        let Some(e) = self.execs.get_mut(&id) else {
            if group {
                self.send_work(&Work::Signal { id, signal, group });
            }
            return;
        };
        e.killed_by_caller |= signal == libc::SIGKILL;
        e.group_killed |= group && signal == libc::SIGKILL && e.ended.is_none();
        self.send_work(&Work::Signal { id, signal, group });
    }

    /// Every process of the sandbox but its init killed, as the caller asked: the execs running
    /// end as its cancel (killed by the caller: never taken for the OOM killer's; what their
    /// children used goes uncounted, as for a group kill).
    pub fn kill_all(&mut self, out: &mut Control, oom: OomKills) {
        // Execs handed over before it (on the exec socket, read after the control socket that
        // brought this) are taken first: they end with it, never start after it.
        while self.requests.as_ref().is_some_and(crate::sys::readable_now) {
            self.take_requests(out, oom);
        }
        let mut ended = Vec::new();
        for (id, e) in self.execs.iter_mut().filter(|(_, e)| e.ended.is_none()) {
            e.forced = Some(Reason::Canceled);
            e.killed_by_caller = true;
            e.group_killed = true;
            e.clock.disarm();
            ended.push(*id);
        }
        self.kills.push_back(KillAll { ended, done: false });
        self.send_work(&Work::KillAll);
    }

    /// The sandbox's graceful end (its stop, at destroy() or its timeout): every process of it is
    /// sent `signal`. The execs running end as the sandbox does (`why`), whatever their own end;
    /// their own timeouts and stops give way to the sandbox's grace.
    pub fn stop_all(&mut self, signal: i32, why: Reason, out: &mut Control, oom: OomKills) {
        // Execs handed over before it are taken first: they get the signal too, rather than
        // starting after it and holding the sandbox for the whole grace.
        while self.requests.as_ref().is_some_and(crate::sys::readable_now) {
            self.take_requests(out, oom);
        }
        for e in self.execs.values_mut().filter(|e| e.ended.is_none()) {
            e.forced.get_or_insert(why);
            e.clock.disarm();
            e.stop_by = None;
        }
        self.send_work(&Work::StopAll { signal });
    }

    /// Tell Node of each killAll() the init has carried out once the execs it ended have been
    /// reported (a terminal's may wait for its output), in their order.
    fn report_kills(&mut self, out: &mut Control) {
        while let Some(k) = self.kills.front() {
            let reported = |id: &u32| self.execs.get(id).is_none_or(|e| e.reported);
            if !k.done || !k.ended.iter().all(reported) {
                return;
            }
            self.kills.pop_front();
            out.send(&Event::KilledAll);
        }
    }

    pub fn resize(&mut self, id: u32, rows: u16, cols: u16) {
        let Some(e) = self.execs.get_mut(&id) else { return };
        match &e.tty {
            Some(t) => t.resize(rows, cols),
            None => e.tty_size = Some((rows, cols)),
        }
    }

    /// The sandbox is gone: every exec still running ended with it.
    pub fn end_all(&mut self, why: Reason, out: &mut Control) {
        for (id, e) in self.execs.drain().filter(|(_, e)| !e.reported) {
            let duration_ms = e.clock.ms_until(e.ended.as_ref().map_or_else(Instant::now, |(_, _, at)| *at));
            let (exit_code, signal, reason) = match e.ended {
                Some((code, Some(signal), _)) => (code, Some(signal), Reason::Signaled),
                Some((code, None, _)) => (code, None, Reason::Exited),
                None => (None, Some(signal_name(libc::SIGKILL)), why),
            };
            let reason = e.forced.unwrap_or(reason);
            let usage = e.used.filter(|_| !e.group_killed).map(|u| u.as_usage(duration_ms));
            out.send(&Event::ExecExit { id, exit_code, signal, reason, duration_ms, usage });
        }
    }
}
