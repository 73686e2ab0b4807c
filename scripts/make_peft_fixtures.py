#!/usr/bin/env python3
"""Gradient-parity fixtures for sam-cobot's PEFT training (docs/methods.md,
in particular docs/methods.md#forward-pass-and-loss).

    python3 scripts/make_peft_fixtures.py            # writes tests/fixtures/peft/
    python3 scripts/make_peft_fixtures.py --out DIR  # elsewhere
    python3 scripts/make_peft_fixtures.py --no-counts --no-fd   # skip the slow-ish checks

Loads tests/fixtures/tiny256.pth (written by make_fixtures.py) into the tiny SAM, inserts
the PEFT modules of scripts/peft_reference.py, sets every PEFT tensor to a seeded value,
runs one training forward (image encoder + prompt encoder + mask decoder, 2 box prompts,
multimask off, bilinear align_corners=True upsampling to 256), the loss
    sum over the 2 objects of [BCEWithLogits(mean over 256^2) + 1 - softDice]
and stores the loss, the gradient of every trainable tensor and the starting values of
every PEFT tensor.  Also writes param_counts.json (vit_b / vit_l / vit_h, built on the meta
device and checked against a real ViT-B build and docs/methods.md#parameter-counts).

PEFT values: the docs/methods.md#initial-values distributions (peft_reference.init_peft_)
plus seeded noise N(0, (0.1*scale)^2) on every tensor (scale = the init's std, or 1 for constant inits,
including the zero inits W_up, b_up, b_down, LN bias, quaternion R), so that no gradient is
structurally zero (W_up = 0 would zero every other adapter gradient).  Frozen relation
matrices keep their exact value: identity, or U[0,1) for "fixed".

Everything is float32 on CPU with 1 thread and deterministic: re-running writes
byte-identical files.  A float64 copy of each model checks a few PEFT gradients by central
finite differences.  See scripts/README.md.
"""

import argparse
import copy
import json
import os
import re
import sys

sys.dont_write_bytecode = True

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import make_fixtures as mf  # noqa: E402  (tiny SAM builder, checkpoint loader, image loader)
import peft_reference as pr  # noqa: E402
from segment_anything import sam_model_registry  # noqa: E402
from segment_anything.utils.transforms import ResizeLongestSide  # noqa: E402

REPO = os.path.dirname(HERE)
S = 256
DEPTH = 4  # tiny SAM encoder depth
RANK = 4
BOTTLENECK = 16
PEFT_SEED = 2024
# the two prompts, ORIGINAL image pixels (x1,y1,x2,y2): box1 and box2's second box of
# tests/fixtures/tiny256_at256/prompts.json
BOXES_ORIG = [[60.0, 40.0, 220.0, 160.0], [150.0, 20.0, 290.0, 190.0]]

LOSS_TEXT = (
    "low_res_logits [2,1,64,64] (mask decoder, multimask_output=False) -> "
    "F.interpolate(size=(256,256), mode='bilinear', align_corners=True) -> logits [2,1,256,256]; "
    "loss = sum over the 2 objects n of [ mean over the 256*256 pixels of "
    "BCEWithLogits(logit, target) + (1 - (2*sum(p*g) + 1) / (sum(p) + sum(g) + 1)) ], "
    "p = sigmoid(logit), g = target, sums over the object's 256*256 pixels (soft Dice, smooth 1)"
)
TARGET_TEXT = (
    "targets [2,1,256,256] float 0/1 in the 256 input frame: for box n (input-frame floats "
    "truncated to int x1,y1,x2,y2), pixel (x,y) (integer column x, row y) is 1 iff "
    "x1 <= x < x2 and y1 <= y < y2 and ((x+0.5-cx)/ax)^2 + ((y+0.5-cy)/ay)^2 <= 1 with "
    "cx=(x1+x2)/2, cy=(y1+y2)/2, ax=(x2-x1)/2, ay=(y2-y1)/2 (the ellipse inscribed in the "
    "pixel box [x1,x2)x[y1,y2), tested at pixel centres)"
)

# folder, method, coefficients, relation, head
CASES = [
    ("freeze", "freeze", None, None, None),
    ("lightweight", "lightweight", None, None, None),
    ("lora", "lora", None, None, None),
    ("adapter", "adapter", None, None, None),
    ("full", "full", None, None, None),
]
for _base in ("lora", "adapter"):
    _m = _base + "+cobot"
    CASES += [
        (f"{_base}_cobot", _m, "dual", "learnable", "quaternion"),
        (f"{_base}_cobot_block", _m, "block", None, "quaternion"),
        (f"{_base}_cobot_rel_identity", _m, "dual", "identity", "quaternion"),
        (f"{_base}_cobot_rel_fixed", _m, "dual", "fixed", "quaternion"),
        (f"{_base}_cobot_head_none", _m, "dual", "learnable", "none"),
        (f"{_base}_cobot_head_linear", _m, "dual", "learnable", "linear"),
    ]


# --------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------

def make_inputs(fixtures: str, sam):
    """SamPredictor.set_image preprocessing at 256 and apply_boxes for the two boxes."""
    image = mf.load_rgb(os.path.join(fixtures, mf.IMAGE_NAME))
    tr = ResizeLongestSide(S)
    resized = tr.apply_image(image)
    x = torch.as_tensor(resized).permute(2, 0, 1).contiguous()[None, :, :, :]
    x = sam.preprocess(x)  # (x - mean) / std, pad to 256x256
    boxes = tr.apply_boxes(np.array(BOXES_ORIG, dtype=np.float64), image.shape[:2])
    boxes_t = torch.as_tensor(boxes, dtype=torch.float)
    return x.detach(), boxes_t, image.shape[:2], resized.shape[:2]


def make_targets(boxes_t):
    n = boxes_t.shape[0]
    tg = torch.zeros(n, 1, S, S, dtype=torch.float32)
    ys = torch.arange(S, dtype=torch.float64)[:, None]
    xs = torch.arange(S, dtype=torch.float64)[None, :]
    for k in range(n):
        x1, y1, x2, y2 = [int(v) for v in boxes_t[k].tolist()]
        cx, cy, ax, ay = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
        inside = (xs >= x1) & (xs < x2) & (ys >= y1) & (ys < y2)
        ell = ((xs + 0.5 - cx) / ax) ** 2 + ((ys + 0.5 - cy) / ay) ** 2 <= 1.0
        tg[k, 0] = (inside & ell).float()
    return tg


def write_json(path, obj):
    """indent 1, sorted keys, short numeric lists (shapes, boxes) kept on one line."""
    text = json.dumps(obj, indent=1, sort_keys=True)
    text = re.sub(r"\[\s*([-0-9.e+,\s]*?)\s*\]",
                  lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",") if v.strip()) + "]",
                  text)
    with open(path, "w") as f:
        f.write(text + "\n")


def check_lora_cobot_delta(sam, gen):
    """The wrapper's q/v deltas equal B . Q . diag(m + g) . A (docs/methods.md#lora-with-cobot, column-vector form)."""
    for mod in pr.peft_modules(sam):
        if not (isinstance(mod, pr.LoRAQKV) and mod.cobot):
            continue
        x = torch.randn(5, mod.dim, generator=gen)
        with torch.no_grad():
            out = mod(x) - mod.qkv(x)
            C, r, i = mod.dim, mod.r, mod.block_index
            for part, t, a, b, head, g in ((0, 2 * i, mod.linear_a_q, mod.linear_b_q, mod.FacT_d1,
                                            mod.gamma[0:r]),
                                           (2, 2 * i + 1, mod.linear_a_v, mod.linear_b_v, mod.FacT_d2,
                                            mod.gamma[r:2 * r])):
                m = (mod.FacT_c @ mod.FacT_p)[0, :, t] if mod.coefficients == "dual" else 0.0
                if head is None:
                    Q = torch.eye(r)
                elif isinstance(head, pr.QuaternionLinear):
                    Q = head.weight_matrix().t()
                else:
                    Q = head.weight
                dW = b.weight @ Q @ torch.diag(m + g) @ a.weight
                ref = x @ dW.t()
                got = out[:, part * C:(part + 1) * C]
                assert torch.allclose(got, ref, rtol=1e-4, atol=1e-5), (i, part)
            assert float(out[:, C:2 * C].abs().max()) == 0.0


# --------------------------------------------------------------------------------------
# model, forward, loss
# --------------------------------------------------------------------------------------

def build_case(fixtures, method, coefficients, relation, head):
    sam = mf.build_tiny_sam(S)
    mf.load_checkpoint_into(sam, os.path.join(fixtures, "tiny256.pth"))
    pr.insert_peft(sam, method, rank=RANK, bottleneck=BOTTLENECK,
                   coefficients=coefficients or "dual", relation=relation or "learnable",
                   head=head or "quaternion", adapter_dropout=0.0)
    gen = torch.Generator().manual_seed(PEFT_SEED)
    pr.init_peft_(sam, gen)
    pr.perturb_peft_(sam, gen, fixed_relation=(relation == "fixed"))
    pr.set_trainable(sam, method)
    sam.eval()  # no dropout anywhere (adapter dropout is 0 for parity anyway)
    return sam


def forward_loss(sam, x, boxes_t, targets):
    emb = sam.image_encoder(x)
    sparse, dense = sam.prompt_encoder(points=None, boxes=boxes_t, masks=None)
    low, _iou = sam.mask_decoder(
        image_embeddings=emb,
        image_pe=sam.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=False,
    )
    logits = F.interpolate(low, size=(S, S), mode="bilinear", align_corners=True)
    loss = logits.new_zeros(())
    for n in range(logits.shape[0]):
        lg, g = logits[n], targets[n]
        bce = F.binary_cross_entropy_with_logits(lg, g, reduction="mean")
        p = torch.sigmoid(lg)
        dice = (2.0 * (p * g).sum() + 1.0) / (p.sum() + g.sum() + 1.0)
        loss = loss + bce + (1.0 - dice)
    return loss, low


def to_float64(sam32):
    """A float64 copy of the model; segment_anything builds prompt coordinates in float32,
    so the PE layer is patched to keep them in float64."""
    sam = copy.deepcopy(sam32).double()
    pe = sam.prompt_encoder.pe_layer
    pe_encoding = pe._pe_encoding

    def forward_with_coords(coords_input, image_size):
        coords = coords_input.clone()
        coords[:, :, 0] = coords[:, :, 0] / image_size[1]
        coords[:, :, 1] = coords[:, :, 1] / image_size[0]
        return pe_encoding(coords.to(torch.float64))

    def pe_encoding64(coords):  # the dense-PE grid is built in float32 too
        return pe_encoding(coords.to(torch.float64))

    pe.forward_with_coords = forward_with_coords
    pe._pe_encoding = pe_encoding64
    return sam


def float64_check(sam32, x, boxes_t, targets, names, eps=1e-6):
    """Float64 copy of the model: (a) central differences on the largest-|grad| entry of
    each tensor in `names` vs float64 autograd, (b) float32 vs float64 gradients of every
    trainable tensor, (c) the tensors whose float64 gradient vanishes (analytically zero
    gradient; float32 leaves rounding noise there)."""
    sam = to_float64(sam32)
    params = dict(sam.named_parameters())
    for p in sam.parameters():
        p.grad = None
    xd, bd, td = x.double(), boxes_t.double(), targets.double()
    loss, _ = forward_loss(sam, xd, bd, td)
    loss.backward()
    worst = 0.0
    rows = []
    for name in names:
        p = params[name]
        g = p.grad
        idx = int(torch.argmax(g.abs()).item())
        flat = p.data.view(-1)
        orig = flat[idx].item()
        with torch.no_grad():
            flat[idx] = orig + eps
            lp, _ = forward_loss(sam, xd, bd, td)
            flat[idx] = orig - eps
            lm, _ = forward_loss(sam, xd, bd, td)
            flat[idx] = orig
        fd = (lp.item() - lm.item()) / (2 * eps)
        an = g.view(-1)[idx].item()
        rel = abs(fd - an) / max(abs(an), 1e-12)
        worst = max(worst, rel)
        rows.append((name, idx, an, fd, rel))
    rel32, rel32_name, analytic_zero = 0.0, None, []
    for n, p32 in sam32.named_parameters():
        if not p32.requires_grad or p32.grad is None:
            continue
        g64 = params[n].grad
        n64 = float(g64.norm())
        if n64 < 1e-12:
            if float(p32.grad.abs().max()) != 0.0:
                analytic_zero.append((n, n64, float(p32.grad.norm())))
            continue
        rel = float((p32.grad.double() - g64).norm()) / n64
        if rel > rel32:
            rel32, rel32_name = rel, n
    return rows, worst, (rel32, rel32_name), analytic_zero


def pick_fd_names(trainable_names):
    """One tensor of every PEFT kind (block 0/1 and the shared ones) + one decoder tensor."""
    picks, kinds = [], set()
    for n in trainable_names:
        if not n.startswith("image_encoder.blocks.") or ".qkv.qkv." in n or ".mlp.mlp." in n:
            continue
        parts = n.split(".")
        blk = int(parts[2])
        kind = ".".join(parts[3:])
        if kind in kinds:
            continue
        if blk in (0, 1) or kind.endswith("FacT_c") or kind.endswith("FacT_p"):
            kinds.add(kind)
            picks.append(n)
    picks += [n for n in ("image_encoder.pos_embed", "image_encoder.blocks.1.attn.rel_pos_h",
                          "image_encoder.blocks.0.attn.qkv.weight", "image_encoder.patch_embed.proj.weight",
                          "prompt_encoder.point_embeddings.2.weight")
              if n in trainable_names]
    picks.append("mask_decoder.output_upscaling.0.weight")
    picks.append("mask_decoder.iou_token.weight")
    return picks


# --------------------------------------------------------------------------------------
# one case
# --------------------------------------------------------------------------------------

def run_case(fixtures, out_dir, case, x, boxes_t, targets, do_fd):
    folder, method, coefficients, relation, head = case
    torch.manual_seed(0)
    sam = build_case(fixtures, method, coefficients, relation, head)
    if method == "lora+cobot":
        check_lora_cobot_delta(sam, torch.Generator().manual_seed(1))
    peft = pr.peft_named_tensors(sam)
    start = {n: p.detach().clone() for n, p in peft.items()}
    trainable = pr.trainable_named(sam)
    loss, low = forward_loss(sam, x, boxes_t, targets)
    if trainable:
        loss.backward()
    # The stored loss and gradients are the float64 model's (the exact values, rounded once to
    # float32), so a float32 implementation is compared with the truth, not with PyTorch's own
    # float32 rounding (up to 6e-5 relative on the 1x1 quaternion components).
    sam64 = to_float64(sam)
    loss64, _ = forward_loss(sam64, x.double(), boxes_t.double(), targets.double())
    if trainable:
        loss64.backward()
    params64 = dict(sam64.named_parameters())
    out = {"loss": loss64.detach().reshape(1), "low_res_logits": low.detach()}
    for n, v in start.items():
        out[f"peft.{n}"] = v
    no_grad, zero_grad = [], []
    for n, p in trainable.items():
        if p.grad is None:
            no_grad.append(n)
            g = torch.zeros_like(p)
        else:
            g = params64[n].grad.detach()
            if float(p.grad.abs().max()) == 0.0:
                zero_grad.append(n)
        out[f"grad.{n}"] = g
    out = {k: v.float().contiguous() for k, v in out.items()}
    d = os.path.join(out_dir, folder)
    os.makedirs(d, exist_ok=True)
    save_file(out, os.path.join(d, "reference.safetensors"))

    peft_zero = [n for n in no_grad + zero_grad if n in peft]
    assert not peft_zero, f"{folder}: PEFT tensors without gradient: {peft_zero}"

    enc_params, total_params = pr.count_params(sam)
    print(f"case {folder:28s} loss={loss.item():.6f} trainable={len(trainable)} "
          f"({total_params} params) peft={len(peft)} no_grad={len(no_grad)} zero={len(zero_grad)} "
          f"size={os.path.getsize(os.path.join(d, 'reference.safetensors')) // 1024} KiB")
    if no_grad:
        print(f"    grad None (stored as zeros): {', '.join(no_grad)}")
    if zero_grad:
        print(f"    grad exactly zero: {', '.join(zero_grad)}")
    analytic_zero = []
    if do_fd and trainable:
        rows, worst, rel32, analytic_zero = float64_check(sam, x, boxes_t, targets,
                                                          pick_fd_names(list(trainable)))
        for name, idx, an, fd, rel in rows:
            print(f"    fd64 {name:60s}[{idx:5d}] autograd={an:+.8e} fd={fd:+.8e} rel={rel:.1e}")
        rel32, rel32_name = rel32
        print(f"    fd64 worst rel {worst:.2e}; float32 vs float64 gradients: worst rel "
              f"(tensor norm) {rel32:.2e} ({rel32_name})")
        for n, n64, n32 in analytic_zero:
            print(f"    analytically zero: {n} (norm float64 {n64:.1e}, float32 {n32:.1e})")
        assert worst < 1e-6, worst
        assert rel32 < 1e-3, rel32

    is_cobot = method.endswith("+cobot")
    meta = {
        "case": folder,
        "method": method,
        "rank": RANK if method.startswith("lora") else None,
        "bottleneck": BOTTLENECK if method.startswith("adapter") else None,
        "coefficients": coefficients,
        "relation": relation,
        "head": head,
        "T": (2 * DEPTH if method.startswith("lora") else DEPTH) if is_cobot else None,
        "T_note": "number of COBOT modules (LoRA: q of block i = 2i, v = 2i+1; adapter: block i = i); "
                  "FacT_c [1,k,T] and FacT_p [T,T] exist only with coefficients 'dual'",
        "k": (RANK if method.startswith("lora") else BOTTLENECK) if is_cobot else None,
        "adapter_dropout": 0.0 if method.startswith("adapter") else None,
        "adapter_scale": 1.0 if method.startswith("adapter") else None,
        "checkpoint": "tiny256.pth",
        "image": mf.IMAGE_NAME,
        "image_size_hw": list(IMAGE_HW),
        "input_size_hw": list(INPUT_HW),
        "run_size": S,
        "preprocess": "SamPredictor at 256: ResizeLongestSide(256).apply_image, sam.preprocess "
                      "(identical to tiny256_at256 input_image)",
        "boxes_original": BOXES_ORIG,
        "boxes_input_frame": [[float(v) for v in row] for row in boxes_t.tolist()],
        "boxes_note": "ResizeLongestSide(256).apply_boxes(boxes_original, (200,300)) in float64, "
                      "then torch.float32 -> prompt encoder boxes [2,4], no points, no mask",
        "targets": "../common.safetensors: targets",
        "targets_definition": TARGET_TEXT,
        "loss_definition": LOSS_TEXT,
        "loss": loss.item(),
        "trainable_set": {
            "freeze": "nothing (loss only)",
            "lightweight": "mask decoder",
            "full": "every SAM parameter (not the PE gaussian buffer)",
        }.get(method, "PEFT tensors (frozen relation matrix excluded) + mask decoder"),
        "trainable": {n: list(p.shape) for n, p in trainable.items()},
        "peft_tensors": {n: {"shape": list(p.shape), "trainable": bool(p.requires_grad)}
                         for n, p in peft.items()},
        "grad_none_stored_as_zeros": no_grad,
        "grad_exact_zero": zero_grad,
        "grad_analytically_zero": [n for n, _, _ in analytic_zero],
        "grad_analytically_zero_note": "gradient is 0 in exact arithmetic (softmax is invariant to "
                                       "a key bias); the stored float32 values are rounding noise "
                                       "(~1e-8): compare with an absolute tolerance",
        "trainable_params": {"encoder": enc_params, "total": total_params},
        "peft_values": "docs/methods.md#initial-values distributions + seeded noise N(0,(0.1*scale)^2) "
                       "(scripts/peft_reference.py init_peft_/perturb_peft_, seed %d)" % PEFT_SEED,
        "stored": "reference.safetensors: loss [1] and grad.<name> (every tensor in trainable; "
                  "None gradients stored as zeros) computed by the float64 model and rounded to "
                  "float32, low_res_logits [2,1,64,64] of the float32 model, peft.<name> "
                  "(starting value of every PEFT tensor in peft_tensors)",
    }
    write_json(os.path.join(d, "meta.json"), meta)

    return meta


# --------------------------------------------------------------------------------------
# parameter counts
# --------------------------------------------------------------------------------------

COUNT_VARIANTS = [("freeze", "freeze", None, None, None),
                  ("lightweight", "lightweight", None, None, None),
                  ("full", "full", None, None, None),
                  ("lora", "lora", None, None, None),
                  ("adapter", "adapter", None, None, None)] + \
                 [c for c in CASES if c[1].endswith("+cobot")]

DOC_COUNTS = {  # docs/methods.md#parameter-counts, image-encoder parameters added
    "vit_b": {"lora": 147456, "lora_cobot": 148320, "adapter": 322752, "adapter_cobot": 324048,
              "lora_cobot_head_linear": 148608, "adapter_cobot_head_linear": 326352},
    "vit_l": {"lora": 393216, "lora_cobot": 396096, "adapter": 860544, "adapter_cobot": 863424},
    "vit_h": {"lora": 655360, "lora_cobot": 660224, "adapter": 1434112, "adapter_cobot": 1438208},
}


def count_variant(variant, case, device):
    _, method, coefficients, relation, head = case
    with torch.device(device):
        sam = sam_model_registry[variant](checkpoint=None)
        pr.insert_peft(sam, method, rank=RANK, bottleneck=BOTTLENECK,
                       coefficients=coefficients or "dual", relation=relation or "learnable",
                       head=head or "quaternion")
    pr.set_trainable(sam, method)
    enc, total = pr.count_params(sam)
    if method == "full":
        encoder_added = enc
    else:
        encoder_added = sum(p.numel() for p in pr.peft_named_tensors(sam).values() if p.requires_grad)
        assert encoder_added == enc
    return {"encoder": encoder_added, "total": total}


def param_counts(out_dir):
    res = {}
    for variant in ("vit_b", "vit_l", "vit_h"):
        res[variant] = {c[0]: count_variant(variant, c, "meta") for c in COUNT_VARIANTS}
        for k, v in DOC_COUNTS[variant].items():
            assert res[variant][k]["encoder"] == v, (variant, k, res[variant][k], v)
    # a real (allocated) ViT-B build must give the same numbers
    for c in COUNT_VARIANTS:
        real = count_variant("vit_b", c, "cpu")
        assert real == res["vit_b"][c[0]], (c[0], real, res["vit_b"][c[0]])
    assert res["vit_b"]["lightweight"]["total"] == 4058340
    assert res["vit_b"]["full"]["total"] == 93735472
    doc = {
        "note": "trainable parameters for rank 4 / bottleneck 16 (docs/methods.md#parameter-counts). 'encoder' = trainable "
                "parameters added in the image encoder (shared FacT_c/FacT_p counted once, frozen "
                "relation matrices not counted; for full: every image-encoder parameter); 'total' = "
                "all trainable parameters under the paper's trainable sets (mask decoder trains in "
                "every mode but freeze, prompt encoder only in full; PE gaussian matrix is a buffer). "
                "Keys as the fixture folders: <base>_cobot = dual/learnable/quaternion, _block = "
                "coefficients block, _rel_identity / _rel_fixed = frozen P, _head_none / "
                "_head_linear = head switch.",
        "checked": "vit_b counted on a real CPU build too; encoder counts equal docs/methods.md#parameter-counts",
    }
    doc.update(res)
    write_json(os.path.join(out_dir, "param_counts.json"), doc)
    print("param counts (encoder / total):")
    for variant in ("vit_b", "vit_l", "vit_h"):
        print(f"  {variant}")
        for k, v in res[variant].items():
            print(f"    {k:28s} {v['encoder']:>12,d} {v['total']:>12,d}")


# --------------------------------------------------------------------------------------

IMAGE_HW = INPUT_HW = None


def main():
    global IMAGE_HW, INPUT_HW
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fixtures", default=os.path.join(REPO, "tests", "fixtures"),
                    help="where tiny256.pth and image_300x200.png are")
    ap.add_argument("--out", default=None, help="default: <fixtures>/peft")
    ap.add_argument("--no-fd", action="store_true", help="skip the float64 finite-difference checks")
    ap.add_argument("--no-counts", action="store_true", help="skip param_counts.json")
    ap.add_argument("--cases", nargs="*", default=None, help="only these case folders")
    args = ap.parse_args()
    out_dir = args.out or os.path.join(args.fixtures, "peft")
    os.makedirs(out_dir, exist_ok=True)

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, numpy {np.__version__}")

    sam0 = mf.build_tiny_sam(S)
    mf.load_checkpoint_into(sam0, os.path.join(args.fixtures, "tiny256.pth"))
    x, boxes_t, IMAGE_HW, INPUT_HW = make_inputs(args.fixtures, sam0)
    ref_in = os.path.join(args.fixtures, "tiny256_at256", "reference.safetensors")
    if os.path.exists(ref_in):
        from safetensors.torch import load_file
        assert torch.equal(load_file(ref_in)["input_image"], x), "input differs from tiny256_at256"
    targets = make_targets(boxes_t)
    print(f"boxes (input frame): {boxes_t.tolist()}; target pixels {targets.sum((1, 2, 3)).tolist()}")
    save_file({"targets": targets.contiguous(), "boxes": boxes_t.contiguous()},
              os.path.join(out_dir, "common.safetensors"))

    for case in CASES:
        if args.cases and case[0] not in args.cases:
            continue
        run_case(args.fixtures, out_dir, case, x, boxes_t, targets, not args.no_fd)

    if not args.no_counts:
        param_counts(out_dir)


if __name__ == "__main__":
    main()
