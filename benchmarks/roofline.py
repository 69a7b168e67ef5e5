"""Roofline model of the cuda backend, counted by the emulation build (issue 17).

`punctum-emu run --backend cuda --dtype bf16 --stats none` runs with PUNCTUM_EMU_ROOFLINE=FILE:
the emulation counts, per kernel, launches, global-memory bytes and FLOPs as the kernels run
(tests/emu/cuda_emu_roofline.cpp). This script turns the counts into a predicted H100 SXM time
per kernel, max(bytes / HBM bandwidth, FLOPs / peak), sums them per forward and predicts the
model FLOPs utilisation (MFU) against SPEC §8's >= 50% target.

Model: Llama-3.2-1B-shaped (benchmarks/bench_cuda.py's CFG: d 2048, d_ff 8192, 32 heads, 8
key/value heads, head_dim 64, vocab 128256, tied embeddings), random bf16 weights. The
emulation runs it with 1 and with 2 layers; every layer has the same shapes, so per kernel
row (counts of the 2-layer run) - (the 1-layer run) is exactly one layer's share and
2 * (1-layer) - (2-layer) the part outside the layers (embedding, final norm, LM head on the
final positions); the 16-layer forward is fixed + 16 * per-layer. Nothing else is scaled:
each batch shape (sequence length T x sequences per batch) is run as it is.

What is counted how (the emulation):
- bytes: distinct 32-byte sectors of device memory each launch touches ("DRAM" columns), i.e.
  the compulsory traffic if L2 holds a launch's working set; the bytes the threads request
  (every load and store, before caches) are shown as "req MB" for comparison. cuBLASLt GEMMs:
  A, B (and C, bias) read once, D written once.
- FLOPs: tensor core = mma.sync.m16n8k16 (4096 per warp instruction: attention's QK^T and PV,
  whole tiles including the masked part of diagonal tiles) and GEMMs with 16-bit inputs
  (2 m n k). The other kernels (norms, RoPE, softmax, elementwise) count 0 FLOPs: they are
  memory-bound by orders of magnitude, and their bytes are counted.
- not modelled: launch latency and gaps between kernels, tail effects of partial waves, L2
  misses beyond compulsory traffic; host transfers (cudaMemcpy HtoD / DtoH: weight upload,
  token ids, results) are listed apart, not in the forward.

    python3 benchmarks/roofline.py [--emu build/punctum-emu] [--batches 512x4,2048x1]
                                   [--work DIR] [--layers 16] [--stats mass,last,resid,topk|none]

Each batch runs with --stats none (the plain forward: MFU) and, unless --stats none, with the
statistics (SPEC §8: at most 1.1x the plain forward's time; MFU then counts the same model FLOPs).
"""
from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_cuda  # noqa: E402  (the model shape and its writer)

# H100 SXM5 (80 GB) datasheet figures, NVIDIA "H100 Tensor Core GPU" datasheet
# (nvidia.com/en-us/data-center/h100/), dense (no sparsity):
H100_HBM_BYTES_S = 3.35e12     # HBM3 bandwidth, 3.35 TB/s
H100_BF16_TC_FLOPS = 989e12    # BF16 / FP16 tensor core, dense (1979 with sparsity)
H100_FP32_FLOPS = 67e12        # FP32 on CUDA cores (non-tensor)
HOST_ROWS = ("cudaMemcpy HtoD", "cudaMemcpy DtoH", "cudaMemcpy HtoH")
FIELDS = ("launches", "bytes_read", "bytes_written", "dram_read", "dram_written", "flops",
          "tensor_core_flops")


def read_counts(path: str) -> dict[str, dict[str, int]]:
    with open(path, newline="") as f:
        return {r["kernel"]: {k: int(r[k]) for k in FIELDS} for r in csv.DictReader(f, delimiter="\t")}


def run_emu(emu: str, model: str, T: int, nseq: int, work: str, stats: str = "none") -> dict[str, dict[str, int]]:
    tag = f"{os.path.basename(model)}.T{T}x{nseq}.{stats.replace(',', '-')}"
    pairs = os.path.join(work, f"T{T}x{nseq}.jsonl")
    bench_cuda.write_pairs(pairs, T, nseq, bench_cuda.CFG["vocab_size"], T + nseq)
    counts = os.path.join(work, tag + ".tsv")
    if os.path.exists(counts):
        os.unlink(counts)
    env = dict(os.environ, PUNCTUM_EMU_ROOFLINE=counts, PUNCTUM_EMU_CHECKS="0")
    cmd = [emu, "run", "--model", model, "--pairs", pairs, "--out", os.path.join(work, tag + ".h5"),
           "--force", "--progress", "never", "--backend", "cuda", "--dtype", "bf16", "--stats", stats,
           "--batch-tokens", str(T * nseq)]
    t0 = time.time()
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if p.returncode != 0 or not os.path.exists(counts):
        sys.exit(f"roofline: {' '.join(cmd)} failed ({p.returncode}):\n{p.stdout[-3000:]}")
    print(f"roofline: {tag}: {time.time() - t0:.0f} s in the emulation", file=sys.stderr, flush=True)
    return read_counts(counts)


def scale_layers(one: dict, two: dict, layers: int) -> dict[str, dict[str, int]]:
    """fixed + layers * per-layer, per row and field; exact because every layer has the same
    shapes (a negative part would mean it is not: then stop)."""
    out = {}
    for name in sorted(set(one) | set(two)):
        a, b = one.get(name), two.get(name)
        if a is None or b is None:
            sys.exit(f"roofline: row {name!r} is in only one of the 1- and 2-layer runs")
        row = {k: 2 * a[k] - b[k] + layers * (b[k] - a[k]) for k in FIELDS}
        for k in FIELDS:
            if min(b[k] - a[k], 2 * a[k] - b[k]) >= 0:
                continue
            if k not in ("dram_read", "dram_written") or not b["launches"]:
                sys.exit(f"roofline: {name} {k}: 1 layer {a[k]}, 2 layers {b[k]}: not affine in layers")
            # distinct sectors need not be affine in the layer count: a launch that writes one
            # value per token into a [tokens, layers + 1] array (k_row_norms: the residual norms)
            # touches more sectors as the row stride grows. Then: the 2-layer run's sectors per
            # launch times the launches (affine; such rows are a few MB at most)
            row[k] = b[k] * row["launches"] // b["launches"]
            print(f"roofline: {name} {k}: not affine in layers ({a[k]}, {b[k]}): counted per launch",
                  file=sys.stderr)
        out[name] = row
    return out


def predict(r: dict[str, int]) -> tuple[float, str]:
    dram = r["dram_read"] + r["dram_written"]
    t_mem = dram / H100_HBM_BYTES_S
    tc = r["tensor_core_flops"]
    t_flop = tc / H100_BF16_TC_FLOPS + (r["flops"] - tc) / H100_FP32_FLOPS
    return max(t_mem, t_flop), ("memory" if t_mem >= t_flop else "compute")


def model_flops(T: int, nseq: int, layers: int) -> float:
    """bench_cuda.py's MFU numerator: (2 * non-embedding params + causal attention) per token."""
    c = bench_cuda.CFG
    d, ff, H, kv, hd = c["hidden_size"], c["intermediate_size"], c["num_attention_heads"], \
        c["num_key_value_heads"], c["head_dim"]
    p_nonembed = layers * (d * (H + 2 * kv) * hd + H * hd * d + 3 * d * ff + 2 * d) + d
    per_tok = 2 * p_nonembed + 2 * 2 * layers * H * hd * T / 2
    return per_tok * T * nseq


def table(rows: dict, T: int, nseq: int, layers: int) -> tuple[list[str], dict]:
    fwd = {k: v for k, v in rows.items() if not k.startswith(HOST_ROWS)}
    host = {k: v for k, v in rows.items() if k.startswith(HOST_ROWS)}
    pred = {k: predict(v) for k, v in fwd.items()}
    total = sum(t for t, _ in pred.values())
    lines = ["| kernel | launches | DRAM MB read | DRAM MB written | req MB | GFLOP (tensor core) | "
             "FLOP/B | bound | predicted us | share |",
             "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
    for name in sorted(fwd, key=lambda k: -pred[k][0]):
        r, (t, bound) = fwd[name], pred[name]
        dram = r["dram_read"] + r["dram_written"]
        req = r["bytes_read"] + r["bytes_written"]
        gf = r["flops"] / 1e9
        tcs = "" if not r["flops"] else (" (tc)" if r["tensor_core_flops"] == r["flops"] else " (fp32)")
        lines.append(f"| `{name}` | {r['launches']} | {r['dram_read'] / 1e6:.1f} | {r['dram_written'] / 1e6:.1f} | "
                     f"{req / 1e6:.1f} | {gf:.2f}{tcs} | {r['flops'] / dram if dram else 0:.1f} | {bound} | "
                     f"{t * 1e6:.1f} | {100 * t / total:.1f}% |")
    mf = model_flops(T, nseq, layers)
    mfu = mf / (total * H100_BF16_TC_FLOPS)
    counted = sum(r["flops"] for r in fwd.values())
    dram = sum(r["dram_read"] + r["dram_written"] for r in fwd.values())
    s = {"T": T, "nseq": nseq, "ms": total * 1e3, "mfu": mfu, "model_gflop": mf / 1e9,
         "counted_gflop": counted / 1e9, "dram_gb": dram / 1e9,
         "mem_share": sum(t for t, b in pred.values() if b == "memory") / total,
         "host_mb": sum(v["bytes_read"] for v in host.values()) / 1e6}
    lines.append("")
    lines.append(f"T = {T} x {nseq} sequence(s) per batch, {layers} layers: predicted forward "
                 f"**{s['ms']:.2f} ms** ({T * nseq / total:,.0f} tokens/s), DRAM {s['dram_gb']:.2f} GB, "
                 f"counted {s['counted_gflop']:.0f} GFLOP vs model {s['model_gflop']:.0f} GFLOP, "
                 f"{100 * s['mem_share']:.0f}% of the time in memory-bound kernels, predicted "
                 f"**MFU {100 * mfu:.1f}%** (host transfers not counted: {s['host_mb']:.0f} MB, mostly the "
                 f"one-time weight upload)")
    return lines, s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--emu", default="build/punctum-emu")
    ap.add_argument("--batches", default="512x4,2048x1", help="TxN: sequence length x sequences per batch")
    ap.add_argument("--layers", type=int, default=bench_cuda.CFG["num_hidden_layers"])
    ap.add_argument("--work", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "punctum-roofline"))
    ap.add_argument("--stats", default="mass,last,resid,topk",
                    help="also the forward with these statistics (SPEC §8: <= 1.1x the plain one); 'none': skip")
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    models = {}
    for L in (1, 2):
        models[L] = os.path.join(args.work, f"llama-1b-shaped-{L}layer")
        bench_cuda.make_model(models[L], device="cpu", cfg_kw=dict(bench_cuda.CFG, num_hidden_layers=L))
    out, sums = [], []
    for spec in args.batches.split(","):
        T, nseq = (int(x) for x in spec.lower().split("x"))
        for stats in ("none",) + ((args.stats,) if args.stats != "none" else ()):
            rows = scale_layers(run_emu(args.emu, models[1], T, nseq, args.work, stats),
                                run_emu(args.emu, models[2], T, nseq, args.work, stats), args.layers)
            lines, s = table(rows, T, nseq, args.layers)
            out += [f"#### T = {T}, {nseq} sequence(s) per batch ({T * nseq} tokens), {args.layers} layers, "
                    f"--stats {stats}", ""]
            out += lines + [""]
            s["stats"] = stats
            sums.append(s)
    out += ["| batch | --stats | predicted ms | tokens/s | DRAM GB | memory-bound share | "
            "MFU (target >= 50% at T = 2048) | time / plain (target <= 1.1) |",
            "|---|---|---:|---:|---:|---:|---:|---:|"]
    plain = {(s["T"], s["nseq"]): s["ms"] for s in sums if s["stats"] == "none"}
    for s in sums:
        ratio = s["ms"] / plain[(s["T"], s["nseq"])]
        out.append(f"| T = {s['T']} x {s['nseq']} | {s['stats']} | {s['ms']:.2f} | "
                   f"{s['T'] * s['nseq'] / s['ms'] * 1e3:,.0f} | {s['dram_gb']:.2f} | {100 * s['mem_share']:.0f}% | "
                   f"{100 * s['mfu']:.1f}% | {'-' if s['stats'] == 'none' else f'{ratio:.3f}'} |")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
