//! Fuzzes registry request parsing: `/v2/` paths and `NAME[:TAG|@DIGEST]` references must never
//! panic, and accepted names, tags and digests must satisfy the distribution grammar.
#![no_main]

use artifactapi::package::docker::{ImageName, parse_image_reference, parse_v2_path};
use libfuzzer_sys::fuzz_target;

/// What every accepted image name must look like.
fn check_name(input: &str, name: &ImageName) {
    let n = name.as_str();
    assert!(!n.is_empty() && n.len() <= 255, "{input:?}");
    assert!(
        n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/".contains(&b)),
        "{input:?} -> {n:?}"
    );
    assert!(
        n.split('/').all(|c| !c.is_empty() && c != "." && c != ".."),
        "{input:?} -> {n:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(v2) = parse_v2_path(s) {
        // The segments are a repository prefix and/or the image name; the caller checks them
        // as a name with and without the first one.
        assert!(!v2.segments.is_empty(), "{s:?}");
        for seg in &v2.segments {
            assert!(!seg.is_empty() && !seg.contains(['%', '\\', '/']), "{s:?}");
        }
        let all: Vec<&str> = v2.segments.iter().map(String::as_str).collect();
        for names in [&all[..], &all[1..]] {
            if let Ok(name) = ImageName::from_segments(names) {
                check_name(s, &name);
            }
        }
        let tail = v2.endpoint.tail();
        assert!(
            tail.split('/')
                .all(|t| !t.is_empty() && t != "." && t != ".."),
            "{s:?} -> {tail:?}"
        );
    }
    if let Ok((name, reference)) = parse_image_reference(s) {
        check_name(s, &name);
        let r = reference.as_str();
        assert!(
            !r.is_empty() && !r.contains(['/', '%', '\\']),
            "{s:?} -> {r:?}"
        );
    }
});
