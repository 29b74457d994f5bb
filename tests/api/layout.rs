//! The public pages in a real browser (headless Chromium): what a reader
//! sees on a phone and a desktop screen.

use crate::browser::{Browser, Viewport};
use crate::helpers::{spawn_app, Backend};

/// Sideways scrolling on a phone hides half of every line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_signup_page_is_never_wider_than_the_screen() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = spawn_app(Backend::Sqlite).await;
    for viewport in Viewport::ALL {
        browser.open(&app.url("/"), viewport).await;
        let [document, screen]: [u32; 2] = browser
            .eval("[document.documentElement.scrollWidth, window.innerWidth]")
            .await;
        assert_eq!(screen, viewport.width, "{viewport:?}");
        assert!(document <= screen, "{viewport:?}: {document} px wide");
    }
    let png = browser.screenshot().await;
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    browser.close().await;
}
