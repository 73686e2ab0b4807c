//! The page of `sam-cobot serve` in a real browser: headless Chromium driven through WebDriver
//! (chromedriver, spoken to in plain HTTP): upload an image, click a point, drag a box, see a
//! mask appear, download it and compare it with the API's mask for the same prompts.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them when it can); without
//! them the test says "skipped" and passes. Screenshots go to the test's temporary folder, or to
//! the folder in `SAM_COBOT_SCREENSHOTS` (how the README's screenshot was made).

mod common;

use std::ffi::OsStr;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::server::{BASE, Server, call, mask_of, post_json, start};
use common::{fixtures, succeeds};
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

struct Driver {
    process: Child,
    url: String,
    session: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = ureq::delete(&format!("{}/session/{}", self.url, self.session)).call();
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

impl Driver {
    fn start(downloads: &Path) -> Driver {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let process = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        wait_for(Duration::from_secs(20), || {
            ureq::get(&format!("{url}/status"))
                .call()
                .is_ok()
                .then_some(())
        });
        let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900"],
                "prefs": {"download.default_directory": downloads, "download.prompt_for_download": false}}}}});
        let (status, answer) = send(&format!("{url}/session"), &caps);
        assert_eq!(status, 200, "{answer}");
        let session = answer["value"]["sessionId"].as_str().unwrap().to_string();
        Driver {
            process,
            url,
            session,
        }
    }

    fn post(&self, route: &str, body: &Value) -> Value {
        let (status, answer) = send(
            &format!("{}/session/{}{route}", self.url, self.session),
            body,
        );
        assert_eq!(status, 200, "{route}: {answer}");
        answer["value"].clone()
    }

    fn get(&self, route: &str) -> Value {
        let url = format!("{}/session/{}{route}", self.url, self.session);
        let (status, answer) = call(ureq::get(&url), None);
        assert_eq!(status, 200, "{route}: {answer}");
        answer["value"].clone()
    }

    fn element(&self, css: &str) -> String {
        let found = self.post("/element", &json!({"using": "css selector", "value": css}));
        found
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap()
            .to_string()
    }

    fn click(&self, css: &str) {
        let element = self.element(css);
        self.post(&format!("/element/{element}/click"), &json!({}));
    }

    fn script(&self, body: &str) -> Value {
        self.post("/execute/sync", &json!({"script": body, "args": []}))
    }

    /// Pointer actions on the element `css`, at image pixel offsets from its top-left corner
    /// (the canvas shows the image at its own size).
    fn pointer(&self, css: &str, steps: &[(&str, f64, f64)]) {
        let element = self.element(css);
        let size = self.get(&format!("/element/{element}/rect"));
        let (w, h) = (
            size["width"].as_f64().unwrap(),
            size["height"].as_f64().unwrap(),
        );
        let origin = json!({"element-6066-11e4-a52e-4f735466cecf": element});
        let mut actions = Vec::new();
        for &(kind, x, y) in steps {
            let (dx, dy) = ((x - w / 2.0).round(), (y - h / 2.0).round());
            match kind {
                "move" => actions.push(json!({"type": "pointerMove", "origin": origin, "x": dx, "y": dy, "duration": 50})),
                "down" => actions.push(json!({"type": "pointerDown", "button": 0})),
                "up" => actions.push(json!({"type": "pointerUp", "button": 0})),
                other => panic!("{other}"),
            }
        }
        self.post(
            "/actions",
            &json!({"actions": [{"type": "pointer", "id": "mouse",
            "parameters": {"pointerType": "mouse"}, "actions": actions}]}),
        );
    }

    fn screenshot(&self, path: &Path) {
        let shot = self.get("/screenshot");
        let png = BASE64.decode(shot.as_str().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }

    /// Waits until the page's status line contains `text` (failing on an error it shows).
    fn wait_status(&self, text: &str) {
        wait_for(Duration::from_secs(60), || {
            let status = self.script("return document.getElementById('status').textContent;");
            let status = status.as_str().unwrap_or_default().to_string();
            let error = self.script("return document.getElementById('status').className;");
            assert_ne!(error, "error", "the page says: {status}");
            status.contains(text).then_some(())
        });
    }
}

fn send(url: &str, body: &Value) -> (u16, Value) {
    let request = ureq::post(url).set("Content-Type", "application/json");
    call(request, Some(body.to_string().as_bytes()))
}

fn wait_for<T>(limit: Duration, mut ready: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = ready() {
            return v;
        }
        assert!(started.elapsed() < limit, "timed out");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_page_segments_what_is_clicked_and_downloads_the_apis_mask() {
    if !Path::new(CHROMIUM).exists() || !Path::new(CHROMEDRIVER).exists() {
        eprintln!(
            "skipped: {CHROMIUM} or {CHROMEDRIVER} is missing (apt-get install chromium chromium-driver)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let shots: PathBuf =
        std::env::var_os("SAM_COBOT_SCREENSHOTS").map_or(dir.path().to_path_buf(), PathBuf::from);
    let downloads = dir.path().join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    // An adapter of the base, for the side-by-side view (one quick epoch on three scenes).
    let scenes = dir.path().join("scenes");
    let run = dir.path().join("run");
    let cli = |args: &[&OsStr]| {
        succeeds(
            Command::new(env!("CARGO_BIN_EXE_sam-cobot"))
                .args(["--threads", "2"])
                .args(args),
        )
    };
    let os = |s: &'static str| OsStr::new(s);
    cli(&[
        os("scenes"),
        os("--out"),
        scenes.as_os_str(),
        os("--count"),
        os("3"),
        os("--size"),
        os("128"),
    ]);
    let annotations = scenes.join("annotations.json");
    cli(&[
        os("train"),
        os("--checkpoint"),
        os(BASE),
        os("--data"),
        annotations.as_os_str(),
        os("--method"),
        os("lora"),
        os("--epochs"),
        os("1"),
        os("--out"),
        run.as_os_str(),
    ]);
    let adapter = run.join("best/adapter.safetensors");
    let server: Server = start(
        &dir.path().join("cache"),
        &["--adapter", adapter.to_str().unwrap()],
    );
    let driver = Driver::start(&downloads);
    driver.post("/url", &json!({"url": format!("{}/", server.url)}));
    let upload = driver.element("#upload");
    let image = fixtures().join("image_300x200.png");
    driver.post(
        &format!("/element/{upload}/value"),
        &json!({"text": image.to_str().unwrap()}),
    );
    driver.wait_status("Click or drag");

    driver.pointer(
        ".overlay",
        &[("move", 120.0, 90.0), ("down", 0.0, 0.0), ("up", 0.0, 0.0)],
    );
    driver.wait_status("ms");
    let iou = driver.script("return document.querySelector('.iou').textContent;");
    assert!(iou.as_str().unwrap().starts_with("predicted IoU"), "{iou}");
    driver.screenshot(&shots.join("serve-point.png"));

    // Forget the point's answer, so that the next one is the box's.
    driver.script("state.views[0].result = null; return 0;");
    driver.pointer(
        ".overlay",
        &[
            ("move", 60.0, 40.0),
            ("down", 0.0, 0.0),
            ("move", 220.0, 160.0),
            ("up", 0.0, 0.0),
        ],
    );
    wait_for(Duration::from_secs(30), || {
        let b = driver.script("return state.box && state.views[0].result ? 1 : 0;");
        (b == json!(1)).then_some(())
    });
    driver.wait_status("ms");
    driver.screenshot(&shots.join("serve-box.png"));

    let prompts =
        driver.script("return {image: state.imageId, points: state.points, box: state.box};");
    driver.click("#download-mask");
    let downloaded = wait_for(Duration::from_secs(20), || {
        let path = downloads.join("mask.png");
        path.exists().then(|| image::open(&path).ok()).flatten()
    });
    let page: Vec<u8> = downloaded
        .to_luma8()
        .pixels()
        .map(|p| u8::from(p.0[0] > 127))
        .collect();
    let (status, answer) = post_json(
        &server,
        "/predict",
        &json!({"model": "base", "image": prompts["image"], "points": prompts["points"],
            "boxes": [prompts["box"]]}),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        page,
        mask_of(&answer, 0),
        "the downloaded PNG is the API's mask"
    );
    assert!(page.contains(&1), "the mask is not empty");

    // Undo takes the box back; three candidates, and a click picks one.
    driver.click("#undo");
    wait_for(Duration::from_secs(30), || {
        (driver.script("return state.box === null && state.points.length === 1;") == json!(true))
            .then_some(())
    });
    driver.click("#multimask");
    wait_for(Duration::from_secs(30), || {
        let n = driver.script("return document.querySelectorAll('.candidates figure').length;");
        (n == json!(3)).then_some(())
    });
    driver.click(".candidates figure:nth-child(2)");
    assert_eq!(driver.script("return state.views[0].picked;"), json!(1));
    driver.screenshot(&shots.join("serve-candidates.png"));

    // Segment everything: the masks of the segment-everything fixture's `grid` run.
    for (id, value) in [("pps", "16"), ("iou", "0.5"), ("stability", "0.7")] {
        driver.script(&format!(
            "document.getElementById('{id}').value = '{value}'; return 0;"
        ));
    }
    driver.click("#everything");
    driver.wait_status("masks");
    let found = driver.script("return state.views[0].everything.length;");
    let fixture: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("amg/grid.json")).unwrap())
            .unwrap();
    assert_eq!(found, json!(fixture["masks"].as_array().unwrap().len()));
    driver.screenshot(&shots.join("serve-everything.png"));

    // The adapter beside the base, on the same prompts.
    driver.script(
        "const c = document.getElementById('compare'); c.value = 'adapter'; \
         c.dispatchEvent(new Event('change')); return 0;",
    );
    driver.wait_status("Click or drag");
    driver.pointer(
        ".view:nth-child(2) .overlay",
        &[("move", 120.0, 90.0), ("down", 0.0, 0.0), ("up", 0.0, 0.0)],
    );
    wait_for(Duration::from_secs(30), || {
        let both =
            driver.script("return state.views.length === 2 && state.views.every(v => v.result);");
        (both == json!(true)).then_some(())
    });
    driver.screenshot(&shots.join("serve-side-by-side.png"));
}
