//! The web page in a real browser (Chromium through WebDriver).
//!
//! Each test starts its own server (in this process, on a free port), its
//! own `chromedriver` on a free port and its own headless Chromium with a
//! fresh profile, so tests run in parallel without sharing state.
//! `cargo xtask test` installs Debian's `chromium` and `chromium-driver`;
//! without them these tests fail and say what to install.
//!
//! `SSE_UPDATE_SCREENSHOT=1` makes two tests write `docs/screenshot.png`
//! and `docs/screenshot-phone.png` (the README's pictures); otherwise
//! nothing in the tree is touched.

use std::{
    future::Future,
    net::{Ipv4Addr, TcpListener, TcpStream},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use fantoccini::{key::Key, wd::Capabilities, Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde::Deserialize;
use serde_json::json;

use crate::support::{self, EventReader, TestServer};

/// How long any one thing may take to show up in the page. Generous: two
/// shared cores run the browser, the server and the other tests at once.
const PATIENCE: Duration = Duration::from_secs(20);

/// Where Debian's packages put the browser and its driver; the
/// environment variables point elsewhere for other systems.
const CHROMEDRIVER: (&str, &str) = ("SSE_CHROMEDRIVER", "/usr/bin/chromedriver");
const CHROMIUM: (&str, &str) = ("SSE_CHROMIUM", "/usr/bin/chromium");

/// The laptop-sized window the tests (and the screenshot) use.
const WINDOW: (u32, u32) = (1280, 1000);

// ---------------------------------------------------------------------------
// Tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_loads_and_shows_ticks_live() {
    let server = TestServer::start(&["--tick", "300ms"]).await;
    let browser = Browser::open(&server.url("/")).await;

    assert_eq!(browser.title().await, "SSE live");
    browser.wait_for_state("live").await;
    let tick = browser
        .wait_for_row("a tick", |row| row.kind == "tick")
        .await;
    assert_eq!(tick.topic, "default");
    assert!(tick.data.starts_with("the time is "), "{tick:?}");
    assert!(!tick.id.is_empty(), "every event has an id: {tick:?}");
    // Newest first: a later tick goes above the first one.
    browser
        .eventually("a second tick above the first", || async {
            let rows = browser.rows().await;
            let first = rows.iter().position(|r| r.id == tick.id)?;
            (first > 0 && rows[0].kind == "tick").then_some(())
        })
        .await;
    // The header shows the id of the newest event.
    let last_id = browser.text("#last-id").await;
    assert!(last_id.contains('-'), "last id shown: {last_id:?}");

    browser.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_works_over_https_with_http2() {
    let cert = support::TestCert::new();
    let server = TestServer::start(&[&cert.args()[..], &["--tick", "300ms"]].concat()).await;
    let url = format!("https://localhost:{}/", server.addr.port());
    let browser = Browser::open_https(&url).await;

    assert_eq!(browser.title().await, "SSE live");
    browser.wait_for_state("live").await;
    let tick = browser
        .wait_for_row("a tick over HTTPS", |row| row.kind == "tick")
        .await;
    assert_eq!(tick.topic, "default");
    // The page and its event stream came over HTTP/2 (ALPN h2).
    let protocols = browser
        .script(
            "return [performance.getEntriesByType('navigation')[0].nextHopProtocol]
                .concat(performance.getEntriesByType('resource')
                    .filter(e => new URL(e.name).pathname === '/sse')
                    .map(e => e.nextHopProtocol));",
        )
        .await;
    assert_eq!(protocols[0], "h2", "{protocols}");

    let data = "published over https";
    let id = support::publish_with(
        &cert.client(server.addr),
        &format!("https://localhost:{}", server.addr.port()),
        "default",
        "message",
        data,
    )
    .await;
    let row = browser
        .wait_for_row("the published message", |row| row.id == id)
        .await;
    assert_eq!(row.data, data);

    browser.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_message_appears_with_its_id() {
    let server = TestServer::start(&[]).await;
    let browser = Browser::open(&server.url("/")).await;
    browser.wait_for_state("live").await;

    let base = server.url("");
    let data = "first line\nsecond line, from reqwest";
    let id = support::publish(&base, "default", "message", data).await;
    let row = browser
        .wait_for_row("the published message", |row| row.id == id)
        .await;
    assert_eq!(row.topic, "default");
    assert_eq!(row.kind, "message");
    assert_eq!(row.data, data, "data shown exactly, line breaks included");
    assert_eq!(browser.text("#last-id").await, id);

    browser.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_data_is_rendered_as_text_never_html() {
    let server = TestServer::start(&[]).await;
    let attack = "<img src=x onerror=alert(1)><b>bold</b>";
    // As data, and as a topic and event type too: every field is text.
    let topic = "<i>topic</i>";
    let kind = "<script>alert(2)</script>";
    let page = format!(
        "/?topic=default&topic={}&type={}",
        encode(topic),
        encode(kind)
    );
    let browser = Browser::open(&server.url(&page)).await;
    browser.wait_for_state("live").await;
    let in_data = support::publish(&server.url(""), "default", "message", attack).await;
    let in_fields = support::publish(&server.url(""), topic, kind, attack).await;

    let row = browser
        .wait_for_row("the markup message", |row| row.id == in_data)
        .await;
    assert_eq!(row.data, attack, "the markup shows as its characters");
    let row = browser
        .wait_for_row("the markup topic and type", |row| row.id == in_fields)
        .await;
    assert_eq!((row.topic.as_str(), row.kind.as_str()), (topic, kind));
    let elements = browser
        .script("return document.querySelectorAll('#events img, #events b, #events i, #events script').length")
        .await;
    assert_eq!(elements, json!(0), "no element was made from event data");
    assert!(
        browser.client.get_alert_text().await.is_err(),
        "no alert was opened by event data"
    );

    browser.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn form_publishes_and_shows_the_id_or_the_error() {
    let server = TestServer::start(&["--publish-token", "s3cret"]).await;
    let browser = Browser::open(&server.url("/")).await;
    browser.wait_for_state("live").await;

    browser.fill("#pub-event", "greeting").await;
    browser.fill("#pub-data", "hello from the form").await;
    // The token field is folded away; open it as a user would.
    browser.click("#topics-form summary").await;
    browser.fill("#token", "wrong").await;
    browser.click("#publish-form button[type=submit]").await;
    let error = browser
        .eventually("the server's error", || async {
            let text = browser.text("#publish-result").await;
            text.starts_with("Error").then_some(text)
        })
        .await;
    assert!(error.contains("401"), "{error}");

    browser.fill("#token", "s3cret").await;
    browser.click("#publish-form button[type=submit]").await;
    let id = browser
        .eventually("the returned id", || async {
            let id = browser
                .script("return document.getElementById('publish-result').dataset.id ?? null")
                .await;
            id.as_str().map(str::to_owned)
        })
        .await;
    let shown = browser.text("#publish-result").await;
    assert!(shown.contains(&id), "{shown:?} shows {id}");
    // A new event type: the page listens for what it publishes.
    let row = browser
        .wait_for_row("the form's event in the list", |row| row.id == id)
        .await;
    assert_eq!(
        (row.topic.as_str(), row.kind.as_str(), row.data.as_str()),
        ("default", "greeting", "hello from the form")
    );

    // From the keyboard alone: Ctrl+Enter in the data field sends.
    browser.fill("#pub-data", "sent with the keyboard").await;
    let field = browser
        .client
        .find(Locator::Id("pub-data"))
        .await
        .expect("data field");
    field
        .send_keys(&format!("{}{}{}", Key::Control, Key::Enter, Key::Null))
        .await
        .expect("Ctrl+Enter");
    browser
        .wait_for_row("the event sent with Ctrl+Enter", |row| {
            row.data == "sent with the keyboard"
        })
        .await;

    // An event type named like the EventSource's own `error` event is
    // shown as an event, and does not count as a connection error.
    browser.fill("#pub-event", "error").await;
    browser.fill("#pub-data", "an event named error").await;
    browser.click("#publish-form button[type=submit]").await;
    let row = browser
        .wait_for_row("the event named error", |row| row.kind == "error")
        .await;
    assert_eq!(row.data, "an event named error");
    assert_eq!(
        browser.text("#state-text").await,
        "live",
        "an event named error is not a connection error"
    );

    browser.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_shows_reconnecting_then_live_and_replays_missed_events() {
    let args = ["--retry", "1s"];
    let server = TestServer::start(&args).await;
    let addr = server.addr;
    let browser = Browser::open(&server.url("/")).await;
    browser.wait_for_state("live").await;
    let before =
        support::publish(&server.url(""), "default", "message", "before the restart").await;
    browser
        .wait_for_row("the event before the restart", |row| row.id == before)
        .await;

    server.stop().await;
    browser.wait_for_state("reconnecting").await;

    // Published at once, before the browser's next try (1 s later): the
    // browser gets them by Last-Event-ID replay, after a too-old notice,
    // since the new run does not know the old run's ids.
    let server = TestServer::start_on(addr, &args).await;
    let base = server.url("");
    let missed = [
        support::publish(&base, "default", "message", "missed one").await,
        support::publish(&base, "default", "message", "missed two").await,
    ];
    browser.wait_for_state("live").await;
    for id in &missed {
        browser
            .wait_for_row("an event published during the restart", |row| &row.id == id)
            .await;
    }
    let rows = browser.rows().await;
    let position = |id: &str| rows.iter().position(|r| r.id == id).expect("shown");
    assert!(
        position(&missed[1]) < position(&missed[0]),
        "in order, newest first: {rows:?}"
    );
    let notice = rows
        .iter()
        .find(|r| r.kind == "too-old")
        .unwrap_or_else(|| panic!("a too-old notice is shown: {rows:?}"));
    assert!(
        notice.data.contains(&before),
        "names the unknown id: {notice:?}"
    );
    assert_eq!(
        rows.iter().filter(|r| r.id == before).count(),
        1,
        "nothing shown twice"
    );

    browser.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_field_subscribes_and_publishes_with_a_jwt() {
    let secret = "browser-test-secret";
    let server = TestServer::start(&["--jwt-secret", secret]).await;
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sse": {"subscribe": ["private"], "publish": ["private"]}}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("a token");
    let browser = Browser::open(&server.url("/?topic=private")).await;
    // Without a token the server refuses the stream (401).
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_ne!(browser.text("#state-text").await, "live");

    browser.click("#topics-form summary").await;
    browser.fill("#token", &token).await;
    browser.click("#topics-form button[type=submit]").await;
    browser.wait_for_state("live").await;

    // Publishing from the form sends the same token.
    browser.fill("#pub-data", "for token holders").await;
    browser.click("#publish-form button[type=submit]").await;
    let row = browser
        .wait_for_row("the event published with the token", |row| {
            row.data == "for token holders"
        })
        .await;
    assert_eq!(row.topic, "private");
    // A second, independent subscriber sees the same event: it was
    // published, not only shown.
    let mut reader = EventReader::open(
        &server.url(&format!(
            "/sse?topic=private&access_token={token}&lastEventId=0-0"
        )),
        None,
    )
    .await;
    let event = tokio::time::timeout(PATIENCE, async {
        loop {
            let event = reader.expect(PATIENCE).await;
            if event.data == "for token holders" {
                return event;
            }
        }
    })
    .await
    .expect("the event on the server");
    assert_eq!(event.id, row.id);
    let url = browser.client.current_url().await.expect("url");
    assert!(
        !url.as_str().contains(&token),
        "the token stays out of the address bar"
    );
    browser.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_selection_reconnects_to_the_chosen_topics_only() {
    let server = TestServer::start(&[]).await;
    let base = server.url("");
    let browser = Browser::open(&server.url("/")).await;
    browser.wait_for_state("live").await;
    let on_default = support::publish(&base, "default", "message", "on default").await;
    browser
        .wait_for_row("an event on default", |row| row.id == on_default)
        .await;

    browser.fill("#topics", "alpha, beta").await;
    browser.click("#topics-form button[type=submit]").await;
    browser.wait_for_state("live").await;
    // One stream per topic, and the default one closed.
    browser
        .eventually("two subscribers on the server", || async {
            let stats: serde_json::Value = reqwest::get(format!("{base}/stats"))
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (stats["clients"] == json!(2)).then_some(())
        })
        .await;

    let ignored = support::publish(&base, "default", "message", "not subscribed").await;
    let alpha = support::publish(&base, "alpha", "message", "on alpha").await;
    let beta = support::publish(&base, "beta", "message", "on beta").await;
    let alpha_row = browser
        .wait_for_row("the alpha event", |row| row.id == alpha)
        .await;
    let beta_row = browser
        .wait_for_row("the beta event", |row| row.id == beta)
        .await;
    assert_eq!(
        (alpha_row.topic.as_str(), beta_row.topic.as_str()),
        ("alpha", "beta")
    );
    let rows = browser.rows().await;
    assert!(
        !rows.iter().any(|r| r.id == ignored),
        "an event on an unselected topic is not shown: {rows:?}"
    );
    let url = browser.client.current_url().await.expect("url");
    assert_eq!(
        url.query(),
        Some("topic=alpha&topic=beta"),
        "the choice is in the address"
    );
    // Publishing defaults to a subscribed topic.
    assert_eq!(browser.value("#pub-topic").await, "alpha");

    browser.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_fits_a_phone_width() {
    let server = TestServer::start(&["--tick", "500ms"]).await;
    let browser = Browser::open(&server.url("/")).await;
    browser.wait_for_state("live").await;
    let long = "a-very-long-word-without-spaces-".repeat(8);
    let id = support::publish(&server.url(""), "default", "message", &long).await;
    browser
        .wait_for_row("the long message", |row| row.id == id)
        .await;

    browser
        .client
        .set_window_size(390, 844)
        .await
        .expect("phone-sized window");
    // The chart follows its box a frame after the resize, so this waits
    // for the layout to settle rather than reading it once.
    browser
        .eventually(
            "no sideways scrolling at phone width (scrollWidth <= innerWidth < 500)",
            || async {
                let widths = browser
                    .script("return [document.documentElement.scrollWidth, window.innerWidth]")
                    .await;
                let (scroll, inner) = (widths[0].as_u64()?, widths[1].as_u64()?);
                (inner < 500 && scroll <= inner).then_some(())
            },
        )
        .await;
    // One column: the events come before the forms.
    let order = browser
        .script(
            "const y = (id) => document.getElementById(id).getBoundingClientRect().top;
             return y('events') < y('publish-form') && y('chart') < y('publish-form');",
        )
        .await;
    assert_eq!(order, json!(true));
    if update_screenshots() {
        // A few stats polls, so the tiles and chart have numbers.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        browser.save_screenshot("screenshot-phone.png").await;
    }

    browser.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_gets_stats_and_screenshot() {
    let server = TestServer::start(&["--tick", "1s"]).await;
    let base = server.url("");
    let browser = Browser::open(&server.url("/?topic=default&type=deploy")).await;
    browser.wait_for_state("live").await;

    assert!(
        browser.exists("#chart .uplot canvas").await,
        "uPlot drew its canvas"
    );
    // A few more subscribers and some traffic, so the chart has a shape.
    let mut watchers = Vec::new();
    for _ in 0..3 {
        watchers.push(EventReader::open(&server.url("/sse"), None).await);
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    let samples = [
        ("message", r#"{"user":"ada","action":"login"}"#),
        ("deploy", "v1.4.2 rolled out to 3 of 3 hosts"),
        ("message", "<img src=x onerror=alert(1)> stays text"),
        ("message", "multi-line data\nsecond line"),
    ];
    for (kind, data) in samples {
        support::publish(&base, "default", kind, data).await;
        for i in 0..5 {
            support::publish(&base, "bench", "message", &i.to_string()).await;
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
    }

    browser
        .eventually("four subscribers in the clients tile", || async {
            (browser.text("#stat-clients").await == "4").then_some(())
        })
        .await;
    browser
        .eventually("the chart to have a few points", || async {
            let points = browser
                .script("return Number(document.getElementById('chart').dataset.points)")
                .await;
            (points.as_u64()? >= 5).then_some(())
        })
        .await;
    let rate = browser.text("#stat-rate").await;
    assert!(
        rate.parse::<f64>().is_ok(),
        "events/s is a number: {rate:?}"
    );

    if update_screenshots() {
        // The picture shows the form in use too.
        browser.fill("#pub-data", "hello from the page").await;
        browser.click("#publish-form button[type=submit]").await;
        browser
            .eventually("the form's result", || async {
                browser
                    .text("#publish-result")
                    .await
                    .starts_with("Published")
                    .then_some(())
            })
            .await;
        // Let the chart draw its latest point before the picture.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        browser.save_screenshot("screenshot.png").await;
    }

    drop(watchers);
    browser.close().await;
    server.stop().await;
}

// ---------------------------------------------------------------------------
// The browser

/// One event row as the page shows it.
#[derive(Debug, Clone, Deserialize)]
struct Row {
    topic: String,
    #[serde(rename = "type")]
    kind: String,
    id: String,
    data: String,
}

/// Reads the rows back out of the page, newest first.
const ROWS_SCRIPT: &str = "
    const text = (li, name) => li.querySelector('.' + name).textContent;
    return [...document.querySelectorAll('#events .event')].map((li) => ({
        topic: text(li, 'topic'), type: text(li, 'type'), id: text(li, 'id'), data: text(li, 'data'),
    }));";

/// A headless Chromium session; the browser and its driver end on drop.
struct Browser {
    client: Client,
    // Declared after `client`, so they outlive it when dropped.
    _driver: ChromeDriver,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and Chromium and opens `url`.
    async fn open(url: &str) -> Self {
        Self::launch(url, false).await
    }

    /// Like [`Browser::open`], trusting any certificate (the test's own,
    /// self-signed) for HTTPS.
    async fn open_https(url: &str) -> Self {
        Self::launch(url, true).await
    }

    async fn launch(url: &str, accept_insecure_certs: bool) -> Self {
        let driver = ChromeDriver::start();
        let profile = tempfile::tempdir().expect("a temporary profile folder");
        let mut args = vec![
            // Flags Chromium needs to run headless as root in a container.
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            // No network beyond the test server.
            "--disable-quic".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--no-first-run".to_owned(),
            "--no-default-browser-check".to_owned(),
            "--password-store=basic".to_owned(),
            // The same picture everywhere.
            "--hide-scrollbars".to_owned(),
            "--force-device-scale-factor=1".to_owned(),
            "--lang=en-US".to_owned(),
            format!("--window-size={},{}", WINDOW.0, WINDOW.1),
        ];
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let mut capabilities = Capabilities::new();
        capabilities.insert(
            "goog:chromeOptions".to_owned(),
            json!({ "binary": program(CHROMIUM), "args": args }),
        );
        // Leave any alert open, so a test can see that one was (not) raised.
        capabilities.insert("unhandledPromptBehavior".to_owned(), json!("ignore"));
        capabilities.insert(
            "acceptInsecureCerts".to_owned(),
            json!(accept_insecure_certs),
        );
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&driver.url())
            .await
            .unwrap_or_else(|err| {
                panic!(
                    "chromedriver could not start Chromium ({err}); is the Debian package \
                     `chromium` installed (apt-get install chromium chromium-driver)?"
                )
            });
        client.goto(url).await.expect("open the page");
        Self {
            client,
            _driver: driver,
            _profile: profile,
        }
    }

    /// Ends the WebDriver session (and with it Chromium).
    async fn close(self) {
        let Self {
            client,
            _driver,
            _profile,
        } = self;
        let _ = client.close().await;
    }

    async fn script(&self, script: &str) -> serde_json::Value {
        match self.client.execute(script, Vec::new()).await {
            Ok(value) => value,
            Err(err) => match self.client.get_alert_text().await {
                Ok(alert) => panic!("an alert ({alert:?}) is open: something ran as script"),
                Err(_) => panic!("script failed: {err}\n{script}"),
            },
        }
    }

    async fn title(&self) -> String {
        self.client.title().await.expect("title")
    }

    /// The text of the first element matching `css` (empty when none).
    async fn text(&self, css: &str) -> String {
        let value = self
            .client
            .execute(
                "return document.querySelector(arguments[0])?.textContent ?? ''",
                vec![json!(css)],
            )
            .await
            .expect("read text");
        value.as_str().unwrap_or_default().to_owned()
    }

    async fn value(&self, css: &str) -> String {
        let element = self.client.find(Locator::Css(css)).await.expect(css);
        element
            .prop("value")
            .await
            .expect("value")
            .unwrap_or_default()
    }

    async fn exists(&self, css: &str) -> bool {
        !self
            .client
            .find_all(Locator::Css(css))
            .await
            .expect("find")
            .is_empty()
    }

    /// Types into a field as a user would, replacing what was there.
    async fn fill(&self, css: &str, text: &str) {
        let element = self.client.find(Locator::Css(css)).await.expect(css);
        element.clear().await.expect("clear");
        element.send_keys(text).await.expect("type");
    }

    async fn click(&self, css: &str) {
        let element = self.client.find(Locator::Css(css)).await.expect(css);
        element.click().await.expect("click");
    }

    /// Writes what the window shows, from the top, to `docs/<name>`.
    async fn save_screenshot(&self, name: &str) {
        self.script("window.scrollTo(0, 0); document.activeElement?.blur()")
            .await;
        let png = self.client.screenshot().await.expect("screenshot");
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../docs")
            .join(name);
        std::fs::create_dir_all(path.parent().expect("docs/")).expect("create docs/");
        std::fs::write(&path, png).unwrap_or_else(|err| panic!("write {}: {err}", path.display()));
    }

    async fn rows(&self) -> Vec<Row> {
        serde_json::from_value(self.script(ROWS_SCRIPT).await).expect("rows")
    }

    /// Waits until the connection state reads `state`.
    async fn wait_for_state(&self, state: &str) {
        self.eventually(&format!("the state to be {state:?}"), || async {
            (self.text("#state-text").await == state).then_some(())
        })
        .await;
    }

    /// Waits for a row matching `matches` and returns it.
    async fn wait_for_row(&self, what: &str, matches: impl Fn(&Row) -> bool) -> Row {
        self.eventually(what, || async {
            self.rows().await.into_iter().find(&matches)
        })
        .await
    }

    /// Polls `check` until it gives a value, failing after [`PATIENCE`]
    /// with what the page showed.
    async fn eventually<T, F, Fut>(&self, what: &str, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(value) = check().await {
                return value;
            }
            if Instant::now() > deadline {
                let state = self.text("#state-text").await;
                let last_id = self.text("#last-id").await;
                let rows = self.rows().await;
                panic!(
                    "waited {PATIENCE:?} for {what}; state {state:?}, last id {last_id:?}, \
                     rows {rows:#?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Whether to rewrite the pictures under `docs/` (`SSE_UPDATE_SCREENSHOT=1`);
/// off by default so test runs leave the tree clean.
fn update_screenshots() -> bool {
    std::env::var_os("SSE_UPDATE_SCREENSHOT").is_some_and(|v| v == "1")
}

/// Percent-encodes a query value.
fn encode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

// ---------------------------------------------------------------------------
// chromedriver

/// A `chromedriver` child process on a free port, killed on drop.
struct ChromeDriver {
    child: Child,
    port: u16,
}

impl ChromeDriver {
    fn start() -> Self {
        let driver = program(CHROMEDRIVER);
        // Chromium is checked here too, so its absence fails with the same
        // clear advice rather than as a session error.
        program(CHROMIUM);
        // Ask the kernel for a free port, then hand it to chromedriver.
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut child = Command::new(&driver)
            .arg(format!("--port={port}"))
            // Its own process group, which Chromium joins: dropping kills
            // both, even when a failed test never closed its session.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("could not run {}: {err}", driver.display()));
        let deadline = Instant::now() + PATIENCE;
        while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("{} exited ({status}) before listening", driver.display());
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen in time"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        // The group's id is chromedriver's pid; the group holds only what
        // this test started.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The path of a program the tests need, failing with what to install.
fn program((variable, default): (&str, &str)) -> PathBuf {
    let path = std::env::var_os(variable).map_or_else(|| PathBuf::from(default), PathBuf::from);
    assert!(
        path.is_file(),
        "{} not found: the browser tests need Debian's `chromium` and `chromium-driver` \
         (`apt-get install chromium chromium-driver`, which `cargo xtask test` does when run \
         as root), or set {variable} to the program's path",
        path.display()
    );
    path
}
