//! The geoip processor against the real GeoLite2 City and ASN databases (the `geoip` peer),
//! and ip-location-db's flat-schema City database.

use serde_json::json;
use skiff_agent::process::{Event, ProcessorConfig, Processors, Value};
use skiff_tests::{env, require_peer};
use std::path::Path;
use std::time::{Duration, Instant};

fn processors(yaml: &str) -> Processors {
    let configs: Vec<ProcessorConfig> = serde_yaml::with::singleton_map_recursive::deserialize(
        serde_yaml::Deserializer::from_str(yaml),
    )
    .expect("valid processors");
    Processors::build(&configs).expect("processors build")
}

fn lookup(processors: &Processors, ip: &str) -> Event {
    let mut event = json!({ "client": { "ip": ip } })
        .as_object()
        .unwrap()
        .clone()
        .into();
    assert!(processors.run(&mut event));
    event
}

#[test]
fn city_and_asn_of_public_addresses() {
    let city = require_peer!(env::GEOIP_CITY, "geoip");
    let asn = require_peer!(env::GEOIP_ASN, "geoip");
    let geoip = processors(&format!(
        "- geoip: {{ database: {city}, asn_database: {asn} }}"
    ));

    let google = lookup(&geoip, "8.8.8.8");
    assert_eq!(
        google["client"]["geo"]["country_iso_code"], "US",
        "{google:?}"
    );
    assert_eq!(google["client"]["geo"]["continent_code"], "NA");
    assert!(google["client"]["geo"]["location"]["lat"].is_f64());
    assert_eq!(google["client"]["as"]["number"], 15169);
    assert_eq!(google["client"]["as"]["organization"]["name"], "Google LLC");

    // MaxMind's own test address; the February 2018 build places it in Arnold, England.
    let uk = lookup(&geoip, "81.2.69.142");
    assert_eq!(uk["client"]["geo"]["country_iso_code"], "GB", "{uk:?}");
    assert_eq!(uk["client"]["geo"]["country_name"], "United Kingdom");
    assert_eq!(uk["client"]["geo"]["city_name"], "Arnold");
    assert_eq!(uk["client"]["geo"]["region_iso_code"], "GB-ENG");
    assert_eq!(uk["client"]["geo"]["region_name"], "England");
    assert_eq!(uk["client"]["geo"]["timezone"], "Europe/London");

    let with_port = lookup(&geoip, "[2001:4860:4860::8888]:443");
    assert_eq!(with_port["client"]["as"]["number"], 15169, "{with_port:?}");
    assert_eq!(with_port["client"]["geo"]["country_iso_code"], "US");
}

#[test]
fn private_and_garbage_addresses_are_skipped_without_error() {
    let city = require_peer!(env::GEOIP_CITY, "geoip");
    let geoip = processors(&format!("- geoip: {{ database: {city} }}"));
    for ip in [
        "10.0.0.1",
        "192.168.1.20",
        "127.0.0.1",
        "::1",
        "fe80::1",
        "not-an-ip",
        "",
        "1.2.3.4.5",
        "\u{0}\u{fffd}",
    ] {
        let mut event = lookup(&geoip, ip);
        event.remove("@timestamp");
        assert_eq!(
            Value::Object(event),
            json!({ "client": { "ip": ip } }),
            "{ip:?}"
        );
    }
}

#[test]
fn flat_schema_of_ip_location_db() {
    let flat = require_peer!(env::GEOIP_FLAT_CITY_V4, "geoip");
    let geoip = processors(&format!("- geoip: {{ database: {flat} }}"));
    let google = lookup(&geoip, "8.8.8.8");
    assert_eq!(
        google["client"]["geo"]["country_iso_code"], "US",
        "{google:?}"
    );
    assert_eq!(google["client"]["geo"]["timezone"], "America/Chicago");
    assert!(google["client"]["geo"]["location"]["lon"].is_f64());
    assert!(
        google["client"]["geo"].get("city_name").is_none(),
        "empty strings are left out"
    );
    let uk = lookup(&geoip, "81.2.69.142");
    assert_eq!(uk["client"]["geo"]["city_name"], "Bracknell", "{uk:?}");
    assert_eq!(uk["client"]["geo"]["region_name"], "England");
    assert_eq!(uk["client"]["geo"]["postal_code"], "RG12");
}

#[test]
fn a_replaced_database_is_reloaded() {
    let city = require_peer!(env::GEOIP_CITY, "geoip");
    let flat = require_peer!(env::GEOIP_FLAT_CITY_V4, "geoip");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("City.mmdb");
    std::fs::copy(&flat, &path).unwrap();
    let geoip = processors(&format!(
        "- geoip: {{ database: {}, reload_interval: 20ms }}",
        path.display()
    ));
    let continent = |event: &Event| event["client"]["geo"].get("continent_name").cloned();
    assert_eq!(
        continent(&lookup(&geoip, "8.8.8.8")),
        None,
        "the flat schema has no continent"
    );

    // Replaced as geoipupdate does: written beside, then renamed over.
    let next = dir.path().join("City.mmdb.tmp");
    std::fs::copy(Path::new(&city), &next).unwrap();
    std::fs::rename(&next, &path).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if continent(&lookup(&geoip, "8.8.8.8")) == Some("North America".into()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replaced database was not reloaded within 60s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
