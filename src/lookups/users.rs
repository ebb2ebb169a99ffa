//! Who else uses the pieces that several releases share, read from the live
//! cluster, and uninstall's one decision about them (`Shared`).
//!
//! The controller (with its ServiceAccount, CRDs, the subnet tags it finds
//! subnets by, and its IAM) is used by every other release of this tool and
//! by everything else the controller serves: Ingresses of any IngressClass
//! of its controller (or its class annotation), TargetGroupBindings made by
//! hand, Services of its load balancer class, Gateways of its
//! GatewayClasses. The dedicated nodes' label and taint are used by other
//! releases with the same node pool, and the namespace's readiness-gate
//! label by other releases in the same namespace.
//!
//! Another release of this tool is found by its install record in any
//! namespace. A record is only a word, but here a word can only make
//! uninstall keep more, never remove more. What cannot be read (a list the
//! caller may not make) keeps the shared pieces too, and says so.

use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::api::{Api, DynamicObject, ListParams};
use kube::discovery::ApiResource;

use crate::component::{Env, Kept, Shared};
use crate::error::Result;
use crate::pins::{ANNOTATION_PREFIX, MANAGED_BY, MANAGED_BY_KEY};
use crate::record::{self, Record};
use crate::spec::NodeSpec;

use super::{ReleaseIngress, controller_deployments};

/// The IngressClass controller name the controller serves.
pub const INGRESS_CLASS_CONTROLLER: &str = crate::pins::LBC_CLASS_CONTROLLER;
/// The controller's defaults for `--ingress-class` and `--load-balancer-class`.
const DEFAULT_INGRESS_CLASS: &str = "alb";
const DEFAULT_LOAD_BALANCER_CLASS: &str = "service.k8s.aws/nlb";
/// The GatewayClass controller names the controller serves (v3: Gateway API).
const GATEWAY_CONTROLLERS: &[&str] = &["gateway.k8s.aws/alb", "gateway.k8s.aws/nlb"];
/// How many names a reason lists before "and N more".
const NAMED: usize = 3;

/// Another release of this tool, as its install record tells.
#[derive(Debug, Clone, PartialEq)]
pub struct OtherRelease {
    pub namespace: String,
    pub release: String,
    /// Its dedicated node pool; None when it has none or its record cannot be read.
    pub nodes: Option<NodeSpec>,
    /// Its record could not be read: it may use anything.
    pub unreadable: bool,
}

impl OtherRelease {
    fn display(&self) -> String {
        format!("{}/{}", self.namespace, self.release)
    }
}

/// What else uses the shared pieces.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Users {
    /// Other releases of this tool still installed on the cluster.
    pub releases: Vec<OtherRelease>,
    /// What else the controller serves, e.g. `Ingress team-b/web`.
    pub controller: Vec<String>,
    /// What could not be read, so cannot be ruled out.
    pub unknown: Vec<String>,
    /// The controller's release exists and is not this tool's: its identity (ServiceAccount, IAM) may be ours.
    pub foreign_controller: bool,
}

/// What the user asked of uninstall about the shared pieces.
#[derive(Debug, Clone, Copy, Default)]
pub struct Asked {
    pub keep_iam: bool,
    pub keep_lb_controller: bool,
    pub force: bool,
}

fn listing(names: &[String]) -> String {
    let shown: Vec<&str> = names.iter().take(NAMED).map(String::as_str).collect();
    match names.len().saturating_sub(NAMED) {
        0 => shown.join(", "),
        more => format!("{} and {more} more", shown.join(", ")),
    }
}

fn releases_phrase(releases: &[&OtherRelease]) -> String {
    let names: Vec<String> = releases.iter().map(|r| r.display()).collect();
    format!(
        "{} {} still {}",
        if names.len() == 1 { "release" } else { "releases" },
        listing(&names),
        if names.len() == 1 { "uses it" } else { "use it" }
    )
}

/// Uninstall's one decision about the shared pieces, from what uses them and what was asked.
pub fn decide(asked: Asked, users: &Users, namespace: &str, nodes: Option<&NodeSpec>) -> Shared {
    let others: Vec<&OtherRelease> = users.releases.iter().collect();
    let controller = if asked.keep_lb_controller {
        Some(Kept { reason: "--keep-lb-controller".into(), later: true })
    } else if asked.force {
        None
    } else if !others.is_empty() {
        // That release removes them itself when it is uninstalled last.
        Some(Kept { reason: releases_phrase(&others), later: false })
    } else if !users.controller.is_empty() {
        Some(Kept {
            reason: format!("the controller still serves {} (--force removes it anyway)", listing(&users.controller)),
            later: true,
        })
    } else if !users.unknown.is_empty() {
        Some(Kept {
            reason: format!(
                "cannot tell whether anything else uses the controller: {} (--force removes it anyway)",
                listing(&users.unknown)
            ),
            later: true,
        })
    } else {
        None
    };
    // A controller this tool did not install may run with the identity this tool made.
    let foreign = (users.foreign_controller && !asked.force).then(|| Kept {
        reason: "the controller's release is not this tool's, and may run with it".into(),
        later: false,
    });
    let iam = if asked.keep_iam {
        Some(Kept { reason: "--keep-iam".into(), later: true })
    } else {
        controller
            .as_ref()
            .map(|k| Kept { reason: format!("the controller stays and needs it ({})", k.reason), later: k.later })
            .or(foreign.clone())
    };
    let service_account = controller.clone().or(foreign);
    let same_pool = |theirs: &OtherRelease| {
        theirs.unreadable
            || nodes.zip(theirs.nodes.as_ref()).is_some_and(|(ours, theirs)| {
                (ours.label_key == theirs.label_key && ours.label_value == theirs.label_value)
                    || (ours.taint.key == theirs.taint.key && ours.taint.effect == theirs.taint.effect)
            })
    };
    let pool: Vec<&OtherRelease> = others.iter().copied().filter(|r| same_pool(r)).collect();
    let nodes = (nodes.is_some() && !pool.is_empty() && !asked.force)
        .then(|| Kept { reason: format!("the same node pool: {}", releases_phrase(&pool)), later: false });
    let here: Vec<&OtherRelease> = others.iter().copied().filter(|r| r.namespace == namespace).collect();
    let namespace_label = (!here.is_empty()).then(|| Kept { reason: releases_phrase(&here), later: false });
    Shared { controller, service_account, iam, nodes, namespace_label }
}

/// Reads who else uses the shared pieces and decides; `ours` is the release's Ingress.
pub async fn shared(env: &Env, ours: &ReleaseIngress) -> Result<Shared> {
    let asked = Asked {
        keep_iam: env.options.keep_iam,
        keep_lb_controller: env.options.keep_lb_controller,
        force: env.options.force,
    };
    let users = users(env, ours).await?;
    Ok(decide(asked, &users, &env.spec.namespace, env.spec.nodes.as_ref()))
}

/// A list the caller may not make (or that cannot be read) is something that cannot be ruled out.
fn unknown(users: &mut Users, what: &str, e: kube::Error) -> Result<()> {
    match e {
        kube::Error::Api(s) if s.code == 403 || s.code == 401 => {
            users.unknown.push(format!("{what} cannot be listed ({})", s.message));
            Ok(())
        }
        e => Err(crate::error::Error::Other(anyhow::Error::new(e).context(format!("listing {what}")))),
    }
}

pub async fn users(env: &Env, ours: &ReleaseIngress) -> Result<Users> {
    let mut users = Users::default();
    let (records, deployments) = tokio::join!(other_releases(env), controller_deployments(env));
    match records {
        Ok(r) => users.releases = r,
        Err(e) => unknown(&mut users, "install records in every namespace", e)?,
    }
    let deployments = deployments?;
    let lbc = &env.spec.lb_controller;
    let release = crate::releases::read(env.kube(), || env.ctx.helm(), &lbc.namespace, &lbc.release).await?;
    users.foreign_controller = release.is_some_and(|r| !r.marked);
    let flag =
        |name: &str, default: &str| super::controller_flag(&deployments, name).unwrap_or_else(|| default.to_string());
    let (ingress_class, lb_class) =
        (flag("--ingress-class", DEFAULT_INGRESS_CLASS), flag("--load-balancer-class", DEFAULT_LOAD_BALANCER_CLASS));
    let client = env.kube();
    let (ingresses, services, bindings, gateways) = tokio::join!(
        served_ingresses(client, &ingress_class, ours),
        served_services(client, &lb_class),
        hand_made_bindings(client),
        served_gateways(client),
    );
    for (found, what) in [
        (ingresses, "Ingresses and IngressClasses"),
        (services, "Services"),
        (bindings, "TargetGroupBindings"),
        (gateways, "Gateways and GatewayClasses"),
    ] {
        match found {
            Ok(names) => users.controller.extend(names),
            Err(e) => unknown(&mut users, what, e)?,
        }
    }
    Ok(users)
}

/// Other releases of this tool: install records (this tool's label, the record's name) in
/// every namespace, other than this release's, except those an uninstall kept only for
/// what it left in place (an unreadable one counts: it may use anything).
async fn other_releases(env: &Env) -> kube::Result<Vec<OtherRelease>> {
    let api: Api<ConfigMap> = Api::all(env.kube().clone());
    let found = api.list(&ListParams::default().labels(&format!("{MANAGED_BY_KEY}={MANAGED_BY}"))).await?;
    let mut releases = vec![];
    for cm in found {
        let namespace = cm.metadata.namespace.clone().unwrap_or_default();
        let name = cm.metadata.name.clone().unwrap_or_default();
        let Some(release) = name.strip_suffix(record::NAME_SUFFIX) else { continue };
        if namespace == env.spec.namespace && release == env.spec.release {
            continue;
        }
        let parsed: Option<Record> = record::parse(&cm).ok();
        let (installed, nodes, unreadable) = match &parsed {
            // An install under way (its spec written, its chart not yet) counts too.
            Some(r) => (!r.uninstalled, r.spec.as_ref().and_then(|s| s.nodes.clone()), false),
            None => (true, None, true),
        };
        if installed {
            releases.push(OtherRelease { namespace, release: release.to_string(), nodes, unreadable });
        }
    }
    releases.sort_by_key(|r| r.display());
    Ok(releases)
}

fn annotation<'a>(meta: &'a kube::api::ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

fn display(meta: &kube::api::ObjectMeta) -> String {
    format!("{}/{}", meta.namespace.as_deref().unwrap_or_default(), meta.name.as_deref().unwrap_or_default())
}

/// Ingresses the controller serves, other than the release's own: its class annotation
/// (which wins when present), an IngressClass of its controller, no class while a default
/// IngressClass of its controller exists, or its finalizer still on them.
async fn served_ingresses(
    client: &kube::Client,
    ingress_class: &str,
    ours: &ReleaseIngress,
) -> kube::Result<Vec<String>> {
    let classes: Api<IngressClass> = Api::all(client.clone());
    let classes = classes.list(&ListParams::default()).await?;
    let served: Vec<String> = classes
        .iter()
        .filter(|c| c.spec.as_ref().and_then(|s| s.controller.as_deref()) == Some(INGRESS_CLASS_CONTROLLER))
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    let default_served = classes.iter().any(|c| {
        annotation(&c.metadata, "ingressclass.kubernetes.io/is-default-class") == Some("true")
            && c.spec.as_ref().and_then(|s| s.controller.as_deref()) == Some(INGRESS_CLASS_CONTROLLER)
    });
    let ingresses: Api<Ingress> = Api::all(client.clone());
    Ok(ingresses
        .list(&ListParams::default())
        .await?
        .into_iter()
        .filter(|i| display(&i.metadata) != ours.display())
        .filter_map(|i| {
            let finalized = i
                .metadata
                .finalizers
                .iter()
                .flatten()
                .any(|f| f == crate::pins::INGRESS_FINALIZER || f.starts_with("group.ingress.k8s.aws/"));
            let class_name = i.spec.as_ref().and_then(|s| s.ingress_class_name.clone());
            let why = match (annotation(&i.metadata, "kubernetes.io/ingress.class"), &class_name) {
                (Some(a), _) => (a == ingress_class).then(|| format!("class {a}")),
                (None, Some(c)) => served.contains(c).then(|| format!("class {c}")),
                (None, None) => default_served.then(|| "the default IngressClass".to_string()),
            }
            .or_else(|| finalized.then(|| "its finalizer".to_string()));
            let group = annotation(&i.metadata, &format!("{ANNOTATION_PREFIX}group.name"))
                .map(|g| format!(", group {g}"))
                .unwrap_or_default();
            why.map(|why| format!("Ingress {} ({why}{group})", display(&i.metadata)))
        })
        .collect())
}

/// Services of the controller's load balancer class, or of its annotations, or with its finalizer.
async fn served_services(client: &kube::Client, lb_class: &str) -> kube::Result<Vec<String>> {
    let api: Api<Service> = Api::all(client.clone());
    Ok(api
        .list(&ListParams::default())
        .await?
        .into_iter()
        .filter(|s| {
            let class = s.spec.as_ref().and_then(|s| s.load_balancer_class.as_deref());
            let kind = annotation(&s.metadata, "service.beta.kubernetes.io/aws-load-balancer-type");
            let target = annotation(&s.metadata, "service.beta.kubernetes.io/aws-load-balancer-nlb-target-type");
            let finalized = s.metadata.finalizers.iter().flatten().any(|f| f == "service.k8s.aws/resources");
            finalized
                || match class {
                    Some(c) => c == lb_class,
                    None => {
                        kind == Some("nlb-ip")
                            || (kind == Some("external") && matches!(target, Some("ip" | "instance")))
                    }
                }
        })
        .map(|s| format!("Service {}", display(&s.metadata)))
        .collect())
}

/// TargetGroupBindings made by hand (the controller labels those it makes for an Ingress's stack).
async fn hand_made_bindings(client: &kube::Client) -> kube::Result<Vec<String>> {
    let resource = ApiResource {
        group: "elbv2.k8s.aws".into(),
        version: "v1beta1".into(),
        api_version: "elbv2.k8s.aws/v1beta1".into(),
        kind: "TargetGroupBinding".into(),
        plural: "targetgroupbindings".into(),
    };
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
    let list = match api.list(&ListParams::default()).await {
        Err(kube::Error::Api(e)) if e.code == 404 => return Ok(vec![]), // no such CRD
        other => other?,
    };
    Ok(list
        .items
        .into_iter()
        .filter(|b| {
            let labels = b.metadata.labels.clone().unwrap_or_default();
            !labels.keys().any(|k| k.starts_with("ingress.k8s.aws/stack") || k.starts_with("service.k8s.aws/stack"))
        })
        .map(|b| format!("TargetGroupBinding {}", display(&b.metadata)))
        .collect())
}

/// Gateways of a GatewayClass the controller serves (when the Gateway API is installed).
async fn served_gateways(client: &kube::Client) -> kube::Result<Vec<String>> {
    let resource = |kind: &str, plural: &str| ApiResource {
        group: "gateway.networking.k8s.io".into(),
        version: "v1".into(),
        api_version: "gateway.networking.k8s.io/v1".into(),
        kind: kind.into(),
        plural: plural.into(),
    };
    let classes: Api<DynamicObject> = Api::all_with(client.clone(), &resource("GatewayClass", "gatewayclasses"));
    let classes = match classes.list(&ListParams::default()).await {
        Err(kube::Error::Api(e)) if e.code == 404 => return Ok(vec![]), // no Gateway API
        other => other?,
    };
    let served: Vec<String> = classes
        .items
        .iter()
        .filter(|c| c.data["spec"]["controllerName"].as_str().is_some_and(|n| GATEWAY_CONTROLLERS.contains(&n)))
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    if served.is_empty() {
        return Ok(vec![]);
    }
    let gateways: Api<DynamicObject> = Api::all_with(client.clone(), &resource("Gateway", "gateways"));
    Ok(gateways
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|g| g.data["spec"]["gatewayClassName"].as_str().is_some_and(|c| served.iter().any(|s| s == c)))
        .map(|g| format!("Gateway {}", display(&g.metadata)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Taint;

    fn release(ns: &str, name: &str, nodes: Option<NodeSpec>) -> OtherRelease {
        OtherRelease { namespace: ns.into(), release: name.into(), nodes, unreadable: false }
    }

    fn pool(label: &str, taint: &str) -> NodeSpec {
        NodeSpec {
            label_key: "agentpool".into(),
            label_value: label.into(),
            taint: Taint { key: taint.into(), value: "x".into(), effect: "NoSchedule".into() },
            names: vec![],
        }
    }

    #[test]
    fn another_release_keeps_the_controller_and_iam_and_removes_them_itself_later() {
        let users = Users { releases: vec![release("team-a", "gql", None)], ..Default::default() };
        let s = decide(Asked::default(), &users, "team-b", None);
        let c = s.controller.expect("kept");
        assert_eq!(c.reason, "release team-a/gql still uses it");
        assert!(!c.later, "the other release's uninstall removes it; this record need not stay");
        assert!(s.iam.unwrap().reason.contains("team-a/gql"));
        assert_eq!(s.namespace_label, None, "another namespace");
    }

    #[test]
    fn foreign_users_and_unknowns_keep_it_for_a_later_uninstall_unless_forced() {
        let users = Users { controller: vec!["Ingress team-b/web (class alb)".into()], ..Default::default() };
        let s = decide(Asked::default(), &users, "ns", None);
        assert!(s.controller.as_ref().unwrap().later);
        assert!(s.controller.unwrap().reason.contains("Ingress team-b/web"));
        let forced = decide(Asked { force: true, ..Default::default() }, &users, "ns", None);
        assert_eq!((forced.controller, forced.iam), (None, None));
        let theirs = Users { foreign_controller: true, ..Default::default() };
        let s = decide(Asked::default(), &theirs, "ns", None);
        assert_eq!(s.controller, None, "its release, CRDs and subnet tags are judged by their own marks");
        assert!(s.iam.unwrap().reason.contains("not this tool's"));
        assert!(s.service_account.is_some());
        let blind = Users { unknown: vec!["Services cannot be listed (forbidden)".into()], ..Default::default() };
        assert!(decide(Asked::default(), &blind, "ns", None).controller.unwrap().reason.contains("cannot tell"));
    }

    #[test]
    fn flags_keep_for_a_later_uninstall() {
        let s = decide(Asked { keep_iam: true, ..Default::default() }, &Users::default(), "ns", None);
        assert_eq!(s.controller, None);
        assert_eq!(s.iam, Some(Kept { reason: "--keep-iam".into(), later: true }));
        let s = decide(Asked { keep_lb_controller: true, ..Default::default() }, &Users::default(), "ns", None);
        assert!(s.iam.unwrap().reason.contains("--keep-lb-controller"));
        assert_eq!(decide(Asked::default(), &Users::default(), "ns", None), Shared::default());
    }

    #[test]
    fn nodes_are_kept_only_for_a_release_of_the_same_pool_and_the_label_for_one_in_the_same_namespace() {
        let ours = pool("gql", "dedicated");
        let other_pool = release("b", "x", Some(pool("other", "other")));
        let same_taint = release("default", "y", Some(pool("other", "dedicated")));
        let users = Users { releases: vec![other_pool.clone()], ..Default::default() };
        assert_eq!(decide(Asked::default(), &users, "default", Some(&ours)).nodes, None);
        let users = Users { releases: vec![other_pool, same_taint], ..Default::default() };
        let s = decide(Asked::default(), &users, "default", Some(&ours));
        assert!(s.nodes.unwrap().reason.contains("default/y"));
        assert!(s.namespace_label.unwrap().reason.contains("default/y"));
        let many: Vec<OtherRelease> = (0..5).map(|i| release("n", &format!("r{i}"), None)).collect();
        let s = decide(Asked::default(), &Users { releases: many, ..Default::default() }, "ns", None);
        assert_eq!(s.controller.unwrap().reason, "releases n/r0, n/r1, n/r2 and 2 more still use it");
    }
}
