//! The release's Ingress (the chart's, or with `--target cluster` the one
//! `owned_ingress` makes), as the AWS Load Balancer Controller reads it:
//! class `alb`, `target-type: ip`, a correctly spelled
//! `stickiness.enabled=true` in `target-group-attributes`, and a hostname
//! once the controller made the ALB. Owns nothing; install waits for the
//! hostname.

use crate::component::Env;
use crate::component::{Action, Category, Check, Component, Verb};
use crate::error::{Context, Result};
use crate::lookups;
use crate::pins::ANNOTATION_PREFIX;
use crate::record::Recorder;
use crate::wait;
use async_trait::async_trait;

/// Target-group attribute keys ELBv2 accepts for an ALB's target groups.
pub const TARGET_GROUP_ATTRIBUTES: &[&str] = &[
    "deregistration_delay.timeout_seconds",
    "slow_start.duration_seconds",
    "load_balancing.algorithm.type",
    "load_balancing.algorithm.anomaly_mitigation",
    "load_balancing.cross_zone.enabled",
    "stickiness.enabled",
    "stickiness.type",
    "stickiness.lb_cookie.duration_seconds",
    "stickiness.app_cookie.cookie_name",
    "stickiness.app_cookie.duration_seconds",
    "target_group_health.dns_failover.minimum_healthy_targets.count",
    "target_group_health.dns_failover.minimum_healthy_targets.percentage",
    "target_group_health.unhealthy_state_routing.minimum_healthy_targets.count",
    "target_group_health.unhealthy_state_routing.minimum_healthy_targets.percentage",
];

#[derive(Default)]
pub struct Ingress {
    seen: Option<Seen>,
}

#[derive(Clone, Default)]
pub struct Seen {
    /// `namespace/name` as the chart rendered it.
    pub name: String,
    pub exists: bool,
    pub class: Option<String>,
    pub annotations: std::collections::BTreeMap<String, String>,
    pub hostname: Option<String>,
    /// The controller's last Warning event on it, while it has no hostname.
    pub last_warning: Option<String>,
    /// The IngressClass it names, as the cluster has it: (controller, parameters and whether they exist).
    pub ingress_class: Option<ClassSeen>,
    /// IngressClasses marked as the cluster's default.
    pub default_classes: Vec<String>,
    /// The controller's warnings on it (and its IngressGroup's members) since its last successful reconcile.
    pub failures_since_success: Vec<String>,
    /// When the controller last reconciled it successfully, if it says.
    pub last_success: Option<String>,
    /// Being deleted: for how long, and the finalizers that hold it.
    pub terminating: Option<(std::time::Duration, Vec<String>)>,
    /// The release namespace is being deleted: for how long, and what its status says is left.
    pub namespace_terminating: Option<(std::time::Duration, String)>,
    /// Whether a controller pod is available (read only while something is terminating).
    pub controller_up: bool,
}

/// An IngressClass, as the Ingress would meet it.
#[derive(Clone, Default)]
pub struct ClassSeen {
    pub controller: String,
    /// `Kind name` of its parameters, and whether that object exists.
    pub parameters: Option<(String, bool)>,
}

/// How long something may terminate before `status` says what holds it.
pub const STUCK_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// What is wrong with a `target-group-attributes` value for a sticky ALB; None when right.
pub fn stickiness_problem(value: Option<&str>) -> Option<String> {
    let Some(value) = value else {
        return Some("no target-group-attributes annotation: the target group is not sticky".into());
    };
    let mut enabled = None;
    for pair in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((key, v)) = pair.split_once('=') else {
            return Some(format!("{pair:?} is not key=value"));
        };
        let key = key.trim();
        if !TARGET_GROUP_ATTRIBUTES.contains(&key) {
            let close = TARGET_GROUP_ATTRIBUTES
                .iter()
                .min_by_key(|k| edit_distance(key, k))
                .filter(|k| edit_distance(key, k) <= 3);
            return Some(match close {
                Some(k) => format!(
                    "unknown attribute {key:?} (did you mean {k:?}?); ELBv2 rejects it and the controller stops reconciling"
                ),
                None => format!("unknown attribute {key:?}; ELBv2 rejects it"),
            });
        }
        if key == "stickiness.enabled" {
            enabled = Some(v.trim().to_string());
        }
        if key == "stickiness.type" && v.trim() != "lb_cookie" {
            return Some(format!("stickiness.type={} (the AWSALB cookie needs lb_cookie)", v.trim()));
        }
    }
    match enabled.as_deref() {
        Some("true") => None,
        Some(other) => Some(format!("stickiness.enabled={other}, not true")),
        None => Some("stickiness.enabled=true is missing".into()),
    }
}

impl Ingress {
    pub async fn look(env: &Env) -> Result<Seen> {
        let found = lookups::release_ingress(env, &crate::values::release(&env.spec, &env.options.user_values)).await?;
        let name = found.display();
        let hostname = found.hostname();
        let Some(ing) = found.ingress.clone() else {
            return Ok(Seen { name, ..Default::default() });
        };
        // Only while there is no hostname does the controller's last word matter.
        let last_warning = match hostname {
            Some(_) => None,
            None => lookups::last_warning(env, &found.namespace, "Ingress", &found.name).await?,
        };
        // The annotation wins over the field, as the controller reads them.
        let class = ing
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("kubernetes.io/ingress.class").cloned())
            .or_else(|| ing.spec.as_ref().and_then(|s| s.ingress_class_name.clone()));
        let mut members =
            vec![(found.namespace.clone(), found.name.clone(), ing.metadata.uid.clone().unwrap_or_default())];
        if let Some(group) = found.group() {
            members.extend(lookups::group_member_ids(env, group, &found).await?);
        }
        let (classes, history, namespace) = tokio::join!(
            Self::classes(env, class.as_deref()),
            lookups::controller_history(env, &members),
            lookups::namespace_terminating(env, &found.namespace)
        );
        let (ingress_class, default_classes) = classes?;
        let history = history?;
        let terminating = ing
            .metadata
            .deletion_timestamp
            .as_ref()
            .map(|t| (lookups::age(&t.0), ing.metadata.finalizers.clone().unwrap_or_default()));
        let namespace_terminating = namespace?;
        let stuck = terminating.as_ref().is_some_and(|(age, _)| *age > STUCK_AFTER)
            || namespace_terminating.as_ref().is_some_and(|(age, _)| *age > STUCK_AFTER);
        let controller_up = if stuck { lookups::controller_up(env).await? } else { true };
        Ok(Seen {
            name,
            last_warning,
            exists: true,
            class,
            annotations: ing.metadata.annotations.clone().unwrap_or_default(),
            hostname,
            ingress_class,
            default_classes,
            failures_since_success: history.failures_since_success,
            last_success: history.last_success,
            terminating,
            namespace_terminating,
            controller_up,
        })
    }

    /// The IngressClass named `class`, and every IngressClass marked as the default.
    async fn classes(env: &Env, class: Option<&str>) -> Result<(Option<ClassSeen>, Vec<String>)> {
        use k8s_openapi::api::networking::v1::IngressClass;
        let api: kube::Api<IngressClass> = kube::Api::all(env.kube().clone());
        let all = api.list(&Default::default()).await.context("listing IngressClasses")?;
        let defaults = all
            .iter()
            .filter(|c| {
                c.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get("ingressclass.kubernetes.io/is-default-class"))
                    .is_some_and(|v| v == "true")
            })
            .filter_map(|c| c.metadata.name.clone())
            .collect();
        let Some(found) = all.iter().find(|c| class.is_some() && c.metadata.name.as_deref() == class) else {
            return Ok((None, defaults));
        };
        let spec = found.spec.clone().unwrap_or_default();
        let parameters = match spec.parameters {
            None => None,
            Some(p) => {
                let exists = lookups::object_exists(
                    env,
                    p.api_group.as_deref().unwrap_or_default(),
                    &p.kind,
                    &p.name,
                    p.namespace.as_deref(),
                )
                .await?;
                Some((format!("{} {}", p.kind, p.name), exists))
            }
        };
        Ok((Some(ClassSeen { controller: spec.controller.unwrap_or_default(), parameters }), defaults))
    }

    pub fn annotation<'a>(seen: &'a Seen, key: &str) -> Option<&'a str> {
        seen.annotations.get(&format!("{ANNOTATION_PREFIX}{key}")).map(String::as_str)
    }
}

#[async_trait]
impl Component for Ingress {
    fn name(&self) -> &'static str {
        "Ingress"
    }

    fn category(&self) -> Category {
        Category::Ingress
    }

    async fn observe(&mut self, env: &Env) -> Result<()> {
        self.seen = Some(Self::look(env).await?);
        Ok(())
    }

    fn plan(&self, env: &Env) -> Result<Vec<Action>> {
        let seen = self.seen.as_ref().expect("observed");
        let mut actions = vec![];
        if nudge(seen) {
            actions.push(
                Action::kube(Verb::Update, "Ingress", &seen.name)
                    .because(format!("annotate {RECONCILE_ANNOTATION}: the controller has failed on it since its last success and backs off for up to 16 minutes; a change makes it try again now")),
            );
        }
        if env.options.wait && seen.hostname.is_none() {
            actions.push(Action::wait(format!("Ingress {} has its ALB hostname", seen.name)));
        }
        Ok(actions)
    }

    async fn apply(&mut self, env: &Env, _record: &mut Recorder) -> Result<()> {
        if let Some(seen) = self.seen.as_ref().filter(|s| nudge(s)) {
            let (namespace, name) = seen.name.split_once('/').unwrap_or(("default", &seen.name));
            let api: kube::Api<k8s_openapi::api::networking::v1::Ingress> =
                kube::Api::namespaced(env.kube().clone(), namespace);
            let patch = serde_json::json!({"metadata": {"annotations": {RECONCILE_ANNOTATION: lookups::now_stamp()}}});
            match api.patch(name, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch)).await {
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                done => {
                    done.context(format!("annotating Ingress {} for the controller", seen.name))?;
                    env.progress.done(&format!("asked the controller to reconcile Ingress {} again", seen.name));
                }
            }
        }
        if !env.options.wait {
            return Ok(());
        }
        let name = self.seen.as_ref().map(|s| s.name.clone()).unwrap_or_default();
        let seen = wait::until(env, &format!("Ingress {name} to get its ALB hostname"), || async {
            let now = Self::look(env).await?;
            Ok(match (&now.hostname, now.exists) {
                (Some(_), _) => Ok(now),
                (None, true) => Err(match &now.last_warning {
                    Some(w) => format!("no hostname yet; the controller says: {w}"),
                    None => "no hostname yet (the controller has not made the ALB)".into(),
                }),
                (None, false) => Err("no Ingress yet".into()),
            })
        })
        .await?;
        env.progress.done(&format!("Ingress {name} has ALB {}", seen.hostname.as_deref().unwrap_or_default()));
        self.seen = Some(seen);
        Ok(())
    }

    async fn checks(&self, env: &Env) -> Vec<Check> {
        let seen = self.seen.as_ref().expect("observed");
        let c = Category::Ingress;
        let name = &seen.name;
        if !seen.exists {
            return vec![
                Check::fail(c, "ingress.class", format!("Ingress {name} does not exist"))
                    .hint("the release must have ingress.enabled=true; re-run install"),
            ];
        }
        let class = class_check(seen, name, &env.spec.lb_controller);
        let target_type = match Self::annotation(seen, "target-type") {
            Some("ip") => Check::pass(c, "ingress.target-type", "target-type: ip (pods are targets)"),
            other => Check::fail(
                c,
                "ingress.target-type",
                format!(
                    "target-type is {}: cookie stickiness to a pod needs target-type ip",
                    other
                        .map(|v| format!("{v:?}"))
                        .unwrap_or_else(|| "unset (the controller's default is instance)".into())
                ),
            )
            .hint(format!("annotate {ANNOTATION_PREFIX}target-type: ip (re-run install)")),
        };
        let attributes = Self::annotation(seen, "target-group-attributes");
        let stickiness = match stickiness_problem(attributes) {
            None => Check::pass(c, "ingress.stickiness", "target-group-attributes enable stickiness"),
            Some(problem) => Check::fail(c, "ingress.stickiness", format!("target-group-attributes: {problem}"))
                .hint("use stickiness.enabled=true,stickiness.type=lb_cookie,stickiness.lb_cookie.duration_seconds=60 (re-run install)"),
        };
        let hostname = match &seen.hostname {
            Some(h) => Check::pass(c, "ingress.hostname", format!("hostname {h}")),
            None => Check::fail(
                c,
                "ingress.hostname",
                match &seen.last_warning {
                    Some(w) => format!("no ALB hostname; the controller's last warning: {w}"),
                    None => "no ALB hostname: the controller has not made the ALB".into(),
                },
            )
            .hint(format!("kubectl describe ingress -n {} shows the controller's events", name.replace('/', " "))),
        };
        let events = match (&seen.failures_since_success[..], &seen.last_success) {
            ([], Some(at)) => {
                Check::pass(c, "ingress.controller-events", format!("the controller's last reconcile succeeded ({at})"))
            }
            ([], None) => Check::pass(c, "ingress.controller-events", "no warning from the controller"),
            (failures, since) => Check::fail(
                c,
                "ingress.controller-events",
                format!(
                    "the controller failed to reconcile {}: {}",
                    since.as_ref().map(|at| format!("since its last success ({at})")).unwrap_or_default(),
                    failures.join("; ")
                ),
            )
            .hint(explain(failures).unwrap_or_else(|| {
                format!(
                    "the ALB no longer follows the Ingress until this is fixed (a permission, a subnet, an annotation): kubectl describe ingress -n {}",
                    name.replace('/', " ")
                )
            })),
        };
        vec![class, target_type, stickiness, hostname, events, deletion_check(seen, name)]
    }

    fn removal(&self, _env: &Env) -> Result<Vec<Action>> {
        Ok(vec![]) // the release owns the Ingress
    }

    async fn remove(&mut self, _env: &Env, _record: &mut Recorder) -> Result<()> {
        Ok(())
    }
}

/// The annotation install changes on the release's Ingress to make the controller reconcile it
/// now: after a failure the controller retries with a per-object back-off (5 ms doubling to
/// 1000 s), and a fixed prerequisite (a permission, the trust, a subnet tag) changes nothing
/// it watches.
pub const RECONCILE_ANNOTATION: &str = "kubectl-scalardb-graphql/reconcile-requested";

/// Whether install asks the controller to reconcile the Ingress again: it exists, is not being
/// deleted, and the controller has failed on it since its last success.
fn nudge(seen: &Seen) -> bool {
    seen.exists && seen.terminating.is_none() && !seen.failures_since_success.is_empty()
}

/// What a controller failure means for this tool's pieces: the IAM check that explains it.
fn explain(failures: &[String]) -> Option<String> {
    let all = failures.join(" ");
    if all.contains("AssumeRoleWithWebIdentity") {
        if all.contains("No OpenIDConnect provider") || all.contains("Incorrect token audience") {
            return Some("STS does not know the cluster's OIDC issuer, or not for audience sts.amazonaws.com: see iam.oidc-provider; re-run install".into());
        }
        return Some("STS refused the controller's ServiceAccount token for its role: see iam.role-trust (the role must trust exactly this ServiceAccount) and iam.service-account; re-run install".into());
    }
    if all.contains("no EC2 IMDS role found") || all.contains("NoCredentialProviders") {
        return Some("the controller's pods have no IRSA credentials (created before the ServiceAccount's role annotation): see iam.pod-identity; re-run install, which restarts them".into());
    }
    if let Some(at) = all.find("is not authorized to perform: ") {
        let action = all[at + "is not authorized to perform: ".len()..].split([' ', ',']).next().unwrap_or_default();
        return Some(format!(
            "the controller's role may not call {action}: see iam.policy and iam.policy-attached; re-run install to attach the pinned policy"
        ));
    }
    None
}

/// `ingress.class`: the class the Ingress names exists, belongs to the controller, its
/// parameters exist, and no second default class makes the controller refuse classless Ingresses.
fn class_check(seen: &Seen, name: &str, lbc: &crate::spec::LbcSpec) -> Check {
    let c = Category::Ingress;
    let wanted = &lbc.ingress_class;
    let controller = lbc.class_controller();
    let hint = format!(
        "install makes IngressClass {wanted}: re-run install (it puts it back), and set ingress.className: {wanted}"
    );
    let Some(class) = seen.class.as_deref() else {
        return Check::fail(c, "ingress.class", format!("Ingress {name} names no IngressClass")).hint(&hint);
    };
    let problem = match &seen.ingress_class {
        None => {
            Some(format!("Ingress {name} names IngressClass {class}, which does not exist: no controller serves it"))
        }
        Some(k) if k.controller != controller => Some(format!(
            "IngressClass {class} belongs to controller {:?}, not {controller}: the release's ALB controller ignores Ingress {name}",
            k.controller
        )),
        Some(ClassSeen { parameters: Some((params, false)), .. }) => Some(format!(
            "IngressClass {class} names parameters {params}, which do not exist: the controller refuses it"
        )),
        Some(_) => None,
    };
    if let Some(problem) = problem {
        return Check::fail(c, "ingress.class", problem).hint(&hint);
    }
    if seen.default_classes.len() > 1 {
        return Check::warn(
            c,
            "ingress.class",
            format!(
                "Ingress {name} has class {class}, but several IngressClasses are marked default ({}): the controller refuses Ingresses without a class",
                seen.default_classes.join(", ")
            ),
        )
        .hint("keep ingressclass.kubernetes.io/is-default-class=true on one IngressClass only");
    }
    Check::pass(c, "ingress.class", format!("Ingress {name} has class {class}, of {controller}"))
}

/// `ingress.deletion`: nothing of the release has been terminating for long, held by a finalizer.
fn deletion_check(seen: &Seen, name: &str) -> Check {
    let c = Category::Ingress;
    let controller = if seen.controller_up {
        "the controller runs (it may be failing to delete the ALB: see its events)"
    } else {
        "no controller pod is available, so nothing removes the finalizer"
    };
    let mut held = vec![];
    if let Some((age, finalizers)) = &seen.terminating
        && *age > STUCK_AFTER
    {
        held.push(format!(
            "Ingress {name} has been terminating for {}, held by {}",
            lookups::humane(*age),
            if finalizers.is_empty() {
                "nothing left".to_string()
            } else {
                format!("finalizer {}", finalizers.join(", "))
            }
        ));
    }
    if let Some((age, left)) = &seen.namespace_terminating
        && *age > STUCK_AFTER
    {
        held.push(format!("its namespace has been terminating for {}: {left}", lookups::humane(*age)));
    }
    if held.is_empty() {
        return Check::pass(c, "ingress.deletion", "nothing of the release is stuck terminating");
    }
    Check::fail(c, "ingress.deletion", format!("{}; {controller}", held.join("; "))).hint(
        "bring the controller back (re-run install, or scale its Deployment up) so it deletes the ALB and drops the finalizer; or `kubectl scalardb-graphql uninstall --force-finalizers`, then delete the ALB yourself",
    )
}

#[cfg(test)]
mod tests {
    use super::{explain, stickiness_problem};

    #[test]
    fn controller_failures_point_at_the_iam_check_that_explains_them() {
        let sts = "Failed build model due to operation error Elastic Load Balancing v2: DescribeLoadBalancers, get identity: get credentials: failed to refresh cached credentials, failed to retrieve credentials, operation error STS: AssumeRoleWithWebIdentity, https response error StatusCode: 403, RequestID: 1, api error AccessDenied: Not authorized to perform sts:AssumeRoleWithWebIdentity";
        assert!(explain(&[sts.into()]).unwrap().contains("iam.role-trust"));
        let denied = "Failed deploy model due to operation error Elastic Load Balancing v2: CreateListener, https response error StatusCode: 403, RequestID: 2, api error AccessDenied: User: arn:aws:sts::1:assumed-role/r/s is not authorized to perform: elasticloadbalancing:CreateListener on resource: arn:x because no identity-based policy allows the elasticloadbalancing:CreateListener action";
        let hint = explain(&[denied.into()]).unwrap();
        assert!(hint.contains("elasticloadbalancing:CreateListener") && hint.contains("iam.policy"), "{hint}");
        let imds = "Failed build model due to operation error EC2: DescribeSubnets, get identity: get credentials: failed to refresh cached credentials, no EC2 IMDS role found, operation error ec2imds: GetMetadata, canceled, context deadline exceeded";
        assert!(explain(&[imds.into()]).unwrap().contains("iam.pod-identity"));
        assert_eq!(explain(&["Failed build model due to couldn't auto-discover subnets".into()]), None);
    }

    #[test]
    fn the_guides_attributes_are_sticky() {
        assert_eq!(stickiness_problem(Some("stickiness.enabled=true,stickiness.lb_cookie.duration_seconds=60")), None);
    }

    #[test]
    fn a_misspelled_key_is_named_with_a_suggestion() {
        let p = stickiness_problem(Some("stickness.enabled=true")).unwrap();
        assert!(p.contains("\"stickness.enabled\"") && p.contains("did you mean \"stickiness.enabled\""), "{p}");
    }

    #[test]
    fn disabled_or_missing_stickiness_is_named() {
        assert!(stickiness_problem(Some("stickiness.enabled=false")).unwrap().contains("false"));
        assert!(stickiness_problem(Some("deregistration_delay.timeout_seconds=30")).unwrap().contains("missing"));
        assert!(stickiness_problem(None).is_some());
        assert!(
            stickiness_problem(Some("stickiness.enabled=true,stickiness.type=app_cookie"))
                .unwrap()
                .contains("lb_cookie")
        );
    }
}
