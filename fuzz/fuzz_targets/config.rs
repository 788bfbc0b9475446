//! The configuration as `check` sees it: the loader (defaults, then the file, then validation)
//! and, when that accepts it, the plan the gateway would run. Neither may panic; an error must
//! name a key or a line.
#![no_main]

use std::path::Path;

use fabrique_gateway::config::{ConfigError, GatewayConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The loader reads text; bytes that are not UTF-8 are refused before any parsing.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The text goes to the loader as the file's: no file is written (the process ends with
    // `exit`, so a scratch file was left in the temp dir by every run).
    let file = (Path::new("fuzz.toml"), text.to_owned());
    match GatewayConfig::load_text_with_env(Some(file), std::iter::empty()) {
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
