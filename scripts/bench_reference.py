#!/usr/bin/env python3
"""Times the PyTorch reference and `sam-cobot bench` on the same work and prints the ratios.

The work is one training step (image encoder on the whole batch, prompt encoder and mask decoder
per image, bilinear upsampling to S x S, sum over boxes of BCE-with-logits + 1 - soft Dice,
backward, Adam lr 1e-4 weight decay 5e-5) or one inference (encoder, prompt encoder and decoder,
low-resolution logits, no gradients), on synthetic input: B noise images U(-2, 2) with N random
boxes each (sides S/8..S/2), the target of a box being the filled box. Both sides use random
weights of the same named configuration and the same PEFT method at its initial values.

PyTorch runs first, in a child process (this script with --torch-worker) so that its peak RSS
(ru_maxrss) is its own; sam-cobot runs after it with --json. Each prints one JSON line, then a
table gives the median times, peak RSS and the ratios sam-cobot / PyTorch.

On a GPU (`--device cuda` or `--device vulkan`), PyTorch runs on CUDA, its native path, and
sam-cobot on the named burn backend; both in f32 (PyTorch's TF32 switched off). Each step ends
with a synchronisation. Peak GPU memory is the card's used memory sampled by nvidia-smi every
50 ms while each side runs (the same measure for both, CUDA context included); PyTorch's own
allocator peak is reported beside it.

    python3 scripts/bench_reference.py --workload train-step --model vit_b --image-size 256 \\
        --method lora+cobot --batch 1 --boxes 1 --threads 2 --warmup 2 --runs 5 \\
        [--device cpu|cuda|vulkan] [--sam-cobot target/release/sam-cobot] [--json-out FILE]
"""

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peft_reference as pr  # noqa: E402

REPO = Path(__file__).resolve().parent.parent

# name: (embed, depth, heads, global blocks, window, mlp, out_chans = prompt and decoder width,
#        decoder mlp, IoU head hidden), as src/sam/config.rs names them
CONFIGS = {
    "tiny": (64, 4, 2, (1, 3), 14, 256, 32, 64, 32),
    "small": (256, 6, 8, (2, 5), 8, 1024, 256, 2048, 256),
    "vit_b": (768, 12, 12, (2, 5, 8, 11), 14, 3072, 256, 2048, 256),
    "vit_l": (1024, 24, 16, (5, 11, 17, 23), 14, 4096, 256, 2048, 256),
    "vit_h": (1280, 32, 16, (7, 15, 23, 31), 14, 5120, 256, 2048, 256),
}
PEFT_FLAGS = ("rank", "bottleneck", "lora_init", "coefficients", "relation", "head")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workload", choices=("train-step", "inference"), default="train-step")
    p.add_argument("--model", choices=tuple(CONFIGS), default="vit_b")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--method", choices=pr.METHODS, default="lora+cobot",
                   help="as `sam-cobot bench --method` (the same default)")
    p.add_argument("--rank", type=int, default=4)
    p.add_argument("--bottleneck", type=int, default=16)
    p.add_argument("--lora-init", choices=("xavier", "zero-b"), default="xavier")
    p.add_argument("--coefficients", choices=pr.COEFFICIENTS, default="dual")
    p.add_argument("--relation", choices=pr.RELATIONS, default="learnable")
    p.add_argument("--head", choices=pr.HEADS, default="quaternion")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--boxes", type=int, default=1)
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--device", choices=("cpu", "cuda", "vulkan"), default="cpu",
                   help="sam-cobot's device; PyTorch runs on CUDA for either GPU backend")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--precision", choices=("f32", "bf16", "f16"), default="f32",
                   help="what the products compute in: sam-cobot's --precision, PyTorch's autocast")
    p.add_argument("--sam-cobot", type=Path, default=REPO / "target/release/sam-cobot")
    p.add_argument("--json-out", type=Path, help="write both reports and the ratios here")
    p.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args()


def build_sam(model: str, size: int) -> Sam:
    """Random-weight SAM of a named configuration, made for input size `size`."""
    embed, depth, heads, globals_, window, mlp, out, dec_mlp, iou_hidden = CONFIGS[model]
    grid = size // 16
    return Sam(
        image_encoder=ImageEncoderViT(
            img_size=size, patch_size=16, embed_dim=embed, depth=depth, num_heads=heads,
            mlp_ratio=mlp / embed, out_chans=out, qkv_bias=True,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), use_rel_pos=True,
            rel_pos_zero_init=True, window_size=window, global_attn_indexes=globals_,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=out, image_embedding_size=(grid, grid), input_image_size=(size, size),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=out, mlp_dim=dec_mlp, num_heads=8),
            transformer_dim=out, iou_head_depth=3, iou_head_hidden_dim=iou_hidden,
        ),
    )


def build_model(args) -> Sam:
    """The SAM with the PEFT method inserted at its initial values and its trainable set."""
    sam = build_sam(args.model, args.image_size)
    dropout = 0.1 if args.method.startswith("adapter") else 0.0
    pr.insert_peft(sam, args.method, rank=args.rank, bottleneck=args.bottleneck,
                   coefficients=args.coefficients, relation=args.relation, head=args.head,
                   adapter_dropout=dropout)
    pr.init_peft_(sam, torch.Generator().manual_seed(0))
    if args.lora_init == "zero-b":
        with torch.no_grad():
            for mod in pr.peft_modules(sam):
                if isinstance(mod, pr.LoRAQKV):
                    mod.linear_b_q.weight.zero_()
                    mod.linear_b_v.weight.zero_()
    pr.set_trainable(sam, args.method)
    return sam


def synthetic_input(size: int, batch: int, boxes: int, device: torch.device):
    """Images [B,3,S,S] U(-2,2), boxes per image [N,4] (x1,y1,x2,y2), targets [N,1,S,S]."""
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(batch, 3, size, size, generator=gen) * 4 - 2
    prompts = []
    for _ in range(batch):
        rects, targets = [], torch.zeros(boxes, 1, size, size)
        for n in range(boxes):
            w, h = (int(v) for v in torch.randint(size // 8, size // 2, (2,), generator=gen))
            x = int(torch.randint(0, size - w, (1,), generator=gen))
            y = int(torch.randint(0, size - h, (1,), generator=gen))
            rects.append([x, y, x + w, y + h])
            targets[n, 0, y:y + h, x:x + w] = 1.0
        prompts.append((torch.tensor(rects, dtype=torch.float32).to(device), targets.to(device)))
    return images.to(device), prompts


def decode(sam: Sam, embedding, rects):
    """Low-resolution logits [N,1,S/4,S/4] of one image's boxes."""
    sparse, dense = sam.prompt_encoder(points=None, boxes=rects, masks=None)
    low, _iou = sam.mask_decoder(
        image_embeddings=embedding, image_pe=sam.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=False,
    )
    return low


def batch_loss(sam: Sam, images, prompts, size: int):
    """Σ over images and boxes of BCE-with-logits (mean over pixels) + 1 - soft Dice."""
    embeddings = sam.image_encoder(images)
    loss = embeddings.new_zeros(())
    for i, (rects, targets) in enumerate(prompts):
        low = decode(sam, embeddings[i:i + 1], rects)
        logits = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=True)
        for lg, g in zip(logits, targets):
            p = torch.sigmoid(lg)
            dice = (2.0 * (p * g).sum() + 1.0) / (p.sum() + g.sum() + 1.0)
            loss = loss + F.binary_cross_entropy_with_logits(lg, g) + (1.0 - dice)
    return loss


def torch_worker(args) -> dict:
    """Times the workload in this process; the report has sam-cobot's JSON schema."""
    torch.set_num_threads(args.threads)
    device = torch.device("cpu" if args.device == "cpu" else "cuda")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    sam = build_model(args).to(device)
    images, prompts = synthetic_input(args.image_size, args.batch, args.boxes, device)
    train = args.workload == "train-step"
    trainable = [p for p in sam.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=1e-4, weight_decay=5e-5) if train and trainable else None

    half = {"bf16": torch.bfloat16, "f16": torch.float16}.get(args.precision)

    def autocast():
        """PyTorch's mixed precision: products in `half`, weights and the loss's sums in f32."""
        if half is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=half)

    def step():
        if train:
            with autocast():
                loss = batch_loss(sam, images, prompts, args.image_size)
            if optimizer is not None:  # "freeze" trains nothing: the forward pass alone
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        else:
            with torch.inference_mode(), autocast():
                embeddings = sam.image_encoder(images)
                for i, (rects, _targets) in enumerate(prompts):
                    decode(sam, embeddings[i:i + 1], rects)

    sam.train(train)
    runs_ms = []
    for run in range(args.warmup + args.runs):
        started = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if run >= args.warmup:
            runs_ms.append((time.perf_counter() - started) * 1e3)
    report = {
        "workload": args.workload, "model": args.model, "image_size": args.image_size,
        "method": args.method, "batch": args.batch, "boxes": args.boxes, "device": str(device),
        "precision": args.precision,
        "threads": torch.get_num_threads(), "runs_ms": runs_ms,
        "median_ms": statistics.median(runs_ms),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }
    if device.type == "cuda":
        report["gpu_name"] = torch.cuda.get_device_name(device)
        report["allocator_peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return report


class GpuMemoryPeak:
    """The largest memory.used that nvidia-smi reports while the `with` block runs, MiB."""

    def __enter__(self):
        self.peak, self.done = None, threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while not self.done.wait(0.05):
            out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True).stdout.split()
            if out:
                self.peak = max(self.peak or 0.0, float(out[0]))

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join()


def run_json(cmd, gpu: bool, env=None) -> dict:
    """Runs `cmd`, which prints its report as the last line of its output; on a GPU the report
    gains `peak_gpu_mib`."""
    with GpuMemoryPeak() if gpu else contextlib.nullcontext() as memory:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(map(str, cmd))}\n{done.stderr.strip()}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    if gpu:
        report["peak_gpu_mib"] = memory.peak
    return report


def sam_cobot_command(args) -> list:
    cmd = [str(args.sam_cobot), "bench", "--json"]
    for flag in ("workload", "model", "image_size", "method", *PEFT_FLAGS,
                 "batch", "boxes", "threads", "device", "precision", "warmup", "runs"):
        cmd += ["--" + flag.replace("_", "-"), str(getattr(args, flag))]
    return cmd


def host_cpu() -> str:
    """The CPU both sides run on, as /proc/cpuinfo names it (the ratios depend on it: an x86
    family's vector units favour one side's kernels more than the other's)."""
    fields = {}
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        for line in info:
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
            if not line.strip():
                break
    name = fields.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in fields:
        name += f" (family {fields['cpu family']}, model {fields.get('model', '?')})"
    return name


def ratio(a, b):
    return None if a is None or b is None else a / b


def main():
    args = parse_args()
    if args.torch_worker:
        print(json.dumps(torch_worker(args)))
        return
    if not (args.sam_cobot.is_file() and os.access(args.sam_cobot, os.X_OK)):
        sys.exit(f"sam-cobot is not built at {args.sam_cobot}: run `cargo build --release` "
                 "or pass --sam-cobot PATH")
    cpu = host_cpu()
    print(f"torch {torch.__version__}, {args.threads} thread(s), device {args.device}, "
          f"CPU {cpu}; sam-cobot {args.sam_cobot}")
    threads = str(args.threads)
    env = dict(os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    gpu = args.device != "cpu"
    ref = run_json([sys.executable, __file__, *sys.argv[1:], "--torch-worker"], gpu, env)
    print("pytorch  ", json.dumps(ref))
    ours = run_json(sam_cobot_command(args), gpu)
    print("sam-cobot", json.dumps(ours))
    ratios = {key: ratio(ours.get(key), ref.get(key))
              for key in ("median_ms", "peak_rss_mib", "peak_gpu_mib")}

    def num(v, fmt):
        return "n/a" if v is None else format(v, fmt)

    print(f"\n{'workload':<11} {'model':<6} {'size':>5} {'method':<14}"
          f"{'torch ms':>10} {'cobot ms':>10} {'ratio':>6}{'torch MiB':>11} {'cobot MiB':>10} {'ratio':>6}")
    print(f"{args.workload:<11} {args.model:<6} {args.image_size:>5} {args.method:<14}"
          f"{ref['median_ms']:>10.1f} {ours['median_ms']:>10.1f} {num(ratios['median_ms'], '.2f'):>6}"
          f"{ref['peak_rss_mib']:>11.0f} {num(ours['peak_rss_mib'], '.0f'):>10}"
          f" {num(ratios['peak_rss_mib'], '.2f'):>6}")
    if gpu:
        print(f"peak GPU memory (nvidia-smi): torch {num(ref['peak_gpu_mib'], '.0f')} MiB, "
              f"sam-cobot {num(ours['peak_gpu_mib'], '.0f')} MiB, "
              f"ratio {num(ratios['peak_gpu_mib'], '.2f')}; torch allocator peak "
              f"{ref['allocator_peak_mib']:.0f} MiB")
    if args.json_out:
        report = {"torch_version": torch.__version__, "cpu": cpu, "pytorch": ref,
                  "sam_cobot": ours, "ratios": ratios}
        partial_out = args.json_out.with_name(args.json_out.name + ".partial")
        partial_out.write_text(json.dumps(report, indent=1) + "\n")
        partial_out.replace(args.json_out)  # atomic: never a half-written report


if __name__ == "__main__":
    main()
