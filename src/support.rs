//! Whether the ScalarDB a release runs is still supported, decided in one
//! place from the support dates the plugin pins (`pins::SCALARDB_SUPPORT_ENDS`),
//! and what the Kubernetes version must be for a target's chart.

use crate::pins::{CLUSTER_MIN_KUBERNETES_MINOR, GRAPHQL_CHART_VERSION, SCALARDB_SUPPORT_ENDS};
use crate::spec::{Spec, Target};

/// What the pinned dates say of one ScalarDB version.
#[derive(Debug, PartialEq, Eq)]
pub enum Support {
    /// Its support ended on this date (YYYY-MM-DD).
    Ended { version: String, on: &'static str },
    /// Its support ends on this date, later than today.
    Until { version: String, on: &'static str },
    /// Newer than every dated minor: no end of support has been published.
    Current { version: String },
    /// Not a version the plugin can read (a digest, a custom tag).
    Unknown { version: String },
}

/// `3.13.6` → (3, 13); `v3.18.0-SNAPSHOT` → (3, 18).
fn minor_of(version: &str) -> Option<(u32, u32)> {
    let mut parts = version.trim_start_matches('v').split(['.', '-']);
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Today as YYYY-MM-DD (UTC), the form the pinned dates are written in.
pub fn today() -> String {
    let now = aws_smithy_types::DateTime::from(std::time::SystemTime::now());
    now.fmt(aws_smithy_types::date_time::Format::DateTime).unwrap_or_default().chars().take(10).collect()
}

pub fn of(version: &str, today: &str) -> Support {
    let version = version.to_string();
    let Some((major, minor)) = minor_of(&version) else {
        return Support::Unknown { version };
    };
    let dated = SCALARDB_SUPPORT_ENDS.iter().find(|(m, _)| minor_of(m) == Some((major, minor)));
    match dated {
        Some((_, on)) if *on < today => Support::Ended { version, on },
        Some((_, on)) => Support::Until { version, on },
        None if SCALARDB_SUPPORT_ENDS.iter().all(|(m, _)| minor_of(m) < Some((major, minor))) => {
            Support::Current { version }
        }
        // Older than the dated ones: long past its support.
        None => Support::Ended { version, on: "before 2023-08-15" },
    }
}

/// The ScalarDB version a scalardb-graphql chart runs (chart 1.N.p serves 3.(N+5).p).
pub fn graphql_app_version(chart_version: &str) -> Option<String> {
    let mut parts = chart_version.trim_start_matches('v').split('.');
    let (major, minor, patch) = (parts.next()?, parts.next()?.parse::<u32>().ok()?, parts.next()?);
    (major == "1").then(|| format!("3.{}.{patch}", minor + 5))
}

/// The one warning a user deciding on the standalone server reads (install, status, the README).
pub fn ended_warning(version: &str, on: &str) -> String {
    format!(
        "the standalone scalardb-graphql chart is deprecated and runs ScalarDB {version}, whose support ended on {on}; ScalarDB Cluster serves GraphQL now: --target cluster"
    )
}

/// Install's warning for the standalone server's chart, if its ScalarDB is past support.
pub fn install_warning(spec: &Spec) -> Option<String> {
    if spec.target != Target::Graphql {
        return None;
    }
    let chart = spec.chart.version.as_deref().unwrap_or(GRAPHQL_CHART_VERSION);
    match of(&graphql_app_version(chart)?, &today()) {
        Support::Ended { version, on } => Some(ended_warning(&version, on)),
        _ => None,
    }
}

/// Why a target's chart cannot run on this Kubernetes (`v1.30.4-eks-…`), or None.
pub fn kubernetes_refusal(target: Target, git_version: &str) -> Option<String> {
    if target != Target::Cluster {
        return None;
    }
    let minor = minor_of(git_version).map(|(_, m)| m)?;
    (minor < CLUSTER_MIN_KUBERNETES_MINOR).then(|| {
        format!(
            "--target cluster: the scalardb-cluster chart needs Kubernetes 1.{CLUSTER_MIN_KUBERNETES_MINOR} or newer; this cluster runs {git_version}"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn support_follows_the_pinned_dates() {
        assert_eq!(of("3.13.6", "2026-12-07"), Support::Ended { version: "3.13.6".into(), on: "2026-05-21" });
        assert_eq!(of("3.13.6", "2026-05-20"), Support::Until { version: "3.13.6".into(), on: "2026-05-21" });
        assert_eq!(of("3.18.0", "2026-12-07"), Support::Current { version: "3.18.0".into() });
        assert!(matches!(of("3.3.1", "2026-12-07"), Support::Ended { .. }));
        assert!(matches!(of("latest", "2026-12-07"), Support::Unknown { .. }));
        assert_eq!(graphql_app_version("1.8.6").as_deref(), Some("3.13.6"));
        assert_eq!(graphql_app_version("1.7.2").as_deref(), Some("3.12.2"));
        assert!(today().len() == 10 && today().starts_with("20"));
    }

    #[test]
    fn the_cluster_chart_needs_kubernetes_1_31() {
        assert!(kubernetes_refusal(Target::Cluster, "v1.30.9-eks-1234").is_some());
        assert!(kubernetes_refusal(Target::Cluster, "v1.31.0").is_none());
        assert!(kubernetes_refusal(Target::Graphql, "v1.29.0").is_none());
    }
}
