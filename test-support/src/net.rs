//! Local ports for the runlets under test.

use std::net::TcpListener;

/// A port nobody listens on right now, on 127.0.0.1. (Someone may take it before the
/// caller binds it: callers that can, try again.)
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
