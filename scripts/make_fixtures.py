#!/usr/bin/env python3
"""Reference fixture writer for sam-cobot's SAM parity tests.

Builds small SAM-shaped models with the real `segment_anything` modules, fills every
state-dict tensor with seeded random values, saves them exactly like Meta's checkpoints
(`torch.save(state_dict)`, flat dict, official key names, float32) plus a `.safetensors`
copy, and records SamPredictor outputs for a few prompt sets.

    python3 scripts/make_fixtures.py                      # writes tests/fixtures/
    python3 scripts/make_fixtures.py --out DIR            # elsewhere
    python3 scripts/make_fixtures.py --full-vit-b OUTDIR  # + random official-size ViT-B (~400 MB, not committed)

Everything is deterministic (fixed seeds, CPU, single-threaded unless told otherwise):
re-running writes byte-identical files.  See scripts/README.md.
"""

import argparse
import json
import os
import sys
import time
from functools import partial

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

from segment_anything import SamPredictor, sam_model_registry
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)
from segment_anything.modeling.common import LayerNorm2d
from segment_anything.modeling.image_encoder import get_rel_pos
from segment_anything.utils.transforms import ResizeLongestSide

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

IMAGE_NAME = "image_300x200.png"
GRAY_NAME = "gray_150x220.png"

# Prompts in ORIGINAL image pixel coordinates (image is 300 wide x 200 high).
# boxes: x1, y1, x2, y2 ; points: x, y, label
PROMPT_SETS = {
    "box1": {"boxes": [[60.0, 40.0, 220.0, 160.0]], "points": None},
    "box2": {"boxes": [[60.0, 40.0, 220.0, 160.0], [150.0, 20.0, 290.0, 190.0]], "points": None},
    "points": {"boxes": None, "points": [[[120.0, 90.0, 1], [250.0, 150.0, 0]]]},
    "box_point": {"boxes": [[30.0, 50.0, 200.0, 180.0]], "points": [[[110.0, 110.0, 1]]]},
}


# --------------------------------------------------------------------------------------
# model construction
# --------------------------------------------------------------------------------------

def build_tiny_sam(img_size: int) -> Sam:
    """tiny SAM: encoder C=64, depth 4, 2 heads, global (1,3), out 32; decoder dim 32."""
    patch = 16
    out_chans = 32
    g = img_size // patch
    return Sam(
        image_encoder=ImageEncoderViT(
            depth=4,
            embed_dim=64,
            img_size=img_size,
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=2,
            patch_size=patch,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=(1, 3),
            window_size=14,
            out_chans=out_chans,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=out_chans,
            image_embedding_size=(g, g),
            input_image_size=(img_size, img_size),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=2,
                embedding_dim=out_chans,
                mlp_dim=64,
                num_heads=8,
            ),
            transformer_dim=out_chans,
            iou_head_depth=3,
            iou_head_hidden_dim=32,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )


# Scales of the random weights (chosen so that activations stay O(1), the mask logits are
# mixed positive/negative and the IoU predictions vary; see the printed ranges).
WEIGHT_GAIN = 1.0      # weights ~ N(0, (gain / sqrt(fan_in))^2)
# larger gains where the mask logits are formed, so they spread well beyond +-1
GAIN_OVERRIDES = [
    ("mask_decoder.output_upscaling.", 2.0),
    ("mask_decoder.output_hypernetworks_mlps.", 2.0),
]
BIAS_STD = 0.1
NORM_W_STD = 0.1       # LayerNorm weight ~ 1 + N(0, 0.1^2)
NORM_B_STD = 0.1
POS_EMBED_STD = 0.5
REL_POS_STD = 0.2
TOKEN_STD = 1.0        # point/not-a-point/no-mask embeddings, iou/mask tokens
PE_GAUSS_STD = 1.0     # prompt_encoder.pe_layer gaussian matrix (SAM: N(0,1) * scale 1)


# Seeds of the random checkpoints: picked (from 0..11) so that the single-mask logits of
# the reference prompts are mixed positive/negative (see the printed pos_frac values).
SEED_TINY256 = 10
SEED_TINY1024 = 8
SEED_VIT_B = 768


def randomize_(model: nn.Module, seed: int) -> None:
    """Overwrite every state-dict tensor with seeded random values (in state-dict order)."""
    gen = torch.Generator().manual_seed(seed)
    modules = dict(model.named_modules())
    norm_prefixes = {
        name for name, m in modules.items() if isinstance(m, (nn.LayerNorm, LayerNorm2d))
    }
    convT_prefixes = {
        name for name, m in modules.items() if isinstance(m, nn.ConvTranspose2d)
    }

    def randn(shape):
        return torch.randn(shape, generator=gen, dtype=torch.float32)

    new_sd = {}
    for key, t in model.state_dict().items():
        prefix, _, leaf = key.rpartition(".")
        shape = tuple(t.shape)
        if key.endswith("pos_embed"):
            v = randn(shape) * POS_EMBED_STD
        elif leaf in ("rel_pos_h", "rel_pos_w"):
            v = randn(shape) * REL_POS_STD
        elif key.endswith("positional_encoding_gaussian_matrix"):
            v = randn(shape) * PE_GAUSS_STD
        elif prefix in norm_prefixes:
            if leaf == "weight":
                v = 1.0 + randn(shape) * NORM_W_STD
            else:
                v = randn(shape) * NORM_B_STD
        elif leaf == "bias":
            v = randn(shape) * BIAS_STD
        elif (
            "point_embeddings" in key
            or "not_a_point_embed" in key
            or "no_mask_embed" in key
            or key.endswith("iou_token.weight")
            or key.endswith("mask_tokens.weight")
        ):
            v = randn(shape) * TOKEN_STD
        elif leaf == "weight" and len(shape) >= 2:
            if prefix in convT_prefixes:
                # ConvTranspose2d [in, out, kh, kw] with stride == kernel: each output pixel
                # sees `in` inputs.
                fan_in = shape[0]
            else:
                fan_in = int(np.prod(shape[1:]))
            gain = WEIGHT_GAIN
            for pat, g in GAIN_OVERRIDES:
                if pat in key:
                    gain = g
            v = randn(shape) * (gain / np.sqrt(fan_in))
        else:
            raise RuntimeError(f"no randomisation rule for {key} {shape}")
        new_sd[key] = v.contiguous()
    model.load_state_dict(new_sd, strict=True)


def save_checkpoint(model: nn.Module, pth_path: str, safetensors_copy: bool = False) -> dict:
    sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    for k, v in sd.items():
        assert v.dtype == torch.float32, k
    torch.save(sd, pth_path)
    if safetensors_copy:  # one copy is enough to test the safetensors path
        save_file(sd, os.path.splitext(pth_path)[0] + ".safetensors")
    return sd


def load_checkpoint_into(model: nn.Module, pth_path: str) -> None:
    sd = torch.load(pth_path, map_location="cpu", weights_only=True)
    model.load_state_dict(sd, strict=True)


def adapt_to_input_size(sam: Sam, S: int) -> torch.Tensor:
    """docs/sam.md#other-input-sizes: run a checkpoint at input size S (multiple of 16).

    pos_embed: [1,G,G,C] -> [1,C,G,G] -> bilinear (align_corners=False, no antialias) to
    [1,C,g,g] -> [1,g,g,C].  Rel-pos tables stay as stored (get_rel_pos interpolates them
    at run time).  Windowed blocks keep window 14.  Only attributes are changed; the
    segment_anything modules themselves are not patched.
    """
    enc = sam.image_encoder
    patch = enc.patch_embed.proj.kernel_size[0]
    assert S % patch == 0
    g = S // patch
    pe = enc.pos_embed.data
    if pe.shape[1] != g:
        resized = F.interpolate(
            pe.permute(0, 3, 1, 2), size=(g, g), mode="bilinear", align_corners=False
        ).permute(0, 2, 3, 1).contiguous()
        enc.pos_embed = nn.Parameter(resized)
    enc.img_size = S
    pe_enc = sam.prompt_encoder
    pe_enc.image_embedding_size = (g, g)
    pe_enc.input_image_size = (S, S)
    pe_enc.mask_input_size = (4 * g, 4 * g)
    return enc.pos_embed.data.clone()


# --------------------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------------------

def make_images(out_dir: str):
    rng = np.random.RandomState(1234)
    H, W = 200, 300
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    r = 255.0 * xx / (W - 1)
    g = 255.0 * yy / (H - 1)
    b = 127.5 + 100.0 * np.sin(xx / 17.0) * np.cos(yy / 11.0)
    img = np.stack([r, g, b], axis=-1)
    # a filled disc
    disc = (xx - 110.0) ** 2 + (yy - 95.0) ** 2 < 45.0 ** 2
    img[disc] = [230.0, 40.0, 60.0]
    # a rectangle with a dark border
    rect = (xx >= 170) & (xx < 270) & (yy >= 30) & (yy < 170)
    img[rect] = [30.0, 200.0, 90.0]
    inner = (xx >= 185) & (xx < 255) & (yy >= 45) & (yy < 155)
    img[rect & ~inner] *= 0.3
    # a thin diagonal line and a checker patch
    line = np.abs(yy - (0.5 * xx + 20.0)) < 1.5
    img[line] = [250.0, 250.0, 250.0]
    checker = (xx < 60) & (yy > 140) & (((xx // 6) + (yy // 6)) % 2 == 0)
    img[checker] = [10.0, 10.0, 10.0]
    # small deterministic noise
    img += rng.normal(0.0, 4.0, size=img.shape)
    img = np.clip(np.round(img), 0, 255).astype(np.uint8)
    Image.fromarray(img, mode="RGB").save(os.path.join(out_dir, IMAGE_NAME), optimize=False)

    # portrait greyscale (8-bit 'L') image: exercises grey->RGB loading and the h > w branch
    Hg, Wg = 220, 150
    yy, xx = np.mgrid[0:Hg, 0:Wg].astype(np.float64)
    gray = 40.0 + 150.0 * yy / (Hg - 1) + 50.0 * np.sin(xx / 9.0)
    gray[((xx - 75.0) ** 2 / 40.0 ** 2 + (yy - 120.0) ** 2 / 70.0 ** 2) < 1.0] = 235.0
    gray = np.clip(np.round(gray), 0, 255).astype(np.uint8)
    Image.fromarray(gray, mode="L").save(os.path.join(out_dir, GRAY_NAME), optimize=False)


def load_rgb(path: str) -> np.ndarray:
    return np.array(Image.open(path).convert("RGB"))


# --------------------------------------------------------------------------------------
# reference runs
# --------------------------------------------------------------------------------------

class Capture:
    """Forward hooks that record the inputs/outputs of the real modules."""

    def __init__(self, sam: Sam):
        self.data = {}
        self.handles = [
            sam.image_encoder.register_forward_pre_hook(self._enc_in),
            sam.image_encoder.register_forward_hook(self._enc_out),
            sam.prompt_encoder.register_forward_hook(self._prompt_out),
        ]

    def _enc_in(self, mod, args):
        self.data["input_image"] = args[0].detach().clone()

    def _enc_out(self, mod, args, out):
        self.data["image_embedding"] = out.detach().clone()

    def _prompt_out(self, mod, args, out):
        self.data["sparse"] = out[0].detach().clone()
        self.data["dense"] = out[1].detach().clone()

    def remove(self):
        for h in self.handles:
            h.remove()


def run_prompt_set(predictor: SamPredictor, cap: Capture, pset: dict, multimask: bool):
    """Exactly what SamPredictor.predict does, but batched through predict_torch."""
    coords_t = labels_t = boxes_t = None
    if pset["points"] is not None:
        pts = np.array(pset["points"], dtype=np.float64)  # [N, P, 3]
        coords = predictor.transform.apply_coords(pts[..., :2], predictor.original_size)
        coords_t = torch.as_tensor(coords, dtype=torch.float, device=predictor.device)
        labels_t = torch.as_tensor(pts[..., 2].astype(np.int64), dtype=torch.int, device=predictor.device)
    if pset["boxes"] is not None:
        boxes = np.array(pset["boxes"], dtype=np.float64)  # [N, 4]
        boxes = predictor.transform.apply_boxes(boxes, predictor.original_size)
        boxes_t = torch.as_tensor(boxes, dtype=torch.float, device=predictor.device)
    with torch.no_grad():
        masks, iou, low = predictor.predict_torch(
            coords_t, labels_t, boxes_t, None, multimask_output=multimask, return_logits=True
        )
    return masks, iou, low, cap.data["sparse"], cap.data["dense"]


def summarize(name, t):
    t = t.float()
    extra = ""
    if "logits" in name:
        extra = f" pos_frac={float((t > 0).float().mean()):.3f}"
    print(f"    {name:34s} {str(list(t.shape)):20s} min={float(t.min()):+.4f} "
          f"max={float(t.max()):+.4f} mean={float(t.mean()):+.4f} "
          f"std={float(t.std()) if t.numel() > 1 else 0.0:.4f}{extra}")


def reference_case(sam: Sam, S: int, image_path: str, ckpt_name: str, case_dir: str,
                   sets=None, store_input_image=True, pos_embed_resized=None):
    os.makedirs(case_dir, exist_ok=True)
    sets = sets or list(PROMPT_SETS)
    sam.eval()
    predictor = SamPredictor(sam)
    assert predictor.transform.target_length == S
    cap = Capture(sam)
    image = load_rgb(image_path)
    t0 = time.time()
    predictor.set_image(image, image_format="RGB")
    t_enc = time.time() - t0
    out = {}
    if store_input_image:
        out["input_image"] = cap.data["input_image"]
    out["image_embedding"] = cap.data["image_embedding"]
    assert torch.equal(out["image_embedding"], predictor.features)
    if pos_embed_resized is not None:
        out["pos_embed_resized"] = pos_embed_resized
    t0 = time.time()
    for name in sets:
        masks, iou, low, sparse, dense = run_prompt_set(predictor, cap, PROMPT_SETS[name], False)
        out[f"{name}.sparse"] = sparse
        if name == sets[0]:
            # Without a mask prompt, dense = no_mask_embed broadcast to [N,C,g,g] for every
            # set; stored once (for the first set) to keep the fixtures small (2 MB at 1024).
            out[f"{name}.dense"] = dense
        else:
            expect = sam.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand_as(dense)
            assert torch.equal(dense, expect)
        out[f"{name}.low_res_logits"] = low
        out[f"{name}.iou"] = iou
        out[f"{name}.masks_logits"] = masks
        if name == "box1":
            _, iou_m, low_m, _, _ = run_prompt_set(predictor, cap, PROMPT_SETS[name], True)
            out["box1.multi_low_res_logits"] = low_m
            out["box1.multi_iou"] = iou_m
    t_dec = time.time() - t0
    cap.remove()
    out = {k: v.detach().float().contiguous() for k, v in out.items()}
    save_file(out, os.path.join(case_dir, "reference.safetensors"))
    stored_keys = sorted(out)
    h, w = image.shape[:2]
    meta = {
        "image": os.path.basename(image_path),
        "image_size_hw": [h, w],
        "checkpoint": ckpt_name,
        "run_size": S,
        "input_size_hw": list(predictor.input_size),
        "multimask_output": False,
        "return_logits": True,
        "input_image_stored": store_input_image,
        "box1_multimask_stored": "box1" in sets,
        "coords": "original image pixels; boxes x1,y1,x2,y2; points x,y,label",
        "prompt_sets": {n: PROMPT_SETS[n] for n in sets},
        "tensors": {k: list(out[k].shape) for k in stored_keys},
    }
    with open(os.path.join(case_dir, "prompts.json"), "w") as f:
        json.dump(meta, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"  case {os.path.basename(case_dir)} (S={S}): encoder {t_enc:.2f}s, decoder {t_dec:.2f}s")
    for k in sorted(out):
        if k != "input_image":
            summarize(k, out[k])
    return out


# --------------------------------------------------------------------------------------
# unit references
# --------------------------------------------------------------------------------------

def unit_references(out_dir: str, image_path: str, gray_path: str):
    gen = torch.Generator().manual_seed(777)
    u = {}
    # (a) get_rel_pos interpolation
    t27 = torch.randn((27, 8), generator=gen)
    t127 = torch.randn((127, 8), generator=gen)
    u["rel_pos_27"] = t27
    u["rel_pos_27_to_63"] = F.interpolate(
        t27.reshape(1, 27, -1).permute(0, 2, 1), size=63, mode="linear"
    ).reshape(-1, 63).permute(1, 0)
    u["get_rel_pos_27_q32_k32"] = get_rel_pos(32, 32, t27)  # [32, 32, 8]
    u["rel_pos_127"] = t127
    u["rel_pos_127_to_31"] = F.interpolate(
        t127.reshape(1, 127, -1).permute(0, 2, 1), size=31, mode="linear"
    ).reshape(-1, 31).permute(1, 0)
    u["get_rel_pos_127_q16_k16"] = get_rel_pos(16, 16, t127)  # [16, 16, 8]
    # consistency: get_rel_pos indexes the resized table with a - b + (k - 1)
    idx = torch.arange(32)[:, None] - torch.arange(32)[None, :] + 31
    assert torch.equal(u["get_rel_pos_27_q32_k32"], u["rel_pos_27_to_63"][idx])
    # (b) pos_embed bilinear resize as in docs/sam.md#other-input-sizes
    pe = torch.randn((1, 64, 64, 8), generator=gen)
    u["pos_embed_64"] = pe
    u["pos_embed_64_to_16"] = F.interpolate(
        pe.permute(0, 3, 1, 2), size=(16, 16), mode="bilinear", align_corners=False
    ).permute(0, 2, 3, 1)
    # (c) ResizeLongestSide.apply_image (PIL bilinear, antialiased when downscaling)
    img = load_rgb(image_path)
    r256 = ResizeLongestSide(256).apply_image(img)
    # Resized images are stored as uint8 HWC (safetensors dtype U8), exactly the
    # apply_image output. The 1024 resize is covered by the tiny1024_at1024 embedding.
    u["resize_256_u8"] = torch.from_numpy(np.ascontiguousarray(r256))
    gray = load_rgb(gray_path)  # L -> RGB (replicated channels), as PIL .convert("RGB")
    u["gray_resize_256_u8"] = torch.from_numpy(
        np.ascontiguousarray(ResizeLongestSide(256).apply_image(gray)))
    out = {k: (v if v.dtype == torch.uint8 else v.float()).contiguous() for k, v in u.items()}
    os.makedirs(out_dir, exist_ok=True)
    save_file(out, os.path.join(out_dir, "reference.safetensors"))
    print("  unit references:")
    for k in sorted(out):
        print(f"    {k:30s} {str(list(out[k].shape)):18s} {out[k].dtype}")


# --------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------

def make_small(out: str):
    os.makedirs(out, exist_ok=True)
    make_images(out)
    image_path = os.path.join(out, IMAGE_NAME)
    gray_path = os.path.join(out, GRAY_NAME)

    # tiny256
    sam = build_tiny_sam(256)
    randomize_(sam, seed=SEED_TINY256)
    save_checkpoint(sam, os.path.join(out, "tiny256.pth"), safetensors_copy=True)
    sam = build_tiny_sam(256)  # fresh model loaded from the file, as a user would
    load_checkpoint_into(sam, os.path.join(out, "tiny256.pth"))
    reference_case(sam, 256, image_path, "tiny256.pth", os.path.join(out, "tiny256_at256"))

    # tiny1024
    sam = build_tiny_sam(1024)
    randomize_(sam, seed=SEED_TINY1024)
    save_checkpoint(sam, os.path.join(out, "tiny1024.pth"))
    sam = build_tiny_sam(1024)
    load_checkpoint_into(sam, os.path.join(out, "tiny1024.pth"))
    # Fewer prompt sets and no input_image for the larger cases keep the fixtures small;
    # tiny256_at256 covers every set, and its input_image is the same 256 px preprocessing.
    reference_case(sam, 1024, image_path, "tiny1024.pth", os.path.join(out, "tiny1024_at1024"),
                   sets=["box1", "points"], store_input_image=False)

    sam = build_tiny_sam(1024)
    load_checkpoint_into(sam, os.path.join(out, "tiny1024.pth"))
    pe = adapt_to_input_size(sam, 256)
    reference_case(sam, 256, image_path, "tiny1024.pth", os.path.join(out, "tiny1024_at256"),
                   sets=["box1", "box2"], store_input_image=False, pos_embed_resized=pe)

    unit_references(os.path.join(out, "unit"), image_path, gray_path)


def make_full_vit_b(outdir: str, image_path: str):
    os.makedirs(outdir, exist_ok=True)
    torch.set_num_threads(2)
    t0 = time.time()
    sam = sam_model_registry["vit_b"](checkpoint=None)
    randomize_(sam, seed=SEED_VIT_B)
    ckpt = os.path.join(outdir, "sam_vit_b_random.pth")
    sd = {k: v.detach().clone().contiguous() for k, v in sam.state_dict().items()}
    torch.save(sd, ckpt)
    del sd
    print(f"vit_b: built + randomised + saved in {time.time() - t0:.1f}s -> {ckpt}")
    for S in (1024, 256):
        t0 = time.time()
        sam = sam_model_registry["vit_b"](checkpoint=None)
        load_checkpoint_into(sam, ckpt)
        pe = adapt_to_input_size(sam, S) if S != 1024 else None
        reference_case(sam, S, image_path, "sam_vit_b_random.pth",
                       os.path.join(outdir, f"vit_b_at{S}"), sets=["box1", "box2"],
                       store_input_image=True, pos_embed_resized=pe)
        print(f"vit_b at {S}: {time.time() - t0:.1f}s total")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "fixtures"))
    ap.add_argument("--full-vit-b", metavar="OUTDIR", default=None,
                    help="also write a random official-size ViT-B checkpoint + references (~400 MB)")
    ap.add_argument("--skip-small", action="store_true", help="only do --full-vit-b")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for the small fixtures")
    args = ap.parse_args()

    torch.use_deterministic_algorithms(True)
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, numpy {np.__version__}, "
          f"PIL {Image.__version__}, python {sys.version.split()[0]}")
    if not args.skip_small:
        make_small(args.out)
    if args.full_vit_b:
        image_path = os.path.join(args.out, IMAGE_NAME)
        if not os.path.exists(image_path):
            make_images(args.out)
        make_full_vit_b(args.full_vit_b, image_path)


if __name__ == "__main__":
    main()
