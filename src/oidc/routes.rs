//! Where the provider answers.

use actix_web::web::{self, ServiceConfig};

use super::{authorize, endpoints};
use crate::http::routing::resource;

/// The provider's routes (SPEC section 13); the consent page only with the
/// other pages, which it needs.
pub fn routes(cfg: &mut ServiceConfig, pages: bool) {
    cfg.service(
        resource("/.well-known/openid-configuration", "GET")
            .route(web::get().to(endpoints::discovery)),
    )
    .service(resource("/oidc/authorize", "GET").route(web::get().to(authorize::authorize)))
    .service(resource("/oidc/token", "POST").route(web::post().to(endpoints::token)))
    .service(
        resource("/oidc/userinfo", "GET, POST")
            .route(web::get().to(endpoints::userinfo))
            .route(web::post().to(endpoints::userinfo)),
    )
    .service(resource("/oidc/revoke", "POST").route(web::post().to(endpoints::revoke)))
    .service(resource("/oidc/introspect", "POST").route(web::post().to(endpoints::introspect)))
    .service(resource("/oidc/logout", "GET").route(web::get().to(endpoints::logout)));
    if pages {
        cfg.service(
            resource("/ui/consent", "GET, POST")
                .route(web::get().to(authorize::consent_page))
                .route(web::post().to(authorize::consent)),
        );
    }
}
