//! Release archives as users get them: krew installs each Linux archive
//! offline (`--archive`) and the plugin runs, the arm64 one under
//! qemu-aarch64; `make krew-manifest` renders `krew/scalardb-graphql.yaml`
//! for the archives and validates it by installing every platform's archive;
//! `make helm-package` signs a Helm plugin tarball per archive, which Helm 4
//! installs from its URL and its path with verification on (and refuses
//! unsigned, tampered or signed by a key not in the keyring), and Helm 3
//! installs unpacked.
//!
//! The linux/amd64 archive packages the binary under test; the linux/arm64
//! one is cross-built here by `scripts/dist.sh` (cargo-zigbuild, the dev
//! profile, a target directory of its own), as `make dist` builds it. The
//! make targets run on copies of them (`-o dist`: nothing is built again),
//! signed with a throw-away key generated here. Everything here packs at gzip
//! level 1 (`DIST_GZIP_LEVEL`): the same files in the same format as a
//! release's level 9, without minutes of compressing the 100 MB debug binary.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use common::{BIN, expect_code, rig, root, text};
use serde_json::Value;
use sha2::{Digest, Sha256};

const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The public key a release's Helm plugin tarballs are signed with, published beside them.
const SIGNING_KEY: &str = "scalardb-graphql-signing-key.asc";

fn archive_name(platform: &str) -> String {
    format!("kubectl-scalardb-graphql_v{VERSION}_{}.tar.gz", platform.replace('/', "_"))
}

/// The Helm plugin tarball of a platform (`<name>-<version>…`, the name Helm takes the plugin's from).
fn helm_tarball_name(platform: &str) -> String {
    format!("scalardb-graphql-{VERSION}-{}.tgz", platform.replace('/', "-"))
}

fn sha256_hex(path: &Path) -> String {
    let body = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Sha256::digest(&body).iter().map(|b| format!("{b:02x}")).collect()
}

fn run(cmd: &mut Command, what: &str) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    expect_code(&out, 0, what);
    out
}

/// gzip's level for the archives and tarballs made here (a release's default is 9).
const GZIP_LEVEL: &str = "1";

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
                    .env("DIST_GZIP_LEVEL", GZIP_LEVEL)
                    .env("CARGO_TARGET_DIR", &cache),
                "scripts/dist.sh linux/amd64=<the binary under test> linux/arm64",
            );
            (work, out)
        })
        .1
}

/// A dist directory of its own holding copies of the two archives, for a make target to write into.
fn dist_copy(work: &Path) -> PathBuf {
    let dist = work.join("dist");
    std::fs::create_dir(&dist).unwrap();
    for platform in ["linux/amd64", "linux/arm64"] {
        std::fs::copy(archives().join(archive_name(platform)), dist.join(archive_name(platform))).unwrap();
    }
    dist
}

/// `make -o dist TARGET DIST=<dist>`: the target's recipe on `dist`'s archives, `make dist` not run.
fn make(target: &str, dist: &Path) -> Command {
    let mut c = Command::new("make");
    c.arg("-C")
        .arg(root())
        .args(["--no-print-directory", "-o", "dist", target])
        .arg(format!("DIST={}", dist.display()))
        .env("DIST_GZIP_LEVEL", GZIP_LEVEL);
    c
}

/// A GnuPG home of its own (batch mode, no passphrase); its agent is stopped when dropped.
struct Gpg {
    home: PathBuf,
}

impl Gpg {
    fn empty(home: PathBuf) -> Gpg {
        std::fs::DirBuilder::new().mode(0o700).create(&home).unwrap();
        Gpg { home }
    }

    /// A home holding a new signing key for `uid`; returns it and the key's fingerprint.
    fn with_key(home: PathBuf, uid: &str) -> (Gpg, String) {
        let gpg = Gpg::empty(home);
        run(
            gpg.cmd().args([
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
                "--quick-generate-key",
                uid,
                "rsa3072",
                "sign",
                "never",
            ]),
            "gpg --quick-generate-key",
        );
        let list = run(gpg.cmd().args(["--list-secret-keys", "--with-colons"]), "gpg --list-secret-keys");
        let fingerprint = text(&list.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("fpr:").map(|rest| rest.trim_matches(':').to_string()))
            .expect("the new key's fingerprint");
        (gpg, fingerprint)
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("gpg");
        c.env("GNUPGHOME", &self.home).args(["--batch", "--quiet"]);
        c
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf").args(["--kill", "gpg-agent"]).env("GNUPGHOME", &self.home).output();
    }
}

/// The template with its placeholders filled as krew-release-bot fills them, but for the sha256s:
/// `{{ .TagName }}` is the tag, and each `{{addURIAndSha "URL" .TagName }}` is `uri: URL` (the tag in
/// it too) and an empty `sha256`.
fn template_with_uris(template: &str, tag: &str) -> Value {
    let mut filled = String::new();
    for line in template.lines() {
        let indent = &line[..line.len() - line.trim_start().len()];
        if line.contains("addURIAndSha") {
            let url = line.split('"').nth(1).unwrap_or_else(|| panic!("no quoted URL in {line:?}"));
            filled.push_str(&format!("{indent}uri: {url}\n{indent}sha256: \"\"\n"));
        } else {
            filled.push_str(line);
            filled.push('\n');
        }
    }
    let filled = filled.replace("{{ .TagName }}", tag);
    assert!(!filled.contains("{{"), "the template has a placeholder krew-release-bot's form does not: {filled}");
    serde_saphyr::from_str(&filled).unwrap_or_else(|e| panic!("krew/scalardb-graphql.yaml, filled: {e}\n{filled}"))
}

#[test]
fn make_krew_manifest_renders_the_krew_template_for_the_archives_and_validates_it() {
    let work = tempfile::tempdir().unwrap();
    let dist = dist_copy(work.path());
    let release_url = "https://example.invalid/owner/repo/releases/download";
    let out = run(make("krew-manifest", &dist).arg(format!("RELEASE_URL={release_url}")), "make -o dist krew-manifest");
    assert!(text(&out.stdout).contains("each of its 2 platforms installs"), "{}", text(&out.stdout));

    let tag = format!("v{VERSION}");
    let template =
        std::fs::read_to_string(root().join("krew/scalardb-graphql.yaml")).expect("krew/scalardb-graphql.yaml");
    let mut expected = template_with_uris(&template, &tag);
    let rendered_text = std::fs::read_to_string(dist.join("scalardb-graphql.yaml")).unwrap();
    let rendered: Value = serde_saphyr::from_str(&rendered_text).unwrap();
    assert_eq!(rendered["spec"]["version"], Value::from(tag.clone()), "{rendered_text}");

    // Each of the template's platforms whose archive is in dist, at RELEASE_URL, with its archive's sha256;
    // every other field as the template has it.
    let platforms = expected["spec"]["platforms"].as_array_mut().expect("the template's platforms");
    assert_eq!(platforms.len(), 5, "the template names the five platforms");
    platforms.retain_mut(|p| {
        let uri = p["uri"].as_str().unwrap().to_string();
        assert!(
            uri.starts_with("https://github.com/"),
            "the template's uri is krew-release-bot's GitHub release URL: {uri}"
        );
        let name = uri.rsplit('/').next().unwrap().to_string();
        if !dist.join(&name).is_file() {
            return false;
        }
        p["uri"] = Value::from(format!("{release_url}/{tag}/{name}"));
        p["sha256"] = Value::from(sha256_hex(&dist.join(&name)));
        true
    });
    assert_eq!(expected["spec"]["platforms"].as_array().unwrap().len(), 2);
    assert_eq!(rendered, expected, "the rendered manifest is not the template's:\n{rendered_text}");

    let sums = std::fs::read_to_string(dist.join("SHA256SUMS")).unwrap();
    for platform in ["linux/amd64", "linux/arm64"] {
        let line = format!("{}  {}", sha256_hex(&dist.join(archive_name(platform))), archive_name(platform));
        assert!(sums.lines().any(|l| l == line), "{line:?} missing from SHA256SUMS:\n{sums}");
    }
}

/// gzip's XFL header byte: 2 for its maximum compression (level 9), 4 for its fastest (level 1).
fn gzip_xfl(path: &Path) -> u8 {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))[8]
}

#[test]
fn a_release_packs_at_gzip_level_9_and_dist_gzip_level_packs_at_another() {
    // A small stand-in binary: the level is dist.sh's and dist-helm.sh's, whatever they pack.
    let work = tempfile::tempdir().unwrap();
    let binary = work.path().join("kubectl-scalardb_graphql");
    std::fs::write(&binary, "#!/bin/sh\necho stand-in\n".repeat(4096)).unwrap();
    let signer = Gpg::empty(work.path().join("signer"));
    run(
        signer.cmd().args(["--pinentry-mode", "loopback", "--passphrase", "", "--quick-generate-key"]).args([
            "level test (throw-away) <level@example.invalid>",
            "rsa2048",
            "sign",
            "never",
        ]),
        "gpg --quick-generate-key",
    );
    for (level, xfl) in [(None, 2), (Some("1"), 4)] {
        let dist = work.path().join(format!("dist-{}", level.unwrap_or("default")));
        let mut pack = Command::new(root().join("scripts/dist.sh"));
        pack.arg(&dist).arg(format!("linux/amd64={}", binary.display()));
        let mut sign = Command::new(root().join("scripts/dist-helm.sh"));
        sign.arg(&dist).env("GNUPGHOME", &signer.home).env("SIGNING_KEY", "level@example.invalid");
        for c in [&mut pack, &mut sign] {
            c.env_remove("DIST_GZIP_LEVEL");
            if let Some(level) = level {
                c.env("DIST_GZIP_LEVEL", level);
            }
        }
        run(&mut pack, "scripts/dist.sh");
        run(&mut sign, "scripts/dist-helm.sh");
        for name in [archive_name("linux/amd64"), helm_tarball_name("linux/amd64")] {
            assert_eq!(gzip_xfl(&dist.join(&name)), xfl, "{name} at DIST_GZIP_LEVEL={level:?}");
        }
    }
    let out = Command::new(root().join("scripts/dist.sh"))
        .arg(work.path().join("dist-bad"))
        .arg(format!("linux/amd64={}", binary.display()))
        .env("DIST_GZIP_LEVEL", "11")
        .output()
        .unwrap();
    expect_code(&out, 2, "scripts/dist.sh with DIST_GZIP_LEVEL=11");
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

/// A directory holding `file` (a copy), and its `.prov` when given: what a server or a download has.
fn serve_copy(dir: &Path, file: &Path, prov: Option<&Path>) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let name = file.file_name().unwrap();
    std::fs::copy(file, dir.join(name)).unwrap();
    if let Some(prov) = prov {
        std::fs::copy(prov, dir.join(format!("{}.prov", name.to_string_lossy()))).unwrap();
    }
    dir.join(name)
}

#[test]
fn helm_4_installs_the_signed_plugin_tarball_only_verified_and_helm_3_installs_it_unpacked() {
    let rig = rig();
    let work = tempfile::tempdir().unwrap();
    let dist = dist_copy(work.path());
    let (signer, fingerprint) = Gpg::with_key(
        work.path().join("signer"),
        "kubectl-scalardb-graphql test key (throw-away) <test@example.invalid>",
    );
    run(
        make("helm-package", &dist).env("GNUPGHOME", &signer.home).env("SIGNING_KEY", &fingerprint),
        "make -o dist helm-package (signed with a throw-away key)",
    );
    let name = helm_tarball_name("linux/amd64");
    let tarball = dist.join(&name);
    let prov = dist.join(format!("{name}.prov"));
    let sha = sha256_hex(&tarball);
    let sums = std::fs::read_to_string(dist.join("SHA256SUMS")).unwrap();
    assert!(sums.lines().any(|l| l == format!("{sha}  {name}")), "{name} missing from SHA256SUMS:\n{sums}");
    let list = run(Command::new("tar").arg("tzf").arg(&tarball), "tar tzf <helm tarball>");
    for f in ["plugin.yaml", "bin/kubectl-scalardb_graphql", "scripts/helm-plugin-install.sh", "LICENSE"] {
        let f = format!("scalardb-graphql/{f}");
        assert!(text(&list.stdout).lines().any(|l| l == f), "{f} missing from {name}");
    }

    // A user's keyring: the published public key, imported with gpg (Helm 4 reads GnuPG's keybox by default).
    let user = Gpg::empty(work.path().join("user"));
    run(user.cmd().arg("--import").arg(dist.join(SIGNING_KEY)), "gpg --import <the published key>");
    let helm = |helm: &str, home: &Path| {
        let mut c = rig.cmd(helm);
        c.env_remove("HELM_PLUGINS")
            .env("HELM_DATA_HOME", home.join("data"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("GNUPGHOME", &user.home);
        c
    };
    let installed = |home: &Path| home.join("data/plugins/scalardb-graphql").exists();

    // Refused by Helm 4 (verification on, its default), and nothing installed: the tarball without
    // its .prov; one byte of it changed; verified against a keyring without the release's key.
    let (other, _) = Gpg::with_key(work.path().join("other"), "someone else <other@example.invalid>");
    let other_key = work.path().join("other.asc");
    let export = run(other.cmd().args(["--armor", "--export"]), "gpg --export <another key>");
    std::fs::write(&other_key, &export.stdout).unwrap();
    let unsigned = serve_copy(&work.path().join("unsigned"), &tarball, None);
    let tampered = serve_copy(&work.path().join("tampered"), &tarball, Some(&prov));
    let mut body = std::fs::read(&tampered).unwrap();
    let middle = body.len() / 2;
    body[middle] ^= 0x01;
    std::fs::write(&tampered, body).unwrap();
    for (what, dir, keyring, says) in [
        ("unsigned", unsigned.parent().unwrap(), None, "no provenance file"),
        ("tampered", tampered.parent().unwrap(), None, "sha256 sum does not match"),
        ("signed by a key not in the keyring", dist.as_path(), Some(&other_key), "unknown entity"),
    ] {
        let home = tempfile::tempdir().unwrap();
        let mut install = helm("helm4", home.path());
        install.args(["plugin", "install"]);
        if let Some(keyring) = keyring {
            install.arg("--keyring").arg(keyring);
        }
        let out = install.arg(format!("{}/{name}", file_server(dir))).output().unwrap();
        assert_ne!(out.status.code(), Some(0), "helm 4 installed the plugin {what}:\n{}", text(&out.stdout));
        assert!(text(&out.stderr).contains(says), "{what}: {}", text(&out.stderr));
        assert!(!installed(home.path()), "{what}: helm 4 refused, but left the plugin installed");
    }

    // Helm 4 installs it, verified, from its URL (served as release hosts serve it) with the default
    // keyring, and from its path with the published key as the keyring.
    let url = format!("{}/{name}", file_server(&dist));
    for (what, keyring, source) in
        [("URL", None, url.as_str()), ("path", Some(dist.join(SIGNING_KEY)), &*tarball.to_string_lossy())]
    {
        let home = tempfile::tempdir().unwrap();
        let mut install = helm("helm4", home.path());
        install.args(["plugin", "install"]);
        if let Some(keyring) = &keyring {
            install.arg("--keyring").arg(keyring);
        }
        let out = run(install.arg(source), &format!("helm4 plugin install <helm tarball {what}> (verified)"));
        let said = text(&out.stdout);
        assert!(said.contains(&format!("Plugin Hash Verified: sha256:{sha}")), "{what}: {said}");
        assert!(said.contains(&format!("Using Key With Fingerprint: {fingerprint}")), "{what}: {said}");
        let list = run(helm("helm4", home.path()).args(["plugin", "list"]), "helm4 plugin list");
        let row = text(&list.stdout).lines().find(|l| l.starts_with("scalardb-graphql")).map(str::to_string);
        assert!(
            row.as_deref().is_some_and(|r| r.split_whitespace().any(|w| w == "signed")),
            "{what}: helm 4 lists it as {row:?}"
        );
        let out = run(
            helm("helm4", home.path()).args(["scalardb-graphql", "version", "--client"]),
            "helm4 scalardb-graphql version --client",
        );
        assert!(text(&out.stdout).contains(&format!("kubectl-scalardb-graphql {VERSION}")), "{}", text(&out.stdout));
    }

    // Helm 3 verifies no plugin: the user checks the .prov with gpg (its signature, and that it names the
    // tarball's sha256), unpacks the tarball and installs the directory.
    run(user.cmd().arg("--verify").arg(&prov), "gpg --verify <the .prov>");
    let prov_text = std::fs::read_to_string(&prov).unwrap();
    assert!(prov_text.contains(&format!("{name}: sha256:{sha}")), "{prov_text}");
    let unpacked = work.path().join("unpacked");
    std::fs::create_dir(&unpacked).unwrap();
    run(Command::new("tar").arg("-xzf").arg(&tarball).arg("-C").arg(&unpacked), "tar -xzf <helm tarball>");
    let home = tempfile::tempdir().unwrap();
    run(
        helm("helm3", home.path()).args(["plugin", "install"]).arg(unpacked.join("scalardb-graphql")),
        "helm3 plugin install <unpacked helm tarball>",
    );
    let out = run(
        helm("helm3", home.path()).args(["scalardb-graphql", "version", "--client"]),
        "helm3 scalardb-graphql version --client",
    );
    assert!(text(&out.stdout).contains(&format!("kubectl-scalardb-graphql {VERSION}")), "{}", text(&out.stdout));
}
