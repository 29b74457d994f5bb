//! PostgreSQL as the shared queue of several daemons, and the move there.

use std::collections::HashMap;
use std::time::Duration;

use reqwest::Method;

use crate::harness::{free_port, wait_until, Install, Sink, ADMIN_TOKEN};
use crate::postgres::{query_pairs, PgDatabase};

const READERS: usize = 2000;
const POSTS: usize = 3;

#[test]
fn three_instances_share_one_queue_and_a_sigkill_loses_nothing() {
    let database = PgDatabase::create();
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start(&[]);
    let install = Install::new(dir.path())
        .set("TIDINGS_DATABASE__URL", database.url.clone())
        .set("TIDINGS_SMTP__URL", sink.url())
        .set("TIDINGS_ADMIN__TOKEN", ADMIN_TOKEN)
        .set("TIDINGS_SMTP__CONCURRENCY", "4")
        .set("TIDINGS_SMTP__LEASE", "3s")
        .set("TIDINGS_SCHEDULE__CRON", "*/5 * * * * *")
        .set("TIDINGS_SCHEDULE__CATCH_UP", "2s");
    install.ok(&["migrate"]);
    install.ok(&["subscriber", "generate", "--count", &READERS.to_string()]);
    // Analysed as part of the bulk load: the first fan-out is planned on
    // the real row count, not on the guess for a table never analysed (-1).
    assert_eq!(
        planner_row_counts(&database.url, &["subscribers"]),
        [("subscribers".to_owned(), READERS as i64)]
    );
    for week in 1..=POSTS {
        install.queue_post(
            &format!("Week {week}"),
            &format!("Tip for week {week}.\n\n- one\n- two\n"),
        );
    }

    let mut daemons: Vec<_> = (0..3).map(|_| install.serve(free_port())).collect();
    // Kill one instance with SIGKILL in the middle of the first send.
    sink.wait_for(300, Duration::from_secs(60));
    daemons[0].signal("KILL");
    assert!(!daemons[0].wait_exit(Duration::from_secs(5)));
    // The others take its leased rows once the lease expires.
    let url = database.url.clone();
    wait_until("every delivery sent", Duration::from_secs(120), || {
        let counts: HashMap<String, i64> = query_pairs(
            &url,
            "SELECT status, COUNT(*) FROM deliveries GROUP BY status",
        )
        .into_iter()
        .collect();
        counts.get("sent").copied() == Some((READERS * POSTS) as i64) && counts.len() == 1
    });

    // Exactly one issue per slot, each to every reader.
    let issues = query_pairs(&url, "SELECT slot_key, recipients FROM issues ORDER BY id");
    assert_eq!(issues.len(), POSTS, "{issues:?}");
    assert!(
        issues
            .iter()
            .all(|(_, recipients)| *recipients == READERS as i64),
        "{issues:?}"
    );
    let stats: serde_json::Value = daemons[1]
        .admin(Method::GET, "/api/admin/stats")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(stats["posts"]["sent"], POSTS);

    // Every reader got every issue; a duplicate only for a message that was
    // in flight at the kill, and then with the same Message-ID. Every row is
    // sent, so the server has taken every message it ever will; wait only
    // for smtp-sink to finish writing them out.
    let distinct = |messages: &[crate::harness::Dumped]| {
        messages
            .iter()
            .map(|message| {
                (
                    message.recipient.clone(),
                    message.header("subject").map(str::to_owned),
                )
            })
            .collect::<std::collections::HashSet<_>>()
            .len()
    };
    let mut messages = Vec::new();
    wait_until("every message written out", Duration::from_secs(30), || {
        messages = sink.messages();
        distinct(&messages) == READERS * POSTS
    });
    let mut seen: HashMap<(String, String), Vec<String>> = HashMap::new();
    for message in messages {
        let subject = message.header("subject").unwrap().to_owned();
        let id = message.header("message-id").unwrap().to_owned();
        seen.entry((message.recipient, subject))
            .or_default()
            .push(id);
    }
    assert_eq!(seen.len(), READERS * POSTS, "every reader, every issue");
    let duplicates: Vec<_> = seen.values().filter(|ids| ids.len() > 1).collect();
    for ids in &duplicates {
        assert!(
            ids.iter().all(|id| id == &ids[0]),
            "a resend keeps its Message-ID: {ids:?}"
        );
    }
    // At most smtp.concurrency (4) × UNRECORDED_PER_CONNECTION (8) were
    // accepted by the server but not yet recorded when the instance died.
    assert!(duplicates.len() <= 32, "{} duplicates", duplicates.len());
    eprintln!(
        "fleet: {} messages, {} resent after the SIGKILL",
        READERS * POSTS,
        duplicates.len()
    );
}

#[test]
fn migrate_data_moves_a_sqlite_install_to_postgres_and_old_links_keep_working() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Install::new(dir.path()).set("TIDINGS_ADMIN__TOKEN", ADMIN_TOKEN);
    let csv = dir.path().join("people.csv");
    std::fs::write(
        &csv,
        "email,name,status\nana@example.com,Ana,confirmed\nbo@example.com,Bo,confirmed\ncy@example.com,,pending\n",
    )
    .unwrap();
    // Asked, so cy's pending row has a confirmation to carry across.
    sqlite.ok(&[
        "subscriber",
        "import",
        "--send-confirmations",
        csv.to_str().unwrap(),
    ]);
    let post = dir.path().join("post.md");
    std::fs::write(&post, "---\nsubject: \"Moving day\"\n---\nHello.\n").unwrap();
    sqlite.ok(&["post", "add", post.to_str().unwrap()]);
    assert!(sqlite.ok(&["send-now"]).contains("2 sent"));
    let before = sqlite.ok(&["subscriber", "export"]);
    let added = sqlite.run_with_input(
        &["admin", "add", "owner@example.com"],
        "a long passphrase\n",
    );
    assert!(added.status.success(), "{added:?}");
    let admins = sqlite.ok(&["admin", "list"]);
    // An unsubscribe link emailed while on SQLite.
    let eml = std::fs::read_dir(dir.path().join("outbox"))
        .unwrap()
        .flatten()
        .map(|entry| std::fs::read_to_string(entry.path()).unwrap())
        .find(|text| text.contains("Subject: Moving day\r\n") && text.contains("To: Ana"))
        .expect("Ana's issue in outbox/");
    let link = eml
        .lines()
        .find_map(|line| line.strip_prefix("List-Unsubscribe: <"))
        .unwrap()
        .trim_end_matches('>')
        .to_owned();

    let database = PgDatabase::create();
    let from = format!("sqlite://{}", dir.path().join("tidings.db").display());
    let report = sqlite.ok(&["migrate-data", "--from", &from, "--to", &database.url]);
    for expected in [
        "subscribers: 3 rows",
        "posts: 1 rows",
        "issues: 1 rows",
        "deliveries: 3 rows",
        "admin_users: 1 rows",
    ] {
        assert!(report.contains(expected), "{expected} in:\n{report}");
    }
    assert!(report.contains("consent_events"), "{report}");
    assert_eq!(
        query_pairs(
            &database.url,
            "SELECT 'sent'::text, sent FROM issue_tallies"
        ),
        [("sent".to_owned(), 2)],
        "each issue's tally is counted again from the deliveries moved"
    );
    assert_eq!(
        planner_row_counts(&database.url, &["deliveries", "subscribers"]),
        [("deliveries".to_owned(), 3), ("subscribers".to_owned(), 3)],
        "the moved tables are analysed, so the first queries are planned on real sizes"
    );
    let again = sqlite.run(&["migrate-data", "--from", &from, "--to", &database.url]);
    assert!(
        !again.status.success(),
        "never into a database that has data"
    );

    let postgres = Install::new(dir.path())
        .set("TIDINGS_DATABASE__URL", database.url.clone())
        .set("TIDINGS_ADMIN__TOKEN", ADMIN_TOKEN);
    assert_eq!(postgres.ok(&["subscriber", "export"]), before);
    assert_eq!(
        postgres.ok(&["admin", "list"]),
        admins,
        "admin accounts move too"
    );
    let daemon = postgres.serve(free_port());
    let response = daemon.client.post(daemon.local(&link)).send().unwrap();
    assert_eq!(
        response.status(),
        200,
        "a link from before the move still works"
    );
    assert!(postgres
        .ok(&["subscriber", "list"])
        .contains("ana@example.com\tunsubscribed"));
    // New rows continue after the copied ids.
    postgres.ok(&["subscriber", "add", "dee@example.com", "--confirmed"]);
}

/// The row count PostgreSQL's planner holds for each table, in name order;
/// -1 for a table never vacuumed or analysed.
fn planner_row_counts(url: &str, tables: &[&str]) -> Vec<(String, i64)> {
    let names = tables
        .iter()
        .map(|table| format!("'{table}'"))
        .collect::<Vec<_>>()
        .join(", ");
    query_pairs(
        url,
        &format!(
            "SELECT relname::text, reltuples::bigint FROM pg_class \
             WHERE relname IN ({names}) AND relkind = 'r' ORDER BY relname"
        ),
    )
}
