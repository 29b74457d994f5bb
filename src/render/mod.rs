//! Rendering: Handlebars templates for pages and emails, and Markdown posts
//! turned into email HTML and readable plain text.

use std::path::Path;

use handlebars::Handlebars;
use serde::Serialize;
use serde_json::{json, Value};

use crate::config::NewsletterSettings;

pub mod admin;
mod email_style;
pub mod markdown;
mod plain_text;

/// Every template we ship, by registered name. `templates.dir` may override
/// any of them with a file of the same name plus `.hbs`.
const BUILT_IN: [(&str, &str); 19] = [
    (
        "layout.html",
        include_str!("../../templates/layout.html.hbs"),
    ),
    (
        "signup.html",
        include_str!("../../templates/signup.html.hbs"),
    ),
    (
        "subscribed.html",
        include_str!("../../templates/subscribed.html.hbs"),
    ),
    (
        "confirm_page.html",
        include_str!("../../templates/confirm_page.html.hbs"),
    ),
    (
        "confirmed.html",
        include_str!("../../templates/confirmed.html.hbs"),
    ),
    (
        "unsubscribe.html",
        include_str!("../../templates/unsubscribe.html.hbs"),
    ),
    (
        "unsubscribed.html",
        include_str!("../../templates/unsubscribed.html.hbs"),
    ),
    ("error.html", include_str!("../../templates/error.html.hbs")),
    (
        "email_field.html",
        include_str!("../../templates/email_field.html.hbs"),
    ),
    (
        "unsubscribe_by_email.html",
        include_str!("../../templates/unsubscribe_by_email.html.hbs"),
    ),
    (
        "unsubscribe_requested.html",
        include_str!("../../templates/unsubscribe_requested.html.hbs"),
    ),
    (
        "unsubscribe_link.html",
        include_str!("../../templates/unsubscribe_link.html.hbs"),
    ),
    (
        "unsubscribe_link.txt",
        include_str!("../../templates/unsubscribe_link.txt.hbs"),
    ),
    (
        "email_layout.html",
        include_str!("../../templates/email_layout.html.hbs"),
    ),
    (
        "email_layout.txt",
        include_str!("../../templates/email_layout.txt.hbs"),
    ),
    (
        "confirm.html",
        include_str!("../../templates/confirm.html.hbs"),
    ),
    (
        "confirm.txt",
        include_str!("../../templates/confirm.txt.hbs"),
    ),
    ("issue.html", include_str!("../../templates/issue.html.hbs")),
    ("issue.txt", include_str!("../../templates/issue.txt.hbs")),
];

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("template {name}: {source}")]
    Template {
        name: String,
        #[source]
        source: Box<handlebars::TemplateError>,
    },
    #[error("template {name}: cannot read {path}: {source}")]
    Read {
        name: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("template {name} failed to render: {source}")]
    Render {
        name: String,
        #[source]
        source: Box<handlebars::RenderError>,
    },
}

/// Web pages rendered from templates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    Signup,
    Subscribed,
    /// The button behind a confirmation link.
    Confirm,
    Confirmed,
    Unsubscribe,
    Unsubscribed,
    /// The form that emails an unsubscribe link, also shown for a broken one.
    UnsubscribeByEmail,
    /// Its answer, the same for any address.
    UnsubscribeRequested,
    Error,
}

impl Page {
    const ALL: [Page; 9] = [
        Page::Signup,
        Page::Subscribed,
        Page::Confirm,
        Page::Confirmed,
        Page::Unsubscribe,
        Page::Unsubscribed,
        Page::UnsubscribeByEmail,
        Page::UnsubscribeRequested,
        Page::Error,
    ];

    fn template(self) -> &'static str {
        match self {
            Page::Signup => "signup.html",
            Page::Subscribed => "subscribed.html",
            Page::Confirm => "confirm_page.html",
            Page::Confirmed => "confirmed.html",
            Page::Unsubscribe => "unsubscribe.html",
            Page::Unsubscribed => "unsubscribed.html",
            Page::UnsubscribeByEmail => "unsubscribe_by_email.html",
            Page::UnsubscribeRequested => "unsubscribe_requested.html",
            Page::Error => "error.html",
        }
    }
}

/// Emails rendered as an HTML and a text part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmailKind {
    Confirm,
    Issue,
    /// A reader's unsubscribe link, asked for by address.
    UnsubscribeLink,
}

impl EmailKind {
    const ALL: [EmailKind; 3] = [
        EmailKind::Confirm,
        EmailKind::Issue,
        EmailKind::UnsubscribeLink,
    ];

    fn templates(self) -> (&'static str, &'static str) {
        match self {
            EmailKind::Confirm => ("confirm.html", "confirm.txt"),
            EmailKind::Issue => ("issue.html", "issue.txt"),
            EmailKind::UnsubscribeLink => ("unsubscribe_link.html", "unsubscribe_link.txt"),
        }
    }
}

pub struct RenderedEmail {
    pub html: String,
    pub text: String,
}

pub struct Templates {
    html: Handlebars<'static>,
    text: Handlebars<'static>,
    newsletter: Value,
}

impl Templates {
    /// Compiles the built-in templates, overridden file by file from `dir`,
    /// then renders each once with sample data, so a broken template stops
    /// the daemon at start instead of in the middle of a send.
    pub fn load(dir: &Path, newsletter: &NewsletterSettings) -> Result<Self, RenderError> {
        let mut html = Handlebars::new();
        let mut text = Handlebars::new();
        html.set_strict_mode(true);
        text.set_strict_mode(true);
        text.register_escape_fn(handlebars::no_escape);
        for (name, built_in) in BUILT_IN {
            let path = dir.join(format!("{name}.hbs"));
            let source = if path.is_file() {
                std::fs::read_to_string(&path).map_err(|source| RenderError::Read {
                    name: name.to_owned(),
                    path: path.display().to_string(),
                    source,
                })?
            } else {
                built_in.to_owned()
            };
            let registry = if name.ends_with(".txt") {
                &mut text
            } else {
                &mut html
            };
            registry
                .register_template_string(name, source)
                .map_err(|source| RenderError::Template {
                    name: format!("{name}.hbs"),
                    source: Box::new(source),
                })?;
        }
        let templates = Self {
            html,
            text,
            newsletter: json!({
                "name": newsletter.name,
                "base_url": newsletter.base_url,
                "postal_address": newsletter.postal_address,
                // For readers to add to their contacts.
                "from_address": newsletter.from.email.to_string(),
            }),
        };
        templates.check()?;
        Ok(templates)
    }

    fn check(&self) -> Result<(), RenderError> {
        for page in Page::ALL {
            self.page(page, sample_context())?;
        }
        for kind in EmailKind::ALL {
            self.email(kind, sample_context())?;
        }
        Ok(())
    }

    fn with_newsletter(&self, context: Value) -> Value {
        let mut context = context;
        if let Value::Object(map) = &mut context {
            map.insert("newsletter".into(), self.newsletter.clone());
        }
        context
    }

    pub fn page(&self, page: Page, context: impl Serialize) -> Result<String, RenderError> {
        let context = self.with_newsletter(serde_json::to_value(context).unwrap_or(Value::Null));
        render(&self.html, page.template(), &context)
    }

    pub fn email(
        &self,
        kind: EmailKind,
        context: impl Serialize,
    ) -> Result<RenderedEmail, RenderError> {
        let context = self.with_newsletter(serde_json::to_value(context).unwrap_or(Value::Null));
        let (html_name, text_name) = kind.templates();
        Ok(RenderedEmail {
            html: render(&self.html, html_name, &context)?,
            text: render(&self.text, text_name, &context)?,
        })
    }
}

fn render(
    registry: &Handlebars<'static>,
    name: &str,
    context: &Value,
) -> Result<String, RenderError> {
    registry
        .render(name, context)
        .map_err(|source| RenderError::Render {
            name: format!("{name}.hbs"),
            source: Box::new(source),
        })
}

/// Every variable any shipped template may use, so strict mode catches a
/// template that asks for something we never provide.
fn sample_context() -> Value {
    json!({
        "title": "Sample",
        "error": "Sample error",
        "email_error": "Sample error",
        "name_error": "Sample error",
        "address": "r•••r@example.com",
        "link_url": "http://example.com/unsubscribe?token=t",
        "email": "reader@example.com",
        "name": "Reader",
        "token": "token",
        "message": "Sample message",
        "show_subscribe_link": true,
        "confirm_url": "http://example.com/confirm?token=t",
        "expires_hours": 72,
        "subject": "Sample subject",
        "issue_number": 1,
        "body_html": "<p>Body</p>",
        "body_text": "Body",
        "unsubscribe_url": "http://example.com/unsubscribe?token=t",
        "preheader": "Sample preheader",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn newsletter() -> NewsletterSettings {
        crate::config::defaults().newsletter
    }

    #[test]
    fn built_in_templates_compile_and_render() {
        let templates = Templates::load(Path::new("/nonexistent"), &newsletter()).unwrap();
        let page = templates
            .page(Page::Signup, json!({"title": "Subscribe"}))
            .unwrap();
        assert!(page.contains("name=\"website\""), "honeypot field");
        assert!(page.contains("10 partnership pitfalls"), "the pitch");
        assert!(page.contains(">Subscribe</button>"), "a short button label");
        let email = templates
            .email(
                EmailKind::Confirm,
                json!({"title": "Confirm", "confirm_url": "http://x/confirm?token=abc", "expires_hours": 72}),
            )
            .unwrap();
        assert!(email.text.contains("http://x/confirm?token=abc"));
        assert!(
            !email.text.contains("&#x3D;"),
            "text part is not HTML-escaped"
        );
    }

    /// Markdown's styles and the layout's are kept apart (one in Rust,
    /// one in the template); this keeps them the same.
    #[test]
    fn the_layout_and_the_markdown_share_fonts_and_colours() {
        let layout = BUILT_IN
            .iter()
            .find(|(name, _)| *name == "email_layout.html")
            .unwrap()
            .1;
        let content = layout
            .lines()
            .find(|line| line.contains("padding:28px 24px"))
            .expect("the content cell");
        for style in [
            format!("font-family:{};", email_style::FONT),
            format!("color:{};", email_style::TEXT),
            email_style::WRAP.to_owned(),
        ] {
            assert!(content.contains(&style), "{style} not in {content}");
        }
        let confirm = BUILT_IN
            .iter()
            .find(|(name, _)| *name == "confirm.html")
            .unwrap()
            .1;
        assert!(confirm.contains(&format!("background-color:{};", email_style::LINK)));
    }

    #[test]
    fn a_broken_override_is_caught_at_load() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("issue.html.hbs"), "{{#if subject}}unclosed").unwrap();
        let error = Templates::load(dir.path(), &newsletter())
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("issue.html"), "{error}");
        std::fs::write(dir.path().join("issue.html.hbs"), "{{no_such_variable}}").unwrap();
        let error = Templates::load(dir.path(), &newsletter())
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("issue.html"), "{error}");
    }

    #[test]
    fn an_override_replaces_one_file_only() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("confirmed.html.hbs"),
            "{{#> layout.html}}<p>Custom welcome</p>{{/layout.html}}",
        )
        .unwrap();
        let templates = Templates::load(dir.path(), &newsletter()).unwrap();
        let page = templates
            .page(Page::Confirmed, json!({"title": "Welcome"}))
            .unwrap();
        assert!(page.contains("Custom welcome"));
        let signup = templates
            .page(Page::Signup, json!({"title": "Subscribe"}))
            .unwrap();
        assert!(signup.contains("name=\"website\""));
    }
}
