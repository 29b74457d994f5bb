//! A post body in Markdown becomes email-ready HTML (inline styles, since
//! many mail clients drop `<style>`) and plain text that reads like a letter.

use pulldown_cmark::{CodeBlockKind, Event, HeadingLevel, Options, Parser, Tag, TagEnd};

const TEXT_WIDTH: usize = 72;

fn parser(markdown: &str) -> Parser<'_> {
    Parser::new_ext(
        markdown,
        Options::ENABLE_STRIKETHROUGH | Options::ENABLE_SMART_PUNCTUATION,
    )
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

pub fn to_email_html(markdown: &str) -> String {
    let mut html = String::with_capacity(markdown.len() * 2);
    pulldown_cmark::html::push_html(&mut html, parser(markdown));
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
    links: Vec<String>,
    in_code_block: bool,
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
        let options = textwrap::Options::new(TEXT_WIDTH)
            .initial_indent(&block.first_prefix)
            .subsequent_indent(&block.rest_prefix)
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
            Event::Text(text) | Event::Code(text) => self.inline.push_str(&text),
            Event::SoftBreak => self.inline.push(' '),
            Event::HardBreak => self.inline.push('\n'),
            Event::Rule => {
                self.flush_paragraph();
                self.out.push_str(&"-".repeat(TEXT_WIDTH / 3));
                self.out.push_str("\n\n");
            }
            Event::Html(_) | Event::InlineHtml(_) => {}
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
            Tag::Link { dest_url, .. } => self.links.push(dest_url.to_string()),
            Tag::Image { dest_url, .. } => {
                self.inline.push_str("[image: ");
                self.links.push(dest_url.to_string());
            }
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
                if let Some(url) = self.links.pop() {
                    if !self.inline.ends_with(&url) {
                        self.inline.push_str(&format!(" ({url})"));
                    }
                }
            }
            TagEnd::Image => {
                if let Some(url) = self.links.pop() {
                    self.inline.push_str(&format!("] ({url})"));
                }
            }
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
}
