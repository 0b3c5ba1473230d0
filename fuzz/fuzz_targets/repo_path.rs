//! Fuzzes request-path validation: `RepoPath::parse` must never panic, and whatever it accepts
//! must be a path that cannot leave the repository.
#![no_main]

use artifactapi::repo::RepoPath;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(path) = RepoPath::parse(raw) else {
        return;
    };
    let joined = path.as_str();
    assert!(!joined.is_empty());
    assert!(joined.len() <= artifactapi::path::MAX_PATH);
    for seg in path.segments() {
        assert!(
            !seg.is_empty() && seg != "." && seg != "..",
            "{raw:?} -> {joined:?}"
        );
        assert!(!seg.contains(['\\', '%', '\0']), "{raw:?} -> {joined:?}");
        assert!(!seg.chars().any(char::is_control), "{raw:?} -> {joined:?}");
    }
    // The upstream form must parse back to the same path.
    let again = RepoPath::parse(&path.encoded()).expect("encoded form parses");
    assert_eq!(again, path, "{raw:?}");
});
