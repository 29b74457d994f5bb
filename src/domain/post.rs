//! Posts: the queue of things to send, the rules for changing it, and the
//! first series we ship.

use chrono::{DateTime, Utc};
use serde::Serialize;

pub const MAX_SUBJECT_CHARS: usize = 200;

/// A subject line: one line, no control characters, so it is safe in a header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct PostSubject(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    #[error("subject must not be empty")]
    Empty,
    #[error("subject must not contain control characters such as line breaks")]
    ControlCharacter,
    #[error("subject must be at most {MAX_SUBJECT_CHARS} characters")]
    TooLong,
}

impl PostSubject {
    pub fn parse(input: &str) -> Result<Self, SubjectError> {
        if input.chars().any(char::is_control) {
            return Err(SubjectError::ControlCharacter);
        }
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(SubjectError::Empty);
        }
        if trimmed.chars().count() > MAX_SUBJECT_CHARS {
            return Err(SubjectError::TooLong);
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A post's Markdown: not blank, and no control characters but line breaks
/// and tabs. A NUL would be refused by PostgreSQL and kept by SQLite, and
/// the others have no business in a letter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct PostBody(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("body_markdown must not be empty")]
    Empty,
    #[error(
        "body_markdown must not contain control characters other than line breaks and tabs \
         (found U+{0:04X} on line {1})"
    )]
    ControlCharacter(u32, usize),
}

impl PostBody {
    pub fn parse(input: &str) -> Result<Self, BodyError> {
        if let Some((line, c)) = input.lines().enumerate().find_map(|(index, line)| {
            line.chars()
                .find(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
                .map(|c| (index + 1, c))
        }) {
            return Err(BodyError::ControlCharacter(u32::from(c), line));
        }
        if input.trim().is_empty() {
            return Err(BodyError::Empty);
        }
        Ok(Self(input.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for PostBody {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PostStatus {
    Queued,
    Sent,
}

impl PostStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PostStatus::Queued => "queued",
            PostStatus::Sent => "sent",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "queued" => Some(PostStatus::Queued),
            "sent" => Some(PostStatus::Sent),
            _ => None,
        }
    }

    /// A sent post is history: its subscribers got exactly this text.
    pub fn can_change(self) -> bool {
        self == PostStatus::Queued
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Post {
    pub id: i64,
    pub subject: String,
    pub body_markdown: String,
    pub position: i64,
    pub status: PostStatus,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
}

/// A post as the admin's queue lists it: no body, and for a sent post the
/// issue it first went out in (`None` for one sent before issues named
/// their post, or whose issue is gone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostListing {
    pub id: i64,
    pub subject: String,
    pub position: i64,
    pub status: PostStatus,
    pub sent_at: Option<DateTime<Utc>>,
    pub issue_id: Option<i64>,
}

/// A post ready to be stored: subject and body parsed.
#[derive(Debug, Clone)]
pub struct NewPost {
    pub subject: PostSubject,
    pub body_markdown: PostBody,
}

/// An edit of a queued post; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct PostChanges {
    pub subject: Option<PostSubject>,
    pub body_markdown: Option<PostBody>,
    /// 1-based place in the queue of posts not yet sent.
    pub position: Option<i64>,
}

#[derive(Debug)]
pub enum PostEdit {
    Updated(Post),
    Deleted,
    NotFound,
    AlreadySent,
}

/// Whether `post` may be edited or deleted: `Err` with the answer when not.
pub fn check_editable(post: Option<&Post>) -> Result<(), PostEdit> {
    match post {
        None => Err(PostEdit::NotFound),
        Some(post) if !post.status.can_change() => Err(PostEdit::AlreadySent),
        Some(_) => Ok(()),
    }
}

/// The queue after moving `moved` to `place` (1-based, clamped to the
/// queue) among the other queued posts, `others`, given in queue order.
pub fn queue_with_move(mut others: Vec<i64>, moved: i64, place: i64) -> Vec<i64> {
    let index = usize::try_from(place.max(1) - 1)
        .unwrap_or(usize::MAX)
        .min(others.len());
    others.insert(index, moved);
    others
}

/// A post with its place in the series, for rendering.
#[derive(Debug, Clone)]
pub struct PostForRender {
    pub post: Post,
    /// 1-based rank by queue position, used as the issue number in sequence mode.
    pub ordinal: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PostCounts {
    pub queued: i64,
    pub sent: i64,
}

impl PostCounts {
    pub fn add(&mut self, status: PostStatus, count: i64) {
        match status {
            PostStatus::Queued => self.queued += count,
            PostStatus::Sent => self.sent += count,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FrontMatterError {
    #[error("the file must start with front matter: a line `---`, `subject: \"...\"`, then `---`")]
    Missing,
    #[error("the front matter has no `subject:` line")]
    NoSubject,
    #[error("invalid subject: {0}")]
    Subject(#[from] SubjectError),
    #[error("the post body is empty")]
    EmptyBody,
    #[error("invalid body: {0}")]
    Body(#[from] BodyError),
}

/// Reads a Markdown file with a `subject:` front matter block.
/// `fallback_subject` (from the CLI's `--subject`) wins when given.
pub fn parse_markdown_post(
    text: &str,
    fallback_subject: Option<&str>,
) -> Result<NewPost, FrontMatterError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let (front, body) = match split_front_matter(text) {
        Some((front, body)) => (Some(front), body),
        None if fallback_subject.is_some() => (None, text),
        None => return Err(FrontMatterError::Missing),
    };
    let subject = match fallback_subject {
        Some(subject) => subject.to_owned(),
        None => front
            .and_then(front_matter_subject)
            .ok_or(FrontMatterError::NoSubject)?,
    };
    let body = body.trim();
    if body.is_empty() {
        return Err(FrontMatterError::EmptyBody);
    }
    Ok(NewPost {
        subject: PostSubject::parse(&subject)?,
        body_markdown: PostBody::parse(&format!("{body}\n"))?,
    })
}

fn split_front_matter(text: &str) -> Option<(&str, &str)> {
    let rest = text
        .strip_prefix("---\n")
        .or_else(|| text.strip_prefix("---\r\n"))?;
    let end = rest.find("\n---")?;
    let after = &rest[end + 4..];
    let body = after
        .strip_prefix("\r\n")
        .or_else(|| after.strip_prefix('\n'))
        .unwrap_or(after);
    Some((&rest[..end], body))
}

fn front_matter_subject(front: &str) -> Option<String> {
    front.lines().find_map(|line| {
        let value = line.trim().strip_prefix("subject:")?.trim();
        let unquoted = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(value);
        Some(unquoted.replace("\\\"", "\""))
    })
}

/// The first series, compiled in so a fresh install has something to send.
const FIRST_SERIES: [&str; 10] = [
    include_str!("../../content/01-unclear-purpose.md"),
    include_str!("../../content/02-overcommitted.md"),
    include_str!("../../content/03-unrealistic-expectations.md"),
    include_str!("../../content/04-unclear-roles-and-responsibilities.md"),
    include_str!("../../content/05-self-interest-vs-group-interest.md"),
    include_str!("../../content/06-taking-credit-vs-sharing-credit.md"),
    include_str!("../../content/07-overselling-and-under-delivering.md"),
    include_str!("../../content/08-under-communicating.md"),
    include_str!("../../content/09-letting-the-loudest-voices-get-their-way.md"),
    include_str!("../../content/10-unresolved-conflict.md"),
];

pub fn first_series() -> Vec<NewPost> {
    FIRST_SERIES
        .iter()
        .map(|text| parse_markdown_post(text, None).expect("the shipped tips are valid"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_series_has_ten_tips_in_order_of_the_right_length() {
        let series = first_series();
        assert_eq!(series.len(), 10);
        for (index, post) in series.iter().enumerate() {
            let prefix = format!("Pitfall {} of 10:", index + 1);
            assert!(
                post.subject.as_str().starts_with(&prefix),
                "{:?}",
                post.subject
            );
            let words = post.body_markdown.split_whitespace().count();
            assert!(
                (250..=450).contains(&words),
                "tip {} has {words} words",
                index + 1
            );
            assert!(post.body_markdown.contains("## Try this week"));
        }
        assert!(series[0].subject.as_str().contains("Unclear purpose"));
        assert!(series[9].subject.as_str().contains("Unresolved conflict"));
    }

    #[test]
    fn subjects_reject_control_characters_and_blanks() {
        assert_eq!(PostSubject::parse("  "), Err(SubjectError::Empty));
        assert_eq!(
            PostSubject::parse("Hi\r\nBcc: x@example.com"),
            Err(SubjectError::ControlCharacter)
        );
        assert_eq!(
            PostSubject::parse("Tab\there"),
            Err(SubjectError::ControlCharacter)
        );
        assert_eq!(
            PostSubject::parse(&"x".repeat(201)),
            Err(SubjectError::TooLong)
        );
        assert_eq!(PostSubject::parse(" Fine ").unwrap().as_str(), "Fine");
    }

    #[test]
    fn bodies_keep_line_breaks_and_tabs_but_no_other_control_character() {
        let body = PostBody::parse("# Hi\r\n\n\tcode\n").unwrap();
        assert_eq!(body.as_str(), "# Hi\r\n\n\tcode\n");
        assert_eq!(PostBody::parse(" \n\t "), Err(BodyError::Empty));
        assert_eq!(
            PostBody::parse("one\ntwo\0three"),
            Err(BodyError::ControlCharacter(0, 2))
        );
        for bad in ["\u{7}", "\u{1b}[31m", "\u{7f}", "\u{85}", "\u{c}"] {
            let error = PostBody::parse(&format!("text {bad}")).unwrap_err();
            assert!(
                matches!(error, BodyError::ControlCharacter(_, 1)),
                "{bad:?}"
            );
            assert!(error.to_string().starts_with("body_markdown"), "{error}");
        }
        assert!(matches!(
            parse_markdown_post("---\nsubject: S\n---\nNUL \0 here\n", None),
            Err(FrontMatterError::Body(BodyError::ControlCharacter(0, 1)))
        ));
    }

    fn post(id: i64, status: PostStatus) -> Post {
        Post {
            id,
            subject: "s".into(),
            body_markdown: "b".into(),
            position: id,
            status,
            created_at: DateTime::default(),
            sent_at: None,
        }
    }

    #[test]
    fn only_queued_posts_can_change() {
        assert!(check_editable(Some(&post(1, PostStatus::Queued))).is_ok());
        assert!(matches!(
            check_editable(Some(&post(1, PostStatus::Sent))),
            Err(PostEdit::AlreadySent)
        ));
        assert!(matches!(check_editable(None), Err(PostEdit::NotFound)));
    }

    #[test]
    fn a_moved_post_lands_at_its_place_clamped_to_the_queue() {
        assert_eq!(queue_with_move(vec![1, 2, 3], 9, 1), vec![9, 1, 2, 3]);
        assert_eq!(queue_with_move(vec![1, 2, 3], 9, 2), vec![1, 9, 2, 3]);
        assert_eq!(queue_with_move(vec![1, 2, 3], 9, 4), vec![1, 2, 3, 9]);
        assert_eq!(queue_with_move(vec![1, 2, 3], 9, 99), vec![1, 2, 3, 9]);
        assert_eq!(queue_with_move(vec![1, 2, 3], 9, 0), vec![9, 1, 2, 3]);
        assert_eq!(queue_with_move(vec![1, 2, 3], 9, -5), vec![9, 1, 2, 3]);
        assert_eq!(queue_with_move(vec![], 9, 3), vec![9]);
    }

    #[test]
    fn front_matter_is_read_and_the_cli_subject_wins() {
        let text = "---\nsubject: \"Hello \\\"you\\\"\"\n---\n\nBody here.\n";
        let post = parse_markdown_post(text, None).unwrap();
        assert_eq!(post.subject.as_str(), "Hello \"you\"");
        assert_eq!(post.body_markdown.as_str(), "Body here.\n");
        let post = parse_markdown_post("Just a body", Some("Given")).unwrap();
        assert_eq!(post.subject.as_str(), "Given");
        assert!(matches!(
            parse_markdown_post("no front matter", None),
            Err(FrontMatterError::Missing)
        ));
        assert!(matches!(
            parse_markdown_post("---\nsubject: x\n---\n  \n", None),
            Err(FrontMatterError::EmptyBody)
        ));
    }
}
