#!/usr/bin/env python3
"""Counts the matrix-product work of one ViT training step with lora or lora+cobot, as sam-cobot
computes it and as Meta's PyTorch code does, and the least time the products alone allow.

The image encoder dominates a step. Counted per block: qkv, proj and the MLP's two layers
forward, and in the backward pass their input gradients (LoRA sits in block 0, so the gradient
flows through every block, but the frozen weights need no weight gradient; block 0's qkv input
needs none either); attention's two products forward and five backward (the scores recomputed,
dV, dP, dQ, dK); the relative-position terms; the patch embedding (forward) and the neck. The
mask decoder and LoRA's rank-4 products are left out (well under 1%).

The two sides differ in windowed blocks: sam-cobot projects only the real tokens and attends
with real queries only (padding tokens are keys whose qkv is the bias, docs/sam.md), while
Meta's code pads the normed input to whole windows and projects and attends the padded grid.

    python3 scripts/step_flops.py --image-size 256 --gemm-gflops 178 --pytorch-ms 1136
"""

import argparse
import math

# name: (embed, depth, global blocks, mlp, neck width), as src/sam/config.rs names them
CONFIGS = {
    "vit_b": (768, 12, (2, 5, 8, 11), 3072, 256),
    "vit_l": (1024, 24, (5, 11, 17, 23), 4096, 256),
    "vit_h": (1280, 32, (7, 15, 23, 31), 5120, 256),
}
PATCH, WINDOW = 16, 14


def step_macs(model: str, size: int) -> tuple[float, float]:
    """Multiply-adds of one training step at batch 1: (sam-cobot, Meta's PyTorch code)."""
    c, depth, global_blocks, mlp, neck_c = CONFIGS[model]
    g = size // PATCH
    tokens = g * g
    padded = (math.ceil(g / WINDOW) * WINDOW) ** 2
    patch_embed = tokens * c * 3 * PATCH * PATCH
    neck = tokens * c * neck_c + tokens * neck_c * neck_c * 9
    ours = theirs = patch_embed + 2 * neck
    for block in range(depth):
        is_global = block in global_blocks
        keys = tokens if is_global else WINDOW * WINDOW
        for rows, side in ((tokens, "ours"), (tokens if is_global else padded, "theirs")):
            attention_proj = rows * 4 * c * c
            mlp_layers = tokens * 2 * c * mlp
            qkv_input_grad = rows * 3 * c * c if block == 0 else 0
            attention = rows * keys * c * 2
            rel_pos = rows * (g if is_global else WINDOW) * 2 * c
            macs = (
                2 * (attention_proj + mlp_layers)
                - qkv_input_grad
                + attention * 3.5
                + rel_pos * 3
            )
            if side == "ours":
                ours += macs
            else:
                theirs += macs
    return ours, theirs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vit_b", choices=CONFIGS)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument(
        "--gemm-gflops",
        type=float,
        help="the rate `sam-cobot bench --workload gemm` measures on the step's shapes",
    )
    parser.add_argument("--pytorch-ms", type=float, help="PyTorch's median step (bench_reference.py)")
    args = parser.parse_args()
    ours, theirs = step_macs(args.model, args.image_size)
    print(
        f"{args.model} at {args.image_size} px, lora+cobot training step: "
        f"sam-cobot {2 * ours / 1e9:.1f} GFLOP of products, PyTorch {2 * theirs / 1e9:.1f}"
    )
    if args.gemm_gflops:
        floor_ms = 2 * ours / 1e9 / args.gemm_gflops * 1e3
        line = f"products alone at {args.gemm_gflops:g} GFLOP/s: {floor_ms:.0f} ms"
        if args.pytorch_ms:
            line += f", {floor_ms / args.pytorch_ms:.2f} of PyTorch's {args.pytorch_ms:g} ms"
        print(line)


if __name__ == "__main__":
    main()
