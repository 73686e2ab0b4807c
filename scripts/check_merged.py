#!/usr/bin/env python3
"""Checks that a checkpoint written by `sam-cobot merge` is a stock SAM checkpoint.

    python3 scripts/check_merged.py MERGED.pth|MERGED.safetensors [--compare OTHER]

Loads the file (`torch.load(weights_only=True)` for .pth, safetensors for .safetensors) into
Meta's model with `load_state_dict(strict=True)`: official keys only, every shape right. The model
type comes from the image encoder's width (768 vit_b, 1024 vit_l, 1280 vit_h); the tiny test
config (width 64) uses `scripts/make_fixtures.py`'s builder at the checkpoint's native size.
For a .pth of an official size it also goes through `sam_model_registry[vt](checkpoint=PATH)`,
the way users load checkpoints. Prints `OK ...` and exits 0, or prints the problem and exits 1.
"""

import argparse
import os
import sys

import torch

SCRIPTS = os.path.dirname(os.path.abspath(__file__))
WIDTHS = {768: "vit_b", 1024: "vit_l", 1280: "vit_h"}


def load(path: str) -> dict:
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--compare", metavar="OTHER",
                    help="also require every tensor to equal OTHER's (same keys, exact values)")
    args = ap.parse_args()

    from segment_anything import sam_model_registry

    sd = load(args.checkpoint)
    if not isinstance(sd, dict):
        print(f"{args.checkpoint}: holds {type(sd).__name__}, not a state dict")
        return 1
    bad = [k for k, v in sd.items() if not torch.is_tensor(v) or v.dtype != torch.float32]
    if bad:
        print(f"{args.checkpoint}: not float32 tensors: {bad[:5]}")
        return 1
    width = sd["image_encoder.patch_embed.proj.weight"].shape[0]
    grid = sd["image_encoder.pos_embed"].shape[1]
    patch = sd["image_encoder.patch_embed.proj.weight"].shape[-1]
    if width in WIDTHS:
        vt = WIDTHS[width]
        model = sam_model_registry[vt]()
    elif width == 64:
        sys.path.insert(0, SCRIPTS)
        from make_fixtures import build_tiny_sam

        vt = f"tiny{grid * patch}"
        model = build_tiny_sam(grid * patch)
    else:
        print(f"{args.checkpoint}: encoder width {width} is neither an official SAM nor the tiny test model")
        return 1
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        print(f"{args.checkpoint}: load_state_dict(strict=True) failed:\n{e}")
        return 1
    for k, v in model.state_dict().items():
        if not torch.equal(v, sd[k]):
            print(f"{args.checkpoint}: '{k}' changed on loading")
            return 1
    if args.compare:
        other = load(args.compare)
        if sorted(other) != sorted(sd):
            print(f"{args.checkpoint}: keys differ from {args.compare}")
            return 1
        diff = [k for k in sd if not torch.equal(sd[k], other[k])]
        if diff:
            print(f"{args.checkpoint}: {len(diff)} tensors differ from {args.compare}, e.g. {diff[0]}")
            return 1
    via_registry = ""
    if vt in WIDTHS.values() and not args.checkpoint.endswith(".safetensors"):
        sam_model_registry[vt](checkpoint=args.checkpoint)
        via_registry = ", sam_model_registry(checkpoint=...) ok"
    n = sum(v.numel() for v in sd.values())
    print(f"OK {args.checkpoint}: {vt}, {len(sd)} tensors, {n:,} values, strict load ok{via_registry}"
          + (f", equal to {args.compare}" if args.compare else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
