//! `metrics.json`, `metrics.md` and `objects.csv`, written atomically.

use std::path::Path;

use anyhow::Result;

use super::ObjectScore;
use super::metrics::Summary;
use crate::files::atomic::write_atomic;

const METRICS_JSON: &str = "metrics.json";
const METRICS_MD: &str = "metrics.md";
const OBJECTS_CSV: &str = "objects.csv";
/// The files a report folder holds (besides overlays).
pub const REPORT_FILES: [&str; 3] = [METRICS_JSON, METRICS_MD, OBJECTS_CSV];

pub fn write_reports(dir: &Path, summary: &Summary, title: &str) -> Result<()> {
    let json = serde_json::to_string_pretty(summary)?;
    write_atomic(&dir.join(METRICS_JSON), |w| {
        Ok(w.write_all(json.as_bytes())?)
    })?;
    let md = markdown(summary, title);
    write_atomic(&dir.join(METRICS_MD), |w| Ok(w.write_all(md.as_bytes())?))
}

/// `objects.csv`: one row per object (image, index, class, area, box, Dice, IoU), so the
/// failures can be found and sorted.
pub fn write_object_scores(dir: &Path, objects: &[ObjectScore], classes: &[String]) -> Result<()> {
    let mut csv = String::from("image,object,class,area,x1,y1,x2,y2,dice,iou\n");
    for o in objects {
        let class = classes.get(o.class).map_or("?", String::as_str);
        let [x1, y1, x2, y2] = o.bbox;
        csv += &format!(
            "{},{},{},{},{x1},{y1},{x2},{y2},{:.6},{:.6}\n",
            csv_field(&o.image),
            o.index,
            csv_field(class),
            o.area,
            o.dice,
            o.iou
        );
    }
    write_atomic(&dir.join(OBJECTS_CSV), |w| Ok(w.write_all(csv.as_bytes())?))
}

/// A CSV field, quoted when it holds a comma, quote or line break.
fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_string()
    }
}

pub fn markdown(summary: &Summary, title: &str) -> String {
    let mut out =
        format!("# {title}\n\n| class | objects | Dice % | IoU % |\n|---|---:|---:|---:|\n");
    for (name, s) in &summary.per_class {
        out += &format!(
            "| {name} | {} | {:.2} | {:.2} |\n",
            s.objects, s.dice, s.iou
        );
    }
    out += &format!(
        "| **mean over object classes** | {} | **{:.2}** | **{:.2}** |\n\nMean Dice with absent classes counted as 0 (the authors' convention): {:.2}\n",
        summary.objects, summary.mean_dice, summary.mean_iou, summary.mean_dice_absent_zero
    );
    out
}
