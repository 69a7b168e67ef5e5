#!/usr/bin/env python3
"""Generation (SPEC §8), CPU backend, on the random SmolLM2-135M-shaped llama of
bench_experiments.py:

 (a) greedy decode tokens/s: B prompts of T tokens continued by N tokens, punctum
     (`--generate N --stats none`, all B in one forward batch) against transformers
     `generate()` (greedy, KV cache, `min_new_tokens=N` so both write B*N tokens) on the same
     batch, with the same number of threads. Decode time = time of the run with generation
     minus time of the same run without (punctum: the same command without --generate; HF:
     one forward of the batch, the prefill). Target: punctum >= 2x.
 (b) knockout of all positions with generation held (`--generate N`) against knockout
     alone, one T-token prompt: the cost of continuing every variant.

Wall-clock seconds, minimum over --reps, both sides with --threads threads (torch and
OpenBLAS/OpenMP); the copy of the model used has no reachable end-of-sequence token
(generation_config.json names an id outside the vocabulary) so that every continuation
has N tokens.

usage: bench_generate.py [--bin build/punctum] [--B 8] [--T 32] [--N 32] [--ko-T 64]
                         [--ko-N 8] [--reps 2] [--threads 2] [--model-dir DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_experiments as bx  # noqa: E402


def no_eos_copy(src: str, dst: str) -> str:
    """src with generation_config.json's eos_token_id outside the vocabulary (files linked)."""
    os.makedirs(dst, exist_ok=True)
    for name in os.listdir(src):
        if name != "generation_config.json" and not os.path.exists(os.path.join(dst, name)):
            os.symlink(os.path.join(src, name), os.path.join(dst, name))
    gc = {"eos_token_id": [bx.SHAPE["vocab_size"] + 7], "bos_token_id": 1}
    with open(os.path.join(dst, "generation_config.json"), "w") as f:
        json.dump(gc, f)
    return dst


def run_wall(argv: list[str], threads: int) -> float:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
    t0 = time.perf_counter()
    p = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                       env=env)
    if p.returncode:
        sys.exit(f"punctum failed ({p.returncode}): {' '.join(argv)}\n{p.stderr[-2000:]}")
    return time.perf_counter() - t0


def punctum_argv(a, model, pairs, out, *opts):
    return [a.bin, "run", "--model", model, "--pairs", pairs, "--out", out, "--force",
            "--threads", str(a.threads), "--progress", "never", "--stats", "none", *opts]


def hf_decode_s(model_dir: str, prompts: list[list[int]], N: int, threads: int,
                reps: int) -> float:
    import torch
    from transformers import AutoModelForCausalLM
    torch.set_num_threads(threads)
    m = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids = torch.tensor(prompts)
    mask = torch.ones_like(ids)
    best_gen = best_pre = float("inf")
    with torch.no_grad():
        for _ in range(reps):
            t0 = time.perf_counter()
            m(input_ids=ids, attention_mask=mask)
            best_pre = min(best_pre, time.perf_counter() - t0)
            t0 = time.perf_counter()
            out = m.generate(input_ids=ids, attention_mask=mask, max_new_tokens=N,
                             min_new_tokens=N, do_sample=False, pad_token_id=0)
            best_gen = min(best_gen, time.perf_counter() - t0)
            assert out.shape[1] == ids.shape[1] + N
    return max(best_gen - best_pre, 1e-9)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.environ.get("PUNCTUM_BIN",
                                                    os.path.join(bx.REPO, "build", "punctum")))
    ap.add_argument("--B", type=int, default=8)
    ap.add_argument("--T", type=int, default=32)
    ap.add_argument("--N", type=int, default=32)
    ap.add_argument("--ko-T", type=int, default=64)
    ap.add_argument("--ko-N", type=int, default=8)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model-dir", default=bx.DEFAULT_MODEL_DIR)
    a = ap.parse_args()
    base = bx.make_model(a.model_dir)
    work = tempfile.mkdtemp(prefix="punctum-bench-gen-")
    try:
        model = no_eos_copy(base, os.path.join(work, "model"))
        prompts = [bx.ids_for(a.T, 100 + i) for i in range(a.B)]
        pairs = os.path.join(work, "p.jsonl")
        with open(pairs, "w") as f:
            for i, p in enumerate(prompts):
                f.write(json.dumps({"id": f"g{i}", "a_ids": p}) + "\n")
        out = os.path.join(work, "o.h5")
        one_batch = ("--batch-tokens", str(a.B * a.T))
        t_gen = min(run_wall(punctum_argv(a, model, pairs, out, *one_batch, "--generate",
                                          str(a.N)), a.threads) for _ in range(a.reps))
        t_plain = min(run_wall(punctum_argv(a, model, pairs, out, *one_batch), a.threads)
                      for _ in range(a.reps))
        pt_dec = max(t_gen - t_plain, 1e-9)
        hf_dec = hf_decode_s(model, prompts, a.N, a.threads, a.reps)
        tok = a.B * a.N
        print(f"- machine: {bx.machine()}, {a.threads} threads; B={a.B} prompts of T={a.T} "
              f"tokens, N={a.N} new tokens each")
        print()
        print("| | decode seconds | tokens/s |")
        print("|---|---:|---:|")
        print(f"| punctum --generate | {pt_dec:.2f} | {tok / pt_dec:.1f} |")
        print(f"| transformers generate() | {hf_dec:.2f} | {tok / hf_dec:.1f} |")
        print(f"| **ratio** (target >= 2) | | **{hf_dec / pt_dec:.2f}x** |")
        print()
        ko_pairs = os.path.join(work, "ko.jsonl")
        with open(ko_pairs, "w") as f:
            f.write(json.dumps({"id": "k", "a_ids": bx.ids_for(a.ko_T, 7)}) + "\n")
        ko = ("--ablate", "knockout", "--positions", "all", "--windows", "all")
        t_ko = min(run_wall(punctum_argv(a, model, ko_pairs, out, *ko), a.threads)
                   for _ in range(a.reps))
        t_kog = min(run_wall(punctum_argv(a, model, ko_pairs, out, *ko, "--generate",
                                          str(a.ko_N)), a.threads) for _ in range(a.reps))
        print(f"Knockout of all {a.ko_T - 1} positions of one T={a.ko_T} prompt, with every "
              f"variant continued {a.ko_N} tokens (intervention held) vs knockout alone:")
        print()
        print("| | seconds (wall, incl. start-up) |")
        print("|---|---:|")
        print(f"| knockout | {t_ko:.2f} |")
        print(f"| knockout + --generate {a.ko_N} | {t_kog:.2f} |")
        print(f"| **ratio** | **{t_kog / t_ko:.2f}x** |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
