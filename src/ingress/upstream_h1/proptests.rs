//! Property tests of the upstream HTTP/1 response parser and chunked decoder (issue 18's
//! fuzzing): whatever bytes an instance sends, parsing answers with a head, "more bytes",
//! or an error, never a panic or a loop; a chunked body however it is cut into reads
//! decodes to the bytes that were encoded. `PROPTEST_CASES` sets the number of cases;
//! deploy/fuzz.sh runs them longer. Seeds: the shapes that broke HTTP/1 parsers elsewhere
//! are in [`seeds`], run every time before the random cases.

use bytes::BytesMut;
use proptest::prelude::*;

use super::{framing, parse_head, Chunked, Decoded};

/// A chunked encoding of `body` cut at `sizes` (cycled), with chunk extensions or not, and
/// with trailers or not.
fn encode(body: &[u8], sizes: &[usize], ext: bool, trailers: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = body;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes[i % sizes.len()].clamp(1, rest.len());
        i += 1;
        out.extend_from_slice(format!("{n:x}").as_bytes());
        if ext {
            out.extend_from_slice(b";name=\"v\"");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&rest[..n]);
        out.extend_from_slice(b"\r\n");
        rest = &rest[n..];
    }
    out.extend_from_slice(b"0\r\n");
    if trailers {
        out.extend_from_slice(b"x-checksum: abc\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Feeds `wire` to a decoder in pieces cut at `cuts`; the data decoded, and whether the end
/// (or trailers) was reached, or the error.
fn decode_in_pieces(wire: &[u8], cuts: &[usize]) -> Result<(Vec<u8>, bool), &'static str> {
    let mut state = Chunked::Size;
    let mut buf = BytesMut::new();
    let mut data = Vec::new();
    let mut at = 0;
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
    points.sort_unstable();
    points.push(wire.len());
    for p in points {
        if p < at {
            continue;
        }
        buf.extend_from_slice(&wire[at..p]);
        at = p;
        // Each step consumes bytes, asks for more, or ends: bounded by the bytes plus one.
        for _ in 0..=wire.len() + 1 {
            match state.decode(&mut buf) {
                Ok(Some(Decoded::Data(d))) => data.extend_from_slice(&d),
                Ok(Some(Decoded::Trailers(_))) | Ok(Some(Decoded::End)) => return Ok((data, true)),
                Ok(None) => break,
                Err(super::H1Error::Malformed(m)) => return Err(m),
                Err(_) => return Err("other"),
            }
        }
    }
    Ok((data, false))
}

/// Parses a response head and its framing, if complete: never panics.
fn head_and_framing(bytes: &[u8], head_request: bool) {
    let mut buf = BytesMut::from(bytes);
    if let Ok(Some((mut resp, _keep))) = parse_head(&mut buf) {
        let _ = framing(&mut resp, head_request);
    }
}

/// Response heads and chunked bodies that broke parsers elsewhere (request smuggling and
/// overflow reports): each must parse, or be refused, without a panic.
fn seeds() -> Vec<&'static [u8]> {
    vec![
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        b"HTTP/1.1 999 Whatever\r\n\r\n",
        b"HTTP/1.1 000 Zero\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nConnection: keep-alive, close\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n Folded: line\r\n\r\n",
        b"HTTP/1.1 200 OK\nBare: lf\n\n",
    ]
}

fn chunk_seeds() -> Vec<&'static [u8]> {
    vec![
        b"ffffffffffffffff\r\n",
        b"fffffffffffffff\r\nab",
        b"-1\r\n",
        b"0x10\r\n",
        b"5 ;ext\r\nhello\r\n0\r\n\r\n",
        b"5\r\nhelloXX0\r\n\r\n",
        b"5\nhello\n0\n\n",
        b"0\r\nbad trailer\r\n\r\n",
        b"\r\n",
        b";\r\n",
    ]
}

#[test]
fn seeds_parse_or_are_refused_without_a_panic() {
    for s in seeds() {
        head_and_framing(s, false);
        head_and_framing(s, true);
    }
    for s in chunk_seeds() {
        let _ = decode_in_pieces(s, &[]);
        let _ = decode_in_pieces(s, &[1, 2, 3]);
    }
}

proptest! {
    #[test]
    fn a_chunked_body_decodes_to_what_was_encoded_however_it_is_read(
        body in proptest::collection::vec(any::<u8>(), 0..3000),
        sizes in proptest::collection::vec(1usize..5000, 1..6),
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
        ext: bool,
        trailers: bool,
    ) {
        let wire = encode(&body, &sizes, ext, trailers);
        let (data, ended) = decode_in_pieces(&wire, &cuts).expect("a valid encoding decodes");
        prop_assert!(ended);
        prop_assert_eq!(data, body);
    }

    #[test]
    fn any_bytes_as_a_chunked_body_never_panic_nor_loop(
        wire in proptest::collection::vec(any::<u8>(), 0..600),
        cuts in proptest::collection::vec(any::<usize>(), 0..6),
    ) {
        let _ = decode_in_pieces(&wire, &cuts);
    }

    #[test]
    fn chunk_shaped_bytes_never_panic_nor_loop(
        wire in "([0-9a-fA-F]{0,17}(;[ -~]{0,8})?\r?\n[ -~]{0,20}\r?\n){0,6}",
        cuts in proptest::collection::vec(any::<usize>(), 0..6),
    ) {
        let _ = decode_in_pieces(wire.as_bytes(), &cuts);
    }

    #[test]
    fn any_response_head_parses_or_is_refused(
        bytes in proptest::collection::vec(any::<u8>(), 0..400),
        head_request: bool,
    ) {
        head_and_framing(&bytes, head_request);
    }

    #[test]
    fn head_shaped_responses_parse_or_are_refused(
        status in "HTTP/1\\.[01] [0-9]{3}( [ -~]{0,12})?",
        fields in proptest::collection::vec(
            (
                "(content-length|transfer-encoding|connection|Content-Length|x-[a-z]{1,8})",
                "[ -~]{0,24}",
            ),
            0..8,
        ),
        head_request: bool,
    ) {
        let mut head = status.into_bytes();
        head.extend_from_slice(b"\r\n");
        for (n, v) in fields {
            head.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
        }
        head.extend_from_slice(b"\r\n");
        head_and_framing(&head, head_request);
    }
}
