//! Query-string parsing: percent-decoding and the typed set of knobs a
//! request can carry (`sleep=`, `bytes=`, `status=`, ...).
//!
//! Pure code, no I/O. Unknown parameters are ignored; when a parameter is
//! repeated the last one wins; a malformed number is an error (the handler
//! answers 400 with the message).

/// Decodes `%XX` escapes and `+` (as space). Invalid escapes are kept
/// verbatim; invalid UTF-8 is replaced lossily.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Splits a raw query string into decoded `(key, value)` pairs, in order.
/// A key without `=` gets an empty value.
pub fn parse_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(p), String::new()),
        })
        .collect()
}

/// Every knob a request can carry. See the crate docs for semantics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    pub sleep_ms: Option<u64>,
    pub flush_then_sleep_ms: Option<u64>,
    pub alloc_mib: Option<u64>,
    pub hold_ms: Option<u64>,
    pub child_alloc_mib: Option<u64>,
    pub child_after_ms: u64,
    pub write_mib: Option<u64>,
    pub path: Option<String>,
    /// `/fetch`: the URL to GET and one `Name: value` header to send.
    pub url: Option<String>,
    pub header: Option<String>,
    pub exit: Option<i32>,
    pub status: Option<u16>,
    pub bytes: Option<u64>,
    pub sse: Option<u64>,
    pub interval_ms: u64,
    pub echo: bool,
    pub badheader: bool,
    pub log: Option<String>,
    pub log_stderr: Option<String>,
}

/// Default gap between server-sent events when `interval=` is absent.
pub const DEFAULT_SSE_INTERVAL_MS: u64 = 100;

impl Params {
    /// Parses the raw (still percent-encoded) query string.
    pub fn parse(query: &str) -> Result<Params, String> {
        let mut p = Params {
            interval_ms: DEFAULT_SSE_INTERVAL_MS,
            ..Params::default()
        };
        for (k, v) in parse_pairs(query) {
            match k.as_str() {
                "sleep" => p.sleep_ms = Some(num(&k, &v)?),
                "flush_then_sleep" => p.flush_then_sleep_ms = Some(num(&k, &v)?),
                "alloc" => p.alloc_mib = Some(num(&k, &v)?),
                "hold" => p.hold_ms = Some(num(&k, &v)?),
                "child_alloc" => p.child_alloc_mib = Some(num(&k, &v)?),
                "child_after" => p.child_after_ms = num(&k, &v)?,
                "write" => p.write_mib = Some(num(&k, &v)?),
                "path" => p.path = Some(v),
                "url" => p.url = Some(v),
                "header" => p.header = Some(v),
                "exit" => p.exit = Some(num(&k, &v)?),
                "status" => {
                    let s: u16 = num(&k, &v)?;
                    if !(200..=999).contains(&s) {
                        return Err(format!("status={s}: must be in 200..=999"));
                    }
                    p.status = Some(s);
                }
                "bytes" => p.bytes = Some(num(&k, &v)?),
                "sse" => p.sse = Some(num(&k, &v)?),
                "interval" => p.interval_ms = num(&k, &v)?,
                "echo" => p.echo = flag(&v),
                "badheader" => p.badheader = flag(&v),
                "log" => p.log = Some(v),
                "log_stderr" => p.log_stderr = Some(v),
                _ => {}
            }
        }
        Ok(p)
    }
}

fn num<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, String> {
    v.trim()
        .parse()
        .map_err(|_| format!("{key}={v:?}: not a valid number"))
}

/// `echo`, `echo=1`, `echo=true` are on; `echo=0`, `echo=false`, `echo=no` are off.
fn flag(v: &str) -> bool {
    !matches!(v, "0" | "false" | "no" | "off")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode() {
        assert_eq!(percent_decode("a%20b+c"), "a b c");
        assert_eq!(percent_decode("%2Ftmp%2fx"), "/tmp/x");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%41"), "A");
        assert_eq!(percent_decode(""), "");
        assert_eq!(percent_decode("%E2%9C%93"), "\u{2713}");
    }

    #[test]
    fn pairs() {
        assert_eq!(
            parse_pairs("a=1&b&&c=x%3Dy"),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "".into()),
                ("c".into(), "x=y".into())
            ]
        );
        assert!(parse_pairs("").is_empty());
    }

    #[test]
    fn params_defaults() {
        let p = Params::parse("").unwrap();
        assert_eq!(p.sleep_ms, None);
        assert_eq!(p.interval_ms, DEFAULT_SSE_INTERVAL_MS);
        assert!(!p.echo);
    }

    #[test]
    fn params_values() {
        let p = Params::parse(
            "sleep=200&status=503&bytes=10&sse=3&interval=5&echo=1&path=%2Ftmp%2Fx&alloc=64&hold=10&write=2&exit=3&badheader&log=hello+world&flush_then_sleep=7&child_alloc=512&child_after=1000",
        )
        .unwrap();
        assert_eq!(p.sleep_ms, Some(200));
        assert_eq!(p.status, Some(503));
        assert_eq!(p.bytes, Some(10));
        assert_eq!(p.sse, Some(3));
        assert_eq!(p.interval_ms, 5);
        assert!(p.echo);
        assert!(p.badheader);
        assert_eq!(p.path.as_deref(), Some("/tmp/x"));
        assert_eq!(p.alloc_mib, Some(64));
        assert_eq!(p.hold_ms, Some(10));
        assert_eq!(p.write_mib, Some(2));
        assert_eq!(p.exit, Some(3));
        assert_eq!(p.log.as_deref(), Some("hello world"));
        assert_eq!(p.flush_then_sleep_ms, Some(7));
        assert_eq!(p.child_alloc_mib, Some(512));
        assert_eq!(p.child_after_ms, 1000);
    }

    #[test]
    fn params_last_wins_and_flags() {
        let p = Params::parse("sleep=1&sleep=2&echo=0").unwrap();
        assert_eq!(p.sleep_ms, Some(2));
        assert!(!p.echo);
        assert_eq!(Params::parse("exit=-1").unwrap().exit, Some(-1));
    }

    #[test]
    fn params_errors() {
        assert!(Params::parse("sleep=abc").is_err());
        assert!(Params::parse("status=100").is_err());
        assert!(Params::parse("status=1000").is_err());
        assert!(Params::parse("bytes=-1").is_err());
        assert!(Params::parse("unknown=zzz").is_ok());
    }
}
