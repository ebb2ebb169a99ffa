//! The one TLS setup under every connection the plugin makes (the Kubernetes
//! API server, AWS, the IAM policy download, the local probe): rustls on ring,
//! trusting the PEM bundle `SSL_CERT_FILE` names when it is set, else the
//! Mozilla CA roots built into the binary. A kubeconfig's
//! `certificate-authority` replaces both for its API server, as in kubectl.
//!
//! It is the same on every platform on purpose: no build reads or links a
//! platform's certificate store (macOS's Security framework, Windows'
//! CryptoAPI), so the macOS and Windows archives cross-build on Linux and
//! trust exactly what the Linux one trusts.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::error::{Context, Error, Result};

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The CA roots: `SSL_CERT_FILE` when set (as curl and OpenSSL take it), else the built-in web PKI roots.
pub fn roots() -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    match std::env::var_os("SSL_CERT_FILE").filter(|v| !v.is_empty()) {
        Some(file) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&file)
                .and_then(|i| i.collect::<std::result::Result<_, _>>())
                .map_err(|e| {
                    Error::prerequisite(format!(
                        "cannot read CA certificates from SSL_CERT_FILE={}: {e}",
                        file.to_string_lossy()
                    ))
                    .hint("point SSL_CERT_FILE at a PEM bundle, or unset it")
                })?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(Error::prerequisite(format!(
                    "SSL_CERT_FILE={} holds no usable CA certificate",
                    file.to_string_lossy()
                ))
                .hint("point SSL_CERT_FILE at a PEM bundle, or unset it"));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    Ok(roots)
}

/// Roots from DER certificates (a kubeconfig's certificate-authority), or why none is usable.
pub fn roots_from_der(ders: &[Vec<u8>]) -> std::result::Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for der in ders {
        roots.add(CertificateDer::from(der.clone())).map_err(|e| format!("a CA certificate is not usable: {e}"))?;
    }
    if roots.is_empty() {
        return Err("it holds no CA certificate".into());
    }
    Ok(roots)
}

/// Why a server presenting `certificate` (PEM, the leaf first) for `name` would not be
/// trusted by a client that trusts only `ca_bundle` (PEM), at `at`: what the API server
/// meets calling an admission webhook; None when it would be.
pub fn untrusted_serving_certificate(
    ca_bundle: &[u8],
    certificate: &[u8],
    name: &str,
    at: std::time::SystemTime,
) -> Option<String> {
    let cas: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(ca_bundle).filter_map(|c| c.ok()).collect();
    let roots = match roots_from_der(&cas.iter().map(|c| c.to_vec()).collect::<Vec<_>>()) {
        Ok(r) => Arc::new(r),
        Err(e) => return Some(format!("its caBundle is not usable: {e}")),
    };
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(certificate).filter_map(|c| c.ok()).collect();
    let Some((leaf, intermediates)) = chain.split_first() else {
        return Some("the serving certificate holds no certificate".into());
    };
    let verifier = match rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider()).build() {
        Ok(v) => v,
        Err(e) => return Some(format!("its caBundle is not usable: {e}")),
    };
    let Ok(server) = ServerName::try_from(name.to_string()) else {
        return Some(format!("{name} is not a server name"));
    };
    let now = UnixTime::since_unix_epoch(at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default());
    let verdict = verifier.verify_server_cert(leaf, intermediates, &server, &[], now);
    use rustls::CertificateError as C;
    match verdict {
        Ok(_) => None,
        Err(rustls::Error::InvalidCertificate(e)) => Some(match e {
            C::UnknownIssuer | C::BadSignature => {
                "it is not signed by the caBundle's CA (x509: certificate signed by unknown authority)".into()
            }
            C::Expired | C::ExpiredContext { .. } => "it has expired".into(),
            C::NotValidYet | C::NotValidYetContext { .. } => "it is not valid yet".into(),
            C::NotValidForName | C::NotValidForNameContext { .. } => format!("it is not valid for {name}"),
            other => format!("it is not trusted: {other:?}"),
        }),
        Err(e) => Some(format!("it is not trusted: {e}")),
    }
}

/// A client certificate chain and its private key, both PEM.
pub struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Identity {
    pub fn from_pem(certificate: &[u8], key: &[u8]) -> std::result::Result<Identity, String> {
        let chain = CertificateDer::pem_slice_iter(certificate)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| format!("the client certificate is not PEM: {e}"))?;
        if chain.is_empty() {
            return Err("the client certificate holds no certificate".into());
        }
        let key =
            PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("the client key is not a PEM private key: {e}"))?;
        Ok(Identity { chain, key })
    }
}

/// A client configuration trusting `roots`, presenting `identity` when given.
pub fn client_config(roots: RootCertStore, identity: Option<Identity>) -> Result<ClientConfig> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("setting up TLS")?
        .with_root_certificates(roots);
    match identity {
        Some(Identity { chain, key }) => builder.with_client_auth_cert(chain, key).map_err(|e| {
            Error::prerequisite(format!("the kubeconfig's client certificate cannot be used: {e}"))
                .hint("check client-certificate and client-key in the kubeconfig")
        }),
        None => Ok(builder.with_no_client_auth()),
    }
}

/// `insecure-skip-tls-verify: true`: any server certificate is taken (its
/// signatures over the handshake are still checked), as kubectl does then.
pub fn skip_verification(config: &mut ClientConfig) {
    config.dangerous().set_certificate_verifier(Arc::new(AnyCertificate(provider())));
}

#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
