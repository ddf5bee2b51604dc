//! Token signing keys; the private halves are sealed (see `auth::crypto`).

use super::db::{Conn, Row};
use super::{Store, StoreResult};
use crate::clock::Millis;

/// A signing key row; `private_key` is sealed (see `auth::crypto`).
#[derive(Debug, Clone)]
pub struct SigningKeyRow {
    pub kid: String,
    pub algorithm: String,
    pub private_key: Vec<u8>,
    pub public_key: Vec<u8>,
    pub created_at: Millis,
}

const KEY_COLS: &str = "kid, algorithm, private_key, public_key, created_at";

fn key_row(r: &Row<'_>) -> StoreResult<SigningKeyRow> {
    Ok(SigningKeyRow {
        kid: r.get(0)?,
        algorithm: r.get(1)?,
        private_key: r.get(2)?,
        public_key: r.get(3)?,
        created_at: r.get(4)?,
    })
}

async fn insert_key(c: &mut Conn<'_>, key: &SigningKeyRow) -> StoreResult<()> {
    c.execute(
        &format!("INSERT INTO signing_keys ({KEY_COLS}) VALUES ($1, $2, $3, $4, $5)"),
        &[
            &key.kid,
            &key.algorithm,
            &key.private_key,
            &key.public_key,
            &key.created_at,
        ],
    )
    .await?;
    Ok(())
}

impl Store {
    /// The newest unretired signing key for `algorithm`.
    pub async fn active_signing_key(&self, algorithm: &str) -> StoreResult<Option<SigningKeyRow>> {
        let algorithm = algorithm.to_owned();
        self.db
            .run(move |c| {
                Box::pin(async move {
                    c.query_opt(
                        &format!(
                            "SELECT {KEY_COLS} FROM signing_keys WHERE algorithm = $1 AND retired_at IS NULL
                             ORDER BY created_at DESC, kid LIMIT 1"
                        ),
                        &[&algorithm],
                        key_row,
                    )
                    .await
                })
            })
            .await
    }

    pub async fn insert_signing_key(&self, key: SigningKeyRow) -> StoreResult<()> {
        self.db
            .run(move |c| Box::pin(async move { insert_key(c, &key).await }))
            .await
    }

    /// Keys of `algorithm` retired after `since`: they verify what they
    /// signed before `keys rotate` replaced them.
    pub async fn retired_signing_keys(
        &self,
        algorithm: &str,
        since: Millis,
    ) -> StoreResult<Vec<SigningKeyRow>> {
        let algorithm = algorithm.to_owned();
        self.db
            .run(move |c| {
                Box::pin(async move {
                    c.query(
                        &format!(
                            "SELECT {KEY_COLS} FROM signing_keys
                             WHERE algorithm = $1 AND retired_at IS NOT NULL AND retired_at > $2
                             ORDER BY created_at DESC, kid"
                        ),
                        &[&algorithm, &since],
                        key_row,
                    )
                    .await
                })
            })
            .await
    }

    /// Makes `new` the current keys: inserts them and retires every other
    /// key of their algorithms, in one transaction. Returns how many retired.
    pub async fn rotate_signing_keys(
        &self,
        new: Vec<SigningKeyRow>,
        now: Millis,
    ) -> StoreResult<u64> {
        self.db
            .transaction(move |c| {
                Box::pin(async move {
                    let mut retired = 0;
                    for key in &new {
                        retired += c
                            .execute(
                                "UPDATE signing_keys SET retired_at = $1
                                 WHERE algorithm = $2 AND retired_at IS NULL",
                                &[&now, &key.algorithm],
                            )
                            .await?;
                        insert_key(c, key).await?;
                    }
                    Ok(retired)
                })
            })
            .await
    }
}
