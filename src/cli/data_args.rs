//! The flags that name a data set and its preprocessing, shared by `eval`, `train` and `stats`.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};

use crate::data::preprocess::{Preprocessing, SONAR_MEAN, SONAR_STD};
use crate::data::{DataSource, Dataset, Format};

#[derive(Args, Debug, Clone)]
pub struct DataArgs {
    /// Data set: a folder (marine-debris layout, or images/ + masks/) or a COCO annotations file.
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long, default_value = "auto", help = format!("auto (detected), {}", Format::names()))]
    pub format: String,
    /// COCO image folder (default: images/ beside or above the annotations file).
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// A list of image names to use (one per line).
    #[arg(long)]
    pub split: Option<PathBuf>,
    /// Stop at the first unreadable item instead of skipping it.
    #[arg(long)]
    pub strict: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PreprocessingKind {
    /// SAM's: longest side to S, bottom/right padding, SAM's pixel statistics.
    Sam,
    /// The paper's sonar one: centred square padding, the data set's own mean/std.
    Sonar,
}

crate::settings! {
    /// How images become model inputs.
    pub struct PreprocessSettings;
    /// The preprocessing settings as flags (`eval`, `train`).
    pub struct PreprocessFlags;
    /// Image preprocessing: SAM's, or the paper's sonar one (centred padding, --mean/--std).
    preprocessing: PreprocessingKind = PreprocessingKind::Sam,
    /// Data-set mean for --preprocessing sonar (0-1 scale; `sam-cobot stats` computes it).
    mean: f32 = SONAR_MEAN,
    /// Data-set standard deviation for --preprocessing sonar.
    std: f32 = SONAR_STD,
}

impl DataArgs {
    pub fn source(&self, split: Option<PathBuf>) -> Result<DataSource> {
        let format = match self.format.as_str() {
            "auto" => None,
            name => Some(
                name.parse::<Format>()
                    .map_err(|e| anyhow::anyhow!("--format {name}: {e}"))?,
            ),
        };
        Ok(DataSource {
            path: self.data.clone(),
            format,
            images: self.images.clone(),
            split,
            ..DataSource::default()
        })
    }

    pub fn open(&self) -> Result<Dataset> {
        Ok(Dataset::open(&self.source(self.split.clone())?)?)
    }
}

impl PreprocessSettings {
    /// The preprocessing, with its statistics checked.
    pub fn preprocessing(&self) -> Result<Preprocessing> {
        self.preprocessing.with_statistics(self.mean, self.std)
    }
}

impl PreprocessFlags {
    /// The preprocessing the flags give (the defaults where none is given).
    pub fn preprocessing(&self) -> Result<Preprocessing> {
        crate::settings::from_flags::<PreprocessSettings>(self.table()).preprocessing()
    }
}

impl PreprocessingKind {
    /// The preprocessing, with the data-set statistics the sonar path normalises by (checked).
    pub fn with_statistics(self, mean: f32, std: f32) -> Result<Preprocessing> {
        Ok(match self {
            PreprocessingKind::Sam => Preprocessing::Sam,
            PreprocessingKind::Sonar => {
                Preprocessing::check_statistics(mean, std).map_err(anyhow::Error::msg)?;
                Preprocessing::sonar(mean, std)
            }
        })
    }
}
