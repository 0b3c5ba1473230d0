//! Fuzzes `WWW-Authenticate` parsing: never panics, and a Bearer challenge it accepts always has
//! an http(s) realm.
#![no_main]

use artifactapi::upstream::auth::{Challenge, parse_challenge};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(Challenge::Bearer { realm, .. }) = parse_challenge(s) {
        assert!(
            realm.starts_with("http://") || realm.starts_with("https://"),
            "{s:?}"
        );
    }
});
