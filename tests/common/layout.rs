//! OCI image layouts for tests: layouts built with umoci (images with layers of fixed files,
//! image indexes), read back by tag and digest, and skopeo run against registries and the
//! proxy.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use super::run;

/// A skopeo command that ignores the host's signature policy and keeps its state out of the
/// user's home (`HOME` is set to `scratch`).
pub fn skopeo(scratch: &Path) -> Command {
    let home = scratch.join(".skopeo-home");
    std::fs::create_dir_all(&home).unwrap();
    let mut cmd = Command::new("skopeo");
    cmd.env("HOME", home)
        .env_remove("REGISTRY_AUTH_FILE")
        .arg("--insecure-policy");
    cmd
}

/// Pulls `docker://{host}/{reference}` (through the proxy) into `dir:OUT`, anonymously and
/// over plain HTTP. `extra` goes before `copy` when it starts with `--override` (global flags,
/// written `--override-arch=arm64`), after it otherwise (e.g. `--all`). Returns skopeo's
/// stderr on failure.
pub fn pull(host: &str, reference: &str, out: &Path, extra: &[&str]) -> Result<(), String> {
    let _ = std::fs::remove_dir_all(out);
    std::fs::create_dir_all(out).unwrap();
    let mut cmd = skopeo(out.parent().unwrap());
    let (global, local): (Vec<&str>, Vec<&str>) =
        extra.iter().partition(|a| a.starts_with("--override"));
    cmd.args(global)
        .args(["copy", "--src-tls-verify=false", "--src-no-creds"])
        .args(local)
        .arg(format!("docker://{host}/{reference}"))
        .arg(format!("dir:{}", out.display()));
    let o = cmd.output().expect("run skopeo");
    if o.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&o.stderr).into_owned())
    }
}

/// A file of a layer: path inside the tar and its bytes.
pub type LayerFile = (String, Vec<u8>);

/// An OCI image layout built with umoci.
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    /// `umoci init --layout DIR`.
    pub fn init(dir: &Path) -> Layout {
        run(Command::new("umoci").arg("init").arg("--layout").arg(dir));
        Layout {
            dir: dir.to_path_buf(),
        }
    }

    fn image(&self, tag: &str) -> String {
        format!("{}:{tag}", self.dir.display())
    }

    /// Builds image `tag` for linux/`arch` with one layer per entry of `layers` and returns
    /// its manifest digest.
    pub fn add_image(&self, tag: &str, arch: &str, layers: &[Vec<LayerFile>]) -> String {
        run(Command::new("umoci")
            .args(["new", "--image"])
            .arg(self.image(tag)));
        for (i, files) in layers.iter().enumerate() {
            let tar = self.dir.with_file_name(format!("layer-{tag}-{i}.tar"));
            write_tar(&tar, files);
            run(Command::new("umoci")
                .args(["raw", "add-layer", "--image"])
                .arg(self.image(tag))
                .arg(&tar));
            std::fs::remove_file(&tar).unwrap();
        }
        run(Command::new("umoci")
            .args(["config", "--image"])
            .arg(self.image(tag))
            .args([
                "--config.cmd",
                "/bin/sh",
                "--os",
                "linux",
                "--architecture",
                arch,
            ]));
        self.manifest_digest(tag)
    }

    /// Writes an OCI image index over the images `children` (tag, architecture) as a blob and
    /// names it `tag` in index.json; returns its digest.
    pub fn add_index(&self, tag: &str, children: &[(&str, &str)]) -> String {
        let manifests: Vec<serde_json::Value> = children
            .iter()
            .map(|(child, arch)| {
                let bytes = self.manifest(child);
                serde_json::json!({
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": self.manifest_digest(child),
                    "size": bytes.len(),
                    "platform": {"architecture": arch, "os": "linux"},
                })
            })
            .collect();
        let doc = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        }))
        .unwrap();
        let hex = hex::encode(Sha256::digest(&doc));
        std::fs::write(self.dir.join("blobs/sha256").join(&hex), &doc).unwrap();
        let mut index = self.index_json();
        index["manifests"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "digest": format!("sha256:{hex}"),
                "size": doc.len(),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }));
        std::fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&index).unwrap(),
        )
        .unwrap();
        format!("sha256:{hex}")
    }

    fn index_json(&self) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.dir.join("index.json")).unwrap()).unwrap()
    }

    /// The digest `tag` names in index.json.
    pub fn manifest_digest(&self, tag: &str) -> String {
        let index = self.index_json();
        index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
            .unwrap_or_else(|| panic!("no {tag} in {}", self.dir.display()))["digest"]
            .as_str()
            .unwrap()
            .to_string()
    }

    pub fn blob_path(&self, digest: &str) -> PathBuf {
        self.dir
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    }

    pub fn blob(&self, digest: &str) -> Vec<u8> {
        std::fs::read(self.blob_path(digest)).unwrap()
    }

    /// The manifest (or index) bytes of `tag`.
    pub fn manifest(&self, tag: &str) -> Vec<u8> {
        self.blob(&self.manifest_digest(tag))
    }

    /// Config and layer digests of image `tag`.
    pub fn image_blobs(&self, tag: &str) -> Vec<String> {
        blobs_of(&self.manifest(tag))
    }
}

/// Config and layer digests named by an image manifest.
pub fn blobs_of(manifest: &[u8]) -> Vec<String> {
    let m: serde_json::Value = serde_json::from_slice(manifest).unwrap();
    let mut out = vec![m["config"]["digest"].as_str().unwrap().to_string()];
    for l in m["layers"].as_array().unwrap() {
        out.push(l["digest"].as_str().unwrap().to_string());
    }
    out
}

/// `sha256:<hex>` of `data`.
pub fn digest_of(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A tar of regular files with fixed metadata (so equal content gives equal bytes).
pub fn write_tar(path: &Path, files: &[LayerFile]) {
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, data.as_slice()).unwrap();
    }
    b.into_inner().unwrap().sync_all().unwrap();
}
