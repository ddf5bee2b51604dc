//! The OpenID Connect provider (SPEC section 13) with stock clients:
//! `oidc_flows.py` drives authlib (a confidential and a public PKCE client)
//! and PyJWT against a real server whose clock this test holds; what the
//! audit log and storage then say is checked here. Apache's mod_auth_openidc
//! signs a person in through the pages, in headless Chromium
//! (`oidc_apache.py`).

use std::path::Path;
use std::process::{Command, Stdio};

use portcullis::config::{ClientAuthMethod, Consent, IdTokenAlg, OidcClientConfig};
use serde_json::Value;

use crate::helpers::{portcullis, ServerProcess, TestApp, PASSWORD};
use crate::proxies::{free_port, wait_for_port, Proxy};

fn clients() -> Vec<OidcClientConfig> {
    vec![
        OidcClientConfig {
            id: "app".into(),
            secret: "app-secret-0123456789".into(),
            redirect_uris: vec!["http://app.example/cb".into()],
            post_logout_redirect_uris: vec!["http://app.example/bye".into()],
            ..OidcClientConfig::default()
        },
        OidcClientConfig {
            id: "spa".into(),
            public: true,
            redirect_uris: vec!["http://spa.example/cb".into()],
            consent: Consent::Implicit,
            ..OidcClientConfig::default()
        },
        OidcClientConfig {
            id: "eddy".into(),
            secret: "eddy-secret-0123456789".into(),
            redirect_uris: vec!["http://eddy.example/cb".into()],
            post_logout_redirect_uris: vec!["http://eddy.example/bye".into()],
            id_token_signed_response_alg: IdTokenAlg::EdDSA,
            consent: Consent::Implicit,
            ..OidcClientConfig::default()
        },
        OidcClientConfig {
            id: "posty".into(),
            secret: "posty-secret-0123456789".into(),
            redirect_uris: vec!["http://posty.example/cb".into()],
            token_endpoint_auth_method: Some(ClientAuthMethod::ClientSecretPost),
            consent: Consent::Implicit,
            refresh_tokens: true,
            ..OidcClientConfig::default()
        },
    ]
}

#[tokio::test]
async fn stock_clients_sign_in_refresh_and_are_refused_where_they_should_be() {
    let app = TestApp::spawn_with(|c| c.oidc.clients = clients()).await;
    let email = "oidc@example.com";
    app.signed_up(email).await;
    let mut cmd = crate::tools::python_command();
    cmd.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/api/oidc_flows.py"
    ))
    .args([&app.address, email, PASSWORD]);
    let status = crate::tools::run_with_clock(app.clock.clone(), cmd).await;
    assert!(status.success(), "the OIDC flows failed");

    // A grant without a refresh token lives as long as its access token.
    let access_ttl_ms = app.config.tokens.access_ttl.as_millis_i64();
    let lives = app.query("SELECT expires_at - last_used_at FROM sessions WHERE client_id = 'spa'");
    assert!(!lives.is_empty());
    for life in &lives {
        let ms: i64 = life[0].parse().unwrap();
        assert!(0 < ms && ms <= access_ttl_ms, "spa's grant lives {ms} ms");
    }

    // What the audit log says: consent, codes, tokens, reuse, revocation,
    // logout, each naming its client; no code or token in any row.
    let admin = app.signed_up_as_admin().await;
    let listing: Value = app
        .client
        .get(app.url("/admin/audit?limit=1000"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rows = listing["events"].as_array().cloned().unwrap_or_default();
    let actions: Vec<&str> = rows
        .iter()
        .map(|r| r["action"].as_str().unwrap_or(""))
        .collect();
    for action in [
        "oidc_consent_granted",
        "oidc_code_issued",
        "oidc_tokens_issued",
        "oidc_code_reused",
        "oidc_token_revoked",
        "oidc_logout",
        "refresh_token_reused",
    ] {
        assert!(actions.contains(&action), "no {action} in {actions:?}");
    }
    for row in &rows {
        let action = row["action"].as_str().unwrap_or("");
        if action.starts_with("oidc_") {
            let extra: Value = match &row["extra_data"] {
                Value::String(s) => serde_json::from_str(s).expect("extra_data is JSON"),
                other => other.clone(),
            };
            assert!(
                extra["client_id"].is_string(),
                "{action} names no client: {row}"
            );
        }
        let text = row.to_string();
        assert!(
            !text.contains("secret-0123456789"),
            "a client secret in the audit log: {text}"
        );
    }
}

/// Apache on `port` with `contrib/oidc/mod_auth_openidc.conf` (only the
/// addresses and secrets rewritten) guarding a page of server-side includes
/// that prints what the module passes on.
fn apache(portcullis: &str, port: u16, secret: &str) -> Proxy {
    let binary = crate::tools::program("apache2", "apache2");
    let modules = "/usr/lib/apache2/modules";
    crate::tools::debian_file(
        &format!("{modules}/mod_auth_openidc.so"),
        "libapache2-mod-auth-openidc",
    );
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let contrib = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/oidc/mod_auth_openidc.conf");
    let oidc = std::fs::read_to_string(contrib)
        .expect("the contrib configuration")
        .replace("127.0.0.1:9091", portcullis)
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"))
        .replace("the secret client add printed", secret);
    std::fs::write(root.join("oidc.conf"), oidc).unwrap();
    let loads: String = [
        "mpm_event",
        "authn_core",
        "authz_core",
        "authz_user",
        "dir",
        "mime",
        "include",
        "auth_openidc",
    ]
    .iter()
    .map(|name| format!("LoadModule {name}_module {modules}/mod_{name}.so\n"))
    .collect();
    let root_text = root.display();
    std::fs::write(
        root.join("httpd.conf"),
        format!(
            "ServerRoot {root_text}\nServerName 127.0.0.1\nListen 127.0.0.1:{port}\n\
             PidFile {root_text}/httpd.pid\nErrorLog /dev/stderr\nLogLevel warn\n\
             TypesConfig /dev/null\n{loads}\
             DocumentRoot {root_text}/htdocs\n\
             <Directory {root_text}/htdocs>\n  Options +Includes\n  DirectoryIndex index.html index.shtml\n\
               AddType text/html .shtml\n  AddOutputFilter INCLUDES .shtml\n  Require all granted\n</Directory>\n\
             Include {root_text}/oidc.conf\n"
        ),
    )
    .unwrap();
    std::fs::create_dir_all(root.join("htdocs/protected")).unwrap();
    std::fs::write(
        root.join("htdocs/index.html"),
        "<!doctype html><title>Apache</title><p>Signed out.</p>\n",
    )
    .unwrap();
    let shown: String = ["REMOTE_USER:user", "sub", "email", "name", "groups", "amr"]
        .iter()
        .map(|item| {
            let (var, id) = match item.split_once(':') {
                Some((var, id)) => (var.to_owned(), id),
                None => (format!("OIDC_CLAIM_{item}"), *item),
            };
            format!("<dt>{id}</dt><dd id=\"{id}\"><!--#echo var=\"{var}\" --></dd>\n")
        })
        .collect();
    std::fs::write(
        root.join("htdocs/protected/index.shtml"),
        format!("<!doctype html><title>Claims</title><dl>\n{shown}</dl>\n"),
    )
    .unwrap();
    let mut child = Command::new(binary)
        .arg("-X")
        .arg("-f")
        .arg(root.join("httpd.conf"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("apache starts");
    wait_for_port(port, &mut child, "apache");
    Proxy {
        child,
        port,
        _dir: dir,
    }
}

#[tokio::test]
async fn apache_mod_auth_openidc_signs_a_person_in_through_the_pages() {
    crate::tools::program("chromium", "chromium");
    crate::tools::program("chromedriver", "chromium-driver");
    let axe = crate::tools::axe_core();
    let port = free_port();
    let apache_url = format!("http://127.0.0.1:{port}");
    let secret = "apache-secret-0123456789";
    let app = TestApp::spawn_with(|c| {
        c.oidc.clients = vec![OidcClientConfig {
            id: "apache".into(),
            name: "Apache".into(),
            secret: secret.into(),
            redirect_uris: vec![format!("{apache_url}/protected/redirect_uri")],
            post_logout_redirect_uris: vec![format!("{apache_url}/")],
            ..OidcClientConfig::default()
        }]
    })
    .await;
    let email = "ada@example.com";
    let ada = app
        .state
        .auth
        .register(
            email,
            PASSWORD.to_owned().into(),
            Some("Ada Lovelace"),
            false,
            Vec::new(),
        )
        .await
        .expect("ada");
    let admin = app.signed_up_as_admin().await;
    let res = app
        .client
        .put(app.url(&format!("/admin/users/{}/groups", ada.id)))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"groups": ["staff", "wiki"]}))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "groups: {}", res.status());
    let portcullis = app.address.trim_start_matches("http://").to_owned();
    let _apache = apache(&portcullis, port, secret);

    let mut cmd = crate::tools::python_command();
    cmd.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/api/oidc_apache.py"
    ))
    .arg(&app.address)
    .arg(&apache_url)
    .arg(crate::pages::screenshots())
    .arg(&axe)
    .args([email, PASSWORD]);
    let status = crate::tools::run_with_clock(app.clock.clone(), cmd).await;
    assert!(status.success(), "the sign-in through Apache failed");

    // The grants were sessions of kind oidc for the client.
    let kinds = app.query("SELECT kind FROM sessions WHERE client_id = 'apache'");
    assert_eq!(kinds.len(), 2, "one grant a sign-in: {kinds:?}");
    assert!(kinds.iter().all(|row| row[0] == "oidc"), "{kinds:?}");
}

#[test]
fn a_bad_client_entry_stops_start_up_and_no_secret_is_printed() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "grafana-secret-0123456789";
    let bad =
        format!(r#"[{{id = "grafana", secret = "{secret}", redirect_uris = ["not a url"]}}]"#);
    for args in [&["check-config"][..], &["--bind", "127.0.0.1:0"][..]] {
        let out = portcullis()
            .arg("--data-dir")
            .arg(dir.path())
            .args(args)
            .env("PORTCULLIS_OIDC__CLIENTS", &bad)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} accepted a bad client");
        assert!(
            err.contains(r#"oidc.clients[0] ("grafana").redirect_uris"#),
            "{args:?}: {err}"
        );
        assert!(!err.contains(secret), "{args:?} printed the secret: {err}");
    }
    let good = bad.replace("not a url", "https://grafana.example/cb");
    let out = portcullis()
        .arg("--data-dir")
        .arg(dir.path())
        .arg("check-config")
        .env("PORTCULLIS_OIDC__CLIENTS", &good)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("grafana") && text.contains("***"), "{text}");
    assert!(
        !text.contains(secret),
        "check-config printed the secret: {text}"
    );
}

/// `portcullis --data-dir DIR ARGS`, with `stdin` as its input; its output
/// when it succeeds.
fn cli(dir: &Path, args: &[&str], stdin: &str) -> String {
    let out = crate::helpers::output_with_stdin(
        portcullis()
            .arg("--data-dir")
            .arg(dir)
            .args(args)
            .env("PORTCULLIS_OIDC__CLIENTS", CONFIG_CLIENT),
        stdin,
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "portcullis {args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

const CONFIG_CLIENT: &str = r#"[{id = "conf", secret = "conf-secret-0123456789", redirect_uris = ["http://conf.example/cb"]}]"#;

/// The `kid`s of the server's JWKS by key type.
async fn kids(http: &reqwest::Client, url: &str) -> (Vec<String>, Vec<String>) {
    let jwks: Value = http
        .get(format!("{url}/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let of = |kty: &str| -> Vec<String> {
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|k| k["kty"] == kty)
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect()
    };
    (of("RSA"), of("OKP"))
}

#[tokio::test]
async fn the_cli_adds_clients_a_running_server_knows_and_rotates_keys() {
    let dir = tempfile::tempdir().unwrap();
    let envs = [("PORTCULLIS_OIDC__CLIENTS", CONFIG_CLIENT)];
    let mut server = ServerProcess::start(dir.path(), &[], &envs);
    let url = format!("http://{}", server.address);
    let http = crate::helpers::http_client();
    // What the token endpoint says of a client: 401 when it does not know it
    // or the secret, 400 invalid_grant when the client is good (the token is not).
    let probe = |id: &'static str, secret: &'static str| {
        let request = http
            .post(format!("{url}/oidc/token"))
            .basic_auth(id, Some(secret))
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", "not-a-token"),
            ]);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(probe("wiki", "wiki-secret-0123456789").await, 401);
    assert_eq!(probe("conf", "conf-secret-0123456789").await, 400);

    let added = cli(
        dir.path(),
        &[
            "client",
            "add",
            "--id",
            "wiki",
            "--redirect-uri",
            "https://wiki.example/cb",
            "--secret-stdin",
        ],
        "wiki-secret-0123456789\n",
    );
    assert!(added.contains("added client wiki"), "{added}");
    assert_eq!(probe("wiki", "wiki-secret-0123456789").await, 400);
    assert_eq!(probe("wiki", "wrong-secret-0123456789").await, 401);
    let made = cli(
        dir.path(),
        &[
            "client",
            "add",
            "--id",
            "spa",
            "--redirect-uri",
            "https://spa.example/cb",
            "--public",
        ],
        "",
    );
    assert!(
        !made.contains("secret"),
        "a public client got a secret: {made}"
    );
    let listed = cli(dir.path(), &["client", "list"], "");
    for line in [
        "conf\tconfig\tconfidential",
        "wiki\tcli\tconfidential",
        "spa\tcli\tpublic",
    ] {
        assert!(listed.contains(line), "{listed}");
    }
    assert!(
        !listed.contains("secret") && !listed.contains("argon2"),
        "{listed}"
    );
    cli(dir.path(), &["client", "remove", "wiki"], "");
    assert_eq!(probe("wiki", "wiki-secret-0123456789").await, 401);

    // keys rotate: the running server keeps signing with the old keys; after
    // its restart it signs with new ones and still publishes the old.
    let (rsa, ed) = kids(&http, &url).await;
    assert_eq!((rsa.len(), ed.len()), (1, 1), "{rsa:?} {ed:?}");
    cli(dir.path(), &["keys", "rotate"], "");
    assert!(server.signal("-TERM").success());
    let mut server = ServerProcess::start(dir.path(), &[], &envs);
    let url = format!("http://{}", server.address);
    let (rsa_after, ed_after) = kids(&http, &url).await;
    assert_eq!(rsa_after.len(), 2, "{rsa_after:?}");
    assert_eq!(ed_after.len(), 2, "{ed_after:?}");
    assert!(rsa_after.contains(&rsa[0]) && ed_after.contains(&ed[0]));
    assert!(server.signal("-TERM").success());
}
