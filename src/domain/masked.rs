//! An address shown partly hidden, so that a page reached through a
//! forwarded link tells its owner which address it is about without
//! spelling it out to whoever else holds the link.

use unicode_segmentation::UnicodeSegmentation;

/// What stands for the hidden characters: always three, so the mask does
/// not tell how long the local part is.
const HIDDEN: &str = "•••";

/// `reader@example.com` as `r•••r@example.com`. The local part keeps its
/// first and last character (whole characters, however many bytes), a
/// two-character one only its first, a one-character one nothing; the
/// domain is shown whole, since its owner needs it to recognise the
/// address and it is rarely what identifies a person.
pub fn masked_address(email: &str) -> String {
    let Some((local, domain)) = email.rsplit_once('@') else {
        return HIDDEN.to_owned();
    };
    let characters: Vec<&str> = local.graphemes(true).collect();
    let shown = match characters.as_slice() {
        [] | [_] => HIDDEN.to_owned(),
        [first, _] => format!("{first}{HIDDEN}"),
        [first, .., last] => format!("{first}{HIDDEN}{last}"),
    };
    format!("{shown}@{domain}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_and_last_characters_of_the_local_part_show() {
        assert_eq!(masked_address("reader@example.com"), "r•••r@example.com");
        assert_eq!(masked_address("bob@example.com"), "b•••b@example.com");
        assert_eq!(
            masked_address("a.very.long.name@example.com"),
            "a•••e@example.com",
            "the mask does not tell the length"
        );
    }

    #[test]
    fn short_local_parts_show_less_of_themselves() {
        assert_eq!(masked_address("jo@example.com"), "j•••@example.com");
        assert_eq!(masked_address("x@example.com"), "•••@example.com");
    }

    #[test]
    fn non_ascii_characters_are_kept_whole() {
        assert_eq!(masked_address("émile@exemple.fr"), "é•••e@exemple.fr");
        assert_eq!(masked_address("josé@café.example"), "j•••é@café.example");
        // A combining accent stays with its letter.
        assert_eq!(
            masked_address("zoe\u{301}@example.com"),
            "z•••e\u{301}@example.com"
        );
        assert_eq!(masked_address("用户@例子.中国"), "用•••@例子.中国");
    }

    #[test]
    fn the_domain_is_found_after_the_last_at_sign() {
        assert_eq!(masked_address("\"a@b\"@example.com"), "\"•••\"@example.com");
        assert_eq!(masked_address("not an address"), "•••");
    }
}
