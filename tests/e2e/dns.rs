//! A DNS server on loopback that answers TXT questions from a zone the test
//! writes, over UDP and TCP, so `tidings check` asks a real server and
//! nothing leaves the machine. Encoding is hickory's (the resolver's own
//! protocol crate).

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use hickory_resolver::proto::op::{Message, ResponseCode};
use hickory_resolver::proto::rr::rdata::TXT;
use hickory_resolver::proto::rr::{RData, Record, RecordType};

/// TXT records by name, the names whose lookups fail with SERVFAIL, and
/// those the server never answers.
#[derive(Default, Clone)]
pub struct Zone {
    txt: HashMap<String, Vec<Vec<String>>>,
    servfail: HashSet<String>,
    silent: HashSet<String>,
}

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl Zone {
    /// Adds one TXT record at `name`, made of `strings` (a long key is
    /// published as several strings, which readers join).
    pub fn txt(mut self, name: &str, strings: &[&str]) -> Self {
        self.txt
            .entry(key(name))
            .or_default()
            .push(strings.iter().map(|s| s.to_string()).collect());
        self
    }

    pub fn servfail(mut self, name: &str) -> Self {
        self.servfail.insert(key(name));
        self
    }

    pub fn silent(mut self, name: &str) -> Self {
        self.silent.insert(key(name));
        self
    }

    /// None: no answer at all.
    fn answer(&self, request: &[u8]) -> Option<Message> {
        let request = Message::from_vec(request).ok()?;
        let mut response = Message::response(request.metadata.id, request.metadata.op_code);
        response.metadata.authoritative = true;
        response.metadata.recursion_desired = request.metadata.recursion_desired;
        response.metadata.recursion_available = true;
        response.edns = request.edns.clone();
        let query = request.queries.first()?.clone();
        let name = key(&query.name().to_ascii());
        if self.silent.contains(&name) {
            return None;
        }
        response.add_query(query.clone());
        if self.servfail.contains(&name) {
            response.metadata.response_code = ResponseCode::ServFail;
            return Some(response);
        }
        match self.txt.get(&name) {
            Some(records) if query.query_type() == RecordType::TXT => {
                for strings in records {
                    let rdata = RData::TXT(TXT::new(strings.clone()));
                    response.add_answer(Record::from_rdata(query.name().clone(), 60, rdata));
                }
            }
            // The name exists, with no record of the asked type.
            Some(_) => {}
            None => response.metadata.response_code = ResponseCode::NXDomain,
        }
        Some(response)
    }
}

pub struct DnsServer {
    pub address: SocketAddr,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl DnsServer {
    pub fn start(zone: Zone) -> Self {
        // UDP and TCP on one port, as resolvers expect.
        let (udp, tcp) = loop {
            let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
            if let Ok(tcp) = TcpListener::bind(udp.local_addr().unwrap()) {
                break (udp, tcp);
            }
        };
        let address = udp.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        udp.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        tcp.set_nonblocking(true).unwrap();
        let udp_thread = {
            let (zone, stop) = (zone.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buffer = [0u8; 4096];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((length, peer)) = udp.recv_from(&mut buffer) else {
                        continue;
                    };
                    let Some(response) = zone.answer(&buffer[..length]) else {
                        continue;
                    };
                    let mut bytes = response.to_vec().unwrap();
                    let limit = response
                        .edns
                        .as_ref()
                        .map_or(512, |edns| usize::from(edns.max_payload()));
                    if bytes.len() > limit {
                        // Too big for this client over UDP: it retries over TCP.
                        bytes = response.truncate().to_vec().unwrap();
                    }
                    let _ = udp.send_to(&bytes, peer);
                }
            })
        };
        let tcp_thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match tcp.accept() {
                        Ok((stream, _)) => {
                            let zone = zone.clone();
                            std::thread::spawn(move || serve_tcp(&zone, stream));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            })
        };
        Self {
            address,
            stop,
            threads: vec![udp_thread, tcp_thread],
        }
    }

    /// For `tidings check --nameserver`.
    pub fn arg(&self) -> String {
        self.address.to_string()
    }
}

/// Answers length-prefixed questions until the client hangs up (or is
/// quiet for a minute).
fn serve_tcp(zone: &Zone, mut stream: std::net::TcpStream) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    loop {
        let mut length = [0u8; 2];
        if stream.read_exact(&mut length).is_err() {
            return;
        }
        let mut request = vec![0u8; usize::from(u16::from_be_bytes(length))];
        if stream.read_exact(&mut request).is_err() {
            return;
        }
        let Some(response) = zone.answer(&request) else {
            continue;
        };
        let bytes = response.to_vec().unwrap();
        let length = u16::try_from(bytes.len()).unwrap().to_be_bytes();
        if stream.write_all(&length).is_err() || stream.write_all(&bytes).is_err() {
            return;
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
