//! Validation at the boundary: every bad value or combination is refused here, naming the option,
//! before anything is spawned.

use crate::protocol::ExecRequest;
use crate::spec::{Command, Mount, Network, Spec, Tty};

/// The kernel's ceiling on pids (PID_MAX_LIMIT on 64-bit): pids.max takes nothing above it.
const PID_MAX_LIMIT: u64 = 4 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionError {
    /// The option as the caller wrote it: `mounts[1].target`, `hostname`.
    pub option: String,
    pub message: String,
}

impl std::fmt::Display for OptionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "options.{}: {}", self.option, self.message)
    }
}

fn bad(option: impl Into<String>, message: impl Into<String>) -> OptionError {
    OptionError { option: option.into(), message: message.into() }
}

/// The longest path the kernel takes, its NUL included.
const PATH_MAX: usize = 4096;

/// A path refused at once when the kernel would refuse it: the error would carry it whole.
fn check_length(option: &str, path: &str) -> Result<(), OptionError> {
    if path.len() >= PATH_MAX {
        return Err(bad(option, format!("is a path of {} bytes; the kernel takes at most {}", path.len(), PATH_MAX - 1)));
    }
    Ok(())
}

/// A path the sandbox sees: absolute, one spelling only (no '.', '..' or empty component), no NUL,
/// shorter than PATH_MAX.
fn check_inside_path(option: &str, path: &str) -> Result<(), OptionError> {
    if !path.starts_with('/') {
        return Err(bad(option, format!("must be an absolute path inside the sandbox, got {path:?}")));
    }
    if path.contains('\0') {
        return Err(bad(option, "must not contain NUL"));
    }
    check_length(option, path)?;
    // Compared as written (reserved targets, one mount per target): `/./proc` and `//dev` are
    // `/proc` and `/dev` to the kernel, so only one spelling of a path is taken.
    let inner = path.trim_end_matches('/');
    if inner.split('/').skip(1).any(|c| c.is_empty() || c == "." || c == "..") {
        return Err(bad(option, format!("must be a plain absolute path (no '.', '..' or empty components), got {path:?}")));
    }
    Ok(())
}

fn check_host_path(option: &str, path: &str) -> Result<(), OptionError> {
    if !path.starts_with('/') {
        return Err(bad(option, format!("must be an absolute host path, got {path:?}")));
    }
    if path.contains('\0') {
        return Err(bad(option, "must not contain NUL"));
    }
    check_length(option, path)
}

/// Where the sandbox provides its own mounts; binding over them would undo an isolation step.
const RESERVED_TARGETS: &[&str] = &["/", "/proc", "/dev"];

/// The parts of a command, the spec's own or an exec's.
fn check_command(cmd: Command) -> Result<(), OptionError> {
    if cmd.file.is_empty() {
        return Err(bad("file", "must be a non-empty command"));
    }
    if cmd.file.contains('\0') || cmd.args.iter().any(|a| a.contains('\0')) {
        return Err(bad("args", "must not contain NUL bytes"));
    }
    check_length("file", cmd.file)?;
    for (i, kv) in cmd.env.iter().enumerate() {
        match kv.split_once('=') {
            Some((k, _)) if !k.is_empty() && !kv.contains('\0') => {}
            _ => return Err(bad(format!("env[{i}]"), "must be KEY=VALUE with a non-empty key and no NUL")),
        }
    }
    check_inside_path("cwd", cmd.cwd)
}

fn check_tty(t: &Tty) -> Result<(), OptionError> {
    if t.rows == 0 || t.cols == 0 {
        return Err(bad("tty", "rows and cols must be at least 1"));
    }
    Ok(())
}

/// One exec into a long-lived sandbox, checked by the addon and again by the helper.
pub fn validate_exec(req: &ExecRequest) -> Result<(), OptionError> {
    check_command(req.into())?;
    if let Some(t) = &req.tty {
        check_tty(t)?;
    }
    if req.timeout_ms == Some(0) {
        return Err(bad("timeoutMs", "must be greater than 0"));
    }
    if let Some(stop) = &req.stop {
        check_stop(stop)?;
    }
    Ok(())
}

/// One rule for a sandbox's stop and an exec's (whose signal the init sends itself): the
/// signals the init forwards, which a command can handle.
fn check_stop(stop: &crate::spec::Stop) -> Result<(), OptionError> {
    if !crate::protocol::init_forwards(stop.signal) {
        return Err(bad("stop.signal", "must be a signal the command can handle and the sandbox's init forwards (SIGTERM, SIGINT, SIGHUP, SIGUSR1, ...)"));
    }
    if stop.grace_ms == 0 {
        return Err(bad("stop.graceMs", "must be greater than 0"));
    }
    Ok(())
}

pub fn validate(spec: &Spec) -> Result<(), OptionError> {
    if spec.umask.is_some_and(|m| m > 0o777) {
        return Err(bad("umask", "must be a file mode mask (0 to 0o777)"));
    }
    if spec.persistent {
        // Its commands come with each exec, and so do a terminal and an output bound.
        if !spec.file.is_empty() || !spec.args.is_empty() {
            return Err(bad("file", "a long-lived sandbox has no command of its own; run commands with exec"));
        }
        if spec.tty.is_some() {
            return Err(bad("tty", "is an option of each exec in a long-lived sandbox, not of the sandbox"));
        }
        if spec.limits.output_bytes.is_some() {
            return Err(bad("limits.outputBytes", "bounds one command's output; a long-lived sandbox's execs are not bounded in this version"));
        }
        check_command(Command { file: "-", ..spec.command() })?;
    } else {
        check_command(spec.command())?;
    }
    if let crate::spec::Rootfs::Layers { paths } = &spec.rootfs {
        if paths.is_empty() || paths.len() > 128 {
            return Err(bad("rootfs.layers", "must list 1 to 128 layer directories"));
        }
        for (i, p) in paths.iter().enumerate() {
            check_host_path(&format!("rootfs.layers[{i}]"), p)?;
            if p.contains(':') || p.contains(',') {
                return Err(bad(format!("rootfs.layers[{i}]"), "must not contain ':' or ',' (overlayfs separators)"));
            }
        }
    }
    if let crate::spec::Rootfs::Dir { path } = &spec.rootfs {
        check_host_path("rootfs", path)?;
        if path == "/" {
            return Err(bad("rootfs", "'/' would expose the whole host; use 'host' for a read-only view of its system directories"));
        }
    }
    let h = &spec.hostname;
    if h.is_empty() || h.len() > 64 || !h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.') {
        return Err(bad("hostname", format!("must be 1 to 64 characters of letters, digits, '-' and '.', got {h:?}")));
    }
    if !spec.namespaces.mount {
        return Err(bad("namespaces.mount", "cannot be false: the sandbox's root is built in its own mount namespace"));
    }
    if !spec.namespaces.pid {
        return Err(bad("namespaces.pid", "cannot be false: the sandbox's init must be pid 1 so that everything ends with it"));
    }
    match (spec.network, spec.namespaces.net) {
        (Network::None, false) => return Err(bad("namespaces.net", "false contradicts network: 'none'; use network: 'host' to share the host's network")),
        (Network::Host, true) => return Err(bad("namespaces.net", "true contradicts network: 'host'; use network: 'none' for a network of the sandbox's own")),
        (Network::Host, false) | (Network::None, true) => {}
    }
    if !spec.namespaces.user && !crate::probe::is_root() {
        return Err(bad("namespaces.user", "can only be false when the caller is root: without it no other namespace can be created"));
    }
    if !spec.namespaces.user && !spec.capabilities.is_empty() {
        // Without a user namespace a kept capability is the host's (SETUID would make it host root).
        return Err(bad("capabilities", "with namespaces.user false a kept capability would be a capability over the host: keep none"));
    }
    if spec.user.uid == u32::MAX || spec.user.gid == u32::MAX {
        // (uid_t)-1 is no one: setresuid and setresgid read it as "leave this id as it is".
        return Err(bad("user", "4294967295 is not an id: to the kernel it means 'unchanged' (the helper's own ids)"));
    }
    if !spec.namespaces.user && (spec.user.uid == 0 || spec.user.gid == 0) {
        // Without a user namespace the ids are the host's: 0 would run the command as host root.
        return Err(bad("user", "ids 0 with namespaces.user false would be host root: leave user out (the sandbox's unprivileged host ids, probe().sandboxHostIds, when there are some) or name another unprivileged host id"));
    }
    if !spec.namespaces.user && crate::probe::is_root() {
        // A process of the host's user namespace running as an id of the owner block would hold
        // the capabilities of some root-caller sandbox's user namespace (plan::namespace_owner).
        if let Some(owners) = crate::supervisor::owner_block().filter(|&o| spec.user.uid >= o && spec.user.uid - o < crate::plan::OWNER_IDS) {
            return Err(bad("user", format!("uid {} is one of the ids that own the user namespaces of root's sandboxes ({} to {}): with namespaces.user false name an id outside them, or leave user out (probe().sandboxHostIds)", spec.user.uid, owners, owners + crate::plan::OWNER_IDS - 1)));
        }
    }
    if crate::probe::is_root() && spec.namespaces.user && (spec.user.uid >= crate::plan::ROOT_MAPPED_RANGE || spec.user.gid >= crate::plan::ROOT_MAPPED_RANGE) {
        return Err(bad("user", format!("ids inside must be below {}: that is the range a root caller's sandbox maps", crate::plan::ROOT_MAPPED_RANGE)));
    }
    let mut targets: Vec<&str> = Vec::new();
    for (i, m) in spec.mounts.iter().enumerate() {
        let opt = format!("mounts[{i}]");
        let target = m.target();
        check_inside_path(&format!("{opt}.target"), target)?;
        let norm = target.trim_end_matches('/');
        let norm = if norm.is_empty() { "/" } else { norm };
        // A tmpfs of the caller's may take the place of the sandbox's own /dev/shm (its size).
        let own_shm = norm == crate::plan::DEV_SHM && matches!(m, Mount::Tmpfs { .. });
        if !own_shm && (RESERVED_TARGETS.contains(&norm) || norm.starts_with("/proc/") || norm.starts_with("/dev/")) {
            let hint = if norm == crate::plan::DEV_SHM { " but by a tmpfs (to size it)" } else { "" };
            return Err(bad(format!("{opt}.target"), format!("{target} is provided by the sandbox itself and cannot be mounted over{hint}")));
        }
        if crate::plan::SETUP_NAMES.iter().any(|n| norm.strip_prefix('/').is_some_and(|rest| rest == *n || rest.starts_with(&format!("{n}/")))) {
            return Err(bad(
                format!("{opt}.target"),
                format!("{target} is a name the sandbox's setup uses for itself while it builds the root; mount elsewhere"),
            ));
        }
        if targets.contains(&norm) {
            return Err(bad(format!("{opt}.target"), format!("{target} is the target of an earlier mount")));
        }
        targets.push(norm);
        match m {
            Mount::Bind { source, .. } | Mount::Overlay { source, .. } => check_host_path(&format!("{opt}.source"), source)?,
            Mount::Tmpfs { size_bytes, mode, .. } => {
                if *size_bytes == Some(0) {
                    return Err(bad(format!("{opt}.sizeBytes"), "must be greater than 0"));
                }
                if mode.is_some_and(|m| m > 0o7777) {
                    return Err(bad(format!("{opt}.mode"), "must be a file mode of at most 0o7777"));
                }
            }
        }
    }
    for (i, c) in spec.capabilities.iter().enumerate() {
        if crate::caps::number(c).is_none() {
            return Err(bad(format!("capabilities[{i}]"), format!("{c:?} is not a Linux capability")));
        }
    }
    if let Some(l) = &spec.landlock {
        for (list, paths) in [("read", &l.read), ("write", &l.write), ("exec", &l.exec)] {
            for (i, p) in paths.iter().enumerate() {
                check_inside_path(&format!("landlock.{list}[{i}]"), p)?;
            }
        }
    }
    if let crate::spec::Seccomp::Profile { json } = &spec.seccomp {
        // JSON.parse took it; what serde refuses beyond that is mostly its nesting bound (128).
        if let Err(e) = serde_json::from_str::<serde_json::Value>(json) {
            return Err(bad("seccomp", format!("a custom profile must be Docker/OCI seccomp JSON: {e}")));
        }
    }
    if let Some(o) = &spec.overlay {
        if let Some(upper) = &o.upper {
            check_host_path("overlay.upper", upper)?;
            if upper.trim_end_matches('/').is_empty() {
                return Err(bad("overlay.upper", "cannot be the host's '/': name a directory of its own for the kept layers"));
            }
            if o.size_bytes.is_some() {
                return Err(bad(
                    "overlay.sizeBytes",
                    "bounds the throw-away layer only; a kept upper directory lives on the host's filesystem (use its quota)",
                ));
            }
            if let crate::spec::Rootfs::Dir { path } = &spec.rootfs {
                let (u, r) = (upper.trim_end_matches('/'), path.trim_end_matches('/'));
                if u == r || u.starts_with(&format!("{r}/")) || r.starts_with(&format!("{u}/")) {
                    return Err(bad("overlay.upper", "must lie outside the rootfs (and the rootfs outside it)"));
                }
            }
        }
        if o.size_bytes == Some(0) {
            return Err(bad("overlay.sizeBytes", "must be greater than 0"));
        }
    }
    if let Some(t) = &spec.tty {
        check_tty(t)?;
        if spec.limits.output_bytes.is_some() {
            return Err(bad("limits.outputBytes", "cannot bound a terminal's output in this version; drop tty or the bound"));
        }
    }
    let l = &spec.limits;
    for (name, v) in [("timeoutMs", l.timeout_ms), ("memoryBytes", l.memory_bytes), ("pids", l.pids), ("cpuTimeMs", l.cpu_time_ms), ("openFiles", l.open_files)]
    {
        if v == Some(0) {
            return Err(bad(format!("limits.{name}"), "must be greater than 0"));
        }
    }
    if let Some(c) = l.cpus {
        if !(c.is_finite() && (0.01..=4096.0).contains(&c)) {
            return Err(bad("limits.cpus", "must be a fraction of cores between 0.01 and 4096"));
        }
    }
    if l.pids.is_some_and(|n| n < 2) {
        return Err(bad("limits.pids", "must be at least 2: the sandbox's init is one of its processes, and no command could start beside it"));
    }
    if l.pids.is_some() && l.unbounded_pids {
        return Err(bad("limits.pids", "given both as a number and as no bound (unboundedPids)"));
    }
    if l.pids.is_some_and(|n| n > PID_MAX_LIMIT) {
        return Err(bad("limits.pids", format!("must be at most {PID_MAX_LIMIT}, the most processes the kernel can have")));
    }
    if l.memory_bytes.is_some_and(|m| m < 1 << 20) {
        return Err(bad("limits.memoryBytes", "must be at least 1 MiB: below that not even the sandbox's init starts"));
    }
    if let Some(stop) = spec.stop {
        if spec.persistent && stop.group {
            return Err(bad("stop.group", "is an option of a command's stop: a long-lived sandbox's stop goes to every process in it"));
        }
        check_stop(&stop)?;
    }
    if l.stack_bytes.is_some_and(|b| b < MIN_STACK_BYTES) {
        return Err(bad("limits.stackBytes", format!("must be at least {MIN_STACK_BYTES} (256 KiB): a smaller stack crashes programs (SIGSEGV) before their main, which reads as the program's own crash")));
    }
    Ok(())
}

/// The smallest limits.stackBytes: below ~16 KiB the dynamic loader itself faults, below ~72 KiB
/// python3 does (lib/options.ts says the same to a JS caller, with the caller's hard limit).
pub const MIN_STACK_BYTES: u64 = 256 << 10;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::*;

    fn spec() -> Spec {
        Spec::new("/bin/true", vec![])
    }

    #[test]
    fn a_long_lived_sandbox_has_no_command_tty_or_output_bound() {
        let mut s = Spec::new("", vec![]);
        s.persistent = true;
        assert_eq!(validate(&s), Ok(()));
        s.limits.output_bytes = Some(10);
        assert_eq!(validate(&s).unwrap_err().option, "limits.outputBytes");
        s.limits.output_bytes = None;
        s.tty = Some(Tty { rows: 2, cols: 2 });
        assert_eq!(validate(&s).unwrap_err().option, "tty");
        s.tty = None;
        s.file = "/bin/sh".into();
        assert_eq!(validate(&s).unwrap_err().option, "file");
    }

    #[test]
    fn exec_requests_are_checked_like_commands() {
        let ok: ExecRequest = serde_json::from_str(r#"{"id":1,"file":"/bin/true"}"#).unwrap();
        assert_eq!(validate_exec(&ok), Ok(()));
        let rel = ExecRequest { cwd: "tmp".into(), ..ok.clone() };
        assert_eq!(validate_exec(&rel).unwrap_err().option, "cwd");
        let env = ExecRequest { env: vec!["=x".into()], ..ok.clone() };
        assert_eq!(validate_exec(&env).unwrap_err().option, "env[0]");
        let t = ExecRequest { timeout_ms: Some(0), ..ok.clone() };
        assert_eq!(validate_exec(&t).unwrap_err().option, "timeoutMs");
        let stop = |signal, grace_ms| ExecRequest { stop: Some(Stop { signal, grace_ms, group: true }), ..ok.clone() };
        assert_eq!(validate_exec(&stop(libc::SIGTERM, 100)), Ok(()));
        assert_eq!(validate_exec(&stop(libc::SIGKILL, 100)).unwrap_err().option, "stop.signal");
        assert_eq!(validate_exec(&stop(libc::SIGTERM, 0)).unwrap_err().option, "stop.graceMs");
    }

    #[test]
    fn without_a_user_namespace_ids_0_are_refused() {
        let mut s = spec();
        s.namespaces.user = false;
        s.user = Ids { uid: 0, gid: 0 };
        let only_root = if crate::probe::is_root() { "user" } else { "namespaces.user" };
        assert_eq!(validate(&s).unwrap_err().option, only_root);
        s.user = Ids { uid: 0x7000_0000, gid: 0 };
        assert_eq!(validate(&s).unwrap_err().option, only_root);
        s.user = Ids { uid: 0x7000_0000, gid: 0x7000_0000 };
        assert_eq!(validate(&s).map_err(|e| e.option), if crate::probe::is_root() { Ok(()) } else { Err("namespaces.user".into()) });
        if let (true, Some(owners)) = (crate::probe::is_root(), crate::supervisor::owner_block()) {
            // The ids that own root's sandboxes' user namespaces.
            for uid in [owners, owners + 65536, owners + crate::plan::OWNER_IDS - 1] {
                s.user = Ids { uid, gid: 0x7000_0000 };
                assert_eq!(validate(&s).unwrap_err().option, "user", "{uid}");
            }
            s.user = Ids { uid: owners + crate::plan::OWNER_IDS, gid: 0x7000_0000 };
            assert_eq!(validate(&s), Ok(()));
            s.user = Ids { uid: 0x7000_0000, gid: 0x7000_0000 };
        }
        // A capability kept there would be one over the host.
        s.capabilities = vec!["SETUID".into()];
        assert_eq!(validate(&s).unwrap_err().option, if crate::probe::is_root() { "capabilities" } else { "namespaces.user" });
    }

    #[test]
    fn a_pids_limit_below_two_is_refused_the_init_is_one() {
        for persistent in [false, true] {
            let mut s = if persistent { Spec::new("", vec![]) } else { spec() };
            s.persistent = persistent;
            s.limits.pids = Some(1);
            assert_eq!(validate(&s).unwrap_err().option, "limits.pids");
            s.limits.pids = Some(2);
            assert_eq!(validate(&s), Ok(()));
        }
    }

    #[test]
    fn a_pids_limit_above_the_kernels_ceiling_names_the_option() {
        let mut s = spec();
        s.limits.pids = Some(PID_MAX_LIMIT);
        assert_eq!(validate(&s), Ok(()));
        s.limits.pids = Some(PID_MAX_LIMIT + 1);
        assert_eq!(validate(&s).unwrap_err().option, "limits.pids");
    }

    #[test]
    fn a_pids_bound_and_no_pids_bound_at_once_names_the_option() {
        let mut s = spec();
        s.limits.unbounded_pids = true;
        assert_eq!(validate(&s), Ok(()));
        s.limits.pids = Some(64);
        assert_eq!(validate(&s).unwrap_err().option, "limits.pids");
    }

    #[test]
    fn a_stack_below_256_kib_names_the_option() {
        let mut s = spec();
        s.limits.stack_bytes = Some(MIN_STACK_BYTES - 1);
        assert_eq!(validate(&s).unwrap_err().option, "limits.stackBytes");
        s.limits.stack_bytes = Some(MIN_STACK_BYTES);
        assert_eq!(validate(&s), Ok(()));
    }

    #[test]
    fn a_stop_with_an_uncatchable_signal_no_grace_or_a_group_in_a_long_lived_sandbox_names_the_option() {
        let mut s = spec();
        s.stop = Some(Stop { signal: libc::SIGTERM, grace_ms: 500, group: false });
        assert_eq!(validate(&s), Ok(()));
        s.stop = Some(Stop { signal: libc::SIGKILL, grace_ms: 500, group: false });
        assert_eq!(validate(&s).unwrap_err().option, "stop.signal");
        for signal in [0, libc::SIGCHLD, libc::SIGSEGV, 32, 65] {
            s.stop = Some(Stop { signal, grace_ms: 500, group: false });
            assert_eq!(validate(&s).unwrap_err().option, "stop.signal", "{signal}");
        }
        s.stop = Some(Stop { signal: libc::SIGTERM, grace_ms: 0, group: false });
        assert_eq!(validate(&s).unwrap_err().option, "stop.graceMs");
        let mut p = Spec::new("", vec![]);
        p.persistent = true;
        p.stop = Some(Stop { signal: libc::SIGTERM, grace_ms: 500, group: false });
        assert_eq!(validate(&p), Ok(()));
        p.stop = Some(Stop { signal: libc::SIGTERM, grace_ms: 500, group: true });
        assert_eq!(validate(&p).unwrap_err().option, "stop.group");
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(validate(&spec()), Ok(()));
    }

    #[test]
    fn relative_mount_target_names_the_option() {
        let mut s = spec();
        s.mounts.push(Mount::Tmpfs { target: "tmp".into(), size_bytes: None, mode: None });
        let e = validate(&s).unwrap_err();
        assert_eq!(e.option, "mounts[0].target");
    }

    #[test]
    fn dotdot_and_reserved_targets_are_refused() {
        let mut s = spec();
        s.mounts.push(Mount::Bind { source: "/etc".into(), target: "/a/../proc".into(), readonly: true });
        assert_eq!(validate(&s).unwrap_err().option, "mounts[0].target");
        s.mounts[0] = Mount::Bind { source: "/etc".into(), target: "/proc/sys".into(), readonly: true };
        assert_eq!(validate(&s).unwrap_err().option, "mounts[0].target");
        // Other spellings of a reserved target, or of an earlier one, are no way around it.
        for t in ["/./proc", "//dev", "/dev//shm", "/./", "/x/.", "/x//y"] {
            s.mounts[0] = Mount::Bind { source: "/proc".into(), target: t.into(), readonly: true };
            assert_eq!(validate(&s).unwrap_err().option, "mounts[0].target", "{t}");
        }
        s.mounts[0] = Mount::Tmpfs { target: "/x/y/".into(), size_bytes: None, mode: None };
        assert_eq!(validate(&s), Ok(()), "a trailing slash is still one spelling");
    }

    #[test]
    fn paths_the_kernel_would_refuse_as_too_long_are_refused_first() {
        let long = format!("/{}", "a".repeat(PATH_MAX));
        let mut s = spec();
        s.file = long.clone();
        assert_eq!(validate(&s).unwrap_err().option, "file");
        let mut s = spec();
        s.cwd = long.clone();
        assert_eq!(validate(&s).unwrap_err().option, "cwd");
        let mut s = spec();
        s.mounts.push(Mount::Bind { source: long, target: "/x".into(), readonly: true });
        assert_eq!(validate(&s).unwrap_err().option, "mounts[0].source");
    }

    #[test]
    fn the_id_that_means_unchanged_is_refused() {
        for user in [Ids { uid: u32::MAX, gid: 1000 }, Ids { uid: 1000, gid: u32::MAX }] {
            let mut s = spec();
            s.user = user;
            assert_eq!(validate(&s).unwrap_err().option, "user");
            s.namespaces.user = false;
            let only_root = if crate::probe::is_root() { "user" } else { "namespaces.user" };
            assert_eq!(validate(&s).unwrap_err().option, only_root);
        }
    }

    #[test]
    fn the_setups_own_names_are_no_mount_targets() {
        for t in ["/.isolate-overlay", "/.isolate-mask", "/.isolate-mask-dir/x", "/.isolate-overlay/"] {
            let mut s = Spec::new("/bin/true", vec![]);
            s.mounts.push(Mount::Tmpfs { target: t.into(), size_bytes: None, mode: None });
            let e = validate(&s).unwrap_err();
            assert_eq!(e.option, "mounts[0].target", "{t}");
            assert!(e.message.contains("the sandbox's setup uses for itself"), "{t}: {}", e.message);
        }
        let mut s = Spec::new("/bin/true", vec![]);
        s.mounts.push(Mount::Tmpfs { target: "/.isolate-masks".into(), size_bytes: None, mode: None });
        assert!(validate(&s).is_ok(), "a name that only starts like one");
    }

    #[test]
    fn duplicate_targets_are_refused() {
        let mut s = spec();
        s.mounts.push(Mount::Tmpfs { target: "/x".into(), size_bytes: None, mode: None });
        s.mounts.push(Mount::Tmpfs { target: "/x/".into(), size_bytes: None, mode: None });
        assert_eq!(validate(&s).unwrap_err().option, "mounts[1].target");
    }

    #[test]
    fn network_none_needs_a_net_namespace() {
        let mut s = spec();
        s.namespaces.net = false;
        assert_eq!(validate(&s).unwrap_err().option, "namespaces.net");
    }

    #[test]
    fn bad_hostname_and_env() {
        let mut s = spec();
        s.hostname = "a b".into();
        assert_eq!(validate(&s).unwrap_err().option, "hostname");
        let mut s = spec();
        s.env.push("=x".into());
        assert_eq!(validate(&s).unwrap_err().option, "env[0]");
    }

    #[test]
    fn json_round_trip_and_unknown_fields() {
        let s = spec();
        assert_eq!(Spec::from_json(&s.to_json()).unwrap(), s);
        assert!(Spec::from_json(br#"{"file":"x","bogus":1}"#).is_err());
        let d = Spec::from_json(br#"{"file":"x","rootfs":{"kind":"dir","path":"/r"},"mounts":[{"type":"tmpfs","target":"/t","sizeBytes":4096}]}"#).unwrap();
        assert_eq!(d.rootfs, Rootfs::Dir { path: "/r".into() });
        assert_eq!(d.mounts[0], Mount::Tmpfs { target: "/t".into(), size_bytes: Some(4096), mode: None });
    }
}
