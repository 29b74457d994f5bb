//! What the admin's subscriber pages do, over the newsletter service: a
//! page of the list or of a search, a CSV import checked before it writes,
//! a streamed export, and the operator's unsubscribe and erasure. Adding
//! and importing go through [`Newsletter::add_subscriber`] and
//! [`Newsletter::import`], as `tidings subscriber add` and `import` do.

use std::collections::HashMap;

use axum::body::Bytes;
use futures::Stream;

use crate::domain::erasure::{self, EraseOutcome};
use crate::domain::subscriber::{
    AddOutcome, OperatorSource, Subscriber, SubscriberQuery, SubscriberStatus, UnsubscribeOutcome,
};
use crate::domain::subscriber_search::{SearchCursor, SearchTerm, SubscriberSearch, PAGE_SIZE};
use crate::newsletter::{Newsletter, NewsletterResult};
use crate::store::{SharedStore, StoreError, StoreResult};
use crate::subscriber_csv::{neutralise, ImportReader, ImportRow, RowError};

/// One page of the list, and the `after` of the next when there is one.
#[derive(Debug, Clone)]
pub struct ListPage {
    pub subscribers: Vec<Subscriber>,
    pub next: Option<String>,
}

/// A page of subscribers: the list in id order (`after` is an id), or the
/// hits of `term` in (key, id) order (`after` is a search cursor). An
/// `after` that is neither starts at the top.
pub async fn list_page(
    store: &SharedStore,
    status: Option<SubscriberStatus>,
    term: Option<SearchTerm>,
    after: Option<&str>,
) -> StoreResult<ListPage> {
    let page = PAGE_SIZE as usize;
    // One more than a page: whether there is a next one.
    let Some(term) = term else {
        let mut subscribers = store
            .list_subscribers(SubscriberQuery {
                status,
                after: after.and_then(|after| after.parse().ok()),
                limit: PAGE_SIZE + 1,
            })
            .await?;
        let next = (subscribers.len() > page).then(|| subscribers[page - 1].id.to_string());
        subscribers.truncate(page);
        return Ok(ListPage { subscribers, next });
    };
    let mut hits = store
        .search_subscribers(&SubscriberSearch {
            term,
            status,
            after: after.and_then(SearchCursor::decode),
            limit: PAGE_SIZE + 1,
        })
        .await?;
    let next = (hits.len() > page).then(|| hits[page - 1].cursor().encode());
    hits.truncate(page);
    Ok(ListPage {
        subscribers: hits.into_iter().map(|hit| hit.subscriber).collect(),
        next,
    })
}

/// Rows of each kind a preview lists; the rest are counted.
pub const PREVIEW_ROWS: usize = 100;
/// The largest CSV the admin takes: its upload, and the confirming form
/// that carries it back, must each fit the admin's 1 MiB body limit with
/// room for the form's other parts. A larger list is for
/// `tidings subscriber import`, which streams a file of any size.
pub const MAX_IMPORT_BYTES: usize = 1024 * 1024 - 16 * 1024;
/// Rows an import writes per transaction, as the CLI does.
const IMPORT_BATCH: usize = 1000;

/// A valid row and, when its address is already on the list (or earlier
/// in the file), which.
#[derive(Debug, Clone)]
pub struct PreviewRow {
    pub row: ImportRow,
    /// The earlier line with the same address, if any.
    pub repeats_line: Option<u64>,
}

/// What importing a CSV would do, found without writing anything.
#[derive(Debug, Clone, Default)]
pub struct ImportPreview {
    pub new_count: usize,
    pub existing_count: usize,
    pub invalid_count: usize,
    /// The first [`PREVIEW_ROWS`] of each.
    pub new: Vec<PreviewRow>,
    pub existing: Vec<PreviewRow>,
    pub invalid: Vec<RowError>,
}

/// Reads the whole CSV and sorts its rows into new, already present
/// (on the list, or earlier in the file) and invalid. Writes nothing.
pub async fn preview_import(store: &SharedStore, csv: &str) -> StoreResult<ImportPreview> {
    let mut valid = Vec::new();
    let mut preview = ImportPreview::default();
    for row in ImportReader::new(csv.as_bytes()) {
        match row {
            Ok(row) => valid.push(row),
            Err(error) => {
                preview.invalid_count += 1;
                if preview.invalid.len() < PREVIEW_ROWS {
                    preview.invalid.push(error);
                }
            }
        }
    }
    let mut addresses: Vec<String> = valid
        .iter()
        .map(|row| row.email.as_str().to_owned())
        .collect();
    addresses.sort_unstable();
    addresses.dedup();
    let listed = store.existing_emails(&addresses).await?;
    let mut first_line: HashMap<&str, u64> = HashMap::new();
    for row in &valid {
        let address = row.email.as_str();
        let repeats_line = first_line.get(address).copied();
        first_line.entry(address).or_insert(row.line);
        let shown = PreviewRow {
            row: row.clone(),
            repeats_line,
        };
        let (count, rows) = if listed.contains(address) || repeats_line.is_some() {
            (&mut preview.existing_count, &mut preview.existing)
        } else {
            (&mut preview.new_count, &mut preview.new)
        };
        *count += 1;
        if rows.len() < PREVIEW_ROWS {
            rows.push(shown);
        }
    }
    Ok(preview)
}

/// What an import did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportCounts {
    pub added: u64,
    pub existing: u64,
    pub skipped: u64,
    pub queued: u64,
}

/// Imports the valid rows of `csv` (the invalid ones are skipped, as the
/// preview said), a batch per transaction. Pending rows get a
/// confirmation email only when `send_confirmations`.
pub async fn import(
    newsletter: &Newsletter,
    csv: &str,
    send_confirmations: bool,
) -> NewsletterResult<ImportCounts> {
    let source = if send_confirmations {
        OperatorSource::Import
    } else {
        OperatorSource::ImportWithoutEmail
    };
    let mut counts = ImportCounts::default();
    let mut batch = Vec::with_capacity(IMPORT_BATCH);
    let mut rows = ImportReader::new(csv.as_bytes()).peekable();
    while let Some(row) = rows.next() {
        match row {
            Ok(row) => batch.push(row),
            Err(_) => counts.skipped += 1,
        }
        if batch.len() == IMPORT_BATCH || (rows.peek().is_none() && !batch.is_empty()) {
            for outcome in newsletter.import(&batch, source).await? {
                match outcome {
                    AddOutcome::Added {
                        confirmation_queued,
                        ..
                    } => {
                        counts.added += 1;
                        counts.queued += u64::from(confirmation_queued);
                    }
                    AddOutcome::AlreadyExists => counts.existing += 1,
                }
            }
            batch.clear();
        }
    }
    Ok(counts)
}

/// Subscribers exported per query.
const EXPORT_BATCH: u32 = 1000;

/// The list (or one status of it) as CSV, `email,name,status` with a
/// header row, a batch of rows per chunk: only one batch is ever held,
/// whatever the list's size. Cells are neutralised as the CLI's export.
pub fn export(
    store: SharedStore,
    status: Option<SubscriberStatus>,
) -> impl Stream<Item = Result<Bytes, StoreError>> + Send + 'static {
    // `None`: the header row is next; then the id to go on after.
    futures::stream::try_unfold(
        (store, None::<i64>, false),
        move |(store, after, done)| async move {
            if done {
                return Ok(None);
            }
            let Some(after) = after else {
                let header = Bytes::from_static(b"email,name,status\n");
                return Ok(Some((header, (store, Some(0), false))));
            };
            let page = store
                .list_subscribers(SubscriberQuery {
                    status,
                    after: Some(after),
                    limit: EXPORT_BATCH,
                })
                .await?;
            let Some(last) = page.last().map(|subscriber| subscriber.id) else {
                return Ok(None);
            };
            let last_batch = page.len() < EXPORT_BATCH as usize;
            Ok(Some((csv_rows(&page), (store, Some(last), last_batch))))
        },
    )
}

fn csv_rows(page: &[Subscriber]) -> Bytes {
    let mut writer = csv::Writer::from_writer(Vec::with_capacity(page.len() * 48));
    for subscriber in page {
        let cells = [
            neutralise(&subscriber.email),
            neutralise(subscriber.name.as_deref().unwrap_or("")),
            neutralise(subscriber.status.as_str()),
        ];
        // Writing to memory cannot fail.
        let _ = writer.write_record(cells.iter().map(|cell| cell.as_bytes()));
    }
    Bytes::from(writer.into_inner().unwrap_or_default())
}

/// Unsubscribes on the operator's word, logged as theirs.
pub async fn unsubscribe(
    newsletter: &Newsletter,
    subscriber_id: i64,
    admin_email: &str,
) -> NewsletterResult<UnsubscribeOutcome> {
    let detail = erasure::by_admin(admin_email);
    Ok(newsletter
        .store()
        .unsubscribe_by_operator(subscriber_id, &detail, newsletter.now())
        .await?)
}

/// Erases the subscriber's personal data (see `domain::erasure`).
pub async fn erase(
    newsletter: &Newsletter,
    subscriber_id: i64,
    admin_email: &str,
) -> NewsletterResult<EraseOutcome> {
    let detail = erasure::by_admin(admin_email);
    let outcome = newsletter
        .store()
        .erase_subscriber(subscriber_id, &detail, newsletter.now())
        .await?;
    if outcome == EraseOutcome::Erased {
        tracing::info!(subscriber_id, "subscriber erased by an admin");
    }
    Ok(outcome)
}
