//! Plans: the spec plus a few facts about the host, turned into ordered data by pure functions.
//! The sandbox applies each entry with one thin syscall wrapper; unit tests check the plans
//! without root.

use crate::spec::{Ids, Mount, Rootfs, Spec};

/// What a path on the host is, as far as building the new root cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File,
    /// A symlink, with where it points (recreated inside, never followed on the host).
    Symlink(String),
    /// Sockets, fifos, devices at the top of a rootfs: not carried in.
    Other,
    Missing,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootEntry {
    pub name: String,
    pub kind: EntryKind,
}

/// Facts gathered from the host right before planning (see `sandbox::gather_facts`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFacts {
    /// For `rootfs: 'host'`: each of [`HOST_SYSTEM_DIRS`]; for a directory rootfs: its entries.
    pub root_entries: Vec<RootEntry>,
    /// Which of [`HOST_SECRETS`] exist (only for `rootfs: 'host'`).
    pub secrets: Vec<RootEntry>,
    /// The kind of each `mounts[i]` bind source, in order (None for non-bind mounts).
    pub bind_sources: Vec<Option<EntryKind>>,
    /// Whether the host has a [`HOST_RESOLV_CONF`] to lend (looked at only for a sandbox on the
    /// host's network with a root of its own).
    pub host_resolv_conf: bool,
}

/// The host's name servers: a sandbox on the host's network with a root of its own (a rootfs
/// directory, an image) resolves names as the host does, where an image's root most often has
/// no such file, and its C library then asks a server on 127.0.0.1.
pub const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";

/// The host directories a `rootfs: 'host'` sandbox sees, read-only. Not /root, /home, /var, /run,
/// /srv, /mnt, /media: those hold users' and services' data.
pub const HOST_SYSTEM_DIRS: &[&str] = &["bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "etc", "opt"];

/// Files under the host's /etc that hold credentials; each is covered by an inaccessible
/// placeholder inside so that even root in the sandbox cannot read it.
pub const HOST_SECRETS: &[&str] = &[
    "/etc/shadow",
    "/etc/shadow-",
    "/etc/gshadow",
    "/etc/gshadow-",
    "/etc/sudoers",
    "/etc/sudoers.d",
    "/etc/ssh",
    "/etc/ssl/private",
    "/etc/security/opasswd",
    "/etc/krb5.keytab",
];

/// Top-level names of a directory rootfs that the sandbox provides itself.
const PROVIDED: &[&str] = &["proc", "dev", "tmp", "sys"];

/// Top-level names the setup makes for itself while it builds the root (the overlays' scratch
/// area, the masks' placeholders: see crate::sandbox), removed or detached before the sandbox
/// starts. A root entry of one of these names (an archive can bring any) would take their place,
/// breaking every start on that tree or showing the scratch area, so it is left out of the root.
pub(crate) const SETUP_NAMES: &[&str] = &[".isolate-overlay", ".isolate-mask", ".isolate-mask-dir"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct MountFlags {
    pub nosuid: bool,
    pub nodev: bool,
    pub noexec: bool,
}

const NOSUID_NODEV: MountFlags = MountFlags { nosuid: true, nodev: true, noexec: false };

/// One step of building the new root. Targets are paths inside the sandbox; sources are host paths.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MountOp {
    Tmpfs {
        target: String,
        mode: u32,
        size_bytes: Option<u64>,
        flags: MountFlags,
    },
    /// `is_dir` decides whether the mountpoint is made as a directory or an empty file.
    Bind {
        source: String,
        target: String,
        readonly: bool,
        is_dir: bool,
    },
    Symlink {
        target: String,
        points_to: String,
    },
    Proc {
        target: String,
    },
    Devpts {
        target: String,
    },
    /// Cover a path with an inaccessible placeholder of the same kind.
    Mask {
        target: String,
        is_dir: bool,
    },
    /// A host file bound read-only where the root has room for it, seen at apply time: over a
    /// regular file there, or on a new one where the root is writable (an overlay); left out over
    /// anything else (a symlink is the root's own choice), or where a read-only root lacks it.
    HostFileIfRoom {
        source: String,
        target: String,
    },
    /// Mask a kernel-provided path (in /proc) when this kernel has it; its kind is read at apply time.
    MaskIfPresent {
        target: String,
    },
    /// Make a kernel-provided subtree read-only when this kernel has it.
    ReadonlyIfPresent {
        target: String,
    },
    /// OverlayFS with `lowers` (host paths, topmost first) below and the sandbox's upper layer
    /// `layer` above; target "/" is the new root itself (read-only at the end unless an overlay
    /// was asked for, like any root).
    Overlay {
        lowers: Vec<String>,
        target: String,
        layer: String,
    },
}

impl MountOp {
    pub fn target(&self) -> &str {
        match self {
            MountOp::Tmpfs { target, .. }
            | MountOp::Bind { target, .. }
            | MountOp::HostFileIfRoom { target, .. }
            | MountOp::Symlink { target, .. }
            | MountOp::Proc { target }
            | MountOp::Devpts { target }
            | MountOp::Mask { target, .. }
            | MountOp::MaskIfPresent { target }
            | MountOp::ReadonlyIfPresent { target }
            | MountOp::Overlay { target, .. } => target,
        }
    }
}

/// /proc entries that leak the host or reach kernel helpers: covered (the OCI default list and more).
pub const PROC_MASKED: &[&str] = &[
    "/proc/kcore",
    "/proc/keys",
    "/proc/key-users",
    "/proc/kmsg",
    "/proc/kallsyms",
    "/proc/kpagecount",
    "/proc/kpageflags",
    "/proc/kpagecgroup",
    "/proc/timer_list",
    "/proc/sched_debug",
    "/proc/latency_stats",
    "/proc/sysrq-trigger",
    "/proc/config.gz",
    "/proc/acpi",
    "/proc/scsi",
    "/proc/asound",
    "/proc/firmware",
    "/proc/driver",
    // The host's kernel command line (a VM's init arguments, tokens some boot loaders pass).
    "/proc/cmdline",
];

/// /proc subtrees kept readable but never writable.
/// /proc/pressure: a write there makes a PSI trigger, a kernel object on the host-wide
/// group that no cgroup bounds (the sandbox reads its own through nothing else anyway).
pub const PROC_READONLY: &[&str] = &["/proc/sys", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/pressure"];

/// Device nodes bound from the host's /dev into the minimal /dev.
pub const DEV_NODES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// The whole new root, in the order it must be built: the system tree first, then what the
/// sandbox provides (/proc, /dev, /tmp), then the caller's mounts (which may land inside /tmp),
/// then the masks (which must cover whatever was bound before them).
pub fn plan_mounts(spec: &Spec, facts: &HostFacts) -> Vec<MountOp> {
    let mut ops = Vec::new();
    let source_root = match &spec.rootfs {
        Rootfs::Host | Rootfs::Layers { .. } => String::new(),
        Rootfs::Dir { path } => path.trim_end_matches('/').to_owned(),
    };
    // An image's layers are stacked as the overlay's lower layers: nothing is copied or merged.
    if let Rootfs::Layers { paths } = &spec.rootfs {
        let lowers = paths.iter().map(|p| p.trim_end_matches('/').to_owned()).collect();
        ops.push(MountOp::Overlay { lowers, target: "/".into(), layer: "root".into() });
    }
    // A directory rootfs under an overlay is one layer, the new root itself; the host's system
    // directories each get their own (the rest of the host's / must stay out), on a root layer
    // with nothing below it: the root's own new entries (a /work) are written to the same upper
    // area as the rest, within its one size bound, and are kept with the rest (overlay.upper).
    let whole_root_overlay = spec.overlay.is_some() && matches!(spec.rootfs, Rootfs::Dir { .. });
    if whole_root_overlay {
        ops.push(MountOp::Overlay { lowers: vec![source_root.clone()], target: "/".into(), layer: "root".into() });
    } else if spec.overlay.is_some() && matches!(spec.rootfs, Rootfs::Host) {
        ops.push(MountOp::Overlay { lowers: Vec::new(), target: "/".into(), layer: "root".into() });
    }
    for entry in &facts.root_entries {
        if whole_root_overlay || matches!(spec.rootfs, Rootfs::Layers { .. }) {
            break;
        }
        if (matches!(spec.rootfs, Rootfs::Dir { .. }) && PROVIDED.contains(&entry.name.as_str())) || SETUP_NAMES.contains(&entry.name.as_str()) {
            continue;
        }
        let target = format!("/{}", entry.name);
        let source = format!("{source_root}/{}", entry.name);
        match &entry.kind {
            EntryKind::Dir if spec.overlay.is_some() => ops.push(MountOp::Overlay { lowers: vec![source], target, layer: entry.name.clone() }),
            EntryKind::Dir => ops.push(MountOp::Bind { source, target, readonly: true, is_dir: true }),
            EntryKind::File => ops.push(MountOp::Bind { source, target, readonly: true, is_dir: false }),
            EntryKind::Symlink(to) => ops.push(MountOp::Symlink { target, points_to: to.clone() }),
            EntryKind::Other | EntryKind::Missing => {}
        }
    }

    ops.push(MountOp::Proc { target: "/proc".into() });
    for p in PROC_MASKED {
        ops.push(MountOp::MaskIfPresent { target: (*p).into() });
    }
    for p in PROC_READONLY {
        ops.push(MountOp::ReadonlyIfPresent { target: (*p).into() });
    }
    ops.push(MountOp::Tmpfs { target: "/dev".into(), mode: 0o755, size_bytes: Some(64 << 10), flags: MountFlags { nosuid: true, nodev: false, noexec: true } });
    for node in DEV_NODES {
        ops.push(MountOp::Bind { source: format!("/dev/{node}"), target: format!("/dev/{node}"), readonly: false, is_dir: false });
    }
    ops.push(MountOp::Devpts { target: "/dev/pts".into() });
    ops.push(MountOp::Symlink { target: "/dev/ptmx".into(), points_to: "pts/ptmx".into() });
    // A tmpfs the caller gives there (with its size) replaces it, made with the caller's mounts.
    if !spec.mounts.iter().any(|m| m.target().trim_end_matches('/') == DEV_SHM) {
        ops.push(MountOp::Tmpfs { target: DEV_SHM.into(), mode: 0o1777, size_bytes: None, flags: NOSUID_NODEV });
    }
    for (name, to) in [("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")] {
        ops.push(MountOp::Symlink { target: format!("/dev/{name}"), points_to: to.into() });
    }

    let caller_has_tmp = spec.mounts.iter().any(|m| m.target().trim_end_matches('/') == "/tmp");
    if !caller_has_tmp {
        ops.push(MountOp::Tmpfs { target: "/tmp".into(), mode: 0o1777, size_bytes: None, flags: NOSUID_NODEV });
    }

    // Before the caller's mounts, which may put a file of their own there (or an /etc).
    let caller_has_resolv_conf = spec.mounts.iter().any(|m| covers(m.target(), HOST_RESOLV_CONF));
    if lends_resolv_conf(spec) && facts.host_resolv_conf && !caller_has_resolv_conf {
        ops.push(MountOp::HostFileIfRoom { source: HOST_RESOLV_CONF.into(), target: HOST_RESOLV_CONF.into() });
    }

    for (i, m) in spec.mounts.iter().enumerate() {
        ops.push(caller_mount_op(i, m, facts));
    }

    if matches!(spec.rootfs, Rootfs::Host) {
        for s in &facts.secrets {
            // Under a mount of the caller's (a tmpfs or a directory of its own at /etc), the
            // host's file is not what is there: masked only where that mount has one. A mount at
            // the very path is what the caller put there.
            let at = |m: &Mount| m.target().trim_end_matches('/') == s.name;
            let covered = spec.mounts.iter().any(|m| covers(m.target(), &s.name));
            match s.kind {
                EntryKind::Symlink(_) | EntryKind::Missing => {}
                _ if spec.mounts.iter().any(at) => {}
                _ if covered => ops.push(MountOp::MaskIfPresent { target: s.name.clone() }),
                EntryKind::Dir => ops.push(MountOp::Mask { target: s.name.clone(), is_dir: true }),
                EntryKind::File | EntryKind::Other => ops.push(MountOp::Mask { target: s.name.clone(), is_dir: false }),
            }
        }
    }
    ops
}

/// The sandbox's shared-memory tmpfs, which a tmpfs in the caller's mounts may replace.
pub const DEV_SHM: &str = "/dev/shm";

/// Whether the sandbox gets the host's [`HOST_RESOLV_CONF`]: on the host's network, with a root
/// of its own (the host's root has the host's /etc already).
pub fn lends_resolv_conf(spec: &Spec) -> bool {
    spec.network == crate::spec::Network::Host && spec.rootfs != Rootfs::Host
}

/// Whether a mount at `target` holds `path` (or is it).
fn covers(target: &str, path: &str) -> bool {
    let t = target.trim_end_matches('/');
    t.is_empty() || path == t || path.strip_prefix(t).is_some_and(|rest| rest.starts_with('/'))
}

/// The step that makes the caller's `mounts[i]`.
fn caller_mount_op(i: usize, m: &Mount, facts: &HostFacts) -> MountOp {
    match m {
        Mount::Bind { source, target, readonly } => {
            let is_dir = !matches!(facts.bind_sources.get(i), Some(Some(EntryKind::File | EntryKind::Other)));
            MountOp::Bind { source: source.clone(), target: target.clone(), readonly: *readonly, is_dir }
        }
        Mount::Overlay { source, target } => MountOp::Overlay { lowers: vec![source.clone()], target: target.clone(), layer: format!("mount{i}") },
        Mount::Tmpfs { target, size_bytes, mode } => {
            // In place of the sandbox's own /tmp or /dev/shm: its mode too, where every uid may write.
            let own_mode = if ["/tmp", DEV_SHM].contains(&target.trim_end_matches('/')) { 0o1777 } else { 0o755 };
            MountOp::Tmpfs { target: target.clone(), mode: mode.unwrap_or(own_mode), size_bytes: *size_bytes, flags: NOSUID_NODEV }
        }
    }
}

/// Whether two paths are the same or one lies below the other (component by component).
fn overlaps(a: &str, b: &str) -> bool {
    let mut a = a.split('/').filter(|c| !c.is_empty());
    let mut b = b.split('/').filter(|c| !c.is_empty());
    loop {
        match (a.next(), b.next()) {
            (Some(x), Some(y)) if x == y => {}
            (Some(_), Some(_)) => return false,
            _ => return true,
        }
    }
}

/// Which of the caller's mounts an init whose root was built ahead makes at its release (one flag
/// per `mounts[i]`), so that sandboxes that each bind their own directory (a judge's, a runner's
/// work dir) still start from a root built ahead: binds (of a detached tree the helper opens on
/// the host) and tmpfs mounts. Not one at /tmp or /dev/shm (it replaces the sandbox's own), at /etc or below
/// it (the masks over the host's secrets there come after the caller's mounts), nor one that shares
/// a path with a later mount made with the root (that one would land in another order). Made
/// last, in their order, they give the root that making them in place gives.
pub fn made_at_release(spec: &Spec) -> Vec<bool> {
    let mut made = vec![false; spec.mounts.len()];
    let mut later_in_root: Vec<&str> = Vec::new();
    for (i, m) in spec.mounts.iter().enumerate().rev() {
        let t = m.target();
        let kind_ok = matches!(m, Mount::Bind { .. } | Mount::Tmpfs { .. });
        let replaces_own = ["/tmp", DEV_SHM].contains(&t.trim_end_matches('/'));
        made[i] = kind_ok && !overlaps(t, "/etc") && !replaces_own && !later_in_root.iter().any(|l| overlaps(t, l));
        if !made[i] {
            later_in_root.push(t);
        }
    }
    made
}

/// `spec` without the mounts made at the release (`made`, from [`made_at_release`]): what a root
/// built ahead is built from.
pub fn without_made_at_release(spec: &Spec, made: &[bool]) -> Spec {
    let mut base = spec.clone();
    let mut flags = made.iter();
    base.mounts.retain(|_| !flags.next().copied().unwrap_or(false));
    base
}

/// The steps that make the mounts made at the release, in their order (`facts` are `spec`'s).
pub fn plan_release_mounts(spec: &Spec, facts: &HostFacts, made: &[bool]) -> Vec<MountOp> {
    spec.mounts.iter().enumerate().filter(|(i, _)| made.get(*i).copied().unwrap_or(false)).map(|(i, m)| caller_mount_op(i, m, facts)).collect()
}

impl HostFacts {
    /// These facts (`spec`'s) as the facts of `spec` without the mounts made at the release.
    pub fn without_made_at_release(&self, made: &[bool]) -> HostFacts {
        let mut flags = made.iter();
        let mut base = self.clone();
        base.bind_sources.retain(|_| !flags.next().copied().unwrap_or(false));
        base
    }
}

/// The lines written to /proc/PID/{uid_map,gid_map} and whether setgroups must be denied first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdMaps {
    pub uid_map: String,
    pub gid_map: String,
    /// The kernel requires `deny` in /proc/PID/setgroups before an unprivileged gid_map write.
    pub deny_setgroups: bool,
}

/// How many ids a root caller's sandbox gets: enough for every system account and ordinary user
/// an image may hold (a tarball's files keep their owners, `su` and package managers work).
pub const ROOT_MAPPED_RANGE: u32 = 65536;

/// Who the sandbox's ids are on the host.
///
/// A root caller maps the sandbox's ids 0..65536 onto an unprivileged range starting at
/// `unprivileged` (never host root: a process that escapes its namespaces must land as nobody of
/// importance). Anyone else can only map its own ids, onto the sandbox's user, and must give up
/// setgroups to do so.
pub fn plan_id_maps(inside: Ids, caller: Ids, unprivileged: Ids) -> IdMaps {
    if caller.uid == 0 {
        return IdMaps {
            uid_map: format!("0 {} {ROOT_MAPPED_RANGE}\n", unprivileged.uid),
            gid_map: format!("0 {} {ROOT_MAPPED_RANGE}\n", unprivileged.gid),
            deny_setgroups: false,
        };
    }
    IdMaps { uid_map: format!("{} {} 1\n", inside.uid, caller.uid), gid_map: format!("{} {} 1\n", inside.gid, caller.gid), deny_setgroups: true }
}

/// The owner of a root caller's sandbox user namespace: one id of the owner block
/// ([`unprivileged_ids`]' `owners`) per helper (`key`: the helper's pid, which no other live
/// sandbox's helper of this pid namespace has). Only a process of the host's user namespace running as the owner holds
/// the namespace's capabilities; the block's ids are mapped into no sandbox, so no file a sandbox
/// makes belongs to one (a set-user-ID file it left would otherwise make whoever runs it that
/// owner). Per-user kernel counts are then charged to each sandbox apart, neither to host root nor
/// to the other sandboxes.
pub fn namespace_owner(owners: u32, key: u32) -> u32 {
    owners + key % OWNER_IDS
}

/// How many ids the owner block holds: one for every pid a kernel may hand out (PID_MAX_LIMIT on
/// 64-bit, the most `kernel.pid_max` may be; systemd sets it that high), so that no two helpers
/// alive at once share an owner, and with it their sandboxes' per-user counts.
pub const OWNER_IDS: u32 = 1 << 22;

/// The ids the sandbox's setup runs as once the maps exist: its root where root is mapped, else
/// the one mapped user. Either way the setup keeps every capability of its user namespace.
pub fn setup_ids(inside: Ids, caller: Ids) -> Ids {
    if caller.uid == 0 {
        Ids { uid: 0, gid: 0 }
    } else {
        inside
    }
}

/// Where a root caller's sandboxes go when root has no subordinate range of its own: above what
/// useradd hands out to users (SUB_UID_MIN 100000 to SUB_UID_MAX 600100000 by default: 100000 is
/// usually the first user's own range, whose owner can become those ids with newuidmap) and
/// systemd-nspawn's ranges (up to 0x6FFFFFFF), below systemd's transient and foreign ranges
/// (0x7FFE0000 up) and 2^31.
pub const FALLBACK_FIRST_ID: u32 = 0x7000_0000;
const FALLBACK_END: u32 = 0x7FFE_0000;

/// The host ids a root caller's sandboxes run as, and the first uid of the block whose ids own
/// their user namespaces ([`namespace_owner`]; None when no block is left for them: the namespaces
/// are then root's). The ids: root's first subordinate id from /etc/subuid and /etc/subgid when it
/// has a whole range there (those ranges are set aside for exactly this), else the first
/// [`ROOT_MAPPED_RANGE`] block from [`FALLBACK_FIRST_ID`] that no one's subordinate range and no
/// account of /etc/passwd (/etc/group) holds. The owners: the [`OWNER_IDS`] ids after those in
/// root's range where it holds them too, else the first such free block of that size. `read`
/// gives a file's text. None when every block is held: no id is then safe to hand out.
pub fn unprivileged_ids(read: impl Fn(&str) -> Option<String>) -> Option<HostIds> {
    let (subuid, passwd, subgid, group) = (read("/etc/subuid"), read("/etc/passwd"), read("/etc/subgid"), read("/etc/group"));
    let uids = IdSpace::of(subuid.as_deref(), passwd.as_deref());
    let gids = IdSpace::of(subgid.as_deref(), group.as_deref());
    let (ids, owner_ids) = (u64::from(ROOT_MAPPED_RANGE), u64::from(OWNER_IDS));
    let uid = uids.block(0, ids, None)?;
    let gid = gids.block(0, ids, None)?;
    let owners = uids.block(ids, owner_ids, Some((uid, ids)));
    // Both taken from root's own range (set aside for it) rather than found free in the files.
    let roots_own = uids.roots_range(ids + owner_ids).is_some() && gids.roots_range(ids).is_some();
    Some(HostIds { ids: Ids { uid, gid }, owners, roots_own })
}

/// Whether the `count` ids from `first` all exist in the user namespace whose `/proc/self/uid_map`
/// (or gid_map) reads `map`: one of its lines ("inside outside count") holds them all. A process
/// may only become an id its namespace maps.
pub fn ids_mapped(map: &str, first: u32, count: u32) -> bool {
    let (first, count) = (u64::from(first), u64::from(count));
    map.lines().any(|l| {
        let f: Vec<u64> = l.split_whitespace().filter_map(|x| x.parse().ok()).collect();
        f.len() == 3 && f[0] <= first && first + count <= f[0] + f[2]
    })
}

/// What [`unprivileged_ids`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostIds {
    /// The host ids of the sandbox's root (its ids 0..65536 are mapped from there).
    pub ids: Ids,
    /// The first uid of the block of namespace owners.
    pub owners: Option<u32>,
    /// Whether the ids and the owners all come from root's own subordinate ranges; otherwise some
    /// are blocks checked against /etc/passwd and the subordinate ranges only (an account of a
    /// directory, SSSD or LDAP, may hold them).
    pub roots_own: bool,
}

/// One kind of id (uids or gids) as the host hands them out: the subordinate ranges of its
/// subordinate-id file and the ids of its account file.
struct IdSpace<'a> {
    /// (owner, start, count) of every well-formed line.
    ranges: Vec<(&'a str, u64, u64)>,
    accounts: Vec<u64>,
}

impl<'a> IdSpace<'a> {
    /// The start of root's own range when it holds `ids` ids.
    fn roots_range(&self, ids: u64) -> Option<u64> {
        self.ranges.iter().find(|&&(who, start, count)| (who == "root" || who == "0") && start != 0 && count >= ids).map(|&(_, start, _)| start)
    }

    fn of(sub: Option<&'a str>, accounts: Option<&str>) -> IdSpace<'a> {
        let ranges = sub
            .unwrap_or("")
            .lines()
            .filter_map(|l| {
                let mut f = l.split(':');
                let who = f.next()?.trim();
                let start = f.next()?.trim().parse().ok()?;
                let count = f.next()?.trim().parse().ok()?;
                Some((who, start, count))
            })
            .collect();
        let accounts = accounts.unwrap_or("").lines().filter_map(|l| l.split(':').nth(2)?.trim().parse().ok()).collect();
        IdSpace { ranges, accounts }
    }

    /// The `size` ids from `offset` in root's own range when it holds them, else the first free
    /// fallback block of `size` ids (from a multiple of [`ROOT_MAPPED_RANGE`]) that overlaps no
    /// range, no account and not `besides` (first, count).
    fn block(&self, offset: u64, size: u64, besides: Option<(u32, u64)>) -> Option<u32> {
        let overlaps = |start: u64, count: u64, base: u64| start < base + size && base < start + count;
        let clear_of_besides = |base: u64| !besides.is_some_and(|(first, count)| overlaps(u64::from(first), count, base));
        if let Some(start) = self.roots_range(offset + size) {
            // Every id of it a u32 (the owners are added to), and not the other block (two lines
            // of root's may overlap).
            if u32::try_from(start + offset + size - 1).is_ok() && clear_of_besides(start + offset) {
                return u32::try_from(start + offset).ok();
            }
        }
        let mut base = u64::from(FALLBACK_FIRST_ID);
        while base + size <= u64::from(FALLBACK_END) {
            let taken = self.ranges.iter().any(|&(_, start, count)| overlaps(start, count, base))
                || self.accounts.iter().any(|id| (base..base + size).contains(id))
                || !clear_of_besides(base);
            if !taken {
                return u32::try_from(base).ok();
            }
            base += u64::from(ROOT_MAPPED_RANGE);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Spec;

    fn entry(name: &str, kind: EntryKind) -> RootEntry {
        RootEntry { name: name.into(), kind }
    }

    fn host_facts() -> HostFacts {
        HostFacts {
            root_entries: vec![
                entry("bin", EntryKind::Symlink("usr/bin".into())),
                entry("usr", EntryKind::Dir),
                entry("etc", EntryKind::Dir),
                entry("lib32", EntryKind::Missing),
            ],
            secrets: vec![entry("/etc/shadow", EntryKind::File), entry("/etc/ssh", EntryKind::Dir), entry("/etc/sudoers", EntryKind::Missing)],
            bind_sources: vec![],
            host_resolv_conf: true,
        }
    }

    #[test]
    fn a_namespace_owner_is_one_of_the_owner_block() {
        let owners = FALLBACK_FIRST_ID + ROOT_MAPPED_RANGE;
        for key in [0, 1, 65535, 65536, 4_194_303, 4_194_304, u32::MAX] {
            let owner = namespace_owner(owners, key);
            assert!((owners..owners + OWNER_IDS).contains(&owner), "{key} -> {owner}");
        }
        // Helpers alive at once have different pids, below PID_MAX_LIMIT: never the same owner,
        // also where pids run past 65536 (kernel.pid_max 4194304, as systemd sets it).
        assert_ne!(namespace_owner(owners, 4242), namespace_owner(owners, 4243));
        assert_ne!(namespace_owner(owners, 4242), namespace_owner(owners, 4242 + 65536));
        assert_ne!(namespace_owner(owners, 0), namespace_owner(owners, 4_194_303));
    }

    #[test]
    fn ids_mapped_reads_a_uid_map() {
        assert!(ids_mapped("         0          0 4294967295\n", FALLBACK_FIRST_ID, OWNER_IDS));
        // A container's namespace mapping 65536 ids: the fallback block is not there.
        assert!(!ids_mapped("0 100000 65536\n", FALLBACK_FIRST_ID, ROOT_MAPPED_RANGE));
        assert!(ids_mapped("0 100000 65536\n1000000 5000 131072\n", 1_065_536, ROOT_MAPPED_RANGE));
        assert!(!ids_mapped("0 100000 65536\n1000000 5000 131072\n", 1_065_537, ROOT_MAPPED_RANGE));
        assert!(!ids_mapped("", 0, 1));
    }

    #[test]
    fn the_owner_block_is_mapped_into_no_sandbox() {
        let first = FALLBACK_FIRST_ID;
        let (block, owner_ids) = (u64::from(ROOT_MAPPED_RANGE), u64::from(OWNER_IDS));
        // Nothing in /etc: the first fallback block, and the owners right after it.
        assert_eq!(unprivileged_ids(files(&[])).map(|h| h.owners), Some(Some(first + ROOT_MAPPED_RANGE)));
        // Root's range holds the ids and the owners: the owners are the rest of it.
        let whole = format!("root:200000:{}\n", block + owner_ids);
        let h = unprivileged_ids(files(&[("/etc/subuid", &whole), ("/etc/subgid", &whole)])).unwrap();
        assert_eq!((h.ids.uid, h.owners, h.roots_own), (200000, Some(200000 + ROOT_MAPPED_RANGE), true));
        // Two lines of root's that overlap: the owners never among the sandbox ids.
        let overlapping = format!("root:165536:{block}\nroot:100000:{}\n", block + owner_ids);
        let h = unprivileged_ids(files(&[("/etc/subuid", &overlapping), ("/etc/subgid", &overlapping)])).unwrap();
        assert_eq!(h.ids.uid, 165536);
        let owners = u64::from(h.owners.unwrap());
        assert!(owners >= 165536 + block || owners + owner_ids <= 165536, "{owners}");
        // A range whose owners would run past the last uid: not used for them.
        let high = format!("root:{}:{}\n", u64::from(u32::MAX) - block - owner_ids + 2, block + owner_ids);
        let h = unprivileged_ids(files(&[("/etc/subuid", &high), ("/etc/subgid", &high)])).unwrap();
        assert_eq!(h.owners, Some(first));
        // Root's range holds two blocks of 65536 (too few owners for every pid): the owners are the
        // first free fallback block.
        let two = format!("root:200000:{}\n", 2 * block);
        let h = unprivileged_ids(files(&[("/etc/subuid", &two), ("/etc/subgid", &two)])).unwrap();
        assert_eq!((h.ids.uid, h.owners, h.roots_own), (200000, Some(first), false));
        // No root range, someone's range within what would be the owners: the first block after it.
        let busy = format!("bob:{}:10\n", first + ROOT_MAPPED_RANGE + 1);
        let h = unprivileged_ids(files(&[("/etc/subuid", &busy)])).unwrap();
        assert_eq!((h.ids.uid, h.owners, h.roots_own), (first, Some(first + 2 * ROOT_MAPPED_RANGE), false));
        // An account inside them does as much.
        let passwd = format!("svc:x:{}:0::/:/bin/false\n", first + 3 * ROOT_MAPPED_RANGE);
        let h = unprivileged_ids(files(&[("/etc/passwd", &passwd)])).unwrap();
        assert_eq!((h.ids.uid, h.owners), (first, Some(first + 4 * ROOT_MAPPED_RANGE)));
        // Room for the ids but not for a whole owner block: no owners (the namespaces stay root's).
        let most = format!("carol:{FALLBACK_FIRST_ID}:{}\n", u64::from(FALLBACK_END - FALLBACK_FIRST_ID) - owner_ids);
        let h = unprivileged_ids(files(&[("/etc/subuid", &most)])).unwrap();
        assert_eq!((h.ids.uid, h.owners), (FALLBACK_END - OWNER_IDS, None));
    }

    #[test]
    fn host_root_binds_system_dirs_read_only_and_keeps_symlinks() {
        let ops = plan_mounts(&Spec::new("/bin/true", vec![]), &host_facts());
        assert_eq!(ops[0], MountOp::Symlink { target: "/bin".into(), points_to: "usr/bin".into() });
        assert_eq!(ops[1], MountOp::Bind { source: "/usr".into(), target: "/usr".into(), readonly: true, is_dir: true });
        assert_eq!(ops[2], MountOp::Bind { source: "/etc".into(), target: "/etc".into(), readonly: true, is_dir: true });
        assert!(!ops.iter().any(|o| o.target() == "/lib32"));
        assert!(!ops.iter().any(|o| ["/root", "/home"].contains(&o.target())));
    }

    #[test]
    fn provided_mounts_come_in_order_and_secrets_are_masked_last() {
        let ops = plan_mounts(&Spec::new("/bin/true", vec![]), &host_facts());
        let targets: Vec<&str> = ops.iter().map(|o| o.target()).collect();
        let pos = |t: &str| targets.iter().position(|x| *x == t).unwrap_or_else(|| panic!("{t} missing from {targets:?}"));
        assert!(pos("/etc") < pos("/proc"));
        assert!(pos("/dev") < pos("/dev/null") && pos("/dev/null") < pos("/dev/pts"));
        assert!(pos("/proc") < pos("/tmp"));
        assert!(pos("/proc") < pos("/proc/kcore") && pos("/proc") < pos("/proc/sys"));
        assert_eq!(ops[pos("/proc/sysrq-trigger")], MountOp::MaskIfPresent { target: "/proc/sysrq-trigger".into() });
        assert_eq!(ops[pos("/proc/sys")], MountOp::ReadonlyIfPresent { target: "/proc/sys".into() });
        assert_eq!(ops[pos("/etc/shadow")], MountOp::Mask { target: "/etc/shadow".into(), is_dir: false });
        assert_eq!(ops[pos("/etc/ssh")], MountOp::Mask { target: "/etc/ssh".into(), is_dir: true });
        assert_eq!(pos("/etc/ssh"), targets.len() - 1);
        assert!(!targets.contains(&"/etc/sudoers"));
        for n in DEV_NODES {
            assert!(targets.contains(&format!("/dev/{n}").as_str()));
        }
    }

    #[test]
    fn secrets_under_a_callers_mount_are_masked_where_that_mount_has_them() {
        let mut spec = Spec::new("/bin/true", vec![]);
        spec.mounts = vec![Mount::Tmpfs { target: "/etc/ssh".into(), size_bytes: None, mode: None }];
        let ops = plan_mounts(&spec, &host_facts());
        assert!(!ops.iter().any(|o| o.target() == "/etc/ssh" && !matches!(o, MountOp::Tmpfs { .. })), "a mount at the secret itself is the caller's own");
        assert!(ops.contains(&MountOp::Mask { target: "/etc/shadow".into(), is_dir: false }), "not under it");
        spec.mounts = vec![Mount::Tmpfs { target: "/etc/".into(), size_bytes: None, mode: None }];
        let ops = plan_mounts(&spec, &host_facts());
        assert!(ops.contains(&MountOp::MaskIfPresent { target: "/etc/shadow".into() }));
        assert!(!ops.iter().any(|o| matches!(o, MountOp::Mask { .. })));
        spec.mounts = vec![Mount::Tmpfs { target: "/etcetera".into(), size_bytes: None, mode: None }];
        assert!(
            plan_mounts(&spec, &host_facts()).contains(&MountOp::Mask { target: "/etc/shadow".into(), is_dir: false }),
            "a prefix of the name is not a parent"
        );
    }

    #[test]
    fn caller_mounts_follow_the_provided_ones_and_replace_tmp() {
        let mut spec = Spec::new("/bin/true", vec![]);
        spec.mounts = vec![
            Mount::Tmpfs { target: "/tmp".into(), size_bytes: Some(1 << 20), mode: None },
            Mount::Bind { source: "/srv/data.txt".into(), target: "/tmp/data.txt".into(), readonly: false },
        ];
        let mut facts = host_facts();
        facts.bind_sources = vec![None, Some(EntryKind::File)];
        let ops = plan_mounts(&spec, &facts);
        let tmps: Vec<_> = ops.iter().filter(|o| o.target() == "/tmp").collect();
        assert_eq!(tmps.len(), 1);
        assert_eq!(tmps[0], &MountOp::Tmpfs { target: "/tmp".into(), mode: 0o1777, size_bytes: Some(1 << 20), flags: NOSUID_NODEV });
        assert!(ops.contains(&MountOp::Bind { source: "/srv/data.txt".into(), target: "/tmp/data.txt".into(), readonly: false, is_dir: false }));
    }

    #[test]
    fn directory_rootfs_binds_its_entries_but_not_the_provided_ones() {
        let mut spec = Spec::new("/bin/sh", vec![]);
        spec.rootfs = Rootfs::Dir { path: "/srv/alpine/".into() };
        let facts = HostFacts {
            root_entries: vec![
                entry("bin", EntryKind::Dir),
                entry("proc", EntryKind::Dir),
                entry("tmp", EntryKind::Dir),
                entry("lib", EntryKind::Symlink("usr/lib".into())),
            ],
            secrets: vec![entry("/etc/shadow", EntryKind::File)],
            bind_sources: vec![],
            host_resolv_conf: true,
        };
        let ops = plan_mounts(&spec, &facts);
        assert_eq!(ops[0], MountOp::Bind { source: "/srv/alpine/bin".into(), target: "/bin".into(), readonly: true, is_dir: true });
        assert_eq!(ops[1], MountOp::Symlink { target: "/lib".into(), points_to: "usr/lib".into() });
        assert_eq!(ops.iter().filter(|o| o.target() == "/proc").count(), 1);
        assert!(matches!(ops.iter().find(|o| o.target() == "/proc"), Some(MountOp::Proc { .. })));
        assert!(!ops.iter().any(|o| matches!(o, MountOp::Mask { .. })), "masks are for the host's /etc only");
    }

    #[test]
    fn a_root_entry_named_as_the_setups_own_scratch_is_left_out() {
        for rootfs in [Rootfs::Host, Rootfs::Dir { path: "/srv/tree".into() }] {
            let mut spec = Spec::new("/bin/sh", vec![]);
            spec.rootfs = rootfs;
            let mut root_entries = vec![entry("usr", EntryKind::Dir)];
            for (i, name) in SETUP_NAMES.iter().enumerate() {
                root_entries.push(entry(name, [EntryKind::File, EntryKind::Dir, EntryKind::Symlink("/etc".into())][i % 3].clone()));
            }
            let facts = HostFacts { root_entries, secrets: vec![], bind_sources: vec![], host_resolv_conf: false };
            let ops = plan_mounts(&spec, &facts);
            assert!(ops.iter().any(|o| o.target() == "/usr"));
            for name in SETUP_NAMES {
                assert!(!ops.iter().any(|o| o.target() == format!("/{name}")), "{name} in {:?}", spec.rootfs);
            }
        }
    }

    #[test]
    fn the_hosts_name_servers_go_to_a_root_of_its_own_on_the_hosts_network_unless_the_caller_mounts_there() {
        let lent = |spec: &Spec, facts: &HostFacts| plan_mounts(spec, facts).iter().position(|o| matches!(o, MountOp::HostFileIfRoom { .. }));
        let facts = HostFacts { root_entries: vec![entry("etc", EntryKind::Dir)], host_resolv_conf: true, ..HostFacts::default() };
        let mut spec = Spec::new("/bin/sh", vec![]);
        spec.rootfs = Rootfs::Dir { path: "/srv/alpine".into() };
        assert_eq!(lent(&spec, &facts), None, "a network of its own: the root's own file");
        spec.network = crate::spec::Network::Host;
        let ops = plan_mounts(&spec, &facts);
        let at = lent(&spec, &facts).expect("lent");
        assert_eq!(ops[at], MountOp::HostFileIfRoom { source: "/etc/resolv.conf".into(), target: "/etc/resolv.conf".into() });
        assert!(at > ops.iter().position(|o| o.target() == "/tmp").unwrap(), "after the root is whole");
        assert_eq!(lent(&spec, &HostFacts { host_resolv_conf: false, ..facts.clone() }), None, "the host has none");
        spec.mounts.push(Mount::Tmpfs { target: "/tmp/x".into(), size_bytes: None, mode: None });
        assert_eq!(lent(&spec, &facts), Some(at), "before the caller's mounts");
        for target in ["/etc", "/etc/resolv.conf", "/"] {
            spec.mounts = vec![Mount::Tmpfs { target: target.into(), size_bytes: None, mode: None }];
            assert_eq!(lent(&spec, &facts), None, "the caller's mount at {target} decides");
        }
        spec.mounts.clear();
        spec.rootfs = Rootfs::Layers { paths: vec!["/srv/image/0".into()] };
        assert!(lent(&spec, &facts).is_some(), "an image's root");
        spec.rootfs = Rootfs::Host;
        assert_eq!(lent(&spec, &facts), None, "the host's root has the host's /etc");
    }

    #[test]
    fn overlay_plans_one_layer_per_system_dir_or_the_whole_directory_root() {
        let mut spec = Spec::new("/bin/true", vec![]);
        spec.overlay = Some(crate::spec::Overlay::default());
        let ops = plan_mounts(&spec, &host_facts());
        assert_eq!(ops[0], MountOp::Overlay { lowers: Vec::new(), target: "/".into(), layer: "root".into() }, "a root layer of its own, nothing below it");
        assert_eq!(ops[2], MountOp::Overlay { lowers: vec!["/usr".into()], target: "/usr".into(), layer: "usr".into() });
        assert!(matches!(ops[1], MountOp::Symlink { .. }), "symlinks stay symlinks");
        assert!(!ops.iter().any(|o| matches!(o, MountOp::Bind { target, .. } if target == "/usr")));
        spec.rootfs = Rootfs::Dir { path: "/srv/alpine".into() };
        let facts = HostFacts { root_entries: vec![entry("bin", EntryKind::Dir), entry("etc", EntryKind::Dir)], ..HostFacts::default() };
        let ops = plan_mounts(&spec, &facts);
        assert_eq!(ops[0], MountOp::Overlay { lowers: vec!["/srv/alpine".into()], target: "/".into(), layer: "root".into() });
        assert!(!ops.iter().any(|o| o.target() == "/bin" || o.target() == "/etc"), "the entries come with the layer");
        assert!(ops.iter().any(|o| matches!(o, MountOp::Proc { .. })));
    }

    #[test]
    fn image_layers_stack_as_the_lowers_of_one_root_overlay() {
        let mut spec = Spec::new("/bin/sh", vec![]);
        spec.rootfs = Rootfs::Layers { paths: vec!["/img/layers/1".into(), "/img/layers/0/".into()] };
        let ops = plan_mounts(&spec, &HostFacts::default());
        assert_eq!(ops[0], MountOp::Overlay { lowers: vec!["/img/layers/1".into(), "/img/layers/0".into()], target: "/".into(), layer: "root".into() });
        assert!(!ops.iter().any(|o| matches!(o, MountOp::Mask { .. })));
        spec.overlay = Some(crate::spec::Overlay::default());
    }

    #[test]
    fn binds_and_tmpfs_mounts_are_made_at_the_release_unless_the_root_depends_on_them() {
        let bind = |t: &str| Mount::Bind { source: "/srv/job".into(), target: t.into(), readonly: true };
        let tmpfs = |t: &str| Mount::Tmpfs { target: t.into(), size_bytes: None, mode: None };
        let mut spec = Spec::new("/bin/true", vec![]);
        spec.mounts = vec![
            bind("/work"),
            tmpfs("/scratch"),
            bind("/tmp"),
            bind("/etc/app"),
            Mount::Overlay { source: "/srv/src".into(), target: "/src".into() },
            bind("/data"),
            tmpfs("/data/cache"),
            bind("/data2/"),
            bind("/data2/sub"),
        ];
        // /data: a later tmpfs lands inside it, and that one is made at the release too; /data2
        // comes before its own sub-mount, which is also made at the release: both keep their order.
        assert_eq!(made_at_release(&spec), vec![true, true, false, false, false, true, true, true, true]);
        spec.mounts.push(Mount::Overlay { source: "/srv/x".into(), target: "/work/x".into() });
        assert!(!made_at_release(&spec)[0], "an overlay made with the root lands inside /work: /work is made with the root");
        assert!(made_at_release(&spec)[1]);
        assert!(overlaps("/a/b", "/a") && overlaps("/a", "/a/") && !overlaps("/ab", "/a") && !overlaps("/a/b", "/a/c"));
    }

    #[test]
    fn a_tmpfs_at_tmp_or_dev_shm_replaces_the_sandboxs_own_with_its_mode_and_is_made_with_the_root() {
        let mut spec = Spec::new("/bin/true", vec![]);
        let own = |ops: &[MountOp], at: &str| ops.iter().filter(|op| matches!(op, MountOp::Tmpfs { target, .. } if target == at)).cloned().collect::<Vec<_>>();
        let plain = plan_mounts(&spec, &host_facts());
        assert_eq!(own(&plain, "/dev/shm"), [MountOp::Tmpfs { target: "/dev/shm".into(), mode: 0o1777, size_bytes: None, flags: NOSUID_NODEV }]);
        spec.mounts = vec![
            Mount::Tmpfs { target: "/dev/shm/".into(), size_bytes: Some(8 << 20), mode: None },
            Mount::Tmpfs { target: "/tmp".into(), size_bytes: Some(1 << 20), mode: None },
        ];
        let ops = plan_mounts(&spec, &host_facts());
        assert_eq!(own(&ops, "/dev/shm/"), [MountOp::Tmpfs { target: "/dev/shm/".into(), mode: 0o1777, size_bytes: Some(8 << 20), flags: NOSUID_NODEV }]);
        assert!(own(&ops, "/dev/shm").is_empty(), "one tmpfs there, the caller's");
        assert_eq!(own(&ops, "/tmp"), [MountOp::Tmpfs { target: "/tmp".into(), mode: 0o1777, size_bytes: Some(1 << 20), flags: NOSUID_NODEV }]);
        assert_eq!(made_at_release(&spec), vec![false, false]);
        spec.mounts[1] = Mount::Tmpfs { target: "/tmp".into(), size_bytes: None, mode: Some(0o700) };
        assert!(own(&plan_mounts(&spec, &host_facts()), "/tmp").iter().all(|op| matches!(op, MountOp::Tmpfs { mode: 0o700, .. })));
    }

    #[test]
    fn the_root_with_the_mounts_made_at_the_release_added_last_is_the_root_made_in_one_go() {
        let mut spec = Spec::new("/bin/true", vec![]);
        spec.mounts = vec![
            Mount::Bind { source: "/srv/job/in.txt".into(), target: "/in.txt".into(), readonly: true },
            Mount::Tmpfs { target: "/tmp".into(), size_bytes: None, mode: None },
            Mount::Bind { source: "/srv/job".into(), target: "/tmp/work".into(), readonly: false },
        ];
        let mut facts = host_facts();
        facts.bind_sources = vec![Some(EntryKind::File), None, Some(EntryKind::Dir)];
        let made = made_at_release(&spec);
        assert_eq!(made, vec![true, false, true]);
        let base = without_made_at_release(&spec, &made);
        assert_eq!(base.mounts, vec![spec.mounts[1].clone()]);
        let base_facts = facts.without_made_at_release(&made);
        assert_eq!(base_facts.bind_sources, vec![None]);
        let mut in_two = plan_mounts(&base, &base_facts);
        let release = plan_release_mounts(&spec, &facts, &made);
        assert_eq!(release[0], MountOp::Bind { source: "/srv/job/in.txt".into(), target: "/in.txt".into(), readonly: true, is_dir: false });
        in_two.extend(release);
        let in_one = plan_mounts(&spec, &facts);
        // The same steps; each made at the release shares no path with any that came after it.
        let sorted = |v: &[MountOp]| {
            let mut v: Vec<String> = v.iter().map(|o| format!("{o:?}")).collect();
            v.sort();
            v
        };
        assert_eq!(sorted(&in_two), sorted(&in_one));
        let pos = |ops: &[MountOp], t: &str| ops.iter().position(|o| o.target() == t).unwrap();
        for t in ["/in.txt", "/tmp/work"] {
            for later in &in_one[pos(&in_one, t) + 1..] {
                if !in_two[pos(&in_two, t) + 1..].contains(later) {
                    assert!(!overlaps(t, later.target()), "{t} moved after {later:?}");
                }
            }
        }
    }

    #[test]
    fn root_caller_maps_onto_an_unprivileged_id() {
        let m = plan_id_maps(Ids { uid: 1000, gid: 1000 }, Ids { uid: 0, gid: 0 }, Ids { uid: 100000, gid: 100001 });
        assert_eq!(m.uid_map, "0 100000 65536\n");
        assert_eq!(m.gid_map, "0 100001 65536\n");
        assert!(!m.deny_setgroups);
        assert_eq!(setup_ids(Ids { uid: 1000, gid: 1000 }, Ids { uid: 0, gid: 0 }), Ids { uid: 0, gid: 0 });
    }

    #[test]
    fn rootless_caller_maps_its_own_ids_and_denies_setgroups() {
        let m = plan_id_maps(Ids { uid: 1000, gid: 1000 }, Ids { uid: 1234, gid: 99 }, Ids { uid: 100000, gid: 100000 });
        assert_eq!(m.uid_map, "1000 1234 1\n");
        assert_eq!(m.gid_map, "1000 99 1\n");
        assert!(m.deny_setgroups);
        assert_eq!(setup_ids(Ids { uid: 1000, gid: 1000 }, Ids { uid: 1234, gid: 99 }), Ids { uid: 1000, gid: 1000 });
    }

    fn files<'a>(list: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |path| list.iter().find(|(p, _)| *p == path).map(|(_, text)| (*text).to_owned())
    }

    #[test]
    fn unprivileged_ids_come_from_roots_subordinate_range() {
        let ids = unprivileged_ids(files(&[("/etc/subuid", "alice:100000:65536\nroot:231072:65536\n"), ("/etc/subgid", "root:300000:65536\n")]));
        assert_eq!(ids.map(|h| h.ids), Some(Ids { uid: 231072, gid: 300000 }));
    }

    #[test]
    fn without_a_whole_range_of_roots_the_ids_are_nobodys() {
        let first = FALLBACK_FIRST_ID;
        assert_eq!(unprivileged_ids(files(&[("/etc/subgid", "garbage")])).map(|h| h.ids), Some(Ids { uid: first, gid: first }));
        // The first user's range (useradd's default) is never taken: its owner can become those ids.
        let ids = unprivileged_ids(files(&[("/etc/subuid", "alice:100000:65536\n"), ("/etc/subgid", "alice:100000:65536\n")])).unwrap().ids;
        assert!(ids.uid >= first && ids.gid >= first);
        // Root's range too small for the sandbox's 65536 ids: not used (the rest would be someone else's).
        let small = unprivileged_ids(files(&[("/etc/subuid", "root:300000:10\n")])).unwrap().ids;
        assert_eq!(small.uid, first);
        // A range or an account inside the first block moves the ids on, past both.
        let busy = format!("bob:{}:100\n", first + 5);
        let passwd = format!("svc:x:{}:{}::/:/bin/false\n", first + 65536 + 7, first);
        let group = format!("svc:x:{}:\n", first + 3);
        let ids = unprivileged_ids(files(&[("/etc/subuid", &busy), ("/etc/passwd", &passwd), ("/etc/group", &group)]));
        assert_eq!(ids.map(|h| h.ids), Some(Ids { uid: first + 2 * 65536, gid: first + 65536 }));
    }

    #[test]
    fn with_every_block_held_there_are_no_ids() {
        // One range over the whole fallback space: no id is handed out rather than someone's.
        let all = format!("carol:{FALLBACK_FIRST_ID}:{}\n", FALLBACK_END - FALLBACK_FIRST_ID);
        assert_eq!(unprivileged_ids(files(&[("/etc/subuid", &all)])), None);
        assert_eq!(unprivileged_ids(files(&[("/etc/subgid", &all)])), None);
        // Everything but the last block: that one.
        let most = format!("carol:{FALLBACK_FIRST_ID}:{}\n", FALLBACK_END - FALLBACK_FIRST_ID - 65536);
        assert_eq!(unprivileged_ids(files(&[("/etc/subuid", &most)])).map(|i| i.ids.uid), Some(FALLBACK_END - 65536));
    }
}
