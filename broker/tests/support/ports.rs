//! Free loopback ports for test brokers, shared by the broker's and the client's test supports
//! (the client's includes this file by path).

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Below Linux's ephemeral range (32768-60999): a port bind(:0) hands out is in that range,
    // and an outgoing connection can take it between this check and the broker's own bind.
    let offset = (std::process::id() % 600) * 20;
    for _ in 0..12_000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + (offset + n) % 12_000;
        if std::net::TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
            return port as u16;
        }
    }
    panic!("no free loopback port in 20000-31999")
}
