//! `protocol = "opcua"`: the `[[devices]]` block of a partner's OPC UA server, and the node
//! addresses its tags use.
//!
//! Addresses are parsed once, at config time, so that a typo is reported by `check` with the
//! device, the tag and the key. Namespace URIs and browse paths are only *resolved* against the
//! partner's server after each (re)connection, because a server may renumber its namespaces
//! when it restarts.

use std::path::PathBuf;
use std::str::FromStr;

use opcua::types::Identifier;
use serde::{Deserialize, Serialize};

use crate::block::Block;
use crate::device::{DeviceCommon, TagCommon};

use crate::device::{check_tag_names, ConfigIssue, TagBasics};

/// A `[[devices]]` block with `protocol = "opcua"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpcUaOptions {
    /// The partner server's endpoint URL, `opc.tcp://host:port/path`.
    pub endpoint: String,
    /// How often the partner sends the changes of a subscription.
    #[serde(default = "defaults::publishing_ms")]
    pub publishing_ms: u64,
    /// How often the partner samples each node; 0 asks for report-by-exception (every change),
    /// which servers that cannot do it revise to their fastest rate.
    #[serde(default)]
    pub sampling_ms: u64,
    /// Limit for connecting and for every request (read, write, browse path translation).
    #[serde(default = "defaults::timeout_ms")]
    pub timeout_ms: u64,
    /// Message security mode: `None`, `Sign` or `SignAndEncrypt`.
    #[serde(default)]
    pub security: Security,
    /// With `Sign` or `SignAndEncrypt`: `Basic256Sha256` (default), `Aes256_Sha256_RsaPss` or
    /// `Aes128_Sha256_RsaOaep`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_policy: Option<Policy>,
    /// The client's PKI folder (own certificate, trusted and rejected partner certificates).
    /// The gateway fills it with `<opcua.pki_dir>/partners` when the block leaves it out, so
    /// that `fabrique-gateway pki` lists and trusts partner certificates too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pki_dir: Option<PathBuf>,
    /// X.509 identity: the user certificate (DER or PEM) and its private key (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_certificate: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_private_key: Option<PathBuf>,
    /// User name for a UserName identity; anonymous when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Name of the environment variable holding the password, so that it stays out of files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    pub tags: Vec<OpcUaTag>,
}

/// The whole `[[devices]]` block: the keys every protocol shares, then these.
pub type OpcUaDevice = Block<DeviceCommon, OpcUaOptions>;

mod defaults {
    pub fn publishing_ms() -> u64 {
        100
    }
    pub fn timeout_ms() -> u64 {
        5000
    }
}

/// Message security mode towards the partner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Security {
    #[default]
    None,
    Sign,
    SignAndEncrypt,
}

/// Security policy towards the partner (names as in `[[opcua.endpoints]]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Policy {
    Basic256Sha256,
    #[serde(rename = "Aes256_Sha256_RsaPss")]
    Aes256Sha256RsaPss,
    #[serde(rename = "Aes128_Sha256_RsaOaep")]
    Aes128Sha256RsaOaep,
}

/// Who the gateway is to the partner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    Anonymous,
    UserName {
        user: String,
        password_env: String,
    },
    Certificate {
        certificate: PathBuf,
        private_key: PathBuf,
    },
}

/// One mirrored node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpcUaTagOptions {
    /// `ns=2;s=Temperature`, `nsu=urn:partner:cell;i=1001`, `i=2258` (namespace 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// `Objects/2:Cell/2:Temperature` or `Objects/nsu=urn:partner:cell;Cell/...`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub browse_path: Option<String>,
}

/// The whole `[[devices.tags]]` entry: the keys every protocol's tags share, then these.
pub type OpcUaTag = Block<TagCommon, OpcUaTagOptions>;

impl Block<TagCommon, OpcUaTagOptions> {
    pub fn basics(&self) -> TagBasics<'_> {
        self.common.basics(self.common.data_type)
    }

    /// Where the tag lives on the partner server, as configured.
    pub fn address(&self) -> Result<Address, ConfigIssue> {
        match (&self.node_id, &self.browse_path) {
            (Some(id), None) => parse_node_id(id)
                .map(Address::Node)
                .map_err(|r| ConfigIssue::new("node_id", r)),
            (None, Some(path)) => parse_browse_path(path)
                .map(Address::Path)
                .map_err(|r| ConfigIssue::new("browse_path", r)),
            (Some(_), Some(_)) => Err(ConfigIssue::new(
                "browse_path",
                "set either `node_id` or `browse_path`, not both",
            )),
            (None, None) => Err(ConfigIssue::new(
                "node_id",
                "set `node_id` (e.g. `ns=2;s=Temperature`) or `browse_path` \
                 (e.g. `Objects/2:Cell/2:Temperature`)",
            )),
        }
    }
}

impl Block<DeviceCommon, OpcUaOptions> {
    /// Checks what serde cannot; keys are relative to the block.
    pub fn validate(&self) -> Result<(), ConfigIssue> {
        check_endpoint(&self.endpoint).map_err(|r| ConfigIssue::new("endpoint", r))?;
        in_range("publishing_ms", self.publishing_ms, 10, 3_600_000)?;
        in_range("sampling_ms", self.sampling_ms, 0, 3_600_000)?;
        in_range("timeout_ms", self.timeout_ms, 100, 600_000)?;
        self.check_security()?;
        match (&self.username, &self.password_env) {
            (Some(user), Some(var)) => {
                if user.is_empty() {
                    return Err(ConfigIssue::new("username", "must not be empty"));
                }
                if var.is_empty() || var.contains('=') || var.contains('\0') {
                    return Err(ConfigIssue::new(
                        "password_env",
                        format!("`{var}` is not an environment variable name"),
                    ));
                }
            }
            (None, None) => {}
            (Some(_), None) => return Err(ConfigIssue::new(
                "password_env",
                "`username` needs `password_env`, the environment variable holding the password",
            )),
            (None, Some(_)) => {
                return Err(ConfigIssue::new(
                    "username",
                    "`password_env` needs a `username`",
                ))
            }
        }
        if self.tags.is_empty() {
            return Err(ConfigIssue::new(
                "tags",
                "declare at least one `[[devices.tags]]`",
            ));
        }
        check_tag_names(self.tags.iter().map(|t| t.common.name.as_str()))?;
        for (i, tag) in self.tags.iter().enumerate() {
            tag.address().map_err(|e| e.in_tag(i, &tag.common.name))?;
            check_tag_range(tag).map_err(|e| e.in_tag(i, &tag.common.name))?;
        }
        Ok(())
    }
}

impl Block<DeviceCommon, OpcUaOptions> {
    /// The security policy in force: none without message security.
    pub fn policy(&self) -> Option<Policy> {
        match self.security {
            Security::None => None,
            Security::Sign | Security::SignAndEncrypt => {
                Some(self.security_policy.unwrap_or(Policy::Basic256Sha256))
            }
        }
    }

    /// The identity the block asks for (after `validate`).
    pub fn identity(&self) -> Identity {
        match (
            &self.username,
            &self.password_env,
            &self.identity_certificate,
            &self.identity_private_key,
        ) {
            (Some(user), Some(var), _, _) => Identity::UserName {
                user: user.clone(),
                password_env: var.clone(),
            },
            (_, _, Some(certificate), Some(key)) => Identity::Certificate {
                certificate: certificate.clone(),
                private_key: key.clone(),
            },
            _ => Identity::Anonymous,
        }
    }

    fn check_security(&self) -> Result<(), ConfigIssue> {
        if self.security == Security::None && self.security_policy.is_some() {
            return Err(ConfigIssue::new(
                "security_policy",
                "needs `security = \"Sign\"` or `\"SignAndEncrypt\"` (with `security = \"None\"` nothing is signed)",
            ));
        }
        match (&self.identity_certificate, &self.identity_private_key) {
            (Some(_), None) => {
                return Err(ConfigIssue::new(
                    "identity_private_key",
                    "`identity_certificate` needs `identity_private_key`, the PEM file of its key",
                ))
            }
            (None, Some(_)) => {
                return Err(ConfigIssue::new(
                    "identity_certificate",
                    "`identity_private_key` needs `identity_certificate`",
                ))
            }
            (Some(certificate), Some(key)) => {
                if self.username.is_some() {
                    return Err(ConfigIssue::new(
                        "identity_certificate",
                        "set either `username` or `identity_certificate`, not both",
                    ));
                }
                for (name, path) in [
                    ("identity_certificate", certificate),
                    ("identity_private_key", key),
                ] {
                    if path.as_os_str().is_empty() {
                        return Err(ConfigIssue::new(name, "must not be empty"));
                    }
                }
            }
            (None, None) => {}
        }
        if let Some(dir) = &self.pki_dir {
            if dir.as_os_str().is_empty() {
                return Err(ConfigIssue::new("pki_dir", "must not be empty"));
            }
        }
        Ok(())
    }
}

fn in_range(key: &str, value: u64, low: u64, high: u64) -> Result<(), ConfigIssue> {
    if (low..=high).contains(&value) {
        Ok(())
    } else {
        Err(ConfigIssue::new(
            key,
            format!("must be between {low} and {high}, got {value}"),
        ))
    }
}

fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let Some(rest) = endpoint.strip_prefix("opc.tcp://") else {
        return Err(format!(
            "`{endpoint}` must start with `opc.tcp://` (e.g. `opc.tcp://127.0.0.1:4841/`)"
        ));
    };
    let authority = rest.split('/').next().unwrap_or_default();
    // `[v6 address]:port` or `host:port`, the port being optional.
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((host, tail)) => (host, tail.strip_prefix(':')),
            None => return Err(format!("`{endpoint}` has an unclosed `[`")),
        },
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    if host.is_empty() {
        return Err(format!("`{endpoint}` has no host"));
    }
    crate::net::check_host(host).map_err(|r| format!("`{endpoint}`: {r}"))?;
    if let Some(port) = port {
        if port.parse::<u16>().is_err() {
            return Err(format!("`{endpoint}` has an invalid port `{port}`"));
        }
    }
    Ok(())
}

fn check_tag_range(tag: &OpcUaTag) -> Result<(), ConfigIssue> {
    if let Some(alarm) = &tag.common.alarm {
        alarm.check("alarm")?;
    }
    let Some(range) = tag.common.range else {
        return Ok(());
    };
    if !tag.common.data_type.is_numeric() {
        return Err(ConfigIssue::new(
            "range",
            format!("a range needs a numeric type, not {}", tag.common.data_type),
        ));
    }
    if !(range.low.is_finite() && range.high.is_finite() && range.low <= range.high) {
        return Err(ConfigIssue::new(
            "range",
            format!(
                "`low` must not exceed `high`, got {}..{}",
                range.low, range.high
            ),
        ));
    }
    Ok(())
}

/// A namespace as configured: an index, or a URI resolved on each connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Namespace {
    Index(u16),
    Uri(String),
}

/// A node id whose namespace may still be a URI.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRef {
    pub namespace: Namespace,
    pub identifier: Identifier,
}

/// One segment of a browse path: a browse name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathElement {
    pub namespace: Namespace,
    pub name: String,
}

/// Where a tag lives on the partner server.
#[derive(Debug, Clone, PartialEq)]
pub enum Address {
    Node(NodeRef),
    /// Browse names from the Objects folder down to the variable.
    Path(Vec<PathElement>),
}

/// `ns=<index>;<id>`, `nsu=<uri>;<id>` or `<id>` (namespace 0), where `<id>` is `i=<number>`,
/// `s=<text>`, `g=<guid>` or `b=<base64>` (OPC UA Part 6, 5.3.1.10).
pub fn parse_node_id(text: &str) -> Result<NodeRef, String> {
    let (namespace, id) = if let Some(rest) = text.strip_prefix("nsu=") {
        let (uri, id) = rest
            .split_once(';')
            .ok_or_else(|| format!("`{text}`: `nsu=<uri>` must be followed by `;<id>`"))?;
        (Namespace::Uri(namespace_uri(uri, text)?), id)
    } else if let Some(rest) = text.strip_prefix("ns=") {
        let (index, id) = rest
            .split_once(';')
            .ok_or_else(|| format!("`{text}`: `ns=<index>` must be followed by `;<id>`"))?;
        let index = index
            .parse::<u16>()
            .map_err(|_| format!("`{text}`: namespace index `{index}` is not a number 0-65535"))?;
        (Namespace::Index(index), id)
    } else {
        (Namespace::Index(0), text)
    };
    let not_an_identifier = || {
        format!("`{text}`: `{id}` is not an identifier; use i=<number>, s=<text>, g=<guid> or b=<base64>")
    };
    // async-opcua slices the first two bytes as the kind (`s=`...): a multi-byte character
    // there made it panic (found by the `config` fuzz target), so only an ASCII kind goes on.
    if !id.is_char_boundary(2.min(id.len())) {
        return Err(not_an_identifier());
    }
    let identifier = Identifier::from_str(id).map_err(|()| not_an_identifier())?;
    if matches!(&identifier, Identifier::String(s) if s.is_empty()) {
        return Err(format!("`{text}`: the string identifier is empty"));
    }
    Ok(NodeRef {
        namespace,
        identifier,
    })
}

/// Browse names separated by `/`, from the Objects folder (a leading `Objects` segment is
/// optional). Each name is `<index>:<name>`, `nsu=<uri>;<name>`, or a plain name in namespace 0.
pub fn parse_browse_path(text: &str) -> Result<Vec<PathElement>, String> {
    let mut elements = Vec::new();
    let mut rest = text.strip_prefix('/').unwrap_or(text);
    loop {
        // A URI may itself contain `/`, so the namespace is taken before splitting.
        let (namespace, after) = if let Some(r) = rest.strip_prefix("nsu=") {
            let (uri, after) = r
                .split_once(';')
                .ok_or_else(|| format!("`{text}`: `nsu=<uri>` must be followed by `;<name>`"))?;
            (Namespace::Uri(namespace_uri(uri, text)?), after)
        } else {
            match rest.split_once(':') {
                Some((index, after))
                    if !index.is_empty()
                        && !index.contains('/')
                        && index.bytes().all(|b| b.is_ascii_digit()) =>
                {
                    let index = index.parse::<u16>().map_err(|_| {
                        format!("`{text}`: namespace index `{index}` is not a number 0-65535")
                    })?;
                    (Namespace::Index(index), after)
                }
                _ => (Namespace::Index(0), rest),
            }
        };
        let (name, next) = match after.split_once('/') {
            Some((name, next)) => (name, Some(next)),
            None => (after, None),
        };
        if name.is_empty() {
            return Err(format!("`{text}` has an empty browse name"));
        }
        elements.push(PathElement {
            namespace,
            name: name.to_owned(),
        });
        match next {
            Some(next) => rest = next,
            None => break,
        }
    }
    if elements
        .first()
        .is_some_and(|e| e.namespace == Namespace::Index(0) && e.name == "Objects")
    {
        elements.remove(0);
    }
    if elements.is_empty() {
        return Err(format!(
            "`{text}` names no node below Objects (e.g. `Objects/2:Cell/2:Temperature`)"
        ));
    }
    Ok(elements)
}

/// A namespace URI from a string node id, with `%3b` and `%25` unescaped (Part 6, 5.3.1.11).
fn namespace_uri(escaped: &str, text: &str) -> Result<String, String> {
    if escaped.is_empty() {
        return Err(format!("`{text}`: the namespace URI is empty"));
    }
    Ok(escaped
        .replace("%3b", ";")
        .replace("%3B", ";")
        .replace("%25", "%"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_multibyte_character_in_the_identifier_kind_is_refused_not_a_panic() {
        for text in ["sêabel", "ns=2;sêabel", "é", "nsu=urn:x;ê=1"] {
            let error = parse_node_id(text).unwrap_err();
            assert!(error.contains("is not an identifier"), "{text}: {error}");
        }
        assert!(parse_node_id("s=être").is_ok());
    }

    fn device(tags: &str) -> OpcUaDevice {
        let text = format!(
            "name = \"cell\"\nstation = \"Partners\"\nendpoint = \"opc.tcp://127.0.0.1:4841/\"\n{tags}"
        );
        toml::from_str(&text).unwrap()
    }

    #[test]
    fn node_ids_with_index_uri_or_namespace_zero() {
        let n = parse_node_id("ns=2;s=Temperature").unwrap();
        assert_eq!(n.namespace, Namespace::Index(2));
        assert_eq!(n.identifier, Identifier::from("Temperature"));
        let n = parse_node_id("nsu=urn:partner:cell;i=1001").unwrap();
        assert_eq!(n.namespace, Namespace::Uri("urn:partner:cell".into()));
        assert_eq!(n.identifier, Identifier::Numeric(1001));
        let n = parse_node_id("nsu=http://x/a%3bb;s=A;B").unwrap();
        assert_eq!(n.namespace, Namespace::Uri("http://x/a;b".into()));
        assert_eq!(n.identifier, Identifier::from("A;B"));
        assert_eq!(
            parse_node_id("i=2258").unwrap().namespace,
            Namespace::Index(0)
        );
    }

    #[test]
    fn bad_node_ids_say_why() {
        assert!(parse_node_id("ns=x;s=A").unwrap_err().contains("index"));
        assert!(parse_node_id("ns=2").unwrap_err().contains(";<id>"));
        assert!(parse_node_id("ns=2;q=A")
            .unwrap_err()
            .contains("i=<number>"));
        assert!(parse_node_id("ns=2;i=abc").is_err());
        assert!(parse_node_id("ns=2;s=").unwrap_err().contains("empty"));
        assert!(parse_node_id("nsu=;s=A").unwrap_err().contains("URI"));
        assert!(parse_node_id("Temperature").is_err());
    }

    #[test]
    fn browse_paths_start_at_objects() {
        let p = parse_browse_path("Objects/2:Cell/2:Temperature").unwrap();
        assert_eq!(
            p,
            vec![
                PathElement {
                    namespace: Namespace::Index(2),
                    name: "Cell".into()
                },
                PathElement {
                    namespace: Namespace::Index(2),
                    name: "Temperature".into()
                },
            ]
        );
        assert_eq!(p, parse_browse_path("2:Cell/2:Temperature").unwrap());
        let p = parse_browse_path("Objects/nsu=http://partner/cell;Cell/Server").unwrap();
        assert_eq!(p[0].namespace, Namespace::Uri("http://partner/cell".into()));
        assert_eq!(p[0].name, "Cell");
        assert_eq!(p[1].namespace, Namespace::Index(0));
        assert!(parse_browse_path("Objects").is_err());
        assert!(parse_browse_path("Objects//2:A").is_err());
        assert!(parse_browse_path("99999:A").is_err());
    }

    #[test]
    fn a_valid_device_with_defaults() {
        let d = device(
            "[[tags]]\nname = \"T\"\nnode_id = \"ns=2;s=T\"\ntype = \"float64\"\n\
             [[tags]]\nname = \"C\"\nbrowse_path = \"Objects/2:Cell/2:C\"\ntype = \"int32\"\n",
        );
        assert_eq!(d.publishing_ms, 100);
        assert_eq!(d.sampling_ms, 0);
        assert_eq!(d.security, Security::None);
        assert_eq!(d.validate(), Ok(()));
    }

    #[test]
    fn security_keys_are_checked_and_named() {
        let tag = "[[tags]]\nname = \"T\"\nnode_id = \"ns=2;s=T\"\ntype = \"float64\"\n";
        let secure = device(&format!("security = \"SignAndEncrypt\"\n{tag}"));
        assert_eq!(secure.validate(), Ok(()));
        assert_eq!(secure.policy(), Some(Policy::Basic256Sha256));
        let pss = device(&format!(
            "security = \"Sign\"\nsecurity_policy = \"Aes256_Sha256_RsaPss\"\n{tag}"
        ));
        assert_eq!(pss.policy(), Some(Policy::Aes256Sha256RsaPss));
        let useless = device(&format!("security_policy = \"Basic256Sha256\"\n{tag}"));
        assert_eq!(useless.validate().unwrap_err().key, "security_policy");
        assert_eq!(useless.policy(), None);
        let half = device(&format!("identity_certificate = \"user.der\"\n{tag}"));
        assert_eq!(half.validate().unwrap_err().key, "identity_private_key");
        let both = device(&format!(
            "identity_certificate = \"user.der\"\nidentity_private_key = \"user.pem\"\n\
             username = \"u\"\npassword_env = \"P\"\n{tag}"
        ));
        assert_eq!(both.validate().unwrap_err().key, "identity_certificate");
        let x509 = device(&format!(
            "identity_certificate = \"user.der\"\nidentity_private_key = \"user.pem\"\n{tag}"
        ));
        assert_eq!(x509.validate(), Ok(()));
        assert!(matches!(x509.identity(), Identity::Certificate { .. }));
        assert!(toml::from_str::<OpcUaDevice>(&format!(
            "name = \"c\"\nstation = \"P\"\nendpoint = \"opc.tcp://h:1/\"\nsecurity = \"Encrypt\"\n{tag}"
        ))
        .is_err());
    }

    #[test]
    fn a_tag_needs_exactly_one_address() {
        let both = device(
            "[[tags]]\nname = \"T\"\nnode_id = \"ns=2;s=T\"\nbrowse_path = \"2:T\"\ntype = \"float64\"\n",
        );
        let issue = both.validate().unwrap_err();
        assert_eq!(issue.key, "tags[0].browse_path");
        assert!(issue.reason.contains("tag `T`"), "{}", issue.reason);
        assert!(issue.reason.contains("not both"), "{}", issue.reason);
        let none = device("[[tags]]\nname = \"T\"\ntype = \"float64\"\n");
        assert_eq!(none.validate().unwrap_err().key, "tags[0].node_id");
        let bad = device("[[tags]]\nname = \"T\"\nnode_id = \"ns=2;x=T\"\ntype = \"float64\"\n");
        assert_eq!(bad.validate().unwrap_err().key, "tags[0].node_id");
    }

    #[test]
    fn endpoint_credentials_and_timings_are_checked() {
        let tag = "[[tags]]\nname = \"T\"\nnode_id = \"ns=2;s=T\"\ntype = \"float64\"\n";
        let mut d = device(tag);
        d.endpoint = "http://127.0.0.1:4841/".into();
        assert_eq!(d.validate().unwrap_err().key, "endpoint");
        d.endpoint = "opc.tcp://:4841".into();
        assert_eq!(d.validate().unwrap_err().key, "endpoint");
        d.endpoint = "opc.tcp://host:port/".into();
        assert_eq!(d.validate().unwrap_err().key, "endpoint");
        let mut d = device(tag);
        d.username = Some("operator".into());
        assert_eq!(d.validate().unwrap_err().key, "password_env");
        d.password_env = Some("PARTNER_PASSWORD".into());
        assert_eq!(d.validate(), Ok(()));
        let mut d = device(tag);
        d.publishing_ms = 0;
        assert_eq!(d.validate().unwrap_err().key, "publishing_ms");
        let text = format!(
            "name = \"c\"\nstation = \"P\"\nendpoint = \"opc.tcp://h:1/\"\nsecurity = \"Basic256\"\n{tag}"
        );
        assert!(toml::from_str::<OpcUaDevice>(&text).is_err());
    }

    #[test]
    fn ranges_need_numbers_in_order() {
        let d = device(
            "[[tags]]\nname = \"S\"\nnode_id = \"ns=2;s=S\"\ntype = \"string\"\nrange = { low = 0, high = 1 }\n",
        );
        assert_eq!(d.validate().unwrap_err().key, "tags[0].range");
        let d = device(
            "[[tags]]\nname = \"S\"\nnode_id = \"ns=2;s=S\"\ntype = \"float64\"\nrange = { low = 5, high = 1 }\n",
        );
        assert_eq!(d.validate().unwrap_err().key, "tags[0].range");
    }
}
