//! Archive entry names, checked before anything touches the filesystem. Pure functions: a name is
//! split into components, and a name that could only be meant to leave the target directory is
//! refused rather than "repaired" (stripping `../` or a leading `/` would write somewhere the
//! archive's author did not say).

/// Why a name was refused. Each variant's [`Trick::describe`] names it for a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trick {
    /// `/etc/passwd`: an absolute path.
    Absolute,
    /// `a/../../x`: a `..` component.
    DotDot,
    /// A NUL byte inside a name.
    Nul,
    /// An empty name, or one naming the target directory itself where that makes no sense.
    Empty,
}

impl Trick {
    pub fn describe(self, what: &str) -> String {
        match self {
            Trick::Absolute => format!("{what} is an absolute path (absolute-path trick): it would write outside the target directory"),
            Trick::DotDot => format!("{what} contains a '..' component (path traversal trick): it could write outside the target directory"),
            Trick::Nul => format!("{what} contains a NUL byte"),
            Trick::Empty => format!("{what} is empty or names the target directory itself"),
        }
    }
}

/// The components of a relative path inside the target directory (`.` and empty components
/// dropped). An empty result names the target directory itself.
pub fn components(raw: &[u8]) -> Result<Vec<&[u8]>, Trick> {
    if raw.contains(&0) {
        return Err(Trick::Nul);
    }
    if raw.first() == Some(&b'/') {
        return Err(Trick::Absolute);
    }
    let mut out = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(Trick::DotDot),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// The components joined with `/`: the canonical form used as a key and in messages.
pub fn join(components: &[&[u8]]) -> Vec<u8> {
    components.join(&b'/')
}

/// A name for a person (archives may hold names that are not UTF-8). Its control characters are
/// escaped where the tool reports an error ([`printable`], in tool.rs), once for every message.
pub fn lossy(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).into_owned()
}

/// Text that may quote an archive's or an image's own bytes (an entry's name, a tag, a header
/// field the tar reader could not read), fit for a terminal and a log line: its control
/// characters escaped, and the result at most `max` characters and `...`.
pub fn printable(text: &str, max: usize) -> String {
    let mut out = String::new();
    let mut len = 0;
    for c in text.chars() {
        let shown: Vec<char> = if c.is_control() { c.escape_default().collect() } else { vec![c] };
        if len + shown.len() > max {
            out.push_str("...");
            break;
        }
        len += shown.len();
        out.extend(shown);
    }
    out
}

/// OCI/AUFS whiteout markers.
pub const WHITEOUT_PREFIX: &[u8] = b".wh.";
pub const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whiteout<'a> {
    /// `.wh..wh..opq`: the directory holding it hides everything of the lower layers.
    Opaque,
    /// `.wh.NAME`: NAME of the lower layers is deleted.
    Remove(&'a [u8]),
    /// Other `.wh..wh.` names are AUFS bookkeeping (hard-link directories): not content.
    AufsMeta,
}

/// Whether the last component is a whiteout marker, and which.
pub fn whiteout(leaf: &[u8]) -> Option<Whiteout<'_>> {
    if leaf == OPAQUE_MARKER {
        return Some(Whiteout::Opaque);
    }
    let name = leaf.strip_prefix(WHITEOUT_PREFIX)?;
    if name.starts_with(WHITEOUT_PREFIX) {
        return Some(Whiteout::AufsMeta);
    }
    Some(Whiteout::Remove(name))
}

#[cfg(test)]
mod tests {
    #[test]
    fn text_for_a_person_has_its_control_characters_escaped_and_is_bounded() {
        assert_eq!(super::printable(&super::lossy(b"a\x1b[2Jb\xff"), 100), "a\\u{1b}[2Jb\u{fffd}");
        assert_eq!(super::printable("etc/passwd", 100), "etc/passwd");
        assert_eq!(super::printable("x\ny", 10), "x\\ny");
        assert_eq!(super::printable(&"\u{fffd}".repeat(500), 200).chars().count(), 203);
        assert!(super::printable(&"\u{1}".repeat(500), 200).chars().count() <= 203, "bounded after escaping");
    }

    use super::*;

    fn comps(s: &str) -> Result<Vec<String>, Trick> {
        components(s.as_bytes()).map(|v| v.iter().map(|c| lossy(c)).collect())
    }

    #[test]
    fn plain_names_and_dot_prefixes() {
        assert_eq!(comps("./etc/passwd").unwrap(), ["etc", "passwd"]);
        assert_eq!(comps("etc//x/./y/").unwrap(), ["etc", "x", "y"]);
        assert!(comps("./").unwrap().is_empty());
        assert!(comps(".").unwrap().is_empty());
        assert_eq!(comps("..foo/a..b").unwrap(), ["..foo", "a..b"]);
    }

    #[test]
    fn escapes_are_refused_not_repaired() {
        assert_eq!(comps("/etc/passwd"), Err(Trick::Absolute));
        assert_eq!(comps("//x"), Err(Trick::Absolute));
        assert_eq!(comps("../x"), Err(Trick::DotDot));
        assert_eq!(comps("a/../b"), Err(Trick::DotDot), "even one that would stay inside");
        assert_eq!(comps("a/.."), Err(Trick::DotDot));
        assert_eq!(components(b"a\0b"), Err(Trick::Nul));
    }

    #[test]
    fn whiteouts() {
        assert_eq!(whiteout(b".wh..wh..opq"), Some(Whiteout::Opaque));
        assert_eq!(whiteout(b".wh.passwd"), Some(Whiteout::Remove(b"passwd")));
        assert_eq!(whiteout(b".wh..wh.plnk"), Some(Whiteout::AufsMeta));
        assert_eq!(whiteout(b"passwd"), None);
        assert_eq!(whiteout(b".whatever"), None);
    }

    #[test]
    fn join_is_canonical() {
        let c = components(b"./a//b/").unwrap();
        assert_eq!(join(&c), b"a/b");
        assert_eq!(join(&[]), b"");
    }
}
