//! Property tests of the client-side request head parser (issue 18's fuzzing): whatever a
//! client sends, [`parse`] answers "more bytes", a request served here, hyper's, or a
//! refusal, never a panic; a request it serves here is taken off the buffer whole, and
//! what follows it (a pipelined request) stays. `PROPTEST_CASES` sets the number of cases;
//! deploy/fuzz.sh runs them longer.

use bytes::BytesMut;
use proptest::prelude::*;

use super::{parse, Head};

fn parse_all(bytes: &[u8]) {
    let mut buf = BytesMut::from(bytes);
    // Pipelined heads: each served one leaves the rest; stop at anything else.
    for _ in 0..=bytes.len() {
        match parse(&mut buf) {
            Some(Head::Request(..)) if !buf.is_empty() => {}
            _ => return,
        }
    }
    panic!("parse took a head off the buffer without consuming it");
}

proptest! {
    #[test]
    fn any_bytes_parse_or_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        parse_all(&bytes);
    }

    #[test]
    fn head_shaped_requests_parse_or_are_refused(
        line in "(GET|POST|HEAD|CONNECT|OPTIONS|PRI|[A-Z]{1,8}) (/[ -~]{0,20}|\\*|http://[a-z]{1,8}/|[a-z]{0,5}) HTTP/(1\\.[01]|2\\.0|[0-9]\\.[0-9])",
        fields in proptest::collection::vec(
            (
                "(host|Host|content-length|transfer-encoding|connection|upgrade|expect|x-[a-z_]{1,8}|[ -~]{0,6})",
                "[ -~\t]{0,24}",
            ),
            0..8,
        ),
        pipelined in proptest::option::of("GET / HTTP/1\\.1\r\nhost: a\r\n\r\n"),
    ) {
        let mut head = line.into_bytes();
        head.extend_from_slice(b"\r\n");
        for (n, v) in fields {
            head.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
        }
        head.extend_from_slice(b"\r\n");
        if let Some(p) = pipelined {
            head.extend_from_slice(p.as_bytes());
        }
        parse_all(&head);
    }
}

#[test]
fn a_served_head_is_taken_off_and_the_pipelined_one_stays() {
    let mut buf = BytesMut::from(
        &b"GET /a HTTP/1.1\r\nhost: x\r\n\r\nGET /b HTTP/1.1\r\nhost: x\r\n\r\n"[..],
    );
    assert!(matches!(parse(&mut buf), Some(Head::Request(..))));
    assert!(buf.starts_with(b"GET /b "));
    assert!(matches!(parse(&mut buf), Some(Head::Request(..))));
    assert!(buf.is_empty());
}
