#!/usr/bin/env python3
"""Reference for SAM's mask prompt (iterative refinement), from Meta's SamPredictor.

On the tiny 256 px fixture model: a box prompt first (multimask off), then a corrective point
pair plus that prediction's low-resolution logits as `mask_input`, exactly as SamPredictor users
refine. Writes tests/fixtures/mask_input/reference.safetensors with the first logits (the mask
input), the refined low-resolution logits and IoU, and the prompts.

    python3 scripts/make_mask_input_fixture.py
"""
import json
import os
import sys

import numpy as np
import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))
from make_fixtures import build_tiny_sam, load_checkpoint_into, load_rgb  # noqa: E402
from segment_anything import SamPredictor  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")
BOX = [60.0, 40.0, 220.0, 160.0]
POINTS = [[120.0, 90.0], [250.0, 150.0]]
LABELS = [1, 0]


def main():
    torch.manual_seed(0)
    sam = build_tiny_sam(256)
    load_checkpoint_into(sam, os.path.join(ROOT, "tiny256.pth"))
    sam.eval()
    predictor = SamPredictor(sam)
    predictor.set_image(load_rgb(os.path.join(ROOT, "image_300x200.png")), image_format="RGB")
    with torch.no_grad():
        _, _, first = predictor.predict(box=np.array(BOX), multimask_output=False,
                                        return_logits=True)
        _, iou, refined = predictor.predict(
            point_coords=np.array(POINTS), point_labels=np.array(LABELS),
            mask_input=first, multimask_output=False, return_logits=True)
    out = os.path.join(ROOT, "mask_input")
    os.makedirs(out, exist_ok=True)
    save_file({
        "mask_input": torch.from_numpy(first).float().contiguous(),          # [1, 64, 64]
        "refined.low_res_logits": torch.from_numpy(refined).float().contiguous(),  # [1, 64, 64]
        "refined.iou": torch.from_numpy(iou).float().contiguous(),           # [1]
    }, os.path.join(out, "reference.safetensors"))
    with open(os.path.join(out, "prompts.json"), "w") as f:
        json.dump({"checkpoint": "tiny256.pth", "image": "image_300x200.png", "box": BOX,
                   "points": POINTS, "labels": LABELS,
                   "how": "box first (multimask off), then the points with its low-res logits "
                          "as mask_input (multimask off)"}, f, indent=1)


if __name__ == "__main__":
    main()
