//! The pure core of @isolate/core: one typed [`spec::Spec`], validated once, turned into ordered
//! plans (mounts, id maps) by pure functions, and applied by thin syscall wrappers in the helper's
//! processes. Nothing here runs in the Node process except validation and [`probe`].

pub mod caps;
#[cfg(target_os = "linux")]
pub mod cgroup;
pub mod command_clock;
pub mod error;
#[cfg(target_os = "linux")]
pub mod exec_server;
#[cfg(target_os = "linux")]
pub mod execs;
#[cfg(target_os = "linux")]
pub mod landlock;
pub mod plan;
#[cfg(target_os = "linux")]
pub mod priority;
pub mod probe;
pub mod protocol;
#[cfg(target_os = "linux")]
pub mod relay;
#[cfg(target_os = "linux")]
pub mod sandbox;
#[cfg(target_os = "linux")]
pub mod seccomp;
#[cfg(target_os = "linux")]
pub mod server;
pub mod spec;
#[cfg(target_os = "linux")]
pub mod supervisor;
#[cfg(target_os = "linux")]
pub mod sys;
#[cfg(target_os = "linux")]
pub mod syscall_names;
#[cfg(target_os = "linux")]
pub mod terminal_readers;
pub mod validate;
#[cfg(target_os = "linux")]
pub mod warm;

pub use error::{SetupError, Step};
pub use spec::Spec;
