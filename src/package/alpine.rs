//! Alpine (apk) repositories: `APKINDEX.tar.gz` in any branch/repository/arch directory is the
//! index; `.apk` packages and everything else are file class.

pub fn is_index(path: &str) -> bool {
    path.rsplit('/').next() == Some("APKINDEX.tar.gz")
}

#[cfg(test)]
mod tests {
    use super::is_index;

    #[test]
    fn apkindex_is_index() {
        assert!(is_index("v3.20/main/x86_64/APKINDEX.tar.gz"));
        assert!(is_index("APKINDEX.tar.gz"));
        assert!(!is_index("v3.20/main/x86_64/busybox-1.36.1-r29.apk"));
        assert!(!is_index("v3.20/main/x86_64/APKINDEX.tar.gz.sig"));
        assert!(!is_index("x/NOTAPKINDEX.tar.gz"));
    }
}
