//! The broker's network seam: every connection it makes or accepts (Kafka listener, replica
//! fetches, transaction markers, the controller quorum) goes through [`connect`] and [`bind`].
//! Production uses tokio's TCP; a simulation thread installs its own [`Transport`] with
//! [`set_thread_transport`] (in-memory links with virtual latency and partitions).

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

/// A byte stream: a TCP connection or a simulated one.
pub trait Stream: AsyncRead + AsyncWrite + Send + Sync + Unpin + std::fmt::Debug + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Sync + Unpin + std::fmt::Debug + 'static> Stream for T {}

/// A boxed [`Stream`].
pub type BoxStream = Box<dyn Stream>;

/// A boxed future of the seam.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Accepts connections on one address.
pub trait Listener: Send + 'static {
    /// The next connection and its peer's address.
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(BoxStream, String)>>;
}

/// Makes connections and listeners.
pub trait Transport: Send + Sync + std::fmt::Debug {
    /// Connects to `addr` (`host:port`).
    fn connect(&self, addr: &str) -> BoxFuture<'static, io::Result<BoxStream>>;
    /// Listens on `addr` (`host:port`).
    fn bind(&self, addr: &str) -> BoxFuture<'static, io::Result<Box<dyn Listener>>>;
}

thread_local! {
    static TRANSPORT: RefCell<Option<Arc<dyn Transport>>> = const { RefCell::new(None) };
}

/// Installs (or with `None` removes) the calling thread's transport; threads without one use
/// TCP. Only a simulation thread installs one.
pub fn set_thread_transport(t: Option<Arc<dyn Transport>>) {
    TRANSPORT.with(|c| *c.borrow_mut() = t);
}

fn current() -> Option<Arc<dyn Transport>> {
    TRANSPORT.with(|c| c.borrow().clone())
}

/// Connects to `addr` through the thread's transport (TCP with `TCP_NODELAY` by default).
pub async fn connect(addr: &str) -> io::Result<BoxStream> {
    if let Some(t) = current() {
        return t.connect(addr).await;
    }
    let s = tokio::net::TcpStream::connect(addr).await?;
    let _ = s.set_nodelay(true);
    Ok(Box::new(s))
}

/// Listens on `addr` through the thread's transport (TCP by default).
pub async fn bind(addr: &str) -> io::Result<Box<dyn Listener>> {
    if let Some(t) = current() {
        return t.bind(addr).await;
    }
    Ok(Box::new(tokio::net::TcpListener::bind(addr).await?))
}

impl Listener for tokio::net::TcpListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(BoxStream, String)>> {
        Box::pin(async move {
            let (s, peer) = tokio::net::TcpListener::accept(self).await?;
            let _ = s.set_nodelay(true);
            Ok((Box::new(s) as BoxStream, peer.to_string()))
        })
    }
}

impl Listener for Box<dyn Listener> {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(BoxStream, String)>> {
        (**self).accept()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn tcp_by_default() {
        let tl = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = tl.local_addr().expect("addr").to_string();
        let mut l: Box<dyn Listener> = Box::new(tl);
        let client = tokio::spawn(async move {
            let mut s = connect(&addr).await.expect("connect");
            s.write_all(b"ping").await.expect("write");
        });
        let (mut s, _) = l.accept().await.expect("accept");
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"ping");
        client.await.expect("join");
    }
}
