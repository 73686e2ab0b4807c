//! A run folder (`train --out`, `pretrain --out`) is claimed before anything is written: a new
//! run needs a folder that is empty or absent; `--resume` continues the run it holds; `--force`
//! starts over, removing only the files sam-cobot writes there, so a user's own files survive.

use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::files::guard::remove_for_force;

/// `train`'s resolved settings, written at the top of its run folder.
pub const EXPERIMENT_FILE: &str = "experiment.toml";

/// What a run writes at the top of its folder (the checkpoint folders also leave hidden
/// `.<name>.tmp` / `.<name>.old` siblings while they are swapped in, and files their own
/// `.<name>.*.tmp` while written).
pub const RUN_FILES: [&str; 6] = [
    "best",
    "last",
    "interrupted",
    "val",
    "training.png",
    EXPERIMENT_FILE,
];

/// What the folders among [`RUN_FILES`] hold (checkpoints; pretraining's validation scenes).
const CHECKPOINT_FILES: [&str; 7] = [
    "adapter.safetensors",
    "model.safetensors",
    "optimizer.safetensors",
    "state.json",
    "settings.json",
    "annotations.json",
    "images",
];

/// Makes `out` ready for a run: with `resume` it must hold one (the caller reads it); otherwise
/// it must be empty or absent, or `force` removes the run's own files from it first.
pub fn claim_run_dir(out: &Path, resume: bool, force: bool) -> Result<()> {
    if resume {
        return Ok(());
    }
    let entries: Vec<String> = match std::fs::read_dir(out) {
        Ok(rd) => rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => bail!("--out {}: {e}", out.display()),
    };
    if !entries.is_empty() && !force {
        let holds_run = entries.iter().any(|e| is_run_file(e));
        bail!(
            "--out {} {}: --resume continues {}, --force starts over (removing only the files \
             sam-cobot writes: {})",
            out.display(),
            if holds_run {
                "holds a run"
            } else {
                "is not empty"
            },
            if holds_run { "it" } else { "a run" },
            RUN_FILES.join(", ")
        );
    }
    // A checkpoint folder is replaced whole when the run saves: files of the user's in it would
    // be lost, so they stop `--force` too.
    for name in entries.iter().filter(|e| RUN_FILES.contains(&e.as_str())) {
        let foreign: Vec<String> = std::fs::read_dir(out.join(name))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|f| !CHECKPOINT_FILES.contains(&f.as_str()))
            .collect();
        if !foreign.is_empty() {
            bail!(
                "--force: {} holds files sam-cobot did not write ({}); move them first",
                out.join(name).display(),
                foreign.join(", ")
            );
        }
    }
    for name in entries.iter().filter(|e| is_run_file(e)) {
        remove_for_force(&out.join(name))?;
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))
}

/// A run that failed before its first checkpoint leaves nothing behind, so the same command
/// can be given again: what it wrote first (`train`'s settings file, pretraining's validation
/// scenes) goes, and the folder too if that empties it.
pub fn forget_unstarted_run(out: &Path) {
    let saved = ["last", ".last.old", "interrupted"];
    if saved.iter().all(|d| !out.join(d).exists()) {
        let _ = std::fs::remove_file(out.join(EXPERIMENT_FILE));
        let _ = std::fs::remove_dir_all(out.join("val"));
        let _ = std::fs::remove_dir(out); // only if empty
    }
}

/// Whether `name` (an entry at the top of a run folder) is one sam-cobot writes.
fn is_run_file(name: &str) -> bool {
    let hidden = name.strip_prefix('.').unwrap_or(name);
    RUN_FILES.iter().any(|f| {
        name == *f
            || (name.starts_with('.')
                && hidden.strip_prefix(f).is_some_and(|rest| {
                    rest.starts_with('.') && rest.ends_with(".tmp") || rest == ".old"
                }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_with_files_needs_resume_or_force_and_force_keeps_the_users_files() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        claim_run_dir(&out, false, false).unwrap();
        std::fs::create_dir_all(out.join("best")).unwrap();
        std::fs::write(out.join("best/state.json"), "{}").unwrap();
        std::fs::write(out.join("best/mine.txt"), "x").unwrap();
        std::fs::write(out.join("notes.txt"), "mine").unwrap();
        std::fs::write(out.join(".last.old"), "").unwrap();
        std::fs::write(out.join(".training.png.7.0.tmp"), "").unwrap();
        let err = claim_run_dir(&out, false, false).unwrap_err().to_string();
        assert!(
            err.contains("holds a run") && err.contains("--force"),
            "{err}"
        );
        claim_run_dir(&out, true, false).unwrap();
        let err = claim_run_dir(&out, false, true).unwrap_err().to_string();
        assert!(
            err.contains("mine.txt") && err.contains("move them"),
            "{err}"
        );
        assert!(out.join("best/mine.txt").exists());
        std::fs::remove_file(out.join("best/mine.txt")).unwrap();
        claim_run_dir(&out, false, true).unwrap();
        let left: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(left, ["notes.txt"]);
    }

    #[test]
    fn unrelated_files_are_named_as_such() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("photo.png"), "x").unwrap();
        let err = claim_run_dir(dir.path(), false, false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not empty"), "{err}");
        assert!(!is_run_file("photo.png") && !is_run_file(".bestx.old"));
        assert!(is_run_file(".best.tmp") && is_run_file(".experiment.toml.1.2.tmp"));
    }
}
