//! A `sam-cobot serve` process for the tests that talk to it (tests/serve.rs, tests/browser.rs).

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

pub const BASE: &str = super::BASE_256;

/// A server process, stopped when dropped.
pub struct Server {
    child: Child,
    pub url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start(cache: &Path, extra: &[&str]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sam-cobot"))
        .args([
            "--threads",
            "2",
            "serve",
            "--checkpoint",
            BASE,
            "--port",
            "0",
            "--cache-dir",
        ])
        .arg(cache)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("serving on ")
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .trim_end_matches('/')
        .to_string();
    Server { child, url }
}

/// Status and JSON body of a request (errors included).
pub fn call(request: ureq::Request, body: Option<&[u8]>) -> (u16, Value) {
    let result = match body {
        Some(bytes) => request.send_bytes(bytes),
        None => request.call(),
    };
    let response = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{e}"),
    };
    let status = response.status();
    let mut text = String::new();
    response.into_reader().read_to_string(&mut text).unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

pub fn post_json(server: &Server, route: &str, body: &Value) -> (u16, Value) {
    let request =
        ureq::post(&format!("{}{route}", server.url)).set("Content-Type", "application/json");
    call(request, Some(body.to_string().as_bytes()))
}

/// The mask of a /predict answer as 0/1, row-major.
pub fn mask_of(answer: &Value, index: usize) -> Vec<u8> {
    let seg = &answer["masks"][index]["segmentation"];
    let (h, w) = (
        seg["size"][0].as_u64().unwrap() as u32,
        seg["size"][1].as_u64().unwrap() as u32,
    );
    let rle =
        sam_cobot::rle::Rle::from_string(seg["counts"].as_str().unwrap().as_bytes(), h, w).unwrap();
    rle.decode_row_major()
        .unwrap()
        .iter()
        .map(|&b| u8::from(b))
        .collect()
}
