//! What the daemon's client commands print, as plain functions of the resources (tested with
//! tables): the deploy progress ([`progress`]), the list tables ([`tables`]) and the service
//! summary ([`describe`]); here, what they share: readiness marks, times, short names.

pub mod describe;
pub mod jobs;
pub mod progress;
pub mod tables;

use runlet::pb::run_v2::{self as v2, condition::State};
use runlet::pb::timestamp::Timestamp;

/// A resource's readiness, from its `Ready` condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    Failed,
    /// Being deployed, or not known yet.
    Pending,
}

impl Readiness {
    /// gcloud's marks in lists.
    pub fn mark(self) -> &'static str {
        match self {
            Readiness::Ready => "✔",
            Readiness::Failed => "✘",
            Readiness::Pending => "…",
        }
    }

    pub fn of(c: Option<&v2::Condition>) -> Readiness {
        match c.map(|c| State::try_from(c.state)) {
            Some(Ok(State::ConditionSucceeded)) => Readiness::Ready,
            Some(Ok(State::ConditionFailed)) => Readiness::Failed,
            _ => Readiness::Pending,
        }
    }

    pub fn of_service(s: &v2::Service) -> Readiness {
        Readiness::of(s.terminal_condition.as_ref())
    }

    pub fn of_revision(r: &v2::Revision) -> Readiness {
        Readiness::of(r.conditions.iter().find(|c| c.r#type == "Ready"))
    }
}

/// A resource's short id from its full name (`.../services/ID` → `ID`).
pub fn short(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

/// The location (region) segment of a resource name.
pub fn region(name: &str) -> &str {
    let mut parts = name.split('/');
    while let Some(p) = parts.next() {
        if p == "locations" {
            return parts.next().unwrap_or("");
        }
    }
    ""
}

/// RFC 3339 in UTC with microseconds, as gcloud lists times (`2024-05-01T12:00:00.000000Z`).
pub fn time_rfc3339(t: Option<&Timestamp>) -> String {
    datetime(t).map_or_else(String::new, |d| {
        d.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
    })
}

/// `2024-05-01 12:00:00 UTC`, as gcloud lists revisions.
pub fn time_utc(t: Option<&Timestamp>) -> String {
    datetime(t).map_or_else(String::new, |d| {
        d.format("%Y-%m-%d %H:%M:%S UTC").to_string()
    })
}

fn datetime(t: Option<&Timestamp>) -> Option<chrono::DateTime<chrono::Utc>> {
    let t = t?;
    chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_times() {
        let n = "projects/p/locations/europe/services/hello/revisions/hello-00001-abc";
        assert_eq!(short(n), "hello-00001-abc");
        assert_eq!(region(n), "europe");
        assert_eq!(region("nothing"), "");
        let t = Timestamp {
            seconds: 1_714_564_800,
            nanos: 1_500,
        };
        assert_eq!(time_rfc3339(Some(&t)), "2024-05-01T12:00:00.000001Z");
        assert_eq!(time_utc(Some(&t)), "2024-05-01 12:00:00 UTC");
        assert_eq!(time_utc(None), "");
    }

    #[test]
    fn readiness_from_conditions() {
        let c = |state: State| v2::Condition {
            r#type: "Ready".into(),
            state: state as i32,
            ..Default::default()
        };
        assert_eq!(
            Readiness::of(Some(&c(State::ConditionSucceeded))),
            Readiness::Ready
        );
        assert_eq!(
            Readiness::of(Some(&c(State::ConditionFailed))),
            Readiness::Failed
        );
        assert_eq!(
            Readiness::of(Some(&c(State::ConditionReconciling))),
            Readiness::Pending
        );
        assert_eq!(Readiness::of(None), Readiness::Pending);
        let r = v2::Revision {
            conditions: vec![
                v2::Condition {
                    r#type: "Active".into(),
                    state: State::ConditionSucceeded as i32,
                    ..Default::default()
                },
                c(State::ConditionFailed),
            ],
            ..Default::default()
        };
        assert_eq!(Readiness::of_revision(&r), Readiness::Failed);
    }
}
