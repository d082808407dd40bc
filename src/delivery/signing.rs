//! Both signature schemes, over exactly the bytes sent, and secret generation.
//!
//! - `X-Webhook-Signature: sha256=<hex HMAC-SHA256(secret as UTF-8, body)>`
//! - Standard Webhooks: `webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{ts}.{body}")>`
//!   where key is the base64 after `whsec_` when the secret has that prefix (and
//!   decodes), else the secret's UTF-8 bytes. One `v1,` entry per live secret.
//! - Standard Webhooks asymmetric: `webhook-signature: v1a,<base64 ed25519
//!   signature over "{id}.{ts}.{body}">`, one entry per live key pair, after
//!   the `v1,` ones, for a webhook that opted in (`webhooks.signature`, sql/0017).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{Ed25519KeyPair, KeyPair as _, UnparsedPublicKey, ED25519};

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

pub const PRIVATE_KEY_PREFIX: &str = "whsk_";
pub const PUBLIC_KEY_PREFIX: &str = "whpk_";
/// The bytes of an ed25519 seed (RFC 8032's private key) and of a public key.
pub const ED25519_KEY_LEN: usize = 32;

/// A webhook's ed25519 key as stored: the 32-byte seed and its public key.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey {
    pub seed: Vec<u8>,
    pub public: Vec<u8>,
}

/// Never the seed, should a key reach a log line or a panic message.
impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", public_key_text(&self.public))
    }
}

/// Why a `whsk_` key is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadSigningKey {
    Prefix,
    Base64,
    Length(usize),
    /// 64 bytes whose second half is not the first half's public key.
    Mismatch,
}

impl std::fmt::Display for BadSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Prefix => write!(f, "an ed25519 private key starts with whsk_"),
            Self::Base64 => write!(f, "the part after whsk_ is not standard base64"),
            Self::Length(n) => write!(
                f,
                "the part after whsk_ decodes to {n} bytes: give the 32-byte seed or the \
                 64-byte seed followed by its public key"
            ),
            Self::Mismatch => write!(
                f,
                "the last 32 of the 64 bytes are not the public key of the first 32 (the seed)"
            ),
        }
    }
}

impl SigningKey {
    /// A new key pair from the system CSPRNG: any 32 bytes are a seed.
    pub fn generate() -> Self {
        let mut seed = [0u8; ED25519_KEY_LEN];
        SystemRandom::new()
            .fill(&mut seed)
            .expect("the system random number generator failed");
        Self::from_seed(&seed)
    }

    fn from_seed(seed: &[u8]) -> Self {
        let pair = Ed25519KeyPair::from_seed_unchecked(seed).expect("a 32-byte seed");
        Self {
            seed: seed.to_vec(),
            public: pair.public_key().as_ref().to_vec(),
        }
    }

    /// A `whsk_` key in either form implementations use: base64 of the
    /// 32-byte seed (what this daemon exports, Python's `cryptography`,
    /// PyNaCl, Go's `NewKeyFromSeed`) or of the 64 bytes seed ‖ public key
    /// (libsodium, Go's `ed25519.PrivateKey`), whose halves must agree.
    pub fn parse(text: &str) -> Result<Self, BadSigningKey> {
        let b64 = text
            .trim()
            .strip_prefix(PRIVATE_KEY_PREFIX)
            .ok_or(BadSigningKey::Prefix)?;
        let bytes = B64.decode(b64).map_err(|_| BadSigningKey::Base64)?;
        match bytes.len() {
            ED25519_KEY_LEN => Ok(Self::from_seed(&bytes)),
            64 => {
                let (seed, public) = bytes.split_at(ED25519_KEY_LEN);
                Ed25519KeyPair::from_seed_and_public_key(seed, public)
                    .map_err(|_| BadSigningKey::Mismatch)?;
                Ok(Self {
                    seed: seed.to_vec(),
                    public: public.to_vec(),
                })
            }
            n => Err(BadSigningKey::Length(n)),
        }
    }

    /// `whsk_` + base64 of the 32-byte seed: the one form exported.
    pub fn private_text(&self) -> String {
        format!("{PRIVATE_KEY_PREFIX}{}", B64.encode(&self.seed))
    }

    pub fn public_text(&self) -> String {
        public_key_text(&self.public)
    }
}

/// `whpk_` + base64 of the 32-byte public key.
pub fn public_key_text(public: &[u8]) -> String {
    format!("{PUBLIC_KEY_PREFIX}{}", B64.encode(public))
}

/// The ed25519 key pairs in use, built once per key rather than once per
/// attempt: building one (ring derives and checks the public point) took
/// ~41 µs, as long as a `v1a` signature itself (~47 µs over a 300-byte
/// body; a `v1,` HMAC: ~1 µs), measured with ring 0.17 in release on the
/// shared 2-core test machine. Keyed by the seed, cleared at
/// [`KeyPairCache::MAX`] pairs, as [`KeyCache`] is.
#[derive(Default)]
pub struct KeyPairCache(Mutex<HashMap<Vec<u8>, Arc<Ed25519KeyPair>>>);

impl KeyPairCache {
    pub const MAX: usize = 10_000;

    /// None: a stored pair whose halves disagree (the table's constraints
    /// cannot tell); it does not sign.
    pub fn get(&self, seed: &[u8], public: &[u8]) -> Option<Arc<Ed25519KeyPair>> {
        let mut pairs = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = pairs.get(seed) {
            return Some(p.clone());
        }
        let pair = Arc::new(Ed25519KeyPair::from_seed_and_public_key(seed, public).ok()?);
        if pairs.len() >= Self::MAX {
            pairs.clear();
        }
        pairs.insert(seed.to_vec(), pair.clone());
        Some(pair)
    }
}

/// Appends one `v1a,<base64>` per key pair to `out` (space separated from
/// what it holds): the `webhook-signature` entries of the asymmetric scheme.
pub fn asymmetric_signature<'a>(
    out: &mut String,
    pairs: impl IntoIterator<Item = &'a Ed25519KeyPair>,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) {
    let mut pairs = pairs.into_iter().peekable();
    if pairs.peek().is_none() {
        return;
    }
    // ed25519 hashes its message twice: it needs it whole, not streamed.
    let mut msg = Vec::with_capacity(msg_id.len() + 24 + body.len());
    msg.extend_from_slice(format!("{msg_id}.{timestamp}.").as_bytes());
    msg.extend_from_slice(body);
    for p in pairs {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str("v1a,");
        out.push_str(&B64.encode(p.sign(&msg).as_ref()));
    }
}

/// Verifies a `webhook-signature` header's `v1a,` entries against one
/// `whpk_` public key (the demo receiver and tests; receivers use the
/// snippets in docs/receiving.md).
pub fn verify_asymmetric(
    public_key: &str,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
    header: &str,
) -> bool {
    let Some(public) = public_key
        .strip_prefix(PUBLIC_KEY_PREFIX)
        .and_then(|b| B64.decode(b).ok())
    else {
        return false;
    };
    let key = UnparsedPublicKey::new(&ED25519, public);
    let mut msg = format!("{msg_id}.{timestamp}.").into_bytes();
    msg.extend_from_slice(body);
    header.split(' ').any(|sig| {
        sig.strip_prefix("v1a,")
            .and_then(|b| B64.decode(b).ok())
            .is_some_and(|s| key.verify(&msg, &s).is_ok())
    })
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

    // Ed25519 vectors computed with Python's `cryptography` (OpenSSL's
    // ed25519, not ring; commands in tests/signature_vectors.sh), over the
    // same id, timestamp and body. The seeds are RFC 8032's test 1 and 2.
    const WHSK_1: &str = "whsk_nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=";
    const WHSK_1_64: &str = "whsk_nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2DXWpgBgrEKt9VL/tPJZAc6DuFy89qmIyWvAhpo9wdRGg==";
    const WHPK_1: &str = "whpk_11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";
    const V1A_1: &str =
        "v1a,8pXLc8O2UAyIoK+l+Z9A/MheFer9SX6NatN0pxONR549TL/ue7IPvxZ45fKIS70QhhYPn9Ksjl0QFnsMHlYKDw==";
    const WHSK_2: &str = "whsk_TM0Imyj/ltqdtsNG7BFOD1uKMZ81q6Yk2oz27U+4pvs=";
    const WHPK_2: &str = "whpk_PUAXw+hDiVqStwqnTRt+vJyYLM8uxJaMwM1V8Sr0Zgw=";
    const V1A_2: &str =
        "v1a,6AzPJuCLtPOtlAIHqqQ8mPBQkTP1lpVV53P8JdXkCIY7/XfeJx7S1VnOSafjoOGeI0Cp/YGXoP3oz18RjnWACA==";

    #[test]
    fn v1a_matches_python_cryptography() {
        let cache = KeyPairCache::default();
        let k1 = SigningKey::parse(WHSK_1).unwrap();
        let k2 = SigningKey::parse(WHSK_2).unwrap();
        assert_eq!(k1.public_text(), WHPK_1);
        assert_eq!(k2.public_text(), WHPK_2);
        let (p1, p2) = (
            cache.get(&k1.seed, &k1.public).unwrap(),
            cache.get(&k2.seed, &k2.public).unwrap(),
        );
        assert!(
            Arc::ptr_eq(&p1, &cache.get(&k1.seed, &k1.public).unwrap()),
            "built once"
        );
        let mut one = String::new();
        asymmetric_signature(&mut one, [&*p1], MSG_ID, TS, BODY.as_bytes());
        assert_eq!(one, V1A_1);
        // Beside the HMAC entries, and two during a key rotation.
        let w = SecretKeys::new(WHSEC);
        let mut both = standard_signature([&w], MSG_ID, TS, BODY.as_bytes());
        asymmetric_signature(&mut both, [&*p2, &*p1], MSG_ID, TS, BODY.as_bytes());
        assert_eq!(both, format!("{STANDARD_WHSEC} {V1A_2} {V1A_1}"));
        for pk in [WHPK_1, WHPK_2] {
            assert!(verify_asymmetric(pk, MSG_ID, TS, BODY.as_bytes(), &both));
            assert!(!verify_asymmetric(
                pk,
                MSG_ID,
                TS + 1,
                BODY.as_bytes(),
                &both
            ));
            assert!(!verify_asymmetric(pk, MSG_ID, TS, b"tampered", &both));
        }
        assert!(!verify_asymmetric(
            WHPK_1,
            MSG_ID,
            TS,
            BODY.as_bytes(),
            V1A_2
        ));
        // An HMAC entry is no ed25519 signature.
        assert!(!verify_asymmetric(
            WHPK_1,
            MSG_ID,
            TS,
            BODY.as_bytes(),
            STANDARD_WHSEC
        ));
    }

    #[test]
    fn whsk_imports_the_seed_and_the_seed_with_its_public_key_and_exports_the_seed() {
        let a = SigningKey::parse(WHSK_1).unwrap();
        let b = SigningKey::parse(WHSK_1_64).unwrap();
        assert_eq!(a, b);
        assert_eq!(b.private_text(), WHSK_1, "exported as the 32-byte seed");
        assert_eq!(b.seed.len(), 32);
        // The 64-byte form with another key's public half is refused.
        let mut wrong = B64.decode(&WHSK_1_64[5..]).unwrap();
        wrong[32..].copy_from_slice(&SigningKey::parse(WHSK_2).unwrap().public);
        let wrong = format!("whsk_{}", B64.encode(wrong));
        assert_eq!(SigningKey::parse(&wrong), Err(BadSigningKey::Mismatch));
        assert_eq!(SigningKey::parse(WHPK_1), Err(BadSigningKey::Prefix));
        assert_eq!(
            SigningKey::parse("whsk_AAAA"),
            Err(BadSigningKey::Length(3))
        );
        assert_eq!(SigningKey::parse("whsk_***"), Err(BadSigningKey::Base64));
        assert!(
            !format!("{a:?}").contains(&WHSK_1[5..]),
            "Debug hides the seed"
        );
    }

    #[test]
    fn generated_key_pairs_are_distinct_and_sign() {
        let (a, b) = (SigningKey::generate(), SigningKey::generate());
        assert_ne!(a.seed, b.seed);
        assert_eq!(SigningKey::parse(&a.private_text()).unwrap(), a);
        let pair = KeyPairCache::default().get(&a.seed, &a.public).unwrap();
        let mut sig = String::new();
        asymmetric_signature(&mut sig, [&*pair], MSG_ID, TS, BODY.as_bytes());
        assert!(verify_asymmetric(
            &a.public_text(),
            MSG_ID,
            TS,
            BODY.as_bytes(),
            &sig
        ));
        assert!(!verify_asymmetric(
            &b.public_text(),
            MSG_ID,
            TS,
            BODY.as_bytes(),
            &sig
        ));
    }

    const LEGACY_PLAIN: &str =
        "sha256=3914ca9f99bf804c04d0ee5acf9e57bebe48bd18951a46d5a6a2e1c94c63dc77";
    const STANDARD_PLAIN: &str = "v1,uFbFoZfJLmwOYlcE+IrZDIdyicwKOaWnKMi3ElkytaQ=";
    const STANDARD_WHSEC: &str = "v1,+pszL27VThQR8us9VpseIZ7Yz9HfUcWlwPfiKitmhxc=";
}
