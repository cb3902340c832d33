//! Small helpers shared by several modules.

use rand::Rng;

/// `n` random lowercase alphanumerics (used in names: revisions, executions, instances).
pub fn random_suffix(n: usize) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    (0..n)
        .map(|_| CHARS[rng.gen_range(0..CHARS.len())] as char)
        .collect()
}

/// RFC 3339 UTC timestamp with second precision.
pub fn rfc3339(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// An error and each of its causes, `: `-separated: what `{:#}` prints for an
/// `anyhow::Error`, for log lines in the library (an error's message does not repeat its
/// source, so a log line showing only `{e}` would lose the cause).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    Chain(e).to_string()
}

/// Displays an error and each of its causes, `: `-separated, without building a string
/// first ([`error_chain`] is this, collected).
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(c) = cause {
            write!(f, ": {c}")?;
            cause = c.source();
        }
        Ok(())
    }
}

/// Parses Kubernetes-style quantities for memory: `512Mi`, `1Gi`, `256M`, `1000000`.
pub fn parse_memory(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit {
        "" => 1,
        "k" | "K" => 1000,
        "Ki" => 1 << 10,
        "M" => 1000 * 1000,
        "Mi" => 1 << 20,
        "G" => 1000 * 1000 * 1000,
        "Gi" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// Parses vCPU counts: `1`, `0.5`, `2`, `500m`.
pub fn parse_cpu(s: &str) -> Option<f64> {
    let s = s.trim();
    let v = match s.strip_suffix('m') {
        Some(milli) => milli.parse::<f64>().ok()? / 1000.0,
        None => s.parse::<f64>().ok()?,
    };
    (v.is_finite() && v > 0.0).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_quantities() {
        let table = [
            ("512Mi", Some(512u64 << 20)),
            ("1Gi", Some(1 << 30)),
            ("256M", Some(256_000_000)),
            ("1000", Some(1000)),
            ("1.5Gi", None),
            ("", None),
            ("12Xi", None),
        ];
        for (s, want) in table {
            assert_eq!(parse_memory(s), want, "{s}");
        }
    }

    #[test]
    fn cpu_quantities() {
        assert_eq!(parse_cpu("1"), Some(1.0));
        assert_eq!(parse_cpu("0.5"), Some(0.5));
        assert_eq!(parse_cpu("500m"), Some(0.5));
        assert_eq!(parse_cpu("0"), None);
        assert_eq!(parse_cpu("-1"), None);
        assert_eq!(parse_cpu("x"), None);
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(std::time::UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000)),
            "2023-11-14T22:13:20Z"
        );
    }

    #[test]
    fn error_chains_name_each_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("reading x")]
        struct Reading(#[source] std::io::Error);
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        assert_eq!(error_chain(&io), "no such file");
        assert_eq!(error_chain(&Reading(io)), "reading x: no such file");
    }

    #[test]
    fn suffixes() {
        let s = random_suffix(5);
        assert_eq!(s.len(), 5);
        assert!(s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
    }
}
