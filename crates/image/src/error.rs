//! A failure as data: the step, the entry or file it concerns, the errno and a hint travel as JSON
//! from the unpacker process to become an `IsolateError` in JavaScript. It is the sandbox's own
//! [`SetupError`] (the image steps are among its [`Step`]s), so one reporter prints both.

pub use isolate_core::error::{SetupError, Step};

pub type Result<T> = std::result::Result<T, SetupError>;

/// A syscall's failure on `path` while doing `what` (the message says both).
pub fn sys(step: Step, errno: nix::errno::Errno, path: &str, what: &str) -> SetupError {
    doing(SetupError::sys(step, errno as i32, Some(path)), what)
}

/// An I/O error from a reader (the decompressors and the tar parser report through io::Error)
/// on `path` while doing `what`.
pub fn io(step: Step, e: &std::io::Error, path: &str, what: &str) -> SetupError {
    let err = doing(SetupError::io(step, e, Some(path)), what);
    match (step, e.kind(), e.raw_os_error()) {
        // A decoder's limit (crate::compress): the archive is sound, its compression too greedy.
        (_, std::io::ErrorKind::OutOfMemory, _) => err.with_hint(
            "the unpacker bounds its decoders' memory, so that a small archive cannot take the host's: compress it again with ordinary settings (xz -9 or less, zstd without --long above 27)",
        ),
        // The format's own errors (the system's carry an errno, and their hints by it).
        (Step::ReadArchive, _, None) => err.with_hint(
            "the archive is damaged or incomplete (a download cut short?), or not a tar archive at all: `tar -tvf` on it shows where it breaks; fetch or make it again",
        ),
        _ => err,
    }
}

/// The tar reader failed at a header, after `after` (what was read before: None for the first
/// header). Its message may quote that header's bytes: bounded, and never the first header's,
/// which for a file that is no archive at all (a password file named by mistake) are whatever it
/// holds.
pub fn tar_header(step: Step, e: &std::io::Error, path: &str, after: Option<&str>) -> SetupError {
    let mut err = io(step, e, path, "not a readable tar archive");
    err.message = match after {
        // A decoder's limit (the xz dictionary, the zstd window) is the reason, not the tar format.
        None if e.kind() == std::io::ErrorKind::OutOfMemory => crate::names::printable(&e.to_string(), 400),
        // The parser's reason only, before any of the header's own bytes that it quotes after a colon.
        None => format!(
            "not a readable tar archive: its first header does not parse as a tar header ({})",
            crate::names::printable(reason_only(&e.to_string()), 200)
        ),
        Some(before) => format!("{before}: {}", crate::names::printable(&e.to_string(), 200)),
    };
    err
}

/// A parser's message up to what it quotes of the input (`numeric field did not have utf-8 text:
/// <bytes> when getting cksum for <header>`).
fn reason_only(message: &str) -> &str {
    message.split_once(": ").map_or(message, |(reason, _)| reason)
}

fn doing(mut e: SetupError, what: &str) -> SetupError {
    e.message = format!("{what}: {}", e.message);
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_first_header_that_does_not_parse_says_why() {
        let limit = std::io::Error::new(std::io::ErrorKind::OutOfMemory, "the xz stream needs more than the 256 MiB");
        let e = tar_header(Step::ReadArchive, &limit, "a.tar.xz", None);
        assert_eq!(e.message, "the xz stream needs more than the 256 MiB", "the decoder's limit, not the format");
        assert!(e.hint.is_some_and(|h| h.contains("compress it again")), "a hint of its own, not a damaged archive's");
        let quoted = std::io::Error::other("numeric field did not have utf-8 text: \u{fffd}\u{1}x when getting cksum for \u{fffd}\u{fffd}");
        assert_eq!(
            tar_header(Step::ReadArchive, &quoted, "a.tar", None).message,
            "not a readable tar archive: its first header does not parse as a tar header (numeric field did not have utf-8 text)",
            "none of the file's own bytes"
        );
        let bad = std::io::Error::other("failed to read entire block");
        let e = tar_header(Step::ReadArchive, &bad, "a.tar", None);
        assert_eq!(e.message, "not a readable tar archive: its first header does not parse as a tar header (failed to read entire block)");
        assert!(e.hint.is_some_and(|h| h.contains("damaged or incomplete")));
    }

    #[test]
    fn serializes_like_a_setup_error() {
        let e = sys(Step::WriteEntry, nix::errno::Errno::EACCES, "etc/x", "open");
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["step"], "write_entry");
        assert_eq!(json["errno"], "EACCES");
        assert_eq!(json["path"], "etc/x");
        assert_eq!(json["message"], "open: Permission denied");
        assert!(json.get("hint").is_none());
    }

    #[test]
    fn io_errors_name_what_failed() {
        let e = io(Step::ReadArchive, &std::io::Error::from_raw_os_error(libc::EIO), "a.tar", "read");
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["step"], "read_archive");
        assert_eq!(json["errno"], "EIO");
        assert_eq!(json["path"], "a.tar");
        assert_eq!(json["message"], format!("read: {}", std::io::Error::from_raw_os_error(libc::EIO)));
    }
}
