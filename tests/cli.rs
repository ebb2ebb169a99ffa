//! The binary as users meet it: through kubectl's plugin mechanism, as a
//! Helm 3 and Helm 4 plugin from a checkout, with kubectl's completion shim,
//! and with bad connection settings (release archives: tests/dist.rs).

mod common;

use std::path::Path;
use std::process::Command;

use common::{BIN, expect_code, one_line_error, rig, root, text};

/// A directory holding the plugin under its kubectl name, to put on PATH.
fn plugin_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(BIN, dir.path().join("kubectl-scalardb_graphql")).unwrap();
    dir
}

fn path_with(dirs: &[&Path], rig: &common::Rig) -> String {
    let mut parts: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    parts.push(rig.get("PATH").to_string());
    parts.join(":")
}

#[test]
fn kubectl_finds_the_plugin_and_runs_it() {
    let rig = rig();
    let dir = plugin_dir();
    let path = path_with(&[dir.path()], &rig);
    let list = rig.cmd("kubectl").args(["plugin", "list"]).env("PATH", &path).output().unwrap();
    assert!(
        text(&list.stdout).contains(&dir.path().join("kubectl-scalardb_graphql").display().to_string()),
        "{}",
        text(&list.stdout)
    );
    let out = rig.cmd("kubectl").args(["scalardb-graphql", "version"]).env("PATH", &path).output().unwrap();
    expect_code(&out, 0, "kubectl scalardb-graphql version");
    let stdout = text(&out.stdout);
    assert!(stdout.contains("kubectl-scalardb-graphql 0.1.0"), "{stdout}");
    assert!(stdout.contains("kubernetes server: v1.35.4"), "{stdout}");
    assert!(stdout.contains("helm: v3.22.0 (major 3)"), "{stdout}");
    let help = rig.cmd("kubectl").args(["scalardb-graphql", "--help"]).env("PATH", &path).output().unwrap();
    assert!(text(&help.stdout).contains("Usage: kubectl scalardb-graphql"), "{}", text(&help.stdout));
}

/// The files of a checkout that make it a Helm plugin.
fn checkout_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in ["plugin.yaml", "README.md", "LICENSE", "Cargo.toml"] {
        std::fs::copy(root().join(f), dir.path().join(f)).unwrap();
    }
    std::fs::create_dir(dir.path().join("scripts")).unwrap();
    std::fs::copy(root().join("scripts/helm-plugin-install.sh"), dir.path().join("scripts/helm-plugin-install.sh"))
        .unwrap();
    dir
}

#[test]
fn helm_3_and_helm_4_install_the_checkout_as_a_plugin_and_pass_namespace_and_context() {
    let rig = rig();
    let bin_dir = plugin_dir();
    // A second context with its own default namespace, to see that helm's flags win.
    let kubeconfig = tempfile::NamedTempFile::new().unwrap();
    std::fs::copy(rig.get("KUBECONFIG"), kubeconfig.path()).unwrap();
    let k = |args: &[&str]| {
        let out = rig.cmd("kubectl").args(args).env("KUBECONFIG", kubeconfig.path()).output().unwrap();
        expect_code(&out, 0, "kubectl config");
        text(&out.stdout)
    };
    let cluster = k(&["config", "view", "-o", "jsonpath={.contexts[0].context.cluster}"]);
    let user = k(&["config", "view", "-o", "jsonpath={.contexts[0].context.user}"]);
    k(&[
        "config",
        "set-context",
        "second",
        &format!("--cluster={cluster}"),
        &format!("--user={user}"),
        "--namespace=elsewhere",
    ]);
    for helm in ["helm3", "helm4"] {
        let checkout = checkout_copy();
        let home = tempfile::tempdir().unwrap();
        let env = |c: &mut Command| {
            c.env("PATH", path_with(&[bin_dir.path()], &rig))
                .env_remove("HELM_PLUGINS")
                .env("HELM_DATA_HOME", home.path().join("data"))
                .env("HELM_CONFIG_HOME", home.path().join("config"))
                .env("HELM_CACHE_HOME", home.path().join("cache"))
                .env("KUBECONFIG", kubeconfig.path());
        };
        let mut install = rig.cmd(helm);
        env(install.args(["plugin", "install"]).arg(checkout.path()));
        let out = install.output().unwrap();
        expect_code(&out, 0, &format!("{helm} plugin install"));
        let mut run = rig.cmd(helm);
        env(run.args(["-n", "team-x", "--kube-context", "second", "scalardb-graphql", "version"]));
        let out = run.output().unwrap();
        expect_code(&out, 0, &format!("{helm} scalardb-graphql version"));
        let stdout = text(&out.stdout);
        assert!(stdout.contains("kube context: second (namespace team-x), run as a helm plugin"), "{helm}: {stdout}");
        let major = if helm == "helm3" { "major 3" } else { "major 4" };
        assert!(stdout.contains(major), "{helm} should call back the helm that runs it (HELM_BIN): {stdout}");
    }
}

#[test]
fn kubectls_completion_shim_lists_the_subcommands() {
    let rig = rig();
    let dir = plugin_dir();
    let shim = Command::new(BIN).args(["completion", "kubectl"]).output().unwrap();
    expect_code(&shim, 0, "completion kubectl");
    let shim_path = dir.path().join("kubectl_complete-scalardb_graphql");
    std::fs::write(&shim_path, &shim.stdout).unwrap();
    std::fs::set_permissions(&shim_path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = path_with(&[dir.path()], &rig);
    let out = rig.cmd("kubectl").args(["__complete", "scalardb-graphql", ""]).env("PATH", &path).output().unwrap();
    expect_code(&out, 0, "kubectl __complete");
    let stdout = text(&out.stdout);
    for sub in ["install", "status", "uninstall", "version", "completion"] {
        assert!(stdout.lines().any(|l| l.starts_with(&format!("{sub}\t")) || l == sub), "{sub} not offered:\n{stdout}");
    }
    let out = rig
        .cmd("kubectl")
        .args(["__complete", "scalardb-graphql", "status", "--cat"])
        .env("PATH", &path)
        .output()
        .unwrap();
    assert!(text(&out.stdout).contains("--category"), "{}", text(&out.stdout));
}

/// One line on stderr, exit 3, no panic or backtrace.
fn prerequisite_error(out: &std::process::Output, names: &str, fix: &str) {
    let line = one_line_error(out, 3, &[names, fix]);
    assert!(line.starts_with("error: "), "{line}");
    assert!(!line.contains("panicked") && !line.contains("backtrace"), "{line}");
}

#[test]
fn an_unknown_context_an_unreadable_kubeconfig_and_a_missing_helm_are_prerequisite_errors() {
    let rig = rig();
    let out = rig.plugin().args(["version", "--context", "nope"]).output().unwrap();
    prerequisite_error(&out, "kube context \"nope\" not found", "--context");

    let out = rig.plugin().args(["version", "--kubeconfig", "/nonexistent/kubeconfig"]).output().unwrap();
    prerequisite_error(&out, "cannot read kubeconfig /nonexistent/kubeconfig", "--kubeconfig");

    let no_helm = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(
        rig.get("PATH").split(':').next().map(|d| format!("{d}/kubectl")).unwrap(),
        no_helm.path().join("kubectl"),
    )
    .unwrap();
    let out = rig.plugin().args(["version"]).env("PATH", no_helm.path()).output().unwrap();
    prerequisite_error(&out, "helm not found on PATH", "HELM_BIN");

    let out = rig.plugin().args(["version"]).env("HELM_BIN", "/nonexistent/helm").output().unwrap();
    prerequisite_error(&out, "helm not found at HELM_BIN=/nonexistent/helm", "HELM_BIN");
}

#[test]
fn usage_errors_exit_2_and_a_closed_pipe_exits_0() {
    let out = Command::new(BIN).args(["status", "--output", "xml"]).output().unwrap();
    expect_code(&out, 2, "status --output xml");
    // Bad input is caught before any cluster is contacted: here there is none to contact.
    let out = Command::new(BIN)
        .args(["install", "--taint", "a=b:Sometimes", "--namespaces", "x"])
        .env("KUBECONFIG", "/nonexistent")
        .output()
        .unwrap();
    expect_code(&out, 2, "install --taint a=b:Sometimes");
    assert!(text(&out.stderr).contains("--taint \"a=b:Sometimes\" is not KEY=VALUE:EFFECT"), "{}", text(&out.stderr));
    // Absurd durations and arguments that are not UTF-8: a usage error, never a panic, before any cluster.
    for args in [
        vec!["status", "--timeout", "9999999999999999h"],
        vec!["uninstall", "--timeout", "99999999999999999999s"],
        vec!["install", "--namespaces", "x", "--timeout", "8761h"],
    ] {
        let out = Command::new(BIN).args(&args).env("KUBECONFIG", "/nonexistent").output().unwrap();
        expect_code(&out, 2, &args.join(" "));
        let stderr = text(&out.stderr);
        assert!(!stderr.contains("panicked") && stderr.contains("longer than a year"), "{stderr}");
    }
    let out = Command::new(BIN)
        .arg("status")
        .arg("--release")
        .arg(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(b"\xff"))
        .env("KUBECONFIG", "/nonexistent")
        .output()
        .unwrap();
    expect_code(&out, 2, "a release name that is not UTF-8");
    assert!(text(&out.stderr).contains("invalid UTF-8"), "{}", text(&out.stderr));
    // The reader goes away before the plugin writes: that is not an error.
    let mut child =
        Command::new(BIN).args(["completion", "bash"]).stdout(std::process::Stdio::piped()).spawn().unwrap();
    drop(child.stdout.take());
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn completion_scripts_name_the_binary() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(BIN).args(["completion", shell]).output().unwrap();
        expect_code(&out, 0, shell);
        assert!(text(&out.stdout).contains("kubectl-scalardb_graphql"), "{shell}");
    }
}
