//! A running binary's stderr, kept as it is written, so a test can wait for a log line instead of sleeping.

use std::io::{BufRead, BufReader};
use std::process::ChildStderr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Everything a child process wrote to stderr so far.
pub struct LogTail {
    text: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
}

impl LogTail {
    /// Reads `stderr` line by line on a thread of its own until it closes.
    pub fn follow(stderr: ChildStderr) -> LogTail {
        let text = Arc::new(Mutex::new(String::new()));
        let kept = Arc::clone(&text);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut text = kept.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
        });
        LogTail {
            text,
            reader: Some(reader),
        }
    }

    /// The log so far.
    pub fn so_far(&self) -> String {
        self.text.lock().unwrap().clone()
    }

    /// Waits until a line containing every one of `needles` has been
    /// written after the first `skip` bytes, and returns it; panics after `limit`.
    pub async fn line_after(&self, skip: usize, needles: &[&str], limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let text = self.so_far();
            let found = text
                .get(skip..)
                .unwrap_or("")
                .lines()
                .find(|line| needles.iter().all(|needle| line.contains(needle)));
            if let Some(line) = found {
                return line.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {needles:?} within {limit:?}:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The whole log, once the process has exited (its stderr closed).
    pub fn finish(&mut self) -> String {
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        self.so_far()
    }
}
