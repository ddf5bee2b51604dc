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
    ("post", "/admin/users"),
    ("put", "/admin/users/{id}/groups"),
    ("post", "/admin/users/{id}/mfa/reset"),
    ("post", "/admin/users/{id}/disable"),
    ("post", "/admin/users/{id}/enable"),
    ("get", "/authz/auth-request"),
    ("get", "/authz/forward-auth"),
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
        assert!(
            !path.contains("{verb}"),
            "{path}: every concrete path on its own"
        );
        let concrete = path.replace("{id}", "00000000-0000-0000-0000-000000000000");
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

/// Requests sent and the answers they got, kept for validation.
struct Samples<'a> {
    app: &'a TestApp,
    kept: Vec<Value>,
}

/// A request body.
enum Body {
    Json(Value),
    Form(&'static str),
    Raw(&'static str, Vec<u8>),
}

impl Samples<'_> {
    /// Sends a request, keeps the answer, and returns its status and JSON.
    async fn send(
        &mut self,
        method: &str,
        path_and_query: &str,
        token: Option<&str>,
        body: Option<Body>,
    ) -> (StatusCode, Value) {
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let mut req = self
            .app
            .client
            .request(method.clone(), self.app.url(path_and_query));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        req = match body {
            None => req,
            Some(Body::Json(v)) => req.json(&v),
            Some(Body::Form(text)) => req
                .header("content-type", "application/x-www-form-urlencoded")
                .body(text),
            Some(Body::Raw(content_type, bytes)) => {
                req.header("content-type", content_type).body(bytes)
            }
        };
        let res = req.send().await.unwrap();
        let status = res.status();
        let content_type = res
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        let text = res.text().await.unwrap();
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        self.kept.push(serde_json::json!({
            "method": method.as_str().to_lowercase(),
            "path": path,
            "query": query,
            "status": status.as_u16(),
            "content_type": content_type,
            "body": text,
        }));
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

/// Real answers of every documented route, successes and errors, validate
/// against the document with a stock OpenAPI validator (openapi-core).
#[tokio::test]
async fn real_answers_validate_against_the_document() {
    use serde_json::json;
    let app = TestApp::spawn().await;
    let mut s = Samples {
        app: &app,
        kept: Vec::new(),
    };
    let email = "openapi@example.com";
    let pw = crate::helpers::PASSWORD;

    s.send("get", "/health", None, None).await;
    s.send("get", "/.well-known/jwks.json", None, None).await;
    s.send("get", "/metrics", None, None).await;
    let reg = Body::Json(json!({ "email": email, "password": pw, "name": "Ada" }));
    assert_eq!(
        s.send("post", "/auth/register", None, Some(reg)).await.0,
        StatusCode::CREATED
    );
    let taken = Body::Json(json!({ "email": email, "password": pw }));
    s.send("post", "/auth/register", None, Some(taken)).await;
    let weak = Body::Json(json!({ "email": "weak@example.com", "password": "short" }));
    s.send("post", "/auth/register", None, Some(weak)).await;
    s.send(
        "post",
        "/auth/register",
        None,
        Some(Body::Raw("application/json", b"{".to_vec())),
    )
    .await;
    s.send(
        "post",
        "/auth/register",
        None,
        Some(Body::Raw("text/plain", b"{}".to_vec())),
    )
    .await;
    let huge = vec![b' '; 20_000];
    s.send(
        "post",
        "/auth/register",
        None,
        Some(Body::Raw("application/json", huge)),
    )
    .await;

    let login = || Body::Json(json!({ "email": email, "password": pw }));
    let (status, pair) = s.send("post", "/auth/login", None, Some(login())).await;
    assert_eq!(status, StatusCode::OK);
    let access = pair["access_token"].as_str().unwrap().to_owned();
    let refresh = pair["refresh_token"].as_str().unwrap().to_owned();
    let wrong = Body::Json(json!({ "email": email, "password": "wrong wrong wrong" }));
    s.send("post", "/auth/login", None, Some(wrong)).await;
    s.send("get", "/auth/me", Some(&access), None).await;
    s.send("get", "/auth/me", Some("not-a-token"), None).await;
    let (_, sessions) = s.send("get", "/auth/sessions", Some(&access), None).await;
    assert_eq!(sessions["sessions"][0]["current"], true);
    let r = Body::Json(json!({ "refresh_token": refresh }));
    let (_, rotated) = s.send("post", "/auth/refresh", None, Some(r)).await;
    let again = Body::Json(json!({ "refresh_token": refresh }));
    s.send("post", "/auth/refresh", None, Some(again)).await;
    // The reuse revoked that session: sign in again.
    assert!(rotated["refresh_token"].is_string());
    let (_, pair) = s.send("post", "/auth/login", None, Some(login())).await;
    let access = pair["access_token"].as_str().unwrap().to_owned();
    s.send(
        "delete",
        &format!("/auth/sessions/{}", uuid::Uuid::new_v4()),
        Some(&access),
        None,
    )
    .await;

    let form = Body::Form(
        "grant_type=password&username=openapi%40example.com&password=correct+horse+battery+staple",
    );
    let (status, _) = s.send("post", "/auth/token", None, Some(form)).await;
    assert_eq!(status, StatusCode::OK);
    s.send(
        "post",
        "/auth/token",
        None,
        Some(Body::Form("grant_type=magic")),
    )
    .await;
    s.send(
        "post",
        "/auth/token",
        None,
        Some(Body::Form("grant_type=password&username=x")),
    )
    .await;
    s.send(
        "post",
        "/auth/token",
        None,
        Some(Body::Form("grant_type=refresh_token&refresh_token=bad")),
    )
    .await;

    // Two-factor: setup, a wrong code, enable, a second step, backup codes, disable.
    let (_, setup) = s
        .send("post", "/auth/mfa/totp/setup", Some(&access), None)
        .await;
    let secret = totp_rs::Secret::Encoded(setup["secret"].as_str().unwrap().to_owned())
        .to_bytes()
        .unwrap();
    let now = || u64::try_from(portcullis::clock::Clock::now_secs(&app.clock)).unwrap();
    let code = |at: u64| portcullis::auth::totp::code_at(&secret, at);
    let bad = Body::Json(json!({ "password": pw, "code": "000000x" }));
    s.send("post", "/auth/mfa/totp/enable", Some(&access), Some(bad))
        .await;
    let on = Body::Json(json!({ "password": pw, "code": code(now()) }));
    let (status, codes) = s
        .send("post", "/auth/mfa/totp/enable", Some(&access), Some(on))
        .await;
    assert_eq!(status, StatusCode::OK);
    app.clock.advance(std::time::Duration::from_secs(30));
    let (_, challenge) = s.send("post", "/auth/login", None, Some(login())).await;
    let mfa_token = challenge["mfa_token"].as_str().unwrap().to_owned();
    let step = Body::Json(json!({ "mfa_token": "nope", "code": "123456" }));
    s.send("post", "/auth/login/mfa", None, Some(step)).await;
    let step = Body::Json(json!({ "mfa_token": mfa_token, "code": codes["backup_codes"][0] }));
    let (status, _) = s.send("post", "/auth/login/mfa", None, Some(step)).await;
    assert_eq!(status, StatusCode::OK);
    let fresh = Body::Json(json!({ "code": code(now()) }));
    s.send("post", "/auth/mfa/backup-codes", Some(&access), Some(fresh))
        .await;
    app.clock.advance(std::time::Duration::from_secs(30));
    let off = Body::Json(json!({ "password": pw, "code": code(now()) }));
    let (status, _) = s
        .send("post", "/auth/mfa/totp/disable", Some(&access), Some(off))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    // Password reset and change.
    let ask = Body::Json(json!({ "email": email }));
    s.send("post", "/auth/password-reset/request", None, Some(ask))
        .await;
    let bad = Body::Json(json!({ "email": "not an email" }));
    s.send("post", "/auth/password-reset/request", None, Some(bad))
        .await;
    let confirm =
        Body::Json(json!({ "token": "nope", "new_password": "another long passphrase here" }));
    s.send("post", "/auth/password-reset/confirm", None, Some(confirm))
        .await;
    let change =
        Body::Json(json!({ "current_password": "wrong wrong wrong", "new_password": "x" }));
    s.send("post", "/auth/password/change", Some(&access), Some(change))
        .await;

    // Administration, refused and allowed.
    s.send("get", "/admin/users", Some(&access), None).await;
    app.execute(&format!(
        "UPDATE users SET is_admin = TRUE WHERE email = '{email}'"
    ));
    s.send("get", "/admin/users?email=openapi", Some(&access), None)
        .await;
    let other = app.signed_up("other@example.com").await;
    let other_id = {
        let me: Value = app
            .get_auth("/auth/me", other["access_token"].as_str().unwrap())
            .await
            .json()
            .await
            .unwrap();
        me["id"].as_str().unwrap().to_owned()
    };
    s.send(
        "post",
        &format!("/admin/users/{other_id}/disable"),
        Some(&access),
        None,
    )
    .await;
    s.send(
        "post",
        &format!("/admin/users/{other_id}/enable"),
        Some(&access),
        None,
    )
    .await;
    s.send(
        "post",
        &format!("/admin/users/{}/disable", uuid::Uuid::new_v4()),
        Some(&access),
        None,
    )
    .await;
    s.send("get", "/admin/audit?limit=5", Some(&access), None)
        .await;
    s.send("get", "/admin/audit?action=nope", Some(&access), None)
        .await;
    s.send("get", "/admin/audit/verify", Some(&access), None)
        .await;
    s.send("get", "/admin/rate-limits", Some(&access), None)
        .await;
    s.send(
        "get",
        "/admin/rate-limits?key=127.0.0.1",
        Some(&access),
        None,
    )
    .await;
    s.send(
        "delete",
        "/admin/rate-limits?key=127.0.0.1&rule=login_ip",
        Some(&access),
        None,
    )
    .await;
    s.send("delete", "/admin/rate-limits", Some(&access), None)
        .await;

    // Limited: the login rules answer 429 with their body.
    for _ in 0..6 {
        let wrong =
            Body::Json(json!({ "email": "x@example.com", "password": "wrong wrong wrong" }));
        s.send("post", "/auth/login", None, Some(wrong)).await;
    }
    let form = Body::Form("grant_type=password&username=x%40example.com&password=wrong");
    let (status, _) = s.send("post", "/auth/token", None, Some(form)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let (status, _) = s.send("post", "/auth/logout", Some(&access), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    s.send("post", "/auth/logout-all", Some(&access), None)
        .await;

    let statuses: std::collections::BTreeSet<u64> = s
        .kept
        .iter()
        .map(|k| k["status"].as_u64().unwrap())
        .collect();
    for expected in [200, 201, 202, 204, 400, 401, 403, 404, 409, 413, 429] {
        assert!(
            statuses.contains(&expected),
            "no {expected} among the samples: {statuses:?}"
        );
    }

    let doc: Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let doc_path = dir.path().join("openapi.json");
    let samples_path = dir.path().join("samples.json");
    std::fs::write(&doc_path, doc.to_string()).unwrap();
    std::fs::write(&samples_path, Value::Array(s.kept).to_string()).unwrap();
    let mut cmd = crate::tools::python_command();
    cmd.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/api/validate_openapi.py"
    ))
    .arg(&doc_path)
    .arg(&samples_path);
    let out = crate::tools::output(cmd).await;
    assert!(
        out.status.success(),
        "answers that contradict /openapi.json:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
