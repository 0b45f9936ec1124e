//! The webhook's review path: a `POST /mutate` body of any bytes is decoded as the server
//! decodes it (`server::decode_review`), reviewed under the shipped policy
//! (`manifests/base/webhook-policy.yaml`) without a cluster, and answered with a response
//! that serialises; never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use skiff_webhook::cluster::Detached;
use skiff_webhook::mutate::review;
use skiff_webhook::policy::Policy;
use skiff_webhook::server::decode_review;
use std::path::Path;
use std::sync::LazyLock;

static POLICY: LazyLock<Policy> = LazyLock::new(|| {
    let config_map: serde_yaml::Value =
        serde_yaml::from_str(include_str!("../../manifests/base/webhook-policy.yaml")).unwrap();
    let text = config_map["data"]["policy.yml"].as_str().unwrap();
    Policy::parse(Path::new("webhook-policy.yaml"), text).unwrap()
});

fuzz_target!(|data: &[u8]| {
    let Ok(request) = decode_review(data) else {
        return;
    };
    let reviewed = review(&request, &POLICY, &Detached);
    serde_json::to_vec(&reviewed.response.into_review()).unwrap();
});
