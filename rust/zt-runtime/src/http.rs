//! The local HTTP API of zerotier-one 1.14 (`/status`, `/peer`, `/network`, `/controller/...`),
//! served on loopback and authenticated by the home's `authtoken.secret`.
//!
//! Unlike zerotier-one, it binds only the loopback addresses (127.0.0.1 and ::1): the API is
//! for local tools. Requests are answered one per connection (`Connection: close`).
//!
//! Status codes and bodies follow zerotier-one (cpp-httplib): answers produced by a handler
//! carry JSON (`{}` when the handler had nothing to say) and honour `?jsonp=<fn>`; a path no
//! handler serves, and the controller's 400/404/503, get an empty body; failures to parse a
//! controller body give 500 `{"error": 500, "description": "..."}`; a missing or wrong token
//! gives 401 `{}`. Malformed requests get 400 (414 for an oversized request line, 431 for too
//! many or too long headers, 413 for a body over 16 MiB); slow clients are cut off.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};
use zt_proto::Address;
use zt_proto::network::NetworkId;

use crate::api::{self, LocalSettings};
use crate::controller::ApiError;
use crate::runtime::{LoopCtx, NodeHandle};

/// Largest request body accepted (413 beyond).
pub const MAX_BODY: usize = 16 << 20;
/// Longest request line (414 beyond).
const MAX_REQUEST_LINE: usize = 8192;
/// Longest header line (431 beyond).
const MAX_HEADER_LINE: usize = 8192;
/// Most header lines (431 beyond).
const MAX_HEADERS: usize = 100;
/// Longest chunk-size or trailer line of a chunked body.
const MAX_CHUNK_LINE: usize = 1024;
/// How long a call into the node's loop may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send a whole request.
const REQUEST_DEADLINE: Duration = Duration::from_secs(30);
/// How long a client may stay silent while sending a request.
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long writing the answer may block.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more are closed unanswered.
const MAX_CONNECTIONS: usize = 64;
/// Methods cpp-httplib parses (others are malformed requests).
const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// An HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Body (JSON text unless `content_type` says otherwise; may be empty).
    pub body: String,
    /// Content type (empty when there is no body).
    pub content_type: &'static str,
    /// The text a handler set as content (zerotier-one's `setContent`), which `?jsonp=`
    /// wraps; None when no content was set.
    content: Option<String>,
}

impl Response {
    /// Content set by a handler: JSON text, `{}` if empty.
    fn content(status: u16, text: String) -> Self {
        Self {
            status,
            body: if text.is_empty() {
                "{}".to_owned()
            } else {
                text.clone()
            },
            content_type: "application/json",
            content: Some(text),
        }
    }

    fn json(status: u16, v: &Value) -> Self {
        Self::content(status, v.to_string())
    }

    /// No content (cpp-httplib's default for unrouted paths and bare statuses).
    fn empty(status: u16) -> Self {
        Self {
            status,
            body: String::new(),
            content_type: "",
            content: None,
        }
    }

    /// The exception answer: `{"error": <status>, "description": "<text>"}`.
    fn error(status: u16, description: &str) -> Self {
        let d = serde_json::to_string(description).unwrap_or_else(|_| "\"\"".to_owned());
        Self::content(
            status,
            format!("{{\"error\": {status}, \"description\": {d}}}"),
        )
    }

    fn with_jsonp(self, f: Option<&str>) -> Self {
        match (f, &self.content) {
            (Some(f), Some(c)) => Self {
                body: if c.is_empty() {
                    format!("{f}(null);")
                } else {
                    format!("{f}({c});")
                },
                content_type: "application/javascript",
                ..self
            },
            _ => self,
        }
    }
}

/// A parsed request.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Method (as sent; one of the standard methods).
    pub method: String,
    /// Path without query, percent-decoded.
    pub path: String,
    /// Query parameters, percent-decoded.
    pub query: Vec<(String, String)>,
    /// Headers (names lower case, values trimmed).
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The token presented: `X-ZT1-Auth`, else `?auth=`, else `Authorization: Bearer <token>`
    /// (scheme in any case, exactly two space-separated words). Only the first of the three
    /// that is present counts, as in zerotier-one: a wrong `X-ZT1-Auth` is not rescued by a
    /// right `?auth=`.
    #[must_use]
    pub fn token(&self) -> Option<String> {
        if let Some(t) = self.header("x-zt1-auth") {
            return Some(t.to_owned());
        }
        if let Some(t) = self.param("auth") {
            return Some(t.to_owned());
        }
        let a = self.header("authorization")?;
        let mut parts = a.split(' ').filter(|s| !s.is_empty());
        match (parts.next(), parts.next(), parts.next()) {
            (Some(scheme), Some(t), None) if scheme.eq_ignore_ascii_case("bearer") => {
                Some(t.to_owned())
            }
            _ => None,
        }
    }
}

/// Decodes `%xx` escapes (invalid ones are kept as is); `plus` also turns `+` into a space
/// (query strings, not paths).
fn percent_decode(s: &str, plus: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let h = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                if let Some(v) = h {
                    out.push(v);
                    i += 3;
                } else {
                    out.push(b'%');
                    i += 1;
                }
            }
            b'+' if plus => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect()
}

/// Why a request could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The client closed the connection before sending anything (nothing to answer).
    #[error("connection closed")]
    Closed,
    /// The client was too slow.
    #[error("request timed out")]
    Timeout,
    /// A malformed or refused request, to answer with this status.
    #[error("{1}")]
    Bad(u16, &'static str),
    /// Another I/O failure.
    #[error(transparent)]
    Io(io::Error),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Self::Timeout,
            io::ErrorKind::UnexpectedEof => Self::Bad(400, "truncated request"),
            _ => Self::Io(e),
        }
    }
}

/// How the body of a request is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body.
    None,
    /// `Content-Length` bytes.
    Length(usize),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// Reads one line of at most `max` bytes (without its CRLF/LF). None at end of stream before
/// any byte; `too_long` status if longer.
fn read_line(
    r: &mut impl BufRead,
    max: usize,
    too_long: u16,
) -> Result<Option<Vec<u8>>, ReadError> {
    let mut buf = Vec::new();
    let n = r.take(max as u64 + 2).read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        return Err(if buf.len() > max {
            ReadError::Bad(too_long, "line too long")
        } else {
            ReadError::Bad(400, "truncated request")
        });
    }
    buf.pop();
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    if buf.len() > max {
        return Err(ReadError::Bad(too_long, "line too long"));
    }
    Ok(Some(buf))
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Reads the request line and headers; returns the request (without body) and its framing.
fn read_head(r: &mut impl BufRead) -> Result<(Request, Framing), ReadError> {
    // Empty lines before the request line are tolerated (RFC 9112 §2.2).
    let mut line = None;
    for _ in 0..4 {
        match read_line(r, MAX_REQUEST_LINE, 414)? {
            None => return Err(ReadError::Closed),
            Some(l) if l.is_empty() => continue,
            Some(l) => {
                line = Some(l);
                break;
            }
        }
    }
    let line = line.ok_or(ReadError::Bad(400, "malformed request line"))?;
    let line =
        std::str::from_utf8(&line).map_err(|_| ReadError::Bad(400, "request line is not text"))?;
    let parts: Vec<&str> = line.split(' ').collect();
    let [method, target, version] = parts.as_slice() else {
        return Err(ReadError::Bad(400, "malformed request line"));
    };
    if !METHODS.contains(method) {
        return Err(ReadError::Bad(400, "unknown method"));
    }
    if *version != "HTTP/1.1" && *version != "HTTP/1.0" {
        return Err(ReadError::Bad(400, "unsupported HTTP version"));
    }
    if !target.starts_with('/') || target.bytes().any(|b| b.is_ascii_control()) {
        return Err(ReadError::Bad(400, "malformed request target"));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut req = Request {
        method: (*method).to_owned(),
        path: percent_decode(path, false),
        query: parse_query(query),
        ..Request::default()
    };
    loop {
        let Some(h) = read_line(r, MAX_HEADER_LINE, 431)? else {
            return Err(ReadError::Bad(400, "truncated request"));
        };
        if h.is_empty() {
            break;
        }
        if req.headers.len() >= MAX_HEADERS {
            return Err(ReadError::Bad(431, "too many headers"));
        }
        if h[0] == b' ' || h[0] == b'\t' {
            return Err(ReadError::Bad(400, "folded header line"));
        }
        let h = String::from_utf8_lossy(&h);
        let Some((k, v)) = h.split_once(':') else {
            return Err(ReadError::Bad(400, "malformed header line"));
        };
        if !is_token(k) {
            return Err(ReadError::Bad(400, "malformed header name"));
        }
        req.headers.push((
            k.to_ascii_lowercase(),
            v.trim_matches([' ', '\t']).to_owned(),
        ));
    }
    let framing = framing(&req)?;
    Ok((req, framing))
}

fn framing(req: &Request) -> Result<Framing, ReadError> {
    let mut te = req.headers.iter().filter(|(k, _)| k == "transfer-encoding");
    let mut length: Option<usize> = None;
    for (_, v) in req.headers.iter().filter(|(k, _)| k == "content-length") {
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ReadError::Bad(400, "bad content-length"));
        }
        // Too many digits to be a size is too large a body, not a malformed one.
        let n = v.parse::<usize>().unwrap_or(usize::MAX);
        if length.is_some_and(|l| l != n) {
            return Err(ReadError::Bad(400, "conflicting content-length"));
        }
        length = Some(n);
    }
    match (te.next(), length) {
        (Some(_), Some(_)) => Err(ReadError::Bad(
            400,
            "both content-length and transfer-encoding",
        )),
        (Some((_, v)), None) => {
            if te.next().is_none() && v.eq_ignore_ascii_case("chunked") {
                Ok(Framing::Chunked)
            } else {
                Err(ReadError::Bad(400, "unsupported transfer-encoding"))
            }
        }
        (None, Some(n)) if n > MAX_BODY => Err(ReadError::Bad(413, "body too large")),
        (None, Some(0) | None) => Ok(Framing::None),
        (None, Some(n)) => Ok(Framing::Length(n)),
    }
}

fn read_body(r: &mut impl BufRead, framing: Framing) -> Result<Vec<u8>, ReadError> {
    match framing {
        Framing::None => Ok(Vec::new()),
        Framing::Length(n) => {
            let mut body = Vec::with_capacity(n.min(1 << 16));
            r.take(n as u64).read_to_end(&mut body)?;
            if body.len() == n {
                Ok(body)
            } else {
                Err(ReadError::Bad(400, "truncated body"))
            }
        }
        Framing::Chunked => {
            let mut body = Vec::new();
            loop {
                let line = read_line(r, MAX_CHUNK_LINE, 400)?
                    .ok_or(ReadError::Bad(400, "truncated body"))?;
                let line = String::from_utf8_lossy(&line);
                let size = line.split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(size, 16)
                    .ok()
                    .filter(|_| !size.is_empty() && size.bytes().all(|b| b.is_ascii_hexdigit()))
                    .ok_or(ReadError::Bad(400, "bad chunk size"))?;
                if size == 0 {
                    // Trailer fields, up to the empty line.
                    for _ in 0..=MAX_HEADERS {
                        match read_line(r, MAX_HEADER_LINE, 431)? {
                            None => return Err(ReadError::Bad(400, "truncated body")),
                            Some(l) if l.is_empty() => return Ok(body),
                            Some(_) => {}
                        }
                    }
                    return Err(ReadError::Bad(431, "too many trailer fields"));
                }
                if body.len().saturating_add(size) > MAX_BODY {
                    return Err(ReadError::Bad(413, "body too large"));
                }
                let before = body.len();
                r.take(size as u64).read_to_end(&mut body)?;
                if body.len() - before != size {
                    return Err(ReadError::Bad(400, "truncated body"));
                }
                match read_line(r, 0, 400)? {
                    Some(l) if l.is_empty() => {}
                    _ => return Err(ReadError::Bad(400, "bad chunk")),
                }
            }
        }
    }
}

/// Reads one request (head and body) from a stream.
///
/// # Errors
/// End of stream before a request, I/O errors and timeouts, malformed or oversized requests
/// (with the status to answer).
pub fn read_request(stream: &mut impl Read) -> Result<Request, ReadError> {
    let mut r = BufReader::new(stream);
    let (mut req, framing) = read_head(&mut r)?;
    req.body = read_body(&mut r, framing)?;
    Ok(req)
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

fn write_response(stream: &mut impl Write, resp: &Response, head_only: bool) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        resp.status,
        reason(resp.status),
        resp.body.len()
    );
    if !resp.content_type.is_empty() {
        head.push_str("Content-Type: ");
        head.push_str(resp.content_type);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    if !head_only {
        out.extend_from_slice(resp.body.as_bytes());
    }
    stream.write_all(&out)?;
    stream.flush()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// JSON with 4-space indentation (how zerotier-one writes `local.conf`). JSON strings hold no
/// raw newlines, so every line's leading spaces are indentation.
fn pretty4(v: &Value) -> String {
    let two = serde_json::to_string_pretty(v).unwrap_or_default();
    let mut out = String::with_capacity(two.len() * 2);
    for line in two.lines() {
        let body = line.trim_start_matches(' ');
        let indent = line.len() - body.len();
        out.extend(std::iter::repeat_n(' ', indent * 2));
        out.push_str(body);
        out.push('\n');
    }
    out
}

fn is_hex(s: &str, n: usize) -> bool {
    s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn hex_u64(s: &str) -> u64 {
    u64::from_str_radix(s, 16).unwrap_or(0)
}

/// Per-network local settings of every node of the process, by (node address, network ID):
/// what in-process calls and the HTTP server share; files in the home keep them across runs.
fn settings_cache() -> &'static Mutex<HashMap<(u64, u64), LocalSettings>> {
    static CACHE: OnceLock<Mutex<HashMap<(u64, u64), LocalSettings>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Routes and authentication, independent of sockets (so tests call it directly).
#[derive(Debug, Clone)]
pub struct Api {
    node: NodeHandle,
    token: String,
    home: Option<String>,
}

type Routed = Result<Response, Response>;

impl Api {
    /// An API over `node`, accepting `token`; `home` is the node's home directory (for
    /// `homeDir`, `local.conf` and the per-network `networks.d/<nwid>.local.conf`), if any.
    #[must_use]
    pub fn new(node: NodeHandle, token: String, home: Option<String>) -> Self {
        Self { node, token, home }
    }

    fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut LoopCtx<'_>) -> T + Send + 'static,
    ) -> Result<T, Response> {
        self.node
            .call(f, CALL_TIMEOUT)
            .map_err(|e| Response::error(503, &e.to_string()))
    }

    fn home_file(&self, rel: &str) -> Option<PathBuf> {
        self.home.as_ref().map(|h| PathBuf::from(h).join(rel))
    }

    /// Answers a request from inside the process (the Python API): no token needed.
    #[must_use]
    pub fn handle_trusted(&self, method: &str, path: &str, body: &[u8]) -> Response {
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        let req = Request {
            method: method.to_ascii_uppercase(),
            path: percent_decode(path, false),
            query: parse_query(query),
            headers: Vec::new(),
            body: body.to_vec(),
        };
        let jsonp = req.param("jsonp").map(str::to_owned);
        self.dispatch(&req).with_jsonp(jsonp.as_deref())
    }

    fn token_ok(&self, presented: Option<&str>, extra: Option<&str>) -> bool {
        let Some(p) = presented else {
            return false;
        };
        let eq = |t: &str| !t.is_empty() && subtle_eq::ct_eq(p.as_bytes(), t.as_bytes());
        eq(&self.token) || extra.is_some_and(eq)
    }

    /// Answers one request (authentication first, as zerotier-one's pre-routing check: an
    /// unknown path without a token is 401 too).
    #[must_use]
    pub fn handle(&self, req: &Request) -> Response {
        let jsonp = req.param("jsonp");
        let token = req.token();
        let authorized = if req.path == "/metrics" {
            let metrics = self
                .home_file("metricstoken.secret")
                .and_then(|p| std::fs::read_to_string(p).ok())
                .map(|t| t.trim().to_owned());
            self.token_ok(token.as_deref(), metrics.as_deref())
        } else {
            req.path == "/health"
                || req.path == "/sso"
                || req.path.starts_with("/app")
                || self.token_ok(token.as_deref(), None)
        };
        if !authorized {
            return Response::content(401, "{}".to_owned()).with_jsonp(jsonp);
        }
        self.dispatch(req).with_jsonp(jsonp)
    }

    fn dispatch(&self, req: &Request) -> Response {
        let route = if req.method == "HEAD" {
            self.route(&Request {
                method: "GET".to_owned(),
                ..req.clone()
            })
        } else {
            self.route(req)
        };
        match route {
            Ok(r) | Err(r) => r,
        }
    }

    fn route(&self, req: &Request) -> Routed {
        let segs: Vec<&str> = req.path.split('/').skip(1).collect();
        let m = req.method.as_str();
        let post = m == "POST" || m == "PUT";
        let ok = |v: Value| Ok(Response::json(200, &v));
        match (m, segs.as_slice()) {
            ("GET", ["health"]) => {
                let online = self.node.snapshot().is_some_and(|s| s.online);
                ok(api::health_json(online, now_ms()))
            }
            ("GET", ["status"]) => {
                let port = self.port()?;
                let home = self.home.clone();
                let local_conf = self.local_conf();
                let now = now_ms();
                ok(self.call(move |ctx| {
                    api::status_json(ctx.node, now, port, home.as_deref(), local_conf)
                })?)
            }
            ("GET", ["peer"]) => {
                let port = self.port()?;
                ok(self.call(move |ctx| api::peers_json(ctx.node, ctx.now, port))?)
            }
            ("GET", ["peer", a]) if is_hex(a, 10) => {
                let port = self.port()?;
                let a = Address::from_u64_truncating(hex_u64(a));
                ok(self.call(move |ctx| {
                    ctx.node
                        .peer(a)
                        .map_or_else(|| json!({}), |p| api::peer_json(ctx.node, p, ctx.now, port))
                })?)
            }
            ("GET", ["network"]) => {
                let (me, mut nets) = self.call(|ctx| (ctx.node.address(), ctx.node.networks()))?;
                nets.sort_by_key(|n| n.id);
                ok(Value::Array(
                    nets.iter()
                        .map(|n| api::network_json_with(n, &self.settings(me, n.id)))
                        .collect(),
                ))
            }
            (_, ["network", id]) if is_hex(id, 16) => self.network(req, NetworkId(hex_u64(id))),
            ("GET", ["moon"]) => {
                let s = self.node.snapshot().ok_or_else(|| Response::empty(503))?;
                ok(Value::Array(s.moons.iter().map(api::moon_json).collect()))
            }
            ("GET", ["moon", id]) if is_hex(id, 10) => {
                let s = self.node.snapshot().ok_or_else(|| Response::empty(503))?;
                let id = hex_u64(id);
                ok(s.moons
                    .iter()
                    .find(|w| w.id == id)
                    .map_or_else(|| json!({}), api::moon_json))
            }
            ("GET", ["config"]) => ok(self.local_conf()),
            (_, ["config", "settings"]) if post => self.config_settings(req),
            ("GET", ["metrics"]) => Ok(self
                .home_file("metrics.prom")
                .and_then(|p| std::fs::read_to_string(p).ok())
                .map_or_else(
                    || Response {
                        status: 500,
                        body: "{}".to_owned(),
                        content_type: "application/json",
                        content: None,
                    },
                    |text| Response {
                        status: 200,
                        body: text,
                        content_type: "text/plain",
                        content: None,
                    },
                )),
            // No multipath bonding in zt: zerotier-one's answers when bonding is not in use.
            ("GET", ["bond", "show", a]) if is_hex(a, 10) => {
                Ok(Response::content(400, String::new()))
            }
            (_, ["bond", "rotate", a]) if post && is_hex(a, 10) => {
                Ok(Response::content(400, String::new()))
            }
            (_, ["bond", "setmtu", mtu, ifname, ip])
                if post
                    && (1..=6).contains(&mtu.len())
                    && mtu.bytes().all(|b| b.is_ascii_digit())
                    && (1..=16).contains(&ifname.len())
                    && ifname
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    && (1..=39).contains(&ip.len())
                    && ip
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit() || b == b'.' || b == b':') =>
            {
                Ok(Response::content(
                    400,
                    "Bonding layer isn't active yet".to_owned(),
                ))
            }
            (_, ["controller", rest @ ..]) => self.controller(req, rest, post),
            ("GET", ["unstable", "controller", "network"]) => self.unstable_networks(),
            ("GET", ["unstable", "controller", "network", nw, "member"]) if is_hex(nw, 16) => {
                self.unstable_members(NetworkId(hex_u64(nw)))
            }
            _ => Err(Response::empty(404)),
        }
    }

    fn port(&self) -> Result<u16, Response> {
        self.node
            .snapshot()
            .map(|s| s.port)
            .ok_or_else(|| Response::empty(503))
    }

    /// The home's `local.conf` as JSON (`{}` if absent or unreadable).
    fn local_conf(&self) -> Value {
        self.home_file("local.conf")
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .filter(Value::is_object)
            .unwrap_or_else(|| json!({}))
    }

    fn config_settings(&self, req: &Request) -> Routed {
        let body: Value =
            serde_json::from_slice(&req.body).map_err(|e| Response::error(500, &e.to_string()))?;
        if let (Value::Object(b), Some(path)) = (&body, self.home_file("local.conf")) {
            let mut lc = match self.local_conf() {
                Value::Object(m) => m,
                _ => Map::new(),
            };
            let settings = lc
                .entry("settings")
                .or_insert_with(|| Value::Object(Map::new()));
            if !settings.is_object() {
                *settings = Value::Object(Map::new());
            }
            if let Value::Object(s) = settings {
                s.extend(b.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            if let Err(e) = std::fs::write(&path, pretty4(&Value::Object(lc))) {
                log::warn!(target: "zt.api", "cannot write {}: {e}", path.display());
            }
        }
        Ok(Response::content(200, "{}".to_owned()))
    }

    fn settings_path(&self, id: NetworkId) -> Option<PathBuf> {
        self.home_file(&format!("networks.d/{id}.local.conf"))
    }

    /// A network's local settings: as last set in this process, else from the home's
    /// `.local.conf`, else the defaults.
    fn settings(&self, me: Address, id: NetworkId) -> LocalSettings {
        let key = (me.to_u64(), id.0);
        let mut cache = settings_cache()
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = cache.get(&key) {
            return *s;
        }
        let s = self
            .settings_path(id)
            .and_then(|p| std::fs::read_to_string(p).ok())
            .map(|t| LocalSettings::from_conf(&t))
            .unwrap_or_default();
        cache.insert(key, s);
        s
    }

    fn store_settings(&self, me: Address, id: NetworkId, s: Option<LocalSettings>) {
        let key = (me.to_u64(), id.0);
        let mut cache = settings_cache()
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match s {
            Some(s) => {
                cache.insert(key, s);
                if let Some(p) = self.settings_path(id) {
                    let r = p
                        .parent()
                        .map_or(Ok(()), std::fs::create_dir_all)
                        .and_then(|()| std::fs::write(&p, s.to_conf()));
                    if let Err(e) = r {
                        log::warn!(target: "zt.api", "cannot write {}: {e}", p.display());
                    }
                }
            }
            None => {
                cache.remove(&key);
                if let Some(p) = self.settings_path(id) {
                    let _ = std::fs::remove_file(p);
                }
            }
        }
    }

    /// `/network/<id>`: GET, POST/PUT (join + local settings), DELETE (leave).
    fn network(&self, req: &Request, id: NetworkId) -> Routed {
        match req.method.as_str() {
            "GET" => {
                let (me, n) = self.call(move |ctx| (ctx.node.address(), ctx.node.network(id)))?;
                match n {
                    Some(n) => Ok(Response::json(
                        200,
                        &api::network_json_with(&n, &self.settings(me, id)),
                    )),
                    None => Ok(Response::content(404, String::new())),
                }
            }
            "POST" | "PUT" => {
                // As zerotier-one: an unparsable or empty body is no settings.
                let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
                let (me, n) = self.call(move |ctx| {
                    ctx.node.join(ctx.now, id);
                    (ctx.node.address(), ctx.node.network(id))
                })?;
                let Some(n) = n else {
                    return Ok(Response::json(200, &json!({})));
                };
                let mut s = self.settings(me, id);
                s.apply_post(&body);
                self.store_settings(me, id, Some(s));
                Ok(Response::json(200, &api::network_json_with(&n, &s)))
            }
            "DELETE" => {
                let (me, left) = self.call(move |ctx| (ctx.node.address(), ctx.node.leave(id)))?;
                if left {
                    self.store_settings(me, id, None);
                    Ok(Response::json(200, &json!({"result": true})))
                } else {
                    Ok(Response::json(200, &json!({})))
                }
            }
            _ => Err(Response::empty(404)),
        }
    }

    fn controller_error(e: ApiError) -> Response {
        match e {
            ApiError::NotFound => Response::empty(404),
            ApiError::BadRequest(_) => Response::empty(400),
            ApiError::Unavailable(_) => Response::empty(503),
            ApiError::Internal(d) => Response::error(500, &d),
        }
    }

    /// Runs `f` on the controller; 404 (empty) if this node runs none.
    fn with_controller<T: Send + 'static>(
        &self,
        f: impl FnOnce(
            &mut crate::controller::ControllerHost,
            &mut zt_proto::Node,
            zt_proto::Timestamp,
        ) -> Result<T, ApiError>
        + Send
        + 'static,
    ) -> Result<T, Response> {
        let r = self.call(move |ctx| {
            let now = ctx.now;
            ctx.controller.as_deref_mut().map(|c| f(c, ctx.node, now))
        })?;
        r.ok_or_else(|| Response::empty(404))?
            .map_err(Self::controller_error)
    }

    fn body(req: &Request) -> Result<Value, Response> {
        serde_json::from_slice(&req.body).map_err(|e| Response::error(500, &e.to_string()))
    }

    fn controller(&self, req: &Request, segs: &[&str], post: bool) -> Routed {
        let m = req.method.as_str();
        let ok = |v: Value| Ok(Response::json(200, &v));
        match (m, segs) {
            ("GET", []) => {
                self.with_controller(|_, _, _| Ok(()))?;
                Ok(Response::content(
                    200,
                    format!(
                        "{{\n\t\"controller\": true,\n\t\"apiVersion\": 4,\n\t\"clock\": {},\n\t\"databaseReady\": true\n}}\n",
                        now_ms()
                    ),
                ))
            }
            ("GET", ["network"]) => {
                let ids = self.with_controller(|c, _, _| c.network_ids())?;
                ok(Value::Array(
                    ids.iter().map(|i| Value::String(i.to_string())).collect(),
                ))
            }
            (_, ["network"]) if post => {
                let body = Self::body(req)?;
                ok(self
                    .with_controller(move |c, node, now| c.post_network(node, now, None, &body))?)
            }
            (_, ["network", nw])
                if post && nw.len() == 16 && nw.ends_with("______") && is_hex(&nw[..10], 10) =>
            {
                // The legacy create form: the prefix must be this controller's address as
                // zerotier-one prints it (lower case), compared as a string.
                let prefix = nw[..10].to_owned();
                let me = self
                    .node
                    .snapshot()
                    .ok_or_else(|| Response::empty(503))?
                    .identity
                    .address()
                    .to_string();
                self.with_controller(|_, _, _| Ok(()))?;
                if prefix != me {
                    return Err(Response::empty(400));
                }
                let body = Self::body(req)?;
                ok(self
                    .with_controller(move |c, node, now| c.post_network(node, now, None, &body))?)
            }
            (_, ["network", nw, rest @ ..]) if is_hex(nw, 16) => {
                self.controller_network(req, NetworkId(hex_u64(nw)), rest, post)
            }
            _ => Err(Response::empty(404)),
        }
    }

    fn controller_network(
        &self,
        req: &Request,
        id: NetworkId,
        rest: &[&str],
        post: bool,
    ) -> Routed {
        let m = req.method.as_str();
        let ok = |v: Value| Ok(Response::json(200, &v));
        match (m, rest) {
            ("GET", []) => ok(self.with_controller(move |c, _, _| c.network(id))?),
            (_, []) if post => {
                let body = Self::body(req)?;
                ok(self.with_controller(move |c, node, now| {
                    c.post_network(node, now, Some(id), &body)
                })?)
            }
            ("DELETE", []) => {
                ok(self.with_controller(move |c, node, now| c.delete_network(node, now, id))?)
            }
            ("GET", ["member"]) => {
                let members = self.with_controller(move |c, _, _| c.members(id))?;
                let obj: Map<String, Value> = members
                    .into_iter()
                    .map(|(a, rec)| {
                        let id = rec
                            .get("id")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned();
                        let id = if id.len() == 10 { id } else { a.to_string() };
                        let rev = zt_proto::controller::json::json_int(
                            rec.get("revision").unwrap_or(&Value::Null),
                            0,
                        );
                        (id, json!(rev))
                    })
                    .collect();
                ok(Value::Object(obj))
            }
            (_, ["member", a]) if is_hex(a, 10) => {
                let addr = Address::from_u64_truncating(hex_u64(a));
                match m {
                    "GET" => ok(self.with_controller(move |c, _, _| c.member(id, addr))?),
                    "POST" | "PUT" => {
                        // zerotier-one checks the network before parsing the body.
                        let body = match Self::body(req) {
                            Ok(b) => b,
                            Err(e) => {
                                self.with_controller(move |c, _, _| c.network(id))?;
                                return Err(e);
                            }
                        };
                        ok(self.with_controller(move |c, node, now| {
                            c.post_member(node, now, id, addr, &body)
                        })?)
                    }
                    "DELETE" => ok(self.with_controller(move |c, node, now| {
                        c.delete_member(node, now, id, addr)
                    })?),
                    _ => Err(Response::empty(404)),
                }
            }
            _ => Err(Response::empty(404)),
        }
    }

    fn authorized_count(members: &[(Address, Value)]) -> usize {
        members
            .iter()
            .filter(|(_, m)| {
                zt_proto::controller::json::json_bool(
                    m.get("authorized").unwrap_or(&Value::Null),
                    false,
                )
            })
            .count()
    }

    /// `GET /unstable/controller/network`: every network with member counts.
    fn unstable_networks(&self) -> Routed {
        let data = self.with_controller(|c, _, _| {
            let mut data = Vec::new();
            for id in c.network_ids()? {
                let (Ok(mut net), Ok(members)) = (c.network(id), c.members(id)) else {
                    continue;
                };
                if let Value::Object(o) = &mut net {
                    o.insert(
                        "meta".to_owned(),
                        json!({
                            "authorizedMemberCount": Self::authorized_count(&members),
                            "totalMemberCount": members.len(),
                        }),
                    );
                }
                data.push(net);
            }
            Ok(data)
        })?;
        let count = data.len();
        Ok(Response::json(
            200,
            &json!({"data": data, "meta": {"networkCount": count}}),
        ))
    }

    /// `GET /unstable/controller/network/<nwid>/member`: full member records with counts.
    fn unstable_members(&self, id: NetworkId) -> Routed {
        let members = self.with_controller(move |c, _, _| c.members(id))?;
        let authorized = Self::authorized_count(&members);
        let total = members.len();
        let data: Vec<Value> = members.into_iter().map(|(_, m)| m).collect();
        Ok(Response::json(
            200,
            &json!({"data": data, "meta": {"authorizedCount": authorized, "totalCount": total}}),
        ))
    }
}

mod subtle_eq {
    /// Constant-time comparison of secrets.
    pub(super) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
        if a.len() != b.len() {
            return false;
        }
        a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// A running HTTP server (stops when dropped).
#[derive(Debug)]
pub struct HttpServer {
    stop: Arc<AtomicBool>,
    addrs: Vec<SocketAddr>,
    threads: Vec<JoinHandle<()>>,
}

impl HttpServer {
    /// Serves `api` on 127.0.0.1 and ::1 at `port` (0 = any free port, the same on both where
    /// possible). Fails only if no address can be bound.
    ///
    /// # Errors
    /// Neither loopback address could be bound.
    pub fn start(api: Api, port: u16) -> io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let api = Arc::new(api);
        let mut listeners = Vec::new();
        let mut last_err = None;
        let mut port = port;
        for ip in ["127.0.0.1", "::1"] {
            match TcpListener::bind((ip, port)) {
                Ok(l) => {
                    if port == 0 {
                        port = l.local_addr()?.port();
                    }
                    listeners.push(l);
                }
                Err(e) => last_err = Some(e),
            }
        }
        if listeners.is_empty() {
            return Err(last_err.unwrap_or_else(|| io::Error::other("no listener")));
        }
        let active = Arc::new(AtomicUsize::new(0));
        let mut addrs = Vec::new();
        let mut threads = Vec::new();
        for l in listeners {
            addrs.push(l.local_addr()?);
            l.set_nonblocking(true)?;
            let stop = stop.clone();
            let api = api.clone();
            let active = active.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("zt-http".into())
                    .spawn(move || accept_loop(&l, &api, &stop, &active))?,
            );
        }
        Ok(Self {
            stop,
            addrs,
            threads,
        })
    }

    /// Where it listens.
    #[must_use]
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The TCP port.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.addrs.first().map_or(0, SocketAddr::port)
    }

    /// Stops listening and waits for the accept threads.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Counts a connection as active while alive.
struct Active(Arc<AtomicUsize>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn accept_loop(l: &TcpListener, api: &Arc<Api>, stop: &AtomicBool, active: &Arc<AtomicUsize>) {
    while !stop.load(Ordering::SeqCst) {
        match l.accept() {
            Ok((stream, _)) => {
                if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
                    active.fetch_sub(1, Ordering::SeqCst);
                    log::debug!(target: "zt.api", "too many connections; closing one");
                    continue;
                }
                let guard = Active(active.clone());
                let api = api.clone();
                let spawned = std::thread::Builder::new()
                    .name("zt-http-conn".into())
                    .spawn(move || {
                        let _guard = guard;
                        serve(&stream, &api);
                    });
                if let Err(e) = spawned {
                    log::debug!(target: "zt.api", "cannot spawn: {e}");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(25));
            }
            Err(e) => {
                log::debug!(target: "zt.api", "accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Reads from a socket, failing once the request's deadline has passed or after
/// [`IDLE_TIMEOUT`] without data.
struct DeadlineReader<'a> {
    stream: &'a TcpStream,
    deadline: Instant,
}

impl Read for DeadlineReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        self.stream.set_read_timeout(Some(left.min(IDLE_TIMEOUT)))?;
        let mut s = self.stream;
        s.read(buf)
    }
}

fn serve(stream: &TcpStream, api: &Api) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let mut r = BufReader::new(DeadlineReader {
        stream,
        deadline: Instant::now() + REQUEST_DEADLINE,
    });
    let mut complete = false;
    let answer = match read_head(&mut r) {
        Ok((mut req, framing)) => {
            let expects_continue = req
                .header("expect")
                .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"));
            if expects_continue && framing != Framing::None {
                let mut w = stream;
                let _ = w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
            }
            match read_body(&mut r, framing) {
                Ok(body) => {
                    req.body = body;
                    complete = true;
                    Some((api.handle(&req), req.method == "HEAD"))
                }
                Err(e) => error_answer(&e),
            }
        }
        Err(e) => error_answer(&e),
    };
    if let Some((resp, head_only)) = answer {
        let mut w = stream;
        let _ = write_response(&mut w, &resp, head_only);
    }
    let _ = stream.shutdown(Shutdown::Write);
    if !complete {
        // Let the client read the answer: closing with unread input would reset the
        // connection. Drain briefly what it still sends (bounded in time and size).
        let _ = stream.set_read_timeout(Some(Duration::from_millis(250)));
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut buf = [0u8; 16 << 10];
        let mut s = stream;
        let mut total = 0usize;
        while Instant::now() < deadline && total < (1 << 20) {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    }
    let _ = stream.shutdown(Shutdown::Both);
}

fn error_answer(e: &ReadError) -> Option<(Response, bool)> {
    match e {
        ReadError::Closed | ReadError::Io(_) => None,
        ReadError::Timeout => Some((Response::error(408, &e.to_string()), false)),
        ReadError::Bad(status, why) => Some((Response::error(*status, why), false)),
    }
}

/// Reads `authtoken.secret` from a store, creating it (24 characters a–z0–9, owner-only) if
/// absent.
///
/// # Errors
/// The store failed.
pub fn auth_token(store: &dyn crate::store::Store) -> Result<String, crate::store::StoreError> {
    if let Some(t) = store.get("authtoken.secret")? {
        let t = String::from_utf8_lossy(&t).trim().to_owned();
        if !t.is_empty() {
            return Ok(t);
        }
    }
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut t = String::with_capacity(24);
    while t.len() < 24 {
        let mut b = [0u8; 1];
        zt_proto::crypto::SecureRandom::fill(&mut crate::rng::OsRng, &mut b);
        // 252 = 7 × 36: rejecting the rest keeps every character equally likely.
        if b[0] < 252 {
            t.push(ALPHABET[usize::from(b[0]) % ALPHABET.len()] as char);
        }
    }
    store.put("authtoken.secret", t.as_bytes(), true)?;
    Ok(t)
}

#[cfg(test)]
mod tests {
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
        let r =
            parse(b"POST /x HTTP/1.1\nContent-Length: 5\nContent-Length: 5\n\nhello+junk").unwrap();
        assert_eq!(r.body, b"hello");
        let r = parse(
            b"POST /x HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nX-T: 1\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.body, b"Wikipedia");
        let r = parse(b"POST /x HTTP/1.1\r\nContent-Length: 0\r\n\r\n").unwrap();
        assert!(r.body.is_empty());
        // Non-UTF-8 bodies and header values are accepted as bytes / lossy text.
        let r = parse(b"POST /x HTTP/1.1\r\nX-A: \xff\xfe\r\nContent-Length: 2\r\n\r\n\xff\x00")
            .unwrap();
        assert_eq!(r.body, b"\xff\x00");
        assert_eq!(r.header("x-a"), Some("\u{fffd}\u{fffd}"));
    }

    #[test]
    fn refuses_bad_content_lengths_and_encodings() {
        for cl in ["abc", "-1", "+5", "5 5", "0x10", ""] {
            let raw = format!("POST /x HTTP/1.1\r\nContent-Length: {cl}\r\n\r\n");
            assert_eq!(status_of(raw.as_bytes()), 400, "content-length {cl:?}");
        }
        assert_eq!(
            status_of(b"POST /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"),
            400
        );
        assert_eq!(
            status_of(b"POST /x HTTP/1.1\r\nContent-Length: 99999999999999999999999999\r\n\r\n"),
            413
        );
        let raw = format!(
            "POST /x HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        assert_eq!(status_of(raw.as_bytes()), 413);
        assert_eq!(
            status_of(
                b"POST /x HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
            ),
            400
        );
        assert_eq!(
            status_of(b"POST /x HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"),
            400
        );
        assert_eq!(
            status_of(b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
            400
        );
        assert_eq!(
            status_of(
                b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n"
            ),
            400
        );
        let raw = format!(
            "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
            MAX_BODY + 1
        );
        assert_eq!(status_of(raw.as_bytes()), 413);
        // Bodies shorter than announced.
        assert_eq!(
            status_of(b"POST /x HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc"),
            400
        );
        assert_eq!(
            status_of(b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab"),
            400
        );
    }

    #[test]
    fn refuses_malformed_heads() {
        assert!(matches!(parse(b""), Err(ReadError::Closed)));
        assert!(matches!(parse(b"\r\n"), Err(ReadError::Closed)));
        for raw in [
            &b"GET /\r\n\r\n"[..],
            b"GET  / HTTP/1.1\r\n\r\n",
            b"get / HTTP/1.1\r\n\r\n",
            b"BREW / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/2.0\r\n\r\n",
            b"GET / HTTP/1.1 extra\r\n\r\n",
            b"GET status HTTP/1.1\r\n\r\n",
            b"GET /\x01 HTTP/1.1\r\n\r\n",
            b"GET /\xff HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nNoColon\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
            b"GET / HTTP/1.1\r\n: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n",
            b"GET / HTTP/1.1\r\nA: b\r\n",
            b"GET / HTTP/1.1",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        ] {
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
        assert!(subtle_eq::ct_eq(b"abc", b"abc"));
        assert!(!subtle_eq::ct_eq(b"abc", b"abd") && !subtle_eq::ct_eq(b"abc", b"ab"));
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
        let r = exchange(port, b"\x00\x01garbage\r\n\r\n", false);
        assert!(r.starts_with("HTTP/1.1 400 "), "{r}");
        let r = exchange(
            port,
            b"POST /x HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n{",
            false,
        );
        assert!(r.starts_with("HTTP/1.1 413 "), "{r}");
        let r = exchange(
            port,
            b"POST /x HTTP/1.1\r\nContent-Length: 50\r\n\r\n{",
            true,
        );
        assert!(r.starts_with("HTTP/1.1 400 "), "{r}");
        let r = exchange(port, b"", true);
        assert_eq!(r, "", "nothing sent, nothing answered");
        let r = exchange(
            port,
            b"POST /health HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n{}",
            false,
        );
        assert!(
            r.starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 "),
            "{r}"
        );
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
}
