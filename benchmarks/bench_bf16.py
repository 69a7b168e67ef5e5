#!/usr/bin/env python3
"""BF16 checkpoints on the CPU backend (SPEC §1, §8): peak RSS against the checkpoint's file
size, and tokens/s against the same model stored in F32, on the same machine in one run.

    python benchmarks/bench_bf16.py [--shapes smollm2-135m,llama-1b] [--threads N]
                                    [--repeat 2] [--workdir DIR]

For each shape a random model is written twice, F32 and BF16 (the BF16 values are the F32
ones rounded; values do not matter for speed or memory, only shapes and bytes), as sharded
safetensors (written tensor by tensor: the 1B model never sits in memory whole). Then, per
dtype, `punctum run --backend cpu --stats mass,last,resid,topk` on random-id sequences:

  * steady tokens/s: (wall - startup) with startup the wall time of a 1-token record, best of
    --repeat runs interleaved F32 / BF16 after a warm-up run of each (the page cache holds the
    checkpoint); the BF16 / F32 ratio is the criterion (>= 0.8); also per CPU second;
  * peak RSS (ru_maxrss of the child, in a fresh wrapper process): the criterion is
    RSS <= 1.2 x file + activations, where "activations" is what the same run needs beyond its
    weights (RSS of the F32 run minus its file, which the F32 run maps and uses in place).

Prints a markdown report on stdout (machine, date, commit, commands, table). Models are kept
in --models (default benchmarks/out/) for later runs.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import bench_cpu as B  # noqa: E402  (machine(), git_commit(), run_punctum(), write_pairs())

STATS = "mass,last,resid,topk"

# name -> (hidden, layers, heads, kv heads, intermediate, vocab, tied, (T, sequences))
SHAPES = {
    "smollm2-135m": (576, 30, 9, 3, 1536, 49152, True, (256, 8)),
    "llama-1b": (2048, 16, 32, 8, 8192, 128256, True, (256, 2)),  # Llama-3.2-1B's shape
}


def write_model(path: str, shape: str, dtype: str, seed: int = 0) -> int:
    """A random Llama of `shape` in `dtype` (F32 or BF16) as shards of about 1 GB; returns the
    total file size. Skipped when already there."""
    import torch
    from safetensors.torch import save_file
    d, L, H, KV, ff, V, tied, _ = SHAPES[shape]
    done = os.path.join(path, "model.safetensors.index.json")
    if os.path.exists(done):
        return _size(path)
    os.makedirs(path, exist_ok=True)
    cfg = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": d,
           "intermediate_size": ff, "num_hidden_layers": L, "num_attention_heads": H,
           "num_key_value_heads": KV, "head_dim": d // H, "vocab_size": V,
           "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
           "tie_word_embeddings": tied, "bos_token_id": 1, "eos_token_id": 2}
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    g = torch.Generator().manual_seed(seed)
    tdt = {"f32": torch.float32, "bf16": torch.bfloat16}[dtype]
    hd = d // H

    def tensors():
        yield "model.embed_tokens.weight", (V, d)
        if not tied:
            yield "lm_head.weight", (V, d)
        yield "model.norm.weight", (d,)
        for l in range(L):
            p = f"model.layers.{l}."
            yield p + "input_layernorm.weight", (d,)
            yield p + "post_attention_layernorm.weight", (d,)
            yield p + "self_attn.q_proj.weight", (H * hd, d)
            yield p + "self_attn.k_proj.weight", (KV * hd, d)
            yield p + "self_attn.v_proj.weight", (KV * hd, d)
            yield p + "self_attn.o_proj.weight", (d, H * hd)
            yield p + "mlp.gate_proj.weight", (ff, d)
            yield p + "mlp.up_proj.weight", (ff, d)
            yield p + "mlp.down_proj.weight", (d, ff)

    shard, shards, weight_map, size = {}, [], {}, 0

    def flush():
        nonlocal shard, size
        if shard:
            name = f"model-{len(shards) + 1:05d}.safetensors"
            save_file(shard, os.path.join(path, name), metadata={"format": "pt"})
            shards.append(name)
            for k in shard:
                weight_map[k] = name
        shard, size = {}, 0

    for name, shp in tensors():
        t = torch.ones(shp) if len(shp) == 1 else torch.randn(*shp, generator=g) * 0.02
        shard[name] = t.to(tdt).contiguous()
        size += shard[name].numel() * shard[name].element_size()
        if size >= 1 << 30:
            flush()
    flush()
    with open(done, "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f)
    return _size(path)


def _size(path: str) -> int:
    return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path)
               if f.endswith(".safetensors"))


def main(argv=None) -> int:
    model_d, cores_d = B.machine()
    try:
        default_threads = len(os.sched_getaffinity(0))
    except AttributeError:
        default_threads = os.cpu_count() or 1
    ap = argparse.ArgumentParser(description="punctum BF16 checkpoint benchmark (SPEC §8)")
    ap.add_argument("--bin", default=os.environ.get("PUNCTUM_BIN",
                                                    os.path.join(REPO, "build", "punctum")))
    ap.add_argument("--shapes", default="smollm2-135m,llama-1b")
    ap.add_argument("--models", default=os.path.join(REPO, "benchmarks", "out"))
    ap.add_argument("--threads", type=int, default=default_threads)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args(argv)
    if not os.access(args.bin, os.X_OK):
        print(f"bench_bf16: punctum binary not found: {args.bin}", file=sys.stderr)
        return 1
    work = args.workdir or tempfile.mkdtemp(prefix="punctum-bf16-")
    os.makedirs(work, exist_ok=True)
    extra = ["--progress", "never", "--batch-tokens", "4096"]
    rows, cmds = [], []
    for shape in [s for s in args.shapes.split(",") if s]:
        T, n = SHAPES[shape][7]
        V = SHAPES[shape][5]
        pairs = os.path.join(work, f"{shape}.jsonl")
        B.write_pairs(pairs, T, n, V, 1)
        one = os.path.join(work, "one.jsonl")
        B.write_pairs(one, 1, 1, V, 0)
        out = os.path.join(work, "out.h5")
        models, res = {}, {}
        for dtype in ("f32", "bf16"):
            models[dtype] = os.path.join(args.models, f"random-{shape}-{dtype}")
            print(f"bench_bf16: {shape} {dtype}: {models[dtype]}", file=sys.stderr)
            size = write_model(models[dtype], shape, dtype)
            res[dtype] = {"size": size, "start": 1e9, "wall": 1e9, "cpu": 1e9, "rss": 0}
            # warm the page cache: a timed run must not read the checkpoint from disk
            B.run_punctum(args.bin, models[dtype], one, out, STATS, args.threads, extra)
        # interleaved, so that other load on a shared machine hits both dtypes alike
        for _ in range(args.repeat):
            for dtype in ("f32", "bf16"):
                r = res[dtype]
                w1, _r1, _c, c1 = B.run_punctum(args.bin, models[dtype], one, out, STATS,
                                                args.threads, extra)
                wall, rss, cmd, cpu = B.run_punctum(args.bin, models[dtype], pairs, out, STATS,
                                                    args.threads, extra)
                cmds.append(cmd)
                r["start"], r["wall"] = min(r["start"], w1), min(r["wall"], wall)
                r["cpu"], r["rss"] = min(r["cpu"], cpu - c1), max(r["rss"], rss * 1024)
        for dtype in ("f32", "bf16"):
            r = res[dtype]
            r["tps"] = T * n / max(r["wall"] - r["start"], 1e-9)
            r["tpc"] = T * n / max(r["cpu"], 1e-9)
            print(f"bench_bf16: {shape} {dtype}: {r}", file=sys.stderr)
        rows.append((shape, T, n, res))

    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    version = B.sh([args.bin, "--version"]) or "?"
    o = ["## BF16 checkpoints on the cpu backend (SPEC §1, §8)\n",
         f"- machine: {model_d}; cores: {cores_d}; threads used: {args.threads}",
         f"- date: {now}", f"- git commit: {B.git_commit()}; punctum --version: {version}",
         f"- benchmark command: `python {' '.join(sys.argv)}`",
         f"- models: random Llamas written by this script (F32, and the same values in BF16), "
         f"`--stats {STATS}`, T tokens x sequences of random ids; tokens/s steady-state "
         f"(startup: a 1-token record, subtracted), best of {args.repeat} runs interleaved "
         f"F32 / BF16 after a warm-up run each (page cache); CPU time is user + system of the "
         f"process, startup's subtracted (less sensitive to other load on a shared machine)",
         "",
         "| shape | T x seqs | file F32 | file BF16 | tok/s F32 | tok/s BF16 | BF16 / F32 tok/s "
         "| BF16 / F32 tok per CPU-s | peak RSS F32 | peak RSS BF16 | activations "
         "| BF16 RSS / (1.2 file + activations) |",
         "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    mib = 2 ** 20
    for shape, T, n, r in rows:
        f, b = r["f32"], r["bf16"]
        act = max(f["rss"] - f["size"], 0)  # beyond the weights the F32 run maps in place
        o.append(f"| {shape} | {T} x {n} | {f['size'] / mib:.0f} MiB | {b['size'] / mib:.0f} MiB | "
                 f"{f['tps']:.1f} | {b['tps']:.1f} | {b['tps'] / f['tps']:.2f} (≥ 0.8) | "
                 f"{b['tpc'] / f['tpc']:.2f} | "
                 f"{f['rss'] / mib:.0f} MiB | {b['rss'] / mib:.0f} MiB | {act / mib:.0f} MiB | "
                 f"{b['rss'] / (1.2 * b['size'] + act):.2f} (≤ 1) |")
    o.append("")
    o.append("punctum commands:")
    for c in dict.fromkeys(cmds):
        o.append(f"    {c}")
    print("\n".join(o))
    return 0


if __name__ == "__main__":
    sys.exit(main())
