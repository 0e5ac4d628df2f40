//! Notices between replicas over Redis pub/sub: a value stored or a claim let go (wakes waiters), a purge (drops local copies), an upstream budget paused.
//!
//! Pub/sub needs a connection of its own. It is made in the background and
//! made again after any loss; a notice missed meanwhile costs a waiter one
//! poll interval (waiters also poll), and a missed purge leaves local copies
//! to the end of their fresh life at most.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::broadcast;

use super::link::REST;

/// One notice on the channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A value was written under this name.
    Stored(String),
    /// A claim on this value name was let go without a value.
    Released(String),
    /// Every value of this conversation was deleted.
    Purge(String),
    /// Every value was deleted.
    PurgeAll,
    /// An upstream `429` paused the budget of `credential` (its name in
    /// Redis: a fingerprint, never the key) for `left_ms` from now.
    BudgetPaused { credential: String, left_ms: u64 },
}

impl Notice {
    /// The notice as published.
    pub fn encode(&self) -> String {
        match self {
            Notice::Stored(name) => format!("stored {name}"),
            Notice::Released(name) => format!("released {name}"),
            Notice::Purge(id) => format!("purge {id}"),
            Notice::PurgeAll => "purge-all".to_owned(),
            Notice::BudgetPaused {
                credential,
                left_ms,
            } => format!("budget-paused {credential} {left_ms}"),
        }
    }

    /// A published notice; none for anything else.
    pub fn decode(text: &str) -> Option<Notice> {
        match text.split_once(' ') {
            Some(("stored", name)) => Some(Notice::Stored(name.to_owned())),
            Some(("released", name)) => Some(Notice::Released(name.to_owned())),
            Some(("purge", id)) => Some(Notice::Purge(id.to_owned())),
            None if text == "purge-all" => Some(Notice::PurgeAll),
            Some(("budget-paused", rest)) => {
                let (credential, left_ms) = rest.split_once(' ')?;
                Some(Notice::BudgetPaused {
                    credential: credential.to_owned(),
                    left_ms: left_ms.parse().ok()?,
                })
            }
            _ => None,
        }
    }
}

/// Subscribes to `channel` at `url` for as long as the process runs, passing
/// every notice to `sender`.
pub async fn listen(
    client: redis::Client,
    channel: String,
    timeout: Duration,
    sender: broadcast::Sender<Notice>,
) {
    loop {
        if let Ok(Ok(mut pubsub)) = tokio::time::timeout(timeout, client.get_async_pubsub()).await {
            if let Ok(Ok(())) = tokio::time::timeout(timeout, pubsub.subscribe(&channel)).await {
                let mut messages = pubsub.on_message();
                while let Some(message) = messages.next().await {
                    let notice = message
                        .get_payload::<String>()
                        .ok()
                        .and_then(|text| Notice::decode(&text));
                    if let Some(notice) = notice {
                        // No receiver right now is fine.
                        let _ = sender.send(notice);
                    }
                }
            }
        }
        tokio::time::sleep(REST).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_round_trip_and_noise_is_ignored() {
        for notice in [
            Notice::Stored("p:v1:{c}:anon:111".into()),
            Notice::Released("p:v1:{c}:anon:111".into()),
            Notice::Purge("conv_1".into()),
            Notice::PurgeAll,
            Notice::BudgetPaused {
                credential: "anon".into(),
                left_ms: 2000,
            },
        ] {
            assert_eq!(Notice::decode(&notice.encode()), Some(notice));
        }
        assert_eq!(Notice::decode("hello"), None);
        assert_eq!(Notice::decode("evict x"), None);
        assert_eq!(Notice::decode("budget-paused anon soon"), None);
        assert_eq!(Notice::decode("budget-paused anon"), None);
    }
}
