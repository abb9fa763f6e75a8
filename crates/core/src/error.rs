//! A setup failure as data: the step, the path and the errno travel inside the value, across the
//! fork and the helper's status channel, to become an `IsolateError` in JavaScript.

use serde::{Deserialize, Serialize};

/// The setup steps, named for their syscall-level action, and the steps of the image unpacker
/// (`isolate-image`). The names are part of the public contract: they are what
/// `IsolateError.step` holds.
macro_rules! steps {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)*) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Step { $($(#[$doc])* $variant,)* }

        impl Step {
            pub fn as_str(self) -> &'static str {
                match self { $(Step::$variant => $name,)* }
            }

            pub fn parse(name: &str) -> Option<Step> {
                match name { $($name => Some(Step::$variant),)* _ => None }
            }
        }
    };
}

steps! {
    ReadSpec => "read_spec",
    CreatePipes => "create_pipes",
    CloneNamespaces => "clone_namespaces",
    WriteIdMaps => "write_id_maps",
    WaitForParent => "wait_for_parent",
    EnterMappedIds => "enter_mapped_ids",
    UnshareCgroup => "unshare_cgroup",
    MakeRootPrivate => "make_root_private",
    InspectSources => "inspect_sources",
    MountStagingRoot => "mount_staging_root",
    BindMount => "bind_mount",
    MountTmpfs => "mount_tmpfs",
    MountProc => "mount_proc",
    MountOverlay => "mount_overlay",
    MountDevpts => "mount_devpts",
    CreateMountpoint => "create_mountpoint",
    MaskPath => "mask_path",
    RemountReadonly => "remount_readonly",
    /// A root built ahead made writable again, for the mountpoints of what its release mounts.
    RemountWritable => "remount_writable",
    PivotRoot => "pivot_root",
    DetachOldRoot => "detach_old_root",
    SetHostname => "set_hostname",
    BringUpLoopback => "bring_up_loopback",
    JoinSessionKeyring => "join_session_keyring",
    SetRlimits => "set_rlimits",
    OpenPty => "open_pty",
    ForkCommand => "fork_command",
    /// An exec's stdin, stdout and stderr, received from Node, put in place.
    InstallStdio => "install_stdio",
    /// Passing an exec and its stdio between Node, the helper and the sandbox's init.
    SendExec => "send_exec",
    SetGroups => "set_groups",
    SetIds => "set_ids",
    DropCapabilities => "drop_capabilities",
    SetNoNewPrivs => "set_no_new_privs",
    ApplyLandlock => "apply_landlock",
    LoadSeccomp => "load_seccomp",
    CreateCgroup => "create_cgroup",
    WriteCgroupLimits => "write_cgroup_limits",
    AttachCgroup => "attach_cgroup",
    RemoveCgroup => "remove_cgroup",
    CloseFds => "close_fds",
    NewSession => "new_session",
    Chdir => "chdir",
    Execve => "execve",
    Supervise => "supervise",
    /// A warm helper's scheduling policy: idle while it prepares, the default once it serves.
    SetPriority => "set_priority",
    /// The init's place in the OOM killer's line (oom_score_adj), set by the helper.
    RankForOomKiller => "rank_for_oom_killer",
    // The image unpacker's steps.
    /// Opening the archive or image, or the target directory.
    OpenArchive => "open_archive",
    /// Decompressing or parsing the tar stream.
    ReadArchive => "read_archive",
    /// An entry refused for what it is (a path escaping DIR, a device node...).
    CheckEntry => "check_entry",
    /// A syscall creating an entry failed.
    WriteEntry => "write_entry",
    /// Reading the image's index, manifests and config.
    ReadImage => "read_image",
    /// A blob whose sha256 is not the one its descriptor names.
    VerifyDigest => "verify_digest",
}

impl Serialize for Step {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Step {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Step::parse(&name).ok_or_else(|| serde::de::Error::custom(format!("unknown step {name}")))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetupError {
    pub step: Step,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// errno as its symbolic name ("ENOENT"), or None when the failure is not a syscall's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errno: Option<String>,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl SetupError {
    pub fn new(step: Step, message: impl Into<String>) -> Self {
        SetupError { step, path: None, errno: None, message: message.into(), hint: None }
    }

    pub fn sys(step: Step, errno: i32, path: Option<&str>) -> Self {
        SetupError { step, path: path.map(str::to_owned), errno: Some(errno_name(errno)), message: strerror(errno).to_owned(), hint: default_hint(step, errno) }
    }

    /// An I/O error (the decompressors and the tar parser report through io::Error): its errno
    /// when it has one, and its text as the message.
    pub fn io(step: Step, e: &std::io::Error, path: Option<&str>) -> Self {
        let errno = e.raw_os_error();
        SetupError {
            step,
            path: path.map(str::to_owned),
            errno: errno.map(errno_name),
            message: e.to_string(),
            hint: errno.and_then(|n| default_hint(step, n)),
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn with_path(mut self, path: impl Into<String>) -> Self {
        self.path = Some(path.into());
        self
    }

    /// The same failure told as one of `step` (a syscall wrapper's error, from the step that
    /// called it): a hint that was the old step's default becomes the new step's.
    pub fn at(mut self, step: Step) -> Self {
        if let Some(errno) = self.errno.as_deref().and_then(errno_number) {
            if self.hint == default_hint(self.step, errno) {
                self.hint = default_hint(step, errno);
            }
        }
        self.step = step;
        self
    }

    /// As JSON, in at most PIPE_BUF (4096) bytes: a writer whose reader waits for it to exit (a
    /// command started with CLONE_VFORK) must fit in one pipe write, or both wait for good. Texts
    /// (message, path, hint) are cut as far as that takes.
    pub fn to_bounded_json(&self) -> Vec<u8> {
        let mut json = serde_json::to_vec(self).unwrap_or_default();
        for keep in [1024, 160] {
            if json.len() <= PIPE_BUF {
                break;
            }
            let mut cut = self.clone();
            for text in [Some(&mut cut.message), cut.path.as_mut(), cut.hint.as_mut()].into_iter().flatten() {
                if text.len() > keep {
                    let mut end = keep - 3;
                    while !text.is_char_boundary(end) {
                        end -= 1;
                    }
                    text.truncate(end);
                    text.push_str("...");
                }
            }
            json = serde_json::to_vec(&cut).unwrap_or_default();
        }
        json
    }
}

/// What one write to a pipe moves whole, and what a pipe always has room for when empty.
const PIPE_BUF: usize = 4096;

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.step.as_str())?;
        if let Some(p) = &self.path {
            write!(f, " ({p})")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for SetupError {}

/// Names as a sentence lists them: "a", "a and b", "a, b and c".
pub fn listed(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

pub fn errno_name(errno: i32) -> String {
    let e = nix::errno::Errno::from_raw(errno);
    if e == nix::errno::Errno::UnknownErrno {
        return format!("E{errno}");
    }
    // Debug of nix's Errno is the symbolic name.
    format!("{e:?}")
}

/// The number of an errno's symbolic name (what [`errno_name`] gives); failure paths only.
fn errno_number(name: &str) -> Option<i32> {
    (1..4096).find(|n| errno_name(*n) == name)
}

fn strerror(errno: i32) -> &'static str {
    nix::errno::Errno::from_raw(errno).desc()
}

fn default_hint(step: Step, errno: i32) -> Option<String> {
    use nix::errno::Errno;
    let e = Errno::from_raw(errno);
    let hint = match (step, e) {
        (Step::CloneNamespaces, Errno::EPERM | Errno::ENOSPC | Errno::EACCES) => {
            "this host refuses new user namespaces to this process; run `isolate doctor` (check \
             kernel.unprivileged_userns_clone, user.max_user_namespaces, an AppArmor userns \
             restriction, or a container seccomp profile)"
        }
        (Step::BindMount, Errno::ENOENT) => "the bind source does not exist on the host",
        (Step::CreateMountpoint, Errno::EROFS) => {
            "the mount target lies inside a read-only part of the root; mount it under /tmp or a \
             new top-level directory, or bind its parent read-write"
        }
        (Step::CreateMountpoint, Errno::ENOTDIR) => {
            "the mount target, or a parent of it, is something other than a directory inside: a \
             file (a directory mounts only on a directory), or a symlink, which a mount is never \
             made through (name the real path: /usr/bin/x, not /bin/x)"
        }
        (Step::BindMount, Errno::EINVAL) => {
            "the kernel cannot bind that source: it is on no filesystem that can be mounted (a \
             pipe, a socket or an anonymous file, as /proc/PID/fd/N may name), or its mount is \
             unbindable; bind a path of an ordinary filesystem instead"
        }
        (Step::OpenPty, Errno::ENOSPC) => {
            "the sandbox's devpts holds at most 64 terminals, and its processes hold them all (or \
             the host's pool, kernel.pty.max, is used up)"
        }
        (Step::OpenPty, Errno::ETOOMANYREFS) => {
            "this host user has too many descriptors in flight in unix sockets (the kernel counts \
             them per host user, and every sandbox of this caller runs as the same one: another \
             sandbox holds them); as root with CAP_SYS_PTRACE the helper takes the terminal itself \
             (pidfd_getfd, Linux 5.6+), so this caller is not root, lacks that capability, or the \
             kernel refused; give untrusted sandboxes a limits.openFiles well below the host's"
        }
        (Step::BindMount, Errno::ENOTDIR | Errno::EISDIR) => {
            "a file binds only onto a file and a directory only onto a directory: the target is \
             there inside as the other kind"
        }
        (Step::Chdir, Errno::ENOTDIR) => "the cwd, or a parent of it, is not a directory inside the sandbox",
        (Step::MountProc, Errno::EPERM) => {
            "the kernel refuses a new /proc when the host's /proc is partly masked (as in a \
             default Docker container); run `isolate doctor`"
        }
        (Step::Execve, Errno::ENOENT) => {
            "the command was not found inside the sandbox; give an absolute path or set env.PATH, \
             and check that it and its interpreter exist in the rootfs"
        }
        (Step::Execve, Errno::EACCES) => {
            "the command is not executable inside the sandbox (its mode, a noexec mount, or a \
             landlock option whose exec list does not hold it), or a directory above it may not \
             be searched: a bind keeps its source's host owner and mode, and a root caller's \
             sandbox runs as host ids of its own (probe().sandboxHostIds), not as root: let them \
             in (chown, or chmod o+x on the directories and o+rx on the file)"
        }
        (Step::Execve, Errno::E2BIG) => {
            "the arguments and environment are more than one execve takes (together a quarter of \
             the stack limit, RLIMIT_STACK; one string at most 128 KiB): pass large data through \
             stdin or a bound file"
        }
        (Step::Execve, Errno::EAGAIN) => {
            "the sandbox's processes of this uid are at its process bound (RLIMIT_NPROC: the \
             default 2048 where limits.pids is not given, or the caller's own): wait for some to \
             end, or give limits.pids (its cgroup counts the whole sandbox) or Infinity"
        }
        (Step::SetRlimits, Errno::EPERM) => {
            "a limit above the caller's own hard limit: inside its user namespace the sandbox may \
             lower a hard limit, not raise it (ulimit -H shows the caller's)"
        }
        (Step::RankForOomKiller, Errno::EACCES | Errno::EPERM | Errno::EROFS) => {
            "the helper could not set the new sandbox's oom_score_adj (each sandbox is the OOM \
             killer's first choice): a security module, or a /proc mounted read-only, refuses it"
        }
        (Step::ForkCommand, Errno::EAGAIN) => {
            "no room for one more process: with limits.pids, raise it (it counts every process \
             and thread of the sandbox, its init included); without it, the sandbox's processes \
             are at the default bound of 2048 (RLIMIT_NPROC: give limits.pids, or Infinity); else \
             a process limit of the caller was reached (the pids limit of its own cgroup, \
             RLIMIT_NPROC, kernel.threads-max)"
        }
        (Step::CloneNamespaces, Errno::EAGAIN) => {
            "no room for one more process: a process limit of the caller was reached (the pids \
             limit of its own cgroup, RLIMIT_NPROC, kernel.threads-max): start fewer sandboxes at once"
        }
        (Step::WriteEntry, Errno::ENAMETOOLONG) => {
            "a name in the archive is longer than a file name may be here (255 bytes per path \
             component): such an entry cannot be unpacked; make the archive without it"
        }
        (Step::Chdir, Errno::ENOENT) => "the cwd does not exist inside the sandbox",
        (Step::Chdir, Errno::EACCES) => {
            "the sandbox's user may not enter the cwd or a directory above it: a bind keeps its \
             source's host owner and mode, and a root caller's sandbox runs as host ids of its \
             own (probe().sandboxHostIds), not as root: let them in (chown, or chmod o+x)"
        }
        (Step::WriteIdMaps, Errno::EPERM) => "this process may only map its own uid and gid; use user: { uid: 0 } or your own ids",
        _ => return None,
    };
    Some(hint.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_listed_as_a_sentence() {
        assert_eq!(listed(&[]), "");
        assert_eq!(listed(&["limits.pids"]), "limits.pids");
        assert_eq!(listed(&["a", "b"]), "a and b");
        assert_eq!(listed(&["a", "b", "c"]), "a, b and c");
    }

    #[test]
    fn an_error_as_json_fits_in_one_pipe_write_whatever_its_texts() {
        let small = SetupError::sys(Step::Chdir, libc::ENOENT, Some("/nowhere"));
        assert_eq!(small.to_bounded_json(), serde_json::to_vec(&small).unwrap(), "a small one is whole");
        // 70000 characters, and control characters that JSON writes as six bytes each.
        for text in ["a".repeat(70_000), "\u{1}".repeat(5000), "é".repeat(3000)] {
            let e = SetupError::sys(Step::Execve, libc::ENAMETOOLONG, Some(&text)).with_hint(text.clone());
            let json = e.to_bounded_json();
            assert!(json.len() <= PIPE_BUF, "{} bytes", json.len());
            let back: SetupError = serde_json::from_slice(&json).unwrap();
            assert_eq!((back.step, back.errno.as_deref()), (Step::Execve, Some("ENAMETOOLONG")));
            assert!(back.path.unwrap().ends_with("..."));
        }
    }

    #[test]
    fn step_names_are_snake_case() {
        assert_eq!(Step::PivotRoot.as_str(), "pivot_root");
        assert_eq!(Step::DetachOldRoot.as_str(), "detach_old_root");
    }

    #[test]
    fn sys_error_carries_errno_name_path_and_hint() {
        let e = SetupError::sys(Step::BindMount, libc::ENOENT, Some("/nope"));
        assert_eq!(e.errno.as_deref(), Some("ENOENT"));
        assert_eq!(e.path.as_deref(), Some("/nope"));
        assert!(e.hint.is_some());
        let json = serde_json::to_string(&e).unwrap();
        assert!(json.contains("\"step\":\"bind_mount\""), "{json}");
    }

    #[test]
    fn common_failures_of_a_command_start_have_hints() {
        for (step, errno, says) in [
            (Step::BindMount, libc::ENOTDIR, "onto a file"),
            (Step::BindMount, libc::EINVAL, "a pipe"),
            (Step::Chdir, libc::ENOTDIR, "cwd"),
            (Step::Chdir, libc::EACCES, "sandboxHostIds"),
            (Step::Execve, libc::EACCES, "landlock"),
            (Step::Execve, libc::EACCES, "sandboxHostIds"),
            (Step::Execve, libc::E2BIG, "stdin"),
            (Step::ForkCommand, libc::EAGAIN, "limits.pids"),
            (Step::Execve, libc::EAGAIN, "2048"),
            (Step::ForkCommand, libc::EAGAIN, "RLIMIT_NPROC"),
            (Step::CloneNamespaces, libc::EAGAIN, "own cgroup"),
            (Step::SetRlimits, libc::EPERM, "ulimit -H"),
            (Step::RankForOomKiller, libc::EACCES, "oom_score_adj"),
        ] {
            let hint = SetupError::sys(step, errno, None).hint.unwrap_or_default();
            assert!(hint.contains(says), "{step:?} {errno}: {hint}");
        }
    }

    #[test]
    fn making_a_root_writable_again_is_not_reported_as_sealing_it() {
        assert_eq!(Step::RemountWritable.as_str(), "remount_writable");
        assert_eq!(Step::parse("remount_writable"), Some(Step::RemountWritable));
        assert_ne!(Step::RemountWritable.as_str(), Step::RemountReadonly.as_str());
    }

    #[test]
    fn image_steps_keep_their_names() {
        for (step, name) in [
            (Step::OpenArchive, "open_archive"),
            (Step::ReadArchive, "read_archive"),
            (Step::CheckEntry, "check_entry"),
            (Step::WriteEntry, "write_entry"),
            (Step::ReadImage, "read_image"),
            (Step::VerifyDigest, "verify_digest"),
        ] {
            assert_eq!(step.as_str(), name);
            assert_eq!(Step::parse(name), Some(step));
        }
    }

    #[test]
    fn io_error_carries_errno_name_and_path() {
        let e = SetupError::io(Step::ReadArchive, &std::io::Error::from_raw_os_error(libc::EACCES), Some("a.tar"));
        assert_eq!(e.errno.as_deref(), Some("EACCES"));
        assert_eq!(e.path.as_deref(), Some("a.tar"));
        let plain = SetupError::io(Step::ReadArchive, &std::io::Error::other("truncated"), None);
        assert_eq!((plain.errno, plain.path, plain.message.as_str()), (None, None, "truncated"));
    }
}
