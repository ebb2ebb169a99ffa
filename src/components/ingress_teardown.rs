//! Waiting for an Ingress and its ALB to go, shared by the chart's Ingress
//! (removed with the release) and the one this tool owns (`--target
//! cluster`): while the controller runs it deletes the ALB and then drops
//! its finalizer; without it, the wait says so instead of hanging.

use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::component::Env;
use crate::error::{Context, Error, Result};
use crate::lookups::{self, ReleaseIngress};
use crate::wait;

/// Waits until the ALB the controller made for the Ingress is gone (in an
/// IngressGroup: this Ingress's target groups, and the ALB and its security
/// group once no other member is left) — the security group last: EC2
/// refuses to delete it while the ALB's network interfaces are released,
/// and the controller retries; with no controller left to delete them, says
/// so (and lists them) instead of waiting.
pub async fn wait_alb_gone(env: &Env, ingress: &ReleaseIngress) -> Result<()> {
    let cluster = lookups::tagging_cluster_name(env).await?;
    let others = match ingress.group() {
        Some(g) => lookups::group_members(env, g, ingress).await?,
        None => vec![],
    };
    let stack = ingress.stack();
    let clean = wait::until(env, "the ALB, its target groups and its security group to be deleted", || async {
        let mut now = lookups::alb::locate(env, ingress, &cluster).await?;
        let mut groups = vec![];
        if !others.is_empty() {
            now.load_balancers.clear(); // shared with the rest of the group: it stays
        } else {
            groups = lookups::alb::security_groups(env, &cluster, Some(&stack)).await?;
        }
        if now.is_empty() && groups.is_empty() {
            return Ok(Ok(true));
        }
        if lookups::controller_up(env).await? {
            return Ok(Err(if now.is_empty() {
                format!("the ALB is gone; its security group {} is not yet (EC2 releases the ALB's network interfaces first)", groups.join(", "))
            } else {
                now.summary()
            }));
        }
        let listed = now.load_balancer_arns().into_iter().chain(groups).collect::<Vec<_>>().join(", ");
        if env.options.force_finalizers {
            env.progress.warn(&format!("left in AWS, with no controller to delete it (delete it yourself): {listed}"));
            return Ok(Ok(false));
        }
        Err(Error::failed(format!(
            "the ALB of Ingress {} is still in AWS and no AWS Load Balancer Controller runs to delete it: {listed}",
            ingress.display()
        ))
        .hint("install the controller again so it cleans up, or delete the ALB yourself and pass --force-finalizers"))
    })
    .await?;
    if !clean {
        return Ok(());
    }
    env.progress.done(&format!(
        "no load balancer, target group or security group of Ingress {} is left in AWS",
        ingress.display()
    ));
    Ok(())
}

/// Waits until the release's Ingress is gone, explaining a stuck finalizer.
pub async fn wait_ingress_gone(env: &Env, ingress: &ReleaseIngress) -> Result<()> {
    let (ns, name) = (&ingress.namespace, &ingress.name);
    let finalizer = ingress.finalizer();
    let cluster = lookups::tagging_cluster_name(env).await?;
    let ingresses: Api<Ingress> = Api::namespaced(env.kube().clone(), ns);
    wait::until(env, &format!("Ingress {ns}/{name} to be deleted"), || async {
        let Some(ing) = ingresses.get_opt(name).await.context("reading the Ingress")? else { return Ok(Ok(())) };
        let finalizers = ing.metadata.finalizers.clone().unwrap_or_default();
        let Some(since) = ing.metadata.deletion_timestamp.as_ref() else { return Ok(Err("still present".into())) };
        let held = format!(
            "terminating for {}, held by {}",
            lookups::humane(lookups::age(&since.0)),
            if finalizers.is_empty() { "nothing".to_string() } else { format!("finalizer {}", finalizers.join(", ")) }
        );
        if !finalizers.contains(&finalizer) {
            return Ok(Err(held));
        }
        if lookups::controller_up(env).await? {
            return Ok(Err(format!("{held}; the controller runs, removing its ALB")));
        }
        let arns = lookups::alb::locate(env, ingress, &cluster).await?.load_balancer_arns();
        let listed = if arns.is_empty() { "none found by its tags".to_string() } else { arns.join(", ") };
        if !env.options.force_finalizers {
            return Err(Error::failed(format!(
                "Ingress {ns}/{name} is stuck on finalizer {finalizer}: the AWS Load Balancer Controller is not running, so nothing deletes its ALB ({listed})"
            ))
            .hint("install the controller again so it cleans up (kubectl scalardb-graphql install …), then re-run uninstall; or pass --force-finalizers to drop the finalizer and delete the ALB yourself"));
        }
        env.progress.warn(&format!("removing finalizer {finalizer} from Ingress {ns}/{name}; its ALB may be left in AWS: {listed}"));
        let rest: Vec<_> = finalizers.into_iter().filter(|f| *f != finalizer).collect();
        let patch = json!({"metadata": {"finalizers": rest}});
        if let Err(e) = ingresses.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            if matches!(&e, kube::Error::Api(s) if s.code == 404) {
                return Ok(Ok(())); // the controller came back and finished first
            }
            if let Some(refused) = crate::error::webhook_refusal(&e.to_string()) {
                return Err(refused);
            }
            return Err(e).context("removing the Ingress finalizer");
        }
        Ok(Err("finalizer removed".into()))
    })
    .await
    .map_err(|e| match e.exit_code() {
        // At the deadline: what holds it is in the message; the way out is this.
        4 => e.hint(format!(
            "if the controller cannot delete the ALB (see `kubectl describe ingress -n {ns} {name}`), fix that, or pass --force-finalizers and delete the ALB yourself"
        )),
        _ => e,
    })
}
