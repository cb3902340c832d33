//! The typed, validated description of a service, built from flags (gcloud's names) and
//! refused at the door with the field name and the allowed values when it is wrong.

use std::net::SocketAddr;
use std::time::Duration;

use thiserror::Error;

use crate::image::reference;

/// Names runlet sets itself; a user may not set them (contract ENV-S1, PORT-3).
pub const RESERVED_ENV: &[&str] = &["PORT", "K_SERVICE", "K_REVISION", "K_CONFIGURATION"];

#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid {field}: {detail}")]
pub struct SpecError {
    pub field: &'static str,
    pub detail: String,
}

fn bad(field: &'static str, detail: impl Into<String>) -> SpecError {
    SpecError {
        field,
        detail: detail.into(),
    }
}

/// A service as runlet runs it.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    pub name: String,
    pub revision: String,
    pub image: String,
    pub port: u16,
    pub listen: SocketAddr,
    pub env: Vec<(String, String)>,
    pub command: Option<Vec<String>>,
    pub args: Option<Vec<String>>,
    pub memory_bytes: u64,
    pub cpu: f64,
    pub concurrency: usize,
    pub timeout: Duration,
    pub min_instances: usize,
    pub max_instances: usize,
    pub idle_timeout: Duration,
    pub startup_timeout: Duration,
    pub use_http2: bool,
    /// `--cpu-throttling`: an instance with no request in flight keeps 1% of a CPU.
    pub cpu_throttling: bool,
    /// A configured startup probe; without one, the ingress port accepting TCP means ready.
    pub startup_probe: Option<crate::control::probe::Probe>,
    pub liveness_probe: Option<crate::control::probe::Probe>,
    /// In-memory volumes mounted into the container: (mount path, size limit in bytes).
    pub volumes: Vec<(String, u64)>,
}

impl ServiceSpec {
    /// The environment of the ingress container (ENV-S1).
    pub fn contract_env(&self) -> Vec<(String, String)> {
        vec![
            ("PORT".into(), self.port.to_string()),
            ("K_SERVICE".into(), self.name.clone()),
            ("K_REVISION".into(), self.revision.clone()),
            ("K_CONFIGURATION".into(), self.name.clone()),
        ]
    }
}

/// Checks a Cloud Run service or job name: lowercase letters, digits and hyphens, starting
/// with a letter, not ending with a hyphen, at most `max` characters.
pub fn check_name(field: &'static str, name: &str, max: usize) -> Result<(), SpecError> {
    let ok = !name.is_empty()
        && name.len() <= max
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(bad(field, format!("{name:?} must be 1-{max} characters of lowercase letters, digits and hyphens, start with a letter and not end with a hyphen")))
    }
}

/// A service name derived from an image name (`docker.io/library/My_App:1` → `my-app`).
pub fn name_from_image(image: &str) -> String {
    let short = reference::short_name(image);
    let mut s: String = short
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    while s.contains("--") {
        s = s.replace("--", "-");
    }
    let s = s.trim_matches('-');
    let s = if s.starts_with(|c: char| c.is_ascii_lowercase()) {
        s.to_string()
    } else {
        format!("svc-{s}")
    };
    let mut s: String = s.chars().take(49).collect();
    while s.ends_with('-') {
        s.pop();
    }
    s
}

/// A list flag's items, split on commas; a value starting `^DELIM^` is split on DELIM
/// instead, so items can contain commas (gcloud's list syntax, `gcloud topic escaping`).
pub fn split_list(s: &str) -> Vec<String> {
    let custom = s
        .strip_prefix('^')
        .and_then(|rest| rest.split_once('^'))
        .filter(|(delim, _)| !delim.is_empty());
    match custom {
        Some((delim, rest)) => rest.split(delim).map(str::to_string).collect(),
        None => s.split(',').map(str::to_string).collect(),
    }
}

/// Parses `K=V,K2=V2` (gcloud's `--set-env-vars`); reserved names are refused.
pub fn parse_env_vars(items: &[String]) -> Result<Vec<(String, String)>, SpecError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for item in items.iter().flat_map(|s| split_list(s)) {
        let item = item.as_str();
        if item.is_empty() {
            continue;
        }
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| bad("--set-env-vars", format!("{item:?} is not KEY=VALUE")))?;
        if k.is_empty()
            || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            || k.starts_with(|c: char| c.is_ascii_digit())
        {
            return Err(bad(
                "--set-env-vars",
                format!("{k:?} is not a valid variable name ([A-Za-z_][A-Za-z0-9_]*)"),
            ));
        }
        if RESERVED_ENV.contains(&k) {
            return Err(bad(
                "--set-env-vars",
                format!(
                    "{k} is reserved: runlet sets it (reserved: {})",
                    RESERVED_ENV.join(", ")
                ),
            ));
        }
        match out.iter_mut().find(|(ek, _)| ek == k) {
            Some(e) => e.1 = v.to_string(),
            None => out.push((k.to_string(), v.to_string())),
        }
    }
    Ok(out)
}

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

/// Parses gcloud's `--add-volume name=N,type=in-memory[,size-limit=64Mi]` and
/// `--add-volume-mount volume=N,mount-path=/x` into (mount path, size) pairs; a volume
/// without a size limit is bounded by the instance's memory (its pages are charged there).
pub fn volumes(
    add_volume: &[String],
    add_mount: &[String],
    memory: u64,
) -> Result<Vec<(String, u64)>, SpecError> {
    let kv = |field: &'static str, s: &str| -> Result<Vec<(String, String)>, SpecError> {
        s.split(',')
            .filter(|i| !i.is_empty())
            .map(|i| {
                i.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .ok_or_else(|| bad(field, format!("{i:?} is not KEY=VALUE")))
            })
            .collect()
    };
    let mut vols: Vec<(String, u64)> = Vec::new();
    for v in add_volume {
        let (mut name, mut kind, mut size) = (None, None, memory);
        for (k, val) in kv("--add-volume", v)? {
            match k.as_str() {
                "name" => name = Some(val),
                "type" => kind = Some(val),
                "size-limit" => size = memory_quantity("--add-volume", &val)?,
                other => {
                    return Err(bad(
                        "--add-volume",
                        format!("unknown key {other:?}; allowed: name, type, size-limit"),
                    ))
                }
            }
        }
        let name = name.ok_or_else(|| bad("--add-volume", format!("{v:?} has no name=")))?;
        match kind.as_deref() {
            Some("in-memory") => {}
            Some(other) => {
                return Err(bad(
                    "--add-volume",
                    format!("type={other} is not supported on one node; allowed: in-memory"),
                ))
            }
            None => {
                return Err(bad(
                    "--add-volume",
                    format!("{v:?} has no type= (allowed: in-memory)"),
                ))
            }
        }
        if vols.iter().any(|(n, _)| *n == name) {
            return Err(bad(
                "--add-volume",
                format!("volume {name} is defined twice"),
            ));
        }
        vols.push((name, size.min(memory)));
    }
    let mut out = Vec::new();
    for m in add_mount {
        let (mut volume, mut path) = (None, None);
        for (k, val) in kv("--add-volume-mount", m)? {
            match k.as_str() {
                "volume" => volume = Some(val),
                "mount-path" => path = Some(val),
                other => {
                    return Err(bad(
                        "--add-volume-mount",
                        format!("unknown key {other:?}; allowed: volume, mount-path"),
                    ))
                }
            }
        }
        let volume =
            volume.ok_or_else(|| bad("--add-volume-mount", format!("{m:?} has no volume=")))?;
        let path =
            path.ok_or_else(|| bad("--add-volume-mount", format!("{m:?} has no mount-path=")))?;
        if !path.starts_with('/') || path == "/" {
            return Err(bad(
                "--add-volume-mount",
                format!("mount-path={path} must be an absolute path other than /"),
            ));
        }
        let size = vols
            .iter()
            .find(|(n, _)| *n == volume)
            .map(|(_, s)| *s)
            .ok_or_else(|| {
                bad(
                    "--add-volume-mount",
                    format!("volume {volume} is not defined with --add-volume"),
                )
            })?;
        out.push((path, size));
    }
    Ok(out)
}

fn memory_quantity(field: &'static str, s: &str) -> Result<u64, SpecError> {
    crate::util::parse_memory(s)
        .filter(|v| *v > 0)
        .ok_or_else(|| bad(field, format!("{s:?} is not a size (e.g. 64Mi)")))
}

/// The revision name: `<service>-00001-<3 random>` like Cloud Run's generated names.
pub fn revision_name(service: &str) -> String {
    format!("{service}-00001-{}", crate::util::random_suffix(3))
}

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
    fn names() {
        assert!(check_name("--service", "hello-world", 49).is_ok());
        for bad in ["", "Hello", "1abc", "abc-", "a_b", &"a".repeat(50)] {
            assert!(check_name("--service", bad, 49).is_err(), "{bad}");
        }
        assert_eq!(name_from_image("docker.io/library/probe:latest"), "probe");
        assert_eq!(name_from_image("docker.io/library/my_app:1"), "my-app");
        assert_eq!(name_from_image("docker.io/library/9lives:1"), "svc-9lives");
    }

    #[test]
    fn list_flags_split_like_gcloud() {
        let cases: &[(&str, &[&str])] = &[
            ("a,b,c", &["a", "b", "c"]),
            ("-c,echo hi", &["-c", "echo hi"]),
            ("^;^a,b;c", &["a,b", "c"]),
            ("^::^x:y::z", &["x:y", "z"]),
            ("^^a,b", &["^^a", "b"]),
            ("^a,b", &["^a", "b"]),
            ("", &[""]),
        ];
        for (input, want) in cases {
            assert_eq!(split_list(input), *want, "{input:?}");
        }
        let v = parse_env_vars(&["^@^A=1,2@B=x".into()]).unwrap();
        assert_eq!(
            v,
            vec![("A".into(), "1,2".into()), ("B".into(), "x".into())]
        );
    }

    #[test]
    fn env_vars() {
        let v = parse_env_vars(&["A=1,B=x=y".into(), "A=2".into()]).unwrap();
        assert_eq!(
            v,
            vec![
                ("A".to_string(), "2".to_string()),
                ("B".to_string(), "x=y".to_string())
            ]
        );
        let e = parse_env_vars(&["PORT=1".into()]).unwrap_err();
        assert_eq!(e.field, "--set-env-vars");
        assert!(e.detail.contains("reserved"));
        assert!(parse_env_vars(&["NOVALUE".into()]).is_err());
        assert!(parse_env_vars(&["1X=2".into()]).is_err());
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
    fn in_memory_volumes() {
        let mem = 512 << 20;
        let v = volumes(
            &[
                "name=cache,type=in-memory,size-limit=64Mi".into(),
                "name=big,type=in-memory".into(),
            ],
            &[
                "volume=cache,mount-path=/cache".into(),
                "volume=big,mount-path=/big".into(),
            ],
            mem,
        )
        .unwrap();
        assert_eq!(
            v,
            vec![("/cache".to_string(), 64 << 20), ("/big".to_string(), mem)]
        );
        for (vols, mounts, needle) in [
            (vec!["name=x,type=cloud-storage"], vec![], "not supported"),
            (vec!["type=in-memory"], vec![], "no name"),
            (
                vec!["name=x,type=in-memory,color=red"],
                vec![],
                "unknown key",
            ),
            (
                vec!["name=x,type=in-memory"],
                vec!["volume=y,mount-path=/y"],
                "not defined",
            ),
            (
                vec!["name=x,type=in-memory"],
                vec!["volume=x,mount-path=rel"],
                "absolute",
            ),
        ] {
            let vols: Vec<String> = vols.into_iter().map(String::from).collect();
            let mounts: Vec<String> = mounts.into_iter().map(String::from).collect();
            let e = volumes(&vols, &mounts, mem).unwrap_err();
            assert!(
                e.detail.contains(needle),
                "{vols:?} {mounts:?}: {}",
                e.detail
            );
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
        assert!(revision_name("svc").starts_with("svc-00001-"));
    }
}
