//! Cutting a container's output into log lines: bytes in, pieces out, with a bound on what
//! is held. A line is passed on when its `\n` arrives; one longer than [`MAX_LINE`] bytes is
//! passed on in pieces of at most that size, each but the last marked [`CUT_MARK`], so a
//! container writing without newlines (`yes | tr -d '\n'`) costs runlet no more memory than
//! a long line does. Each byte is looked at once: the newline search covers only new data.
//!
//! A piece becomes text with its control characters escaped (`\x1b`), so that a container
//! cannot colour runlet's output, move the cursor or forge a line of runlet's own.

use std::fmt::Write as _;

/// The longest line passed on whole (Docker's and containerd's CRI log split size).
pub const MAX_LINE: usize = 16 * 1024;

/// Ends a piece cut from a longer line; the next piece continues it.
pub const CUT_MARK: &str = "…[line cut at 16384 bytes]";

/// A piece of output to log.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    /// A whole line (or the end of one that was cut), without its `\n` or `\r\n`.
    Line(&'a [u8]),
    /// [`MAX_LINE`] bytes at most of a longer line; more of it follows.
    Cut(&'a [u8]),
}

impl Piece<'_> {
    /// The piece as text: invalid UTF-8 replaced (the stream goes on), control characters
    /// escaped, a cut piece marked.
    pub fn text(&self) -> String {
        match self {
            Piece::Line(b) => escape_controls(&String::from_utf8_lossy(b)),
            Piece::Cut(b) => format!("{}{CUT_MARK}", escape_controls(&String::from_utf8_lossy(b))),
        }
    }
}

/// `text` with every control character but tab written as an escape: C0 and DEL as `\x1b`,
/// C1 (which some terminals also obey) as `\u{9b}`. A backslash is kept as it is: the
/// escapes are for the eye and the terminal, not to be decoded.
pub fn escape_controls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\t' => out.push(c),
            '\0'..='\x1f' | '\x7f' => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            '\u{80}'..='\u{9f}' => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            _ => out.push(c),
        }
    }
    out
}

/// The part of a line seen so far: never more than `MAX_LINE + 1` bytes (a line of
/// `MAX_LINE` bytes and the `\r` of its `\r\n`).
pub struct Splitter {
    pending: Vec<u8>,
}

impl Default for Splitter {
    fn default() -> Self {
        Splitter {
            pending: Vec::with_capacity(MAX_LINE + 1),
        }
    }
}

impl Splitter {
    /// Takes the next bytes of the stream; hands each piece they complete to `out`.
    pub fn push(&mut self, mut data: &[u8], out: &mut impl FnMut(Piece<'_>)) {
        while let Some(nl) = data.iter().position(|&b| b == b'\n') {
            self.append(&data[..nl], out);
            self.end_line(out);
            data = &data[nl + 1..];
        }
        self.append(data, out);
    }

    /// The stream ended: hands on a last line without a newline, if there is one.
    pub fn finish(&mut self, out: &mut impl FnMut(Piece<'_>)) {
        if !self.pending.is_empty() {
            self.end_line(out);
        }
    }

    /// Adds bytes of a line (no `\n` among them), cutting when the line outgrows the bound.
    fn append(&mut self, mut bytes: &[u8], out: &mut impl FnMut(Piece<'_>)) {
        while !bytes.is_empty() {
            if self.pending.len() > MAX_LINE {
                self.cut(out);
            }
            let n = (MAX_LINE + 1 - self.pending.len()).min(bytes.len());
            self.pending.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
        }
    }

    /// The line's `\n` arrived: hands it on without its `\r`.
    fn end_line(&mut self, out: &mut impl FnMut(Piece<'_>)) {
        let cr = usize::from(self.pending.last() == Some(&b'\r'));
        if self.pending.len() - cr > MAX_LINE {
            self.cut(out);
        }
        let cr = usize::from(self.pending.last() == Some(&b'\r'));
        out(Piece::Line(&self.pending[..self.pending.len() - cr]));
        self.pending.clear();
    }

    /// Hands on the first `MAX_LINE` bytes (fewer, to keep a UTF-8 character whole) as a cut
    /// piece and keeps the rest.
    fn cut(&mut self, out: &mut impl FnMut(Piece<'_>)) {
        let at = cut_point(&self.pending);
        out(Piece::Cut(&self.pending[..at]));
        self.pending.drain(..at);
    }
}

/// Where to cut `buf` (longer than `MAX_LINE`): at `MAX_LINE`, or up to 3 bytes earlier so
/// that a UTF-8 character is not split (its continuation bytes are `0b10xx_xxxx`).
fn cut_point(buf: &[u8]) -> usize {
    (MAX_LINE - 3..=MAX_LINE)
        .rev()
        .find(|&i| buf[i] & 0xC0 != 0x80)
        .unwrap_or(MAX_LINE)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A piece handed on: (cut?, length, first byte).
    type Seen = (bool, usize, Option<u8>);
    /// A table row: its name, the reads, what the splitter must hand out.
    type Case<'a> = (&'a str, Vec<&'a [u8]>, Vec<Seen>);

    /// What the splitter hands on for `reads` (one `push` each) and the end of the stream,
    /// with the most it held at any time.
    fn split(reads: &[&[u8]]) -> (Vec<Seen>, usize) {
        let mut s = Splitter::default();
        let mut got = Vec::new();
        let mut most = 0;
        let mut out = |p: Piece<'_>| {
            got.push(match p {
                Piece::Line(b) => (false, b.len(), b.first().copied()),
                Piece::Cut(b) => (true, b.len(), b.first().copied()),
            })
        };
        for r in reads {
            s.push(r, &mut out);
            most = most.max(s.pending.len());
        }
        s.finish(&mut out);
        (got, most)
    }

    fn bytes(n: usize, b: u8) -> Vec<u8> {
        vec![b; n]
    }

    fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    #[test]
    fn lines_are_cut_at_16_kib_and_the_buffer_stays_bounded() {
        const M: usize = MAX_LINE;
        let x = b'x';
        let exact = cat(&[&bytes(M, x), b"\n"]);
        let exact_crlf = cat(&[&bytes(M, x), b"\r\n"]);
        let one_over = cat(&[&bytes(M + 1, x), b"\n"]);
        let forty = bytes(40 * 1024, x);
        let forty_then_line = cat(&[&bytes(40 * 1024, x), b"\nab\n"]);
        let table: Vec<Case> = vec![
            (
                "short lines",
                vec![b"ab\nc\n\nd"],
                vec![
                    (false, 2, Some(b'a')),
                    (false, 1, Some(b'c')),
                    (false, 0, None),
                    (false, 1, Some(b'd')),
                ],
            ),
            (
                "CRLF",
                vec![b"ab\r\ncd\r\n"],
                vec![(false, 2, Some(b'a')), (false, 2, Some(b'c'))],
            ),
            (
                "split reads, CR and LF apart",
                vec![b"a", b"b\r", b"\nc", b"d\n"],
                vec![(false, 2, Some(b'a')), (false, 2, Some(b'c'))],
            ),
            ("exactly 16 KiB", vec![&exact], vec![(false, M, Some(x))]),
            (
                "exactly 16 KiB, CRLF",
                vec![&exact_crlf],
                vec![(false, M, Some(x))],
            ),
            (
                "16 KiB and a byte",
                vec![&one_over],
                vec![(true, M, Some(x)), (false, 1, Some(x))],
            ),
            (
                "40 KiB without a newline",
                vec![&forty],
                vec![
                    (true, M, Some(x)),
                    (true, M, Some(x)),
                    (false, 8 * 1024, Some(x)),
                ],
            ),
            (
                "40 KiB in 4095-byte reads, then a line",
                forty_then_line.chunks(4095).collect(),
                vec![
                    (true, M, Some(x)),
                    (true, M, Some(x)),
                    (false, 8 * 1024, Some(x)),
                    (false, 2, Some(b'a')),
                ],
            ),
        ];
        for (name, reads, want) in table {
            let (got, most) = split(&reads);
            assert_eq!(got, want, "{name}");
            assert!(most <= M + 1, "{name}: held {most} bytes");
        }
    }

    #[test]
    fn control_characters_are_escaped() {
        let table = [
            ("plain text", "plain text"),
            ("tab\tkept", "tab\tkept"),
            ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
            ("a\rforged line", "a\\x0dforged line"),
            ("bell\x07 nul\0 del\x7f", "bell\\x07 nul\\x00 del\\x7f"),
            ("c1 csi\u{9b}31m", "c1 csi\\u{9b}31m"),
            ("back\\slash and é ✓", "back\\slash and é ✓"),
        ];
        for (raw, want) in table {
            assert_eq!(escape_controls(raw), want, "{raw:?}");
        }
        // Through a piece: CRLF's \r is the line's end, not text; one in the middle is.
        let mut s = Splitter::default();
        let mut texts = Vec::new();
        s.push(b"\x1b[2Jx\ry\r\n", &mut |p: Piece<'_>| texts.push(p.text()));
        assert_eq!(texts, ["\\x1b[2Jx\\x0dy"]);
    }

    #[test]
    fn a_cut_keeps_utf8_characters_whole() {
        // "é" is 2 bytes: 16383 ASCII bytes, then "é" straddles the 16 KiB mark.
        let mut data = bytes(MAX_LINE - 1, b'x');
        data.extend_from_slice("éz\n".as_bytes());
        let mut s = Splitter::default();
        let mut texts = Vec::new();
        s.push(&data, &mut |p: Piece<'_>| texts.push(p.text()));
        assert_eq!(texts.len(), 2);
        assert!(
            texts[0].ends_with(&format!("x{CUT_MARK}")),
            "{}",
            &texts[0][16370..]
        );
        assert_eq!(texts[1], "éz");
    }

    #[test]
    fn megabytes_without_newlines_hold_at_most_one_line() {
        let mut s = Splitter::default();
        let chunk = bytes(64 * 1024, b'y');
        let mut cuts = 0u64;
        for _ in 0..(1 << 10) {
            s.push(&chunk, &mut |p: Piece<'_>| {
                assert!(matches!(p, Piece::Cut(b) if b.len() == MAX_LINE));
                cuts += 1;
            });
            assert!(s.pending.capacity() <= MAX_LINE + 1);
        }
        // 64 MiB: every 16 KiB but the last (held until the stream ends) handed on.
        assert_eq!(cuts, (64u64 << 20) / MAX_LINE as u64 - 1);
    }
}
