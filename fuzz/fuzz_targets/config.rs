//! The configuration as `check` sees it: the loader (defaults, then the file, then validation)
//! and, when that accepts it, the plan the gateway would run. Neither may panic; an error must
//! name a key or a line.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use fabrique_gateway::config::{ConfigError, GatewayConfig};
use libfuzzer_sys::fuzz_target;

/// One file per fuzzing process, rewritten for every input: the loader reads a path.
fn scratch() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        std::env::temp_dir().join(format!("fabrique-fuzz-config-{}.toml", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| {
    // The loader reads text; bytes that are not UTF-8 are refused before any parsing.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = scratch();
    std::fs::write(path, text).expect("temp dir writable");
    match GatewayConfig::load_with_env(Some(path), std::iter::empty()) {
        Ok(config) => {
            // `check` goes on to build the plan (adapters, tag catalogue): it may refuse
            // (duplicate tags...), never panic.
            let _ = fabrique_gateway::gateway::plan(&config);
        }
        Err(ConfigError::Invalid { key, reason, .. }) => {
            assert!(
                !key.is_empty(),
                "a validation error names its key ({reason})"
            );
        }
        Err(_) => {}
    }
});
