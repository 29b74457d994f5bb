//! A real headless browser for layout tests: Debian's Chromium, driven
//! through its `chromedriver` over WebDriver (the `fantoccini` crate).
//!
//! ```ignore
//! let Some(browser) = Browser::start().await else { return }; // skipped
//! browser.open(&url, Viewport::PHONE).await;
//! let wide: f64 = browser.eval("document.documentElement.scrollWidth").await;
//! let png = browser.screenshot().await;
//! browser.close().await;
//! ```
//!
//! Outside CI a machine without Chromium skips the test with a notice;
//! with `CI` set it fails (`.ci/run` installs `chromium chromium-driver`).
//! At most two browsers run at once, whatever the test threads: each
//! Chromium is a handful of processes.
#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};

use crate::ports::free_port;
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::sync::{Semaphore, SemaphorePermit};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

static BROWSERS: Semaphore = Semaphore::const_new(2);

/// A CSS viewport: what the page's media queries and `innerWidth` see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Viewport {
    pub width: u32,
    pub height: u32,
    pub name: &'static str,
}

impl Viewport {
    /// The narrowest phone still in use (iPhone SE, first generation).
    pub const SMALL_PHONE: Viewport = Viewport {
        width: 320,
        height: 568,
        name: "small-phone",
    };
    /// A common phone (iPhone 12 to 14).
    pub const PHONE: Viewport = Viewport {
        width: 390,
        height: 844,
        name: "phone",
    };
    pub const DESKTOP: Viewport = Viewport {
        width: 1280,
        height: 800,
        name: "desktop",
    };
    /// The widths a page must fit without sideways scrolling.
    pub const ALL: [Viewport; 3] = [Self::SMALL_PHONE, Self::PHONE, Self::DESKTOP];
}

/// True when Chromium and its driver are installed; panics under CI when
/// they are not, so a missing install step cannot pass as a skip.
pub fn browser_installed() -> bool {
    let found = Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists();
    assert!(
        found || std::env::var_os("CI").is_none(),
        "chromium or chromedriver is missing: .ci/run installs chromium chromium-driver"
    );
    found
}

/// One headless Chromium with its chromedriver, both ended on drop.
pub struct Browser {
    client: Client,
    driver: Child,
    /// Chromium's profile, removed with the browser.
    _profile: tempfile::TempDir,
    _slot: SemaphorePermit<'static>,
}

impl Browser {
    /// Starts a browser, or prints why not and returns `None` (outside CI,
    /// when Chromium is not installed).
    pub async fn start() -> Option<Browser> {
        if !browser_installed() {
            println!(
                "skipped: chromium is not installed (apt-get install chromium chromium-driver)"
            );
            return None;
        }
        let slot = BROWSERS.acquire().await.unwrap();
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, so that drop can end Chromium with it.
            .process_group(0)
            .spawn()
            .expect("chromedriver starts");
        let mut driver_guard = DriverGuard(Some(driver));
        let url = format!("http://127.0.0.1:{port}");
        wait_until_listening(port).await;
        let profile = tempfile::tempdir().unwrap();
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--hide-scrollbars",
                    "--disable-dev-shm-usage",
                    "--force-device-scale-factor=1",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        // chromedriver speaks plain HTTP on loopback: no TLS stack needed.
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&url)
            .await
            .expect("chromedriver opens a Chromium session");
        Some(Browser {
            client,
            driver: driver_guard.0.take().unwrap(),
            _profile: profile,
            _slot: slot,
        })
    }

    /// The WebDriver client, for forms, clicks and the like.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Sets the CSS viewport to `viewport` (not the outer window, which
    /// has browser chrome around it even when headless).
    pub async fn set_viewport(&self, viewport: Viewport) {
        let wanted = [i64::from(viewport.width), i64::from(viewport.height)];
        let mut outer = wanted;
        let mut inner = [0, 0];
        for _ in 0..4 {
            self.client
                .set_window_size(outer[0] as u32, outer[1] as u32)
                .await
                .expect("the window resizes");
            // A loaded machine may show the new size a moment late: wait
            // for it, or for the size to settle, before adjusting again.
            let deadline = Instant::now() + Duration::from_secs(3);
            let before = inner;
            let mut previous = [-1, -1];
            loop {
                inner = self.eval("[window.innerWidth, window.innerHeight]").await;
                if inner == wanted {
                    return;
                }
                let settled = inner == previous && inner != before;
                if settled || Instant::now() > deadline {
                    break;
                }
                previous = inner;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            outer = [
                outer[0] + wanted[0] - inner[0],
                outer[1] + wanted[1] - inner[1],
            ];
        }
        panic!("Chromium would not take a {viewport:?} viewport: {inner:?}");
    }

    /// Opens `url` with the CSS viewport `viewport`.
    pub async fn open(&self, url: &str, viewport: Viewport) {
        self.set_viewport(viewport).await;
        self.client.goto(url).await.expect("the page opens");
    }

    /// The value of a JavaScript expression on the current page (which runs
    /// through WebDriver, so a page's CSP against scripts does not stop it).
    pub async fn eval<T: DeserializeOwned>(&self, expression: &str) -> T {
        let value = self
            .client
            .execute(&format!("return ({expression});"), vec![])
            .await
            .unwrap_or_else(|error| panic!("{expression}: {error}"));
        serde_json::from_value(value.clone())
            .unwrap_or_else(|error| panic!("{expression} gave {value}: {error}"))
    }

    /// Clicks the first element `css` finds, and panics naming it if none.
    pub async fn click(&self, css: &str) {
        self.client
            .find(fantoccini::Locator::Css(css))
            .await
            .unwrap_or_else(|error| panic!("{css}: {error}"))
            .click()
            .await
            .unwrap_or_else(|error| panic!("click {css}: {error}"));
    }

    /// Waits (up to 5 s) until a JavaScript expression is true, and
    /// panics otherwise.
    pub async fn wait_for(&self, condition: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.eval::<bool>(condition).await {
            assert!(Instant::now() < deadline, "waited 5 s for {condition}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Runs axe-core on the current page and panics with every WCAG 2.1
    /// A or AA violation it finds, naming the rule and the elements.
    pub async fn assert_accessible(&self) {
        let Some(axe) = axe_source() else {
            println!(
                "skipped the accessibility check: axe-core is not installed (scripts/test-deps)"
            );
            return;
        };
        // Injected through WebDriver, so the page's CSP does not stop it.
        self.client
            .execute(axe, vec![])
            .await
            .expect("axe-core loads");
        let violations = self
            .client
            .execute_async(
                r#"const done = arguments[arguments.length - 1];
                axe.run(document, { runOnly: { type: "tag",
                    values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"] } })
                  .then(result => done(result.violations.map(v =>
                      v.id + ": " + v.help + " at " + v.nodes.map(n => n.target.join(" ")).join(", "))))
                  .catch(error => done(["axe failed: " + error]));"#,
                vec![],
            )
            .await
            .expect("axe-core runs");
        let violations: Vec<String> = serde_json::from_value(violations).unwrap();
        let url = self.client.current_url().await.unwrap();
        assert!(
            violations.is_empty(),
            "{url}: WCAG violations:\n{}",
            violations.join("\n")
        );
    }

    /// A PNG of what the viewport shows.
    pub async fn screenshot(&self) -> Vec<u8> {
        self.client.screenshot().await.expect("a screenshot")
    }

    /// Ends the session (Chromium quits and removes nothing of ours) and
    /// then chromedriver. Dropping does the same, less politely.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        end_process_group(&mut self.driver);
    }
}

/// Ends chromedriver if starting the session fails half-way.
struct DriverGuard(Option<Child>);

impl Drop for DriverGuard {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            end_process_group(child);
        }
    }
}

/// Kills a child started as a process-group leader, with everything it
/// started (Chromium and its helpers), and reaps it.
fn end_process_group(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .stderr(Stdio::null())
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

/// axe-core's script, installed by `scripts/test-deps` under target/axe;
/// under CI its absence fails the test.
fn axe_source() -> Option<&'static str> {
    static SOURCE: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    SOURCE
        .get_or_init(|| {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("target/axe/node_modules/axe-core/axe.min.js");
            let source = std::fs::read_to_string(&path).ok();
            assert!(
                source.is_some() || std::env::var_os("CI").is_none(),
                "{} is missing: scripts/test-deps installs axe-core",
                path.display()
            );
            source
        })
        .as_deref()
}

async fn wait_until_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "chromedriver did not listen on {port}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
