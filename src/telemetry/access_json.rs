//! The access event as one JSON line, written without the generic formatter's per-field work.
//!
//! At `info` every request logs one event; through `tracing_subscriber`'s JSON
//! formatter that event cost about as many instructions as the HIT it
//! described (a serde map per event, UTF-8 re-checks of every write, a
//! timestamp formatted from scratch). This layer writes the same line (same
//! keys, same order, same types) into a per-thread buffer reused across
//! events, formats the date and time once per second, and hands the line to
//! stderr in one write. Every other event still goes through the formatter.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// The target of the access event.
pub const ACCESS_TARGET: &str = "ayra_cache::access";

/// Writes the access events as JSON lines to stderr.
pub struct AccessJson;

impl<S: Subscriber> Layer<S> for AccessJson {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() != ACCESS_TARGET {
            return;
        }
        LINE.with(|line| {
            let Ok(mut line) = line.try_borrow_mut() else {
                return;
            };
            line.clear();
            write_line(&mut line, event);
            // One write per event; a failed write (closed stderr) drops the line.
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
        });
    }
}

thread_local! {
    /// The line being written, its capacity kept from one event to the next.
    static LINE: RefCell<String> = RefCell::new(String::with_capacity(512));
    /// `YYYY-MM-DDTHH:MM:SS` of the last second stamped on this thread.
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// The whole line: timestamp, level, the event's fields in order, target.
pub fn write_line(line: &mut String, event: &Event<'_>) {
    line.push_str("{\"timestamp\":\"");
    push_timestamp(line, SystemTime::now());
    line.push_str("\",\"level\":\"");
    line.push_str(event.metadata().level().as_str());
    line.push('"');
    event.record(&mut Fields { line });
    line.push_str(",\"target\":");
    push_string(line, event.metadata().target());
    line.push_str("}\n");
}

/// RFC 3339 in UTC with microseconds, as the formatter writes it.
fn push_timestamp(line: &mut String, now: SystemTime) {
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since_epoch.as_secs();
    SECOND.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != seconds {
            let stamp = jiff::Timestamp::from_second(seconds as i64).unwrap_or_default();
            cached.1.clear();
            let _ = write!(cached.1, "{}", stamp.strftime("%Y-%m-%dT%H:%M:%S"));
            cached.0 = seconds;
        }
        line.push_str(&cached.1);
    });
    let _ = write!(line, ".{:06}Z", since_epoch.subsec_micros());
}

/// Appends each field as `,"name":value`.
struct Fields<'a> {
    line: &'a mut String,
}

impl Fields<'_> {
    fn key(&mut self, field: &Field) {
        self.line.push_str(",\"");
        self.line.push_str(field.name());
        self.line.push_str("\":");
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        push_string(self.line, value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        let _ = write!(self.line, "{value}");
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        let _ = write!(self.line, "{value}");
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        self.line.push_str(if value { "true" } else { "false" });
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.key(field);
        if value.is_finite() {
            let _ = write!(self.line, "{value:?}");
        } else {
            self.line.push_str("null");
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.key(field);
        self.line.push('"');
        let _ = write!(Escaped(self.line), "{value:?}");
        self.line.push('"');
    }
}

/// `text` as a JSON string.
fn push_string(line: &mut String, text: &str) {
    line.push('"');
    let _ = Escaped(line).write_str(text);
    line.push('"');
}

/// Escapes what JSON strings cannot hold as is: quotes, backslashes, controls.
struct Escaped<'a>(&'a mut String);

impl fmt::Write for Escaped<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let plain = |b: u8| b >= 0x20 && b != b'"' && b != b'\\';
        if text.bytes().all(plain) {
            self.0.push_str(text);
            return Ok(());
        }
        for c in text.chars() {
            match c {
                '"' => self.0.push_str("\\\""),
                '\\' => self.0.push_str("\\\\"),
                '\n' => self.0.push_str("\\n"),
                '\r' => self.0.push_str("\\r"),
                '\t' => self.0.push_str("\\t"),
                c if (c as u32) < 0x20 => write!(self.0, "\\u{:04x}", c as u32)?,
                c => self.0.push(c),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt;

    /// Captures the lines `write_line` makes.
    struct Capture(Arc<Mutex<Vec<String>>>);

    impl<S: Subscriber> Layer<S> for Capture {
        fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
            let mut line = String::new();
            write_line(&mut line, event);
            self.0.lock().unwrap().push(line);
        }
    }

    #[test]
    fn the_line_is_json_with_every_field_typed() {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry().with(Capture(Arc::clone(&lines)));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(
                target: "ayra_cache::access",
                request_id = "abc",
                path = "/v1/\"odd\"\\\n\u{1}é",
                status = 200u16,
                delta = -3i64,
                collapsed = false,
                latency_ms = 0.25f64,
                nan = f64::NAN,
                upstream_ms = None::<f64>,
                shown = %"GET",
                "request"
            );
        });
        let lines = lines.lock().unwrap();
        let line = &lines[0];
        assert!(line.ends_with("}\n"));
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(value["message"], "request");
        assert_eq!(value["level"], "INFO");
        assert_eq!(value["target"], "ayra_cache::access");
        assert_eq!(value["path"], "/v1/\"odd\"\\\n\u{1}é");
        assert_eq!(value["status"], 200);
        assert_eq!(value["delta"], -3);
        assert_eq!(value["collapsed"], false);
        assert_eq!(value["latency_ms"], 0.25);
        assert!(value["nan"].is_null());
        assert!(value.get("upstream_ms").is_none(), "None is left out");
        assert_eq!(value["shown"], "GET");
        let stamp = value["timestamp"].as_str().unwrap();
        assert!(stamp.parse::<jiff::Timestamp>().is_ok(), "{stamp}");
        assert_eq!(stamp.len(), "2026-11-28T02:24:24.823188Z".len());
    }

    #[test]
    fn the_second_is_formatted_once_and_the_microseconds_each_time() {
        let mut line = String::new();
        let t = UNIX_EPOCH + std::time::Duration::from_micros(1_764_296_664_000_007);
        push_timestamp(&mut line, t);
        line.push(' ');
        push_timestamp(&mut line, t + std::time::Duration::from_micros(5));
        line.push(' ');
        push_timestamp(&mut line, t + std::time::Duration::from_secs(1));
        assert_eq!(
            line,
            "2025-11-28T02:24:24.000007Z 2025-11-28T02:24:24.000012Z 2025-11-28T02:24:25.000007Z"
        );
    }
}
