//! Fuzzes request-path validation: `RepoPath::parse` must never panic, and whatever it accepts
//! must be a path that cannot leave the repository, carries no path parameter, dot run or
//! format character, and is a valid storage key.
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
        // No path parameter and no segment that a servlet or IIS upstream reads as `.`/`..`.
        assert!(!seg.contains(';'), "{raw:?} -> {joined:?}");
        assert!(
            !seg.chars().all(|c| c == '.' || c == ' '),
            "{raw:?} -> {joined:?}"
        );
        // And nothing a storage key or a record name could not hold.
        let key = format!("r/{joined}");
        assert!(
            artifactapi::storage::StorageKey::parse(&key).is_ok(),
            "{raw:?} -> {joined:?}"
        );
    }
    // No Unicode format character (bidi overrides, zero-width marks) anywhere.
    assert!(
        !joined.chars().any(|c| matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}' | '\u{ad}')),
        "{raw:?} -> {joined:?}"
    );
    // The upstream form must parse back to the same path.
    let again = RepoPath::parse(&path.encoded()).expect("encoded form parses");
    assert_eq!(again, path, "{raw:?}");
});
