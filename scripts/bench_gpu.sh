#!/usr/bin/env bash
# The GPU side of `sam-cobot bench`, in one call on a machine with an NVIDIA card: PyTorch on CUDA
# against sam-cobot on burn's Vulkan backend, same work, same card (scripts/bench_reference.py
# --device vulkan). Everything it prints also goes to $OUT (default /tmp/bench_gpu).
#
#   cargo build --release --features vulkan && mkdir -p .devbin && cp target/release/sam-cobot .devbin/
#   bash scripts/bench_gpu.sh            # on the GPU machine
#
# .devbin/sam-cobot.gz (a gzipped binary) is unpacked first when present: a Vulkan build is
# about 80 MB even stripped. Optional, when the machine lacks them: .gl/*.deb (the Vulkan loader,
# unpacked into /) and .whl/*.whl (segment-anything for the PyTorch side).
set -u
OUT=${OUT:-/tmp/bench_gpu}
BIN=${SAM_COBOT:-.devbin/sam-cobot}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1

if [ -f "$BIN.gz" ] && [ ! -x "$BIN" ]; then
    gunzip -k "$BIN.gz" && chmod +x "$BIN"
fi
if compgen -G ".gl/*.deb" >/dev/null; then
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
fi
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
# The NVIDIA Vulkan driver may sit outside the loader's search path.
for icd in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /usr/share/vulkan/icd.d/nvidia_icd.json \
    /etc/vulkan/icd.d/nvidia_icd.json; do
    if [ -f "$icd" ]; then export VK_DRIVER_FILES=$icd; break; fi
done

echo "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
echo "VK_DRIVER_FILES=${VK_DRIVER_FILES:-unset}"; ldconfig -p | grep -m1 libvulkan.so.1

step() { # name, timeout in s, command...
    local name=$1 limit=$2; shift 2
    echo "== $name"
    local started=$SECONDS
    timeout "$limit" "$@"
    echo "($name: exit $?, $((SECONDS - started)) s)"
}

REF=(python3 scripts/bench_reference.py --sam-cobot "$BIN" --device vulkan --model vit_b
    --method lora+cobot --threads 16 --warmup 2 --runs 5)

step "vulkan start" 60 "$BIN" bench --device vulkan --model tiny --runs 1 --warmup 1
# Parity on the GPU: the tiny 1024 px fixture's low-res logits against PyTorch's reference.
for dev in cpu vulkan; do
    step "predict on $dev" 120 "$BIN" predict --device "$dev" --checkpoint tests/fixtures/tiny1024.pth \
        --image tests/fixtures/image_300x200.png --box 60,40,220,160 --out "/tmp/mask_$dev.png" \
        --logits-out "/tmp/logits_$dev.npy"
done
python3 - /tmp <<'PY'
import sys, numpy as np
from safetensors.numpy import load_file
want = load_file("tests/fixtures/tiny1024_at1024/reference.safetensors")["box1.low_res_logits"]
for dev in ("cpu", "vulkan"):
    try:
        got = np.load(f"{sys.argv[1]}/logits_{dev}.npy")
        print(f"parity {dev}: max |sam-cobot - pytorch| = {np.abs(got - want).max():.3g} over {want.size} logits")
    except OSError as e:
        print(f"parity {dev}: no logits ({e})")
PY
# The whole workflow (train, validate, evaluate, reports) on the GPU, and on the CPU for comparison.
for dev in vulkan cpu; do
    step "demo on $dev" 120 "$BIN" demo --device "$dev" --epochs 3 --images 32 --out "/tmp/demo_$dev" --force
    cp "/tmp/demo_$dev/report/metrics.md" "$OUT/demo_metrics_$dev.md" 2>/dev/null
done
step "train step, 1024 px" 240 "${REF[@]}" --image-size 1024 --json-out "$OUT/train1024.json"
step "inference, 1024 px" 120 "${REF[@]}" --workload inference --image-size 1024 --json-out "$OUT/infer1024.json"
step "train step, 256 px" 90 "${REF[@]}" --image-size 256 --json-out "$OUT/train256.json"
# Mixed precision (docs/gpu.md#mixed-precision): sam-cobot's f16 products on Vulkan against
# PyTorch's autocast to f16 on CUDA.
step "train step, 1024 px, f16" 240 "${REF[@]}" --image-size 1024 --precision f16 --json-out "$OUT/train1024_f16.json"
step "inference, 1024 px, f16" 120 "${REF[@]}" --workload inference --image-size 1024 --precision f16 \
    --json-out "$OUT/infer1024_f16.json"
step "gemm 4096 f16, vulkan" 45 "$BIN" bench --workload gemm --device vulkan --precision f16 --gemm-size 4096 --runs 10 --json
step "gemm 4096, vulkan" 45 "$BIN" bench --workload gemm --device vulkan --gemm-size 4096 --runs 10 --json
step "gemm 4096, torch" 45 python3 -c '
import torch, time
torch.backends.cuda.matmul.allow_tf32 = False
a, b = (torch.randn(4096, 4096, device="cuda") for _ in range(2))
for _ in range(3): a @ b
torch.cuda.synchronize(); t = time.perf_counter()
for _ in range(20): a @ b
torch.cuda.synchronize(); ms = (time.perf_counter() - t) / 20 * 1e3
print(f"torch gemm 4096 f32: {ms:.2f} ms, {2 * 4096**3 / (ms * 1e-3) / 1e9:.0f} GFLOP/s")'
