#!/usr/bin/env python3
"""A/B of two punctum binaries on the same sweep, interleaved (A, B, A, B, ...) so that other
load on the machine falls on both alike: per binary the median wall seconds, CPU seconds (user +
system of the process) and PUNCTUM_PROFILE's forward seconds, and the ratios B / A.

    python3 benchmarks/ab_binaries.py A_BIN B_BIN --model DIR --pairs FILE [--rounds 3]
                                      [-- extra punctum run options]

Prints a markdown table. For before/after comparisons of one change (build the parent commit
as A); absolute figures on a shared machine mean little, the ratios are the result.
"""
from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time

FORWARD = re.compile(r"\[punctum profile\] forward ([0-9.]+) s")


def one(binary: str, args: argparse.Namespace, extra: list[str], out: str) -> dict:
    cmd = [binary, "run", "--model", args.model, "--pairs", args.pairs, "--out", out, "--force",
           "--progress", "never", *extra]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=dict(os.environ, PUNCTUM_PROFILE="1"), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode:
        sys.exit(f"ab_binaries: {' '.join(cmd)}: exit {p.returncode}\n{p.stderr[-2000:]}")
    m = FORWARD.search(p.stderr)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "cpu": cpu, "forward": float(m.group(1)) if m else float("nan")}


def main() -> int:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--model", required=True)
    ap.add_argument("--pairs", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    runs: dict[str, list[dict]] = {"A": [], "B": []}
    with tempfile.TemporaryDirectory(prefix="punctum-ab-") as tmp:
        for r in range(args.rounds):
            for tag, binary in (("A", args.a), ("B", args.b)):
                runs[tag].append(one(binary, args, extra, os.path.join(tmp, f"{tag}{r}.h5")))
                print(f"ab_binaries: round {r} {tag}: {runs[tag][-1]}", file=sys.stderr, flush=True)
    med = {t: {k: statistics.median(x[k] for x in v) for k in ("wall", "cpu", "forward")}
           for t, v in runs.items()}
    print(f"A = `{args.a}`, B = `{args.b}`; `run --model {args.model} --pairs {args.pairs} "
          f"{' '.join(extra)}`, {args.rounds} interleaved rounds, medians; load average at the end "
          f"{os.getloadavg()[0]:.2f}\n")
    print("| | A | B | B / A |\n|---|---:|---:|---:|")
    for k, name in (("wall", "wall s"), ("cpu", "CPU s (user + sys)"), ("forward", "forward s (PUNCTUM_PROFILE)")):
        print(f"| {name} | {med['A'][k]:.2f} | {med['B'][k]:.2f} | {med['B'][k] / med['A'][k]:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
