//! Training is bitwise reproducible on several threads (issue 19, point 9): the same seed gives
//! the same step losses and the same adapter and optimiser bytes run after run on 2 threads, the
//! same bits on 1 thread as on 2, and a run stopped by Ctrl-C after its first epoch and resumed
//! ends with the bits of the uninterrupted run.
//!
//! The runs train every tensor (`--method full`) of the tiny fixture SAM, so every gradient sum
//! reaches the weights: LayerNorm γ and β over the rows, the relative-position tables over
//! windows and heads, biases over rows, products split across the threads. Batches of 3 images
//! make 12 chunks of rows per encoder LayerNorm, a count whose partial sums a parallel `reduce`
//! associated differently from run to run (before the fix 5 of 6 such runs ended with
//! different weights).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{epochs_done, fixtures, ok};

/// 12 generated scenes (a COCO data set) in `dir`.
fn scenes(dir: &Path) -> PathBuf {
    let out = Command::new(env!("CARGO_BIN_EXE_sam-cobot"))
        .args([
            "scenes",
            "--count",
            "12",
            "--size",
            "96",
            "--max-objects",
            "4",
        ])
        .arg("--out")
        .arg(dir)
        .output()
        .unwrap();
    ok(&out);
    dir.join("annotations.json")
}

/// `sam-cobot --threads <threads> train` of the tiny SAM on `data` into `out`, logging its steps
/// to `out.jsonl`.
fn train(threads: usize, data: &Path, out: &Path, epochs: usize) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sam-cobot"));
    cmd.args(["--threads", &threads.to_string(), "train", "--checkpoint"])
        .arg(fixtures().join("tiny256.pth"))
        .arg("--data")
        .arg(data)
        .arg("--images")
        .arg(data.with_file_name("images"))
        .args([
            "--batch", "3", "--method", "full", "--lr", "1e-3", "--seed", "7",
        ])
        .args(["--epochs", &epochs.to_string()])
        .arg("--log-jsonl")
        .arg(log(out))
        .arg("--out")
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

fn log(out: &Path) -> PathBuf {
    out.with_extension("jsonl")
}

/// What a run leaves, as text and bytes (the numbers as the files spell them, so equal means
/// equal bits).
#[derive(Debug, PartialEq)]
struct Run {
    /// `(step, loss)` of every logged step; a step logged again (by a resumed run) replaces
    /// the earlier line.
    step_losses: Vec<(String, String)>,
    /// Each epoch's mean loss, from `last/state.json`.
    epoch_losses: Vec<String>,
    adapter: Vec<u8>,
    optimizer: Vec<u8>,
}

/// The text of `"key":` 's value in a line of JSON (up to the next `,` or `}`).
fn field(line: &str, key: &str) -> String {
    let pattern = format!("\"{key}\":");
    let start = line
        .find(&pattern)
        .unwrap_or_else(|| panic!("no {key} in {line}"))
        + pattern.len();
    let rest = line[start..].trim_start();
    let end = rest.find([',', '}', '\n']).unwrap_or(rest.len());
    rest[..end].trim().to_string()
}

fn results(out: &Path) -> Run {
    let mut step_losses: Vec<(String, String)> = Vec::new();
    for line in std::fs::read_to_string(log(out)).unwrap().lines() {
        let (step, loss) = (field(line, "step"), field(line, "loss"));
        match step_losses.iter_mut().find(|(s, _)| *s == step) {
            Some(entry) => entry.1 = loss,
            None => step_losses.push((step, loss)),
        }
    }
    let last = out.join("last");
    let state = std::fs::read_to_string(last.join("state.json")).unwrap();
    Run {
        step_losses,
        epoch_losses: state
            .lines()
            .filter(|l| l.contains("\"mean_loss\""))
            .map(|l| field(l, "mean_loss"))
            .collect(),
        adapter: std::fs::read(last.join("adapter.safetensors")).unwrap(),
        optimizer: std::fs::read(last.join("optimizer.safetensors")).unwrap(),
    }
}

/// Where two runs first differ, for the failure message.
fn difference(a: &Run, b: &Run) -> String {
    if a.step_losses != b.step_losses {
        format!("step losses {:?} vs {:?}", a.step_losses, b.step_losses)
    } else if a.epoch_losses != b.epoch_losses {
        format!("epoch losses {:?} vs {:?}", a.epoch_losses, b.epoch_losses)
    } else if a.adapter != b.adapter {
        "adapter bytes".into()
    } else {
        "optimizer bytes".into()
    }
}

#[test]
fn two_thread_runs_repeat_bit_for_bit_and_match_one_thread() {
    let tmp = tempfile::tempdir().unwrap();
    let data = scenes(&tmp.path().join("data"));
    let run = |threads: usize, name: &str| {
        let out = tmp.path().join(name);
        ok(&train(threads, &data, &out, 1).output().unwrap());
        results(&out)
    };
    let first = run(2, "run0");
    assert_eq!(first.step_losses.len(), 4);
    assert_eq!(first.epoch_losses.len(), 1);
    for i in 1..5 {
        let again = run(2, &format!("run{i}"));
        assert!(
            again == first,
            "2-thread run {i} differs from the first: {}",
            difference(&first, &again)
        );
    }
    let single = run(1, "single");
    assert!(
        single == first,
        "1 thread differs from 2: {}",
        difference(&first, &single)
    );
}

#[test]
fn a_run_stopped_after_its_first_epoch_resumes_to_the_uninterrupted_bits() {
    let tmp = tempfile::tempdir().unwrap();
    let data = scenes(&tmp.path().join("data"));
    let whole = tmp.path().join("whole");
    ok(&train(2, &data, &whole, 2).output().unwrap());
    let uninterrupted = results(&whole);
    assert_eq!(uninterrupted.step_losses.len(), 8);
    assert_eq!(uninterrupted.epoch_losses.len(), 2);

    // Ctrl-C as soon as the first epoch's checkpoint is on disk: the run stops after its
    // current step of the second epoch. A run that finished before the signal came is tried
    // again.
    let parts = tmp.path().join("parts");
    let mut stopped = false;
    for _ in 0..5 {
        let _ = std::fs::remove_dir_all(&parts);
        let _ = std::fs::remove_file(log(&parts));
        let mut child = train(2, &data, &parts, 2)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while epochs_done(&parts) == 0 {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "no checkpoint written"
            );
            assert!(child.try_wait().unwrap().is_none(), "the run ended early");
            std::thread::sleep(Duration::from_millis(2));
        }
        // SAFETY: a plain signal to the child process this test started (and has not reaped).
        assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
        let status = child.wait().unwrap();
        if !status.success() && epochs_done(&parts) == 1 {
            stopped = true;
            break;
        }
    }
    assert!(stopped, "every run finished before Ctrl-C stopped it");
    assert!(parts.join("interrupted").exists());
    let mut resume = train(2, &data, &parts, 2);
    resume.arg("--resume");
    ok(&resume.output().unwrap());
    assert_eq!(epochs_done(&parts), 2);
    let resumed = results(&parts);
    assert!(
        resumed == uninterrupted,
        "the resumed run differs from the uninterrupted one: {}",
        difference(&uninterrupted, &resumed)
    );
}
