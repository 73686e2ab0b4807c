#!/usr/bin/env python3
"""Which crates a GPU build compiles again after the default build, and why.

CI builds the tests twice: the default (CPU) build, then the `wgpu` build for the GPU-path tests
on lavapipe. A crate both builds use is compiled once only if both ask for the same features of
it (and of everything it depends on). The GPU stack turns on extra features of common crates
(serde's `rc`, syn's `visit-mut`, ...), and without help every crate above them, most of the
dependency tree, would be compiled a second time. Cargo.toml therefore asks for those features
itself (its "feature unification" entries, what cargo-hakari's workspace-hack crates do).

This script compares cargo's unit graphs of the two builds and lists the crates of the default
build that the GPU build would compile again, and why. burn's own crates are expected there
(their `wgpu` features are the point of the second build); for any other crate it names the
features to add to Cargo.toml's list (for instance after a dependency upgrade), or says that
the copy is a second one cargo cannot share.

    python3 scripts/feature_unification.py            # the wgpu test build, as .ci/run runs it
    python3 scripts/feature_unification.py --features vulkan

Needs cargo only. `--unit-graph` is an unstable cargo flag: the script sets RUSTC_BOOTSTRAP=1
for cargo's own use; nothing is compiled.
"""

import argparse
import json
import os
import subprocess
import sys

# The test targets .ci/run builds with the GPU feature.
GPU_TESTS = ["parity", "peft_gradients", "gpu_path", "precision", "cli"]

# Unit identities of both graphs, each a (package, number): the same unit in both gets the same
# number, and comparing two never walks a deep tree.
INTERNED = {}


def unit_graph(args):
    """{unit identity: unit} of `cargo test --no-run ARGS`, the identity covering everything
    that decides whether cargo can reuse a compiled unit (its dependencies' identities too)."""
    env = dict(os.environ, RUSTC_BOOTSTRAP="1")
    command = ["cargo", "test", "--locked", "--no-run", *args, "-Z", "unstable-options", "--unit-graph"]
    run = subprocess.run(command, capture_output=True, text=True, env=env)
    if run.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{run.stderr}")
    units = json.loads(run.stdout)["units"]
    identities = {}

    def identity(i):
        if i not in identities:
            u, p = units[i], units[i]["profile"]
            key = (
                u["pkg_id"], u["target"]["name"], tuple(u["features"]), u["mode"],
                p["opt_level"], str(p.get("debuginfo")),
                tuple(sorted(identity(d["index"]) for d in u["dependencies"])),
            )
            identities[i] = INTERNED.setdefault(key, (u["pkg_id"], len(INTERNED)))
        return identities[i]

    sys.setrecursionlimit(100_000)
    return {identity(i): units[i] for i in range(len(units))}


def crate(pkg_id):
    return pkg_id.rsplit("#", 1)[-1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--features", default="wgpu", help="the GPU build's cargo feature")
    args = parser.parse_args()
    default = unit_graph([])
    tests = [a for t in GPU_TESTS for a in ("--test", t)]
    gpu = unit_graph(["--features", args.features, *tests])
    # crate -> {(features, opt-level)} of its units in the default build.
    default_copies = {}
    for key, unit in default.items():
        copy = (frozenset(unit["features"]), unit["profile"]["opt_level"])
        default_copies.setdefault(crate(key[0]), set()).add(copy)
    new = [k for k in gpu if k not in default]
    again = sorted({crate(k[0]) for k in new} & set(default_copies))
    burn = [c for c in again if c.startswith(("burn", "sam-cobot"))]
    others = [c for c in again if c not in burn]
    print(f"the {args.features} build compiles {len(new)} units the "
          f"default build does not; of the default build's crates, it compiles again:")
    print(f"  burn's and ours (expected): {', '.join(burn)}")
    for name in others:
        copies = default_copies[name]
        feature_sets = {f for f, _ in copies}
        mine = set().union(*feature_sets)
        wanted = [
            (frozenset(gpu[k]["features"]), gpu[k]["profile"]["opt_level"])
            for k in new
            if crate(k[0]) == name
        ]
        extra = sorted(set().union(*(f for f, _ in wanted)) - mine)
        if extra:
            note = f"turns on {', '.join(extra)}: add them to Cargo.toml's list"
        elif any(w in copies for w in wanted):
            note = "the same features over other dependencies: unify those"
        elif any(f in feature_sets for f, _ in wanted):
            levels = ", ".join(sorted({o for _, o in wanted}))
            note = (f"the same features at opt-level {levels} (proc macros and build scripts "
                    "keep cargo's 0): a second copy cargo cannot share")
        else:
            note = "a second, smaller copy with fewer features (cargo cannot share it)"
        print(f"  {name}: {note}")
    if not others:
        print("  nothing else")


if __name__ == "__main__":
    main()
