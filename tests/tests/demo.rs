//! `cargo xtask run`, the README's first command, run as a new user runs it: the webhook's
//! sample Deployments come back patched (one left alone) with the HPA they would get, and the
//! agent's events carry what the demo promises: city, country, network, browser, system,
//! device and route.

use serde_json::Value;
use std::process::Command;

#[test]
fn the_first_command_shows_the_product() {
    // The demo's agent may mount tracefs (its eBPF backend, as root).
    skiff_tests::own_mounts();
    let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["xtask", "run", "--seconds", "15", "--json"])
        .current_dir(skiff_tests::workspace_root())
        .output()
        .expect("running cargo xtask run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "cargo xtask run failed:\n{stderr}");

    let bare = stderr
        .split("a bare Deployment, shop/checkout:")
        .nth(1)
        .unwrap_or_else(|| panic!("no bare Deployment in:\n{stderr}"));
    for change in [
        "/spec/template/spec/containers/0/resources/requests",
        "/spec/template/spec/containers/0/resources/limits",
        "/spec/template/spec/topologySpreadConstraints",
        "skiff.dev/logs",
        "would create HorizontalPodAutoscaler shop/checkout",
    ] {
        assert!(
            bare.contains(change),
            "the bare Deployment lacks {change}:\n{stderr}"
        );
    }
    let opted_out = stderr
        .split("opted out")
        .nth(1)
        .unwrap_or_else(|| panic!("no opted-out Deployment in:\n{stderr}"));
    assert!(opted_out.contains("unchanged (no patch)"), "{stderr}");
    assert!(
        stderr.contains("events shipped"),
        "no summary line:\n{stderr}"
    );

    let events: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not NDJSON: {line}")))
        .collect();
    assert!(events.len() >= 20, "only {} events in 15 s", events.len());
    let field = |event: &Value, path: &str| {
        let value = path.split('.').fold(event, |v, key| &v[key]);
        (!value.is_null()).then(|| value.to_string())
    };
    for event in &events {
        for path in [
            "client.geo.city_name",
            "client.geo.country_iso_code",
            "client.as.number",
            "user_agent.name",
            "http.route",
            "http.response.status_code",
            "service_name",
            "environment",
        ] {
            assert!(field(event, path).is_some(), "no {path} in {event}");
        }
    }
    let browsers = events
        .iter()
        .filter(|e| {
            field(e, "user_agent.os.name").is_some() && field(e, "user_agent.device.name").is_some()
        })
        .count();
    assert!(
        browsers * 2 > events.len(),
        "most events come from browsers with a system and device"
    );
    assert!(
        events.iter().any(|e| e["http"]["route"] == "/users/:id"),
        "the ids in /users/42 become a route"
    );
}
