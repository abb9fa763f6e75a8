//! A failure as data: the step, the entry or file it concerns, the errno and a hint travel as JSON
//! from the unpacker process to become an `IsolateError` in JavaScript (the same shape as the
//! sandbox's setup errors, so one reporter prints both).

use serde::Serialize;

/// What the unpacker was doing. The names are part of the public contract: they are what
/// `IsolateError.step` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Opening the archive or image, or the target directory.
    Open,
    /// Decompressing or parsing the tar stream.
    ReadArchive,
    /// An entry refused for what it is (a path escaping DIR, a device node...).
    CheckEntry,
    /// A syscall creating an entry failed.
    WriteEntry,
    /// Reading the image's index, manifests and config.
    ReadImage,
    /// A blob whose sha256 is not the one its descriptor names.
    VerifyDigest,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Open => "open_archive",
            Step::ReadArchive => "read_archive",
            Step::CheckEntry => "check_entry",
            Step::WriteEntry => "write_entry",
            Step::ReadImage => "read_image",
            Step::VerifyDigest => "verify_digest",
        }
    }
}

impl Serialize for Step {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageError {
    pub step: Step,
    /// The archive entry's name as written in the archive, or the file concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// errno as its symbolic name ("ENOENT"), when a syscall failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errno: Option<String>,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

pub type Result<T> = std::result::Result<T, ImageError>;

impl ImageError {
    pub fn new(step: Step, message: impl Into<String>) -> Self {
        ImageError { step, path: None, errno: None, message: message.into(), hint: None }
    }

    /// A syscall's failure on `path`.
    pub fn sys(step: Step, errno: nix::errno::Errno, path: impl Into<String>, what: &str) -> Self {
        ImageError {
            step,
            path: Some(path.into()),
            errno: Some(format!("{errno:?}")),
            message: format!("{what}: {}", errno.desc()),
            hint: None,
        }
    }

    /// An I/O error from a reader (the decompressors and the tar parser report through io::Error).
    pub fn io(step: Step, e: &std::io::Error, path: impl Into<String>, what: &str) -> Self {
        let errno = e.raw_os_error().map(|n| format!("{:?}", nix::errno::Errno::from_raw(n)));
        ImageError { step, path: Some(path.into()), errno, message: format!("{what}: {e}"), hint: None }
    }

    pub fn with_path(mut self, path: impl Into<String>) -> Self {
        self.path = Some(path.into());
        self
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl std::fmt::Display for ImageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.step.as_str())?;
        if let Some(p) = &self.path {
            write!(f, " ({p})")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ImageError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_like_a_setup_error() {
        let e = ImageError::sys(Step::WriteEntry, nix::errno::Errno::EACCES, "etc/x", "open");
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["step"], "write_entry");
        assert_eq!(json["errno"], "EACCES");
        assert_eq!(json["path"], "etc/x");
        assert!(json.get("hint").is_none());
    }
}
