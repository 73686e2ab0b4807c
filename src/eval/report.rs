//! `metrics.json` and `metrics.md`, written atomically.

use std::path::Path;

use anyhow::Result;

use super::metrics::Summary;
use crate::output::atomic::write_atomic;

pub fn write_reports(dir: &Path, summary: &Summary, title: &str) -> Result<()> {
    let json = serde_json::to_string_pretty(summary)?;
    write_atomic(&dir.join("metrics.json"), |w| {
        Ok(w.write_all(json.as_bytes())?)
    })?;
    let md = markdown(summary, title);
    write_atomic(&dir.join("metrics.md"), |w| Ok(w.write_all(md.as_bytes())?))
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
