//! Fixtures for the docker tests: media types, the YAML of a docker remote, small layers, and
//! the check that a pulled image is byte for byte the one in the layout.

use std::path::Path;

use super::layout::{LayerFile, Layout, blobs_of, digest_of};
use super::test_bytes;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// A docker remote `name` in front of `base_url`, with `extra` lines (indented four spaces).
pub fn docker_remote(name: &str, base_url: &str, extra: &str) -> String {
    format!("  {name}:\n    type: remote\n    package: docker\n    base_url: {base_url}\n{extra}")
}

/// A file of a layer.
pub fn file(name: &str, data: impl Into<Vec<u8>>) -> LayerFile {
    (name.to_string(), data.into())
}

/// Layers of `n` small files each (distinct per `seed`).
pub fn small_layers(n: usize, seed: u64) -> Vec<Vec<LayerFile>> {
    (0..n)
        .map(|i| {
            vec![file(
                &format!("data/f{seed}-{i}.bin"),
                test_bytes(20_000 + i * 1000, seed * 100 + i as u64).to_vec(),
            )]
        })
        .collect()
}

/// A `skopeo copy ... dir:OUT` result holds `manifest` and each blob it names, byte for byte
/// as in `layout`.
pub fn check_pulled_image(out: &Path, manifest: &[u8], layout: &Layout) {
    assert_eq!(
        std::fs::read(out.join("manifest.json")).unwrap(),
        manifest,
        "manifest bytes differ from upstream"
    );
    for d in blobs_of(manifest) {
        let got = std::fs::read(out.join(d.trim_start_matches("sha256:"))).unwrap();
        assert_eq!(digest_of(&got), d);
        assert!(got == layout.blob(&d), "blob {d} differs from the layout");
    }
}
