//! The disk under the SQLite database full for 20 s in the middle of a
//! send, with signups coming in all the while (a 16 MiB tmpfs). No outcome
//! is given up: the failed writes are retried until there is room again,
//! and meanwhile no more is sent than the unrecorded window allows. Then
//! every delivery is written as sent, and counted once that is so, every
//! reader has the issue once and every accepted signup one email.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::harness::{free_port, sqlite_delivery_counts, wait_until, Sink, ADMIN_TOKEN};
use crate::outages::{assert_well_formed, sign_up, sqlite_install, stored};
use crate::small_disk::SmallDisk;
use crate::unrecorded::assert_window_held;

const READERS: usize = 2000;

#[test]
fn a_full_disk_for_20_s_in_the_middle_of_a_send_sends_nothing_twice_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = SmallDisk::mount(&dir.path().join("disk"), 16) else {
        println!("skipped: mounting a tmpfs was refused here");
        return;
    };
    let sink = Sink::start(&[]);
    // Paced, so that the send is still going when the disk fills.
    let install = sqlite_install(dir.path(), &disk.path, &sink, "0")
        .set("TIDINGS_ADMIN__TOKEN", ADMIN_TOKEN)
        .set("TIDINGS_SMTP__RATE_PER_SECOND", "150");
    install.ok(&[
        "subscriber",
        "generate",
        "--count",
        &READERS.to_string(),
        "--prefix",
        "reader",
        "--domain",
        "readers.example",
    ]);
    let daemon = install.serve(free_port());
    assert_eq!(daemon.send_now()["recipients"], READERS);
    sink.wait_for(200, Duration::from_secs(60));

    let before = sink.messages().len();
    disk.fill_leaving(0);
    let full = Instant::now();
    let client = reqwest::blocking::Client::new();
    let mut answers = Vec::new();
    while full.elapsed() < Duration::from_secs(20) {
        let email = format!("burst{}@example.com", answers.len());
        answers.push(sign_up(&daemon, &client, &email, answers.len() % 2 == 0));
    }
    let during = sink.messages().len();
    disk.make_room();
    let room = Instant::now();

    // Every delivery ends as sent: none is left leased or waiting, as one
    // whose outcome was given up would be until its lease ran out.
    let database = disk.path.join("tidings.db");
    let mut counts = HashMap::new();
    wait_until("every delivery sent", Duration::from_secs(120), || {
        counts = sqlite_delivery_counts(&database);
        !counts.contains_key("pending") && !counts.contains_key("sending")
    });
    let recovered = room.elapsed();
    let sent = counts.get("sent").copied().unwrap_or(0);
    assert_eq!(counts.values().sum::<i64>(), sent, "{counts:?}");
    let log = daemon.log_text();
    for line in [
        "recording outcomes failed; retrying until it succeeds",
        "recording outcomes succeeded after failing",
    ] {
        assert!(log.contains(line), "{line} in:\n{log}");
    }
    assert!(!log.contains("stopping with outcomes unrecorded"), "{log}");
    // Sending stopped while outcomes could not be written.
    let stretches = assert_window_held("full disk", &log, &sink.messages());
    assert!(stretches > 0, "{log}");

    // With every outcome written, nothing more will be sent: the count is
    // final. One message per delivery, so no one got anything twice.
    let messages = sink.wait_for(sent as usize, Duration::from_secs(30));
    let mut copies: HashMap<String, usize> = HashMap::new();
    for message in &messages {
        *copies.entry(message.recipient.clone()).or_default() += 1;
    }
    let doubled: Vec<_> = copies.iter().filter(|(_, count)| **count > 1).collect();
    assert!(doubled.is_empty(), "sent twice: {doubled:?}");
    assert_eq!(messages.len() as i64, sent, "one message per delivery");
    let readers = copies
        .keys()
        .filter(|recipient| recipient.ends_with("@readers.example"))
        .count();
    assert_eq!(readers, READERS, "every reader has the issue");

    assert_well_formed(&answers);
    let accepted: Vec<_> = answers.iter().filter(|a| a.status == 202).collect();
    for answer in &accepted {
        assert_eq!(copies.get(&answer.email), Some(&1), "{answer:?}");
    }
    for answer in answers
        .iter()
        .filter(|a| a.status == 503 && !a.may_still_arrive)
    {
        assert!(!stored(&disk.path, &answer.email), "{answer:?}");
    }
    println!(
        "disk full for 20 s mid-send: {} signups ({} accepted), {before} messages when it \
         filled and {during} when room came back; every delivery sent {:.1} s after that; \
         {READERS} readers each got the issue once; 0 lost, 0 sent twice",
        answers.len(),
        accepted.len(),
        recovered.as_secs_f64(),
    );
}
