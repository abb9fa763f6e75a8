//! The filesystem view: chroot, the old root, fds and cwd, file handles, host files, mounts,
//! device nodes.

use super::{gate, REFUSED};
use crate::sys::{self, ename, syscall};
use crate::{contained, error, escaped, note, Ctx, Res};

// ---------------------------------------------------------------------------------------------
// chroot

fn chroot_dance(ctx: &Ctx, via_fd: bool) -> Res {
    let root = match sys::stat("/") {
        Ok(s) => sys::id_of(&s),
        Err(e) => return error!("stat /: {}", ename(e)),
    };
    // Any directory below the root will do; a fresh one in /tmp, else /dev.
    let dir = format!("/tmp/.escape-chroot-{}", sys::getpid());
    let made = sys::mkdir(&dir, 0o755).is_ok();
    let target = if made { dir.clone() } else { "/dev".to_owned() };
    let marker = ctx.host_marker.clone();
    let t = target.clone();
    let r = sys::in_child(move |out| {
        let root_c = sys::cs("/");
        let t_c = sys::cs(&t);
        // SAFETY: chdir/open/chroot/fchdir with valid paths and fds; this child exits right after.
        unsafe {
            libc::chdir(root_c.as_ptr());
            let keep = if via_fd { libc::open(root_c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY) } else { -1 };
            note(&format!("chroot({t})"));
            if libc::chroot(t_c.as_ptr()) < 0 {
                sys::say(out, &format!("refused {}", sys::errno()));
                return;
            }
            // The cwd (or the kept fd) is now outside the new root: climb as far as it goes.
            if via_fd {
                libc::fchdir(keep);
            }
            for _ in 0..256 {
                libc::chdir(c"..".as_ptr());
            }
            let cwd = sys::stat(".").map(|s| sys::id_of(&s)).unwrap_or((0, 0));
            note("chroot(\".\") after climbing");
            let second = if libc::chroot(c".".as_ptr()) < 0 { sys::errno() } else { 0 };
            let now = sys::stat("/").map(|s| sys::id_of(&s)).unwrap_or((0, 0));
            let seen = marker.as_deref().map(|m| sys::stat(m).is_ok() || sys::stat(&format!(".{m}")).is_ok()).unwrap_or(false);
            sys::say(out, &format!("done {} {} {} {} {second} {}", cwd.0, cwd.1, now.0, now.1, seen as i32));
        }
    });
    if made {
        sys::rmdir(&dir);
    }
    let (ended, data) = match r {
        Ok(v) => v,
        Err(e) => return error!("fork: {}", ename(e)),
    };
    let text = String::from_utf8_lossy(&data).into_owned();
    let f: Vec<&str> = text.split_whitespace().collect();
    match f.first().copied() {
        Some("refused") => contained!("chroot({target}): {}", ename(f.get(1).and_then(|s| s.parse().ok()).unwrap_or(0))),
        Some("done") if f.len() == 7 => {
            let n = |i: usize| f[i].parse::<u64>().unwrap_or(0);
            let cwd = (n(1), n(2));
            let now = (n(3), n(4));
            let second = n(5) as i32;
            let seen = f[6] == "1";
            if seen {
                escaped!("after chroot({target}) and climbing, the host marker is visible")
            } else if cwd != root || (second == 0 && now != root) {
                escaped!("after chroot({target}) and climbing, the root is another directory (dev:ino {}:{})", now.0, now.1)
            } else {
                contained!("chroot({target}) was allowed, but climbing stops at the sandbox's own root (pivot_root)")
            }
        }
        _ => match ended {
            sys::Ended::Signaled(libc::SIGSYS) => contained!("chroot killed by SIGSYS"),
            e => error!("the chroot child {e}: {text}"),
        },
    }
}

pub fn chroot_dotdot(ctx: &Ctx) -> Res {
    chroot_dance(ctx, false)
}

pub fn chroot_fchdir(ctx: &Ctx) -> Res {
    chroot_dance(ctx, true)
}

/// /proc/PID/root of every visible process must be our own root (or not be followable).
pub fn proc_pid_roots(ctx: &Ctx) -> Res {
    let root = match sys::stat("/") {
        Ok(s) => sys::id_of(&s),
        Err(e) => return error!("stat /: {}", ename(e)),
    };
    let pids: Vec<String> = match sys::list_dir("/proc") {
        Ok(v) => v.into_iter().filter(|n| n.bytes().all(|b| b.is_ascii_digit())).collect(),
        Err(e) => return error!("/proc: {}", ename(e)),
    };
    let mut followed = 0;
    let mut refused = 0;
    for p in &pids {
        for link in ["root", "cwd"] {
            match sys::stat(&format!("/proc/{p}/{link}/")) {
                Ok(st) => {
                    followed += 1;
                    if link == "root" && sys::id_of(&st) != root {
                        return escaped!("/proc/{p}/root is another directory than our root");
                    }
                    if let Some(m) = ctx.host_marker.as_deref() {
                        if sys::stat(&format!("/proc/{p}/{link}{m}")).is_ok() {
                            return escaped!("the host marker is visible through /proc/{p}/{link}");
                        }
                    }
                }
                Err(_) => refused += 1,
            }
        }
    }
    // Each cwd must lie below our root too: walk up from it.
    for p in &pids {
        let Ok(mut fd) = sys::open(&format!("/proc/{p}/cwd"), libc::O_RDONLY | libc::O_DIRECTORY) else { continue };
        let mut id = sys::fstat(fd).map(|s| sys::id_of(&s)).unwrap_or((0, 0));
        for _ in 0..4096 {
            // SAFETY: openat relative to a directory fd we own.
            let up = unsafe { libc::openat(fd, c"..".as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) };
            if up < 0 {
                break;
            }
            let next = sys::fstat(up).map(|s| sys::id_of(&s)).unwrap_or((0, 0));
            sys::close(fd);
            fd = up;
            if next == id {
                break;
            }
            id = next;
        }
        sys::close(fd);
        if id != root {
            return escaped!("the cwd of pid {p} lies outside our root");
        }
    }
    contained!("{} pids; {followed} root/cwd links followed, all inside our root; {refused} refused", pids.len())
}

// ---------------------------------------------------------------------------------------------
// old root

pub fn oldroot_mountinfo(ctx: &Ctx) -> Res {
    let mounts = match sys::mountinfo() {
        Ok(m) => m,
        Err(e) => return error!("/proc/self/mountinfo: {}", ename(e)),
    };
    let at_root: Vec<&sys::MountEntry> = mounts.iter().filter(|m| m.point == "/").collect();
    if at_root.len() != 1 {
        let what: Vec<String> = at_root.iter().map(|m| format!("{} {} {}", m.fstype, m.source, m.root)).collect();
        return escaped!("{} mounts at / (an old root stacked under the new one?): {}", at_root.len(), what.join("; "));
    }
    let root = at_root[0];
    if let Some(parent) = mounts.iter().find(|m| m.id == root.parent && m.id != root.id) {
        return escaped!("the root mount's parent is still attached: {} {} at {}", parent.fstype, parent.source, parent.point);
    }
    for m in &mounts {
        let p = m.point.to_lowercase();
        if p.contains("oldroot") || p.contains("old_root") || p.contains("put_old") || p.contains("pivot") {
            return escaped!("a mount at {} ({} {} root {})", m.point, m.fstype, m.source, m.root);
        }
    }
    if let Some(marker) = ctx.host_marker.as_deref() {
        for m in &mounts {
            let p = format!("{}{}", m.point.trim_end_matches('/'), marker);
            if sys::stat(&p).is_ok() {
                return escaped!("the host marker is visible at {p} (through the mount at {})", m.point);
            }
        }
    }
    contained!("{} mounts, one at / ({} {}), its parent detached, no old root below any mount point", mounts.len(), root.fstype, root.source)
}

pub fn oldroot_dirs(_ctx: &Ctx) -> Res {
    let root_dev = sys::stat("/").map(|s| s.st_dev).unwrap_or(0);
    let mut candidates: Vec<String> = [
        "/.oldroot",
        "/oldroot",
        "/old_root",
        "/.old_root",
        "/.pivot_root",
        "/put_old",
        "/.put_old",
        "/mnt/oldroot",
        "/tmp/oldroot",
        "/tmp/.oldroot",
        "/.old",
        "/old",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Ok(names) = sys::list_dir("/") {
        for n in names {
            let l = n.to_lowercase();
            if (l.contains("old") && (l.contains("root") || l.contains("pivot"))) || l.contains("pivot") {
                candidates.push(format!("/{n}"));
            }
        }
    }
    candidates.sort();
    candidates.dedup();
    let mut present = Vec::new();
    for c in &candidates {
        let Ok(st) = sys::lstat(c) else { continue };
        if !sys::is_dir(&st) {
            present.push(c.clone());
            continue;
        }
        if st.st_dev != root_dev {
            return escaped!("{c} is a mount point");
        }
        match sys::list_dir(c) {
            Ok(v) if !v.is_empty() => return escaped!("{c} holds {} entries: {}", v.len(), v.iter().take(8).cloned().collect::<Vec<_>>().join(",")),
            Err(e) => return escaped!("{c} exists and cannot be listed ({})", ename(e)),
            _ => present.push(c.clone()),
        }
    }
    if present.is_empty() {
        contained!("none of {} old-root names exist", candidates.len())
    } else {
        contained!("only empty or non-directory entries: {}", present.join(","))
    }
}

// ---------------------------------------------------------------------------------------------
// fds and cwd

pub fn fds_leaked(ctx: &Ctx) -> Res {
    let s = &ctx.start;
    let extra: Vec<String> = s.fds.iter().filter(|(fd, _)| *fd > 2).map(|(fd, t)| format!("{fd}->{t}")).collect();
    if !extra.is_empty() {
        return escaped!("fds open at start besides 0,1,2: {}", extra.join(" "));
    }
    if let Ok(listed) = &s.proc_fds {
        let more: Vec<i32> = listed.iter().copied().filter(|fd| *fd > 2).collect();
        if !more.is_empty() {
            return escaped!("/proc/self/fd listed {more:?} at start");
        }
    }
    let std: Vec<String> = s.fds.iter().map(|(fd, t)| format!("{fd}->{t}")).collect();
    contained!("only {} open at start", std.join(" "))
}

pub fn cwd_inside(ctx: &Ctx) -> Res {
    let s = &ctx.start;
    let cwd = match &s.cwd {
        Ok(c) => c.clone(),
        Err(e) => return escaped!("getcwd at start: {} (the cwd is not below the root)", ename(*e)),
    };
    if !cwd.starts_with('/') || cwd.contains("(unreachable)") {
        return escaped!("getcwd at start: {cwd}");
    }
    match &s.proc_cwd {
        Ok(p) if p.starts_with('/') && !p.contains("(unreachable)") => {}
        Ok(p) => return escaped!("/proc/self/cwd -> {p}"),
        Err(e) => return error!("/proc/self/cwd: {}", ename(*e)),
    }
    match &s.proc_root {
        Ok(p) if p == "/" => {}
        Ok(p) => return escaped!("/proc/self/root -> {p}"),
        Err(e) => return error!("/proc/self/root: {}", ename(*e)),
    }
    match (&s.cwd_top, &s.root_id) {
        (Ok(top), Ok(root)) if top == root => contained!("cwd {cwd} lies below the root; /proc/self/root -> /"),
        (Ok(_), Ok(_)) => escaped!("walking .. from the cwd {cwd} ends somewhere other than our root"),
        (Err(e), _) | (_, Err(e)) => error!("walking up from the cwd: {}", ename(*e)),
    }
}

// ---------------------------------------------------------------------------------------------
// open_by_handle_at

#[repr(C)]
struct FileHandle {
    handle_bytes: u32,
    handle_type: i32,
    f_handle: [u8; 128],
}

pub fn open_by_handle_at(_ctx: &Ctx) -> Res {
    let mut fh = FileHandle { handle_bytes: 128, handle_type: 0, f_handle: [0; 128] };
    let mut mount_id: i32 = 0;
    let mut base = None;
    for path in ["/etc", "/usr", "/"] {
        let c = sys::cs(path);
        fh.handle_bytes = 128;
        if syscall!(sys::nr::NAME_TO_HANDLE_AT, libc::AT_FDCWD as i64, c.as_ptr(), &mut fh as *mut FileHandle, &mut mount_id as *mut i32, 0i64).is_ok() {
            base = Some(path);
            break;
        }
    }
    let mount_path = base.unwrap_or("/etc");
    let mfd = match sys::open(mount_path, libc::O_RDONLY | libc::O_DIRECTORY) {
        Ok(fd) => fd,
        Err(e) => return error!("open {mount_path}: {}", ename(e)),
    };
    let legit = if base.is_some() {
        note("open_by_handle_at(a handle from name_to_handle_at)");
        let r = syscall!(sys::nr::OPEN_BY_HANDLE_AT, mfd as i64, &fh as *const FileHandle, libc::O_RDONLY as i64);
        match r {
            Ok(fd) => {
                sys::close(fd as i32);
                return escaped!("open_by_handle_at opened {mount_path} from its handle (type {})", fh.handle_type);
            }
            Err(e) if REFUSED.contains(&e) => format!("own handle: {}", ename(e)),
            Err(e) => return gate(&format!("open_by_handle_at({mount_path} handle)"), Err(e), REFUSED),
        }
    } else {
        "name_to_handle_at refused".to_owned()
    };
    // The "shocker" attack: a forged handle for inode 2 (an ext4 root) of the filesystem behind
    // the bind, which lies outside what the sandbox was given.
    let mut forged = FileHandle { handle_bytes: 8, handle_type: 1, f_handle: [0; 128] };
    forged.f_handle[0] = 2;
    note("open_by_handle_at(forged handle for inode 2)");
    let r = syscall!(sys::nr::OPEN_BY_HANDLE_AT, mfd as i64, &forged as *const FileHandle, libc::O_RDONLY as i64);
    sys::close(mfd);
    match r {
        Ok(fd) => {
            let what = sys::readlink(&format!("/proc/self/fd/{fd}")).unwrap_or_default();
            escaped!("a forged handle opened {what} (the filesystem root beyond {mount_path})")
        }
        Err(e) if REFUSED.contains(&e) => contained!("{legit}; forged handle: {}", ename(e)),
        Err(e) => gate("open_by_handle_at(forged)", Err(e), REFUSED),
    }
}

// ---------------------------------------------------------------------------------------------
// host files

pub fn host_marker_invisible(ctx: &Ctx) -> Res {
    let Some(m) = ctx.host_marker.as_deref() else { return error!("no --host-marker given") };
    match sys::stat(m) {
        Err(libc::ENOENT) => contained!("{m}: ENOENT"),
        Err(e) => escaped!("{m}: {} (part of the path exists inside)", ename(e)),
        Ok(_) => escaped!("the host marker {m} is visible"),
    }
}

pub fn host_shm_invisible(ctx: &Ctx) -> Res {
    let Some(n) = ctx.host_shm.as_deref() else { return error!("no --host-shm given") };
    let p = format!("/dev/shm/{n}");
    match sys::stat(&p) {
        Err(libc::ENOENT) => contained!("{p}: ENOENT"),
        Err(e) => escaped!("{p}: {}", ename(e)),
        Ok(_) => escaped!("the host's {p} is visible"),
    }
}

/// With `rootfs: 'host'` (the default) /etc is the host's: its credential files must stay unreadable.
/// (With a directory rootfs these are the rootfs's own files, and this probe does not apply.)
pub fn host_secret_files(_ctx: &Ctx) -> Res {
    let mut paths: Vec<String> = [
        "/etc/shadow",
        "/etc/shadow-",
        "/etc/gshadow",
        "/etc/gshadow-",
        "/etc/sudoers",
        "/etc/security/opasswd",
        "/etc/krb5.keytab",
        "/root/.ssh/id_rsa",
        "/root/.ssh/id_ed25519",
        "/root/.bash_history",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for dir in ["/etc/ssh", "/etc/ssl/private", "/etc/sudoers.d", "/root/.ssh"] {
        if let Ok(names) = sys::list_dir(dir) {
            for n in names {
                if dir != "/etc/ssh" || n.ends_with("_key") {
                    paths.push(format!("{dir}/{n}"));
                }
            }
        }
    }
    let mut seen = Vec::new();
    for p in &paths {
        match sys::read_file(p, 64) {
            Ok(b) if !b.is_empty() => return escaped!("read {} bytes of {p}", b.len()),
            Ok(_) => seen.push(format!("{p}: empty")),
            Err(libc::ENOENT) => {}
            Err(e) => seen.push(format!("{p}: {}", ename(e))),
        }
    }
    contained!("{}", if seen.is_empty() { "none present".to_owned() } else { seen.join(", ") })
}

pub fn host_private_dirs(_ctx: &Ctx) -> Res {
    let mut seen = Vec::new();
    for d in ["/root", "/home", "/run", "/var/run", "/var/lib", "/mnt", "/media", "/srv"] {
        match sys::list_dir(d) {
            Ok(v) if !v.is_empty() => return escaped!("{d} lists {} entries: {}", v.len(), v.iter().take(8).cloned().collect::<Vec<_>>().join(",")),
            Ok(_) => seen.push(format!("{d}: empty")),
            Err(e) => seen.push(format!("{d}: {}", ename(e))),
        }
    }
    contained!("{}", seen.join(", "))
}

// ---------------------------------------------------------------------------------------------
// mounts

fn mount(src: Option<&str>, target: &str, fstype: Option<&str>, flags: u64, data: Option<&str>) -> Result<i64, i32> {
    let s = src.map(sys::cs);
    let t = sys::cs(target);
    let f = fstype.map(sys::cs);
    let d = data.map(sys::cs);
    // SAFETY: NUL-terminated strings or null pointers.
    let r = unsafe {
        libc::mount(
            s.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
            t.as_ptr(),
            f.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
            flags,
            d.as_ref().map_or(std::ptr::null(), |c| c.as_ptr().cast()),
        )
    };
    sys::check(r as libc::c_long)
}

fn umount(target: &str) -> Result<i64, i32> {
    let t = sys::cs(target);
    // SAFETY: a valid path.
    sys::check(unsafe { libc::umount2(t.as_ptr(), libc::MNT_DETACH) } as libc::c_long)
}

pub fn mount_tmpfs(_ctx: &Ctx) -> Res {
    // On a fresh directory in /tmp rather than over /tmp itself: the same permission check
    // (may_mount), and if it ever works outside a sandbox, nothing of the host's /tmp is covered.
    let dir = format!("/tmp/.escape-tmpfs-{}", sys::getpid());
    if let Err(e) = sys::mkdir(&dir, 0o755) {
        return error!("mkdir {dir}: {}", ename(e));
    }
    note(&format!("mount tmpfs on {dir}"));
    let r = mount(Some("tmpfs"), &dir, Some("tmpfs"), libc::MS_NOSUID | libc::MS_NODEV, Some("size=1m"));
    if r.is_ok() {
        let _ = umount(&dir);
    }
    sys::rmdir(&dir);
    gate(&format!("mount(tmpfs, {dir})"), r, REFUSED)
}

pub fn mount_remount_root_rw(_ctx: &Ctx) -> Res {
    // A remount of / that keeps every flag it has (read-only included) passes the same
    // permission check (may_mount) as one that drops read-only, and never changes anything, so
    // this probe is harmless even where it works. Keeping the flags also rules out a locked flag
    // as the reason for a refusal. Refused here means a read-write remount is refused too.
    let mut vfs: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: statvfs into a struct we own.
    if unsafe { libc::statvfs(c"/".as_ptr(), &mut vfs) } < 0 {
        return error!("statvfs /: {}", ename(sys::errno()));
    }
    let mut flags = libc::MS_REMOUNT | libc::MS_BIND;
    for (st, ms) in [
        (libc::ST_RDONLY, libc::MS_RDONLY),
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ] {
        if vfs.f_flag & st != 0 {
            flags |= ms;
        }
    }
    let ro = if vfs.f_flag & libc::ST_RDONLY != 0 { "read-only" } else { "read-write" };
    note("mount(MS_REMOUNT|MS_BIND, /) with its own flags");
    match mount(None, "/", None, flags, None) {
        Ok(_) => escaped!("remounting / ({ro}) is allowed: nothing but a locked flag stands between it and read-write"),
        Err(e) => gate(&format!("remount / ({ro}, flags kept)"), Err(e), REFUSED),
    }
}

pub fn mount_bind(_ctx: &Ctx) -> Res {
    let dir = format!("/tmp/.escape-bind-{}", sys::getpid());
    let target = if sys::mkdir(&dir, 0o755).is_ok() { dir.clone() } else { "/tmp".to_owned() };
    note(&format!("mount --bind /etc {target}"));
    let r = mount(Some("/etc"), &target, None, libc::MS_BIND | libc::MS_REC, None);
    if r.is_ok() {
        let _ = umount(&target);
    }
    sys::rmdir(&dir);
    gate(&format!("bind /etc on {target}"), r, REFUSED)
}

pub fn mount_new_api(_ctx: &Ctx) -> Res {
    const FSOPEN_CLOEXEC: i64 = 1;
    const OPEN_TREE_CLONE: i64 = 1;
    note("fsopen(tmpfs)");
    let r1 = syscall!(sys::nr::FSOPEN, c"tmpfs".as_ptr(), FSOPEN_CLOEXEC);
    if let Ok(fd) = r1 {
        sys::close(fd as i32);
        return escaped!("fsopen(tmpfs) gave a filesystem context (fd {fd})");
    }
    note("open_tree(/etc, OPEN_TREE_CLONE)");
    let r2 = syscall!(sys::nr::OPEN_TREE, libc::AT_FDCWD as i64, c"/etc".as_ptr(), OPEN_TREE_CLONE | libc::O_CLOEXEC as i64);
    if let Ok(fd) = r2 {
        sys::close(fd as i32);
        return escaped!("open_tree(OPEN_TREE_CLONE) gave a detached mount (fd {fd})");
    }
    match (r1, r2) {
        (Err(a), Err(b)) if REFUSED.contains(&a) && REFUSED.contains(&b) => contained!("fsopen: {}; open_tree: {}", ename(a), ename(b)),
        (Err(a), Err(b)) => escaped!("fsopen: {}; open_tree: {} (past the permission check)", ename(a), ename(b)),
        _ => unreachable!(),
    }
}

pub fn mount_setattr_rw(_ctx: &Ctx) -> Res {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    const AT_RECURSIVE: i64 = 0x8000;
    // mount_setattr checks may_mount() before it looks at the attributes, and an empty change
    // returns right after: this call proves the permission without changing anything. The
    // attributes are behind a pointer, so no seccomp filter can tell this call from one that
    // clears MOUNT_ATTR_RDONLY.
    let target = if sys::stat("/usr").is_ok() { "/usr" } else { "/" };
    let attr = MountAttr { attr_set: 0, attr_clr: 0, propagation: 0, userns_fd: 0 };
    let c = sys::cs(target);
    note(&format!("mount_setattr({target}, no change)"));
    let r = syscall!(sys::nr::MOUNT_SETATTR, libc::AT_FDCWD as i64, c.as_ptr(), AT_RECURSIVE, &attr as *const MountAttr, std::mem::size_of::<MountAttr>());
    match r {
        Ok(_) => escaped!("mount_setattr on {target} is allowed (it could clear MOUNT_ATTR_RDONLY)"),
        Err(e) => gate(&format!("mount_setattr({target})"), Err(e), REFUSED),
    }
}

pub fn umount_masks(_ctx: &Ctx) -> Res {
    // Unmounting a mask would reveal what it covers (/etc/shadow, /proc/kcore, ...). MNT_EXPIRE
    // runs every check a real unmount does (may_mount: EPERM; a locked or foreign mount: EINVAL)
    // and then, instead of unmounting, answers EAGAIN (marked) or EBUSY (in use): the mount
    // always stays, wherever this runs (and the mark is cleared right after).
    let mut targets: Vec<String> = Vec::new();
    if let Ok(mounts) = sys::mountinfo() {
        for m in mounts {
            if (m.point.starts_with("/etc/") || m.point.starts_with("/proc/") || m.point.starts_with("/sys/")) && !targets.contains(&m.point) {
                targets.push(m.point);
            }
        }
    }
    for t in ["/etc/shadow", "/usr", "/proc"] {
        if !targets.iter().any(|x| x == t) {
            targets.push(t.to_owned());
        }
    }
    let mut errs = Vec::new();
    for t in &targets {
        let c = sys::cs(t);
        note(&format!("umount2({t}, MNT_EXPIRE)"));
        // SAFETY: a valid path; MNT_EXPIRE never unmounts on a first call.
        let r = unsafe { libc::umount2(c.as_ptr(), libc::MNT_EXPIRE) };
        if r == 0 {
            return escaped!("umount2({t}, MNT_EXPIRE) unmounted it");
        }
        match sys::errno() {
            e @ (libc::EAGAIN | libc::EBUSY) => {
                // EAGAIN left the mount marked as expired, and a second MNT_EXPIRE would unmount
                // it: any access clears the mark (path_put), so touch it at once.
                let _ = sys::stat(t);
                return escaped!("umount2({t}) passed every check ({}): the mask could be removed", ename(e));
            }
            e if sys::is_resource_error(e) => return error!("umount {t}: {}", ename(e)),
            e => {
                let n = ename(e);
                if !errs.contains(&n) {
                    errs.push(n);
                }
            }
        }
    }
    contained!("{} mount points refused: {}", targets.len(), errs.join(","))
}

// ---------------------------------------------------------------------------------------------
// devices

pub fn mknod_char(_ctx: &Ctx) -> Res {
    let path = format!("/tmp/.escape-mknod-{}", sys::getpid());
    let c = sys::cs(&path);
    note(&format!("mknod {path} c 1 3"));
    // SAFETY: a valid path; the node is removed at once if it was made.
    let r = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 3)) };
    if r == 0 {
        sys::unlink(&path);
        return escaped!("mknod {path} c 1 3 succeeded");
    }
    match sys::errno() {
        e if REFUSED.contains(&e) => contained!("mknod c 1 3: {}", ename(e)),
        e => error!("mknod c 1 3: {} (undecided)", ename(e)),
    }
}

pub fn block_devices(_ctx: &Ctx) -> Res {
    let mut cands: Vec<String> = [
        "/dev/sda",
        "/dev/sdb",
        "/dev/vda",
        "/dev/vdb",
        "/dev/xvda",
        "/dev/hda",
        "/dev/nvme0n1",
        "/dev/mmcblk0",
        "/dev/loop0",
        "/dev/dm-0",
        "/dev/md0",
        "/dev/ram0",
        "/dev/sr0",
        "/dev/nbd0",
        "/dev/root",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Ok(parts) = sys::read_string("/proc/partitions") {
        for l in parts.lines().skip(2) {
            if let Some(name) = l.split_whitespace().nth(3) {
                cands.push(format!("/dev/{name}"));
            }
        }
    }
    if let Ok(names) = sys::list_dir("/sys/dev/block") {
        for n in names {
            if let Ok(t) = sys::readlink(&format!("/sys/dev/block/{n}")) {
                if let Some(base) = t.rsplit('/').next() {
                    cands.push(format!("/dev/{base}"));
                }
            }
            cands.push(format!("/dev/block/{n}"));
        }
    }
    // Every block node anywhere in /dev (two levels).
    let mut dirs = vec!["/dev".to_owned()];
    let mut depth = 0;
    while depth < 3 && !dirs.is_empty() {
        let mut next = Vec::new();
        for d in &dirs {
            if let Ok(names) = sys::list_dir(d) {
                for n in names {
                    let p = format!("{d}/{n}");
                    if let Ok(st) = sys::lstat(&p) {
                        match st.st_mode & libc::S_IFMT {
                            libc::S_IFBLK => cands.push(p),
                            libc::S_IFDIR if p != "/dev/pts" && p != "/dev/shm" => next.push(p),
                            _ => {}
                        }
                    }
                }
            }
        }
        dirs = next;
        depth += 1;
    }
    cands.sort();
    cands.dedup();
    let mut visible = Vec::new();
    for p in &cands {
        let Ok(st) = sys::stat(p) else { continue };
        if st.st_mode & libc::S_IFMT != libc::S_IFBLK {
            continue;
        }
        note(&format!("open {p}"));
        match sys::open(p, libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY) {
            Ok(fd) => {
                sys::close(fd);
                return escaped!("opened the block device {p}");
            }
            Err(e) => visible.push(format!("{p}: {}", ename(e))),
        }
    }
    if visible.is_empty() {
        contained!("no block device node visible ({} names tried)", cands.len())
    } else {
        contained!("visible but not openable: {}", visible.join(", "))
    }
}

pub fn dangerous_dev_nodes(_ctx: &Ctx) -> Res {
    // Opened only, and none of these acts on open (no watchdog, snapshot, serial line or DRM node).
    let nodes = [
        "/dev/kvm",
        "/dev/fuse",
        "/dev/net/tun",
        "/dev/loop-control",
        "/dev/mapper/control",
        "/dev/btrfs-control",
        "/dev/autofs",
        "/dev/console",
        "/dev/tty0",
        "/dev/tty1",
        "/dev/vhost-net",
        "/dev/vhost-vsock",
        "/dev/vsock",
        "/dev/userfaultfd",
        "/dev/cpu/0/msr",
        "/dev/cpu/0/cpuid",
        "/dev/hwrng",
        "/dev/uinput",
        "/dev/input/event0",
        "/dev/nvram",
        "/dev/rtc0",
        "/dev/ppp",
        "/dev/uhid",
        "/dev/vfio/vfio",
        "/dev/sg0",
        "/dev/bsg",
        "/dev/iommu",
        "/dev/udmabuf",
    ];
    let mut visible = Vec::new();
    for n in nodes {
        if sys::lstat(n).is_err() {
            continue;
        }
        note(&format!("open {n}"));
        let flags = libc::O_NOCTTY | libc::O_NONBLOCK;
        match sys::open(n, libc::O_RDWR | flags).or_else(|_| sys::open(n, libc::O_RDONLY | flags)) {
            Ok(fd) => {
                sys::close(fd);
                return escaped!("opened {n}");
            }
            Err(e) => visible.push(format!("{n}: {}", ename(e))),
        }
    }
    if visible.is_empty() {
        contained!("none of {} host device nodes present", nodes.len())
    } else {
        contained!("present but refused: {}", visible.join(", "))
    }
}

/// A character device node inside a directory the sandbox was given (a bind source, a directory
/// rootfs) must be inert: mounted nodev. The test places /dev/full's twin (char 1:7, mode 0666)
/// in the probe's bind as root; writing to it is harmless (ENOSPC) and proves the device works.
pub fn device_node_in_bind(ctx: &Ctx) -> Res {
    let Some(path) = ctx.device_fixture.as_deref() else { return error!("no --device-fixture given") };
    let dir = match path.rfind('/') {
        Some(0) | None => "/".to_owned(),
        Some(i) => path[..i].to_owned(),
    };
    let nodev = || -> Result<bool, i32> {
        let c = sys::cs(&dir);
        let mut vfs: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: statvfs into a struct we own.
        if unsafe { libc::statvfs(c.as_ptr(), &mut vfs) } < 0 {
            return Err(sys::errno());
        }
        Ok(vfs.f_flag & libc::ST_NODEV != 0)
    };
    match sys::lstat(path) {
        Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFCHR => {
            let (maj, min) = (libc::major(st.st_rdev), libc::minor(st.st_rdev));
            note(&format!("open({path}, O_WRONLY)"));
            match sys::open(path, libc::O_WRONLY | libc::O_NOCTTY | libc::O_NONBLOCK) {
                Ok(fd) => {
                    let what = if (maj, min) == (1, 7) {
                        // /dev/full: every write fails with ENOSPC, which only the driver answers.
                        // SAFETY: a one-byte write from a buffer we own.
                        let r = unsafe { libc::write(fd, b"x".as_ptr().cast(), 1) };
                        format!("wrote to it: {}", if r < 0 { ename(sys::errno()) } else { format!("{r} byte") })
                    } else {
                        "not written".to_owned()
                    };
                    sys::close(fd);
                    escaped!("opened the char device {path} ({maj}:{min}) found in a bind, {what}: binds are not nodev")
                }
                Err(e) => contained!(
                    "{path} (char {maj}:{min}, in a bind): {} ({})",
                    ename(e),
                    match nodev() {
                        Ok(true) => "mounted nodev".to_owned(),
                        Ok(false) => "not nodev".to_owned(),
                        Err(e) => format!("statvfs: {}", ename(e)),
                    }
                ),
            }
        }
        Ok(_) => error!("{path} is not a character device"),
        Err(e) => match nodev() {
            Ok(true) => contained!("no fixture ({path}: {}); {dir} is mounted nodev, so no device node in it would work", ename(e)),
            Ok(false) => escaped!(
                "no fixture ({path}: {}), but {dir} (a bind) is mounted without nodev: a device node in a bind source or a directory rootfs works inside",
                ename(e)
            ),
            Err(e2) => error!("no fixture ({path}: {}); statvfs {dir}: {}", ename(e), ename(e2)),
        },
    }
}
