//! Reading requests: the head as it arrives ([`HeadBuf`]: limits checked byte by byte, then
//! httparse once on the complete head), the framing of the body, and the body itself.

use std::io::{self, BufRead, BufReader, Read, Write};

use super::{Request, Response, parse_query, percent_decode};

/// Largest request body accepted (413 beyond).
pub const MAX_BODY: usize = 16 << 20;
/// Longest request line (414 beyond).
pub(super) const MAX_REQUEST_LINE: usize = 8192;
/// Longest header line (431 beyond).
pub(super) const MAX_HEADER_LINE: usize = 8192;
/// Most header lines (431 beyond).
pub(super) const MAX_HEADERS: usize = 100;
/// Largest request head, request line and headers together (431 beyond).
pub(super) const MAX_HEAD: usize = 32 << 10;
/// Longest chunk-size or trailer line of a chunked body.
const MAX_CHUNK_LINE: usize = 1024;
/// Methods cpp-httplib parses (others are malformed requests).
const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];
/// How much of a request a read takes at a time while the head is incomplete (what it takes
/// beyond the head is the start of the body).
const HEAD_READ: usize = 4096;

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
pub(super) enum Framing {
    /// No body.
    None,
    /// `Content-Length` bytes.
    Length(usize),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A request head being received: the bytes so far and how far they have been scanned.
///
/// Each byte is looked at once, as it arrives: line lengths, the number of lines and the
/// total size are checked on the way, each line is checked by httparse when it is complete,
/// and the head is complete at its first empty line (after any empty lines before the request
/// line). A client dripping a byte at a time thus costs a scan of that byte, not a parse of
/// everything so far.
#[derive(Debug, Default)]
pub(super) struct HeadBuf {
    buf: Vec<u8>,
    /// Bytes of `buf` scanned.
    scanned: usize,
    /// Where the line being scanned starts.
    line_start: usize,
    /// Non-empty lines seen (the request line, then headers).
    lines: usize,
    /// End of the head (after its empty line), once seen.
    end: Option<usize>,
}

impl HeadBuf {
    /// Reads from `r` until the head is complete (true) or `r` would block (false).
    ///
    /// # Errors
    /// The stream ended ([`ReadError::Closed`] before anything but empty lines; 400 after),
    /// the head broke a limit (414, 431), or I/O failed.
    pub(super) fn fill(&mut self, r: &mut impl Read) -> Result<bool, ReadError> {
        let mut chunk = [0u8; HEAD_READ];
        while self.end.is_none() {
            // The scan refuses a head of MAX_HEAD bytes that is not complete, so there is room.
            let room = (MAX_HEAD - self.buf.len()).min(HEAD_READ);
            let n = match r.read(&mut chunk[..room]) {
                Ok(0) if self.is_blank() => return Err(ReadError::Closed),
                Ok(0) => return Err(ReadError::Bad(400, "truncated request")),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e.into()),
            };
            self.buf.extend_from_slice(&chunk[..n]);
            self.scan()?;
        }
        Ok(true)
    }

    /// Nothing but empty lines so far.
    fn is_blank(&self) -> bool {
        self.lines == 0 && self.buf[self.line_start..].iter().all(|&b| b == b'\r')
    }

    fn check_line(&self, len: usize) -> Result<(), ReadError> {
        if self.lines == 0 {
            if len > MAX_REQUEST_LINE {
                return Err(ReadError::Bad(414, "request line too long"));
            }
        } else if len > MAX_HEADER_LINE {
            return Err(ReadError::Bad(431, "header line too long"));
        }
        Ok(())
    }

    fn scan(&mut self) -> Result<(), ReadError> {
        while let Some(at) = self.buf[self.scanned..].iter().position(|&b| b == b'\n') {
            let i = self.scanned + at;
            self.scanned = i + 1;
            let mut end = i;
            if end > self.line_start && self.buf[end - 1] == b'\r' {
                end -= 1;
            }
            let len = end - self.line_start;
            self.check_line(len)?;
            let line = self.line_start..i + 1;
            self.line_start = i + 1;
            if len == 0 {
                if self.lines > 0 {
                    self.end = Some(i + 1);
                    return Ok(());
                }
                // An empty line before the request line is tolerated (RFC 9112 §2.2).
                continue;
            }
            self.lines += 1;
            if self.lines > MAX_HEADERS + 1 {
                return Err(ReadError::Bad(431, "too many headers"));
            }
            // Each line is checked as soon as it is complete, so that garbage is answered at
            // once rather than at the deadline.
            if self.lines == 1 {
                check_request_line(&self.buf[line])?;
            } else {
                check_header_line(&self.buf[line])?;
            }
        }
        self.scanned = self.buf.len();
        // The line still open (less a CR that may end it).
        self.check_line((self.buf.len() - self.line_start).saturating_sub(1))?;
        if self.buf.len() >= MAX_HEAD {
            return Err(ReadError::Bad(431, "request head too large"));
        }
        Ok(())
    }

    /// The request and its framing, once [`fill`](Self::fill) returned true.
    ///
    /// # Errors
    /// A malformed head (400), or a refused framing (400, 413).
    pub(super) fn parse(&self) -> Result<(Request, Framing), ReadError> {
        let end = self.end.ok_or(ReadError::Bad(400, "truncated request"))?;
        parse_head(&self.buf[..end])
    }

    /// What was read beyond the head (the start of the body).
    pub(super) fn into_rest(mut self) -> Vec<u8> {
        let end = self.end.unwrap_or(self.buf.len());
        self.buf.drain(..end);
        self.buf
    }
}

fn bad_head(e: httparse::Error) -> ReadError {
    match e {
        httparse::Error::TooManyHeaders => ReadError::Bad(431, "too many headers"),
        httparse::Error::HeaderName => ReadError::Bad(400, "malformed header name"),
        httparse::Error::HeaderValue => ReadError::Bad(400, "malformed header value"),
        httparse::Error::NewLine => ReadError::Bad(400, "malformed line end"),
        httparse::Error::Version => ReadError::Bad(400, "unsupported HTTP version"),
        httparse::Error::Token | httparse::Error::Status => {
            ReadError::Bad(400, "malformed request line")
        }
    }
}

/// What zt asks of a request line beyond its syntax.
fn check_method_and_target(method: Option<&str>, target: Option<&str>) -> Result<(), ReadError> {
    let (Some(method), Some(target)) = (method, target) else {
        return Err(ReadError::Bad(400, "malformed request line"));
    };
    if !METHODS.contains(&method) {
        return Err(ReadError::Bad(400, "unknown method"));
    }
    if !target.starts_with('/') || target.bytes().any(|b| b.is_ascii_control()) {
        return Err(ReadError::Bad(400, "malformed request target"));
    }
    Ok(())
}

/// Checks a request line (with its line end) on its own.
fn check_request_line(line: &[u8]) -> Result<(), ReadError> {
    let mut p = httparse::Request::new(&mut []);
    // Without the headers that follow, a good request line is a partial request.
    match p.parse(line) {
        Ok(_) => check_method_and_target(p.method, p.path),
        Err(e) => Err(bad_head(e)),
    }
}

/// Checks a header line (with its line end) on its own.
fn check_header_line(line: &[u8]) -> Result<(), ReadError> {
    let mut one = [httparse::EMPTY_HEADER; 1];
    match httparse::parse_headers(line, &mut one) {
        Ok(_) => Ok(()),
        Err(e) => Err(bad_head(e)),
    }
}

/// Parses a complete head (request line, headers, empty line) with httparse.
fn parse_head(head: &[u8]) -> Result<(Request, Framing), ReadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut p = httparse::Request::new(&mut headers);
    match p.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(ReadError::Bad(400, "truncated request")),
        Err(e) => return Err(bad_head(e)),
    }
    check_method_and_target(p.method, p.path)?;
    let (Some(method), Some(target)) = (p.method, p.path) else {
        return Err(ReadError::Bad(400, "malformed request line"));
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let req = Request {
        method: method.to_owned(),
        path: percent_decode(path, false),
        query: parse_query(query),
        headers: p
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_ascii_lowercase(),
                    String::from_utf8_lossy(h.value)
                        .trim_matches([' ', '\t'])
                        .to_owned(),
                )
            })
            .collect(),
        body: Vec::new(),
    };
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

/// The size on a chunk-size line (without its line end; extensions ignored), by httparse.
fn chunk_size(line: &[u8]) -> Result<usize, ReadError> {
    const BAD: ReadError = ReadError::Bad(400, "bad chunk size");
    // httparse reads an empty size as 0; a size needs a digit.
    if !line.first().is_some_and(u8::is_ascii_hexdigit) {
        return Err(BAD);
    }
    let mut l = Vec::with_capacity(line.len() + 2);
    l.extend_from_slice(line);
    l.extend_from_slice(b"\r\n");
    match httparse::parse_chunk_size(&l) {
        Ok(httparse::Status::Complete((_, n))) => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
        _ => Err(BAD),
    }
}

/// Reads a body as framed.
///
/// # Errors
/// Truncated or malformed bodies (400), too large ones (413), I/O errors and timeouts.
pub(super) fn read_body(r: &mut impl BufRead, framing: Framing) -> Result<Vec<u8>, ReadError> {
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
                let size = chunk_size(&line)?;
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

/// Reads one request (head and body) from a blocking stream.
///
/// # Errors
/// End of stream before a request, I/O errors and timeouts, malformed or oversized requests
/// (with the status to answer).
pub fn read_request(stream: &mut impl Read) -> Result<Request, ReadError> {
    let mut head = HeadBuf::default();
    if !head.fill(stream)? {
        return Err(ReadError::Timeout);
    }
    let (mut req, framing) = head.parse()?;
    let rest = head.into_rest();
    let mut r = BufReader::new(rest.as_slice().chain(stream));
    req.body = read_body(&mut r, framing)?;
    Ok(req)
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
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

/// The bytes of an answer (the head only for HEAD requests).
pub(super) fn render(resp: &Response, head_only: bool) -> Vec<u8> {
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
    out
}

/// Writes an answer to a blocking stream.
pub(super) fn write_response(
    stream: &mut impl Write,
    resp: &Response,
    head_only: bool,
) -> io::Result<()> {
    stream.write_all(&render(resp, head_only))?;
    stream.flush()
}
