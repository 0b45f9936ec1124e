//! The agent's configuration (`config`): any text parses, or is refused with an error, without
//! a panic; a configuration that parses prints as `skiff-agent check-config` prints it, and
//! its parsers and processors build and run over an event as the pipeline would.

#![no_main]

use libfuzzer_sys::fuzz_target;
use skiff_agent::config::{Config, InputConfig};
use skiff_agent::process::parse::Parsers;
use skiff_agent::process::{Event, ProcessorConfig, Processors};
use std::path::Path;

const EVENT: &str = r#"{
    "@timestamp": "2026-01-01T00:00:00.000Z",
    "message": "10.0.0.1 - - [01/Jan/2026:00:00:00 +0000] \"GET /users/42?x=1 HTTP/1.1\" 200 512 \"-\" \"curl/8.5.0\"",
    "client": { "ip": "10.0.0.1" },
    "user_agent": { "original": "Mozilla/5.0 (X11; Linux x86_64) Firefox/130.0" },
    "log": { "offset": 0, "file": { "path": "/var/log/app.log" } }
}"#;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = Config::parse(Path::new("agent.yml"), text) else {
        return;
    };
    let _ = serde_yaml::to_string(&config);
    let mut chains = vec![config.processors];
    for input in config.inputs {
        if let InputConfig::Filestream(filestream) = input {
            let _ = Parsers::build(&filestream.parsers);
            chains.push(filestream.processors);
        }
    }
    for chain in chains {
        // geoip reads the database file the configuration names, add_kubernetes_metadata
        // watches a cluster: neither is configuration parsing.
        let local: Vec<ProcessorConfig> = chain
            .into_iter()
            .filter(|p| {
                !matches!(
                    p,
                    ProcessorConfig::Geoip(_) | ProcessorConfig::AddKubernetesMetadata(_)
                )
            })
            .collect();
        if let Ok(processors) = Processors::build(&local) {
            let mut event: Event = serde_json::from_str(EVENT).unwrap();
            let _ = processors.run(&mut event);
        }
    }
});
