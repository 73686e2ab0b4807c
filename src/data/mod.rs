//! Data-set readers: sonar (marine-debris FLS), COCO instances, and image / mask folder pairs.
//!
//! Every reader turns an item into a [`Sample`]: an RGB image (grey images become three identical
//! channels) and its objects, each with a box `[x1, y1, x2, y2]` (end-exclusive: pixels
//! `x1 <= x < x2`, `y1 <= y < y2`), a class index into [`Dataset::classes`], and a binary
//! per-object target mask (0 / 255) at the image's own size.
//!
//! [`Dataset::open`] only reads the index (folder listings, the annotation JSON, the split list);
//! [`Dataset::load`] reads the image and masks of one item. Broken data never panics: `load`
//! returns a [`DataError`] naming the file (and the object or value) so the caller can skip the
//! item and count it, or stop.
//!
//! Broken annotations (COCO) are dropped one by one, not with their item, and each is named:
//! - at open, annotations that belong to no item (an `image_id` matching no image) are left out
//!   and described in [`Dataset::warnings`] (`&[String]`, one message each);
//! - at load, [`Dataset::load_lenient`] returns a [`Loaded`]: the sample with its valid objects,
//!   and `dropped`, one [`DataError`] per annotation left out (unknown class, missing or empty
//!   segmentation, bad box, ...), naming the file, the annotation id and the reason.
//!   [`Dataset::load`] is the strict form: such an item is an error (its first broken
//!   annotation).
//!
//! Images and masks are read with [`open_image`]: the format comes from the file's content, not
//! its extension, and the EXIF orientation is applied as image viewers (and PIL's
//! `ImageOps.exif_transpose`) do, so sizes, boxes and masks refer to the image as it is shown.
//!
//! Formats ([`Format`]):
//! - `marine-debris` ([`marine_debris`]): `Images/<id>.png`, `Masks/<id>.png` (class ids),
//!   `BoxAnnotations/<id>.xml` (x, y, w, h boxes); target = `(mask == class)` inside the box
//!   (docs/methods.md#sonar-data).
//! - `coco` ([`coco`]): a COCO instances JSON; polygons and RLE decoded as pycocotools does
//!   ([`crate::rle`], docs/methods.md#other-data-formats); target = the decoded object mask; crowd annotations are skipped.
//! - `mask-folder` ([`mask_folder`]): `images/` and `masks/` paired by file stem; one object per
//!   8-connected component of the thresholded mask.
//!
//! Also here, used on loaded samples: [`augment`] (training augmentation), [`preprocess`]
//! (model input) and [`stats`] (data-set statistics).
//!
//! Detection (`DataSource::format == None`): a `.json` file → coco; a folder with `Images/`,
//! `Masks/` and `BoxAnnotations/` → marine-debris; a folder with `images/` and `masks/` →
//! mask-folder.
//!
//! Split lists (`DataSource::split`): one image name per line, with or without extension
//! (`<id>`, `<id>.png`, or a COCO `file_name`); blank lines and lines starting with `#` are
//! ignored; surrounding white space is trimmed. Only the listed items are used, in the listed
//! order (a name listed twice is used twice). A split file that does not exist, lists no name or
//! whose names are all missing is an `open` error; a listed name that is not in the data set is
//! an error of that item's `load` ([`DataError::NotInDataset`]), so a run can skip it, and
//! [`Dataset::missing`] / [`Dataset::split_report`] name them all up front.

pub mod augment;
pub mod coco;
pub mod degrade;
pub mod marine_debris;
pub mod mask_folder;
pub mod preprocess;
pub mod scenes;
pub mod stats;
pub mod synthetic;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// One object of a sample: its box prompt, class and binary target.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    /// `[x1, y1, x2, y2]`: the box covers pixels `x1 <= x < x2`, `y1 <= y < y2`.
    pub bbox: [u32; 4],
    /// Index into [`Dataset::classes`].
    pub class: usize,
    /// Per-object binary target at the image's own size: 0 or 255.
    pub mask: image::GrayImage,
}

/// One loaded item.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The item's name (as [`Dataset::name`]).
    pub name: String,
    /// The image; grey images become three identical channels.
    pub image: image::RgbImage,
    pub objects: Vec<Object>,
}

/// The on-disk layout of a data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// `Images/`, `Masks/`, `BoxAnnotations/` (+ optional `train.txt` / `val.txt` / `test.txt`).
    MarineDebris,
    /// A COCO instances JSON file plus an image folder.
    Coco,
    /// `images/` and `masks/` folders paired by file stem.
    MaskFolder,
}

impl Format {
    /// Every format, in the order messages and `--help` list them (the compiler does not check
    /// that a new variant is here: its name would not parse).
    pub const ALL: [Format; 3] = [Format::MarineDebris, Format::Coco, Format::MaskFolder];

    /// The names of [`Format::ALL`], for messages: `marine-debris, coco or mask-folder`.
    pub fn names() -> String {
        let names: Vec<&str> = Format::ALL.iter().map(|f| f.as_str()).collect();
        let (last, rest) = names.split_last().expect("formats exist");
        format!("{} or {last}", rest.join(", "))
    }

    /// The name used on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::MarineDebris => "marine-debris",
            Format::Coco => "coco",
            Format::MaskFolder => "mask-folder",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Format {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Format::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| DataError::UnknownFormat(s.to_string()))
    }
}

/// Where and how to read a data set. Build it with `..Default::default()`:
/// `DataSource { path: "data/ssdd/annotations/instances_train.json".into(), ..Default::default() }`.
#[derive(Debug, Clone, PartialEq)]
pub struct DataSource {
    /// The data-set folder (marine-debris, mask-folder) or the annotation JSON file (coco).
    pub path: PathBuf,
    /// `None`: detect from `path` (see the module documentation).
    pub format: Option<Format>,
    /// COCO image folder. `None`: see [`coco`] for the default search rule.
    pub images: Option<PathBuf>,
    /// A list of image names to use, in that order.
    pub split: Option<PathBuf>,
    /// mask-folder: a mask pixel is foreground when its grey value is `>= mask_threshold`
    /// (default 128).
    pub mask_threshold: u8,
    /// mask-folder: connected components with fewer pixels than this are dropped as noise
    /// (JPEG masks have speckles). Default 16; 0 or 1 keeps every component.
    pub min_object_area: u32,
}

impl Default for DataSource {
    fn default() -> Self {
        DataSource {
            path: PathBuf::new(),
            format: None,
            images: None,
            split: None,
            mask_threshold: 128,
            min_object_area: 16,
        }
    }
}

impl DataSource {
    /// A source with defaults for everything but the path.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        DataSource {
            path: path.into(),
            ..Default::default()
        }
    }
}

/// Everything that can go wrong reading a data set. Every message names the file, and the
/// object or value where there is one.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("unknown data-set format {0:?} (expected {names})", names = Format::names())]
    UnknownFormat(String),
    #[error("data set {}: not found", path.display())]
    NotFound { path: PathBuf },
    #[error("cannot detect the data-set format of {}: {reason}", path.display())]
    Detect { path: PathBuf, reason: String },
    #[error("{}: {message}", path.display())]
    Layout { path: PathBuf, message: String },
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file that is not a readable image; `message` says why, once (see [`open_image`]).
    #[error("cannot decode image {}: {message}", path.display())]
    Image { path: PathBuf, message: String },
    /// A malformed annotation file or field.
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
    #[error("split file {} does not exist", path.display())]
    SplitFileMissing { path: PathBuf },
    #[error("{name:?}, listed in split file {}, is not in the data set ({looked_in})", split.display())]
    NotInDataset {
        name: String,
        split: PathBuf,
        looked_in: String,
    },
    #[error("split file {} lists no names", split.display())]
    EmptySplit { split: PathBuf },
    #[error(
        "none of the {names} names in split file {} is in the data set ({looked_in}): {examples}",
        split.display()
    )]
    SplitMatchesNothing {
        split: PathBuf,
        names: usize,
        examples: String,
        looked_in: String,
    },
    #[error("missing {what}: {}", path.display())]
    MissingFile { path: PathBuf, what: String },
    #[error(
        "mask {} is {mask_w}x{mask_h} but its image {} is {image_w}x{image_h}",
        mask.display(),
        image.display()
    )]
    MaskSize {
        mask: PathBuf,
        mask_w: u32,
        mask_h: u32,
        image: PathBuf,
        image_w: u32,
        image_h: u32,
    },
    #[error("{}: {object}: box {bbox} lies outside the {width}x{height} image", path.display())]
    BoxOutside {
        path: PathBuf,
        object: String,
        bbox: String,
        width: u32,
        height: u32,
    },
    #[error("{}: {object}: box {bbox} has zero area", path.display())]
    EmptyBox {
        path: PathBuf,
        object: String,
        bbox: String,
    },
    #[error("{}: {object}: empty target mask ({detail})", path.display())]
    EmptyMask {
        path: PathBuf,
        object: String,
        detail: String,
    },
    #[error("{}: {object}: unknown class {class} (known: {known})", path.display())]
    UnknownClass {
        path: PathBuf,
        object: String,
        class: String,
        known: String,
    },
    #[error("item {index} out of range: the data set has {len} items")]
    IndexOutOfRange { index: usize, len: usize },
}

/// The readers behind a [`Dataset`].
#[derive(Debug, Clone)]
enum Reader {
    MarineDebris(marine_debris::MarineDebris),
    Coco(coco::Coco),
    MaskFolder(mask_folder::MaskFolder),
}

impl Reader {
    fn items(&self) -> Vec<ItemKey<'_>> {
        match self {
            Reader::MarineDebris(r) => r.items(),
            Reader::Coco(r) => r.items(),
            Reader::MaskFolder(r) => r.items(),
        }
    }
    /// The sample and the annotations left out of it (only COCO leaves any out).
    fn load(&self, i: usize) -> Result<(Sample, Vec<DataError>), DataError> {
        match self {
            Reader::MarineDebris(r) => r.load(i).map(|s| (s, Vec::new())),
            Reader::Coco(r) => r.load(i),
            Reader::MaskFolder(r) => r.load(i).map(|s| (s, Vec::new())),
        }
    }
    fn warnings(&self) -> &[String] {
        match self {
            Reader::Coco(r) => r.warnings(),
            Reader::MarineDebris(_) | Reader::MaskFolder(_) => &[],
        }
    }
    fn sources(&self) -> Vec<PathBuf> {
        match self {
            Reader::MarineDebris(r) => r.sources(),
            Reader::Coco(r) => r.sources(),
            Reader::MaskFolder(r) => r.sources(),
        }
    }
    fn looked_in(&self) -> String {
        match self {
            Reader::MarineDebris(r) => r.looked_in(),
            Reader::Coco(r) => r.looked_in(),
            Reader::MaskFolder(r) => r.looked_in(),
        }
    }
}

/// How a reader's item can be named in a split list.
pub(crate) struct ItemKey<'a> {
    /// The item's name ([`Dataset::name`]).
    pub name: &'a str,
    /// The image file name relative to its folder (with extension).
    pub file: &'a str,
}

/// The keys of the folder readers' `(name, file)` items.
fn item_keys(items: &[(String, String)]) -> Vec<ItemKey<'_>> {
    items
        .iter()
        .map(|(name, file)| ItemKey { name, file })
        .collect()
}

#[derive(Debug, Clone)]
enum Entry {
    Item(usize),
    Missing(String),
}

/// An item read by [`Dataset::load_lenient`]: the sample with its valid objects, and the
/// annotations that were left out of it.
#[derive(Debug)]
pub struct Loaded {
    pub sample: Sample,
    /// One error per annotation left out of `sample`, in file order; each names the annotation
    /// file, the annotation (COCO `id`) and its image, and the reason. Always empty for
    /// marine-debris and mask-folder, whose broken objects are errors of the item.
    pub dropped: Vec<DataError>,
}

/// An opened data set: its index, ready to [`load`](Dataset::load) items.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub format: Format,
    /// Class names; index 0 is the background where the format has one (all three do).
    pub classes: Vec<String>,
    split: Option<PathBuf>,
    entries: Vec<Entry>,
    names: Vec<String>,
    reader: Reader,
}

impl Dataset {
    /// Reads the index of a data set (listings, annotation JSON, split list), not the images.
    pub fn open(src: &DataSource) -> Result<Dataset, DataError> {
        if !src.path.exists() {
            return Err(DataError::NotFound {
                path: src.path.clone(),
            });
        }
        let format = match src.format {
            Some(f) => f,
            None => detect(&src.path)?,
        };
        // Read the split list before the (possibly large) index, so a wrong path fails fast.
        let split_names = match &src.split {
            Some(p) => Some(read_split(p)?),
            None => None,
        };
        let (reader, classes) = match format {
            Format::MarineDebris => {
                let r = marine_debris::MarineDebris::open(&src.path)?;
                (Reader::MarineDebris(r), marine_debris::class_names())
            }
            Format::Coco => {
                let r = coco::Coco::open(&src.path, src.images.as_deref())?;
                let classes = r.classes();
                (Reader::Coco(r), classes)
            }
            Format::MaskFolder => {
                let r = mask_folder::MaskFolder::open(
                    &src.path,
                    src.mask_threshold,
                    src.min_object_area,
                )?;
                (Reader::MaskFolder(r), mask_folder::class_names())
            }
        };
        let keys = reader.items();
        let entries: Vec<Entry> = match &split_names {
            None => (0..keys.len()).map(Entry::Item).collect(),
            Some(list) => {
                let mut index: HashMap<&str, usize> = HashMap::new();
                for (i, k) in keys.iter().enumerate() {
                    for key in [
                        k.name,
                        k.file,
                        strip_image_ext(k.file),
                        strip_image_ext(k.name),
                    ] {
                        index.entry(key).or_insert(i);
                    }
                }
                list.iter()
                    .map(|n| {
                        index
                            .get(n.as_str())
                            .or_else(|| index.get(strip_image_ext(n)))
                            .map(|&i| Entry::Item(i))
                            .unwrap_or_else(|| Entry::Missing(n.clone()))
                    })
                    .collect()
            }
        };
        if let Some(list) = &split_names {
            let split = src.split.clone().unwrap_or_default();
            if list.is_empty() {
                return Err(DataError::EmptySplit { split });
            }
            if entries.iter().all(|e| matches!(e, Entry::Missing(_))) {
                return Err(DataError::SplitMatchesNothing {
                    split,
                    names: list.len(),
                    examples: examples(list),
                    looked_in: reader.looked_in(),
                });
            }
        }
        let names = entries
            .iter()
            .map(|e| match e {
                Entry::Item(i) => keys[*i].name.to_string(),
                Entry::Missing(n) => n.clone(),
            })
            .collect();
        drop(keys);
        Ok(Dataset {
            format,
            classes,
            split: src.split.clone(),
            entries,
            names,
            reader,
        })
    }

    /// Number of items (the split's length when a split is given).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The name of item `i` (marine-debris and mask-folder: the file stem; coco: `file_name`).
    /// Panics if `i >= len()`, like slice indexing.
    pub fn name(&self, i: usize) -> &str {
        &self.names[i]
    }

    /// The names of the split file that are not in the data set, in split order (their items'
    /// `load` fails with [`DataError::NotInDataset`]).
    pub fn missing(&self) -> Vec<&str> {
        self.entries
            .iter()
            .filter_map(|e| match e {
                Entry::Missing(name) => Some(name.as_str()),
                Entry::Item(_) => None,
            })
            .collect()
    }

    /// One line on the split, when there is one: how many names it lists and which are missing.
    pub fn split_report(&self) -> Option<String> {
        let split = self.split.as_ref()?;
        let missing = self.missing();
        let mut line = format!(
            "split {}: {} names, {} not in the data set",
            split.display(),
            self.len(),
            missing.len()
        );
        if !missing.is_empty() {
            line.push_str(&format!(" ({})", examples(&missing)));
        }
        Some(line)
    }

    /// The files and folders the data set is read from (none of them may be written to).
    pub fn sources(&self) -> Vec<PathBuf> {
        let mut sources = self.reader.sources();
        sources.extend(self.split.clone());
        sources
    }

    /// Messages about annotations dropped at [`open`](Dataset::open), one each, naming the file,
    /// the annotation and the reason (COCO: an annotation whose `image_id` matches no image).
    /// They concern no item, so no `load` reports them. Empty when nothing was dropped.
    pub fn warnings(&self) -> &[String] {
        self.reader.warnings()
    }

    /// Reads the image and masks of item `i`. Strict: an item with a broken annotation is an
    /// error (the first broken annotation's); [`load_lenient`](Dataset::load_lenient) keeps the
    /// item's other objects instead.
    pub fn load(&self, i: usize) -> Result<Sample, DataError> {
        let loaded = self.load_lenient(i)?;
        match loaded.dropped.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(loaded.sample),
        }
    }

    /// Reads the image and masks of item `i`, leaving out only its broken annotations (COCO):
    /// the sample keeps the other objects and [`Loaded::dropped`] names each one left out. An
    /// error here is an error of the whole item (image missing or unreadable, image size
    /// disagreeing with the JSON, a split name not in the data set, ...).
    pub fn load_lenient(&self, i: usize) -> Result<Loaded, DataError> {
        match self.entries.get(i) {
            None => Err(DataError::IndexOutOfRange {
                index: i,
                len: self.entries.len(),
            }),
            Some(Entry::Missing(name)) => Err(DataError::NotInDataset {
                name: name.clone(),
                split: self.split.clone().unwrap_or_default(),
                looked_in: self.reader.looked_in(),
            }),
            Some(Entry::Item(j)) => {
                let (sample, dropped) = self.reader.load(*j)?;
                Ok(Loaded { sample, dropped })
            }
        }
    }
}

/// The first few of `names`, quoted, and how many more there are.
fn examples<S: AsRef<str>>(names: &[S]) -> String {
    const SHOWN: usize = 5;
    let mut text = names
        .iter()
        .take(SHOWN)
        .map(|n| format!("{:?}", n.as_ref()))
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        text.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    text
}

/// Detects the format of `path` (see the module documentation).
pub fn detect(path: &Path) -> Result<Format, DataError> {
    let looked_for = "looked for a COCO .json file, a folder with Images/ + Masks/ + \
                      BoxAnnotations/ (marine-debris), or a folder with images/ + masks/ \
                      (mask-folder)";
    if path.is_file() {
        let is_json = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"));
        if is_json {
            return Ok(Format::Coco);
        }
        return Err(DataError::Detect {
            path: path.to_path_buf(),
            reason: format!("a file that is not .json; {looked_for}"),
        });
    }
    if path.is_dir() {
        let has = |d: &str| path.join(d).is_dir();
        if has("Images") && has("Masks") && has("BoxAnnotations") {
            return Ok(Format::MarineDebris);
        }
        if has("images") && has("masks") {
            return Ok(Format::MaskFolder);
        }
        let mut reason = format!("no known layout; {looked_for}");
        let mut jsons = Vec::new();
        for dir in [path.to_path_buf(), path.join("annotations")] {
            if let Ok(rd) = std::fs::read_dir(&dir) {
                for e in rd.flatten() {
                    let p = e.path();
                    if p.extension()
                        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
                    {
                        jsons.push(p.display().to_string());
                    }
                }
            }
        }
        if !jsons.is_empty() {
            jsons.sort();
            reason.push_str(&format!(
                ". For COCO pass the annotation file itself, e.g. {}",
                jsons.join(", ")
            ));
        }
        return Err(DataError::Detect {
            path: path.to_path_buf(),
            reason,
        });
    }
    Err(DataError::NotFound {
        path: path.to_path_buf(),
    })
}

/// Reads a split list: one name per line; blank lines and `#` lines ignored.
pub fn read_split(path: &Path) -> Result<Vec<String>, DataError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            DataError::SplitFileMissing {
                path: path.to_path_buf(),
            }
        } else {
            DataError::Io {
                path: path.to_path_buf(),
                source: e,
            }
        }
    })?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect())
}

const IMAGE_EXTS: [&str; 8] = ["png", "jpg", "jpeg", "bmp", "tif", "tiff", "gif", "webp"];

/// Whether `p` has an image file extension (case-insensitive).
pub(crate) fn has_image_ext(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// `name` without a trailing image extension (`a/b.png` → `a/b`); other names unchanged.
pub(crate) fn strip_image_ext(name: &str) -> &str {
    match name.rfind('.') {
        Some(dot) if !name[dot + 1..].contains('/') => {
            let ext = &name[dot + 1..];
            if IMAGE_EXTS.iter().any(|x| x.eq_ignore_ascii_case(ext)) {
                &name[..dot]
            } else {
                name
            }
        }
        _ => name,
    }
}

/// Opens an image file as an image viewer shows it: the format is taken from the file's first
/// bytes, not its extension (a PNG named `.jpg` decodes), and an EXIF orientation is applied
/// (orientation 6, "rotate 90° clockwise", turns a stored 300x200 JPEG into the 200x300 image
/// viewers display), as PIL's `ImageOps.exif_transpose` does. Every data-set reader reads its
/// images and masks through this.
///
/// Errors name the file and say what is wrong once: [`DataError::MissingFile`] for a file that
/// does not exist, [`DataError::Io`] for one that cannot be read, [`DataError::Image`] for one
/// that is not a readable image (e.g. "cannot decode image a.png: not a JPEG or PNG file (it
/// starts with 3c 21 44 4f 43 54 59 50)").
pub fn open_image(path: &Path) -> Result<image::DynamicImage, DataError> {
    read_image(path, "image")
}

/// [`open_image`], with `what` (e.g. "mask") naming the file in a missing-file error.
pub(crate) fn read_image(path: &Path, what: &str) -> Result<image::DynamicImage, DataError> {
    read_image_oriented(path, what).map(|(img, _)| img)
}

/// [`read_image`], also returning the EXIF orientation that was applied.
pub(crate) fn read_image_oriented(
    path: &Path,
    what: &str,
) -> Result<(image::DynamicImage, image::metadata::Orientation), DataError> {
    let bytes = std::fs::read(path).map_err(|e| open_error(path, what, e))?;
    decode_image_oriented(&bytes, path)
}

/// [`open_image`] on bytes already read (an upload); `name` stands for the file in errors.
pub fn decode_image(bytes: &[u8], name: &Path) -> Result<image::DynamicImage, DataError> {
    decode_image_oriented(bytes, name).map(|(img, _)| img)
}

fn decode_image_oriented(
    bytes: &[u8],
    path: &Path,
) -> Result<(image::DynamicImage, image::metadata::Orientation), DataError> {
    use image::ImageDecoder;
    use image::metadata::Orientation;

    let fail = |message: String| DataError::Image {
        path: path.to_path_buf(),
        message,
    };
    if bytes.is_empty() {
        return Err(fail("the file is empty".into()));
    }
    let readable = readable_formats();
    let format = image::guess_format(bytes).map_err(|_| {
        let head: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
        fail(format!(
            "not a {readable} file (it starts with {})",
            head.join(" ")
        ))
    })?;
    let name = format_name(format);
    if !format.reading_enabled() {
        return Err(fail(format!(
            "a {name} file; only {readable} images can be read"
        )));
    }
    let decode_error = |e: image::ImageError| fail(describe_image_error(&name, &e));
    let mut decoder = image::ImageReader::with_format(std::io::Cursor::new(bytes), format)
        .into_decoder()
        .map_err(decode_error)?;
    // The same allocation limit as `ImageReader::decode`.
    image::Limits::default()
        .reserve(decoder.total_bytes())
        .map_err(decode_error)?;
    // Unreadable metadata is no orientation (viewers show such files as stored).
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let mut img = image::DynamicImage::from_decoder(decoder).map_err(decode_error)?;
    img.apply_orientation(orientation);
    Ok((img, orientation))
}

/// "PNG or JPEG": the formats this build can decode.
fn readable_formats() -> String {
    let names: Vec<String> = image::ImageFormat::all()
        .filter(|f| f.reading_enabled())
        .map(format_name)
        .collect();
    match names.split_last() {
        None => "readable image".into(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

fn format_name(f: image::ImageFormat) -> String {
    use image::ImageFormat as F;
    match f {
        F::Png => "PNG".into(),
        F::Jpeg => "JPEG".into(),
        F::Gif => "GIF".into(),
        F::WebP => "WebP".into(),
        F::Tiff => "TIFF".into(),
        F::Bmp => "BMP".into(),
        other => format!("{other:?}").to_uppercase(),
    }
}

/// The decoder's complaint, said once (an `ImageError`'s `Display` already repeats its source).
fn describe_image_error(name: &str, e: &image::ImageError) -> String {
    use image::ImageError as E;
    use std::error::Error as _;
    match e {
        E::Decoding(d) => match d.source() {
            Some(inner) => format!("broken {name} data: {inner}"),
            None => format!("broken {name} data"),
        },
        E::Limits(l) => format!("{name} image too large to decode: {l}"),
        E::IoError(io) => format!("{name} data cut short or unreadable: {io}"),
        other => other.to_string(),
    }
}

/// Reads a file to a string, mapping a missing file to [`DataError::MissingFile`].
pub(crate) fn read_text(path: &Path, what: &str) -> Result<String, DataError> {
    std::fs::read_to_string(path).map_err(|e| open_error(path, what, e))
}

/// A missing file is [`DataError::MissingFile`]; any other failure to open it, [`DataError::Io`].
fn open_error(path: &Path, what: &str, e: std::io::Error) -> DataError {
    if e.kind() == std::io::ErrorKind::NotFound {
        DataError::MissingFile {
            path: path.to_path_buf(),
            what: what.to_string(),
        }
    } else {
        DataError::Io {
            path: path.to_path_buf(),
            source: e,
        }
    }
}

/// Sorted list of the image files directly inside `dir` (by file name, byte order).
pub(crate) fn list_images(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let rd = std::fs::read_dir(dir).map_err(|e| DataError::Io {
        path: dir.to_path_buf(),
        source: e,
    })?;
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(|e| DataError::Io {
            path: dir.to_path_buf(),
            source: e,
        })?;
        let p = e.path();
        if p.is_file() && has_image_ext(&p) {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}
