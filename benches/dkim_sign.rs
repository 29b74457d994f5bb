//! What a DKIM signature costs per email: `cargo bench --bench dkim_sign`.
//!
//! Signs an issue-sized email (headers as tidings writes them, the text and
//! HTML parts of benches/post.md) with the test-only RSA-2048 and Ed25519
//! keys, first on one thread, then on every core at once: the signer is
//! shared without a lock, so the second rate should be about the first
//! times the number of cores.

use std::time::{Duration, Instant, SystemTime};

use tidings::domain::dkim::{DkimKey, DkimSigner};

const POST: &str = include_str!("post.md");

fn email() -> Vec<u8> {
    let headers = [
        "From: \"Partnership Pitfalls Weekly\" <tips@news.example.org>",
        "To: Reader <reader@example.com>",
        "Subject: =?utf-8?q?Bonus_tip:_Letting_the_money_decide?=",
        "Date: Fri, 04 Dec 2026 09:00:00 +0000",
        "Message-ID: <0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b@news.example.org>",
        "List-Id: \"Partnership Pitfalls Weekly\" <partnership-pitfalls-weekly.news.example.org>",
        "List-Unsubscribe: <https://news.example.org/unsubscribe?token=AbCdEfGhIjKlMnOpQrStUvWxYz0123456789>",
        "List-Unsubscribe-Post: List-Unsubscribe=One-Click",
        "MIME-Version: 1.0",
        "Content-Type: multipart/alternative; boundary=\"b1\"",
    ];
    let text = POST.replace('\n', "\r\n");
    let html =
        format!("<html><body><div style=\"font-family:Georgia,serif\">{text}</div></body></html>");
    format!(
        "{}\r\n\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n\
         --b1\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n--b1--\r\n",
        headers.join("\r\n")
    )
    .into_bytes()
}

/// Signatures per second with `threads` threads signing for `for_how_long`.
fn rate(signer: &DkimSigner, message: &[u8], threads: usize, for_how_long: Duration) -> f64 {
    let started = Instant::now();
    let signed: usize = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut count = 0;
                    while started.elapsed() < for_how_long {
                        std::hint::black_box(signer.sign(message, SystemTime::now()));
                        count += 1;
                    }
                    count
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| worker.join().unwrap())
            .sum()
    });
    signed as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let message = email();
    // What the key's operation costs alone, nearly: hashing and
    // canonicalising a few headers is cheap next to it.
    let headers_only =
        message[..message.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4].to_vec();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    println!("an email of {} bytes; {cores} cores", message.len());
    for file in ["rsa2048-pkcs8.pem", "ed25519.pem"] {
        let path = format!("{}/tests/fixtures/dkim/{file}", env!("CARGO_MANIFEST_DIR"));
        let key = DkimKey::from_pem(&std::fs::read(&path).unwrap()).unwrap();
        let name = key.describe();
        let signer = DkimSigner::new("news.example.org".into(), "bench".into(), key);
        rate(&signer, &message, 1, Duration::from_millis(300)); // warm up
        let one = rate(&signer, &message, 1, Duration::from_secs(3));
        let all = rate(&signer, &message, cores, Duration::from_secs(3));
        let bare = rate(&signer, &headers_only, 1, Duration::from_secs(2));
        println!(
            "{name}: {:.0} µs per email on one thread ({one:.0}/s); {all:.0}/s on {cores} threads \
             ({:.2}× one); {:.0} µs for the same headers with no body",
            1e6 / one,
            all / one,
            1e6 / bare
        );
    }
}
