//! Accounts: users, the administrator flag, passwords and reset tokens.

use uuid::Uuid;

use super::db::{Chain, Conn, Row};
use super::sessions::revoke_all;
use super::{with_revoked, Audit, Store, StoreError, StoreResult};
use crate::clock::Millis;

/// A stored account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub name: Option<String>,
    pub password_hash: String,
    pub is_admin: bool,
    pub disabled_at: Option<Millis>,
    pub created_at: Millis,
}

impl User {
    pub fn is_disabled(&self) -> bool {
        self.disabled_at.is_some()
    }
}

/// What is needed to create an account.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub id: Uuid,
    pub email: String,
    pub name: Option<String>,
    pub password_hash: String,
    pub is_admin: bool,
    pub created_at: Millis,
}

const USER_COLS: &str = "id, email, name, password_hash, is_admin, disabled_at, created_at";

/// Whether the user has TOTP on, as column 7 after [`USER_COLS`].
const WITH_MFA: &str =
    "EXISTS (SELECT 1 FROM totp WHERE totp.user_id = users.id AND totp.secret IS NOT NULL)";

fn user_row(r: &Row<'_>) -> StoreResult<User> {
    Ok(User {
        id: r.uuid(0)?,
        email: r.get(1)?,
        name: r.get(2)?,
        password_hash: r.get(3)?,
        is_admin: r.get(4)?,
        disabled_at: r.get(5)?,
        created_at: r.get(6)?,
    })
}

fn user_with_mfa_row(r: &Row<'_>) -> StoreResult<(User, bool)> {
    Ok((user_row(r)?, r.get(7)?))
}

/// A `LIKE` pattern that finds `text` anywhere, its `%`, `_` and `\\` literal.
fn contains_pattern(text: &str) -> String {
    let escaped = text
        .to_lowercase()
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

impl Store {
    /// Creates an account; [`StoreError::EmailTaken`] when the email exists.
    pub async fn create_user(&self, user: NewUser, audit: Audit) -> StoreResult<User> {
        let now = user.created_at;
        self.db
            .unit(Chain::After, now, move |c| {
                Box::pin(async move {
                    let inserted = c
                        .execute(
                            "INSERT INTO users (id, email, name, password_hash, is_admin, created_at, updated_at)
                             VALUES ($1, $2, $3, $4, $5, $6, $6)",
                            &[
                                &user.id.to_string(),
                                &user.email,
                                &user.name,
                                &user.password_hash,
                                &user.is_admin,
                                &user.created_at,
                            ],
                        )
                        .await;
                    match inserted {
                        Ok(_) => Ok((user.into(), audit)),
                        Err(StoreError::Duplicate(_)) => Err(StoreError::EmailTaken),
                        Err(e) => Err(e),
                    }
                })
            })
            .await
    }

    pub async fn user_by_email(&self, email: &str) -> StoreResult<Option<User>> {
        let email = email.to_owned();
        self.db
            .run(move |c| {
                Box::pin(async move {
                    let sql = format!("SELECT {USER_COLS} FROM users WHERE email = $1");
                    c.query_opt(&sql, &[&email], user_row).await
                })
            })
            .await
    }

    pub async fn user_by_id(&self, id: Uuid) -> StoreResult<Option<User>> {
        self.db
            .read(move |c| {
                Box::pin(async move {
                    let sql = format!("SELECT {USER_COLS} FROM users WHERE id = $1");
                    c.query_opt(&sql, &[&id.to_string()], user_row).await
                })
            })
            .await
    }

    /// The account and whether its second factor is on, in one read.
    pub async fn user_with_mfa(&self, id: Uuid) -> StoreResult<Option<(User, bool)>> {
        self.db
            .read(move |c| {
                Box::pin(async move {
                    let sql = format!("SELECT {USER_COLS}, {WITH_MFA} FROM users WHERE id = $1");
                    c.query_opt(&sql, &[&id.to_string()], user_with_mfa_row)
                        .await
                })
            })
            .await
    }

    /// Accounts whose email contains `email_filter` (all when `None`), oldest
    /// first, each with whether TOTP is on (one query, not one per account).
    /// Whether any account is an administrator.
    pub async fn any_admin(&self) -> StoreResult<bool> {
        self.db
            .run(move |c| {
                Box::pin(async move {
                    c.query_one(
                        "SELECT EXISTS (SELECT 1 FROM users WHERE is_admin)",
                        &[],
                        |r| r.get(0),
                    )
                    .await
                })
            })
            .await
    }

    pub async fn list_users(&self, email_filter: Option<String>) -> StoreResult<Vec<(User, bool)>> {
        let pattern = email_filter.map_or_else(|| "%".to_owned(), |f| contains_pattern(&f));
        self.db
            .run(move |c| {
                Box::pin(async move {
                    let sql = format!(
                        "SELECT {USER_COLS}, {WITH_MFA} FROM users \
                         WHERE email LIKE $1 ESCAPE '\\' ORDER BY created_at, email"
                    );
                    c.query(&sql, &[&pattern], user_with_mfa_row).await
                })
            })
            .await
    }

    pub async fn set_password_hash(
        &self,
        user_id: Uuid,
        hash: String,
        now: Millis,
    ) -> StoreResult<()> {
        self.db
            .run(move |c| Box::pin(async move { set_password(c, user_id, &hash, now).await }))
            .await
    }

    /// Disables or enables an account; disabling revokes all its sessions.
    /// Returns the sessions revoked, or `None` (recording nothing) when the
    /// account does not exist.
    pub async fn set_disabled(
        &self,
        user_id: Uuid,
        disabled: bool,
        now: Millis,
        audit: Audit,
    ) -> StoreResult<Option<Vec<Uuid>>> {
        self.db
            .unit(Chain::After, now, move |c| {
                Box::pin(async move {
                    let sql = if disabled {
                        "UPDATE users SET disabled_at = COALESCE(disabled_at, $1), updated_at = $1 WHERE id = $2"
                    } else {
                        "UPDATE users SET disabled_at = NULL, updated_at = $1 WHERE id = $2"
                    };
                    if c.execute(sql, &[&now, &user_id.to_string()]).await? == 0 {
                        return Ok((None, Vec::new()));
                    }
                    let revoked = if disabled {
                        revoke_all(c, user_id, None, "user_disabled", now).await?
                    } else {
                        Vec::new()
                    };
                    Ok((Some(revoked), audit))
                })
            })
            .await
    }

    /// Makes an account an administrator or not; unmaking one revokes all
    /// its sessions, so that no token still claims the role. Returns the
    /// sessions revoked, or `None` (recording nothing) when the account does
    /// not exist or already is so.
    pub async fn set_admin(
        &self,
        user_id: Uuid,
        is_admin: bool,
        now: Millis,
        audit: Audit,
    ) -> StoreResult<Option<Vec<Uuid>>> {
        self.db
            .unit(Chain::After, now, move |c| {
                Box::pin(async move {
                    let changed = c
                        .execute(
                            "UPDATE users SET is_admin = $1, updated_at = $2 WHERE id = $3 AND is_admin <> $1",
                            &[&is_admin, &now, &user_id.to_string()],
                        )
                        .await?;
                    if changed == 0 {
                        return Ok((None, Vec::new()));
                    }
                    let revoked = if is_admin {
                        Vec::new()
                    } else {
                        revoke_all(c, user_id, None, "admin_removed", now).await?
                    };
                    Ok((Some(revoked), audit))
                })
            })
            .await
    }

    /// Sets a new password hash and revokes every live session but `keep`;
    /// returns the sessions revoked.
    pub async fn change_password(
        &self,
        user_id: Uuid,
        hash: String,
        keep: Option<Uuid>,
        now: Millis,
        audit: Audit,
    ) -> StoreResult<Vec<Uuid>> {
        self.db
            .unit(Chain::After, now, move |c| {
                Box::pin(async move {
                    set_password(c, user_id, &hash, now).await?;
                    let revoked = revoke_all(c, user_id, keep, "password_changed", now).await?;
                    let audit = with_revoked(audit, revoked.len());
                    Ok((revoked, audit))
                })
            })
            .await
    }

    /// Stores a reset token for `user_id`, voiding the user's older unused
    /// ones, with `audit`. Without a user (no enabled account has the email)
    /// it does the same work, finding nothing to void, and stores only
    /// `audit`: both answers take the same time.
    pub async fn create_reset_token(
        &self,
        user_id: Option<Uuid>,
        token_hash: [u8; 32],
        now: Millis,
        expires_at: Millis,
        audit: Audit,
    ) -> StoreResult<()> {
        self.db
            .unit(Chain::After, now, move |c| {
                Box::pin(async move {
                    let id = user_id.unwrap_or_default().to_string();
                    c.execute(
                        "UPDATE password_reset_tokens SET used_at = $1 WHERE user_id = $2 AND used_at IS NULL",
                        &[&now, &id],
                    )
                    .await?;
                    if user_id.is_some() {
                        c.execute(
                            "INSERT INTO password_reset_tokens (token_hash, user_id, created_at, expires_at)
                             VALUES ($1, $2, $3, $4)",
                            &[&&token_hash[..], &id, &now, &expires_at],
                        )
                        .await?;
                    }
                    Ok(((), audit))
                })
            })
            .await
    }

    /// The user of an unused, unexpired reset token, without using it.
    pub async fn reset_token_user(
        &self,
        token_hash: [u8; 32],
        now: Millis,
    ) -> StoreResult<Option<Uuid>> {
        self.db
            .run(move |c| {
                Box::pin(async move {
                    c.query_opt(
                        "SELECT user_id FROM password_reset_tokens
                         WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2",
                        &[&&token_hash[..], &now],
                        |r| r.uuid(0),
                    )
                    .await
                })
            })
            .await
    }

    /// In one transaction: uses the token (if still unused and unexpired), sets
    /// the password hash and revokes every session of the user. Returns the
    /// user and the revoked sessions, or `None` (recording nothing) when the
    /// token was not valid.
    pub async fn reset_password(
        &self,
        token_hash: [u8; 32],
        password_hash: String,
        now: Millis,
        audit: Audit,
    ) -> StoreResult<Option<(Uuid, Vec<Uuid>)>> {
        self.db
            .unit(Chain::After, now, move |c| {
                Box::pin(async move {
                    let used = c
                        .query_opt(
                            "UPDATE password_reset_tokens SET used_at = $1
                             WHERE token_hash = $2 AND used_at IS NULL AND expires_at > $1
                             RETURNING user_id",
                            &[&now, &&token_hash[..]],
                            |r| r.uuid(0),
                        )
                        .await?;
                    let Some(user_id) = used else {
                        return Ok((None, Vec::new()));
                    };
                    set_password(c, user_id, &password_hash, now).await?;
                    let revoked = revoke_all(c, user_id, None, "password_reset", now).await?;
                    let audit = audit
                        .into_iter()
                        .map(|e| e.user(user_id).resource("user", user_id))
                        .collect();
                    let audit = with_revoked(audit, revoked.len());
                    Ok((Some((user_id, revoked)), audit))
                })
            })
            .await
    }
}

async fn set_password(c: &mut Conn<'_>, user_id: Uuid, hash: &str, now: Millis) -> StoreResult<()> {
    c.execute(
        "UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3",
        &[&hash, &now, &user_id.to_string()],
    )
    .await?;
    Ok(())
}

impl From<NewUser> for User {
    fn from(user: NewUser) -> Self {
        Self {
            id: user.id,
            email: user.email,
            name: user.name,
            password_hash: user.password_hash,
            is_admin: user.is_admin,
            disabled_at: None,
            created_at: user.created_at,
        }
    }
}
