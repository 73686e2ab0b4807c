#!/usr/bin/env python3
"""Writes tests/data/formats/coco_pycocotools.json: COCO segmentations and the masks that
pycocotools decodes them to, for tests/data_formats.rs (pixel-for-pixel comparison).

Needs: python3 -m pip install pycocotools numpy   (written with pycocotools 2.0.11, numpy 2.4)
Run:   python3 scripts/make_coco_fixtures.py [--out tests/data/formats/coco_pycocotools.json]

Deterministic (fixed seed). Each case: image size h, w; the `segmentation` exactly as it would
appear in an annotation; `expected`: pycocotools' result as an RLE with the compressed string
(`counts`, pycocotools `rleToString`) and the decoded mask's area. For single-polygon cases,
`poly_string` is the string of `frPyObjects([poly])[0]` (before any merge), to check the
rasteriser's own RLE.
"""
import argparse
import json

import numpy as np
from pycocotools import mask as mu


def expected(seg, h, w):
    # Same path as pycocotools COCO.annToRLE / annToMask.
    if isinstance(seg, list):
        rle = mu.merge(mu.frPyObjects(seg, h, w))
    elif isinstance(seg["counts"], list):
        rle = mu.frPyObjects(seg, h, w)
    else:
        rle = seg
    m = mu.decode(rle)
    assert m.shape == (h, w)
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode()
    return {"counts": counts, "area": int(m.sum())}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/data/formats/coco_pycocotools.json")
    args = ap.parse_args()
    rng = np.random.default_rng(20240601)
    cases = []

    def add(name, seg, h, w):
        case = {"name": name, "h": h, "w": w, "segmentation": seg, "expected": expected(seg, h, w)}
        if isinstance(seg, list) and len(seg) == 1 and len(seg[0]) > 4:
            s = mu.frPyObjects(seg, h, w)[0]["counts"]
            case["poly_string"] = s.decode() if isinstance(s, bytes) else s
        cases.append(case)

    # Hand-made polygons.
    add("square_integer", [[1, 1, 1, 3, 3, 3, 3, 1]], 5, 5)
    add("square_half", [[0.5, 0.5, 3.5, 0.5, 3.5, 3.5, 0.5, 3.5]], 6, 7)
    add("triangle_fractional", [[2.3, 1.1, 14.7, 4.9, 6.2, 12.8]], 15, 17)
    add("concave_l", [[1, 1, 9, 1, 9, 3, 4, 3, 4, 10, 1, 10]], 12, 11)
    add("thin_line", [[2, 2, 12, 3, 12, 3.2, 2, 2.2]], 8, 16)
    add("tiny", [[3.2, 3.1, 3.6, 3.1, 3.6, 3.4]], 7, 7)
    add("outside_clipped", [[-3.5, -2.2, 20.4, 1.0, 18.0, 14.9, -1.3, 11.0]], 12, 15)
    add("negative_small", [[-0.2, -0.3, 4.4, -0.1, 4.1, 4.6, -0.4, 4.2]], 6, 6)
    add("two_parts", [[1, 1, 5, 1, 5, 5, 1, 5], [7.5, 2.5, 11.5, 2.5, 9.5, 8.5]], 10, 13)
    add("overlapping_parts", [[1, 1, 8, 1, 8, 8, 1, 8], [4, 4, 11, 4, 11, 11, 4, 11]], 13, 13)
    add("self_intersecting", [[1, 1, 10, 10, 10, 1, 1, 10]], 12, 12)
    add("odd_length", [[1, 1, 6, 1, 6, 6, 1, 6, 3]], 8, 8)
    add("short_later_part", [[1, 1, 6, 1, 6, 6, 1, 6], [2, 2, 7, 7]], 8, 8)
    add("edge_on_border", [[0, 0, 9, 0, 9, 6, 0, 6]], 7, 10)
    # Random polygons (star-shaped around a centre, fractional vertices).
    for i in range(12):
        h, w = int(rng.integers(8, 40)), int(rng.integers(8, 40))
        n = int(rng.integers(3, 14))
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        ang = np.sort(rng.uniform(0, 2 * np.pi, n))
        rad = rng.uniform(0.5, max(h, w) / 2, n)
        xy = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1).ravel()
        add(f"random_polygon_{i}", [[round(float(v), 3) for v in xy]], h, w)
    # Larger polygons with many vertices (ship-like outlines at SSDD scale).
    for i in range(4):
        h, w = int(rng.integers(40, 90)), int(rng.integers(40, 90))
        n = int(rng.integers(20, 60))
        cx, cy = rng.uniform(w / 4, 3 * w / 4), rng.uniform(h / 4, 3 * h / 4)
        ang = np.sort(rng.uniform(0, 2 * np.pi, n))
        rad = rng.uniform(3, min(h, w) / 2, n)
        xy = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1).ravel()
        add(f"large_polygon_{i}", [[float(v) for v in xy]], h, w)
    # RLEs from random masks.
    for i in range(4):
        h, w = int(rng.integers(5, 30)), int(rng.integers(5, 30))
        m = np.asfortranarray((rng.uniform(size=(h, w)) < (0.2 + 0.2 * i)).astype(np.uint8))
        enc = mu.encode(m)
        add(f"rle_compressed_{i}", {"counts": enc["counts"].decode(), "size": [h, w]}, h, w)
        flat = m.ravel(order="F")
        runs, prev, run = [], 0, 0
        for b in flat:
            if b != prev:
                runs.append(run)
                run, prev = 0, b
            run += 1
        runs.append(run)
        add(f"rle_uncompressed_{i}", {"counts": [int(r) for r in runs], "size": [h, w]}, h, w)
    # Large counts (multi-character numbers, negative differences).
    h, w = 300, 400
    m = np.zeros((h, w), np.uint8, order="F")
    m[10:290, 20:380] = 1
    m[100:120, 50:60] = 0
    enc = mu.encode(m)
    add("rle_compressed_large", {"counts": enc["counts"].decode(), "size": [h, w]}, h, w)

    with open(args.out, "w") as f:
        json.dump({"generator": "pycocotools 2.0.11", "cases": cases}, f, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()
