//! Feeds arbitrary bytes to the checkpoint readers: none may panic, hang or over-allocate.
//!
//! Each input is tried as a whole `.pth` archive, as a safetensors file, and as the `data.pkl`
//! of a well-formed archive: mutated archives mostly fail the zip CRC check, so the last form is
//! what actually reaches the pickle interpreter and the tensor layout checks.
#![no_main]

use std::io::{Cursor, Write};

use libfuzzer_sys::fuzz_target;
use zip::write::SimpleFileOptions;

#[allow(dead_code, unused_imports)]
#[path = "../../src/checkpoint/mod.rs"]
mod checkpoint;

fuzz_target!(|data: &[u8]| {
    let _ = checkpoint::read_pth(data);
    let _ = checkpoint::read_safetensors(data);
    let _ = checkpoint::read_pth(&archive_around(data));
});

/// An archive with `data` as its pickle and small storages under the keys torch uses first.
fn archive_around(pickle: &[u8]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let storage: Vec<u8> = (0..64u8).collect();
    let mut add = |name: &str, bytes: &[u8]| {
        zip.start_file(name, opts).unwrap();
        zip.write_all(bytes).unwrap();
    };
    add("archive/data.pkl", pickle);
    for key in 0..8 {
        add(&format!("archive/data/{key}"), &storage);
    }
    zip.finish().unwrap().into_inner()
}
