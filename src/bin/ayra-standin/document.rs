//! The conversation document (`{"data": {...}}`), generated deterministically from the id.

use serde::{Serialize, Serializer};

use crate::body_template::{marker, BodyTemplate, Slot};
use crate::call_scripts::{CallScript, CALL_SCRIPTS, PADDING_LINE};
use crate::flags::Flags;
use crate::knobs::Knobs;
use crate::seeded_rng::SeededRng;

const CRMS: &[&str] = &["salesforce", "hubspot", "zendesk"];
const DIGITS: &[u8] = b"0123456789";
const ALPHANUMERIC: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
/// 2025-01-01T00:00:00Z: generated calls start during the year after.
const EPOCH_2025: i64 = 1_735_689_600;

/// The body template of conversation `id` with `flags` and `knobs`; with
/// `body_bytes`, the transcript is padded so the body reaches that size.
pub fn build_template(id: &str, flags: Flags, knobs: &Knobs) -> BodyTemplate {
    let template = serialise(id, flags, knobs, 0);
    let target = knobs
        .body_bytes
        .map_or(0, |bytes| usize::try_from(bytes).unwrap_or(usize::MAX));
    if flags.transcript && target > template.min_len() {
        serialise(id, flags, knobs, target - template.min_len())
    } else {
        template
    }
}

fn serialise(id: &str, flags: Flags, knobs: &Knobs, padding: usize) -> BodyTemplate {
    let envelope = Envelope {
        data: Conversation::generate(id, flags, knobs, padding),
    };
    // Only strings, numbers, arrays and structs: serialisation cannot fail.
    let text = serde_json::to_string(&envelope).expect("conversation documents serialise");
    BodyTemplate::from_serialised(text)
}

/// A key that is left out, `null`, or present.
#[derive(Debug)]
enum Section<T> {
    Omitted,
    Null,
    Present(T),
}

impl<T> Section<T> {
    fn is_omitted(&self) -> bool {
        matches!(self, Section::Omitted)
    }
}

impl<T: Serialize> Serialize for Section<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Section::Present(value) => value.serialize(serializer),
            Section::Omitted | Section::Null => serializer.serialize_none(),
        }
    }
}

#[derive(Debug, Serialize)]
struct Envelope<'a> {
    data: Conversation<'a>,
}

#[derive(Debug, Serialize)]
struct Conversation<'a> {
    id: &'a str,
    agent_id: String,
    caller_number: String,
    direction: &'static str,
    status: &'a str,
    started_at: String,
    ended_at: String,
    duration: u64,
    sentiment: &'static str,
    sentiment_score: f64,
    metadata: Metadata,
    #[serde(skip_serializing_if = "Section::is_omitted")]
    transcript: Section<Transcript>,
    #[serde(skip_serializing_if = "Section::is_omitted")]
    recording: Section<Recording<'a>>,
    #[serde(skip_serializing_if = "Section::is_omitted")]
    analytics: Section<Analytics>,
    integrations: Integrations,
}

#[derive(Debug, Serialize)]
struct Transcript {
    full_text: String,
    messages: Vec<Message>,
    word_count: usize,
}

#[derive(Debug, Serialize)]
struct Message {
    speaker: &'static str,
    text: &'static str,
    start_ms: u64,
    end_ms: u64,
    confidence: f64,
    sentiment: &'static str,
}

#[derive(Debug, Serialize)]
struct Metadata {
    language: &'static str,
    phone_number_id: String,
    campaign_id: String,
    tags: &'static [&'static str],
}

#[derive(Debug, Serialize)]
struct Recording<'a> {
    url: String,
    duration: u64,
    format: &'static str,
    size_bytes: u64,
    expires_at: &'a str,
}

#[derive(Debug, Serialize)]
struct Analytics {
    interruptions: u64,
    average_response_time: f64,
    keywords_detected: &'static [&'static str],
    topics: &'static [&'static str],
    talk_ratio: TalkRatio,
    silence_percentage: f64,
    outcome: &'static str,
    customer_satisfaction_prediction: f64,
}

#[derive(Debug, Serialize)]
struct TalkRatio {
    agent: f64,
    caller: f64,
}

#[derive(Debug, Serialize)]
struct Integrations {
    crm: &'static str,
    crm_record_id: String,
    webhook_delivered: bool,
    /// A marker replaced by the response's serial number.
    standin_serial: String,
}

impl<'a> Conversation<'a> {
    /// Each part draws from its own generator, so that leaving a section out
    /// changes nothing in the others.
    fn generate(id: &'a str, flags: Flags, knobs: &'a Knobs, padding: usize) -> Self {
        let seeded = |part: &str| SeededRng::from_seed(&format!("{id}#{part}"));
        let mut rng = seeded("call");
        let script = rng.pick(CALL_SCRIPTS);
        let duration = rng.in_range(90, 600);
        let started_at = EPOCH_2025 + rng.in_range(0, 364 * 24 * 3600) as i64;
        let sentiment_score = hundredths(rng.in_range(0, 200) as i64 - 100);
        Conversation {
            id,
            agent_id: format!("agent_{}", rng.token(ALPHANUMERIC, 12)),
            caller_number: format!("+1555{}", rng.token(DIGITS, 7)),
            direction: if rng.in_range(0, 3) == 0 {
                "outbound"
            } else {
                "inbound"
            },
            status: &knobs.status,
            started_at: rfc3339(started_at),
            ended_at: rfc3339(started_at + duration as i64),
            duration,
            sentiment: sentiment_name(sentiment_score),
            sentiment_score,
            metadata: Metadata::generate(script, &mut rng),
            transcript: match flags.transcript {
                true => Section::Present(Transcript::generate(
                    script,
                    duration,
                    padding,
                    &mut seeded("transcript"),
                )),
                false => Section::Omitted,
            },
            recording: match (flags.recording, knobs.recording) {
                (false, _) => Section::Omitted,
                (true, false) => Section::Null,
                (true, true) => Section::Present(Recording::generate(id, duration, knobs)),
            },
            analytics: match (flags.analytics, knobs.analytics_pending) {
                (false, _) => Section::Omitted,
                (true, true) => Section::Null,
                (true, false) => {
                    Section::Present(Analytics::generate(script, &mut seeded("analytics")))
                }
            },
            integrations: Integrations::generate(&mut seeded("integrations")),
        }
    }
}

impl Metadata {
    fn generate(script: &CallScript, rng: &mut SeededRng) -> Self {
        Metadata {
            language: "en-US",
            phone_number_id: format!("pn_{}", rng.token(ALPHANUMERIC, 16)),
            campaign_id: format!("camp_{}", rng.token(ALPHANUMERIC, 10)),
            tags: script.topics,
        }
    }
}

impl Integrations {
    fn generate(rng: &mut SeededRng) -> Self {
        Integrations {
            crm: rng.pick::<&str>(CRMS),
            crm_record_id: rng.token(ALPHANUMERIC, 18),
            webhook_delivered: true,
            standin_serial: marker(Slot::Serial),
        }
    }
}

impl Transcript {
    fn generate(script: &CallScript, duration: u64, padding: usize, rng: &mut SeededRng) -> Self {
        let turn_ms = duration * 1000 / script.lines.len() as u64;
        let messages: Vec<Message> = (0_u64..)
            .zip(script.lines)
            .map(|(turn, &(speaker, text))| {
                let start_ms = turn * turn_ms + rng.in_range(0, turn_ms / 10);
                Message {
                    speaker: speaker.as_str(),
                    text,
                    start_ms,
                    end_ms: start_ms + turn_ms * 8 / 10,
                    confidence: hundredths(rng.in_range(86, 99) as i64),
                    sentiment: if rng.in_range(0, 4) == 0 {
                        "positive"
                    } else {
                        "neutral"
                    },
                }
            })
            .collect();
        let mut full_text = script
            .lines
            .iter()
            .map(|(speaker, text)| format!("{}: {text}", speaker.label()))
            .collect::<Vec<_>>()
            .join("\n");
        let word_count = full_text.split_whitespace().count();
        pad(&mut full_text, padding);
        Transcript {
            full_text,
            messages,
            word_count,
        }
    }
}

/// Appends exactly `padding` bytes of filler (which needs no JSON escaping).
fn pad(text: &mut String, padding: usize) {
    text.reserve(padding);
    let mut remaining = padding;
    while remaining > 0 {
        let piece = &PADDING_LINE[..remaining.min(PADDING_LINE.len())];
        text.push_str(piece);
        remaining -= piece.len();
    }
}

impl<'a> Recording<'a> {
    fn generate(id: &str, duration: u64, knobs: &'a Knobs) -> Self {
        let url = format!(
            "https://recordings.ayra.ai/{id}.mp3?X-Signature={}&Expires={}",
            marker(Slot::UrlSignature),
            marker(Slot::UrlExpires)
        );
        Recording {
            url,
            duration,
            format: "mp3",
            size_bytes: duration * 16_000,
            expires_at: knobs.expires_at.as_deref().unwrap_or(&EXPIRES_AT_MARKER),
        }
    }
}

static EXPIRES_AT_MARKER: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| marker(Slot::ExpiresAt));

impl Analytics {
    fn generate(script: &CallScript, rng: &mut SeededRng) -> Self {
        let agent_share = rng.in_range(45, 65) as i64;
        Analytics {
            interruptions: rng.in_range(0, 4),
            average_response_time: hundredths(rng.in_range(60, 250) as i64),
            keywords_detected: script.keywords,
            topics: script.topics,
            talk_ratio: TalkRatio {
                agent: hundredths(agent_share),
                caller: hundredths(100 - agent_share),
            },
            silence_percentage: rng.in_range(20, 150) as f64 / 10.0,
            outcome: script.outcome,
            customer_satisfaction_prediction: hundredths(rng.in_range(55, 98) as i64),
        }
    }
}

/// `n / 100`, printed with at most two decimals.
fn hundredths(n: i64) -> f64 {
    n as f64 / 100.0
}

fn sentiment_name(score: f64) -> &'static str {
    if score >= 0.25 {
        "positive"
    } else if score <= -0.25 {
        "negative"
    } else {
        "neutral"
    }
}

fn rfc3339(unix_seconds: i64) -> String {
    jiff::Timestamp::from_second(unix_seconds)
        .map(|timestamp| timestamp.to_string())
        .unwrap_or_default()
}
