#!/usr/bin/env python3
"""Reference for `sam-cobot segment-everything`, from Meta's SamAutomaticMaskGenerator.

On the 256 px base model (tests/fixtures/sam-cobot-base-256.safetensors, the first stage of the
shipped base, built with Meta's modules to its sizes by sam_builder.py) and the 300x200 test image, four runs with the thresholds loosened
so that masks survive (the base model's predicted IoUs stay below Meta's 0.88):

- `grid`: 16 points a side, pred_iou_thresh 0.5, stability_score_thresh 0.7, the rest Meta's
  defaults;
- `crops`: the same plus crop_n_layers 1 and crop_n_points_downscale_factor 2;
- `regions`: `grid` plus min_mask_region_area 60 (holes and islands, OpenCV's components);
- `unfiltered`: 8 points a side with both filters off (every candidate meets the NMS, masks
  with a stability score of 0 included).

Writes tests/fixtures/amg/<run>.json: the settings, and per mask (in Meta's order) the
uncompressed RLE counts, the COCO string, area, bbox (XYWH), predicted_iou, point_coords,
stability_score, crop_box (XYWH), and the `metadata.csv` rows scripts/amg.py writes.

    pip install torch segment-anything safetensors opencv-python-headless pycocotools pillow
    python3 scripts/make_amg_fixture.py
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from make_fixtures import load_rgb  # noqa: E402
from sam_builder import build_sam, load_state_dict  # noqa: E402
from segment_anything import SamAutomaticMaskGenerator  # noqa: E402
from segment_anything.utils.amg import coco_encode_rle  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..")
LOOSE = dict(points_per_side=16, pred_iou_thresh=0.5, stability_score_thresh=0.7)
RUNS = {
    "grid": LOOSE,
    "crops": dict(LOOSE, crop_n_layers=1, crop_n_points_downscale_factor=2),
    "regions": dict(LOOSE, min_mask_region_area=60),
    "unfiltered": dict(points_per_side=8, pred_iou_thresh=0.0, stability_score_thresh=0.0),
}


def csv_rows(masks):
    """scripts/amg.py's write_masks_to_folder metadata, row by row."""
    rows = ["id,area,bbox_x0,bbox_y0,bbox_w,bbox_h,point_input_x,point_input_y,"
            "predicted_iou,stability_score,crop_box_x0,crop_box_y0,crop_box_w,crop_box_h"]
    for i, m in enumerate(masks):
        rows.append(",".join([str(i), str(m["area"]), *[str(x) for x in m["bbox"]],
                              *[str(x) for x in m["point_coords"][0]], str(m["predicted_iou"]),
                              str(m["stability_score"]), *[str(x) for x in m["crop_box"]]]))
    return rows


def main():
    torch.set_num_threads(1)
    sam = build_sam(load_state_dict(os.path.join(ROOT, "tests", "fixtures", "sam-cobot-base-256.safetensors")))
    image = load_rgb(os.path.join(ROOT, "tests", "fixtures", "image_300x200.png"))
    out = os.path.join(ROOT, "tests", "fixtures", "amg")
    os.makedirs(out, exist_ok=True)
    for name, settings in RUNS.items():
        generator = SamAutomaticMaskGenerator(sam, output_mode="uncompressed_rle", **settings)
        with torch.no_grad():
            masks = generator.generate(image)
        records = []
        for m in masks:
            rle = m["segmentation"]
            records.append({
                "counts": rle["counts"], "coco": coco_encode_rle(rle)["counts"],
                "area": m["area"], "bbox": m["bbox"], "predicted_iou": m["predicted_iou"],
                "point_coords": m["point_coords"], "stability_score": m["stability_score"],
                "crop_box": m["crop_box"],
            })
        with open(os.path.join(out, f"{name}.json"), "w") as f:
            json.dump({"checkpoint": "tests/fixtures/sam-cobot-base-256.safetensors",
                       "image": "tests/fixtures/image_300x200.png", "size": [200, 300],
                       "settings": settings, "masks": records, "metadata_csv": csv_rows(masks)},
                      f, separators=(",", ":"))
        print(f"{name}: {len(masks)} masks")


if __name__ == "__main__":
    main()
