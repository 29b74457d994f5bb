//! The admin web UI's pages. They are built in, not taken from
//! `templates.dir`: an operator's theme is for readers, and the admin must
//! keep working whatever that folder holds.

use handlebars::Handlebars;
use serde_json::Value;

use super::RenderError;

/// Every admin template by registered name; `layout` is the partial the
/// others fill in (`{{#> layout}}…{{/layout}}`).
const ADMIN_TEMPLATES: &[(&str, &str)] = &[
    (
        "layout",
        include_str!("../../templates/admin/layout.html.hbs"),
    ),
    (
        "login",
        include_str!("../../templates/admin/login.html.hbs"),
    ),
    (
        "error",
        include_str!("../../templates/admin/error.html.hbs"),
    ),
    (
        "dashboard",
        include_str!("../../templates/admin/dashboard.html.hbs"),
    ),
    (
        "settings",
        include_str!("../../templates/admin/settings.html.hbs"),
    ),
    // Posts: the queue, the editor, the delete question, the preview frame.
    (
        "posts",
        include_str!("../../templates/admin/posts.html.hbs"),
    ),
    (
        "post_editor",
        include_str!("../../templates/admin/post_editor.html.hbs"),
    ),
    (
        "post_delete",
        include_str!("../../templates/admin/post_delete.html.hbs"),
    ),
    (
        "preview_frame",
        include_str!("../../templates/admin/preview_frame.html.hbs"),
    ),
    // Issues.
    (
        "issues",
        include_str!("../../templates/admin/issues.html.hbs"),
    ),
    (
        "issue",
        include_str!("../../templates/admin/issue.html.hbs"),
    ),
    (
        "issue_retry",
        include_str!("../../templates/admin/issue_retry.html.hbs"),
    ),
    (
        "send_now",
        include_str!("../../templates/admin/send_now.html.hbs"),
    ),
    // Subscribers.
    (
        "subscribers",
        include_str!("../../templates/admin/subscribers.html.hbs"),
    ),
    (
        "subscriber",
        include_str!("../../templates/admin/subscriber.html.hbs"),
    ),
    (
        "subscriber_erase",
        include_str!("../../templates/admin/subscriber_erase.html.hbs"),
    ),
    (
        "subscribers_import",
        include_str!("../../templates/admin/subscribers_import.html.hbs"),
    ),
    (
        "subscribers_import_preview",
        include_str!("../../templates/admin/subscribers_import_preview.html.hbs"),
    ),
];

/// The admin templates, compiled once: they are part of the binary.
pub fn templates() -> &'static AdminTemplates {
    static TEMPLATES: std::sync::OnceLock<AdminTemplates> = std::sync::OnceLock::new();
    TEMPLATES.get_or_init(|| AdminTemplates::load().expect("the built-in admin templates compile"))
}

pub struct AdminTemplates {
    html: Handlebars<'static>,
}

impl AdminTemplates {
    /// Compiles every admin template; one that does not compile is a bug
    /// caught by the first test that starts the app.
    pub fn load() -> Result<Self, RenderError> {
        let mut html = Handlebars::new();
        html.set_strict_mode(true);
        for (name, source) in ADMIN_TEMPLATES {
            html.register_template_string(name, source)
                .map_err(|source| RenderError::Template {
                    name: format!("admin/{name}"),
                    source: Box::new(source),
                })?;
        }
        Ok(Self { html })
    }

    pub fn render(&self, name: &str, context: &Value) -> Result<String, RenderError> {
        self.html
            .render(name, context)
            .map_err(|source| RenderError::Render {
                name: format!("admin/{name}"),
                source: Box::new(source),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_admin_template_compiles() {
        AdminTemplates::load().unwrap();
    }

    #[test]
    fn the_error_page_renders_without_a_session() {
        let html = templates()
            .render(
                "error",
                &serde_json::json!({ "title": "Not found", "message": "No post 3.", "show_login": false }),
            )
            .unwrap();
        assert!(html.contains("No post 3."), "{html}");
        assert!(!html.contains("Log out"), "no session, no menu");
    }
}
