//! A per-client rate limiter whose memory is bounded and whose entries
//! expire, for signups and for failed admin logins.
//!
//! Each client has a GCRA bucket: a burst of `burst` requests, refilled
//! evenly over `window`. Entries live in two generations of maps. Every hit
//! moves a client into the current one; when it is full, or a whole window
//! has passed since it began, the older generation is dropped. So at most
//! `2 × capacity` clients are tracked, the least recently seen go first,
//! and a client dropped for age had refilled anyway (the window passed).
//! IPv6 clients are keyed by their /64, since one host usually holds one
//! and can pick any address in it. A limiter may count email addresses
//! instead, by a keyed hash of each (see [`Limiter::check_address`]).

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Clients tracked per generation by default: about 50 bytes each.
pub const DEFAULT_CAPACITY: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ClientKey {
    V4(u32),
    /// The upper 64 bits.
    V6(u64),
    /// An email address's hash, keyed per limiter: nobody can choose
    /// addresses that share another's allowance.
    Address(u64),
}

impl From<IpAddr> for ClientKey {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => ClientKey::V4(v4.into()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientKey::V4(v4.into()),
                None => ClientKey::V6((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

/// How long until the next request would be allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub Duration);

impl RetryAfter {
    /// For a `Retry-After` header: whole seconds, at least one.
    pub fn seconds(self) -> u64 {
        self.0.as_secs() + u64::from(self.0.subsec_nanos() > 0)
    }
}

pub struct Limiter {
    /// Time between two refills.
    interval: Duration,
    /// How far ahead of now a client's schedule may run: the burst.
    tolerance: Duration,
    window: Duration,
    capacity: usize,
    addresses: RandomState,
    state: Mutex<Generations>,
}

struct Generations {
    started: Instant,
    current: HashMap<ClientKey, Instant>,
    previous: HashMap<ClientKey, Instant>,
}

impl Limiter {
    /// `burst` requests per `window`, refilled evenly. `None` for a burst
    /// of 0, which means no limit.
    pub fn new(burst: u32, window: Duration, capacity: usize) -> Option<Self> {
        let interval = window.checked_div(burst)?;
        Some(Self {
            interval,
            tolerance: interval * (burst - 1),
            window,
            capacity: capacity.max(1),
            addresses: RandomState::new(),
            state: Mutex::new(Generations {
                started: Instant::now(),
                current: HashMap::new(),
                previous: HashMap::new(),
            }),
        })
    }

    /// Takes one request from the client's allowance.
    pub fn check(&self, ip: IpAddr) -> Result<(), RetryAfter> {
        self.check_at(ip, Instant::now())
    }

    /// Takes one request from an email address's allowance (give it in
    /// one spelling: an `EmailAddress` is lower-cased).
    pub fn check_address(&self, address: &str) -> Result<(), RetryAfter> {
        let key = ClientKey::Address(self.addresses.hash_one(address));
        self.check_key_at(key, Instant::now())
    }

    /// Whether the client has an allowance left, without taking from it.
    pub fn peek(&self, ip: IpAddr) -> Result<(), RetryAfter> {
        self.peek_at(ip, Instant::now())
    }

    /// Whether an email address has an allowance left, without taking from it.
    pub fn peek_address(&self, address: &str) -> Result<(), RetryAfter> {
        let key = ClientKey::Address(self.addresses.hash_one(address));
        let state = self.state.lock().expect("limiter lock");
        self.verdict(due(&state, key, Instant::now()), Instant::now())
    }

    /// Clients tracked now (for tests and metrics).
    pub fn tracked(&self) -> usize {
        let state = self.state.lock().expect("limiter lock");
        state.current.len() + state.previous.len()
    }

    fn check_at(&self, ip: IpAddr, now: Instant) -> Result<(), RetryAfter> {
        self.check_key_at(ClientKey::from(ip), now)
    }

    fn check_key_at(&self, key: ClientKey, now: Instant) -> Result<(), RetryAfter> {
        let mut state = self.state.lock().expect("limiter lock");
        let due = due(&state, key, now);
        let verdict = self.verdict(due, now);
        // A refused client is seen too: one that keeps trying stays in view.
        let next = if verdict.is_ok() {
            due + self.interval
        } else {
            due
        };
        self.rotate_if_due(&mut state, now);
        state.previous.remove(&key);
        state.current.insert(key, next);
        verdict
    }

    fn peek_at(&self, ip: IpAddr, now: Instant) -> Result<(), RetryAfter> {
        let state = self.state.lock().expect("limiter lock");
        self.verdict(due(&state, ClientKey::from(ip), now), now)
    }

    fn verdict(&self, due: Instant, now: Instant) -> Result<(), RetryAfter> {
        let ahead = due - now;
        if ahead > self.tolerance {
            return Err(RetryAfter(ahead - self.tolerance));
        }
        Ok(())
    }

    fn rotate_if_due(&self, state: &mut Generations, now: Instant) {
        if state.current.len() >= self.capacity || now - state.started >= self.window {
            state.previous = std::mem::take(&mut state.current);
            state.started = now;
        }
    }
}

/// When the client's next request is due to be charged; a schedule in
/// the past has refilled, so the client starts afresh.
fn due(state: &Generations, key: ClientKey, now: Instant) -> Instant {
    state
        .current
        .get(&key)
        .or_else(|| state.previous.get(&key))
        .map_or(now, |&due| due.max(now))
}

/// The /64 of an IPv6 address, for log lines that should not name a host.
pub fn network_of(ip: IpAddr) -> IpAddr {
    match ClientKey::from(ip) {
        ClientKey::V4(v4) => IpAddr::from(std::net::Ipv4Addr::from(v4)),
        ClientKey::V6(prefix) => IpAddr::from(Ipv6Addr::from(u128::from(prefix) << 64)),
        ClientKey::Address(_) => unreachable!("an IP address is keyed by itself"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn a_burst_is_allowed_then_refused_until_a_refill() {
        let limiter = Limiter::new(3, MINUTE, 100).unwrap();
        let start = Instant::now();
        let client = ip("203.0.113.9");
        for _ in 0..3 {
            assert!(limiter.check_at(client, start).is_ok());
        }
        let refused = limiter.check_at(client, start).unwrap_err();
        assert_eq!(refused, RetryAfter(Duration::from_secs(20)));
        assert_eq!(refused.seconds(), 20);
        // One refill every 20 s.
        assert!(limiter
            .check_at(client, start + Duration::from_secs(19))
            .is_err());
        assert!(limiter
            .check_at(client, start + Duration::from_secs(20))
            .is_ok());
        assert!(limiter
            .check_at(client, start + Duration::from_secs(21))
            .is_err());
        // Other clients are not affected.
        assert!(limiter.check_at(ip("203.0.113.10"), start).is_ok());
    }

    #[test]
    fn peeking_takes_nothing() {
        let limiter = Limiter::new(1, MINUTE, 100).unwrap();
        let start = Instant::now();
        let client = ip("203.0.113.9");
        assert!(limiter.peek_at(client, start).is_ok());
        assert!(limiter.peek_at(client, start).is_ok());
        assert!(limiter.check_at(client, start).is_ok());
        assert!(limiter.peek_at(client, start).is_err());
    }

    #[test]
    fn an_ipv6_host_cannot_escape_by_rotating_within_its_64() {
        let limiter = Limiter::new(2, MINUTE, 100).unwrap();
        let start = Instant::now();
        assert!(limiter.check_at(ip("2001:db8:1:2::1"), start).is_ok());
        assert!(limiter.check_at(ip("2001:db8:1:2:ffff::9"), start).is_ok());
        assert!(limiter.check_at(ip("2001:db8:1:2::abcd"), start).is_err());
        assert!(
            limiter.check_at(ip("2001:db8:1:3::1"), start).is_ok(),
            "the next /64 is someone else"
        );
        assert_eq!(network_of(ip("2001:db8:1:2::abcd")), ip("2001:db8:1:2::"));
    }

    #[test]
    fn memory_stays_bounded_however_many_clients_come() {
        let capacity = 1000;
        let limiter = Limiter::new(5, Duration::from_secs(3600), capacity).unwrap();
        let start = Instant::now();
        for n in 0..50_000u32 {
            let client = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n));
            assert!(limiter.check_at(client, start).is_ok());
            assert!(limiter.tracked() <= 2 * capacity);
        }
    }

    #[test]
    fn a_busy_client_is_remembered_while_strangers_come_and_go() {
        let capacity = 100;
        let limiter = Limiter::new(3, Duration::from_secs(3600), capacity).unwrap();
        let start = Instant::now();
        let busy = ip("203.0.113.9");
        for _ in 0..3 {
            assert!(limiter.check_at(busy, start).is_ok());
        }
        for n in 0..10_000u32 {
            let stranger = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n));
            let _ = limiter.check_at(stranger, start);
            // The busy client keeps trying, which keeps it in view.
            assert!(limiter.check_at(busy, start).is_err(), "after {n}");
        }
    }

    #[test]
    fn entries_expire_once_a_window_has_passed() {
        let limiter = Limiter::new(2, MINUTE, 100).unwrap();
        let start = Instant::now();
        for n in 0..50u32 {
            let client = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n));
            limiter.check_at(client, start).unwrap();
        }
        assert_eq!(limiter.tracked(), 50);
        let later = start + 2 * MINUTE;
        limiter.check_at(ip("203.0.113.9"), later).unwrap();
        limiter
            .check_at(ip("203.0.113.9"), later + 2 * MINUTE)
            .unwrap();
        assert_eq!(
            limiter.tracked(),
            1,
            "the old entries had refilled and went"
        );
    }

    #[test]
    fn addresses_have_allowances_of_their_own() {
        let limiter = Limiter::new(1, MINUTE, 100).unwrap();
        assert!(limiter.check_address("reader@example.com").is_ok());
        assert!(limiter.check_address("reader@example.com").is_err());
        assert!(limiter.check_address("other@example.com").is_ok());
        assert!(
            limiter.check(ip("203.0.113.9")).is_ok(),
            "addresses and clients are counted apart"
        );
    }

    #[test]
    fn no_burst_means_no_limiter() {
        assert!(Limiter::new(0, MINUTE, 100).is_none());
    }
}
