//! Where an image's files come from: a directory (an OCI image layout), or a tar archive of one
//! (`docker save`, `skopeo copy oci-archive:`), indexed once so that each blob is read in place
//! as a byte range of the archive.

use crate::compress::{self, Format};
use crate::error::{self, Result, SetupError, Step};
use crate::names;
use crate::sys;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

pub enum Source {
    Dir { root: OwnedFd, path: String },
    Tar { file: File, path: String, members: HashMap<String, Member> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub offset: u64,
    pub size: u64,
}

/// Files read into memory (index.json, manifests, configs) are bounded.
pub const SMALL_LIMIT: u64 = 16 << 20;

impl Source {
    /// Open `path` for [`Source::from_fd`] (before any confinement is applied).
    pub fn open_path(path: &Path) -> Result<OwnedFd> {
        let shown = path.display().to_string();
        let cpath = sys::cstring(path.as_os_str().as_encoded_bytes());
        sys::open(&cpath, libc::O_RDONLY).map_err(|e| error::sys(Step::OpenArchive, e, &shown, "open the image"))
    }

    /// A directory (an OCI image layout) or an archive. A compressed archive is first
    /// decompressed into an unnamed temporary file (O_TMPFILE) in `scratch`; `tick(read, total)`
    /// reports that.
    /// `cap`: the most a compressed archive's decompressed copy may hold ([`crate::Bounds::copy_cap`]).
    pub fn from_fd(fd: OwnedFd, shown: String, scratch: BorrowedFd<'_>, cap: Option<u64>, tick: &mut dyn FnMut(u64, u64)) -> Result<Source> {
        let st = sys::fstat(fd.as_fd()).map_err(|e| error::sys(Step::OpenArchive, e, &shown, "fstat"))?;
        if sys::is_dir(&st) {
            return Ok(Source::Dir { root: fd, path: shown });
        }
        let mut file = File::from(fd);
        let mut head = [0u8; 8];
        let n = read_up_to(&mut file, &mut head).map_err(|e| error::io(Step::OpenArchive, &e, &shown, "read the image"))?;
        file.seek(SeekFrom::Start(0)).map_err(|e| error::io(Step::OpenArchive, &e, &shown, "seek"))?;
        let format = compress::sniff(&head[..n]).map_err(|u| {
            SetupError::new(
                Step::OpenArchive,
                format!(
                    "{shown} is a {} archive; an image must be a directory (OCI image layout) or a tar archive, optionally gzip/xz/zstd-compressed",
                    u.name()
                ),
            )
            .with_path(&shown)
        })?;
        if format != Format::Tar {
            file = decompress_to_tmpfile(file, format, scratch, &shown, st.st_size as u64, cap, tick)?;
        }
        let members = index(&file, &shown)?;
        Ok(Source::Tar { file, path: shown, members })
    }

    pub fn path(&self) -> &str {
        match self {
            Source::Dir { path, .. } | Source::Tar { path, .. } => path,
        }
    }

    /// An fd for Landlock to allow reading beneath (None for an archive: its fd is already open).
    pub fn dir_fd(&self) -> Option<BorrowedFd<'_>> {
        match self {
            Source::Dir { root, .. } => Some(root.as_fd()),
            Source::Tar { .. } => None,
        }
    }

    pub fn exists(&self, name: &str) -> bool {
        match self {
            Source::Dir { .. } => self.open_member(name).is_ok(),
            Source::Tar { members, .. } => members.contains_key(name),
        }
    }

    /// A reader of the file `name` (a relative path inside the image) and its size.
    pub fn open_member(&self, name: &str) -> Result<(Box<dyn Read + '_>, u64)> {
        let missing = |e: nix::errno::Errno| error::sys(Step::ReadImage, e, name, &format!("{} has no readable {name}", self.path())).with_path(name);
        match self {
            Source::Dir { root, .. } => {
                let c = sys::cstring(name.as_bytes());
                // Inside the image directory, whatever its symlinks say.
                let fd = match sys::openat2(root.as_fd(), &c, libc::O_RDONLY | libc::O_NONBLOCK, libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS) {
                    Err(nix::errno::Errno::ENOSYS | nix::errno::Errno::EPERM) => sys::openat(root.as_fd(), &c, libc::O_RDONLY | libc::O_NONBLOCK, 0),
                    r => r,
                }
                .map_err(missing)?;
                let st = sys::fstat(fd.as_fd()).map_err(missing)?;
                if st.st_mode & libc::S_IFMT != libc::S_IFREG {
                    return Err(missing(nix::errno::Errno::EINVAL));
                }
                Ok((Box::new(BufReader::with_capacity(256 << 10, File::from(fd))), st.st_size as u64))
            }
            Source::Tar { file, members, .. } => {
                let m = members.get(name).ok_or_else(|| missing(nix::errno::Errno::ENOENT))?;
                let mut f = file.try_clone().map_err(|e| error::io(Step::ReadImage, &e, name, "dup"))?;
                f.seek(SeekFrom::Start(m.offset)).map_err(|e| error::io(Step::ReadImage, &e, name, "seek"))?;
                Ok((Box::new(BufReader::with_capacity(256 << 10, f.take(m.size))), m.size))
            }
        }
    }

    /// A small file read whole (bounded by [`SMALL_LIMIT`]).
    pub fn read_small(&self, name: &str) -> Result<Vec<u8>> {
        let (r, size) = self.open_member(name)?;
        if size > SMALL_LIMIT {
            return Err(
                SetupError::new(Step::ReadImage, format!("{name} is {size} bytes; more than the {SMALL_LIMIT} a manifest or config may have")).with_path(name)
            );
        }
        let mut out = Vec::with_capacity(size as usize);
        r.take(SMALL_LIMIT + 1).read_to_end(&mut out).map_err(|e| error::io(Step::ReadImage, &e, name, "read"))?;
        Ok(out)
    }
}

fn read_up_to(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn decompress_to_tmpfile(
    file: File,
    format: Format,
    scratch: BorrowedFd<'_>,
    shown: &str,
    total: u64,
    cap: Option<u64>,
    tick: &mut dyn FnMut(u64, u64),
) -> Result<File> {
    let tmp = sys::openat(scratch, c".", libc::O_TMPFILE | libc::O_RDWR, 0o600).map_err(|e| {
        error::sys(Step::OpenArchive, e, shown, "create a temporary file to decompress the image into")
            .with_hint("the target directory's filesystem must support O_TMPFILE, or decompress the image first")
    })?;
    let mut tmp = File::from(tmp);
    let count = std::rc::Rc::new(std::cell::Cell::new(0u64));
    let counted = crate::digest::Counting::new(file, count.clone());
    let mut r = compress::decoder(format, BufReader::with_capacity(256 << 10, counted)).map_err(|e| error::io(Step::ReadArchive, &e, shown, "decompress"))?;
    let mut buf = vec![0u8; 256 << 10];
    let mut since = 0u64;
    // Runs of zeros are left as holes, as an unpack leaves them: a small archive of zeros (a
    // bomb) would fill the disk before anything of it is read as an image.
    let (mut pos, mut skipped) = (0u64, false);
    loop {
        crate::digest::check_abort().map_err(|e| error::io(Step::ReadArchive, &e, shown, "decompress the image"))?;
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(error::io(Step::ReadArchive, &e, shown, "decompress the image")),
        };
        pos += n as u64;
        if let Some(most) = cap.filter(|most| pos > *most) {
            return Err(SetupError {
                message: format!(
                    "{shown} decompresses to more than {most} bytes, more than an image within maxBytes (isolate rootfs --max-size) could take: twice its file content, 2 KiB per entry and 64 MiB"
                ),
                ..SetupError::sys(Step::ReadArchive, libc::EFBIG, Some(shown))
            }
            .with_hint("the image holds more than the bound allows: raise maxBytes (and maxEntries) if it is one you expect to be this large"));
        }
        skipped = buf[..n].iter().all(|b| *b == 0);
        if skipped {
            tmp.seek(SeekFrom::Start(pos)).map_err(|e| error::io(Step::WriteEntry, &e, shown, "seek"))?;
        } else {
            std::io::Write::write_all(&mut tmp, &buf[..n]).map_err(|e| error::io(Step::WriteEntry, &e, shown, "write the decompressed image"))?;
        }
        since += n as u64;
        if since >= 1 << 20 {
            since = 0;
            tick(count.get(), total);
        }
    }
    if skipped {
        tmp.set_len(pos).map_err(|e| error::io(Step::WriteEntry, &e, shown, "set the size of the decompressed image"))?;
    }
    tick(count.get(), total);
    tmp.seek(SeekFrom::Start(0)).map_err(|e| error::io(Step::OpenArchive, &e, shown, "seek"))?;
    Ok(tmp)
}

/// Every regular file of the archive by canonical name; symlinks and hard links (docker save
/// links a layer used twice) resolve to the member they name.
fn index(file: &File, shown: &str) -> Result<HashMap<String, Member>> {
    let mut members = HashMap::new();
    let mut links: Vec<(String, String, bool)> = Vec::new();
    let mut archive = tar::Archive::new(file);
    let mut read_one = false;
    let unreadable = |e: std::io::Error, read_one: bool| error::tar_header(Step::ReadImage, &e, shown, read_one.then_some("not a readable tar archive"));
    for entry in archive.entries_with_seek().map_err(|e| unreadable(e, false))? {
        let entry = entry.map_err(|e| unreadable(e, read_one))?;
        read_one = true;
        let raw = entry.path_bytes().into_owned();
        let Ok(comps) = names::components(&raw) else { continue };
        let Ok(name) = String::from_utf8(names::join(&comps)) else { continue };
        let kind = entry.header().entry_type();
        if kind.is_file() || kind == tar::EntryType::Continuous {
            members.insert(name, Member { offset: entry.raw_file_position(), size: entry.size() });
        } else if kind.is_symlink() || kind.is_hard_link() {
            if let Some(t) = entry.link_name_bytes().and_then(|t| String::from_utf8(t.into_owned()).ok()) {
                links.push((name, t, kind.is_symlink()));
            }
        }
    }
    for (name, target, relative) in links {
        if let Some(m) = resolve_link(&members, &name, &target, relative) {
            members.insert(name, m);
        }
    }
    Ok(members)
}

/// A symlink's target relative to its directory (hard links name archive paths), lexically,
/// never above the archive's root.
fn resolve_link(members: &HashMap<String, Member>, name: &str, target: &str, relative: bool) -> Option<Member> {
    let mut parts: Vec<&str> = if relative && !target.starts_with('/') { name.split('/').collect() } else { Vec::new() };
    if relative && !target.starts_with('/') {
        parts.pop();
    }
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    members.get(&parts.join("/")).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decompressed_image_keeps_its_runs_of_zeros_as_holes() {
        use std::io::Write;
        let dir = std::env::temp_dir().join(format!("isolate-source-holes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..256 {
            gz.write_all(&zeros).unwrap();
        }
        gz.write_all(b"data at the end").unwrap();
        let archive = dir.join("zeros.gz");
        std::fs::write(&archive, gz.finish().unwrap()).unwrap();
        let scratch = sys::open(&sys::cstring(dir.as_os_str().as_encoded_bytes()), libc::O_PATH | libc::O_DIRECTORY).unwrap();
        let out = decompress_to_tmpfile(File::open(&archive).unwrap(), Format::Gzip, scratch.as_fd(), "zeros.gz", 0, None, &mut |_, _| {}).unwrap();
        let st = sys::fstat(out.as_fd()).unwrap();
        assert_eq!(st.st_size as u64, (256 << 20) + 15);
        assert!((st.st_blocks as u64) * 512 < 4 << 20, "{} bytes on disk for 256 MiB of zeros", st.st_blocks * 512);
        // Zeros count at their size against a cap too: they take the decompressor's time.
        let e = decompress_to_tmpfile(File::open(&archive).unwrap(), Format::Gzip, scratch.as_fd(), "zeros.gz", 0, Some(64 << 20), &mut |_, _| {}).unwrap_err();
        assert_eq!((e.step, e.errno.as_deref()), (Step::ReadArchive, Some("EFBIG")));
        assert!(e.message.contains("more than 67108864 bytes"), "{}", e.message);
        assert!(
            decompress_to_tmpfile(File::open(&archive).unwrap(), Format::Gzip, scratch.as_fd(), "zeros.gz", 0, Some((256 << 20) + 15), &mut |_, _| {}).is_ok()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn links_resolve_inside_the_archive() {
        let mut m = HashMap::new();
        m.insert("abc/layer.tar".to_string(), Member { offset: 512, size: 10 });
        assert_eq!(resolve_link(&m, "def/layer.tar", "../abc/layer.tar", true), m.get("abc/layer.tar").copied());
        assert_eq!(resolve_link(&m, "def/layer.tar", "abc/layer.tar", false), m.get("abc/layer.tar").copied());
        assert_eq!(resolve_link(&m, "x", "../../abc/layer.tar", true), None);
    }
}
