//! OpenID Connect rows (SPEC section 13): the clients the CLI added, the
//! authorization codes (by hash, 60 s, single use) and the consents given.
//! The exchange of a code is one decision taken here, in one transaction:
//! the code is spent, its grant's session opened and both audited together;
//! a second use revokes what the first one opened.

use anyhow::anyhow;
use subtle::ConstantTimeEq;
use uuid::Uuid;

use super::db::{Chain, Conn, Row};
use super::sessions::{insert_session, Grant, Session, SessionKind, SessionLimit};
use super::{with_revoked, Amr, Audit, Store, StoreError, StoreResult};
use crate::audit::event::NewEvent;
use crate::clock::Millis;

/// A code as stored (its hash is the key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcCode {
    pub client_id: String,
    pub user_id: Uuid,
    pub redirect_uri: String,
    pub scope: String,
    pub nonce: Option<String>,
    /// The PKCE `S256` challenge, when the request sent one.
    pub code_challenge: Option<String>,
    /// When the user signed in.
    pub auth_time: Millis,
    pub amr: Amr,
    pub created_at: Millis,
    pub expires_at: Millis,
}

/// What the token request brings to a code.
#[derive(Debug, Clone)]
pub struct Redemption {
    pub client_id: String,
    pub redirect_uri: String,
    /// `S256` of the PKCE verifier sent, if any.
    pub verifier_challenge: Option<String>,
    /// The grant's session, opened when the code is good.
    pub session_id: Uuid,
    pub refresh_hash: [u8; 32],
    /// How long the session lives when the grant has a refresh token
    /// ([`grants_refresh_token`]), and when it has only its access token.
    pub ttl_ms: Millis,
    pub short_ttl_ms: Millis,
    /// The client gets a refresh token with every code grant.
    pub refresh_always: bool,
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
    pub limit: SessionLimit,
    /// Its row when the tokens are issued (the user, session and client are added).
    pub issued: NewEvent,
    /// Its row when the code was used before.
    pub reused: NewEvent,
}

/// Whether a grant of `scope` comes with a refresh token: with
/// `offline_access`, or always for a client that asks for them.
pub fn grants_refresh_token(scope: &str, always: bool) -> bool {
    always || scope.split(' ').any(|s| s == "offline_access")
}

/// A code spent now: the session opened for it, and the sessions the bound evicted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub code: OidcCode,
    pub session: Session,
    pub evicted: Vec<Uuid>,
}

/// The outcome of a code at the token endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exchange {
    /// Spent now.
    Issued(Box<Issued>),
    /// Used before: what it issued is revoked now.
    Reused { user_id: Uuid, revoked: Vec<Uuid> },
    /// Unknown, expired, or not this client's, redirect or verifier (the
    /// code is spent all the same); why, for `error_description`.
    Invalid(&'static str),
}

const CODE_COLS: &str = "client_id, user_id, redirect_uri, scope, nonce, code_challenge, auth_time, amr, created_at, expires_at";

fn code_row(r: &Row<'_>) -> StoreResult<OidcCode> {
    Ok(OidcCode {
        client_id: r.get(0)?,
        user_id: r.uuid(1)?,
        redirect_uri: r.get(2)?,
        scope: r.get(3)?,
        nonce: r.get(4)?,
        code_challenge: r.get(5)?,
        auth_time: r.get(6)?,
        amr: Amr::parse(&r.get::<String>(7)?),
        created_at: r.get(8)?,
        expires_at: r.get(9)?,
    })
}

/// The body of an exchange (see [`Store::redeem_code`]).
async fn redeem(
    c: &mut Conn<'_>,
    hash: [u8; 32],
    r: Redemption,
    now: Millis,
) -> StoreResult<(Exchange, Audit)> {
    let sql = format!(
        "SELECT {CODE_COLS}, used_at, session_id FROM oidc_codes WHERE code_hash = $1 FOR UPDATE"
    );
    let found = c
        .query_opt(&sql, &[&&hash[..]], |row| {
            Ok((
                code_row(row)?,
                row.get::<Option<Millis>>(10)?,
                row.get::<Option<String>>(11)?,
            ))
        })
        .await?;
    let Some((code, used_at, issued)) = found else {
        return Ok((Exchange::Invalid("unknown code"), Vec::new()));
    };
    if used_at.is_some() {
        // RFC 6749 section 4.1.2: revoke what the code issued. A session not
        // yet opened is refused by the mark `-` (see below).
        let mut revoked = Vec::new();
        match issued.as_deref() {
            Some(id) if !id.is_empty() && id != "-" => {
                revoked = c
                    .query(
                        "UPDATE sessions SET revoked_at = $1, revoke_reason = 'oidc_code_reused'
                         WHERE id = $2 AND revoked_at IS NULL RETURNING id",
                        &[&now, &id],
                        |row| row.uuid(0),
                    )
                    .await?;
            }
            _ => {
                c.execute(
                    "UPDATE oidc_codes SET session_id = '-' WHERE code_hash = $1",
                    &[&&hash[..]],
                )
                .await?;
            }
        }
        let row = r
            .reused
            .user(code.user_id)
            .extra("client_id", code.client_id.clone());
        let exchange = Exchange::Reused {
            user_id: code.user_id,
            revoked,
        };
        return Ok((exchange, vec![row]));
    }
    c.execute(
        "UPDATE oidc_codes SET used_at = $1 WHERE code_hash = $2",
        &[&now, &&hash[..]],
    )
    .await?;
    let refused = if now >= code.expires_at {
        Some("the code has expired")
    } else if code.client_id != r.client_id {
        Some("the code was issued to another client")
    } else if code.redirect_uri != r.redirect_uri {
        Some("redirect_uri differs from the authorization request's")
    } else {
        match (&code.code_challenge, &r.verifier_challenge) {
            (Some(_), None) => Some("code_verifier is missing"),
            (Some(want), Some(got)) if !bool::from(want.as_bytes().ct_eq(got.as_bytes())) => {
                Some("code_verifier does not match the code_challenge")
            }
            (None, Some(_)) => Some("no code_challenge was sent with the authorization request"),
            _ => None,
        }
    };
    if let Some(why) = refused {
        return Ok((Exchange::Invalid(why), Vec::new()));
    }
    let session = Session {
        id: r.session_id,
        user_id: code.user_id,
        kind: SessionKind::Oidc,
        amr: code.amr,
        remember_me: true,
        // A grant's sign-in is the browser's: id_tokens issued later keep
        // its auth_time.
        created_at: code.auth_time,
        last_used_at: now,
        expires_at: now.saturating_add(if grants_refresh_token(&code.scope, r.refresh_always) {
            r.ttl_ms
        } else {
            r.short_ttl_ms
        }),
        revoked_at: None,
        ip_address: r.ip_address,
        user_agent: r.user_agent,
        grant: Some(Grant {
            client_id: code.client_id.clone(),
            scope: code.scope.clone(),
        }),
    };
    let issued = r
        .issued
        .user(code.user_id)
        .resource("session", session.id)
        .extra("client_id", code.client_id.clone())
        .extra("scope", code.scope.clone());
    let (evicted, audit) =
        insert_session(c, &session, &r.refresh_hash, &r.limit, vec![issued]).await?;
    let marked = c
        .execute(
            "UPDATE oidc_codes SET session_id = $1 WHERE code_hash = $2 AND session_id IS NULL",
            &[&session.id.to_string(), &&hash[..]],
        )
        .await?;
    if marked == 0 {
        return Err(StoreError::Other(anyhow!("a code was spent twice at once")));
    }
    Ok((
        Exchange::Issued(Box::new(Issued {
            code,
            session,
            evicted,
        })),
        audit,
    ))
}

impl Store {
    /// Stores a new code (by hash) with `audit`.
    pub async fn insert_code(
        &self,
        hash: [u8; 32],
        code: OidcCode,
        audit: Audit,
    ) -> StoreResult<()> {
        let now = code.created_at;
        self.db
            .unit(Chain::After, now, move |c| {
                Box::pin(async move {
                    // Spent and expired codes go as new ones come.
                    c.execute(
                        "DELETE FROM oidc_codes WHERE expires_at < $1",
                        &[&now.saturating_sub(3_600_000)],
                    )
                    .await?;
                    c.execute(
                        "INSERT INTO oidc_codes (code_hash, client_id, user_id, redirect_uri, scope, nonce,
                                                 code_challenge, auth_time, amr, created_at, expires_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                        &[
                            &&hash[..],
                            &code.client_id,
                            &code.user_id.to_string(),
                            &code.redirect_uri,
                            &code.scope,
                            &code.nonce,
                            &code.code_challenge,
                            &code.auth_time,
                            &code.amr.to_text(),
                            &code.created_at,
                            &code.expires_at,
                        ],
                    )
                    .await?;
                    Ok(((), audit))
                })
            })
            .await
    }

    /// Spends the code hashing to `hash` for `r` (see [`Exchange`]): on
    /// success its session is opened in the same transaction.
    pub async fn redeem_code(
        &self,
        hash: [u8; 32],
        r: Redemption,
        now: Millis,
    ) -> StoreResult<Exchange> {
        self.db
            .unit(Chain::After, now, move |c| {
                Box::pin(async move {
                    let (exchange, audit) = redeem(c, hash, r, now).await?;
                    let audit = match &exchange {
                        Exchange::Reused { revoked, .. } => with_revoked(audit, revoked.len()),
                        _ => audit,
                    };
                    Ok((exchange, audit))
                })
            })
            .await
    }

    /// The session whose current or retired refresh token hashes to `hash`.
    pub async fn session_of_refresh_token(&self, hash: [u8; 32]) -> StoreResult<Option<Session>> {
        self.db
            .read(move |c| {
                Box::pin(async move {
                    let sql = format!(
                        "SELECT {} FROM sessions WHERE id = (SELECT session_id FROM refresh_tokens WHERE token_hash = $1 AND retired_at IS NULL)",
                        super::sessions::SESSION_COLS
                    );
                    c.query_opt(&sql, &[&&hash[..]], super::sessions::session_row)
                        .await
                })
            })
            .await
    }

    /// The scopes `user_id` allowed `client_id`, if any.
    pub async fn consent(&self, user_id: Uuid, client_id: &str) -> StoreResult<Option<String>> {
        let client_id = client_id.to_owned();
        self.db
            .read(move |c| {
                Box::pin(async move {
                    c.query_opt(
                        "SELECT scope FROM oidc_consents WHERE user_id = $1 AND client_id = $2",
                        &[&user_id.to_string(), &client_id],
                        |r| r.get(0),
                    )
                    .await
                })
            })
            .await
    }

    /// Records that `user_id` allowed `client_id` to read `scope`, with `audit`.
    pub async fn grant_consent(
        &self,
        user_id: Uuid,
        client_id: &str,
        scope: &str,
        now: Millis,
        audit: Audit,
    ) -> StoreResult<()> {
        let (client_id, scope) = (client_id.to_owned(), scope.to_owned());
        self.db
            .unit(Chain::After, now, move |c| {
                Box::pin(async move {
                    c.execute(
                        "INSERT INTO oidc_consents (user_id, client_id, scope, granted_at)
                         VALUES ($1, $2, $3, $4)
                         ON CONFLICT (user_id, client_id) DO UPDATE SET scope = excluded.scope, granted_at = excluded.granted_at",
                        &[&user_id.to_string(), &client_id, &scope, &now],
                    )
                    .await?;
                    Ok(((), audit))
                })
            })
            .await
    }

    /// A client the CLI added: its settings as JSON.
    pub async fn oidc_client(&self, id: &str) -> StoreResult<Option<String>> {
        let id = id.to_owned();
        self.db
            .read(move |c| {
                Box::pin(async move {
                    c.query_opt(
                        "SELECT config FROM oidc_clients WHERE id = $1",
                        &[&id],
                        |r| r.get(0),
                    )
                    .await
                })
            })
            .await
    }

    /// Every client the CLI added, by id.
    pub async fn oidc_clients(&self) -> StoreResult<Vec<(String, String)>> {
        self.db
            .run(move |c| {
                Box::pin(async move {
                    c.query(
                        "SELECT id, config FROM oidc_clients ORDER BY id",
                        &[],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .await
                })
            })
            .await
    }

    /// Adds a client; `false` when one with that id exists.
    pub async fn add_oidc_client(
        &self,
        id: &str,
        config: String,
        now: Millis,
    ) -> StoreResult<bool> {
        let id = id.to_owned();
        self.db
            .transaction(move |c| {
                Box::pin(async move {
                    let added = c
                        .execute(
                            "INSERT INTO oidc_clients (id, config, created_at) VALUES ($1, $2, $3)
                             ON CONFLICT (id) DO NOTHING",
                            &[&id, &config, &now],
                        )
                        .await?;
                    Ok(added > 0)
                })
            })
            .await
    }

    /// Removes a client and revokes its grants; `None` when there was none,
    /// else the sessions revoked.
    pub async fn remove_oidc_client(
        &self,
        id: &str,
        now: Millis,
    ) -> StoreResult<Option<Vec<Uuid>>> {
        let id = id.to_owned();
        self.db
            .transaction(move |c| {
                Box::pin(async move {
                    let removed = c
                        .execute("DELETE FROM oidc_clients WHERE id = $1", &[&id])
                        .await?;
                    if removed == 0 {
                        return Ok(None);
                    }
                    c.execute("DELETE FROM oidc_consents WHERE client_id = $1", &[&id])
                        .await?;
                    c.execute("DELETE FROM oidc_codes WHERE client_id = $1", &[&id])
                        .await?;
                    let revoked = c
                        .query(
                            "UPDATE sessions SET revoked_at = $1, revoke_reason = 'client_removed'
                             WHERE client_id = $2 AND revoked_at IS NULL RETURNING id",
                            &[&now, &id],
                            |r| r.uuid(0),
                        )
                        .await?;
                    Ok(Some(revoked))
                })
            })
            .await
    }
}
