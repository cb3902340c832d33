//! Enum values as numbers in proto3 JSON, for REST requests that say
//! `$alt=json;enum-encoding=int` (Google's generated Python and Java REST clients send it on
//! every call). pbjson chooses names or numbers when the code is generated, not per call, so
//! this rewrites the JSON it produced: it walks the value beside the message's descriptor
//! (from [`FILE_DESCRIPTOR_SET`]) and turns every enum name into its number, through nested
//! messages, repeated fields, maps and `Any` (by `"@type"`). Parsing needs nothing: pbjson
//! reads names and numbers alike.

use std::collections::HashMap;
use std::sync::OnceLock;

use prost::Message;
use prost_types::field_descriptor_proto::Type;
use prost_types::{DescriptorProto, FileDescriptorSet};
use serde_json::Value;

use super::FILE_DESCRIPTOR_SET;

/// Why enum names could not be rewritten.
#[derive(Debug, thiserror::Error)]
pub enum EnumNumbersError {
    /// The message is not in runlet's API (full names have no leading dot).
    #[error("no message {0:?} in runlet's API")]
    UnknownMessage(String),
    /// The compiled descriptors did not decode (a build problem).
    #[error("decoding the compiled descriptors")]
    Descriptors(#[source] prost::DecodeError),
}

/// Rewrites, in place, every enum name in `json` (the proto3 JSON of a `message`, e.g.
/// `google.cloud.run.v2.Service`) into its number. Names it does not know stay as they are.
pub fn enums_to_numbers(json: &mut Value, message: &str) -> Result<(), EnumNumbersError> {
    let index = index()?;
    if !index.messages.contains_key(message) {
        return Err(EnumNumbersError::UnknownMessage(message.to_owned()));
    }
    index.rewrite_message(json, message);
    Ok(())
}

/// A message's proto3 JSON with enums as numbers.
pub fn to_json_with_enum_numbers<M>(message: &M) -> Result<Value, serde_json::Error>
where
    M: serde::Serialize + prost::Name,
{
    let mut json = serde_json::to_value(message)?;
    enums_to_numbers(&mut json, &M::full_name()).map_err(serde::ser::Error::custom)?;
    Ok(json)
}

/// What a field holds, as far as enums are concerned.
#[derive(Debug, Clone)]
enum Kind {
    /// An enum, by full name.
    Enum(String),
    /// A message, by full name (maps are messages with `map_entry`).
    Message(String),
    /// Anything else (strings, numbers, bytes, bools).
    Scalar,
}

#[derive(Debug, Default)]
struct MessageInfo {
    /// By JSON name and by proto name.
    fields: HashMap<String, Kind>,
    /// For map entries: the kind of the `value` field.
    map_value: Option<Kind>,
}

#[derive(Debug, Default)]
struct Index {
    messages: HashMap<String, MessageInfo>,
    /// Enum full name -> value name -> number.
    enums: HashMap<String, HashMap<String, i32>>,
}

fn index() -> Result<&'static Index, EnumNumbersError> {
    static INDEX: OnceLock<Index> = OnceLock::new();
    if let Some(index) = INDEX.get() {
        return Ok(index);
    }
    let set =
        FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).map_err(EnumNumbersError::Descriptors)?;
    Ok(INDEX.get_or_init(|| Index::build(&set)))
}

impl Index {
    fn build(set: &FileDescriptorSet) -> Index {
        let mut index = Index::default();
        for file in &set.file {
            let package = file.package();
            for message in &file.message_type {
                index.add_message(package, message);
            }
            for e in &file.enum_type {
                index.add_enum(package, e);
            }
        }
        index
    }

    fn add_enum(&mut self, scope: &str, e: &prost_types::EnumDescriptorProto) {
        let values = e
            .value
            .iter()
            .map(|v| (v.name().to_owned(), v.number()))
            .collect();
        self.enums.insert(format!("{scope}.{}", e.name()), values);
    }

    fn add_message(&mut self, scope: &str, message: &DescriptorProto) {
        let name = format!("{scope}.{}", message.name());
        let mut info = MessageInfo::default();
        for field in &message.field {
            let type_name = field.type_name().trim_start_matches('.').to_owned();
            let kind = match field.r#type() {
                Type::Enum => Kind::Enum(type_name),
                Type::Message | Type::Group => Kind::Message(type_name),
                _ => Kind::Scalar,
            };
            if message.options.as_ref().is_some_and(|o| o.map_entry()) && field.name() == "value" {
                info.map_value = Some(kind.clone());
            }
            info.fields
                .insert(field.json_name().to_owned(), kind.clone());
            info.fields.insert(field.name().to_owned(), kind);
        }
        for nested in &message.nested_type {
            self.add_message(&name, nested);
        }
        for e in &message.enum_type {
            self.add_enum(&name, e);
        }
        self.messages.insert(name, info);
    }

    fn rewrite_message(&self, json: &mut Value, message: &str) {
        let Value::Object(object) = json else {
            return; // well-known types with a string form (Timestamp, Duration, FieldMask)
        };
        if message == "google.protobuf.Any" {
            let name = match object.get("@type") {
                Some(Value::String(url)) => url.rsplit('/').next().unwrap_or("").to_owned(),
                _ => return,
            };
            if self.messages.contains_key(&name) {
                self.rewrite_message(json, &name);
            }
            return;
        }
        let Some(info) = self.messages.get(message) else {
            return;
        };
        for (key, value) in object.iter_mut() {
            let Some(kind) = info.fields.get(key) else {
                continue; // "@type", or a field this side does not know
            };
            self.rewrite_field(value, kind);
        }
    }

    fn rewrite_field(&self, value: &mut Value, kind: &Kind) {
        match value {
            Value::Array(items) => {
                for item in items {
                    self.rewrite_single(item, kind);
                }
            }
            _ => self.rewrite_single(value, kind),
        }
    }

    fn rewrite_single(&self, value: &mut Value, kind: &Kind) {
        match kind {
            Kind::Scalar => {}
            Kind::Enum(name) => {
                let number = match value {
                    Value::String(text) => self.enums.get(name).and_then(|v| v.get(text.as_str())),
                    _ => None,
                };
                if let Some(number) = number {
                    *value = Value::from(*number);
                }
            }
            Kind::Message(name) => match self.messages.get(name).and_then(|m| m.map_value.as_ref())
            {
                Some(map_value) => {
                    if let Value::Object(entries) = value {
                        for entry in entries.values_mut() {
                            self.rewrite_single(entry, map_value);
                        }
                    }
                }
                None => self.rewrite_message(value, name),
            },
        }
    }
}
