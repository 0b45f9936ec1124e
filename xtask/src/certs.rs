//! Test and development PKI: a CA and certificates issued by it (rcgen).
//!
//! Used for the webhook's serving certificate (`cargo xtask certs`, the dev overlay, the tests)
//! and for the kube-apiserver peer's serving and client certificates.

use anyhow::{Context, Result};
use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use std::fs;
use std::path::{Path, PathBuf};

/// A certificate authority whose certificate and key are PEM files in a folder.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// `ca.crt` in the folder.
    pub cert_path: PathBuf,
}

/// A certificate and its key written as `<name>.crt` and `<name>.key`.
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Ca {
    /// Loads the CA in `dir` (`ca.crt`, `ca.key`), creating it when absent.
    pub fn load_or_create(dir: &Path, common_name: &str) -> Result<Self> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let cert_path = dir.join("ca.crt");
        let key_path = dir.join("ca.key");
        if cert_path.exists() && key_path.exists() {
            let key = KeyPair::from_pem(&fs::read_to_string(&key_path)?)?;
            let issuer = Issuer::from_ca_cert_pem(&fs::read_to_string(&cert_path)?, key)
                .with_context(|| format!("reading CA {}", cert_path.display()))?;
            return Ok(Self { issuer, cert_path });
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = name(common_name, &[]);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        fs::write(&cert_path, cert.pem())?;
        fs::write(&key_path, key.serialize_pem())?;
        Ok(Self {
            issuer: Issuer::new(params, key),
            cert_path,
        })
    }

    /// The CA certificate, base64 of its PEM: what a `caBundle` field holds.
    pub fn ca_bundle(&self) -> Result<String> {
        let pem = fs::read(&self.cert_path)?;
        Ok(base64::engine::general_purpose::STANDARD.encode(pem))
    }

    /// Issues a TLS server certificate for `dns_names` and IP addresses (given as strings).
    pub fn issue_server(&self, dir: &Path, file_name: &str, names: &[&str]) -> Result<Issued> {
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
        params.distinguished_name = name(names.first().copied().unwrap_or("skiff"), &[]);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        self.issue(dir, file_name, params)
    }

    /// Issues a TLS client certificate; Kubernetes reads the user from the CN and the groups
    /// from the O attributes.
    pub fn issue_client(
        &self,
        dir: &Path,
        file_name: &str,
        user: &str,
        groups: &[&str],
    ) -> Result<Issued> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(user, groups);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        self.issue(dir, file_name, params)
    }

    fn issue(&self, dir: &Path, file_name: &str, params: CertificateParams) -> Result<Issued> {
        fs::create_dir_all(dir)?;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let issued = Issued {
            cert: dir.join(format!("{file_name}.crt")),
            key: dir.join(format!("{file_name}.key")),
        };
        fs::write(&issued.cert, cert.pem())?;
        fs::write(&issued.key, key.serialize_pem())?;
        Ok(issued)
    }
}

fn name(common_name: &str, organizations: &[&str]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    for org in organizations {
        dn.push(DnType::OrganizationName, *org);
    }
    dn
}

/// The webhook's serving certificate and the `caBundle` that makes the API server trust it.
pub struct WebhookCerts {
    pub issued: Issued,
    /// Base64 of the CA's PEM.
    pub ca_bundle: String,
}

/// `cargo xtask certs`: a CA and the webhook's serving certificate for the in-cluster Service
/// name and for loopback, plus `ca-bundle.b64` for the MutatingWebhookConfiguration.
pub fn webhook(out: &Path) -> Result<WebhookCerts> {
    let ca = Ca::load_or_create(out, "skiff-webhook-ca")?;
    let issued = ca.issue_server(
        out,
        "webhook",
        &[
            "skiff-webhook.skiff-system.svc",
            "skiff-webhook.skiff-system.svc.cluster.local",
            "localhost",
            "127.0.0.1",
        ],
    )?;
    let bundle = ca.ca_bundle()?;
    fs::write(out.join("ca-bundle.b64"), &bundle)?;
    eprintln!(
        "wrote {} and {} (CA {})",
        issued.cert.display(),
        issued.key.display(),
        ca.cert_path.display()
    );
    Ok(WebhookCerts {
        issued,
        ca_bundle: bundle,
    })
}
