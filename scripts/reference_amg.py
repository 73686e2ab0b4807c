#!/usr/bin/env python3
"""PyTorch reference side of `sam-cobot segment-everything`, for timing side by side.

Meta's SamAutomaticMaskGenerator with its defaults (or the options given, under amg.py's names)
on one image, Meta's ViT-B/L/H read off the checkpoint's width; prints the number of masks, the
total time, the encoder's time and the decoder's time per point batch (`predict_torch`, which
includes upsampling every candidate to the image's size).

    python3 scripts/reference_amg.py --checkpoint vit_b.pth --image img.png [--threads 2] \
        [--points-per-side 32 --pred-iou-thresh 0.88 ...]
"""
import argparse
import time

import numpy as np
import torch
from PIL import Image
from segment_anything import SamAutomaticMaskGenerator, sam_model_registry

VARIANTS = {768: "vit_b", 1024: "vit_l", 1280: "vit_h"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--image", required=True)
    ap.add_argument("--threads", type=int, default=2)
    for name, kind in [("points-per-side", int), ("points-per-batch", int),
                       ("pred-iou-thresh", float), ("stability-score-thresh", float),
                       ("crop-n-layers", int), ("min-mask-region-area", int)]:
        ap.add_argument(f"--{name}", type=kind)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    state = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    sam = sam_model_registry[VARIANTS[state["image_encoder.patch_embed.proj.weight"].shape[0]]]()
    sam.load_state_dict(state)
    sam.eval()
    options = {k: v for k, v in vars(args).items()
               if k not in ("checkpoint", "image", "threads") and v is not None}
    generator = SamAutomaticMaskGenerator(sam, **options)
    timing = {"encoder": 0.0, "decoder": 0.0, "batches": 0}
    predictor = generator.predictor
    set_image, predict_torch = predictor.set_image, predictor.predict_torch

    def timed_set_image(*a, **k):
        t = time.perf_counter()
        set_image(*a, **k)
        timing["encoder"] += time.perf_counter() - t

    def timed_predict(*a, **k):
        t = time.perf_counter()
        out = predict_torch(*a, **k)
        timing["decoder"] += time.perf_counter() - t
        timing["batches"] += 1
        return out

    predictor.set_image, predictor.predict_torch = timed_set_image, timed_predict
    image = np.array(Image.open(args.image).convert("RGB"))
    started = time.perf_counter()
    with torch.inference_mode():
        masks = generator.generate(image)
    total = time.perf_counter() - started
    print(f"{len(masks)} masks in {total:.2f}s (encoder {timing['encoder']:.2f}s, decoder "
          f"{1e3 * timing['decoder'] / max(timing['batches'], 1):.1f} ms per batch over "
          f"{timing['batches']} batches)")


if __name__ == "__main__":
    main()
