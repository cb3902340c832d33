//! `google.protobuf.FieldMask` with proto3's JSON mapping: one string of comma-separated
//! paths in lowerCamelCase (`"template.containers,traffic"`), while the message holds them in
//! the proto's snake_case (`template.containers`, `traffic`). pbjson-types renders
//! `{"paths": [...]}` instead, so `build.rs` maps `.google.protobuf.FieldMask` here. REST
//! clients send it as a query parameter (`updateMask=...`), in the same JSON form.

use serde::{Deserialize, Serialize};

/// A set of field paths, in snake_case (`google.protobuf.FieldMask`).
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct FieldMask {
    /// Dotted paths of proto field names, e.g. `template.max_instance_request_concurrency`.
    #[prost(string, repeated, tag = "1")]
    pub paths: Vec<String>,
}

impl prost::Name for FieldMask {
    const NAME: &'static str = "FieldMask";
    const PACKAGE: &'static str = "google.protobuf";

    fn type_url() -> String {
        "type.googleapis.com/google.protobuf.FieldMask".to_owned()
    }
}

impl FieldMask {
    /// Reads the JSON form: comma-separated lowerCamelCase paths (snake_case passes too).
    pub fn from_json_str(text: &str) -> FieldMask {
        FieldMask {
            paths: text
                .split(',')
                .map(str::trim)
                .filter(|path| !path.is_empty())
                .map(snake_case)
                .collect(),
        }
    }

    /// The JSON form: paths in lowerCamelCase, joined by commas.
    pub fn to_json_string(&self) -> String {
        let camel: Vec<String> = self.paths.iter().map(|p| camel_case(p)).collect();
        camel.join(",")
    }
}

/// `max_instance_count` -> `maxInstanceCount`, each dotted part on its own.
fn camel_case(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut upper = false;
    for c in path.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// `maxInstanceCount` -> `max_instance_count`.
fn snake_case(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 4);
    for c in path.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

impl Serialize for FieldMask {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_json_string())
    }
}

impl<'de> Deserialize<'de> for FieldMask {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Ok(FieldMask::from_json_str(&text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_form_is_comma_separated_camel_case() {
        let cases: &[(&str, &[&str], &str)] = &[
            ("", &[], ""),
            ("traffic", &["traffic"], "traffic"),
            (
                "template.maxInstanceRequestConcurrency,traffic",
                &["template.max_instance_request_concurrency", "traffic"],
                "template.maxInstanceRequestConcurrency,traffic",
            ),
            // snake_case in is accepted and comes back out camelCase
            (
                "template.service_account, labels",
                &["template.service_account", "labels"],
                "template.serviceAccount,labels",
            ),
        ];
        for (text, paths, back) in cases {
            let mask = FieldMask::from_json_str(text);
            assert_eq!(mask.paths, *paths, "{text}");
            assert_eq!(mask.to_json_string(), *back, "{text}");
            let json = serde_json::to_value(&mask).expect("serializes");
            assert_eq!(json, serde_json::Value::String((*back).to_owned()));
            let again: FieldMask = serde_json::from_value(json).expect("parses");
            assert_eq!(again, mask);
        }
    }
}
