//! The HTTP layer: one module per route group of SPEC section 5. Handlers parse,
//! call the domain, and map the result to a response — nothing more.

pub mod accounts;
pub mod admin;
pub mod authz;
pub mod client_ip;
pub mod context;
pub mod extract;
pub mod guard;
pub mod limits;
pub mod mfa;
pub mod oauth;
pub mod openapi;
pub mod ops;
pub mod request_id;
pub mod reset;
pub mod sessions;

use std::sync::Arc;

use actix_web::web::{self, ServiceConfig};
use actix_web::{HttpResponse, Resource};

use crate::audit::NewEvent;
use crate::audit_log::AuditLog;
use crate::auth::service::AuthService;
use crate::config::Config;
use crate::error::ApiError;
use crate::mail::{MailQueue, Mailer};
use crate::metrics::Metrics;
use crate::ratelimit::Limiter;
use crate::telemetry::fold::LineFolder;
use client_ip::TrustedProxies;

/// Everything a handler can reach.
pub struct AppState {
    pub auth: AuthService,
    pub limiter: Arc<Limiter>,
    pub audit: AuditLog,
    pub mailer: Mailer,
    pub metrics: Arc<Metrics>,
    pub config: Arc<Config>,
    pub trusted_proxies: TrustedProxies,
    /// Folds repeated request lines of the process log.
    pub request_lines: LineFolder,
    /// Mail that goes out after the answer.
    pub mail_queue: MailQueue,
    /// The forward-auth rules, compiled.
    pub forward_auth: crate::authz::Rules,
    /// The OpenID Connect provider's clients and keys.
    pub oidc: crate::oidc::Oidc,
}

impl AppState {
    /// Records an audit event; the request fails closed (503) when it cannot.
    pub async fn audit(&self, event: NewEvent) -> Result<(), ApiError> {
        self.audit.record(event).await?;
        Ok(())
    }
}

/// Registers every route. The router tries them in order, and each pattern
/// with a `{segment}` costs a regular-expression match: the routes every
/// request of a deployment takes (forward auth, `/auth/me`) come first.
pub fn routes(cfg: &mut ServiceConfig) {
    cfg.service(resource("/authz/forward-auth", "GET").route(web::get().to(authz::forward_auth)))
        .service(resource("/authz/auth-request", "GET").route(web::get().to(authz::auth_request)))
        .service(resource("/auth/me", "GET").route(web::get().to(accounts::me)))
        .service(resource("/auth/login", "POST").route(web::post().to(accounts::login)))
        .service(resource("/auth/register", "POST").route(web::post().to(accounts::register)))
        .service(resource("/auth/token", "POST").route(web::post().to(oauth::token)))
        .service(resource("/auth/login/mfa", "POST").route(web::post().to(mfa::login)))
        .service(resource("/auth/mfa/totp/setup", "POST").route(web::post().to(mfa::setup)))
        .service(resource("/auth/mfa/totp/enable", "POST").route(web::post().to(mfa::enable)))
        .service(resource("/auth/mfa/totp/disable", "POST").route(web::post().to(mfa::disable)))
        .service(
            resource("/auth/mfa/backup-codes", "POST").route(web::post().to(mfa::backup_codes)),
        )
        .service(resource("/auth/refresh", "POST").route(web::post().to(accounts::refresh)))
        .service(resource("/auth/logout", "POST").route(web::post().to(sessions::logout)))
        .service(resource("/auth/logout-all", "POST").route(web::post().to(sessions::logout_all)))
        .service(
            resource("/auth/password-reset/request", "POST").route(web::post().to(reset::request)),
        )
        .service(
            resource("/auth/password-reset/confirm", "POST").route(web::post().to(reset::confirm)),
        )
        .service(resource("/auth/sessions", "GET").route(web::get().to(sessions::list)))
        .service(
            resource("/auth/sessions/{id}", "DELETE").route(web::delete().to(sessions::revoke)),
        )
        .service(
            resource("/auth/password/change", "POST")
                .route(web::post().to(accounts::change_password)),
        )
        .service(
            resource("/admin/users", "GET, POST")
                .route(web::get().to(admin::users))
                .route(web::post().to(admin::create_user)),
        )
        .service(
            resource("/admin/users/{id}/groups", "PUT").route(web::put().to(admin::set_groups)),
        )
        .service(
            resource("/admin/users/{id}/mfa/reset", "POST").route(web::post().to(admin::reset_mfa)),
        )
        .service(
            resource("/admin/users/{id}/disable", "POST")
                .route(web::post().to(admin::disable_user)),
        )
        .service(
            resource("/admin/users/{id}/enable", "POST").route(web::post().to(admin::enable_user)),
        )
        .service(resource("/admin/audit", "GET").route(web::get().to(admin::audit)))
        .service(resource("/admin/audit/verify", "GET").route(web::get().to(admin::audit_verify)))
        .service(
            resource("/admin/rate-limits", "GET, DELETE")
                .route(web::get().to(admin::rate_limits))
                .route(web::delete().to(admin::clear_rate_limits)),
        )
        .service(resource("/.well-known/jwks.json", "GET").route(web::get().to(ops::jwks)))
        .service(
            resource("/.well-known/openid-configuration", "GET")
                .route(web::get().to(crate::oidc::endpoints::discovery)),
        )
        .service(
            resource("/oidc/authorize", "GET")
                .route(web::get().to(crate::oidc::authorize::authorize)),
        )
        .service(
            resource("/oidc/token", "POST").route(web::post().to(crate::oidc::endpoints::token)),
        )
        .service(
            resource("/oidc/userinfo", "GET, POST")
                .route(web::get().to(crate::oidc::endpoints::userinfo))
                .route(web::post().to(crate::oidc::endpoints::userinfo)),
        )
        .service(
            resource("/oidc/revoke", "POST").route(web::post().to(crate::oidc::endpoints::revoke)),
        )
        .service(
            resource("/oidc/introspect", "POST")
                .route(web::post().to(crate::oidc::endpoints::introspect)),
        )
        .service(
            resource("/oidc/logout", "GET").route(web::get().to(crate::oidc::endpoints::logout)),
        )
        .service(resource("/health", "GET").route(web::get().to(ops::health)))
        .service(resource("/metrics", "GET").route(web::get().to(ops::metrics)))
        .service(resource("/openapi.json", "GET").route(web::get().to(openapi::serve)));
}

/// A resource that answers other methods with a JSON 405 and `Allow: allow`.
pub fn resource(path: &str, allow: &'static str) -> Resource {
    web::resource(path).default_service(web::to(move || async move {
        Err::<HttpResponse, ApiError>(ApiError::MethodNotAllowed(allow))
    }))
}

/// The answer for paths that match no route.
pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound("no such route"))
}
