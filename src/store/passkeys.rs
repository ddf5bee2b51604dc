//! Passkeys (SPEC section 14): each user's WebAuthn credentials, and the
//! ceremonies under way. A ceremony's state is a row, not memory, so that
//! one begun on an instance finishes on another; it is taken (deleted and
//! read in one statement) when it finishes, so it is used once.

use uuid::Uuid;

use super::db::{Chain, Row};
use super::{Audit, Store, StoreError, StoreResult};
use crate::clock::Millis;

/// A passkey as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasskeyRow {
    pub id: Uuid,
    pub user_id: Uuid,
    /// The authenticator's raw credential id.
    pub credential_id: Vec<u8>,
    pub name: String,
    /// webauthn-rs's `Passkey` as JSON: the public key and the sign counter.
    pub credential: String,
    pub created_at: Millis,
    pub last_used_at: Option<Millis>,
}

/// What a ceremony is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Adding a passkey to `user_id`.
    Register,
    /// Signing in with a passkey alone.
    Login,
    /// The second step after a password, of the `mfa_token` whose hash is kept.
    SecondFactor,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Self::Register => "register",
            Self::Login => "login",
            Self::SecondFactor => "mfa",
        }
    }

    fn parse(s: &str) -> StoreResult<Self> {
        match s {
            "register" => Ok(Self::Register),
            "login" => Ok(Self::Login),
            "mfa" => Ok(Self::SecondFactor),
            other => Err(StoreError::Other(anyhow::anyhow!(
                "unknown ceremony purpose {other:?}"
            ))),
        }
    }
}

/// A ceremony under way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ceremony {
    pub purpose: Purpose,
    pub user_id: Option<Uuid>,
    pub mfa_token_hash: Option<Vec<u8>>,
    /// webauthn-rs's state as JSON.
    pub state: String,
    pub expires_at: Millis,
}

const COLS: &str = "id, user_id, credential_id, name, credential, created_at, last_used_at";

fn passkey_row(r: &Row<'_>) -> StoreResult<PasskeyRow> {
    Ok(PasskeyRow {
        id: r.uuid(0)?,
        user_id: r.uuid(1)?,
        credential_id: r.get(2)?,
        name: r.get(3)?,
        credential: r.get(4)?,
        created_at: r.get(5)?,
        last_used_at: r.get(6)?,
    })
}

impl Store {
    /// The user's passkeys, oldest first.
    pub async fn passkeys(&self, user_id: Uuid) -> StoreResult<Vec<PasskeyRow>> {
        self.db
            .read(move |c| {
                Box::pin(async move {
                    c.query(
                        &format!(
                            "SELECT {COLS} FROM passkeys WHERE user_id = $1 ORDER BY created_at, id"
                        ),
                        &[&user_id.to_string()],
                        passkey_row,
                    )
                    .await
                })
            })
            .await
    }

    /// Whether the user has a passkey.
    pub async fn has_passkey(&self, user_id: Uuid) -> StoreResult<bool> {
        self.db
            .read(move |c| {
                Box::pin(async move {
                    Ok(c.query_opt(
                        "SELECT 1 FROM passkeys WHERE user_id = $1 LIMIT 1",
                        &[&user_id.to_string()],
                        |_| Ok(()),
                    )
                    .await?
                    .is_some())
                })
            })
            .await
    }

    /// The passkey with this raw credential id, whoever's it is.
    pub async fn passkey_by_credential(
        &self,
        credential_id: Vec<u8>,
    ) -> StoreResult<Option<PasskeyRow>> {
        self.db
            .read(move |c| {
                Box::pin(async move {
                    c.query_opt(
                        &format!("SELECT {COLS} FROM passkeys WHERE credential_id = $1"),
                        &[&credential_id],
                        passkey_row,
                    )
                    .await
                })
            })
            .await
    }

    /// Stores a new passkey with `audit`, unless its user holds `max`
    /// already (false, recording nothing). [`StoreError::Duplicate`] when its
    /// credential id is stored already (on any account).
    pub async fn add_passkey(
        &self,
        row: PasskeyRow,
        max: usize,
        audit: Audit,
    ) -> StoreResult<bool> {
        let now = row.created_at;
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        self.db
            .unit(Chain::After, now, move |c| {
                Box::pin(async move {
                    let user_id = row.user_id.to_string();
                    // The user's row held, so that two at once count each other.
                    c.query_opt("SELECT id FROM users WHERE id = $1 FOR UPDATE", &[&user_id], |_| Ok(()))
                        .await?;
                    let held = c
                        .query_one(
                            "SELECT count(*) FROM passkeys WHERE user_id = $1",
                            &[&user_id],
                            |r| r.get::<i64>(0),
                        )
                        .await?;
                    if held >= max {
                        return Ok((false, Vec::new()));
                    }
                    c.execute(
                        "INSERT INTO passkeys (id, user_id, credential_id, name, credential, created_at, last_used_at)
                         VALUES ($1, $2, $3, $4, $5, $6, NULL)",
                        &[
                            &row.id.to_string(),
                            &row.user_id.to_string(),
                            &row.credential_id,
                            &row.name,
                            &row.credential,
                            &row.created_at,
                        ],
                    )
                    .await?;
                    Ok((true, audit))
                })
            })
            .await
    }

    /// Removes the user's passkey `id` with `audit`; false (recording
    /// nothing) when the user has no such passkey.
    pub async fn remove_passkey(
        &self,
        user_id: Uuid,
        id: Uuid,
        now: Millis,
        audit: Audit,
    ) -> StoreResult<bool> {
        self.db
            .unit(Chain::After, now, move |c| {
                Box::pin(async move {
                    let removed = c
                        .execute(
                            "DELETE FROM passkeys WHERE id = $1 AND user_id = $2",
                            &[&id.to_string(), &user_id.to_string()],
                        )
                        .await?
                        == 1;
                    Ok((removed, if removed { audit } else { Vec::new() }))
                })
            })
            .await
    }

    /// Records a sign-in with the passkey `id`: its new state (the counter)
    /// and when. False when `previous` is no longer its state: another
    /// sign-in with it got there first.
    pub async fn passkey_used(
        &self,
        id: Uuid,
        previous: String,
        credential: String,
        now: Millis,
    ) -> StoreResult<bool> {
        self.db
            .run(move |c| {
                Box::pin(async move {
                    Ok(c.execute(
                        "UPDATE passkeys SET credential = $1, last_used_at = $2
                         WHERE id = $3 AND credential = $4",
                        &[&credential, &now, &id.to_string(), &previous],
                    )
                    .await?
                        == 1)
                })
            })
            .await
    }

    /// Stores a ceremony under the hash of its id (and drops the expired ones).
    pub async fn create_ceremony(
        &self,
        id_hash: [u8; 32],
        ceremony: Ceremony,
        now: Millis,
    ) -> StoreResult<()> {
        self.db
            .transaction(move |c| {
                Box::pin(async move {
                    c.execute(
                        "DELETE FROM webauthn_challenges WHERE expires_at <= $1",
                        &[&now],
                    )
                    .await?;
                    c.execute(
                        "INSERT INTO webauthn_challenges (id_hash, purpose, user_id, mfa_token_hash, state, created_at, expires_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $7)",
                        &[
                            &&id_hash[..],
                            &ceremony.purpose.as_str(),
                            &ceremony.user_id.map(|u| u.to_string()),
                            &ceremony.mfa_token_hash,
                            &ceremony.state,
                            &now,
                            &ceremony.expires_at,
                        ],
                    )
                    .await?;
                    Ok(())
                })
            })
            .await
    }

    /// Takes the ceremony stored under `id_hash`: it is gone afterwards,
    /// whatever comes of it. `None` when there is none or it has expired.
    pub async fn take_ceremony(
        &self,
        id_hash: [u8; 32],
        now: Millis,
    ) -> StoreResult<Option<Ceremony>> {
        let taken = self
            .db
            .run(move |c| {
                Box::pin(async move {
                    c.query_opt(
                        "DELETE FROM webauthn_challenges WHERE id_hash = $1
                         RETURNING purpose, user_id, mfa_token_hash, state, expires_at",
                        &[&&id_hash[..]],
                        |r| {
                            let user_id = r
                                .get::<Option<String>>(1)?
                                .map(|s| Uuid::parse_str(&s))
                                .transpose()
                                .map_err(|e| StoreError::Other(e.into()))?;
                            Ok(Ceremony {
                                purpose: Purpose::parse(&r.get::<String>(0)?)?,
                                user_id,
                                mfa_token_hash: r.get(2)?,
                                state: r.get(3)?,
                                expires_at: r.get(4)?,
                            })
                        },
                    )
                    .await
                })
            })
            .await?;
        Ok(taken.filter(|c| c.expires_at > now))
    }
}
