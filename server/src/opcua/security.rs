//! OPC UA security: the `[opcua]` security keys (profile, endpoints, users), roles, and the
//! authenticator that turns a client's identity token into a user with a role.
//!
//! The role travels in async-opcua's `UserToken` (`"<role>/<name>"`), so the node manager
//! can check a write or a call from the request context alone, without shared state.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use argon2::Argon2;
use async_trait::async_trait;
use opcua::crypto::{CertificateStore, SecurityPolicy, Thumbprint};
use opcua::server::address_space::AccessLevel;
use opcua::server::authenticator::{
    user_pass_security_policy_id, AuthManager, CoreServerPermissions, Password, UserToken,
};
use opcua::server::ServerEndpoint;
use opcua::types::{
    Error, MessageSecurityMode, NodeId, StatusCode, UAString, UserTokenPolicy, UserTokenType,
};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

/// Policy id of the X.509 user token (async-opcua checks a token against this exact id).
const POLICY_ID_X509: &str = "x509";
const POLICY_ID_ANONYMOUS: &str = "anonymous";
/// How passwords are encrypted on the None endpoint.
const PASSWORD_POLICY_ON_NONE: SecurityPolicy = SecurityPolicy::Basic256Sha256;

/// `[opcua] profile`: which defaults apply to the keys a configuration leaves out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// The built-in configuration: a None endpoint, anonymous read-only sessions and the
    /// documented demo users, so a laptop and UaExpert work out of the box.
    Demo,
    /// Anything else: encrypted endpoints only, no anonymous sessions, configured users only.
    /// Validation refuses a None endpoint, `anonymous = true` and `trust_client_certificates`.
    #[default]
    Secure,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PolicyName {
    None,
    Basic256Sha256,
    #[serde(rename = "Aes128_Sha256_RsaOaep")]
    Aes128Sha256RsaOaep,
    #[serde(rename = "Aes256_Sha256_RsaPss")]
    Aes256Sha256RsaPss,
}

impl PolicyName {
    pub fn policy(self) -> SecurityPolicy {
        match self {
            PolicyName::None => SecurityPolicy::None,
            PolicyName::Basic256Sha256 => SecurityPolicy::Basic256Sha256,
            PolicyName::Aes128Sha256RsaOaep => SecurityPolicy::Aes128Sha256RsaOaep,
            PolicyName::Aes256Sha256RsaPss => SecurityPolicy::Aes256Sha256RsaPss,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ModeName {
    None,
    Sign,
    SignAndEncrypt,
}

impl ModeName {
    pub fn mode(self) -> MessageSecurityMode {
        match self {
            ModeName::None => MessageSecurityMode::None,
            ModeName::Sign => MessageSecurityMode::Sign,
            ModeName::SignAndEncrypt => MessageSecurityMode::SignAndEncrypt,
        }
    }
}

/// `[[opcua.endpoints]]`: one security policy and mode offered on the server's URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    pub policy: PolicyName,
    pub mode: ModeName,
}

impl EndpointConfig {
    const fn new(policy: PolicyName, mode: ModeName) -> Self {
        EndpointConfig { policy, mode }
    }

    /// async-opcua's endpoint id: unique per policy and mode.
    pub fn id(&self) -> String {
        format!("{:?}_{:?}", self.policy, self.mode).to_lowercase()
    }

    pub fn server_endpoint(&self) -> ServerEndpoint {
        let mut endpoint = ServerEndpoint::new("/", self.policy.policy(), self.mode.mode(), &[]);
        if self.policy == PolicyName::None {
            // The channel is clear text: the client encrypts the password with the server's
            // certificate instead (OPC UA Part 4, UserTokenPolicy.securityPolicyUri).
            endpoint.password_security_policy = Some(PASSWORD_POLICY_ON_NONE.to_string());
        }
        endpoint
    }
}

/// What a user may do. Ordered: each role may do everything the ones before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Browse, read, subscribe.
    Viewer,
    /// Plus writes to writable tags and the production methods.
    Operator,
    /// Plus configuration and diagnostics.
    Admin,
}

/// Methods (as `Parent/Name`) that need the admin role; every other method needs operator.
/// A plain list keeps new methods (other modules add some) operator methods with no change here.
pub const ADMIN_METHODS: &[&str] = &[];

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    fn parse(text: &str) -> Option<Role> {
        match text {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    /// The role of a session's user. Anonymous, and anything unexpected, is a viewer.
    pub fn of(token: &UserToken) -> Role {
        token
            .0
            .split_once('/')
            .and_then(|(role, _)| Role::parse(role))
            .unwrap_or(Role::Viewer)
    }

    pub fn token(self, user: &str) -> UserToken {
        UserToken(format!("{}/{user}", self.as_str()))
    }

    pub fn may_write(self) -> bool {
        self >= Role::Operator
    }

    /// `method` as `Parent/Name`, e.g. `Line/SubmitOrder`.
    pub fn may_call(self, method: &str) -> bool {
        let needed = if ADMIN_METHODS.contains(&method) {
            Role::Admin
        } else {
            Role::Operator
        };
        self >= needed
    }
}

/// `[[opcua.users]]`: a person or a client application that logs in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    /// Argon2 PHC string, from `fabrique-gateway hash-password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<String>,
    /// X.509 user certificate (DER or PEM file) the user signs in with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<PathBuf>,
    /// Or its SHA-1 thumbprint in hex (as `fabrique-gateway pki list` prints it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbprint: Option<String>,
    pub role: Role,
}

impl UserConfig {
    fn demo(name: &str, password_hash: &str, role: Role) -> Self {
        UserConfig {
            name: name.into(),
            password_hash: Some(password_hash.into()),
            certificate: None,
            thumbprint: None,
            role,
        }
    }

    /// The SHA-1 thumbprint (lowercase hex) of the user's certificate, if it signs in with one.
    pub fn certificate_thumbprint(&self) -> Result<Option<String>, String> {
        if let Some(hex) = &self.thumbprint {
            return Ok(Some(hex.to_ascii_lowercase()));
        }
        let Some(path) = &self.certificate else {
            return Ok(None);
        };
        let cert = CertificateStore::read_cert(path)?;
        Ok(Some(cert.thumbprint().as_hex_string()))
    }
}

/// The demo profile's endpoints: None for a quick look, Basic256Sha256 for a real client.
pub const DEMO_ENDPOINTS: [EndpointConfig; 3] = [
    EndpointConfig::new(PolicyName::None, ModeName::None),
    EndpointConfig::new(PolicyName::Basic256Sha256, ModeName::Sign),
    EndpointConfig::new(PolicyName::Basic256Sha256, ModeName::SignAndEncrypt),
];

/// The secure profile's endpoints: encrypted only.
pub const SECURE_ENDPOINTS: [EndpointConfig; 2] = [
    EndpointConfig::new(PolicyName::Basic256Sha256, ModeName::SignAndEncrypt),
    EndpointConfig::new(PolicyName::Aes256Sha256RsaPss, ModeName::SignAndEncrypt),
];

/// The demo users. Their passwords are public (the README, "OPC UA security"): change them before the
/// gateway leaves the demo laptop. `(name, password, hash, role)`; the password is kept here
/// only so a unit test proves each hash matches what the documentation says.
pub const DEMO_USERS: [(&str, &str, &str, Role); 3] = [
    (
        "viewer",
        "viewer",
        "$argon2id$v=19$m=19456,t=2,p=1$lqZVp6xATOyXv+51tw09Kw$93PtS/hzR/yZz+QPKkZiQc2svkCsBc96rhjfHuENcVc",
        Role::Viewer,
    ),
    (
        "operator",
        "operator",
        "$argon2id$v=19$m=19456,t=2,p=1$gUpiut9Z4tMNfwbRXaJ8lg$EpZe0Jezq0H1noW8FvIHTHK0WbMkpLfKOQVsu/b+JVU",
        Role::Operator,
    ),
    (
        "admin",
        "admin",
        "$argon2id$v=19$m=19456,t=2,p=1$FjVXQWM67qGOq8leASIQOg$zsmtL1iJ4V1HU6sht84but+7WrsJCaTwdXEcy8rRNNk",
        Role::Admin,
    ),
];

pub fn demo_users_ref() -> &'static [UserConfig] {
    static USERS: std::sync::LazyLock<Vec<UserConfig>> = std::sync::LazyLock::new(|| {
        DEMO_USERS
            .iter()
            .map(|(name, _, hash, role)| UserConfig::demo(name, hash, *role))
            .collect()
    });
    &USERS
}

/// Hash a password for `[[opcua.users]] password_hash` (Argon2id, default parameters, a random
/// salt from the OS-seeded generator).
pub fn hash_password(password: &str) -> Result<String, String> {
    use rand::RngCore;
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| e.to_string())
}

/// Checks a login's password; one Argon2 work area is shared by every check (see `password`).
pub fn verify_password(hash: &str, password: &str) -> bool {
    super::password::verify_password(hash, password)
}

/// The security part of `[opcua]`, resolved against its profile.
pub struct SecuritySettings<'a> {
    pub profile: Profile,
    pub anonymous: bool,
    pub endpoints: &'a [EndpointConfig],
    pub users: &'a [UserConfig],
    pub trust_client_certificates: bool,
}

impl SecuritySettings<'_> {
    /// Checks the security keys; the key names the list index, e.g. `opcua.endpoints[1].policy`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let secure = self.profile == Profile::Secure;
        if secure && self.anonymous {
            return Err((
                "opcua.anonymous".into(),
                "the secure profile refuses anonymous sessions (set profile = \"demo\" to allow them)"
                    .into(),
            ));
        }
        if secure && self.trust_client_certificates {
            return Err((
                "opcua.trust_client_certificates".into(),
                "the secure profile refuses to trust every client certificate; trust them one by \
                 one with `fabrique-gateway pki trust`"
                    .into(),
            ));
        }
        if self.endpoints.is_empty() {
            return Err((
                "opcua.endpoints".into(),
                "at least one endpoint is needed".into(),
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, endpoint) in self.endpoints.iter().enumerate() {
            let none_policy = endpoint.policy == PolicyName::None;
            let none_mode = endpoint.mode == ModeName::None;
            if none_policy != none_mode {
                return Err((
                    format!("opcua.endpoints[{i}].policy"),
                    format!(
                        "policy {:?} with mode {:?}: policy None goes only with mode None, and \
                         mode None only with policy None",
                        endpoint.policy, endpoint.mode
                    ),
                ));
            }
            if secure && none_policy {
                return Err((
                    format!("opcua.endpoints[{i}].policy"),
                    "the secure profile refuses the None endpoint (unencrypted, unsigned); set \
                     profile = \"demo\" to allow it"
                        .into(),
                ));
            }
            if !seen.insert(endpoint.id()) {
                return Err((
                    "opcua.endpoints".into(),
                    format!(
                        "policy {:?} with mode {:?} is listed twice",
                        endpoint.policy, endpoint.mode
                    ),
                ));
            }
        }
        if secure && self.users.is_empty() {
            return Err((
                "opcua.users".into(),
                "the secure profile needs at least one [[opcua.users]] (anonymous is off)".into(),
            ));
        }
        let mut names = BTreeSet::new();
        for (i, user) in self.users.iter().enumerate() {
            if user.name.trim().is_empty() || user.name.contains('/') {
                return Err((
                    format!("opcua.users[{i}].name"),
                    format!("`{}`: must be non-empty and without `/`", user.name),
                ));
            }
            if !names.insert(user.name.as_str()) {
                return Err((
                    format!("opcua.users[{i}].name"),
                    format!("user `{}` is listed twice", user.name),
                ));
            }
            let ways = [
                user.password_hash.is_some(),
                user.certificate.is_some(),
                user.thumbprint.is_some(),
            ];
            if ways.iter().filter(|w| **w).count() != 1 {
                return Err((
                    format!("opcua.users[{i}].password_hash"),
                    format!(
                        "user `{}`: give exactly one of password_hash, certificate, thumbprint",
                        user.name
                    ),
                ));
            }
            if let Some(hash) = &user.password_hash {
                // A configuration printed from the demo and switched to secure would otherwise
                // keep the public demo passwords.
                if secure && DEMO_USERS.iter().any(|(_, _, demo, _)| demo == hash) {
                    return Err((
                        format!("opcua.users[{i}].password_hash"),
                        format!(
                            "user `{}` has a demo password (public); the secure profile refuses it",
                            user.name
                        ),
                    ));
                }
                let parsed = PasswordHash::new(hash).map_err(|e| {
                    (
                        format!("opcua.users[{i}].password_hash"),
                        format!(
                            "user `{}`: not a PHC string ({e}); make one with \
                             `echo -n PASSWORD | fabrique-gateway hash-password`",
                            user.name
                        ),
                    )
                })?;
                if parsed.algorithm.as_str() != "argon2id" {
                    return Err((
                        format!("opcua.users[{i}].password_hash"),
                        format!("user `{}`: an argon2id hash is expected", user.name),
                    ));
                }
            }
            if let Some(hex) = &user.thumbprint {
                if hex.len() != 40 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                    return Err((
                        format!("opcua.users[{i}].thumbprint"),
                        format!("user `{}`: 40 hexadecimal digits expected", user.name),
                    ));
                }
            }
            if user.certificate.is_some() {
                user.certificate_thumbprint().map_err(|e| {
                    (
                        format!("opcua.users[{i}].certificate"),
                        format!("user `{}`: {e}", user.name),
                    )
                })?;
            }
        }
        Ok(())
    }
}

/// Logs failed logins at most once per key per window, with the number of suppressed ones, so
/// a client retrying a wrong password cannot flood the log.
pub struct FailedLogins {
    window: Duration,
    seen: Mutex<HashMap<String, (Instant, u64)>>,
}

impl FailedLogins {
    pub fn new(window: Duration) -> Self {
        FailedLogins {
            window,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Returns `Some(suppressed)` when this failure should be logged now (with the count of
    /// failures not logged since the previous line), `None` when it is suppressed.
    pub fn should_log(&self, key: &str, now: Instant) -> Option<u64> {
        let mut seen = self.seen.lock();
        if seen.len() > 10_000 {
            let window = self.window;
            seen.retain(|_, (at, _)| now.duration_since(*at) < window);
        }
        match seen.get_mut(key) {
            Some((at, suppressed)) if now.duration_since(*at) < self.window => {
                *suppressed += 1;
                None
            }
            Some((at, suppressed)) => {
                let count = *suppressed;
                *at = now;
                *suppressed = 0;
                Some(count)
            }
            None => {
                seen.insert(key.to_owned(), (now, 0));
                Some(0)
            }
        }
    }
}

/// Who may log in: the `[[opcua.users]]` tables, built from the configuration.
#[derive(Default)]
pub struct UserTables {
    /// name → (Argon2 PHC string, role)
    passwords: HashMap<String, (String, Role)>,
    /// SHA-1 thumbprint (lowercase hex) → (name, role)
    certificates: HashMap<String, (String, Role)>,
}

impl UserTables {
    /// Reads the users' certificate files: an unreadable one is an error naming the user.
    pub fn new(users: &[UserConfig]) -> Result<Self, String> {
        let mut tables = UserTables::default();
        for user in users {
            if let Some(hash) = &user.password_hash {
                tables
                    .passwords
                    .insert(user.name.clone(), (hash.clone(), user.role));
            }
            if let Some(thumbprint) = user
                .certificate_thumbprint()
                .map_err(|e| format!("user `{}`: {e}", user.name))?
            {
                tables
                    .certificates
                    .insert(thumbprint, (user.name.clone(), user.role));
            }
        }
        Ok(tables)
    }
}

/// The users the server checks logins against, replaceable while it runs (a reload): a new
/// login sees the new tables; an open session keeps the identity it was activated with.
#[derive(Clone, Default)]
pub struct Users(Arc<RwLock<Arc<UserTables>>>);

impl Users {
    pub fn replace(&self, tables: UserTables) {
        *self.0.write() = Arc::new(tables);
    }

    fn get(&self) -> Arc<UserTables> {
        self.0.read().clone()
    }
}

/// async-opcua's `AuthManager` for the gateway: users from config, roles in the token.
pub struct GatewayAuth {
    anonymous: bool,
    users: Users,
    failures: FailedLogins,
}

impl GatewayAuth {
    pub fn new(anonymous: bool, users: &[UserConfig]) -> Result<Self, String> {
        let tables = Users::default();
        tables.replace(UserTables::new(users)?);
        Ok(GatewayAuth {
            anonymous,
            users: tables,
            failures: FailedLogins::new(Duration::from_secs(10)),
        })
    }

    /// The handle a reload replaces the users through.
    pub fn users(&self) -> Users {
        self.users.clone()
    }

    /// Log a refused login (never the password), at most once per client IP address per
    /// window, with the number of refusals not logged since.
    fn refuse(&self, kind: &str, user: &str, endpoint: &ServerEndpoint, reason: &str) -> Error {
        let client = super::peers::current_client();
        let key = client
            .map(|a| a.ip().to_string())
            .unwrap_or_else(|| "unknown".into());
        if let Some(suppressed) = self.failures.should_log(&key, Instant::now()) {
            tracing::warn!(
                client_address_by_order = %client.map(|a| a.to_string()).unwrap_or_else(|| "unknown".into()),
                identity = kind,
                user,
                endpoint = %format!("{} {}", endpoint.security_policy, endpoint.security_mode),
                suppressed_since_last = suppressed,
                "OPC UA login refused: {reason}"
            );
        }
        Error::new(StatusCode::BadUserAccessDenied, "login refused")
    }
}

#[async_trait]
impl AuthManager for GatewayAuth {
    async fn authenticate_anonymous_token(&self, endpoint: &ServerEndpoint) -> Result<(), Error> {
        if self.anonymous {
            Ok(())
        } else {
            Err(self.refuse(
                "anonymous",
                "anonymous",
                endpoint,
                "anonymous sessions are off",
            ))
        }
    }

    async fn authenticate_username_identity_token(
        &self,
        endpoint: &ServerEndpoint,
        username: &str,
        password: &Password,
    ) -> Result<UserToken, Error> {
        let Some((hash, role)) = self.users.get().passwords.get(username).cloned() else {
            return Err(self.refuse("password", username, endpoint, "unknown user"));
        };
        // Argon2 takes tens of milliseconds of CPU on purpose: keep it off the I/O threads.
        let password = password.get().to_owned();
        let valid = tokio::task::spawn_blocking(move || verify_password(&hash, &password))
            .await
            .unwrap_or(false);
        if valid {
            Ok(role.token(username))
        } else {
            Err(self.refuse("password", username, endpoint, "wrong password"))
        }
    }

    async fn authenticate_x509_identity_token(
        &self,
        endpoint: &ServerEndpoint,
        signing_thumbprint: &Thumbprint,
    ) -> Result<UserToken, Error> {
        let hex = signing_thumbprint.as_hex_string();
        match self.users.get().certificates.get(&hex) {
            Some((name, role)) => Ok(role.token(name)),
            None => Err(self.refuse(
                "certificate",
                &hex,
                endpoint,
                "no user has this certificate",
            )),
        }
    }

    fn effective_user_access_level(
        &self,
        token: &UserToken,
        user_access_level: AccessLevel,
        _node_id: &NodeId,
    ) -> AccessLevel {
        if Role::of(token).may_write() {
            user_access_level
        } else {
            user_access_level & !(AccessLevel::CURRENT_WRITE | AccessLevel::HISTORY_WRITE)
        }
    }

    fn is_user_executable(&self, token: &UserToken, method_id: &NodeId) -> bool {
        // The server's own methods (namespace 0: GetMonitoredItems, ...) serve every client;
        // the gateway's methods need an operator (admin-only ones are refused in `nodes.rs`).
        method_id.namespace == 0 || Role::of(token) >= Role::Operator
    }

    fn user_token_policies(&self, endpoint: &ServerEndpoint) -> Vec<UserTokenPolicy> {
        let users = self.users.get();
        let mut policies = Vec::with_capacity(3);
        if self.anonymous {
            policies.push(UserTokenPolicy {
                policy_id: UAString::from(POLICY_ID_ANONYMOUS),
                token_type: UserTokenType::Anonymous,
                issued_token_type: UAString::null(),
                issuer_endpoint_url: UAString::null(),
                security_policy_uri: UAString::null(),
            });
        }
        if !users.passwords.is_empty() {
            policies.push(UserTokenPolicy {
                policy_id: user_pass_security_policy_id(endpoint),
                token_type: UserTokenType::UserName,
                issued_token_type: UAString::null(),
                issuer_endpoint_url: UAString::null(),
                // Null: the endpoint's own policy encrypts the password.
                security_policy_uri: match endpoint.security_policy() {
                    SecurityPolicy::None => UAString::from(PASSWORD_POLICY_ON_NONE.to_uri()),
                    _ => UAString::null(),
                },
            });
        }
        // A certificate token is signed with the endpoint's policy; the None endpoint has none.
        let policy = endpoint.security_policy();
        if !users.certificates.is_empty() && policy != SecurityPolicy::None {
            policies.push(UserTokenPolicy {
                policy_id: UAString::from(POLICY_ID_X509),
                token_type: UserTokenType::Certificate,
                issued_token_type: UAString::null(),
                issuer_endpoint_url: UAString::null(),
                security_policy_uri: UAString::from(policy.to_uri()),
            });
        }
        policies
    }

    fn core_permissions(&self, token: &UserToken) -> CoreServerPermissions {
        CoreServerPermissions {
            read_diagnostics: Role::of(token) >= Role::Admin,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings<'a>(
        profile: Profile,
        anonymous: bool,
        endpoints: &'a [EndpointConfig],
        users: &'a [UserConfig],
    ) -> SecuritySettings<'a> {
        SecuritySettings {
            profile,
            anonymous,
            endpoints,
            users,
            trust_client_certificates: false,
        }
    }

    #[test]
    fn demo_users_match_their_documented_passwords() {
        for (name, password, hash, _) in DEMO_USERS {
            assert!(verify_password(hash, password), "{name}");
            assert!(!verify_password(hash, "wrong"), "{name}");
        }
    }

    #[test]
    fn hash_password_round_trip() {
        let hash = hash_password("s3cret").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password(&hash, "s3cret"));
        assert!(!verify_password(&hash, "s3cret "));
        assert!(!verify_password("not a hash", "s3cret"));
    }

    #[test]
    fn demo_profile_validates_and_secure_refuses_its_shortcuts() {
        let users = demo_users_ref().to_vec();
        assert_eq!(
            settings(Profile::Demo, true, &DEMO_ENDPOINTS, &users).validate(),
            Ok(())
        );
        let err = settings(Profile::Secure, true, &SECURE_ENDPOINTS, &users)
            .validate()
            .unwrap_err();
        assert_eq!(err.0, "opcua.anonymous");
        let err = settings(Profile::Secure, false, &DEMO_ENDPOINTS, &users)
            .validate()
            .unwrap_err();
        assert_eq!(err.0, "opcua.endpoints[0].policy");
        assert!(err.1.contains("secure profile"), "{}", err.1);
        let err = settings(Profile::Secure, false, &SECURE_ENDPOINTS, &users)
            .validate()
            .unwrap_err();
        assert_eq!(err.0, "opcua.users[0].password_hash");
        assert!(err.1.contains("demo password"), "{}", err.1);
        let own = [UserConfig::demo(
            "alice",
            &hash_password("alice's own").unwrap(),
            Role::Admin,
        )];
        assert_eq!(
            settings(Profile::Secure, false, &SECURE_ENDPOINTS, &own).validate(),
            Ok(())
        );
        let err = settings(Profile::Secure, false, &SECURE_ENDPOINTS, &[])
            .validate()
            .unwrap_err();
        assert_eq!(err.0, "opcua.users");
        let mut trusting = settings(Profile::Secure, false, &SECURE_ENDPOINTS, &own);
        trusting.trust_client_certificates = true;
        assert_eq!(
            trusting.validate().unwrap_err().0,
            "opcua.trust_client_certificates"
        );
    }

    #[test]
    fn policy_and_mode_none_go_together() {
        for endpoint in [
            EndpointConfig::new(PolicyName::None, ModeName::Sign),
            EndpointConfig::new(PolicyName::Basic256Sha256, ModeName::None),
        ] {
            let err = settings(Profile::Demo, true, &[endpoint], &[])
                .validate()
                .unwrap_err();
            assert_eq!(err.0, "opcua.endpoints[0].policy");
        }
        let twice = [DEMO_ENDPOINTS[1], DEMO_ENDPOINTS[1]];
        assert_eq!(
            settings(Profile::Demo, true, &twice, &[])
                .validate()
                .unwrap_err()
                .0,
            "opcua.endpoints"
        );
    }

    #[test]
    fn users_need_exactly_one_credential_and_a_valid_hash() {
        let mut user = UserConfig::demo("alice", DEMO_USERS[1].2, Role::Operator);
        let check = |u: &UserConfig| {
            settings(
                Profile::Demo,
                true,
                &DEMO_ENDPOINTS,
                std::slice::from_ref(u),
            )
            .validate()
        };
        assert_eq!(check(&user), Ok(()));
        user.thumbprint = Some("ab".repeat(20));
        assert_eq!(check(&user).unwrap_err().0, "opcua.users[0].password_hash");
        user.password_hash = None;
        assert_eq!(check(&user), Ok(()));
        user.thumbprint = Some("xyz".into());
        assert_eq!(check(&user).unwrap_err().0, "opcua.users[0].thumbprint");
        user.thumbprint = None;
        user.password_hash = Some("secret".into());
        let err = check(&user).unwrap_err();
        assert_eq!(err.0, "opcua.users[0].password_hash");
        assert!(err.1.contains("hash-password"), "{}", err.1);
        user.password_hash = None;
        user.certificate = Some("/nonexistent/user.der".into());
        assert_eq!(check(&user).unwrap_err().0, "opcua.users[0].certificate");
        let twice = [
            UserConfig::demo("bob", DEMO_USERS[0].2, Role::Viewer),
            UserConfig::demo("bob", DEMO_USERS[0].2, Role::Viewer),
        ];
        assert_eq!(
            settings(Profile::Demo, true, &DEMO_ENDPOINTS, &twice)
                .validate()
                .unwrap_err()
                .0,
            "opcua.users[1].name"
        );
    }

    #[test]
    fn roles_grant_writes_and_calls_in_order() {
        assert!(!Role::Viewer.may_write());
        assert!(Role::Operator.may_write());
        assert!(Role::Admin.may_write());
        for method in [
            "Line/SubmitOrder",
            "Line/Start",
            "Line/Stop",
            "Stop/SetStop",
        ] {
            assert!(!Role::Viewer.may_call(method), "{method}");
            assert!(Role::Operator.may_call(method), "{method}");
            assert!(Role::Admin.may_call(method), "{method}");
        }
    }

    #[test]
    fn the_role_travels_in_the_user_token() {
        for role in [Role::Viewer, Role::Operator, Role::Admin] {
            assert_eq!(Role::of(&role.token("someone")), role);
        }
        assert_eq!(
            Role::of(&UserToken(
                opcua::server::ANONYMOUS_USER_TOKEN_ID.to_owned()
            )),
            Role::Viewer
        );
        assert_eq!(Role::of(&UserToken("root/x".into())), Role::Viewer);
    }

    #[test]
    fn failed_logins_are_logged_once_per_window_with_a_count() {
        let limiter = FailedLogins::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(limiter.should_log("a", t0), Some(0));
        assert_eq!(limiter.should_log("a", t0 + Duration::from_secs(1)), None);
        assert_eq!(limiter.should_log("a", t0 + Duration::from_secs(2)), None);
        assert_eq!(
            limiter.should_log("b", t0 + Duration::from_secs(2)),
            Some(0)
        );
        assert_eq!(
            limiter.should_log("a", t0 + Duration::from_secs(11)),
            Some(2)
        );
    }
}
