//! Generic repositories (plain HTTP downloads, GitHub releases): no path is an index by format;
//! only the repository's `index_patterns` can make one.

pub fn is_index(_path: &str) -> bool {
    false
}
