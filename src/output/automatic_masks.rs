//! Outputs of `segment-everything`, laid out as Meta's `scripts/amg.py` writes them: a folder of
//! mask PNGs with `metadata.csv`, or one COCO-RLE JSON file per image; plus an overlay with every
//! mask coloured. All written atomically.

use std::path::Path;

use anyhow::Result;
use image::{ExtendedColorType, RgbImage};
use serde::Serialize;

use super::mask_png::{write_png, write_rgb_png};
use super::overlay::{PALETTE, paint_mask};
use crate::files::atomic::{write_atomic, write_dir_atomic};
use crate::rle::Rle;
use crate::sam::mask_generator::GeneratedMask;

/// A mask as COCO's compressed RLE: `{"size": [h, w], "counts": "<pycocotools string>"}`.
#[derive(Debug, Serialize)]
pub struct CocoRle {
    pub size: [u32; 2],
    pub counts: String,
}

impl CocoRle {
    pub fn new(rle: &Rle) -> Self {
        Self {
            size: [rle.h, rle.w],
            counts: rle.to_string_compressed(),
        }
    }
}

/// A generated mask, row-major (its RLE was made over the whole image, so it decodes).
fn pixels(m: &GeneratedMask) -> Vec<bool> {
    m.rle
        .decode_row_major()
        .expect("a generated RLE covers the image")
}

/// One mask as amg.py's JSON has it, in its key order. JSON has no NaN: a stability score of 0/0
/// (an empty mask, kept only when the stability filter is off) is written as `null`.
#[derive(Debug, Serialize)]
pub struct MaskRecord {
    pub segmentation: CocoRle,
    pub area: u64,
    /// `[x, y, w, h]`, as Meta converts its inclusive `[x0, y0, x1, y1]` box (`w = x1 − x0`);
    /// floats, as COCO's boxes are (Meta's are floats too once torch's type promotion has met
    /// an empty batch, which is nearly always).
    pub bbox: [f64; 4],
    pub predicted_iou: f64,
    pub point_coords: [[f64; 2]; 1],
    pub stability_score: Option<f64>,
    pub crop_box: [usize; 4],
}

impl MaskRecord {
    pub fn new(m: &GeneratedMask) -> Self {
        let [x0, y0, x1, y1] = m.bbox;
        let [cx0, cy0, cx1, cy1] = m.crop_box;
        let stability = f64::from(m.stability_score);
        Self {
            segmentation: CocoRle::new(&m.rle),
            area: m.area(),
            bbox: [x0, y0, x1 - x0, y1 - y0].map(|v| v as f64),
            predicted_iou: f64::from(m.predicted_iou),
            point_coords: [[m.point.0, m.point.1]],
            stability_score: stability.is_finite().then_some(stability),
            crop_box: [cx0, cy0, cx1 - cx0, cy1 - cy0],
        }
    }
}

/// `path`: the masks as a JSON list of [`MaskRecord`]s (amg.py's `--convert-to-rle` output).
pub fn write_coco_json(path: &Path, masks: &[GeneratedMask]) -> Result<()> {
    let records: Vec<MaskRecord> = masks.iter().map(MaskRecord::new).collect();
    write_atomic(path, |w| {
        serde_json::to_writer(&mut *w, &records)?;
        Ok(())
    })
}

/// `dir/`: `<i>.png` per mask (0 or 255) and `metadata.csv`, the folder appearing complete.
pub fn write_mask_folder(dir: &Path, masks: &[GeneratedMask]) -> Result<()> {
    write_dir_atomic(dir, |tmp| {
        for (i, m) in masks.iter().enumerate() {
            let gray: Vec<u8> = pixels(m)
                .iter()
                .map(|&on| if on { 255 } else { 0 })
                .collect();
            let (w, h) = (m.rle.w as usize, m.rle.h as usize);
            write_png(
                &tmp.join(format!("{i}.png")),
                &gray,
                w,
                h,
                ExtendedColorType::L8,
            )?;
        }
        write_atomic(&tmp.join("metadata.csv"), |w| {
            w.write_all(metadata_csv(masks).as_bytes())?;
            Ok(())
        })
    })
}

/// amg.py's `metadata.csv`: a header and one row per mask, numbers as Python's `str` prints
/// them, lines joined by `\n` with none after the last.
pub fn metadata_csv(masks: &[GeneratedMask]) -> String {
    let mut lines = vec![
        "id,area,bbox_x0,bbox_y0,bbox_w,bbox_h,point_input_x,point_input_y,predicted_iou,\
         stability_score,crop_box_x0,crop_box_y0,crop_box_w,crop_box_h"
            .to_string(),
    ];
    for (i, m) in masks.iter().enumerate() {
        let r = MaskRecord::new(m);
        let mut row = vec![i.to_string(), r.area.to_string()];
        row.extend(r.bbox.iter().map(|&v| python_float(v)));
        row.extend(r.point_coords[0].iter().map(|&v| python_float(v)));
        row.push(python_float(r.predicted_iou));
        row.push(python_float(f64::from(m.stability_score)));
        row.extend(r.crop_box.iter().map(usize::to_string));
        lines.push(row.join(","));
    }
    lines.join("\n")
}

/// A float as Python's `str` writes it: the shortest digits that read back, `.0` on whole
/// numbers, exponents (`1e-05`, `1e+16`) outside [1e-4, 1e16), and `nan`/`inf`.
pub fn python_float(v: f64) -> String {
    if v.is_nan() {
        return "nan".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf" } else { "-inf" }.into();
    }
    let exp_form = format!("{v:e}");
    let (mantissa, exponent) = exp_form.split_once('e').expect("{:e} has an exponent");
    let exponent: i32 = exponent.parse().expect("an integer exponent");
    if v == 0.0 || (-4..16).contains(&exponent) {
        let plain = format!("{v}");
        return if plain.contains('.') {
            plain
        } else {
            plain + ".0"
        };
    }
    let sign = if exponent < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exponent.abs())
}

/// `path`: the image with every mask blended in its own colour, the largest first so that
/// smaller masks stay visible on top.
pub fn write_masks_overlay(path: &Path, image: &RgbImage, masks: &[GeneratedMask]) -> Result<()> {
    let mut order: Vec<usize> = (0..masks.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(masks[i].area()));
    let mut out = image.clone();
    for (n, &i) in order.iter().enumerate() {
        paint_mask(
            &mut out,
            PALETTE[n % PALETTE.len()],
            pixels(&masks[i]).into_iter(),
        );
    }
    write_rgb_png(path, &out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stability_of_zero_over_zero_is_null_in_json_and_nan_in_csv() {
        let empty = GeneratedMask {
            rle: Rle::encode(2, 3, |_, _| false),
            bbox: [0; 4],
            predicted_iou: 0.5,
            point: (1.5, 0.5),
            stability_score: f32::NAN,
            crop_box: [0, 0, 3, 2],
        };
        let json = serde_json::to_string(&MaskRecord::new(&empty)).unwrap();
        assert_eq!(
            json,
            r#"{"segmentation":{"size":[2,3],"counts":"6"},"area":0,"bbox":[0.0,0.0,0.0,0.0],"predicted_iou":0.5,"point_coords":[[1.5,0.5]],"stability_score":null,"crop_box":[0,0,3,2]}"#
        );
        let csv = metadata_csv(&[empty]);
        assert_eq!(
            csv.lines().nth(1),
            Some("0,0,0.0,0.0,0.0,0.0,1.5,0.5,0.5,nan,0,0,3,2")
        );
    }

    #[test]
    fn floats_print_as_python_does() {
        let cases = [
            (18.75, "18.75"),
            (18.0, "18.0"),
            (0.0, "0.0"),
            (0.6702467203140259, "0.6702467203140259"),
            (1e-05, "1e-05"),
            (0.0001, "0.0001"),
            (1.5e16, "1.5e+16"),
            (-2.5, "-2.5"),
            (f64::NAN, "nan"),
        ];
        for (v, want) in cases {
            assert_eq!(python_float(v), want, "{v}");
        }
    }
}
