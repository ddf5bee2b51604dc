//! Forward authentication behind the real proxies: Debian's nginx and Caddy,
//! each on a free port with its configuration from `contrib/forward-auth/`
//! (only the addresses rewritten), in front of a small app that echoes the
//! headers it receives, asking portcullis about every request.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use reqwest::header::{HOST, LOCATION};
use reqwest::StatusCode;
use serde_json::{json, Map, Value};

use crate::helpers::{TestApp, PASSWORD};

/// The app's host as the proxies' configurations name it.
const HOST_NAME: &str = "app.example.test";

const RULES: &str = r#"
default_policy = "deny"
[[rules]]
domain = "app.example.test"
paths = ["/public/"]
policy = "bypass"
[[rules]]
domain = "app.example.test"
paths = ["/ops/"]
policy = "one_factor"
subjects = ["group:ops"]
[[rules]]
domain = "app.example.test"
paths = ["/admin/"]
policy = "two_factor"
[[rules]]
domain = "app.example.test"
policy = "one_factor"
"#;

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The app behind the proxy: answers every request with the headers it got.
async fn echo_app() -> SocketAddr {
    async fn echo(req: HttpRequest) -> HttpResponse {
        let headers: Map<String, Value> = req
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), json!(v.to_str().unwrap_or("?"))))
            .collect();
        HttpResponse::Ok().json(json!({"path": req.path(), "headers": headers}))
    }
    let server = HttpServer::new(|| App::new().default_service(web::to(echo)))
        .workers(1)
        .bind("127.0.0.1:0")
        .expect("the echo app binds");
    let address = server.addrs()[0];
    tokio::spawn(server.run());
    address
}

/// A proxy process, stopped with the test.
pub(crate) struct Proxy {
    pub(crate) child: Child,
    pub(crate) port: u16,
    pub(crate) _dir: tempfile::TempDir,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `contrib/forward-auth/<file>` with the addresses of this test.
fn configuration(file: &str, portcullis: &str, app: SocketAddr, port: u16) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("contrib/forward-auth")
        .join(file);
    std::fs::read_to_string(path)
        .expect("the contrib configuration")
        .replace("127.0.0.1:9091", portcullis)
        .replace("127.0.0.1:8000", &app.to_string())
        .replace(":8080", &format!(":{port}"))
}

pub(crate) fn wait_for_port(port: u16, child: &mut Child, what: &str) {
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited: {status}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("{what} did not listen on {port}");
}

fn nginx(portcullis: &str, app: SocketAddr) -> Proxy {
    let binary: PathBuf = crate::tools::program("nginx", "nginx");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let conf = dir.path().join("nginx.conf");
    std::fs::write(&conf, configuration("nginx.conf", portcullis, app, port)).unwrap();
    let mut child = Command::new(binary)
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&conf)
        .arg("-g")
        .arg(format!(
            "daemon off; master_process off; pid {0}/nginx.pid; error_log stderr;",
            dir.path().display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("nginx starts");
    wait_for_port(port, &mut child, "nginx");
    Proxy {
        child,
        port,
        _dir: dir,
    }
}

fn caddy(portcullis: &str, app: SocketAddr) -> Proxy {
    let binary: PathBuf = crate::tools::program("caddy", "caddy");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let conf = dir.path().join("Caddyfile");
    std::fs::write(&conf, configuration("Caddyfile", portcullis, app, port)).unwrap();
    let mut child = Command::new(binary)
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&conf)
        .env("HOME", dir.path())
        .env("XDG_DATA_HOME", dir.path())
        .env("XDG_CONFIG_HOME", dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("caddy starts");
    wait_for_port(port, &mut child, "caddy");
    Proxy {
        child,
        port,
        _dir: dir,
    }
}

/// A client of the app through the proxy, from 127.0.0.2: an address that
/// is not a trusted proxy, as a real client's would be.
struct Visitor {
    client: reqwest::Client,
    port: u16,
    cookie: Option<String>,
}

impl Visitor {
    fn new(port: u16) -> Self {
        Self {
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .local_address("127.0.0.2".parse::<std::net::IpAddr>().ok())
                .build()
                .unwrap(),
            port,
            cookie: None,
        }
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        let mut req = self
            .client
            .get(format!("http://127.0.0.1:{}{path}", self.port))
            .header(HOST, format!("{HOST_NAME}:{}", self.port))
            .header("accept", "text/html,application/xhtml+xml");
        if let Some(cookie) = &self.cookie {
            req = req.header("cookie", format!("portcullis_session={cookie}"));
        }
        req
    }

    fn url(&self, path: &str) -> String {
        format!("http://{HOST_NAME}:{}{path}", self.port)
    }
}

/// Signs in on portcullis's login page; the session cookie's value.
async fn sign_in(app: &TestApp, email: &str, rd: &str) -> (reqwest::Client, String) {
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = app.url(&format!(
        "/ui/login?rd={}",
        url::form_urlencoded::byte_serialize(rd.as_bytes()).collect::<String>()
    ));
    let page = client
        .get(&login)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let field = |name: &str| {
        let start = page.find(&format!("name=\"{name}\" value=\"")).unwrap() + name.len() + 15;
        page[start..start + page[start..].find('"').unwrap()].replace("&#38;", "&")
    };
    let (csrf, kept_rd) = (field("csrf_token"), field("rd"));
    assert_eq!(kept_rd, rd, "the login page keeps the app's rd");
    let res = client
        .post(app.url("/ui/login"))
        .form(&[
            ("email", email),
            ("password", PASSWORD),
            ("rd", &kept_rd),
            ("csrf_token", &csrf),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()[LOCATION], rd, "back at the app");
    let cookie = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("portcullis_session="))
        .and_then(|v| v.split(';').next())
        .expect("a session cookie")
        .to_owned();
    (client, cookie)
}

async fn echoed(res: reqwest::Response) -> Value {
    assert_eq!(res.status(), StatusCode::OK, "through to the app");
    res.json().await.expect("the app's echo")
}

/// Every promise of SPEC section 12, through one proxy.
async fn behind(app: &TestApp, proxy: &Proxy, name: &str) {
    let mut visitor = Visitor::new(proxy.port);
    // No session: to the login page, with the app's URL as rd.
    let res = visitor.get("/page?x=1").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::FOUND, "{name}");
    let location = res.headers()[LOCATION].to_str().unwrap().to_owned();
    let rd = visitor.url("/page?x=1");
    let expected = app.url(&format!(
        "/ui/login?rd={}",
        url::form_urlencoded::byte_serialize(rd.as_bytes()).collect::<String>()
    ));
    assert_eq!(location, expected, "{name}");
    // A script gets 401.
    let xhr = visitor
        .get("/page")
        .header("x-requested-with", "XMLHttpRequest")
        .send()
        .await
        .unwrap();
    assert_eq!(xhr.status(), StatusCode::UNAUTHORIZED, "{name}");
    // Signed in through the page: back at the app, which sees who it is.
    let (portcullis, cookie) = sign_in(app, "ada@example.com", &rd).await;
    visitor.cookie = Some(cookie);
    let seen = echoed(visitor.get("/page?x=1").send().await.unwrap()).await;
    assert_eq!(
        seen["headers"]["remote-user"], "ada@example.com",
        "{name}: {seen}"
    );
    assert_eq!(seen["headers"]["remote-groups"], "wiki", "{name}: {seen}");
    assert_eq!(seen["headers"]["remote-name"], "Ada", "{name}: {seen}");
    // What the client says under those names never reaches the app: the
    // proxy drops it, or portcullis refuses the request.
    for (path, header) in [
        ("/page", "remote-user"),
        ("/page", "remote_user"),
        ("/public/x", "remote-user"),
        ("/public/x", "remote_user"),
    ] {
        let res = visitor
            .get(path)
            .header(header, "mallory@example.com")
            .send()
            .await
            .unwrap();
        if res.status().is_success() {
            let seen: Value = res.json().await.unwrap();
            for (k, v) in seen["headers"].as_object().unwrap() {
                assert!(
                    !v.as_str().unwrap_or_default().contains("mallory"),
                    "{name}: {k} reached the app via {header} on {path}"
                );
            }
        }
    }
    let public = echoed(visitor.get("/public/x").send().await.unwrap()).await;
    assert!(
        public["headers"].get("remote-user").is_none(),
        "{name}: {public}"
    );
    // Another host on the same proxy is not a way in (nginx closes the
    // connection; Caddy answers an empty 200 of its own).
    if let Ok(other) = visitor
        .client
        .get(format!("http://127.0.0.1:{}/admin/", proxy.port))
        .header(HOST, "public.example.com")
        .send()
        .await
    {
        let body = other.text().await.unwrap_or_default();
        assert!(
            !body.contains("\"headers\""),
            "{name}: another Host reached the app"
        );
    }
    // Outside the rule's subjects: 403; audited from the client's own address
    // whatever X-Forwarded-For it sends.
    let before = crate::groups::extras(app, "forward_auth_denied").len();
    let res = visitor
        .get("/ops/")
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN, "{name}");
    let ips = app
        .query("SELECT ip_address FROM audit_log WHERE action = 'forward_auth_denied' ORDER BY id");
    assert_eq!(ips.len(), before + 1, "{name}");
    assert_eq!(
        ips.last().unwrap()[0],
        "127.0.0.2",
        "{name}: the limited address is the client's"
    );
    // A two_factor path asks for the second factor: back to the login page.
    let res = visitor.get("/admin/").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::FOUND, "{name}");
    assert!(
        res.headers()[LOCATION]
            .to_str()
            .unwrap()
            .contains("/ui/login?rd="),
        "{name}"
    );
    // A URI that is not one is refused, never let through.
    let res = visitor.get("/%ZZ%00").send().await.unwrap();
    assert!(!res.status().is_success(), "{name}: {}", res.status());
    // Signed out: the next request goes to the login page.
    let page = portcullis
        .get(app.url("/ui/account"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let start = page.find("name=\"csrf_token\" value=\"").unwrap() + 25;
    let csrf = page[start..start + 43].to_owned();
    let out = portcullis
        .post(app.url("/ui/logout"))
        .form(&[("csrf_token", csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    let res = visitor.get("/page").send().await.unwrap();
    assert_eq!(
        res.status(),
        StatusCode::FOUND,
        "{name}: the signed-out cookie still works"
    );
}

async fn portcullis() -> TestApp {
    let app = TestApp::spawn_with(|c| {
        c.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        c.forward_auth = toml::from_str(RULES).unwrap();
    })
    .await;
    let admin = app.signed_up_as_admin().await;
    app.client
        .post(app.url("/admin/users"))
        .bearer_auth(&admin)
        .json(&json!({"email": "ada@example.com", "password": PASSWORD, "name": "Ada", "groups": ["wiki"]}))
        .send()
        .await
        .unwrap();
    app
}

#[tokio::test]
async fn nginx_puts_an_app_behind_portcullis() {
    let app = portcullis().await;
    let echo = echo_app().await;
    let address = app.address.trim_start_matches("http://").to_owned();
    let proxy = tokio::task::spawn_blocking(move || nginx(&address, echo))
        .await
        .unwrap();
    behind(&app, &proxy, "nginx").await;
}

#[tokio::test]
async fn caddy_puts_an_app_behind_portcullis() {
    let app = portcullis().await;
    let echo = echo_app().await;
    let address = app.address.trim_start_matches("http://").to_owned();
    let proxy = tokio::task::spawn_blocking(move || caddy(&address, echo))
        .await
        .unwrap();
    behind(&app, &proxy, "caddy").await;
}

/// The README shows the very files the tests run.
#[test]
fn the_readme_shows_the_contrib_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    for file in [
        "forward-auth/nginx.conf",
        "forward-auth/Caddyfile",
        "forward-auth/traefik.yml",
        "oidc/mod_auth_openidc.conf",
    ] {
        let text = std::fs::read_to_string(root.join("contrib").join(file)).unwrap();
        assert!(
            readme.contains(&text),
            "README does not show contrib/{file} as it is"
        );
    }
}
