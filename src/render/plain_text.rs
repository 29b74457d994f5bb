//! A post's Markdown as plain text that reads like a letter: wrapped at 72
//! columns between words only (never inside a URL), lists with hanging
//! indents, links followed by their URL, tables as aligned columns.

use pulldown_cmark::{Alignment, CodeBlockKind, Event, HeadingLevel, Tag, TagEnd};

use super::markdown::{events, has_scheme, LINK_SCHEMES};

const TEXT_WIDTH: usize = 72;

/// One block of text being collected, with how to prefix its lines.
struct Block {
    first_prefix: String,
    rest_prefix: String,
}

pub fn to_plain_text(markdown: &str) -> String {
    write(markdown, TextWriter::default())
}

/// The words alone, without the URLs links and images point to: what a
/// preheader shows beside the subject.
pub fn to_prose(markdown: &str) -> String {
    let writer = TextWriter {
        without_urls: true,
        ..TextWriter::default()
    };
    write(markdown, writer)
}

fn write(markdown: &str, mut writer: TextWriter) -> String {
    for event in events(markdown) {
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
    table: Option<TextTable>,
    without_urls: bool,
}

/// A link's URL as the text part shows it: only one a reader may follow.
fn shown_url(url: &str) -> Option<String> {
    has_scheme(url, &LINK_SCHEMES)
        .then(|| url.trim().to_owned())
        .filter(|url| !url.chars().any(char::is_control))
}

impl TextWriter {
    fn shown_url(&self, url: &str) -> Option<String> {
        shown_url(url).filter(|_| !self.without_urls)
    }

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
        let options = wrap_options(&block.first_prefix, &block.rest_prefix);
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
            Tag::Link { dest_url, .. } => self.links.push(self.shown_url(&dest_url)),
            Tag::Image { dest_url, .. } => {
                self.inline.push_str("[image: ");
                self.links.push(self.shown_url(&dest_url));
            }
            Tag::Table(alignments) => {
                self.flush_paragraph();
                self.table = Some(TextTable::new(alignments));
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
                if let Some(table) = &mut self.table {
                    table.row.push(cell);
                }
            }
            TagEnd::TableHead | TagEnd::TableRow => {
                if let Some(table) = &mut self.table {
                    table.end_row();
                }
            }
            TagEnd::Table => {
                if let Some(table) = self.table.take() {
                    let indent = self.indent();
                    self.out.push_str(&table.render(&indent));
                    self.out.push('\n');
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

/// Lines break at spaces only: Unicode's rules would break a URL after `/`
/// or `?`, and a split link is a dead one in a text-only reader. A URL
/// wider than a line gets a line of its own.
fn wrap_options<'a>(first_prefix: &'a str, rest_prefix: &'a str) -> textwrap::Options<'a> {
    textwrap::Options::new(TEXT_WIDTH)
        .initial_indent(first_prefix)
        .subsequent_indent(rest_prefix)
        .word_separator(textwrap::WordSeparator::AsciiSpace)
        .word_splitter(textwrap::WordSplitter::NoHyphenation)
        .break_words(false)
}

/// A Markdown table being collected: the heading row first, then the body.
struct TextTable {
    alignments: Vec<Alignment>,
    rows: Vec<Vec<String>>,
    row: Vec<String>,
}

/// Between two columns of a text table.
const GUTTER: &str = "  ";

impl TextTable {
    fn new(alignments: Vec<Alignment>) -> Self {
        Self {
            alignments,
            rows: Vec::new(),
            row: Vec::new(),
        }
    }

    fn end_row(&mut self) {
        self.rows.push(std::mem::take(&mut self.row));
    }

    fn column_widths(&self) -> Vec<usize> {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        (0..columns)
            .map(|column| {
                self.rows
                    .iter()
                    .filter_map(|row| row.get(column))
                    .map(|cell| textwrap::core::display_width(cell))
                    .max()
                    .unwrap_or(0)
            })
            .collect()
    }

    /// Aligned columns under a ruled heading when they fit in a line;
    /// otherwise each row as `Heading: cell` lines, which wrap like prose.
    fn render(&self, indent: &str) -> String {
        let widths = self.column_widths();
        let width = indent.len()
            + widths.iter().sum::<usize>()
            + GUTTER.len() * widths.len().saturating_sub(1);
        if width <= TEXT_WIDTH {
            self.columns(indent, &widths)
        } else {
            self.records(indent)
        }
    }

    fn columns(&self, indent: &str, widths: &[usize]) -> String {
        let mut out = String::new();
        for (index, row) in self.rows.iter().enumerate() {
            let cells: Vec<String> = widths
                .iter()
                .enumerate()
                .map(|(column, &width)| {
                    let cell = row.get(column).map(String::as_str).unwrap_or_default();
                    let pad = " ".repeat(width - textwrap::core::display_width(cell));
                    match self.alignments.get(column) {
                        Some(Alignment::Right) => format!("{pad}{cell}"),
                        Some(Alignment::Center) => {
                            let (left, right) = pad.split_at(pad.len() / 2);
                            format!("{left}{cell}{right}")
                        }
                        _ => format!("{cell}{pad}"),
                    }
                })
                .collect();
            out.push_str(format!("{indent}{}", cells.join(GUTTER)).trim_end());
            out.push('\n');
            if index == 0 {
                let rules: Vec<String> = widths.iter().map(|&width| "-".repeat(width)).collect();
                out.push_str(&format!("{indent}{}\n", rules.join(GUTTER)));
            }
        }
        out
    }

    fn records(&self, indent: &str) -> String {
        let Some((heading, body)) = self.rows.split_first() else {
            return String::new();
        };
        let rest = format!("{indent}  ");
        let options = wrap_options(indent, &rest);
        let mut out = String::new();
        for row in body {
            for (column, cell) in row.iter().enumerate() {
                let line = match heading.get(column).filter(|name| !name.is_empty()) {
                    Some(name) => format!("{name}: {cell}"),
                    None => cell.clone(),
                };
                out.push_str(&textwrap::fill(&line, &options));
                out.push('\n');
            }
            out.push('\n');
        }
        out.truncate(out.trim_end().len() + 1);
        out
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

    #[test]
    fn prose_keeps_the_words_of_links_without_their_urls() {
        let prose = to_prose("Start with [the guide](https://example.org/guide?utm=1) and ![a map](https://example.org/map.png).");
        assert!(
            prose.contains("Start with the guide and [image: a map]."),
            "{prose}"
        );
        assert!(!prose.contains("https://"), "{prose}");
    }

    #[test]
    fn dashes_in_the_text_part_are_as_typed() {
        let text = to_plain_text(
            "Pass --dry-run -- the flag --- \"first\".\n\n```\nkeep --force\n---\n```\n",
        );
        assert!(
            text.contains("Pass --dry-run -- the flag --- \u{201c}first\u{201d}."),
            "{text}"
        );
        assert!(text.contains("    keep --force\n    ---\n"), "{text}");
        assert!(
            !text.contains('\u{2013}') && !text.contains('\u{2014}'),
            "{text}"
        );
    }

    #[test]
    fn a_table_is_aligned_columns_under_its_heading() {
        let text = to_plain_text(
            "Before.\n\n| Task | Hours | Owner |\n|:--|--:|:-:|\n\
             | Write the purpose | 2 | Ada |\n| Ask members | 10 | Grace Hopper |\n\nAfter.\n",
        );
        assert!(
            text.contains(
                "Before.\n\n\
                 Task               Hours     Owner\n\
                 -----------------  -----  ------------\n\
                 Write the purpose      2      Ada\n\
                 Ask members           10  Grace Hopper\n\nAfter.\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_table_too_wide_for_a_line_becomes_one_record_per_row() {
        let text = to_plain_text(
            "| Task | What good looks like |\n|---|---|\n\
             | Purpose | One sentence of under 25 words that three members can repeat back \
             in their own words |\n| Roles | A [chart](https://example.com/roles) |\n",
        );
        assert!(
            text.contains(
                "Task: Purpose\n\
                 What good looks like: One sentence of under 25 words that three members\n  \
                 can repeat back in their own words\n\n\
                 Task: Roles\n\
                 What good looks like: A chart (https://example.com/roles)\n"
            ),
            "{text}"
        );
        assert!(
            text.lines().all(|line| line.chars().count() <= TEXT_WIDTH),
            "{text}"
        );
    }
}
