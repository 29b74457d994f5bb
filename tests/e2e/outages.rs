//! The database away or full, seen from outside: `/healthz` says so, and
//! signups are answered with 503 and Retry-After within seconds, never
//! with a hang or a 500; nobody told that nothing was stored is emailed
//! later. PostgreSQL outages use a cluster the test starts and stops
//! itself (`cluster.rs`); a full disk is a small tmpfs.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster::PgCluster;
use crate::harness::{free_port, sqlite_count, wait_until, Daemon, Install, Sink};
use crate::small_disk::SmallDisk;

/// "About 5 s": the signup deadline is 4 s, plus the answer's own way.
const FAST_ENOUGH: Duration = Duration::from_secs(6);

/// One signup as the client saw it.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub(crate) email: String,
    pub(crate) json: bool,
    pub(crate) status: u16,
    pub(crate) took: Duration,
    pub(crate) content_type: String,
    pub(crate) retry_after: Option<String>,
    /// What the answer said: the confirmation email may still come.
    pub(crate) may_still_arrive: bool,
}

pub(crate) fn sign_up(
    daemon: &Daemon,
    client: &reqwest::blocking::Client,
    email: &str,
    json: bool,
) -> Answer {
    let request = client.post(daemon.url("/subscribe"));
    let request = match json {
        true => request.json(&serde_json::json!({ "email": email })),
        false => request.form(&[("email", email)]),
    };
    let started = Instant::now();
    let response = request.send().unwrap();
    let took = started.elapsed();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|value| value.to_str().unwrap().to_owned())
    };
    let (content_type, retry_after) = (
        header("content-type").unwrap_or_default(),
        header("retry-after"),
    );
    let status = response.status().as_u16();
    let body = response.text().unwrap();
    let may_still_arrive = match json {
        true if status != 202 => {
            let body: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{body}"));
            assert!(body["error"].is_string(), "{body}");
            body["may_still_arrive"].as_bool().unwrap()
        }
        _ => body.contains("may still"),
    };
    Answer {
        email: email.to_owned(),
        json,
        status,
        took,
        content_type,
        retry_after,
        may_still_arrive,
    }
}

/// Every answer that is not a 202 is a 503 with Retry-After, in the
/// client's own shape, and every answer came quickly.
pub(crate) fn assert_well_formed(answers: &[Answer]) {
    for answer in answers {
        assert!(answer.took < FAST_ENOUGH, "{answer:?}");
        if answer.status == 202 {
            continue;
        }
        assert_eq!(answer.status, 503, "{answer:?}");
        assert!(answer.retry_after.is_some(), "{answer:?}");
        let shape = if answer.json {
            "application/json"
        } else {
            "text/html"
        };
        assert!(answer.content_type.starts_with(shape), "{answer:?}");
    }
}

fn health(daemon: &Daemon) -> (u16, Value) {
    let response = daemon.client.get(daemon.url("/healthz")).send().unwrap();
    let status = response.status().as_u16();
    (status, response.json().unwrap())
}

#[test]
fn healthz_answers_503_while_postgres_is_down_and_200_once_it_is_back() {
    let cluster = PgCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let install = Install::new(dir.path()).set("TIDINGS_DATABASE__URL", cluster.url());
    let daemon = install.serve(free_port());
    assert_eq!(health(&daemon).0, 200);

    cluster.stop();
    let stopped = Instant::now();
    wait_until("/healthz to answer 503", Duration::from_secs(15), || {
        health(&daemon).0 == 503
    });
    let noticed = stopped.elapsed();
    let (_, body) = health(&daemon);
    assert_eq!(body["status"], "unavailable", "{body}");
    assert_eq!(body["reason"], "database_unreachable", "{body}");

    cluster.resume();
    let resumed = Instant::now();
    wait_until(
        "/healthz to answer 200 again",
        Duration::from_secs(15),
        || health(&daemon).0 == 200,
    );
    println!(
        "/healthz: 503 {:.1} s after PostgreSQL stopped, 200 {:.1} s after it started",
        noticed.as_secs_f64(),
        resumed.elapsed().as_secs_f64()
    );
}

#[test]
fn signups_during_a_postgres_outage_fail_fast_and_are_not_emailed_later() {
    let cluster = PgCluster::start();
    let sink = Sink::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let install = Install::new(dir.path())
        .set("TIDINGS_DATABASE__URL", cluster.url())
        .set("TIDINGS_SMTP__URL", sink.url())
        .set("TIDINGS_HTTP__SUBSCRIBE_PER_IP_PER_HOUR", "0")
        // A send whose outcome the outage kept from being written is not
        // what this test is about: its lease runs out soon.
        .set("TIDINGS_SMTP__LEASE", "20s");
    let daemon = Arc::new(install.serve(free_port()));

    // Six people at a time sign up, before, during and after a 10 s outage.
    let answers = Arc::new(Mutex::new(Vec::<Answer>::new()));
    let done = Arc::new(AtomicBool::new(false));
    let signers: Vec<_> = (0..6)
        .map(|signer| {
            let (daemon, answers, done) = (daemon.clone(), answers.clone(), done.clone());
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(40))
                    .build()
                    .unwrap();
                let mut n = 0;
                while !done.load(Ordering::SeqCst) {
                    n += 1;
                    let email = format!("s{signer}-{n}@example.com");
                    let answer = sign_up(&daemon, &client, &email, signer % 2 == 0);
                    answers.lock().unwrap().push(answer);
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        })
        .collect();
    let accepted = || {
        let answers = answers.lock().unwrap();
        answers.iter().filter(|answer| answer.status == 202).count()
    };
    wait_until("signups before the outage", Duration::from_secs(20), || {
        accepted() >= 12
    });
    cluster.stop();
    // The outage lasts this long, whatever the signups do meanwhile.
    std::thread::sleep(Duration::from_secs(10));
    cluster.resume();
    let before = accepted();
    wait_until("signups after the outage", Duration::from_secs(60), || {
        accepted() >= before + 12
    });
    done.store(true, Ordering::SeqCst);
    for signer in signers {
        signer.join().unwrap();
    }
    // Groups are written in order: once this one is in, every signup
    // taken before it has been written or has failed.
    let client = reqwest::blocking::Client::new();
    assert_eq!(
        sign_up(&daemon, &client, "last@example.com", true).status,
        202
    );
    let answers = answers.lock().unwrap().clone();
    assert_well_formed(&answers);

    let refused: Vec<&Answer> = answers
        .iter()
        .filter(|answer| answer.status == 503)
        .collect();
    assert!(!refused.is_empty(), "the outage refused no signup");
    let emailed = recipients_once_settled(&sink, &cluster.url());
    for answer in &answers {
        match (answer.status, answer.may_still_arrive) {
            (202, _) => assert!(emailed.contains(&answer.email), "{answer:?} got no email"),
            (_, false) => assert!(
                !emailed.contains(&answer.email),
                "{answer:?} was told nothing was stored, and was emailed"
            ),
            (_, true) => {}
        }
    }
    let slowest = answers.iter().map(|answer| answer.took).max().unwrap();
    let may = refused
        .iter()
        .filter(|answer| answer.may_still_arrive)
        .count();
    let arrived = refused
        .iter()
        .filter(|answer| answer.may_still_arrive && emailed.contains(&answer.email))
        .count();
    println!(
        "{} signups over a 10 s PostgreSQL outage: {} answered 202, {} 503 \
         ({} of them \"may still arrive\", {arrived} of which did); slowest answer {:.2} s",
        answers.len(),
        answers.len() - refused.len(),
        refused.len(),
        may,
        slowest.as_secs_f64()
    );
}

/// Waits until no confirmation is left to send; who got one.
fn recipients_once_settled(sink: &Sink, url: &str) -> HashSet<String> {
    let counts = || -> HashMap<String, i64> {
        crate::postgres::query_pairs(
            url,
            "SELECT status, COUNT(*)::bigint FROM deliveries GROUP BY status",
        )
        .into_iter()
        .collect()
    };
    let mut sent = 0;
    wait_until("every confirmation sent", Duration::from_secs(90), || {
        let counts = counts();
        sent = counts.get("sent").copied().unwrap_or(0);
        !counts.contains_key("pending") && !counts.contains_key("sending")
    });
    let messages = sink.wait_for(sent as usize, Duration::from_secs(30));
    messages
        .into_iter()
        .map(|message| message.recipient)
        .collect()
}

/// An installation whose SQLite file is on `folder`, sending to `sink`.
pub(crate) fn sqlite_install(
    dir: &Path,
    folder: &Path,
    sink: &Sink,
    min_free_space: &str,
) -> Install {
    let db = folder.join("tidings.db");
    Install::new(dir)
        .set(
            "TIDINGS_DATABASE__URL",
            format!("sqlite://{}", db.display()),
        )
        .set("TIDINGS_DATABASE__MIN_FREE_SPACE", min_free_space)
        .set("TIDINGS_SMTP__URL", sink.url())
        .set("TIDINGS_HTTP__SUBSCRIBE_PER_IP_PER_HOUR", "0")
}

pub(crate) fn stored(folder: &Path, email: &str) -> bool {
    let sql = format!("SELECT COUNT(*) FROM subscribers WHERE email = '{email}'");
    sqlite_count(&folder.join("tidings.db"), &sql) > 0
}

fn sign_up_many(daemon: &Daemon, prefix: &str, count: usize) -> Vec<Answer> {
    let client = reqwest::blocking::Client::new();
    (0..count)
        .map(|n| {
            sign_up(
                daemon,
                &client,
                &format!("{prefix}{n}@example.com"),
                n % 2 == 0,
            )
        })
        .collect()
}

/// Free space below `database.min_free_space` on a real small disk (a
/// 32 MiB tmpfs). Where mounting is refused, the guard is tested through
/// its threshold instead (a minimum above the real free space, then a
/// restart with the guard off); the test prints which ran.
#[test]
fn below_min_free_space_signups_wait_and_none_is_lost_or_doubled() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start(&[]);
    let disk = SmallDisk::mount(&dir.path().join("disk"), 32);
    let folder = match &disk {
        Some(disk) => disk.path.clone(),
        None => {
            std::fs::create_dir_all(dir.path().join("db")).unwrap();
            dir.path().join("db")
        }
    };
    let min_free = match &disk {
        Some(_) => "8MB".to_owned(),
        None => (tidings::health::disk::free_bytes(&folder).unwrap() + (1 << 30)).to_string(),
    };
    println!(
        "full disk by: {}",
        if disk.is_some() {
            "a 32 MiB tmpfs"
        } else {
            "threshold"
        }
    );
    let mut daemon = sqlite_install(dir.path(), &folder, &sink, &min_free).serve(free_port());
    let mut answers = Vec::new();
    if let Some(disk) = &disk {
        let before = sign_up_many(&daemon, "before", 10);
        assert!(
            before.iter().all(|answer| answer.status == 202),
            "{before:?}"
        );
        answers.extend(before);
        disk.fill_leaving(4 << 20);
    }
    wait_until("/healthz to answer 503", Duration::from_secs(10), || {
        health(&daemon).0 == 503
    });
    assert_eq!(health(&daemon).1["reason"], "disk_nearly_full");
    let refused = sign_up_many(&daemon, "during", 40);
    for answer in &refused {
        assert_eq!(answer.status, 503, "{answer:?}");
        assert!(!answer.may_still_arrive, "{answer:?}");
        assert!(!stored(&folder, &answer.email), "{answer:?}");
    }
    let log = daemon.log_text();
    assert_eq!(
        log.matches("below database.min_free_space").count(),
        1,
        "{log}"
    );
    match &disk {
        Some(disk) => disk.make_room(),
        None => {
            drop(daemon);
            daemon = sqlite_install(dir.path(), &folder, &sink, "0").serve(free_port());
        }
    }
    wait_until(
        "/healthz to answer 200 again",
        Duration::from_secs(10),
        || health(&daemon).0 == 200,
    );
    let after = sign_up_many(&daemon, "after", 10);
    assert!(after.iter().all(|answer| answer.status == 202), "{after:?}");
    answers.extend(refused);
    answers.extend(after);
    assert_well_formed(&answers);
    if disk.is_some() {
        assert_eq!(daemon.log_text().matches("back above").count(), 1);
    }

    // Each accepted signup got its email once; no refused one got any.
    let accepted: HashSet<String> = answers
        .iter()
        .filter(|answer| answer.status == 202)
        .map(|answer| answer.email.clone())
        .collect();
    let messages = sink.wait_for(accepted.len(), Duration::from_secs(30));
    let emailed: Vec<String> = messages.into_iter().map(|m| m.recipient).collect();
    assert_eq!(emailed.len(), accepted.len(), "{emailed:?}");
    assert_eq!(emailed.into_iter().collect::<HashSet<_>>(), accepted);
    let queued = sqlite_count(
        &folder.join("tidings.db"),
        "SELECT COUNT(*) FROM deliveries WHERE kind = 'confirmation'",
    );
    assert_eq!(queued, accepted.len() as i64, "one confirmation each");
}

/// With the guard off, the disk fills to the last byte: SQLite's writes
/// fail, and signups get 503, not 500, until there is room again.
#[test]
fn a_disk_full_to_the_last_byte_gives_503_not_500_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = SmallDisk::mount(&dir.path().join("disk"), 16) else {
        println!("skipped: mounting a tmpfs was refused here");
        return;
    };
    let sink = Sink::start(&[]);
    let daemon = sqlite_install(dir.path(), &disk.path, &sink, "0").serve(free_port());
    let client = reqwest::blocking::Client::new();
    disk.fill_leaving(0);
    // Writes go on into room SQLite already has until it needs more.
    let mut answers = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while answers
        .last()
        .is_none_or(|answer: &Answer| answer.status == 202)
    {
        assert!(
            Instant::now() < deadline,
            "signups never failed on a full disk"
        );
        let email = format!("full{}@example.com", answers.len());
        answers.push(sign_up(&daemon, &client, &email, answers.len() % 2 == 0));
    }
    let (status, body) = health(&daemon);
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["reason"], "database_not_writable", "{body}");
    disk.make_room();
    wait_until(
        "/healthz to answer 200 again",
        Duration::from_secs(10),
        || health(&daemon).0 == 200,
    );
    answers.extend(sign_up_many(&daemon, "roomy", 6));
    assert_well_formed(&answers);
    for answer in answers.iter().filter(|answer| answer.status == 503) {
        if !answer.may_still_arrive {
            assert!(!stored(&disk.path, &answer.email), "{answer:?}");
        }
    }
    let accepted = answers.iter().filter(|answer| answer.status == 202).count();
    sink.wait_for(accepted, Duration::from_secs(30));
    println!(
        "full disk: {} signups accepted before the first 503, then 503 with /healthz {body}",
        answers
            .iter()
            .take_while(|answer| answer.status == 202)
            .count()
    );
}
