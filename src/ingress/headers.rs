//! Header rules (contract HDR-1, HDR-2) and the headers runlet adds or removes when it
//! forwards a request.
//!
//! Added: `X-Forwarded-For` (client address appended), `X-Forwarded-Proto: http`,
//! `Forwarded` (RFC 7239 element appended), `traceparent` and `X-Cloud-Trace-Context`
//! (created when absent, each derived from the other when only one is present), `Host`
//! (from the request target when an HTTP/2 client sent only `:authority`).
//! Removed: hop-by-hop headers (`Connection` and the headers it names, `Keep-Alive`,
//! `Proxy-Connection`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`).

use std::net::IpAddr;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use rand::Rng;

// Names parsed once (a `&str` name is parsed and hashed on every use).
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static FORWARDED: HeaderName = HeaderName::from_static("forwarded");
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static X_CLOUD_TRACE: HeaderName = HeaderName::from_static("x-cloud-trace-context");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

fn is_hop_by_hop(n: &HeaderName) -> bool {
    n == header::CONNECTION
        || n == KEEP_ALIVE
        || n == PROXY_CONNECTION
        || n == header::TE
        || n == header::TRAILER
        || n == header::TRANSFER_ENCODING
        || n == header::UPGRADE
}

/// A header value made from bytes built here (visible ASCII by construction).
fn value(b: &[u8]) -> Option<HeaderValue> {
    HeaderValue::from_bytes(b).ok()
}

/// A name is printable, non-whitespace ASCII without a colon (HDR-1).
pub fn valid_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name
            .iter()
            .all(|&b| (0x21..=0x7e).contains(&b) && b != b':')
}

/// A value is visible ASCII plus space and horizontal tab (HDR-2). hyper lets bytes >= 0x80
/// through (obs-text); the contract does not.
pub fn valid_value(value: &[u8]) -> bool {
    // No early exit: the loop vectorises, and nearly every value is valid.
    value.iter().fold(true, |ok, &b| {
        ok & (b == b'\t' || (0x20..=0x7e).contains(&b))
    })
}

/// The first header breaking HDR-1/HDR-2, described for the 400 body and the log.
///
/// Only values need looking at: a `HeaderName` holds token characters only (the parser
/// refuses any other name with 400), and those are printable ASCII without whitespace or
/// colons, which is HDR-1.
pub fn check(headers: &HeaderMap) -> Result<(), String> {
    for (name, value) in headers {
        debug_assert!(valid_name(name.as_str().as_bytes()));
        if !valid_value(value.as_bytes()) {
            return Err(format!(
                "header {} has a value with bytes outside visible ASCII, space and tab",
                name.as_str()
            ));
        }
    }
    Ok(())
}

/// The protocol of an HTTP/1.1 upgrade request (`Connection: upgrade` + `Upgrade: X`).
pub fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        });
    asks.then(|| headers.get(http::header::UPGRADE).cloned())
        .flatten()
}

/// Drops response headers that break HDR-1/HDR-2 (runlet's choice: the response still
/// reaches the client, without the offending header); returns the names dropped.
pub fn drop_invalid(headers: &mut HeaderMap) -> Vec<String> {
    // (Names are valid by construction: see `check`.)
    let bad: Vec<HeaderName> = headers
        .iter()
        .filter(|(_, v)| !valid_value(v.as_bytes()))
        .map(|(n, _)| n.clone())
        .collect();
    let mut names = Vec::new();
    for n in bad {
        let kept: Vec<HeaderValue> = headers
            .get_all(&n)
            .iter()
            .filter(|v| valid_value(v.as_bytes()))
            .cloned()
            .collect();
        headers.remove(&n);
        for v in kept {
            headers.append(n.clone(), v);
        }
        if !names.contains(&n.to_string()) {
            names.push(n.to_string());
        }
    }
    names
}

/// Removes hop-by-hop headers, including those named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names; then a removal only for those present (most messages have
    // none, or only `Connection`).
    let mut present: [Option<HeaderName>; 7] = Default::default();
    for (slot, n) in present
        .iter_mut()
        .zip(headers.keys().filter(|n| is_hop_by_hop(n)))
    {
        *slot = Some(n.clone());
    }
    if present[0].is_none() {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        // The usual tokens name no header (`close`) or one removed anyway.
        .filter(|t| !t.eq_ignore_ascii_case("close") && !t.eq_ignore_ascii_case("keep-alive"))
        .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    for n in present.iter().flatten() {
        headers.remove(n);
    }
}

/// What the forwarding headers say about one client connection, worked out once per
/// connection rather than per request.
pub struct Client {
    /// The address alone (`X-Forwarded-For`'s element).
    addr: HeaderValue,
    /// `for=ADDR;proto=http` (a `Forwarded` element without the host).
    forwarded_for: String,
}

/// Forwarding headers a request may get: the request's own headers, those added, and a few
/// to spare, reserved at once rather than grown one insertion at a time.
const ADDED: usize = 8;

impl Client {
    pub fn new(ip: IpAddr) -> Self {
        let forwarded_for = match ip {
            IpAddr::V4(a) => format!("for={a};proto=http"),
            IpAddr::V6(a) => format!("for=\"[{a}]\";proto=http"),
        };
        let addr =
            value(ip.to_string().as_bytes()).unwrap_or_else(|| HeaderValue::from_static("unknown"));
        Client {
            addr,
            forwarded_for,
        }
    }
}

/// `prev, next` when the request already had a value, else `next`.
fn appended(prev: Option<&HeaderValue>, next: &[&str]) -> Option<HeaderValue> {
    let prev = prev
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|p| !p.is_empty());
    let mut out = Vec::with_capacity(
        prev.map_or(0, |p| p.len() + 2) + next.iter().map(|s| s.len()).sum::<usize>(),
    );
    if let Some(p) = prev {
        out.extend_from_slice(p.as_bytes());
        out.extend_from_slice(b", ");
    }
    for s in next {
        out.extend_from_slice(s.as_bytes());
    }
    // Exactly as long as allocated: the bytes become the value without another copy.
    HeaderValue::from_maybe_shared(Bytes::from(out)).ok()
}

/// Adds the forwarding and tracing headers for a request from `client`.
pub fn add_forwarding(headers: &mut HeaderMap, client: &Client, authority: Option<&str>) {
    headers.reserve(ADDED);
    let xff = match headers.get(&X_FORWARDED_FOR) {
        None => Some(client.addr.clone()),
        prev => client.addr.to_str().ok().and_then(|a| appended(prev, &[a])),
    };
    if let Some(v) = xff {
        headers.insert(&X_FORWARDED_FOR, v);
    }
    headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    let host = authority.filter(|h| h.bytes().all(|b| b.is_ascii_graphic()));
    let fwd = match host {
        Some(h) => appended(
            headers.get(&FORWARDED),
            &[&client.forwarded_for, ";host=\"", h, "\""],
        ),
        None => appended(headers.get(&FORWARDED), &[&client.forwarded_for]),
    };
    if let Some(v) = fwd {
        headers.insert(&FORWARDED, v);
    }
    if headers.get(http::header::HOST).is_none() {
        if let Some(v) = authority.and_then(|a| HeaderValue::from_str(a).ok()) {
            headers.insert(http::header::HOST, v);
        }
    }
    add_trace(headers);
}

/// Writes `v` as `out.len()` lowercase hex digits.
fn put_hex(out: &mut [u8], v: u128) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let n = out.len();
    for (i, d) in out.iter_mut().enumerate() {
        *d = HEX[((v >> ((n - 1 - i) * 4)) & 0xf) as usize];
    }
}

/// `traceparent` (W3C) and `X-Cloud-Trace-Context` (`TRACE_ID/SPAN_ID;o=OPTIONS`).
fn add_trace(headers: &mut HeaderMap) {
    let tp = headers
        .get(&TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_traceparent);
    let xc = headers
        .get(&X_CLOUD_TRACE)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_cloud_trace);
    let (trace, span, sampled) = match (tp, xc) {
        (Some(t), _) => t,
        (None, Some(c)) => c,
        (None, None) => {
            let mut rng = rand::thread_rng();
            let trace: u128 = rng.gen::<u128>() | 1;
            let span: u64 = rng.gen::<u64>() | 1;
            (trace, span, false)
        }
    };
    if tp.is_none() {
        // 00-TRACE(32)-SPAN(16)-FLAGS(2)
        let mut v = *b"00-00000000000000000000000000000000-0000000000000000-00";
        put_hex(&mut v[3..35], trace);
        put_hex(&mut v[36..52], span.into());
        if sampled {
            v[54] = b'1';
        }
        if let Some(v) = value(&v) {
            headers.insert(&TRACEPARENT, v);
        }
    }
    // Only when absent: one that is present but unparsable is the client's to keep.
    if !headers.contains_key(&X_CLOUD_TRACE) {
        let mut v = [0u8; 32 + 1 + 20 + 4];
        put_hex(&mut v[..32], trace);
        v[32] = b'/';
        let mut dec = itoa::Buffer::new();
        let dec = dec.format(span).as_bytes();
        let n = dec.len();
        v[33..33 + n].copy_from_slice(dec);
        v[33 + n..37 + n].copy_from_slice(if sampled { b";o=1" } else { b";o=0" });
        if let Some(v) = value(&v[..37 + n]) {
            headers.insert(&X_CLOUD_TRACE, v);
        }
    }
}

fn parse_traceparent(s: &str) -> Option<(u128, u64, bool)> {
    let parts: Vec<&str> = s.trim().split('-').collect();
    if parts.len() < 4 || parts[1].len() != 32 || parts[2].len() != 16 || parts[3].len() != 2 {
        return None;
    }
    let trace = u128::from_str_radix(parts[1], 16)
        .ok()
        .filter(|t| *t != 0)?;
    let span = u64::from_str_radix(parts[2], 16).ok().filter(|s| *s != 0)?;
    let flags = u8::from_str_radix(parts[3], 16).ok()?;
    Some((trace, span, flags & 1 == 1))
}

fn parse_cloud_trace(s: &str) -> Option<(u128, u64, bool)> {
    let (trace, rest) = s.trim().split_once('/')?;
    let trace = u128::from_str_radix(trace, 16).ok().filter(|t| *t != 0)?;
    let (span, opts) = match rest.split_once(';') {
        Some((s, o)) => (s, Some(o)),
        None => (rest, None),
    };
    let span: u64 = span.parse().ok().filter(|s| *s != 0)?;
    Some((trace, span, opts == Some("o=1")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_and_value_rules() {
        let names: [(&[u8], bool); 6] = [
            (b"x-ok", true),
            (b"X_Ok!", true),
            (b"has space", false),
            (b"colon:", false),
            (b"", false),
            (b"tab\t", false),
        ];
        for (n, ok) in names {
            assert_eq!(valid_name(n), ok, "{n:?}");
        }
        let values: [(&[u8], bool); 6] = [
            (b"plain", true),
            (b"with space\tand tab", true),
            (b"", true),
            (b"ctl\x01", false),
            (b"del\x7f", false),
            (b"obs\xe9text", false),
        ];
        for (v, ok) in values {
            assert_eq!(valid_value(v), ok, "{v:?}");
        }
    }

    #[test]
    fn obs_text_value_is_refused() {
        let mut h = HeaderMap::new();
        h.insert("x-bad", HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap());
        assert!(check(&h).is_err());
        h.clear();
        h.insert("x-good", HeaderValue::from_static("fine"));
        assert!(check(&h).is_ok());
    }

    #[test]
    fn invalid_response_headers_are_dropped_valid_ones_kept() {
        let mut h = HeaderMap::new();
        h.append("x-mixed", HeaderValue::from_static("good"));
        h.append("x-mixed", HeaderValue::from_bytes(b"bad\xff").unwrap());
        h.insert("x-ok", HeaderValue::from_static("fine"));
        let dropped = drop_invalid(&mut h);
        assert_eq!(dropped, vec!["x-mixed".to_string()]);
        assert_eq!(
            h.get_all("x-mixed").iter().collect::<Vec<_>>(),
            vec!["good"]
        );
        assert_eq!(h["x-ok"], "fine");
    }

    #[test]
    fn upgrade_requests_are_recognised() {
        let mut h = HeaderMap::new();
        assert!(upgrade_protocol(&h).is_none());
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        assert_eq!(upgrade_protocol(&h).unwrap(), "websocket");
    }

    #[test]
    fn hop_by_hop_are_stripped() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("x-user", HeaderValue::from_static("kept"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert_eq!(h["x-user"], "kept");
    }

    #[test]
    fn forwarding_headers() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.7"));
        add_forwarding(
            &mut h,
            &Client::new("127.0.0.1".parse().unwrap()),
            Some("example.com:8080"),
        );
        assert_eq!(h["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(
            h["forwarded"],
            "for=127.0.0.1;proto=http;host=\"example.com:8080\""
        );
        assert_eq!(h["host"], "example.com:8080");
        let tp = h["traceparent"].to_str().unwrap();
        assert!(parse_traceparent(tp).is_some(), "{tp}");
        let xc = h["x-cloud-trace-context"].to_str().unwrap();
        assert_eq!(
            parse_cloud_trace(xc).unwrap().0,
            parse_traceparent(tp).unwrap().0
        );
    }

    #[test]
    fn trace_is_propagated_not_replaced() {
        let mut h = HeaderMap::new();
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        h.insert("traceparent", HeaderValue::from_static(tp));
        add_forwarding(&mut h, &Client::new("::1".parse().unwrap()), None);
        assert_eq!(h["traceparent"], tp);
        assert_eq!(
            h["x-cloud-trace-context"],
            format!(
                "4bf92f3577b34da6a3ce929d0e0e4736/{};o=1",
                0x00f067aa0ba902b7u64
            )
        );
        assert_eq!(h["forwarded"], "for=\"[::1]\";proto=http");
    }

    #[test]
    fn forwarding_headers_with_and_without_earlier_hops() {
        // (client, incoming x-forwarded-for, incoming forwarded, host) → (xff, forwarded)
        let cases = [
            (
                "10.0.0.1",
                None,
                None,
                None,
                "10.0.0.1",
                "for=10.0.0.1;proto=http",
            ),
            (
                "::1",
                Some(" "),
                Some("for=1.1.1.1"),
                Some("h"),
                "::1",
                "for=1.1.1.1, for=\"[::1]\";proto=http;host=\"h\"",
            ),
            (
                "10.0.0.1",
                Some("1.1.1.1, 2.2.2.2"),
                None,
                Some("bad host"),
                "1.1.1.1, 2.2.2.2, 10.0.0.1",
                "for=10.0.0.1;proto=http",
            ),
        ];
        for (ip, xff, fwd, host, want_xff, want_fwd) in cases {
            let mut h = HeaderMap::new();
            if let Some(v) = xff {
                h.insert("x-forwarded-for", HeaderValue::from_static(v));
            }
            if let Some(v) = fwd {
                h.insert("forwarded", HeaderValue::from_static(v));
            }
            add_forwarding(&mut h, &Client::new(ip.parse().unwrap()), host);
            assert_eq!(h["x-forwarded-for"], want_xff, "{ip} {xff:?}");
            assert_eq!(h["forwarded"], want_fwd, "{ip} {fwd:?}");
        }
    }

    #[test]
    fn trace_headers_are_derived_from_each_other_exactly() {
        let cases = [
            (
                "x-cloud-trace-context",
                "105445aa7843bc8bf206b12000100000/123;o=1",
                "traceparent",
                "00-105445aa7843bc8bf206b12000100000-000000000000007b-01",
            ),
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
                "x-cloud-trace-context",
                "0af7651916cd43dd8448eb211c80319c/13235353014750950193;o=0",
            ),
        ];
        for (given, value, derived, want) in cases {
            let mut h = HeaderMap::new();
            h.insert(given, HeaderValue::from_static(value));
            add_forwarding(&mut h, &Client::new("::1".parse().unwrap()), None);
            assert_eq!(h[given], value);
            assert_eq!(h[derived], want);
        }
        let mut h = HeaderMap::new();
        add_forwarding(&mut h, &Client::new("::1".parse().unwrap()), None);
        let tp = h["traceparent"].to_str().unwrap();
        assert_eq!(tp.len(), 55, "{tp}");
        assert!(tp.ends_with("-00"), "{tp}");
    }
}
