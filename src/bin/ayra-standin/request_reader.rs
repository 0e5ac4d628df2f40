//! Reading HTTP/1.x requests off a connection: the head with `httparse`, the
//! body by `content-length` or chunked (`httparse::parse_chunk_size`).

use bytes::{Buf, Bytes, BytesMut};
use httparse::Status;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::response::Response;

/// Largest request head accepted.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most header fields accepted in a head or a trailer section.
const MAX_HEADERS: usize = 128;
/// Largest request body accepted.
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// Longest chunk-size line accepted (size, extensions, CRLF).
const MAX_CHUNK_LINE_BYTES: usize = 4 * 1024;

/// One request, read whole.
#[derive(Debug, Clone)]
pub struct Request {
    /// Method as sent.
    pub method: String,
    /// The request target before `?`.
    pub path: String,
    /// The request target after `?` (empty without one).
    pub query: String,
    /// `1` for HTTP/1.1, `0` for HTTP/1.0.
    pub minor_version: u8,
    /// Every header as received, in order (values as lossy UTF-8).
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Bytes,
}

impl Request {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(candidate, _)| candidate.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// Whether any `name` header lists `token` (comma-separated, any case).
    pub fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(candidate, _)| candidate.eq_ignore_ascii_case(name))
            .flat_map(|(_, value)| value.split(','))
            .any(|item| item.trim().eq_ignore_ascii_case(token))
    }
}

/// Why no request came.
#[derive(Debug)]
pub enum ReadError {
    /// The peer closed or failed; nothing more to say to it.
    Gone,
    /// The request is unacceptable: send this response, then close.
    Rejected(Response),
}

impl From<std::io::Error> for ReadError {
    fn from(_: std::io::Error) -> Self {
        Self::Gone
    }
}

/// How the body of a request is delimited.
enum Framing {
    Length(usize),
    Chunked,
}

/// Reads successive requests from one connection, keeping bytes read past
/// the end of one request for the next.
#[derive(Debug, Default)]
pub struct RequestReader {
    buffer: BytesMut,
}

impl RequestReader {
    /// The next request on `stream`.
    pub async fn next_request(&mut self, stream: &mut TcpStream) -> Result<Request, ReadError> {
        let mut request = self.read_head(stream).await?;
        let framing = framing(&request).map_err(ReadError::Rejected)?;
        let has_body = !matches!(framing, Framing::Length(0));
        if has_body && self.buffer.is_empty() && expects_continue(&request) {
            stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
        }
        request.body = match framing {
            Framing::Length(len) => self.read_exact(stream, len).await?,
            Framing::Chunked => self.read_chunked(stream).await?,
        };
        Ok(request)
    }

    /// Reads more bytes; the peer closing here is the end of the exchange.
    async fn fill(&mut self, stream: &mut TcpStream) -> Result<(), ReadError> {
        self.buffer.reserve(8 * 1024);
        match stream.read_buf(&mut self.buffer).await? {
            0 => Err(ReadError::Gone),
            _ => Ok(()),
        }
    }

    async fn read_head(&mut self, stream: &mut TcpStream) -> Result<Request, ReadError> {
        loop {
            if !self.buffer.is_empty() {
                if let Some((len, request)) = parse_head(&self.buffer)? {
                    self.buffer.advance(len);
                    return Ok(request);
                }
                if self.buffer.len() > MAX_HEAD_BYTES {
                    return Err(rejection(431, "Request head too large"));
                }
            }
            self.fill(stream).await?;
        }
    }

    async fn read_exact(&mut self, stream: &mut TcpStream, len: usize) -> Result<Bytes, ReadError> {
        while self.buffer.len() < len {
            self.fill(stream).await?;
        }
        Ok(self.buffer.split_to(len).freeze())
    }

    async fn read_chunked(&mut self, stream: &mut TcpStream) -> Result<Bytes, ReadError> {
        let mut body = BytesMut::new();
        loop {
            let (line_len, size) = match httparse::parse_chunk_size(&self.buffer) {
                Ok(Status::Complete(parsed)) => parsed,
                Ok(Status::Partial) if self.buffer.len() <= MAX_CHUNK_LINE_BYTES => {
                    self.fill(stream).await?;
                    continue;
                }
                Ok(Status::Partial) | Err(_) => {
                    return Err(rejection(400, "Invalid chunk size line"))
                }
            };
            if size == 0 {
                self.buffer.advance(line_len);
                self.skip_trailers(stream).await?;
                return Ok(body.freeze());
            }
            let size = usize::try_from(size)
                .ok()
                .filter(|size| body.len().saturating_add(*size) <= MAX_BODY_BYTES)
                .ok_or_else(|| rejection(413, "Request body too large"))?;
            while self.buffer.len() < line_len + size + 2 {
                self.fill(stream).await?;
            }
            if &self.buffer[line_len + size..line_len + size + 2] != b"\r\n" {
                return Err(rejection(400, "Chunk data not followed by CRLF"));
            }
            body.extend_from_slice(&self.buffer[line_len..line_len + size]);
            self.buffer.advance(line_len + size + 2);
        }
    }

    /// Reads and discards the trailer section ending a chunked body.
    async fn skip_trailers(&mut self, stream: &mut TcpStream) -> Result<(), ReadError> {
        loop {
            let mut trailers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            match httparse::parse_headers(&self.buffer, &mut trailers) {
                Ok(Status::Complete((len, _))) => {
                    self.buffer.advance(len);
                    return Ok(());
                }
                Ok(Status::Partial) if self.buffer.len() <= MAX_HEAD_BYTES => {
                    self.fill(stream).await?;
                }
                Ok(Status::Partial) => return Err(rejection(431, "Trailer section too large")),
                Err(_) => return Err(rejection(400, "Invalid trailer section")),
            }
        }
    }
}

/// Parses a complete head at the start of `buffer`: its length and the
/// request (without body), or `None` when more bytes are needed.
fn parse_head(buffer: &[u8]) -> Result<Option<(usize, Request)>, ReadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let len = match parsed.parse(buffer) {
        Ok(Status::Complete(len)) => len,
        Ok(Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(rejection(431, "Too many header fields"))
        }
        Err(error) => return Err(rejection(400, &format!("Malformed request head: {error}"))),
    };
    let target = parsed.path.unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let request = Request {
        method: parsed.method.unwrap_or("GET").to_owned(),
        path: path.to_owned(),
        query: query.to_owned(),
        minor_version: parsed.version.unwrap_or(1),
        headers: parsed
            .headers
            .iter()
            .map(|header| {
                let value = String::from_utf8_lossy(header.value).into_owned();
                (header.name.to_owned(), value)
            })
            .collect(),
        body: Bytes::new(),
    };
    Ok(Some((len, request)))
}

/// How the request's body is delimited; ambiguous framing is refused.
fn framing(request: &Request) -> Result<Framing, Response> {
    let has_transfer_encoding = request.header("transfer-encoding").is_some();
    let lengths: Vec<&str> = request
        .headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .flat_map(|(_, value)| value.split(','))
        .map(str::trim)
        .collect();
    if has_transfer_encoding {
        if !lengths.is_empty() {
            return Err(Response::bad_request(
                "Both Content-Length and Transfer-Encoding",
            ));
        }
        return match last_transfer_coding(request) {
            Some(coding) if coding.eq_ignore_ascii_case("chunked") => Ok(Framing::Chunked),
            _ => Err(Response::bad_request(
                "Transfer-Encoding must end with chunked",
            )),
        };
    }
    let Some(first) = lengths.first() else {
        return Ok(Framing::Length(0));
    };
    if lengths.iter().any(|length| length != first)
        || !first.bytes().all(|byte| byte.is_ascii_digit())
    {
        return Err(Response::bad_request("Invalid Content-Length"));
    }
    match first.parse::<usize>() {
        Ok(len) if len <= MAX_BODY_BYTES => Ok(Framing::Length(len)),
        Ok(_) => Err(Response::error(
            413,
            "invalid_request_error",
            "Request body too large",
            "body_too_large",
        )),
        Err(_) => Err(Response::bad_request("Invalid Content-Length")),
    }
}

/// An HTTP/1.1 client waiting for `100 Continue` before it sends the body.
fn expects_continue(request: &Request) -> bool {
    request.minor_version == 1 && request.header_has_token("expect", "100-continue")
}

fn last_transfer_coding(request: &Request) -> Option<&str> {
    request
        .headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("transfer-encoding"))
        .flat_map(|(_, value)| value.split(','))
        .map(str::trim)
        .next_back()
}

fn rejection(status: u16, message: &str) -> ReadError {
    let code = match status {
        413 => "body_too_large",
        431 => "headers_too_large",
        _ => "invalid_request",
    };
    ReadError::Rejected(Response::error(
        status,
        "invalid_request_error",
        message,
        code,
    ))
}
