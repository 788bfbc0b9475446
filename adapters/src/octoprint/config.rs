//! A `[[devices]]` block with `protocol = "octoprint"`.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::block::Block;
use crate::device::DeviceCommon;

use crate::device::ConfigIssue;

/// One printer behind an OctoPrint server. Its tags are fixed by the adapter (see
/// [`super::tags`]), so there is no `tags` list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OctoPrintOptions {
    /// Base URL of the OctoPrint server, `http://host:port` (a path prefix is kept, for an
    /// OctoPrint behind a reverse proxy).
    pub url: String,
    /// Name of the environment variable that holds the API key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// File whose content (trimmed) is the API key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_file: Option<PathBuf>,
    /// Time between two polls, in milliseconds.
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
    /// Time one HTTP request may take, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Offer `NozzleTargetSetpoint` and `BedTargetSetpoint`, writable, to set the heaters'
    /// targets from OPC UA. Off by default: heating a printer remotely is a decision.
    #[serde(default)]
    pub setpoints: bool,
    /// Offer the methods `PauseJob`, `ResumeJob` and `CancelJob` on the device, to control
    /// the print job from OPC UA. Off by default, like the setpoints.
    #[serde(default)]
    pub job_control: bool,
    /// Highest nozzle target a client may write, in °C.
    #[serde(default = "default_max_nozzle_target")]
    pub max_nozzle_target: f64,
    /// Highest bed target a client may write, in °C.
    #[serde(default = "default_max_bed_target")]
    pub max_bed_target: f64,
}

/// The whole `[[devices]]` block: the keys every protocol shares, then these.
pub type OctoPrintDevice = Block<DeviceCommon, OctoPrintOptions>;

fn default_poll_ms() -> u64 {
    1000
}

fn default_timeout_ms() -> u64 {
    2000
}

fn default_max_nozzle_target() -> f64 {
    260.0
}

fn default_max_bed_target() -> f64 {
    100.0
}

/// Where the API key comes from; read at every connection attempt, so that fixing the
/// environment or the file does not need a restart.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiKeySource {
    Env(String),
    File(PathBuf),
}

/// An API key: never shown in logs or debug output.
#[derive(Clone, PartialEq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiKeyError {
    #[error("environment variable `{0}` (api_key_env) is not set or empty")]
    EnvMissing(String),
    #[error("cannot read api_key_file `{path}`: {reason}")]
    File { path: String, reason: String },
    #[error("api_key_file `{0}` is empty")]
    FileEmpty(String),
}

impl ApiKeySource {
    pub fn read(&self) -> Result<ApiKey, ApiKeyError> {
        match self {
            ApiKeySource::Env(var) => match std::env::var(var) {
                Ok(key) if !key.trim().is_empty() => Ok(ApiKey(key.trim().to_owned())),
                _ => Err(ApiKeyError::EnvMissing(var.clone())),
            },
            ApiKeySource::File(path) => {
                let shown = path.display().to_string();
                let text = std::fs::read_to_string(path).map_err(|e| ApiKeyError::File {
                    path: shown.clone(),
                    reason: e.to_string(),
                })?;
                let key = text.trim();
                if key.is_empty() {
                    return Err(ApiKeyError::FileEmpty(shown));
                }
                Ok(ApiKey(key.to_owned()))
            }
        }
    }

    /// How the source is named in messages: `api_key_env OCTOPRINT_API_KEY`.
    pub fn describe(&self) -> String {
        match self {
            ApiKeySource::Env(var) => format!("api_key_env `{var}`"),
            ApiKeySource::File(path) => format!("api_key_file `{}`", path.display()),
        }
    }
}

impl Block<DeviceCommon, OctoPrintOptions> {
    /// The key source; only `None` on a block that did not pass [`Self::validate`].
    pub fn api_key_source(&self) -> Option<ApiKeySource> {
        match (&self.api_key_env, &self.api_key_file) {
            (Some(var), None) => Some(ApiKeySource::Env(var.clone())),
            (None, Some(path)) => Some(ApiKeySource::File(path.clone())),
            _ => None,
        }
    }

    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_ms)
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// The parsed base URL, always ending with `/` so that `api/printer` joins below it.
    pub fn base_url(&self) -> Result<reqwest::Url, String> {
        let mut url = reqwest::Url::parse(self.url.trim()).map_err(|e| {
            format!(
                "`{}` is not a URL ({e}); expected http://host:port",
                self.url
            )
        })?;
        match url.scheme() {
            "http" => {}
            "https" => {
                return Err(format!(
                    "`{}`: https is not supported by this build (no TLS); \
                     use http on the truck's network",
                    self.url
                ))
            }
            other => {
                return Err(format!(
                    "`{}`: scheme `{other}` is not supported; use http://host:port",
                    self.url
                ))
            }
        }
        match url.host_str() {
            None | Some("") => return Err(format!("`{}` has no host", self.url)),
            Some(host) => crate::net::check_host(host)?,
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "`{}`: give the server's base URL, without `?` or `#`",
                self.url
            ));
        }
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        Ok(url)
    }

    /// Checks what serde cannot; keys are relative to the block.
    pub fn validate(&self) -> Result<(), ConfigIssue> {
        self.base_url().map_err(|r| ConfigIssue::new("url", r))?;
        match (&self.api_key_env, &self.api_key_file) {
            (None, None) => {
                return Err(ConfigIssue::new(
                    "api_key_env",
                    "OctoPrint needs an API key: set `api_key_env` (the name of the \
                     environment variable holding it) or `api_key_file`",
                ))
            }
            (Some(_), Some(_)) => {
                return Err(ConfigIssue::new(
                    "api_key_file",
                    "give either `api_key_env` or `api_key_file`, not both",
                ))
            }
            (Some(var), None) => {
                let plain = !var.is_empty()
                    && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !var.starts_with(|c: char| c.is_ascii_digit());
                if !plain {
                    return Err(ConfigIssue::new(
                        "api_key_env",
                        format!(
                            "`{var}` is not an environment variable name \
                             (the key itself does not belong in the file)"
                        ),
                    ));
                }
            }
            (None, Some(path)) => {
                if path.as_os_str().is_empty() {
                    return Err(ConfigIssue::new("api_key_file", "must not be empty"));
                }
            }
        }
        if !(100..=60_000).contains(&self.poll_ms) {
            return Err(ConfigIssue::new(
                "poll_ms",
                format!("must be between 100 and 60000, got {}", self.poll_ms),
            ));
        }
        if !(100..=60_000).contains(&self.timeout_ms) {
            return Err(ConfigIssue::new(
                "timeout_ms",
                format!("must be between 100 and 60000, got {}", self.timeout_ms),
            ));
        }
        for (key, value) in [
            ("max_nozzle_target", self.max_nozzle_target),
            ("max_bed_target", self.max_bed_target),
        ] {
            if !(value.is_finite() && (0.0..=500.0).contains(&value)) {
                return Err(ConfigIssue::new(
                    key,
                    format!("must be between 0 and 500 °C, got {value}"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(extra: &str) -> Result<OctoPrintDevice, toml::de::Error> {
        toml::from_str(&format!(
            "name = \"Printer3D\"\nstation = \"Printing\"\n{extra}"
        ))
    }

    fn valid() -> OctoPrintDevice {
        device("url = \"http://127.0.0.1:5000\"\napi_key_env = \"OCTOPRINT_API_KEY\"\n").unwrap()
    }

    #[test]
    fn defaults_and_a_valid_block() {
        let d = valid();
        assert_eq!(d.poll_ms, 1000);
        assert_eq!(d.timeout_ms, 2000);
        assert!(!d.setpoints);
        assert!(d.validate().is_ok());
        assert_eq!(d.base_url().unwrap().as_str(), "http://127.0.0.1:5000/");
        assert_eq!(
            d.api_key_source(),
            Some(ApiKeySource::Env("OCTOPRINT_API_KEY".into()))
        );
    }

    #[test]
    fn a_path_prefix_is_kept_for_reverse_proxies() {
        let d = {
            let mut d = valid();
            d.url = "http://truck.local/octoprint".into();
            d
        };
        let base = d.base_url().unwrap();
        assert_eq!(
            base.join("api/printer").unwrap().as_str(),
            "http://truck.local/octoprint/api/printer"
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = device("url = \"http://x\"\napi_key_env = \"K\"\napikey = \"abc\"\n").unwrap_err();
        assert!(e.to_string().contains("apikey"), "{e}");
    }

    #[test]
    fn the_key_source_is_required_and_unique() {
        let none = {
            let mut d = valid();
            d.api_key_env = None;
            d
        };
        assert_eq!(none.validate().unwrap_err().key, "api_key_env");
        let both = {
            let mut d = valid();
            d.api_key_file = Some("/etc/key".into());
            d
        };
        assert_eq!(both.validate().unwrap_err().key, "api_key_file");
        let literal = {
            let mut d = valid();
            d.api_key_env = Some("3F2A-B9C1 key".into());
            d
        };
        assert!(literal
            .validate()
            .unwrap_err()
            .reason
            .contains("not an environment variable name"));
    }

    #[test]
    fn urls_must_be_plain_http() {
        for (url, word) in [
            ("ftp://127.0.0.1", "scheme `ftp`"),
            ("https://127.0.0.1", "https"),
            ("127.0.0.1:5000", "http://host:port"),
            ("not a url", "not a URL"),
            ("http://127.0.0.1:5000/?x=1", "without"),
        ] {
            let d = {
                let mut d = valid();
                d.url = url.into();
                d
            };
            let issue = d.validate().unwrap_err();
            assert_eq!(issue.key, "url", "{url}");
            assert!(issue.reason.contains(word), "{url}: {}", issue.reason);
        }
    }

    #[test]
    fn intervals_and_limits_are_bounded() {
        let fast = {
            let mut d = valid();
            d.poll_ms = 10;
            d
        };
        assert_eq!(fast.validate().unwrap_err().key, "poll_ms");
        let slow = {
            let mut d = valid();
            d.timeout_ms = 0;
            d
        };
        assert_eq!(slow.validate().unwrap_err().key, "timeout_ms");
        let hot = {
            let mut d = valid();
            d.max_bed_target = f64::NAN;
            d
        };
        assert_eq!(hot.validate().unwrap_err().key, "max_bed_target");
    }

    #[test]
    fn keys_come_from_a_file_trimmed_and_are_never_shown() {
        let path = std::env::temp_dir().join(format!("octoprint-key-{}", std::process::id()));
        std::fs::write(&path, "  secret-key\n").unwrap();
        let key = ApiKeySource::File(path.clone()).read().unwrap();
        assert_eq!(key.expose(), "secret-key");
        assert!(!format!("{key:?}").contains("secret"));
        std::fs::write(&path, "\n").unwrap();
        assert!(matches!(
            ApiKeySource::File(path.clone()).read(),
            Err(ApiKeyError::FileEmpty(_))
        ));
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(
            ApiKeySource::File(path).read(),
            Err(ApiKeyError::File { .. })
        ));
        assert_eq!(
            ApiKeySource::Env("FABRIQUE_TEST_SURELY_UNSET_VAR".into()).read(),
            Err(ApiKeyError::EnvMissing(
                "FABRIQUE_TEST_SURELY_UNSET_VAR".into()
            ))
        );
    }
}
