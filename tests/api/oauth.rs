//! The token endpoint, driven by a stock OAuth2 client library (the `oauth2` crate).

use oauth2::basic::BasicClient;
use oauth2::{
    ClientId, RefreshToken, ResourceOwnerPassword, ResourceOwnerUsername, TokenResponse, TokenUrl,
};
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{without_limits, TestApp, PASSWORD};

fn client(
    app: &TestApp,
) -> BasicClient<
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointSet,
> {
    BasicClient::new(ClientId::new("any-client".into()))
        .set_token_uri(TokenUrl::new(app.url("/auth/token")).unwrap())
}

#[tokio::test]
async fn a_stock_oauth2_client_logs_in_and_refreshes() {
    let app = TestApp::spawn().await;
    app.register("olga@example.com", PASSWORD).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let token = client(&app)
        .exchange_password(
            &ResourceOwnerUsername::new("olga@example.com".into()),
            &ResourceOwnerPassword::new(PASSWORD.into()),
        )
        .request_async(&http)
        .await
        .unwrap();
    let access = token.access_token().secret().clone();
    assert_eq!(
        app.get_auth("/auth/me", &access).await.status(),
        StatusCode::OK
    );
    assert_eq!(token.expires_in().unwrap().as_secs(), 3600);
    let refresh = token.refresh_token().unwrap().secret().clone();

    let refreshed = client(&app)
        .exchange_refresh_token(&RefreshToken::new(refresh.clone()))
        .request_async(&http)
        .await
        .unwrap();
    assert_ne!(refreshed.refresh_token().unwrap().secret(), &refresh);
    // Reuse of the rotated token is refused, as invalid_grant.
    let reused = client(&app)
        .exchange_refresh_token(&RefreshToken::new(refresh))
        .request_async(&http)
        .await;
    match reused {
        Err(oauth2::RequestTokenError::ServerResponse(e)) => {
            assert_eq!(e.error().to_string(), "invalid_grant");
        }
        other => panic!("expected invalid_grant, got {other:?}"),
    }
    let wrong = client(&app)
        .exchange_password(
            &ResourceOwnerUsername::new("olga@example.com".into()),
            &ResourceOwnerPassword::new("wrong wrong wrong".into()),
        )
        .request_async(&http)
        .await;
    assert!(matches!(
        wrong,
        Err(oauth2::RequestTokenError::ServerResponse(_))
    ));
}

async fn form(
    app: &TestApp,
    body: &str,
    content_type: &str,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let res = app
        .client
        .post(app.url("/auth/token"))
        .header("content-type", content_type)
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    (status, headers, res.json().await.unwrap())
}

const FORM: &str = "application/x-www-form-urlencoded";

#[tokio::test]
async fn rfc6749_errors_and_headers() {
    let app = TestApp::spawn_with(without_limits).await;
    app.register("pia@example.com", PASSWORD).await;
    let (status, headers, body) = form(
        &app,
        &format!(
            "grant_type=password&username=pia%40example.com&password={}",
            PASSWORD.replace(' ', "+")
        ),
        FORM,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(body["token_type"], "Bearer");
    for key in ["access_token", "refresh_token", "expires_in"] {
        assert!(!body[key].is_null(), "{key}");
    }

    for (req, error) in [
        ("grant_type=client_credentials", "unsupported_grant_type"),
        (
            "grant_type=password&username=pia%40example.com",
            "invalid_request",
        ),
        ("username=x&password=y", "invalid_request"),
        ("grant_type=refresh_token", "invalid_request"),
        (
            "grant_type=password&grant_type=password&username=a&password=b",
            "invalid_request",
        ),
        (
            "grant_type=refresh_token&refresh_token=bogus",
            "invalid_grant",
        ),
        (
            "grant_type=password&username=pia%40example.com&password=nope",
            "invalid_grant",
        ),
    ] {
        let (status, _, body) = form(&app, req, FORM).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{req}");
        assert_eq!(body["error"], error, "{req}");
        assert!(body["error_description"].is_string());
    }
    let (status, _, body) = form(&app, "{\"grant_type\":\"password\"}", "application/json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_request");
}

#[tokio::test]
async fn token_endpoint_shares_the_login_rules() {
    let app = TestApp::spawn().await;
    for _ in 0..5 {
        form(
            &app,
            "grant_type=password&username=q%40example.com&password=nope",
            FORM,
        )
        .await;
    }
    let (status, headers, body) = form(
        &app,
        "grant_type=password&username=q%40example.com&password=nope",
        FORM,
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["error"], "too_many_requests");
    assert!(body["error_description"]
        .as_str()
        .unwrap()
        .starts_with("Too many login attempts."));
    assert_eq!(
        body["retry_after"],
        headers["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    );
    // The JSON login shares the same budget.
    assert_eq!(
        app.login("q@example.com", "nope nope nope").await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

/// Runs `tests/api/oauth_clients.py` with one Python library against `app`.
async fn python_client(app: &TestApp, library: &str, email: &str) -> Value {
    let mut cmd = crate::tools::python_command();
    cmd.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/api/oauth_clients.py"
    ))
    .args([library, &app.address, email, PASSWORD]);
    let out = crate::tools::output(cmd).await;
    assert!(
        out.status.success(),
        "{library} could not log in and refresh:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the script's JSON")
}

#[tokio::test]
async fn python_oauth_libraries_log_in_and_refresh() {
    let app = TestApp::spawn().await;
    // authlib sends `application/x-www-form-urlencoded;charset=UTF-8`.
    for (library, email) in [
        ("authlib", "authlib@example.com"),
        ("requests-oauthlib", "oauthlib@example.com"),
    ] {
        app.register(email, PASSWORD).await;
        let got = python_client(&app, library, email).await;
        assert_eq!(got["me_first"]["email"], email, "{library}: {got}");
        assert_eq!(got["me_second"]["email"], email, "{library}: {got}");
        assert_eq!(got["token_type"], "Bearer", "{library}");
        assert_eq!(got["expires_in"], 3600, "{library}");
        assert_eq!(got["rotated"], true, "{library}");
        assert_eq!(got["new_access"], true, "{library}");
    }
}

#[tokio::test]
async fn media_types_are_matched_as_rfc_9110_says() {
    let app = TestApp::spawn_with(without_limits).await;
    app.register("mime@example.com", PASSWORD).await;
    let body = format!(
        "grant_type=password&username=mime%40example.com&password={}",
        PASSWORD.replace(' ', "+")
    );
    for content_type in [
        "application/x-www-form-urlencoded;charset=UTF-8",
        "application/x-www-form-urlencoded; charset=utf-8",
        "Application/X-WWW-Form-Urlencoded",
    ] {
        let res = app
            .client
            .post(app.url("/auth/token"))
            .header("content-type", content_type)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{content_type}");
    }
    let login = serde_json::json!({"email": "mime@example.com", "password": PASSWORD}).to_string();
    for content_type in [
        "application/json;charset=UTF-8",
        "APPLICATION/JSON; charset=utf-8",
        "application/vnd.api+json",
    ] {
        let res = app
            .client
            .post(app.url("/auth/login"))
            .header("content-type", content_type)
            .body(login.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{content_type}");
    }
    for (path, content_type, payload) in [
        ("/auth/token", "text/plain", body.as_str()),
        ("/auth/token", "application/json", body.as_str()),
        ("/auth/login", "text/json", login.as_str()),
        ("/auth/login", "application/json; charset", login.as_str()),
        (
            "/auth/login",
            "application/x-www-form-urlencoded",
            login.as_str(),
        ),
    ] {
        let res = app
            .client
            .post(app.url(path))
            .header("content-type", content_type)
            .body(payload.to_owned())
            .send()
            .await
            .unwrap();
        assert_eq!(
            res.status(),
            StatusCode::BAD_REQUEST,
            "{path} {content_type}"
        );
        let error: Value = res.json().await.unwrap();
        let code = if path == "/auth/token" {
            "invalid_request"
        } else {
            "invalid_content_type"
        };
        assert_eq!(error["error"], code, "{path} {content_type}");
    }
}
