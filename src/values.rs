//! Chart values: what install gives the scalardb-graphql chart, the
//! scalardb-cluster chart and the controller's chart, and helm's way of
//! merging values files.

use serde_json::{Map, Value, json};

use crate::context::ClusterFacts;
use crate::pins::{ANNOTATION_PREFIX, STICKINESS_DURATION_SECONDS};
use crate::spec::{Spec, merge};

/// The upstream chart's nginx annotations: helm deep-merges maps, so they stay unless nulled.
pub const NGINX_DEFAULT_ANNOTATIONS: &[&str] = &[
    "nginx.ingress.kubernetes.io/session-cookie-path",
    "nginx.ingress.kubernetes.io/affinity",
    "nginx.ingress.kubernetes.io/session-cookie-name",
    "nginx.ingress.kubernetes.io/session-cookie-hash",
    "nginx.ingress.kubernetes.io/session-cookie-max-age",
];

/// The four ALB annotations of the guide, for a GraphQL path.
pub fn alb_annotations(path: &str) -> Vec<(String, String)> {
    vec![
        (format!("{ANNOTATION_PREFIX}scheme"), "internal".into()),
        (format!("{ANNOTATION_PREFIX}target-type"), "ip".into()),
        (
            format!("{ANNOTATION_PREFIX}target-group-attributes"),
            format!(
                "stickiness.enabled=true,stickiness.type=lb_cookie,stickiness.lb_cookie.duration_seconds={STICKINESS_DURATION_SECONDS}"
            ),
        ),
        (format!("{ANNOTATION_PREFIX}healthcheck-path"), format!("{path}?query=%7B__typename%7D")),
    ]
}

/// Values for the scalardb-graphql chart, before the user's -f files.
pub fn graphql(spec: &Spec) -> Value {
    let c = &spec.scalardb;
    let mut config = Map::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            config.insert(k.to_string(), v);
        }
    };
    put("contactPoints", c.contact_points.clone().map(Value::from));
    put("contactPort", c.contact_port.map(Value::from));
    put("storage", c.storage.clone().map(Value::from));
    put("transactionManager", c.transaction_manager.clone().map(Value::from));
    put("consensuscommitIsolationLevel", c.isolation_level.clone().map(Value::from));
    put("consensuscommitSerializableStrategy", c.serializable_strategy.clone().map(Value::from));
    put("path", Some(Value::from(c.path.clone())));
    put("namespaces", Some(Value::from(c.namespaces.join(","))));
    put("graphiql", c.graphiql.clone().map(Value::from));

    let mut annotations: Map<String, Value> =
        alb_annotations(&c.path).into_iter().map(|(k, v)| (k, Value::from(v))).collect();
    for key in NGINX_DEFAULT_ANNOTATIONS {
        annotations.insert(key.to_string(), Value::Null);
    }
    let mut values = json!({
        "replicaCount": spec.replicas,
        "scalarDbGraphQlConfiguration": config,
        "imagePullSecrets": [{"name": spec.registry_secret.name}],
        "existingSecret": spec.database_secret.name,
        "ingress": {
            "enabled": true,
            "className": spec.lb_controller.ingress_class,
            "annotations": annotations,
            "hosts": [{"host": "", "paths": [{"path": c.path, "pathType": "Exact"}]}],
        },
    });
    if let Some((affinity, tolerations)) = placement(spec, "scalardb-graphql") {
        values["affinity"] = affinity;
        values["tolerations"] = tolerations;
    }
    values
}

/// The dedicated-node placement both charts take: the pool's label required,
/// its taint tolerated, pods of the same app spread over the nodes.
fn placement(spec: &Spec, app: &str) -> Option<(Value, Value)> {
    let nodes = spec.nodes.as_ref()?;
    let affinity = json!({
        "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{
            "matchExpressions": [{"key": nodes.label_key, "operator": "In", "values": [nodes.label_value]}]
        }]}},
        "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
            "weight": 50,
            "podAffinityTerm": {
                "labelSelector": {"matchExpressions": [{"key": "app.kubernetes.io/app", "operator": "In", "values": [app]}]},
                "topologyKey": "kubernetes.io/hostname",
            },
        }]},
    });
    let tolerations = json!([{
        "key": nodes.taint.key, "operator": "Equal", "value": nodes.taint.value, "effect": nodes.taint.effect,
    }]);
    Some((affinity, tolerations))
}

/// `--target cluster`: the environment variables the node properties refer
/// to, each a key of the nodes' Secret (`components::cluster_secret`).
pub mod cluster_env {
    pub const DB_USERNAME: &str = "SCALAR_DB_CLUSTER_DB_USERNAME";
    pub const DB_PASSWORD: &str = "SCALAR_DB_CLUSTER_DB_PASSWORD";
    pub const LICENSE_KEY: &str = "SCALAR_DB_CLUSTER_LICENSE_KEY";
    pub const LICENSE_CHECK_CERT_PEM: &str = "SCALAR_DB_CLUSTER_LICENSE_CHECK_CERT_PEM";
}

/// The node properties of `--target cluster`: membership on Kubernetes (the
/// chart fills the two endpoint variables), the database, GraphQL on, and
/// every credential as a reference to the nodes' Secret.
pub fn cluster_node_properties(spec: &Spec) -> String {
    use cluster_env::{DB_PASSWORD, DB_USERNAME, LICENSE_CHECK_CERT_PEM, LICENSE_KEY};
    let c = &spec.scalardb;
    let env = |name: &str| format!("${{env:{name}}}");
    let mut lines: Vec<(String, String)> = vec![
        ("scalar.db.cluster.membership.type".into(), "KUBERNETES".into()),
        (
            "scalar.db.cluster.membership.kubernetes.endpoint.namespace_name".into(),
            env("SCALAR_DB_CLUSTER_MEMBERSHIP_KUBERNETES_ENDPOINT_NAMESPACE_NAME"),
        ),
        (
            "scalar.db.cluster.membership.kubernetes.endpoint.name".into(),
            env("SCALAR_DB_CLUSTER_MEMBERSHIP_KUBERNETES_ENDPOINT_NAME"),
        ),
    ];
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            lines.push((k.to_string(), v));
        }
    };
    put("scalar.db.storage", c.storage.clone());
    put("scalar.db.contact_points", c.contact_points.clone());
    put("scalar.db.contact_port", c.contact_port.map(|p| p.to_string()));
    put("scalar.db.username", Some(env(DB_USERNAME)));
    put("scalar.db.password", Some(env(DB_PASSWORD)));
    put("scalar.db.transaction_manager", c.transaction_manager.clone());
    put("scalar.db.consensus_commit.isolation_level", c.isolation_level.clone());
    put("scalar.db.consensus_commit.serializable_strategy", c.serializable_strategy.clone());
    put("scalar.db.graphql.enabled", Some("true".into()));
    put("scalar.db.graphql.port", Some(crate::pins::CLUSTER_GRAPHQL_PORT.to_string()));
    put("scalar.db.graphql.path", Some(c.path.clone()));
    put("scalar.db.graphql.namespaces", Some(c.namespaces.join(",")));
    put("scalar.db.graphql.graphiql", c.graphiql.clone());
    put("scalar.db.cluster.node.licensing.license_key", Some(env(LICENSE_KEY)));
    put("scalar.db.cluster.node.licensing.license_check_cert_pem", Some(env(LICENSE_CHECK_CERT_PEM)));
    lines.into_iter().map(|(k, v)| format!("{k}={v}\n")).collect()
}

/// Values for the scalardb-cluster chart (`--target cluster`), before the
/// user's -f files. The full name is the release's, so the GraphQL Service
/// is `<release>-graphql`; the chart makes no Ingress (this tool does).
pub fn cluster(spec: &Spec) -> Value {
    let mut node = json!({
        "replicaCount": spec.replicas,
        "image": {"repository": spec.node_image.clone().unwrap_or_else(|| crate::pins::CLUSTER_NODE_IMAGE.into())},
        // The node images are public.
        "imagePullSecrets": [],
        "scalardbClusterNodeProperties": cluster_node_properties(spec),
        "secretName": spec.database_secret.name,
        "graphql": {"enabled": true},
    });
    if let Some((affinity, tolerations)) = placement(spec, "scalardb-cluster") {
        node["affinity"] = affinity;
        node["tolerations"] = tolerations;
    }
    json!({"fullnameOverride": spec.release, "scalardbCluster": node})
}

/// The chart values of the spec's target, with the user's files merged over them.
pub fn release(spec: &Spec, user: &Value) -> Value {
    let generated = match spec.target {
        crate::spec::Target::Graphql => graphql(spec),
        crate::spec::Target::Cluster => cluster(spec),
    };
    with_user_values(generated, user)
}

/// Values for the controller's chart.
pub fn lb_controller(spec: &Spec, facts: &ClusterFacts) -> Value {
    let mut values = json!({
        "clusterName": facts.name,
        "region": facts.region,
        "vpcId": facts.vpc_id,
        "serviceAccount": {"create": false, "name": spec.lb_controller.service_account},
        // 3.x regenerates the webhook certificate on every upgrade unless told to keep it.
        "keepTLSSecret": true,
    });
    if spec.lb_controller.ingress_class != crate::pins::LBC_INGRESS_CLASS {
        values["ingressClass"] = json!(spec.lb_controller.ingress_class);
    }
    // Beside EKS Auto Mode's controller: its Service webhook would take over every new LoadBalancer Service.
    if facts.auto_mode {
        values["enableServiceMutatorWebhook"] = json!(false);
    }
    values
}

/// The generated values with the user's files merged over them.
pub fn with_user_values(generated: Value, user: &Value) -> Value {
    let mut v = generated;
    if !user.is_null() {
        merge(&mut v, user.clone()); // status and uninstall have no -f files
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redaction::redacted;
    use crate::spec;

    fn spec() -> Spec {
        let mut s = spec::defaults("scalardb-graphql", "prod", "default");
        s.scalardb.namespaces = vec!["emoney".into(), "sample".into()];
        s.scalardb.storage = Some("dynamo".into());
        s
    }

    #[test]
    fn the_ingress_is_an_internal_sticky_alb_with_ip_targets() {
        let v = graphql(&spec());
        let a = &v["ingress"]["annotations"];
        assert_eq!(v["ingress"]["className"], "alb");
        assert_eq!(a["alb.ingress.kubernetes.io/scheme"], "internal");
        assert_eq!(a["alb.ingress.kubernetes.io/target-type"], "ip");
        assert_eq!(
            a["alb.ingress.kubernetes.io/target-group-attributes"],
            "stickiness.enabled=true,stickiness.type=lb_cookie,stickiness.lb_cookie.duration_seconds=60"
        );
        assert_eq!(a["alb.ingress.kubernetes.io/healthcheck-path"], "/graphql?query=%7B__typename%7D");
        assert_eq!(v["ingress"]["hosts"][0]["paths"][0], json!({"path": "/graphql", "pathType": "Exact"}));
    }

    #[test]
    fn the_nginx_defaults_are_nulled() {
        let v = graphql(&spec());
        for k in NGINX_DEFAULT_ANNOTATIONS {
            assert_eq!(v["ingress"]["annotations"][*k], Value::Null, "{k}");
            assert!(v["ingress"]["annotations"].as_object().unwrap().contains_key(*k));
        }
    }

    #[test]
    fn pods_go_to_the_dedicated_nodes_and_spread() {
        let v = graphql(&spec());
        let term = &v["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
            [0]["matchExpressions"][0];
        assert_eq!(term, &json!({"key": "agentpool", "operator": "In", "values": ["scalardbgraphqlpool"]}));
        assert_eq!(
            v["tolerations"][0],
            json!({"key": "kubernetes.io/app", "operator": "Equal", "value": "scalardbgraphqlpool", "effect": "NoSchedule"})
        );
        assert_eq!(
            v["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]["topologyKey"],
            "kubernetes.io/hostname"
        );
    }

    #[test]
    fn without_dedicated_nodes_there_is_no_affinity() {
        let mut s = spec();
        s.nodes = None;
        let v = graphql(&s);
        assert!(v.get("affinity").is_none() && v.get("tolerations").is_none());
    }

    #[test]
    fn credentials_go_through_the_existing_secret_only() {
        let v = graphql(&spec());
        assert_eq!(v["existingSecret"], "scalardb-graphql-db");
        assert!(v["scalarDbGraphQlConfiguration"].get("password").is_none());
        assert!(v["scalarDbGraphQlConfiguration"].get("username").is_none());
        assert_eq!(v["scalarDbGraphQlConfiguration"]["namespaces"], "emoney,sample");
        assert_eq!(v["imagePullSecrets"], json!([{"name": "reg-docker-secrets"}]));
    }

    #[test]
    fn the_cluster_target_turns_graphql_on_and_refers_to_every_credential_by_environment_variable() {
        let mut s = spec();
        s.target = crate::spec::Target::Cluster;
        s.database_secret.name = "scalardb-graphql-cluster-env".into();
        s.scalardb.contact_points = Some("jdbc:postgresql://db:5432/scalardb".into());
        let v = cluster(&s);
        let node = &v["scalardbCluster"];
        assert_eq!(v["fullnameOverride"], "scalardb-graphql");
        assert_eq!(node["graphql"]["enabled"], true);
        assert_eq!(node["secretName"], "scalardb-graphql-cluster-env");
        assert_eq!(node["imagePullSecrets"], json!([]));
        let props = node["scalardbClusterNodeProperties"].as_str().unwrap();
        let get = |k: &str| props.lines().find_map(|l| l.strip_prefix(&format!("{k}="))).map(str::to_string);
        assert_eq!(get("scalar.db.cluster.membership.type").as_deref(), Some("KUBERNETES"));
        assert_eq!(get("scalar.db.graphql.enabled").as_deref(), Some("true"));
        assert_eq!(get("scalar.db.graphql.namespaces").as_deref(), Some("emoney,sample"));
        assert_eq!(get("scalar.db.storage").as_deref(), Some("dynamo"));
        for k in [
            "scalar.db.username",
            "scalar.db.password",
            "scalar.db.cluster.node.licensing.license_key",
            "scalar.db.cluster.node.licensing.license_check_cert_pem",
        ] {
            assert!(
                get(k).is_some_and(|v| v.starts_with("${env:SCALAR_DB_CLUSTER_") && v.ends_with('}')),
                "{k}: {props}"
            );
        }
        let anti = &node["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0];
        assert_eq!(
            anti["podAffinityTerm"]["labelSelector"]["matchExpressions"][0]["values"],
            json!(["scalardb-cluster"])
        );
        assert_eq!(node["tolerations"], graphql(&spec())["tolerations"]);
        assert!(v.get("ingress").is_none() && node.get("ingress").is_none(), "the chart has no Ingress: {v}");
    }

    #[test]
    fn status_without_values_files_keeps_the_generated_values() {
        assert_eq!(with_user_values(graphql(&spec()), &Value::Null), graphql(&spec()));
    }

    #[test]
    fn merge_is_helms() {
        let mut base = json!({"a": {"b": 1, "c": 2}, "l": [1, 2], "s": "x"});
        merge(&mut base, json!({"a": {"c": 3, "d": null}, "l": [3], "n": {"m": 1}}));
        assert_eq!(base, json!({"a": {"b": 1, "c": 3, "d": null}, "l": [3], "s": "x", "n": {"m": 1}}));
    }

    #[test]
    fn user_values_win() {
        let v = with_user_values(graphql(&spec()), &json!({"replicaCount": 5, "ingress": {"annotations": {"x": "y"}}}));
        assert_eq!(v["replicaCount"], 5);
        assert_eq!(v["ingress"]["annotations"]["x"], "y");
        assert_eq!(v["ingress"]["className"], "alb");
    }

    #[test]
    fn user_values_naming_credentials_are_redacted_and_others_are_not() {
        let user = json!({
            "scalarDbGraphQlConfiguration": {"secretName": "s", "apiKey": "k1", "tlsCertificate": "PEM", "existingSecret": "db-creds"},
            "aws": {"ACCESS_KEY_ID": "AKIA", "credentials": "c", "session-token": "t", "password": 123456},
            "tolerations": [{"key": "dedicated", "value": "graphql"}],
            "affinity": {"podAntiAffinity": {"topologyKey": "kubernetes.io/hostname"}},
            "keepTLSSecret": true,
            "envFrom": [{"secretRef": {"name": "db"}}],
            "env": [{"name": "DB_PASSWORD", "value": "hunter2"}, {"name": "LOG_LEVEL", "value": "info"},
                    {"name": "DB_PASS", "value": "x1"}, {"name": "pwd", "value": "x2"}, {"name": "APIKEY", "value": "x3"},
                    {"name": "LICENSE", "value": "x4"}],
            "tokens": {"secret": {"nested": "deep"}},
            "license": {"key": "k", "cert": "c"},
            "props": "scalar.db.username=u\nscalar.db.password=hunter3\nscalar.db.contact_points=db",
            "keyspace": "ks",
        });
        let r = redacted(&with_user_values(graphql(&spec()), &user));
        for (path, want) in [
            ("/scalarDbGraphQlConfiguration/secretName", "s"),
            ("/scalarDbGraphQlConfiguration/apiKey", "<redacted>"),
            ("/scalarDbGraphQlConfiguration/tlsCertificate", "PEM"),
            ("/scalarDbGraphQlConfiguration/existingSecret", "db-creds"),
            ("/aws/ACCESS_KEY_ID", "<redacted>"),
            ("/aws/credentials", "<redacted>"),
            ("/aws/session-token", "<redacted>"),
            ("/aws/password", "<redacted>"),
            ("/env/0/value", "<redacted>"),
            ("/env/0/name", "DB_PASSWORD"),
            ("/env/1/value", "info"),
            ("/env/2/value", "<redacted>"),
            ("/env/3/value", "<redacted>"),
            ("/env/4/value", "<redacted>"),
            ("/env/5/value", "<redacted>"),
            ("/tolerations/0/key", "dedicated"),
            ("/tolerations/0/value", "graphql"),
            ("/affinity/podAntiAffinity/topologyKey", "kubernetes.io/hostname"),
            ("/envFrom/0/secretRef/name", "db"),
            ("/tokens", "<redacted>"),
            ("/license", "<redacted>"),
            ("/props", "scalar.db.username=u\nscalar.db.password=<redacted>\nscalar.db.contact_points=db"),
            ("/keyspace", "ks"),
        ] {
            assert_eq!(r.pointer(path).and_then(Value::as_str), Some(want), "{path}");
        }
        assert_eq!(r["keepTLSSecret"], true, "a switch about a Secret is no secret");
    }
}
