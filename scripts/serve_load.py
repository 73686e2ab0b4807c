#!/usr/bin/env python3
"""Load and latency of a running `sam-cobot serve` (standard library only).

    sam-cobot --threads 2 serve --checkpoint C --port 8080 --no-disk-cache &
    python3 scripts/serve_load.py --url http://127.0.0.1:8080 --image img.png \
        [--requests 200 --clients 8] [--images 50 --pid PID]

Embeds --image, then sends --requests single-point /predict requests from --clients threads
and prints how many failed and the median and 95th-percentile latency. With --images N it then
embeds N different images (the first one with its pixels changed) and prints the server's
resident memory after each tenth (from /proc/PID/status), to show that the cache evicts.
"""
import argparse
import io
import json
import statistics
import threading
import time
import urllib.error
import urllib.request

import numpy as np
from PIL import Image


def post(url, body, content_type="application/json"):
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type})
    with urllib.request.urlopen(request) as response:
        return json.loads(response.read())


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--image", required=True)
    ap.add_argument("--model", default="base")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--images", type=int, default=0)
    ap.add_argument("--pid", type=int)
    args = ap.parse_args()
    data = open(args.image, "rb").read()
    started = time.perf_counter()
    embedded = post(f"{args.url}/embed?model={args.model}", data, "application/octet-stream")
    print(f"embed: {time.perf_counter() - started:.2f} s ({embedded['width']}x{embedded['height']})")
    w, h = embedded["width"], embedded["height"]
    latencies, failures = [], []
    lock = threading.Lock()
    rng = np.random.default_rng(0)
    points = [[float(rng.uniform(0, w)), float(rng.uniform(0, h))] for _ in range(args.requests)]

    def client(index):
        for i in range(index, args.requests, args.clients):
            body = json.dumps({"model": args.model, "image": embedded["image"],
                               "points": [[points[i][0], points[i][1], 1]]}).encode()
            t = time.perf_counter()
            try:
                post(f"{args.url}/predict", body)
                with lock:
                    latencies.append(time.perf_counter() - t)
            except urllib.error.HTTPError as e:
                with lock:
                    failures.append(e.code)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(args.clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total = time.perf_counter() - started
    latencies.sort()
    p95 = latencies[int(0.95 * (len(latencies) - 1))] if latencies else float("nan")
    print(f"{len(latencies)} answered, {len(failures)} failed {sorted(set(failures))} in {total:.1f} s "
          f"from {args.clients} clients: median {1e3 * statistics.median(latencies):.0f} ms, "
          f"p95 {1e3 * p95:.0f} ms")
    if args.images:
        base = np.array(Image.open(args.image).convert("RGB"))
        for n in range(args.images):
            pixels = base.copy()
            pixels[0, 0] = [n % 256, n // 256, 7]
            buffer = io.BytesIO()
            Image.fromarray(pixels).save(buffer, format="PNG")
            post(f"{args.url}/embed?model={args.model}", buffer.getvalue(), "application/octet-stream")
            if args.pid and (n + 1) % 10 == 0:
                print(f"{n + 1} images embedded: server RSS {rss_mib(args.pid):.0f} MiB")


if __name__ == "__main__":
    main()
