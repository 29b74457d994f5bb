//! A post body in Markdown becomes email-ready HTML (inline styles, since
//! many mail clients drop `<style>`) and plain text that reads like a letter
//! (src/render/plain_text.rs).
//!
//! Markdown lets raw HTML through, and the preview is served from the
//! public origin, so the HTML is cleaned against an allowlist (ammonia):
//! no scripts, frames, styles, event handlers or `javascript:`/`data:`
//! URLs, whatever the post says. The cleaner then sets our own style on
//! every element (src/render/email_style.rs), so no style of the post's
//! survives and none of ours is missing.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use pulldown_cmark::{Alignment, CowStr, Event, Options, Parser, Tag, TagEnd};

use super::email_style;

pub use super::plain_text::{to_plain_text, to_prose};

/// Tables, strikethrough, and curly quotes; never dashes (see `events`).
const OPTIONS: Options = Options::ENABLE_STRIKETHROUGH
    .union(Options::ENABLE_SMART_PUNCTUATION)
    .union(Options::ENABLE_TABLES);

/// The Markdown's events, with typographic dashes undone: `--dry-run` or
/// `---` in a post is what the writer typed, and a writer who wants a dash
/// can type one. Curly quotes and `…` stay. Code is never touched: its
/// text is not smartened in the first place.
pub(super) fn events(markdown: &str) -> impl Iterator<Item = Event<'_>> {
    Parser::new_ext(markdown, OPTIONS)
        .into_offset_iter()
        .map(move |(event, range)| match event {
            // Each run of two or more hyphens is one text event of dashes.
            Event::Text(_) if is_hyphen_run(&markdown[range.clone()]) => {
                Event::Text(CowStr::Borrowed(&markdown[range]))
            }
            other => other,
        })
}

fn is_hyphen_run(source: &str) -> bool {
    source.len() >= 2 && source.bytes().all(|byte| byte == b'-')
}

/// Where a link in an email may lead: the web and mail, nothing that runs.
pub(super) const LINK_SCHEMES: [&str; 3] = ["http", "https", "mailto"];

/// Table cell alignments a post may ask for.
const ALIGNMENTS: [&str; 3] = ["left", "center", "right"];

/// What an email body may contain: what Markdown writes, and no more.
static SANITISER: LazyLock<ammonia::Builder<'static>> = LazyLock::new(|| {
    let tags = [
        "a",
        "b",
        "blockquote",
        "br",
        "code",
        "del",
        "em",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "hr",
        "i",
        "img",
        "li",
        "ol",
        "p",
        "pre",
        "s",
        "strong",
        "sub",
        "sup",
        "table",
        "tbody",
        "td",
        "th",
        "thead",
        "tr",
        "ul",
    ];
    let attributes = HashMap::from([
        ("a", HashSet::from(["href", "title"])),
        ("img", HashSet::from(["src", "alt", "title"])),
        ("ol", HashSet::from(["start"])),
        ("th", HashSet::from(["align"])),
        ("td", HashSet::from(["align"])),
    ]);
    let mut builder = ammonia::Builder::empty();
    builder
        .tags(HashSet::from(tags))
        .clean_content_tags(HashSet::from(["script", "style"]))
        .tag_attributes(attributes)
        .generic_attributes(HashSet::new())
        .url_schemes(HashSet::from(LINK_SCHEMES))
        // A relative link has nothing to be relative to in an inbox.
        .url_relative(ammonia::UrlRelative::Deny)
        .link_rel(Some("noopener noreferrer"))
        .strip_comments(true)
        .attribute_filter(|element, attribute, value| match (element, attribute) {
            // An image over plain http (or any other scheme) is left out:
            // mail clients warn about it, and it can track a reader.
            ("img", "src") if !has_scheme(value, &["https"]) => None,
            (_, "align") if !ALIGNMENTS.contains(&value) => None,
            _ => Some(Cow::Borrowed(value)),
        });
    // Set after the cleaning dropped every `style` the post had.
    for (tag, style) in ELEMENT_STYLES.iter() {
        builder.set_tag_attribute_value(*tag, "style", style.as_str());
    }
    builder
});

static ELEMENT_STYLES: LazyLock<Vec<(&'static str, String)>> =
    LazyLock::new(email_style::element_styles);

/// Whether `url` is absolute with one of `schemes` (case-insensitive).
pub(super) fn has_scheme(url: &str, schemes: &[&str]) -> bool {
    url.trim()
        .split_once(':')
        .is_some_and(|(scheme, _)| schemes.iter().any(|s| s.eq_ignore_ascii_case(scheme)))
}

/// Email HTML for `markdown`: sanitised, with our inline styles.
pub fn to_email_html(markdown: &str) -> String {
    let mut html = String::with_capacity(markdown.len() * 3);
    pulldown_cmark::html::push_html(&mut html, TableCells::default().wrap(events(markdown)));
    SANITISER.clean(&html).to_string()
}

/// Writes table cells with an `align` attribute, where pulldown-cmark
/// writes a `style` (which the cleaner drops to put ours in its place).
/// A heading cell without an alignment is left-aligned, like the body.
#[derive(Default)]
struct TableCells {
    alignments: Vec<Alignment>,
    in_head: bool,
    column: usize,
}

impl TableCells {
    fn wrap<'a>(
        mut self,
        events: impl Iterator<Item = Event<'a>>,
    ) -> impl Iterator<Item = Event<'a>> {
        events.map(move |event| self.map(event))
    }

    fn map<'a>(&mut self, event: Event<'a>) -> Event<'a> {
        match &event {
            Event::Start(Tag::Table(alignments)) => self.alignments = alignments.clone(),
            Event::Start(Tag::TableHead) => (self.in_head, self.column) = (true, 0),
            Event::End(TagEnd::TableHead) => self.in_head = false,
            Event::Start(Tag::TableRow) => self.column = 0,
            Event::Start(Tag::TableCell) => {
                let align = match self.alignments.get(self.column) {
                    Some(Alignment::Center) => "center",
                    Some(Alignment::Right) => "right",
                    _ => "left",
                };
                return Event::InlineHtml(format!("<{} align=\"{align}\">", self.cell()).into());
            }
            Event::End(TagEnd::TableCell) => {
                self.column += 1;
                return Event::InlineHtml(format!("</{}>", self.cell()).into());
            }
            _ => {}
        }
        event
    }

    fn cell(&self) -> &'static str {
        if self.in_head {
            "th"
        } else {
            "td"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every element Markdown writes, and a few raw ones.
    const EVERY_ELEMENT: &str = "# One\n\n## Two\n\n### Three\n\n#### Four\n\n##### Five\n\n\
        ###### Six\n\nSome *emphasis*, **strength**, `code`, ~~gone~~ and a \
        [link](https://example.com/x).\n\n> A quote\n\n1. one\n2. two\n\n- a\n- b\n\n\
        ```\nfn main() {}\n```\n\n---\n\n![chart](https://example.com/chart.png)\n\n\
        | a | b |\n|---|---|\n| 1 | 2 |\n\n<b>bold</b> <i>italic</i>\n";

    #[test]
    fn every_element_carries_the_layout_fonts_and_colours() {
        let html = to_email_html(EVERY_ELEMENT);
        let font = format!("font-family:{};", email_style::FONT);
        let colour = format!("color:{};", email_style::TEXT);
        let mut seen = HashSet::new();
        for (tag, attributes) in start_tags(&html) {
            let style = attributes
                .iter()
                .find(|(name, _)| name == "style")
                .map(|(_, value)| value.clone());
            seen.insert(tag.clone());
            // Structure and marks that only change the text they hold.
            if ["thead", "tbody", "tr", "del"].contains(&tag.as_str()) {
                continue;
            }
            let style = style.unwrap_or_else(|| panic!("<{tag}> has no style in {html}"));
            match tag.as_str() {
                "p" | "h1" | "h2" | "h3" | "h4" | "h5" | "h6" | "ul" | "ol" | "li" | "table"
                | "th" | "td" => {
                    assert!(style.contains(&font), "<{tag}> without {font}: {style}");
                    assert!(style.contains(&colour), "<{tag}> without {colour}: {style}");
                }
                "blockquote" => assert!(style.contains(&font), "{style}"),
                "a" => assert!(style.contains(email_style::LINK), "{style}"),
                "code" | "pre" => assert!(style.contains("monospace"), "{style}"),
                "img" => assert!(style.contains("max-width:100%; height:auto;"), "{style}"),
                _ => {}
            }
        }
        for tag in [
            "h1",
            "h2",
            "h3",
            "h4",
            "h5",
            "h6",
            "p",
            "em",
            "strong",
            "code",
            "a",
            "blockquote",
            "ol",
            "ul",
            "li",
            "pre",
            "hr",
            "img",
            "table",
            "th",
            "td",
            "b",
            "i",
        ] {
            assert!(seen.contains(tag), "no <{tag}> in {html}");
        }
    }

    #[test]
    fn a_posts_own_styles_give_way_to_ours() {
        let html = to_email_html(
            "<p style=\"position:fixed; top:0\" class=\"x\">Hi</p>\n\n\
             <table><tr><td style=\"width:2000px\" align=\"justify\">wide</td></tr></table>\n",
        );
        assert!(
            !html.contains("position") && !html.contains("2000px"),
            "{html}"
        );
        assert!(
            !html.contains("class=") && !html.contains("justify"),
            "{html}"
        );
        assert!(html.contains("<p style=\"margin:0 0 16px;"), "{html}");
        assert!(html.contains("<td style=\"padding:6px 10px;"), "{html}");
    }

    #[test]
    fn long_words_and_urls_may_break_and_images_shrink() {
        let url = format!("https://example.org/{}", "a".repeat(180));
        let word = "b".repeat(200);
        let html = to_email_html(&format!(
            "<{url}> and [{url}]({url}) and {word}\n\n![wide](https://example.org/wide.png)\n"
        ));
        for (tag, attributes) in start_tags(&html) {
            let style = &attributes
                .iter()
                .find(|(name, _)| name == "style")
                .unwrap()
                .1;
            match tag.as_str() {
                "p" | "a" => assert!(style.contains(email_style::WRAP), "<{tag}>: {style}"),
                "img" => assert!(style.contains("max-width:100%"), "{style}"),
                _ => {}
            }
        }
        assert_eq!(
            html.matches(&format!("href=\"{url}\"")).count(),
            2,
            "{html}"
        );
        assert!(html.contains(&word), "{html}");
    }

    #[test]
    fn tables_are_styled_with_their_alignments() {
        let html = to_email_html("| Step | Hours | Who |\n|:--|--:|:-:|\n| Plan | 4 | Ada |\n");
        for cell in [
            "<th align=\"left\" style=",
            "<th align=\"right\" style=",
            "<th align=\"center\" style=",
            "<td align=\"right\" style=",
        ] {
            assert!(html.contains(cell), "{cell} missing from {html}");
        }
        assert!(
            html.contains(">Hours</th>") && html.contains(">4</td>"),
            "{html}"
        );
        assert!(html.contains("<table style=\"display:block; max-width:100%; overflow-x:auto;"));
    }

    /// Dashes the writer did not type never appear: in prose, in code, in
    /// links; curly quotes and the ellipsis stay.
    const DASHES: &str =
        "Try `tidings send --dry-run` first, or pass --dry-run -- the flag --- as \
         \"quoted\" and it's fine...\n\n```\nkeep --force\n---\n```\n\n\
         [--help](https://example.com/--help)\n";

    #[test]
    fn dashes_stay_as_the_writer_typed_them() {
        let html = to_email_html(DASHES);
        assert!(
            !html.contains('\u{2013}') && !html.contains('\u{2014}'),
            "{html}"
        );
        for kept in [
            "tidings send --dry-run</code>",
            "pass --dry-run -- the flag --- as",
            "\u{201c}quoted\u{201d} and it\u{2019}s fine\u{2026}",
            "keep --force\n---\n",
            ">--help</a>",
            "href=\"https://example.com/--help\"",
        ] {
            assert!(html.contains(kept), "{kept} missing from {html}");
        }
    }

    const HOSTILE: &str = "Hello <script>alert('x')</script> there.\n\n\
        <iframe src=\"https://evil.example/\"></iframe>\n\n\
        <style>body { display: none }</style>\n\n\
        <p onclick=\"steal()\" onmouseover=\"steal()\">Click</p>\n\n\
        [js](javascript:alert(1)) [js2](JaVaScRiPt:alert(2)) [data](data:text/html;base64,PHNjcmlwdD4=) \
        [vb](vbscript:msgbox) <a href=\"javascript:alert(3)\">raw</a>\n\n\
        ![pixel](http://tracker.example/p.gif) <img src=x onerror=alert(4)>\n";

    #[test]
    fn raw_html_scripts_and_dangerous_urls_are_dropped() {
        let html = to_email_html(HOSTILE).to_ascii_lowercase();
        for forbidden in [
            "<script",
            "alert('x')",
            "<iframe",
            "<style",
            "display: none",
            "onclick",
            "onmouseover",
            "onerror",
            "javascript:",
            "data:",
            "vbscript:",
            "tracker.example",
        ] {
            assert!(!html.contains(forbidden), "{forbidden} in {html}");
        }
        assert!(html.contains("hello"), "{html}");
        assert!(
            html.contains(">click</p>"),
            "the text of a cleaned tag stays: {html}"
        );
        let text = to_plain_text(HOSTILE).to_ascii_lowercase();
        for forbidden in [
            "<script",
            "alert('x')",
            "<iframe",
            "javascript:",
            "data:",
            "vbscript:",
        ] {
            assert!(!text.contains(forbidden), "{forbidden} in {text}");
        }
        assert!(text.contains("hello"), "{text}");
    }

    #[test]
    fn ordinary_markdown_survives_the_cleaning() {
        let markdown = "# Title\n\nSome *emphasis*, **strength**, `code` and ~~gone~~.\n\n\
            > A quote\n\n1. one\n2. two\n\n- a [web](https://example.com/a?b=1&c=2)\n\
            - a [mail](mailto:ada@example.com)\n\n```\nfn main() {}\n```\n\n\
            ![chart](https://example.com/chart.png)\n\n| a | b |\n|---|---|\n| 1 | 2 |\n";
        let html = to_email_html(markdown);
        for kept in [
            "<h1 style=",
            ">emphasis</em>",
            ">strength</strong>",
            ">code</code>",
            "<del>gone</del>",
            "<blockquote style=",
            "<ol style=",
            "href=\"https://example.com/a?b=1&amp;c=2\"",
            "href=\"mailto:ada@example.com\"",
            "<pre style=",
            "<img src=\"https://example.com/chart.png\" alt=\"chart\" style=",
            "<table style=",
            ">2</td>",
        ] {
            assert!(html.contains(kept), "{kept} missing from {html}");
        }
        let text = to_plain_text(markdown);
        assert!(text.contains("a  b\n-  -\n1  2\n"), "{text}");
        assert!(
            text.contains("web (https://example.com/a?b=1&c=2)"),
            "{text}"
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

        /// Whatever the post says, the cleaned HTML runs nothing.
        #[test]
        fn no_input_gets_a_script_through(
            markdown in proptest::string::string_regex(
                "([a-z ]|<|>|/|=|\"|'|:|\\[|\\]|\\(|\\)|\\n|script|javascript|on[a-z]+|img|iframe|a href|src|&#[0-9]+;|\\*|#|`)*"
            ).unwrap()
        ) {
            let html = to_email_html(&markdown).to_ascii_lowercase();
            // Text escapes `<`, so any `<script` would be a tag.
            proptest::prop_assert!(!html.contains("<script"), "{}", html);
            for (name, value) in attributes(&html) {
                proptest::prop_assert!(!name.starts_with("on"), "{}", html);
                proptest::prop_assert!(!value.contains("javascript:"), "{}", html);
            }
            // The text part is prose, where `javascript:` is only a word;
            // its links are checked in the unit test above.
            let _ = to_plain_text(&markdown);
        }

        #[test]
        fn any_text_renders_without_panicking(markdown in "\\PC*") {
            let html = to_email_html(&markdown).to_ascii_lowercase();
            proptest::prop_assert!(!html.contains("<script"));
            let _ = to_plain_text(&markdown);
        }
    }

    /// Every attribute of every tag in serialised HTML.
    fn attributes(html: &str) -> Vec<(String, String)> {
        start_tags(html)
            .into_iter()
            .flat_map(|(_, attributes)| attributes)
            .collect()
    }

    /// Every start tag in serialised HTML (values are always double-quoted
    /// there, with `"` escaped), with its attributes.
    fn start_tags(html: &str) -> Vec<(String, Vec<(String, String)>)> {
        let mut found = Vec::new();
        let mut rest = html;
        while let Some(at) = rest.find('<') {
            rest = &rest[at + 1..];
            let name_end = rest
                .find(|c: char| c.is_whitespace() || c == '>')
                .unwrap_or(rest.len());
            let tag = rest[..name_end].to_owned();
            rest = &rest[name_end..];
            let mut attributes = Vec::new();
            loop {
                rest = rest.trim_start();
                if rest.is_empty() || rest.starts_with('>') || rest.starts_with("/>") {
                    break;
                }
                let end = rest
                    .find(|c: char| c == '=' || c == '>' || c.is_whitespace())
                    .unwrap_or(rest.len());
                let name = rest[..end].to_owned();
                rest = &rest[end..];
                let mut value = String::new();
                if let Some(quoted) = rest.strip_prefix("=\"") {
                    let close = quoted.find('"').unwrap_or(quoted.len());
                    value = quoted[..close].to_owned();
                    rest = &quoted[(close + 1).min(quoted.len())..];
                }
                attributes.push((name, value));
            }
            if !tag.starts_with('/') {
                found.push((tag, attributes));
            }
        }
        found
    }
}
