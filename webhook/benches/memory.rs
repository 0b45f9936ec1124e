//! `cargo bench -p skiff-webhook --bench memory`: the webhook's resident memory under slow
//! clients and very large Deployments. Each case runs in a fresh process of the release binary
//! (`SKIFF_WEBHOOK_BIN` names another build to measure instead, such as an older one for a
//! before-and-after), and reports its VmRSS while the case holds and its peak VmHWM.
//!
//! 1. idle: just started and ready.
//! 2. slow clients: 3,000 connections held at once (a third each sending half a TLS handshake,
//!    half a request head, half a body), well within the 10 s deadlines.
//! 3. a CREATE of a 1.35 MB Deployment of 40,000 containers.
//! 4. an UPDATE of the same with an invalid quantity in each container.
//! 5. CREATEs whose bodies are all tiny annotations, the costliest shape to decode per byte:
//!    3 MB (what the API server takes from a client) and 6 MiB.

#[path = "../tests/support/certificates.rs"]
mod certificates;
#[path = "../tests/support/objects.rs"]
mod objects;
#[path = "../tests/support/raw.rs"]
mod raw;
#[path = "common/served.rs"]
mod served;

use objects::{deployment, review};
use raw::{HALF_A_BODY, HALF_A_CLIENT_HELLO, HALF_A_HEAD};
use serde_json::{Value, json};
use served::Served;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Slow clients held at once.
const SLOW_CLIENTS: usize = 3000;
/// Containers of the large Deployment.
const CONTAINERS: usize = 40_000;
/// How long the slow clients are held before measuring: all connected, all below 10 s.
const HOLD: Duration = Duration::from_secs(4);

fn main() {
    let binary = std::env::var_os("SKIFF_WEBHOOK_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_skiff-webhook")));
    println!("measuring {}", binary.display());
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let mut figures = Vec::new();
    runtime.block_on(async {
        let served = Served::start(&binary).await;
        let (rss, _) = memory(&served);
        figures.push(("webhook_idle_rss_mb", rss));
        drop(served);

        let served = Served::start(&binary).await;
        let held = slow_clients(&served).await;
        tokio::time::sleep(HOLD).await;
        let (rss, peak) = memory(&served);
        figures.push(("webhook_slow_clients_connected", held as f64));
        figures.push(("webhook_slow_clients_rss_mb", rss));
        figures.push(("webhook_slow_clients_peak_rss_mb", peak));
        drop(served);

        for (case, object, old) in [
            ("create_40k", large(false), None),
            ("update_invalid_40k", large(true), Some(large(true))),
            ("annotations_3mb", annotated(3_000_000), None),
            ("annotations_6mib", annotated((6 << 20) - 4096), None),
        ] {
            let served = Served::start(&binary).await;
            let (status, size) = send(&served, object, old).await;
            let (_, peak) = memory(&served);
            println!("{case}: HTTP {status}, response {size} bytes");
            figures.push((leak(format!("webhook_{case}_peak_rss_mb")), peak));
            figures.push((
                leak(format!("webhook_{case}_response_mb")),
                size as f64 / 1e6,
            ));
        }
    });
    skiff_tests::bench::report(&figures);
}

/// A figure's name for [`skiff_tests::bench::report`], which takes `&'static str`.
fn leak(name: String) -> &'static str {
    Box::leak(name.into_boxed_str())
}

/// VmRSS and VmHWM of the webhook's process, in MB.
fn memory(served: &Served) -> (f64, f64) {
    let path = format!("/proc/{}/status", served.child.id());
    let status =
        std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("reading {path}: {err}"));
    let kb = |field: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|rest| rest.trim().trim_end_matches(" kB").parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {field} in {path}"))
    };
    (kb("VmRSS:") / 1e3, kb("VmHWM:") / 1e3)
}

/// Opens [`SLOW_CLIENTS`] slow connections and leaves them open (the tasks hold them until
/// the runtime ends); returns how many got as far as sending their bytes.
async fn slow_clients(served: &Served) -> usize {
    let addr: SocketAddr = served
        .url
        .trim_start_matches("https://")
        .parse()
        .expect("an address");
    let connector = raw::connector(&served.certificates.ca.pem);
    let (sent, mut sent_rx) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..SLOW_CLIENTS {
        let (connector, sent) = (connector.clone(), sent.clone());
        tokio::spawn(async move {
            let hold = |stream| async move {
                let _ = sent.send(());
                tokio::time::sleep(Duration::from_secs(60)).await;
                drop(stream);
            };
            match i % 3 {
                0 => {
                    let mut tcp = TcpStream::connect(addr).await.expect("connected");
                    tcp.write_all(HALF_A_CLIENT_HELLO).await.expect("sent");
                    hold(Box::new(tcp) as Box<dyn Send>).await;
                }
                kind => {
                    // Beyond the webhook's connection cap, this waits here (and fails when the
                    // webhook is stopped).
                    let Ok(mut tls) = raw::handshake(&connector, addr).await else {
                        return;
                    };
                    let bytes = if kind == 1 { HALF_A_HEAD } else { HALF_A_BODY };
                    tls.write_all(bytes).await.expect("sent");
                    tls.flush().await.expect("sent");
                    hold(Box::new(tls)).await;
                }
            }
        });
    }
    drop(sent);
    let mut held = 0;
    let deadline = tokio::time::Instant::now() + HOLD;
    while let Ok(Some(())) = tokio::time::timeout_at(deadline, sent_rx.recv()).await {
        held += 1;
    }
    held
}

/// A Deployment of [`CONTAINERS`] containers, each asking for an invalid CPU request if
/// `invalid`.
fn large(invalid: bool) -> Value {
    let mut object = deployment();
    object["spec"]["template"]["spec"]["containers"] = (0..CONTAINERS)
        .map(|i| {
            let mut container = json!({ "name": format!("c{i}"), "image": "nginx" });
            if invalid {
                container["resources"] = json!({ "requests": { "cpu": format!("bad{i}") } });
            }
            container
        })
        .collect();
    object
}

/// A Deployment whose review is about `bytes` long, most of it annotations `"a1": ""`, ….
fn annotated(bytes: usize) -> Value {
    let mut object = deployment();
    let base = serde_json::to_vec(&review(object.clone())).map_or(0, |v| v.len());
    let annotations = &mut object["metadata"]["annotations"];
    let mut size = base;
    for i in 0.. {
        let key = format!("a{i}");
        // `"a1":"",` in JSON.
        size += key.len() + 6;
        if size > bytes {
            break;
        }
        annotations[key] = json!("");
    }
    object
}

/// Sends one review of `object` (an UPDATE from `old` when given); the status and the size of
/// the response.
async fn send(served: &Served, object: Value, old: Option<Value>) -> (u16, usize) {
    let mut body = review(object);
    if let Some(old) = old {
        body["request"]["operation"] = json!("UPDATE");
        body["request"]["oldObject"] = old;
    }
    let body = serde_json::to_vec(&body).expect("a review serialises");
    println!("review of {} bytes", body.len());
    let response = served
        .certificates
        .ca
        .client_builder()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("a client")
        .post(format!("{}/mutate", served.url))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("an answer");
    let status = response.status().as_u16();
    let size = response.bytes().await.expect("a response body").len();
    (status, size)
}
