//! The `isolate-image` executable: what the Node addon starts (posix_spawn, never a fork of Node)
//! to unpack a tarball or import an image. It opens its inputs, confines itself with Landlock,
//! then works, reporting on stdout one JSON object per line:
//!
//! ```text
//! {"event":"progress","phase":"unpack","bytes":1048576,"totalBytes":3145728,"entries":120}
//! {"event":"done","result":{...}}
//! {"event":"error","error":{"step":"check_entry","path":"../x","message":"...","hint":"..."}}
//! ```
//!
//! Usage (argument order fixed; the TypeScript layer builds it):
//! `isolate-image unpack [--ownership archive|caller] [--special refuse|skip] [--max-bytes N]
//!  [--max-entries N] ARCHIVE DIR`
//! `isolate-image import [--ownership ...] [--special ...] [--max-bytes N] [--max-entries N]
//!  [--platform P] [--ref R] [--layout flat|layers] IMAGE DIR`
//!
//! Exit status 0 after `done`, 1 after `error`, 2 on a usage error.

use crate::error::{self, SetupError, Step};
use crate::oci::Platform;
use crate::source::Source;
use crate::unpack::{Ownership, Specials};
use crate::{confine, sys, ImportOptions, Layout, Progress, UnpackOptions};
use serde::Serialize;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Serialize)]
#[serde(tag = "event", rename_all = "lowercase")]
enum Event<'a> {
    Progress(&'a Progress),
    /// The target is this tool's (locked) until it exits; `made`: this tool created it, and
    /// empties it should the call fail. A caller removes (rmdir) only a directory its tool made.
    Locked {
        made: bool,
    },
    /// A failed call's tree was removed by the tool, which made the target (that stays, empty).
    Emptied,
    Done {
        result: serde_json::Value,
    },
    Error {
        error: &'a SetupError,
    },
}

fn emit(event: &Event<'_>) {
    let mut line = serde_json::to_vec(event).expect("plain data serializes");
    line.push(b'\n');
    let mut out = std::io::stdout().lock();
    // A reader that went away (Node died) ends us with SIGPIPE, which is what we want.
    let _ = out.write_all(&line).and_then(|()| out.flush());
}

/// Progress at most every 100 ms (and always the last one, sent by the caller as `done`).
struct Throttle {
    last: Option<Instant>,
}

impl Throttle {
    fn tick(&mut self, p: &Progress) {
        let now = Instant::now();
        let due = match self.last {
            None => true,
            Some(t) => now.duration_since(t) >= Duration::from_millis(100),
        };
        if due {
            self.last = Some(now);
            emit(&Event::Progress(p));
        }
    }
}

struct Args {
    command: String,
    ownership: Option<Ownership>,
    specials: Specials,
    platform: Option<Platform>,
    reference: Option<String>,
    layout: Layout,
    bounds: crate::Bounds,
    input: PathBuf,
    dir: PathBuf,
}

fn parse(argv: &[String]) -> Result<Args, String> {
    let mut it = argv.iter();
    let command = it.next().cloned().ok_or("expected 'unpack' or 'import'")?;
    if command != "unpack" && command != "import" {
        return Err(format!("unknown command '{command}'; expected 'unpack' or 'import'"));
    }
    let mut a = Args {
        command,
        ownership: None,
        specials: Specials::Refuse,
        platform: None,
        reference: None,
        layout: Layout::Flat,
        bounds: crate::Bounds::default(),
        input: PathBuf::new(),
        dir: PathBuf::new(),
    };
    let mut positional = Vec::new();
    while let Some(arg) = it.next() {
        let mut value = |flag: &str| it.next().cloned().ok_or(format!("{flag} needs a value"));
        match arg.as_str() {
            "--ownership" => {
                a.ownership = Some(match value("--ownership")?.as_str() {
                    "archive" => Ownership::Archive,
                    "caller" => Ownership::Caller,
                    v => return Err(format!("--ownership: '{v}' is not 'archive' or 'caller'")),
                })
            }
            "--special" => {
                a.specials = match value("--special")?.as_str() {
                    "refuse" => Specials::Refuse,
                    "skip" => Specials::Skip,
                    v => return Err(format!("--special: '{v}' is not 'refuse' or 'skip'")),
                }
            }
            "--platform" if a.command == "import" => {
                let v = value("--platform")?;
                a.platform = Some(Platform::parse(&v).ok_or(format!("--platform: '{v}' is not OS/ARCH[/VARIANT]"))?);
            }
            "--ref" if a.command == "import" => a.reference = Some(value("--ref")?),
            "--layout" if a.command == "import" => {
                a.layout = match value("--layout")?.as_str() {
                    "flat" => Layout::Flat,
                    "layers" => Layout::Layers,
                    v => return Err(format!("--layout: '{v}' is not 'flat' or 'layers'")),
                }
            }
            "--max-bytes" => a.bounds.bytes = Some(count("--max-bytes", &value("--max-bytes")?)?),
            "--max-entries" => a.bounds.entries = Some(count("--max-entries", &value("--max-entries")?)?),
            "--" => positional.extend(it.by_ref().cloned()),
            s if s.starts_with("--") => return Err(format!("unknown option {s}")),
            s => positional.push(s.to_owned()),
        }
    }
    let [input, dir] =
        <[String; 2]>::try_from(positional).map_err(|_| "expected exactly two paths: the archive or image, and the target directory".to_string())?;
    a.input = input.into();
    a.dir = dir.into();
    Ok(a)
}

/// A bound's value: a whole number above 0.
fn count(flag: &str, v: &str) -> Result<u64, String> {
    v.parse::<u64>().ok().filter(|n| *n > 0).ok_or(format!("{flag}: '{v}' is not a whole number above 0"))
}

/// The target directory, and a lock on it held for the tool's life.
struct Target {
    /// flock'd (where the filesystem has flock): two unpacks or imports into one directory at
    /// once would each take the other's files for its own, and a failed one would remove what
    /// the other wrote.
    dir: OwnedFd,
    /// This tool created it (its last component): a failed call empties it.
    made: bool,
}

/// Make the target (mkdir -p; the caller's own path: its symlinks are followed), then open and
/// lock it. Whether this tool made it is decided here, by its own mkdir, not by what a caller saw
/// before: another call may have made it meanwhile.
fn open_target(dir: &Path, must_be_empty: bool) -> Result<Target, SetupError> {
    let shown = dir.display().to_string();
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| error::io(Step::OpenArchive, &e, &shown, "create the target directory"))?;
    }
    // A failed call into the same directory removes it (empty) once its tool let go of it: the
    // lock counts only on the directory the path still names, else it is made again.
    let mut tries = 0;
    let (dir_fd, made) = loop {
        let made = match std::fs::create_dir(dir) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
            Err(e) => return Err(error::io(Step::OpenArchive, &e, &shown, "create the target directory")),
        };
        let c = sys::cstring(dir.as_os_str().as_encoded_bytes());
        // Read-only, not O_PATH: flock takes no O_PATH descriptor. Its last component is not
        // followed: a symlink there may be another user's, planted where root would write.
        let fd = sys::open(&c, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW).map_err(|e| match e {
            // O_DIRECTORY answers ENOTDIR first: a symlink's error is the loop it would follow.
            nix::errno::Errno::ELOOP | nix::errno::Errno::ENOTDIR if is_symlink(dir) => {
                error::sys(Step::OpenArchive, nix::errno::Errno::ELOOP, &shown, "open the target directory").with_hint(
                    "the target is a symlink, which this tool does not follow (whoever may write where it lies could aim it): name the directory it points to",
                )
            }
            _ => error::sys(Step::OpenArchive, e, &shown, "open the target directory"),
        })?;
        refuse_root(fd.as_fd(), &shown)?;
        if !made {
            refuse_foreign(fd.as_fd(), &shown)?;
        }
        // SAFETY: flock on a descriptor of ours.
        if unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = nix::errno::Errno::last();
            if e == nix::errno::Errno::EWOULDBLOCK {
                return Err(error::sys(Step::OpenArchive, nix::errno::Errno::EBUSY, &shown, "lock the target directory")
                    .with_hint("another unpack or import is writing into this directory: wait for it to end, or choose another"));
            }
            // A filesystem without flock on directories (NFS turns it into a byte-range lock,
            // which a read-only descriptor cannot take): unlocked, as before there was a lock.
        }
        if still_names(dir, fd.as_fd()) {
            break (fd, made);
        }
        tries += 1;
        if tries == 3 {
            return Err(SetupError::new(Step::OpenArchive, format!("the target directory {shown} was removed or replaced each time it was opened"))
                .with_path(&shown)
                .with_hint("another process keeps removing or replacing it: unpack or import into a directory of this call's own"));
        }
    };
    if must_be_empty {
        let entries = sys::list_dir(dir_fd.as_fd()).map_err(|e| error::sys(Step::OpenArchive, e, &shown, "read the target directory"))?;
        if !entries.is_empty() {
            return Err(SetupError::new(Step::OpenArchive, format!("the target directory {shown} is not empty"))
                .with_path(&shown)
                .with_hint("import into a new or empty directory"));
        }
    }
    emit(&Event::Locked { made });
    Ok(Target { dir: dir_fd, made })
}

fn is_symlink(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

/// A target that was there before is this caller's and writable by no one else: another user's
/// directory (made ahead where root would unpack) would stay theirs, the tree's top in their hands.
fn refuse_foreign(target: std::os::fd::BorrowedFd<'_>, shown: &str) -> Result<(), SetupError> {
    let st = sys::fstat(target).map_err(|e| error::sys(Step::OpenArchive, e, shown, "stat the target directory"))?;
    let me = sys::geteuid();
    if st.st_uid != me || st.st_mode & 0o022 != 0 {
        return Err(SetupError::new(
            Step::OpenArchive,
            format!(
                "the target directory {shown} is not this caller's alone (owner uid {}, mode {:o}; this caller is uid {me})",
                st.st_uid,
                st.st_mode & 0o7777
            ),
        )
        .with_path(shown)
        .with_hint("name a new directory (this tool makes it), or one of this caller's that group and others may not write (chmod go-w)"));
    }
    Ok(())
}

/// `path` still names the directory `fd` is.
fn still_names(path: &Path, fd: std::os::fd::BorrowedFd<'_>) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(path), sys::fstat(fd)) {
        (Ok(m), Ok(st)) => m.dev() == st.st_dev && m.ino() == st.st_ino,
        _ => false,
    }
}

/// The directory opened as the target is not this host's root: not `/` itself, nor `/` through a
/// symlink swapped in after the caller looked, nor a bind mount of it elsewhere (the same inode
/// on the same device). The library refuses those names first; this is the check that holds.
fn refuse_root(target: std::os::fd::BorrowedFd<'_>, shown: &str) -> Result<(), SetupError> {
    let root = sys::open(c"/", libc::O_PATH | libc::O_DIRECTORY).map_err(|e| error::sys(Step::OpenArchive, e, "/", "open the root directory"))?;
    let [t, r] = [target, root.as_fd()].map(sys::fstat);
    let (t, r) = (
        t.map_err(|e| error::sys(Step::OpenArchive, e, shown, "stat the target directory"))?,
        r.map_err(|e| error::sys(Step::OpenArchive, e, "/", "stat the root directory"))?,
    );
    if (t.st_dev, t.st_ino) == (r.st_dev, r.st_ino) {
        return Err(SetupError::new(
            Step::OpenArchive,
            format!("the target directory {shown} is the host's root directory: an archive would replace the host's files"),
        )
        .with_path(shown)
        .with_hint("name a directory of its own"));
    }
    Ok(())
}

fn ownership(asked: Option<Ownership>) -> Result<Ownership, SetupError> {
    match asked {
        Some(Ownership::Archive) if sys::geteuid() != 0 => {
            Err(SetupError::new(Step::OpenArchive, "ownership 'archive' (the archive's uid/gid numbers) needs root")
                .with_hint("without root every file is owned by the caller, whom the sandbox maps to root; leave ownership unset"))
        }
        Some(o) => Ok(o),
        None => Ok(crate::default_ownership()),
    }
}

/// Files above the soft descriptor limit would end a very deep removal; take the hard limit.
fn raise_nofile() {
    // SAFETY: getrlimit/setrlimit on our own process with a valid struct.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max.min(1 << 16);
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

fn run(a: Args) -> Result<serde_json::Value, SetupError> {
    raise_nofile();
    let own = ownership(a.ownership)?;
    let mut throttle = Throttle { last: None };
    let mut tick = |p: &Progress| throttle.tick(p);
    let shown = a.input.display().to_string();
    let mut locked = None;
    let result = if a.command == "unpack" {
        (|| {
            let archive = std::fs::File::open(&a.input).map_err(|e| error::io(Step::OpenArchive, &e, &shown, "open the archive"))?;
            let target = open_target(&a.dir, false)?;
            let dir = target.dir.try_clone().map_err(|e| error::io(Step::OpenArchive, &e, &a.dir.display().to_string(), "dup"))?;
            // One this call did not make keeps its own mode and times (another call's, or the caller's).
            let existing_target = !target.made;
            crate::budget::empty_at_end(target.made.then(|| target.dir.as_raw_fd()));
            locked = Some(target);
            let confinement = confine::confine(dir.as_fd(), None, false);
            let report = crate::unpack_rootfs(
                archive,
                &shown,
                dir,
                &UnpackOptions { ownership: own, specials: a.specials, bounds: a.bounds, existing_target },
                &mut tick,
            )?;
            let mut v = serde_json::to_value(&report).expect("plain data serializes");
            v["confinement"] = confinement.into();
            Ok(v)
        })()
    } else {
        (|| {
            let input = Source::open_path(&a.input)?;
            let target = open_target(&a.dir, true)?;
            let dir = target.dir.try_clone().map_err(|e| error::io(Step::OpenArchive, &e, &a.dir.display().to_string(), "dup"))?;
            let existing_target = !target.made;
            crate::budget::empty_at_end(target.made.then(|| target.dir.as_raw_fd()));
            locked = Some(target);
            let is_dir = sys::fstat(input.as_fd()).map(|st| sys::is_dir(&st)).unwrap_or(false);
            let confinement = confine::confine(dir.as_fd(), is_dir.then(|| input.as_fd()), a.layout == Layout::Layers);
            let mut decompress_tick =
                |bytes: u64, total: u64| tick(&Progress { phase: crate::Phase::Decompress, bytes, total_bytes: total, entries: 0, layer: None, layers: None });
            let src = Source::from_fd(input, shown.clone(), dir.as_fd(), a.bounds.copy_cap(), &mut decompress_tick)?;
            let opts = ImportOptions {
                platform: a.platform,
                reference: a.reference,
                layout: a.layout,
                ownership: own,
                specials: a.specials,
                bounds: a.bounds,
                existing_target,
            };
            let report = crate::import_image(&src, dir, &opts, &mut tick)?;
            let mut v = serde_json::to_value(&report).expect("plain data serializes");
            v["confinement"] = confinement.into();
            Ok(v)
        })()
    };
    crate::budget::empty_at_end(None);
    // Written into a directory that another call's cleanup removed meanwhile (the lock was
    // taken just before), the tree would be nowhere: said, not reported done.
    let result = match (result, &locked) {
        (Ok(_), Some(target)) if !still_names(&a.dir, target.dir.as_fd()) => {
            Err(SetupError::new(Step::OpenArchive, format!("the target directory {} was removed or replaced while this call wrote into it", a.dir.display()))
                .with_path(a.dir.display().to_string())
                .with_hint("another call into the same directory failed and removed it: unpack or import again"))
        }
        (r, _) => r,
    };
    // A failed call's tree goes while this tool still holds the target: removed later by the
    // caller, it could take what a next call into the same directory had begun to write. By fds,
    // so no path is too deep, and read-only directories the archive made are opened up first.
    if let (Err(_), Some(target @ Target { made: true, .. })) = (&result, &locked) {
        if crate::tree::empty_dir(target.dir.as_fd()).is_ok() {
            emit(&Event::Emptied);
        }
    }
    result
}

/// The caller's pid, which the addon gives its tools: they die with it.
pub const PARENT_ENV: &str = "ISOLATE_IMAGE_PARENT";

/// Die with the caller that started this tool (SIGKILL, or else its thread ending): a killed
/// caller's tool would go on for as long as it writes no report that meets the closed pipe, as
/// while it reads an image's indexes or a blocking input. One orphaned already ends now.
fn die_with_caller() {
    let Some(parent) = std::env::var(PARENT_ENV).ok().and_then(|p| p.parse::<i32>().ok()) else { return };
    // SAFETY: prctl and getppid on this process only.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() != parent {
            libc::_exit(1);
        }
    }
}

/// SIGTERM (an abort, or the caller's thread ending) stops the tool at its next read of the
/// archive or image, as a failure: it then empties a target it made, holding the lock, and
/// exits (SIGKILL would leave that tree to someone who no longer holds it).
fn abort_on_sigterm() {
    extern "C" fn on_term(_: libc::c_int) {
        crate::digest::ABORT.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    // SAFETY: a handler that only stores to an atomic; no SA_RESTART, so a blocking read or open
    // (a FIFO) returns EINTR and the flag is seen.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_term as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGTERM, &sa, std::ptr::null_mut());
    }
}

/// The whole program; returns the exit status.
pub fn main(argv: Vec<String>) -> i32 {
    // Only the stdio the addon gave: a descriptor Node inherited without close-on-exec (a
    // service's activation socket, a keeper's pipe) is no business of a tool that reads archives.
    isolate_core::sys::close_fds_except(&[]);
    // Rust's runtime ignores SIGPIPE before main; a reader that went away (the caller closed the
    // report) must end the tool, not leave it writing a tree nobody waits for.
    // SAFETY: restoring a signal's default action.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    die_with_caller();
    abort_on_sigterm();
    let args = match parse(&argv) {
        Ok(a) => a,
        Err(message) => {
            emit(&Event::Error { error: &SetupError::new(Step::OpenArchive, format!("usage: {message}")) });
            return 2;
        }
    };
    match run(args) {
        Ok(result) => {
            emit(&Event::Done { result });
            0
        }
        Err(mut e) => {
            // An archive's or an image's own strings (an entry's name, a tag, a digest) may be
            // quoted in it, on their way to a terminal or a log: escaped here, once for all.
            fn shown(text: &str) -> String {
                crate::names::printable(text, 16 << 10)
            }
            e.message = shown(&e.message);
            e.path = e.path.as_deref().map(shown);
            e.hint = e.hint.as_deref().map(shown);
            emit(&Event::Error { error: &e });
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Result<Args, String> {
        parse(&s.split(' ').map(str::to_owned).collect::<Vec<_>>())
    }

    #[test]
    fn parses_what_the_typescript_layer_builds() {
        let a = args("import --platform linux/arm64 --layout layers --special skip img out").unwrap();
        assert_eq!(a.platform.unwrap().to_string(), "linux/arm64");
        assert_eq!((a.layout, a.specials), (Layout::Layers, Specials::Skip));
        assert_eq!(a.input, PathBuf::from("img"));
        assert!(args("unpack --platform x a b").is_err(), "platform is an import option");
        assert!(args("unpack a").is_err());
        assert!(args("unpack -- --weird-name dir").is_ok());
        let b = args("unpack --max-bytes 1048576 --max-entries 10 a b").unwrap().bounds;
        assert_eq!(b, crate::Bounds { bytes: Some(1 << 20), entries: Some(10) });
        assert_eq!(args("unpack a b").unwrap().bounds, crate::Bounds::default());
        for bad in ["0", "-1", "1e6", "lots"] {
            assert!(args(&format!("unpack --max-bytes {bad} a b")).is_err(), "{bad}");
        }
    }
}
