//! A browser signed in to Plausible: its session cookie, verified as
//! Plausible's own stack verifies it, and the `user_sessions` row it names.
//! The daemon only reads the cookie; it never writes, refreshes or deletes
//! Plausible's cookie or session rows.
//!
//! As found in Plausible CE ≥ 2.1.3 (`lib/plausible_web/endpoint.ex`,
//! `user_auth.ex`, `auth/user_session.ex`) and Plug (`plug/session/cookie.ex`,
//! plug_crypto's `MessageVerifier` and `KeyGenerator`):
//!
//! 1. The cookie is `_plausible_key`, signed and not encrypted, with the
//!    endpoint's signing salt; Plug refuses a `SECRET_KEY_BASE` under 64
//!    bytes, and so does this.
//! 2. The key is PBKDF2-HMAC-SHA256(SECRET_KEY_BASE, salt, 1000 iterations,
//!    32 bytes).
//! 3. The value is `SFMyNTY.<payload>.<mac>` (`SFMyNTY` is base64url of
//!    `HS256`), parts base64url without padding (padding tolerated, as Plug
//!    tolerates it); the MAC is HMAC-SHA256 of the text `SFMyNTY.<payload>`
//!    as received, compared in constant time.
//! 4. The payload is Erlang's external term format (`term_to_binary`,
//!    never compressed by Plug) of a map with binary keys whose
//!    `"user_token"` is 32 raw bytes; anything else is refused.
//! 5. The token names a `user_sessions` row (`token` bytea, in clear) whose
//!    `timeout_at` (naive UTC) is ahead: signed out, revoked by a password
//!    change or reset, or timed out in Plausible, the page is lost at once.
//!
//! Cookie name and salt are configurable (Plausible's values are the
//! defaults; v2.1.0–2.1.2 named it `_plausible_prod`). Several cookies of
//! the name are each tried (a browser upgraded from an older release may
//! send a stale one beside the current one): any that verifies and names a
//! live session signs the user in.
//!
//! The payload is decoded (eetf) only after its MAC verified: only a holder
//! of `SECRET_KEY_BASE`, Plausible, can make one.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::{hmac, pbkdf2};

pub use crate::config::{
    PLAUSIBLE_SESSION_COOKIE as DEFAULT_COOKIE_NAME, PLAUSIBLE_SIGNING_SALT as DEFAULT_SIGNING_SALT,
};
/// Plug's key derivation: PBKDF2 iterations and key length.
const KEY_ITERATIONS: u32 = 1000;
const KEY_LEN: usize = 32;
/// The shortest `SECRET_KEY_BASE` Plug's cookie store accepts.
pub const MIN_SECRET_KEY_BASE: usize = 64;
/// A session token's length (`:crypto.strong_rand_bytes(32)`).
pub const TOKEN_LEN: usize = 32;
/// Browsers keep a cookie to about 4 KiB; a longer value is not Plausible's.
const MAX_COOKIE_LEN: usize = 4096;
/// `base64url("HS256")`: the only protected header Plausible's sessions use.
const HS256: &str = "SFMyNTY";

/// A session token from a verified cookie.
pub type Token = [u8; TOKEN_LEN];

/// Why a cookie value was not taken (each signs nobody in; the reason is for
/// logs and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Not `SFMyNTY.<payload>.<mac>`, or over 4 KiB.
    Format,
    /// The MAC does not match (tampered, another SECRET_KEY_BASE or salt).
    Signature,
    /// Signed, but not a map with binary keys holding a 32-byte `"user_token"`.
    Shape,
}

/// Verifies Plausible's session cookies.
pub struct CookieVerifier {
    name: String,
    key: hmac::Key,
}

impl std::fmt::Debug for CookieVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CookieVerifier")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl CookieVerifier {
    /// The verifier for cookie `name` signed with `salt` under
    /// `secret_key_base`, which must be at least 64 bytes (as Plug requires).
    pub fn new(secret_key_base: &str, name: &str, salt: &str) -> Result<Self, String> {
        if secret_key_base.len() < MIN_SECRET_KEY_BASE {
            return Err(format!(
                "SECRET_KEY_BASE is {} bytes; Plausible's session cookies need it at least {MIN_SECRET_KEY_BASE} bytes (Plug refuses shorter ones)",
                secret_key_base.len()
            ));
        }
        let mut key = [0u8; KEY_LEN];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            std::num::NonZeroU32::new(KEY_ITERATIONS).expect("non-zero"),
            salt.as_bytes(),
            secret_key_base.as_bytes(),
            &mut key,
        );
        Ok(CookieVerifier {
            name: name.to_string(),
            key: hmac::Key::new(hmac::HMAC_SHA256, &key),
        })
    }

    /// The cookie's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The token of every cookie of the name in `cookie_headers` that
    /// verifies, in the order sent.
    pub fn tokens<'a>(&self, cookie_headers: impl IntoIterator<Item = &'a str>) -> Vec<Token> {
        cookie_headers
            .into_iter()
            .flat_map(cookie::Cookie::split_parse)
            .filter_map(Result::ok)
            .filter(|c| c.name() == self.name)
            .filter_map(|c| self.verify(c.value()).ok())
            .collect()
    }

    /// The token of one cookie value, or why it is refused.
    pub fn verify(&self, value: &str) -> Result<Token, Refused> {
        if value.len() > MAX_COOKIE_LEN {
            return Err(Refused::Format);
        }
        let mut parts = value.split('.');
        let (Some(protected), Some(payload), Some(mac), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Refused::Format);
        };
        if protected != HS256 {
            return Err(Refused::Format);
        }
        let mac = decode(mac).ok_or(Refused::Format)?;
        let signed = &value[..protected.len() + 1 + payload.len()];
        hmac::verify(&self.key, signed.as_bytes(), &mac).map_err(|_| Refused::Signature)?;
        let payload = decode(payload).ok_or(Refused::Shape)?;
        user_token(&payload).ok_or(Refused::Shape)
    }
}

/// base64url, with or without padding (Plug writes none, reads either).
fn decode(part: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(part.trim_end_matches('=')).ok()
}

/// `"user_token"` of a session term: a map whose keys are all binaries, the
/// token 32 bytes. Compressed terms are refused: Plug never writes them.
fn user_token(term: &[u8]) -> Option<Token> {
    const VERSION: u8 = 131;
    const MAP_EXT: u8 = 116;
    if term.first() != Some(&VERSION) || term.get(1) != Some(&MAP_EXT) {
        return None;
    }
    let eetf::Term::Map(map) = eetf::Term::decode(term).ok()? else {
        return None;
    };
    let mut token = None;
    for (k, v) in &map.map {
        let eetf::Term::Binary(k) = k else {
            return None;
        };
        if k.bytes == b"user_token" {
            let eetf::Term::Binary(v) = v else {
                return None;
            };
            token = Some(Token::try_from(v.bytes.as_slice()).ok()?);
        }
    }
    token
}

/// A browser's Plausible session: the user, their email, and the token
/// that named the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedIn {
    pub user_id: i64,
    pub email: String,
    pub token: Token,
}

/// The session of the first of `tokens` Plausible still holds (`timeout_at`
/// ahead of now, in UTC as Plausible stores it), its user's existence
/// checked as Plausible's session query joins it.
pub async fn signed_in(
    db: &tokio_postgres::Client,
    tokens: &[Token],
) -> Result<Option<SignedIn>, tokio_postgres::Error> {
    if tokens.is_empty() {
        return Ok(None);
    }
    let list: Vec<&[u8]> = tokens.iter().map(|t| t.as_slice()).collect();
    let row = db
        .query_opt(
            "SELECT us.user_id, u.email::text, us.token FROM user_sessions us JOIN users u ON u.id = us.user_id
             WHERE us.token = ANY($1) AND us.timeout_at > (now() AT TIME ZONE 'utc')
             ORDER BY us.timeout_at DESC LIMIT 1",
            &[&list],
        )
        .await?;
    Ok(row.and_then(|r| {
        Some(SignedIn {
            user_id: r.get(0),
            email: r.get(1),
            token: Token::try_from(r.get::<_, &[u8]>(2)).ok()?,
        })
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SKB: &str = "test-secret-key-base-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOP";
    /// Made by Erlang's own `term_to_binary` and `crypto` (and accepted by
    /// Plug 1.16.1's cookie store) for SKB, the default salt and the token
    /// 0x00..0x1f (docs/web.md shows the `erl` line).
    const MINTED: &str = "SFMyNTY.g3QAAAACbQAAAA5saXZlX3NvY2tldF9pZG0AAAA6dXNlcl9zZXNzaW9uczpBQUVDQXdRRkJnY0lDUW9MREEwT0R4QVJFaE1VRlJZWEdCa2FHeHdkSGg4PW0AAAAKdXNlcl90b2tlbm0AAAAgAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8.i0vFi_RGjUseKx8PtPxTTrDghVu2znPtlrgs2_9G3Vc";

    fn verifier() -> CookieVerifier {
        CookieVerifier::new(SKB, DEFAULT_COOKIE_NAME, DEFAULT_SIGNING_SALT).unwrap()
    }

    fn counting() -> Token {
        std::array::from_fn(|i| i as u8)
    }

    #[test]
    fn a_cookie_erlang_signed_verifies_to_its_token() {
        assert_eq!(verifier().verify(MINTED), Ok(counting()));
        // Padding, as Plug tolerates it.
        assert_eq!(verifier().verify(&format!("{MINTED}=")), Ok(counting()));
    }

    #[test]
    fn tampered_wrong_salt_or_wrong_key_is_refused() {
        let mut t = MINTED.as_bytes().to_vec();
        let i = MINTED.find('.').unwrap() + 10;
        t[i] = if t[i] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(t).unwrap();
        assert_eq!(verifier().verify(&tampered), Err(Refused::Signature));
        let salt = CookieVerifier::new(SKB, DEFAULT_COOKIE_NAME, "3IL0ob4k").unwrap();
        assert_eq!(salt.verify(MINTED), Err(Refused::Signature));
        let other = CookieVerifier::new(&SKB.replace('0', "1"), "x", DEFAULT_SIGNING_SALT).unwrap();
        assert_eq!(other.verify(MINTED), Err(Refused::Signature));
        for bad in [
            "",
            "x",
            "SFMyNTY.a",
            "SFMyNTY.a.b.c",
            "SFMzODQ.a.b",
            &"a".repeat(5000),
        ] {
            assert_eq!(verifier().verify(bad), Err(Refused::Format), "{bad}");
        }
        assert!(CookieVerifier::new("short", "x", "y").is_err());
    }

    /// Signs `payload` as Plug would, for shapes Erlang is not needed to make.
    fn signed(payload: &[u8]) -> String {
        let mut key = [0u8; KEY_LEN];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            std::num::NonZeroU32::new(KEY_ITERATIONS).unwrap(),
            DEFAULT_SIGNING_SALT.as_bytes(),
            SKB.as_bytes(),
            &mut key,
        );
        let text = format!("{HS256}.{}", URL_SAFE_NO_PAD.encode(payload));
        let mac = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &key), text.as_bytes());
        format!("{text}.{}", URL_SAFE_NO_PAD.encode(mac.as_ref()))
    }

    fn term(t: eetf::Term) -> Vec<u8> {
        let mut out = Vec::new();
        t.encode(&mut out).unwrap();
        out
    }

    fn bin(b: &[u8]) -> eetf::Term {
        eetf::Term::Binary(eetf::Binary::from(b.to_vec()))
    }

    fn map(entries: Vec<(eetf::Term, eetf::Term)>) -> eetf::Term {
        eetf::Term::Map(eetf::Map::from(
            entries
                .into_iter()
                .collect::<std::collections::HashMap<_, _>>(),
        ))
    }

    #[test]
    fn a_signed_term_not_exactly_a_session_is_refused() {
        let v = verifier();
        let ok = map(vec![
            (bin(b"user_token"), bin(&counting())),
            (bin(b"x"), eetf::Term::Atom(eetf::Atom::from("nil"))),
        ]);
        assert_eq!(v.verify(&signed(&term(ok))), Ok(counting()));
        for (why, t) in [
            (
                "a short token",
                map(vec![(bin(b"user_token"), bin(&[1; 31]))]),
            ),
            (
                "no token",
                map(vec![(
                    bin(b"current_user_id"),
                    eetf::Term::FixInteger(eetf::FixInteger::from(7)),
                )]),
            ),
            (
                "an atom key",
                map(vec![(
                    eetf::Term::Atom(eetf::Atom::from("user_token")),
                    bin(&counting()),
                )]),
            ),
            (
                "a token that is a list",
                map(vec![(
                    bin(b"user_token"),
                    eetf::Term::List(eetf::List::nil()),
                )]),
            ),
            ("not a map", bin(&counting())),
        ] {
            assert_eq!(v.verify(&signed(&term(t))), Err(Refused::Shape), "{why}");
        }
        // Signed junk, and a compressed term (Plug never writes one).
        assert_eq!(v.verify(&signed(b"\x83t\xff\xff")), Err(Refused::Shape));
        let mut compressed = vec![131, 80];
        compressed.extend_from_slice(&[0, 0, 0, 1, 0]);
        assert_eq!(v.verify(&signed(&compressed)), Err(Refused::Shape));
    }

    #[test]
    fn every_cookie_of_the_name_is_tried() {
        let v = verifier();
        let headers = [
            "other=1; _plausible_key=SFMyNTY.junk.junk",
            &*format!("_plausible_key={MINTED}; _plausible_prod=x"),
        ];
        assert_eq!(v.tokens(headers), vec![counting()]);
        assert!(v
            .tokens(
                ["_plausible_prod=".to_string() + MINTED]
                    .iter()
                    .map(String::as_str)
            )
            .is_empty());
    }
}
