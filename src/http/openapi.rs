//! `GET /openapi.json`: the OpenAPI 3 description of every route, built with
//! utoipa from the handlers themselves: each handler carries its
//! `#[utoipa::path]`, and every schema is derived from the type that handler
//! reads or writes, so the document cannot drift from the code. A test
//! compares its paths with the router's, and another validates real answers
//! against it.

use std::sync::OnceLock;

use actix_web::HttpResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{accounts, admin, authz, mfa, oauth, ops, passkeys, reset, sessions};

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "portcullis", description = "Authentication server: accounts, sessions, two-factor, rate limits, audit log."),
    paths(accounts::register, accounts::login, mfa::login, oauth::token, accounts::refresh,
        sessions::logout, sessions::logout_all, accounts::me, sessions::list, sessions::revoke,
        accounts::change_password, reset::request, reset::confirm, mfa::setup, mfa::enable,
        mfa::disable, mfa::backup_codes, passkeys::register_start, passkeys::register_finish,
        passkeys::list, passkeys::remove, passkeys::login_start, passkeys::login_finish, admin::users, admin::create_user, admin::disable_user,
        admin::enable_user, admin::set_groups, admin::reset_mfa, authz::auth_request, authz::forward_auth,
        admin::audit, admin::audit_verify, admin::rate_limits, admin::clear_rate_limits,
        ops::jwks, ops::health, ops::metrics, serve),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

/// The document as JSON, built once.
pub fn document() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        ApiDoc::openapi()
            .to_json()
            .unwrap_or_else(|_| "{}".to_owned())
    })
}

/// `GET /openapi.json`
#[utoipa::path(get, path = "/openapi.json", tag = "operations", responses((status = 200, description = "This document")))]
pub async fn serve() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(document())
}
