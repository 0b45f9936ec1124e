//! The registry file (`registry`): an `offsets.json` of any bytes opens (one that does not
//! parse is set aside), and what the registry then writes, with a commit added, it reads back:
//! the same files, the commit's offset, and nothing set aside.

#![no_main]

use libfuzzer_sys::fuzz_target;
use skiff_agent::harvest::identity::Generation;
use skiff_agent::registry::{Checkpoint, Registry, RegistryConfig};
use skiff_agent::watch::FileId;
use std::path::PathBuf;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap();
    let config = RegistryConfig {
        path: dir.path().to_path_buf(),
        ..RegistryConfig::default()
    };
    let file = dir.path().join("offsets.json");
    let aside = dir.path().join("offsets.json.unreadable");
    std::fs::write(&file, data).unwrap();
    let registry = Registry::open(&config).unwrap();
    let _ = std::fs::remove_file(&aside);
    let checkpoint = Checkpoint {
        id: FileId { dev: 1, ino: 2 },
        generation: Generation::default(),
        path: PathBuf::from("/var/log/app.log"),
        offset: 42,
    };
    registry.commit(checkpoint.clone());
    registry.flush().unwrap();
    let reopened = Registry::open(&config).unwrap();
    assert!(!aside.exists(), "the registry's own file was set aside");
    assert_eq!(reopened.len(), registry.len());
    assert_eq!(reopened.lookup(checkpoint.id), Some(checkpoint));
});
