//! A JavaScript thread's teardown (a worker terminated, or the environment otherwise ended): one
//! cleanup hook per environment ends what the thread was still owed. Its held descriptors close
//! first, so the helpers behind them end their sandboxes; then its unreaped children end.

use napi::bindgen_prelude::*;
use std::cell::Cell;

thread_local! {
    /// This thread's environment has the hook.
    static HOOKED: Cell<bool> = const { Cell::new(false) };
}

/// Make sure `env`'s teardown runs the hook; false where the environment refuses one (then
/// nothing would end what is kept for it: the caller keeps nothing).
pub(crate) fn watch(env: &Env) -> bool {
    if HOOKED.get() {
        return true;
    }
    let hook = |()| {
        // Another environment may come to this thread (an embedder's): it gets a hook of its own.
        HOOKED.set(false);
        crate::handover::close_held();
        crate::unreaped::end_unreaped();
    };
    if env.add_env_cleanup_hook((), hook).is_err() {
        return false;
    }
    HOOKED.set(true);
    true
}
