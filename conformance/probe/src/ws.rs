//! Minimal WebSocket echo server for `/ws` (RFC 6455 over an HTTP/1.1 `Upgrade`): the
//! handshake's accept key and the frame codec are tungstenite's.
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
use std::io::Cursor;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tungstenite::protocol::frame::coding::{CloseCode, Control, OpCode};
use tungstenite::protocol::frame::{CloseFrame, Frame, FrameHeader};

use crate::body::ProbeBody;
use crate::state::InFlight;

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
    let accept = tungstenite::handshake::derive_accept_key(&key);
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

/// Runs the echo loop until the peer closes.
pub async fn echo<S: AsyncRead + AsyncWrite + Unpin>(mut io: S) -> std::io::Result<()> {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let mut cursor = Cursor::new(&buf[..]);
        let Some((mut header, len)) = FrameHeader::parse(&mut cursor).map_err(invalid)? else {
            if read_more(&mut io, &mut buf, &mut chunk).await? {
                continue;
            }
            return Ok(());
        };
        if len > MAX_FRAME {
            let close = Frame::close(Some(CloseFrame {
                code: CloseCode::Size,
                reason: "".into(),
            }));
            return write_frame(&mut io, close).await;
        }
        let start = cursor.position() as usize;
        let end = start + len as usize;
        if buf.len() < end {
            if read_more(&mut io, &mut buf, &mut chunk).await? {
                continue;
            }
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let mut payload = buf[start..end].to_vec();
        buf.drain(..end);
        // Unmasked here: tungstenite only unmasks inside its own (blocking) socket types.
        if let Some(mask) = header.mask.take() {
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= mask[i % 4];
            }
        }
        (header.rsv1, header.rsv2, header.rsv3) = (false, false, false);
        match header.opcode {
            OpCode::Control(Control::Close) => {
                return write_frame(&mut io, Frame::from_payload(header, payload)).await;
            }
            OpCode::Control(Control::Ping) => {
                header.opcode = OpCode::Control(Control::Pong);
                write_frame(&mut io, Frame::from_payload(header, payload)).await?;
            }
            OpCode::Control(Control::Pong) => {}
            _ => write_frame(&mut io, Frame::from_payload(header, payload)).await?,
        }
    }
}

/// Appends what the peer sends next to `buf`; `false` at end of stream.
async fn read_more<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut Vec<u8>,
    chunk: &mut [u8],
) -> std::io::Result<bool> {
    let n = io.read(chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n > 0)
}

/// Sends `frame` (unmasked, as a server does).
async fn write_frame<S: AsyncWrite + Unpin>(io: &mut S, frame: Frame) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(frame.len());
    frame.format(&mut out).map_err(invalid)?;
    io.write_all(&out).await?;
    io.flush().await
}

fn invalid(e: tungstenite::Error) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::DuplexStream;

    #[test]
    fn rfc6455_accept() {
        assert_eq!(
            tungstenite::handshake::derive_accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    /// Runs `script` as the client of an echo session, which must then end cleanly.
    fn with_echo<F: std::future::Future<Output = ()>>(script: impl FnOnce(DuplexStream) -> F) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let (client, server) = tokio::io::duplex(1 << 20);
            let session = tokio::spawn(echo(server));
            script(client).await;
            session.await.unwrap().unwrap();
        });
    }

    #[test]
    fn echo_roundtrip() {
        with_echo(|mut client| async move {
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
            // A ping is answered with a pong; a fragmented message comes back fragmented.
            for (sent, want) in [
                (&[0x89, 0x02, b'h', b'i'][..], &[0x8A, 0x02, b'h', b'i'][..]),
                (&[0x01, 0x01, b'a'][..], &[0x01, 0x01, b'a'][..]),
                (&[0x80, 0x01, b'b'][..], &[0x80, 0x01, b'b'][..]),
            ] {
                client.write_all(sent).await.unwrap();
                let mut back = vec![0u8; want.len()];
                client.read_exact(&mut back).await.unwrap();
                assert_eq!(back, want);
            }
            // Close with code 1000.
            client.write_all(&[0x88, 0x02, 0x03, 0xe8]).await.unwrap();
            let mut c = [0u8; 4];
            client.read_exact(&mut c).await.unwrap();
            assert_eq!(c, [0x88, 0x02, 0x03, 0xe8]);
        });
    }

    #[test]
    fn an_oversized_frame_is_closed_with_1009() {
        with_echo(|mut client| async move {
            let mut f = vec![0x82, 127];
            f.extend_from_slice(&(MAX_FRAME + 1).to_be_bytes());
            client.write_all(&f).await.unwrap();
            let mut c = [0u8; 4];
            client.read_exact(&mut c).await.unwrap();
            assert_eq!(c, [0x88, 0x02, 0x03, 0xf1]);
        });
    }
}
