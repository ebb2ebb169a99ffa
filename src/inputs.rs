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
        .hint(format!("pass {flag} ns1,ns2 with the namespaces of your schema")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
