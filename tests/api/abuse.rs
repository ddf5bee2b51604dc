//! Slow and abusive clients: late heads and bodies, oversized heads, too many
//! connections, and JSON built to be expensive. Raw TCP where the client must
//! misbehave in ways an HTTP library will not.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{expect_error, without_limits, TestApp};

/// Longest any single wait in these tests may take before it is a failure.
const PATIENCE: Duration = Duration::from_secs(10);

async fn connect(app: &TestApp) -> TcpStream {
    let addr = app.address.trim_start_matches("http://");
    TcpStream::connect(addr).await.expect("connect")
}

/// Reads one response whose body is `Content-Length` long.
async fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut chunk))
            .await
            .expect("a response in time")
            .expect("read");
        assert!(n > 0, "closed before a full response");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_owned())
                })
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if body.len() >= length {
                return (status_of(&text), body.to_owned());
            }
        }
    }
}

fn status_of(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn json_body(response: &str) -> Value {
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or(Value::Null)
}

/// Sends `bytes` one at a time every `every`, until the server hangs up.
fn drip(mut writer: tokio::net::tcp::OwnedWriteHalf, bytes: &'static [u8], every: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        for b in bytes.iter().cycle() {
            tick.tick().await;
            if writer.write_all(&[*b]).await.is_err() {
                return;
            }
        }
    });
}

#[tokio::test]
async fn a_head_sent_byte_by_byte_is_cut_off_and_holds_no_worker() {
    let app = TestApp::spawn_with(|c| {
        c.server.workers = 1;
        c.server.header_timeout = "300ms".parse().expect("duration");
    })
    .await;
    let started = Instant::now();
    let stream = connect(&app).await;
    let (mut reader, writer) = stream.into_split();
    // A request line, then a header that never ends: a byte every 50 ms.
    drip(writer, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", Duration::from_millis(50));

    // Meanwhile the only worker serves everyone else.
    for _ in 0..5 {
        let res = tokio::time::timeout(PATIENCE, app.client.get(app.url("/health")).send())
            .await
            .expect("served while a slow client drips")
            .expect("request");
        assert_eq!(res.status(), StatusCode::OK);
    }

    // The slow client is answered 408 (or dropped) once its head is late,
    // although it never stopped sending.
    let mut buf = Vec::new();
    tokio::time::timeout(PATIENCE, reader.read_to_end(&mut buf))
        .await
        .expect("the server hung up on the slow client")
        .ok();
    let text = String::from_utf8_lossy(&buf);
    assert!(text.is_empty() || status_of(&text) == 408, "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "cut off after {:?}, far past the 300 ms head timeout",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_body_sent_byte_by_byte_gets_408_json() {
    let app = TestApp::spawn_with(|c| {
        c.server.body_timeout = "300ms".parse().expect("duration");
        without_limits(c);
    })
    .await;
    for (path, content_type) in [
        ("/auth/login", "application/json"),
        ("/auth/token", "application/x-www-form-urlencoded"),
    ] {
        let stream = connect(&app).await;
        let (mut reader, mut writer) = stream.into_split();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\nContent-Length: 200\r\n\r\n"
        );
        writer.write_all(head.as_bytes()).await.expect("write");
        drip(
            writer,
            b"{\"email\":\"a@example.com\"",
            Duration::from_millis(50),
        );
        let mut buf = Vec::new();
        tokio::time::timeout(PATIENCE, reader.read_to_end(&mut buf))
            .await
            .expect("the server answers a late body and hangs up")
            .ok();
        let text = String::from_utf8_lossy(&buf);
        assert_eq!(status_of(&text), 408, "{path}: {text}");
        let body = json_body(&text);
        let code = if path == "/auth/token" {
            "invalid_request"
        } else {
            "request_timeout"
        };
        assert_eq!(body["error"], code, "{path}: {text}");
    }
    // Nothing was counted or written for them.
    let events = app.count("SELECT COUNT(*) FROM audit_log");
    assert_eq!(events, 0);
}

#[tokio::test]
async fn oversized_heads_get_431_json() {
    let app = TestApp::spawn_with(|c| {
        c.server.max_headers = 16;
        c.server.max_header_bytes = 4096;
    })
    .await;
    let mut many = app.client.get(app.url("/health"));
    for i in 0..20 {
        many = many.header(format!("x-filler-{i}"), "1");
    }
    let long_header = app
        .client
        .get(app.url("/health"))
        .header("x-filler", "a".repeat(5000));
    let long_target = app
        .client
        .get(app.url(&format!("/health?{}", "a".repeat(5000))));
    for (what, request) in [
        ("20 header lines", many),
        ("a 5,000-byte header", long_header),
        ("a 5,000-byte target", long_target),
    ] {
        let res = request.send().await.expect("request");
        let body = expect_error(
            res,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
        )
        .await;
        assert!(
            body["message"].as_str().unwrap_or("").contains("at most"),
            "{what}: {body}"
        );
    }

    // Within the caps all is well.
    let res = app
        .client
        .get(app.url("/health"))
        .header("x-filler", "a".repeat(3000))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_until_one_closes() {
    let app = TestApp::spawn_with(|c| {
        c.server.workers = 1;
        c.server.max_connections = 2;
        c.server.keep_alive = "60s".parse().expect("duration");
    })
    .await;
    // Two clients take both connections and keep them (keep-alive).
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = connect(&app).await;
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let (status, _) = read_response(&mut stream).await;
        assert_eq!(status, 200);
        held.push(stream);
    }
    // A third is not served while they are open...
    let third = app.client.get(app.url("/health")).send();
    tokio::pin!(third);
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut third)
            .await
            .is_err(),
        "a connection beyond max_connections was served"
    );
    // ...and is served as soon as one of them goes.
    drop(held.pop());
    let res = tokio::time::timeout(PATIENCE, third)
        .await
        .expect("served once a connection closed")
        .expect("request");
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn expensive_json_is_refused_cheaply() {
    let app = TestApp::spawn_with(without_limits).await;
    // Nesting far past the parser's depth limit, within the size limit.
    for deep in [
        "[".repeat(16_000),
        format!("{{\"email\":{}", "{\"a\":".repeat(2_000)),
    ] {
        let res = app
            .client
            .post(app.url("/auth/login"))
            .header("content-type", "application/json")
            .body(deep)
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        let body: Value = res.json().await.expect("json");
        assert!(
            matches!(
                body["error"].as_str(),
                Some("invalid_json" | "invalid_request")
            ),
            "{body}"
        );
    }
    // A huge declared body is refused from its headers, before it is sent.
    let mut stream = connect(&app).await;
    stream
        .write_all(b"POST /auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1073741824\r\n\r\n")
        .await
        .expect("write");
    let (status, body) = read_response(&mut stream).await;
    assert_eq!(status, 413);
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("json")["error"],
        "payload_too_large"
    );
    // A chunked body is cut off at the limit.
    let mut stream = connect(&app).await;
    stream
        .write_all(b"POST /auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .expect("write");
    let chunk = format!("4000\r\n{}\r\n", " ".repeat(0x4000));
    for _ in 0..4 {
        if stream.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let (status, body) = read_response(&mut stream).await;
    assert_eq!(status, 413, "{body}");
    // Many keys and long strings within the limit are just a 400 or 401.
    let wide: String = (0..1_500).map(|i| format!("\"k{i}\":1,")).collect();
    let res = app
        .client
        .post(app.url("/auth/login"))
        .header("content-type", "application/json")
        .body(format!(
            "{{{wide}\"email\":\"a@example.com\",\"password\":\"x\"}}"
        ))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}
