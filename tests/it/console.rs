//! The web console in a real browser: headless Chromium (Debian's
//! `chromium`, which `./scripts/test` installs when it is missing) loads
//! `/ui/` from `accessd serve` while `accessd load` sends it decisions,
//! and the test reads the rendered page through the DevTools protocol.
//!
//! The protocol runs over a pipe (`--remote-debugging-pipe`: JSON messages
//! ended by a NUL byte on file descriptors 3 and 4), so no WebSocket client
//! is needed. Each wait is a promise evaluated in the page that resolves
//! when the DOM shows what is awaited. A screenshot of each page is written
//! to `target/tmp/console/` (the README's pictures are such screenshots).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

use crate::support::http::{Served, get, temp_dir};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/examples/site.toml");

/// The Chromium to drive: `ACCESSD_CHROMIUM`, else `chromium` on the path.
/// Missing is a failure, never a skip.
fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("ACCESSD_CHROMIUM") {
        return PathBuf::from(path);
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("chromium"))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "no `chromium` on PATH and ACCESSD_CHROMIUM not set: the console test needs a real \
             browser. Run ./scripts/test (it installs Debian's chromium) or apt-get install chromium"
        )
    })
}

/// A headless Chromium and one page of it, driven over the DevTools pipe.
struct Browser {
    child: Child,
    to: ChildStdin,
    from: mpsc::Receiver<Value>,
    next_id: u64,
    session: String,
    profile: PathBuf,
}

impl Browser {
    fn launch(profile: &Path) -> Self {
        let _ = std::fs::remove_dir_all(profile);
        // fd 3 is what Chromium reads commands from and fd 4 where it
        // writes answers: the shell points them at our pipes.
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(r#"exec "$0" "$@" 3<&0 4>&1 </dev/null >/dev/null"#)
            .arg(chromium())
            .args([
                "--headless",
                "--remote-debugging-pipe",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                "--window-size=1200,900",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium");
        let to = child.stdin.take().unwrap();
        let from_pipe = child.stdout.take().unwrap();
        let (tx, from) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(from_pipe);
            let mut message = Vec::new();
            while let Ok(n) = reader.read_until(0, &mut message) {
                if n == 0 {
                    return;
                }
                if message.last() == Some(&0) {
                    message.pop();
                }
                if let Ok(v) = serde_json::from_slice::<Value>(&message)
                    && tx.send(v).is_err()
                {
                    return;
                }
                message.clear();
            }
        });
        let mut browser = Self {
            child,
            to,
            from,
            next_id: 0,
            session: String::new(),
            profile: profile.to_owned(),
        };
        let target = browser.call("Target.createTarget", json!({ "url": "about:blank" }));
        let target = target["targetId"].as_str().unwrap().to_owned();
        let attached = browser.call(
            "Target.attachToTarget",
            json!({ "targetId": target, "flatten": true }),
        );
        browser.session = attached["sessionId"].as_str().unwrap().to_owned();
        browser.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": 1200, "height": 900, "deviceScaleFactor": 1, "mobile": false }),
        );
        browser
    }

    /// Sends a command (to the page once attached) and returns its result.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if !self.session.is_empty() {
            message["sessionId"] = json!(self.session);
        }
        let mut bytes = serde_json::to_vec(&message).unwrap();
        bytes.push(0);
        self.to.write_all(&bytes).unwrap();
        self.to.flush().unwrap();
        loop {
            let reply = self
                .from
                .recv_timeout(Duration::from_secs(90))
                .unwrap_or_else(|_| panic!("chromium did not answer {method}"));
            if reply["id"] == json!(id) {
                if let Some(error) = reply.get("error") {
                    panic!("{method} failed: {error}");
                }
                return reply["result"].clone();
            }
        }
    }

    fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({ "url": url }));
    }

    /// Evaluates `condition` (a JavaScript expression) in the page until it
    /// is truthy, within 45 s, and returns what `value` (an expression)
    /// gives then. The waiting happens in the page, on its own clock.
    fn wait_for(&mut self, what: &str, condition: &str, value: &str) -> Value {
        let script = format!(
            r#"new Promise((resolve) => {{
                const deadline = Date.now() + 45000;
                const check = () => {{
                    let ok = false;
                    try {{ ok = !!({condition}); }} catch (_) {{ ok = false; }}
                    if (ok) {{ resolve({{ ok: true, value: ({value}) }}); }}
                    else if (Date.now() > deadline) {{ resolve({{ ok: false, value: document.body.innerText }}); }}
                    else {{ setTimeout(check, 50); }}
                }};
                check();
            }})"#
        );
        let result = self.call(
            "Runtime.evaluate",
            json!({ "expression": script, "awaitPromise": true, "returnByValue": true }),
        );
        let outcome = &result["result"]["value"];
        assert!(
            outcome["ok"] == json!(true),
            "{what}: not on the page within 45 s; the page said:\n{}",
            outcome["value"].as_str().unwrap_or("(nothing)")
        );
        outcome["value"].clone()
    }

    /// Runs statements in the page, in a block of their own (so their
    /// `const`s do not outlive them), failing on an exception.
    fn run(&mut self, statements: &str) {
        let result = self.call(
            "Runtime.evaluate",
            json!({ "expression": format!("{{ {statements} }}"), "returnByValue": true }),
        );
        assert!(
            result.get("exceptionDetails").is_none(),
            "{statements}: {}",
            result["exceptionDetails"]
        );
    }

    /// Writes a PNG of the page to `path`.
    fn screenshot(&mut self, path: &Path) {
        let shot = self.call("Page.captureScreenshot", json!({ "format": "png" }));
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// `accessd load` against the server for at most two minutes (killed
/// when the test ends).
struct Load(Child);

impl Load {
    fn start(dir: &Path, served: &Served) -> Self {
        let child = Command::new(crate::durable::bin())
            .args(["load", "--site", EXAMPLE, "--server"])
            .arg(served.quic.to_string())
            .arg("--ca")
            .arg(dir.join("ca.pem"))
            .arg("--cert")
            .arg(dir.join("gateway.pem"))
            .arg("--key")
            .arg(dir.join("gateway.key"))
            .args(["--connections", "4", "--rate", "200", "--duration", "120"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Self(child)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_live_decisions_status_explanations_and_lookups_in_a_browser() {
    let dir = temp_dir("console");
    let spool = dir.join("events");
    let mut served = Served::start(
        &dir,
        &["--site", EXAMPLE, "--events-dir", spool.to_str().unwrap()],
        &[],
    );
    let http = served.http().await;
    let _client = served.client().await; // answers QUIC: ready for load
    let load = Load::start(&dir, &served);
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console");
    std::fs::create_dir_all(&shots).unwrap();
    let base = format!("http://{http}/ui/");
    let profile = dir.join("chromium-profile");

    let status: Value = get(http, "/v1/status").await.json();
    let version = status["snapshot"]["version"].as_u64().unwrap();

    let out = shots.clone();
    let mut browser = tokio::task::spawn_blocking(move || {
        let shots = out;
        let mut browser = Browser::launch(&profile);

        // Live: decisions arrive, grants and denies both, with the stolen
        // card of the example site raising an alarm on top.
        browser.navigate(&format!("{base}#live"));
        let rows = browser.wait_for(
            "live decisions with grants, denies and a stolen-card alarm",
            r#"document.querySelectorAll('#live-table tbody tr.grant').length >= 2
               && document.querySelectorAll('#live-table tbody tr.deny').length >= 2
               && [...document.querySelectorAll('#alarms .alarm')].some(a => a.dataset.kind === 'stolen_credential')"#,
            r#"[...document.querySelectorAll('#live-table tbody tr')].map(r => [...r.cells].map(c => c.textContent))"#,
        );
        let rows = rows.as_array().unwrap();
        let readers: Vec<&str> = rows.iter().map(|r| r[4].as_str().unwrap()).collect();
        assert!(
            readers.iter().all(|r| !r.is_empty()),
            "every row names its reader: {rows:?}"
        );
        let reasons: Vec<&str> = rows.iter().map(|r| r[2].as_str().unwrap()).collect();
        assert!(reasons.contains(&"granted"), "{reasons:?}");
        browser.screenshot(&shots.join("live.png"));

        // The filter: denies only, then nothing but denies arrives.
        browser.run(
            "const v = document.querySelector('#live-filter [name=verdict]'); \
             v.value = 'deny'; v.dispatchEvent(new Event('change', { bubbles: true }));",
        );
        let verdicts = browser.wait_for(
            "only denies after filtering",
            r#"(() => { const rows = [...document.querySelectorAll('#live-table tbody tr')];
                 return rows.length >= 3 && rows.every(r => r.classList.contains('deny')); })()"#,
            r#"[...document.querySelectorAll('#live-table tbody tr')].map(r => r.cells[1].textContent)"#,
        );
        assert!(
            verdicts.as_array().unwrap().iter().all(|v| v == "deny"),
            "{verdicts}"
        );

        // Status: the snapshot's version, a decision rate and service times.
        browser.run("location.hash = '#status'");
        let figures = browser.wait_for(
            "status figures with a decision rate",
            r#"(() => { const f = id => document.querySelector(`[data-figure=${id}] .value`);
                 return f('rate') && Number(f('rate').textContent.replace(/\D/g, '')) > 0
                   && f('p99') && f('p99').textContent.includes('µs'); })()"#,
            r#"Object.fromEntries([...document.querySelectorAll('[data-figure]')].map(d => [d.dataset.figure, d.querySelector('.value').textContent]))"#,
        );
        assert_eq!(figures["version"], json!(version.to_string()), "{figures}");
        assert_eq!(figures["ready"], "yes", "{figures}");
        assert!(
            figures["connections"] != json!("0"),
            "the load's connections are counted: {figures}"
        );
        browser.screenshot(&shots.join("status.png"));

        // Explain: Monday 09:00 at the site is inside alice's hours at the
        // lobby; Monday 23:00 is not, and the trace says which rule.
        browser.run("location.hash = '#explain'");
        browser.wait_for(
            "the readers in the explain form",
            "document.querySelector('#explain-form [name=reader] option[value=\"lobby-in\"]')",
            "true",
        );
        let ask = |browser: &mut Browser, at: &str| {
            browser.run(&format!(
                "document.querySelector('#explain-result').replaceChildren(); \
                 const f = document.querySelector('#explain-form'); \
                 f.reader.value = 'lobby-in'; f.card.value = 'h10301:12:1001'; f.at.value = '{at}'; \
                 f.requestSubmit();"
            ));
            browser.wait_for(
                "an explanation",
                "document.querySelector('#explain-verdict')",
                r#"({ verdict: document.querySelector('#explain-verdict').textContent,
                     rules: [...document.querySelectorAll('#explain-steps tbody tr')].map(r => [r.cells[0].textContent, r.cells[1].textContent]) })"#,
            )
        };
        let night = ask(&mut browser, "2026-11-30T23:00");
        assert!(
            night["verdict"].as_str().unwrap().starts_with("DENY — outside_schedule"),
            "{night}"
        );
        assert!(
            night["rules"]
                .as_array()
                .unwrap()
                .contains(&json!(["access", "deny"])),
            "{night}"
        );
        let morning = ask(&mut browser, "2026-11-30T09:00");
        assert!(
            morning["verdict"].as_str().unwrap().starts_with("GRANT — granted"),
            "{morning}"
        );
        let rules: Vec<&str> = morning["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r[0].as_str().unwrap())
            .collect();
        for rule in ["reader", "credential", "holder", "door", "access"] {
            assert!(rules.contains(&rule), "{rule} in {rules:?}");
        }
        browser.screenshot(&shots.join("explain.png"));

        // Lookup: alice's cards and levels, and her recent events.
        browser.run("location.hash = '#lookup'");
        browser.run(
            "const f = document.querySelector('#lookup-form'); \
             f.q.value = 'alice'; f.requestSubmit();",
        );
        let found = browser.wait_for(
            "alice's cards, levels and recent events",
            "document.querySelectorAll('#holder-events tbody tr.grant, #holder-events tbody tr.deny').length > 0",
            r#"({ name: document.querySelector('#holder-name').textContent,
                 cards: [...document.querySelectorAll('#holder-cards tbody tr')].map(r => r.cells[0].textContent),
                 levels: [...document.querySelectorAll('#holder-levels tbody tr')].map(r => r.cells[0].textContent),
                 doors: [...document.querySelectorAll('#holder-doors tbody tr')].map(r => r.cells[0].textContent) })"#,
        );
        assert_eq!(found["name"], "Cardholder alice", "{found}");
        assert!(
            found["cards"]
                .as_array()
                .unwrap()
                .contains(&json!("h10301:12:1001")),
            "{found}"
        );
        assert!(!found["levels"].as_array().unwrap().is_empty(), "{found}");
        assert!(!found["doors"].as_array().unwrap().is_empty(), "{found}");
        browser.screenshot(&shots.join("lookup.png"));

        // A phone: each page fits the screen's width (wide tables scroll
        // inside their own box), and the live view still shows decisions.
        browser.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": true }),
        );
        // Elements past the screen's edge, or whose text runs past their
        // own edge, outside a scrolling box: what a failure names (once
        // the page was 397 px wide with no element past the edge).
        let measure = r#"({ width: document.documentElement.scrollWidth,
                 wide: [...document.querySelectorAll('body *')]
                     .filter(e => !e.parentElement.closest('.scroll')
                         && (e.getBoundingClientRect().right > 390
                             || (!e.classList.contains('scroll') && e.scrollWidth > e.clientWidth + 1 && e.clientWidth > 0)))
                     .slice(0, 8)
                     .map(e => `${e.tagName}#${e.id}.${e.className} right ${e.getBoundingClientRect().right}, text ${e.scrollWidth} px in ${e.clientWidth}: ${e.textContent.slice(0, 60)}`) })"#;
        for (page, ready) in [
            ("lookup", "document.querySelectorAll('#holder-cards tbody tr').length > 0"),
            ("live", "document.querySelectorAll('#live-table tbody tr').length > 0"),
        ] {
            browser.run(&format!("location.hash = '#{page}'"));
            // Measured once the phone's style applies (the emulation takes
            // effect after the call returns; measured without waiting, the
            // page was 397 px wide in 2 runs of 8) and the page shown is
            // the one asked for (the hash is routed by an event, after this
            // script).
            let found = browser.wait_for(
                &format!("the {page} page on a phone"),
                &format!(
                    "matchMedia('(max-width: 600px)').matches \
                     && !document.querySelector('#page-{page}').hidden && {ready}"
                ),
                measure,
            );
            let width = &found["width"];
            assert!(
                width.as_u64().unwrap() <= 390,
                "the {page} page is {width} px wide on a 390 px screen; past its edge: {}",
                found["wide"]
            );
        }
        browser.screenshot(&shots.join("phone.png"));
        browser
    })
    .await
    .unwrap();
    for page in ["live", "status", "explain", "lookup", "phone"] {
        let len = std::fs::metadata(shots.join(format!("{page}.png")))
            .unwrap()
            .len();
        assert!(len > 10_000, "{page}.png is {len} bytes");
    }
    drop(load);
    assert!(served.terminate().success());

    // With a token file the page loads, asks for the token, and shows the
    // data once it is given; the data was never served without it.
    let token = "console-token-0123456789";
    let token_file = dir.join("token");
    std::fs::write(&token_file, token).unwrap();
    let mut guarded = Served::start(
        &dir,
        &[
            "--site",
            EXAMPLE,
            "--http-token-file",
            token_file.to_str().unwrap(),
        ],
        &[],
    );
    let http = guarded.http().await;
    assert_eq!(get(http, "/v1/status").await.status, 401);
    let url = format!("http://{http}/ui/#status");
    tokio::task::spawn_blocking(move || {
        browser.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": 1200, "height": 900, "deviceScaleFactor": 1, "mobile": false }),
        );
        browser.navigate(&url);
        browser.wait_for(
            "the token form",
            "!document.querySelector('#login').hidden",
            "true",
        );
        let before = browser.wait_for(
            "no figures without the token",
            "true",
            "document.querySelectorAll('[data-figure]').length",
        );
        assert_eq!(before, json!(0), "figures shown without a token");
        browser.run(&format!(
            "document.querySelector('#token').value = '{token}'; \
             document.querySelector('#login').requestSubmit();"
        ));
        let version = browser.wait_for(
            "the status once the token is given",
            "document.querySelector('[data-figure=version] .value')",
            "document.querySelector('[data-figure=version] .value').textContent",
        );
        assert_eq!(version, json!("1"));
        browser.screenshot(&shots.join("token.png"));
    })
    .await
    .unwrap();
    assert!(guarded.terminate().success());
}
