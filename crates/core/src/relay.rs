//! The output relay, used only when an output limit is asked for: the sandbox writes into pipes
//! the helper owns, and the helper splices (zero-copy) into the caller's stdout and stderr,
//! counting. The bound holds whatever the caller does with its streams, and the caller's memory
//! never holds more than the pipes do.

use nix::errno::Errno;
use nix::fcntl::{splice, OFlag, SpliceFFlags};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use crate::terminal_readers::{Readers, Sandbox, Terminal};

/// One relayed stream: from the sandbox's pipe (`from`) to the caller's (`to`).
struct Stream {
    from: Option<OwnedFd>,
    to: OwnedFd,
    /// Bytes sitting in `from` that `to` had no room for yet.
    blocked: bool,
}

pub struct Relay {
    streams: Vec<Stream>,
    /// Bytes still allowed through, over all streams together.
    left: u64,
    exceeded: bool,
}

/// What to poll for, per stream: readable input, or a writable output when it was full.
pub struct Interest<'a> {
    pub fd: BorrowedFd<'a>,
    pub writable: bool,
}

pub(crate) fn set_nonblocking(fd: RawFd) -> Result<(), Errno> {
    let flags = nix::fcntl::fcntl(unsafe { BorrowedFd::borrow_raw(fd) }, nix::fcntl::FcntlArg::F_GETFL)?;
    nix::fcntl::fcntl(unsafe { BorrowedFd::borrow_raw(fd) }, nix::fcntl::FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK))?;
    Ok(())
}

impl Relay {
    /// Put a pipe between the sandbox and each of `slots` (1 and/or 2): the sandbox's end replaces
    /// the slot (so the clone inherits it), the caller's end is kept here.
    /// `reopenable`: the sandbox's own pipes may be opened again by path (see
    /// [`crate::sys::let_holders_reopen`]).
    pub fn install(slots: &[RawFd], limit: u64, reopenable: bool) -> Result<Relay, Errno> {
        // A slot that is the same open file as an earlier one (stderr sent to stdout) gets that
        // one's pipe: what the command writes to both stays in its order, and counts once.
        let same: Vec<Option<RawFd>> =
            slots.iter().enumerate().map(|(i, &slot)| slots[..i].iter().copied().find(|&e| crate::sys::same_open_file(e, slot))).collect();
        let mut streams = Vec::new();
        for (&slot, same) in slots.iter().zip(same) {
            if let Some(earlier) = same {
                // SAFETY: dup2 onto our own stdio slot from another, which holds the relay's pipe now.
                if unsafe { libc::dup2(earlier, slot) } < 0 {
                    return Err(Errno::last());
                }
                continue;
            }
            // SAFETY: a slot of this process's stdio, open while it runs.
            let to = crate::sys::dup_above(unsafe { std::os::fd::BorrowedFd::borrow_raw(slot) }, 10)?;
            let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
            if reopenable {
                crate::sys::let_holders_reopen(&r)?;
            }
            // SAFETY: dup2 onto our own stdio slot; the slot's old file stays open through `to`.
            if unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&w), slot) } < 0 {
                return Err(Errno::last());
            }
            drop(w);
            // Only our private end: `to` may share its file description with the caller (an
            // inherited terminal), whose flags are not ours to change; SPLICE_F_NONBLOCK covers it.
            set_nonblocking(std::os::fd::AsRawFd::as_raw_fd(&r))?;
            streams.push(Stream { from: Some(r), to, blocked: false });
        }
        Ok(Relay { streams, left: limit, exceeded: false })
    }

    /// True once more than the limit was written: the caller ends the sandbox.
    pub fn exceeded(&self) -> bool {
        self.exceeded
    }

    /// True when every sandbox-side pipe reached EOF (all writers gone) and was drained.
    pub fn finished(&self) -> bool {
        self.streams.iter().all(|s| s.from.is_none())
    }

    pub fn interests(&self) -> Vec<Interest<'_>> {
        self.streams
            .iter()
            .filter_map(|s| {
                let from = s.from.as_ref()?;
                Some(if s.blocked { Interest { fd: s.to.as_fd(), writable: true } } else { Interest { fd: from.as_fd(), writable: false } })
            })
            .collect()
    }

    /// Move what can be moved without blocking.
    pub fn pump(&mut self) {
        for s in &mut self.streams {
            let Some(from) = s.from.as_ref() else { continue };
            loop {
                if self.left == 0 {
                    // One byte more than allowed means the bound was passed: stop relaying.
                    let mut probe = [0u8; 1];
                    match nix::unistd::read(from, &mut probe) {
                        Ok(0) => s.from = None,
                        // The pipe stays open until the caller has killed the sandbox: closed
                        // now, the writer's SIGPIPE would let the command go on to finish.
                        Ok(_) => self.exceeded = true,
                        Err(_) => {}
                    }
                    break;
                }
                let chunk = self.left.min(1 << 20) as usize;
                match splice(from, None, &s.to, None, chunk, SpliceFFlags::SPLICE_F_NONBLOCK | SpliceFFlags::SPLICE_F_MOVE) {
                    Ok(0) => {
                        s.from = None;
                        break;
                    }
                    Ok(n) => {
                        self.left -= n as u64;
                        s.blocked = false;
                    }
                    Err(Errno::EAGAIN) => {
                        // Either nothing to read or no room to write; a zero-timeout poll on the
                        // output tells which.
                        s.blocked = !crate::sys::ready_now(s.to.as_fd(), nix::poll::PollFlags::POLLOUT);
                        break;
                    }
                    Err(Errno::EINTR) => {}
                    Err(_) => {
                        // The caller closed its end: nothing more can be delivered.
                        s.from = None;
                        break;
                    }
                }
            }
        }
    }

    /// Drop every sandbox-side pipe (the sandbox is being ended).
    pub fn close(&mut self) {
        for s in &mut self.streams {
            s.from = None;
        }
    }
}

/// One of the caller's descriptors, read or written without ever blocking, and never with its
/// flags changed: the file description may be shared (a terminal, a shell's file), and
/// O_NONBLOCK set on it would stay after the sandbox (a shell's next `cat` then fails with EAGAIN).
struct CallerEnd {
    fd: OwnedFd,
    /// A socket: MSG_DONTWAIT per call.
    socket: bool,
    /// The caller's own description, left blocking: each read or write waits for nothing
    /// because poll says it is ready first, and a write is at most [`SHARED_WRITE`] bytes.
    shared: bool,
}

/// What one write to a blocking pipe or terminal that poll called writable takes without
/// waiting: a pipe then has a page free, a terminal's line discipline at least this much.
const SHARED_WRITE: usize = 256;

/// /proc/self/fd/N of an anonymous pipe (pipefs) opens the same pipe.
const PIPEFS_MAGIC: nix::sys::statfs::FsType = nix::sys::statfs::FsType(0x5049_5045);

impl CallerEnd {
    /// A regular file or block device never makes a read or write wait: used as it is. A socket
    /// takes MSG_DONTWAIT. An anonymous pipe or a terminal's slave side is opened again through
    /// /proc/self/fd: a new file description of the same object (checked), ours to make
    /// nonblocking (O_NOCTTY: never the helper's controlling terminal). Anything else (a named
    /// FIFO, whose reopened end would miss its writers' hang-up; a pty master, /dev/tty or
    /// another device, which would open something else; a terminal we may not open) is used as
    /// it is, blocking, through poll (see `shared`).
    fn open(fd: OwnedFd, write: bool) -> Result<CallerEnd, Errno> {
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        let st = nix::sys::stat::fstat(&fd)?;
        let kind = st.st_mode & libc::S_IFMT;
        match kind {
            libc::S_IFREG | libc::S_IFBLK => return Ok(CallerEnd { fd, socket: false, shared: false }),
            libc::S_IFSOCK => return Ok(CallerEnd { fd, socket: true, shared: false }),
            _ => {}
        }
        let reopenable = match kind {
            libc::S_IFIFO => nix::sys::statfs::fstatfs(&fd).is_ok_and(|f| f.filesystem_type() == PIPEFS_MAGIC),
            // A terminal, but not a pty master (TIOCGPTN answers only there) nor /dev/tty,
            // /dev/console or /dev/ptmx (major 5), which name another terminal once reopened.
            libc::S_IFCHR => {
                let mut n: libc::c_uint = 0;
                // SAFETY: isatty and TIOCGPTN on our own descriptor; TIOCGPTN writes one uint.
                let tty = unsafe { libc::isatty(raw) } == 1;
                let master = unsafe { libc::ioctl(raw, libc::TIOCGPTN, &mut n) } == 0;
                tty && !master && libc::major(st.st_rdev) != 5
            }
            _ => false,
        };
        if reopenable {
            let access = if write { OFlag::O_WRONLY } else { OFlag::O_RDONLY };
            let path = format!("/proc/self/fd/{raw}");
            if let Ok(own) = nix::fcntl::open(path.as_str(), access | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty()) {
                let same = nix::sys::stat::fstat(&own).is_ok_and(|o| (o.st_dev, o.st_ino, o.st_rdev) == (st.st_dev, st.st_ino, st.st_rdev));
                if same {
                    return Ok(CallerEnd { fd: own, socket: false, shared: false });
                }
            }
        }
        Ok(CallerEnd { fd, socket: false, shared: true })
    }

    fn read(&self, buf: &mut [u8]) -> Result<usize, Errno> {
        use nix::poll::PollFlags;
        if self.socket {
            return nix::sys::socket::recv(std::os::fd::AsRawFd::as_raw_fd(&self.fd), buf, nix::sys::socket::MsgFlags::MSG_DONTWAIT);
        }
        // POLLHUP too: a read then returns the end (0) at once.
        if self.shared && !crate::sys::ready_now(self.fd.as_fd(), PollFlags::POLLIN | PollFlags::POLLHUP) {
            return Err(Errno::EAGAIN);
        }
        nix::unistd::read(&self.fd, buf)
    }

    fn write(&self, buf: &[u8]) -> Result<usize, Errno> {
        if self.socket {
            use nix::sys::socket::MsgFlags;
            return nix::sys::socket::send(std::os::fd::AsRawFd::as_raw_fd(&self.fd), buf, MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL);
        }
        if self.shared {
            if !crate::sys::ready_now(self.fd.as_fd(), nix::poll::PollFlags::POLLOUT) {
                return Err(Errno::EAGAIN);
            }
            return nix::unistd::write(&self.fd, &buf[..buf.len().min(SHARED_WRITE)]);
        }
        nix::unistd::write(&self.fd, buf)
    }
}

/// A terminal relay: the caller's stdin into the pty's master, the master's output to the
/// caller's stdout. Nonblocking both ways, with a bounded buffer per direction, so neither a
/// slow reader nor a silent command can stall the helper's loop.
pub struct TtyRelay {
    master: Option<OwnedFd>,
    /// The helper's own hold on the terminal until the command has ended: while the command runs,
    /// the master never reads EIO (nobody holds it) even when the command has let go of its
    /// stdio for a while (coreutils' cat closes stdin at its end; ssh, sudo and gpg reopen
    /// /dev/tty to prompt), so the terminal is never hung up (SIGHUP) under a running command.
    slave: Option<OwnedFd>,
    input: Option<CallerEnd>,
    output: CallerEnd,
    to_master: Vec<u8>,
    to_output: Vec<u8>,
    /// The last master read found nothing (EAGAIN): what the terminal held is all relayed.
    master_idle: bool,
    /// The last byte typed ended no line.
    line_open: bool,
    end_of_input: EndOfInput,
    /// The sandbox and this terminal, where the helper holds its slave: the end of input is typed
    /// when a task of the sandbox waits to read it ([`crate::terminal_readers`]).
    readers: Option<(Sandbox, Terminal)>,
    /// Looks in a row that could not see every task (see [`UNKNOWN_LOOKS`]).
    unknown_looks: u32,
    /// When a pending end of input is looked at next: a moment after the last bytes went to the
    /// master (the terminal takes them in a little later), then again while the program has not
    /// read them.
    next_look: Instant,
    /// How long until the next look while no task waits to read (doubling up to [`LOOK_AT_MOST`]).
    look_every: Duration,
    /// No look before this: the last one's cost times [`LOOK_SHARE`].
    look_floor: Instant,
    /// What the last look saw with nothing unread: the terminal's mode bits. The end is told
    /// only when two looks agree, so a program between two reads (readline gives the terminal
    /// its canonical mode back while a line's command runs) is not taken for one reading.
    settled: Option<libc::tcflag_t>,
}

/// Whether the caller's stdin has ended, and the terminal been told.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum EndOfInput {
    NotYet,
    /// Told once the command has read everything typed before (see [`end_of_input`]).
    Pending,
    Told,
}

/// How often a pending end of input looks whether the command has read what came before it.
const END_OF_INPUT_CHECK: Duration = Duration::from_millis(20);
/// The longest wait between two looks for a task that waits to read the terminal: how late a
/// program that starts reading long after the input ended hears of its end, at worst.
const LOOK_AT_MOST: Duration = Duration::from_millis(160);
/// Looks in a row that could not see every task (more than a look reads, one it may not trace)
/// before the end is told by watching the terminal alone, as long as that lasts: what cannot be
/// seen now mostly stays so, and a helper that may trace nothing must still tell the end.
const UNKNOWN_LOOKS: u32 = 3;
/// Looks at the sandbox's tasks take at most one part in this many of the helper's time.
const LOOK_SHARE: u32 = 100;

/// What a person types to end a terminal's input, decided when the program waits to read, so the
/// mode is the one it reads in: in canonical mode the EOF character (^D), which at the start of a
/// line is the end (after a line left open, a first one hands that line over:
/// [`EofStep::LineFirst`], and the end is decided again once it is read); ^D too where readline
/// reads the keys (bash, python: no canonical mode, no echo, no carriage-return translation, the
/// terminal's signals kept), which takes it for the end on an empty line (a line left open gets
/// Enter first: readline takes no line without its end, and a shell or python given that text
/// through a pipe would run it too); nothing where the program reads keys otherwise, raw or
/// cbreak (`read -n`, `less`, curses), where ^D would be a byte of the data, nor where the EOF
/// character is switched off.
fn end_of_input(t: &libc::termios, line_open: bool) -> EofStep {
    let eof = t.c_cc[libc::VEOF];
    let readline = t.c_lflag & (libc::ICANON | libc::ECHO | libc::ISIG) == libc::ISIG && t.c_iflag & libc::ICRNL == 0;
    if eof == 0 {
        EofStep::Nothing // _POSIX_VDISABLE
    } else if t.c_lflag & libc::ICANON != 0 {
        if line_open {
            EofStep::LineFirst(eof)
        } else {
            EofStep::End(eof)
        }
    } else if readline && line_open {
        EofStep::LineFirst(b'\r')
    } else if readline {
        EofStep::End(eof)
    } else {
        EofStep::Nothing
    }
}

#[derive(Debug, PartialEq, Eq)]
enum EofStep {
    Nothing,
    /// Ends the line left open (the byte to type); the end itself is decided once the program has
    /// read it.
    LineFirst(u8),
    End(u8),
}

/// Whether `typed` ends a line for a terminal set as `t`: a newline, its EOL characters, or a
/// carriage return it reads as a newline.
fn ends_line(typed: u8, t: &libc::termios) -> bool {
    let eol = |c: u8| c != 0 && c == typed;
    typed == b'\n' || eol(t.c_cc[libc::VEOL]) || eol(t.c_cc[libc::VEOL2]) || (typed == b'\r' && t.c_iflag & libc::ICRNL != 0 && t.c_iflag & libc::IGNCR == 0)
}

fn termios_of(fd: BorrowedFd<'_>) -> Option<libc::termios> {
    // SAFETY: a zeroed termios is valid for tcgetattr to fill in; tcgetattr on our own descriptor.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    (unsafe { libc::tcgetattr(std::os::fd::AsRawFd::as_raw_fd(&fd), &mut t) } == 0).then_some(t)
}

/// Bytes typed that the program has not read yet (FIONREAD on the slave; in canonical mode, of
/// whole lines only).
fn unread(slave: &OwnedFd) -> Option<libc::c_int> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int; the helper's own slave descriptor.
    (unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(slave), libc::FIONREAD, &mut n) } == 0).then_some(n)
}

impl TtyRelay {
    /// `command_ended`: the command's end was heard before its terminal's master came. `sandbox`:
    /// whose tasks are looked at for one that waits to read the terminal.
    pub fn new(master: OwnedFd, input: OwnedFd, output: OwnedFd, command_ended: bool, sandbox: Sandbox) -> Result<TtyRelay, Errno> {
        // The master is the helper's own.
        set_nonblocking(std::os::fd::AsRawFd::as_raw_fd(&master))?;
        let (input, output) = (CallerEnd::open(input, false)?, CallerEnd::open(output, true)?);
        let slave = if command_ended { None } else { crate::sys::pty_peer(&master) };
        let readers = slave.as_ref().and_then(Terminal::of).map(|t| (sandbox, t));
        Ok(TtyRelay {
            master: Some(master),
            slave,
            input: Some(input),
            output,
            to_master: Vec::new(),
            to_output: Vec::new(),
            master_idle: false,
            line_open: false,
            end_of_input: if command_ended { EndOfInput::Told } else { EndOfInput::NotYet },
            readers,
            unknown_looks: 0,
            next_look: Instant::now(),
            look_every: END_OF_INPUT_CHECK,
            look_floor: Instant::now(),
            settled: None,
        })
    }

    pub fn master(&self) -> Option<BorrowedFd<'_>> {
        self.master.as_ref().map(|m| m.as_fd())
    }

    /// Every process that held the terminal is gone and what it wrote was delivered.
    pub fn finished(&self) -> bool {
        self.master.is_none() && self.to_output.is_empty()
    }

    /// What the terminal held when last looked at is delivered, whether or not a process still
    /// holds it: a silent holder (a background job) is all that is left.
    pub fn drained(&self) -> bool {
        self.to_output.is_empty() && (self.master.is_none() || self.master_idle)
    }

    /// The command has ended (reaped): the helper lets go of the terminal, which hangs up once
    /// every other holder has too.
    pub fn command_ended(&mut self) {
        self.slave = None;
        // Nobody is left to hear an end of input: none is typed (it would only echo back).
        self.end_of_input = EndOfInput::Told;
    }

    /// When the loop must run the relay again with no event: to look at a pending end of input.
    pub fn next_due(&self) -> Option<Instant> {
        (self.end_of_input == EndOfInput::Pending && self.master.is_some()).then_some(self.next_look)
    }

    pub fn due(&self) -> bool {
        self.next_due().is_some_and(|d| Instant::now() >= d)
    }

    pub fn interests(&self) -> Vec<Interest<'_>> {
        let mut out = Vec::new();
        if let Some(m) = &self.master {
            if self.to_output.is_empty() {
                out.push(Interest { fd: m.as_fd(), writable: false });
            }
            if !self.to_master.is_empty() {
                out.push(Interest { fd: m.as_fd(), writable: true });
            }
        }
        if let Some(i) = &self.input {
            if self.to_master.is_empty() {
                out.push(Interest { fd: i.fd.as_fd(), writable: false });
            }
        }
        if !self.to_output.is_empty() {
            out.push(Interest { fd: self.output.fd.as_fd(), writable: true });
        }
        out
    }

    /// Read what the caller typed, unless earlier keystrokes still wait for the terminal; true
    /// when something was read.
    pub fn take_input(&mut self) -> bool {
        if !self.to_master.is_empty() {
            return false;
        }
        let Some(input) = &self.input else { return false };
        let mut buf = [0u8; 16 << 10];
        match input.read(&mut buf) {
            // The caller closed stdin; the terminal stays open, as a terminal would, and hears
            // of the end as a person would tell it (see end_of_input).
            Ok(0) => {
                self.input = None;
                if self.end_of_input == EndOfInput::NotYet {
                    self.end_of_input = EndOfInput::Pending;
                }
            }
            Ok(n) => {
                let t = self.master.as_ref().and_then(|m| termios_of(m.as_fd()));
                self.line_open = t.is_some_and(|t| !ends_line(buf[n - 1], &t));
                self.to_master.extend_from_slice(&buf[..n]);
            }
            Err(Errno::EAGAIN | Errno::EINTR) => {}
            Err(_) => self.input = None,
        }
        !self.to_master.is_empty()
    }

    /// A pending end of input, typed once everything typed before it reached the terminal and a
    /// task of the sandbox waits to read it, in the mode that task reads in (see [`end_of_input`]),
    /// and again for each later read that waits (as a pipe ends each: `cat; cat`, a shell after
    /// the program it ran), but only once the one before was read: none is left queued for a
    /// program that goes raw later. Where the sandbox's tasks cannot be seen (several looks in a
    /// row), it is told once, when the program has read what came before (FIONREAD 0 on the
    /// helper's slave) and two looks agree on the mode.
    fn tell_end_of_input(&mut self) {
        let Some(m) = &self.master else { return };
        if self.end_of_input != EndOfInput::Pending || !self.to_master.is_empty() {
            return;
        }
        let Some(slave) = &self.slave else {
            // Without the helper's own slave the program's reading cannot be seen: all at once.
            let t = termios_of(m.as_fd());
            (self.to_master, self.end_of_input) = match t.map_or(EofStep::Nothing, |t| end_of_input(&t, self.line_open)) {
                EofStep::LineFirst(first) => (vec![first, t.map_or(4, |t| t.c_cc[libc::VEOF])], EndOfInput::Told),
                EofStep::End(eof) => (vec![eof], EndOfInput::Told),
                EofStep::Nothing => (Vec::new(), EndOfInput::Told),
            };
            return;
        };
        let now = Instant::now();
        if now < self.next_look {
            return;
        }
        // Once looks could not see every task, the terminal alone decides, and its check costs
        // next to nothing: the tasks are looked at again (they may have become fewer) only as
        // often as a look's cost allows, not before each check. On a loaded machine a look at
        // more tasks than it reads took long enough to space the checks seconds apart.
        let watching_terminal = self.unknown_looks >= UNKNOWN_LOOKS && now < self.look_floor;
        let readers = if watching_terminal {
            Readers::Unknown
        } else {
            let readers = self.readers.as_ref().map_or(Readers::Unknown, |(sandbox, tty)| crate::terminal_readers::look(sandbox, *tty));
            // Looks of a sandbox with many tasks cost more: they come less often.
            self.look_floor = now + Instant::now().duration_since(now) * LOOK_SHARE;
            // More tasks than a look reads: the terminal decides from now on, without the looks
            // in a row that would wait for each other's floor (on a loaded machine, seconds apart:
            // `cat` after 600 background jobs heard its end only after 20 s).
            self.unknown_looks = match readers {
                Readers::TooMany => UNKNOWN_LOOKS,
                Readers::Unknown => self.unknown_looks + 1,
                _ => 0,
            };
            if !matches!(readers, Readers::Unknown | Readers::TooMany) {
                // A sighting of the terminal alone holds only within one stretch of such looks.
                self.settled = None;
            }
            readers
        };
        // Read after the look, which may take a while: the mode the program reads in now
        // (tcgetattr on a pty master gives its slave's settings: the terminal's).
        let t = termios_of(m.as_fd());
        let step = t.map_or(EofStep::Nothing, |t| end_of_input(&t, self.line_open));
        match readers {
            // Readable: what was typed last (an end of file too) has not been read yet.
            Readers::Waiting if crate::sys::ready_now(slave.as_fd(), nix::poll::PollFlags::POLLIN) => self.look_at(now + END_OF_INPUT_CHECK),
            Readers::Waiting => {
                match step {
                    EofStep::LineFirst(first) => (self.to_master, self.line_open) = (vec![first], false),
                    EofStep::End(eof) => self.to_master = vec![eof],
                    // Raw or cbreak, or no EOF character: nothing to type, unless the mode changes.
                    EofStep::Nothing => return self.look_later(now),
                }
                // Readline that takes the ^D for a key (a line it was given back) waits on: the
                // next ones come ever less often. A canonical read takes each as its end.
                let canonical = t.is_some_and(|t| t.c_lflag & libc::ICANON != 0);
                if canonical {
                    self.look_every = END_OF_INPUT_CHECK;
                    self.look_at(now + END_OF_INPUT_CHECK);
                } else {
                    self.look_later(now);
                }
            }
            Readers::NoneWaiting => self.look_later(now),
            Readers::Unknown | Readers::TooMany if self.unknown_looks < UNKNOWN_LOOKS => self.look_at(now + END_OF_INPUT_CHECK),
            Readers::Unknown | Readers::TooMany => {
                let mode = t.map(|t| t.c_lflag & (libc::ICANON | libc::ISIG));
                let seen = if unread(slave) == Some(0) { mode } else { None };
                // The terminal's next check is timed from now, not from before a look that may
                // have taken longer than the gap, and whenever the tasks' next look may be.
                let now = Instant::now();
                if seen.is_none() {
                    // Input not read yet (the program is busy elsewhere): checked ever less often.
                    self.settled = None;
                    return self.check_terminal_later(now);
                }
                if seen != self.settled {
                    // Told once the mode holds, with nothing unread, a while: readline gives
                    // canonical mode back while a line's command runs. Where looks are costly,
                    // and so no look comes between the checks, the while is longer.
                    self.settled = seen;
                    let costly = self.look_floor > now + END_OF_INPUT_CHECK;
                    self.next_look = now + if costly { LOOK_AT_MOST } else { END_OF_INPUT_CHECK };
                    return;
                }
                match step {
                    EofStep::LineFirst(first) => (self.to_master, self.line_open) = (vec![first], false),
                    EofStep::End(eof) => (self.to_master, self.end_of_input) = (vec![eof], EndOfInput::Told),
                    // Raw or cbreak, or no EOF character: nothing to type, unless the mode changes.
                    EofStep::Nothing => {
                        self.settled = None;
                        self.check_terminal_later(now);
                    }
                }
            }
        }
    }

    /// Nothing to type yet: look again later, less often the longer nothing changes.
    fn look_later(&mut self, now: Instant) {
        self.look_at(now + self.look_every);
        self.look_every = (self.look_every * 2).min(LOOK_AT_MOST);
    }

    /// The terminal alone decides (the tasks cannot all be seen): its next check, less often the
    /// longer nothing changes.
    fn check_terminal_later(&mut self, now: Instant) {
        self.next_look = now + self.look_every;
        self.look_every = (self.look_every * 2).min(LOOK_AT_MOST);
    }

    /// The next look at the sandbox's tasks: at `at`, or later if the last look cost more than
    /// [`LOOK_SHARE`] allows.
    fn look_at(&mut self, at: Instant) {
        self.next_look = at.max(self.look_floor);
    }

    pub fn pump(&mut self) {
        let mut buf = [0u8; 16 << 10];
        self.take_input();
        self.tell_end_of_input();
        if let Some(m) = &self.master {
            if !self.to_master.is_empty() {
                match nix::unistd::write(m, &self.to_master) {
                    Ok(n) => {
                        self.to_master.drain(..n);
                        // The terminal takes what was written a little later; a look planned
                        // later than that (spaced by its cost, or backing off) stays so.
                        self.next_look = self.next_look.max(Instant::now() + END_OF_INPUT_CHECK);
                        self.settled = None;
                    }
                    Err(Errno::EAGAIN | Errno::EINTR) => {}
                    Err(_) => self.to_master.clear(),
                }
            }
            if self.to_output.is_empty() {
                self.master_idle = false;
                match nix::unistd::read(m, &mut buf) {
                    Ok(n) if n > 0 => self.to_output.extend_from_slice(&buf[..n]),
                    Err(Errno::EAGAIN | Errno::EINTR) => self.master_idle = true,
                    // EIO: no process holds the terminal any more (the helper let go of it when
                    // the command ended).
                    _ => self.master = None,
                }
            }
        }
        if !self.to_output.is_empty() {
            match self.output.write(&self.to_output) {
                Ok(n) => {
                    self.to_output.drain(..n);
                }
                Err(Errno::EAGAIN | Errno::EINTR) => {}
                // The caller stopped reading: nothing more can be delivered.
                Err(_) => {
                    self.to_output.clear();
                    self.master = None;
                }
            }
        }
    }

    pub fn resize(&self, rows: u16, cols: u16) {
        if let Some(m) = &self.master {
            let _ = crate::sys::set_window_size(m, rows, cols);
        }
    }

    /// Ends the relay: what the caller did not take yet is dropped, the terminal hung up.
    pub fn close(&mut self) {
        self.master = None;
        self.slave = None;
        self.input = None;
        self.to_output.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn termios(lflag: libc::tcflag_t, iflag: libc::tcflag_t, eof: u8) -> libc::termios {
        // SAFETY: all-zero is a valid termios (every flag off, every character disabled).
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        t.c_lflag = lflag;
        t.c_iflag = iflag;
        t.c_cc[libc::VEOF] = eof;
        t
    }

    #[test]
    fn the_end_of_input_is_what_a_person_would_type_in_the_mode_the_program_reads_in() {
        let canonical = termios(libc::ICANON | libc::ISIG | libc::ECHO, libc::ICRNL, 4);
        assert_eq!(end_of_input(&canonical, false), EofStep::End(4));
        assert_eq!(end_of_input(&canonical, true), EofStep::LineFirst(4), "a line left open is handed over first");
        // readline (bash -i, python3 -i): keys read one by one, no echo, no CR translation, the
        // terminal's signals kept.
        assert_eq!(end_of_input(&termios(libc::ISIG, 0, 4), false), EofStep::End(4));
        assert_eq!(end_of_input(&termios(libc::ISIG, 0, 4), true), EofStep::LineFirst(b'\r'), "readline gets Enter for a line left open");
        // cbreak (`read -n1`, `stty -icanon`, tty.setcbreak, less): ^D would be data.
        assert_eq!(end_of_input(&termios(libc::ISIG | libc::ECHO, libc::ICRNL, 4), false), EofStep::Nothing);
        assert_eq!(end_of_input(&termios(libc::ISIG, libc::ICRNL, 4), true), EofStep::Nothing);
        // Raw (cfmakeraw): ^D would be a byte of the data.
        assert_eq!(end_of_input(&termios(0, 0, 4), false), EofStep::Nothing);
        // `stty eof undef`: _POSIX_VDISABLE, never a NUL typed.
        assert_eq!(end_of_input(&termios(libc::ICANON | libc::ISIG, libc::ICRNL, 0), false), EofStep::Nothing);
    }

    #[test]
    fn a_line_ends_where_the_terminal_ends_it() {
        let mut t = termios(libc::ICANON, libc::ICRNL, 4);
        assert!(ends_line(b'\n', &t));
        assert!(ends_line(b'\r', &t), "ICRNL reads a carriage return as a newline");
        assert!(!ends_line(b'x', &t));
        assert!(!ends_line(0, &t), "a disabled EOL character matches no byte");
        t.c_cc[libc::VEOL] = b';';
        assert!(ends_line(b';', &t));
        t.c_iflag = libc::ICRNL | libc::IGNCR;
        assert!(!ends_line(b'\r', &t), "IGNCR drops it");
        t.c_iflag = 0;
        assert!(!ends_line(b'\r', &t));
    }
}
