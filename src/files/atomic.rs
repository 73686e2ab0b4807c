//! Atomic file writes: write a temporary file in the target's directory, then rename it over the
//! target, so a crash never leaves a half-written file behind.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};

/// Writes `path` through `fill`; the file appears complete or not at all.
///
/// The temporary file (`.<name>.<pid>.<n>.tmp`) sits in the same directory so the final rename
/// stays on one file system; it is removed again if anything fails.
pub fn write_atomic<F>(path: &Path, fill: F) -> Result<()>
where
    F: FnOnce(&mut dyn Write) -> Result<()>,
{
    let tmp = temp_path(path);
    let result = write_then_rename(path, &tmp, fill);
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write {}", path.display()))
}

fn write_then_rename<F>(path: &Path, tmp: &Path, fill: F) -> Result<()>
where
    F: FnOnce(&mut dyn Write) -> Result<()>,
{
    let file = OpenOptions::new().write(true).create_new(true).open(tmp)?;
    let mut w = BufWriter::new(file);
    fill(&mut w)?;
    let file: File = w.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    drop(file);
    fs::rename(tmp, path)?;
    Ok(())
}

/// Fills a fresh folder beside `dir` (`.<name>.tmp`) through `fill`, then swaps it in for `dir`,
/// so `dir` is always either the old folder or the complete new one. A crash between the two
/// renames leaves the old one as `.<name>.old` (see [`previous_dir`]).
pub fn write_dir_atomic<F>(dir: &Path, fill: F) -> Result<()>
where
    F: FnOnce(&Path) -> Result<()>,
{
    let name = dir
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let sibling = |suffix: &str| dir.with_file_name(format!(".{name}.{suffix}"));
    let (tmp, old) = (sibling("tmp"), sibling("old"));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    fill(&tmp)?;
    let _ = fs::remove_dir_all(&old);
    if dir.exists() {
        fs::rename(dir, &old).with_context(|| format!("cannot move {}", dir.display()))?;
    }
    fs::rename(&tmp, dir).with_context(|| format!("cannot write {}", dir.display()))?;
    let _ = fs::remove_dir_all(&old);
    Ok(())
}

/// `dir`, or the previous version [`write_dir_atomic`] left when a crash hit between its renames.
pub fn previous_dir(dir: &Path) -> PathBuf {
    if dir.exists() {
        return dir.to_path_buf();
    }
    let name = dir
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    dir.with_file_name(format!(".{name}.old"))
}

fn temp_path(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = format!(".{name}.{}.{n}.tmp", std::process::id());
    match path.parent() {
        Some(dir) => dir.join(tmp),
        None => PathBuf::from(tmp),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sam-cobot-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn writes_and_leaves_no_temp_file() {
        let dir = scratch_dir("atomic-ok");
        let path = dir.join("a.bin");
        write_atomic(&path, |w| Ok(w.write_all(b"hello")?)).unwrap();
        write_atomic(&path, |w| Ok(w.write_all(b"again")?)).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"again");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn failure_keeps_old_file_and_cleans_up() {
        let dir = scratch_dir("atomic-fail");
        let path = dir.join("a.bin");
        fs::write(&path, b"old").unwrap();
        let err = write_atomic(&path, |w| {
            w.write_all(b"partial")?;
            anyhow::bail!("boom")
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("a.bin"));
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn unwritable_path_names_the_path() {
        let path = Path::new("/nonexistent-dir-sam-cobot/x.npy");
        let err = write_atomic(path, |_| Ok(())).unwrap_err();
        assert!(format!("{err:#}").contains("/nonexistent-dir-sam-cobot/x.npy"));
    }
}
