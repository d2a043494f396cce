//! Passwords: the policy a new password must meet, and argon2id hashing
//! (PHC strings, so the parameters travel with each hash and can be raised
//! later without invalidating stored ones).

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::RngCore;
use std::sync::OnceLock;

/// Memory cost in KiB (19 MiB), time cost 2, one lane: the OWASP minimum for
/// argon2id, about 20-40 ms per verification on one core in a release build.
pub const MEMORY_KIB: u32 = 19 * 1024;
pub const ITERATIONS: u32 = 2;
pub const LANES: u32 = 1;

/// The longest password accepted (longer input is refused, not truncated).
pub const MAX_LENGTH: usize = 1024;

/// What a new password must satisfy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordPolicy {
    /// Fewest characters (Unicode scalar values).
    pub min_length: usize,
    /// Refuse passwords that contain the username (case-insensitively).
    pub forbid_username: bool,
    /// Fewest kinds of characters among lower case, upper case, digits and others.
    pub min_classes: usize,
    /// Refuse the built-in list of common passwords.
    pub forbid_common: bool,
}

impl Default for PasswordPolicy {
    fn default() -> PasswordPolicy {
        PasswordPolicy { min_length: 12, forbid_username: true, min_classes: 2, forbid_common: true }
    }
}

/// Why a password was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("the password must be at least {min} characters long")]
    TooShort { min: usize },
    #[error("the password must be at most {max} characters long")]
    TooLong { max: usize },
    #[error("the password must not contain the username")]
    ContainsUsername,
    #[error("the password must mix at least {min} kinds of characters (lower case, upper case, digits, others)")]
    TooFewClasses { min: usize },
    #[error("the password is too common (it is, or starts with, a well-known password)")]
    Common,
}

/// Common passwords and their stems, lower case. A password is refused
/// when it equals one of these, or is one followed only by digits and symbols.
const COMMON: &[&str] = &[
    "password",
    "passw0rd",
    "p@ssw0rd",
    "p@ssword",
    "123456",
    "12345678",
    "123456789",
    "1234567890",
    "123456789012",
    "1q2w3e4r",
    "1q2w3e4r5t6y",
    "qwerty",
    "qwertyuiop",
    "qwerty123456",
    "qwertyuiopasdfgh",
    "asdfghjkl",
    "zxcvbnm",
    "abc123",
    "abcdefghijkl",
    "letmein",
    "welcome",
    "welcome to hearth",
    "iloveyou",
    "admin",
    "administrator",
    "root",
    "changeme",
    "changeit",
    "monkey",
    "dragon",
    "football",
    "baseball",
    "sunshine",
    "princess",
    "master",
    "shadow",
    "superman",
    "trustno1",
    "starwars",
    "whatever",
    "freedom",
    "secret",
    "default",
    "hospital",
    "clinic",
    "doctor",
    "nurse",
    "patient",
    "health",
    "medical",
    "hearth",
    "summer",
    "winter",
    "spring",
    "autumn",
    "january",
    "passwordpassword",
    "correct horse battery staple",
    "correcthorsebatterystaple",
];

fn classes(password: &str) -> usize {
    let (mut lower, mut upper, mut digit, mut other) = (false, false, false, false);
    for c in password.chars() {
        if c.is_lowercase() {
            lower = true;
        } else if c.is_uppercase() {
            upper = true;
        } else if c.is_ascii_digit() {
            digit = true;
        } else {
            other = true;
        }
    }
    [lower, upper, digit, other].iter().filter(|b| **b).count()
}

fn is_common(password: &str) -> bool {
    let lower = password.to_lowercase();
    let stem = lower.trim_end_matches(|c: char| c.is_ascii_digit() || c.is_ascii_punctuation() || c == ' ');
    COMMON.iter().any(|common| lower == *common || stem == *common)
}

impl PasswordPolicy {
    /// Checks a new password for `username`; the first rule broken is named.
    pub fn check(&self, username: &str, password: &str) -> Result<(), PasswordError> {
        let length = password.chars().count();
        if length < self.min_length {
            return Err(PasswordError::TooShort { min: self.min_length });
        }
        if password.len() > MAX_LENGTH {
            return Err(PasswordError::TooLong { max: MAX_LENGTH });
        }
        let username = username.trim().to_lowercase();
        if self.forbid_username && !username.is_empty() && password.to_lowercase().contains(&username) {
            return Err(PasswordError::ContainsUsername);
        }
        if classes(password) < self.min_classes {
            return Err(PasswordError::TooFewClasses { min: self.min_classes });
        }
        if self.forbid_common && is_common(password) {
            return Err(PasswordError::Common);
        }
        Ok(())
    }
}

/// Hashing failed (parameters or salt rejected by the library).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

fn hasher() -> Result<Argon2<'static>, HashError> {
    let params = Params::new(MEMORY_KIB, ITERATIONS, LANES, None).map_err(|e| HashError(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// An argon2id PHC string (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`) with a fresh random salt.
pub fn hash(password: &str) -> Result<String, HashError> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| HashError(e.to_string()))?;
    let hash = hasher()?.hash_password(password.as_bytes(), &salt).map_err(|e| HashError(e.to_string()))?;
    Ok(hash.to_string())
}

/// True when `password` matches the PHC string `hash` (with the parameters
/// recorded in it). An unreadable hash never matches.
pub fn verify(hash: &str, password: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    if password.len() > MAX_LENGTH {
        // Still spend the time of a verification, then refuse.
        let _ = Argon2::default().verify_password(b"", &parsed);
        return false;
    }
    Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok()
}

/// A hash of a random password with the current parameters: verifying
/// against it costs what verifying a real user's password costs, so an
/// unknown username takes as long to refuse as a wrong password.
pub fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let mut random = [0u8; 24];
        rand::rng().fill_bytes(&mut random);
        let text: String = random.iter().map(|b| format!("{b:02x}")).collect();
        hash(&text).unwrap_or_default()
    })
}

/// Verifies on a blocking thread (argon2 takes tens of milliseconds of CPU).
pub async fn verify_blocking(hash: String, password: String) -> bool {
    tokio::task::spawn_blocking(move || verify(&hash, &password)).await.unwrap_or(false)
}

/// Hashes on a blocking thread.
pub async fn hash_blocking(password: String) -> Result<String, HashError> {
    match tokio::task::spawn_blocking(move || hash(&password)).await {
        Ok(result) => result,
        Err(e) => Err(HashError(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_policy_names_the_rule_broken() {
        let policy = PasswordPolicy::default();
        assert_eq!(policy.check("alice", "Short1!"), Err(PasswordError::TooShort { min: 12 }));
        assert_eq!(policy.check("alice", "xxAliceSmith99"), Err(PasswordError::ContainsUsername));
        assert_eq!(policy.check("alice", "abcdefghijklmnop"), Err(PasswordError::TooFewClasses { min: 2 }));
        assert_eq!(policy.check("alice", "123456789012345"), Err(PasswordError::TooFewClasses { min: 2 }));
        assert_eq!(policy.check("alice", "Password123456"), Err(PasswordError::Common));
        assert_eq!(policy.check("alice", "Qwertyuiop!!2024"), Err(PasswordError::Common));
        assert_eq!(policy.check("alice", "correct horse battery staple"), Err(PasswordError::Common));
        assert_eq!(policy.check("alice", "Tulip-orbit-Quarry7"), Ok(()));
        assert_eq!(policy.check("alice", "plum river lantern"), Ok(()));
        assert_eq!(policy.check("alice", &"aB1".repeat(400)), Err(PasswordError::TooLong { max: MAX_LENGTH }));
        let message = PasswordError::TooShort { min: 12 }.to_string();
        assert!(message.contains("at least 12 characters"), "{message}");
    }

    #[test]
    fn the_policy_is_configurable() {
        let lax = PasswordPolicy { min_length: 4, forbid_username: false, min_classes: 1, forbid_common: false };
        assert_eq!(lax.check("bob", "bobby"), Ok(()));
        assert_eq!(lax.check("bob", "abc"), Err(PasswordError::TooShort { min: 4 }));
    }

    #[test]
    fn hashes_are_argon2id_phc_strings_that_verify() {
        let phc = hash("Tulip-orbit-Quarry7").expect("hash");
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify(&phc, "Tulip-orbit-Quarry7"));
        assert!(!verify(&phc, "Tulip-orbit-Quarry8"));
        assert!(!verify("not a hash", "anything"));
        assert_ne!(phc, hash("Tulip-orbit-Quarry7").expect("hash"), "salted");
        assert!(!verify(dummy_hash(), ""));
    }
}
