//! Second factors: TOTP secrets, backup codes, and the challenges that sit
//! between a password and a session.

use uuid::Uuid;

use super::db::{Chain, Conn};
use super::sessions::{insert_session, revoke_all, Session, SessionLimit};
use super::{with_revoked, Audit, Store, StoreResult};
use crate::clock::Millis;

/// A user's TOTP state; secrets are sealed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TotpRow {
    pub secret: Option<Vec<u8>>,
    pub pending_secret: Option<Vec<u8>>,
    pub last_step: Option<i64>,
}

impl TotpRow {
    pub fn enabled(&self) -> bool {
        self.secret.is_some()
    }
}

/// A pending second-factor challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MfaChallenge {
    pub user_id: Uuid,
    pub remember_me: bool,
    pub expires_at: Millis,
    pub failures: u32,
}

/// Deletes every backup code of the user `user_id`.
async fn delete_codes(c: &mut Conn<'_>, user_id: &str) -> StoreResult<()> {
    c.execute("DELETE FROM backup_codes WHERE user_id = $1", &[&user_id])
        .await?;
    Ok(())
}

/// Replaces every backup code of the user with `hashes`.
async fn replace_codes(
    c: &mut Conn<'_>,
    user_id: Uuid,
    hashes: &[[u8; 32]],
    now: Millis,
) -> StoreResult<()> {
    let id = user_id.to_string();
    delete_codes(c, &id).await?;
    for hash in hashes {
        c.execute(
            "INSERT INTO backup_codes (user_id, code_hash, created_at) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
            &[&id, &&hash[..], &now],
        )
        .await?;
    }
    Ok(())
}

impl Store {
    pub async fn totp(&self, user_id: Uuid) -> StoreResult<Option<TotpRow>> {
        self.db
            .run(move |c| {
                Box::pin(async move {
                    c.query_opt(
                        "SELECT secret, pending_secret, last_step FROM totp WHERE user_id = $1",
                        &[&user_id.to_string()],
                        |r| {
                            Ok(TotpRow {
                                secret: r.get(0)?,
                                pending_secret: r.get(1)?,
                                last_step: r.get(2)?,
                            })
                        },
                    )
                    .await
                })
            })
            .await
    }

    /// Stores a new sealed secret awaiting confirmation.
    pub async fn set_pending_totp(&self, user_id: Uuid, sealed: Vec<u8>) -> StoreResult<()> {
        self.db
            .run(move |c| {
                Box::pin(async move {
                    c.execute(
                        "INSERT INTO totp (user_id, pending_secret) VALUES ($1, $2)
                         ON CONFLICT (user_id) DO UPDATE SET pending_secret = excluded.pending_secret",
                        &[&user_id.to_string(), &sealed],
                    )
                    .await?;
                    Ok(())
                })
            })
            .await
    }

    /// Makes the pending secret active (its code at `step` confirmed it) and
    /// replaces the backup codes, in one transaction. False (recording
    /// nothing) when nothing is pending.
    pub async fn enable_totp(
        &self,
        user_id: Uuid,
        step: i64,
        backup_hashes: Vec<[u8; 32]>,
        now: Millis,
        audit: Audit,
    ) -> StoreResult<bool> {
        self.db
            .unit(Chain::After, now, move |c| {
                Box::pin(async move {
                    let changed = c
                        .execute(
                            "UPDATE totp SET secret = pending_secret, pending_secret = NULL, enabled_at = $1, last_step = $2
                             WHERE user_id = $3 AND pending_secret IS NOT NULL",
                            &[&now, &step, &user_id.to_string()],
                        )
                        .await?
                        > 0;
                    if !changed {
                        return Ok((false, Vec::new()));
                    }
                    replace_codes(c, user_id, &backup_hashes, now).await?;
                    Ok((true, audit))
                })
            })
            .await
    }

    /// Removes TOTP and backup codes.
    pub async fn disable_totp(&self, user_id: Uuid, now: Millis, audit: Audit) -> StoreResult<()> {
        self.db
            .unit(Chain::After, now, move |c| {
                Box::pin(async move {
                    let id = user_id.to_string();
                    c.execute("DELETE FROM totp WHERE user_id = $1", &[&id])
                        .await?;
                    delete_codes(c, &id).await?;
                    Ok(((), audit))
                })
            })
            .await
    }

    /// An administrator's reset of a lost second factor: removes TOTP (set up
    /// or pending), backup codes, passkeys and pending challenges, and revokes every
    /// session, with `audit`. `None` when there is no such user; else the
    /// sessions revoked.
    pub async fn reset_second_factor(
        &self,
        user_id: Uuid,
        now: Millis,
        audit: Audit,
    ) -> StoreResult<Option<Vec<Uuid>>> {
        self.db
            .unit(Chain::After, now, move |c| {
                Box::pin(async move {
                    let id = user_id.to_string();
                    let exists = c
                        .query_opt(
                            "SELECT id FROM users WHERE id = $1 FOR UPDATE",
                            &[&id],
                            |_| Ok(()),
                        )
                        .await?;
                    if exists.is_none() {
                        return Ok((None, Vec::new()));
                    }
                    c.execute("DELETE FROM totp WHERE user_id = $1", &[&id])
                        .await?;
                    delete_codes(c, &id).await?;
                    c.execute("DELETE FROM mfa_challenges WHERE user_id = $1", &[&id])
                        .await?;
                    c.execute("DELETE FROM passkeys WHERE user_id = $1", &[&id])
                        .await?;
                    c.execute("DELETE FROM webauthn_challenges WHERE user_id = $1", &[&id])
                        .await?;
                    let revoked = revoke_all(c, user_id, None, "mfa_reset", now).await?;
                    let audit = with_revoked(audit, revoked.len());
                    Ok((Some(revoked), audit))
                })
            })
            .await
    }

    /// Records `step` as used if it is newer than the last one; false for a replay.
    pub async fn use_totp_step(&self, user_id: Uuid, step: i64) -> StoreResult<bool> {
        self.db
            .run(move |c| {
                Box::pin(async move {
                    let changed = c
                        .execute(
                            "UPDATE totp SET last_step = $1
                             WHERE user_id = $2 AND secret IS NOT NULL AND (last_step IS NULL OR last_step < $1)",
                            &[&step, &user_id.to_string()],
                        )
                        .await?;
                    Ok(changed == 1)
                })
            })
            .await
    }

    /// Uses a backup code stored under either hash (keyed, or the older
    /// unkeyed form); false when unknown or already used.
    pub async fn use_backup_code(
        &self,
        user_id: Uuid,
        code_hashes: [[u8; 32]; 2],
        now: Millis,
    ) -> StoreResult<bool> {
        self.db
            .run(move |c| {
                Box::pin(async move {
                    let changed = c
                        .execute(
                            "UPDATE backup_codes SET used_at = $1
                             WHERE user_id = $2 AND code_hash IN ($3, $4) AND used_at IS NULL",
                            &[
                                &now,
                                &user_id.to_string(),
                                &&code_hashes[0][..],
                                &&code_hashes[1][..],
                            ],
                        )
                        .await?;
                    // The two hashes are of one code: at most one row is there.
                    Ok(changed >= 1)
                })
            })
            .await
    }

    /// Replaces every backup code of the user.
    pub async fn replace_backup_codes(
        &self,
        user_id: Uuid,
        hashes: Vec<[u8; 32]>,
        now: Millis,
        audit: Audit,
    ) -> StoreResult<()> {
        self.db
            .unit(Chain::After, now, move |c| {
                Box::pin(async move {
                    replace_codes(c, user_id, &hashes, now).await?;
                    Ok(((), audit))
                })
            })
            .await
    }

    /// Stores a challenge (and drops the expired ones).
    pub async fn create_mfa_challenge(
        &self,
        token_hash: [u8; 32],
        challenge: MfaChallenge,
        now: Millis,
    ) -> StoreResult<()> {
        self.db
            .transaction(move |c| {
                Box::pin(async move {
                    c.execute("DELETE FROM mfa_challenges WHERE expires_at <= $1", &[&now])
                        .await?;
                    c.execute(
                        "INSERT INTO mfa_challenges (token_hash, user_id, remember_me, created_at, expires_at)
                         VALUES ($1, $2, $3, $4, $5)",
                        &[
                            &&token_hash[..],
                            &challenge.user_id.to_string(),
                            &challenge.remember_me,
                            &now,
                            &challenge.expires_at,
                        ],
                    )
                    .await?;
                    Ok(())
                })
            })
            .await
    }

    /// An unexpired, unspent challenge.
    pub async fn mfa_challenge(
        &self,
        token_hash: [u8; 32],
        now: Millis,
    ) -> StoreResult<Option<MfaChallenge>> {
        self.db
            .run(move |c| {
                Box::pin(async move {
                    c.query_opt(
                        "SELECT user_id, remember_me, expires_at, failures FROM mfa_challenges
                         WHERE token_hash = $1 AND expires_at > $2",
                        &[&&token_hash[..], &now],
                        |r| {
                            Ok(MfaChallenge {
                                user_id: r.uuid(0)?,
                                remember_me: r.get(1)?,
                                expires_at: r.get(2)?,
                                failures: u32::try_from(r.get::<i32>(3)?).unwrap_or(0),
                            })
                        },
                    )
                    .await
                })
            })
            .await
    }

    /// Counts a wrong code; the challenge is spent at `max_failures`.
    pub async fn fail_mfa_challenge(
        &self,
        token_hash: [u8; 32],
        max_failures: u32,
        now: Millis,
        audit: Audit,
    ) -> StoreResult<()> {
        let max = i32::try_from(max_failures).unwrap_or(i32::MAX);
        self.db
            .unit(Chain::After, now, move |c| {
                Box::pin(async move {
                    c.execute(
                        "UPDATE mfa_challenges SET failures = failures + 1 WHERE token_hash = $1",
                        &[&&token_hash[..]],
                    )
                    .await?;
                    c.execute(
                        "DELETE FROM mfa_challenges WHERE token_hash = $1 AND failures >= $2",
                        &[&&token_hash[..], &max],
                    )
                    .await?;
                    Ok(((), audit))
                })
            })
            .await
    }

    /// Spends a challenge and stores the session it opens (bounded by
    /// `limit` as in [`Store::create_session`]), with `success`; when the
    /// challenge was already spent, stores nothing but `failed`. Returns the
    /// sessions revoked for the bound, or `None` when nothing was stored.
    pub async fn complete_mfa_challenge(
        &self,
        token_hash: [u8; 32],
        session: Session,
        credential: [u8; 32],
        limit: SessionLimit,
        success: Audit,
        failed: Audit,
    ) -> StoreResult<Option<Vec<Uuid>>> {
        let now = session.created_at;
        self.db
            .unit(Chain::After, now, move |c| {
                Box::pin(async move {
                    let spent = c
                        .execute(
                            "DELETE FROM mfa_challenges WHERE token_hash = $1",
                            &[&&token_hash[..]],
                        )
                        .await?
                        == 1;
                    if !spent {
                        return Ok((None, failed));
                    }
                    let (evicted, audit) =
                        insert_session(c, &session, &credential, &limit, success).await?;
                    Ok((Some(evicted), audit))
                })
            })
            .await
    }
}
