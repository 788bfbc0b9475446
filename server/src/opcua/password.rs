//! Argon2id password checks for OPC UA logins, in one work area kept for the process's life.
//!
//! Why: Argon2id with the default parameters (`m=19456`) fills 19 MiB of memory per check.
//! `argon2::PasswordVerifier` allocates that area for every check and frees it after. glibc
//! serves the first such block with `mmap`, then raises its mmap threshold to the freed size,
//! so every later one comes from the arena of the thread that checks it and stays resident
//! once freed: each blocking thread that ever checked a login kept about 19 MiB, and 300
//! OPC UA sessions with a user name took the release gateway from 59 to 403 MB (anonymous
//! sessions: 59 to 61). Here every check fills the same area, allocated at the first one:
//! the memory spent on logins is one area whatever their number, and concurrent logins take
//! turns (a login flood cannot allocate 19 MiB per connection either).

use std::sync::Mutex;

use argon2::password_hash::{Output, PasswordHash};
use argon2::{Algorithm, Argon2, Block, Params, Version};

/// The work area of every check, grown to the largest `m` cost seen (the configured hashes).
static WORK_AREA: Mutex<Vec<Block>> = Mutex::new(Vec::new());

/// Whether `password` matches the Argon2 PHC string `hash`; false for a malformed hash.
pub fn verify_password(hash: &str, password: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let Some(expected) = parsed.hash else {
        return false;
    };
    let Some(salt) = parsed.salt else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(parsed.algorithm) else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from).transpose() {
        Ok(version) => version.unwrap_or_default(),
        Err(_) => return false,
    };
    let Ok(params) = Params::try_from(&parsed) else {
        return false;
    };
    // The salt is hashed as its decoded bytes, as `PasswordHasher::hash_password` does.
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let blocks = params.block_count();
    let argon2 = Argon2::new(algorithm, version, params);
    let mut out = vec![0u8; expected.len()];
    let filled = {
        // A panic while the lock was held leaves nothing to repair: every check overwrites
        // the area before reading it.
        let mut area = WORK_AREA.lock().unwrap_or_else(|e| e.into_inner());
        if area.len() < blocks {
            area.resize(blocks, Block::default());
        }
        argon2.hash_password_into_with_memory(password.as_bytes(), salt, &mut out, &mut area[..])
    };
    // `Output`'s equality is constant-time.
    filled.is_ok() && Output::new(&out).is_ok_and(|computed| computed == expected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::{PasswordHasher, PasswordVerifier, SaltString};

    fn crate_hash(params: Params, password: &str) -> String {
        let salt = SaltString::encode_b64(b"sixteen byte slt").unwrap();
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(password.as_bytes(), &salt)
            .unwrap()
            .to_string()
    }

    #[test]
    fn agrees_with_the_crate_for_every_parameter_set_and_area_size() {
        // A smaller area after a larger one (the area is reused, only the first blocks count),
        // another output length, and the default parameters of `hash-password`.
        let sets = [
            Params::new(4096, 3, 2, Some(32)).unwrap(),
            Params::new(256, 1, 1, Some(16)).unwrap(),
            Params::new(1024, 2, 4, Some(64)).unwrap(),
            Params::default(),
        ];
        for params in sets {
            let hash = crate_hash(params.clone(), "s3cret");
            let parsed = PasswordHash::new(&hash).unwrap();
            assert!(Argon2::default()
                .verify_password(b"s3cret", &parsed)
                .is_ok());
            assert!(verify_password(&hash, "s3cret"), "{hash}");
            assert!(!verify_password(&hash, "s3cret "), "{hash}");
            assert!(!verify_password(&hash, ""), "{hash}");
        }
    }

    #[test]
    fn a_malformed_or_foreign_hash_is_no_match() {
        let good = crate_hash(Params::new(256, 1, 1, None).unwrap(), "pw");
        for hash in [
            "",
            "not a hash",
            "$argon2id$v=19$m=256,t=1,p=1$c2l4dGVlbiBieXRlIHNsdA",
            "$argon2id$v=99$m=256,t=1,p=1$c2l4dGVlbiBieXRlIHNsdA$AAAAAAAAAAAAAAAAAAAAAA",
            "$scrypt$ln=4,r=8,p=1$c2l4dGVlbiBieXRlIHNsdA$AAAAAAAAAAAAAAAAAAAAAA",
            &good.replacen("m=256", "m=1", 1),
        ] {
            assert!(!verify_password(hash, "pw"), "{hash}");
        }
        assert!(verify_password(&good, "pw"));
    }
}
