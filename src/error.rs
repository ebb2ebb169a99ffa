//! Expected failures, each with its exit code and a hint, kept apart from
//! everything that went wrong in a way the user cannot fix by changing input.
//!
//! Exit codes (the README's and docs/commands.md's tables are written from this one):
//! 0 ok · 1 a check or step failed (or a bug) · 2 usage error · 3 a
//! prerequisite is missing · 4 timed out waiting · 129 SIGHUP · 130
//! interrupted (SIGINT) · 143 SIGTERM.

use aws_sdk_sts::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sts::operation::RequestId;
use std::fmt;

/// Why a command stopped, in words a platform engineer can act on.
#[derive(Debug)]
pub enum Error {
    /// A failure the user can fix: bad input, a missing prerequisite, a
    /// failed step, a timeout. Printed as one line plus a hint.
    Expected { kind: Kind, message: String, hint: Option<String> },
    /// An API or tool call failed in a way this program did not anticipate.
    /// Printed with its chain of causes; exit 1.
    Other(anyhow::Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Failed,
    Usage,
    Prerequisite,
    Timeout,
    /// Ctrl-C (SIGINT).
    Interrupted,
    /// SIGTERM: a CI job cancelled, `timeout`, a pod stopped.
    Terminated,
    /// SIGHUP: the terminal or ssh connection went away.
    HungUp,
}

impl Kind {
    pub fn exit_code(self) -> u8 {
        match self {
            Kind::Failed => 1,
            Kind::Usage => 2,
            Kind::Prerequisite => 3,
            Kind::Timeout => 4,
            Kind::HungUp => 129,
            Kind::Interrupted => 130,
            Kind::Terminated => 143,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    fn expected(kind: Kind, message: impl Into<String>) -> Self {
        Error::Expected { kind, message: message.into(), hint: None }
    }
    /// Bad input (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Self::expected(Kind::Usage, message)
    }
    /// Something the command needs is missing or wrong (exit 3).
    pub fn prerequisite(message: impl Into<String>) -> Self {
        Self::expected(Kind::Prerequisite, message)
    }
    /// A step or check failed (exit 1).
    pub fn failed(message: impl Into<String>) -> Self {
        Self::expected(Kind::Failed, message)
    }
    /// Waiting ran out of time (exit 4).
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::expected(Kind::Timeout, message)
    }
    pub fn interrupted() -> Self {
        Self::expected(Kind::Interrupted, "interrupted")
    }
    /// A panic: a bug of this program, not something the user can fix (exit 1).
    pub fn bug() -> Self {
        Self::expected(Kind::Failed, "internal error: this is a bug of kubectl-scalardb-graphql (the panic above says where)")
            .hint("what the command started was cleaned up; please report it with the command line (no secrets) and the message")
    }
    pub fn terminated() -> Self {
        Self::expected(Kind::Terminated, "terminated (SIGTERM)")
    }
    pub fn hung_up() -> Self {
        Self::expected(Kind::HungUp, "hung up (SIGHUP)")
    }

    /// Adds the line that tells the user what to do.
    pub fn hint(mut self, text: impl Into<String>) -> Self {
        if let Error::Expected { hint, .. } = &mut self {
            *hint = Some(text.into());
        }
        self
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Expected { kind, .. } => kind.exit_code(),
            Error::Other(_) => 1,
        }
    }

    /// The same error again, for a second reader (an unexpected one as its one line, exit 1).
    pub fn copy(&self) -> Error {
        match self {
            Error::Expected { kind, message, hint } => {
                Error::Expected { kind: *kind, message: message.clone(), hint: hint.clone() }
            }
            Error::Other(e) => Error::failed(format!("{e:#}")),
        }
    }

    pub fn hint_text(&self) -> Option<&str> {
        match self {
            Error::Expected { hint, .. } => hint.as_deref(),
            Error::Other(_) => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Expected { message, .. } => f.write_str(message),
            // One line: every cause, outermost first.
            Error::Other(e) => write!(f, "{e:#}"),
        }
    }
}

impl<E: Into<anyhow::Error>> From<E> for Error {
    fn from(e: E) -> Self {
        Error::Other(e.into())
    }
}

/// Adds what was being done to an error from an API or a tool.
pub trait Context<T> {
    fn context(self, what: impl fmt::Display) -> Result<T>;
}

impl<T, E: Into<anyhow::Error>> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl fmt::Display) -> Result<T> {
        self.map_err(|e| Error::Other(e.into().context(what.to_string())))
    }
}

/// An AWS SDK error as one line. An answer from the service: its code, its
/// message and the request id (what AWS support asks for); the SDK's own
/// Display says only "service error", and its full context appends a debug
/// dump of the raw response. Anything else (a timeout, a refused
/// connection, an answer with no AWS error code): each cause in the chain,
/// once, and the HTTP status when there was an answer.
pub fn aws<E>(e: SdkError<E>) -> anyhow::Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    if let Some(code) = e.code() {
        let mut line = match e.message() {
            Some(message) if !message.is_empty() => format!("{code}: {message}"),
            _ => code.to_string(),
        };
        if let Some(id) = e.request_id() {
            line.push_str(&format!(" (request id {id})"));
        }
        return anyhow::anyhow!(line);
    }
    let mut line = causes(&e);
    // An answer without an AWS error code (often a proxy's own page): its status says most.
    if let Some(raw) = e.raw_response() {
        line.push_str(&format!(" (HTTP {}", raw.status().as_u16()));
        if let Some(id) = e.request_id() {
            line.push_str(&format!(", request id {id}"));
        }
        line.push(')');
    }
    anyhow::anyhow!(line)
}

/// An error and each of its causes, once, on one line.
pub fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut causes: Vec<String> = vec![];
    let mut next = Some(e);
    while let Some(cause) = next {
        let text = cause.to_string().replace('\n', " ");
        // A cause that only repeats the end of the one it explains adds nothing.
        if !causes.last().is_some_and(|c| c.ends_with(&text)) {
            causes.push(text);
        }
        next = cause.source();
    }
    causes.join(": ")
}

/// A change the API server refused because an admission webhook with
/// `failurePolicy: Fail` could not be called: the AWS Load Balancer
/// Controller's webhooks while it has no ready pod. One line with the way
/// out instead of the raw webhook error; None for any other error.
pub fn webhook_refusal(message: &str) -> Option<Error> {
    let webhook = message.split("failed calling webhook \"").nth(1)?.split('"').next()?;
    let objects = match webhook.split('.').next().unwrap_or_default() {
        "vingress" => "Ingresses (a finalizer removal included)",
        "mservice" => "Services",
        "mtargetgroupbinding" | "vtargetgroupbinding" => "TargetGroupBindings",
        "vingressclassparams" => "IngressClassParams",
        "mpod" => "Pods",
        _ => "the objects it guards",
    };
    Some(
        Error::prerequisite(format!(
            "the API server refuses changes to {objects}: webhook {webhook} cannot be reached (the AWS Load Balancer Controller has no ready pod)"
        ))
        .hint("bring the controller back (kubectl -n kube-system scale deployment aws-load-balancer-controller --replicas=2, or re-run install) and run this again; it then cleans up by itself"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_match_the_documented_table() {
        assert_eq!(Error::failed("x").exit_code(), 1);
        assert_eq!(Error::usage("x").exit_code(), 2);
        assert_eq!(Error::prerequisite("x").exit_code(), 3);
        assert_eq!(Error::timeout("x").exit_code(), 4);
        assert_eq!(Error::interrupted().exit_code(), 130);
        assert_eq!(Error::from(anyhow::anyhow!("boom")).exit_code(), 1);
    }

    #[test]
    fn an_unreachable_controller_webhook_is_one_line_with_the_way_out() {
        let raw = r#"Error: UPGRADE FAILED: Internal error occurred: failed calling webhook "vingress.elbv2.k8s.aws": failed to call webhook: Post "https://aws-load-balancer-webhook-service.kube-system.svc:443/validate-networking-v1-ingress?timeout=10s": no endpoints"#;
        let e = webhook_refusal(raw).unwrap();
        assert_eq!(e.exit_code(), 3);
        assert!(e.to_string().starts_with("the API server refuses changes to Ingresses"), "{e}");
        assert!(!e.to_string().contains('\n'));
        assert!(e.hint_text().unwrap().contains("scale deployment aws-load-balancer-controller"));
        assert!(webhook_refusal("forbidden: User cannot patch").is_none());
    }

    #[test]
    fn an_aws_service_error_is_its_code_message_and_request_id_on_one_line() {
        use aws_sdk_elasticloadbalancingv2::operation::describe_target_health::DescribeTargetHealthError;
        use aws_sdk_elasticloadbalancingv2::types::error::TargetGroupNotFoundException;
        use aws_smithy_runtime_api::http::{Response, StatusCode};
        use aws_smithy_types::body::SdkBody;
        use aws_smithy_types::error::ErrorMetadata;

        let meta = ErrorMetadata::builder().code("TargetGroupNotFound").message("One or more target groups not found");
        let err = DescribeTargetHealthError::TargetGroupNotFoundException(
            TargetGroupNotFoundException::builder()
                .message("One or more target groups not found")
                .meta(meta.build())
                .build(),
        );
        let mut raw = Response::new(StatusCode::try_from(400).unwrap(), SdkBody::from("<ErrorResponse/>"));
        raw.headers_mut().insert("x-amzn-requestid", "req-1");
        let e = aws(SdkError::service_error(err, raw));
        assert_eq!(e.to_string(), "TargetGroupNotFound: One or more target groups not found (request id req-1)");
    }

    #[test]
    fn an_answer_without_an_aws_error_code_shows_its_http_status() {
        use aws_sdk_elasticloadbalancingv2::operation::describe_target_health::DescribeTargetHealthError;
        use aws_smithy_runtime_api::http::{Response, StatusCode};
        use aws_smithy_types::body::SdkBody;

        let err = DescribeTargetHealthError::generic(aws_smithy_types::error::ErrorMetadata::builder().build());
        let raw = Response::new(StatusCode::try_from(502).unwrap(), SdkBody::from("<html>Bad Gateway</html>"));
        let text = aws(SdkError::service_error(err, raw)).to_string();
        assert!(text.ends_with("(HTTP 502)"), "{text}");
        assert!(!text.contains("SdkBody") && !text.contains('\n'), "{text}");
    }

    #[test]
    fn an_aws_error_without_an_answer_names_each_cause_once() {
        use aws_sdk_elasticloadbalancingv2::operation::describe_target_health::DescribeTargetHealthError;
        use aws_smithy_runtime_api::client::result::ConnectorError;

        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let e: SdkError<DescribeTargetHealthError> = SdkError::dispatch_failure(ConnectorError::io(Box::new(io)));
        let text = aws(e).to_string();
        assert!(text.starts_with("dispatch failure") && text.ends_with("connection refused"), "{text}");
        assert_eq!(text.matches("connection refused").count(), 1, "{text}");
        assert!(!text.contains('\n') && !text.contains("DispatchFailure("), "{text}");
    }

    #[test]
    fn context_keeps_every_cause_on_one_line() {
        let r: std::result::Result<(), std::io::Error> =
            Err(std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"));
        let e = r.context("reading values.yaml").unwrap_err();
        assert_eq!(e.to_string(), "reading values.yaml: no such file");
    }
}
