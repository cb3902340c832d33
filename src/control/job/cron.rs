//! A job's schedule (Cloud Scheduler's unix-cron and time zones), kept as annotations on the
//! job, and the decisions the daemon's schedule trigger takes, as plain functions: when the
//! next run is due, which run (if any) is due now given the last one fired (after a
//! restart: only the most recent missed one), and whether to start a run while one is
//! still going.
//!
//! The v2 `Job` has no field for a schedule and refuses `run.googleapis.com/*` annotations,
//! so the schedule is `runlet.io/*` annotations that API clients see and set too:
//! [`SCHEDULE`] (5 fields), [`TIME_ZONE`] (IANA, default `Etc/UTC` as Cloud Scheduler's)
//! and [`OVERLAP`] (`skip`, the default, or `start`). Parsing is croner's, restricted to
//! 5 fields; zones are chrono-tz's.

use std::collections::BTreeMap;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

use crate::spec::SpecError;

/// The job's unix-cron schedule, 5 fields.
pub const SCHEDULE: &str = "runlet.io/schedule";
/// The IANA time zone the schedule is read in.
pub const TIME_ZONE: &str = "runlet.io/schedule-time-zone";
/// What to do when a run is due while an execution of the job still runs.
pub const OVERLAP: &str = "runlet.io/schedule-overlap";
/// Set on an execution a trigger started (`schedule`); absent on one started by `RunJob`.
pub const TRIGGERED_BY: &str = "runlet.io/triggered-by";
/// Cloud Scheduler's default time zone.
pub const DEFAULT_TIME_ZONE: &str = "Etc/UTC";

/// The form a schedule takes, for error messages.
const CRON_FORM: &str = "5 fields, minute hour day-of-month month day-of-week, as in \"*/5 * * * *\" or \"0 9 * * MON-FRI\"";

/// What to do when a run is due while an execution of the job is still running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overlap {
    /// Skip the run (logged); the next due time is tried again.
    #[default]
    Skip,
    /// Start another execution beside the running one.
    Start,
}

impl Overlap {
    pub fn as_str(self) -> &'static str {
        match self {
            Overlap::Skip => "skip",
            Overlap::Start => "start",
        }
    }
}

/// A job's schedule, checked.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// As given (trimmed).
    pub expr: String,
    pub zone: Tz,
    pub overlap: Overlap,
    cron: Cron,
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.expr == other.expr && self.zone == other.zone && self.overlap == other.overlap
    }
}

/// A schedule refused: the annotation (or flag) and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {detail}")]
pub struct ScheduleError {
    pub field: &'static str,
    pub detail: String,
}

fn bad(field: &'static str, detail: impl Into<String>) -> ScheduleError {
    ScheduleError {
        field,
        detail: detail.into(),
    }
}

/// Parses a unix-cron expression of exactly 5 fields.
pub fn parse_cron(field: &'static str, expr: &str) -> Result<Cron, ScheduleError> {
    let expr = expr.trim();
    let n = expr.split_whitespace().count();
    if n != 5 || expr.contains('@') {
        return Err(bad(
            field,
            format!("{expr:?} has {n} fields; a schedule has {CRON_FORM}"),
        ));
    }
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(expr)
        .map_err(|e| bad(field, format!("{expr:?}: {e}; a schedule has {CRON_FORM}")))
}

/// Parses an IANA time zone name (`Europe/Paris`, `Etc/UTC`, `UTC`).
pub fn parse_zone(field: &'static str, zone: &str) -> Result<Tz, ScheduleError> {
    Tz::from_str(zone.trim()).map_err(|_| {
        bad(
            field,
            format!("{zone:?} is not an IANA time zone name (such as Europe/Paris, America/New_York or Etc/UTC)"),
        )
    })
}

fn parse_overlap(field: &'static str, s: &str) -> Result<Overlap, ScheduleError> {
    match s.trim() {
        "skip" => Ok(Overlap::Skip),
        "start" => Ok(Overlap::Start),
        other => Err(bad(field, format!("{other:?}: allowed skip or start"))),
    }
}

impl Schedule {
    /// The schedule a job's annotations give (`None` without [`SCHEDULE`]); a zone or an
    /// overlap policy without a schedule is refused, naming the annotation.
    pub fn from_annotations(
        a: &BTreeMap<String, String>,
    ) -> Result<Option<Schedule>, ScheduleError> {
        let Some(expr) = a.get(SCHEDULE) else {
            for k in [TIME_ZONE, OVERLAP] {
                if a.contains_key(k) {
                    return Err(bad(k, format!("is set but {SCHEDULE} is not")));
                }
            }
            return Ok(None);
        };
        let cron = parse_cron(SCHEDULE, expr)?;
        let zone = parse_zone(
            TIME_ZONE,
            a.get(TIME_ZONE).map_or(DEFAULT_TIME_ZONE, String::as_str),
        )?;
        let overlap = a
            .get(OVERLAP)
            .map(|s| parse_overlap(OVERLAP, s))
            .transpose()?
            .unwrap_or_default();
        Ok(Some(Schedule {
            expr: expr.trim().to_string(),
            zone,
            overlap,
            cron,
        }))
    }

    /// The first due time strictly after `t`; `None` if the schedule never fires again
    /// (such as `0 0 30 2 *`, February 30th).
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&t.with_timezone(&self.zone), false)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }

    /// The latest due time at or before `t`.
    pub fn latest_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_previous_occurrence(&t.with_timezone(&self.zone), true)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }
}

/// The run due now: the latest due time in `(since, now]`, where `since` is when the last
/// run was fired (or when the schedule was set, before its first run). Every earlier one in
/// that span is dropped: after a restart (or a suspended machine) only the most recent
/// missed run is started, as Cloud Scheduler does not replay a backlog either.
pub fn due(s: &Schedule, since: DateTime<Utc>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if now <= since {
        return None;
    }
    s.latest_at_or_before(now).filter(|t| *t > since)
}

/// When to look again: the next due time after both `since` and `now`.
pub fn next_wake(s: &Schedule, since: DateTime<Utc>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    s.next_after(since.max(now))
}

/// What to do with a due run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fire {
    Start,
    /// An execution of the job is still running and the policy is `skip`.
    SkipOverlap,
}

/// Whether to start a due run, given the policy and whether an execution still runs.
pub fn on_due(overlap: Overlap, running: bool) -> Fire {
    match (overlap, running) {
        (Overlap::Skip, true) => Fire::SkipOverlap,
        _ => Fire::Start,
    }
}

/// `runlet jobs create|update` flags for the schedule, over a job's annotations.
#[derive(Debug, Clone, Default)]
pub struct ScheduleFlags {
    pub schedule: Option<String>,
    pub time_zone: Option<String>,
    pub overlap: Option<String>,
    pub clear: bool,
}

/// Sets (or with `clear`, removes) the schedule's annotations as the flags say; an update
/// keeps what it does not name. Refused with the flag named.
pub fn apply_flags(a: &mut BTreeMap<String, String>, f: &ScheduleFlags) -> Result<(), SpecError> {
    let spec = |e: ScheduleError, flag: &'static str| SpecError {
        field: flag,
        detail: e.detail,
    };
    if f.clear {
        for k in [SCHEDULE, TIME_ZONE, OVERLAP] {
            a.remove(k);
        }
        return Ok(());
    }
    if let Some(s) = &f.schedule {
        parse_cron("--schedule", s).map_err(|e| spec(e, "--schedule"))?;
        a.insert(SCHEDULE.into(), s.trim().to_string());
    }
    if let Some(z) = &f.time_zone {
        parse_zone("--time-zone", z).map_err(|e| spec(e, "--time-zone"))?;
        a.insert(TIME_ZONE.into(), z.trim().to_string());
    }
    if let Some(o) = &f.overlap {
        parse_overlap("--schedule-overlap", o).map_err(|e| spec(e, "--schedule-overlap"))?;
        a.insert(OVERLAP.into(), o.trim().to_string());
    }
    if !a.contains_key(SCHEDULE) && (f.time_zone.is_some() || f.overlap.is_some()) {
        let flag = if f.time_zone.is_some() {
            "--time-zone"
        } else {
            "--schedule-overlap"
        };
        return Err(SpecError {
            field: flag,
            detail: "the job has no schedule: give --schedule too".into(),
        });
    }
    Ok(())
}

/// A schedule as `describe` shows it: `*/5 * * * * (Europe/Paris), overlap: skip`.
pub fn describe(a: &BTreeMap<String, String>) -> Option<String> {
    let expr = a.get(SCHEDULE)?;
    let zone = a.get(TIME_ZONE).map_or(DEFAULT_TIME_ZONE, String::as_str);
    let overlap = a.get(OVERLAP).map_or("skip", String::as_str);
    Some(format!("{expr} ({zone}), overlap: {overlap}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn sched(expr: &str, zone: Option<&str>) -> Schedule {
        let mut a = BTreeMap::new();
        a.insert(SCHEDULE.to_string(), expr.to_string());
        if let Some(z) = zone {
            a.insert(TIME_ZONE.to_string(), z.to_string());
        }
        Schedule::from_annotations(&a).unwrap().unwrap()
    }

    #[test]
    fn annotations_are_checked_naming_the_annotation() {
        type Pairs<'a> = &'a [(&'a str, &'a str)];
        let table: &[(Pairs, Result<(), &str>)] = &[
            (&[], Ok(())),
            (&[(SCHEDULE, "*/5 * * * *")], Ok(())),
            (&[(SCHEDULE, "0 9 * * MON-FRI")], Ok(())),
            (&[(SCHEDULE, "0 0 1 JAN,JUL *")], Ok(())),
            (
                &[(SCHEDULE, "*/5 * * * *"), (TIME_ZONE, "Europe/Paris")],
                Ok(()),
            ),
            (&[(SCHEDULE, "* * * * *"), (OVERLAP, "start")], Ok(())),
            (&[(SCHEDULE, "* * * * * *")], Err(SCHEDULE)),
            (&[(SCHEDULE, "* * * *")], Err(SCHEDULE)),
            (&[(SCHEDULE, "@daily")], Err(SCHEDULE)),
            (&[(SCHEDULE, "61 * * * *")], Err(SCHEDULE)),
            (&[(SCHEDULE, "* 24 * * *")], Err(SCHEDULE)),
            (&[(SCHEDULE, "every minute")], Err(SCHEDULE)),
            (&[(SCHEDULE, "")], Err(SCHEDULE)),
            (
                &[(SCHEDULE, "* * * * *"), (TIME_ZONE, "Mars/Olympus")],
                Err(TIME_ZONE),
            ),
            (&[(SCHEDULE, "* * * * *"), (OVERLAP, "queue")], Err(OVERLAP)),
            (&[(TIME_ZONE, "Europe/Paris")], Err(TIME_ZONE)),
            (&[(OVERLAP, "skip")], Err(OVERLAP)),
        ];
        for (pairs, want) in table {
            let a: BTreeMap<String, String> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let got = Schedule::from_annotations(&a)
                .map(|_| ())
                .map_err(|e| e.field);
            assert_eq!(got, *want, "{pairs:?}");
            if let Err(e) = Schedule::from_annotations(&a) {
                assert!(e.to_string().contains(e.field), "{e}");
            }
        }
    }

    #[test]
    fn next_due_time_in_the_zone() {
        // (expr, zone, after, next)
        let table = [
            (
                "*/5 * * * *",
                None,
                "2026-12-03T10:02:30Z",
                "2026-12-03T10:05:00Z",
            ),
            (
                "*/5 * * * *",
                None,
                "2026-12-03T10:05:00Z",
                "2026-12-03T10:10:00Z",
            ),
            (
                "* * * * *",
                None,
                "2026-12-03T10:00:00Z",
                "2026-12-03T10:01:00Z",
            ),
            // 09:00 in Paris is 08:00 UTC in winter, 07:00 in summer.
            (
                "0 9 * * *",
                Some("Europe/Paris"),
                "2026-12-03T10:00:00Z",
                "2026-12-04T08:00:00Z",
            ),
            (
                "0 9 * * *",
                Some("Europe/Paris"),
                "2026-07-01T00:00:00Z",
                "2026-07-01T07:00:00Z",
            ),
            (
                "0 9 * * *",
                Some("America/New_York"),
                "2026-12-03T00:00:00Z",
                "2026-12-03T14:00:00Z",
            ),
            // Weekdays only: Thursday 2026-12-03, so Friday then Monday.
            (
                "0 9 * * MON-FRI",
                None,
                "2026-12-04T09:00:00Z",
                "2026-12-07T09:00:00Z",
            ),
            // 02:30 does not exist in Paris on 2026-03-29 (clocks go 02:00 → 03:00): it
            // runs at the gap's end, once.
            (
                "30 2 * * *",
                Some("Europe/Paris"),
                "2026-03-28T12:00:00Z",
                "2026-03-29T01:00:00Z",
            ),
        ];
        // 02:30 happens twice in Paris on 2026-10-25 (clocks go 03:00 → 02:00).
        let table = table.into_iter().chain([
            (
                "30 2 * * *",
                Some("Europe/Paris"),
                "2026-10-24T12:00:00Z",
                "2026-10-25T00:30:00Z",
            ),
            (
                "30 2 * * *",
                Some("Europe/Paris"),
                "2026-10-25T00:30:00Z",
                "2026-10-26T01:30:00Z",
            ),
        ]);
        for (expr, zone, after, next) in table {
            let s = sched(expr, zone);
            assert_eq!(
                s.next_after(at(after)),
                Some(at(next)),
                "{expr} {zone:?} after {after}"
            );
        }
        assert_eq!(
            sched("0 0 30 2 *", None).next_after(at("2026-01-01T00:00:00Z")),
            None
        );
    }

    #[test]
    fn only_the_most_recent_missed_run_is_due() {
        let every5 = sched("*/5 * * * *", None);
        // (since, now, due)
        let table = [
            // Nothing due yet.
            ("2026-12-03T10:00:00Z", "2026-12-03T10:04:59Z", None),
            // Exactly at the due time.
            (
                "2026-12-03T10:00:00Z",
                "2026-12-03T10:05:00Z",
                Some("2026-12-03T10:05:00Z"),
            ),
            // Already fired at 10:05.
            ("2026-12-03T10:05:00Z", "2026-12-03T10:05:00Z", None),
            ("2026-12-03T10:05:00Z", "2026-12-03T10:09:00Z", None),
            // Down from 10:07 to 11:03: of the 11 missed runs, only 11:00.
            (
                "2026-12-03T10:05:00Z",
                "2026-12-03T11:03:00Z",
                Some("2026-12-03T11:00:00Z"),
            ),
            // Down for days: still only the latest.
            (
                "2026-11-01T00:00:00Z",
                "2026-12-03T11:03:10Z",
                Some("2026-12-03T11:00:00Z"),
            ),
            // Set at 10:02:30 (never fired): 10:05 is its first run.
            ("2026-12-03T10:02:30Z", "2026-12-03T10:04:00Z", None),
            (
                "2026-12-03T10:02:30Z",
                "2026-12-03T10:06:00Z",
                Some("2026-12-03T10:05:00Z"),
            ),
            // A clock set back: nothing.
            ("2026-12-03T10:05:00Z", "2026-12-03T09:00:00Z", None),
        ];
        for (since, now, want) in table {
            assert_eq!(
                due(&every5, at(since), at(now)),
                want.map(at),
                "since {since}, now {now}"
            );
        }
        // And the next wake-up is after both.
        assert_eq!(
            next_wake(
                &every5,
                at("2026-12-03T10:05:00Z"),
                at("2026-12-03T11:03:00Z")
            ),
            Some(at("2026-12-03T11:05:00Z"))
        );
        assert_eq!(
            next_wake(
                &every5,
                at("2026-12-03T10:05:00Z"),
                at("2026-12-03T09:00:00Z")
            ),
            Some(at("2026-12-03T10:10:00Z"))
        );
    }

    #[test]
    fn a_run_due_while_one_runs_follows_the_policy() {
        let table = [
            (Overlap::Skip, false, Fire::Start),
            (Overlap::Skip, true, Fire::SkipOverlap),
            (Overlap::Start, false, Fire::Start),
            (Overlap::Start, true, Fire::Start),
        ];
        for (policy, running, want) in table {
            assert_eq!(on_due(policy, running), want, "{policy:?} {running}");
        }
    }

    #[test]
    fn flags_set_and_clear_the_annotations_naming_the_flag() {
        let f = |s: Option<&str>, z: Option<&str>, o: Option<&str>, clear| ScheduleFlags {
            schedule: s.map(String::from),
            time_zone: z.map(String::from),
            overlap: o.map(String::from),
            clear,
        };
        let mut a = BTreeMap::new();
        apply_flags(
            &mut a,
            &f(Some("*/5 * * * *"), Some("Europe/Paris"), None, false),
        )
        .unwrap();
        assert_eq!(a[SCHEDULE], "*/5 * * * *");
        assert_eq!(a[TIME_ZONE], "Europe/Paris");
        assert_eq!(
            describe(&a).as_deref(),
            Some("*/5 * * * * (Europe/Paris), overlap: skip")
        );
        // An update naming only the zone keeps the schedule.
        apply_flags(&mut a, &f(None, Some("Asia/Tokyo"), Some("start"), false)).unwrap();
        assert_eq!(a[SCHEDULE], "*/5 * * * *");
        assert_eq!(a[TIME_ZONE], "Asia/Tokyo");
        assert_eq!(a[OVERLAP], "start");
        a.insert("other".into(), "kept".into());
        apply_flags(&mut a, &f(None, None, None, true)).unwrap();
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!(describe(&a), None);

        let table = [
            (f(Some("* * *"), None, None, false), "--schedule"),
            (f(Some("0 0 * * * 2026"), None, None, false), "--schedule"),
            (
                f(Some("* * * * *"), Some("Paris"), None, false),
                "--time-zone",
            ),
            (f(None, Some("Europe/Paris"), None, false), "--time-zone"),
            (
                f(Some("* * * * *"), None, Some("later"), false),
                "--schedule-overlap",
            ),
        ];
        for (flags, field) in table {
            let e = apply_flags(&mut BTreeMap::new(), &flags).unwrap_err();
            assert_eq!(e.field, field, "{flags:?}: {e}");
        }
        let e = apply_flags(&mut BTreeMap::new(), &f(Some("* * *"), None, None, false))
            .unwrap_err()
            .to_string();
        assert!(e.contains("5 fields"), "{e}");
    }

    #[test]
    fn the_default_zone_is_utc() {
        let s = sched("0 12 * * *", None);
        assert_eq!(s.zone, Tz::Etc__UTC);
        assert_eq!(
            s.next_after(Utc.with_ymd_and_hms(2026, 12, 3, 0, 0, 0).unwrap()),
            Some(at("2026-12-03T12:00:00Z"))
        );
    }
}
