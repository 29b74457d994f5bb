//! The admin's post editor: moving a post one place up or down the queue,
//! previewing what has not been saved, and test emails.

use super::post::PostSubject;

/// One place towards the front of the queue, or towards the back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Up,
    Down,
}

impl Direction {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "up" => Some(Direction::Up),
            "down" => Some(Direction::Down),
            _ => None,
        }
    }
}

/// Why a post cannot move the way it was asked to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MoveRefused {
    #[error("the post is not in the queue")]
    NotQueued,
    #[error("the post is already first in the queue")]
    AlreadyFirst,
    #[error("the post is already last in the queue")]
    AlreadyLast,
}

/// The 1-based place `post_id` takes after one step in `direction`, given
/// the queue of posts not yet sent, in order.
pub fn place_after_move(
    queue: &[i64],
    post_id: i64,
    direction: Direction,
) -> Result<i64, MoveRefused> {
    let index = queue
        .iter()
        .position(|id| *id == post_id)
        .ok_or(MoveRefused::NotQueued)?;
    let index = match direction {
        Direction::Up if index == 0 => return Err(MoveRefused::AlreadyFirst),
        Direction::Up => index - 1,
        Direction::Down if index + 1 == queue.len() => return Err(MoveRefused::AlreadyLast),
        Direction::Down => index + 1,
    };
    Ok(i64::try_from(index).unwrap_or(i64::MAX - 1) + 1)
}

/// A post as the editor's form holds it, perhaps unsaved and half typed,
/// for the live preview. Nothing here is stored or emailed, and the
/// preview escapes it, so it is shown as typed, only trimmed the way
/// [`PostSubject::parse`] trims a subject; the form's Save still refuses
/// what does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    pub subject: String,
    pub body_markdown: String,
}

impl Draft {
    pub fn from_form(subject: &str, body_markdown: &str) -> Self {
        let subject = PostSubject::parse(subject)
            .map(|subject| subject.as_str().to_owned())
            .unwrap_or_else(|_| subject.trim().to_owned());
        Self {
            subject,
            body_markdown: body_markdown.to_owned(),
        }
    }
}

/// A test email's subject: plainly not the issue itself.
pub fn test_subject(subject: &str) -> String {
    format!("[Test] {subject}")
}

/// Test emails each admin account may send per hour: plenty to check a
/// post, too few to mail anyone much from a stolen session.
pub const TEST_EMAILS_PER_HOUR: u32 = 30;

/// What the mail server made of a test email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TestEmailOutcome {
    /// Accepted (or written to the outbox folder), with the server's reply.
    Sent { reply: String },
    /// The server refused it, for a reason worth reading.
    Refused { reply: String },
    /// No server could be reached, or it stopped answering.
    Unreachable { reason: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directions_are_up_and_down_only() {
        assert_eq!(Direction::parse("up"), Some(Direction::Up));
        assert_eq!(Direction::parse("down"), Some(Direction::Down));
        assert_eq!(Direction::parse("Up"), None);
        assert_eq!(Direction::parse(""), None);
    }

    #[test]
    fn a_move_is_one_place_and_stops_at_either_end() {
        let queue = [7, 3, 9];
        assert_eq!(place_after_move(&queue, 3, Direction::Up), Ok(1));
        assert_eq!(place_after_move(&queue, 3, Direction::Down), Ok(3));
        assert_eq!(place_after_move(&queue, 9, Direction::Up), Ok(2));
        assert_eq!(place_after_move(&queue, 7, Direction::Down), Ok(2));
        assert_eq!(
            place_after_move(&queue, 7, Direction::Up),
            Err(MoveRefused::AlreadyFirst)
        );
        assert_eq!(
            place_after_move(&queue, 9, Direction::Down),
            Err(MoveRefused::AlreadyLast)
        );
        assert_eq!(
            place_after_move(&queue, 4, Direction::Up),
            Err(MoveRefused::NotQueued)
        );
        assert_eq!(
            place_after_move(&[5], 5, Direction::Down),
            Err(MoveRefused::AlreadyLast)
        );
    }

    #[test]
    fn a_draft_is_shown_as_typed_with_the_subject_trimmed_like_a_saved_one() {
        let draft = Draft::from_form("  Hello  ", "Body\n");
        assert_eq!(draft.subject, "Hello");
        assert_eq!(draft.body_markdown, "Body\n");
        // Half typed: still previewed.
        assert_eq!(Draft::from_form(" ", "").subject, "");
        assert_eq!(Draft::from_form(" a\tb ", "").subject, "a\tb");
    }

    #[test]
    fn a_test_subject_says_so() {
        assert_eq!(test_subject("Pitfall 1"), "[Test] Pitfall 1");
    }
}
