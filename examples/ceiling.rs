//! The HTTP ceiling for the load harness (`benches/load.py`): a bare actix-web
//! server on the same runtime, worker count and headers as portcullis that does
//! no work at all. `POST /auth/login` answers a fixed 429 and `GET /auth/me` a
//! fixed 200, each with a body of the size portcullis sends; `GET
//! /authz/forward-auth` answers a fixed 200 with the identity headers.
//!
//! `cargo run --release --example ceiling -- 127.0.0.1:0` prints the address it bound.

use actix_web::{http::header, web, App, HttpResponse, HttpServer};

const BLOCKED: &str = r#"{"error":"too_many_requests","message":"Too many login attempts. Try again in 793 seconds.","retry_after":793}"#;
const ME: &str = r#"{"id":"0195f3a2-6c1e-7d4b-9a8e-2f0c1d3b4a5e","email":"alice@example.com","name":"Alice","is_admin":false,"mfa_enabled":false,"created_at":"2026-11-28T02:16:40.000Z","last_login_at":"2026-11-28T02:16:40.000Z"}"#;
const USERINFO: &str = r#"{"sub":"0195f3a2-6c1e-7d4b-9a8e-2f0c1d3b4a5e","email":"alice@example.com","email_verified":false,"groups":["ops","wiki"]}"#;

/// Reads the body, as any real handler must before answering (an unread body
/// costs actix the connection's keep-alive).
async fn blocked(_body: web::Bytes) -> HttpResponse {
    HttpResponse::TooManyRequests()
        .insert_header(("RateLimit-Limit", "5"))
        .insert_header(("RateLimit-Remaining", "0"))
        .insert_header(("RateLimit-Reset", "793"))
        .insert_header(("RateLimit-Policy", "5;w=900"))
        .insert_header((header::RETRY_AFTER, "793"))
        .insert_header(("X-Request-Id", "0195f3a2-6c1e-7d4b-9a8e-2f0c1d3b4a5e"))
        .content_type("application/json")
        .body(BLOCKED)
}

async fn me() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("X-Request-Id", "0195f3a2-6c1e-7d4b-9a8e-2f0c1d3b4a5e"))
        .content_type("application/json")
        .body(ME)
}

/// What portcullis answers a proxy for a signed-in user.
async fn forward_auth() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header(("Remote-User", "alice@example.com"))
        .insert_header(("Remote-Email", "alice@example.com"))
        .insert_header(("Remote-Name", "Alice"))
        .insert_header(("Remote-Groups", "ops,wiki"))
        .insert_header(("X-Request-Id", "0195f3a2-6c1e-7d4b-9a8e-2f0c1d3b4a5e"))
        .finish()
}

/// What portcullis answers `GET /oidc/userinfo` for a grant of `openid email groups`.
async fn userinfo() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header(("X-Request-Id", "0195f3a2-6c1e-7d4b-9a8e-2f0c1d3b4a5e"))
        .content_type("application/json")
        .body(USERINFO)
}

async fn health() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(r#"{"status":"ok"}"#)
}

fn main() -> std::io::Result<()> {
    let bind = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    actix_web::rt::System::new().block_on(async move {
        let server = HttpServer::new(|| {
            App::new()
                .route("/auth/login", web::post().to(blocked))
                .route("/auth/me", web::get().to(me))
                .route("/health", web::get().to(health))
                .route("/authz/forward-auth", web::get().to(forward_auth))
                .route("/oidc/userinfo", web::get().to(userinfo))
        })
        .workers(workers)
        .bind(&bind)?;
        for addr in server.addrs() {
            println!("listening on {addr}");
        }
        server.run().await
    })
}
