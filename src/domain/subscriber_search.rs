//! Finding subscribers by what an operator types, a page at a time, in
//! work that does not grow with the list.
//!
//! A search is a PREFIX match, case-insensitive for ASCII letters (the
//! same rule on both databases: their `lower()` agree on ASCII only): the
//! start of an address or of a name, or, when it starts with `@`, the
//! start of the domain (`@example` finds `ana@example.com` and
//! `bo@example.org`). Each is a range over an index on that key, per
//! status, so a page reads about a page of index entries whatever the
//! list's size; a match in the middle of a word would need a scan of the
//! whole list, so there is none. The text is compared as a range, never
//! put in a `LIKE` pattern, so `%` and `_` are plain characters.
//!
//! Hits are ordered by (key, id), the key being the text that matched, so
//! a cursor of the last (key, id) shown walks every hit exactly once. A
//! subscriber whose address and name both match is found by the address
//! alone.

use super::subscriber::{Subscriber, SubscriberStatus};

/// Subscribers per page of the admin list.
pub const PAGE_SIZE: u32 = 50;

/// The longest text searched: an address is at most 254 characters.
const MAX_QUERY_CHARS: usize = 254;

/// The key a search compares against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchField {
    /// The lowercased address.
    Address,
    /// The lowercased name.
    Name,
    /// The lowercased address from its `@` on.
    Domain,
}

/// What to look for, parsed from the search box.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchTerm {
    /// Lowercased (ASCII) and trimmed: the start of every key it matches.
    prefix: String,
    fields: &'static [SearchField],
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SearchError {
    #[error("The search is too long: type the start of an address or a name.")]
    TooLong,
    #[error("The search cannot contain control characters.")]
    ControlCharacter,
}

impl SearchTerm {
    /// `None` for an empty box: the whole list.
    pub fn parse(text: &str) -> Result<Option<Self>, SearchError> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        if text.chars().count() > MAX_QUERY_CHARS {
            return Err(SearchError::TooLong);
        }
        if text.chars().any(char::is_control) {
            return Err(SearchError::ControlCharacter);
        }
        let fields: &'static [SearchField] = if text.starts_with('@') {
            &[SearchField::Domain]
        } else {
            &[SearchField::Address, SearchField::Name]
        };
        Ok(Some(Self {
            prefix: text.to_ascii_lowercase(),
            fields,
        }))
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn fields(&self) -> &'static [SearchField] {
        self.fields
    }

    /// The first text past every key that starts with the prefix: the
    /// range is `prefix <= key < upper`. Keys compare bytewise, and no
    /// character's UTF-8 sorts after U+10FFFF's.
    pub fn upper(&self) -> String {
        format!("{}\u{10FFFF}", self.prefix)
    }
}

/// Where the next page starts: after this hit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchCursor {
    pub key: String,
    pub id: i64,
}

impl SearchCursor {
    /// `id:key`, as the "Next page" link carries it.
    pub fn encode(&self) -> String {
        format!("{}:{}", self.id, self.key)
    }

    /// `None` for anything [`SearchCursor::encode`] did not make.
    pub fn decode(text: &str) -> Option<Self> {
        let (id, key) = text.split_once(':')?;
        Some(Self {
            id: id.parse().ok().filter(|id| *id >= 0)?,
            key: key.to_owned(),
        })
    }
}

/// One page of a search.
#[derive(Debug, Clone)]
pub struct SubscriberSearch {
    pub term: SearchTerm,
    pub status: Option<SubscriberStatus>,
    pub after: Option<SearchCursor>,
    pub limit: u32,
}

impl SubscriberSearch {
    /// Each (field, status) is one index range read in key order; without
    /// a status filter every status is read, each from its own range.
    pub fn ranges(&self) -> Vec<(SearchField, SubscriberStatus)> {
        let statuses = match self.status {
            Some(status) => vec![status],
            None => SubscriberStatus::ALL.to_vec(),
        };
        self.term
            .fields()
            .iter()
            .flat_map(|field| statuses.iter().map(move |status| (*field, *status)))
            .collect()
    }

    /// Where a range's read starts: the prefix, or past the cursor when it
    /// lies inside the range (key, then id above the cursor's).
    pub fn start(&self) -> (String, i64) {
        match &self.after {
            Some(cursor) if cursor.key.as_str() >= self.term.prefix() => {
                (cursor.key.clone(), cursor.id)
            }
            _ => (self.term.prefix().to_owned(), 0),
        }
    }
}

/// A subscriber found by a search, with the key that matched.
#[derive(Debug, Clone)]
pub struct SearchHit {
    pub key: String,
    pub subscriber: Subscriber,
}

impl SearchHit {
    pub fn cursor(&self) -> SearchCursor {
        SearchCursor {
            key: self.key.clone(),
            id: self.subscriber.id,
        }
    }
}

/// The first `limit` hits of every range's, in (key, id) order: each
/// range is in that order already, and together they are the whole.
pub fn first_hits(mut hits: Vec<SearchHit>, limit: usize) -> Vec<SearchHit> {
    hits.sort_by(|a, b| (&a.key, a.subscriber.id).cmp(&(&b.key, b.subscriber.id)));
    hits.truncate(limit);
    hits
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;

    fn hit(key: &str, id: i64) -> SearchHit {
        SearchHit {
            key: key.into(),
            subscriber: Subscriber {
                id,
                email: format!("{key}@example.com"),
                name: None,
                status: SubscriberStatus::Confirmed,
                created_at: DateTime::default(),
                confirmed_at: None,
            },
        }
    }

    #[test]
    fn a_search_is_a_lowercased_prefix_of_an_address_or_a_name_or_a_domain() {
        assert_eq!(SearchTerm::parse("  "), Ok(None));
        let term = SearchTerm::parse(" Ada.L ").unwrap().unwrap();
        assert_eq!(term.prefix(), "ada.l");
        assert_eq!(term.fields(), [SearchField::Address, SearchField::Name]);
        assert_eq!(term.upper(), "ada.l\u{10FFFF}");
        let domain = SearchTerm::parse("@Example.COM").unwrap().unwrap();
        assert_eq!(domain.prefix(), "@example.com");
        assert_eq!(domain.fields(), [SearchField::Domain]);
        // Only ASCII is folded, as both databases' lower() fold it.
        assert_eq!(
            SearchTerm::parse("ÉMILE").unwrap().unwrap().prefix(),
            "Émile"
        );
        // Wildcards are plain text: the prefix is a range bound.
        assert_eq!(SearchTerm::parse("a%_").unwrap().unwrap().prefix(), "a%_");
        assert_eq!(
            SearchTerm::parse(&"a".repeat(255)),
            Err(SearchError::TooLong)
        );
        assert_eq!(
            SearchTerm::parse("a\u{0}b"),
            Err(SearchError::ControlCharacter)
        );
    }

    #[test]
    fn a_cursor_round_trips_and_anything_else_is_no_cursor() {
        let cursor = SearchCursor {
            key: "ada lovelace: notes".into(),
            id: 12,
        };
        assert_eq!(SearchCursor::decode(&cursor.encode()), Some(cursor));
        for text in ["", "12", "x:ada", "-1:ada"] {
            assert_eq!(SearchCursor::decode(text), None, "{text}");
        }
    }

    #[test]
    fn every_status_is_its_own_range_unless_one_is_asked_for() {
        let search = |status| SubscriberSearch {
            term: SearchTerm::parse("ada").unwrap().unwrap(),
            status,
            after: None,
            limit: PAGE_SIZE,
        };
        assert_eq!(search(None).ranges().len(), 8);
        assert_eq!(
            search(Some(SubscriberStatus::Bounced)).ranges(),
            [
                (SearchField::Address, SubscriberStatus::Bounced),
                (SearchField::Name, SubscriberStatus::Bounced)
            ]
        );
        assert_eq!(search(None).start(), ("ada".into(), 0));
        let after = SubscriberSearch {
            after: Some(SearchCursor {
                key: "ada@x.org".into(),
                id: 9,
            }),
            ..search(None)
        };
        assert_eq!(after.start(), ("ada@x.org".into(), 9));
        // A cursor before the range (a hand-made link) starts at the prefix.
        let before = SubscriberSearch {
            after: Some(SearchCursor {
                key: "a".into(),
                id: 9,
            }),
            ..search(None)
        };
        assert_eq!(before.start(), ("ada".into(), 0));
    }

    #[test]
    fn ranges_merge_in_key_then_id_order() {
        let hits = vec![hit("bob", 3), hit("ada", 7), hit("ada", 2), hit("carl", 1)];
        let first: Vec<(String, i64)> = first_hits(hits, 3)
            .iter()
            .map(|hit| (hit.key.clone(), hit.subscriber.id))
            .collect();
        assert_eq!(
            first,
            [("ada".into(), 2), ("ada".into(), 7), ("bob".into(), 3)]
        );
    }
}
