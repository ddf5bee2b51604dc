use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::TestApp;

/// Every route of the SPEC, as (method, path).
const SPEC_ROUTES: &[(&str, &str)] = &[
    ("post", "/auth/register"),
    ("post", "/auth/login"),
    ("post", "/auth/login/mfa"),
    ("post", "/auth/token"),
    ("post", "/auth/refresh"),
    ("post", "/auth/logout"),
    ("post", "/auth/logout-all"),
    ("get", "/auth/me"),
    ("get", "/auth/sessions"),
    ("delete", "/auth/sessions/{id}"),
    ("post", "/auth/password/change"),
    ("post", "/auth/password-reset/request"),
    ("post", "/auth/password-reset/confirm"),
    ("post", "/auth/mfa/totp/setup"),
    ("post", "/auth/mfa/totp/enable"),
    ("post", "/auth/mfa/totp/disable"),
    ("post", "/auth/mfa/backup-codes"),
    ("get", "/admin/audit"),
    ("get", "/admin/audit/verify"),
    ("get", "/admin/rate-limits"),
    ("delete", "/admin/rate-limits"),
    ("get", "/admin/users"),
    ("post", "/admin/users/{id}/{verb}"),
    ("get", "/.well-known/jwks.json"),
    ("get", "/health"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
];

#[tokio::test]
async fn the_document_describes_every_route_and_only_real_ones() {
    let app = TestApp::spawn().await;
    let res = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let doc: Value = res.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());

    let mut documented = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.push((method.clone(), path.clone()));
        }
    }
    for (method, path) in SPEC_ROUTES {
        assert!(
            documented.iter().any(|(m, p)| m == method && p == path),
            "{method} {path} is not documented"
        );
    }
    // Each documented operation reaches a real handler (not the 404 / 405 of the router).
    for (method, path) in &documented {
        let concrete = path
            .replace("{id}", "00000000-0000-0000-0000-000000000000")
            .replace("{verb}", "disable");
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let res = app
            .client
            .request(method.clone(), app.url(&concrete))
            .send()
            .await
            .unwrap();
        let status = res.status();
        let body = res.text().await.unwrap();
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert!(
            !body.contains("no such route"),
            "{method} {path} is not routed"
        );
    }
    // Operations declare their error bodies.
    let login = &doc["paths"]["/auth/login"]["post"]["responses"];
    for status in ["200", "400", "401", "429"] {
        assert!(login[status].is_object(), "/auth/login {status}");
    }
}
