//! The request path as the container sees it: protocol (TLS-1, TLS-2), forwarding and user
//! headers, header validation (HDR-1, HDR-2), and the request timeout (RESP-1).

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Result};
use serde_json::Value;

use super::{secs, PROBE};
use crate::harness::{Ctx, Served};
use crate::http::Request;

/// The request headers the probe saw, as (lower-case name, value).
fn seen_headers(report: &Value) -> Vec<(String, String)> {
    report["request"]["headers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| Some((p[0].as_str()?.to_string(), p[1].as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

fn seen<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

/// One header value the container must have seen exactly once.
fn seen_one<'a>(headers: &'a [(String, String)], name: &str) -> Result<&'a str> {
    match seen(headers, name).as_slice() {
        [v] => Ok(v),
        [] => bail!("the container got no {name} header"),
        many => bail!("the container got {} {name} headers: {many:?}", many.len()),
    }
}

async fn version_seen(s: &Served) -> Result<(String, String)> {
    let h1 = s.report().await?;
    let (status, body) = s.h2c_get("/", Duration::from_secs(30)).await?;
    ensure!(
        status == 200,
        "h2c GET /: status {status}: {}",
        String::from_utf8_lossy(&body)
    );
    let h2: Value = serde_json::from_slice(&body)
        .map_err(|e| anyhow!("h2c GET /: body is not the probe's JSON: {e}"))?;
    Ok((
        h1["request"]["version"].as_str().unwrap_or("?").to_string(),
        h2["request"]["version"].as_str().unwrap_or("?").to_string(),
    ))
}

pub(super) async fn http1_to_container(ctx: Ctx) -> Result<()> {
    let s = ctx.serve(&["--image", PROBE]).await?;
    let (from_h1, from_h2) = version_seen(&s).await?;
    ensure!(
        from_h1 == "HTTP/1.1" && from_h2 == "HTTP/1.1",
        "the container saw {from_h1} for an HTTP/1.1 client and {from_h2} for an h2c client; want HTTP/1.1 for both"
    );
    Ok(())
}

pub(super) async fn h2c_end_to_end(ctx: Ctx) -> Result<()> {
    let s = ctx.serve(&["--image", PROBE, "--use-http2"]).await?;
    let (from_h1, from_h2) = version_seen(&s).await?;
    ensure!(
        from_h1 == "HTTP/2.0" && from_h2 == "HTTP/2.0",
        "with --use-http2 the container saw {from_h1} for an HTTP/1.1 client and {from_h2} for an h2c client; want HTTP/2.0 (h2c) for both"
    );
    Ok(())
}

/// Splits an RFC 7239 `Forwarded` value into elements of (lower-case name, value) pairs,
/// unquoting quoted strings.
pub fn parse_forwarded(v: &str) -> Result<Vec<Vec<(String, String)>>, String> {
    let mut elements = Vec::new();
    let mut pairs = Vec::new();
    let mut chars = v.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
            chars.next();
        }
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' {
                break;
            }
            if !(c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)) {
                return Err(format!("bad character {c:?} in a parameter name of {v:?}"));
            }
            name.push(c);
            chars.next();
        }
        if name.is_empty() || chars.next() != Some('=') {
            return Err(format!("expected name=value in {v:?}"));
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => value.push(chars.next().ok_or("dangling backslash")?),
                    Some(c) => value.push(c),
                    None => return Err(format!("unterminated quoted string in {v:?}")),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ';' || c == ',' || c == ' ' || c == '\t' {
                    break;
                }
                value.push(c);
                chars.next();
            }
            if value.is_empty() {
                return Err(format!("empty value for {name} in {v:?}"));
            }
        }
        pairs.push((name.to_ascii_lowercase(), value));
        while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
            chars.next();
        }
        match chars.next() {
            Some(';') => {}
            Some(',') => elements.push(std::mem::take(&mut pairs)),
            None => {
                elements.push(pairs);
                return Ok(elements);
            }
            Some(c) => return Err(format!("unexpected {c:?} in {v:?}")),
        }
    }
}

/// A `for=` node: an IP, `[IPv6]` (optionally with a port), or an obfuscated/unknown node.
fn node_ip(node: &str) -> Option<IpAddr> {
    if let Some(rest) = node.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    node.split(':').next()?.parse().ok()
}

pub(super) async fn forwarding_headers(ctx: Ctx) -> Result<()> {
    let s = ctx.serve(&["--image", PROBE]).await?;
    // Any Host is kept; through a server that routes by host, the service's own.
    let host = s.host_or(&format!("conformance.example:{}", s.addr.port()));
    let r = s
        .send(
            &Request::get("/")
                .header("Host", host.clone())
                .header("X-Forwarded-For", "203.0.113.7"),
        )
        .await?;
    ensure!(r.status == 200, "status {}: {}", r.status, r.brief());
    let h = seen_headers(&r.json()?);

    let got_host = seen_one(&h, "host")?;
    ensure!(got_host == host, "Host is {got_host:?}, want {host:?}");

    let xff = seen_one(&h, "x-forwarded-for")?;
    let ips: Vec<Result<IpAddr, _>> = xff.split(',').map(|p| p.trim().parse()).collect();
    ensure!(
        ips.iter().all(|r| r.is_ok()),
        "X-Forwarded-For {xff:?} is not a list of IPs"
    );
    let ips: Vec<IpAddr> = ips.into_iter().flatten().collect();
    ensure!(
        ips.first().map(|ip| ip.to_string()).as_deref() == Some("203.0.113.7")
            && ips.last().is_some_and(|ip| ip.is_loopback()),
        "X-Forwarded-For {xff:?}: want the client's list (203.0.113.7) followed by the client's address (127.0.0.1)"
    );

    let proto = seen_one(&h, "x-forwarded-proto")?;
    ensure!(
        proto == "http" || proto == "https",
        "X-Forwarded-Proto is {proto:?}, want http or https"
    );

    let fwd = seen(&h, "forwarded").join(", ");
    ensure!(!fwd.is_empty(), "the container got no Forwarded header");
    let elements = parse_forwarded(&fwd).map_err(|e| anyhow!("Forwarded: {e}"))?;
    let last = elements
        .last()
        .ok_or_else(|| anyhow!("Forwarded {fwd:?} has no element"))?;
    let get = |k: &str| last.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let for_node = get("for").ok_or_else(|| anyhow!("Forwarded {fwd:?}: no for="))?;
    ensure!(
        node_ip(for_node).is_some_and(|ip| ip.is_loopback()),
        "Forwarded {fwd:?}: for={for_node} is not the client's address"
    );
    if let Some(p) = get("proto") {
        ensure!(p == "http" || p == "https", "Forwarded {fwd:?}: proto={p}");
    }
    if let Some(hst) = get("host") {
        ensure!(hst == host, "Forwarded {fwd:?}: host={hst}, want {host}");
    }
    Ok(())
}

/// Sends each raw header; each must get 400. Then the probe must have seen only the one
/// request made afterwards. Every problem is reported, not just the first.
///
/// The body is not checked: header lines that HTTP/1.1's grammar itself forbids (a space or
/// DEL in a name, a control byte in a value) are refused by runlet's HTTP parser (hyper)
/// before runlet sees the request, with an empty-bodied `400 Bad Request`; runlet's own
/// check (e.g. bytes >= 0x80, which the grammar tolerates) answers 400 with a reason.
async fn refused_and_not_forwarded(s: &Served, bad: &[(&str, &[u8])]) -> Result<()> {
    let mut problems = Vec::new();
    for (name, value) in bad {
        let shown = format!("{name:?}: {:?}", String::from_utf8_lossy(value));
        let r = s
            .send(&Request::get("/").header(name, value.to_vec()))
            .await?;
        if r.status != 400 {
            problems.push(format!("{shown} got status {}, want 400", r.status));
        }
    }
    let r = s.report().await?;
    let total = &r["concurrency"]["requests_total"];
    if *total != 1 {
        problems.push(format!(
            "the probe counted {total} requests, want 1 (only the last, valid one): a refused request reached it"
        ));
    }
    ensure!(problems.is_empty(), "{}", problems.join("; "));
    Ok(())
}

pub(super) async fn bad_names_400(ctx: Ctx) -> Result<()> {
    let s = ctx.serve(&["--image", PROBE]).await?;
    refused_and_not_forwarded(
        &s,
        &[
            ("Bad Name", b"x"),
            ("Bad\x7fName", b"x"),
            ("X-Caf\u{e9}", b"x"),
        ],
    )
    .await
}

pub(super) async fn bad_values_400(ctx: Ctx) -> Result<()> {
    let s = ctx.serve(&["--image", PROBE]).await?;
    refused_and_not_forwarded(
        &s,
        &[
            ("X-Control", b"a\x01b"),
            ("X-Del", b"a\x7fb"),
            ("X-Utf8", "caf\u{e9}".as_bytes()),
            ("X-Latin1", b"caf\xe9"),
        ],
    )
    .await
}

const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

fn well_formed_traceparent(v: &str) -> bool {
    let p: Vec<&str> = v.split('-').collect();
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    p.len() == 4
        && hex(p[0], 2)
        && p[0] != "ff"
        && hex(p[1], 32)
        && p[1].bytes().any(|b| b != b'0')
        && hex(p[2], 16)
        && p[2].bytes().any(|b| b != b'0')
        && hex(p[3], 2)
}

pub(super) async fn valid_headers_unchanged(ctx: Ctx) -> Result<()> {
    let s = ctx.serve(&["--image", PROBE]).await?;
    let user = "value with  two spaces\tand a tab ~!#$%&'*+-.^_`|()<>@[]{}\"/?=";
    let r = s
        .send(
            &Request::get("/")
                .header("X-Conformance-User", user)
                .header("traceparent", TRACEPARENT),
        )
        .await?;
    ensure!(r.status == 200, "status {}: {}", r.status, r.brief());
    let h = seen_headers(&r.json()?);
    let got = seen_one(&h, "x-conformance-user")?;
    ensure!(
        got == user,
        "X-Conformance-User arrived as {got:?}, sent {user:?}"
    );
    let tp = seen_one(&h, "traceparent")?;
    ensure!(
        tp == TRACEPARENT,
        "traceparent arrived as {tp:?}, sent {TRACEPARENT:?}"
    );

    let h = seen_headers(&s.report().await?);
    let tp = seen_one(&h, "traceparent")?;
    ensure!(
        well_formed_traceparent(tp),
        "without a traceparent from the client, the container got {tp:?}: not a W3C traceparent"
    );
    Ok(())
}

pub(super) async fn within_timeout_200(ctx: Ctx) -> Result<()> {
    let s = ctx.serve(&["--image", PROBE, "--timeout", "10"]).await?;
    let r = s.get_within("/?sleep=2000", 30).await?;
    ensure!(
        r.status == 200 && r.complete,
        "status {} after {} (complete body: {}), want 200",
        r.status,
        secs(r.head_after),
        r.complete
    );
    Ok(())
}

pub(super) async fn past_timeout_504(ctx: Ctx) -> Result<()> {
    let s = ctx.serve(&["--image", PROBE, "--timeout", "10"]).await?;
    let r = s.get_within("/?sleep=12000", 30).await?;
    ensure!(
        r.status == 504,
        "status {} after {}, want 504 at 10 s",
        r.status,
        secs(r.head_after)
    );
    ensure!(
        r.head_after >= Duration::from_millis(9500) && r.head_after <= Duration::from_millis(11500),
        "504 came after {}, want 10 s",
        secs(r.head_after)
    );
    Ok(())
}

pub(super) async fn streamed_body_cut_at_timeout(ctx: Ctx) -> Result<()> {
    let s = ctx.serve(&["--image", PROBE, "--timeout", "10"]).await?;
    let r = s.get_within("/?flush_then_sleep=15000", 30).await?;
    ensure!(
        r.status == 200,
        "status {}, want 200: the headers were sent before the timeout",
        r.status
    );
    ensure!(
        r.head_after < Duration::from_secs(3),
        "the headers came after {}, want at once (flushed)",
        secs(r.head_after)
    );
    let body = r.text();
    ensure!(
        body.contains("\"started\":true"),
        "the first chunk is missing: {body:?}"
    );
    ensure!(
        !r.complete && !body.contains("done"),
        "the body ended normally after {} ({body:?}); want it cut at the 10 s timeout",
        secs(r.end_after)
    );
    ensure!(
        r.end_after >= Duration::from_millis(9500) && r.end_after <= Duration::from_millis(12000),
        "the body was cut after {}, want 10 s",
        secs(r.end_after)
    );
    Ok(())
}

pub(super) async fn timeout_includes_startup(ctx: Ctx) -> Result<()> {
    let s = ctx
        .serve(&[
            "--image",
            PROBE,
            "--timeout",
            "3",
            "--idle-timeout",
            "1s",
            "--set-env-vars",
            "PROBE_LISTEN_DELAY_MS=6000",
        ])
        .await?;
    ctx.wait_no_containers("waiting for the idle instance to go (--idle-timeout 1s)")
        .await?;
    let r = s.get_within("/", 30).await?;
    ensure!(
        r.status == 504,
        "status {} after {}, want 504 at 3 s (the new instance needs 6 s to listen)",
        r.status,
        secs(r.head_after)
    );
    ensure!(
        r.head_after >= Duration::from_millis(2500) && r.head_after <= Duration::from_millis(4500),
        "504 came after {}, want 3 s",
        secs(r.head_after)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_parsing() {
        let e = parse_forwarded("for=192.0.2.60;proto=http;by=203.0.113.43").unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0][0], ("for".into(), "192.0.2.60".into()));
        let e = parse_forwarded(
            "for=\"[2001:db8:cafe::17]:4711\", For=127.0.0.1;proto=https;host=\"a.example:80\"",
        )
        .unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(node_ip(&e[0][0].1), "2001:db8:cafe::17".parse().ok());
        assert_eq!(e[1][0].0, "for");
        assert_eq!(e[1][2], ("host".into(), "a.example:80".into()));
        assert!(parse_forwarded("for").is_err());
        assert!(parse_forwarded("for=\"open").is_err());
        assert!(parse_forwarded("for=;proto=http").is_err());
        assert!(parse_forwarded("f or=1").is_err());
        assert_eq!(node_ip("unknown"), None);
        assert_eq!(node_ip("10.0.0.1:80"), "10.0.0.1".parse().ok());
    }

    #[test]
    fn traceparent_format() {
        assert!(well_formed_traceparent(TRACEPARENT));
        assert!(!well_formed_traceparent(
            "00-00000000000000000000000000000000-b7ad6b7169203331-01"
        ));
        assert!(!well_formed_traceparent("00-abc-def-01"));
        assert!(!well_formed_traceparent(
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01"
        ));
    }
}
