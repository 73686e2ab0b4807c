#!/usr/bin/env python3
"""Where box prompts lose: an `eval` report's per-object Dice, grouped by how much of each box
other annotated objects cover and by how much of its box the object fills.

A box that holds parts of other objects asks the model which of them it means; the object the
box was drawn around is the one that touches all four sides. models/README.md quotes this
breakdown for the shipped base.

    sam-cobot eval --data scenes/annotations.json --checkpoint MODEL --out report
    python3 scripts/box_prompt_breakdown.py scenes/annotations.json report/objects.csv

Needs numpy. Reads COCO annotations with compressed RLE masks (as `sam-cobot scenes` writes).
"""

import argparse
import collections
import csv
import json

import numpy as np


def decode_rle(counts, height, width):
    """COCO's compressed RLE string as a boolean mask (runs in column-major order)."""
    runs, p, data = [], 0, counts.encode()
    while p < len(data):
        value, shift, more = 0, 0, True
        while more:
            c = data[p] - 48
            value |= (c & 0x1F) << shift
            more = bool(c & 0x20)
            p += 1
            shift += 5
            if not more and c & 0x10:
                value |= -1 << shift
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    mask = np.zeros(height * width, bool)
    at, inside = 0, False
    for run in runs:
        if inside:
            mask[at : at + run] = True
        at += run
        inside = not inside
    return mask.reshape(width, height).T


def masks_by_image(path):
    """{file name: [mask of each annotation, in file order]}."""
    coco = json.load(open(path))
    images = {i["id"]: i for i in coco["images"]}
    masks = collections.defaultdict(list)
    for a in coco["annotations"]:
        image = images[a["image_id"]]
        seg = a["segmentation"]
        if not isinstance(seg, dict) or not isinstance(seg["counts"], str):
            raise SystemExit(f"{path}: annotation {a['id']} is not compressed RLE")
        masks[image["file_name"]].append(decode_rle(seg["counts"], image["height"], image["width"]))
    return masks


def table(name, rows, column, bands):
    losses = sum(1 - d for *_, d in rows)
    print(f"\n| {name} | objects | Dice % | share of the loss |\n|---|---:|---:|---:|")
    for lo, hi in bands:
        dice = [r[-1] for r in rows if lo <= r[column] < hi]
        if dice:
            share = sum(1 - d for d in dice) / losses
            print(f"| {lo:.2f} to {min(hi, 1):.2f} | {len(dice)} | {100 * np.mean(dice):.1f} | {share:.2f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("annotations", help="the COCO annotations the report scored")
    parser.add_argument("objects", help="the report's objects.csv")
    args = parser.parse_args()
    masks = masks_by_image(args.annotations)
    rows = []
    for r in csv.DictReader(open(args.objects)):
        image = masks[r["image"]]
        own = image[int(r["object"])]
        x1, y1, x2, y2 = (int(r[k]) for k in ("x1", "y1", "x2", "y2"))
        others = np.zeros_like(own)
        for j, m in enumerate(image):
            if j != int(r["object"]):
                others |= m
        box = (x2 - x1) * (y2 - y1)
        rows.append((others[y1:y2, x1:x2].sum() / box, own.sum() / box, float(r["dice"])))
    print(f"{len(rows)} objects, mean Dice {100 * np.mean([r[-1] for r in rows]):.2f}%")
    table("other objects in the box", rows, 0, [(0, 0.05), (0.05, 0.2), (0.2, 0.4), (0.4, 1.01)])
    table("the object fills its box", rows, 1, [(0, 0.3), (0.3, 0.5), (0.5, 0.7), (0.7, 1.01)])


if __name__ == "__main__":
    main()
