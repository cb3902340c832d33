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

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use rand::Rng;

// Names parsed once (a `&str` name is parsed and hashed on every use).
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static FORWARDED: HeaderName = HeaderName::from_static("forwarded");
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static X_CLOUD_TRACE: HeaderName = HeaderName::from_static("x-cloud-trace-context");

/// Whether a field named `n` (any case) is hop-by-hop: `Connection`, `Keep-Alive`,
/// `Proxy-Connection`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`.
pub fn is_hop_by_hop_name(n: &[u8]) -> bool {
    // Checked on every field of every request: the length rules out most names at once.
    match n.len() {
        2 => n.eq_ignore_ascii_case(b"te"),
        7 => n.eq_ignore_ascii_case(b"trailer") || n.eq_ignore_ascii_case(b"upgrade"),
        10 => n.eq_ignore_ascii_case(b"connection") || n.eq_ignore_ascii_case(b"keep-alive"),
        16 => n.eq_ignore_ascii_case(b"proxy-connection"),
        17 => n.eq_ignore_ascii_case(b"transfer-encoding"),
        _ => false,
    }
}

/// The header names a `Connection` value lists (to be removed with it). The usual tokens
/// name no header (`close`) or one removed anyway (`keep-alive`), and are left out.
pub fn connection_tokens(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',').map(<[u8]>::trim_ascii).filter(|t| {
        !t.is_empty() && !t.eq_ignore_ascii_case(b"close") && !t.eq_ignore_ascii_case(b"keep-alive")
    })
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
/// Only values need looking at: a `HeaderName`, and a name httparse accepted, holds token
/// characters only (the parsers refuse any other name with 400), and those are printable
/// ASCII without whitespace or colons, which is HDR-1.
pub fn check(headers: &HeaderMap) -> Result<(), String> {
    check_fields(
        headers
            .iter()
            .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes())),
    )
}

/// [`check`] over fields as sent.
pub fn check_fields<'a>(fields: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> Result<(), String> {
    for (name, value) in fields {
        debug_assert!(valid_name(name));
        if !valid_value(value) {
            return Err(format!(
                "header {} has a value with bytes outside visible ASCII, space and tab",
                String::from_utf8_lossy(name).to_ascii_lowercase()
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
    for (slot, n) in present.iter_mut().zip(
        headers
            .keys()
            .filter(|n| is_hop_by_hop_name(n.as_str().as_bytes())),
    ) {
        *slot = Some(n.clone());
    }
    if present[0].is_none() {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .flat_map(|v| connection_tokens(v.as_bytes()))
        .filter_map(|n| HeaderName::from_bytes(n).ok())
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
    addr: String,
    /// `for=ADDR;proto=http` (a `Forwarded` element without the host).
    forwarded_for: String,
}

impl Client {
    pub fn new(ip: IpAddr) -> Self {
        let forwarded_for = match ip {
            IpAddr::V4(a) => format!("for={a};proto=http"),
            IpAddr::V6(a) => format!("for=\"[{a}]\";proto=http"),
        };
        Client {
            addr: ip.to_string(),
            forwarded_for,
        }
    }
}

/// The request's own values of the headers the forwarding headers build on (the first
/// field of each name, as `HeaderMap::get` gives).
#[derive(Default)]
pub struct Seen<'a> {
    pub xff: Option<&'a [u8]>,
    pub forwarded: Option<&'a [u8]>,
    pub traceparent: Option<&'a [u8]>,
    pub cloud_trace: Option<&'a [u8]>,
    pub host: Option<&'a [u8]>,
}

/// Whether a forwarded request keeps the client's field `name` (any case) as it came:
/// `false` for the headers [`forwarding`] sets in its place (a `traceparent` is replaced
/// only when it does not parse).
pub fn keeps(name: &[u8], seen: &Seen<'_>) -> bool {
    // Only names of these lengths can be one of them.
    match name.len() {
        9 => !name.eq_ignore_ascii_case(b"forwarded"),
        11 => !name.eq_ignore_ascii_case(b"traceparent") || valid_traceparent(seen),
        15 => !name.eq_ignore_ascii_case(b"x-forwarded-for"),
        17 => !name.eq_ignore_ascii_case(b"x-forwarded-proto"),
        _ => true,
    }
}

fn valid_traceparent(seen: &Seen<'_>) -> bool {
    seen.traceparent.and_then(parse_traceparent).is_some()
}

/// The value of a field, in pieces written one after another.
pub type Pieces<'a> = [&'a [u8]];

/// The forwarding and trace headers for a request from `client` whose own values are
/// `seen` and whose authority (the target's, else `Host`) is `authority`; each is passed to
/// `put`, to replace any field of that name (see the module comment for what is set).
/// Typed requests and raw ones ([`super::raw`]) both get theirs from here.
pub fn forwarding(
    seen: &Seen<'_>,
    client: &Client,
    authority: Option<&[u8]>,
    put: &mut dyn FnMut(&HeaderName, &Pieces<'_>),
) {
    let addr = client.addr.as_bytes();
    match nonempty(seen.xff) {
        Some(prev) => put(&X_FORWARDED_FOR, &[prev, b", ", addr]),
        None => put(&X_FORWARDED_FOR, &[addr]),
    }
    put(&X_FORWARDED_PROTO, &[b"http"]);
    let (prev, sep): (&[u8], &[u8]) = match nonempty(seen.forwarded) {
        Some(p) => (p, b", "),
        None => (b"", b""),
    };
    let fwd = client.forwarded_for.as_bytes();
    match authority.map(forwarded_host) {
        Some(ForwardedHost::AsIs(h)) => put(&FORWARDED, &[prev, sep, fwd, b";host=\"", h, b"\""]),
        Some(ForwardedHost::Escaped(h)) => {
            put(&FORWARDED, &[prev, sep, fwd, b";host=\"", &h, b"\""])
        }
        Some(ForwardedHost::Omitted) | None => put(&FORWARDED, &[prev, sep, fwd]),
    }
    if seen.host.is_none() {
        if let Some(a) = authority {
            put(&header::HOST, &[a]);
        }
    }
    // `traceparent` (W3C) and `X-Cloud-Trace-Context` (`TRACE_ID/SPAN_ID;o=OPTIONS`).
    let tp = seen.traceparent.and_then(parse_traceparent);
    let xc = seen.cloud_trace.and_then(parse_cloud_trace);
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
        put(&TRACEPARENT, &[&v]);
    }
    // Only when absent: one that is present but unparsable is the client's to keep.
    if seen.cloud_trace.is_none() {
        let mut v = [0u8; 32 + 1];
        put_hex(&mut v[..32], trace);
        v[32] = b'/';
        let mut dec = itoa::Buffer::new();
        let opts: &[u8] = if sampled { b";o=1" } else { b";o=0" };
        put(&X_CLOUD_TRACE, &[&v, dec.format(span).as_bytes(), opts]);
    }
}

/// How a request's host goes into its `Forwarded` element's `host="..."` (RFC 7239 §5.3):
/// the host is the client's, so it must never end the quoted string early and forge an
/// element or parameter of its own (`Host: a",for=6.6.6.6;host="b`).
#[derive(Debug, PartialEq, Eq)]
pub enum ForwardedHost<'a> {
    /// An authority (RFC 3986 §3.2: a reg-name or IP-literal and an optional port): it holds
    /// no `"`, `\` nor whitespace, and goes in as it is.
    AsIs(&'a [u8]),
    /// Anything else of visible ASCII, space and tab: a quoted-string with `"` and `\`
    /// escaped (RFC 7230 §3.2.6 quoted-pair).
    Escaped(Vec<u8>),
    /// Empty, or bytes a quoted-string cannot hold: no `host` parameter.
    Omitted,
}

/// See [`ForwardedHost`].
pub fn forwarded_host(h: &[u8]) -> ForwardedHost<'_> {
    if h.is_empty() {
        ForwardedHost::Omitted
    } else if is_authority(h) {
        ForwardedHost::AsIs(h)
    } else if valid_value(h) {
        let mut out = Vec::with_capacity(h.len() + 4);
        for &b in h {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        ForwardedHost::Escaped(out)
    } else {
        ForwardedHost::Omitted
    }
}

/// Whether `h` is `host [":" port]` as RFC 3986 §3.2 has it: host an IP-literal (`[...]`,
/// hex digits, `:` and `.` inside, or an IPvFuture of unreserved, sub-delims and `:`) or a
/// reg-name (unreserved, `%XX` and sub-delims), port digits only.
pub fn is_authority(h: &[u8]) -> bool {
    let unreserved = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
    let sub_delim = |b: u8| b"!$&'()*+,;=".contains(&b);
    let (host, port) = if let Some(rest) = h.strip_prefix(b"[") {
        let Some(end) = rest.iter().position(|&b| b == b']') else {
            return false;
        };
        let inside = &rest[..end];
        if inside.is_empty()
            || !inside
                .iter()
                .all(|&b| unreserved(b) || sub_delim(b) || b == b':')
        {
            return false;
        }
        (None, &rest[end + 1..])
    } else {
        match h.iter().position(|&b| b == b':') {
            Some(i) => (Some(&h[..i]), &h[i..]),
            None => (Some(h), &h[h.len()..]),
        }
    };
    let port_ok = match port.split_first() {
        None => true,
        Some((b':', digits)) => digits.iter().all(u8::is_ascii_digit),
        Some(_) => false,
    };
    let host_ok = host.is_none_or(|host| {
        let mut i = 0;
        while i < host.len() {
            let b = host[i];
            if b == b'%' {
                if !(i + 2 < host.len()
                    && host[i + 1].is_ascii_hexdigit()
                    && host[i + 2].is_ascii_hexdigit())
                {
                    return false;
                }
                i += 3;
                continue;
            }
            if !(unreserved(b) || sub_delim(b)) {
                return false;
            }
            i += 1;
        }
        true
    });
    port_ok && host_ok
}

/// RFC 9112 §3.2: a request with more than one `Host` field, or an HTTP/1.1 request with
/// none, gets 400 (`host_fields` is how many it has). HTTP/1.0 may leave it out, and
/// HTTP/2 names its host in `:authority`.
pub fn host_rule(http11: bool, host_fields: usize) -> Result<(), &'static str> {
    match host_fields {
        0 if http11 => Err("an HTTP/1.1 request needs a Host header"),
        0 | 1 => Ok(()),
        _ => Err("more than one Host header"),
    }
}

/// A value with its surrounding whitespace trimmed, if anything is left.
fn nonempty(v: Option<&[u8]>) -> Option<&[u8]> {
    v.map(<[u8]>::trim_ascii).filter(|p| !p.is_empty())
}

/// Adds the forwarding and tracing headers for a request from `client` (see
/// [`forwarding`]).
pub fn add_forwarding(headers: &mut HeaderMap, client: &Client, authority: Option<&str>) {
    let get = |n: &HeaderName| headers.get(n).map(HeaderValue::as_bytes);
    let seen = Seen {
        xff: get(&X_FORWARDED_FOR),
        forwarded: get(&FORWARDED),
        traceparent: get(&TRACEPARENT),
        cloud_trace: get(&X_CLOUD_TRACE),
        host: get(&header::HOST),
    };
    let mut added: Vec<(HeaderName, HeaderValue)> = Vec::with_capacity(8);
    forwarding(
        &seen,
        client,
        authority.map(str::as_bytes),
        &mut |n, pieces| {
            if let Some(v) = value(&pieces.concat()) {
                added.push((n.clone(), v));
            }
        },
    );
    for (n, v) in added {
        headers.insert(n, v);
    }
}

/// Writes `v` as `out.len()` lowercase hex digits.
fn put_hex(out: &mut [u8], v: u128) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let n = out.len();
    for (i, d) in out.iter_mut().enumerate() {
        *d = HEX[((v >> ((n - 1 - i) * 4)) & 0xf) as usize];
    }
}

fn parse_traceparent(s: &[u8]) -> Option<(u128, u64, bool)> {
    let s = std::str::from_utf8(s).ok()?;
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

fn parse_cloud_trace(s: &[u8]) -> Option<(u128, u64, bool)> {
    let s = std::str::from_utf8(s).ok()?;
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
        // (bytes, valid as a name, valid as a value)
        let table: [(&[u8], bool, bool); 10] = [
            (b"x-ok", true, true),
            (b"X_Ok!", true, true),
            (b"has space", false, true),
            (b"colon:", false, true),
            (b"", false, true),
            (b"tab\t", false, true),
            (b"with space\tand tab", false, true),
            (b"ctl\x01", false, false),
            (b"del\x7f", false, false),
            (b"obs\xe9text", false, false),
        ];
        for (input, name, value) in table {
            let got = (valid_name(input), valid_value(input));
            assert_eq!(got, (name, value), "{input:?}");
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
        assert!(parse_traceparent(tp.as_bytes()).is_some(), "{tp}");
        let xc = h["x-cloud-trace-context"].to_str().unwrap();
        assert_eq!(
            parse_cloud_trace(xc.as_bytes()).unwrap().0,
            parse_traceparent(tp.as_bytes()).unwrap().0
        );
    }

    #[test]
    fn authorities_are_recognised() {
        let table: [(&[u8], bool); 17] = [
            (b"example.com", true),
            (b"example.com:8080", true),
            (b"svc.localhost:", true),
            (b"127.0.0.1:80", true),
            (b"[::1]:8080", true),
            (b"[fe80::1%25eth0]", false),
            (b"[v1.x]", true),
            (b"a%41b", true),
            (b"a,b;c=d", true),
            (b"a%4", false),
            (b"a\",for=6.6.6.6;host=\"b", false),
            (b"bad host", false),
            (b"a\\b", false),
            (b"h:80x", false),
            (b"[::1", false),
            (b"[::1]x", false),
            (b"a:1:2", false),
        ];
        for (h, want) in table {
            assert_eq!(is_authority(h), want, "{:?}", String::from_utf8_lossy(h));
        }
    }

    #[test]
    fn a_host_cannot_forge_a_forwarded_element() {
        // (Host, the Forwarded header sent on)
        let table: [(&str, &str); 5] = [
            (
                "ok.example:1",
                r#"for=10.0.0.1;proto=http;host="ok.example:1""#,
            ),
            (
                r#"a",for=6.6.6.6;host="b"#,
                r#"for=10.0.0.1;proto=http;host="a\",for=6.6.6.6;host=\"b""#,
            ),
            (r"a\", r#"for=10.0.0.1;proto=http;host="a\\""#),
            ("bad host", r#"for=10.0.0.1;proto=http;host="bad host""#),
            ("", "for=10.0.0.1;proto=http"),
        ];
        for (host, want) in table {
            let mut h = HeaderMap::new();
            let client = Client::new("10.0.0.1".parse().unwrap());
            add_forwarding(&mut h, &client, Some(host));
            assert_eq!(h["forwarded"], want, "{host:?}");
            // Whatever the host, one element, its quotes closed.
            let (mut quoted, mut escaped, mut elements) = (false, false, 1);
            for &b in h["forwarded"].as_bytes() {
                match b {
                    _ if escaped => escaped = false,
                    b'\\' if quoted => escaped = true,
                    b'"' => quoted = !quoted,
                    b',' if !quoted => elements += 1,
                    _ => {}
                }
            }
            assert_eq!((elements, quoted), (1, false), "{host:?}");
        }
        assert_eq!(forwarded_host(b"caf\xc3\xa9"), ForwardedHost::Omitted);
    }

    #[test]
    fn host_fields_rule() {
        // (HTTP/1.1, Host fields) -> allowed
        let table = [
            (true, 0, false),
            (true, 1, true),
            (true, 2, false),
            (false, 0, true),
            (false, 1, true),
            (false, 3, false),
        ];
        for (http11, n, ok) in table {
            assert_eq!(host_rule(http11, n).is_ok(), ok, "{http11} {n}");
        }
    }

    #[test]
    fn names_with_underscores_are_passed_on() {
        // runlet's choice, as Cloud Run's front end: see docs/architecture.md.
        let mut h = HeaderMap::new();
        h.insert("x_user_id", HeaderValue::from_static("7"));
        assert!(check(&h).is_ok());
        strip_hop_by_hop(&mut h);
        add_forwarding(&mut h, &Client::new("::1".parse().unwrap()), None);
        assert_eq!(h["x_user_id"], "7");
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
                "for=10.0.0.1;proto=http;host=\"bad host\"",
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
