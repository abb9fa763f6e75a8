//! The unpacker's memory budget. An archive says what it likes about itself: a GNU long name or a
//! PAX record of gigabytes (a few KiB once gzipped), which the tar parser reads whole before the
//! entry reaches [`crate::unpack`] and its name checks. The `isolate-image` process counts every
//! heap allocation against [`BUDGET`]; one that would pass it ends the process with an error
//! report, as any other error is reported, instead of taking the host's memory.
//!
//! The decompressors' own C allocations are not counted here: `compress` bounds them (xz's
//! dictionary by a decoder memory limit, zstd's window by its largest log).

use std::alloc::{GlobalAlloc, Layout, System};
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};

/// Far above what unpacking needs (a copy buffer, the names of the entries made for whiteouts:
/// about 100 bytes per entry), far below what a host misses.
pub const BUDGET: usize = 1 << 30;

/// The error events `end_with` writes: what `tool` would emit for a `SetupError` at read_archive.
const OVER_BUDGET: &[u8] = b"{\"event\":\"error\",\"error\":{\"step\":\"read_archive\",\"errno\":\"ENOMEM\",\"message\":\"reading the archive would take more than the unpacker's 1 GiB of memory: a header (a GNU long name or link, a PAX record) or the list of its entries is larger than any real root filesystem's\",\"hint\":\"this archive cannot be a usable rootfs or image; make it again with ordinary tar\"}}\n";
const NO_MEMORY: &[u8] = b"{\"event\":\"error\",\"error\":{\"step\":\"read_archive\",\"errno\":\"ENOMEM\",\"message\":\"the system gave the unpacker no more memory (within its 1 GiB budget)\",\"hint\":\"the host is short of memory, or a limit of this process (RLIMIT_AS, RLIMIT_DATA, its cgroup) is below 1 GiB\"}}\n";

/// The line `tool` emits once a failed call's tree was removed.
const EMPTIED: &[u8] = b"{\"event\":\"emptied\"}\n";

/// The target directory this tool made and holds ([`empty_at_end`]): the end of the budget
/// empties it, as a failed call's end does, so that an archive that runs the tool out of memory
/// leaves no half-made tree behind. -1: none.
static TARGET_MADE: AtomicI32 = AtomicI32::new(-1);
/// Once the budget ran out: the emptying may take [`RESERVE`] more (the names it lists).
static RESERVE_OPEN: AtomicBool = AtomicBool::new(false);
const RESERVE: usize = 64 << 20;

/// Name the target this tool made (its fd, open until the tool ends), or none any more.
pub fn empty_at_end(dir: Option<RawFd>) {
    TARGET_MADE.store(dir.unwrap_or(-1), Ordering::SeqCst);
}

/// The system allocator, with every live byte counted against a limit.
pub struct Budgeted {
    used: AtomicUsize,
    limit: usize,
}

impl Budgeted {
    pub const fn new(limit: usize) -> Self {
        Budgeted { used: AtomicUsize::new(0), limit }
    }

    /// Counts `n` more bytes, or none and false when that would pass the limit.
    fn take(&self, n: usize) -> bool {
        let limit = if RESERVE_OPEN.load(Ordering::Relaxed) { self.limit.saturating_add(RESERVE) } else { self.limit };
        self.used.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| used.checked_add(n).filter(|after| *after <= limit)).is_ok()
    }

    fn give(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::Relaxed);
    }

    /// Bytes counted now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// A new block from `system`, counted first; past the budget, or refused by the system, the
    /// process ends with its report.
    fn counted(&self, size: usize, system: impl FnOnce() -> *mut u8) -> *mut u8 {
        if !self.take(size) {
            end_with(OVER_BUDGET);
        }
        let p = system();
        if p.is_null() {
            end_with(NO_MEMORY);
        }
        p
    }
}

/// Ends the process with an error event on stdout, as after any error: a target this tool made
/// is emptied first (within the reserve, once: an allocation past that too ends here again, with
/// nothing left to empty) and `emptied` said; then a fixed line, written without allocating (it
/// runs where allocating is what failed), and _exit with status 1. The tool is single-threaded
/// and `tool::emit` writes each line whole, so each line here starts a line.
fn end_with(event: &[u8]) -> ! {
    let target = TARGET_MADE.swap(-1, Ordering::SeqCst);
    if target >= 0 {
        RESERVE_OPEN.store(true, Ordering::SeqCst);
        // SAFETY: registered by tool::run while it holds that directory open, for as long as it does.
        let dir = unsafe { BorrowedFd::borrow_raw(target) };
        if crate::tree::empty_dir(dir).is_ok() {
            write_line(EMPTIED);
        }
    }
    write_line(event);
    // SAFETY: ends the process; never returns.
    unsafe { libc::_exit(1) }
}

fn write_line(line: &[u8]) {
    let mut rest = line;
    while !rest.is_empty() {
        // SAFETY: write of a live static buffer to fd 1.
        let n = unsafe { libc::write(1, rest.as_ptr().cast(), rest.len()) };
        match n {
            n if n > 0 => rest = &rest[n as usize..],
            _ if nix::errno::Errno::last() == nix::errno::Errno::EINTR => {}
            _ => break,
        }
    }
}

// SAFETY: every method hands the call to System unchanged; the counting only decides whether to
// make it, and a refused or failed one never returns.
unsafe impl GlobalAlloc for Budgeted {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.counted(layout.size(), || System.alloc(layout))
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.counted(layout.size(), || System.alloc_zeroed(layout))
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        self.give(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = layout.size();
        if new_size > old && !self.take(new_size - old) {
            end_with(OVER_BUDGET);
        }
        let p = System.realloc(ptr, layout, new_size);
        if p.is_null() {
            end_with(NO_MEMORY);
        }
        if new_size < old {
            self.give(old - new_size);
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_live_bytes_and_refuses_what_would_pass_the_limit() {
        let b = Budgeted::new(1000);
        assert!(b.take(600));
        assert!(!b.take(401), "600 + 401 passes 1000");
        assert_eq!(b.used(), 600, "a refused take counts nothing");
        assert!(b.take(400));
        b.give(1000);
        assert!(!b.take(usize::MAX), "no overflow into a small count");
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn allocations_through_it_are_counted_and_given_back() {
        let b = Budgeted::new(1 << 20);
        let layout = Layout::from_size_align(4096, 8).unwrap();
        // SAFETY: each pointer is used with the layout it was allocated with, then freed.
        unsafe {
            let p = b.alloc(layout);
            assert!(!p.is_null());
            assert_eq!(b.used(), 4096);
            let q = b.realloc(p, layout, 10_000);
            assert_eq!(b.used(), 10_000);
            let q = b.realloc(q, Layout::from_size_align(10_000, 8).unwrap(), 100);
            assert_eq!(b.used(), 100);
            b.dealloc(q, Layout::from_size_align(100, 8).unwrap());
        }
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn the_emptied_line_is_the_tool_s_own() {
        assert_eq!(std::str::from_utf8(EMPTIED).unwrap(), format!("{}\n", serde_json::json!({ "event": "emptied" })));
    }

    #[test]
    fn each_report_is_one_line_of_the_tool_s_error_event() {
        for event in [OVER_BUDGET, NO_MEMORY] {
            let line = std::str::from_utf8(event).unwrap();
            assert_eq!(line.matches('\n').count(), 1);
            assert!(line.ends_with('\n'));
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["event"], "error");
            let e: crate::error::SetupError = serde_json::from_value(v["error"].clone()).unwrap();
            assert_eq!((e.step, e.errno.as_deref()), (crate::error::Step::ReadArchive, Some("ENOMEM")));
        }
    }
}
