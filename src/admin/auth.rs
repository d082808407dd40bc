//! Who is calling: an `Authorization: Bearer` token turned into a
//! [`Principal`] (what that caller may do is `super::access`'s to decide).
//!
//! Two kinds of token:
//! - operator tokens, configured as SHA-256 hashes (`admin.operator_token_sha256`),
//!   compared in constant time;
//! - Plausible API keys: looked up in Plausible's own `api_keys` by
//!   `key_hash` = lowercase hex SHA-256(SECRET_KEY_BASE ++ key), exactly as
//!   Plausible stores them. The key acts for its user; a key bound to a team
//!   (`api_keys.team_id`, newer Plausible) is bound to it here too. Deleting
//!   a key in Plausible revokes it here at once (no cache). Scopes
//!   (`api_keys.scopes`) are not read: Plausible gives every key
//!   `stats:read:*` and `sites:read:*` implicitly, and no Plausible scope
//!   covers webhooks; what a key may do here is its user's role.

use ring::digest::{digest, SHA256};
use subtle::ConstantTimeEq;

use super::access::Principal;
use crate::config::{AdminConfig, Redacted};

/// Why a request was not authenticated (each is a 401).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    Missing,
    Malformed,
    Unknown,
}

impl AuthError {
    pub fn message(self) -> &'static str {
        match self {
            AuthError::Missing => {
                "send `Authorization: Bearer <token>` with an operator token or a Plausible API key"
            }
            AuthError::Malformed => "the Authorization header must be `Bearer <token>`",
            AuthError::Unknown => {
                "the token is not an operator token and not a current Plausible API key"
            }
        }
    }
}

pub struct Authenticator {
    operator_hashes: Vec<[u8; 32]>,
    secret_key_base: Option<Redacted>,
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&SHA256);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// A Plausible API key as its row has it.
struct ApiKey {
    id: i64,
    user_id: i64,
    /// The key's team, when it is bound to one (newer Plausible).
    team_id: Option<i64>,
}

/// The current key `key` in Plausible's `api_keys` (by its hash), if any.
async fn lookup(
    pool: &deadpool_postgres::Pool,
    secret_key_base: &str,
    key: &str,
) -> anyhow::Result<Option<ApiKey>> {
    let db = pool
        .get()
        .await
        .map_err(|e| anyhow::anyhow!("connecting to check an API key: {e}"))?;
    // `team_id` exists only in newer Plausible schemas: read it through
    // to_jsonb so the query works on both.
    let row = db
        .query_opt(
            "SELECT k.id, k.user_id, (to_jsonb(k) ->> 'team_id')::bigint
             FROM api_keys k WHERE k.key_hash = $1",
            &[&plausible_key_hash(secret_key_base, key)],
        )
        .await
        .map_err(|e| anyhow::anyhow!("looking up the API key in Plausible's api_keys: {e}"))?;
    Ok(row.map(|r| ApiKey {
        id: r.get(0),
        user_id: r.get(1),
        team_id: r.get(2),
    }))
}

/// Plausible's `api_keys.key_hash` of `key`.
pub fn plausible_key_hash(secret_key_base: &str, key: &str) -> String {
    hex::encode(sha256(&[secret_key_base.as_bytes(), key.as_bytes()]))
}

/// What an operator puts in `admin.operator_token_sha256` for `token`.
pub fn operator_token_hash(token: &str) -> String {
    hex::encode(digest(&SHA256, token.as_bytes()))
}

/// The token of an `Authorization` value of the `Bearer` scheme, whose
/// name is case-insensitive (RFC 9110 §11.1).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

impl Authenticator {
    pub fn new(cfg: &AdminConfig) -> Authenticator {
        let operator_hashes = cfg
            .operator_token_sha256
            .iter()
            // Validated by the config: 64 lowercase hex characters.
            .filter_map(|h| {
                let mut out = [0u8; 32];
                hex::decode_to_slice(h, &mut out).ok().map(|()| out)
            })
            .collect();
        Authenticator {
            operator_hashes,
            secret_key_base: cfg.secret_key_base.clone(),
        }
    }

    /// True when neither kind of token can be accepted (the API then refuses everything).
    pub fn is_closed(&self) -> bool {
        self.operator_hashes.is_empty() && self.secret_key_base.is_none()
    }

    /// Authenticates an `Authorization` header value; the database is asked
    /// (through `pool`) only for a Plausible API key.
    pub async fn authenticate(
        &self,
        pool: &deadpool_postgres::Pool,
        authorization: Option<&str>,
    ) -> anyhow::Result<Result<Principal, AuthError>> {
        let Some(value) = authorization else {
            return Ok(Err(AuthError::Missing));
        };
        let Some(token) = bearer(value) else {
            return Ok(Err(AuthError::Malformed));
        };
        // Compared as hashes, in constant time, against every configured one.
        let presented = sha256(&[token.as_bytes()]);
        let mut operator = subtle::Choice::from(0u8);
        for h in &self.operator_hashes {
            operator |= presented.ct_eq(h);
        }
        if bool::from(operator) {
            return Ok(Ok(Principal::Operator));
        }
        let Some(skb) = &self.secret_key_base else {
            return Ok(Err(AuthError::Unknown));
        };
        Ok(match lookup(pool, &skb.0, token).await? {
            Some(k) => Ok(Principal::api_key(k.user_id, k.team_id)),
            None => Err(AuthError::Unknown),
        })
    }

    /// The `api_keys.id` of a Plausible API key (for the web page's
    /// sign-in), None when it is no current key or keys are off.
    pub async fn api_key_id(
        &self,
        pool: &deadpool_postgres::Pool,
        key: &str,
    ) -> anyhow::Result<Option<i64>> {
        let (Some(skb), key) = (&self.secret_key_base, key.trim()) else {
            return Ok(None);
        };
        if key.is_empty() {
            return Ok(None);
        }
        Ok(lookup(pool, &skb.0, key).await?.map(|k| k.id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_match_sha256sum() {
        // printf %s 'skbKEY' | sha256sum ; printf %s 'tok' | sha256sum
        assert_eq!(
            plausible_key_hash("skb", "KEY"),
            "a699290337a04d8562cf5aea1a52b8be109aed3aafac0a1257410cf61a7d93d8"
        );
        assert_eq!(
            operator_token_hash("tok"),
            "1a7674eb4ee78df7e1ac439a93c3fa8e3c945784d4dec9fd8e3011738b2f1d62"
        );
    }

    #[test]
    fn the_scheme_is_read_in_any_case() {
        for h in ["Bearer tok", "bearer tok", "BEARER tok", "bEaReR   tok "] {
            assert_eq!(bearer(h), Some("tok"), "{h}");
        }
        for h in ["Basic tok", "Bearer", "Bearer ", "Bearertok", "tok"] {
            assert_eq!(bearer(h), None, "{h}");
        }
    }
}
