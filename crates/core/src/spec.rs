//! The one typed description of a sandbox. JavaScript options are converted into it once (in the
//! napi crate), it is validated once ([`crate::validate`]), and the helper receives it as JSON.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Spec {
    /// What to execute: an absolute path, or a name searched in the sandbox's `PATH`.
    pub file: String,
    /// argv[1..]; argv[0] is `file`.
    #[serde(default)]
    pub args: Vec<String>,
    /// The command's whole environment, as `KEY=VALUE` (nothing of the host unless put here).
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default = "default_cwd")]
    pub cwd: String,
    #[serde(default)]
    pub rootfs: Rootfs,
    #[serde(default)]
    pub mounts: Vec<Mount>,
    #[serde(default = "default_hostname")]
    pub hostname: String,
    #[serde(default)]
    pub network: Network,
    #[serde(default)]
    pub namespaces: Namespaces,
    #[serde(default)]
    pub user: Ids,
    #[serde(default)]
    pub limits: Limits,
    /// Capabilities kept inside (names, `CAP_` optional); every other one is dropped from every set.
    #[serde(default)]
    pub capabilities: Vec<String>,
    #[serde(default)]
    pub seccomp: Seccomp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub landlock: Option<Landlock>,
    /// A copy-on-write layer over the rootfs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay: Option<Overlay>,
    /// A pseudo-terminal for the command, from the sandbox's own devpts instance; the helper
    /// relays it to the caller's stdin and stdout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tty: Option<Tty>,
    /// A graceful stop: at the timeout or a cancel the command (or its process group) is sent
    /// `signal` first, and the whole sandbox is killed only once `grace_ms` have passed (at once
    /// if it ends before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    /// A long-lived sandbox (`createSandbox`): no command of its own; its init waits for execs.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub persistent: bool,
    /// The caller's file mode creation mask when it asked for this sandbox, for its commands
    /// (set by the addon, not an option: a warm helper spawned earlier must not hand on an older one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub umask: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tty {
    pub rows: u16,
    pub cols: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Stop {
    pub signal: i32,
    pub grace_ms: u64,
    /// The signal goes to the command's whole process group (what a `sh -c` started too), as
    /// a terminal's Ctrl-C does; else to the command alone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub group: bool,
}

/// OverlayFS over the rootfs: the rootfs is the lower layer and is never modified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Overlay {
    /// A host directory that keeps the upper layer for a later sandbox; None: a tmpfs thrown
    /// away with the sandbox.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upper: Option<String>,
    /// Bound on what may be written (the throw-away layer only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", tag = "mode")]
pub enum Seccomp {
    /// The built-in profile (see crate::seccomp).
    #[default]
    Default,
    /// No filter at all.
    None,
    /// A Docker/OCI JSON profile, as its text.
    Profile { json: String },
}

/// Paths (inside the sandbox) the command may read, write (and read), or execute (and read);
/// everything else is denied by Landlock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Landlock {
    pub read: Vec<String>,
    pub write: Vec<String>,
    pub exec: Vec<String>,
}

fn default_cwd() -> String {
    "/".into()
}

fn default_hostname() -> String {
    "sandbox".into()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Rootfs {
    /// A read-only view of the host's system directories on a fresh tmpfs root.
    #[default]
    Host,
    /// The top-level entries of a directory (an unpacked minirootfs), bound read-only.
    Dir { path: String },
    /// An image's layer directories (topmost first), stacked by OverlayFS without a copy.
    Layers { paths: Vec<String> },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", rename_all_fields = "camelCase", tag = "type", deny_unknown_fields)]
pub enum Mount {
    Bind {
        source: String,
        target: String,
        #[serde(default = "yes")]
        readonly: bool,
    },
    Tmpfs {
        target: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size_bytes: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mode: Option<u32>,
    },
    /// A writable view of a host directory whose changes stay in the sandbox (a throw-away
    /// overlay upper layer over `source`).
    Overlay { source: String, target: String },
}

impl Mount {
    pub fn target(&self) -> &str {
        match self {
            Mount::Bind { target, .. } | Mount::Tmpfs { target, .. } | Mount::Overlay { target, .. } => target,
        }
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum Network {
    /// Its own network namespace with only `lo`, up.
    #[default]
    None,
    /// The host's network namespace.
    Host,
}

/// Which namespaces are new. `mount` and `pid` cannot be turned off: the new root needs a mount
/// namespace and the init that reaps and kills everything needs to be pid 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Namespaces {
    pub user: bool,
    pub mount: bool,
    pub pid: bool,
    pub uts: bool,
    pub ipc: bool,
    pub net: bool,
    pub cgroup: bool,
}

impl Default for Namespaces {
    fn default() -> Self {
        Namespaces { user: true, mount: true, pid: true, uts: true, ipc: true, net: true, cgroup: true }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Limits {
    /// Wall clock from the helper's start; the whole sandbox is killed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// cgroup memory limit, swap off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// cgroup pids limit (processes and threads together). None: RLIMIT_NPROC at [`DEFAULT_PIDS`]
    /// where that bounds this sandbox alone ([`Limits::default_nproc`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
    /// No pids bound at all, not even the default one (`pids: Infinity`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unbounded_pids: bool,
    /// cgroup CPU bandwidth, as a fraction of cores (0.5 = half a core).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// CPU time of the whole sandbox (user + system); reason `cpu-time`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_time_ms: Option<u64>,
    /// stdout and stderr together; reason `output-limit` once passed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_bytes: Option<u64>,
    /// RLIMIT_NOFILE.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_files: Option<u64>,
    /// RLIMIT_FSIZE: the largest file the command may write.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_size_bytes: Option<u64>,
    /// RLIMIT_STACK: the main thread's stack (and each new thread's default, glibc's and musl's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stack_bytes: Option<u64>,
    /// Core dumps are off unless asked for.
    pub core_dumps: bool,
}

/// The processes and threads a sandbox may have where its spec names no pids limit (DESIGN
/// section 4 gives every sandbox limits where the host allows them). Without one a fork bomb takes
/// every pid of a host whose `kernel.pid_max` is below the caller's RLIMIT_NPROC (a root caller's
/// usually is), and the host's own processes' next forks fail. As many as Podman gives a
/// container: room for a parallel build or a JVM's threads, not for a bomb.
pub const DEFAULT_PIDS: u64 = 2048;

impl Limits {
    /// The RLIMIT_NPROC a sandbox's command gets where its spec names no pids limit and did not ask
    /// for none: [`DEFAULT_PIDS`], where the sandbox has a user namespace of its own and the
    /// kernel counts processes per user namespace (`per_namespace`, Linux 5.14+), so that the count
    /// is this sandbox's alone (each of its uids'), with no cgroup to make or move into. Elsewhere
    /// the count would be the host user's, shared with every other process of those host ids
    /// (every sandbox without a user namespace; an ordinary caller's own processes): none.
    pub fn default_nproc(&self, user_ns: bool, per_namespace: bool) -> Option<u64> {
        (self.pids.is_none() && !self.unbounded_pids && user_ns && per_namespace).then_some(DEFAULT_PIDS)
    }
}

impl Spec {
    /// A spec for `file args` with every default of DESIGN section 4.
    pub fn new(file: impl Into<String>, args: Vec<String>) -> Spec {
        Spec {
            file: file.into(),
            args,
            env: Vec::new(),
            cwd: default_cwd(),
            rootfs: Rootfs::Host,
            mounts: Vec::new(),
            hostname: default_hostname(),
            network: Network::None,
            namespaces: Namespaces::default(),
            user: Ids::default(),
            limits: Limits::default(),
            capabilities: Vec::new(),
            seccomp: Seccomp::Default,
            landlock: None,
            overlay: None,
            tty: None,
            stop: None,
            persistent: false,
            umask: None,
        }
    }

    /// The command this spec runs first (a long-lived sandbox has none: its execs bring theirs).
    pub fn command(&self) -> Command<'_> {
        Command { file: &self.file, args: &self.args, env: &self.env, cwd: &self.cwd }
    }

    pub fn from_json(bytes: &[u8]) -> Result<Spec, String> {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a spec always serializes")
    }
}

/// What one process of the sandbox runs: the spec's own command, or an exec's.
#[derive(Debug, Clone, Copy)]
pub struct Command<'a> {
    pub file: &'a str,
    pub args: &'a [String],
    pub env: &'a [String],
    pub cwd: &'a str,
}

impl<'a> From<&'a crate::protocol::ExecRequest> for Command<'a> {
    fn from(r: &'a crate::protocol::ExecRequest) -> Self {
        Command { file: &r.file, args: &r.args, env: &r.env, cwd: &r.cwd }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_pids_bound_holds_only_in_a_user_namespace_counted_apart_and_where_no_bound_was_named() {
        let none = Limits::default();
        assert_eq!(none.default_nproc(true, true), Some(DEFAULT_PIDS));
        assert_eq!(none.default_nproc(false, true), None, "no user namespace: the host user's count");
        assert_eq!(none.default_nproc(true, false), None, "before Linux 5.14: the host user's count");
        // An asked bound is the cgroup's alone.
        assert_eq!(Limits { pids: Some(16), ..Limits::default() }.default_nproc(true, true), None);
        assert_eq!(Limits { unbounded_pids: true, ..Limits::default() }.default_nproc(true, true), None);
    }

    #[test]
    fn no_pids_bound_crosses_as_unbounded_pids_and_is_left_out_otherwise() {
        let json = |l: Limits| serde_json::to_string(&l).unwrap();
        assert_eq!(json(Limits::default()), r#"{"coreDumps":false}"#);
        assert_eq!(json(Limits { unbounded_pids: true, ..Limits::default() }), r#"{"unboundedPids":true,"coreDumps":false}"#);
        let read: Limits = serde_json::from_str(r#"{"unboundedPids":true}"#).unwrap();
        assert!(read.unbounded_pids && read.pids.is_none());
    }
}
