//! The images a command is given: files as named, folders by their image files.

use std::path::PathBuf;

use anyhow::{Result, bail};

use crate::data::list_images;

/// The files in `paths`, each folder replaced by its image files (by name); `flag` names the
/// option in errors.
pub fn image_files(flag: &str, paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let found =
                list_images(path).map_err(|e| anyhow::anyhow!("{flag} {}: {e}", path.display()))?;
            if found.is_empty() {
                bail!("{flag} {}: no image files in this folder", path.display());
            }
            files.extend(found);
        } else if path.is_file() {
            files.push(path.clone());
        } else {
            bail!("{flag} {}: no such file or folder", path.display());
        }
    }
    Ok(files)
}
