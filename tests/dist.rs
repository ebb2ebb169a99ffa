//! Release archives as users get them: krew installs each Linux archive
//! offline (`--archive`) and the plugin runs, the arm64 one under
//! qemu-aarch64; the krew manifest validates by installing every platform's
//! archive; Helm 4 installs the plugin from an archive's URL, Helm 3 from
//! the unpacked archive.
//!
//! The linux/amd64 archive packages the binary under test; the linux/arm64
//! one is cross-built here by `scripts/dist.sh` (cargo-zigbuild, the dev
//! profile, a target directory of its own), as `make dist` builds it.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use common::{BIN, expect_code, rig, root, text};

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn archive_name(platform: &str) -> String {
    format!("kubectl-scalardb-graphql_v{VERSION}_{}.tar.gz", platform.replace('/', "_"))
}

fn run(cmd: &mut Command, what: &str) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    expect_code(&out, 0, what);
    out
}

/// The two Linux archives, made once for this binary's tests.
fn archives() -> &'static Path {
    static DIST: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &DIST
        .get_or_init(|| {
            let work = tempfile::tempdir().unwrap();
            let out = work.path().join("dist");
            // Apart from the tests' own target directory, kept warm under ~/.cache like it.
            let cache =
                PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/kubectl-scalardb-graphql/cross-target");
            run(
                Command::new(root().join("scripts/dist.sh"))
                    .arg(&out)
                    .arg(format!("linux/amd64={BIN}"))
                    .arg("linux/arm64")
                    .env("DIST_PROFILE", "dev")
                    .env("CARGO_TARGET_DIR", &cache),
                "scripts/dist.sh linux/amd64=<the binary under test> linux/arm64",
            );
            (work, out)
        })
        .1
}

#[test]
fn the_arm64_archive_is_an_aarch64_program_for_glibc_2_17_that_runs_under_emulation() {
    let check = run(
        Command::new(root().join("scripts/dist-check.sh")).arg(archives().join(archive_name("linux/arm64"))),
        "scripts/dist-check.sh on the linux/arm64 archive",
    );
    let said = text(&check.stdout);
    for line in ["holds bin/kubectl-scalardb_graphql, LICENSE", "needs GLIBC_2.", "runs (qemu-aarch64)"] {
        assert!(said.contains(line), "{line:?} missing: {said}");
    }
}

#[test]
fn the_manifest_validates_by_installing_each_platforms_archive() {
    let out = run(Command::new(root().join("scripts/krew-validate.sh")).arg(archives()), "scripts/krew-validate.sh");
    assert!(text(&out.stdout).contains("each of its 2 platforms installs"), "{}", text(&out.stdout));
}

#[test]
fn krew_installs_each_linux_archive_offline_and_the_plugin_runs() {
    let rig = rig();
    let work = tempfile::tempdir().unwrap();
    let manifest = work.path().join("scalardb-graphql.yaml");
    let m = run(
        Command::new(root().join("scripts/krew-manifest.sh"))
            .arg(archives())
            .arg(format!("https://example.invalid/releases/v{VERSION}")),
        "scripts/krew-manifest.sh",
    );
    std::fs::write(&manifest, &m.stdout).unwrap();
    for (platform, arch) in [("linux/amd64", "amd64"), ("linux/arm64", "arm64")] {
        let archive = archives().join(archive_name(platform));
        let list = run(Command::new("tar").arg("tzf").arg(&archive), "tar tzf");
        for f in ["bin/kubectl-scalardb_graphql", "LICENSE", "README.md", "docs/commands.md", "plugin.yaml"] {
            assert!(text(&list.stdout).lines().any(|l| l == f), "{f} missing from {}", archive.display());
        }
        // krew picks the platform from KREW_OS/KREW_ARCH, as on an arm64 machine.
        let krew_root = work.path().join(format!("krew-{arch}"));
        run(
            rig.cmd("kubectl")
                .args(["krew", "install"])
                .arg(format!("--manifest={}", manifest.display()))
                .arg(format!("--archive={}", archive.display()))
                .env("KREW_ROOT", &krew_root)
                .env("KREW_OS", "linux")
                .env("KREW_ARCH", arch),
            &format!("kubectl krew install --archive=<{platform}>"),
        );
        let installed = krew_root.join("bin/kubectl-scalardb_graphql");
        let elf = std::fs::read(&installed).unwrap();
        let machine = u16::from_le_bytes([elf[18], elf[19]]);
        assert_eq!(machine, if arch == "amd64" { 0x3e } else { 0xb7 }, "{platform}: wrong ELF machine");
        let out = if arch == "amd64" {
            let path = format!("{}:{}", krew_root.join("bin").display(), rig.get("PATH"));
            run(
                rig.cmd("kubectl")
                    .args(["scalardb-graphql", "version", "--client"])
                    .env("PATH", path)
                    .env("KREW_ROOT", &krew_root),
                "kubectl scalardb-graphql version --client (krew-installed)",
            )
        } else {
            run(
                Command::new("qemu-aarch64")
                    .args(["-L", "/usr/aarch64-linux-gnu"])
                    .arg(&installed)
                    .args(["version", "--client"]),
                "qemu-aarch64 <krew-installed arm64 plugin> version --client",
            )
        };
        assert!(text(&out.stdout).contains(&format!("kubectl-scalardb-graphql {VERSION}")), "{}", text(&out.stdout));
    }
}

/// Serves `dir`'s files over http on 127.0.0.1 (GET and HEAD), for as long as the test runs.
fn file_server(dir: &Path) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let dir = dir.to_path_buf();
    std::thread::spawn(move || {
        for conn in listener.incoming().map_while(Result::ok) {
            let mut line = String::new();
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).map_or(true, |n| n == 0) || header.trim().is_empty() {
                    break;
                }
            }
            let mut words = line.split_whitespace();
            let method = words.next().unwrap_or_default().to_string();
            let name = words.next().unwrap_or("/").trim_start_matches('/').to_string();
            let mut conn = conn;
            let _ = match std::fs::read(dir.join(&name)).ok().filter(|_| !name.contains("..") && !name.is_empty()) {
                // As release download hosts answer (Helm 4 goes by the name, Helm 3 by this type).
                Some(body) => conn
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .and_then(|_| if method == "HEAD" { Ok(()) } else { conn.write_all(&body) }),
                None => conn.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
            };
        }
    });
    base
}

#[test]
fn helm_4_installs_the_plugin_from_a_release_archives_url_and_helm_3_from_the_unpacked_archive() {
    let rig = rig();
    let archive = archives().join(archive_name("linux/amd64"));
    let url = format!("{}/{}", file_server(archives()), archive_name("linux/amd64"));
    let unpacked = tempfile::tempdir().unwrap();
    let plugin_dir = unpacked.path().join("scalardb-graphql");
    std::fs::create_dir(&plugin_dir).unwrap();
    run(Command::new("tar").arg("-xzf").arg(&archive).arg("-C").arg(&plugin_dir), "tar -xzf <archive>");
    for helm in ["helm3", "helm4"] {
        let home = tempfile::tempdir().unwrap();
        let env = |c: &mut Command| {
            c.env_remove("HELM_PLUGINS")
                .env("HELM_DATA_HOME", home.path().join("data"))
                .env("HELM_CONFIG_HOME", home.path().join("config"))
                .env("HELM_CACHE_HOME", home.path().join("cache"));
        };
        let mut install = rig.cmd(helm);
        install.args(["plugin", "install"]);
        if helm == "helm4" {
            // Helm 4 verifies a plugin's provenance by default; a release has no .prov to verify.
            let mut verified = rig.cmd(helm);
            env(verified.args(["plugin", "install", &url]));
            let out = verified.output().unwrap();
            assert_ne!(out.status.code(), Some(0), "helm 4 installed an unsigned plugin without --verify=false");
            assert!(text(&out.stderr).contains(".prov"), "{}", text(&out.stderr));
            env(install.args(["--verify=false", &url]));
            run(&mut install, "helm4 plugin install --verify=false <archive URL>");
        } else {
            env(install.arg(&plugin_dir));
            run(&mut install, "helm3 plugin install <unpacked archive>");
        }
        let mut version = rig.cmd(helm);
        env(version.args(["scalardb-graphql", "version", "--client"]));
        let out = run(&mut version, &format!("{helm} scalardb-graphql version --client"));
        assert!(text(&out.stdout).contains(&format!("kubectl-scalardb-graphql {VERSION}")), "{}", text(&out.stdout));
    }
}
