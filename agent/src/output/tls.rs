//! `ssl` options shared by the outputs, shaped like Filebeat's: which CAs to trust, an
//! optional client certificate, and whether to verify the server at all.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// `ssl` in an output's configuration.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Use TLS. Default: true when the `ssl` block is present.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// PEM files of the CAs to trust instead of the built-in web roots. Default: none.
    #[serde(default)]
    pub certificate_authorities: Vec<PathBuf>,
    /// PEM client certificate, for mutual TLS. Default: none.
    #[serde(default)]
    pub certificate: Option<PathBuf>,
    /// PEM private key of `certificate`. Default: none.
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// `full` checks the chain and the host name; `none` checks nothing (tests only).
    /// Default: full.
    #[serde(default)]
    pub verification_mode: VerificationMode,
}

/// How much of the server's certificate is checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VerificationMode {
    /// Chain to a trusted CA, and the name the output connects to.
    #[default]
    Full,
    /// Nothing: any certificate is accepted. Never in production.
    None,
}

fn default_true() -> bool {
    true
}

impl TlsConfig {
    /// A rustls client configuration (ring provider) for these options. Reads the PEM files,
    /// so errors name the file.
    pub fn rustls(&self) -> Result<rustls::ClientConfig, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|err| err.to_string())?;
        let builder = match self.verification_mode {
            VerificationMode::Full => {
                let mut roots = rustls::RootCertStore::empty();
                if self.certificate_authorities.is_empty() {
                    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                }
                for path in &self.certificate_authorities {
                    for cert in read_certs(path)? {
                        roots
                            .add(cert)
                            .map_err(|err| format!("{}: {err}", path.display()))?;
                    }
                }
                builder.with_root_certificates(roots)
            }
            VerificationMode::None => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnything(provider))),
        };
        match (&self.certificate, &self.key) {
            (Some(cert), Some(key)) => {
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|err| format!("{}: {err}", key.display()))?;
                builder
                    .with_client_auth_cert(read_certs(cert)?, key)
                    .map_err(|err| format!("client certificate {}: {err}", cert.display()))
            }
            (None, None) => Ok(builder.with_no_client_auth()),
            _ => Err("`certificate` and `key` go together".to_string()),
        }
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|err| format!("{}: {err}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}

/// `verification_mode: none`: accepts any certificate but still checks the handshake's
/// signatures, so the connection is encrypted, only not authenticated.
#[derive(Debug)]
struct AcceptAnything(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
