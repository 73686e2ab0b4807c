//! Checks, before a command writes anything, that none of its outputs is one of its inputs, the
//! same file as another of its outputs, or inside a folder it reads; and that an existing output
//! is only replaced when the user asked for it (`--force`). Paths are compared canonically
//! (symbolic links and `..` resolved), so `a.png` and `./x/../a.png` are the same file.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// The files and folders one command reads and writes, each with the flag that named it.
#[derive(Debug, Default)]
pub struct FileRoles {
    inputs: Vec<(String, PathBuf)>,
    outputs: Vec<(String, PathBuf)>,
}

impl FileRoles {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a file or folder the command reads.
    pub fn input(&mut self, flag: &str, path: &Path) -> &mut Self {
        self.inputs.push((flag.to_string(), canonical(path)));
        self
    }

    /// Records a file the command writes; refused when it is an input, lies inside an input
    /// folder, or is another output.
    pub fn output(&mut self, flag: &str, path: &Path) -> Result<&mut Self> {
        let target = canonical(path);
        for (other, input) in &self.inputs {
            if target == *input {
                bail!(
                    "{flag} {}: that is the {other} file; refusing to overwrite an input",
                    path.display()
                );
            }
            if input.is_dir() && target.starts_with(input) {
                bail!(
                    "{flag} {}: it lies inside {other} {}, which this command reads; write \
                     elsewhere",
                    path.display(),
                    input.display()
                );
            }
        }
        if let Some((other, _)) = self.outputs.iter().find(|(_, o)| *o == target) {
            bail!(
                "{flag} {}: {other} writes that file too; give each output its own path",
                path.display()
            );
        }
        self.outputs.push((flag.to_string(), target));
        Ok(self)
    }

    /// Records a folder the command writes into; refused when it is, or lies inside, an input
    /// folder, or is an input file.
    pub fn output_dir(&mut self, flag: &str, dir: &Path) -> Result<&mut Self> {
        let target = canonical(dir);
        if let Some((other, input)) = self.inputs.iter().find(|(_, i)| target.starts_with(i)) {
            bail!(
                "{flag} {}: it is or lies inside {other} {}, which this command reads; write \
                 elsewhere",
                dir.display(),
                input.display()
            );
        }
        self.outputs.push((flag.to_string(), target));
        Ok(self)
    }

    /// Records a file or folder the command removes or replaces whole; refused when an input is
    /// it or lies inside it.
    pub fn replaced(&mut self, flag: &str, path: &Path) -> Result<&mut Self> {
        let target = canonical(path);
        if let Some((other, input)) = self.inputs.iter().find(|(_, i)| i.starts_with(&target)) {
            bail!(
                "{flag}: this run replaces {}, which holds {other} {}; move that first or write \
                 elsewhere",
                path.display(),
                input.display()
            );
        }
        self.outputs.push((flag.to_string(), target));
        Ok(self)
    }
}

/// Makes `dir` ready for a command that writes the entries `own` at its top: it must be absent
/// or empty, or with `force` those entries are removed first and the user's other files kept.
pub fn claim_output_dir(flag: &str, dir: &Path, force: bool, own: &[&str]) -> Result<()> {
    let holds_something = match std::fs::read_dir(dir) {
        Ok(mut entries) => entries.next().is_some(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => bail!("{flag} {}: {e}", dir.display()),
    };
    if holds_something && !force {
        bail!(
            "{flag} {}: the folder is not empty; --force replaces what this command writes there \
             ({}) and keeps the rest",
            dir.display(),
            own.join(", ")
        );
    }
    for name in own {
        let path = dir.join(name);
        if path.exists() {
            remove_for_force(&path)?;
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))
}

/// Removes a file or a whole folder that `--force` replaces.
pub fn remove_for_force(path: &Path) -> Result<()> {
    let removed = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    removed.with_context(|| format!("--force: cannot remove {}", path.display()))
}

/// Refuses to replace an existing `path` unless `force`.
pub fn refuse_existing(flag: &str, path: &Path, force: bool) -> Result<()> {
    if path.exists() && !force {
        bail!(
            "{flag} {}: the file exists; --force replaces it",
            path.display()
        );
    }
    Ok(())
}

/// `path` made absolute with links resolved, also when it (or its last parts) does not exist
/// yet: the deepest existing ancestor is resolved and the rest appended.
pub fn canonical(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(resolved) = existing.canonicalize() {
            return rest.iter().rev().fold(resolved, |p, part| p.join(part));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => return absolute,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_output_may_not_be_an_input_or_another_output() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("a.png");
        std::fs::write(&image, b"x").unwrap();
        let mut roles = FileRoles::new();
        roles.input("--image", &image);
        let same = dir.path().join("sub/../a.png");
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let err = roles.output("--out", &same).unwrap_err().to_string();
        assert!(err.contains("--image") && err.contains("--out"), "{err}");
        roles.output("--out", &dir.path().join("m.png")).unwrap();
        let err = roles
            .output("--overlay", &dir.path().join("./m.png"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--out writes that file too"), "{err}");
    }

    #[test]
    fn an_output_folder_may_not_be_inside_an_input_folder() {
        let dir = tempfile::tempdir().unwrap();
        let images = dir.path().join("data/images");
        std::fs::create_dir_all(&images).unwrap();
        let mut roles = FileRoles::new();
        roles.input("--data", &images);
        assert!(roles.output_dir("--out", &images).is_err());
        assert!(roles.output_dir("--out", &images.join("new")).is_err());
        roles
            .output_dir("--out", &dir.path().join("report"))
            .unwrap();
    }

    #[test]
    fn an_existing_file_needs_force() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.safetensors");
        refuse_existing("--out", &path, false).unwrap();
        std::fs::write(&path, b"x").unwrap();
        let err = refuse_existing("--out", &path, false).unwrap_err();
        assert!(err.to_string().contains("--force"), "{err}");
        refuse_existing("--out", &path, true).unwrap();
    }

    #[test]
    fn a_replaced_folder_may_not_hold_an_input() {
        let dir = tempfile::tempdir().unwrap();
        let start = dir.path().join("run/last/model.safetensors");
        let mut roles = FileRoles::new();
        roles.input("--init", &start);
        let err = roles
            .replaced("--out", &dir.path().join("run/last"))
            .unwrap_err();
        assert!(err.to_string().contains("--init"), "{err}");
        roles
            .replaced("--out", &dir.path().join("run/best"))
            .unwrap();
    }

    #[test]
    fn a_claimed_folder_keeps_the_users_files() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        claim_output_dir("--out", &out, false, &["report"]).unwrap();
        std::fs::create_dir(out.join("report")).unwrap();
        std::fs::write(out.join("report/a.json"), "{}").unwrap();
        std::fs::write(out.join("notes.txt"), "mine").unwrap();
        let err = claim_output_dir("--out", &out, false, &["report"]).unwrap_err();
        assert!(err.to_string().contains("--force"), "{err}");
        claim_output_dir("--out", &out, true, &["report"]).unwrap();
        assert!(!out.join("report").exists());
        assert!(out.join("notes.txt").is_file());
    }
}
