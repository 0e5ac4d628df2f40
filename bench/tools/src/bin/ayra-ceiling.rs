//! The HIT ceiling for bench/run: plain hyper answering conversations from a HashMap of prebuilt bodies.
//!
//! Not part of the product. It fetches each id's body once from the upstream
//! at start, then serves `GET /v1/conversations/{id}` from memory with the
//! headers an ayra-cache HIT carries, on one current-thread tokio runtime per
//! worker, each with its own `SO_REUSEPORT` listener on the same port. It does
//! none of a cache's work (no credential fingerprint, flags, lifetimes,
//! logging or metrics): what a HIT costs here is what hyper and the kernel
//! cost, the floor ayra-cache's HIT path is measured against.

use std::collections::HashMap;
use std::convert::Infallible;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;

use ayra_bench_tools::response::ResponseReader;
use bytes::Bytes;
use clap::Parser;
use http::{header, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use socket2::{Domain, Socket, Type};

/// Serve prebuilt conversation bodies, one runtime per worker.
#[derive(Parser, Debug)]
struct Args {
    /// Address to listen on (port 0: any free port, shared by every worker).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The upstream (host:port) each body is fetched from at start.
    #[arg(long)]
    upstream: SocketAddr,
    /// A file of conversation ids, one a line.
    #[arg(long)]
    ids_file: PathBuf,
    /// The Authorization header value sent upstream for the fetches.
    #[arg(long, default_value = "Bearer sk_bench")]
    authorization: String,
    /// Runtimes (threads), each with its own listener; 0: one per CPU.
    #[arg(long, default_value_t = 0)]
    workers: usize,
}

/// One conversation as served: the body and its headers, built once.
struct Entry {
    body: Bytes,
    etag: HeaderValue,
}

type Entries = HashMap<String, Entry>;

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let entries = Arc::new(fetch_all(&args)?);
    let workers = match args.workers {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
    let first = reuseport_listener(args.listen)?;
    let address = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..workers {
        listeners.push(reuseport_listener(address)?);
    }
    println!(
        "ayra-ceiling listening on http://{address} ({} ids, {workers} workers)",
        entries.len()
    );
    std::io::stdout().flush()?;
    let threads: Vec<_> = listeners
        .into_iter()
        .map(|listener| {
            let entries = Arc::clone(&entries);
            std::thread::spawn(move || run_worker(listener, entries))
        })
        .collect();
    for thread in threads {
        thread.join().expect("a worker panicked")?;
    }
    Ok(())
}

/// Every id's body, fetched once over one keep-alive connection.
fn fetch_all(args: &Args) -> std::io::Result<Entries> {
    let ids = std::fs::read_to_string(&args.ids_file)?;
    let mut stream = TcpStream::connect(args.upstream)?;
    let mut reader = ResponseReader::default();
    let mut entries = HashMap::new();
    for id in ids.lines().map(str::trim).filter(|id| !id.is_empty()) {
        let request = format!(
            "GET /v1/conversations/{id}?include_transcript=true&include_recording=true&include_analytics=true HTTP/1.1\r\n\
             Host: {}\r\nAuthorization: {}\r\nAccept: application/json\r\nUser-Agent: ayra-ceiling\r\n\r\n",
            args.upstream, args.authorization
        );
        stream.write_all(request.as_bytes())?;
        let response = reader.read_response(&mut stream)?;
        if response.status != 200 {
            let message = format!("upstream answered {} for {id}", response.status);
            return Err(std::io::Error::other(message));
        }
        let body = Bytes::copy_from_slice(&reader.buffer()[response.body]);
        entries.insert(id.to_string(), entry(body));
    }
    Ok(entries)
}

/// The entry for `body`, with an ETag of 32 hex digits, as long as ayra-cache's.
fn entry(body: Bytes) -> Entry {
    let digest = |seed: u8| {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        seed.hash(&mut hasher);
        body.hash(&mut hasher);
        hasher.finish()
    };
    let etag = HeaderValue::from_str(&format!("\"{:016x}{:016x}\"", digest(0), digest(1)))
        .expect("hex digits make a header value");
    Entry { body, etag }
}

fn reuseport_listener(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

fn run_worker(listener: TcpListener, entries: Arc<Entries>) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            let entries = Arc::clone(&entries);
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    std::future::ready(Ok::<_, Infallible>(answer(&entries, &request)))
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                // A client that goes away mid-request is no concern of a benchmark.
                let _ = connection.await;
            });
        }
    })
}

fn answer(entries: &Entries, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    if let Some(entry) = path
        .strip_prefix("/v1/conversations/")
        .and_then(|id| entries.get(id))
    {
        return hit(entry);
    }
    if path == "/healthz" {
        let mut response = Response::new(Full::new(Bytes::from_static(b"{\"status\":\"ok\"}")));
        response.headers_mut().insert(header::CONTENT_TYPE, JSON);
        return response;
    }
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::NOT_FOUND;
    response
}

const JSON: HeaderValue = HeaderValue::from_static("application/json");
const X_CACHE: HeaderName = HeaderName::from_static("x-cache");
const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The headers of an ayra-cache HIT with compression on (same names and order, values of the same length).
fn hit(entry: &Entry) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(entry.body.clone()));
    let headers = response.headers_mut();
    // Room for all seven at once, as ayra-cache reserves it: a map grown
    // insert by insert reallocates twice.
    headers.reserve(7);
    headers.insert(header::CONTENT_TYPE, JSON);
    headers.insert(header::ETAG, entry.etag.clone());
    headers.insert(header::AGE, HeaderValue::from_static("0"));
    headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    headers.insert(
        X_REQUEST_ID,
        HeaderValue::from_static("00000000000040008000000000000000"),
    );
    headers.insert(X_CACHE, HeaderValue::from_static("HIT"));
    headers.insert(
        CACHE_STATUS,
        HeaderValue::from_static("ayra-cache; hit; ttl=3538"),
    );
    response
}
