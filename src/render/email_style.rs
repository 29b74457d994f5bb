//! How a post's Markdown looks in an email: one inline style per element,
//! in the fonts and colours of the built-in email layout
//! (templates/email_layout.html.hbs). Inline on every element, because
//! Outlook and some webmail drop `<style>` blocks, and Outlook does not
//! carry a cell's font into lists and tables.

/// The layout's body font.
pub const FONT: &str = "Arial, Helvetica, sans-serif";
const MONO: &str = "Menlo, Consolas, 'Courier New', monospace";
/// The layout's body text colour.
pub const TEXT: &str = "#1a1a1a";
const MUTED: &str = "#4a5260";
/// The layout's link and button colour.
pub const LINK: &str = "#0b57d0";
const RULE: &str = "#d0d5dd";
/// Behind code and table headings.
const TINT: &str = "#f1f3f5";
/// A long word or URL breaks where it must instead of widening the email
/// past a phone's screen. `anywhere` also lets a table cell shrink below
/// its longest word; `word-break` is for clients without `anywhere`.
pub const WRAP: &str = "overflow-wrap:anywhere; word-break:break-word;";

/// The style of each element Markdown writes, by tag name.
pub fn element_styles() -> Vec<(&'static str, String)> {
    let prose = format!("font-family:{FONT}; font-size:16px; line-height:26px; color:{TEXT};");
    let heading = |size: u32, line: u32, top: u32| {
        format!(
            "margin:{top}px 0 12px; font-family:{FONT}; font-size:{size}px; \
             line-height:{line}px; font-weight:bold; color:{TEXT}; {WRAP}"
        )
    };
    // Cells keep their words whole, not inheriting the layout's WRAP,
    // which would squeeze a short column to a letter a line beside a long
    // one; a table wider than the screen scrolls sideways inside itself.
    // A link in a cell still breaks.
    let cell = format!(
        "padding:6px 10px; border:1px solid {RULE}; vertical-align:top; \
         font-family:{FONT}; color:{TEXT}; overflow-wrap:normal; word-break:normal;"
    );
    vec![
        ("p", format!("margin:0 0 16px; {prose} {WRAP}")),
        ("h1", heading(24, 32, 24)),
        ("h2", heading(20, 28, 24)),
        ("h3", heading(18, 26, 20)),
        ("h4", heading(16, 24, 20)),
        ("h5", heading(16, 24, 16)),
        ("h6", heading(14, 22, 16)),
        ("ul", format!("margin:0 0 16px; padding-left:24px; {prose}")),
        ("ol", format!("margin:0 0 16px; padding-left:24px; {prose}")),
        ("li", format!("margin:0 0 8px; {prose} {WRAP}")),
        (
            "blockquote",
            format!(
                "margin:0 0 16px; padding:0 0 0 16px; border-left:3px solid {RULE}; \
                 font-family:{FONT}; color:{MUTED};"
            ),
        ),
        (
            "a",
            format!("color:{LINK}; text-decoration:underline; {WRAP}"),
        ),
        (
            "code",
            format!("font-family:{MONO}; font-size:14px; background-color:{TINT}; color:{TEXT};"),
        ),
        (
            "pre",
            format!(
                "margin:0 0 16px; padding:12px; background-color:{TINT}; font-family:{MONO}; \
                 font-size:14px; line-height:20px; color:{TEXT}; white-space:pre-wrap; {WRAP}"
            ),
        ),
        // Scrolls sideways inside itself when wider than the screen (the
        // layout's fixed table keeps it from widening the email).
        (
            "table",
            format!(
                "display:block; max-width:100%; overflow-x:auto; margin:0 0 16px; \
                 border-collapse:collapse; font-family:{FONT}; font-size:14px; \
                 line-height:20px; color:{TEXT};"
            ),
        ),
        (
            "th",
            format!("{cell} font-weight:bold; background-color:{TINT};"),
        ),
        ("td", cell),
        (
            "hr",
            format!("margin:24px 0; height:0; border:0; border-top:1px solid {RULE};"),
        ),
        // Never wider than the email, and never stretched out of shape.
        ("img", "max-width:100%; height:auto; border:0;".to_owned()),
        ("strong", "font-weight:bold;".to_owned()),
        ("b", "font-weight:bold;".to_owned()),
        ("em", "font-style:italic;".to_owned()),
        ("i", "font-style:italic;".to_owned()),
    ]
}
