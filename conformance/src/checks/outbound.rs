//! Outbound connections (OUT-1): at start-up the probe fetches a token from a server the
//! suite runs on this host (at the host's own address, reached through the instance's
//! network), then serves what it got (`PROBE_FETCH_AT_START`, `/fetched`).

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use anyhow::{anyhow, ensure, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::PROBE;
use crate::harness::Ctx;

/// This host's address on its default route (no packet is sent).
fn host_address() -> Result<IpAddr> {
    let s = UdpSocket::bind("0.0.0.0:0").context("binding a UDP socket")?;
    s.connect("198.51.100.1:9")
        .context("this host has no default route to find its own address with")?;
    Ok(s.local_addr()?.ip())
}

pub(super) async fn outbound_http(ctx: Ctx) -> Result<()> {
    let ip = host_address()?;
    let listener = TcpListener::bind(SocketAddr::new(IpAddr::from([0, 0, 0, 0]), 0))
        .await
        .context("binding the outside server")?;
    let port = listener.local_addr()?.port();
    let token = format!("token-{}", ctx.name());
    let reply = format!("reply-{token}");
    let server = {
        let reply = reply.clone();
        tokio::spawn(async move {
            let (mut s, peer) = listener.accept().await?;
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await?;
            let req = String::from_utf8_lossy(&buf[..n]).into_owned();
            s.write_all(
                format!(
                    "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{reply}",
                    reply.len()
                )
                .as_bytes(),
            )
            .await?;
            Ok::<_, std::io::Error>((peer, req))
        })
    };
    // The probe's client, not busybox's: under gen1 (Debian's runsc 20221219) busybox
    // `wget` and `nc` fail at random (see the probe's fetch.rs).
    let url = format!("http://{ip}:{port}/{token}");
    let fetch = format!("PROBE_FETCH_AT_START={url}");
    let s = match ctx
        .serve(&["--image", PROBE, "--set-env-vars", &fetch])
        .await
    {
        Ok(s) => s,
        Err(e) => {
            server.abort();
            return Err(e.context(format!("the container could not fetch {url}")));
        }
    };
    let got = s.get("/fetched").await?;
    if got.status != 200 || got.text() != reply {
        server.abort();
        return Err(anyhow!(
            "GET /fetched gave {} {:?}, want {reply:?} (fetched from {url})",
            got.status,
            got.brief()
        ));
    }
    let (peer, req) = tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .map_err(|_| anyhow!("the outside server saw no request"))?
        .map_err(|e| anyhow!("server task: {e}"))??;
    ensure!(
        req.starts_with(&format!("GET /{token} ")),
        "the outside server got {:?} from {peer}",
        req.lines().next().unwrap_or("")
    );
    Ok(())
}
