//! The file a task reads its message from (`RUNLET_PUBSUB_MESSAGE_FILE`): JSON on one line,
//! `{"subscription","messageId","data","attributes","publishTime","deliveryAttempt"}`, with
//! `data` base64 as Pub/Sub delivers it (as in a push subscription's body), so any payload,
//! binary included, arrives unchanged.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde::Serialize;

use super::client::ReceivedMessage;

/// The variable holding the file's path in the container.
pub const ENV: &str = "RUNLET_PUBSUB_MESSAGE_FILE";
/// Where the file is in the container (bind-mounted read-only).
pub const PATH: &str = "/run/runlet/pubsub/message.json";

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct MessageFile<'a> {
    subscription: &'a str,
    message_id: &'a str,
    data: &'a str,
    attributes: &'a BTreeMap<String, String>,
    publish_time: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    delivery_attempt: Option<u32>,
}

/// The file's content for message `m` pulled from `subscription`.
pub fn render(subscription: &str, m: &ReceivedMessage) -> Vec<u8> {
    let f = MessageFile {
        subscription,
        message_id: &m.message.message_id,
        data: &m.message.data,
        attributes: &m.message.attributes,
        publish_time: &m.message.publish_time,
        delivery_attempt: m.delivery_attempt,
    };
    // Serializing strings and maps cannot fail.
    serde_json::to_vec(&f).unwrap_or_default()
}

/// Writes `dir/<i>.json` for each message `i` of a batch (readable by the task's user,
/// whatever its uid; the state dir above is the daemon's alone).
pub fn write_all(dir: &Path, subscription: &str, batch: &[ReceivedMessage]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (i, m) in batch.iter().enumerate() {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(dir.join(format!("{i}.json")))?;
        f.write_all(&render(subscription, m))?;
        f.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pubsub::client::PubsubMessage;

    #[test]
    fn the_file_keeps_the_message_as_pubsub_sent_it() {
        let m = ReceivedMessage {
            ack_id: "secret-ack".into(),
            message: PubsubMessage {
                data: "aGVsbG8=".into(),
                attributes: [("k".to_string(), "v".to_string())].into(),
                message_id: "42".into(),
                publish_time: "2026-12-03T05:37:56.102Z".into(),
            },
            delivery_attempt: Some(2),
        };
        let v: serde_json::Value =
            serde_json::from_slice(&render("projects/p/subscriptions/s", &m)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "subscription": "projects/p/subscriptions/s",
                "messageId": "42",
                "data": "aGVsbG8=",
                "attributes": {"k": "v"},
                "publishTime": "2026-12-03T05:37:56.102Z",
                "deliveryAttempt": 2
            }),
            "no ack id: the task cannot ack behind the daemon's back"
        );
        let dir = tempfile::tempdir().unwrap();
        write_all(
            &dir.path().join("e"),
            "projects/p/subscriptions/s",
            &[m.clone(), m],
        )
        .unwrap();
        assert!(dir.path().join("e/0.json").is_file() && dir.path().join("e/1.json").is_file());
    }
}
