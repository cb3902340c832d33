//! Heads kept as the bytes that were read: the common request and its response never become
//! `http::HeaderMap`s.
//!
//! A bodiless HTTP/1.x request read by `downstream.rs` and forwarded over HTTP/1.1 by
//! [`super::upstream_h1`] (nearly every request a service gets) has its header lines copied to the
//! instance, minus the hop-by-hop ones, plus the forwarding and trace headers; the
//! instance's response lines are copied back the same way. Building, searching and
//! writing out `HeaderMap`s for the client's request, the upstream request and the response
//! was measured (callgrind) at more than half of runlet's instructions per request. The
//! rules (HDR-1/HDR-2, what is added and removed) are the ones [`super::headers`] applies to
//! typed requests, from the same functions.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, StatusCode};

use super::headers;

/// Where a name or value sits in a head's bytes.
#[derive(Clone, Copy, Debug)]
struct Span {
    start: u32,
    end: u32,
}

#[derive(Clone, Copy, Debug)]
struct Field {
    name: Span,
    value: Span,
    /// Cleared for a field not to be passed on (hop-by-hop, or breaking HDR-2).
    keep: bool,
}

/// Where the fields httparse found are, as offsets from `base` (the start of the head they
/// were parsed from): a head's bytes can then be frozen (or copied) and its fields found in
/// them again.
pub fn fields_of(base: *const u8, parsed: &[httparse::Header<'_>]) -> Fields {
    let at = |s: &[u8]| {
        let start = (s.as_ptr() as usize - base as usize) as u32;
        Span {
            start,
            end: start + s.len() as u32,
        }
    };
    Fields(
        parsed
            .iter()
            .map(|h| Field {
                name: at(h.name.as_bytes()),
                value: at(h.value),
                keep: true,
            })
            .collect(),
    )
}

/// See [`fields_of`].
pub struct Fields(Vec<Field>);

/// A head's header fields, as slices of the bytes read.
#[derive(Debug)]
pub struct RawHead {
    bytes: Bytes,
    fields: Vec<Field>,
}

impl RawHead {
    /// A head of `bytes` with `fields` (from [`fields_of`], for the same bytes).
    pub fn new(bytes: Bytes, fields: Fields) -> Self {
        RawHead {
            bytes,
            fields: fields.0,
        }
    }

    fn slice(&self, s: Span) -> &[u8] {
        &self.bytes[s.start as usize..s.end as usize]
    }

    /// The fields passed on, in the order they came.
    pub fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.fields
            .iter()
            .filter(|f| f.keep)
            .map(|f| (self.slice(f.name), self.slice(f.value)))
    }

    /// The values of field `name` (any case), in order.
    pub fn get_all<'a>(&'a self, name: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.fields()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// The first value of field `name` (any case).
    pub fn get(&self, name: &[u8]) -> Option<&[u8]> {
        self.fields()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Stops passing on fields named `name` (any case).
    pub fn remove(&mut self, name: &[u8]) {
        for i in 0..self.fields.len() {
            if self.slice(self.fields[i].name).eq_ignore_ascii_case(name) {
                self.fields[i].keep = false;
            }
        }
    }

    /// The first field breaking HDR-2, described (see [`headers::check`]).
    pub fn check(&self) -> Result<(), String> {
        headers::check_fields(self.fields())
    }

    /// Stops passing on hop-by-hop fields, those named in `Connection` included.
    pub fn strip_hop_by_hop(&mut self) {
        let mut connection = false;
        for i in 0..self.fields.len() {
            let name = self.slice(self.fields[i].name);
            if headers::is_hop_by_hop_name(name) {
                connection |= name.eq_ignore_ascii_case(b"connection");
                self.fields[i].keep = false;
            }
        }
        if !connection {
            return;
        }
        let named: Vec<Bytes> = self
            .fields
            .iter()
            .filter(|f| self.slice(f.name).eq_ignore_ascii_case(b"connection"))
            .flat_map(|f| headers::connection_tokens(self.slice(f.value)))
            .map(|t| self.bytes.slice_ref(t))
            .collect();
        for n in named {
            self.remove(&n);
        }
    }

    /// Stops passing on fields breaking HDR-2 (see [`headers::drop_invalid`]); returns their
    /// names.
    pub fn drop_invalid(&mut self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for i in 0..self.fields.len() {
            let f = self.fields[i];
            if f.keep && !headers::valid_value(self.slice(f.value)) {
                self.fields[i].keep = false;
                let name = String::from_utf8_lossy(self.slice(f.name)).to_ascii_lowercase();
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        names
    }

    /// The fields passed on, as a `HeaderMap` (for hyper, and for a typed request).
    pub fn to_header_map(&self) -> Result<HeaderMap, &'static str> {
        let mut map = HeaderMap::with_capacity(self.fields.len() + 8);
        for f in self.fields.iter().filter(|f| f.keep) {
            let name =
                HeaderName::from_bytes(self.slice(f.name)).map_err(|_| "invalid header name")?;
            let value = HeaderValue::from_maybe_shared(
                self.bytes
                    .slice(f.value.start as usize..f.value.end as usize),
            )
            .map_err(|_| "invalid header value")?;
            map.append(name, value);
        }
        Ok(map)
    }
}

/// A bodiless request from an HTTP/1.x client, target in origin form (`/path?query`).
pub struct RawRequest {
    pub method: Method,
    pub target: PathAndQuery,
    pub v10: bool,
    pub head: RawHead,
}

impl RawRequest {
    /// The same request, typed (for an HTTP/2 instance).
    pub fn into_typed(self) -> Result<http::Request<super::ClientBody>, &'static str> {
        let body = super::ClientBody::Left(http_body_util::Empty::new());
        let mut req = http::Request::new(body);
        *req.headers_mut() = self.head.to_header_map()?;
        *req.method_mut() = self.method;
        *req.uri_mut() = http::Uri::from(self.target);
        *req.version_mut() = if self.v10 {
            http::Version::HTTP_10
        } else {
            http::Version::HTTP_11
        };
        Ok(req)
    }

    /// The request head for the instance (HTTP/1.1): the client's lines minus hop-by-hop
    /// ones, with the forwarding and trace headers (see [`headers::forwarding`]), and `Host`
    /// set to `default_host` when the client sent none.
    pub fn encode(&mut self, client: &headers::Client, default_host: &str) -> Vec<u8> {
        // The authority is the client's Host, read before hop-by-hop fields go (as the typed
        // path does): a `Connection: host` then gets Host put back by `forwarding`.
        let authority = self.head.get(b"host").map(|h| self.head.bytes.slice_ref(h));
        self.head.strip_hop_by_hop();
        let head = &self.head;
        let seen = headers::Seen {
            xff: head.get(b"x-forwarded-for"),
            forwarded: head.get(b"forwarded"),
            traceparent: head.get(b"traceparent"),
            cloud_trace: head.get(b"x-cloud-trace-context"),
            host: head.get(b"host"),
        };
        let target = self.target.as_str().as_bytes();
        let mut out = Vec::with_capacity(head.bytes.len() + target.len() + 320);
        out.extend_from_slice(self.method.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(target);
        out.extend_from_slice(b" HTTP/1.1\r\n");
        for (n, v) in head.fields() {
            if headers::keeps(n, &seen) {
                push_field(&mut out, n, v);
            }
        }
        headers::forwarding(&seen, client, authority.as_deref(), &mut |n, pieces| {
            out.extend_from_slice(n.as_str().as_bytes());
            out.extend_from_slice(b": ");
            for p in pieces {
                out.extend_from_slice(p);
            }
            out.extend_from_slice(b"\r\n");
        });
        if authority.is_none() {
            push_field(&mut out, b"host", default_host.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out
    }
}

pub fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// A response from an HTTP/1.1 instance, its lines as read.
pub struct RawResponse {
    pub status: StatusCode,
    pub head: RawHead,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `raw` as `downstream` parses it.
    fn request(raw: &[u8]) -> RawRequest {
        let mut buf = bytes::BytesMut::from(raw);
        match super::super::downstream::parse(&mut buf) {
            Some(super::super::downstream::Head::Request(req, _)) => req,
            _ => panic!("not a request served by downstream: {raw:?}"),
        }
    }

    /// A head's request line and fields, names lowercased, sorted; generated trace ids
    /// masked when `mask`.
    fn lines(head: &[u8], mask: bool) -> Vec<String> {
        let text = std::str::from_utf8(head).unwrap();
        assert!(text.ends_with("\r\n\r\n"), "{text:?}");
        let mut it = text.trim_end().split("\r\n");
        let mut out = vec![it.next().unwrap().to_string()];
        let mut fields: Vec<String> = it
            .map(|l| {
                let (n, v) = l.split_once(": ").unwrap();
                let n = n.to_ascii_lowercase();
                let masked = mask && (n == "traceparent" || n == "x-cloud-trace-context");
                format!("{n}: {}", if masked { "*" } else { v })
            })
            .collect();
        fields.sort();
        out.extend(fields);
        out
    }

    /// What the typed path sends for the same request (`forward` for a typed request).
    fn typed(raw: &[u8], client: &headers::Client) -> Vec<u8> {
        let mut req = request(raw).into_typed().unwrap();
        let host = req.headers().get(http::header::HOST).cloned();
        let authority = host.as_ref().and_then(|h| h.to_str().ok());
        super::super::proxy::strip_and_add(req.headers_mut(), client, authority);
        if !req.headers().contains_key(http::header::HOST) {
            req.headers_mut().insert(
                http::header::HOST,
                HeaderValue::from_static("127.0.0.1:8080"),
            );
        }
        let (parts, _) = req.into_parts();
        super::super::upstream_h1::encode_head(&parts)
    }

    #[test]
    fn raw_requests_are_forwarded_as_typed_ones_are() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cases: Vec<(String, bool)> = vec![
            ("GET / HTTP/1.1\r\nHost: a\r\n\r\n".into(), true),
            ("GET /x?y=1 HTTP/1.0\r\n\r\n".into(), true),
            (format!("HEAD / HTTP/1.1\r\nHost: a\r\ntraceparent: {tp}\r\n\r\n"), false),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nX-Cloud-Trace-Context: 105445aa7843bc8bf206b12000100000/123;o=1\r\ntraceparent: junk\r\n\r\n".into(),
                false,
            ),
            (
                format!("GET / HTTP/1.1\r\nHost: bad host\r\nX-Forwarded-For: 1.1.1.1\r\nx-forwarded-for: 2.2.2.2\r\nFORWARDED: for=3.3.3.3\r\nX-Forwarded-Proto: https\r\ntraceparent: {tp}\r\n\r\n"),
                false,
            ),
            (
                format!("DELETE /d HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Private\r\nx-private: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\nProxy-Connection: x\r\nUser-Agent: u\r\nAccept: */*\r\nAccept: text/html\r\ntraceparent: {tp}\r\n\r\n"),
                false,
            ),
            ("GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For:  \r\nForwarded: \r\n\r\n".into(), true),
            ("GET / HTTP/1.1\r\nHost: a\r\nConnection: host\r\n\r\n".into(), true),
        ];
        for ip in ["10.1.2.3", "::1"] {
            let client = headers::Client::new(ip.parse().unwrap());
            for (raw, mask) in &cases {
                let got = request(raw.as_bytes()).encode(&client, "127.0.0.1:8080");
                let want = typed(raw.as_bytes(), &client);
                assert_eq!(lines(&got, *mask), lines(&want, *mask), "{raw:?}");
            }
        }
        // Trace ids are made when the client sent none, one for both headers.
        let client = headers::Client::new("10.1.2.3".parse().unwrap());
        let got = request(b"GET / HTTP/1.0\r\n\r\n").encode(&client, "h");
        let text = String::from_utf8(got).unwrap();
        let tp = text.split("traceparent: ").nth(1).unwrap();
        let xc = text.split("x-cloud-trace-context: ").nth(1).unwrap();
        assert_eq!(tp[3..35], xc[..32], "{text}");
        assert!(text.contains("\r\nhost: h\r\n"), "{text}");
    }

    #[test]
    fn response_fields_are_filtered_in_place() {
        let raw = b"HTTP/1.1 200 OK\r\nConnection: x-gone, close\r\nX-Gone: 1\r\nX-Bad: caf\xc3\xa9\r\nX-Ok: fine\r\nx-bad: ok\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut slots = [httparse::EMPTY_HEADER; 16];
        let mut resp = httparse::Response::new(&mut slots);
        assert!(resp.parse(raw).unwrap().is_complete());
        let fields = fields_of(raw.as_ptr(), resp.headers);
        let mut head = RawHead::new(Bytes::from_static(raw), fields);
        head.strip_hop_by_hop();
        assert_eq!(head.drop_invalid(), vec!["x-bad".to_string()]);
        let kept: Vec<_> = head.fields().collect();
        assert_eq!(
            kept,
            vec![(&b"X-Ok"[..], &b"fine"[..]), (&b"x-bad"[..], &b"ok"[..])]
        );
        assert_eq!(head.to_header_map().unwrap().len(), 2);
        assert!(head.check().is_ok());
    }
}
