//! A post body in Markdown becomes email-ready HTML (inline styles, since
//! many mail clients drop `<style>`) and plain text that reads like a letter.
//!
//! Markdown lets raw HTML through, and the preview is served from the
//! public origin, so the HTML is cleaned against an allowlist (ammonia)
//! before the styles go in: no scripts, frames, styles, event handlers or
//! `javascript:`/`data:` URLs, whatever the post says.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use pulldown_cmark::{CodeBlockKind, Event, HeadingLevel, Options, Parser, Tag, TagEnd};

const TEXT_WIDTH: usize = 72;

fn parser(markdown: &str) -> Parser<'_> {
    Parser::new_ext(
        markdown,
        Options::ENABLE_STRIKETHROUGH | Options::ENABLE_SMART_PUNCTUATION | Options::ENABLE_TABLES,
    )
}

/// Where a link in an email may lead: the web and mail, nothing that runs.
const LINK_SCHEMES: [&str; 3] = ["http", "https", "mailto"];

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
            _ => Some(Cow::Borrowed(value)),
        });
    builder
});

/// Whether `url` is absolute with one of `schemes` (case-insensitive).
fn has_scheme(url: &str, schemes: &[&str]) -> bool {
    url.trim()
        .split_once(':')
        .is_some_and(|(scheme, _)| schemes.iter().any(|s| s.eq_ignore_ascii_case(scheme)))
}

/// The sanitised HTML of `markdown`, before styling.
pub fn to_clean_html(markdown: &str) -> String {
    let mut html = String::with_capacity(markdown.len() * 2);
    pulldown_cmark::html::push_html(&mut html, parser(markdown));
    SANITISER.clean(&html).to_string()
}

/// Inline styles per element, applied to the HTML pulldown-cmark writes.
const INLINE_STYLES: [(&str, &str); 11] = [
    ("<p>", "<p style=\"margin:0 0 16px 0;font-size:16px;line-height:1.6;color:#222222;\">"),
    ("<h1>", "<h1 style=\"margin:24px 0 12px 0;font-size:24px;line-height:1.3;color:#111111;\">"),
    ("<h2>", "<h2 style=\"margin:24px 0 12px 0;font-size:20px;line-height:1.3;color:#111111;\">"),
    ("<h3>", "<h3 style=\"margin:20px 0 10px 0;font-size:17px;line-height:1.3;color:#111111;\">"),
    ("<ul>", "<ul style=\"margin:0 0 16px 0;padding-left:24px;\">"),
    ("<ol>", "<ol style=\"margin:0 0 16px 0;padding-left:24px;\">"),
    ("<li>", "<li style=\"margin:0 0 8px 0;font-size:16px;line-height:1.6;color:#222222;\">"),
    ("<blockquote>", "<blockquote style=\"margin:0 0 16px 0;padding:0 0 0 16px;border-left:3px solid #cccccc;color:#555555;\">"),
    ("<a href=", "<a style=\"color:#1a5fb4;text-decoration:underline;\" href="),
    ("<pre>", "<pre style=\"margin:0 0 16px 0;padding:12px;background:#f4f4f4;font-size:14px;white-space:pre-wrap;\">"),
    ("<hr />", "<hr style=\"border:0;border-top:1px solid #dddddd;margin:24px 0;\" />"),
];

/// Sanitised, then styled: the styles are ours, added after the cleaning.
pub fn to_email_html(markdown: &str) -> String {
    let mut html = to_clean_html(markdown);
    for (tag, styled) in INLINE_STYLES {
        html = html.replace(tag, styled);
    }
    html
}

/// One block of text being collected, with how to prefix its lines.
struct Block {
    first_prefix: String,
    rest_prefix: String,
}

pub fn to_plain_text(markdown: &str) -> String {
    let mut writer = TextWriter::default();
    for event in parser(markdown) {
        writer.event(event);
    }
    writer.finish()
}

#[derive(Default)]
struct TextWriter {
    out: String,
    inline: String,
    /// Bullets or numbers of the lists we are inside.
    lists: Vec<Option<u64>>,
    quote_depth: usize,
    pending_item_marker: Option<String>,
    heading: Option<HeadingLevel>,
    /// The URLs of the links we are inside; `None` for one not shown.
    links: Vec<Option<String>>,
    in_code_block: bool,
    /// Inside inline `<script>` or `<style>`: its text is not prose.
    in_raw_code: bool,
    cells: Vec<String>,
}

/// A link's URL as the text part shows it: only one a reader may follow.
fn shown_url(url: &str) -> Option<String> {
    has_scheme(url, &LINK_SCHEMES)
        .then(|| url.trim().to_owned())
        .filter(|url| !url.chars().any(char::is_control))
}

impl TextWriter {
    fn indent(&self) -> String {
        let quote = "> ".repeat(self.quote_depth);
        let list = "   ".repeat(self.lists.len().saturating_sub(1));
        format!("{quote}{list}")
    }

    fn block(&mut self) -> Block {
        let base = self.indent();
        match self.pending_item_marker.take() {
            Some(marker) => Block {
                first_prefix: format!("{base}{marker}"),
                rest_prefix: format!("{base}{}", " ".repeat(marker.len())),
            },
            None if !self.lists.is_empty() => Block {
                first_prefix: format!("{base}   "),
                rest_prefix: format!("{base}   "),
            },
            None => Block {
                first_prefix: base.clone(),
                rest_prefix: base,
            },
        }
    }

    fn flush_paragraph(&mut self) {
        let text = std::mem::take(&mut self.inline);
        let text = text.trim();
        if text.is_empty() {
            return;
        }
        let block = self.block();
        // Lines break at spaces only: Unicode's rules would break a URL
        // after `/` or `?`, and a split link is a dead one in a text-only
        // reader. A URL wider than a line gets a line of its own.
        let options = textwrap::Options::new(TEXT_WIDTH)
            .initial_indent(&block.first_prefix)
            .subsequent_indent(&block.rest_prefix)
            .word_separator(textwrap::WordSeparator::AsciiSpace)
            .word_splitter(textwrap::WordSplitter::NoHyphenation)
            .break_words(false);
        for line in text.split('\n') {
            self.out.push_str(&textwrap::fill(line.trim(), &options));
            self.out.push('\n');
        }
        if self.lists.is_empty() {
            self.out.push('\n');
        }
    }

    fn event(&mut self, event: Event<'_>) {
        match event {
            Event::Start(tag) => self.start(tag),
            Event::End(tag) => self.end(tag),
            Event::Text(text) if self.in_code_block => {
                let prefix = format!("{}    ", self.indent());
                for line in text.lines() {
                    self.out.push_str(&prefix);
                    self.out.push_str(line);
                    self.out.push('\n');
                }
            }
            Event::Text(_) if self.in_raw_code => {}
            Event::Text(text) | Event::Code(text) => self.inline.push_str(&text),
            Event::SoftBreak => self.inline.push(' '),
            Event::HardBreak => self.inline.push('\n'),
            Event::Rule => {
                self.flush_paragraph();
                self.out.push_str(&"-".repeat(TEXT_WIDTH / 3));
                self.out.push_str("\n\n");
            }
            Event::InlineHtml(html) => {
                let tag = html.trim_start().to_ascii_lowercase();
                if tag.starts_with("<script") || tag.starts_with("<style") {
                    self.in_raw_code = true;
                } else if tag.starts_with("</script") || tag.starts_with("</style") {
                    self.in_raw_code = false;
                }
            }
            Event::Html(_) => {}
            Event::FootnoteReference(name) => self.inline.push_str(&format!("[{name}]")),
            Event::TaskListMarker(done) => self.inline.push_str(if done { "[x] " } else { "[ ] " }),
            Event::InlineMath(text) | Event::DisplayMath(text) => self.inline.push_str(&text),
        }
    }

    fn start(&mut self, tag: Tag<'_>) {
        match tag {
            Tag::Heading { level, .. } => {
                self.flush_paragraph();
                self.heading = Some(level);
            }
            Tag::List(start) => {
                self.flush_paragraph();
                self.lists.push(start);
            }
            Tag::Item => {
                self.flush_paragraph();
                let marker = match self.lists.last_mut() {
                    Some(Some(number)) => {
                        let marker = format!("{number}. ");
                        *number += 1;
                        marker
                    }
                    _ => "- ".to_owned(),
                };
                self.pending_item_marker = Some(marker);
            }
            Tag::BlockQuote(_) => {
                self.flush_paragraph();
                self.quote_depth += 1;
            }
            Tag::CodeBlock(kind) => {
                self.flush_paragraph();
                self.in_code_block = true;
                if let CodeBlockKind::Fenced(_) = kind {}
            }
            Tag::Link { dest_url, .. } => self.links.push(shown_url(&dest_url)),
            Tag::Image { dest_url, .. } => {
                self.inline.push_str("[image: ");
                self.links.push(shown_url(&dest_url));
            }
            Tag::Table(_) => self.flush_paragraph(),
            _ => {}
        }
    }

    fn end(&mut self, tag: TagEnd) {
        match tag {
            TagEnd::Paragraph => self.flush_paragraph(),
            TagEnd::Heading(_) => {
                let level = self.heading.take();
                let title = std::mem::take(&mut self.inline).trim().to_owned();
                let underline = match level {
                    Some(HeadingLevel::H1) => Some('='),
                    Some(HeadingLevel::H2) => Some('-'),
                    _ => None,
                };
                self.out.push_str(&title);
                self.out.push('\n');
                if let Some(mark) = underline {
                    let width = textwrap::core::display_width(&title).min(TEXT_WIDTH);
                    self.out.push_str(&mark.to_string().repeat(width));
                    self.out.push('\n');
                }
                self.out.push('\n');
            }
            TagEnd::Item => self.flush_paragraph(),
            TagEnd::List(_) => {
                self.flush_paragraph();
                self.lists.pop();
                if self.lists.is_empty() {
                    self.out.push('\n');
                }
            }
            TagEnd::BlockQuote(_) => {
                self.flush_paragraph();
                self.quote_depth = self.quote_depth.saturating_sub(1);
            }
            TagEnd::CodeBlock => {
                self.in_code_block = false;
                self.out.push('\n');
            }
            TagEnd::Link => {
                if let Some(Some(url)) = self.links.pop() {
                    if !self.inline.ends_with(&url) {
                        self.inline.push_str(&format!(" ({url})"));
                    }
                }
            }
            TagEnd::Image => match self.links.pop() {
                Some(Some(url)) => self.inline.push_str(&format!("] ({url})")),
                _ => self.inline.push(']'),
            },
            TagEnd::TableCell => {
                let cell = std::mem::take(&mut self.inline).trim().to_owned();
                self.cells.push(cell);
            }
            TagEnd::TableHead | TagEnd::TableRow => {
                let row = std::mem::take(&mut self.cells).join(" | ");
                self.out.push_str(&format!("{}{row}\n", self.indent()));
            }
            TagEnd::Table => self.out.push('\n'),
            _ => {}
        }
    }

    fn finish(mut self) -> String {
        self.flush_paragraph();
        let trimmed = self.out.trim_end();
        format!("{trimmed}\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "Intro with **bold** and a [link](https://example.com/x).\n\n\
        ## Signs you might be here\n\n- First sign\n- Second sign that is long enough to need wrapping \
        because it keeps going and going past the line width\n\n## Try this week\n\n\
        1. Do one thing\n2. Do another\n";

    #[test]
    fn html_has_inline_styles_and_no_bare_block_tags() {
        let html = to_email_html(SAMPLE);
        assert!(html.contains("<h2 style="));
        assert!(html.contains("<li style="));
        assert!(html.contains(
            "<a style=\"color:#1a5fb4;text-decoration:underline;\" href=\"https://example.com/x\""
        ));
        assert!(!html.contains("<p>") && !html.contains("<ul>") && !html.contains("<ol>"));
    }

    #[test]
    fn links_in_the_text_part_are_never_split() {
        let long = "https://example.org/guides/partnership-agreements/who-decides-what?\
                    utm_source=tidings&utm_medium=email&utm_campaign=week-3";
        let short = "https://example.org/a-short-guide?page=2";
        let markdown = format!(
            "Read the [guide]({long}) before the meeting, and the [short one]({short}) after \
             it, which takes a few minutes and saves a few arguments later on."
        );
        let text = to_plain_text(&markdown);
        for url in [long, short] {
            let line = text
                .lines()
                .find(|line| line.contains(url))
                .unwrap_or_else(|| panic!("{url} split in:\n{text}"));
            if url.len() > TEXT_WIDTH {
                let alone = line.trim().trim_start_matches('(').trim_end_matches(')');
                assert_eq!(alone, url, "a long URL has a line of its own:\n{text}");
            }
        }
    }

    #[test]
    fn text_reads_like_a_letter() {
        let text = to_plain_text(SAMPLE);
        assert!(
            text.contains("Intro with bold and a link (https://example.com/x)."),
            "{text}"
        );
        assert!(
            text.contains("Signs you might be here\n-----------------------\n"),
            "{text}"
        );
        assert!(text.contains("- First sign\n"), "{text}");
        assert!(text.contains("1. Do one thing\n2. Do another\n"), "{text}");
        assert!(
            !text.contains('<') && !text.contains("**") && !text.contains("##"),
            "{text}"
        );
        assert!(
            text.lines().all(|line| line.chars().count() <= TEXT_WIDTH),
            "{text}"
        );
        // Wrapped list items keep a hanging indent under their bullet.
        assert!(text.contains("\n  "), "{text}");
    }

    #[test]
    fn shipped_tips_render_cleanly_as_text() {
        for post in crate::domain::post::first_series() {
            let text = to_plain_text(&post.body_markdown);
            assert!(text.contains("Try this week\n-------------"), "{text}");
            assert!(!text.contains("**"), "{text}");
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
            "<em>emphasis</em>",
            "<strong>strength</strong>",
            "<code>code</code>",
            "<del>gone</del>",
            "<blockquote style=",
            "<ol style=",
            "href=\"https://example.com/a?b=1&amp;c=2\"",
            "href=\"mailto:ada@example.com\"",
            "<pre style=",
            "<img src=\"https://example.com/chart.png\" alt=\"chart\">",
            "<table>",
            "<td>2</td>",
        ] {
            assert!(html.contains(kept), "{kept} missing from {html}");
        }
        let text = to_plain_text(markdown);
        assert!(text.contains("a | b\n1 | 2\n"), "{text}");
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

    /// Every attribute of every tag in serialised HTML (values are always
    /// double-quoted there, with `"` escaped).
    fn attributes(html: &str) -> Vec<(String, String)> {
        let mut found = Vec::new();
        let mut rest = html;
        while let Some(at) = rest.find('<') {
            rest = &rest[at + 1..];
            let name_end = rest
                .find(|c: char| c.is_whitespace() || c == '>')
                .unwrap_or(rest.len());
            rest = &rest[name_end..];
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
                found.push((name, value));
            }
        }
        found
    }
}
