//! SPEC section 12 over HTTP: the two forward-auth endpoints as a proxy asks
//! them (the real nginx and Caddy come with their own tests).

use reqwest::header::LOCATION;
use reqwest::{RequestBuilder, StatusCode};
use serde_json::{json, Value};

use crate::groups::extras;
use crate::helpers::{expect_error, token, TestApp, PASSWORD};

const RULES: &str = r#"
default_policy = "deny"
[[rules]]
domain = "public.example.com"
policy = "bypass"
[[rules]]
domain = "*.example.com"
paths = ["/admin/"]
policy = "two_factor"
[[rules]]
domain = "ops.example.com"
policy = "one_factor"
subjects = ["group:ops"]
[[rules]]
domain = "*.example.com"
policy = "one_factor"
"#;

async fn app() -> TestApp {
    TestApp::spawn_with(|c| {
        c.server.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
        c.forward_auth = toml::from_str(RULES).unwrap();
    })
    .await
}

/// What Traefik and Caddy send.
fn forward(app: &TestApp, method: &str, host: &str, uri: &str) -> RequestBuilder {
    app.client
        .get(app.url("/authz/forward-auth"))
        .header("x-forwarded-method", method)
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", host)
        .header("x-forwarded-uri", uri)
}

/// What nginx sends.
fn original(app: &TestApp, method: &str, url: &str) -> RequestBuilder {
    app.client
        .get(app.url("/authz/auth-request"))
        .header("x-original-method", method)
        .header("x-original-url", url)
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test]
async fn strangers_are_sent_to_sign_in_the_way_each_proxy_wants() {
    let app = app().await;
    let login = |rd: &str| {
        format!(
            "{}/ui/login?rd={}",
            app.address,
            url::form_urlencoded::byte_serialize(rd.as_bytes()).collect::<String>()
        )
    };
    // nginx: 401 with the login page in Location.
    let res = original(&app, "GET", "https://wiki.example.com/page?x=1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        res.headers()[LOCATION],
        login("https://wiki.example.com/page?x=1").as_str()
    );
    // Traefik/Caddy: a browser is redirected (302 for GET, 303 for POST)...
    let client = no_redirects();
    let browse = |method: &str| {
        client
            .get(app.url("/authz/forward-auth"))
            .header("x-forwarded-method", method)
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "wiki.example.com")
            .header("x-forwarded-uri", "/page")
            .header("accept", "text/html,application/xhtml+xml")
    };
    let res = browse("GET").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::FOUND);
    assert_eq!(
        res.headers()[LOCATION],
        login("https://wiki.example.com/page").as_str()
    );
    assert_eq!(
        browse("POST").send().await.unwrap().status(),
        StatusCode::SEE_OTHER
    );
    // ...a script gets 401.
    let xhr = browse("GET")
        .header("x-requested-with", "XMLHttpRequest")
        .send()
        .await
        .unwrap();
    assert_eq!(xhr.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(xhr.headers()["www-authenticate"], "Bearer");
    let api = forward(&app, "GET", "wiki.example.com", "/")
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), StatusCode::UNAUTHORIZED);
    assert!(api.headers().get(LOCATION).is_none());
    // bypass lets anyone through, without identity; deny and no rule refuse.
    let open = forward(&app, "GET", "public.example.com", "/")
        .send()
        .await
        .unwrap();
    assert_eq!(open.status(), StatusCode::OK);
    assert!(open.headers().get("remote-user").is_none());
    let other = forward(&app, "GET", "example.org", "/")
        .send()
        .await
        .unwrap();
    expect_error(other, StatusCode::FORBIDDEN, "forbidden").await;
}

#[tokio::test]
async fn signed_in_users_pass_with_who_they_are() {
    let app = app().await;
    let pair = app.signed_up("ada@example.com").await;
    let access = token(&pair, "access_token");
    let res = forward(&app, "GET", "wiki.example.com", "/")
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let h = res.headers();
    assert_eq!(h["remote-user"], "ada@example.com");
    assert_eq!(h["remote-email"], "ada@example.com");
    assert_eq!(h["remote-groups"], "");
    assert_eq!(h["cache-control"], "no-store");
    // Outside the rule's subjects: 403, audited, folded.
    for _ in 0..3 {
        let res = forward(&app, "GET", "ops.example.com", "/x")
            .bearer_auth(&access)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
    }
    let denied = extras(&app, "forward_auth_denied");
    assert_eq!(denied.len(), 1, "folded: {denied:?}");
    assert_eq!(denied[0]["host"], "ops.example.com");
    assert_eq!(denied[0]["policy"], "one_factor");
    assert_eq!(denied[0]["count"], 1);
    // In the group: through, with it.
    let admin = app.signed_up_as_admin().await;
    let ada_id = app.scalar("SELECT id FROM users WHERE email = 'ada@example.com'");
    app.client
        .put(app.url(&format!("/admin/users/{ada_id}/groups")))
        .bearer_auth(&admin)
        .json(&json!({"groups": ["ops", "wiki"]}))
        .send()
        .await
        .unwrap();
    let res = original(&app, "GET", "https://ops.example.com/x")
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["remote-groups"], "ops,wiki");
    // A two-factor path asks a password-only session to sign in again.
    let res = forward(&app, "GET", "wiki.example.com", "/admin/")
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    // Signed out: refused at once.
    app.post_auth("/auth/logout", &access, None).await;
    let res = forward(&app, "GET", "wiki.example.com", "/")
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("portcullis_forward_auth_total{outcome=\"allowed\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("portcullis_forward_auth_total{outcome=\"forbidden\"} 3"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_second_factor_session_passes_two_factor_rules() {
    let app = app().await;
    let (_, secret, _) = crate::mfa::with_totp(&app, "eve@example.com").await;
    app.clock.advance(std::time::Duration::from_secs(30));
    let step: Value = app
        .login("eve@example.com", PASSWORD)
        .await
        .json()
        .await
        .unwrap();
    let now = u64::try_from(portcullis::clock::Clock::now_secs(&app.clock)).unwrap();
    let pair: Value = app
        .post(
            "/auth/login/mfa",
            &json!({"mfa_token": step["mfa_token"], "code": portcullis::auth::totp::code_at(&secret, now)}),
        )
        .await
        .json()
        .await
        .unwrap();
    let res = forward(&app, "GET", "wiki.example.com", "/admin/users")
        .bearer_auth(token(&pair, "access_token"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn odd_questions_are_refused_never_let_through() {
    let app = app().await;
    for (method, host, uri) in [
        ("G ET", "wiki.example.com", "/"),
        ("GET", "", "/"),
        ("GET", "wiki.example.com", "no-slash"),
        ("GET", "wiki.example.com", "/a b"),
        ("GET", "user@wiki.example.com", "/"),
    ] {
        let res = forward(&app, method, host, uri).send().await.unwrap();
        expect_error(res, StatusCode::BAD_REQUEST, "invalid_forwarded_request").await;
    }
    let res = app
        .client
        .get(app.url("/authz/forward-auth"))
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::BAD_REQUEST, "invalid_forwarded_request").await;
    for url in [
        "/relative",
        "ftp://wiki.example.com/",
        "https://wiki.example.com",
    ] {
        let res = original(&app, "GET", url).send().await.unwrap();
        expect_error(res, StatusCode::BAD_REQUEST, "invalid_forwarded_request").await;
    }
    // From a peer that is not a trusted proxy: 403, whatever it says.
    let open = TestApp::spawn_with(|c| c.forward_auth = toml::from_str(RULES).unwrap()).await;
    let res = forward(&open, "GET", "public.example.com", "/")
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::FORBIDDEN, "untrusted_proxy").await;
}

/// Traefik is not packaged here: its `forwardAuth` middleware asks with
/// exactly these headers (the original request's own headers, then its
/// X-Forwarded-* set), which is what `contrib/forward-auth/traefik.yml` makes it do.
#[tokio::test]
async fn traefiks_forward_auth_request_is_understood() {
    let app = app().await;
    let pair = app.signed_up("ada@example.com").await;
    let traefik = |cookie: Option<&str>| {
        let mut req = app
            .client
            .get(app.url("/authz/forward-auth"))
            .header(
                "accept",
                "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
            )
            .header("user-agent", "Mozilla/5.0")
            .header("x-forwarded-for", "192.0.2.7")
            .header("x-forwarded-host", "wiki.example.com")
            .header("x-forwarded-method", "GET")
            .header("x-forwarded-port", "443")
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-server", "traefik-1")
            .header("x-forwarded-uri", "/page?a=1")
            .header("x-real-ip", "192.0.2.7");
        if let Some(token) = cookie {
            req = req.bearer_auth(token);
        }
        req
    };
    let client_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = client_redirect
        .execute(traefik(None).build().unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FOUND);
    assert!(res.headers()[LOCATION]
        .to_str()
        .unwrap()
        .ends_with("/ui/login?rd=https%3A%2F%2Fwiki.example.com%2Fpage%3Fa%3D1"));
    let res = traefik(Some(&token(&pair, "access_token")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["remote-user"], "ada@example.com");
}
