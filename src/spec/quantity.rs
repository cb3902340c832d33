//! Quantities in flag values: durations, numbers in a range, memory sizes and CPU counts,
//! each refused with the allowed range.

use std::time::Duration;

use super::{bad, SpecError};

/// Parses durations: `90s`, `10m`, `1h`, `500ms`, bare numbers are seconds. A duration
/// too long for any use (beyond `u64::MAX` seconds) is refused, not a panic; a flag with a
/// range uses [`duration_in`], which names the range.
pub fn parse_duration(field: &'static str, s: &str) -> Result<Duration, SpecError> {
    let secs = seconds(field, s)?;
    Duration::try_from_secs_f64(secs)
        .map_err(|_| bad(field, format!("{} is out of range: too long", s.trim())))
}

/// A duration flag in `lo..=hi` seconds, refused with the range when outside it (however
/// far outside).
pub fn duration_in(
    field: &'static str,
    s: &str,
    (lo, hi): (u64, u64),
) -> Result<Duration, SpecError> {
    let secs = seconds(field, s)?;
    if secs < lo as f64 || secs > hi as f64 {
        return Err(bad(
            field,
            format!(
                "{} is out of range: allowed {} to {}",
                s.trim(),
                seconds_text(lo),
                seconds_text(hi)
            ),
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A duration's text as seconds: finite, not negative, maybe huge.
fn seconds(field: &'static str, s: &str) -> Result<f64, SpecError> {
    let s = s.trim();
    let err = || {
        bad(
            field,
            format!("{s:?} is not a duration (e.g. 300, 90s, 10m, 1h)"),
        )
    };
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| err())?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(err()),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(err());
    }
    Ok(secs)
}

/// `n` seconds as a limit is written: `3600s`, but whole days of hours as `168h`.
fn seconds_text(n: u64) -> String {
    if n >= 86_400 && n.is_multiple_of(3600) {
        format!("{}h", n / 3600)
    } else {
        format!("{n}s")
    }
}

/// Checks `value` lies in `lo..=hi`.
pub fn in_range<T: PartialOrd + std::fmt::Display>(
    field: &'static str,
    value: T,
    lo: T,
    hi: T,
) -> Result<T, SpecError> {
    if value < lo || value > hi {
        return Err(bad(
            field,
            format!("{value} is out of range: allowed {lo} to {hi}"),
        ));
    }
    Ok(value)
}

/// A positive size such as a volume's `size-limit=64Mi`.
pub(super) fn memory_quantity(field: &'static str, s: &str) -> Result<u64, SpecError> {
    crate::util::parse_memory(s)
        .filter(|v| *v > 0)
        .ok_or_else(|| bad(field, format!("{s:?} is not a size (e.g. 64Mi)")))
}

/// A request body limit (`--max-request-body-size`): a size in bytes (or with a unit, e.g.
/// 32Mi), or `unlimited` (`None`).
pub fn body_size(field: &'static str, s: &str) -> Result<Option<u64>, SpecError> {
    if s.trim().eq_ignore_ascii_case("unlimited") {
        return Ok(None);
    }
    crate::util::parse_memory(s).map(Some).ok_or_else(|| {
        bad(
            field,
            format!("{s:?} is not a size in bytes (e.g. 33554432, 64Mi) nor \"unlimited\""),
        )
    })
}

/// An instance's memory limit (`--memory`), 6Mi to 32Gi.
pub fn memory(field: &'static str, s: &str) -> Result<u64, SpecError> {
    let v = crate::util::parse_memory(s).ok_or_else(|| {
        bad(
            field,
            format!("{s:?} is not a memory size (e.g. 512Mi, 1Gi)"),
        )
    })?;
    if !(6 << 20..=32u64 << 30).contains(&v) {
        return Err(bad(
            field,
            format!("{s} is out of range: allowed 6Mi to 32Gi"),
        ));
    }
    Ok(v)
}

/// An instance's CPU limit (`--cpu`), 0.08 to 8.
pub fn cpu(field: &'static str, s: &str) -> Result<f64, SpecError> {
    let v = crate::util::parse_cpu(s).ok_or_else(|| {
        bad(
            field,
            format!("{s:?} is not a CPU count (e.g. 1, 0.5, 2, 500m)"),
        )
    })?;
    if !(0.08..=8.0).contains(&v) {
        return Err(bad(
            field,
            format!("{s} is out of range: allowed 0.08 to 8"),
        ));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_sizes() {
        let table = [
            ("32Mi", Ok(Some(32 << 20))),
            ("33554432", Ok(Some(33554432))),
            ("0", Ok(Some(0))),
            ("unlimited", Ok(None)),
            ("Unlimited", Ok(None)),
            ("32MiB", Err(())),
            ("-1", Err(())),
            ("99999999999999999999", Err(())),
        ];
        for (s, want) in table {
            assert_eq!(
                body_size("--max-request-body-size", s).map_err(|_| ()),
                want,
                "{s}"
            );
        }
    }

    #[test]
    fn durations() {
        let table = [
            ("300", 300.0),
            ("90s", 90.0),
            ("10m", 600.0),
            ("1h", 3600.0),
            ("500ms", 0.5),
            ("1.5", 1.5),
        ];
        for (s, want) in table {
            assert_eq!(
                parse_duration("--timeout", s).unwrap(),
                Duration::from_secs_f64(want),
                "{s}"
            );
        }
        for bad in ["", "x", "10d", "-1"] {
            assert!(parse_duration("--timeout", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_out_of_range_however_far_name_the_range() {
        let range = (1, 3600);
        let table = [
            (
                "100000000000000000000000",
                "out of range: allowed 1s to 3600s",
            ),
            ("1e400", "is not a duration"),
            ("99999999999999999999999999999999999999h", "out of range"),
            ("4000", "4000 is out of range: allowed 1s to 3600s"),
            ("0.5", "out of range"),
            ("NaN", "is not a duration"),
        ];
        for (s, want) in table {
            let e = duration_in("--timeout", s, range).unwrap_err();
            assert_eq!(e.field, "--timeout");
            assert!(e.detail.contains(want), "{s}: {}", e.detail);
            assert!(parse_duration("--timeout", s).is_err() || s == "4000" || s == "0.5");
        }
        assert_eq!(
            duration_in("--timeout", "1h", range).unwrap(),
            Duration::from_secs(3600)
        );
        assert_eq!(
            duration_in("--task-timeout", "169h", (1, 168 * 3600))
                .unwrap_err()
                .detail,
            "169h is out of range: allowed 1s to 168h"
        );
    }

    #[test]
    fn ranges_and_quantities() {
        assert!(in_range("--concurrency", 0, 1, 1000).is_err());
        assert_eq!(in_range("--concurrency", 80, 1, 1000).unwrap(), 80);
        assert_eq!(memory("--memory", "512Mi").unwrap(), 512 << 20);
        assert!(memory("--memory", "1Mi")
            .unwrap_err()
            .detail
            .contains("allowed"));
        assert_eq!(cpu("--cpu", "0.5").unwrap(), 0.5);
        assert!(cpu("--cpu", "64").is_err());
        assert_eq!(memory_quantity("f", "64Mi").unwrap(), 64 << 20);
        assert!(memory_quantity("f", "0").is_err());
    }
}
