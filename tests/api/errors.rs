use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{expect_error, TestApp, PASSWORD};

#[tokio::test]
async fn malformed_bodies_get_json_400s_and_change_nothing() {
    let app = TestApp::spawn().await;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("application/json", b"{not json".to_vec(), "invalid_json"),
        ("application/json", b"".to_vec(), "invalid_json"),
        ("application/json", br#"{"email": "a@example.com"}"#.to_vec(), "invalid_request"),
        ("application/json", br#"{"email": 5, "password": "x"}"#.to_vec(), "invalid_request"),
        ("application/json", br#"[1, 2]"#.to_vec(), "invalid_request"),
        ("application/json", b"{\"email\": \"\xff\xfe@example.com\", \"password\": \"correct horse battery staple\"}".to_vec(), "invalid_json"),
        ("text/plain", br#"{"email": "a@example.com", "password": "correct horse battery staple"}"#.to_vec(), "invalid_content_type"),
        ("application/x-www-form-urlencoded", b"email=a@example.com".to_vec(), "invalid_content_type"),
    ];
    for path in ["/auth/register", "/auth/login", "/auth/refresh"] {
        for (ct, body, code) in &cases {
            let res = app
                .client
                .post(app.url(path))
                .header("content-type", *ct)
                .body(body.clone())
                .send()
                .await
                .unwrap();
            let got = expect_error(res, StatusCode::BAD_REQUEST, code).await;
            assert!(!got.to_string().contains("correct horse"), "{got}");
        }
        let res = app.client.post(app.url(path)).send().await.unwrap();
        expect_error(res, StatusCode::BAD_REQUEST, "invalid_content_type").await;
    }
    let count = app.count("SELECT count(*) FROM users");
    assert_eq!(count, 0);
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let app = TestApp::spawn().await;
    let big = format!(
        r#"{{"email": "a@example.com", "password": "{}"}}"#,
        "x".repeat(20_000)
    );
    let res = app
        .client
        .post(app.url("/auth/register"))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let app = TestApp::spawn().await;
    let res = app.client.get(app.url("/nope")).send().await.unwrap();
    expect_error(res, StatusCode::NOT_FOUND, "not_found").await;
    let res = app.client.get(app.url("/auth/login")).send().await.unwrap();
    expect_error(res, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
    let res = app
        .client
        .put(app.url("/auth/sessions/abc"))
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let app = TestApp::spawn().await;
    let res = app
        .client
        .get(app.url("/health"))
        .header("x-request-id", "abc-123:x.y_z")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "abc-123:x.y_z");
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "ok");

    for bad in ["has space", &"a".repeat(129), "semi;colon"] {
        let res = app
            .client
            .get(app.url("/nope"))
            .header("x-request-id", bad)
            .send()
            .await
            .unwrap();
        let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert_ne!(id, bad);
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
    }
    let res = app.login("x@example.com", PASSWORD).await;
    assert!(res.headers().contains_key("x-request-id"));
}

#[tokio::test]
async fn metrics_count_requests_logins_limits_and_audit_rows() {
    let app = TestApp::spawn().await;
    app.register("met@example.com", PASSWORD).await;
    app.login("met@example.com", PASSWORD).await;
    for _ in 0..6 {
        app.login("met@example.com", "wrong wrong wrong").await;
    }
    let res = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = res.text().await.unwrap();
    for series in [
        "portcullis_http_requests_total{route=\"/auth/login\",status=\"200\"} 1",
        "portcullis_http_requests_total{route=\"/auth/login\",status=\"401\"} 5",
        "portcullis_http_requests_total{route=\"/auth/login\",status=\"429\"} 1",
        "portcullis_logins_total{outcome=\"success\"} 1",
        "portcullis_logins_total{outcome=\"failure\"} 5",
        "portcullis_logins_total{outcome=\"rate_limited\"} 1",
        "portcullis_rate_limit_rejections_total{rule=\"login_ip\"} 1",
        "portcullis_hash_queue_depth 0",
    ] {
        assert!(text.contains(series), "{series} missing in\n{text}");
    }
    let rows: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("portcullis_audit_rows_written_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(rows >= 8, "{rows}");
    assert!(text.contains("portcullis_audit_write_seconds_bucket"));
    // Windows held: register_ip_hourly, login_ip and login_account at least.
    let windows: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("portcullis_rate_limit_keys "))
        .unwrap()
        .parse()
        .unwrap();
    if crate::backends::limiter_in_redis() {
        assert_eq!(windows, 0, "windows in Redis are not held in memory");
    } else {
        assert!((3..=10).contains(&windows), "{windows}");
    }
}

#[tokio::test]
async fn a_405_names_the_allowed_methods() {
    let app = TestApp::spawn().await;
    let res = app.client.get(app.url("/auth/login")).send().await.unwrap();
    assert_eq!(res.headers()["allow"], "POST");
    let res = app
        .client
        .put(app.url("/admin/rate-limits"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["allow"], "GET, DELETE");
    expect_error(res, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
}
