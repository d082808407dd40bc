//! A real browser for the web page's tests: Debian's Chromium, headless,
//! driven over WebDriver (chromedriver) with fantoccini. Each browser has
//! its own profile directory and chromedriver process, gone on drop.
//! Screenshots go to `target/web-screenshots/`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

/// What a test needs installed, and how to get it (the test kit says so
/// instead of failing obscurely).
fn need(path: &str, how: &str) -> String {
    assert!(
        std::path::Path::new(path).exists(),
        "{path} is missing: {how} (the test command's setup, .ci/run, installs it)"
    );
    path.to_string()
}

pub struct Browser {
    pub c: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

/// Chromium's width at phone size (an iPhone SE's CSS width).
pub const PHONE_WIDTH: u32 = 375;

impl Browser {
    pub async fn start() -> Browser {
        Browser::start_with(&[]).await
    }

    /// A browser with JavaScript switched off, as some people browse.
    pub async fn start_without_js() -> Browser {
        Browser::start_with(&["--blink-settings=scriptEnabled=false"]).await
    }

    /// A browser whose system is dark (`prefers-color-scheme: dark`).
    pub async fn start_dark() -> Browser {
        Browser::start_with(&["--force-dark-mode"]).await
    }

    async fn start_with(extra: &[&str]) -> Browser {
        let chromium = need("/usr/bin/chromium", "apt-get install -y chromium");
        let chromedriver = need(
            "/usr/bin/chromedriver",
            "apt-get install -y chromium-driver",
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver");
        let profile = tempfile::tempdir().unwrap();
        let mut args: Vec<String> = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--window-size=1280,1000",
        ]
        .iter()
        .chain(extra)
        .map(|a| a.to_string())
        .collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": chromium, "args": args }),
        );
        // chromedriver answers once it listens: retry the session until then.
        let mut last = None;
        for _ in 0..100 {
            match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(caps.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
            {
                Ok(c) => {
                    return Browser {
                        c,
                        driver,
                        _profile: profile,
                    }
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chromedriver did not start a session: {last:?}");
    }

    pub async fn goto(&self, url: &str) {
        self.c
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
    }

    /// The element `css`, waited for (up to 10 s).
    pub async fn el(&self, css: &str) -> Element {
        match self
            .c
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
        {
            Ok(e) => e,
            Err(e) => panic!("no {css} on {}: {e}", self.url().await),
        }
    }

    pub async fn has(&self, css: &str) -> bool {
        !self.c.find_all(Locator::Css(css)).await.unwrap().is_empty()
    }

    pub async fn url(&self) -> String {
        self.c
            .current_url()
            .await
            .map(|u| u.to_string())
            .unwrap_or_default()
    }

    /// The page's visible text.
    pub async fn text(&self) -> String {
        self.el("body").await.text().await.unwrap()
    }

    pub async fn fill(&self, css: &str, value: &str) {
        let e = self.el(css).await;
        e.clear().await.unwrap();
        e.send_keys(value).await.unwrap();
    }

    /// Clicks `css` and waits for the page it loads. The old page's
    /// `readyState` is already "complete" until the new one replaces it, so
    /// the wait is first for the old document to go (its root element turns
    /// stale), then for the new one to load.
    pub async fn click(&self, css: &str) {
        let old = self.el("html").await;
        self.el(css).await.click().await.unwrap();
        for _ in 0..400 {
            match old.tag_name().await {
                Err(fantoccini::error::CmdError::Standard(e))
                    if e.error == fantoccini::error::ErrorStatus::StaleElementReference =>
                {
                    return self.loaded().await;
                }
                _ => tokio::time::sleep(Duration::from_millis(25)).await,
            }
        }
        panic!("clicking {css} loaded no page: {}", self.url().await);
    }

    /// Waits until the document has loaded.
    pub async fn loaded(&self) {
        for _ in 0..200 {
            let state = self
                .c
                .execute("return document.readyState", vec![])
                .await
                .unwrap_or(Value::Null);
            if state == "complete" {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the page did not load: {}", self.url().await);
    }

    /// Sets a cookie for the page's host, as the page's own script would
    /// (WebDriver's add-cookie refuses a host that is an IP address).
    pub async fn set_cookie(&self, name: &str, value: &str) {
        self.c
            .execute(
                "document.cookie = arguments[0] + '=' + arguments[1] + '; path=/'",
                vec![json!(name), json!(value)],
            )
            .await
            .unwrap();
    }

    pub async fn clear_cookies(&self) {
        self.c.delete_all_cookies().await.unwrap();
    }

    pub async fn set_width(&self, width: u32) {
        self.c.set_window_size(width, 1000).await.unwrap();
    }

    /// Saves a screenshot of the page, at `width` CSS pixels wide, as
    /// `target/web-screenshots/<name>.png`.
    pub async fn screenshot(&self, name: &str, width: u32) -> PathBuf {
        self.c.set_window_size(width, 1000).await.unwrap();
        let full: Value = self
            .c
            .execute("return document.documentElement.scrollHeight", vec![])
            .await
            .unwrap();
        let h = full.as_u64().unwrap_or(1000).clamp(600, 4000) as u32;
        self.c.set_window_size(width, h + 120).await.unwrap();
        let png = self.c.screenshot().await.unwrap();
        self.c.set_window_size(1280, 1000).await.unwrap();
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("target")
            .join("web-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// axe-core's serious and critical findings on the page (axe-core from
    /// npm, in ~/.cache/plausible-webhooks/axe).
    pub async fn accessibility_findings(&self) -> Vec<String> {
        let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
        let axe = need(
            &format!("{home}/.cache/plausible-webhooks/axe/node_modules/axe-core/axe.min.js"),
            "npm install --prefix ~/.cache/plausible-webhooks/axe axe-core@4",
        );
        let source = std::fs::read_to_string(axe).unwrap();
        // Injected as the test's own script (WebDriver is not bound by the page's CSP).
        self.c.execute(&source, vec![]).await.unwrap();
        let r = self
            .c
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 axe.run(document, {resultTypes: ['violations']})
                    .then(r => done(r.violations.filter(v => v.impact === 'serious' || v.impact === 'critical')
                        .map(v => v.id + ': ' + v.help + ' — ' + v.nodes.map(n => n.target.join(' ')).join(' | '))))
                    .catch(e => done(['axe failed: ' + e]));",
                vec![],
            )
            .await
            .unwrap();
        serde_json::from_value(r).unwrap_or_default()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        // Chromium outlives a killed chromedriver: its processes are the
        // ones started with this browser's own profile directory.
        let _ = Command::new("pkill")
            .args(["-KILL", "-f", &self._profile.path().display().to_string()])
            .status();
    }
}
