#!/usr/bin/env python3
"""The HDF5 writer's share of a statistics-bound sweep (SPEC §8), CPU backend.

A wide, shallow random llama (4 layers, 64 heads of dimension 4, hidden 256, vocab 512) makes
per-token statistics cheap to compute and large to store (2 KiB per token): `--stats
mass,last,resid,topk` on pairs (a, a + ".") of 64 random tokens. Each binary (this build; --base, an older punctum, for the
before/after comparison) runs the same sweep; the table gives the wall time, what the run's
end-of-run line says of its writer (busy: the writer thread, overlapped with compute; final: the
self-contained file after the last batch, not overlapped), the writer's share of wall time
((busy + final) / wall: an upper bound on what the writer costs the run on these 2 shared
cores, where its thread competes with the compute threads for CPU; on a GPU it competes with
nothing), and the effective rate: uncompressed statistics stored per second of wall time.

usage: bench_sweep_writer.py [--bin build/punctum] [--base OLD/punctum] [--pairs 1500]
                             [--threads 2] [--reps 2] [--writer-threads 1,2]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_DIR = os.path.join(REPO, "benchmarks", "out", "wide-shallow-4x64")
SHAPE = dict(vocab_size=512, hidden_size=256, intermediate_size=256, num_hidden_layers=4,
             num_attention_heads=64, num_key_value_heads=64, max_position_embeddings=4096,
             rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)
T = 64


def make_model(path: str) -> str:
    if os.path.exists(os.path.join(path, "model.safetensors")):
        return path
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    cfg = LlamaConfig(rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, **SHAPE)
    model = LlamaForCausalLM(cfg).float().eval()
    os.makedirs(path, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    return path


def write_pairs(path: str, n: int) -> None:
    rng = random.Random(5)
    with open(path, "w") as f:
        for i in range(n):
            a = [1] + [rng.randrange(3, SHAPE["vocab_size"]) for _ in range(T - 1)]
            f.write(json.dumps({"id": f"p{i}", "a_ids": a, "b_ids": a + [30]}) + "\n")


def stats_bytes(path: str) -> float:
    """Uncompressed bytes of the numeric datasets of a punctum file."""
    import h5py
    total = 0
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            nonlocal total
            if isinstance(obj, h5py.Dataset) and h5py.check_string_dtype(obj.dtype) is None:
                total += obj.size * obj.dtype.itemsize
        f.visititems(visit)
    return total


def run(binary: str, model: str, pairs: str, out: str, threads: int, writer_threads: int | None):
    argv = [binary, "run", "--model", model, "--pairs", pairs, "--out", out, "--force",
            "--backend", "cpu", "--threads", str(threads), "--progress", "always",
            "--stats", "mass,last,resid,topk", "--batch-tokens", "4096"]
    if writer_threads:
        argv += ["--writer-threads", str(writer_threads)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS="1")
    t0 = time.perf_counter()
    p = subprocess.run(argv, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if p.returncode:
        sys.exit(f"punctum failed ({p.returncode}): {' '.join(argv)}\n{p.stderr[-2000:]}")
    line = [x for x in p.stderr.replace("\r", "\n").splitlines() if "pairs," in x][-1]
    busy = re.search(r"busy ([0-9.]+) s", line)
    final = re.search(r"final (?:copy|file) ([0-9.]+) s", line)
    return wall, float(busy.group(1)), float(final.group(1)), " ".join(argv[1:])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", default=os.environ.get("PUNCTUM_BIN",
                                                    os.path.join(REPO, "build", "punctum")))
    ap.add_argument("--base", default=os.environ.get("PUNCTUM_BASE_BIN"),
                    help="an older punctum for the 'before' rows")
    ap.add_argument("--pairs", type=int, default=1500)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--writer-threads", default="1,2")
    args = ap.parse_args(argv)
    model = make_model(MODEL_DIR)
    with tempfile.TemporaryDirectory(prefix="punctum-sweep-writer-") as d:
        pairs = os.path.join(d, "pairs.jsonl")
        write_pairs(pairs, args.pairs)
        out = os.path.join(d, "out.h5")
        rows = []
        if args.base:
            rows.append(("before (" + os.path.relpath(args.base, REPO) + ")", args.base, None))
        for wt in [int(x) for x in args.writer_threads.split(",") if x]:
            rows.append((f"after, --writer-threads {wt}", args.bin, wt))
        print(f"{args.pairs} pairs of {T} + {T + 1} tokens, --threads {args.threads}, best of "
              f"{args.reps}; model {json.dumps(SHAPE)}\n")
        print("| writer | wall s | writer busy s | final file s | writer share of wall "
              "| statistics MB | effective MB/s |")
        print("|---|---|---|---|---|---|---|")
        commands = []
        for name, binary, wt in rows:
            best = None
            for _ in range(args.reps):
                r = run(binary, model, pairs, out, args.threads, wt)
                if best is None or r[0] < best[0]:
                    best = r
            wall, busy, final, cmd = best
            mb = stats_bytes(out) / 1e6
            commands.append(cmd)
            print(f"| {name} | {wall:.1f} | {busy:.2f} | {final:.2f} | "
                  f"{100 * (busy + final) / wall:.0f}% | {mb:.0f} | {mb / wall:.0f} |", flush=True)
        print("\n```\n" + "\n".join(commands) + "\n```")
    return 0


if __name__ == "__main__":
    sys.exit(main())
