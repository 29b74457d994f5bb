//! The admin's CSV import (a preview that writes nothing, then the import
//! it showed) and the streamed export, over HTTP on both backends.

use std::collections::HashSet;

use reqwest::multipart::Form;
use tidings::clock::Clock;
use tidings::domain::subscriber::SubscriberStatus;

use super::subscribers::{add, csv_upload, everyone, post_multipart, unescape};
use super::{log_in, AdminClient};
use crate::database::mentions;
use crate::helpers::{spawn_app, Backend};
use crate::on_both_backends;

on_both_backends!(
    an_import_preview_writes_nothing_and_the_import_writes_what_it_showed,
    the_export_streams_the_list_as_safe_csv,
);

async fn an_import_preview_writes_nothing_and_the_import_writes_what_it_showed(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = log_in(&app).await;
    add(&app, "known@example.com", None).await;
    let csv = "email,name,status\n\
               new1@example.com,New One,confirmed\n\
               known@example.com,Known\n\
               \n\
               not-an-address,Bad\n\
               new2@example.com,'=cmd()\n\
               new1@example.com,Twice\n\
               new3@example.com,,maybe\n";
    let response = post_multipart(
        &admin,
        "/admin/subscribers/import",
        Some(&admin.csrf),
        &admin.address,
        csv_upload(csv),
    )
    .await;
    assert_eq!(response.status(), 200);
    let html = unescape(&response.text().await.unwrap());
    assert_eq!(everyone(&app).await.len(), 1, "the preview writes nothing");
    assert!(mentions(&app.settings.database.url, "new1@")
        .await
        .is_empty());
    for shown in [
        "<span class=\"number\">2</span> add new subscribers",
        "<span class=\"number\">2</span> skip, already on the list",
        "<span class=\"number\">2</span> skip, invalid",
        "<td class=\"number\">5</td><td class=\"wrap-anywhere\">not an email address",
        "<td class=\"number\">8</td>",
        "is not a status",
        "also on line 2",
        "<td class=\"number\">6</td><td class=\"address\">new2@example.com</td><td>=cmd()</td>",
        "Import 2 new subscribers",
    ] {
        assert!(html.contains(shown), "{shown} in {html}");
    }
    // The confirming form carries the file back, byte for byte.
    let hidden = html
        .split("name=\"csv\" value=\"")
        .nth(1)
        .map(|rest| rest[..rest.find("\">").unwrap()].to_owned())
        .unwrap();
    assert_eq!(hidden, csv);
    let form = Form::new()
        .text("csrf", admin.csrf.clone())
        .text("csv", hidden);
    let response = post_multipart(
        &admin,
        "/admin/subscribers/import/confirm",
        Some(&admin.csrf),
        &admin.address,
        form,
    )
    .await;
    assert_eq!(response.status(), 303);
    let location = unescape(&AdminClient::location(&response));
    assert!(
        location.contains("added=2") && location.contains("existing=2"),
        "{location}"
    );
    let html = admin.page(&location).await;
    assert!(
        html.contains("2 added, 2 already on the list, 2 invalid rows skipped"),
        "{html}"
    );
    let listed = everyone(&app).await;
    let summary: Vec<(&str, Option<&str>, SubscriberStatus)> = listed
        .iter()
        .map(|s| (s.email.as_str(), s.name.as_deref(), s.status))
        .collect();
    assert_eq!(
        summary,
        [
            ("known@example.com", None, SubscriberStatus::Confirmed),
            (
                "new1@example.com",
                Some("New One"),
                SubscriberStatus::Confirmed
            ),
            (
                "new2@example.com",
                Some("=cmd()"),
                SubscriberStatus::Pending
            ),
        ]
    );
    // Without "email the pending ones", nobody is emailed.
    app.wait_until_idle().await;
    assert!(app.mail.received_by("new2@example.com").is_empty());
    // An empty upload is a 422 beside the field.
    let response = post_multipart(
        &admin,
        "/admin/subscribers/import",
        Some(&admin.csrf),
        &admin.address,
        csv_upload(""),
    )
    .await;
    assert_eq!(response.status(), 422);
    assert!(response.text().await.unwrap().contains("id=\"file-error\""));
    // A file over the import's bound is a 422 that says what to do; a body
    // over the admin's 1 MiB is refused before it is read.
    let line = "someone.with.a.long.address@example.com,A Name\n";
    let big = line.repeat(tidings::subscriber_admin::MAX_IMPORT_BYTES / line.len() + 1);
    let response = post_multipart(
        &admin,
        "/admin/subscribers/import",
        Some(&admin.csrf),
        &admin.address,
        csv_upload(&big),
    )
    .await;
    assert_eq!(response.status(), 422);
    let html = response.text().await.unwrap();
    assert!(html.contains("tidings subscriber import"), "{html}");
    let response = post_multipart(
        &admin,
        "/admin/subscribers/import",
        Some(&admin.csrf),
        &admin.address,
        csv_upload(&line.repeat(30_000)),
    )
    .await;
    assert_eq!(response.status(), 413);
    assert_eq!(everyone(&app).await.len(), 3, "nothing more written");
}

async fn the_export_streams_the_list_as_safe_csv(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = log_in(&app).await;
    app.add_confirmed(2500).await;
    let formula = add(&app, "-x@example.com", Some("=HYPERLINK(\"http://x\")")).await;
    app.state
        .store()
        .unsubscribe(formula, Default::default(), app.clock.now())
        .await
        .unwrap();
    let response = admin.get("/admin/subscribers/export.csv").await;
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "text/csv; charset=utf-8");
    assert_eq!(
        headers["content-disposition"],
        "attachment; filename=\"subscribers.csv\""
    );
    // Streamed: no length known up front, sent in chunks as the batches of
    // 1,000 are read (a body built whole would carry a Content-Length).
    assert!(headers.get("content-length").is_none());
    assert_eq!(headers["transfer-encoding"], "chunked");
    let body = response.text().await.unwrap();
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines[0], "email,name,status");
    assert_eq!(lines.len(), 1 + 2501);
    assert_eq!(lines[1], "reader1@example.com,,confirmed");
    assert_eq!(
        *lines.last().unwrap(),
        "'-x@example.com,\"'=HYPERLINK(\"\"http://x\"\")\",unsubscribed"
    );
    let exported: HashSet<&str> = lines[1..]
        .iter()
        .map(|line| line.split(',').next().unwrap())
        .collect();
    assert_eq!(exported.len(), 2501);

    let response = admin
        .get("/admin/subscribers/export.csv?status=unsubscribed")
        .await;
    assert_eq!(
        response.headers()["content-disposition"],
        "attachment; filename=\"subscribers-unsubscribed.csv\""
    );
    let body = response.text().await.unwrap();
    assert_eq!(body.lines().count(), 2);
}
