#!/usr/bin/env python3
"""Training-loop parity fixtures: the reference side of tests/train_parity.rs.

    python3 scripts/make_train_parity_fixtures.py          # writes tests/fixtures/train_parity/
    python3 scripts/make_train_parity_fixtures.py --out DIR

Trains the tiny fixture SAM (tests/fixtures/tiny256.pth) with lora+cobot and adapter+cobot in
PyTorch (segment-anything + scripts/peft_reference.py) for 30 steps, exactly as
`sam-cobot train` does with

    --batch 2 --epochs 30 --lr 1e-3 --optimizer adam --weight-decay 5e-5
    --schedule warmup-cosine --augment false --box-jitter 0 --adapter-dropout 0

on the two generated items written to items/ (images/ + masks/, one object each, 256 px, so the
input frame is the image's own): every step is one epoch of one batch holding both items; the
loss is the trainer's, summed over images and objects: BCEWithLogits (mean over the 256^2
pixels of the align_corners=True upsampled logits) + 1 - soft Dice (smooth 1); Adam with
coupled L2 decay; the learning rate of step k is lr at k = 0 (one step of warm-up), then
lr * (1 + cos(pi * (k - 1) / 29)) / 2. The PEFT tensors start from make_peft_fixtures.py's
seeded values (init + noise), written to <case>/start.safetensors under their official names.

Writes per case: start.safetensors, final.safetensors (every trainable tensor after the 30
steps) and reference.json (loss and learning rate of every step). Float32, 1 thread,
deterministic.
"""

import argparse
import json
import math
import os
import sys

sys.dont_write_bytecode = True

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import make_peft_fixtures as mpf  # noqa: E402
import peft_reference as pr  # noqa: E402

REPO = os.path.dirname(HERE)
S = 256
STEPS = 30
LR = 1e-3
WEIGHT_DECAY = 5e-5
CASES = [("lora_cobot", "lora+cobot"), ("adapter_cobot", "adapter+cobot")]


def make_items(out_dir):
    """Two 256x256 RGB images with one ellipse each on a noisy gradient; masks 0/255."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float64)
    items = []
    for k, (cx, cy, rx, ry, col) in enumerate([(100, 120, 50, 30, (220, 60, 40)),
                                                (150, 90, 35, 60, (40, 200, 90))]):
        inside = ((xx + 0.5 - cx) / rx) ** 2 + ((yy + 0.5 - cy) / ry) ** 2 <= 1.0
        img = 60 + 80 * xx[..., None] / S + rng.normal(0, 12, (S, S, 3))
        img[inside] = np.array(col) + rng.normal(0, 12, (int(inside.sum()), 3))
        img = img.clip(0, 255).astype(np.uint8)
        name = f"item{k}.png"
        for sub, arr in (("images", img), ("masks", (inside * 255).astype(np.uint8))):
            os.makedirs(os.path.join(out_dir, "items", sub), exist_ok=True)
            Image.fromarray(arr).save(os.path.join(out_dir, "items", sub, name))
        ys, xs = np.nonzero(inside)
        box = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]  # end-exclusive, as the reader
        items.append((img, inside.astype(np.float32), box))
    return items


def batch(sam, items):
    xs = [sam.preprocess(torch.as_tensor(img).permute(2, 0, 1)[None].float()) for img, _, _ in items]
    x = torch.cat(xs, 0)
    boxes = [torch.tensor([box], dtype=torch.float32) for _, _, box in items]
    targets = [torch.as_tensor(m)[None, None] for _, m, _ in items]
    return x, boxes, targets


def step_loss(sam, x, boxes, targets):
    emb = sam.image_encoder(x)
    loss = x.new_zeros(())
    for i in range(x.shape[0]):
        sparse, dense = sam.prompt_encoder(points=None, boxes=boxes[i], masks=None)
        low, _ = sam.mask_decoder(image_embeddings=emb[i:i + 1],
                                  image_pe=sam.prompt_encoder.get_dense_pe(),
                                  sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                  multimask_output=False)
        logits = F.interpolate(low, size=(S, S), mode="bilinear", align_corners=True)
        for n in range(logits.shape[0]):
            lg, g = logits[n], targets[i][n]
            bce = F.binary_cross_entropy_with_logits(lg, g, reduction="mean")
            p = torch.sigmoid(lg)
            dice = (2.0 * (p * g).sum() + 1.0) / (p.sum() + g.sum() + 1.0)
            loss = loss + bce + (1.0 - dice)
    return loss


def lr_at(k):
    return LR if k == 0 else LR * 0.5 * (1.0 + math.cos(math.pi * (k - 1) / (STEPS - 1)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "fixtures", "train_parity"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    fixtures = os.path.join(REPO, "tests", "fixtures")
    items = make_items(args.out)
    for folder, method in CASES:
        torch.manual_seed(0)
        sam = mpf.build_case(fixtures, method, "dual", "learnable", "quaternion")
        start = {n: p.detach().clone().contiguous() for n, p in pr.peft_named_tensors(sam).items()}
        trainable = pr.trainable_named(sam)
        opt = torch.optim.Adam(trainable.values(), lr=LR, weight_decay=WEIGHT_DECAY)
        x, boxes, targets = batch(sam, items)
        losses, lrs = [], []
        for k in range(STEPS):
            for g in opt.param_groups:
                g["lr"] = lr_at(k)
            loss = step_loss(sam, x, boxes, targets)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            lrs.append(lr_at(k))
        d = os.path.join(args.out, folder)
        os.makedirs(d, exist_ok=True)
        save_file(start, os.path.join(d, "start.safetensors"))
        save_file({n: p.detach().contiguous() for n, p in trainable.items()},
                  os.path.join(d, "final.safetensors"))
        with open(os.path.join(d, "reference.json"), "w") as f:
            json.dump({"method": method, "steps": STEPS, "lr": LR, "weight_decay": WEIGHT_DECAY,
                       "losses": losses, "learning_rates": lrs}, f, indent=1)
            f.write("\n")
        print(f"{folder}: loss {losses[0]:.6f} -> {losses[-1]:.6f}, {len(trainable)} trainable tensors")


if __name__ == "__main__":
    main()
