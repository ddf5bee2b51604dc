//! The web pages (SPEC section 11): in headless Chromium driven by Selenium
//! (`browser_flows.py`: every page with axe-core, screenshots light and dark,
//! desktop and 320 px), and their HTTP contract with a plain client.

use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{token, TestApp, PASSWORD};

/// Where the screenshots of the browser run are kept.
pub(crate) fn screenshots() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots")
}

#[tokio::test]
async fn pages_work_in_a_real_browser() {
    crate::tools::program("chromium", "chromium");
    crate::tools::program("chromedriver", "chromium-driver");
    let axe = crate::tools::axe_core();
    let app = TestApp::spawn().await;
    let setup = app
        .state
        .auth
        .start_first_run()
        .await
        .expect("no administrator yet")
        .expect("a setup token");
    let mut cmd = crate::tools::python_command();
    cmd.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/api/browser_flows.py"
    ))
    .arg(&app.address)
    .arg(app.dir.path().join("outbox"))
    .arg(screenshots())
    .arg(&setup)
    .arg(&axe);
    let status = crate::tools::run_with_clock(app.clock.clone(), cmd).await;
    assert!(
        status.success(),
        "the browser run failed (screenshots so far in {})",
        screenshots().display()
    );
}

/// The cookie `name` set by `headers`, with its attributes.
fn set_cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
}

/// A browser in miniature: cookies kept, redirects not followed.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

async fn form_token(client: &reqwest::Client, url: &str) -> String {
    let page = client
        .get(url)
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("text");
    let start = page
        .find("name=\"csrf_token\" value=\"")
        .expect("a form token")
        + 25;
    page[start..start + 43].to_owned()
}

async fn sign_in(
    app: &TestApp,
    client: &reqwest::Client,
    email: &str,
    remember: bool,
) -> reqwest::Response {
    let csrf = form_token(client, &app.url("/ui/login")).await;
    let mut form = vec![
        ("email", email),
        ("password", PASSWORD),
        ("csrf_token", &csrf),
    ];
    if remember {
        form.push(("remember_me", "true"));
    }
    client
        .post(app.url("/ui/login"))
        .form(&form)
        .send()
        .await
        .expect("login")
}

#[tokio::test]
async fn every_page_has_its_security_headers() {
    let app = TestApp::spawn().await;
    app.signed_up("ada@example.com").await;
    let client = browser();
    sign_in(&app, &client, "ada@example.com", false).await;
    for path in [
        "/ui/login",
        "/ui/register",
        "/ui/forgot-password",
        "/ui/reset-password?token=x",
        "/ui/account",
        "/ui/account/totp",
        "/ui/admin/users",
        "/ui/setup?token=nope",
    ] {
        let res = client.get(app.url(path)).send().await.expect(path);
        let h = res.headers();
        let csp = h
            .get("content-security-policy")
            .unwrap_or_else(|| panic!("{path}: no policy"))
            .to_str()
            .unwrap();
        for part in [
            "default-src 'none'",
            "script-src 'self'",
            "connect-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(part), "{path}: {csp}");
        }
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
        assert_eq!(h["cache-control"], "no-store", "{path}");
        let status = res.status();
        let body = res.text().await.unwrap();
        assert!(body.len() < 30_000, "{path}: {} bytes", body.len());
        assert!(
            status.is_success()
                || status == StatusCode::SEE_OTHER
                || status == StatusCode::FORBIDDEN
                || status.as_u16() == 400
                || status.as_u16() == 404,
            "{path}: {status}"
        );
    }
    // A body over the limit is the API's JSON 413.
    let res = client
        .post(app.url("/ui/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("email={}", "a".repeat(20_000)))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"],
        "payload_too_large"
    );
    // Other methods get the API's JSON 405 with `Allow`.
    let res = client.put(app.url("/ui/login")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(res.headers()["allow"], "GET, POST");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "method_not_allowed");
    // The login page's policy lets its form send the browser on to `rd`.
    let rd = format!("{}/ui/admin/audit", app.address);
    let res = client
        .get(app.url(&format!("/ui/login?rd={}", urlencode(&rd))))
        .send()
        .await
        .unwrap();
    // Signed in already: straight on to `rd`.
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()[LOCATION], rd.as_str());
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn a_browser_session_is_a_session_of_kind_browser() {
    let app = TestApp::spawn_with(|c| c.server.public_url = String::new()).await;
    app.signed_up("ada@example.com").await;
    let client = browser();
    let res = sign_in(&app, &client, "ada@example.com", false).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()[LOCATION], "/ui/account");
    let cookie = set_cookie(res.headers(), "portcullis_session").expect("a session cookie");
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain http: {cookie}");
    assert!(!cookie.contains("Max-Age"), "not remembered: {cookie}");
    let value = cookie.split(';').next().unwrap()["portcullis_session=".len()..].to_owned();
    assert_eq!(value.len(), 43, "256 bits, base64url");
    // Stored only as a hash.
    let stored = app.stored_bytes();
    assert!(!stored.windows(43).any(|w| w == value.as_bytes()));
    // Listed by the API with its kind and factors; revoked by logout-all.
    let pair = app.logged_in("ada@example.com").await;
    let access = token(&pair, "access_token");
    let sessions: Value = app
        .get_auth("/auth/sessions", &access)
        .await
        .json()
        .await
        .unwrap();
    let kinds: Vec<&str> = sessions["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "browser").count(),
        1,
        "{sessions}"
    );
    assert!(kinds.contains(&"api"), "{sessions}");
    assert_eq!(
        client
            .get(app.url("/ui/account"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    app.post_auth("/auth/logout-all", &access, None).await;
    let res = client.get(app.url("/ui/account")).send().await.unwrap();
    assert_eq!(
        res.status(),
        StatusCode::SEE_OTHER,
        "the cookie outlived logout-all"
    );
    assert!(res.headers()[LOCATION]
        .to_str()
        .unwrap()
        .starts_with("/ui/login?rd="));
    // A new sign-in gets a new cookie.
    let again = sign_in(&app, &client, "ada@example.com", true).await;
    let second = set_cookie(again.headers(), "portcullis_session").unwrap();
    assert!(!second.contains(&value));
    assert!(second.contains("Max-Age="), "remembered: {second}");
    // The login was audited as the API's, through the web.
    let logins = crate::groups::extras(&app, "login_success");
    assert_eq!(logins.last().unwrap()["via"], "web");
}

#[tokio::test]
async fn access_tokens_carry_amr_and_auth_time() {
    let app = TestApp::spawn().await;
    app.signed_up("ada@example.com").await;
    let pair = app.logged_in("ada@example.com").await;
    let access = token(&pair, "access_token");
    let claims = app.state.auth.authorize(&access).expect("valid");
    assert_eq!(claims.amr, ["pwd"]);
    assert_eq!(claims.auth_time, claims.iat);
    // A refresh keeps the sign-in's time and factors.
    app.clock.advance(std::time::Duration::from_secs(90));
    let refreshed: Value = app
        .post(
            "/auth/refresh",
            &json!({"refresh_token": token(&pair, "refresh_token")}),
        )
        .await
        .json()
        .await
        .unwrap();
    let again = app
        .state
        .auth
        .authorize(&token(&refreshed, "access_token"))
        .expect("valid");
    assert_eq!(again.amr, ["pwd"]);
    assert_eq!(again.auth_time, claims.auth_time);
    assert!(again.iat >= claims.iat + 90);
}

#[tokio::test]
async fn closed_registration_is_refused_on_both_doors() {
    let app = TestApp::spawn_with(|c| c.accounts.open_registration = false).await;
    let res = app.register("ada@example.com", PASSWORD).await;
    crate::helpers::expect_error(res, StatusCode::FORBIDDEN, "registration_closed").await;
    let client = browser();
    let page = client.get(app.url("/ui/register")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::FORBIDDEN);
    assert!(page
        .text()
        .await
        .unwrap()
        .contains("Registration is closed"));
    let csrf = form_token(&client, &app.url("/ui/login")).await;
    let res = client
        .post(app.url("/ui/register"))
        .form(&[
            ("email", "ada@example.com"),
            ("password", PASSWORD),
            ("csrf_token", &csrf),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(app.count("SELECT count(*) FROM users"), 0);
}

#[tokio::test]
async fn the_first_run_logs_a_one_time_setup_link() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = crate::helpers::ServerProcess::start(dir.path(), &[], &[]);
    let link = loop {
        let line = server
            .log
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the setup link is logged");
        if let Some(rest) = line.split("setup_url=").nth(1) {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    assert!(
        link.starts_with(&format!("http://{}/ui/setup?token=", server.address)),
        "{link}"
    );
    let client = browser();
    assert_eq!(
        client.get(&link).send().await.unwrap().status(),
        StatusCode::OK
    );
    let wrong = format!(
        "http://{}/ui/setup?token={}",
        server.address,
        "A".repeat(43)
    );
    assert_eq!(
        client.get(&wrong).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    let page = client
        .get(&link)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let start = page.find("name=\"csrf_token\" value=\"").unwrap() + 25;
    let csrf = &page[start..start + 43];
    let token = link.split("token=").nth(1).unwrap();
    let res = client
        .post(format!("http://{}/ui/setup", server.address))
        .form(&[
            ("email", "root@example.com"),
            ("password", PASSWORD),
            ("name", "Root"),
            ("token", token),
            ("csrf_token", csrf),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let me: Value = client
        .get(format!("http://{}/ui/account", server.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .map(|t| json!(t))
        .unwrap();
    assert!(
        me.as_str().unwrap().contains("admins"),
        "the first account is an administrator"
    );
    assert_eq!(
        client.get(&link).send().await.unwrap().status(),
        StatusCode::NOT_FOUND,
        "single use"
    );
    server.signal("-TERM");
}

#[tokio::test]
async fn the_totp_page_never_offers_a_secret_set_up_elsewhere() {
    let app = TestApp::spawn().await;
    let pair = app.signed_up("ada@example.com").await;
    // Someone with a token sets up a secret and keeps it.
    let planted: Value = app
        .post_auth("/auth/mfa/totp/setup", &token(&pair, "access_token"), None)
        .await
        .json()
        .await
        .unwrap();
    let planted = planted["secret"].as_str().unwrap().to_owned();
    let client = browser();
    sign_in(&app, &client, "ada@example.com", false).await;
    let page = client
        .get(app.url("/ui/account/totp"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !page.contains(&planted),
        "the page offered a secret it did not make"
    );
    // A wrong code shows the page's own secret again, not one made meanwhile.
    let shown = between(&page, "id=\"totp-secret\">", "<").to_owned();
    let vouch = between(&page, "name=\"shown\" value=\"", "\"").to_owned();
    let csrf = between(&page, "name=\"csrf_token\" value=\"", "\"").to_owned();
    let form = [
        ("code", "000000"),
        ("password", PASSWORD),
        ("shown", vouch.as_str()),
        ("csrf_token", csrf.as_str()),
    ];
    let again = client
        .post(app.url("/ui/account/totp"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);
    assert!(
        again.text().await.unwrap().contains(&shown),
        "the same secret after a wrong code"
    );
    app.post_auth("/auth/mfa/totp/setup", &token(&pair, "access_token"), None)
        .await;
    let after = client
        .post(app.url("/ui/account/totp"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert!(
        !after.text().await.unwrap().contains(&shown),
        "a replaced secret is not shown"
    );
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
    let from = text.find(start).unwrap_or_else(|| panic!("no {start}")) + start.len();
    let len = text[from..].find(end).unwrap();
    &text[from..from + len]
}

#[tokio::test]
async fn a_full_audit_page_stays_small_and_pages_on() {
    let app = TestApp::spawn_with(crate::helpers::without_limits).await;
    app.state
        .auth
        .register(
            "root@example.com",
            PASSWORD.to_owned().into(),
            None,
            true,
            Vec::new(),
        )
        .await
        .unwrap();
    // Failed logins with the longest addresses the log keeps.
    for i in 0..50 {
        let email = format!("{}{i:02}@{}.example.com", "a".repeat(60), "b".repeat(60));
        app.login(&email, "wrong password, long enough").await;
    }
    let client = browser();
    sign_in(&app, &client, "root@example.com", false).await;
    let page = client
        .get(app.url("/ui/admin/audit?action=login_failed"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.len() < 30_000, "{} bytes", html.len());
    assert_eq!(html.matches("<tr><td>").count(), 40);
    assert!(html.contains("The chain is intact"));
    // As a browser reads the attribute (askama writes `&` as `&#38;`).
    let next = between(&html, "<p><a href=\"", "\"").replace("&#38;", "&");
    assert!(
        next.starts_with("/ui/admin/audit?") && next.contains("before_id="),
        "{next}"
    );
    let older = client
        .get(app.url(&next))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        older.matches("<tr><td>").count(),
        10,
        "the rest on the next page"
    );
}

#[tokio::test]
async fn an_app_that_asks_for_a_second_factor_gets_one() {
    let app = TestApp::spawn_with(|c| {
        c.forward_auth = toml::from_str(
            "[[rules]]\ndomain = \"*.example.com\"\npaths = [\"/admin/\"]\npolicy = \"two_factor\"\n\
             [[rules]]\ndomain = \"*.example.com\"\npolicy = \"one_factor\"",
        )
        .unwrap();
    })
    .await;
    let pair = app.signed_up("ada@example.com").await;
    let client = browser();
    sign_in(&app, &client, "ada@example.com", false).await;
    let to = |rd: &str| format!("/ui/login?rd={}", urlencode(rd));
    // A forward-auth rule's domain is a place `rd` may return to.
    let res = client
        .get(app.url(&to("https://wiki.example.com/page")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()[LOCATION], "https://wiki.example.com/page");
    // Without a second factor on the account: how to set one up.
    let res = client
        .get(app.url(&to("https://wiki.example.com/admin/")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(res
        .text()
        .await
        .unwrap()
        .contains("asks for two-step verification"));
    // With one (turned on after this browser signed in): the second step.
    let access = token(&pair, "access_token");
    let setup: Value = app
        .post_auth("/auth/mfa/totp/setup", &access, None)
        .await
        .json()
        .await
        .unwrap();
    let secret = totp_rs::Secret::Encoded(setup["secret"].as_str().unwrap().to_owned())
        .to_bytes()
        .unwrap();
    let now = || u64::try_from(portcullis::clock::Clock::now_secs(&app.clock)).unwrap();
    let code = portcullis::auth::totp::code_at(&secret, now());
    app.post_auth(
        "/auth/mfa/totp/enable",
        &access,
        Some(&json!({"password": PASSWORD, "code": code})),
    )
    .await;
    let res = client
        .get(app.url(&to("https://wiki.example.com/admin/")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let next = res.headers()[LOCATION].to_str().unwrap().to_owned();
    assert!(next.starts_with("/ui/login/mfa?rd="), "{next}");
    let page = client
        .get(app.url(&next))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = between(&page, "name=\"csrf_token\" value=\"", "\"").to_owned();
    app.clock.advance(std::time::Duration::from_secs(30));
    let code = portcullis::auth::totp::code_at(&secret, now());
    let done = client
        .post(app.url("/ui/login/mfa"))
        .form(&[
            ("code", code.as_str()),
            ("rd", "https://wiki.example.com/admin/"),
            ("csrf_token", csrf.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    assert_eq!(done.headers()[LOCATION], "https://wiki.example.com/admin/");
    // Now the session has both factors: straight on.
    let res = client
        .get(app.url(&to("https://wiki.example.com/admin/")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()[LOCATION], "https://wiki.example.com/admin/");
}
