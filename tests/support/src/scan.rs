//! Canary scans: every file a daemon left, and whether a value stands in one.

use std::path::{Path, PathBuf};

/// Every file under `dir`, recursively (none if it cannot be read).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Whether `needle` stands in `hay` as a word of its own, not inside a longer run of letters
/// and digits: a three- or four-digit card code turns up inside hex MACs, timestamps and ports
/// by chance (about once in 25 runs of an audit log), while a leaked one stands between quotes
/// or separators.
pub fn contains_word(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty()
        && hay.windows(needle.len()).enumerate().any(|(i, w)| {
            w == needle
                && (i == 0 || !hay[i - 1].is_ascii_alphanumeric())
                && hay
                    .get(i + needle.len())
                    .is_none_or(|c| !c.is_ascii_alphanumeric())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_not_runs() {
        assert!(contains_word(br#"{"cvv":"7391"}"#, b"7391"));
        assert!(!contains_word(b"mac=a7391f 173910", b"7391"));
        assert!(contains_word(b"7391", b"7391"));
    }
}
