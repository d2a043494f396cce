//! Time-based one-time passwords (RFC 6238): HMAC-SHA-1, 6 digits, 30-second
//! steps, one step of drift either way. A code is accepted only for a step
//! later than the last one used, so a code cannot be replayed.

use rand::RngCore;
use totp_rs::{Algorithm, Secret, TOTP};

pub const DIGITS: usize = 6;
pub const STEP_SECONDS: u64 = 30;
/// Steps of clock drift accepted either side of the current one.
pub const SKEW: u64 = 1;
/// Secret length in bytes (160 bits, as RFC 4226 recommends).
pub const SECRET_BYTES: usize = 20;

/// A fresh random secret, base32 (RFC 4648, no padding) as authenticator apps take it.
pub fn generate_secret() -> String {
    let mut bytes = vec![0u8; SECRET_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    totp(bytes).get_secret_base32()
}

fn totp(secret: Vec<u8>) -> TOTP {
    TOTP::new_unchecked(Algorithm::SHA1, DIGITS, SKEW as u8, STEP_SECONDS, secret)
}

fn decode(secret_base32: &str) -> Option<TOTP> {
    let bytes = Secret::Encoded(secret_base32.to_string()).to_bytes().ok()?;
    if bytes.is_empty() {
        return None;
    }
    Some(totp(bytes))
}

/// The code for the step containing `unix_seconds` (authenticator apps, tests).
pub fn code_at(secret_base32: &str, unix_seconds: u64) -> Option<String> {
    Some(decode(secret_base32)?.generate(unix_seconds))
}

/// The step a valid `code` belongs to, if it matches the current step or one
/// next to it and that step is later than `last_used`.
pub fn verify(secret_base32: &str, code: &str, unix_seconds: u64, last_used: Option<u64>) -> Option<u64> {
    let code = code.trim();
    if code.len() != DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let totp = decode(secret_base32)?;
    let current = unix_seconds / STEP_SECONDS;
    let mut found = None;
    // Every candidate is computed, so timing does not reveal which matched.
    for step in current.saturating_sub(SKEW)..=current + SKEW {
        let expected = totp.generate(step * STEP_SECONDS);
        if constant_time_eq(expected.as_bytes(), code.as_bytes()) && found.is_none() {
            found = Some(step);
        }
    }
    let step = found?;
    if last_used.is_some_and(|last| step <= last) {
        return None;
    }
    Some(step)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn percent_encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The `otpauth://totp/...` URI an authenticator app scans (as a QR code) to enrol.
pub fn otpauth_uri(issuer: &str, account: &str, secret_base32: &str) -> String {
    format!(
        "otpauth://totp/{}:{}?secret={secret_base32}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECONDS}",
        percent_encode(issuer),
        percent_encode(account),
        percent_encode(issuer)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_6238_sha1_vectors() {
        // RFC 6238 appendix B: the ASCII secret "12345678901234567890", last 6 digits.
        let secret = totp(b"12345678901234567890".to_vec()).get_secret_base32();
        assert_eq!(code_at(&secret, 59).as_deref(), Some("287082"));
        assert_eq!(code_at(&secret, 1_111_111_109).as_deref(), Some("081804"));
        assert_eq!(code_at(&secret, 1_234_567_890).as_deref(), Some("005924"));
        assert_eq!(code_at(&secret, 2_000_000_000).as_deref(), Some("279037"));
    }

    #[test]
    fn codes_are_accepted_one_step_either_side_and_never_twice() {
        let secret = generate_secret();
        assert_eq!(secret.len(), 32);
        let now = 1_700_000_000u64;
        let code = code_at(&secret, now).expect("code");
        let step = now / STEP_SECONDS;
        assert_eq!(verify(&secret, &code, now, None), Some(step));
        assert_eq!(verify(&secret, &code, now + STEP_SECONDS, None), Some(step));
        assert_eq!(verify(&secret, &code, now - STEP_SECONDS, None), Some(step));
        assert_eq!(verify(&secret, &code, now + 2 * STEP_SECONDS, None), None);
        assert_eq!(verify(&secret, &code, now, Some(step)), None, "replay refused");
        assert_eq!(verify(&secret, "12345", now, None), None);
        assert_eq!(verify(&secret, "abcdef", now, None), None);
    }

    #[test]
    fn the_enrolment_uri_names_issuer_account_and_parameters() {
        let uri = otpauth_uri("Hearth", "dr bob", "JBSWY3DPEHPK3PXP");
        assert_eq!(
            uri,
            "otpauth://totp/Hearth:dr%20bob?secret=JBSWY3DPEHPK3PXP&issuer=Hearth&algorithm=SHA1&digits=6&period=30"
        );
    }
}
