//! Loopback ports for the servers a test starts, shared by the suites.

use std::net::TcpListener;
use std::sync::Mutex;

/// Ports handed out by `free_port`, which the OS may offer again as soon as
/// we let go of them: no two callers in one test binary get the same one.
static RESERVED_PORTS: Mutex<Vec<u16>> = Mutex::new(Vec::new());

/// A loopback port with nothing listening, kept for the caller.
pub fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut reserved = RESERVED_PORTS.lock().unwrap();
        if !reserved.contains(&port) {
            reserved.push(port);
            return port;
        }
    }
}

/// Whether `free_port` has handed `port` to someone, so a server binding
/// port 0 must not keep it.
#[allow(dead_code)]
pub fn is_reserved(port: u16) -> bool {
    RESERVED_PORTS.lock().unwrap().contains(&port)
}
