//! Opening a connection to an instance: the one interface shared by the data path, which
//! dials ([`crate::ingress`]), and the runtime's networking, which knows how to reach an
//! instance inside its network namespace ([`crate::runtime::network`]). Neither imports the
//! other for it.

use std::future::Future;
use std::io;
use std::pin::Pin;

/// Opens a connection to an instance's ingress port.
pub trait Dial: Send + Sync + 'static {
    fn dial(&self) -> Pin<Box<dyn Future<Output = io::Result<tokio::net::TcpStream>> + Send + '_>>;
}

/// Dials a plain loopback address (unit tests of the upstream clients).
#[cfg(test)]
pub(crate) struct Loopback(pub std::net::SocketAddr);

#[cfg(test)]
impl Dial for Loopback {
    fn dial(&self) -> Pin<Box<dyn Future<Output = io::Result<tokio::net::TcpStream>> + Send + '_>> {
        Box::pin(tokio::net::TcpStream::connect(self.0))
    }
}
