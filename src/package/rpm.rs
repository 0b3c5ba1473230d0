//! rpm (yum/dnf) repositories: everything under a `repodata/` directory is index — repomd.xml,
//! its signature, and the primary/filelists/other/comps/updateinfo/modules files it lists, in
//! any compression. Packages (`.rpm`) and everything else are file class.
//!
//! Warm discovery reads `repodata/repomd.xml` for the primary metadata's location, then every
//! `<location href>` of a `.rpm` in that file (plain, .gz, .zst, .xz or .bz2).

use std::io::{BufRead, BufReader};
use std::path::Path;

use quick_xml::events::Event;

use super::Found;
use crate::error::{Error, Result};

/// The repodata rules.
pub struct Rpm;

const REPOMD: &str = "repodata/repomd.xml";

impl super::Format for Rpm {
    fn is_index(&self, path: &str) -> bool {
        is_index(path)
    }

    fn warm_roots(&self) -> &'static [&'static str] {
        &[REPOMD]
    }

    /// repomd.xml names the primary metadata; the primary metadata names the packages.
    fn discover(&self, rel: &str, file: &Path) -> Result<Vec<Found>> {
        let f = std::fs::File::open(file).map_err(Error::storage("opening repodata"))?;
        if rel == REPOMD {
            let href = primary_href(std::io::BufReader::new(f))?;
            return Ok(vec![Found::Index(href)]);
        }
        Ok(package_hrefs(decompress(f, rel)?)?
            .into_iter()
            .map(Found::Package)
            .collect())
    }
}

pub fn is_index(path: &str) -> bool {
    let mut segments = path.split('/').peekable();
    while let Some(seg) = segments.next() {
        if seg == "repodata" && segments.peek().is_some() {
            return true;
        }
    }
    false
}

/// The `href` of the `<location>` inside repomd.xml's `<data type="primary">`.
pub fn primary_href(repomd: impl BufRead) -> Result<String> {
    let mut in_primary = false;
    let mut found = None;
    each_element(repomd, "repomd.xml", |name, attr| match name {
        b"data" => in_primary = attr(b"type").as_deref() == Some("primary"),
        b"location" if in_primary && found.is_none() => found = attr(b"href"),
        _ => {}
    })?;
    found.ok_or_else(|| Error::BadRequest("repomd.xml lists no primary metadata".into()))
}

/// Every `.rpm` `<location href>` in a primary.xml document (relative to the repository root).
pub fn package_hrefs(primary: impl BufRead) -> Result<Vec<String>> {
    let mut out = Vec::new();
    each_element(primary, "primary metadata", |name, attr| {
        if name == b"location" {
            if let Some(href) = attr(b"href").filter(|h| h.ends_with(".rpm")) {
                out.push(href);
            }
        }
    })?;
    Ok(out)
}

/// Calls `visit` with the local name of every start or empty element and a lookup of its
/// (unescaped) attributes.
fn each_element(
    reader: impl BufRead,
    what: &str,
    mut visit: impl FnMut(&[u8], &dyn Fn(&[u8]) -> Option<String>),
) -> Result<()> {
    let bad = |e: &dyn std::fmt::Display| Error::BadRequest(format!("{what}: {e}"));
    let mut xml = quick_xml::Reader::from_reader(reader);
    let mut buf = Vec::new();
    loop {
        match xml.read_event_into(&mut buf).map_err(|e| bad(&e))? {
            Event::Start(e) | Event::Empty(e) => {
                let attr = |key: &[u8]| -> Option<String> {
                    let a = e.try_get_attribute(key).ok().flatten()?;
                    a.decode_and_unescape_value(xml.decoder())
                        .ok()
                        .map(|v| v.into_owned())
                };
                visit(e.local_name().as_ref(), &attr);
            }
            Event::Eof => return Ok(()),
            _ => {}
        }
        buf.clear();
    }
}

/// Reads repodata `f`, decompressing by the suffix of its `name`.
pub fn decompress(f: std::fs::File, name: &str) -> Result<Box<dyn BufRead>> {
    let r: Box<dyn BufRead> = if name.ends_with(".gz") {
        Box::new(BufReader::new(flate2::read::GzDecoder::new(f)))
    } else if name.ends_with(".zst") {
        Box::new(BufReader::new(
            zstd::Decoder::new(f).map_err(Error::storage("zstd"))?,
        ))
    } else if name.ends_with(".xz") {
        Box::new(BufReader::new(liblzma::read::XzDecoder::new(f)))
    } else if name.ends_with(".bz2") {
        Box::new(BufReader::new(bzip2::read::MultiBzDecoder::new(f)))
    } else if name.ends_with(".xml") {
        Box::new(BufReader::new(f))
    } else {
        return Err(Error::Unsupported(format!(
            "compression of {name} (supported: .gz, .zst, .xz, .bz2, plain)"
        )));
    };
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repodata_is_index() {
        for p in [
            "releases/40/Everything/x86_64/os/repodata/repomd.xml",
            "repodata/repomd.xml.asc",
            "repodata/0123abcd-primary.xml.gz",
            "repodata/0123abcd-filelists.xml.zst",
            "repodata/0123abcd-comps.xml.xz",
            "updates/repodata/x-updateinfo.xml.bz2",
        ] {
            assert!(is_index(p), "{p}");
        }
        for p in [
            "Packages/b/bash-5.2.rpm",
            "repodata",
            "myrepodata/repomd.xml",
            "repodata.rpm",
        ] {
            assert!(!is_index(p), "{p}");
        }
    }

    const REPOMD: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<repomd xmlns="http://linux.duke.edu/metadata/repo" xmlns:rpm="http://linux.duke.edu/metadata/rpm">
  <data type="other"><location href="repodata/abc-other.xml.gz"/></data>
  <data type="primary">
    <checksum type="sha256">abc</checksum>
    <location href="repodata/def-primary.xml.zst"/>
  </data>
</repomd>"#;

    #[test]
    fn repomd_names_the_primary_file() {
        assert_eq!(
            primary_href(REPOMD.as_bytes()).unwrap(),
            "repodata/def-primary.xml.zst"
        );
        assert!(primary_href(&b"<repomd/>"[..]).is_err());
    }

    #[test]
    fn primary_lists_rpm_locations() {
        let primary = r#"<metadata xmlns="http://linux.duke.edu/metadata/common" packages="2">
<package type="rpm"><name>a</name><location href="Packages/a/a-1.0-1.x86_64.rpm"/></package>
<package type="rpm"><location xml:base="http://m/" href="b&amp;c-2.noarch.rpm"></location></package>
<package type="rpm"><location href="Packages/x.src.tar"/></package>
</metadata>"#;
        assert_eq!(
            package_hrefs(primary.as_bytes()).unwrap(),
            vec!["Packages/a/a-1.0-1.x86_64.rpm", "b&c-2.noarch.rpm"]
        );
    }
}
