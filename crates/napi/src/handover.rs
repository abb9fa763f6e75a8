//! Descriptors on their way to JavaScript, held here until it takes them.
//!
//! A start on the libuv thread pool resolves its promise with the helper's descriptors, but they
//! are JavaScript's only once the promise's continuation runs and wraps them. A worker thread
//! terminated while a start was on the pool still gets the resolution, during its teardown
//! (Node waits for its pending work), and runs no JavaScript any more: the descriptors would stay
//! open in the process, and the helper, which ends its sandbox when its control socket ends,
//! would keep it running until Node exits. So each is held by its thread until JavaScript takes
//! it ([`take_fds`], once it has wrapped it in a stream, whose handle the thread's teardown closes)
//! or closes it (`closeFd`: the raw ones it keeps, a warm helper's handoff socket, a long-lived
//! sandbox's exec socket); the thread's environment closes what it still holds when it is torn
//! down. The teardown may stop JavaScript between a wrap and its take: the handle's close comes
//! first (Node closes handles before it runs cleanup hooks), so a descriptor is closed here only
//! while its number still names the same open file it was handed as (device and inode), never
//! one another thread has opened since under that number.

use napi::bindgen_prelude::*;
use napi_derive::napi;
use std::cell::RefCell;
use std::os::fd::RawFd;

thread_local! {
    /// The descriptors this JavaScript thread's environment was handed and has not taken, with
    /// the device and inode of what each is.
    static HELD: RefCell<Vec<(RawFd, u64, u64)>> = const { RefCell::new(Vec::new()) };
}

/// Hold `fds`, resolved to JavaScript on `env`'s thread, until it takes or closes them (not
/// where the environment refuses a cleanup hook: nothing would close them then).
pub(crate) fn hold(env: &Env, fds: impl IntoIterator<Item = RawFd>) {
    if !crate::teardown::watch(env) {
        return;
    }
    let known: Vec<(RawFd, u64, u64)> = fds.into_iter().filter_map(|fd| identity(fd).map(|(dev, ino)| (fd, dev, ino))).collect();
    HELD.with_borrow_mut(|held| held.extend(known));
}

/// The device and inode of the open file `fd` names, if it names one.
fn identity(fd: RawFd) -> Option<(u64, u64)> {
    // SAFETY: fstat fills a stat buffer we own; a closed descriptor only fails (EBADF).
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    (fd >= 0 && unsafe { libc::fstat(fd, &mut st) } == 0).then_some((st.st_dev, st.st_ino))
}

/// `fd` is no longer held: JavaScript closes it now.
pub(crate) fn release(fd: RawFd) {
    HELD.with_borrow_mut(|held| held.retain(|&(h, ..)| h != fd));
}

/// The environment's teardown ([`crate::teardown`]): its descriptors that JavaScript never took end here.
pub(crate) fn close_held() {
    for (fd, dev, ino) in HELD.with_borrow_mut(std::mem::take) {
        if identity(fd) == Some((dev, ino)) {
            // SAFETY: still the open file this thread was handed, which JavaScript neither took
            // nor closed (a handle's close would have freed the number first).
            unsafe { libc::close(fd) };
        }
    }
}

/// JavaScript has wrapped these (streams whose handles it closes): no longer held.
#[napi]
pub fn take_fds(fds: Vec<i32>) {
    HELD.with_borrow_mut(|held| held.retain(|(fd, ..)| !fds.contains(fd)));
}
