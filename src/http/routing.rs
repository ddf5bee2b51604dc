//! The pieces routes are made of.

use actix_web::web;
use actix_web::{HttpResponse, Resource};

use crate::error::ApiError;

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
