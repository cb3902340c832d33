//! `google.protobuf.Timestamp` with proto3's JSON mapping: RFC 3339, Z-normalized, with 0, 3,
//! 6 or 9 fractional digits (`"2024-05-01T12:00:00Z"`, `"2024-05-01T12:00:00.500Z"`), as
//! Google's servers write it; any RFC 3339 offset is read. pbjson-types writes `+00:00`
//! instead of `Z`, so `build.rs` maps `.google.protobuf.Timestamp` here.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

/// A point in time, in seconds and nanoseconds since the Unix epoch (UTC).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Message)]
pub struct Timestamp {
    /// Seconds since 1970-01-01T00:00:00Z; 0001-01-01 to 9999-12-31 in JSON.
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    /// Non-negative fractions of a second, 0 to 999,999,999.
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

impl prost::Name for Timestamp {
    const NAME: &'static str = "Timestamp";
    const PACKAGE: &'static str = "google.protobuf";

    fn type_url() -> String {
        "type.googleapis.com/google.protobuf.Timestamp".to_owned()
    }
}

impl From<SystemTime> for Timestamp {
    fn from(time: SystemTime) -> Timestamp {
        match time.duration_since(UNIX_EPOCH) {
            Ok(after) => Timestamp {
                seconds: i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
                nanos: after.subsec_nanos() as i32,
            },
            Err(before) => {
                let before = before.duration();
                let seconds = -i64::try_from(before.as_secs()).unwrap_or(i64::MAX);
                match before.subsec_nanos() {
                    0 => Timestamp { seconds, nanos: 0 },
                    n => Timestamp {
                        seconds: seconds - 1,
                        nanos: 1_000_000_000 - n as i32,
                    },
                }
            }
        }
    }
}

impl TryFrom<Timestamp> for SystemTime {
    type Error = TimestampError;

    fn try_from(t: Timestamp) -> Result<SystemTime, TimestampError> {
        let nanos = u32::try_from(t.nanos)
            .ok()
            .filter(|n| *n < 1_000_000_000)
            .ok_or(TimestampError::OutOfRange(t))?;
        let time = if t.seconds >= 0 {
            UNIX_EPOCH.checked_add(Duration::new(t.seconds.unsigned_abs(), nanos))
        } else {
            UNIX_EPOCH
                .checked_sub(Duration::from_secs(t.seconds.unsigned_abs()))
                .and_then(|s| s.checked_add(Duration::from_nanos(u64::from(nanos))))
        };
        time.ok_or(TimestampError::OutOfRange(t))
    }
}

/// A timestamp JSON cannot hold or a string that is not one.
#[derive(Debug, thiserror::Error)]
pub enum TimestampError {
    #[error("timestamp {}s {}ns is out of range", .0.seconds, .0.nanos)]
    OutOfRange(Timestamp),
    #[error("{text:?} is not an RFC 3339 timestamp")]
    Parse {
        text: String,
        #[source]
        source: chrono::ParseError,
    },
}

/// Years 0001 to 9999, the range proto3's JSON mapping allows.
const MIN_SECONDS: i64 = -62_135_596_800;
const MAX_SECONDS: i64 = 253_402_300_799;

impl Timestamp {
    /// The JSON form, e.g. `2024-05-01T12:00:00.500Z`.
    pub fn to_rfc3339(&self) -> Result<String, TimestampError> {
        let in_range = (MIN_SECONDS..=MAX_SECONDS).contains(&self.seconds)
            && (0..1_000_000_000).contains(&self.nanos);
        let nanos = u32::try_from(self.nanos).ok().filter(|_| in_range);
        let time = nanos.and_then(|n| DateTime::<Utc>::from_timestamp(self.seconds, n));
        time.map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
            .ok_or(TimestampError::OutOfRange(*self))
    }

    /// Reads RFC 3339 with any offset.
    pub fn parse_rfc3339(text: &str) -> Result<Timestamp, TimestampError> {
        let time = DateTime::parse_from_rfc3339(text).map_err(|source| TimestampError::Parse {
            text: text.to_owned(),
            source,
        })?;
        let t = Timestamp {
            seconds: time.timestamp(),
            nanos: time.timestamp_subsec_nanos() as i32,
        };
        if (MIN_SECONDS..=MAX_SECONDS).contains(&t.seconds) {
            Ok(t)
        } else {
            Err(TimestampError::OutOfRange(t))
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let text = self.to_rfc3339().map_err(serde::ser::Error::custom)?;
        serializer.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Timestamp::parse_rfc3339(&text).map_err(|e| match &e {
            TimestampError::Parse { source, .. } => {
                serde::de::Error::custom(format!("{e}: {source}"))
            }
            TimestampError::OutOfRange(_) => serde::de::Error::custom(e),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(seconds: i64, nanos: i32) -> Timestamp {
        Timestamp { seconds, nanos }
    }

    #[test]
    fn json_is_z_normalized_with_0_3_6_or_9_digits() {
        let cases = [
            (ts(0, 0), "1970-01-01T00:00:00Z"),
            (ts(1_714_564_800, 0), "2024-05-01T12:00:00Z"),
            (ts(1_714_564_800, 500_000_000), "2024-05-01T12:00:00.500Z"),
            (ts(1_714_564_800, 1_000), "2024-05-01T12:00:00.000001Z"),
            (ts(1_714_564_800, 1), "2024-05-01T12:00:00.000000001Z"),
            (ts(-1, 0), "1969-12-31T23:59:59Z"),
            (ts(MIN_SECONDS, 0), "0001-01-01T00:00:00Z"),
            (
                ts(MAX_SECONDS, 999_999_999),
                "9999-12-31T23:59:59.999999999Z",
            ),
        ];
        for (t, text) in cases {
            assert_eq!(
                serde_json::to_value(t).expect("renders"),
                serde_json::json!(text)
            );
            let back: Timestamp = serde_json::from_value(serde_json::json!(text)).expect("parses");
            assert_eq!(back, t, "{text}");
        }
    }

    #[test]
    fn offsets_are_read_and_bad_input_refused() {
        let t = Timestamp::parse_rfc3339("2024-05-01T14:00:00+02:00").expect("parses");
        assert_eq!(t, ts(1_714_564_800, 0));
        for bad in [
            "2024-05-01",
            "2024-05-01T12:00:00",
            "yesterday",
            "10000-01-01T00:00:00Z",
        ] {
            assert!(Timestamp::parse_rfc3339(bad).is_err(), "{bad}");
        }
        for bad in [
            ts(MAX_SECONDS + 1, 0),
            ts(MIN_SECONDS - 1, 0),
            ts(0, -1),
            ts(0, 1_000_000_000),
        ] {
            assert!(serde_json::to_value(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn system_time_converts_both_ways() {
        let cases = [
            ts(0, 0),
            ts(1_714_564_800, 500),
            ts(-1, 999_999_999),
            ts(-10, 0),
        ];
        for t in cases {
            let time = SystemTime::try_from(t).expect("in range");
            assert_eq!(Timestamp::from(time), t);
        }
        assert!(SystemTime::try_from(ts(0, -5)).is_err());
    }
}
