//! A real dnf client downloads a real package through an rpm remote whose upstream is a
//! createrepo_c repository, then again with the upstream stopped.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Proxy, TestUpstream, have_tool, run};

fn build_rpm(top: &Path, name: &str) {
    std::fs::create_dir_all(top).unwrap();
    let spec = top.join(format!("{name}.spec"));
    std::fs::write(
        &spec,
        format!(
            "Name: {name}\nVersion: 1.0\nRelease: 1\nSummary: test package\nLicense: MIT\nBuildArch: noarch\n\
             %description\nA package for tests.\n\
             %install\nmkdir -p %{{buildroot}}/usr/share/{name}\necho {name} > %{{buildroot}}/usr/share/{name}/hello.txt\n\
             %files\n/usr/share/{name}/hello.txt\n"
        ),
    )
    .unwrap();
    run(Command::new("rpmbuild")
        .arg("-bb")
        .arg("--define")
        .arg(format!("_topdir {}", top.display()))
        .arg(&spec));
}

fn dnf_download(work: &Path, tag: &str, repo_url: &str, pkg: &str) -> std::path::PathBuf {
    let root = work.join(format!("root-{tag}"));
    let cache = work.join(format!("cache-{tag}"));
    let out = work.join(format!("out-{tag}"));
    std::fs::create_dir_all(&out).unwrap();
    run(Command::new("dnf")
        .args(["-y", "-q"])
        .arg(format!("--installroot={}", root.display()))
        .arg("--releasever=1")
        .arg("--setopt=reposdir=/dev/null")
        .arg(format!("--setopt=cachedir={}", cache.display()))
        .arg(format!("--repofrompath=r,{repo_url}"))
        .args([
            "--repo=r",
            "--nogpgcheck",
            "install",
            "--downloadonly",
            "--downloaddir",
        ])
        .arg(&out)
        .arg(pkg));
    out
}

#[test]
fn dnf_downloads_through_rpm_remote_and_again_with_upstream_stopped() {
    if !(have_tool("rpmbuild") && have_tool("createrepo_c") && have_tool("dnf")) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let top = work.path().join("rpmbuild");
    build_rpm(&top, "artifactapi-hello");
    build_rpm(&top, "artifactapi-other");
    let repo = work.path().join("www/el");
    std::fs::create_dir_all(repo.join("Packages")).unwrap();
    for entry in std::fs::read_dir(top.join("RPMS/noarch")).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, repo.join("Packages").join(p.file_name().unwrap())).unwrap();
    }
    run(Command::new("createrepo_c").arg(&repo));

    let mut up = TestUpstream::start();
    up.serve_dir(&work.path().join("www"));
    let proxy = Proxy::start(&format!(
        "  el:\n    type: remote\n    package: rpm\n    base_url: {}/el\n    include_patterns:\n      - 'artifactapi-hello'\n",
        up.url()
    ));
    let url = proxy.remote("el", "").trim_end_matches('/').to_string();

    let out = dnf_download(work.path(), "a", &url, "artifactapi-hello");
    let rpm_name = "artifactapi-hello-1.0-1.noarch.rpm";
    let original = std::fs::read(repo.join("Packages").join(rpm_name)).unwrap();
    assert_eq!(std::fs::read(out.join(rpm_name)).unwrap(), original);
    assert_eq!(up.count("GET", &format!("el/Packages/{rpm_name}")), 1);
    assert_eq!(up.count("GET", "el/repodata/repomd.xml"), 1);
    // The package and the metadata dnf read are in the cache.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cached = rt.block_on(proxy.stored(&format!("el/Packages/{rpm_name}")));
    assert_eq!(cached.unwrap(), original);

    // include_patterns keep other packages out, metadata stays reachable.
    let (code, _) = common::raw_get(
        proxy.addr,
        "/api/v1/remote/el/Packages/artifactapi-other-1.0-1.noarch.rpm",
    );
    assert_eq!(code, 403);

    up.stop();
    let out = dnf_download(work.path(), "b", &url, "artifactapi-hello");
    assert_eq!(std::fs::read(out.join(rpm_name)).unwrap(), original);
}
