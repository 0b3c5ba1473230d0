//! Fuzzes config loading: `load_str` and `validate_str` must never panic on any text, every
//! diagnostic must point inside the text, and validation must agree with loading on errors.
#![no_main]

use artifactapi::config::{Severity, load_str, validate_str};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let loaded = load_str(text);
    let diagnostics = validate_str(text);
    // YAML counts a lone CR as a line break too (`str::lines` does not).
    let lines = text
        .replace("\r\n", "\n")
        .replace('\r', "\n")
        .lines()
        .count()
        .max(1);
    for d in diagnostics
        .iter()
        .chain(loaded.as_ref().err().into_iter().flatten())
    {
        assert!(d.line >= 1 && d.column >= 1, "{d:?}");
        assert!(d.line <= lines + 1, "line {} of {lines}: {d:?}", d.line);
    }
    if loaded.is_err() {
        assert!(
            diagnostics.iter().any(|d| d.severity == Severity::Error),
            "load_str failed but validate_str found no error: {text:?}"
        );
    }
});
