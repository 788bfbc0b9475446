//! The PKI folder (async-opcua's layout): `own/cert.der` and `private/private.pem` (the
//! server's certificate and key), `trusted/` and `rejected/` (client certificates), and
//! `issuers/` (CA certificates, listed for the operator).
//!
//! async-opcua looks a client certificate up in `rejected/` then `trusted/` on every
//! connection, so moving a file between them takes effect without a restart.

use std::path::{Path, PathBuf};

use opcua::crypto::{CertificateStore, X509Data, X509};

use super::OpcUaConfig;

/// The OPC UA client's PKI folder (partner servers' certificates, the client's own), inside
/// the server's: `<pki_dir>/partners`.
pub fn partners_dir(pki_dir: &Path) -> PathBuf {
    pki_dir.join("partners")
}

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot read the PKI folder {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot move {from} to {to}: {source}")]
    Move {
        from: PathBuf,
        to: PathBuf,
        source: std::io::Error,
    },
    #[error("no certificate with thumbprint {thumbprint} in {pki_dir} (see `fabrique-gateway pki list`)")]
    Unknown {
        thumbprint: String,
        pki_dir: PathBuf,
    },
    #[error("the certificate {thumbprint} is an issuer; only client certificates move between trusted and rejected")]
    Issuer { thumbprint: String },
    #[error("cannot create the server certificate in {pki_dir}: {reason}")]
    OwnCertificate { pki_dir: PathBuf, reason: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertState {
    Trusted,
    Rejected,
    Issuer,
}

impl CertState {
    pub fn as_str(self) -> &'static str {
        match self {
            CertState::Trusted => "trusted",
            CertState::Rejected => "rejected",
            CertState::Issuer => "issuer",
        }
    }

    fn dir(self) -> &'static str {
        match self {
            CertState::Trusted => "trusted",
            CertState::Rejected => "rejected",
            CertState::Issuer => "issuers",
        }
    }
}

#[derive(Debug, Clone)]
pub struct CertEntry {
    pub state: CertState,
    /// SHA-1 of the DER, lowercase hex.
    pub thumbprint: String,
    pub subject: String,
    pub path: PathBuf,
}

/// Create the folders, and the server's own certificate if it has none: self-signed, for the
/// application URI, `host`, `certificate_hosts`, localhost and the machine's names.
pub fn ensure_own_certificate(config: &OpcUaConfig) -> Result<(), PkiError> {
    let failed = |reason: String| PkiError::OwnCertificate {
        pki_dir: config.pki_dir.clone(),
        reason,
    };
    let store = CertificateStore::new(&config.pki_dir);
    store.ensure_pki_path().map_err(failed)?;
    std::fs::create_dir_all(config.pki_dir.join(CertState::Issuer.dir()))
        .map_err(|e| failed(e.to_string()))?;
    if store.read_own_cert().is_ok() && store.read_own_pkey().is_ok() {
        return Ok(());
    }
    let mut hosts = vec![config.host.clone()];
    hosts.extend(config.certificate_hosts.iter().cloned());
    hosts.retain(|h| !h.is_empty() && h != "0.0.0.0" && h != "::");
    hosts.dedup();
    let data = X509Data {
        key_size: 2048,
        common_name: config.application_name.clone(),
        organization: config.application_name.clone(),
        organizational_unit: "Fabrique Gateway".into(),
        country: "FR".into(),
        state: "Hauts-de-France".into(),
        alt_host_names: X509Data::alt_host_names(
            &config.application_uri,
            Some(hosts),
            true,
            true,
            true,
        ),
        certificate_duration_days: 3650,
    };
    tracing::info!(pki_dir = %config.pki_dir.display(), "creating the server's certificate");
    store
        .create_and_store_application_instance_cert(&data, true)
        .map(|_| ())
        .map_err(failed)
}

/// Every certificate in `trusted/`, `rejected/` and `issuers/`.
pub fn list(pki_dir: &Path) -> Result<Vec<CertEntry>, PkiError> {
    let mut entries = Vec::new();
    for state in [CertState::Trusted, CertState::Rejected, CertState::Issuer] {
        let dir = pki_dir.join(state.dir());
        let files = match std::fs::read_dir(&dir) {
            Ok(files) => files,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(PkiError::Read { path: dir, source }),
        };
        let mut paths: Vec<PathBuf> = files
            .filter_map(|f| f.ok().map(|f| f.path()))
            .filter(|p| p.is_file())
            .collect();
        paths.sort();
        for path in paths {
            // A stray file that is not a certificate is skipped, not fatal: the folder is
            // edited by hand too.
            let Ok(cert) = CertificateStore::read_cert(&path) else {
                tracing::warn!(path = %path.display(), "not a certificate, skipped");
                continue;
            };
            entries.push(entry(state, &cert, path));
        }
    }
    Ok(entries)
}

fn entry(state: CertState, cert: &X509, path: PathBuf) -> CertEntry {
    CertEntry {
        state,
        thumbprint: cert.thumbprint().as_hex_string(),
        subject: cert.subject_name(),
        path,
    }
}

/// Move the client certificate with `thumbprint` to `target` (trusted or rejected).
pub fn move_to(pki_dir: &Path, thumbprint: &str, target: CertState) -> Result<CertEntry, PkiError> {
    let wanted = thumbprint.trim().to_ascii_lowercase();
    let found = list(pki_dir)?
        .into_iter()
        .find(|e| e.thumbprint == wanted)
        .ok_or_else(|| PkiError::Unknown {
            thumbprint: wanted.clone(),
            pki_dir: pki_dir.to_owned(),
        })?;
    if found.state == CertState::Issuer {
        return Err(PkiError::Issuer { thumbprint: wanted });
    }
    if found.state == target {
        return Ok(found);
    }
    let dir = pki_dir.join(target.dir());
    std::fs::create_dir_all(&dir).map_err(|source| PkiError::Read {
        path: dir.clone(),
        source,
    })?;
    let file_name = found
        .path
        .file_name()
        .map(PathBuf::from)
        .unwrap_or_default();
    let to = dir.join(file_name);
    std::fs::rename(&found.path, &to).map_err(|source| PkiError::Move {
        from: found.path.clone(),
        to: to.clone(),
        source,
    })?;
    Ok(CertEntry {
        state: target,
        path: to,
        ..found
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_and_reject_move_a_certificate_and_unknown_ones_are_named() {
        let dir = std::env::temp_dir().join(format!("fabrique-pki-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let config = OpcUaConfig {
            pki_dir: dir.join("server"),
            ..OpcUaConfig::default()
        };
        ensure_own_certificate(&config).unwrap();
        // Use the server's own certificate as a "client" certificate in rejected/.
        let own = CertificateStore::new(&config.pki_dir)
            .read_own_cert()
            .unwrap();
        let rejected = config.pki_dir.join("rejected/client.der");
        std::fs::write(&rejected, own.to_der().unwrap()).unwrap();
        let listed = list(&config.pki_dir).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].state, CertState::Rejected);
        let thumbprint = listed[0].thumbprint.clone();
        assert_eq!(thumbprint.len(), 40);
        assert!(
            listed[0].subject.contains("Fabrique Gateway"),
            "{}",
            listed[0].subject
        );

        let moved = move_to(
            &config.pki_dir,
            &thumbprint.to_uppercase(),
            CertState::Trusted,
        )
        .unwrap();
        assert_eq!(moved.state, CertState::Trusted);
        assert!(config.pki_dir.join("trusted/client.der").is_file());
        assert!(!rejected.exists());
        move_to(&config.pki_dir, &thumbprint, CertState::Rejected).unwrap();
        assert!(rejected.is_file());

        let err = move_to(&config.pki_dir, "00", CertState::Trusted).unwrap_err();
        assert!(matches!(err, PkiError::Unknown { .. }), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
