//! A webhook's ed25519 key pair (`v1a` signatures, sql/0017): rotated like
//! the secret (the old key signs beside the new one for a grace period),
//! and its private key exported only on an owner's or admin's explicit
//! request. The public key is in every view of the webhook.

use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use super::webhook_view::manageable;
use super::webhooks::{grace_secs, DEFAULT_ROTATION_GRACE_SECS};
use crate::admin::access::{self, Access, Principal};
use crate::admin::core::Admin;
use crate::admin::error::{db, OpError, OpResult};
use crate::admin::inputs::{given, RotateKey};
use crate::admin::validate::{self, Checks};
use crate::delivery::signing::{public_key_text, SigningKey};

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KeyRotated {
    pub webhook_id: Uuid,
    /// The new public key (whpk_…): give it to the receiver.
    pub public_key: String,
    /// The old public key, while it still signs (a second `v1a,` signature).
    pub previous_public_key: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub previous_signing_key_expires_at: Option<OffsetDateTime>,
    /// How deliveries are signed now: the key signs only with both.
    pub signature: String,
}

/// A webhook's private key, as an owner or admin asked for it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ExportedKey {
    pub webhook_id: Uuid,
    /// whsk_ + base64 of the 32-byte ed25519 seed (RFC 8032's private key).
    pub signing_key: String,
    pub public_key: String,
}

impl Admin {
    /// A new key pair (given or generated); the current one keeps signing
    /// beside it for the grace period (0: at once only the new one).
    pub async fn rotate_signing_key(
        &self,
        who: &Principal,
        id: Uuid,
        r: RotateKey,
    ) -> OpResult<KeyRotated> {
        let mut c = Checks::default();
        let grace = match &r.grace_secs {
            None => Some(DEFAULT_ROTATION_GRACE_SECS),
            Some(g) => c.check(g.seconds("grace_secs").and_then(grace_secs)),
        };
        let key = match given(&r.signing_key) {
            Some(k) => c.check(validate::signing_key(k)),
            None => Some(SigningKey::generate()),
        };
        c.done()?;
        let (grace, key) = (grace.expect("checked"), key.expect("checked"));
        let db_ = self.db().await?;
        manageable(&db_, who, id).await?;
        // The old pair keeps signing only if there was one.
        let row = db(
            db_.query_one(
                "UPDATE webhooks SET
                    previous_signing_key = CASE WHEN $4::float8 > 0 THEN signing_key END,
                    previous_signing_public_key = CASE WHEN $4::float8 > 0 THEN signing_public_key END,
                    previous_signing_key_expires_at = CASE WHEN $4::float8 > 0 AND signing_key IS NOT NULL
                        THEN now() + make_interval(secs => $4::float8) END,
                    signing_key = $2,
                    signing_public_key = $3
                 WHERE id = $1
                 RETURNING previous_signing_public_key, previous_signing_key_expires_at, signature",
                &[&id, &key.seed, &key.public, &(grace as f64)],
            )
            .await,
            "rotating the signing key",
        )?;
        let previous: Option<Vec<u8>> = row.get(0);
        Ok(KeyRotated {
            webhook_id: id,
            public_key: key.public_text(),
            previous_public_key: previous.map(|k| public_key_text(&k)),
            previous_signing_key_expires_at: row.get(1),
            signature: row.get(2),
        })
    }

    /// The webhook's private key (whsk_, the 32-byte seed), for an owner or
    /// admin of its site (or the operator): to move the key elsewhere. Never
    /// shown otherwise.
    pub async fn export_signing_key(&self, who: &Principal, id: Uuid) -> OpResult<ExportedKey> {
        let db_ = self.db().await?;
        access::webhook(&db_, who, id, Access::Administer).await?;
        let row = db(
            db_.query_one(
                "SELECT signing_key, signing_public_key FROM webhooks WHERE id = $1",
                &[&id],
            )
            .await,
            "reading the signing key",
        )?;
        let (Some(seed), Some(public)) = (
            row.get::<_, Option<Vec<u8>>>(0),
            row.get::<_, Option<Vec<u8>>>(1),
        ) else {
            return Err(OpError::Conflict(format!(
                "webhook {id} has no ed25519 key: set its signature to both, or \
                 `rotate-key` it, to make one"
            )));
        };
        let key = SigningKey { seed, public };
        Ok(ExportedKey {
            webhook_id: id,
            signing_key: key.private_text(),
            public_key: key.public_text(),
        })
    }
}
