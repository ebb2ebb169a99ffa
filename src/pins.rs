//! The versions and digests this plugin installs by default, in one place.

// --- ScalarDB GraphQL: the standalone server's chart, and what both targets run ---------------

/// The scalardb-graphql chart (chart 1.N.p serves app 3.(N+5).p).
pub const GRAPHQL_CHART: &str = "scalardb-graphql";
pub const GRAPHQL_CHART_REPO: &str = "https://scalar-labs.github.io/helm-charts";
pub const GRAPHQL_CHART_VERSION: &str = "1.8.6";
pub const GRAPHQL_APP_VERSION: &str = "3.13.6";

/// The day each ScalarDB minor's support ended (the end of its Assistance Support in
/// Scalar's release support policy); minors newer than the last have no published end.
pub const SCALARDB_SUPPORT_ENDS: &[(&str, &str)] = &[
    ("3.4", "2023-08-15"),
    ("3.5", "2024-01-04"),
    ("3.6", "2024-03-01"),
    ("3.7", "2024-07-15"),
    ("3.8", "2024-10-23"),
    ("3.9", "2025-01-15"),
    ("3.10", "2025-06-24"),
    ("3.11", "2025-08-15"),
    ("3.12", "2026-01-04"),
    ("3.13", "2026-05-21"),
];

/// The Schema Loader image matching the GraphQL chart's app version (with
/// `--target cluster`, the cluster chart's: `CLUSTER_APP_VERSION`).
pub const SCHEMA_LOADER_IMAGE: &str = "ghcr.io/scalar-labs/scalardb-schema-loader";
pub const SCHEMA_LOADER_VERSION: &str = GRAPHQL_APP_VERSION;

/// The in-cluster probe's image: the public python image (the probe is a
/// standard-library script), by version and by digest of its multi-platform index.
pub const PROBE_IMAGE: &str = "docker.io/library/python:3.13.7-alpine3.22@sha256:9ba6d8cbebf0fb6546ae71f2a1c14f6ffd2fdab83af7fa5669734ef30ad48844";

// --- ScalarDB Cluster: the chart of `--target cluster` ----------------------------------------

/// The scalardb-cluster chart (`--target cluster`): its nodes serve GraphQL
/// themselves; the node image is public (GraphQL needs the Premium edition).
pub const CLUSTER_CHART: &str = "scalardb-cluster";
pub const CLUSTER_CHART_VERSION: &str = "1.11.0";
pub const CLUSTER_APP_VERSION: &str = "3.18.0";
pub const CLUSTER_NODE_IMAGE: &str = "ghcr.io/scalar-labs/scalardb-cluster-node-byol-premium";
/// The scalardb-cluster chart 1.11 needs this Kubernetes minor or newer.
pub const CLUSTER_MIN_KUBERNETES_MINOR: u32 = 31;

/// The port of the nodes' GraphQL server and of the chart's `<fullname>-graphql` Service.
pub const CLUSTER_GRAPHQL_PORT: u16 = 8080;

// --- the AWS Load Balancer Controller, and EKS Auto Mode's ALB -------------------------------

/// The AWS Load Balancer Controller chart.
pub const LBC_CHART: &str = "aws-load-balancer-controller";
pub const LBC_CHART_REPO: &str = "https://aws.github.io/eks-charts";
pub const LBC_CHART_VERSION: &str = "3.5.0";
pub const LBC_RELEASE: &str = "aws-load-balancer-controller";
pub const LBC_NAMESPACE: &str = "kube-system";
pub const LBC_SERVICE_ACCOUNT: &str = "aws-load-balancer-controller";
pub const LBC_WEBHOOK_SERVICE: &str = "aws-load-balancer-webhook-service";
/// The IngressClass the controller's chart makes and serves, and its `spec.controller`; on an
/// EKS Auto Mode cluster this tool gives the chart another class name, as Auto Mode's may be `alb`.
pub const LBC_INGRESS_CLASS: &str = "alb";
pub const LBC_CLASS_CONTROLLER: &str = "ingress.k8s.aws/alb";
pub const LBC_INGRESS_CLASS_ON_AUTO_MODE: &str = "alb-self-managed";
/// EKS Auto Mode's ALB: the IngressClass controller, its parameters' API, and the class (and
/// parameters) this tool makes for it.
pub const AUTO_MODE_CLASS_CONTROLLER: &str = "eks.amazonaws.com/alb";
pub const AUTO_MODE_PARAMS_GROUP: &str = "eks.amazonaws.com";
pub const AUTO_MODE_PARAMS_VERSION: &str = "v1";
pub const AUTO_MODE_INGRESS_CLASS: &str = "scalardb-graphql-alb";
/// The chart's webhook configurations (one mutating, one validating) and the TLS Secret they trust.
pub const LBC_WEBHOOK_CONFIG: &str = "aws-load-balancer-webhook";
pub const LBC_TLS_SECRET: &str = "aws-load-balancer-tls";
/// A webhook certificate expiring within this many days fails `status`.
pub const WEBHOOK_CERT_MIN_DAYS: u64 = 30;
/// The API groups of every CRD the controller's chart brings (3.5.0: seven CRDs).
pub const LBC_CRD_GROUPS: &[&str] = &["elbv2.k8s.aws", "gateway.k8s.aws", "aga.k8s.aws"];
/// The labels the controller's chart gives its pods (what a Fargate profile's selector matches).
pub const LBC_CHART_LABELS: &[(&str, &str)] =
    &[("app.kubernetes.io/name", "aws-load-balancer-controller"), ("app.kubernetes.io/instance", LBC_RELEASE)];
/// The ALB annotations the guide sets, and the controller's finalizer.
pub const ANNOTATION_PREFIX: &str = "alb.ingress.kubernetes.io/";
pub const INGRESS_FINALIZER: &str = "ingress.k8s.aws/resources";
pub const AUTO_MODE_INGRESS_FINALIZER: &str = "ingress.eks.amazonaws.com/resources";
pub const INTERNAL_ELB_TAG: &str = "kubernetes.io/role/internal-elb";
pub const STICKINESS_DURATION_SECONDS: u32 = 60;

// --- IAM: the controller's policy, and the ways its pods get credentials ---------------------

/// The controller's IAM policy documents this plugin knows by digest.
pub struct PolicyPin {
    pub version: &'static str,
    pub url: &'static str,
    pub bytes: usize,
    pub sha256: &'static str,
}

pub const IAM_POLICY: PolicyPin = PolicyPin {
    version: "v3.5.0",
    url: "https://raw.githubusercontent.com/kubernetes-sigs/aws-load-balancer-controller/v3.5.0/docs/install/iam_policy.json",
    bytes: 8955,
    sha256: "16f232c9d9f79366fe949c4550ad517a202380058a9e48d45a4e215044a20a6a",
};

/// The actions the pinned policy document allows (its 16 statements, in order): what a
/// controller of that version may call. A document attached instead is checked against them.
pub const IAM_POLICY_ACTIONS: &[&str] = &[
    "iam:CreateServiceLinkedRole",
    "ec2:DescribeAccountAttributes",
    "ec2:DescribeAddresses",
    "ec2:DescribeAvailabilityZones",
    "ec2:DescribeInternetGateways",
    "ec2:DescribeVpcs",
    "ec2:DescribeVpcPeeringConnections",
    "ec2:DescribeSubnets",
    "ec2:DescribeSecurityGroups",
    "ec2:DescribeInstances",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeTags",
    "ec2:GetCoipPoolUsage",
    "ec2:DescribeCoipPools",
    "ec2:GetSecurityGroupsForVpc",
    "ec2:DescribeIpamPools",
    "ec2:DescribeRouteTables",
    "elasticloadbalancing:DescribeLoadBalancers",
    "elasticloadbalancing:DescribeLoadBalancerAttributes",
    "elasticloadbalancing:DescribeListeners",
    "elasticloadbalancing:DescribeListenerCertificates",
    "elasticloadbalancing:DescribeSSLPolicies",
    "elasticloadbalancing:DescribeRules",
    "elasticloadbalancing:DescribeTargetGroups",
    "elasticloadbalancing:DescribeTargetGroupAttributes",
    "elasticloadbalancing:DescribeTargetHealth",
    "elasticloadbalancing:DescribeTags",
    "elasticloadbalancing:DescribeTrustStores",
    "elasticloadbalancing:DescribeListenerAttributes",
    "elasticloadbalancing:DescribeCapacityReservation",
    "cognito-idp:DescribeUserPoolClient",
    "acm:ListCertificates",
    "acm:DescribeCertificate",
    "iam:ListServerCertificates",
    "iam:GetServerCertificate",
    "waf-regional:GetWebACL",
    "waf-regional:GetWebACLForResource",
    "waf-regional:AssociateWebACL",
    "waf-regional:DisassociateWebACL",
    "wafv2:GetWebACL",
    "wafv2:GetWebACLForResource",
    "wafv2:AssociateWebACL",
    "wafv2:DisassociateWebACL",
    "shield:GetSubscriptionState",
    "shield:DescribeProtection",
    "shield:CreateProtection",
    "shield:DeleteProtection",
    "ec2:AuthorizeSecurityGroupIngress",
    "ec2:RevokeSecurityGroupIngress",
    "ec2:CreateSecurityGroup",
    "ec2:CreateTags",
    "ec2:DeleteTags",
    "ec2:DeleteSecurityGroup",
    "elasticloadbalancing:CreateLoadBalancer",
    "elasticloadbalancing:CreateTargetGroup",
    "elasticloadbalancing:CreateListener",
    "elasticloadbalancing:DeleteListener",
    "elasticloadbalancing:CreateRule",
    "elasticloadbalancing:DeleteRule",
    "elasticloadbalancing:AddTags",
    "elasticloadbalancing:RemoveTags",
    "elasticloadbalancing:ModifyLoadBalancerAttributes",
    "elasticloadbalancing:SetIpAddressType",
    "elasticloadbalancing:SetSecurityGroups",
    "elasticloadbalancing:SetSubnets",
    "elasticloadbalancing:DeleteLoadBalancer",
    "elasticloadbalancing:ModifyTargetGroup",
    "elasticloadbalancing:ModifyTargetGroupAttributes",
    "elasticloadbalancing:DeleteTargetGroup",
    "elasticloadbalancing:ModifyListenerAttributes",
    "elasticloadbalancing:ModifyCapacityReservation",
    "elasticloadbalancing:ModifyIpPools",
    "elasticloadbalancing:RegisterTargets",
    "elasticloadbalancing:DeregisterTargets",
    "elasticloadbalancing:SetWebAcl",
    "elasticloadbalancing:ModifyListener",
    "elasticloadbalancing:AddListenerCertificates",
    "elasticloadbalancing:RemoveListenerCertificates",
    "elasticloadbalancing:ModifyRule",
    "elasticloadbalancing:SetRulePriorities",
];

/// The guide's own (older) document: recognised, but short of permissions newer controllers need.
pub const KNOWN_POLICIES: &[PolicyPin] = &[
    IAM_POLICY,
    PolicyPin {
        version: "v2.4.1",
        url: "https://raw.githubusercontent.com/kubernetes-sigs/aws-load-balancer-controller/v2.4.1/docs/install/iam_policy.json",
        bytes: 7617,
        sha256: "a9d1e6463f6eaf0cb6d27aea08aaffbd803d552ed31a3fc8e775fc84d219f969",
    },
];

/// IRSA: the ServiceAccount annotation naming the role.
pub const ROLE_ANNOTATION: &str = "eks.amazonaws.com/role-arn";
/// EKS Pod Identity: the agent's add-on, the service principal a role must trust (for
/// both actions), and the environment EKS gives a pod of an associated ServiceAccount.
pub const POD_IDENTITY_AGENT_ADDON: &str = "eks-pod-identity-agent";
pub const POD_IDENTITY_PRINCIPAL: &str = "pods.eks.amazonaws.com";
pub const POD_IDENTITY_ACTIONS: &[&str] = &["sts:AssumeRole", "sts:TagSession"];
pub const POD_IDENTITY_ENV: &[&str] = &["AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"];

// --- ownership: what marks this tool's work --------------------------------------------------

/// Labels and tags that mark what this tool created.
pub const MANAGED_BY_KEY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "kubectl-scalardb-graphql";
/// The label helm keeps on the revisions of a release this tool installed
/// (`helm install --labels`); apart from the managed-by label so that helm's
/// own storage objects are not taken for objects this tool manages.
pub const RELEASE_MARK: (&str, &str) = ("kubectl-scalardb-graphql/installed", "true");
/// AWS tag naming the cluster a resource was created for.
pub const CLUSTER_TAG_KEY: &str = "kubectl-scalardb-graphql/cluster";
/// AWS tag naming the policy document's version (or `sha256:<digest>` for a custom file).
pub const POLICY_VERSION_TAG_KEY: &str = "kubectl-scalardb-graphql/policy-version";

/// Marks this tool leaves on what it changes but did not create, each written in the
/// same call as the change, so that uninstall undoes only what the live object proves:
/// - a subnet tag naming the cluster for which it added the `INTERNAL_ELB_TAG`;
pub const SUBNET_MARK_KEY: &str = "kubectl-scalardb-graphql/internal-elb-added-for";
/// - a node annotation naming the label and taint it added (JSON: `{"label": "k=v", "taint": "k=v:E"}`);
pub const NODE_MARK: &str = "kubectl-scalardb-graphql/dedicated";
/// - on an adopted IAM role, the sha256 of the trust policy it replaced (the record holds the
///   document; it is given back only when the digest matches) …
pub const ADOPTED_TRUST_TAG_KEY: &str = "kubectl-scalardb-graphql/adopted-trust-sha256";
/// - … and that it attached the controller's policy;
pub const ADOPTED_POLICY_TAG_KEY: &str = "kubectl-scalardb-graphql/adopted-attached-policy";
/// - on a ServiceAccount it did not create, the role annotation's value before it set it ("" for none);
pub const ROLE_BEFORE_ANNOTATION: &str = "kubectl-scalardb-graphql/role-arn-before";
/// - on the release namespace, that it added the readiness-gate label.
pub const NAMESPACE_LABEL_MARK: &str = "kubectl-scalardb-graphql/added-readiness-gate-label";

// --- Kubernetes --------------------------------------------------------------------------------

/// Kubernetes minor versions this plugin supports (k8s-openapi's range).
pub const KUBERNETES_MINOR_RANGE: (u32, u32) = (33, 37);

/// Lower-case hex SHA-256, as the digests above are written.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}
