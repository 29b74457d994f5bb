//! The admin's subscriber pages over HTTP: the list, search and pages,
//! adding, importing, exporting, unsubscribing and erasing, each checked
//! in the database.

use std::collections::HashSet;

use reqwest::header::ORIGIN;
use reqwest::multipart::{Form, Part};
use reqwest::{Method, Response};
use tidings::clock::Clock;
use tidings::domain::consent::ConsentKind;
use tidings::domain::subscriber::{SubscriberQuery, SubscriberStatus};

use super::{assert_csrf_protected, log_in, AdminClient, ADMIN_EMAIL};
use crate::database::mentions;
use crate::helpers::{spawn_app, spawn_with, Backend, Options, TestApp};
use crate::on_both_backends;

on_both_backends!(
    the_pages_and_the_export_need_a_session,
    every_form_refuses_a_forged_request_and_changes_nothing,
    a_search_finds_by_address_or_name_start_and_the_pages_walk_everyone_once,
    an_unknown_status_or_id_is_a_clear_answer,
    adding_a_subscriber_is_the_cli_add_with_errors_beside_the_field,
    the_operator_unsubscribes_someone_in_their_own_name,
    erasing_someone_leaves_no_trace_of_them_and_an_anonymous_event,
);

/// The page's HTML with the entities handlebars writes undone.
pub fn unescape(html: &str) -> String {
    html.replace("&#x3D;", "=")
        .replace("&#x27;", "'")
        .replace("&#x60;", "`")
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The subscribers a list page links to, in order.
pub fn listed_ids(html: &str) -> Vec<i64> {
    html.split("<td class=\"address\"><a href=\"/admin/subscribers/")
        .skip(1)
        .map(|rest| rest[..rest.find('"').unwrap()].parse().unwrap())
        .collect()
}

/// The "Next page" link, if any.
fn next_link(html: &str) -> Option<String> {
    let end = html.find("\" rel=\"next\"")?;
    let start = html[..end].rfind("href=\"")? + "href=\"".len();
    Some(unescape(&html[start..end]))
}

/// Every subscriber the list shows from `path` on, following "Next page".
async fn walk(admin: &AdminClient, path: &str) -> Vec<i64> {
    let mut ids = Vec::new();
    let mut next = Some(path.to_owned());
    while let Some(path) = next {
        let html = admin.page(&path).await;
        ids.extend(listed_ids(&html));
        next = next_link(&html);
    }
    ids
}

/// Adds `email` as the operator would, confirmed; returns its id.
pub(super) async fn add(app: &TestApp, email: &str, name: Option<&str>) -> i64 {
    let outcome = app
        .state
        .newsletter
        .add_subscriber(
            tidings::domain::subscriber::EmailAddress::parse(email).unwrap(),
            tidings::domain::subscriber::SubscriberName::parse_optional(name).unwrap(),
            SubscriberStatus::Confirmed,
            tidings::domain::subscriber::OperatorSource::Cli,
        )
        .await
        .unwrap();
    match outcome {
        tidings::domain::subscriber::AddOutcome::Added { id, .. } => id,
        other => panic!("{email}: {other:?}"),
    }
}

/// Everyone on the list, as the store has them.
pub(super) async fn everyone(app: &TestApp) -> Vec<tidings::domain::subscriber::Subscriber> {
    app.state
        .store()
        .list_subscribers(SubscriberQuery {
            limit: 100_000,
            ..Default::default()
        })
        .await
        .unwrap()
}

/// A multipart form posted from one of our pages, the proof in the query
/// as the page's form action carries it (`None`: left out).
pub(super) async fn post_multipart(
    admin: &AdminClient,
    path: &str,
    proof: Option<&str>,
    origin: &str,
    form: Form,
) -> Response {
    let path = match proof {
        Some(proof) => format!("{path}?csrf={proof}"),
        None => path.to_owned(),
    };
    admin
        .request(Method::POST, &path)
        .header(ORIGIN, origin)
        .multipart(form)
        .send()
        .await
        .unwrap()
}

pub(super) fn csv_upload(csv: &str) -> Form {
    Form::new().part(
        "file",
        Part::bytes(csv.as_bytes().to_vec())
            .file_name("list.csv")
            .mime_str("text/csv")
            .unwrap(),
    )
}

async fn the_pages_and_the_export_need_a_session(backend: Backend) {
    let app = spawn_app(backend).await;
    let id = add(&app, "ada@example.com", None).await;
    for path in [
        "/admin/subscribers".to_owned(),
        "/admin/subscribers?q=ada".to_owned(),
        "/admin/subscribers/import".to_owned(),
        "/admin/subscribers/export.csv".to_owned(),
        format!("/admin/subscribers/{id}"),
        format!("/admin/subscribers/{id}/erase"),
    ] {
        let response = app.client.get(app.url(&path)).send().await.unwrap();
        assert_eq!(response.status(), 303, "{path}");
        let location = AdminClient::location(&response);
        assert!(location.starts_with("/admin/login?next="), "{location}");
        assert!(!response.text().await.unwrap().contains("ada@example.com"));
    }
    for path in [
        "/admin/subscribers".to_owned(),
        format!("/admin/subscribers/{id}/unsubscribe"),
        format!("/admin/subscribers/{id}/erase"),
    ] {
        let response = app
            .client
            .post(app.url(&path))
            .header(ORIGIN, &app.address)
            .form(&[("email", "x@example.com")])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "{path}");
    }
    let statuses: Vec<SubscriberStatus> = everyone(&app).await.iter().map(|s| s.status).collect();
    assert_eq!(statuses, [SubscriberStatus::Confirmed]);
}

async fn every_form_refuses_a_forged_request_and_changes_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = log_in(&app).await;
    let id = add(&app, "kept@example.com", Some("Kept")).await;
    assert_csrf_protected(
        &admin,
        "/admin/subscribers",
        &[("email", "new@example.com")],
    )
    .await;
    assert_csrf_protected(&admin, &format!("/admin/subscribers/{id}/unsubscribe"), &[]).await;
    assert_csrf_protected(&admin, &format!("/admin/subscribers/{id}/erase"), &[]).await;
    let csv = "new@example.com,New\n";
    for path in [
        "/admin/subscribers/import",
        "/admin/subscribers/import/confirm",
    ] {
        let form = || {
            Form::new().text("csv", csv).part(
                "file",
                Part::bytes(csv.as_bytes().to_vec()).file_name("list.csv"),
            )
        };
        let cases = [
            (None, admin.address.as_str()),
            (Some("wrong-proof"), admin.address.as_str()),
            (Some(admin.csrf.as_str()), "https://attacker.example"),
        ];
        for (proof, origin) in cases {
            let response = post_multipart(&admin, path, proof, origin, form()).await;
            assert_eq!(response.status(), 403, "{path} {proof:?} {origin}");
        }
    }
    let listed = everyone(&app).await;
    assert_eq!(listed.len(), 1, "nothing added");
    assert_eq!(listed[0].status, SubscriberStatus::Confirmed);
    assert_eq!(listed[0].name.as_deref(), Some("Kept"));
    assert_eq!(app.state.store().consent_events(id).await.unwrap().len(), 1);
    assert!(mentions(&app.settings.database.url, "new@example.com")
        .await
        .is_empty());
}

async fn a_search_finds_by_address_or_name_start_and_the_pages_walk_everyone_once(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    app.add_confirmed(120).await;
    let ada = add(&app, "ada.lovelace@example.org", Some("Ada Lovelace")).await;
    let grace = add(&app, "hopper@navy.example", Some("Grace Hopper")).await;
    app.state
        .store()
        .unsubscribe(grace, Default::default(), app.clock.now())
        .await
        .unwrap();
    // Logged in after the list is made: the counts are a snapshot up to
    // seconds old, and the dashboard the login lands on takes one.
    let admin = log_in(&app).await;

    let html = admin.page("/admin/subscribers?q=ADA.L").await;
    assert_eq!(listed_ids(&html), [ada], "by the address's start, any case");
    assert!(html.contains("ada.lovelace@example.org") && html.contains("Ada Lovelace"));
    let html = admin.page("/admin/subscribers?q=grace%20h").await;
    assert_eq!(listed_ids(&html), [grace], "by the name's start");
    assert!(html.contains("badge unsubscribed"));
    let html = admin.page("/admin/subscribers?q=%40navy").await;
    assert_eq!(listed_ids(&html), [grace], "by the domain");
    let html = admin
        .page("/admin/subscribers?q=grace&status=confirmed")
        .await;
    assert!(listed_ids(&html).is_empty(), "filtered out");
    assert!(html.contains("Nobody matches"));
    let html = admin.page("/admin/subscribers?status=unsubscribed").await;
    assert_eq!(listed_ids(&html), [grace]);
    // The counts at the top, from the snapshot.
    assert!(
        html.contains("<span class=\"number\">121</span> confirmed"),
        "{html}"
    );

    let all: HashSet<i64> = everyone(&app).await.iter().map(|s| s.id).collect();
    for (path, expected) in [
        ("/admin/subscribers", all.clone()),
        (
            "/admin/subscribers?status=confirmed",
            all.iter().copied().filter(|id| *id != grace).collect(),
        ),
        (
            "/admin/subscribers?q=READER",
            all.iter()
                .copied()
                .filter(|id| *id != grace && *id != ada)
                .collect(),
        ),
    ] {
        let walked = walk(&admin, path).await;
        assert_eq!(walked.len(), expected.len(), "{path}: each once");
        assert_eq!(
            walked.into_iter().collect::<HashSet<_>>(),
            expected,
            "{path}"
        );
    }
    // A "Next page" link keeps the search and the filter.
    let html = admin
        .page("/admin/subscribers?q=reader&status=confirmed")
        .await;
    let next = next_link(&html).unwrap();
    assert!(
        next.contains("q=reader") && next.contains("status=confirmed"),
        "{next}"
    );
    assert_eq!(listed_ids(&html).len(), 50);
}

async fn an_unknown_status_or_id_is_a_clear_answer(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = log_in(&app).await;
    let response = admin.get("/admin/subscribers?status=gone").await;
    assert_eq!(response.status(), 422);
    let html = response.text().await.unwrap();
    assert!(html.contains("is not a status"), "{html}");
    let response = admin.get("/admin/subscribers/export.csv?status=gone").await;
    assert_eq!(response.status(), 422);
    for path in [
        "/admin/subscribers/999",
        "/admin/subscribers/abc",
        "/admin/subscribers/1/erase",
    ] {
        let response = admin.get(path).await;
        assert_eq!(response.status(), 404, "{path}");
        assert!(response.text().await.unwrap().contains("no subscriber"));
    }
    let response = admin.post_form("/admin/subscribers/999/erase", &[]).await;
    assert_eq!(response.status(), 404);
}

async fn adding_a_subscriber_is_the_cli_add_with_errors_beside_the_field(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = log_in(&app).await;
    let response = admin
        .post_form(
            "/admin/subscribers",
            &[("email", " New.Reader@Example.COM "), ("name", "Nia")],
        )
        .await;
    assert_eq!(response.status(), 303);
    let location = AdminClient::location(&response);
    let listed = everyone(&app).await;
    assert_eq!(listed.len(), 1);
    let added = &listed[0];
    assert_eq!(
        location,
        format!("/admin/subscribers/{}?notice=added", added.id)
    );
    assert_eq!(
        (added.email.as_str(), added.name.as_deref(), added.status),
        (
            "new.reader@example.com",
            Some("Nia"),
            SubscriberStatus::Pending
        )
    );
    let log = app.state.store().consent_events(added.id).await.unwrap();
    assert_eq!(log[0].kind, ConsentKind::OperatorAdd);
    assert_eq!(
        log[0].detail.as_deref(),
        Some("source=admin status=pending")
    );
    // Pending, as `tidings subscriber add` without --confirmed: emailed a link.
    let mails = app.mail.wait_for("new.reader@example.com", 1).await;
    assert!(mails[0].header("Subject").unwrap().contains("confirm"));
    let html = admin.page(&location).await;
    assert!(html.contains("Added.") && html.contains("new.reader@example.com"));

    let response = admin
        .post_form(
            "/admin/subscribers",
            &[("email", "sure@example.com"), ("confirmed", "yes")],
        )
        .await;
    assert_eq!(response.status(), 303);
    assert_eq!(
        app.status_of("sure@example.com").await.as_deref(),
        Some("confirmed")
    );

    let response = admin
        .post_form(
            "/admin/subscribers",
            &[("email", "not an address"), ("name", "Kept")],
        )
        .await;
    assert_eq!(response.status(), 422);
    let html = response.text().await.unwrap();
    assert!(html.contains("id=\"add-email-error\""), "{html}");
    assert!(html.contains("aria-invalid=\"true\""));
    assert!(html.contains("value=\"Kept\""), "what was typed stays");
    let response = admin
        .post_form("/admin/subscribers", &[("email", "NEW.reader@example.com")])
        .await;
    assert_eq!(response.status(), 409);
    let html = unescape(&response.text().await.unwrap());
    assert!(
        html.contains("new.reader@example.com is already on the list"),
        "{html}"
    );
    assert!(html.contains(&format!("href=\"/admin/subscribers/{}\"", added.id)));
    assert_eq!(everyone(&app).await.len(), 2, "nothing more added");
}

async fn the_operator_unsubscribes_someone_in_their_own_name(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = log_in(&app).await;
    let id = add(&app, "leaving@example.com", None).await;
    let path = format!("/admin/subscribers/{id}/unsubscribe");
    let response = admin.post_form(&path, &[]).await;
    assert_eq!(response.status(), 303);
    assert_eq!(
        AdminClient::location(&response),
        format!("/admin/subscribers/{id}?notice=unsubscribed")
    );
    assert_eq!(
        app.status_of("leaving@example.com").await.as_deref(),
        Some("unsubscribed")
    );
    let log = app.state.store().consent_events(id).await.unwrap();
    let last = log.last().unwrap();
    assert_eq!(last.kind, ConsentKind::Unsubscribe);
    assert_eq!(
        last.detail.as_deref(),
        Some(&*format!("source=admin by={ADMIN_EMAIL}"))
    );
    assert_eq!(
        (last.ip.as_deref(), last.user_agent.as_deref()),
        (None, None)
    );
    let html = admin
        .page(&format!("/admin/subscribers/{id}?notice=unsubscribed"))
        .await;
    assert!(html.contains("Unsubscribed. They get no more issues"));
    assert!(html.contains("<td>unsubscribe</td>"));
    assert!(
        !html.contains(&format!("action=\"{path}\"")),
        "no button twice"
    );
    let response = admin.post_form(&path, &[]).await;
    assert!(AdminClient::location(&response).ends_with("already_unsubscribed"));
    assert_eq!(
        app.state.store().consent_events(id).await.unwrap().len(),
        log.len()
    );
}

async fn erasing_someone_leaves_no_trace_of_them_and_an_anonymous_event(backend: Backend) {
    let app = spawn_with(Options::new(backend), |settings| {
        settings.http.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let admin = log_in(&app).await;
    let (address, name, ip, agent) = (
        "erin.erased@example.com",
        "Erin Erasmus",
        "203.0.113.77",
        "EraseBrowser/4.2",
    );
    // They sign up and confirm from their browser, and get an issue.
    let response = app
        .client
        .post(app.url("/subscribe"))
        .header("user-agent", agent)
        .header("x-forwarded-for", ip)
        .form(&[("email", address), ("name", name)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let mail = app.mail.wait_for(address, 1).await.remove(0);
    let link = app.local(&mail.link("http://"));
    let response = app
        .client
        .post(&link)
        .header("user-agent", agent)
        .header("x-forwarded-for", ip)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    app.subscribe_and_confirm("stays@example.com").await;
    app.enqueue("Tip one", "Something useful.").await;
    assert_eq!(app.send_now().await.status(), 202);
    app.wait_until_idle().await;
    app.mail.wait_for(address, 2).await;
    let id = app.subscriber_id(address).await;
    let deliveries = app.deliveries().await;
    let url = app.settings.database.url.clone();
    for trace in [address, name, ip, agent] {
        assert!(
            !mentions(&url, trace).await.is_empty(),
            "{trace} is stored at first"
        );
    }

    let html = admin.page(&format!("/admin/subscribers/{id}")).await;
    assert!(html.contains(ip) && html.contains(agent) && html.contains("Tip one"));
    let html = admin.page(&format!("/admin/subscribers/{id}/erase")).await;
    assert!(html.contains("Erase this subscriber?") && html.contains(address));
    let response = admin
        .post_form(&format!("/admin/subscribers/{id}/erase"), &[])
        .await;
    assert_eq!(response.status(), 303);
    let location = AdminClient::location(&response);
    assert_eq!(location, format!("/admin/subscribers/{id}?notice=erased"));

    for trace in [address, name, ip, agent] {
        assert_eq!(mentions(&url, trace).await, Vec::<String>::new(), "{trace}");
    }
    let log = app.state.store().consent_events(id).await.unwrap();
    let kinds: Vec<&str> = log.iter().map(|event| event.kind.as_str()).collect();
    assert_eq!(kinds, ["signup", "confirm", "erased"]);
    assert!(log
        .iter()
        .all(|event| event.ip.is_none() && event.user_agent.is_none()));
    assert_eq!(
        log[2].detail.as_deref(),
        Some(&*format!("source=admin by={ADMIN_EMAIL}"))
    );
    assert_eq!(
        app.deliveries().await,
        deliveries,
        "their emails still count"
    );
    let html = admin.page(&location).await;
    assert!(html.contains("Erased. Their address"));
    assert!(html.contains(&format!("Erased subscriber {id}")));
    assert!(!html.contains("Erase (GDPR)"));
    assert!(html.contains("<td>erased</td>") && html.contains("Tip one"));
    // Gone from the list; never emailed again; the address is free.
    assert!(!listed_ids(&admin.page("/admin/subscribers").await).contains(&id));
    app.enqueue("Tip two", "More.").await;
    assert_eq!(app.send_now().await.status(), 202);
    app.wait_until_idle().await;
    let theirs = app
        .state
        .store()
        .subscriber_deliveries(id, None, 10)
        .await
        .unwrap();
    assert_eq!(theirs.len(), 2, "the confirmation and the first issue only");
    app.subscribe_and_confirm(address).await;
    let again = app.subscriber_id(address).await;
    assert_ne!(again, id);
    assert_eq!(app.status_of(address).await.as_deref(), Some("confirmed"));
    assert_eq!(
        app.mail.received_by(address).len(),
        3,
        "two before, one confirmation now"
    );
    let response = admin
        .post_form(&format!("/admin/subscribers/{id}/erase"), &[])
        .await;
    assert!(AdminClient::location(&response).ends_with("already_erased"));
}
