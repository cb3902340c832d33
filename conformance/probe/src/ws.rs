//! Minimal WebSocket echo server for `/ws` (RFC 6455 over an HTTP/1.1
//! `Upgrade`), with a hand-written frame codec, SHA-1 and base64 so no
//! extra crates are needed.
//!
//! Every data or continuation frame is echoed back unmasked with the same
//! FIN bit and opcode (so fragmented messages come back fragmented the same
//! way); pings are answered with pongs; a close frame is echoed and ends
//! the session. Frames larger than 16 MiB close the connection with 1009.
//! WebSocket over HTTP/2 (RFC 8441) is not supported.

use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::body::ProbeBody;
use crate::state::InFlight;

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const MAX_FRAME: u64 = 16 * 1024 * 1024;

/// Answers the upgrade request and spawns the echo session. The in-flight
/// marker is held by the session, so an open socket counts as a request.
pub fn handle(
    mut req: Request<Incoming>,
    guard: Option<InFlight>,
) -> Result<Response<ProbeBody>, String> {
    let h = req.headers();
    let has_token = |name, token: &str| {
        h.get_all(name).iter().any(|v| {
            v.to_str()
                .unwrap_or("")
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        })
    };
    if !has_token(UPGRADE, "websocket") || !has_token(CONNECTION, "upgrade") {
        return Err("expected Connection: Upgrade and Upgrade: websocket".into());
    }
    let key = h
        .get(SEC_WEBSOCKET_KEY)
        .ok_or("missing Sec-WebSocket-Key")?
        .as_bytes()
        .to_vec();
    let accept = accept_key(&key);
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let _guard = guard;
        match on_upgrade.await {
            Ok(upgraded) => {
                if let Err(e) = echo(TokioIo::new(upgraded)).await {
                    eprintln!("probe: websocket session ended: {e}");
                }
            }
            Err(e) => eprintln!("probe: websocket upgrade failed: {e}"),
        }
    });
    let mut resp = Response::new(ProbeBody::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let hs = resp.headers_mut();
    hs.insert(UPGRADE, HeaderValue::from_static("websocket"));
    hs.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    let accept = HeaderValue::from_str(&accept).map_err(|e| e.to_string())?;
    hs.insert(SEC_WEBSOCKET_ACCEPT, accept);
    Ok(resp)
}

/// `Sec-WebSocket-Accept` for a client key.
pub fn accept_key(key: &[u8]) -> String {
    let mut input = key.to_vec();
    input.extend_from_slice(GUID.as_bytes());
    base64(&sha1(&input))
}

/// Runs the echo loop until the peer closes.
pub async fn echo<S: AsyncRead + AsyncWrite + Unpin>(mut io: S) -> std::io::Result<()> {
    loop {
        let mut head = [0u8; 2];
        match io.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let (b0, b1) = (head[0], head[1]);
        let opcode = b0 & 0x0f;
        let len = match b1 & 0x7f {
            126 => io.read_u16().await? as u64,
            127 => io.read_u64().await?,
            n => n as u64,
        };
        if len > MAX_FRAME {
            write_frame(&mut io, 0x88, &1009u16.to_be_bytes()).await?;
            return Ok(());
        }
        let mut mask = [0u8; 4];
        if b1 & 0x80 != 0 {
            io.read_exact(&mut mask).await?;
        }
        let mut payload = vec![0u8; len as usize];
        io.read_exact(&mut payload).await?;
        if b1 & 0x80 != 0 {
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= mask[i % 4];
            }
        }
        match opcode {
            0x8 => {
                write_frame(&mut io, 0x88, &payload).await?;
                return Ok(());
            }
            0x9 => write_frame(&mut io, 0x8A, &payload).await?,
            0xA => {}
            _ => write_frame(&mut io, b0 & 0x8f, &payload).await?,
        }
    }
}

async fn write_frame<S: AsyncWrite + Unpin>(
    io: &mut S,
    b0: u8,
    payload: &[u8],
) -> std::io::Result<()> {
    let mut head = vec![b0];
    let len = payload.len();
    if len < 126 {
        head.push(len as u8);
    } else if len <= u16::MAX as usize {
        head.push(126);
        head.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        head.push(127);
        head.extend_from_slice(&(len as u64).to_be_bytes());
    }
    io.write_all(&head).await?;
    io.write_all(payload).await?;
    io.flush().await
}

/// SHA-1 (FIPS 180-4). Only used for the handshake.
pub fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0];
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((data.len() as u64) * 8).to_be_bytes());
    for block in msg.chunks(64) {
        let mut w = [0u32; 80];
        for (i, c) in block.chunks(4).enumerate() {
            w[i] = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A827999),
                20..=39 => (b ^ c ^ d, 0x6ED9EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1BBCDC),
                _ => (b ^ c ^ d, 0xCA62C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 20];
    for (i, x) in h.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&x.to_be_bytes());
    }
    out
}

/// Standard base64 with padding.
pub fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha1_vectors() {
        let hex = |b: [u8; 20]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        assert_eq!(hex(sha1(b"")), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(
            hex(sha1(b"abc")),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(
            hex(sha1(
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
            )),
            "84983e441c3bd26ebaae4aa1f95129e5e54670f1"
        );
    }

    #[test]
    fn base64_vectors() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn rfc6455_accept() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn echo_roundtrip() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let (mut client, server) = tokio::io::duplex(1 << 20);
            let task = tokio::spawn(echo(server));
            // Masked text frame "Hello" (RFC 6455 section 5.7 example).
            client
                .write_all(&[
                    0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
                ])
                .await
                .unwrap();
            let mut buf = [0u8; 7];
            client.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, &[0x81, 0x05, b'H', b'e', b'l', b'l', b'o']);
            // 300-byte binary frame, unmasked, 16-bit length.
            let mut f = vec![0x82, 126, 1, 44];
            f.extend(std::iter::repeat_n(7u8, 300));
            client.write_all(&f).await.unwrap();
            let mut back = vec![0u8; f.len()];
            client.read_exact(&mut back).await.unwrap();
            assert_eq!(back, f);
            // Close with code 1000.
            client.write_all(&[0x88, 0x02, 0x03, 0xe8]).await.unwrap();
            let mut c = [0u8; 4];
            client.read_exact(&mut c).await.unwrap();
            assert_eq!(c, [0x88, 0x02, 0x03, 0xe8]);
            task.await.unwrap().unwrap();
        });
    }
}
