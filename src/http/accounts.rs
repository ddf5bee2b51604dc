//! Account routes: register, login, refresh, me, password change.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::client_ip::ClientIp;
use super::extract::{user_agent, Authenticated, JsonBody};
use super::guard::guarded;
use super::AppState;
use crate::auth::email::normalize;
use crate::auth::service::{ClientInfo, TokenPair};
use crate::error::ApiError;
use crate::ratelimit::Guarded;
use crate::store::User;
use crate::time_fmt::rfc3339_ms;

#[derive(Debug, Deserialize)]
pub struct RegisterBody {
    pub email: String,
    pub password: SecretString,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct LoginBody {
    pub email: String,
    pub password: SecretString,
    #[serde(default)]
    pub remember_me: bool,
}

#[derive(Debug, Deserialize)]
pub struct RefreshBody {
    pub refresh_token: SecretString,
}

#[derive(Debug, Deserialize)]
pub struct ChangePasswordBody {
    pub current_password: SecretString,
    pub new_password: SecretString,
}

/// The public view of an account.
#[derive(Debug, Serialize)]
pub struct UserView {
    pub id: Uuid,
    pub email: String,
    pub name: Option<String>,
    pub created_at: String,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        Self {
            id: u.id,
            email: u.email.clone(),
            name: u.name.clone(),
            created_at: rfc3339_ms(u.created_at),
        }
    }
}

/// `/auth/me`: the account with its flags.
#[derive(Debug, Serialize)]
pub struct MeView {
    #[serde(flatten)]
    pub user: UserView,
    pub mfa_enabled: bool,
    pub is_admin: bool,
}

/// A token pair response; never cached.
pub fn token_response(pair: &TokenPair) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"))
        .json(pair)
}

pub fn client_info(req: &HttpRequest, ip: ClientIp) -> ClientInfo {
    ClientInfo::new(Some(ip.0.to_string()), user_agent(req))
}

/// `POST /auth/register`
pub async fn register(
    state: web::Data<AppState>,
    ip: ClientIp,
    body: JsonBody<RegisterBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let ip_key = state.limiter.ip_key(ip.0);
    guarded(&state, Guarded::Register, &ip_key, None, async {
        let user = state
            .auth
            .register(&body.email, body.password, body.name.as_deref(), false)
            .await?;
        Ok(HttpResponse::Created().json(UserView::from(&user)))
    })
    .await
}

/// `POST /auth/login`
pub async fn login(
    state: web::Data<AppState>,
    req: HttpRequest,
    ip: ClientIp,
    body: JsonBody<LoginBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let ip_key = state.limiter.ip_key(ip.0);
    let account = normalize(&body.email);
    guarded(&state, Guarded::Login, &ip_key, Some(&account), async {
        let user = state.auth.authenticate(&account, body.password).await?;
        let pair = state
            .auth
            .open_session(&user, body.remember_me, &client_info(&req, ip))
            .await?;
        state.limiter.login_succeeded(&ip_key, &account).await;
        Ok(token_response(&pair))
    })
    .await
}

/// `POST /auth/refresh`
pub async fn refresh(
    state: web::Data<AppState>,
    ip: ClientIp,
    body: JsonBody<RefreshBody>,
) -> Result<HttpResponse, ApiError> {
    let ip_key = state.limiter.ip_key(ip.0);
    guarded(&state, Guarded::Refresh, &ip_key, None, async {
        let (_user, pair) = state
            .auth
            .refresh(body.0.refresh_token.expose_secret())
            .await?;
        Ok(token_response(&pair))
    })
    .await
}

/// `GET /auth/me`
pub async fn me(state: web::Data<AppState>, auth: Authenticated) -> Result<HttpResponse, ApiError> {
    let user = state.auth.current_user(&auth.0).await?;
    Ok(HttpResponse::Ok().json(MeView {
        user: UserView::from(&user),
        mfa_enabled: false,
        is_admin: user.is_admin,
    }))
}

/// `POST /auth/password/change`: guarded like a login, keyed by the token's account.
pub async fn change_password(
    state: web::Data<AppState>,
    ip: ClientIp,
    auth: Authenticated,
    body: JsonBody<ChangePasswordBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let ip_key = state.limiter.ip_key(ip.0);
    let account = normalize(&auth.0.email);
    guarded(&state, Guarded::Login, &ip_key, Some(&account), async {
        state
            .auth
            .change_password(&auth.0, body.current_password, body.new_password)
            .await?;
        Ok(HttpResponse::NoContent().finish())
    })
    .await
}
