//! The webhook's serving certificate, as files, and clients that trust it; shared by the tests
//! and the benchmark.

use skiff_tests::pki::Ca;
use std::path::PathBuf;

/// A throwaway CA and a certificate for 127.0.0.1 signed by it, as `tls.crt` and `tls.key`
/// files (what a mounted Secret holds).
pub struct Certificates {
    pub ca: Ca,
    dir: tempfile::TempDir,
}

impl Certificates {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new();
        let certificates = Self { ca, dir };
        certificates
            .ca
            .issue(&["127.0.0.1"], &certificates.cert(), &certificates.key());
        certificates
    }

    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("tls.crt")
    }

    pub fn key(&self) -> PathBuf {
        self.dir.path().join("tls.key")
    }

    /// An HTTP/1.1 keep-alive client trusting the CA.
    pub fn client(&self) -> reqwest::Client {
        self.ca.client_builder().http1_only().build().unwrap()
    }
}
