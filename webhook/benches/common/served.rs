//! The webhook's binary in a process of its own, as in a cluster; shared by the benchmarks.

use crate::certificates::Certificates;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The release binary serving on loopback, admitting only, its logs in a file.
pub struct Served {
    pub child: Child,
    pub url: String,
    pub certificates: Certificates,
}

impl Served {
    /// Starts `binary` and waits until it is ready.
    pub async fn start(binary: &Path) -> Self {
        let certificates = Certificates::new();
        let port = skiff_tests::free_port();
        let logs = std::fs::File::create(std::env::temp_dir().join("skiff-bench-webhook.log"))
            .expect("a log file");
        let child = Command::new(binary)
            .args(["--no-cluster", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--tls-cert")
            .arg(certificates.cert())
            .arg("--tls-key")
            .arg(certificates.key())
            .stdout(Stdio::null())
            .stderr(logs)
            .spawn()
            .expect("starting skiff-webhook");
        let served = Self {
            child,
            url: format!("https://127.0.0.1:{port}"),
            certificates,
        };
        let client = served.certificates.client();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !client
            .get(format!("{}/readyz", served.url))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            assert!(Instant::now() < deadline, "skiff-webhook never got ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        served
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
