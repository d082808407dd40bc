//! Both signature schemes, over exactly the bytes sent, and secret generation.
//!
//! - `X-Webhook-Signature: sha256=<hex HMAC-SHA256(secret as UTF-8, body)>`
//! - Standard Webhooks: `webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{ts}.{body}")>`
//!   where key is the base64 after `whsec_` when the secret has that prefix (and
//!   decodes), else the secret's UTF-8 bytes. One `v1,` entry per live secret.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

pub const SECRET_PREFIX: &str = "whsec_";

/// The signing keys of one secret, derived once.
pub struct SecretKeys {
    legacy: hmac::Key,
    standard: hmac::Key,
}

impl SecretKeys {
    pub fn new(secret: &str) -> Self {
        Self {
            legacy: hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()),
            standard: hmac::Key::new(hmac::HMAC_SHA256, &standard_key_bytes(secret)),
        }
    }
}

/// The keys of the secrets in use, derived once per secret rather than once
/// per attempt (two HMAC keys a secret, ~1% of the daemon's CPU in the
/// burn-down profile). Keyed by the secret itself, so a rotation needs no
/// invalidation; a rotated-out secret's keys stay until the cache is
/// cleared, at [`KeyCache::MAX`] secrets.
#[derive(Default)]
pub struct KeyCache(Mutex<HashMap<String, Arc<SecretKeys>>>);

impl KeyCache {
    pub const MAX: usize = 10_000;

    pub fn get(&self, secret: &str) -> Arc<SecretKeys> {
        let mut keys = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(k) = keys.get(secret) {
            return k.clone();
        }
        if keys.len() >= Self::MAX {
            keys.clear();
        }
        let k = Arc::new(SecretKeys::new(secret));
        keys.insert(secret.to_string(), k.clone());
        k
    }
}

/// The Standard Webhooks key bytes of a secret.
pub fn standard_key_bytes(secret: &str) -> Vec<u8> {
    secret
        .strip_prefix(SECRET_PREFIX)
        .and_then(|b| B64.decode(b).ok())
        .unwrap_or_else(|| secret.as_bytes().to_vec())
}

/// `sha256=<hex>` for the X-Webhook-Signature header.
pub fn legacy_signature(keys: &SecretKeys, body: &[u8]) -> String {
    const PREFIX: &[u8] = b"sha256=";
    let tag = hmac::sign(&keys.legacy, body);
    // Into one buffer sized once, by `hex`'s table, not `{:02x}`: the
    // formatter run 32 times a signature showed in the delivery profile
    // (core::fmt).
    let mut out = vec![0u8; PREFIX.len() + 2 * tag.as_ref().len()];
    out[..PREFIX.len()].copy_from_slice(PREFIX);
    hex::encode_to_slice(tag.as_ref(), &mut out[PREFIX.len()..])
        .expect("sized for the tag's digits");
    String::from_utf8(out).expect("ASCII")
}

/// The `webhook-signature` header value: one `v1,<base64>` per key, space separated.
pub fn standard_signature<'a>(
    keys: impl IntoIterator<Item = &'a SecretKeys>,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    let prefix = format!("{msg_id}.{timestamp}.");
    let mut out = String::new();
    for k in keys {
        let mut ctx = hmac::Context::with_key(&k.standard);
        ctx.update(prefix.as_bytes());
        ctx.update(body);
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str("v1,");
        out.push_str(&B64.encode(ctx.sign().as_ref()));
    }
    out
}

/// A new secret: `whsec_` + base64 of 32 bytes from the system CSPRNG.
pub fn generate_secret() -> String {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system random number generator failed");
    format!("{SECRET_PREFIX}{}", B64.encode(bytes))
}

/// Verifies a Standard Webhooks signature header against one secret (used by
/// the demo receiver and tests; receivers do the same with their own library).
pub fn verify_standard(
    secret: &str,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
    header: &str,
) -> bool {
    let key = hmac::Key::new(hmac::HMAC_SHA256, &standard_key_bytes(secret));
    let mut msg = format!("{msg_id}.{timestamp}.").into_bytes();
    msg.extend_from_slice(body);
    header.split(' ').any(|sig| {
        sig.strip_prefix("v1,")
            .and_then(|b| B64.decode(b).ok())
            .is_some_and(|tag| hmac::verify(&key, &msg, &tag).is_ok())
    })
}

/// Verifies an X-Webhook-Signature header against one secret.
pub fn verify_legacy(secret: &str, body: &[u8], header: &str) -> bool {
    let Some(digits) = header.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(tag) = hex::decode(digits) else {
        return false;
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    hmac::verify(&key, body, &tag).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Vectors computed independently (commands in tests/signature_vectors.sh):
    //   printf '%s' "$BODY" | openssl dgst -sha256 -hmac "$SECRET"
    //   python3 -c 'import hmac,hashlib,base64; ...'
    const BODY: &str = r#"{"id":"0b9a1c8e-4a57-4a4e-9a8e-2f1d3c4b5a69","event":"goal_completion","site_id":"example.com","timestamp":"2026-02-25T12:00:00Z","data":{"goal_id": 7}}"#;
    const MSG_ID: &str = "0b9a1c8e-4a57-4a4e-9a8e-2f1d3c4b5a69";
    const TS: i64 = 1772020800;
    const PLAIN_SECRET: &str = "this-is-a-plain-secret-of-32-chars!!";
    const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    #[test]
    fn legacy_matches_openssl() {
        let k = SecretKeys::new(PLAIN_SECRET);
        assert_eq!(legacy_signature(&k, BODY.as_bytes()), LEGACY_PLAIN);
        assert!(verify_legacy(PLAIN_SECRET, BODY.as_bytes(), LEGACY_PLAIN));
        assert!(!verify_legacy(PLAIN_SECRET, b"tampered", LEGACY_PLAIN));
    }

    #[test]
    fn standard_matches_python_for_plain_and_whsec_secrets() {
        let k = SecretKeys::new(PLAIN_SECRET);
        assert_eq!(
            standard_signature([&k], MSG_ID, TS, BODY.as_bytes()),
            STANDARD_PLAIN
        );
        let w = SecretKeys::new(WHSEC);
        assert_eq!(
            standard_signature([&w], MSG_ID, TS, BODY.as_bytes()),
            STANDARD_WHSEC
        );
        let both = standard_signature([&w, &k], MSG_ID, TS, BODY.as_bytes());
        assert_eq!(both, format!("{STANDARD_WHSEC} {STANDARD_PLAIN}"));
        assert!(verify_standard(
            PLAIN_SECRET,
            MSG_ID,
            TS,
            BODY.as_bytes(),
            &both
        ));
        assert!(verify_standard(WHSEC, MSG_ID, TS, BODY.as_bytes(), &both));
        assert!(!verify_standard(
            WHSEC,
            MSG_ID,
            TS + 1,
            BODY.as_bytes(),
            &both
        ));
    }

    #[test]
    fn cached_keys_sign_as_fresh_ones() {
        let cache = KeyCache::default();
        let a = cache.get(WHSEC);
        assert!(Arc::ptr_eq(&a, &cache.get(WHSEC)), "derived once");
        let k = cache.get(PLAIN_SECRET);
        assert_eq!(legacy_signature(&k, BODY.as_bytes()), LEGACY_PLAIN);
        assert_eq!(
            standard_signature([&*a], MSG_ID, TS, BODY.as_bytes()),
            STANDARD_WHSEC
        );
    }

    #[test]
    fn generated_secrets_are_whsec_32_bytes_and_distinct() {
        let a = generate_secret();
        let b = generate_secret();
        assert_ne!(a, b);
        assert!(a.starts_with("whsec_"));
        assert_eq!(standard_key_bytes(&a).len(), 32);
    }

    const LEGACY_PLAIN: &str =
        "sha256=3914ca9f99bf804c04d0ee5acf9e57bebe48bd18951a46d5a6a2e1c94c63dc77";
    const STANDARD_PLAIN: &str = "v1,uFbFoZfJLmwOYlcE+IrZDIdyicwKOaWnKMi3ElkytaQ=";
    const STANDARD_WHSEC: &str = "v1,+pszL27VThQR8us9VpseIZ7Yz9HfUcWlwPfiKitmhxc=";
}
