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
pub mod origin;
pub mod passkeys;
pub mod request_id;
pub mod reset;
pub mod routing;
pub mod sessions;
pub mod state;

use actix_web::web::{self, ServiceConfig};

pub use routing::{not_found, resource};
pub use state::AppState;

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
        .service(
            resource("/auth/passkeys/login/start", "POST")
                .route(web::post().to(passkeys::login_start)),
        )
        .service(
            resource("/auth/passkeys/login/finish", "POST")
                .route(web::post().to(passkeys::login_finish)),
        )
        .service(
            resource("/auth/passkeys/register/start", "POST")
                .route(web::post().to(passkeys::register_start)),
        )
        .service(
            resource("/auth/passkeys/register/finish", "POST")
                .route(web::post().to(passkeys::register_finish)),
        )
        .service(resource("/auth/passkeys", "GET").route(web::get().to(passkeys::list)))
        .service(
            resource("/auth/passkeys/{id}", "DELETE").route(web::delete().to(passkeys::remove)),
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
        .service(resource("/health", "GET").route(web::get().to(ops::health)))
        .service(resource("/metrics", "GET").route(web::get().to(ops::metrics)))
        .service(resource("/openapi.json", "GET").route(web::get().to(openapi::serve)));
}
