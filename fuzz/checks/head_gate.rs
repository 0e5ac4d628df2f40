//! The request-head gate against hyper itself, over generated request byte streams.
//!
//! A stream (heads with CRLF or bare LF line endings, bodies framed by
//! Content-Length or chunked, well or badly, pipelined, raw bytes between)
//! is parsed twice by a real hyper HTTP/1 server connection over an
//! in-memory stream: once alone, read one byte at a time (so the bytes
//! hyper had read when it handed a request over, and when its body ended,
//! say exactly where each head lies), and once through the gate, read in
//! pieces cut anywhere, some reads pending first.
//!
//! Checks: the gated connection always ends (the gate never stalls a
//! stream); hyper behind the gate hands over exactly the requests hyper
//! alone hands over (method, target, version, headers, body bytes) up to
//! the first head with a bare LF, then the stand-in and nothing more; a
//! refused head does have a bare LF; and the bytes hyper reads through the
//! gate are the stream's own bytes, untouched, then only the stand-in.

use std::cell::{Cell, RefCell};
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use arbitrary::{Arbitrary, Unstructured};
use ayra_cache::server::fuzzing::{gate, GateHandoff, REFUSED_HEAD_STAND_IN};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The proxy's head limit (`server::connection`), and hyper's buffer.
const MAX_HEAD: usize = 16 * 1024;
/// Longer streams are not tried: hyper's buffer limit would differ by read size.
const MAX_STREAM: usize = 12 * 1024;
/// Polls of one connection before it counts as stalled.
const MAX_POLLS: usize = 200_000;

const METHODS: [&str; 6] = ["GET", "POST", "PUT", "HEAD", "DELETE", "OPTIONS"];
const TARGETS: [&str; 4] = [
    "/v1/conversations/c1",
    "/healthz",
    "/v1/agents?x=1",
    "http://h/v1/x",
];
const NAMES: [&str; 6] = [
    "x-a",
    "content-length",
    "transfer-encoding",
    "te",
    "trailer",
    "x-b",
];

/// A line ending: mostly CRLF; 0 is a bare LF, 1 a CR before the CRLF.
#[derive(Debug, Arbitrary)]
struct Eol(u8);

impl Eol {
    fn bytes(&self) -> &'static [u8] {
        match self.0 {
            0 => b"\n",
            1 => b"\r\r\n",
            _ => b"\r\n",
        }
    }
}

#[derive(Debug, Arbitrary)]
enum Field {
    Host,
    Connection(u8),
    Expect,
    ContentLength(u16),
    TransferEncoding(u8),
    Named(u8, Vec<u8>),
    Raw(Vec<u8>),
}

impl Field {
    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Field::Host => out.extend_from_slice(b"host: x"),
            Field::Connection(which) => out.extend_from_slice(match which % 3 {
                0 => b"connection: close".as_slice(),
                1 => b"connection: keep-alive",
                _ => b"connection: close, te",
            }),
            Field::Expect => out.extend_from_slice(b"expect: 100-continue"),
            Field::ContentLength(length) => {
                out.extend_from_slice(format!("content-length: {length}").as_bytes())
            }
            Field::TransferEncoding(which) => out.extend_from_slice(match which % 3 {
                0 => b"transfer-encoding: chunked".as_slice(),
                1 => b"transfer-encoding: gzip, chunked",
                _ => b"transfer-encoding: identity",
            }),
            Field::Named(name, value) => {
                out.extend_from_slice(NAMES[usize::from(*name) % NAMES.len()].as_bytes());
                out.extend_from_slice(b": ");
                out.extend_from_slice(value);
            }
            Field::Raw(line) => out.extend_from_slice(line),
        }
    }
}

/// One chunk: its data, and bits that bend how it is written.
#[derive(Debug, Arbitrary)]
struct Chunk {
    data: Vec<u8>,
    /// 1: upper-case hex, 2: leading zeros, 4: an extension, 8: white space
    /// before the line end, 16: a size one too large, 32: one too small,
    /// 64: data ended by a bare LF, 128: data ended by nothing.
    style: u8,
    eol: Eol,
}

impl Chunk {
    fn write(&self, out: &mut Vec<u8>) {
        let mut size = self.data.len();
        if self.style & 16 != 0 {
            size += 1;
        } else if self.style & 32 != 0 {
            size = size.saturating_sub(1);
        }
        write_size(out, size, self.style, &self.eol);
        out.extend_from_slice(&self.data);
        if self.style & 128 == 0 {
            out.extend_from_slice(if self.style & 64 != 0 { b"\n" } else { b"\r\n" });
        }
    }
}

fn write_size(out: &mut Vec<u8>, size: usize, style: u8, eol: &Eol) {
    let hex = if style & 1 != 0 {
        format!("{size:X}")
    } else {
        format!("{size:x}")
    };
    if style & 2 != 0 {
        out.extend_from_slice(b"00");
    }
    out.extend_from_slice(hex.as_bytes());
    if style & 8 != 0 {
        out.extend_from_slice(b" \t");
    }
    if style & 4 != 0 {
        out.extend_from_slice(b";ext=\"v\"");
    }
    out.extend_from_slice(eol.bytes());
}

#[derive(Debug, Arbitrary)]
enum Payload {
    Empty,
    /// With a Content-Length of its length.
    Counted(Vec<u8>),
    /// `Transfer-Encoding: chunked`: the chunks, the last chunk's style, trailers, the end.
    Chunked(Vec<Chunk>, u8, Vec<(Field, Eol)>, Eol),
}

#[derive(Debug, Arbitrary)]
struct Built {
    /// Blank lines before the request line (CRLF, or bare LF where the bit is clear).
    blank_lines: u8,
    method: u8,
    target: u8,
    http10: bool,
    request_eol: Eol,
    fields: Vec<(Field, Eol)>,
    end_eol: Eol,
    payload: Payload,
}

impl Built {
    fn write(&self, out: &mut Vec<u8>) {
        for bit in 0..self.blank_lines.count_ones().min(2) {
            let crlf = self.blank_lines & (16 << bit) != 0;
            out.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
        }
        let method = METHODS[usize::from(self.method) % METHODS.len()];
        let target = TARGETS[usize::from(self.target) % TARGETS.len()];
        let version = if self.http10 { "HTTP/1.0" } else { "HTTP/1.1" };
        out.extend_from_slice(format!("{method} {target} {version}").as_bytes());
        out.extend_from_slice(self.request_eol.bytes());
        match &self.payload {
            Payload::Empty => {}
            Payload::Counted(data) => {
                out.extend_from_slice(format!("content-length: {}\r\n", data.len()).as_bytes())
            }
            Payload::Chunked(..) => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        }
        for (field, eol) in &self.fields {
            field.write(out);
            out.extend_from_slice(eol.bytes());
        }
        out.extend_from_slice(self.end_eol.bytes());
        match &self.payload {
            Payload::Empty => {}
            Payload::Counted(data) => out.extend_from_slice(data),
            Payload::Chunked(chunks, last, trailers, end) => {
                for chunk in chunks {
                    chunk.write(out);
                }
                write_size(out, 0, *last & 0x0f, &Eol(*last >> 4));
                for (field, eol) in trailers {
                    field.write(out);
                    out.extend_from_slice(eol.bytes());
                }
                out.extend_from_slice(end.bytes());
            }
        }
    }
}

#[derive(Debug, Arbitrary)]
enum Part {
    Request(Built),
    Raw(Vec<u8>),
}

#[derive(Debug, Arbitrary)]
struct Input {
    parts: Vec<Part>,
    /// Where reads end (taken modulo the stream's length).
    cuts: Vec<u16>,
    /// Bit `i` set: read `i` is pending once first.
    pauses: u64,
}

/// Checks one input: the fuzzer's bytes read as an [`Input`], as
/// libFuzzer's `fuzz_target!` reads a structured input.
pub fn check(data: &[u8]) {
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let mut stream = Vec::new();
    for part in &input.parts {
        match part {
            Part::Request(built) => built.write(&mut stream),
            Part::Raw(bytes) => stream.extend_from_slice(bytes),
        }
    }
    if stream.is_empty() || stream.len() > MAX_STREAM {
        return;
    }
    let mut ends: Vec<usize> = input
        .cuts
        .iter()
        .map(|cut| usize::from(*cut) % stream.len())
        .filter(|end| *end > 0)
        .collect();
    ends.push(stream.len());
    ends.sort_unstable();
    ends.dedup();
    compare(&stream, &ends, input.pauses);
}

/// What a service saw of one request.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Request {
        method: String,
        target: String,
        version: String,
        headers: Vec<(String, Vec<u8>)>,
        /// The body's bytes, or `None` when reading it failed.
        body: Option<Vec<u8>>,
    },
    /// The gate's stand-in for a refused head.
    StandIn,
}

/// Where hyper alone found request `i`: the bytes read when it was handed
/// over (its head's end) and when its body ended (none: the body failed).
#[derive(Debug, Clone, Copy)]
struct Span {
    head_end: usize,
    body_end: Option<usize>,
}

/// Parses `stream` with hyper alone and through the gate, and compares.
fn compare(stream: &[u8], ends: &[usize], pauses: u64) {
    let (alone, spans) = parse_alone(stream);
    let (gated, given) = parse_gated(stream, ends, pauses);
    let starts: Vec<usize> = std::iter::once(0)
        .chain(spans.iter().map_while(|span| span.body_end))
        .collect();
    let first_bare_lf = spans
        .iter()
        .zip(&starts)
        .position(|(span, start)| has_bare_lf(&stream[*start..span.head_end]));
    let refused = gated.last() == Some(&Seen::StandIn);
    let real = &gated[..gated.len() - usize::from(refused)];
    assert!(
        !real.contains(&Seen::StandIn),
        "a request after the stand-in: {gated:?}"
    );
    let expected = &alone[..first_bare_lf.unwrap_or(alone.len())];
    assert_eq!(
        real, expected,
        "stream {stream:?}, reads ending at {ends:?}"
    );
    match first_bare_lf {
        Some(index) => assert!(refused, "head {index} has a bare LF and was not refused"),
        None if refused => {
            // A head hyper alone did not hand over (it refused it, or the
            // stream ended in it): it must have had a bare LF.
            let start = *starts
                .get(real.len())
                .expect("a refused head after a failed body");
            assert!(
                open_head_has_bare_lf(&stream[start..]),
                "refused a head without a bare LF at {start}"
            );
        }
        None => {}
    }
    if trace() {
        eprintln!(
            "head_gate: {} bytes, {} reads: hyper alone {} requests, gated {}{}",
            stream.len(),
            ends.len(),
            alone.len(),
            real.len(),
            if refused { " then the stand-in" } else { "" }
        );
    }
    if refused {
        let start = starts[real.len()];
        let expected = [&stream[..start], REFUSED_HEAD_STAND_IN].concat();
        assert_eq!(given, expected, "bytes given before the stand-in");
    } else {
        assert!(stream.starts_with(&given), "bytes given changed");
    }
}

/// `HEAD_GATE_TRACE=1`: print what each input did (to see what a corpus reaches).
fn trace() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("HEAD_GATE_TRACE").is_some())
}

/// hyper alone, one byte a read: what it handed over, and where.
fn parse_alone(stream: &[u8]) -> (Vec<Seen>, Vec<Span>) {
    let read = Rc::new(Cell::new(0));
    let io = Scripted::new(stream, (1..=stream.len()).collect(), 0, Rc::clone(&read));
    let seen = Rc::new(RefCell::new(Vec::new()));
    let spans = Rc::new(RefCell::new(Vec::new()));
    let service = {
        let (seen, spans) = (Rc::clone(&seen), Rc::clone(&spans));
        service_fn(move |request: Request<Incoming>| {
            let (seen, spans, read) = (Rc::clone(&seen), Rc::clone(&spans), Rc::clone(&read));
            let head_end = read.get();
            async move {
                let request = record(request).await;
                let body_end =
                    matches!(request, Seen::Request { body: Some(_), .. }).then(|| read.get());
                seen.borrow_mut().push(request);
                spans.borrow_mut().push(Span { head_end, body_end });
                Ok::<_, Infallible>(answer(200))
            }
        })
    };
    let connection = connection().serve_connection(TokioIo::new(io), service);
    assert!(drive(connection), "hyper alone stalled on {stream:?}");
    let seen = seen.take();
    let spans = spans.take();
    (seen, spans)
}

/// hyper behind the gate, reads ending at `ends`: what it handed over, and
/// the bytes it was given.
fn parse_gated(stream: &[u8], ends: &[usize], pauses: u64) -> (Vec<Seen>, Vec<u8>) {
    let io = Scripted::new(stream, ends.to_vec(), pauses, Rc::new(Cell::new(0)));
    let (gated, handoff) = gate(io, MAX_HEAD);
    let given = Rc::new(RefCell::new(Vec::new()));
    let tapped = Tap {
        inner: gated,
        given: Rc::clone(&given),
    };
    let seen = Rc::new(RefCell::new(Vec::new()));
    let handoff: Rc<GateHandoff> = Rc::new(handoff);
    let service = {
        let seen = Rc::clone(&seen);
        service_fn(move |request: Request<Incoming>| {
            let refused = handoff.request_seen(&request.body().size_hint());
            let seen = Rc::clone(&seen);
            async move {
                let request = if refused {
                    Seen::StandIn
                } else {
                    record(request).await
                };
                let status = if refused { 400 } else { 200 };
                seen.borrow_mut().push(request);
                Ok::<_, Infallible>(answer(status))
            }
        })
    };
    let connection = connection().serve_connection(TokioIo::new(tapped), service);
    assert!(
        drive(connection),
        "the gate stalled {stream:?}, reads ending at {ends:?}"
    );
    let seen = seen.take();
    let given = given.take();
    (seen, given)
}

/// hyper's HTTP/1 server as the proxy sets it up.
fn connection() -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder.half_close(true).max_buf_size(MAX_HEAD);
    builder
}

fn answer(status: u16) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = hyper::StatusCode::from_u16(status).expect("a status");
    response
}

async fn record(request: Request<Incoming>) -> Seen {
    let (head, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .ok()
        .map(|body| body.to_bytes().to_vec());
    Seen::Request {
        method: head.method.to_string(),
        target: head.uri.to_string(),
        version: format!("{:?}", head.version),
        headers: head
            .headers
            .iter()
            .map(|(name, value)| (name.to_string(), value.as_bytes().to_vec()))
            .collect(),
        body,
    }
}

/// Any LF not right after a CR (the first byte of a head has no CR before it).
fn has_bare_lf(head: &[u8]) -> bool {
    (0..head.len()).any(|at| head[at] == b'\n' && (at == 0 || head[at - 1] != b'\r'))
}

/// Whether the head that `bytes` open has a bare LF before its blank line
/// (blank lines before its request line are part of it).
fn open_head_has_bare_lf(bytes: &[u8]) -> bool {
    let (mut line_start, mut began) = (0, false);
    for at in 0..bytes.len() {
        if bytes[at] != b'\n' {
            continue;
        }
        if at == 0 || bytes[at - 1] != b'\r' {
            return true;
        }
        let blank = at - line_start == 1;
        if blank && began {
            return false;
        }
        began |= !blank;
        line_start = at + 1;
    }
    false
}

/// Polls `future` to its end; false when it stalls: pending with nothing
/// left to wake it (the input is all in memory), or polled past reason.
fn drive<F: Future>(future: F) -> bool {
    struct Flag(AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let flag = Arc::new(Flag(AtomicBool::new(false)));
    let waker = Waker::from(Arc::clone(&flag));
    let mut context = Context::from_waker(&waker);
    let mut future = pin!(future);
    for _ in 0..MAX_POLLS {
        flag.0.store(false, Ordering::SeqCst);
        if future.as_mut().poll(&mut context).is_ready() {
            return true;
        }
        if !flag.0.load(Ordering::SeqCst) {
            return false;
        }
    }
    false
}

/// An in-memory client: `stream` read in pieces ending at `ends`, a read
/// pending once first where `pauses` says; then end of stream. Writes are
/// taken and dropped; `read` counts the bytes read.
struct Scripted {
    stream: Vec<u8>,
    ends: Vec<usize>,
    piece: usize,
    pauses: u64,
    at: usize,
    read: Rc<Cell<usize>>,
}

impl Scripted {
    fn new(stream: &[u8], ends: Vec<usize>, pauses: u64, read: Rc<Cell<usize>>) -> Scripted {
        Scripted {
            stream: stream.to_vec(),
            ends,
            piece: 0,
            pauses,
            at: 0,
            read,
        }
    }
}

impl AsyncRead for Scripted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(&end) = this.ends.get(this.piece) else {
            return Poll::Ready(Ok(()));
        };
        let bit = 1u64 << (this.piece % 64);
        if this.pauses & bit != 0 {
            this.pauses &= !bit;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let count = (end - this.at).min(buf.remaining());
        buf.put_slice(&this.stream[this.at..this.at + count]);
        this.at += count;
        this.read.set(this.at);
        if this.at == end {
            this.piece += 1;
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Scripted {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Keeps every byte hyper reads from `inner`.
struct Tap<S> {
    inner: S,
    given: Rc<RefCell<Vec<u8>>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tap<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.given
            .borrow_mut()
            .extend_from_slice(&buf.filled()[before..]);
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tap<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
