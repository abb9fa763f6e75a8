//! Content digests (`sha256:<64 hex>`), and readers that hash or count what passes through them.

use sha2::{Digest as _, Sha256};
use std::cell::Cell;
use std::io::Read;
use std::rc::Rc;

/// The hex part of a `sha256:` digest, checked (lowercase, 64 hex digits: also what makes it safe
/// to use as a file name under blobs/sha256/).
pub fn sha256_hex(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))).then_some(hex)
}

pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

pub fn sha256_of(bytes: &[u8]) -> String {
    format!("sha256:{}", to_hex(&Sha256::digest(bytes)))
}

/// Hashes everything read through it.
pub struct Hashing<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Hashing<R> {
    pub fn new(inner: R) -> Self {
        Hashing { inner, hasher: Sha256::new() }
    }

    /// `sha256:<hex>` of what was read.
    pub fn finish(self) -> String {
        format!("sha256:{}", to_hex(&self.hasher.finalize()))
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Counts the bytes read through it into a shared cell (progress reads it from elsewhere).
pub struct Counting<R> {
    inner: R,
    count: Rc<Cell<u64>>,
}

impl<R: Read> Counting<R> {
    pub fn new(inner: R, count: Rc<Cell<u64>>) -> Self {
        Counting { inner, count }
    }
}

/// Set by the tool's SIGTERM handler: every read of the input fails from then on.
pub static ABORT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The abort as a read of the input reports it, for loops that make output without reading it:
/// a sparse entry's holes, a decompressor's long runs from a few bytes (a bomb of zeros).
pub fn check_abort() -> std::io::Result<()> {
    if ABORT.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(std::io::Error::other("aborted"));
    }
    Ok(())
}

/// Counting wraps every stream of the input (an archive, a layer, an image to decompress): the
/// one place an abort is seen by whatever reads it.
impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        check_abort()?;
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests() {
        assert_eq!(sha256_of(b""), "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert!(sha256_hex("sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855").is_some());
        assert!(sha256_hex("sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855").is_none());
        assert!(sha256_hex("sha256:../../etc/passwd").is_none());
        assert!(sha256_hex("sha512:00").is_none());
        let mut h = Hashing::new(&b"abc"[..]);
        std::io::copy(&mut h, &mut std::io::sink()).unwrap();
        assert_eq!(h.finish(), sha256_of(b"abc"));
    }
}
