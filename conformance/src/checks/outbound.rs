//! Outbound connections (OUT-1). The probe has no client, so the busybox image does it:
//! at start-up it fetches a token from a server the suite runs on this host (at the host's
//! own address, reached through the instance's network), then serves what it got.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use anyhow::{anyhow, ensure, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::BUSYBOX;
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
    // The client is busybox `nc`, not `wget`: under gen1 (Debian's runsc 20221219) a blocking
    // read(2) on a TCP socket answers EAGAIN before data arrives (gVisor's host network
    // returned the host's errno where its read loop waits for its own; fixed upstream in
    // release-20230214.0), and busybox wget reads that way; `nc` polls first. busybox 1.35's
    // `wget -T` and `timeout` crash besides. The reply is one line after the headers.
    let script = format!(
        "printf 'GET /{token} HTTP/1.0\\r\\nHost: {ip}:{port}\\r\\n\\r\\n' | nc -w 10 {ip} {port} > /tmp/raw; echo $? > /tmp/rc; tail -n 1 /tmp/raw > /tmp/out; exec httpd -f -p 8080 -h /tmp"
    );
    ensure!(
        !script.contains('@'),
        "the script must not contain '@' (--args ^@^)"
    );
    let s = ctx
        .serve(&[
            "--image",
            BUSYBOX,
            "--command",
            "/bin/sh",
            "--args",
            &format!("^@^-c@{script}"),
        ])
        .await?;
    let got = s.get("/out").await?;
    if got.status != 200 || got.text() != reply {
        let rc = s.get("/rc").await.map(|r| r.text()).unwrap_or_default();
        server.abort();
        return Err(anyhow!(
            "the container could not fetch http://{ip}:{port}/{token} (nc exit {}): GET /out gave {} {:?}",
            rc.trim(),
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
