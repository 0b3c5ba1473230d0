//! rpm (yum/dnf) repositories: everything under a `repodata/` directory is index — repomd.xml,
//! its signature, and the primary/filelists/other/comps/updateinfo/modules files it lists, in
//! any compression. Packages (`.rpm`) and everything else are file class.

pub fn is_index(path: &str) -> bool {
    let mut segments = path.split('/').peekable();
    while let Some(seg) = segments.next() {
        if seg == "repodata" && segments.peek().is_some() {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::is_index;

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
}
