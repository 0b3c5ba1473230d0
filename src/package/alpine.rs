//! Alpine (apk) repositories: `APKINDEX.tar.gz` in any branch/repository/arch directory is the
//! index; `.apk` packages and everything else are file class.
//!
//! Warm discovery reads the `APKINDEX` inside `APKINDEX.tar.gz`: one `{P}-{V}.apk` per record.

use std::io::BufRead;
use std::path::Path;

use super::Found;
use crate::error::{Error, Result};

/// The APKINDEX rules.
pub struct Alpine;

const INDEX: &str = "APKINDEX.tar.gz";

impl super::Format for Alpine {
    fn is_index(&self, path: &str) -> bool {
        is_index(path)
    }

    fn warm_roots(&self) -> &'static [&'static str] {
        &[INDEX]
    }

    fn discover(&self, _rel: &str, file: &Path) -> Result<Vec<Found>> {
        Ok(packages_in_index(file)?
            .into_iter()
            .map(Found::Package)
            .collect())
    }
}

pub fn is_index(path: &str) -> bool {
    path.rsplit('/').next() == Some(INDEX)
}

/// The `.apk` file names (relative to the index's directory) listed in an `APKINDEX.tar.gz`.
pub fn packages_in_index(file: &Path) -> Result<Vec<String>> {
    let f = std::fs::File::open(file).map_err(Error::storage("opening APKINDEX"))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(f));
    let entries = archive
        .entries()
        .map_err(Error::storage("reading APKINDEX"))?;
    for entry in entries {
        let entry = entry.map_err(Error::storage("reading APKINDEX"))?;
        let is_index = entry
            .path()
            .map(|p| p.as_os_str() == "APKINDEX")
            .unwrap_or(false);
        if is_index {
            return Ok(parse_apkindex(std::io::BufReader::new(entry)));
        }
    }
    Err(Error::BadRequest(
        "APKINDEX.tar.gz holds no APKINDEX".into(),
    ))
}

fn parse_apkindex(reader: impl BufRead) -> Vec<String> {
    let mut out = Vec::new();
    let (mut name, mut version) = (None::<String>, None::<String>);
    let mut flush = |name: &mut Option<String>, version: &mut Option<String>| {
        if let (Some(n), Some(v)) = (name.take(), version.take()) {
            out.push(format!("{n}-{v}.apk"));
        }
    };
    for line in reader.lines().map_while(std::io::Result::ok) {
        if line.is_empty() {
            flush(&mut name, &mut version);
        } else if let Some(n) = line.strip_prefix("P:") {
            name = Some(n.to_string());
        } else if let Some(v) = line.strip_prefix("V:") {
            version = Some(v.to_string());
        }
    }
    flush(&mut name, &mut version);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apkindex_is_index() {
        assert!(is_index("v3.20/main/x86_64/APKINDEX.tar.gz"));
        assert!(is_index("APKINDEX.tar.gz"));
        assert!(!is_index("v3.20/main/x86_64/busybox-1.36.1-r29.apk"));
        assert!(!is_index("v3.20/main/x86_64/APKINDEX.tar.gz.sig"));
        assert!(!is_index("x/NOTAPKINDEX.tar.gz"));
    }

    #[test]
    fn apkindex_records() {
        let text = "C:Q1abc=\nP:busybox\nV:1.36.1-r29\nA:x86_64\n\nP:musl\nV:1.2.5-r0\n";
        assert_eq!(
            parse_apkindex(std::io::Cursor::new(text)),
            vec!["busybox-1.36.1-r29.apk", "musl-1.2.5-r0.apk"]
        );
    }
}
