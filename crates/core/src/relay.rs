//! The output relay, used only when an output limit is asked for: the sandbox writes into pipes
//! the helper owns, and the helper splices (zero-copy) into the caller's stdout and stderr,
//! counting. The bound holds whatever the caller does with its streams, and the caller's memory
//! never holds more than the pipes do.

use nix::errno::Errno;
use nix::fcntl::{splice, OFlag, SpliceFFlags};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};

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
    nix::fcntl::fcntl(
        unsafe { BorrowedFd::borrow_raw(fd) },
        nix::fcntl::FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
    )?;
    Ok(())
}

impl Relay {
    /// Put a pipe between the sandbox and each of `slots` (1 and/or 2): the sandbox's end replaces
    /// the slot (so the clone inherits it), the caller's end is kept here.
    pub fn install(slots: &[RawFd], limit: u64) -> Result<Relay, Errno> {
        let mut streams = Vec::new();
        for &slot in slots {
            // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor that we own.
            let to = unsafe { libc::fcntl(slot, libc::F_DUPFD_CLOEXEC, 10) };
            if to < 0 {
                return Err(Errno::last());
            }
            // SAFETY: as above.
            let to = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(to) };
            let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
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
                        s.blocked = !writable_now(s.to.as_fd());
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

fn writable_now(fd: BorrowedFd<'_>) -> bool {
    let mut p = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLOUT)];
    matches!(nix::poll::poll(&mut p, nix::poll::PollTimeout::ZERO), Ok(1))
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

    /// Whether poll says the shared description is ready now (readable, or at its end).
    fn ready(&self, events: nix::poll::PollFlags) -> bool {
        let mut p = [nix::poll::PollFd::new(self.fd.as_fd(), events)];
        matches!(nix::poll::poll(&mut p, nix::poll::PollTimeout::ZERO), Ok(1))
    }

    fn read(&self, buf: &mut [u8]) -> Result<usize, Errno> {
        use nix::poll::PollFlags;
        if self.socket {
            return nix::sys::socket::recv(std::os::fd::AsRawFd::as_raw_fd(&self.fd), buf, nix::sys::socket::MsgFlags::MSG_DONTWAIT);
        }
        // POLLHUP too: a read then returns the end (0) at once.
        if self.shared && !self.ready(PollFlags::POLLIN | PollFlags::POLLHUP) {
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
            if !self.ready(nix::poll::PollFlags::POLLOUT) {
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
    input: Option<CallerEnd>,
    output: CallerEnd,
    to_master: Vec<u8>,
    to_output: Vec<u8>,
    /// The last byte typed was not a newline: an end of input must end that line first.
    line_open: bool,
    /// Every process let go of the terminal (the master read EIO). The master stays open until
    /// the command has ended too: closing it hangs the terminal up, and a command that closes its
    /// stdio before it exits (`cat` closes stdin at the end of its input) would die of SIGHUP.
    released: bool,
    command_ended: bool,
}

/// What a person types to end the input of a terminal in canonical mode (a shell's `cat`): its
/// EOF character (^D) at the start of a line, so after a line left open, twice. Nothing in raw
/// mode, where the program reads bytes and decides itself.
fn end_of_input(master: &OwnedFd, line_open: bool) -> Vec<u8> {
    // SAFETY: a zeroed termios is valid for tcgetattr to fill in.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: tcgetattr on the helper's own pty master (it reads the terminal's settings).
    if unsafe { libc::tcgetattr(std::os::fd::AsRawFd::as_raw_fd(master), &mut t) } != 0 || t.c_lflag & libc::ICANON == 0 {
        return Vec::new();
    }
    vec![t.c_cc[libc::VEOF]; if line_open { 2 } else { 1 }]
}

impl TtyRelay {
    pub fn new(master: OwnedFd, input: OwnedFd, output: OwnedFd) -> Result<TtyRelay, Errno> {
        // The master is the helper's own.
        set_nonblocking(std::os::fd::AsRawFd::as_raw_fd(&master))?;
        let (input, output) = (CallerEnd::open(input, false)?, CallerEnd::open(output, true)?);
        Ok(TtyRelay { master: Some(master), input: Some(input), output, to_master: Vec::new(), to_output: Vec::new(), line_open: false, released: false, command_ended: false })
    }

    pub fn master(&self) -> Option<BorrowedFd<'_>> {
        self.master.as_ref().map(|m| m.as_fd())
    }

    /// Every process that held the terminal is gone and what it wrote was delivered.
    pub fn finished(&self) -> bool {
        self.master.is_none() && self.to_output.is_empty()
    }

    pub fn interests(&self) -> Vec<Interest<'_>> {
        let mut out = Vec::new();
        if let Some(m) = self.master.as_ref().filter(|_| !self.released) {
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
            // The caller closed stdin; the terminal stays open, as a terminal would, and says
            // end of input as one does (see end_of_input).
            Ok(0) => {
                self.input = None;
                if let Some(m) = &self.master {
                    self.to_master.extend(end_of_input(m, self.line_open));
                }
            }
            Ok(n) => {
                self.line_open = buf[n - 1] != b'\n';
                self.to_master.extend_from_slice(&buf[..n]);
            }
            Err(Errno::EAGAIN | Errno::EINTR) => {}
            Err(_) => self.input = None,
        }
        !self.to_master.is_empty()
    }

    pub fn pump(&mut self) {
        let mut buf = [0u8; 16 << 10];
        self.take_input();
        if self.released {
            // Nobody holds the terminal to read what is typed.
            self.to_master.clear();
        }
        if let Some(m) = self.master.as_ref().filter(|_| !self.released) {
            if !self.to_master.is_empty() {
                match nix::unistd::write(m, &self.to_master) {
                    Ok(n) => {
                        self.to_master.drain(..n);
                    }
                    Err(Errno::EAGAIN | Errno::EINTR) => {}
                    Err(_) => self.to_master.clear(),
                }
            }
            if self.to_output.is_empty() {
                match nix::unistd::read(m, &mut buf) {
                    Ok(n) if n > 0 => self.to_output.extend_from_slice(&buf[..n]),
                    Err(Errno::EAGAIN | Errno::EINTR) => {}
                    // EIO: no process holds the terminal any more.
                    _ => {
                        self.released = true;
                        self.close_when_done();
                    }
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

    /// The command has ended (reaped): once nobody holds the terminal either, the master closes.
    pub fn command_ended(&mut self) {
        self.command_ended = true;
        self.close_when_done();
    }

    fn close_when_done(&mut self) {
        if self.released && self.command_ended {
            self.master = None;
        }
    }

    pub fn close(&mut self) {
        self.master = None;
        self.input = None;
    }
}
