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
//! many or too long headers or too large a head, 413 for a body over 16 MiB), a head not
//! complete in time 408.
//!
//! # How a connection is served ([`server`])
//!
//! One thread (`zt-http`) waits, with mio, on both listeners and on every connection whose
//! request head is not complete yet; a mio `Waker` stops it (no polling: a request is read as
//! soon as it arrives). It reads heads without blocking, checks them ([`parse`]) and the token,
//! and answers on its own everything that needs no work from the node: refusals (400, 401,
//! 408, 413, 414, 431, 503) and the routes that need no token (`/health`). Only a request that
//! showed a valid token gets a thread of its own, which reads its body (if any), calls the
//! node and writes the answer. Hence, with the defaults of [`Limits`]:
//!
//! - **No body before the token.** An unauthenticated request is answered 401 from its head.
//!   What the client still sends is then read into a fixed scratch buffer and dropped (at most
//!   64 KiB within 1 s, so that a client that sent a small body reads the answer rather than a
//!   reset) and the connection is closed. Nothing of a body is kept.
//! - **A deadline for the head.** The request line and headers must be complete within 5 s of
//!   the connection, however fast or slow their bytes come: a drip is answered 408 and closed.
//!   A head is at most 32 KiB (request line ≤ 8 KiB, header lines ≤ 8 KiB, ≤ 100 headers),
//!   scanned byte by byte as it arrives; each line is parsed once when it is complete (so
//!   garbage is refused at once, not at the deadline), and the whole head once at its end.
//! - **A cap on connections that have not shown the token**, with eviction: at most 128 wait
//!   for their heads (or for their refusal to be sent); one more closes the oldest of them.
//! - **Threads only for token holders**: at most 64 requests with a valid token are served at
//!   once (a body of ≤ 16 MiB within 30 s, at most 10 s of silence); one more is answered 503.
//!
//! # Who is a client?
//!
//! Every connection comes from 127.0.0.1 or ::1, so an address cap cannot tell an attacker
//! from the tool that holds the token. The local user behind a TCP connection could be looked
//! up (on Linux by matching the socket in `/proc/net/tcp`; TCP has no `SO_PEERCRED`), but that
//! is Linux-only, costs a table scan per connection, and tells nothing when the attacker runs
//! as the same user, e.g. a sandboxed process that cannot read `authtoken.secret`. What does
//! tell clients apart is the token, so the server has two classes:
//!
//! - **Connections that have not shown the token** cost a socket and a head buffer on the
//!   event thread and never a request thread; they can only ever delay each other. When 128 of
//!   them are open, a new one closes the *oldest* one instead of being refused: refusing the
//!   newcomer would let 128 slow connections lock every client out for as long as the attacker
//!   reconnects faster than the tool connects. With eviction, a client that sends its head
//!   right after connecting (every HTTP client; on loopback the head is usually read in the
//!   same pass that accepted the connection) can only be cut off by 128 connections opened in
//!   the moment between its connect and its head; connections held long are the first to go,
//!   so holding them gains nothing. The head deadline bounds their life when the table is not
//!   full.
//! - **Requests with a valid token** are the token holder's own: each gets a thread, 64 at
//!   once, and the 65th is answered 503 at once rather than queued.
//!
//! What a local process without the token can still do is keep the event thread busy by
//! connecting as fast as it can (each connection costs an accept, a read and a close, a few
//! microseconds) or fill the kernel's accept backlog: requests are then slower, not starved.
//! Memory stays bounded: 128 heads of ≤ 32 KiB (4 MiB) for everyone, and 64 bodies of ≤ 16 MiB
//! for token holders.
//!
//! # Why httparse, under threads, and not hyper
//!
//! Heads are parsed by [httparse](https://docs.rs/httparse), the request-line and header parser
//! that hyper uses: small, no dependencies, fuzzed, strict by default (one space between the
//! parts of the request line, tokens checked, no obsolete line folding in requests). It parses
//! a buffer and leaves reading, limits and timing to the caller, which is exactly the part this
//! server has to get right itself: heads are read on the event thread without blocking, the
//! token is checked before any body, and limits are per class of connection as above. Chunk
//! sizes of chunked bodies are parsed by `httparse::parse_chunk_size` too.
//!
//! hyper's server (with `header_read_timeout`) was weighed against this. It would bring tokio
//! (a second event loop and its threads, next to the mio loops the runtime already runs, and
//! some thirty crates) into every process that runs a node, for a loopback API that answers
//! one request per connection. Its header timeout and limits would replace the head deadline,
//! but not the rest: with hyper too, the token has to be checked in the service before the
//! body is polled, unauthenticated connections must be kept from the capacity token holders
//! need, and the oldest of them evicted, which is connection-level policy written around
//! hyper's accept loop all the same. What stays hand-written here is small and has its own
//! tests: the framing rules (one `Content-Length` or `Transfer-Encoding: chunked`, 413 before
//! reading), the chunked reader, the fixed-format response writer, and the query/percent
//! decoding of zerotier-one's paths.

mod parse;
mod routes;
mod server;
#[cfg(test)]
mod tests;
pub mod views;

pub use parse::{MAX_BODY, ReadError, read_request};
pub use routes::{Api, auth_token};
pub use server::{HttpServer, Limits};

use serde_json::Value;

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

/// Constant-time comparison of secrets.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
