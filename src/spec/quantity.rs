//! Quantities in flag values: durations, numbers in a range, memory sizes and CPU counts,
//! each refused with the allowed range.

use std::time::Duration;

use super::{bad, SpecError};

/// Parses durations: `90s`, `10m`, `1h`, `500ms`, bare numbers are seconds.
pub fn parse_duration(field: &'static str, s: &str) -> Result<Duration, SpecError> {
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
    Ok(Duration::from_secs_f64(secs))
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
