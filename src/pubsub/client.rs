//! The Pub/Sub REST API, the calls the trigger needs, over plain HTTP to the emulator named
//! by `PUBSUB_EMULATOR_HOST` (the variable Google's client libraries read).
//!
//! Written on the hyper client runlet already has rather than with a Pub/Sub crate: the
//! five calls are small JSON requests, and the crates that exist (`google-cloud-pubsub`)
//! bring gRPC, TLS and Google's auth stack into the daemon for an emulator that speaks
//! plain HTTP. Real Pub/Sub needs credentials runlet does not handle: without
//! `PUBSUB_EMULATOR_HOST` the binding is refused ([`PubsubError::NoEmulator`]).

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The variable naming the emulator (`HOST:PORT`).
pub const EMULATOR_ENV: &str = "PUBSUB_EMULATOR_HOST";

/// One call's limit: the emulator answers on loopback at once (pulls return immediately).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Error)]
pub enum PubsubError {
    #[error("{EMULATOR_ENV} is not set in the daemon's environment: runlet talks to Pub/Sub only through the emulator (real Pub/Sub needs credentials runlet does not handle)")]
    NoEmulator,
    #[error("{EMULATOR_ENV}={0:?} is not HOST:PORT")]
    BadEmulator(String),
    #[error("{op} {target}: {source}")]
    Http {
        op: &'static str,
        target: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{op} {target}: Pub/Sub answered {status}: {body}")]
    Status {
        op: &'static str,
        target: String,
        status: u16,
        body: String,
    },
    #[error("{op} {target}: unreadable answer: {source}")]
    Decode {
        op: &'static str,
        target: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{op} {target}: no answer within {} s", CALL_TIMEOUT.as_secs())]
    Timeout { op: &'static str, target: String },
}

/// A message as Pub/Sub's REST API has it (`data` base64, as on the wire).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PubsubMessage {
    #[serde(default)]
    pub data: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub publish_time: String,
}

/// A pulled message with its ack id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceivedMessage {
    pub ack_id: String,
    pub message: PubsubMessage,
    #[serde(default)]
    pub delivery_attempt: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PullResponse {
    #[serde(default)]
    received_messages: Vec<ReceivedMessage>,
}

/// What the trigger reads of a subscription.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub ack_deadline_seconds: u32,
    #[serde(default)]
    pub dead_letter_policy: Option<DeadLetterPolicy>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterPolicy {
    #[serde(default)]
    pub dead_letter_topic: String,
    #[serde(default)]
    pub max_delivery_attempts: u32,
}

/// A client of one emulator.
#[derive(Clone)]
pub struct PubsubClient {
    base: String,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl std::fmt::Debug for PubsubClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PubsubClient")
            .field("base", &self.base)
            .finish()
    }
}

impl PubsubClient {
    /// The client of the emulator `PUBSUB_EMULATOR_HOST` names.
    pub fn from_env() -> Result<PubsubClient, PubsubError> {
        match std::env::var(EMULATOR_ENV) {
            Ok(v) if !v.trim().is_empty() => PubsubClient::new(v.trim()),
            _ => Err(PubsubError::NoEmulator),
        }
    }

    /// The client of the emulator at `host_port`.
    pub fn new(host_port: &str) -> Result<PubsubClient, PubsubError> {
        let authority: http::uri::Authority = host_port
            .parse()
            .map_err(|_| PubsubError::BadEmulator(host_port.to_string()))?;
        if authority.port_u16().is_none() {
            return Err(PubsubError::BadEmulator(host_port.to_string()));
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Ok(PubsubClient {
            base: format!("http://{authority}/v1/"),
            http: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        op: &'static str,
        target: &str,
        method: http::Method,
        path: String,
        body: Option<serde_json::Value>,
    ) -> Result<T, PubsubError> {
        let err = |source: Box<dyn std::error::Error + Send + Sync>| PubsubError::Http {
            op,
            target: target.to_string(),
            source,
        };
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let req = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| err(e.into()))?;
        let exchange = async {
            let resp = self.http.request(req).await.map_err(|e| err(e.into()))?;
            let status = resp.status();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| err(e.into()))?
                .to_bytes();
            Ok::<_, PubsubError>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(CALL_TIMEOUT, exchange)
            .await
            .map_err(|_| PubsubError::Timeout {
                op,
                target: target.to_string(),
            })??;
        if !status.is_success() {
            return Err(PubsubError::Status {
                op,
                target: target.to_string(),
                status: status.as_u16(),
                body: String::from_utf8_lossy(&bytes)
                    .trim()
                    .chars()
                    .take(500)
                    .collect(),
            });
        }
        let bytes = if bytes.iter().all(u8::is_ascii_whitespace) {
            Bytes::from_static(b"{}")
        } else {
            bytes
        };
        serde_json::from_slice(&bytes).map_err(|source| PubsubError::Decode {
            op,
            target: target.to_string(),
            source,
        })
    }

    /// Up to `max` messages, at once: none when the subscription is empty.
    pub async fn pull(&self, sub: &str, max: u32) -> Result<Vec<ReceivedMessage>, PubsubError> {
        let r: PullResponse = self
            .call(
                "pulling from",
                sub,
                http::Method::POST,
                format!("{sub}:pull"),
                Some(serde_json::json!({"maxMessages": max, "returnImmediately": true})),
            )
            .await?;
        Ok(r.received_messages)
    }

    pub async fn acknowledge(&self, sub: &str, ack_ids: &[String]) -> Result<(), PubsubError> {
        if ack_ids.is_empty() {
            return Ok(());
        }
        let _: serde_json::Value = self
            .call(
                "acknowledging on",
                sub,
                http::Method::POST,
                format!("{sub}:acknowledge"),
                Some(serde_json::json!({ "ackIds": ack_ids })),
            )
            .await?;
        Ok(())
    }

    /// Sets the messages' ack deadline `seconds` from now (0: give them back at once).
    pub async fn modify_ack_deadline(
        &self,
        sub: &str,
        ack_ids: &[String],
        seconds: u32,
    ) -> Result<(), PubsubError> {
        if ack_ids.is_empty() {
            return Ok(());
        }
        let _: serde_json::Value = self
            .call(
                "extending the ack deadline on",
                sub,
                http::Method::POST,
                format!("{sub}:modifyAckDeadline"),
                Some(serde_json::json!({ "ackIds": ack_ids, "ackDeadlineSeconds": seconds })),
            )
            .await?;
        Ok(())
    }

    pub async fn subscription(&self, sub: &str) -> Result<Subscription, PubsubError> {
        self.call("reading", sub, http::Method::GET, sub.to_string(), None)
            .await
    }

    /// Publishes `messages` (their data and attributes) to `topic`.
    pub async fn publish(
        &self,
        topic: &str,
        messages: &[PubsubMessage],
    ) -> Result<(), PubsubError> {
        let messages: Vec<serde_json::Value> = messages
            .iter()
            .map(|m| serde_json::json!({"data": m.data, "attributes": m.attributes}))
            .collect();
        let _: serde_json::Value = self
            .call(
                "publishing to",
                topic,
                http::Method::POST,
                format!("{topic}:publish"),
                Some(serde_json::json!({ "messages": messages })),
            )
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emulator_addresses() {
        assert!(PubsubClient::new("127.0.0.1:8085").is_ok());
        assert!(PubsubClient::new("localhost:8085").is_ok());
        assert!(matches!(
            PubsubClient::new("localhost"),
            Err(PubsubError::BadEmulator(_))
        ));
        assert!(matches!(
            PubsubClient::new("http://x:1/"),
            Err(PubsubError::BadEmulator(_))
        ));
    }

    #[test]
    fn a_pull_answer_as_the_emulator_writes_it() {
        let r: PullResponse = serde_json::from_str(
            r#"{"receivedMessages":[{"ackId":"projects/test/subscriptions/sub1:1","message":{"data":"aGVsbG8=","attributes":{"a":"b"},"messageId":"1","publishTime":"2026-12-03T05:37:56.102Z"},"deliveryAttempt":1}]}"#,
        )
        .unwrap();
        let m = &r.received_messages[0];
        assert_eq!(m.ack_id, "projects/test/subscriptions/sub1:1");
        assert_eq!(m.message.data, "aGVsbG8=");
        assert_eq!(m.message.attributes["a"], "b");
        assert_eq!(m.delivery_attempt, Some(1));
        let empty: PullResponse = serde_json::from_str("{}").unwrap();
        assert!(empty.received_messages.is_empty());
        let s: Subscription = serde_json::from_str(r#"{"name":"projects/test/subscriptions/sub1","topic":"projects/test/topics/topic1","pushConfig":{},"ackDeadlineSeconds":10,"deadLetterPolicy":{"deadLetterTopic":"projects/test/topics/deadl","maxDeliveryAttempts":5}}"#).unwrap();
        assert_eq!(
            s.dead_letter_policy.unwrap().dead_letter_topic,
            "projects/test/topics/deadl"
        );
    }
}
