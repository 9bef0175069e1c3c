//! Unit tests of the parser, the routes and the server's answers.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::parse::{HeadBuf, MAX_HEADER_LINE, MAX_HEADERS, MAX_REQUEST_LINE};
use super::routes::pretty4;
use super::*;
use crate::runtime::{NodeRuntime, RuntimeOptions};
use crate::store::MemoryStore;

fn parse(raw: &[u8]) -> Result<Request, ReadError> {
    read_request(&mut &raw[..])
}

fn status_of(raw: &[u8]) -> u16 {
    match parse(raw) {
        Err(ReadError::Bad(s, _)) => s,
        other => panic!("expected a refused request, got {other:?}"),
    }
}

fn req(headers: &[(&str, &str)], query: &str) -> Request {
    Request {
        method: "GET".into(),
        path: "/status".into(),
        query: parse_query(query),
        headers: headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        body: Vec::new(),
    }
}

#[test]
fn parses_request_line_query_and_headers() {
    let r = parse(
        b"GET /peer?auth=a%2Bb+c&jsonp=f&flag HTTP/1.1\r\nHost: x\r\nX-ZT1-Auth: \t tok \r\n\r\n",
    )
    .unwrap();
    assert_eq!((r.method.as_str(), r.path.as_str()), ("GET", "/peer"));
    assert_eq!(r.param("auth"), Some("a+b c"));
    assert_eq!(r.param("jsonp"), Some("f"));
    assert_eq!(r.param("flag"), Some(""));
    assert_eq!(r.header("x-zt1-auth"), Some("tok"));
    assert_eq!(r.header("host"), Some("x"));
    assert!(r.body.is_empty(), "no content-length: no body");
    // Paths keep '+'; bad escapes stay as they are.
    let r = parse(b"GET /a+b%41%zz%4 HTTP/1.0\n\n").unwrap();
    assert_eq!(r.path, "/a+bA%zz%4");
    // A stray empty line before the request line is tolerated.
    assert_eq!(parse(b"\r\nGET / HTTP/1.1\r\n\r\n").unwrap().path, "/");
}

#[test]
fn reads_bodies_by_length_and_chunks() {
    let r = parse(b"POST /x HTTP/1.1\nContent-Length: 5\nContent-Length: 5\n\nhello+junk").unwrap();
    assert_eq!(r.body, b"hello");
    let r = parse(
        b"POST /x HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nX-T: 1\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.body, b"Wikipedia");
    let r = parse(b"POST /x HTTP/1.1\r\nContent-Length: 0\r\n\r\n").unwrap();
    assert!(r.body.is_empty());
    // Non-UTF-8 bodies and header values are accepted as bytes / lossy text.
    let r =
        parse(b"POST /x HTTP/1.1\r\nX-A: \xff\xfe\r\nContent-Length: 2\r\n\r\n\xff\x00").unwrap();
    assert_eq!(r.body, b"\xff\x00");
    assert_eq!(r.header("x-a"), Some("\u{fffd}\u{fffd}"));
}

#[test]
fn refuses_bad_content_lengths_and_encodings() {
    for cl in ["abc", "-1", "+5", "5 5", "0x10", ""] {
        let raw = format!("POST /x HTTP/1.1\r\nContent-Length: {cl}\r\n\r\n");
        assert_eq!(status_of(raw.as_bytes()), 400, "content-length {cl:?}");
    }
    let too_long = format!(
        "POST /x HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
        MAX_BODY + 1
    );
    let too_long_chunk = format!(
        "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
        MAX_BODY + 1
    );
    for (raw, status) in [
        (
            &b"POST /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"[..],
            400,
        ),
        (
            b"POST /x HTTP/1.1\r\nContent-Length: 99999999999999999999999999\r\n\r\n",
            413,
        ),
        (too_long.as_bytes(), 413),
        (
            b"POST /x HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
        ),
        (b"POST /x HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
        (
            b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            400,
        ),
        (
            b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
            400,
        ),
        (too_long_chunk.as_bytes(), 413),
        // Bodies shorter than announced.
        (b"POST /x HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc", 400),
        (
            b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
            400,
        ),
    ] {
        assert_eq!(status_of(raw), status, "{}", String::from_utf8_lossy(raw));
    }
}

/// Lines that make a head bad (400) whether it ends after them or not.
const BAD_LINES: [&[u8]; 4] = [
    b"BREW / HTTP/1.1\r\n",
    b"GET / HTTP/2.0\r\n",
    b"GET / HTTP/1.1\r\nBad Name: x\r\n",
    b"GET / HTTP/1.1\r\nA: b\r\n folded\r\n",
];

#[test]
fn refuses_malformed_heads() {
    assert!(matches!(parse(b""), Err(ReadError::Closed)));
    assert!(matches!(parse(b"\r\n"), Err(ReadError::Closed)));
    // The bad lines, each ending a head.
    let ended = BAD_LINES.map(|line| [line, b"\r\n"].concat());
    for raw in [
        &b"GET /\r\n\r\n"[..],
        b"GET  / HTTP/1.1\r\n\r\n",
        b"get / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1 extra\r\n\r\n",
        b"GET status HTTP/1.1\r\n\r\n",
        b"GET /\x01 HTTP/1.1\r\n\r\n",
        b"GET /\xff HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nNoColon\r\n\r\n",
        b"GET / HTTP/1.1\r\n: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nA: b\r\n",
        b"GET / HTTP/1.1",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    ]
    .into_iter()
    .chain(ended.iter().map(Vec::as_slice))
    {
        assert_eq!(status_of(raw), 400, "{:?}", String::from_utf8_lossy(raw));
    }
    let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_REQUEST_LINE));
    assert_eq!(status_of(long.as_bytes()), 414);
    let long = format!(
        "GET / HTTP/1.1\r\nX: {}\r\n\r\n",
        "a".repeat(MAX_HEADER_LINE)
    );
    assert_eq!(status_of(long.as_bytes()), 431);
    let many = format!(
        "GET / HTTP/1.1\r\n{}\r\n",
        "X: y\r\n".repeat(MAX_HEADERS + 1)
    );
    assert_eq!(status_of(many.as_bytes()), 431);
    // A line without end is not buffered beyond the limit.
    let endless = vec![b'a'; 10 * MAX_REQUEST_LINE];
    assert_eq!(status_of(&endless), 414);
}

/// A client's socket that has these bytes, then nothing yet.
struct Stalled<'a>(&'a [u8]);

impl Read for Stalled<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.0.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(self.0.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

#[test]
fn bad_lines_are_refused_before_the_head_is_complete() {
    for raw in BAD_LINES.into_iter().chain([
        &b"GET status HTTP/1.1\n"[..],
        b"\x16\x03\x01\x00\xa5\x01\n\x0b\x0c\r\x0e",
    ]) {
        let r = HeadBuf::default().fill(&mut Stalled(raw));
        assert!(
            matches!(r, Err(ReadError::Bad(400, _))),
            "{:?}: {r:?}",
            String::from_utf8_lossy(raw)
        );
    }
    // A good head in progress waits for the rest.
    let mut h = HeadBuf::default();
    assert!(matches!(
        h.fill(&mut Stalled(b"\r\nGET / HTTP/1.1\r\nHost: x\r\nX-A: \xff")),
        Ok(false)
    ));
    assert!(matches!(h.fill(&mut Stalled(b"\r\n\r\n")), Ok(true)));
    assert_eq!(h.parse().unwrap().0.path, "/");
}

#[test]
fn token_sources_and_precedence() {
    assert_eq!(
        req(&[("x-zt1-auth", "h")], "auth=q").token().as_deref(),
        Some("h")
    );
    assert_eq!(
        req(&[("authorization", "Bearer b")], "auth=q")
            .token()
            .as_deref(),
        Some("q")
    );
    for a in ["Bearer b", "bearer b", "BEARER  b", " Bearer b "] {
        assert_eq!(
            req(&[("authorization", a)], "").token().as_deref(),
            Some("b"),
            "{a}"
        );
    }
    for a in ["Basic b", "Bearer", "Bearer b c", "Bearerb", ""] {
        assert_eq!(req(&[("authorization", a)], "").token(), None, "{a}");
    }
    // Present but empty still shadows the later sources.
    assert_eq!(
        req(&[("x-zt1-auth", "")], "auth=q").token().as_deref(),
        Some("")
    );
    assert_eq!(req(&[], "").token(), None);
    assert!(ct_eq(b"abc", b"abc"));
    assert!(!ct_eq(b"abc", b"abd") && !ct_eq(b"abc", b"ab"));
}

#[test]
fn content_and_jsonp() {
    let r = Response::content(404, String::new());
    assert_eq!(r.body, "{}");
    assert_eq!(r.clone().with_jsonp(Some("cb")).body, "cb(null);");
    let r = Response::json(200, &json!({"b": 1, "a": [true]}));
    assert_eq!(r.body, r#"{"a":[true],"b":1}"#, "keys sorted, compact");
    let j = r.with_jsonp(Some("cb"));
    assert_eq!(
        (j.body.as_str(), j.content_type),
        (r#"cb({"a":[true],"b":1});"#, "application/javascript")
    );
    let e = Response::empty(404).with_jsonp(Some("cb"));
    assert_eq!((e.body.as_str(), e.content_type), ("", ""));
    let e = Response::error(500, "bad \"json\"");
    assert_eq!(e.body, r#"{"error": 500, "description": "bad \"json\""}"#);
    assert!(serde_json::from_str::<Value>(&e.body).is_ok());
}

#[test]
fn local_conf_is_written_with_four_spaces() {
    let v = json!({"settings": {"primaryPort": 9993, "a": [1]}});
    assert_eq!(
        pretty4(&v),
        "{\n    \"settings\": {\n        \"a\": [\n            1\n        ],\n        \"primaryPort\": 9993\n    }\n}\n"
    );
}

fn idle_api(token: &str) -> (NodeRuntime, Api) {
    let rt = NodeRuntime::new(Arc::new(MemoryStore::new()), RuntimeOptions::default());
    let api = Api::new(rt.handle(), token.to_owned(), None);
    (rt, api)
}

#[test]
fn authentication_before_routing() {
    let (_rt, api) = idle_api("s3cret");
    let get = |path: &str, query: &str, headers: &[(&str, &str)]| {
        let mut r = req(headers, query);
        r.path = path.to_owned();
        api.handle(&r)
    };
    for (q, h) in [
        ("", vec![]),
        ("", vec![("x-zt1-auth", "wrong")]),
        ("auth=s3cret", vec![("x-zt1-auth", "wrong")]),
        ("auth=s3cre", vec![]),
        ("", vec![("authorization", "Bearer s3cret extra")]),
    ] {
        for path in [
            "/status",
            "/nothing/here",
            "/controller/network",
            "/metrics",
        ] {
            let r = get(path, q, &h);
            assert_eq!((r.status, r.body.as_str()), (401, "{}"), "{path} {q} {h:?}");
        }
    }
    let r = get("/status", "jsonp=cb", &[]);
    assert_eq!((r.status, r.body.as_str()), (401, "cb({});"));
    // No token needed for /health (and /app, /sso, which zt does not serve).
    let r = get("/health", "", &[]);
    assert_eq!(r.status, 200);
    let h: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        (h["online"].as_bool(), h["version"].as_str()),
        (Some(false), Some("1.14.1"))
    );
    assert_eq!(get("/app/x", "", &[]).status, 404);
    // Every source with the right token passes authentication.
    for (q, h) in [
        ("", vec![("x-zt1-auth", "s3cret")]),
        ("auth=s3cret", vec![]),
        ("", vec![("authorization", "bearer s3cret")]),
    ] {
        let r = get("/nothing", q, &h);
        assert_eq!((r.status, r.body.as_str()), (404, ""), "{q} {h:?}");
        // The node is not running: no status yet.
        assert_eq!(get("/status", q, &h).status, 503);
    }
    // An API without a token refuses everything that needs one.
    let (_rt, open) = idle_api("");
    let mut r = req(&[("x-zt1-auth", "")], "");
    r.path = "/status".into();
    assert_eq!(open.handle(&r).status, 401);
}

#[test]
fn routes_need_exact_paths_and_methods() {
    let (_rt, api) = idle_api("t");
    for (m, p) in [
        ("GET", "/status/"),
        ("GET", "/network/0123456789abcde"),
        ("GET", "/network/0123456789abcdefa"),
        ("GET", "/network/0123456789abcdeg"),
        ("PATCH", "/network/0123456789abcdef"),
        ("POST", "/status"),
        ("GET", "/peer/012345678"),
        ("GET", "/unstable/controller/network/0123456789abcdef"),
    ] {
        let r = api.handle_trusted(m, p, b"");
        assert_eq!((r.status, r.body.as_str()), (404, ""), "{m} {p}");
    }
    // Bonding is never in use.
    assert_eq!(
        api.handle_trusted("GET", "/bond/show/0123456789", b"")
            .status,
        400
    );
    let r = api.handle_trusted("POST", "/bond/setmtu/1400/eth0/10.0.0.1", b"");
    assert_eq!(
        (r.status, r.body.as_str()),
        (400, "Bonding layer isn't active yet")
    );
    // Routed, but the node is not running.
    for (m, p) in [
        ("GET", "/network/0123456789ABCDEF"),
        ("DELETE", "/network/0123456789abcdef"),
        ("GET", "/peer/01234567AB"),
        ("GET", "/controller"),
    ] {
        assert_eq!(api.handle_trusted(m, p, b"").status, 503, "{m} {p}");
    }
    let r = api.handle_trusted("GET", "/config", b"");
    assert_eq!((r.status, r.body.as_str()), (200, "{}"));
    assert_eq!(api.handle_trusted("GET", "/metrics", b"").status, 500);
}

fn exchange(port: u16, raw: &[u8], shutdown: bool) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(raw).unwrap();
    if shutdown {
        s.shutdown(Shutdown::Write).unwrap();
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn server_answers_garbage_and_keeps_serving() {
    let (_rt, api) = idle_api("t");
    let server = HttpServer::start(api, 0).unwrap();
    let port = server.port();
    // (request, shut the sending side after it, expected status)
    for (raw, shutdown, status) in [
        (&b"\x00\x01garbage\r\n\r\n"[..], false, 400),
        (
            b"POST /x HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n{",
            false,
            413,
        ),
        // A truncated body: 400 with the token; without one, 401 from the head alone.
        (
            b"POST /x HTTP/1.1\r\nX-ZT1-Auth: t\r\nContent-Length: 50\r\n\r\n{",
            true,
            400,
        ),
        (
            b"POST /x HTTP/1.1\r\nContent-Length: 50\r\n\r\n{",
            true,
            401,
        ),
    ] {
        let r = exchange(port, raw, shutdown);
        assert!(r.starts_with(&format!("HTTP/1.1 {status} ")), "{r}");
    }
    let r = exchange(port, b"", true);
    assert_eq!(r, "", "nothing sent, nothing answered");
    let r = exchange(
        port,
        b"POST /nothing HTTP/1.1\r\nX-ZT1-Auth: t\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n{}",
        false,
    );
    assert!(
        r.starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 "),
        "{r}"
    );
    // Without the token, no 100 Continue: the refusal comes at once.
    let r = exchange(
        port,
        b"POST /nothing HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n",
        false,
    );
    assert!(r.starts_with("HTTP/1.1 401 "), "{r}");
    let r = exchange(port, b"HEAD /health HTTP/1.1\r\n\r\n", false);
    assert!(
        r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with("\r\n\r\n"),
        "{r}"
    );
    let r = exchange(port, b"GET /health?jsonp=f HTTP/1.1\r\n\r\n", false);
    assert!(
        r.contains("Content-Type: application/javascript\r\n"),
        "{r}"
    );
    assert!(r.contains("\r\n\r\nf({\"clock\":"), "{r}");
    let r = exchange(port, b"GET /status HTTP/1.1\r\n\r\n", false);
    assert!(
        r.starts_with("HTTP/1.1 401 ") && r.ends_with("\r\n\r\n{}"),
        "{r}"
    );
}

#[test]
fn a_taken_port_is_an_error_not_a_half_served_api() {
    // Another program on 127.0.0.1's port would answer this API's clients: refused, named.
    let other = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = other.local_addr().unwrap().port();
    let (_rt, api) = idle_api("t");
    let err = HttpServer::start(api, port).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    // Port 0 finds a pair of free ports, and both loopbacks answer on it.
    let (_rt, api) = idle_api("t");
    let server = HttpServer::start(api, 0).unwrap();
    let get = b"GET /status HTTP/1.1\r\nConnection: close\r\n\r\n";
    let r = exchange(server.port(), get, false);
    assert!(r.starts_with("HTTP/1.1 401 "), "{r}");
    if let Ok(mut s) = TcpStream::connect(("::1", server.port())) {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(get).unwrap();
        let mut r = String::new();
        let _ = s.read_to_string(&mut r);
        assert!(r.starts_with("HTTP/1.1 401 "), "{r}");
    }
}
