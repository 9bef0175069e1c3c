//! The server: one event thread (`zt-http`) accepts connections and reads and checks request
//! heads; a thread per request that showed the token reads its body and answers it. The design,
//! and why each limit is what it is, are in the docs of the `http` module.

use std::collections::HashMap;
use std::io::{self, BufReader, Cursor, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

use super::parse::{Framing, HeadBuf, ReadError, read_body, render, write_response};
use super::{Api, Request, Response};

/// The limits of a server. The defaults are documented in `docs/security.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections that have not shown the token open at once (waiting for their heads, or
    /// for their refusal to be sent); one more closes the oldest of them.
    pub pending: usize,
    /// Time from a connection's accept to the end of its request head (408 after).
    pub head_deadline: Duration,
    /// Requests with a valid token served at once; one more is answered 503.
    pub workers: usize,
    /// Time from a connection's accept to the end of an authenticated request's body.
    pub request_deadline: Duration,
    /// Silence allowed while an authenticated request's body is read.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            pending: 128,
            head_deadline: Duration::from_secs(5),
            workers: 64,
            request_deadline: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(10),
        }
    }
}

/// How long writing an answer may block a request's thread.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// After a refusal is sent, what the client still sends is read and dropped for this long, at
/// most [`LINGER_BYTES`], so that a client that sent a small body reads the answer rather than
/// a reset; also the time allowed for sending the refusal.
const LINGER: Duration = Duration::from_secs(1);
/// See [`LINGER`].
const LINGER_BYTES: usize = 64 << 10;
/// After a failed accept (out of descriptors, say), the next try.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
const WAKER: Token = Token(usize::MAX);

/// A running HTTP server (stops when dropped).
#[derive(Debug)]
pub struct HttpServer {
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    addrs: Vec<SocketAddr>,
    thread: Option<JoinHandle<()>>,
}

/// Listeners on 127.0.0.1 and ::1 at `port` (0: any free port). 127.0.0.1 must be ours: a
/// port taken there means another program would answer the clients of this API (zt cli and
/// zerotier-cli talk to 127.0.0.1 first). ::1 on the same port too, unless this host has no
/// IPv6 loopback.
fn bind_loopbacks(port: u16) -> io::Result<Vec<std::net::TcpListener>> {
    let v4 = std::net::TcpListener::bind(("127.0.0.1", port))
        .map_err(|e| io::Error::new(e.kind(), format!("127.0.0.1:{port}: {e}")))?;
    let port = v4.local_addr()?.port();
    let mut listeners = vec![v4];
    match std::net::TcpListener::bind(("::1", port)) {
        Ok(l) => listeners.push(l),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            return Err(io::Error::new(e.kind(), format!("[::1]:{port}: {e}")));
        }
        Err(e) => log::info!(target: "zt.api", "API on 127.0.0.1 only ([::1]:{port}: {e})"),
    }
    Ok(listeners)
}

impl HttpServer {
    /// Serves `api` on 127.0.0.1 and ::1 at `port` (0 = any free port, the same on both where
    /// possible), with the default [`Limits`]. Fails if 127.0.0.1's port (or ::1's, when this
    /// host has IPv6) is taken: another program would answer this API's clients.
    ///
    /// # Errors
    /// A loopback address could not be bound (the error names it), or the event thread could
    /// not start.
    pub fn start(api: Api, port: u16) -> io::Result<Self> {
        Self::start_with(api, port, Limits::default())
    }

    /// As [`start`](Self::start), with other limits.
    ///
    /// # Errors
    /// As [`start`](Self::start).
    pub fn start_with(api: Api, port: u16, limits: Limits) -> io::Result<Self> {
        // Port 0: any free port, the same on both loopbacks (a few tries, if another program
        // holds ::1's side of the one 127.0.0.1 gave).
        let mut tries = if port == 0 { 8 } else { 1 };
        let listeners = loop {
            tries -= 1;
            match bind_loopbacks(port) {
                Err(e) if tries > 0 && e.kind() == io::ErrorKind::AddrInUse => {}
                other => break other?,
            }
        };
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let mut addrs = Vec::new();
        let mut mio_listeners = Vec::new();
        for (i, l) in listeners.into_iter().enumerate() {
            addrs.push(l.local_addr()?);
            l.set_nonblocking(true)?;
            let mut l = TcpListener::from_std(l);
            poll.registry()
                .register(&mut l, Token(i), Interest::READABLE)?;
            mio_listeners.push(l);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut ev = EventLoop {
            poll,
            next: mio_listeners.len(),
            listeners: mio_listeners,
            conns: HashMap::new(),
            api: Arc::new(api),
            limits,
            workers: Arc::new(AtomicUsize::new(0)),
            stop: stop.clone(),
            accept_retry: None,
        };
        let thread = std::thread::Builder::new()
            .name("zt-http".into())
            .spawn(move || ev.run())?;
        Ok(Self {
            stop,
            waker,
            addrs,
            thread: Some(thread),
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

    /// Stops listening, closes the connections still waiting for their heads and waits for
    /// the event thread (requests already being answered finish on their own threads).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            if let Err(e) = self.waker.wake() {
                log::warn!(target: "zt.api", "cannot wake the API thread: {e}");
            }
            let _ = t.join();
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A connection on the event thread: one that has not shown the token (yet).
struct Conn {
    stream: TcpStream,
    /// When it was accepted (the oldest is evicted first).
    since: Instant,
    /// When the current state times out.
    deadline: Instant,
    state: State,
}

enum State {
    /// Receiving the request head.
    Head(HeadBuf),
    /// Sending an answer (a refusal, or a route that needs no token).
    Answer { out: Vec<u8>, sent: usize },
    /// Answer sent and write side shut: reading and dropping what the client still sends.
    Linger { left: usize },
}

/// What becomes of a connection after it was served an event.
enum Next {
    Keep,
    Close,
    /// A request with a valid token: to a thread of its own.
    Handoff(Box<(Request, Framing, Vec<u8>)>),
}

struct EventLoop {
    poll: Poll,
    listeners: Vec<TcpListener>,
    conns: HashMap<usize, Conn>,
    /// The token of the next connection (listeners have the first ones).
    next: usize,
    api: Arc<Api>,
    limits: Limits,
    /// Requests being served on their own threads.
    workers: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    accept_retry: Option<Instant>,
}

impl EventLoop {
    fn run(&mut self) {
        let mut events = Events::with_capacity(256);
        while !self.stop.load(Ordering::SeqCst) {
            let now = Instant::now();
            let timeout = self
                .conns
                .values()
                .map(|c| c.deadline)
                .chain(self.accept_retry)
                .min()
                .map(|d| d.saturating_duration_since(now));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                log::warn!(target: "zt.api", "the API stops: poll failed: {e}");
                return;
            }
            for ev in &events {
                match ev.token() {
                    WAKER => {}
                    Token(i) if i < self.listeners.len() => self.accept(i),
                    Token(id) => self.serve(id),
                }
            }
            let now = Instant::now();
            if self.accept_retry.is_some_and(|t| t <= now) {
                self.accept_retry = None;
                for i in 0..self.listeners.len() {
                    self.accept(i);
                }
            }
            self.expire(now);
        }
    }

    fn accept(&mut self, i: usize) {
        loop {
            match self.listeners[i].accept() {
                Ok((stream, _)) => self.admit(stream),
                Err(e) => match e.kind() {
                    io::ErrorKind::WouldBlock => return,
                    io::ErrorKind::Interrupted
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::ConnectionReset => {}
                    _ => {
                        log::debug!(target: "zt.api", "accept: {e}");
                        self.accept_retry = Some(Instant::now() + ACCEPT_RETRY);
                        return;
                    }
                },
            }
        }
    }

    fn admit(&mut self, mut stream: TcpStream) {
        if self.conns.len() >= self.limits.pending {
            // Full: the oldest connection without a token goes (see the module docs).
            if let Some(oldest) = self
                .conns
                .iter()
                .min_by_key(|(_, c)| c.since)
                .map(|(id, _)| *id)
            {
                log::debug!(target: "zt.api", "too many connections without a token; closing the oldest");
                self.close(oldest);
            }
        }
        let _ = stream.set_nodelay(true);
        let id = self.next;
        self.next = self.next.wrapping_add(1).max(self.listeners.len());
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(id),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            log::debug!(target: "zt.api", "cannot register a connection: {e}");
            return;
        }
        let now = Instant::now();
        self.conns.insert(
            id,
            Conn {
                stream,
                since: now,
                deadline: now + self.limits.head_deadline,
                state: State::Head(HeadBuf::default()),
            },
        );
        // The head is often there already.
        self.serve(id);
    }

    fn close(&mut self, id: usize) {
        if let Some(mut c) = self.conns.remove(&id) {
            let _ = self.poll.registry().deregister(&mut c.stream);
        }
    }

    /// Connections past their deadline: a head not complete in time gets 408, a refusal not
    /// sent or drained in time is closed.
    fn expire(&mut self, now: Instant) {
        let late: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            let Some(c) = self.conns.get_mut(&id) else {
                continue;
            };
            if matches!(c.state, State::Head(_)) {
                let resp = Response::error(408, &ReadError::Timeout.to_string());
                c.state = State::Answer {
                    out: render(&resp, false),
                    sent: 0,
                };
                c.deadline = now + LINGER;
                self.serve(id);
            } else {
                self.close(id);
            }
        }
    }

    /// Moves a connection on as far as it goes without blocking.
    fn serve(&mut self, id: usize) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        match advance(c, &self.api, &self.limits, &self.workers) {
            Next::Keep => {}
            Next::Close => self.close(id),
            Next::Handoff(work) => {
                let Some(mut c) = self.conns.remove(&id) else {
                    return;
                };
                let _ = self.poll.registry().deregister(&mut c.stream);
                let stream = std::net::TcpStream::from(c.stream);
                let (req, framing, rest) = *work;
                let api = self.api.clone();
                let guard = Worker(self.workers.clone());
                let deadline = c.since + self.limits.request_deadline;
                let idle = self.limits.idle_timeout;
                let spawned = std::thread::Builder::new()
                    .name("zt-http-req".into())
                    .spawn(move || {
                        let _guard = guard;
                        answer(&stream, &api, req, framing, rest, deadline, idle);
                    });
                if let Err(e) = spawned {
                    log::debug!(target: "zt.api", "cannot spawn: {e}");
                }
            }
        }
    }
}

/// Counts a request thread while alive.
struct Worker(Arc<AtomicUsize>);

impl Drop for Worker {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn error_answer(e: &ReadError) -> Option<Response> {
    match e {
        ReadError::Closed | ReadError::Io(_) => None,
        ReadError::Timeout => Some(Response::error(408, &e.to_string())),
        ReadError::Bad(status, why) => Some(Response::error(*status, why)),
    }
}

/// Serves an event on a connection without a token: reads the head, then answers it here or
/// hands it off; sends an answer; drops what comes after.
fn advance(c: &mut Conn, api: &Api, limits: &Limits, workers: &AtomicUsize) -> Next {
    loop {
        let next_state = match &mut c.state {
            State::Head(head) => {
                let answer = match head.fill(&mut c.stream) {
                    Ok(false) => return Next::Keep,
                    Ok(true) => match head.parse() {
                        Ok((req, framing)) => {
                            if !api.authorize(&req) {
                                (Api::unauthorized(&req), req.method == "HEAD")
                            } else if !Api::needs_token(&req.path) {
                                // No token needed (/health): no body read, no node call.
                                (api.respond(&req), req.method == "HEAD")
                            } else if workers.fetch_add(1, Ordering::SeqCst) >= limits.workers {
                                workers.fetch_sub(1, Ordering::SeqCst);
                                (Response::error(503, "too many requests at once"), false)
                            } else {
                                let rest = std::mem::take(head).into_rest();
                                return Next::Handoff(Box::new((req, framing, rest)));
                            }
                        }
                        Err(e) => match error_answer(&e) {
                            Some(r) => (r, false),
                            None => return Next::Close,
                        },
                    },
                    Err(e) => match error_answer(&e) {
                        Some(r) => (r, false),
                        None => return Next::Close,
                    },
                };
                c.deadline = Instant::now() + LINGER;
                State::Answer {
                    out: render(&answer.0, answer.1),
                    sent: 0,
                }
            }
            State::Answer { out, sent } => {
                while *sent < out.len() {
                    match c.stream.write(&out[*sent..]) {
                        Ok(0) => return Next::Close,
                        Ok(n) => *sent += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Keep,
                        Err(_) => return Next::Close,
                    }
                }
                let _ = c.stream.shutdown(Shutdown::Write);
                c.deadline = Instant::now() + LINGER;
                State::Linger { left: LINGER_BYTES }
            }
            State::Linger { left } => {
                let mut scratch = [0u8; 16 << 10];
                loop {
                    let want = (*left).min(scratch.len());
                    if want == 0 {
                        return Next::Close;
                    }
                    match c.stream.read(&mut scratch[..want]) {
                        Ok(0) => return Next::Close,
                        Ok(n) => *left -= n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Keep,
                        Err(_) => return Next::Close,
                    }
                }
            }
        };
        c.state = next_state;
    }
}

/// Reads from a socket, failing once the request's deadline has passed or after `idle`
/// without data.
struct DeadlineReader<'a> {
    stream: &'a std::net::TcpStream,
    deadline: Instant,
    idle: Duration,
}

impl Read for DeadlineReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        self.stream.set_read_timeout(Some(left.min(self.idle)))?;
        let mut s = self.stream;
        s.read(buf)
    }
}

/// Answers a request that showed a valid token, on its own thread: reads the body (`rest` is
/// what the event thread read of it), calls the route, writes the answer.
fn answer(
    stream: &std::net::TcpStream,
    api: &Api,
    mut req: Request,
    framing: Framing,
    rest: Vec<u8>,
    deadline: Instant,
    idle: Duration,
) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let expects_continue = req
        .header("expect")
        .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"));
    if expects_continue && framing != Framing::None {
        let mut w = stream;
        let _ = w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
    }
    let mut r = BufReader::new(Cursor::new(rest).chain(DeadlineReader {
        stream,
        deadline,
        idle,
    }));
    let mut complete = false;
    let answer = match read_body(&mut r, framing) {
        Ok(body) => {
            req.body = body;
            complete = true;
            Some((api.respond(&req), req.method == "HEAD"))
        }
        Err(e) => error_answer(&e).map(|r| (r, false)),
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
        let until = Instant::now() + Duration::from_secs(1);
        let mut buf = [0u8; 16 << 10];
        let mut s = stream;
        let mut total = 0usize;
        while Instant::now() < until && total < (1 << 20) {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    }
    let _ = stream.shutdown(Shutdown::Both);
}
