//! The local HTTP API of zerotier-one 1.14 (`/status`, `/peer`, `/network`, `/controller/...`),
//! served on loopback and authenticated by the home's `authtoken.secret`.
//!
//! Unlike zerotier-one, it binds only the loopback addresses (127.0.0.1 and ::1): the API is
//! for local tools. Requests are answered one per connection (`Connection: close`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use zt_proto::Address;
use zt_proto::network::NetworkId;

use crate::api;
use crate::controller::ApiError;
use crate::runtime::{LoopCtx, NodeHandle};

const MAX_BODY: usize = 4 << 20;
const MAX_HEADER_BYTES: usize = 64 << 10;
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// An HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Body (JSON text unless `content_type` says otherwise).
    pub body: String,
    /// Content type.
    pub content_type: &'static str,
}

impl Response {
    fn json(status: u16, v: &Value) -> Self {
        Self {
            status,
            body: v.to_string(),
            content_type: "application/json",
        }
    }

    fn empty(status: u16) -> Self {
        Self {
            status,
            body: String::new(),
            content_type: "application/json",
        }
    }
}

/// A parsed request.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Method (upper case).
    pub method: String,
    /// Path without query.
    pub path: String,
    /// Query parameters.
    pub query: Vec<(String, String)>,
    /// Headers (names lower case).
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

    /// The token presented: `X-ZT1-Auth`, else `?auth=`, else `Authorization: Bearer` (only the
    /// first present counts, as zerotier-one does).
    #[must_use]
    pub fn token(&self) -> Option<String> {
        if let Some(t) = self.header("x-zt1-auth") {
            return Some(t.trim().to_owned());
        }
        if let Some(t) = self.param("auth") {
            return Some(t.trim().to_owned());
        }
        let a = self.header("authorization")?;
        let mut parts = a.split(' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(scheme), Some(t), None) if scheme.eq_ignore_ascii_case("bearer") => {
                Some(t.to_owned())
            }
            _ => None,
        }
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let h = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match h {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
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

/// Reads one request from a stream.
///
/// # Errors
/// I/O errors, malformed or oversized requests.
pub fn read_request(stream: &mut impl Read) -> std::io::Result<Request> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_owned());
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    let mut header_bytes = r.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err(bad("malformed request line"));
    };
    let mut req = Request {
        method: method.to_ascii_uppercase(),
        ..Request::default()
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    req.path = percent_decode(path);
    for kv in query.split('&').filter(|s| !s.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        req.query.push((percent_decode(k), percent_decode(v)));
    }
    loop {
        let mut h = String::new();
        let n = r.read_line(&mut h)?;
        header_bytes += n;
        if header_bytes > MAX_HEADER_BYTES {
            return Err(bad("headers too large"));
        }
        let h = h.trim_end_matches(['\r', '\n']);
        if n == 0 || h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            req.headers
                .push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let len: usize = req
        .header("content-length")
        .map(|v| v.parse().map_err(|_| bad("bad content-length")))
        .transpose()?
        .unwrap_or(0);
    if len > MAX_BODY {
        return Err(bad("body too large"));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    req.body = body;
    Ok(req)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

fn write_response(stream: &mut impl Write, resp: &Response) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        resp.status,
        reason(resp.status),
        resp.content_type,
        resp.body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(resp.body.as_bytes())?;
    stream.flush()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn is_hex(s: &str, n: usize) -> bool {
    s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Routes and authentication, independent of sockets (so tests call it directly).
#[derive(Debug, Clone)]
pub struct Api {
    node: NodeHandle,
    token: String,
    home: Option<String>,
}

impl Api {
    /// An API over `node`, accepting `token`.
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
            .map_err(|e| Response::json(503, &json!({"error": 503, "description": e.to_string()})))
    }

    /// Answers a request from inside the process (the Python API): no token needed.
    #[must_use]
    pub fn handle_trusted(&self, method: &str, path: &str, body: &[u8]) -> Response {
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        let req = Request {
            method: method.to_ascii_uppercase(),
            path: path.to_owned(),
            query: query
                .split('&')
                .filter(|s| !s.is_empty())
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    (percent_decode(k), percent_decode(v))
                })
                .collect(),
            headers: Vec::new(),
            body: body.to_vec(),
        };
        match self.route(&req) {
            Ok(r) | Err(r) => r,
        }
    }

    /// Answers one request.
    #[must_use]
    pub fn handle(&self, req: &Request) -> Response {
        let authorized = req.path == "/health"
            || req.token().is_some_and(|t| {
                use subtle_eq::ct_eq;
                ct_eq(t.as_bytes(), self.token.as_bytes())
            });
        if !authorized {
            return Response::json(401, &json!({}));
        }
        let resp = match self.route(req) {
            Ok(r) | Err(r) => r,
        };
        match req.param("jsonp") {
            Some(f) if resp.status == 200 => Response {
                status: 200,
                body: format!("{f}({});", resp.body),
                content_type: "application/javascript",
            },
            _ => resp,
        }
    }

    fn body(req: &Request) -> Result<Value, Response> {
        serde_json::from_slice(&req.body)
            .map_err(|e| Response::json(500, &json!({"error": 500, "description": e.to_string()})))
    }

    fn route(&self, req: &Request) -> Result<Response, Response> {
        let segs: Vec<&str> = req.path.split('/').skip(1).collect();
        let m = req.method.as_str();
        let post = m == "POST" || m == "PUT";
        let ok = |v: Value| Ok(Response::json(200, &v));
        match (m, segs.as_slice()) {
            ("GET", ["health"]) => {
                let online = self.node.snapshot().is_some_and(|s| s.online);
                ok(json!({
                    "clock": now_ms(),
                    "online": online,
                    "version": format!("{}.{}.{}", api::VERSION.0, api::VERSION.1, api::VERSION.2),
                    "versionBuild": 0,
                    "versionMajor": api::VERSION.0,
                    "versionMinor": api::VERSION.1,
                    "versionRev": api::VERSION.2,
                }))
            }
            ("GET", ["status"]) => {
                let s = self.node.snapshot().ok_or_else(|| Response::empty(503))?;
                ok(api::status_json(&s, now_ms(), self.home.as_deref()))
            }
            ("GET", ["peer"]) => {
                let s = self.node.snapshot().ok_or_else(|| Response::empty(503))?;
                ok(api::peers_json(&s, now_ms()))
            }
            ("GET", ["peer", a]) if is_hex(a, 10) => {
                let s = self.node.snapshot().ok_or_else(|| Response::empty(503))?;
                let a = a.to_ascii_lowercase();
                let all = api::peers_json(&s, now_ms());
                let found = all
                    .as_array()
                    .and_then(|v| v.iter().find(|p| p["address"] == a.as_str()).cloned());
                ok(found.unwrap_or_else(|| json!({})))
            }
            ("GET", ["network"]) => {
                let v = self.call(|ctx| {
                    let mut n = ctx.node.networks();
                    n.sort_by_key(|x| x.id);
                    Value::Array(n.iter().map(api::network_json).collect())
                })?;
                ok(v)
            }
            (_, ["network", id]) if is_hex(id, 16) => {
                let id = NetworkId(u64::from_str_radix(id, 16).unwrap_or(0));
                match m {
                    "GET" => {
                        let v = self
                            .call(move |ctx| ctx.node.network(id).map(|n| api::network_json(&n)))?;
                        match v {
                            Some(v) => ok(v),
                            None => Ok(Response::json(404, &json!({}))),
                        }
                    }
                    "POST" | "PUT" => {
                        let v = self.call(move |ctx| {
                            ctx.node.join(ctx.now, id);
                            ctx.node.network(id).map(|n| api::network_json(&n))
                        })?;
                        ok(v.unwrap_or_else(|| json!({})))
                    }
                    "DELETE" => {
                        let left = self.call(move |ctx| ctx.node.leave(id))?;
                        ok(if left {
                            json!({"result": true})
                        } else {
                            json!({})
                        })
                    }
                    _ => Err(Response::empty(405)),
                }
            }
            (_, ["controller", ..]) => self.controller(req, &segs[1..], post),
            _ => Err(Response::empty(404)),
        }
    }

    fn controller(&self, req: &Request, segs: &[&str], post: bool) -> Result<Response, Response> {
        let m = req.method.as_str();
        let api_err = |e: ApiError| match e {
            ApiError::NotFound => Response::empty(404),
            ApiError::BadRequest(_) => Response::empty(400),
            ApiError::Unavailable(d) => {
                Response::json(503, &json!({"error": 503, "description": d}))
            }
            ApiError::Internal(d) => Response::json(500, &json!({"error": 500, "description": d})),
        };
        let no_controller = || Response::empty(404);
        match (m, segs) {
            ("GET", []) => {
                let ready = self.call(|ctx| ctx.controller.is_some())?;
                if !ready {
                    return Err(no_controller());
                }
                Ok(Response {
                    status: 200,
                    body: format!(
                        "{{\n\t\"controller\": true,\n\t\"apiVersion\": 4,\n\t\"clock\": {},\n\t\"databaseReady\": true\n}}\n",
                        now_ms()
                    ),
                    content_type: "application/json",
                })
            }
            ("GET", ["network"]) => {
                let ids = self.call(|ctx| ctx.controller.as_ref().map(|c| c.network_ids()))?;
                let ids = ids.ok_or_else(no_controller)?.map_err(api_err)?;
                Ok(Response::json(
                    200,
                    &Value::Array(ids.iter().map(|i| Value::String(i.to_string())).collect()),
                ))
            }
            (_, ["network"]) if post => {
                let body = Self::body(req)?;
                let r = self.call(move |ctx| {
                    let now = ctx.now;
                    ctx.controller
                        .as_mut()
                        .map(|c| c.post_network(ctx.node, now, None, &body))
                })?;
                Ok(Response::json(
                    200,
                    &r.ok_or_else(no_controller)?.map_err(api_err)?,
                ))
            }
            (_, ["network", nw]) if post && nw.len() == 16 && nw.ends_with("______") => {
                let prefix = nw[..10].to_owned();
                let body = Self::body(req)?;
                let r = self.call(move |ctx| {
                    let now = ctx.now;
                    let me = ctx.node.address().to_string();
                    let c = ctx.controller.as_mut()?;
                    if prefix != me {
                        return Some(Err(ApiError::BadRequest("not this controller".into())));
                    }
                    Some(c.post_network(ctx.node, now, None, &body))
                })?;
                Ok(Response::json(
                    200,
                    &r.ok_or_else(no_controller)?.map_err(api_err)?,
                ))
            }
            (_, ["network", nw, rest @ ..]) if is_hex(nw, 16) => {
                let id = NetworkId(u64::from_str_radix(nw, 16).unwrap_or(0));
                self.controller_network(req, id, rest, post, api_err)
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
        api_err: impl Fn(ApiError) -> Response,
    ) -> Result<Response, Response> {
        let m = req.method.as_str();
        let no_controller = || Response::empty(404);
        match (m, rest) {
            ("GET", []) => {
                let r = self.call(move |ctx| ctx.controller.as_ref().map(|c| c.network(id)))?;
                let r = r.ok_or_else(no_controller)?.map_err(&api_err)?;
                Ok(Response::json(200, &r))
            }
            (_, []) if post => {
                let body = Self::body(req)?;
                let r = self.call(move |ctx| {
                    let now = ctx.now;
                    ctx.controller
                        .as_mut()
                        .map(|c| c.post_network(ctx.node, now, Some(id), &body))
                })?;
                Ok(Response::json(
                    200,
                    &r.ok_or_else(no_controller)?.map_err(&api_err)?,
                ))
            }
            ("DELETE", []) => {
                let r = self.call(move |ctx| {
                    let now = ctx.now;
                    ctx.controller
                        .as_mut()
                        .map(|c| c.delete_network(ctx.node, now, id))
                })?;
                Ok(Response::json(
                    200,
                    &r.ok_or_else(no_controller)?.map_err(&api_err)?,
                ))
            }
            ("GET", ["member"]) => {
                let r = self.call(move |ctx| ctx.controller.as_ref().map(|c| c.members(id)))?;
                let members = r.ok_or_else(no_controller)?.map_err(&api_err)?;
                let mut obj = serde_json::Map::new();
                for (a, rec) in members {
                    obj.insert(a.to_string(), rec["revision"].clone());
                }
                Ok(Response::json(200, &Value::Object(obj)))
            }
            (_, ["member", a]) if is_hex(a, 10) => {
                let addr = Address::from_u64_truncating(u64::from_str_radix(a, 16).unwrap_or(0));
                match m {
                    "GET" => {
                        let r = self
                            .call(move |ctx| ctx.controller.as_ref().map(|c| c.member(id, addr)))?;
                        Ok(Response::json(
                            200,
                            &r.ok_or_else(no_controller)?.map_err(&api_err)?,
                        ))
                    }
                    "POST" | "PUT" => {
                        let body = Self::body(req)?;
                        let r = self.call(move |ctx| {
                            let now = ctx.now;
                            ctx.controller
                                .as_mut()
                                .map(|c| c.post_member(ctx.node, now, id, addr, &body))
                        })?;
                        Ok(Response::json(
                            200,
                            &r.ok_or_else(no_controller)?.map_err(&api_err)?,
                        ))
                    }
                    "DELETE" => {
                        let r = self.call(move |ctx| {
                            let now = ctx.now;
                            ctx.controller
                                .as_mut()
                                .map(|c| c.delete_member(ctx.node, now, id, addr))
                        })?;
                        Ok(Response::json(
                            200,
                            &r.ok_or_else(no_controller)?.map_err(&api_err)?,
                        ))
                    }
                    _ => Err(Response::empty(405)),
                }
            }
            _ => Err(Response::empty(404)),
        }
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
    pub fn start(api: Api, port: u16) -> std::io::Result<Self> {
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
            return Err(last_err.unwrap_or_else(|| std::io::Error::other("no listener")));
        }
        let mut addrs = Vec::new();
        let mut threads = Vec::new();
        for l in listeners {
            addrs.push(l.local_addr()?);
            l.set_nonblocking(true)?;
            let stop = stop.clone();
            let api = api.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("zt-http".into())
                    .spawn(move || accept_loop(&l, &api, &stop))?,
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

fn accept_loop(l: &TcpListener, api: &Arc<Api>, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        match l.accept() {
            Ok((stream, _)) => {
                let api = api.clone();
                let _ = std::thread::Builder::new()
                    .name("zt-http-conn".into())
                    .spawn(move || serve(stream, &api));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(25));
            }
            Err(e) => {
                log::debug!(target: "zt.api", "accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn serve(mut stream: TcpStream, api: &Api) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
    let resp = match read_request(&mut stream) {
        Ok(req) => api.handle(&req),
        Err(e) => Response::json(400, &json!({"error": 400, "description": e.to_string()})),
    };
    let _ = write_response(&mut stream, &resp);
    let _ = stream.shutdown(Shutdown::Both);
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
