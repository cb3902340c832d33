//! `google.protobuf.Any` with proto3's JSON mapping: `{"@type": "type.googleapis.com/<full
//! name>", ...the message's own JSON fields}`. Operations carry their metadata and result this
//! way, and Google's clients parse them by `@type`. pbjson-types' `Any` renders
//! `{"typeUrl", "value"}` instead, so `build.rs` maps `.google.protobuf.Any` here.
//!
//! JSON needs the message type, so only the types listed in [`KNOWN_TYPES`] can cross JSON
//! (the resources an Operation carries, and `Empty`); any other `Any` still round-trips
//! through protobuf bytes, but refuses to become JSON.

use prost::Message;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::longrunning::Operation;
use super::run_v2;

/// Google's type URL prefix, which prost's `Name::type_url` also uses (see `build.rs`).
pub const TYPE_URL_PREFIX: &str = "type.googleapis.com/";

/// Full names of the messages an `Any` can carry in JSON.
pub const KNOWN_TYPES: &[&str] = &[
    "google.cloud.run.v2.Service",
    "google.cloud.run.v2.Revision",
    "google.cloud.run.v2.Job",
    "google.cloud.run.v2.Execution",
    "google.protobuf.Empty",
];

/// A message of any type, as its type URL and its encoded bytes (`google.protobuf.Any`).
#[derive(Clone, PartialEq, Eq, Hash, Message)]
pub struct Any {
    /// `type.googleapis.com/<full message name>`.
    #[prost(string, tag = "1")]
    pub type_url: String,
    /// The message, protobuf-encoded.
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

impl prost::Name for Any {
    const NAME: &'static str = "Any";
    const PACKAGE: &'static str = "google.protobuf";

    fn type_url() -> String {
        format!("{TYPE_URL_PREFIX}google.protobuf.Any")
    }
}

/// Why an `Any` could not be packed, unpacked or mapped to or from JSON.
#[derive(Debug, thiserror::Error)]
pub enum AnyError {
    /// The type is not one [`KNOWN_TYPES`] names, so its JSON form is unknown.
    #[error("no JSON mapping for an Any holding {type_url:?}")]
    UnknownType { type_url: String },
    /// `unpack` asked for one type, the `Any` holds another.
    #[error("the Any holds {found:?}, not {wanted:?}")]
    WrongType { wanted: String, found: String },
    /// The bytes are not a valid message of the named type.
    #[error("decoding the {type_url:?} in an Any")]
    Decode {
        type_url: String,
        #[source]
        source: prost::DecodeError,
    },
    /// The JSON fields do not fit the named type (or an Operation would not serialize).
    #[error("the JSON of {type_url:?}")]
    Json {
        type_url: String,
        #[source]
        source: serde_json::Error,
    },
    /// A JSON `Any` must be an object with a string `"@type"`.
    #[error("an Any in JSON is an object with a string \"@type\"")]
    MissingType,
}

impl Any {
    /// Packs a message: `type_url` is `type.googleapis.com/<full name>`, `value` its bytes.
    pub fn pack<M: Message + prost::Name>(message: &M) -> Any {
        Any {
            type_url: M::type_url(),
            value: message.encode_to_vec(),
        }
    }

    /// Unpacks the message, if this `Any` holds an `M`.
    pub fn unpack<M: Message + prost::Name + Default>(&self) -> Result<M, AnyError> {
        if self.type_url != M::type_url() {
            return Err(AnyError::WrongType {
                wanted: M::type_url(),
                found: self.type_url.clone(),
            });
        }
        M::decode(self.value.as_slice()).map_err(|source| AnyError::Decode {
            type_url: self.type_url.clone(),
            source,
        })
    }

    /// The full message name in the type URL (what follows the last `/`).
    pub fn full_name(&self) -> &str {
        self.type_url
            .rsplit_once('/')
            .map_or(self.type_url.as_str(), |(_, name)| name)
    }

    /// The proto3 JSON form: the message's own JSON object plus `"@type"`; `{}` for an
    /// empty `Any`.
    pub fn to_json(&self) -> Result<Value, AnyError> {
        if self.type_url.is_empty() && self.value.is_empty() {
            return Ok(Value::Object(Map::new()));
        }
        let fields = match self.full_name() {
            "google.cloud.run.v2.Service" => self.fields::<run_v2::Service>()?,
            "google.cloud.run.v2.Revision" => self.fields::<run_v2::Revision>()?,
            "google.cloud.run.v2.Job" => self.fields::<run_v2::Job>()?,
            "google.cloud.run.v2.Execution" => self.fields::<run_v2::Execution>()?,
            "google.protobuf.Empty" => self.fields::<pbjson_types::Empty>()?,
            _ => {
                return Err(AnyError::UnknownType {
                    type_url: self.type_url.clone(),
                })
            }
        };
        let mut object = Map::new();
        object.insert("@type".to_owned(), Value::String(self.type_url.clone()));
        object.extend(fields);
        Ok(Value::Object(object))
    }

    /// Reads the proto3 JSON form (see [`Any::to_json`]).
    pub fn from_json(json: Value) -> Result<Any, AnyError> {
        let Value::Object(mut object) = json else {
            return Err(AnyError::MissingType);
        };
        let type_url = match object.remove("@type") {
            Some(Value::String(url)) => url,
            None if object.is_empty() => return Ok(Any::default()),
            _ => return Err(AnyError::MissingType),
        };
        let name = type_url.rsplit_once('/').map_or("", |(_, name)| name);
        let value = match name {
            "google.cloud.run.v2.Service" => encode::<run_v2::Service>(&type_url, object)?,
            "google.cloud.run.v2.Revision" => encode::<run_v2::Revision>(&type_url, object)?,
            "google.cloud.run.v2.Job" => encode::<run_v2::Job>(&type_url, object)?,
            "google.cloud.run.v2.Execution" => encode::<run_v2::Execution>(&type_url, object)?,
            "google.protobuf.Empty" => encode::<pbjson_types::Empty>(&type_url, object)?,
            _ => return Err(AnyError::UnknownType { type_url }),
        };
        Ok(Any { type_url, value })
    }

    /// Decodes the bytes as an `M` and returns its JSON fields.
    fn fields<M: Message + Default + Serialize>(&self) -> Result<Map<String, Value>, AnyError> {
        let message = M::decode(self.value.as_slice()).map_err(|source| AnyError::Decode {
            type_url: self.type_url.clone(),
            source,
        })?;
        match serde_json::to_value(&message) {
            Ok(Value::Object(fields)) => Ok(fields),
            Ok(_) => Ok(Map::new()),
            Err(source) => Err(AnyError::Json {
                type_url: self.type_url.clone(),
                source,
            }),
        }
    }
}

/// Reads JSON fields as an `M` and encodes it.
fn encode<M>(type_url: &str, fields: Map<String, Value>) -> Result<Vec<u8>, AnyError>
where
    M: Message + for<'de> Deserialize<'de>,
{
    serde_json::from_value::<M>(Value::Object(fields))
        .map(|message| message.encode_to_vec())
        .map_err(|source| AnyError::Json {
            type_url: type_url.to_owned(),
            source,
        })
}

/// An Operation as proto3 JSON, its metadata and result rendered by `@type`; fails if either
/// holds a type outside [`KNOWN_TYPES`] (so no half-rendered Operation leaves runlet).
pub fn operation_json(operation: &Operation) -> Result<Value, AnyError> {
    serde_json::to_value(operation).map_err(|source| AnyError::Json {
        type_url: format!("{TYPE_URL_PREFIX}google.longrunning.Operation"),
        source,
    })
}

/// The error and its causes on one line, for serde's single-message errors.
fn with_causes(error: &AnyError) -> String {
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(next) = cause {
        text.push_str(": ");
        text.push_str(&next.to_string());
        cause = next.source();
    }
    text
}

impl Serialize for Any {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_json()
            .map_err(|e| serde::ser::Error::custom(with_causes(&e)))?
            .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Any {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Any::from_json(Value::deserialize(deserializer)?)
            .map_err(|e| serde::de::Error::custom(with_causes(&e)))
    }
}
