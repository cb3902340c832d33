//! `--log-format json`: runlet's log as Cloud Logging structured lines, one JSON object a
//! line (`severity`, `message`, `time`, labels), the way Cloud Run's logging agent reads a
//! container's output. Per-request lines carry the request's trace
//! (`logging.googleapis.com/trace` as `projects/P/traces/T`, from `X-Cloud-Trace-Context`
//! or `traceparent`) and an `httpRequest`. A container's output line that is itself a JSON
//! object is passed through as the entry's payload, as Cloud Run does: its `severity` sets
//! the level, its `message` the text, its other fields (`logging.googleapis.com/trace`,
//! `spanId`, ...) are kept.
//!
//! The decisions ([`entry`], [`trace_context`]) are plain functions; [`CloudJson`] and
//! [`SpanFields`] plug them into `tracing-subscriber`.

use std::fmt;
use std::sync::OnceLock;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The target of container output lines (`control::service::instance`'s and the job
/// engine's sinks log under it).
pub const CONTAINER_TARGET: &str = "runlet::container";

/// The fields a per-request log line may carry, which [`entry`] turns into Cloud
/// Logging's special fields.
pub mod fields {
    /// The request's trace id (32 hex digits).
    pub const TRACE: &str = "trace";
    /// The request's span id, as the client sent it.
    pub const SPAN_ID: &str = "span_id";
    pub const METHOD: &str = "method";
    pub const PATH: &str = "path";
    pub const STATUS: &str = "status";
    pub const PEER: &str = "peer";
}

/// The format of runlet's own log (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// Cloud Logging structured JSON, one entry a line.
    Json,
}

static PROJECT: OnceLock<String> = OnceLock::new();

/// The project traces are named in (`projects/P/traces/T`): `--project` of the command,
/// `runlet-local` until one is set. The first call wins.
pub fn set_project(project: &str) {
    let _ = PROJECT.set(project.to_string());
}

fn project() -> &'static str {
    PROJECT.get().map_or("runlet-local", String::as_str)
}

/// The trace of a request: its trace id and span id, from `X-Cloud-Trace-Context`
/// (`TRACE/SPAN;o=1`, what Cloud Run's front end sets) or else W3C `traceparent`
/// (`00-TRACE-SPAN-FLAGS`). A malformed or all-zero trace id is none.
pub fn trace_context(
    cloud: Option<&[u8]>,
    traceparent: Option<&[u8]>,
) -> Option<(String, Option<String>)> {
    fn hex(s: &str, len: usize) -> bool {
        s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit()) && s.bytes().any(|b| b != b'0')
    }
    if let Some(v) = cloud.and_then(|v| std::str::from_utf8(v).ok()) {
        let v = v.trim();
        let (trace, rest) = v.split_once('/').unwrap_or((v, ""));
        if hex(trace, 32) {
            let span = rest.split(';').next().unwrap_or_default();
            let span = (!span.is_empty() && span.bytes().all(|b| b.is_ascii_digit()))
                .then(|| span.to_string());
            return Some((trace.to_ascii_lowercase(), span));
        }
    }
    let v = std::str::from_utf8(traceparent?).ok()?.trim();
    let parts: Vec<&str> = v.split('-').collect();
    match parts.as_slice() {
        [version, trace, span, _flags, ..] if hex(version, 2) || *version == "00" => {
            (hex(trace, 32) && hex(span, 16))
                .then(|| (trace.to_ascii_lowercase(), Some(span.to_ascii_lowercase())))
        }
        _ => None,
    }
}

/// Cloud Logging's severity for a tracing level.
pub fn severity(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        _ => "DEBUG",
    }
}

/// One log event, as [`entry`] takes it.
#[derive(Debug, Clone, Default)]
pub struct Parts {
    pub severity: &'static str,
    pub target: String,
    /// The event's fields, `message` among them.
    pub fields: Map<String, Value>,
    /// The fields of the spans it happened in, outermost first.
    pub spans: Map<String, Value>,
}

/// The Cloud Logging entry for one event at `time` (RFC 3339), traces named in `project`.
pub fn entry(parts: Parts, time: &str, project: &str) -> Map<String, Value> {
    let Parts {
        severity,
        target,
        mut fields,
        spans,
    } = parts;
    let mut out = Map::new();
    out.insert("severity".into(), severity.into());
    let message = match fields.remove("message") {
        Some(Value::String(s)) => s,
        Some(v) => v.to_string(),
        None => String::new(),
    };
    if target == CONTAINER_TARGET {
        let stream = fields.get("stream").and_then(Value::as_str).unwrap_or("");
        match serde_json::from_str::<Value>(&message) {
            // The container's own structured entry: its fields as the payload.
            Ok(Value::Object(payload)) => {
                out.insert("severity".into(), "DEFAULT".into());
                for (k, v) in payload {
                    match (k.as_str(), v) {
                        ("severity", Value::String(s)) => {
                            out.insert(k, s.to_ascii_uppercase().into());
                        }
                        (_, v) => {
                            out.insert(k, v);
                        }
                    }
                }
                out.entry("message").or_insert_with(|| "".into());
            }
            // A plain line: Cloud Run gives stderr ERROR, stdout no severity (DEFAULT).
            _ => {
                let sev = if stream == "stderr" {
                    "ERROR"
                } else {
                    "DEFAULT"
                };
                out.insert("severity".into(), sev.into());
                out.insert("message".into(), message.into());
            }
        }
    } else {
        out.insert("message".into(), message.into());
    }
    out.insert("time".into(), time.into());

    let trace = fields.remove(fields::TRACE);
    let span_id = fields.remove(fields::SPAN_ID);
    if let Some(Value::String(t)) = trace {
        out.entry("logging.googleapis.com/trace")
            .or_insert_with(|| format!("projects/{project}/traces/{t}").into());
        if let Some(Value::String(s)) = span_id {
            out.entry("logging.googleapis.com/spanId")
                .or_insert_with(|| s.into());
        }
    }
    if let Some(Value::String(method)) = fields.get(fields::METHOD).cloned() {
        let mut req = Map::new();
        req.insert("requestMethod".into(), method.into());
        if let Some(p) = fields.remove(fields::PATH) {
            req.insert("requestUrl".into(), p);
        }
        if let Some(s) = fields.remove(fields::STATUS) {
            req.insert("status".into(), s);
        }
        if let Some(p) = fields.remove(fields::PEER) {
            req.insert("remoteIp".into(), p);
        }
        fields.remove(fields::METHOD);
        out.insert("httpRequest".into(), Value::Object(req));
    }

    let mut labels = Map::new();
    for (k, v) in spans.into_iter().chain(fields) {
        let v = match v {
            Value::String(s) => s,
            v => v.to_string(),
        };
        labels.insert(k, v.into());
    }
    if !labels.is_empty() {
        out.insert(
            "logging.googleapis.com/labels".into(),
            Value::Object(labels),
        );
    }
    out
}

/// Collects an event's or a span's fields as JSON values.
#[derive(Default)]
struct Collect(Map<String, Value>);

impl Visit for Collect {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
}

/// Spans' fields kept as a JSON object (what [`CloudJson`] reads back).
#[derive(Debug, Default, Clone, Copy)]
pub struct SpanFields;

impl<'w> FormatFields<'w> for SpanFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        mut writer: Writer<'w>,
        fields: R,
    ) -> fmt::Result {
        let mut c = Collect::default();
        fields.record(&mut c);
        write!(writer, "{}", Value::Object(c.0))
    }

    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let mut c = Collect(serde_json::from_str(&current.fields).unwrap_or_default());
        fields.record(&mut c);
        current.fields = Value::Object(c.0).to_string();
        Ok(())
    }
}

/// The JSON event formatter: one [`entry`] a line.
#[derive(Debug, Default, Clone, Copy)]
pub struct CloudJson;

impl<S> FormatEvent<S, SpanFields> for CloudJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, SpanFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut c = Collect::default();
        event.record(&mut c);
        let mut spans = Map::new();
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let ext = span.extensions();
                if let Some(f) = ext.get::<FormattedFields<SpanFields>>() {
                    if let Ok(Value::Object(m)) = serde_json::from_str(&f.fields) {
                        spans.extend(m);
                    }
                }
            }
        }
        let parts = Parts {
            severity: severity(event.metadata().level()),
            target: event.metadata().target().to_string(),
            fields: c.0,
            spans,
        };
        let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        writeln!(writer, "{}", Value::Object(entry(parts, &time, project())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn trace_from_either_header() {
        let t = "105445aa7843bc8bf206b12000100000";
        /// (X-Cloud-Trace-Context, traceparent, the trace and span wanted)
        type Row<'a> = (
            Option<&'a str>,
            Option<&'a str>,
            Option<(&'a str, Option<&'a str>)>,
        );
        let table: &[Row] = &[
            (Some(&format!("{t}/1;o=1")), None, Some((t, Some("1")))),
            (Some(t), None, Some((t, None))),
            (
                Some("105445AA7843BC8BF206B12000100000/99"),
                None,
                Some((t, Some("99"))),
            ),
            (Some("nothex/1"), None, None),
            (Some("00000000000000000000000000000000/1"), None, None),
            (
                None,
                Some(&format!("00-{t}-00f067aa0ba902b7-01")),
                Some((t, Some("00f067aa0ba902b7"))),
            ),
            (None, Some(&format!("00-{t}-short-01")), None),
            (None, Some("garbage"), None),
            // X-Cloud-Trace-Context wins when both are valid; a bad one falls back.
            (
                Some(&format!("{t}/7")),
                Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
                Some((t, Some("7"))),
            ),
            (
                Some("bad"),
                Some(&format!("00-{t}-00f067aa0ba902b7-01")),
                Some((t, Some("00f067aa0ba902b7"))),
            ),
            (None, None, None),
        ];
        for (cloud, parent, want) in table {
            let got = trace_context(cloud.map(str::as_bytes), parent.map(str::as_bytes));
            let want = want.map(|(t, s)| (t.to_string(), s.map(str::to_string)));
            assert_eq!(got, want, "{cloud:?} {parent:?}");
        }
    }

    fn parts(target: &str, fields: Value) -> Parts {
        Parts {
            severity: "INFO",
            target: target.into(),
            fields: obj(fields),
            spans: obj(json!({"service": "hello"})),
        }
    }

    #[test]
    fn runlet_lines_get_severity_time_labels() {
        let e = entry(
            Parts {
                severity: "WARNING",
                ..parts(
                    "runlet::control",
                    json!({"message": "instance exited", "instance": "i-1"}),
                )
            },
            "2026-12-03T12:00:00.000000Z",
            "p",
        );
        assert_eq!(
            Value::Object(e),
            json!({
                "severity": "WARNING",
                "message": "instance exited",
                "time": "2026-12-03T12:00:00.000000Z",
                "logging.googleapis.com/labels": {"service": "hello", "instance": "i-1"},
            })
        );
    }

    #[test]
    fn request_lines_get_the_trace_and_http_request() {
        let e = entry(
            parts(
                "runlet::ingress",
                json!({"message": "refused: the request timed out", "trace": "abc", "span_id": "12",
                       "method": "GET", "path": "/x", "status": 504, "reason": "timeout"}),
            ),
            "t",
            "my-project",
        );
        assert_eq!(
            e["logging.googleapis.com/trace"],
            "projects/my-project/traces/abc"
        );
        assert_eq!(e["logging.googleapis.com/spanId"], "12");
        assert_eq!(
            e["httpRequest"],
            json!({"requestMethod": "GET", "requestUrl": "/x", "status": 504})
        );
        assert_eq!(
            e["logging.googleapis.com/labels"],
            json!({"service": "hello", "reason": "timeout"})
        );
    }

    #[test]
    fn a_container_json_line_is_the_payload() {
        let line = r#"{"severity":"warning","message":"disk low","logging.googleapis.com/trace":"projects/p/traces/t","free":12}"#;
        let e = entry(
            parts(
                CONTAINER_TARGET,
                json!({"message": line, "stream": "stdout", "instance": "i"}),
            ),
            "t",
            "p",
        );
        assert_eq!(e["severity"], "WARNING");
        assert_eq!(e["message"], "disk low");
        assert_eq!(e["logging.googleapis.com/trace"], "projects/p/traces/t");
        assert_eq!(e["free"], 12);
        assert_eq!(e["logging.googleapis.com/labels"]["instance"], "i");
        assert_eq!(e["logging.googleapis.com/labels"]["stream"], "stdout");
    }

    #[test]
    fn a_container_json_line_without_severity_is_default() {
        let e = entry(
            parts(
                CONTAINER_TARGET,
                json!({"message": r#"{"msg":"x"}"#, "stream": "stdout"}),
            ),
            "t",
            "p",
        );
        assert_eq!(e["severity"], "DEFAULT");
        assert_eq!(e["msg"], "x");
        assert_eq!(e["message"], "");
    }

    #[test]
    fn plain_container_lines_keep_their_text_and_stderr_is_error() {
        for (stream, sev) in [("stdout", "DEFAULT"), ("stderr", "ERROR")] {
            for line in ["plain text", "[1, 2]", "{not json"] {
                let e = entry(
                    parts(CONTAINER_TARGET, json!({"message": line, "stream": stream})),
                    "t",
                    "p",
                );
                assert_eq!(e["severity"], sev, "{line}");
                assert_eq!(e["message"], line);
            }
        }
    }
}
