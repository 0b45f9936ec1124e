//! Smoke test of the kube-apiserver peer: with the admin kubeconfig, create a namespace and a
//! ConfigMap in it, read the ConfigMap back and clean up.

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use skiff_tests::{env, require_peer};
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

#[tokio::test]
async fn configmap_round_trip() {
    let path = require_peer!(env::KUBECONFIG, "kube-apiserver");
    let kubeconfig =
        Kubeconfig::read_from(&path).unwrap_or_else(|err| panic!("reading {path}: {err}"));
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig is usable");
    let client = Client::try_from(config).expect("building the client");

    // A fresh namespace per run: without a controller-manager a deleted namespace stays
    // Terminating, so its name cannot be reused until the peer restarts.
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let name = format!("skiff-smoke-{nanos}");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    namespaces
        .create(&PostParams::default(), &namespace)
        .await
        .expect("creating the namespace");

    let config_maps: Api<ConfigMap> = Api::namespaced(client, &name);
    let data = BTreeMap::from([("greeting".to_string(), "hello from skiff".to_string())]);
    let config_map = ConfigMap {
        metadata: ObjectMeta {
            name: Some("smoke".into()),
            ..ObjectMeta::default()
        },
        data: Some(data.clone()),
        ..ConfigMap::default()
    };
    config_maps
        .create(&PostParams::default(), &config_map)
        .await
        .expect("creating the ConfigMap");

    let read = config_maps
        .get("smoke")
        .await
        .expect("reading the ConfigMap");
    assert_eq!(read.data, Some(data));
    assert!(
        read.metadata.uid.is_some(),
        "the API server assigns a uid: {read:?}"
    );

    config_maps
        .delete("smoke", &DeleteParams::default())
        .await
        .expect("deleting the ConfigMap");
    namespaces
        .delete(&name, &DeleteParams::default())
        .await
        .expect("deleting the namespace");
}
