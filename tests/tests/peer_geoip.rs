//! Smoke test of the GeoIP peer: the GeoLite2 City and ASN databases open with `maxminddb` and
//! answer like MaxMind's (full GeoIP2 schemas). The data is a pinned 2018 build, so the answers
//! below do not drift.

use maxminddb::{Reader, geoip2};
use skiff_tests::{env, require_peer};
use std::net::IpAddr;

fn open(path: &str) -> Reader<Vec<u8>> {
    Reader::open_readfile(path).unwrap_or_else(|err| panic!("opening {path}: {err}"))
}

#[test]
fn city_database_locates_public_addresses() {
    let path = require_peer!(env::GEOIP_CITY, "geoip");
    let reader = open(&path);
    assert_eq!(reader.metadata().database_type, "GeoLite2-City");

    // (address, country ISO code, English city name where the database has one)
    let cases = [
        ("8.8.8.8", "US", None),
        ("2001:4860:4860::8888", "US", None),
        ("1.1.1.1", "AU", Some("Research")),
        ("81.2.69.142", "GB", Some("Arnold")),
        ("89.160.20.128", "SE", None),
    ];
    for (address, country, city_name) in cases {
        let ip: IpAddr = address.parse().unwrap();
        let city: geoip2::City = reader
            .lookup(ip)
            .and_then(|result| result.decode())
            .unwrap_or_else(|err| panic!("{address}: {err}"))
            .unwrap_or_else(|| panic!("{address}: no record"));
        println!("{address}: {}", serde_json::to_string(&city).unwrap());
        assert_eq!(city.country.iso_code, Some(country), "{address}");
        assert_eq!(city.city.names.english, city_name, "{address}");
        assert!(city.location.latitude.is_some(), "{address}: no location");
    }

    let arnold: geoip2::City = reader
        .lookup("81.2.69.142".parse().unwrap())
        .unwrap()
        .decode()
        .unwrap()
        .unwrap();
    assert_eq!(arnold.country.names.english, Some("United Kingdom"));
    assert_eq!(arnold.continent.code, Some("EU"));
    assert_eq!(arnold.location.time_zone, Some("Europe/London"));
    let subdivisions: Vec<_> = arnold.subdivisions.iter().map(|s| s.iso_code).collect();
    assert_eq!(subdivisions, [Some("ENG"), Some("NTT")]);
}

#[test]
fn asn_database_names_networks() {
    let path = require_peer!(env::GEOIP_ASN, "geoip");
    let reader = open(&path);
    assert_eq!(reader.metadata().database_type, "GeoLite2-ASN");

    let cases = [
        ("8.8.8.8", 15169, "Google LLC"),
        ("2001:4860:4860::8888", 15169, "Google LLC"),
        ("81.2.69.142", 20712, "Andrews & Arnold Ltd"),
        ("89.160.20.128", 29518, "Bredband2 AB"),
    ];
    for (address, number, organization) in cases {
        let asn: geoip2::Asn = reader
            .lookup(address.parse().unwrap())
            .and_then(|result| result.decode())
            .unwrap_or_else(|err| panic!("{address}: {err}"))
            .unwrap_or_else(|| panic!("{address}: no record"));
        println!("{address}: {}", serde_json::to_string(&asn).unwrap());
        assert_eq!(asn.autonomous_system_number, Some(number), "{address}");
        assert_eq!(
            asn.autonomous_system_organization,
            Some(organization),
            "{address}"
        );
    }

    // A private address is in no public network.
    let private = reader.lookup("10.1.2.3".parse().unwrap()).unwrap();
    assert!(!private.has_data());
}

/// The flat-schema republication of current GeoLite2 City data (`@ip-location-db`): one
/// record per network with `country_code`, `city`, `latitude`, `longitude`, `timezone`.
#[test]
fn flat_city_databases_locate_public_addresses() {
    let v4 = require_peer!(env::GEOIP_FLAT_CITY_V4, "geoip");
    let v6 = require_peer!(env::GEOIP_FLAT_CITY_V6, "geoip");
    for (path, address, country) in [
        (&v4, "8.8.8.8", "US"),
        (&v4, "81.2.69.142", "GB"),
        (&v6, "2001:4860:4860::8888", "US"),
    ] {
        let reader = open(path);
        let ip: IpAddr = address.parse().unwrap();
        let record: serde_json::Value = reader
            .lookup(ip)
            .and_then(|result| result.decode())
            .unwrap_or_else(|err| panic!("{address}: {err}"))
            .unwrap_or_else(|| panic!("{address}: no record"));
        println!("{address}: {record}");
        assert_eq!(record["country_code"], country, "{address}");
        assert!(record["latitude"].is_number(), "{address}: no location");
    }
}
