//! An open-loop HTTP/1.1 client for bench/run: a fixed offered rate, latency timed from each request's due time.
//!
//! Each keep-alive connection is a thread with a blocking socket (timer
//! slack 1 ns, so a sleep ends when asked, not up to 50 µs later). The
//! connections take send slots from one [`Schedule`]; when every connection
//! is busy, the next slot goes out late and its latency still counts from
//! when it was due (no coordinated omission). Prebuilt requests cycle over
//! the paths given. Prints one line `PACED_RESULT {json}`: latency
//! percentiles, errors, the rate achieved, and the client's own precision:
//! how late a connection that was waiting for a slot woke to send it
//! (`late_*`), and how many slots found every connection busy (`backlogged`:
//! the server was behind, or the client was not scheduled in time).

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ayra_bench_tools::latency::{summarise, Summary};
use ayra_bench_tools::response::ResponseReader;
use ayra_bench_tools::schedule::{Schedule, Slot};
use clap::Parser;

/// Offer a fixed request rate, whatever the server does.
#[derive(Parser, Debug)]
struct Args {
    /// host:port of the server.
    #[arg(long)]
    target: SocketAddr,
    /// A file of request paths, one a line, sent in turn.
    #[arg(long)]
    paths_file: PathBuf,
    /// Requests per second offered.
    #[arg(long)]
    rate: f64,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds at the same rate before, not counted.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Keep-alive connections (threads): the most requests in flight at once.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// A request header, `Name: value` (repeatable).
    #[arg(long = "header")]
    headers: Vec<String>,
    /// Seconds an answer may take before the connection counts an error and reconnects.
    #[arg(long, default_value_t = 5.0)]
    timeout: f64,
}

/// What one connection saw.
#[derive(Default)]
struct Record {
    /// From when each request was due to its whole answer (what is reported as latency).
    latency_ns: Vec<u64>,
    /// From when each request went out to its whole answer (wrk2's "uncorrected").
    from_send_ns: Vec<u64>,
    /// When the last measured answer arrived.
    last_done: Option<Instant>,
    /// How late the send went out, for slots this connection waited for.
    wake_late_ns: Vec<u64>,
    /// Measured slots already past due when this connection took them.
    backlogged: u64,
    sent: u64,
    non_200: u64,
    io_errors: u64,
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let requests = Arc::new(prebuilt_requests(&args)?);
    let timeout = Duration::from_secs_f64(args.timeout);
    let streams = (0..args.connections)
        .map(|_| connect(args.target, timeout))
        .collect::<std::io::Result<Vec<_>>>()?;
    let start = Instant::now() + Duration::from_millis(20);
    let schedule = Arc::new(Schedule::new(
        start,
        args.rate,
        Duration::from_secs_f64(args.warmup),
        Duration::from_secs_f64(args.duration),
    ));
    let threads: Vec<_> = streams
        .into_iter()
        .map(|stream| {
            let (schedule, requests) = (Arc::clone(&schedule), Arc::clone(&requests));
            let target = args.target;
            std::thread::spawn(move || {
                run_connection(target, stream, timeout, &schedule, &requests)
            })
        })
        .collect();
    let mut total = Record::default();
    for thread in threads {
        let record = thread.join().expect("a connection thread panicked");
        total.latency_ns.extend(record.latency_ns);
        total.from_send_ns.extend(record.from_send_ns);
        total.last_done = total.last_done.max(record.last_done);
        total.wake_late_ns.extend(record.wake_late_ns);
        total.backlogged += record.backlogged;
        total.sent += record.sent;
        total.non_200 += record.non_200;
        total.io_errors += record.io_errors;
    }
    // Achieved: answers over the measured window, or until the last answer when a slow server ran past it.
    let (from, to) = schedule.measured_window();
    let until = total.last_done.map_or(to, |done| done.max(to));
    println!(
        "PACED_RESULT {}",
        to_json(&args, &mut total, (until - from).as_secs_f64())
    );
    Ok(())
}

fn prebuilt_requests(args: &Args) -> std::io::Result<Vec<Vec<u8>>> {
    let paths = std::fs::read_to_string(&args.paths_file)?;
    let mut extra = String::new();
    for header in &args.headers {
        extra.push_str(header.trim());
        extra.push_str("\r\n");
    }
    let requests: Vec<Vec<u8>> = paths
        .lines()
        .map(str::trim)
        .filter(|path| !path.is_empty())
        .map(|path| {
            format!(
                "GET {path} HTTP/1.1\r\nHost: {}\r\n{extra}\r\n",
                args.target
            )
            .into_bytes()
        })
        .collect();
    if requests.is_empty() {
        return Err(std::io::Error::other("the paths file holds no path"));
    }
    Ok(requests)
}

fn connect(target: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&target, timeout)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(timeout))?;
    Ok(stream)
}

/// Sends the slots this connection takes until the schedule runs out.
fn run_connection(
    target: SocketAddr,
    mut stream: TcpStream,
    timeout: Duration,
    schedule: &Schedule,
    requests: &[Vec<u8>],
) -> Record {
    precise_sleeps();
    let mut reader = ResponseReader::default();
    let mut record = Record::default();
    while let Some(slot) = schedule.take() {
        let wait = slot.due.checked_duration_since(Instant::now());
        if let Some(wait) = wait {
            std::thread::sleep(wait);
        }
        let sent = Instant::now();
        let waited = wait.is_some();
        let request = &requests[(slot.index % requests.len() as u64) as usize];
        record.sent += 1;
        let answer = stream
            .write_all(request)
            .and_then(|()| reader.read_response(&mut stream));
        let done = Instant::now();
        match answer {
            Ok(response) => tally(&mut record, slot, (sent, waited), done, response.status),
            Err(_) => {
                record.io_errors += 1;
                match connect(target, timeout) {
                    Ok(fresh) => stream = fresh,
                    Err(_) => return record,
                }
            }
        }
    }
    record
}

/// Records a measured slot's answer; `sent`: when it went out, and whether the connection waited for it.
fn tally(record: &mut Record, slot: Slot, sent: (Instant, bool), done: Instant, status: u16) {
    if !slot.measured {
        return;
    }
    let (sent_at, waited) = sent;
    record.latency_ns.push((done - slot.due).as_nanos() as u64);
    record.from_send_ns.push((done - sent_at).as_nanos() as u64);
    record.last_done = record.last_done.max(Some(done));
    if waited {
        let late = sent_at.saturating_duration_since(slot.due);
        record.wake_late_ns.push(late.as_nanos() as u64);
    } else {
        record.backlogged += 1;
    }
    if status != 200 {
        record.non_200 += 1;
    }
}

/// This thread's timer slack to 1 ns (Linux's default, 50 µs, would make every sleep end late).
fn precise_sleeps() {
    // SAFETY: PR_SET_TIMERSLACK takes a number and touches no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
}

fn to_json(args: &Args, total: &mut Record, measured_seconds: f64) -> String {
    let latency = summarise(&mut total.latency_ns);
    let lateness = summarise(&mut total.wake_late_ns);
    let from_send = summarise(&mut total.from_send_ns);
    format!(
        "{{\"offered_rps\":{:.1},\"achieved_rps\":{:.1},\"measured\":{},\"backlogged\":{},\"sent\":{},\
         \"non_200\":{},\"io_errors\":{},\"connections\":{},{},{},{}}}",
        args.rate,
        latency.count as f64 / measured_seconds,
        latency.count,
        total.backlogged,
        total.sent,
        total.non_200,
        total.io_errors,
        args.connections,
        fields("latency", &latency),
        fields("late", &lateness),
        fields("from_send", &from_send),
    )
}

fn fields(name: &str, s: &Summary) -> String {
    format!(
        "\"{name}_p50_us\":{:.1},\"{name}_p90_us\":{:.1},\"{name}_p99_us\":{:.1},\"{name}_p999_us\":{:.1},\
         \"{name}_max_us\":{:.1},\"{name}_mean_us\":{:.1}",
        s.p50_us, s.p90_us, s.p99_us, s.p999_us, s.max_us, s.mean_us
    )
}
