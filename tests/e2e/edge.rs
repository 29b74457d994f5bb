//! The edge under abuse: floods of half-sent bodies, idle connections under
//! a low descriptor limit, slow heads and idle keep-alives timed, forged
//! `X-Forwarded-For`, token guessing, and secrets in config errors.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;

use crate::harness::{free_port, wait_until, Daemon, Install, ADMIN_TOKEN};

/// A field of /proc/PID/status, in kB.
fn status_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|kb| kb.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in {status}"))
}

fn raise_own_descriptor_limit() {
    rlimit::increase_nofile_limit(u64::MAX).unwrap();
}

/// Opens a connection and sends a request head announcing `length` bytes
/// of body, then `sent` of them; leaves it open.
fn half_send(
    port: u16,
    path: &str,
    token: Option<&str>,
    length: usize,
    sent: usize,
) -> Option<TcpStream> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let auth = token.map_or(String::new(), |token| {
        format!("Authorization: Bearer {token}\r\n")
    });
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         {auth}Content-Length: {length}\r\n\r\n"
    );
    // The daemon may refuse and close before taking it all: that is fine.
    let _ = stream.write_all(head.as_bytes());
    let chunk = vec![b'a'; 64 * 1024];
    let mut left = sent;
    while left > 0 {
        let size = left.min(chunk.len());
        if stream.write_all(&chunk[..size]).is_err() {
            break;
        }
        left -= size;
    }
    Some(stream)
}

#[test]
fn a_thousand_half_sent_megabyte_bodies_keep_memory_bounded() {
    raise_own_descriptor_limit();
    let dir = tempfile::tempdir().unwrap();
    let install = Install::new(dir.path()).set("TIDINGS_ADMIN__TOKEN", ADMIN_TOKEN);
    let daemon = install.serve(free_port());
    let pid = daemon.pid();
    let idle_kb = status_kb(pid, "VmRSS");
    // Half at the public signup route, half at the admin API with the right
    // token (1 MB is within its limit, so these queue for the byte budget).
    let mut open = Vec::new();
    for n in 0..1000 {
        let (path, token) = if n % 2 == 0 {
            ("/subscribe", None)
        } else {
            ("/api/admin/posts", Some(ADMIN_TOKEN))
        };
        open.extend(half_send(daemon.port, path, token, 1_000_000, 500_000));
    }
    assert!(open.len() > 900, "only {} connections opened", open.len());
    // Still serving people meanwhile.
    let page = daemon.client.get(daemon.url("/")).send().unwrap();
    assert_eq!(page.status(), 200);
    let peak_kb = status_kb(pid, "VmHWM");
    eprintln!(
        "idle {idle_kb} kB, peak {peak_kb} kB with {} open",
        open.len()
    );
    assert!(
        peak_kb < 150 * 1024,
        "peak RSS {peak_kb} kB with 1,000 half-sent bodies"
    );
    drop(open);
    let mut now_kb = 0;
    wait_until("RSS back near idle", Duration::from_secs(20), || {
        now_kb = status_kb(pid, "VmRSS");
        now_kb < idle_kb + 40 * 1024
    });
    eprintln!("after closing: {now_kb} kB");
}

#[test]
fn idle_connections_under_a_low_descriptor_limit_do_not_lock_people_out() {
    raise_own_descriptor_limit();
    let dir = tempfile::tempdir().unwrap();
    let timeout = Duration::from_secs(4);
    let install = Install::new(dir.path())
        .set("TIDINGS_HTTP__IDLE_TIMEOUT", "4s")
        .set("TIDINGS_HTTP__HEADER_READ_TIMEOUT", "4s");
    let daemon = install.serve_with_descriptor_limit(free_port(), 1024);
    let log = daemon.log_text();
    let cap: usize = log
        .split("max_connections=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("no connection cap logged:\n{log}"));
    assert!(cap < 1024, "the cap {cap} leaves no descriptors spare");
    // Sockets only: the database's files come and go.
    let sockets = || {
        std::fs::read_dir(format!("/proc/{}/fd", daemon.pid()))
            .unwrap()
            .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
            .filter(|target| target.to_string_lossy().starts_with("socket:"))
            .count()
    };
    let before = sockets();
    let held = || sockets().saturating_sub(before);
    let connect = |_| TcpStream::connect(("127.0.0.1", daemon.port)).unwrap();
    // Connections that never send a byte, up to the cap, in batches the
    // kernel's accept queue can hold (a burst beyond it leaves connections
    // the client thinks are open and the server has not seen yet).
    let mut idle: Vec<TcpStream> = Vec::new();
    while idle.len() < cap {
        idle.extend((0..100.min(cap - idle.len())).map(connect));
        let opened = idle.len();
        // The harness's readiness probe may still hold one place.
        let expected = opened.min(cap - 1);
        wait_until("the daemon to take each batch", timeout, || {
            held() >= expected
        });
    }
    eprintln!("{} connections held at the cap of {cap}", held());
    // Then more than the daemon has descriptors for, 1,100 in all: it
    // takes no more (they wait in the kernel's queue, the last ones in
    // connect) until timeouts free places, rather than failing to accept.
    idle.extend((cap..1100).map(connect));
    let client = reqwest::blocking::Client::builder()
        .timeout(timeout + Duration::from_secs(10))
        .build()
        .unwrap();
    let started = Instant::now();
    let page = client.get(daemon.url("/")).send().expect("GET / answers");
    assert_eq!(page.status(), 200);
    eprintln!("GET / answered after {:?}", started.elapsed());
    drop(idle);
    let log = daemon.log_text();
    assert!(
        log.matches("Too many open files").count() <= 1,
        "the log is flooded:\n{log}"
    );
}

/// Blocks until the daemon closes `stream` (end of stream or a reset);
/// when that happened. Fails if it is still open after `within`.
fn closed_by_daemon(stream: &mut TcpStream, within: Duration) -> Instant {
    use std::io::Read;
    stream.set_read_timeout(Some(within)).unwrap();
    let mut buffer = [0; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return Instant::now(),
            Ok(_) => continue,
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                panic!("the connection was still open after {within:?}")
            }
            Err(_) => return Instant::now(),
        }
    }
}

/// A daemon with `http.header_read_timeout` and `http.idle_timeout` set.
fn serve_with_timeouts(dir: &std::path::Path, header_read: &str, idle: &str) -> Daemon {
    Install::new(dir)
        .set("TIDINGS_HTTP__HEADER_READ_TIMEOUT", header_read)
        .set("TIDINGS_HTTP__IDLE_TIMEOUT", idle)
        .serve(free_port())
}

#[test]
fn a_head_sent_a_byte_every_half_second_is_cut_off_at_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    // A long idle timeout, so only the header timeout can close it.
    let daemon = serve_with_timeouts(dir.path(), "2s", "60s");
    let timeout = Duration::from_secs(2);
    let mut stream = TcpStream::connect(("127.0.0.1", daemon.port)).unwrap();
    let connected = Instant::now();
    let mut writer = stream.try_clone().unwrap();
    // A head that never ends: one byte of an endless header every 0.5 s.
    let dribble = std::thread::spawn(move || {
        let head = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
        let bytes = head.iter().chain(std::iter::repeat(&b'a')).take(60);
        for byte in bytes {
            if writer.write_all(&[*byte]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    let closed = closed_by_daemon(&mut stream, Duration::from_secs(20)) - connected;
    dribble.join().unwrap();
    eprintln!("a slow head was cut off after {closed:?}");
    assert!(
        closed >= timeout,
        "cut off after {closed:?}, before {timeout:?}"
    );
    assert!(
        closed < timeout + Duration::from_secs(2),
        "cut off only after {closed:?}"
    );
}

#[test]
fn an_idle_keep_alive_connection_is_closed_at_the_idle_timeout() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    // A long header timeout: hyper also times an idle connection's next head.
    let daemon = serve_with_timeouts(dir.path(), "60s", "2s");
    let timeout = Duration::from_secs(2);
    let mut stream = TcpStream::connect(("127.0.0.1", daemon.port)).unwrap();
    let sent = Instant::now();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    // The whole answer, then nothing: the connection is idle from here.
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0; 4096];
    let answered = loop {
        let read = stream.read(&mut buffer).expect("an answer");
        assert!(read > 0, "closed before answering");
        answer.extend_from_slice(&buffer[..read]);
        let text = String::from_utf8_lossy(&answer);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|line| {
                    line.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|n| n.trim().parse().unwrap())
                })
                .expect("a Content-Length");
            if body.len() >= length {
                assert!(head.starts_with("HTTP/1.1 200"), "{head}");
                assert!(
                    !head.to_ascii_lowercase().contains("connection: close"),
                    "{head}"
                );
                break Instant::now();
            }
        }
    };
    let closed = closed_by_daemon(&mut stream, Duration::from_secs(20));
    eprintln!(
        "idle connection closed {:?} after its answer",
        closed - answered
    );
    assert!(
        closed - sent >= timeout,
        "closed {:?} after the request",
        closed - sent
    );
    assert!(
        closed - answered < timeout + Duration::from_secs(2),
        "closed only {:?} after the answer",
        closed - answered
    );
}

#[test]
fn the_descriptor_soft_limit_is_raised_to_the_hard_one_and_the_cap_fits_it() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Install::new(dir.path()).serve_with_descriptor_limits(free_port(), 256, 1024);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", daemon.pid())).unwrap();
    let open_files: Vec<&str> = limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))
        .unwrap_or_else(|| panic!("{limits}"))
        .split_whitespace()
        .collect();
    assert_eq!(open_files[..2], ["1024", "1024"], "soft and hard: {limits}");
    let log = daemon.log_text();
    let logged = |field: &str| -> u64 {
        log.split(&format!("{field}="))
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|number| number.parse().ok())
            .unwrap_or_else(|| panic!("no {field} logged:\n{log}"))
    };
    eprintln!(
        "descriptor_limit={} max_connections={}",
        logged("descriptor_limit"),
        logged("max_connections")
    );
    assert_eq!(logged("descriptor_limit"), 1024);
    // The cap is sized from the raised limit: more than 256 could allow,
    // with descriptors kept back for the database, SMTP and files.
    let cap = logged("max_connections");
    assert!((256..1024).contains(&cap), "cap {cap}");
}

fn metrics_status(daemon: &Daemon, token: Option<&str>) -> (u16, String) {
    let mut request = daemon.client.get(daemon.url("/metrics"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().unwrap();
    (response.status().as_u16(), response.text().unwrap())
}

#[test]
fn metrics_need_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let metrics_token = "e2e-metrics-token-abcdefghij";
    let install = Install::new(dir.path())
        .set("TIDINGS_ADMIN__TOKEN", ADMIN_TOKEN)
        .set("TIDINGS_METRICS__TOKEN", metrics_token);
    let daemon = install.serve(free_port());
    let (status, body) = metrics_status(&daemon, None);
    assert_eq!(status, 401);
    assert!(!body.contains("tidings_subscribers"), "{body}");
    assert_eq!(metrics_status(&daemon, Some("not-the-token-at-all")).0, 401);
    let (status, body) = metrics_status(&daemon, Some(metrics_token));
    assert_eq!(status, 200);
    assert!(
        body.contains("tidings_subscribers{status=\"pending\"}"),
        "{body}"
    );
    drop(daemon);

    // Without metrics.token, the admin token opens it; with no token at
    // all, the answer says how to switch it on.
    let admin_only = Install::new(dir.path()).set("TIDINGS_ADMIN__TOKEN", ADMIN_TOKEN);
    let daemon = admin_only.serve(free_port());
    assert_eq!(metrics_status(&daemon, Some(ADMIN_TOKEN)).0, 200);
    drop(daemon);
    let daemon = Install::new(dir.path()).serve(free_port());
    let (status, body) = metrics_status(&daemon, Some(ADMIN_TOKEN));
    assert_eq!(status, 401);
    assert!(body.contains("metrics.token"), "{body}");
}

fn subscribe_via_proxy(daemon: &Daemon, email: &str, forwarded_for: &str) -> u16 {
    daemon
        .client
        .post(daemon.url("/subscribe"))
        .header("x-forwarded-for", forwarded_for)
        .json(&serde_json::json!({ "email": email }))
        .send()
        .unwrap()
        .status()
        .as_u16()
}

#[test]
fn a_forged_forwarded_for_behind_a_trusted_proxy_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tidings.toml");
    std::fs::write(
        &config,
        "[http]\ntrusted_proxies = [\"127.0.0.1/32\"]\nsubscribe_per_ip_per_hour = 3\n",
    )
    .unwrap();
    let install = Install::new(dir.path())
        .set("TIDINGS_CONFIG", config.to_str().unwrap())
        .set("TIDINGS_ADMIN__TOKEN", ADMIN_TOKEN);
    let daemon = install.serve(free_port());
    // The bot wrote 6.6.6.6; the proxy (us, on loopback) appended the
    // address it saw, 203.0.113.9.
    assert_eq!(
        subscribe_via_proxy(&daemon, "first@example.com", "6.6.6.6, 203.0.113.9"),
        202
    );
    let page: Value = daemon
        .admin(Method::GET, "/api/admin/subscribers")
        .send()
        .unwrap()
        .json()
        .unwrap();
    let id = page["subscribers"][0]["id"].as_i64().unwrap();
    let log: Value = daemon
        .admin(Method::GET, &format!("/api/admin/subscribers/{id}/consent"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(log["events"][0]["ip"], "203.0.113.9", "{log}");
    // Another forged leftmost hop each time: still one client, so the
    // limit of 3 an hour holds.
    assert_eq!(
        subscribe_via_proxy(&daemon, "second@example.com", "7.7.7.7, 203.0.113.9"),
        202
    );
    assert_eq!(
        subscribe_via_proxy(&daemon, "third@example.com", "8.8.8.8, 203.0.113.9"),
        202
    );
    assert_eq!(
        subscribe_via_proxy(&daemon, "fourth@example.com", "9.9.9.9, 203.0.113.9"),
        429
    );
    // Someone else behind the same proxy is not affected.
    assert_eq!(
        subscribe_via_proxy(&daemon, "fifth@example.com", "6.6.6.6, 198.51.100.4"),
        202
    );
}

#[test]
fn failed_admin_tokens_are_throttled_per_client() {
    let dir = tempfile::tempdir().unwrap();
    let install = Install::new(dir.path()).set("TIDINGS_ADMIN__TOKEN", ADMIN_TOKEN);
    let daemon = install.serve(free_port());
    let stats = |token: &str| {
        daemon
            .client
            .get(daemon.url("/api/admin/stats"))
            .bearer_auth(token)
            .send()
            .unwrap()
    };
    for guess in 0..10 {
        assert_eq!(stats(&format!("guess-number-{guess:06}")).status(), 401);
    }
    let throttled = stats("guess-number-000010");
    assert_eq!(throttled.status(), 429);
    let retry: u64 = throttled.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "Retry-After: {retry}");
    let body: Value = throttled.json().unwrap();
    assert!(body["error"].is_string());
    // Even the right token waits, so a guesser learns nothing meanwhile.
    assert_eq!(stats(ADMIN_TOKEN).status(), 429);
}

#[test]
fn a_bad_database_url_does_not_print_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "hunter2-very-secret";
    for url in [
        format!("postgres://tidings:{secret}@127.0.0.1:1/tidings"),
        format!("mysql://tidings:{secret}@db.example.com/tidings"),
    ] {
        let install = Install::new(dir.path())
            .set("TIDINGS_DATABASE__URL", &url)
            .set("TIDINGS_HTTP__BIND", format!("127.0.0.1:{}", free_port()));
        let output = install.run(&["serve"]);
        assert!(!output.status.success(), "{url} must not start");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("database.url"), "{stderr}");
        assert!(!stderr.contains(secret), "the password leaked: {stderr}");
    }
}

/// `serve` with `env` on top, which must refuse to start; its stderr.
fn refused_start(dir: &std::path::Path, env: &[(&str, &str)]) -> String {
    let mut install =
        Install::new(dir).set("TIDINGS_HTTP__BIND", format!("127.0.0.1:{}", free_port()));
    for (key, value) in env {
        install = install.set(key, *value);
    }
    let output = install.run_within(&["serve"], Duration::from_secs(20));
    assert!(!output.status.success(), "{env:?} must not start");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_config_syntax_error_names_the_place_and_not_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tidings.toml");
    let path = config.to_str().unwrap();
    let secret = "hunter2secret";
    // An unclosed string, and a token left unquoted.
    let url_line = format!("url = \"postgres://tidings:{secret}@db.example.com/tidings");
    let token_line = format!("token = {secret}-{secret}");
    for (toml, line, column, key) in [
        (
            format!("[database]\n{url_line}\n"),
            2,
            url_line.chars().count() + 1,
            "database.url",
        ),
        (
            format!("[newsletter]\nname = \"News\"\n\n[admin]\n{token_line}\n"),
            5,
            "token = ".len() + 1,
            "admin.token",
        ),
    ] {
        std::fs::write(&config, &toml).unwrap();
        let stderr = refused_start(dir.path(), &[("TIDINGS_CONFIG", path)]);
        let place = format!("line {line}, column {column}");
        assert!(stderr.contains(path), "no file named: {stderr}");
        assert!(stderr.contains(&place), "no {place}: {stderr}");
        assert!(stderr.contains(&format!("`{key}`")), "no {key}: {stderr}");
        assert!(!stderr.contains(secret), "the secret leaked: {stderr}");
    }
}

#[test]
fn environment_overrides_that_fail_do_not_print_their_secret() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "hunter2secret-0123456789";
    for (variable, value, key) in [
        // No `user:pass@` for redaction to find: a slash short, or bare.
        (
            "TIDINGS_DATABASE__URL",
            format!("postgres:/tidings:{secret}@db/tidings"),
            "database.url",
        ),
        ("TIDINGS_DATABASE__URL", secret.to_owned(), "database.url"),
        (
            "TIDINGS_SMTP__URL",
            format!("http://u:{secret}@mail.example.com"),
            "smtp.url",
        ),
        // Values figment reads as a list, a table, or with a space.
        (
            "TIDINGS_ADMIN__TOKEN",
            format!("[1, \"{secret}\"]"),
            "admin.token",
        ),
        ("TIDINGS_ADMIN__TOKEN", format!("{secret} x"), "admin.token"),
        (
            "TIDINGS_METRICS__TOKEN",
            format!("{{a = \"{secret}\"}}"),
            "metrics.token",
        ),
    ] {
        let stderr = refused_start(dir.path(), &[(variable, &value)]);
        assert!(stderr.contains(key), "{variable}={value}: {stderr}");
        assert!(!stderr.contains(secret), "the secret leaked: {stderr}");
    }
}

#[test]
fn a_whitespace_only_admin_token_stops_the_daemon_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tidings.toml");
    std::fs::write(&config, "[admin]\ntoken = \"   \"\n").unwrap();
    let install = Install::new(dir.path())
        .set("TIDINGS_CONFIG", config.to_str().unwrap())
        .set("TIDINGS_HTTP__BIND", format!("127.0.0.1:{}", free_port()));
    let output = install.run(&["serve"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("admin.token"), "{stderr}");
    assert!(stderr.contains("whitespace"), "{stderr}");

    // The same from the environment, where values reach the config trimmed.
    let install = Install::new(dir.path())
        .set("TIDINGS_ADMIN__TOKEN", "   ")
        .set("TIDINGS_HTTP__BIND", format!("127.0.0.1:{}", free_port()));
    let output = install.run(&["serve"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("admin.token"), "{stderr}");
    assert!(stderr.contains("whitespace"), "{stderr}");
}
