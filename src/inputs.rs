//! What a user may type, checked before any call: Kubernetes and Helm names,
//! IAM names, AWS regions, image references, chart versions, URLs and
//! ScalarDB namespaces. Each check fails with one line naming the flag, what
//! is wrong and what to give instead (exit 2), so that nothing malformed
//! reaches helm, the API server or AWS as something else.

use crate::error::{Error, Result};

/// Helm's limit on a release name.
pub const RELEASE_NAME_MAX: usize = 53;

/// Names Kubernetes and helm accept: DNS-1123 subdomains (lower-case
/// alphanumerics and `-`, dot-separated, each part starting and ending
/// alphanumeric), at most `max` characters. A hyphen-leading name never
/// passes, so it cannot reach helm as a flag.
pub fn check_name(flag: &str, name: &str, max: usize) -> Result<()> {
    let part_ok = |p: &str| {
        !p.is_empty()
            && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !p.starts_with('-')
            && !p.ends_with('-')
    };
    if name.len() > max || !name.split('.').all(part_ok) {
        return Err(Error::usage(format!(
            "{flag} {name:?} is not a valid name (lower-case letters, digits, '-' and '.', starting and ending with a letter or digit, at most {max} characters)"
        ))
        .hint(format!("pass {flag} with a name such as scalardb-graphql")));
    }
    Ok(())
}

/// A DNS-1123 label (a namespace): a name without dots, at most 63 characters.
pub fn check_label(flag: &str, name: &str) -> Result<()> {
    check_name(flag, name, 63)?;
    if name.contains('.') {
        return Err(Error::usage(format!("{flag} {name:?} is not a valid name: it may not contain '.'"))
            .hint(format!("pass {flag} with a name such as scalardb")));
    }
    Ok(())
}

/// IAM role and policy names: letters, digits and `+=,.@_-`, 1 to `max` characters.
pub fn check_iam_name(flag: &str, name: &str, max: usize, example: &str) -> Result<()> {
    let ok = |c: char| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c);
    if name.is_empty() || name.len() > max || !name.chars().all(ok) {
        return Err(Error::usage(format!(
            "{flag} {name:?} is not an IAM name (letters, digits and +=,.@_-, 1 to {max} characters)"
        ))
        .hint(format!("pass {flag} with a name such as {example}")));
    }
    Ok(())
}

/// An AWS region code: lower-case words joined by `-`, ending in a number (us-east-1, us-gov-west-1).
pub fn check_region(region: &str) -> Result<()> {
    let parts: Vec<&str> = region.split('-').collect();
    let ok = parts.len() >= 3
        && parts[..parts.len() - 1].iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts.last().is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    if !ok {
        return Err(Error::usage(format!("--region {region:?} is not an AWS region code"))
            .hint("give one such as us-east-1 (aws ec2 describe-regions lists them)"));
    }
    Ok(())
}

/// An OCI image reference: `[host[:port]/]path[:tag][@algorithm:hex]`, the
/// path in lower case, as the container runtime would parse it.
pub fn check_image(flag: &str, image: &str) -> Result<()> {
    let (rest, digest) = match image.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (image, None),
    };
    let digest_ok = digest.is_none_or(|d| {
        d.split_once(':').is_some_and(|(algo, hex)| {
            !algo.is_empty()
                && algo.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                && hex.len() >= 32
                && hex.bytes().all(|b| b.is_ascii_hexdigit())
        })
    });
    // A tag follows the last ':' after the last '/'.
    let slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[slash..].rfind(':') {
        Some(i) => (&rest[..slash + i], Some(&rest[slash + i + 1..])),
        None => (rest, None),
    };
    let tag_ok = tag.is_none_or(|t| {
        !t.is_empty() && t.len() <= 128 && t.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    });
    let mut components: Vec<&str> = name.split('/').collect();
    // A first component with a '.' or ':' (or localhost) is a registry host, which may hold a port.
    if components.len() > 1 && (components[0].contains(['.', ':']) || components[0] == "localhost") {
        components.remove(0);
    }
    let path_ok = !components.is_empty()
        && components.iter().all(|c| {
            !c.is_empty()
                && c.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && c.starts_with(|ch: char| ch.is_ascii_alphanumeric())
        });
    if !(digest_ok && tag_ok && path_ok) {
        return Err(Error::usage(format!("{flag} {image:?} is not an image reference"))
            .hint("give one such as registry.example.com/library/python:3.13.7-alpine3.22 (the path in lower case)"));
    }
    Ok(())
}

/// A chart version or a version constraint helm accepts (1.8.6, v1.8.6, ^1.8, ~1.8.0, >=1.8 <2).
pub fn check_chart_version(flag: &str, version: &str) -> Result<()> {
    let starts = version.starts_with(|c: char| c.is_ascii_digit() || "v^~<>=!*".contains(c));
    let chars = version.chars().all(|c| c.is_ascii_alphanumeric() || ".-+^~<>=!*,| ".contains(c));
    if !starts || !chars || !version.bytes().any(|b| b.is_ascii_digit() || b == b'*') {
        return Err(Error::usage(format!("{flag} {version:?} is not a chart version")).hint(format!(
            "give a version such as {} or a constraint such as ^1.8",
            crate::pins::GRAPHQL_CHART_VERSION
        )));
    }
    Ok(())
}

/// The URL a probe from this machine uses: http or https, with a host.
pub fn check_probe_url(url: &str) -> Result<()> {
    let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"));
    let host = rest.map(|r| r.split(['/', '?', '#']).next().unwrap_or_default());
    if !host.is_some_and(|h| !h.is_empty() && !h.contains(char::is_whitespace)) || url.contains(char::is_whitespace) {
        return Err(Error::usage(format!("--probe-url {url:?} is not an http(s) URL"))
            .hint("give the ALB's address as this machine reaches it, e.g. http://localhost:8080 through a tunnel"));
    }
    Ok(())
}

/// ScalarDB namespace names: letters, digits and `_`.
pub fn check_scalardb_namespaces(flag: &str, namespaces: &[String]) -> Result<()> {
    if let Some(bad) =
        namespaces.iter().find(|n| n.is_empty() || !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
    {
        return Err(Error::usage(format!(
            "{flag} names {bad:?}, which is not a ScalarDB namespace (letters, digits and '_')"
        ))
        .hint(format!("give {flag} as ns1,ns2: the namespaces of your schema")));
    }
    Ok(())
}

/// A label key (`--node-selector`, a taint's key): an optional DNS-subdomain prefix and `/`,
/// then a name of at most 63 characters (alphanumerics, `-`, `_`, `.`, starting and ending
/// alphanumeric), as the API server checks it.
pub fn check_label_key(flag: &str, what: &str, key: &str) -> Result<()> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|p| check_name(flag, p, 253).is_ok());
    if !prefix_ok || !label_value_ok(name) || name.is_empty() {
        return Err(Error::usage(format!(
            "{flag}: {what} {key:?} is not a valid label key ([prefix/]name: the name at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit)"
        ))
        .hint(format!("pass {flag} with a key such as kubernetes.io/app")));
    }
    Ok(())
}

/// A label value: empty, or at most 63 letters, digits, `-`, `_`, `.`, starting and ending alphanumeric.
fn label_value_ok(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= 63
            && v.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && v.starts_with(|c: char| c.is_ascii_alphanumeric())
            && v.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

pub fn check_label_value(flag: &str, what: &str, value: &str) -> Result<()> {
    if !label_value_ok(value) {
        return Err(Error::usage(format!(
            "{flag}: {what} {value:?} is not a valid label value (at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit)"
        ))
        .hint(format!("pass {flag} with a value such as scalardbgraphqlpool")));
    }
    Ok(())
}

/// A chart repository: an http(s) or oci URL with a host (a local chart path is taken before this).
pub fn check_chart_repo(flag: &str, repo: &str) -> Result<()> {
    let host = ["https://", "http://", "oci://"].iter().find_map(|p| repo.strip_prefix(p));
    if host.is_none_or(|h| h.split('/').next().unwrap_or_default().is_empty() || h.contains(char::is_whitespace)) {
        return Err(Error::usage(format!(
            "{flag} {repo:?} is neither a chart repository URL (https://, http:// or oci://) nor an existing chart directory or .tgz"
        ))
        .hint(format!("pass {flag} https://charts.example.com, or the path of a chart")));
    }
    Ok(())
}

/// A container image tag: letters, digits, `_`, `.` and `-`, at most 128, not starting with `.` or `-`.
pub fn check_image_tag(flag: &str, tag: &str) -> Result<()> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        && !tag.starts_with(['.', '-']);
    if !ok {
        return Err(Error::usage(format!("{flag} {tag:?} is not an image tag (letters, digits, '_', '.' and '-')"))
            .hint(format!("pass {flag} with a version such as {}", crate::pins::SCHEMA_LOADER_VERSION)));
    }
    Ok(())
}

/// A count within `1..=max`.
pub fn check_count(flag: &str, n: u64, max: u64, what: &str) -> Result<()> {
    if n == 0 || n > max {
        return Err(Error::usage(format!("{flag} {n}: {what} must be between 1 and {max}"))
            .hint(format!("pass {flag} with a number from 1 to {max}")));
    }
    Ok(())
}

/// The GraphQL path: absolute, without spaces.
pub fn check_graphql_path(flag: &str, path: &str) -> Result<()> {
    if !path.starts_with('/') || path.contains(char::is_whitespace) {
        return Err(Error::usage(format!("{flag}: scalar.db.graphql.path {path:?} is not an absolute path"))
            .hint("give a path such as /graphql"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_keys_values_repositories_tags_and_counts_are_checked_as_the_servers_would() {
        assert!(check_label_key("--taint", "key", "kubernetes.io/app").is_ok());
        assert!(check_label_key("--taint", "key", "bad key").is_err());
        assert!(check_label_key("--node-selector", "key", "a b").is_err());
        assert!(check_label_value("--taint", "value", "scalardbgraphqlpool").is_ok());
        assert!(check_label_value("--taint", "value", "-x").is_err());
        assert!(check_chart_repo("--chart-repo", "https://charts.example.com").is_ok());
        assert!(check_chart_repo("--chart-repo", "not-a-url").is_err());
        assert!(check_image_tag("--schema-loader-version", "3.13.6").is_ok());
        assert!(check_image_tag("--schema-loader-version", "1.0 x").is_err());
        assert!(check_count("--replicas", 3_000_000_000, 100, "replicas").is_err());
        assert!(check_graphql_path("--db-properties", "graphql").is_err());
        assert!(check_graphql_path("--db-properties", "/graphql").is_ok());
    }

    #[test]
    fn names_are_checked_as_kubernetes_and_helm_check_them() {
        assert!(check_name("--release", "scalardb-graphql", RELEASE_NAME_MAX).is_ok());
        for bad in ["-rf", "Upper", "a_b", "", "a-", "x".repeat(54).as_str(), "a..b", "--"] {
            let e = check_name("--release", bad, RELEASE_NAME_MAX).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad}");
        }
        assert!(check_label("--namespace", "team-a").is_ok());
        assert!(check_label("--namespace", "team.a").is_err());
    }

    #[test]
    fn iam_names_regions_and_versions_are_checked_as_aws_and_helm_check_them() {
        assert!(check_iam_name("--iam-role-name", "my-role_1+=,.@", 64, "r").is_ok());
        assert!(check_iam_name("--iam-role-name", "bad role!", 64, "r").is_err());
        assert!(check_iam_name("--iam-role-name", &"r".repeat(65), 64, "r").is_err());
        for good in ["us-east-1", "us-gov-west-1", "ap-southeast-4", "cn-north-1"] {
            assert!(check_region(good).is_ok(), "{good}");
        }
        for bad in ["us east 1", "US-EAST-1", "us-east", "useast1", ""] {
            assert!(check_region(bad).is_err(), "{bad}");
        }
        for good in ["1.8.6", "v1.8.6", "^1.8", "~1.8.0", ">=1.8 <2", "1.9.0-rc.1"] {
            assert!(check_chart_version("--chart-version", good).is_ok(), "{good}");
        }
        for bad in ["not a version", "latest", "", "--devel"] {
            assert!(check_chart_version("--chart-version", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn image_references_are_checked_as_a_runtime_parses_them() {
        for good in [
            crate::pins::PROBE_IMAGE,
            "python",
            "python:3.13",
            "localhost:5000/python:3",
            "registry.example.com:443/team/python:3.13.7-alpine3.22",
            "registry.example.com/python@sha256:9ba6d8cbebf0fb6546ae71f2a1c14f6ffd2fdab83af7fa5669734ef30ad48844",
        ] {
            assert!(check_image("--probe-image", good).is_ok(), "{good}");
        }
        for bad in ["UPPER:case", "python:", "a b", "", "python@sha256:xyz", "-python", "reg.io//x"] {
            assert!(check_image("--probe-image", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn probe_urls_and_scalardb_namespaces_are_checked() {
        assert!(check_probe_url("http://localhost:8080").is_ok());
        assert!(check_probe_url("https://alb.example.com/graphql").is_ok());
        for bad in ["not-a-url", "ftp://x/graphql", "http://", "http:// x"] {
            assert!(check_probe_url(bad).is_err(), "{bad}");
        }
        assert!(check_scalardb_namespaces("--namespaces", &["sample".into(), "ns_2".into()]).is_ok());
        assert!(check_scalardb_namespaces("--namespaces", &["".into()]).is_err());
        assert!(check_scalardb_namespaces("--namespaces", &["a b".into()]).is_err());
    }
}

// --- input files and standard input ------------------------------------------------------

/// The most any input the plugin reads may hold (a values file, a schema, a
/// policy document, a secret): 1 MiB is many times what any of them needs.
pub const MAX_INPUT: u64 = 1 << 20;

/// What a path is, when it is not a regular file.
fn kind(meta: &std::fs::Metadata) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let t = meta.file_type();
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_char_device() || t.is_block_device() {
            return "a device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if meta.is_dir() { "a directory" } else { "not a regular file" }
}

/// Reads the input file `what` names (`-f`, `--schema`, …): a regular file of at
/// most `MAX_INPUT` bytes, or standard input for `-`. A FIFO or a device is
/// refused at once (it could block for ever or never end).
pub fn read_input(what: &str, path: &std::path::Path) -> Result<String> {
    if path.as_os_str() == "-" {
        return read_stdin(what, false);
    }
    let meta = std::fs::metadata(path).map_err(|e| {
        Error::usage(format!("cannot read {what} {}: {e}", path.display()))
            .hint("check the file's path and permissions")
    })?;
    if !meta.is_file() {
        return Err(Error::usage(format!("{what} {} is {}, not a regular file", path.display(), kind(&meta)))
            .hint("give a file, or - to read standard input"));
    }
    if meta.len() > MAX_INPUT {
        return Err(too_big(what, &path.display().to_string()));
    }
    let file = std::fs::File::open(path).map_err(|e| {
        Error::usage(format!("cannot read {what} {}: {e}", path.display()))
            .hint("check the file's path and permissions")
    })?;
    bounded_text(what, &path.display().to_string(), file)
}

fn too_big(what: &str, from: &str) -> Error {
    Error::usage(format!("{what} {from} holds more than {MAX_INPUT} bytes, more than any input of this plugin needs"))
        .hint("check that it is the right file")
}

/// At most `MAX_INPUT` bytes of UTF-8 text.
fn bounded_text(what: &str, from: &str, reader: impl std::io::Read) -> Result<String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    reader
        .take(MAX_INPUT + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::usage(format!("cannot read {what} from {from}: {e}")))?;
    if bytes.len() as u64 > MAX_INPUT {
        return Err(too_big(what, from));
    }
    String::from_utf8(bytes).map_err(|_| Error::usage(format!("{what} from {from} is not UTF-8 text")))
}

/// Reads standard input for `what`, at most `MAX_INPUT` bytes. A secret typed on
/// a terminal (`hidden`) is one line, read with echo off. Call it off the
/// runtime's threads: Ctrl-C (or the deadline) then ends the command at once.
pub fn read_stdin(what: &str, hidden: bool) -> Result<String> {
    use std::io::IsTerminal;
    let stdin = std::io::stdin();
    if hidden && stdin.is_terminal() {
        let _echo = EchoOff::new();
        eprint!("{what} (typed input is hidden): ");
        let mut line = String::new();
        let read = stdin.read_line(&mut line);
        eprintln!();
        read.map_err(|e| Error::usage(format!("cannot read {what} from the terminal: {e}")))?;
        return Ok(line);
    }
    bounded_text(what, "standard input", stdin.lock())
}

/// The terminal's echo, off while it lives. What it turned off is also
/// turned back on by `restore_terminal` (an exit while a secret is read).
struct EchoOff;

#[cfg(unix)]
static SAVED_TERMINAL: std::sync::Mutex<Option<libc::termios>> = std::sync::Mutex::new(None);

impl EchoOff {
    fn new() -> EchoOff {
        #[cfg(unix)]
        {
            // SAFETY: tcgetattr/tcsetattr on standard input, into a zeroed termios they fill in.
            unsafe {
                let mut t: libc::termios = std::mem::zeroed();
                if libc::tcgetattr(0, &mut t) == 0 {
                    *SAVED_TERMINAL.lock().unwrap_or_else(|e| e.into_inner()) = Some(t);
                    let mut quiet = t;
                    quiet.c_lflag &= !libc::ECHO;
                    libc::tcsetattr(0, libc::TCSANOW, &quiet);
                }
            }
        }
        EchoOff
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        restore_terminal();
    }
}

/// Turns the terminal's echo back on if a secret's read turned it off.
pub fn restore_terminal() {
    #[cfg(unix)]
    if let Some(t) = SAVED_TERMINAL.lock().unwrap_or_else(|e| e.into_inner()).take() {
        // SAFETY: restores the attributes read from this terminal before echo was turned off.
        unsafe {
            libc::tcsetattr(0, libc::TCSANOW, &t);
        }
    }
}

#[cfg(test)]
mod input_tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_fifo_a_device_and_a_directory_are_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("values.yaml");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo on a path in a fresh temporary directory.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = read_input("-f", &fifo).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("is a FIFO, not a regular file"), "{e}");
        assert!(read_input("-f", std::path::Path::new("/dev/zero")).unwrap_err().to_string().contains("a device"));
        assert!(read_input("-f", dir.path()).unwrap_err().to_string().contains("a directory"));
    }

    #[test]
    fn a_file_over_the_bound_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.yaml");
        std::fs::write(&big, vec![b'a'; (MAX_INPUT + 1) as usize]).unwrap();
        let e = read_input("-f", &big).unwrap_err();
        assert!(e.to_string().contains("more than 1048576 bytes"), "{e}");
        std::fs::write(&big, "a: 1\n").unwrap();
        assert_eq!(read_input("-f", &big).unwrap(), "a: 1\n");
    }
}
