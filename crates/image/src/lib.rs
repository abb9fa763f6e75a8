//! Root filesystems from tarballs and OCI/Docker images.
//!
//! [`unpack_rootfs`] applies one tar stream (plain, gzip, xz or zstd, told apart by magic bytes)
//! to a directory; [`import_image`] applies an image's layers, in order, with their whiteouts,
//! either merged into one tree (`Layout::Flat`) or one directory per layer for overlayfs
//! (`Layout::Layers`, with `layers.json` naming the lower directories).
//!
//! Nothing is ever written outside the target directory: every write is relative to its fd and
//! never follows a symlink (see [`tree`]); entries that try (`../`, absolute paths, writing
//! through a symlink, hard links out, device nodes) are refused with an error naming the entry.
//!
//! These functions run in the `isolate-image` process ([`tool`]), which the Node addon starts
//! with posix_spawn; Node never runs the decompressors itself.

pub mod budget;
pub mod compress;
pub mod confine;
pub mod digest;
pub mod error;
pub mod names;
pub mod oci;
pub mod source;
mod sys;
pub mod tool;
pub mod tree;
pub mod unpack;

pub use error::{Result, SetupError, Step};

use compress::Format;
use digest::{Counting, Hashing};
use oci::{ImageFormat, LayerPlan, Platform, RuntimeConfig};
use serde::Serialize;
use source::Source;
use std::cell::Cell;
use std::fs::File;
use std::io::{BufReader, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::rc::Rc;
use tree::{Attrs, Tree};
pub use unpack::Bounds;
use unpack::{Ownership, Policy, Specials, Stats, Whiteouts};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// A compressed image archive being decompressed to a temporary file.
    Decompress,
    /// Layer digests being checked, before anything is written.
    Verify,
    Unpack,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    pub phase: Phase,
    /// Bytes of the archive (compressed, as stored) consumed so far in this phase.
    pub bytes: u64,
    /// The phase's total, 0 when unknown (a pipe).
    pub total_bytes: u64,
    pub entries: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layers: Option<usize>,
}

const BUF: usize = 256 << 10;

fn finish_tree(tree: &mut Tree) -> Result<()> {
    tree.finish().map_err(|e| unpack::tree_error(e, "."))
}

fn unsupported(u: compress::Unsupported, name: &str) -> SetupError {
    SetupError::new(Step::OpenArchive, format!("{name} is {} compressed; supported are tar, and tar compressed with gzip, xz or zstd", u.name()))
        .with_path(name)
        .with_hint("recompress it, e.g. bzip2 -dc X | zstd > X.tar.zst")
}

/// The default ownership for the calling process: the archive's ids as root, the caller's otherwise.
pub fn default_ownership() -> Ownership {
    if sys::geteuid() == 0 {
        Ownership::Archive
    } else {
        Ownership::Caller
    }
}

#[derive(Debug, Clone, Copy)]
pub struct UnpackOptions {
    pub ownership: Ownership,
    pub specials: Specials,
    pub bounds: Bounds,
    /// The target was there before (the caller's): the archive's `./` does not change its owner,
    /// mode or times. A target made for the unpack takes them, as tar gives them.
    pub existing_target: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UnpackReport {
    pub format: Format,
    pub ownership: Ownership,
    #[serde(flatten)]
    pub stats: Stats,
}

/// Unpack the tarball `archive` into the directory `dir` (an fd; any open mode).
pub fn unpack_rootfs(archive: File, name: &str, dir: OwnedFd, opts: &UnpackOptions, progress: &mut dyn FnMut(&Progress)) -> Result<UnpackReport> {
    let total = archive.metadata().map(|m| if m.is_file() { m.len() } else { 0 }).unwrap_or(0);
    let count = Rc::new(Cell::new(0u64));
    let mut r = BufReader::with_capacity(BUF, Counting::new(archive, count.clone()));
    let format = compress::sniff_reader(&mut r).map_err(|e| error::io(Step::ReadArchive, &e, name, "read"))?.map_err(|u| unsupported(u, name))?;
    let mut dec = compress::decoder(format, r).map_err(|e| error::io(Step::ReadArchive, &e, name, "decompress"))?;
    let mut tree = if opts.existing_target { Tree::new(dir).keep_root_attrs() } else { Tree::new(dir) };
    let policy = Policy { ownership: opts.ownership, specials: opts.specials, whiteouts: Whiteouts::Keep, bounds: opts.bounds };
    let mut stats = Stats::default();
    let at = |s: &Stats, bytes: u64| Progress { phase: Phase::Unpack, bytes, total_bytes: total, entries: s.entries, layer: None, layers: None };
    unpack::unpack(&mut dec, &mut tree, &policy, &mut stats, &mut |s| progress(&at(s, count.get())))?;
    // The tar reader takes a stream that ends before any header (an empty file, /dev/null, a
    // file of zeros) for an archive with no entries: no rootfs, so no success either.
    if stats.entries == 0 {
        return Err(SetupError::new(Step::ReadArchive, format!("{name} holds no archive entries (an empty file, or zeros where a tar header belongs)"))
            .with_path(name)
            .with_hint("name a tar archive of a root filesystem (plain, or gzip/xz/zstd-compressed)"));
    }
    add_resolv_conf(&mut tree)?;
    finish_tree(&mut tree)?;
    progress(&at(&stats, total.max(count.get())));
    Ok(UnpackReport { format, ownership: opts.ownership, stats })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// All layers merged into the target directory: a plain rootfs.
    Flat,
    /// `layers/<n>/` per layer (0 = bottom) in overlayfs form, and `layers.json`.
    Layers,
}

#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub platform: Option<Platform>,
    pub reference: Option<String>,
    pub layout: Layout,
    pub ownership: Ownership,
    pub specials: Specials,
    pub bounds: Bounds,
    /// As [`UnpackOptions::existing_target`]: a layer's `./` leaves a target that was there alone.
    pub existing_target: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerReport {
    pub index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub size: u64,
    pub compression: Format,
    pub entries: u64,
    /// In layout `layers`: its directory, relative to the target directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportReport {
    pub format: ImageFormat,
    pub layout: Layout,
    pub platform: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest_digest: Option<String>,
    pub layers: Vec<LayerReport>,
    pub config: RuntimeConfig,
    /// Layout `layers`: the layer directories in overlayfs `lowerdir=` order (topmost first),
    /// relative to the target directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lower_dirs: Option<Vec<String>>,
    pub ownership: Ownership,
    #[serde(flatten)]
    pub stats: Stats,
}

/// What `layers.json` holds (layout `layers`), for the overlay mount to consume.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LayersFile<'a> {
    version: u32,
    /// Topmost first, relative to the directory holding layers.json: `lowerdir=` order.
    lower_dirs: &'a [String],
    /// `.wh.NAME` entries became character devices 0/0 (overlayfs's native whiteout).
    whiteouts: &'static str,
    /// Set to "y" on opaque directories. `user.overlay.opaque` is read by overlayfs mounted with
    /// `userxattr` (required inside a user namespace, accepted outside); `trusted.overlay.opaque`
    /// (root only) by a mount without it.
    opaque_xattrs: Vec<&'static str>,
    /// Mount options the lower directories are made for.
    mount_options: &'static [&'static str],
    format: ImageFormat,
    platform: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    manifest_digest: Option<&'a str>,
    ownership: Ownership,
    layers: &'a [LayerReport],
    config: &'a RuntimeConfig,
}

/// Read `layer` through, checking its stored digest (and, with `diff_too`, the digest of its
/// uncompressed content) before anything is written.
fn verify_layer(src: &Source, layer: &LayerPlan, diff_too: bool, tick: &mut dyn FnMut(u64)) -> Result<()> {
    let (r, _) = src.open_member(&layer.member)?;
    let count = Rc::new(Cell::new(0u64));
    let mut raw = Hashing::new(Counting::new(r, count.clone()));
    let want_diff = layer.diff_id.as_deref().filter(|_| diff_too);
    if let Some(want) = want_diff {
        let mut br = BufReader::with_capacity(BUF, &mut raw);
        let format =
            compress::sniff_reader(&mut br).map_err(|e| error::io(Step::ReadImage, &e, &layer.member, "read"))?.map_err(|u| unsupported(u, &layer.member))?;
        let mut dec = Hashing::new(compress::decoder(format, br).map_err(|e| error::io(Step::ReadImage, &e, &layer.member, "decompress"))?);
        drain(&mut dec, &layer.member, &mut |_| tick(count.get()))?;
        let got = dec.finish();
        if got != want {
            return Err(oci::digest_mismatch(&format!("{} (uncompressed)", layer.member), want, &got).with_path(&layer.member));
        }
    }
    drain(&mut raw, &layer.member, &mut |_| tick(count.get()))?;
    let read = count.get();
    if let Some(want) = &layer.digest {
        let got = raw.finish();
        if got != *want {
            return Err(oci::digest_mismatch(&layer.member, want, &got));
        }
        if read != layer.size {
            return Err(
                SetupError::new(Step::VerifyDigest, format!("{} is {read} bytes; its descriptor says {}", layer.member, layer.size)).with_path(&layer.member)
            );
        }
    }
    Ok(())
}

/// Read `r` to its end (tick every MiB).
fn drain(r: &mut dyn Read, name: &str, tick: &mut dyn FnMut(u64)) -> Result<()> {
    let mut buf = vec![0u8; BUF];
    let mut since = 0u64;
    loop {
        crate::digest::check_abort().map_err(|e| error::io(Step::ReadImage, &e, name, "read"))?;
        match r.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                since += n as u64;
                if since >= 1 << 20 {
                    since = 0;
                    tick(n as u64);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(error::io(Step::ReadImage, &e, name, "read")),
        }
    }
}

/// How layers are applied, the same for each.
struct Applier<'a> {
    src: &'a Source,
    policy: Policy,
    /// Each layer's uncompressed digest was checked against its diff_id before anything was
    /// written (else only its stored digest was, and the diff_id is checked while unpacking).
    diff_verified: bool,
    stats: Stats,
}

/// What is left of a target after a failed layer, said in a hint.
const PARTIAL_TREE: &str = "what was unpacked is removed if this call made the target directory; else remove it";

/// Apply one layer to `tree`. The stored bytes are hashed again as they are unpacked, so what
/// was verified is what is written even if the image changed since (another writer; a file
/// system that serves other bytes on a second read).
fn apply_layer(a: &mut Applier<'_>, layer: &LayerPlan, index: usize, tree: &mut Tree, tick: &mut dyn FnMut(&Stats, u64)) -> Result<LayerReport> {
    let (src, policy, stats) = (a.src, &a.policy, &mut a.stats);
    let (r, _) = src.open_member(&layer.member)?;
    let count = Rc::new(Cell::new(0u64));
    let mut raw = Hashing::new(Counting::new(r, count.clone()));
    let before = stats.entries;
    let (compression, diff) = {
        let mut br = BufReader::with_capacity(BUF, &mut raw);
        let compression =
            compress::sniff_reader(&mut br).map_err(|e| error::io(Step::ReadArchive, &e, &layer.member, "read"))?.map_err(|u| unsupported(u, &layer.member))?;
        let mut dec = Hashing::new(compress::decoder(compression, br).map_err(|e| error::io(Step::ReadArchive, &e, &layer.member, "decompress"))?);
        unpack::unpack(&mut dec, tree, policy, stats, &mut |s| tick(s, count.get())).map_err(|mut e| {
            e.message = format!("layer {index}: {}", e.message);
            e
        })?;
        // The tar end marker may be followed by padding; the digest covers all of it.
        drain(&mut dec, &layer.member, &mut |_| {})?;
        (compression, dec.finish())
    };
    // And what may follow the compressed stream.
    drain(&mut raw, &layer.member, &mut |_| {})?;
    let changed = |what: &str| {
        SetupError::new(Step::VerifyDigest, format!("{} changed after it was verified: {what}", layer.member))
            .with_path(&layer.member)
            .with_hint(format!("something wrote to the image while it was imported, or its file system served other bytes on a second read; import it from a copy nothing writes ({PARTIAL_TREE})"))
    };
    if let Some(want) = &layer.digest {
        let (got, read) = (raw.finish(), count.get());
        if got != *want || read != layer.size {
            return Err(changed(&format!("{read} bytes of digest {got}, where {} of {want} were verified", layer.size)));
        }
    }
    if let Some(want) = &layer.diff_id {
        if diff != *want {
            return Err(if a.diff_verified {
                changed(&format!("its uncompressed digest is {diff}, where {want} was verified"))
            } else {
                oci::digest_mismatch(&format!("{} (uncompressed)", layer.member), want, &diff)
                    .with_path(&layer.member)
                    .with_hint(format!("the image's config and this layer disagree ({PARTIAL_TREE})"))
            });
        }
    }
    Ok(LayerReport {
        index,
        digest: layer.digest.clone(),
        diff_id: layer.diff_id.clone(),
        media_type: layer.media_type.clone(),
        size: layer.size,
        compression,
        entries: stats.entries - before,
        dir: None,
    })
}

/// Import the image `src` into the directory `dir` (which should be empty).
pub fn import_image(src: &Source, dir: OwnedFd, opts: &ImportOptions, progress: &mut dyn FnMut(&Progress)) -> Result<ImportReport> {
    let plan = oci::plan(src, opts.platform.as_ref(), opts.reference.as_deref())?;
    let n = plan.layers.len();
    let total: u64 = plan.layers.iter().map(|l| l.size).sum();

    let mut done = 0u64;
    for (i, layer) in plan.layers.iter().enumerate() {
        let mut tick =
            |bytes: u64| progress(&Progress { phase: Phase::Verify, bytes: done + bytes, total_bytes: total, entries: 0, layer: Some(i), layers: Some(n) });
        tick(0);
        verify_layer(src, layer, plan.verify_diff_ids_first, &mut tick)?;
        done += layer.size;
    }

    let trusted = sys::geteuid() == 0;
    let whiteouts = match opts.layout {
        Layout::Flat => Whiteouts::Apply,
        Layout::Layers => Whiteouts::Overlay { trusted },
    };
    let policy = Policy { ownership: opts.ownership, specials: opts.specials, whiteouts, bounds: opts.bounds };
    let mut applier = Applier { src, policy, diff_verified: plan.verify_diff_ids_first, stats: Stats::default() };
    let mut root = if opts.existing_target { Tree::new(dir).keep_root_attrs() } else { Tree::new(dir) };
    let mut reports = Vec::with_capacity(n);
    let mut done = 0u64;
    for (i, layer) in plan.layers.iter().enumerate() {
        let mut tick = |s: &Stats, bytes: u64| {
            progress(&Progress { phase: Phase::Unpack, bytes: done + bytes, total_bytes: total, entries: s.entries, layer: Some(i), layers: Some(n) })
        };
        let report = match opts.layout {
            Layout::Flat => apply_layer(&mut applier, layer, i, &mut root, &mut tick)?,
            Layout::Layers => {
                let name = i.to_string();
                let comps: [&[u8]; 2] = [b"layers", name.as_bytes()];
                let dir_attrs = Attrs { mode: 0o755, owner: None, mtime: None };
                root.make_dir(&comps[..1], dir_attrs).map_err(|e| unpack::tree_error(e, "layers"))?;
                root.make_dir(&comps, dir_attrs).map_err(|e| unpack::tree_error(e, "layers"))?;
                // The importer's own directory takes an inode as an entry's does.
                applier.stats.implied_dirs += 1;
                opts.bounds.check_entries(applier.stats.entries + applier.stats.implied_dirs, &format!("layers/{i}"))?;
                let fd = root.dir(&comps, false).map_err(|e| unpack::tree_error(e, "layers"))?;
                let fd = fd.try_clone().map_err(|e| error::io(Step::WriteEntry, &e, "layers", "dup"))?;
                let mut layer_tree = Tree::new(fd);
                let mut r = apply_layer(&mut applier, layer, i, &mut layer_tree, &mut tick)?;
                finish_tree(&mut layer_tree)?;
                r.dir = Some(format!("layers/{i}"));
                r
            }
        };
        done += layer.size;
        reports.push(report);
    }
    let stats = applier.stats;
    progress(&Progress { phase: Phase::Unpack, bytes: total, total_bytes: total, entries: stats.entries, layer: n.checked_sub(1), layers: Some(n) });

    let lower_dirs = match opts.layout {
        Layout::Flat => {
            add_resolv_conf(&mut root)?;
            None
        }
        Layout::Layers => {
            let lower: Vec<String> = (0..n).rev().map(|i| format!("layers/{i}")).collect();
            let mut opaque = vec!["user.overlay.opaque"];
            if trusted {
                opaque.push("trusted.overlay.opaque");
            }
            let file = LayersFile {
                version: 1,
                lower_dirs: &lower,
                whiteouts: "chardev",
                opaque_xattrs: opaque,
                mount_options: &["userxattr"],
                format: plan.format,
                platform: &plan.platform,
                manifest_digest: plan.manifest_digest.as_deref(),
                ownership: opts.ownership,
                layers: &reports,
                config: &plan.config,
            };
            let mut json = serde_json::to_vec_pretty(&file).expect("plain data serializes");
            json.push(b'\n');
            opts.bounds.check_bytes(stats.bytes, json.len() as u64, "layers.json")?;
            write_small(&mut root, b"layers.json", &json)?;
            Some(lower)
        }
    };
    finish_tree(&mut root)?;
    Ok(ImportReport {
        format: plan.format,
        layout: opts.layout,
        platform: plan.platform,
        manifest_digest: plan.manifest_digest,
        layers: reports,
        config: plan.config,
        lower_dirs,
        ownership: opts.ownership,
        stats,
    })
}

/// An empty `etc/resolv.conf` where the tree has an `etc` directory without one, as a container
/// engine's init layer has: a sandbox on the host's network binds the host's file there, which
/// a read-only root could not take without a file to mount on (images most often ship none).
fn add_resolv_conf(tree: &mut Tree) -> Result<()> {
    let Ok(etc) = tree.dir(&[b"etc"], false) else { return Ok(()) };
    let name = c"resolv.conf";
    match sys::lstatat(etc.as_fd(), name) {
        Err(nix::errno::Errno::ENOENT) => {}
        _ => return Ok(()),
    }
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
    let fd = sys::openat(etc.as_fd(), name, flags, 0o644).map_err(|e| error::sys(Step::WriteEntry, e, "etc/resolv.conf", "openat"))?;
    // etc's owner and time: the same archive unpacks to the same tree every time.
    let etc_attrs = tree.dir_attrs(&[b"etc"]);
    let attrs = Attrs { mode: 0o644, owner: etc_attrs.and_then(|a| a.owner), mtime: etc_attrs.and_then(|a| a.mtime) };
    tree.finish_file(fd.as_fd(), &attrs).map_err(|e| unpack::tree_error(e, "etc/resolv.conf"))
}

fn write_small(tree: &mut Tree, name: &[u8], bytes: &[u8]) -> Result<()> {
    let shown = names::lossy(name);
    let fd = tree.create_file(&[name]).map_err(|e| unpack::tree_error(e, &shown))?;
    let mut f = File::from(fd);
    std::io::Write::write_all(&mut f, bytes).map_err(|e| error::io(Step::WriteEntry, &e, &shown, "write"))?;
    tree.finish_file(f.as_fd(), &Attrs { mode: 0o644, owner: None, mtime: None }).map_err(|e| unpack::tree_error(e, &shown))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::sha256_of;

    /// An uncompressed layer holding `motd`.
    fn layer(motd: &[u8]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(motd.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, "motd", motd).unwrap();
        b.into_inner().unwrap()
    }

    fn write_blob(dir: &std::path::Path, bytes: &[u8]) -> String {
        let digest = sha256_of(bytes);
        std::fs::write(dir.join("blobs/sha256").join(&digest["sha256:".len()..]), bytes).unwrap();
        digest
    }

    #[test]
    fn a_layer_that_changes_between_its_check_and_its_unpacking_is_refused() {
        let base = std::env::temp_dir().join(format!("isolate-image-changed-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let (image, target) = (base.join("image"), base.join("target"));
        std::fs::create_dir_all(image.join("blobs/sha256")).unwrap();
        std::fs::create_dir_all(&target).unwrap();
        // No diff_ids (an image may have none): only the stored digests say what the layers are.
        let (first, second) = (layer(b"good"), layer(b"more"));
        let arch = if cfg!(target_arch = "x86_64") { "amd64" } else { "arm64" };
        let config = write_blob(&image, format!(r#"{{"architecture":"{arch}","os":"linux"}}"#).as_bytes());
        let desc = |kind: &str, digest: &str, size: usize| format!(r#"{{"mediaType":"{kind}","digest":"{digest}","size":{size}}}"#);
        let tar_kind = "application/vnd.oci.image.layer.v1.tar";
        let manifest = format!(
            r#"{{"schemaVersion":2,"config":{},"layers":[{},{}]}}"#,
            desc("application/vnd.oci.image.config.v1+json", &config, format!(r#"{{"architecture":"{arch}","os":"linux"}}"#).len()),
            desc(tar_kind, &write_blob(&image, &first), first.len()),
            desc(tar_kind, &write_blob(&image, &second), second.len()),
        );
        let manifest_digest = write_blob(&image, manifest.as_bytes());
        let index = format!(r#"{{"schemaVersion":2,"manifests":[{}]}}"#, desc("application/vnd.oci.image.manifest.v1+json", &manifest_digest, manifest.len()));
        std::fs::write(image.join("index.json"), index).unwrap();
        std::fs::write(image.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();

        let dir = Source::open_path(&image).unwrap();
        let scratch = dir.try_clone().unwrap();
        let src = Source::from_fd(dir, image.display().to_string(), scratch.as_fd(), None, &mut |_, _| {}).unwrap();
        let out = sys::open(&sys::cstring(target.as_os_str().as_encoded_bytes()), libc::O_PATH | libc::O_DIRECTORY).unwrap();
        let opts = ImportOptions {
            platform: None,
            reference: None,
            layout: Layout::Flat,
            ownership: Ownership::Caller,
            specials: Specials::Refuse,
            bounds: Bounds::default(),
            existing_target: true,
        };
        // Once the first layer was verified (as the second is), its file is written over.
        let first_blob = image.join("blobs/sha256").join(&sha256_of(&first)["sha256:".len()..]);
        let mut progress = |p: &Progress| {
            if matches!(p.phase, Phase::Verify) && p.layer == Some(1) {
                std::fs::write(&first_blob, layer(b"evil")).unwrap();
            }
        };
        let e = import_image(&src, out, &opts, &mut progress).unwrap_err();
        assert!(e.message.contains("changed after it was verified"), "{}", e.message);
        assert_eq!(e.step, Step::VerifyDigest);
        std::fs::remove_dir_all(&base).unwrap();
    }
}
