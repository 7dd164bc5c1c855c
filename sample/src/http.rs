//! Just enough HTTP/1.1 for a test server: reading a request head within size limits,
//! discarding its body (by Content-Length or chunked), and writing a response that
//! closes the connection. Malformed input is an error carrying the status to answer
//! with, never a panic.

use std::fmt;
use std::io::{self, BufRead, Read, Write};

/// The longest request line; a longer one is answered 414.
pub const MAX_REQUEST_LINE: usize = 8 * 1024;
/// The longest header line; a longer one is answered 431.
pub const MAX_HEADER_LINE: usize = 8 * 1024;
/// The most header fields; more are answered 431.
pub const MAX_HEADERS: usize = 100;
/// The largest request head in all; larger is answered 431.
pub const MAX_HEAD: usize = 64 * 1024;
/// The largest body read (and thrown away); larger is answered 413.
pub const MAX_BODY: u64 = 16 * 1024 * 1024;

/// A request head. Header values that are not UTF-8 are kept lossily.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The request target as sent, for logs.
    pub target: String,
    /// The path: the target up to `?`, without scheme and host in absolute form.
    pub path: String,
    pub query: Option<String>,
    /// `HTTP/1.0` or `HTTP/1.1`.
    pub version: String,
    pub headers: Vec<(String, String)>,
    pub body: Body,
}

/// How the body that follows the head is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    None,
    Length(u64),
    Chunked,
}

impl Request {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The value of `key` in the query string (`a=1&key=2`), not percent-decoded.
    pub fn query_param(&self, key: &str) -> Option<&str> {
        self.query
            .as_deref()?
            .split('&')
            .find_map(|pair| match pair.split_once('=') {
                Some((k, v)) if k == key => Some(v),
                None if pair == key => Some(""),
                _ => None,
            })
    }

    /// Whether the client waits for `100 Continue` before sending its body (curl does
    /// for large POSTs).
    pub fn expects_continue(&self) -> bool {
        self.body != Body::None
            && self.version == "HTTP/1.1"
            && self
                .header("expect")
                .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
    }
}

/// Why a request could not be read.
#[derive(Debug)]
pub enum RequestError {
    /// The connection closed before a request began: a TCP probe, or an idle client.
    Closed,
    /// Reading failed or timed out, or the connection closed mid-request.
    Io(io::Error),
    /// The request is malformed or too large; answer with `status` and close.
    Invalid { status: u16, reason: String },
}

impl RequestError {
    fn invalid(status: u16, reason: impl Into<String>) -> Self {
        RequestError::Invalid {
            status,
            reason: reason.into(),
        }
    }

    fn bad(reason: impl Into<String>) -> Self {
        Self::invalid(400, reason)
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::Closed => f.write_str("connection closed before a request"),
            RequestError::Io(err) => write!(f, "reading the request: {err}"),
            RequestError::Invalid { status, reason } => write!(f, "{status}: {reason}"),
        }
    }
}

impl std::error::Error for RequestError {}

impl From<io::Error> for RequestError {
    fn from(err: io::Error) -> Self {
        RequestError::Io(err)
    }
}

/// Reads a request head: request line and header fields, up to the empty line.
pub fn read_head(reader: &mut impl BufRead) -> Result<Request, RequestError> {
    let mut line = Vec::new();
    let mut head_size = 0;

    // RFC 9112 §2.2: ignore empty lines before the request line.
    let mut skipped = 0;
    loop {
        line.clear();
        match read_line(reader, &mut line, MAX_REQUEST_LINE)? {
            Line::Eof if line.is_empty() => return Err(RequestError::Closed),
            Line::Eof => {
                return Err(RequestError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed inside the request line",
                )));
            }
            Line::TooLong => {
                return Err(RequestError::invalid(414, "request line too long"));
            }
            Line::Complete if line.is_empty() && skipped < 8 => skipped += 1,
            Line::Complete => break,
        }
    }
    head_size += line.len();
    let (method, target, version) = parse_request_line(&line)?;
    let (path, query) = split_target(&method, &target)?;

    let mut headers = Vec::new();
    loop {
        line.clear();
        match read_line(reader, &mut line, MAX_HEADER_LINE)? {
            Line::Eof => {
                return Err(RequestError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed inside the request head",
                )));
            }
            Line::TooLong => {
                return Err(RequestError::invalid(431, "header line too long"));
            }
            Line::Complete if line.is_empty() => break,
            Line::Complete => {}
        }
        head_size += line.len();
        if head_size > MAX_HEAD {
            return Err(RequestError::invalid(431, "request head too large"));
        }
        if headers.len() == MAX_HEADERS {
            return Err(RequestError::invalid(431, "too many header fields"));
        }
        headers.push(parse_header(&line)?);
    }

    let body = body_kind(&headers)?;
    Ok(Request {
        method,
        target,
        path,
        query,
        version,
        headers,
        body,
    })
}

/// Reads and throws away the body, so that closing the connection does not reset it
/// under a client still sending.
pub fn discard_body(reader: &mut impl BufRead, body: Body) -> Result<(), RequestError> {
    match body {
        Body::None => Ok(()),
        Body::Length(length) => discard_exactly(reader, length),
        Body::Chunked => discard_chunked(reader),
    }
}

fn discard_exactly(reader: &mut impl BufRead, length: u64) -> Result<(), RequestError> {
    let copied = io::copy(&mut reader.take(length), &mut io::sink())?;
    if copied < length {
        return Err(RequestError::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("connection closed after {copied} of {length} body bytes"),
        )));
    }
    Ok(())
}

fn discard_chunked(reader: &mut impl BufRead) -> Result<(), RequestError> {
    let mut line = Vec::new();
    let mut total: u64 = 0;
    loop {
        line.clear();
        expect_line(reader, &mut line, "chunk size")?;
        let size = line.split(|&b| b == b';').next().unwrap_or_default();
        let size = std::str::from_utf8(size)
            .ok()
            .map(|s| s.trim_matches([' ', '\t']))
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|s| u64::from_str_radix(s, 16).ok())
            .ok_or_else(|| RequestError::bad("invalid chunk size"))?;
        total = total.saturating_add(size);
        if total > MAX_BODY {
            return Err(RequestError::invalid(413, "request body too large"));
        }
        if size == 0 {
            break;
        }
        discard_exactly(reader, size)?;
        line.clear();
        expect_line(reader, &mut line, "chunk end")?;
        if !line.is_empty() {
            return Err(RequestError::bad("chunk data longer than its size"));
        }
    }
    // Trailer fields, up to the empty line.
    for _ in 0..=MAX_HEADERS {
        line.clear();
        expect_line(reader, &mut line, "trailer")?;
        if line.is_empty() {
            return Ok(());
        }
    }
    Err(RequestError::invalid(431, "too many trailer fields"))
}

/// Reads a line that must be there and fit in a header line.
fn expect_line(
    reader: &mut impl BufRead,
    line: &mut Vec<u8>,
    what: &str,
) -> Result<(), RequestError> {
    match read_line(reader, line, MAX_HEADER_LINE)? {
        Line::Complete => Ok(()),
        Line::TooLong => Err(RequestError::bad(format!("{what} line too long"))),
        Line::Eof => Err(RequestError::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("connection closed before the {what} line"),
        ))),
    }
}

enum Line {
    /// A line ended by LF is in the buffer, without its CRLF or LF.
    Complete,
    /// The line is longer than allowed.
    TooLong,
    /// The connection closed before a whole line.
    Eof,
}

/// Reads one line of at most `max` bytes (not counting CRLF). A bare CR inside the
/// line is refused, as RFC 9112 §2.2 allows.
fn read_line(
    reader: &mut impl BufRead,
    line: &mut Vec<u8>,
    max: usize,
) -> Result<Line, RequestError> {
    // Room for the line, CR and LF; one byte more tells "too long" from "just fits".
    let limit = max as u64 + 3;
    reader.take(limit).read_until(b'\n', line)?;
    if line.last() != Some(&b'\n') {
        return Ok(if line.len() as u64 == limit {
            Line::TooLong
        } else {
            Line::Eof
        });
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    if line.len() > max {
        return Ok(Line::TooLong);
    }
    if line.contains(&b'\r') {
        return Err(RequestError::bad("bare CR in the request head"));
    }
    Ok(Line::Complete)
}

fn parse_request_line(line: &[u8]) -> Result<(String, String, String), RequestError> {
    let text =
        std::str::from_utf8(line).map_err(|_| RequestError::bad("request line is not ASCII"))?;
    let mut parts = text.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(RequestError::bad(
            "malformed request line: expected METHOD TARGET HTTP/1.1",
        ));
    };
    if method.is_empty() || method.len() > 32 || !method.bytes().all(is_token) {
        return Err(RequestError::bad("malformed method"));
    }
    if target.is_empty() || !target.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(RequestError::bad("malformed request target"));
    }
    match version {
        "HTTP/1.1" | "HTTP/1.0" => {}
        v if is_http_version(v) => {
            return Err(RequestError::invalid(505, format!("{v} is not supported")));
        }
        _ => return Err(RequestError::bad("malformed HTTP version")),
    }
    Ok((method.to_string(), target.to_string(), version.to_string()))
}

/// `HTTP/2`, `HTTP/2.0`, `HTTP/3`…: a well-formed version we do not speak.
fn is_http_version(v: &str) -> bool {
    let Some(number) = v.strip_prefix("HTTP/") else {
        return false;
    };
    match number.as_bytes() {
        [major] => major.is_ascii_digit(),
        [major, b'.', minor] => major.is_ascii_digit() && minor.is_ascii_digit(),
        _ => false,
    }
}

/// Splits a target in origin form (`/p?q`), absolute form (`http://h/p?q`) or asterisk
/// form (`*`, OPTIONS only) into path and query.
fn split_target(method: &str, target: &str) -> Result<(String, Option<String>), RequestError> {
    let rest = if target.starts_with('/') {
        target
    } else if target == "*" && method == "OPTIONS" {
        return Ok(("*".to_string(), None));
    } else if let Some(after_scheme) = target
        .split_once("://")
        .filter(|(scheme, _)| {
            scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")
        })
        .map(|(_, rest)| rest)
    {
        match after_scheme.find(['/', '?']) {
            Some(i) if after_scheme[i..].starts_with('/') => &after_scheme[i..],
            Some(i) => return Ok(("/".to_string(), Some(after_scheme[i + 1..].to_string()))),
            None => "/",
        }
    } else {
        return Err(RequestError::bad("malformed request target"));
    };
    let rest = rest.split('#').next().unwrap_or_default();
    Ok(match rest.split_once('?') {
        Some((path, query)) => (path.to_string(), Some(query.to_string())),
        None => (rest.to_string(), None),
    })
}

fn parse_header(line: &[u8]) -> Result<(String, String), RequestError> {
    if line[0] == b' ' || line[0] == b'\t' {
        return Err(RequestError::bad("obsolete line folding in a header"));
    }
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or_else(|| RequestError::bad("header line without a colon"))?;
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    if name.is_empty() || !name.iter().copied().all(is_token) {
        return Err(RequestError::bad("malformed header name"));
    }
    let value = value.trim_ascii();
    if value.iter().any(|&b| b.is_ascii_control() && b != b'\t') {
        return Err(RequestError::bad("control character in a header value"));
    }
    // `name` is all token bytes, so ASCII.
    Ok((
        String::from_utf8_lossy(name).into_owned(),
        String::from_utf8_lossy(value).into_owned(),
    ))
}

/// RFC 9110 `tchar`.
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The body's framing from Transfer-Encoding and Content-Length (RFC 9112 §6.3).
fn body_kind(headers: &[(String, String)]) -> Result<Body, RequestError> {
    let mut transfer_encoding = None;
    let mut content_length: Option<u64> = None;
    for (name, value) in headers {
        if name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoding = Some(value.as_str());
        } else if name.eq_ignore_ascii_case("content-length") {
            for part in value.split(',') {
                let part = part.trim_matches([' ', '\t']);
                if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(RequestError::bad("malformed Content-Length"));
                }
                let length = part
                    .parse::<u64>()
                    .map_err(|_| RequestError::invalid(413, "request body too large"))?;
                if content_length.is_some_and(|seen| seen != length) {
                    return Err(RequestError::bad("conflicting Content-Length values"));
                }
                content_length = Some(length);
            }
        }
    }
    if let Some(encoding) = transfer_encoding {
        let last = encoding.rsplit(',').next().unwrap_or_default();
        return if last
            .trim_matches([' ', '\t'])
            .eq_ignore_ascii_case("chunked")
        {
            Ok(Body::Chunked)
        } else {
            Err(RequestError::bad("Transfer-Encoding must end with chunked"))
        };
    }
    match content_length {
        None | Some(0) => Ok(Body::None),
        Some(length) if length > MAX_BODY => {
            Err(RequestError::invalid(413, "request body too large"))
        }
        Some(length) => Ok(Body::Length(length)),
    }
}

/// A whole response; every one closes the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Response {
            status,
            headers: vec![("Content-Type", "text/plain; charset=utf-8".to_string())],
            body: body.into().into_bytes(),
        }
    }

    pub fn json(status: u16, body: String) -> Self {
        Response {
            status,
            headers: vec![("Content-Type", "application/json".to_string())],
            body: body.into_bytes(),
        }
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// Writes the response; `with_body` is false for HEAD, which still gets the
    /// Content-Length a GET would.
    pub fn write_to(&self, out: &mut impl Write, with_body: bool) -> io::Result<()> {
        let mut head = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str(&format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            self.body.len()
        ));
        let mut bytes = head.into_bytes();
        if with_body {
            bytes.extend_from_slice(&self.body);
        }
        out.write_all(&bytes)?;
        out.flush()
    }
}

/// The interim response a client waiting on `Expect: 100-continue` needs.
pub fn write_continue(out: &mut impl Write) -> io::Result<()> {
    out.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    out.flush()
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> Result<Request, RequestError> {
        read_head(&mut raw.as_bytes())
    }

    fn status_of(raw: &[u8]) -> u16 {
        match read_head(&mut &raw[..]) {
            Err(RequestError::Invalid { status, .. }) => status,
            other => panic!("expected an invalid request, got {other:?}"),
        }
    }

    #[test]
    fn a_curl_request_is_read() {
        let req = head(
            "GET /healthz?verbose=1 HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n",
        )
        .unwrap();
        assert_eq!(req.method, "GET");
        assert_eq!(req.target, "/healthz?verbose=1");
        assert_eq!(req.path, "/healthz");
        assert_eq!(req.query.as_deref(), Some("verbose=1"));
        assert_eq!(req.version, "HTTP/1.1");
        assert_eq!(req.header("host"), Some("localhost:8080"));
        assert_eq!(req.header("USER-AGENT"), Some("curl/8.5.0"));
        assert_eq!(req.body, Body::None);
    }

    #[test]
    fn bare_lf_line_ends_and_leading_empty_lines_are_accepted() {
        let req = head("\r\n\nGET / HTTP/1.0\nX-Probe:  yes \n\n").unwrap();
        assert_eq!(req.path, "/");
        assert_eq!(req.version, "HTTP/1.0");
        assert_eq!(req.header("x-probe"), Some("yes"));
    }

    #[test]
    fn an_absolute_form_target_is_reduced_to_its_path() {
        let req = head("GET http://web:8080/ready?x=1 HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(
            (req.path.as_str(), req.query.as_deref()),
            ("/ready", Some("x=1"))
        );
        let req = head("GET http://web:8080 HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(req.path, "/");
    }

    #[test]
    fn query_parameters_are_found_by_key() {
        let req = head("POST /exit?a=1&code=3&flag HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(req.query_param("code"), Some("3"));
        assert_eq!(req.query_param("flag"), Some(""));
        assert_eq!(req.query_param("missing"), None);
    }

    #[test]
    fn content_length_gives_the_body_length() {
        let req = head("POST /fail HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello").unwrap();
        assert_eq!(req.body, Body::Length(5));
        let req = head("POST /fail HTTP/1.1\r\nContent-Length: 0\r\n\r\n").unwrap();
        assert_eq!(req.body, Body::None);
        let req = head("POST /fail HTTP/1.1\r\nContent-Length: 7, 7\r\n\r\n").unwrap();
        assert_eq!(req.body, Body::Length(7));
    }

    #[test]
    fn a_body_is_consumed_to_its_end_and_no_further() {
        let raw = b"POST /fail HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloNEXT";
        let mut reader = &raw[..];
        let req = read_head(&mut reader).unwrap();
        discard_body(&mut reader, req.body).unwrap();
        assert_eq!(reader, b"NEXT");
    }

    #[test]
    fn a_short_body_is_an_io_error() {
        let raw = b"POST /fail HTTP/1.1\r\nContent-Length: 10\r\n\r\nhello";
        let mut reader = &raw[..];
        let req = read_head(&mut reader).unwrap();
        assert!(matches!(
            discard_body(&mut reader, req.body),
            Err(RequestError::Io(_))
        ));
    }

    #[test]
    fn a_chunked_body_with_extensions_and_trailers_is_consumed() {
        let raw = b"POST /fail HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
            5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
        let mut reader = &raw[..];
        let req = read_head(&mut reader).unwrap();
        assert_eq!(req.body, Body::Chunked);
        discard_body(&mut reader, req.body).unwrap();
        assert_eq!(reader, b"NEXT");
    }

    #[test]
    fn a_bad_chunk_size_is_a_bad_request() {
        let mut reader = &b"zz\r\nhello\r\n0\r\n\r\n"[..];
        assert!(matches!(
            discard_body(&mut reader, Body::Chunked),
            Err(RequestError::Invalid { status: 400, .. })
        ));
    }

    #[test]
    fn expect_continue_is_recognised_only_with_a_body() {
        let req = head("POST /fail HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
            .unwrap();
        assert!(req.expects_continue());
        let req = head("POST /fail HTTP/1.1\r\nExpect: 100-continue\r\n\r\n").unwrap();
        assert!(!req.expects_continue());
    }

    #[test]
    fn a_closed_connection_before_any_byte_is_closed_not_invalid() {
        assert!(matches!(head(""), Err(RequestError::Closed)));
        assert!(matches!(head("\r\n"), Err(RequestError::Closed)));
    }

    #[test]
    fn a_connection_closed_inside_the_head_is_an_io_error() {
        assert!(matches!(
            head("GET / HTTP/1.1\r\nHost: x"),
            Err(RequestError::Io(_))
        ));
        assert!(matches!(
            head("GET / HTTP/1.1\r\n"),
            Err(RequestError::Io(_))
        ));
        assert!(matches!(head("GET / HT"), Err(RequestError::Io(_))));
    }

    #[test]
    fn malformed_requests_are_bad_requests() {
        let cases: &[&[u8]] = &[
            b"GET /\r\n\r\n",
            b"GET  / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1 extra\r\n\r\n",
            b"G(T / HTTP/1.1\r\n\r\n",
            b"GET relative HTTP/1.1\r\n\r\n",
            b"GET / HTTP/x\r\n\r\n",
            b"GET / FTP/1.1\r\n\r\n",
            b"GET /\xff HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
            b"GET / HTTP/1.1\r\n: empty name\r\n\r\n",
            b"GET / HTTP/1.1\r\nA: 1\r\n folded\r\n\r\n",
            b"GET / HTTP/1.1\r\nA: nul\0here\r\n\r\n",
            b"GET / HTTP/1.1\r\nA: bare\rcr\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
        ];
        for raw in cases {
            assert_eq!(status_of(raw), 400, "{:?}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn other_http_versions_are_not_supported() {
        assert_eq!(status_of(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 505);
        assert_eq!(status_of(b"GET / HTTP/3\r\n\r\n"), 505);
    }

    #[test]
    fn oversized_heads_and_bodies_get_their_own_statuses() {
        let long_target = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_REQUEST_LINE));
        assert_eq!(status_of(long_target.as_bytes()), 414);
        let long_header = format!(
            "GET / HTTP/1.1\r\nA: {}\r\n\r\n",
            "a".repeat(MAX_HEADER_LINE)
        );
        assert_eq!(status_of(long_header.as_bytes()), 431);
        let many = format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            "A: 1\r\n".repeat(MAX_HEADERS + 1)
        );
        assert_eq!(status_of(many.as_bytes()), 431);
        let big = format!(
            "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        assert_eq!(status_of(big.as_bytes()), 413);
        assert_eq!(
            status_of(b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n"),
            413
        );
    }

    #[test]
    fn a_line_of_exactly_the_limit_fits() {
        let path = format!("/{}", "a".repeat(MAX_REQUEST_LINE - "GET / HTTP/1.1".len()));
        let raw = format!("GET {path} HTTP/1.1\r\n\r\n");
        assert_eq!(head(&raw).unwrap().path, path);
    }

    #[test]
    fn random_garbage_never_panics() {
        // A small deterministic generator: no dependency for random bytes.
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..2000 {
            let mut raw = Vec::new();
            let alphabet = b"GET /: \r\nHTTP/1.1\x00\xffchunked0\tContent-Length:9";
            for _ in 0..(seed % 64) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                raw.push(alphabet[(seed % alphabet.len() as u64) as usize]);
            }
            seed = seed.wrapping_add(1);
            let mut reader = &raw[..];
            if let Ok(req) = read_head(&mut reader) {
                let _ = discard_body(&mut reader, req.body);
            }
        }
    }

    #[test]
    fn a_response_closes_and_carries_its_length() {
        let mut out = Vec::new();
        Response::text(503, "not ready")
            .write_to(&mut out, true)
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Length: 9\r\nConnection: close\r\n\r\nnot ready"
        );
    }

    #[test]
    fn a_head_response_has_the_length_but_no_body() {
        let mut out = Vec::new();
        Response::json(200, "{}".into())
            .with_header("X-A", "b")
            .write_to(&mut out, false)
            .unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.contains("X-A: b\r\n") && out.contains("Content-Length: 2\r\n"),
            "{out}"
        );
        assert!(out.ends_with("\r\n\r\n"), "{out}");
    }
}
