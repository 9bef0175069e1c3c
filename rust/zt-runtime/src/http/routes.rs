//! Routes and authentication of the local API, independent of sockets (tests and the Python
//! API call them directly).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};
use zt_proto::{Address, NetworkId};

use super::views::{self, LocalSettings};
use super::{Request, Response, ct_eq, parse_query, percent_decode};
use crate::controller::ApiError;
use crate::runtime::{LoopCtx, NodeHandle};

/// How long a call into the node's loop may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// JSON with 4-space indentation (how zerotier-one writes `local.conf`). JSON strings hold no
/// raw newlines, so every line's leading spaces are indentation.
pub(super) fn pretty4(v: &Value) -> String {
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
        let eq = |t: &str| !t.is_empty() && ct_eq(p.as_bytes(), t.as_bytes());
        eq(&self.token) || extra.is_some_and(eq)
    }

    /// Paths zerotier-one serves without a token (`/app` and `/sso` are not served by zt and
    /// answer 404).
    pub(super) fn needs_token(path: &str) -> bool {
        !(path == "/health" || path == "/sso" || path.starts_with("/app"))
    }

    /// Whether `req` may be answered: a path that needs no token, or a valid token (for
    /// `/metrics` also the home's `metricstoken.secret`). Looks at the head only.
    pub(super) fn authorize(&self, req: &Request) -> bool {
        let token = req.token();
        if req.path == "/metrics" {
            let metrics = self
                .home_file("metricstoken.secret")
                .and_then(|p| std::fs::read_to_string(p).ok())
                .map(|t| t.trim().to_owned());
            self.token_ok(token.as_deref(), metrics.as_deref())
        } else {
            !Self::needs_token(&req.path) || self.token_ok(token.as_deref(), None)
        }
    }

    /// The answer to a request that failed [`authorize`](Self::authorize): 401 `{}`.
    pub(super) fn unauthorized(req: &Request) -> Response {
        Response::content(401, "{}".to_owned()).with_jsonp(req.param("jsonp"))
    }

    /// The answer to an authorized request.
    pub(super) fn respond(&self, req: &Request) -> Response {
        self.dispatch(req).with_jsonp(req.param("jsonp"))
    }

    /// Answers one request (authentication first, as zerotier-one's pre-routing check: an
    /// unknown path without a token is 401 too).
    #[must_use]
    pub fn handle(&self, req: &Request) -> Response {
        if self.authorize(req) {
            self.respond(req)
        } else {
            Self::unauthorized(req)
        }
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
                ok(views::health_json(online, now_ms()))
            }
            ("GET", ["status"]) => {
                let port = self.port()?;
                let home = self.home.clone();
                let local_conf = self.local_conf();
                let now = now_ms();
                ok(self.call(move |ctx| {
                    views::status_json(ctx.node, now, port, home.as_deref(), local_conf)
                })?)
            }
            ("GET", ["peer"]) => {
                let port = self.port()?;
                ok(self.call(move |ctx| views::peers_json(ctx.node, ctx.now, port))?)
            }
            ("GET", ["peer", a]) if is_hex(a, 10) => {
                let port = self.port()?;
                let a = Address::from_u64_truncating(hex_u64(a));
                ok(self.call(move |ctx| {
                    ctx.node.peer(a).map_or_else(
                        || json!({}),
                        |p| views::peer_json(ctx.node, p, ctx.now, port),
                    )
                })?)
            }
            ("GET", ["network"]) => {
                let (me, mut nets) = self.call(|ctx| (ctx.node.address(), ctx.node.networks()))?;
                nets.sort_by_key(|n| n.id);
                ok(Value::Array(
                    nets.iter()
                        .map(|n| views::network_json_with(n, &self.settings(me, n.id)))
                        .collect(),
                ))
            }
            (_, ["network", id]) if is_hex(id, 16) => self.network(req, NetworkId(hex_u64(id))),
            ("GET", ["moon"]) => {
                let s = self.node.snapshot().ok_or_else(|| Response::empty(503))?;
                ok(Value::Array(s.moons.iter().map(views::moon_json).collect()))
            }
            ("GET", ["moon", id]) if is_hex(id, 10) => {
                let s = self.node.snapshot().ok_or_else(|| Response::empty(503))?;
                let id = hex_u64(id);
                ok(s.moons
                    .iter()
                    .find(|w| w.id == id)
                    .map_or_else(|| json!({}), views::moon_json))
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
            let lc = views::with_settings(self.local_conf(), |s| {
                s.extend(b.iter().map(|(k, v)| (k.clone(), v.clone())));
            });
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
                        &views::network_json_with(&n, &self.settings(me, id)),
                    )),
                    None => Ok(Response::content(404, String::new())),
                }
            }
            "POST" | "PUT" => {
                // As zerotier-one: an unparsable or empty body is no settings.
                let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
                let (me, n) = self.call(move |ctx| {
                    let joined = ctx.node.join(ctx.now, id);
                    (ctx.node.address(), joined.map(|()| ctx.node.network(id)))
                })?;
                // Over the cap on joined networks: 403 with the reason.
                let n = n.map_err(|e| Response::error(403, &e.to_string()))?;
                let Some(n) = n else {
                    return Ok(Response::json(200, &json!({})));
                };
                let mut s = self.settings(me, id);
                s.apply_post(&body);
                self.store_settings(me, id, Some(s));
                Ok(Response::json(200, &views::network_json_with(&n, &s)))
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
                        let rev = zt_controller::json::json_int(
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
                zt_controller::json::json_bool(m.get("authorized").unwrap_or(&Value::Null), false)
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
