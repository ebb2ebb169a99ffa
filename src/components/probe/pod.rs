//! The probe from inside the cluster, where an internal ALB answers: a
//! short-lived Pod in the release namespace runs `probe.py` against the
//! Ingress hostname and prints what it saw; the plugin reads the Pod's log.
//! The Pod carries this tool's labels, no secret and no service-account
//! token, tolerates no taint (an ordinary node), and is deleted when the
//! probe ends — also on a failure, at the deadline and on Ctrl-C.

use std::time::{Duration, Instant};

use k8s_openapi::api::authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, LogParams, PostParams};
use serde_json::json;

use crate::cleanup;
use crate::component::Env;

use super::super::managed_labels;
use super::trace::{Origin, Trace};

const SCRIPT: &str = include_str!("probe.py");
const CONTAINER: &str = "probe";
const POLL: Duration = Duration::from_millis(250);
/// What the probe may take to start on a real node (image pull, sandbox).
const START_ALLOWANCE: Duration = Duration::from_secs(30);

/// Why the probe could not run, and what to do about it.
#[derive(Debug)]
pub struct NotRun {
    pub message: String,
    pub hint: String,
}

const LOCAL: &str = "or probe from a bastion or through a tunnel: --probe-from local --probe-url URL";

fn not_run(message: impl Into<String>, hint: impl Into<String>) -> NotRun {
    NotRun { message: message.into(), hint: hint.into() }
}

/// One in-cluster probe of `url`. With `keep_trying`, the Pod repeats the
/// probe until it passes or the command's deadline nears (install's wait).
pub async fn run(
    env: &Env,
    image: &str,
    url: &str,
    continuations: u32,
    keep_trying: bool,
) -> Result<(Trace, Origin), NotRun> {
    let deadline = env.deadline.at();
    let ns = env.spec.namespace.clone();
    rights(env, &ns).await?;
    let retry_for = if keep_trying {
        deadline.saturating_duration_since(Instant::now()).saturating_sub(START_ALLOWANCE)
    } else {
        Duration::ZERO
    };
    let pods: Api<Pod> = Api::namespaced(env.kube().clone(), &ns);
    let routing = env.spec.target == crate::spec::Target::Cluster;
    let manifest = manifest(image, url, continuations, routing, retry_for, deadline);
    let created = pods.create(&PostParams::default(), &manifest).await.map_err(|e| refused(&ns, e))?;
    let name = created.metadata.name.clone().unwrap_or_default();
    let undo = {
        let (pods, name) = (pods.clone(), name.clone());
        cleanup::register(
            format!("the probe Pod {ns}/{name} (kubectl -n {ns} delete pod {name})"),
            move || async move {
                let _ = pods.delete(&name, &now()).await;
            },
        )
    };
    // The whole wait is bounded even if the API server stops answering.
    let bound = deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(5);
    let outcome = match tokio::time::timeout(bound, follow(env, &pods, &ns, &name, deadline)).await {
        Ok(outcome) => outcome,
        Err(_) => Err(not_run(format!("the API server did not answer about the probe Pod {ns}/{name} in time"), LOCAL)),
    };
    let gone = delete(&pods, &name).await;
    undo.disarm();
    match (outcome, gone) {
        (Ok(ran), Ok(())) => Ok(ran),
        (Err(e), _) => Err(e),
        (Ok(_), Err(e)) => Err(not_run(
            format!("the probe ran, but its Pod {ns}/{name} could not be deleted: {e}"),
            format!("delete it with kubectl -n {ns} delete pod {name}"),
        )),
    }
}

/// The Pod: this tool's labels, the pinned image, nothing secret, restricted
/// security settings (a policy engine's "restricted" profile admits it), small
/// requests and limits (a quota that demands them admits it).
fn manifest(image: &str, url: &str, continuations: u32, routing: bool, retry_for: Duration, deadline: Instant) -> Pod {
    let mut labels = managed_labels();
    labels.insert("app.kubernetes.io/name".into(), "scalardb-graphql-probe".into());
    labels.insert("app.kubernetes.io/component".into(), "probe".into());
    let active = deadline.saturating_duration_since(Instant::now()).as_secs() + 5;
    let mut args = vec![
        "--url".to_string(),
        url.to_string(),
        "--continuations".into(),
        continuations.to_string(),
        "--retry-for".into(),
        retry_for.as_secs().to_string(),
    ];
    if routing {
        args.push("--routing".into());
    }
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "scalardb-graphql-probe-", "labels": labels},
        "spec": {
            "restartPolicy": "Never",
            "activeDeadlineSeconds": active,
            "terminationGracePeriodSeconds": 1,
            "automountServiceAccountToken": false,
            "enableServiceLinks": false,
            "securityContext": {
                "runAsNonRoot": true, "runAsUser": 65534, "runAsGroup": 65534,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [{
                "name": CONTAINER,
                "image": image,
                "imagePullPolicy": "IfNotPresent",
                "command": ["python3", "-c", SCRIPT],
                "args": args,
                "env": [{"name": "PYTHONUNBUFFERED", "value": "1"}],
                "resources": {
                    "requests": {"cpu": "50m", "memory": "32Mi"},
                    "limits": {"cpu": "250m", "memory": "64Mi"},
                },
                "securityContext": {
                    "allowPrivilegeEscalation": false,
                    "readOnlyRootFilesystem": true,
                    "capabilities": {"drop": ["ALL"]},
                },
            }],
        },
    }))
    .expect("a valid Pod")
}

/// The rights the probe needs, asked of the API server before anything is
/// created, so that a missing one is named and nothing is left behind.
async fn rights(env: &Env, ns: &str) -> Result<(), NotRun> {
    let reviews: Api<SelfSubjectAccessReview> = Api::all(env.kube().clone());
    let needed =
        [("create", "pods", None), ("get", "pods", None), ("delete", "pods", None), ("get", "pods", Some("log"))];
    let asks = needed.iter().map(|(verb, resource, sub)| {
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    namespace: Some(ns.to_string()),
                    verb: Some(verb.to_string()),
                    resource: Some(resource.to_string()),
                    subresource: sub.map(str::to_string),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let reviews = reviews.clone();
        async move { reviews.create(&PostParams::default(), &review).await }
    });
    let mut missing = vec![];
    for ((verb, resource, sub), answer) in needed.iter().zip(futures::future::join_all(asks).await) {
        // A cluster that does not answer reviews is not judged here: the create says it.
        if let Ok(r) = answer
            && !r.status.is_some_and(|s| s.allowed)
        {
            missing.push(format!("{verb} {resource}{}", sub.map(|s| format!("/{s}")).unwrap_or_default()));
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(not_run(
        format!("cannot run the probe Pod in namespace {ns}: missing permission to {}", missing.join(", ")),
        format!("grant a Role with pods: create, get, delete and pods/log: get in {ns}, {LOCAL}"),
    ))
}

fn refused(ns: &str, e: kube::Error) -> NotRun {
    match e {
        kube::Error::Api(s) if s.message.contains("cannot create resource") => not_run(
            format!("cannot run the probe Pod in namespace {ns}: {}", s.message),
            format!("grant a Role with pods: create, get, delete and pods/log: get in {ns}, {LOCAL}"),
        ),
        kube::Error::Api(s) => not_run(
            format!("the cluster refused the probe Pod in namespace {ns}: {}", s.message),
            format!("let a small Pod without privileges run there (quota, admission policy), {LOCAL}"),
        ),
        other => not_run(format!("cannot create the probe Pod in namespace {ns}: {other}"), LOCAL),
    }
}

/// Waits for the Pod to finish and reads its result; at the deadline, says
/// what the Pod was waiting for.
async fn follow(
    env: &Env,
    pods: &Api<Pod>,
    ns: &str,
    name: &str,
    deadline: Instant,
) -> Result<(Trace, Origin), NotRun> {
    let what = format!("the probe Pod {ns}/{name}");
    let mut hint = LOCAL.to_string();
    loop {
        let pod = match pods.get_opt(name).await {
            Ok(Some(p)) => p,
            Ok(None) => return Err(not_run(format!("{what} was deleted before it finished"), LOCAL)),
            Err(e) => {
                let state = format!("cannot read it: {e}");
                if Instant::now() + POLL > deadline {
                    return Err(not_run(format!("{what} did not finish in time; last seen: {state}"), hint));
                }
                tokio::time::sleep(POLL).await;
                continue;
            }
        };
        let status = pod.status.clone().unwrap_or_default();
        match status.phase.as_deref() {
            Some("Succeeded") | Some("Failed") => return result(env, pods, &what, &pod).await,
            _ => {}
        }
        let waiting =
            status.container_statuses.iter().flatten().find_map(|c| c.state.as_ref().and_then(|s| s.waiting.clone()));
        let unschedulable = status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "PodScheduled" && c.status == "False")
            .map(|c| c.message.clone().unwrap_or_else(|| c.reason.clone().unwrap_or_default()));
        if let Some(w) = &waiting {
            let reason = w.reason.clone().unwrap_or_default();
            if ["ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"].contains(&reason.as_str())
            {
                let image =
                    pod.spec.as_ref().map(|s| s.containers[0].image.clone().unwrap_or_default()).unwrap_or_default();
                return Err(not_run(
                    format!(
                        "{what} cannot pull image {image}: {reason}{}",
                        w.message.as_ref().map(|m| format!(" ({m})")).unwrap_or_default()
                    ),
                    format!("let the nodes pull it, or mirror it and pass --probe-image REGISTRY/IMAGE; {LOCAL}"),
                ));
            }
            if reason.starts_with("CreateContainer") {
                return Err(not_run(
                    format!("{what} cannot start: {reason} {}", w.message.clone().unwrap_or_default()),
                    LOCAL,
                ));
            }
        }
        let state;
        if let Some(message) = unschedulable {
            state = format!("Pending, not scheduled: {message}");
            hint = format!("the probe needs a node whose taints it tolerates (it tolerates none): free one, {LOCAL}");
        } else if let Some(w) = waiting {
            state = format!("Pending: {}", w.reason.unwrap_or_default());
        } else {
            state = status.phase.unwrap_or_else(|| "Pending".into());
        }
        env.progress.waiting(&format!("waiting for {what}: {state}"));
        if Instant::now() + POLL > deadline {
            let last = last_trace(pods, name).await;
            return match last {
                Some(trace) => Ok((trace, from(env, &pod).await)),
                None => Err(not_run(format!("{what} did not finish within the timeout; last seen: {state}"), hint)),
            };
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A finished Pod: its last result line, or why there is none.
async fn result(env: &Env, pods: &Api<Pod>, what: &str, pod: &Pod) -> Result<(Trace, Origin), NotRun> {
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    if let Some(trace) = last_trace(pods, name).await {
        return Ok((trace, from(env, pod).await));
    }
    let status = pod.status.clone().unwrap_or_default();
    let terminated =
        status.container_statuses.iter().flatten().find_map(|c| c.state.as_ref().and_then(|s| s.terminated.clone()));
    let log = pods
        .logs(name, &LogParams { container: Some(CONTAINER.into()), tail_lines: Some(5), ..Default::default() })
        .await
        .unwrap_or_else(|e| format!("(no log: {e})"));
    let why = match (&terminated, &status.reason) {
        (Some(t), _) => format!("exited {}", t.exit_code),
        (None, Some(reason)) => format!("ended: {reason} {}", status.message.clone().unwrap_or_default()),
        (None, None) => "ended".into(),
    };
    Err(not_run(
        format!("{what} {why} without a result; its log: {}", log.trim().replace('\n', " | ")),
        format!("check that the image runs python3 (--probe-image); {LOCAL}"),
    ))
}

/// The last line of the Pod's log that is a probe result.
async fn last_trace(pods: &Api<Pod>, name: &str) -> Option<Trace> {
    let params = LogParams { container: Some(CONTAINER.into()), limit_bytes: Some(1 << 20), ..Default::default() };
    let log = pods.logs(name, &params).await.ok()?;
    log.lines().rev().find_map(|l| serde_json::from_str::<Trace>(l).ok())
}

async fn from(env: &Env, pod: &Pod) -> Origin {
    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
    let nodes: Api<Node> = Api::all(env.kube().clone());
    // Reading the node is a nicety: a namespace-bound user may not.
    let zone = nodes
        .get_opt(&node)
        .await
        .ok()
        .flatten()
        .and_then(|n| n.metadata.labels.and_then(|l| l.get("topology.kubernetes.io/zone").cloned()));
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    Origin::Pod { name: format!("{ns}/{}", pod.metadata.name.as_deref().unwrap_or_default()), node, zone }
}

fn now() -> DeleteParams {
    DeleteParams { grace_period_seconds: Some(0), ..Default::default() }
}

/// Deletes the Pod and returns once it is gone.
async fn delete(pods: &Api<Pod>, name: &str) -> Result<(), String> {
    match pods.delete(name, &now()).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
        Err(e) => return Err(e.to_string()),
    }
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        match pods.get_opt(name).await {
            Ok(None) => return Ok(()),
            Ok(Some(_)) if Instant::now() < until => tokio::time::sleep(Duration::from_millis(100)).await,
            Ok(Some(_)) => return Err("it is still there after 10 s".into()),
            Err(e) => return Err(e.to_string()),
        }
    }
}
