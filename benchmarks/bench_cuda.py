"""CUDA benchmarks (SPEC §8), run by scripts/gpu-check.sh on a machine with a GPU.

A Llama-3.2-1B-shaped model with random bf16 weights (16 layers, d 2048, 32 heads, 8 kv heads,
head_dim 64, d_ff 8192, vocab 128256, tied embeddings) is swept at T = 512, 2048, 8192, 16384:

- punctum --backend cuda --dtype bf16, plain forward (--stats none) and with
  --stats mass,last,resid,topk: tokens/s (model loading excluded: the time of a one-token
  sweep is subtracted), peak GPU memory of the process (nvidia-smi, polled), exit status (an
  out-of-memory shows as a failed run);
- Hugging Face transformers on the same GPU, bf16, eager attention, output_attentions=True and
  output_hidden_states=True, the same statistics computed from its outputs (attention mass by
  key, last-row attention, residual norms, top-k of the final position): tokens/s and
  torch.cuda.max_memory_allocated; an out-of-memory is recorded as such;
- model FLOPs utilisation of the plain forward: (2 * non-embedding parameters + attention
  FLOPs) per token (punctum decodes the final position only, so the LM head is not counted
  per token; attention: 2 * 2 * L * H * head_dim * T/2 for causal QK^T and PV) over the
  card's dense bf16 peak (H100/H200 SXM 989 TFLOP/s, H100 PCIe 756, A100 312; --peak-tflops);
- the projection GEMMs alone through cuBLASLt (torch.nn.functional.linear, bf16) for the
  same shapes: the GEMM floor of one forward, to set against punctum's plain time.

Writes OUT/bench_cuda.json and OUT/bench_cuda.md.

    python3 benchmarks/bench_cuda.py --punctum build-gpu/punctum --out DIR [--T 512,2048]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time

CFG = dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
           num_attention_heads=32, num_key_value_heads=8, head_dim=64, max_position_embeddings=131072,
           rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=128000, eos_token_id=128001)
ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
TOKENS_PER_RUN = 65536
STATS = "mass,last,resid,topk"


def peak_tflops(name: str) -> float:
    n = name.upper()
    if "H200" in n or ("H100" in n and ("SXM" in n or "HBM3" in n)):
        return 989.4
    if "H100" in n:
        return 756.0
    if "A100" in n:
        return 312.0
    if "L40" in n:
        return 181.0
    return float("nan")


def make_config(cfg_kw: dict | None = None):
    import transformers as tf

    kw = dict(CFG if cfg_kw is None else cfg_kw)
    try:  # transformers >= 5
        return tf.LlamaConfig(rope_parameters=dict(ROPE), **kw)
    except TypeError:
        rope = {k: v for k, v in ROPE.items() if k != "rope_theta"}
        return tf.LlamaConfig(rope_theta=ROPE["rope_theta"], rope_scaling=rope, **kw)


def make_model(path: str, device: str = "cuda", cfg_kw: dict | None = None) -> None:
    import torch
    import transformers as tf

    if os.path.exists(os.path.join(path, "model.safetensors")) or os.path.exists(
            os.path.join(path, "model.safetensors.index.json")):
        return
    t0 = time.time()
    cfg = make_config(cfg_kw)
    torch.manual_seed(1234)
    with torch.device(device):
        model = tf.LlamaForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(path, safe_serialization=True)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    print(f"bench_cuda: model written to {path} in {time.time() - t0:.0f} s", flush=True)


def write_pairs(path: str, T: int, n: int, vocab: int, seed: int) -> None:
    import numpy as np

    rs = np.random.RandomState(seed)
    with open(path, "w") as f:
        for i in range(n):
            ids = [int(x) for x in rs.randint(0, vocab, size=T)]
            f.write(json.dumps({"id": f"s{i}", "a_ids": ids}) + "\n")


class MemPoll:
    """Peak GPU memory (MiB) used by one process, polled with nvidia-smi."""

    def __init__(self, pid: int):
        self.pid, self.peak, self.stop = pid, 0, False
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.stop:
            try:
                out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory",
                                      "--format=csv,noheader,nounits"], capture_output=True, text=True,
                                     timeout=5).stdout
                for line in out.splitlines():
                    parts = [p.strip() for p in line.split(",")]
                    if len(parts) == 2 and parts[0] == str(self.pid):
                        self.peak = max(self.peak, int(parts[1]))
            except Exception:
                pass
            time.sleep(0.1)

    def done(self) -> int:
        self.stop = True
        self.t.join(timeout=2)
        return self.peak


def run_punctum(binary: str, model: str, pairs: str, out: str, stats: str, batch_tokens: int) -> dict:
    cmd = [binary, "run", "--model", model, "--pairs", pairs, "--out", out, "--force", "--progress", "never",
           "--backend", "cuda", "--dtype", "bf16", "--stats", stats, "--batch-tokens", str(batch_tokens)]
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    mem = MemPoll(p.pid)
    log, _ = p.communicate()
    secs = time.perf_counter() - t0
    peak = mem.done()
    return {"rc": p.returncode, "secs": secs, "peak_mib": peak, "log": log.strip()[-2000:], "cmd": " ".join(cmd)}


def hf_bench(model_path: str, T: int, n_seqs: int, vocab: int, reps: int = 3) -> dict:
    import numpy as np
    import torch
    import transformers as tf

    res = {"T": T}
    try:
        model = tf.AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.bfloat16,
                                                        attn_implementation="eager").cuda().eval()
    except TypeError:
        model = tf.AutoModelForCausalLM.from_pretrained(model_path, torch_dtype=torch.bfloat16,
                                                        attn_implementation="eager").cuda().eval()
    rs = np.random.RandomState(T)
    ids = torch.tensor(rs.randint(0, vocab, size=(1, T)), device="cuda")

    def one():
        kw = dict(output_attentions=True, output_hidden_states=True, use_cache=False)
        try:
            out = model(ids, logits_to_keep=1, **kw)
        except TypeError:
            out = model(ids, **kw)
        # the statistics punctum writes, from the model's outputs
        mass = torch.stack([a[0].float().sum(dim=1) for a in out.attentions])         # [L, H, T]
        last = torch.stack([a[0, :, -1, :].float() for a in out.attentions])          # [L, H, T]
        resid = torch.stack([h[0].float().norm(dim=-1) for h in out.hidden_states])   # [L+1, T]
        lp = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
        top = torch.topk(lp, 10)
        ent = -(lp.exp() * lp).sum()
        return float(mass.sum() + last.sum() + resid.sum() + top.values.sum() + ent)

    try:
        torch.cuda.reset_peak_memory_stats()
        with torch.no_grad():
            one()  # warm-up
            torch.cuda.synchronize()
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                for _ in range(n_seqs):
                    one()
                torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        res.update(ok=True, tok_s=T * n_seqs / med, secs=med, peak_mib=torch.cuda.max_memory_allocated() / 2**20)
    except torch.cuda.OutOfMemoryError as exc:
        res.update(ok=False, error=f"out of memory: {str(exc).splitlines()[0][:160]}")
    except RuntimeError as exc:
        res.update(ok=False, error=str(exc).splitlines()[0][:200])
    del model
    torch.cuda.empty_cache()
    return res


def gemm_floor(T: int, reps: int = 20) -> dict:
    """Time of the projection GEMMs of one forward over T rows, each called alone (cuBLASLt
    through torch, bf16, float accumulation)."""
    import torch

    d, ff, H, KV, hd, L = CFG["hidden_size"], CFG["intermediate_size"], 32, 8, 64, CFG["num_hidden_layers"]
    shapes = {"qkv": ((H + 2 * KV) * hd, d), "o": (d, H * hd), "up": (2 * ff, d), "down": (d, ff)}
    x = {k: torch.randn(T, s[1], device="cuda", dtype=torch.bfloat16) for k, s in shapes.items()}
    w = {k: torch.randn(s[0], s[1], device="cuda", dtype=torch.bfloat16) * 0.02 for k, s in shapes.items()}
    out = {}
    total = 0.0
    for k in shapes:
        for _ in range(3):
            torch.nn.functional.linear(x[k], w[k])
        torch.cuda.synchronize()
        ev0, ev1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        ms = []
        for _ in range(reps):
            ev0.record()
            torch.nn.functional.linear(x[k], w[k])
            ev1.record()
            ev1.synchronize()
            ms.append(ev0.elapsed_time(ev1))
        out[k] = statistics.median(ms)
        total += out[k] * L
    out["forward_ms"] = total
    return out


def render(results: dict) -> list[str]:
    gpu, peak, over = results["gpu"], results["peak_tflops"], results["fixed_cost_s"]
    lines = [f"# CUDA benchmarks: {gpu}", "",
             f"date {results['date']}, commit {results['commit']}, model Llama-3.2-1B-shaped random bf16, "
             f"peak {peak} TFLOP/s dense bf16, fixed cost subtracted "
             f"(plain {over['none']:.1f} s, stats {over[STATS]:.1f} s)", "",
             "| T | plain tok/s | stats tok/s | stats/plain time | HF eager tok/s | speed-up vs HF (stats) "
             "| MFU plain | GEMM floor / plain | peak MiB plain | peak MiB stats | HF peak MiB |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]

    def num(x, f="{:.0f}"):
        return f.format(x) if isinstance(x, (int, float)) and x == x else "-"

    for r in results["rows"]:
        p, s, h = r["plain"], r["stats"], r.get("hf", {})
        ratio = p["tok_s"] / s["tok_s"] if p["tok_s"] and s["tok_s"] else None
        hf = h.get("tok_s") if h.get("ok") else None
        sp = s["tok_s"] / hf if hf and s["tok_s"] else None
        gf = r.get("gemm_floor", {}).get("share_of_plain")
        hf_cell = num(hf) if hf else (h.get("error", "skipped")[:40] if h else "skipped")
        lines.append(
            f"| {r['T']} | {num(p['tok_s']) if p['tok_s'] else 'FAIL'} | {num(s['tok_s']) if s['tok_s'] else 'FAIL'} | "
            f"{num(ratio, '{:.3f}')} | {hf_cell} | {num(sp, '{:.1f}x')} | {num(r.get('mfu_plain'), '{:.3f}')} | "
            f"{num(gf, '{:.2f}')} | {p['peak_mib']} | {s['peak_mib']} | {num(h.get('peak_mib')) if hf else '-'} |")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--punctum", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--work", default=None, help="model and inputs (default: OUT/../bench-cuda-work)")
    ap.add_argument("--T", default="512,2048,8192,16384")
    ap.add_argument("--peak-tflops", type=float, default=None)
    ap.add_argument("--skip-hf", action="store_true")
    ap.add_argument("--hf-max-T", type=int, default=16384, help="largest T tried with transformers")
    args = ap.parse_args()

    import torch

    os.makedirs(args.out, exist_ok=True)
    work = args.work or os.path.join(os.path.dirname(os.path.abspath(args.out)), "bench-cuda-work")
    os.makedirs(work, exist_ok=True)
    gpu = torch.cuda.get_device_name(0)
    peak = args.peak_tflops or peak_tflops(gpu)
    model = os.path.join(work, "llama-3.2-1b-shaped-bf16")
    make_model(model)
    vocab = CFG["vocab_size"]
    L, H, hd, d, ff = CFG["num_hidden_layers"], 32, 64, CFG["hidden_size"], CFG["intermediate_size"]
    p_nonembed = L * (d * (H + 2 * 8) * hd + H * hd * d + 3 * d * ff + 2 * d) + d
    results = {"gpu": gpu, "peak_tflops": peak, "model": CFG, "rope": ROPE, "non_embedding_params": p_nonembed,
               "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rows": []}
    try:
        results["commit"] = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    except Exception:
        results["commit"] = "unknown"

    # fixed cost of a sweep (process start, weights loaded and converted, file written)
    tiny = os.path.join(work, "tiny.jsonl")
    write_pairs(tiny, 16, 1, vocab, 1)
    over = {}
    for stats in ("none", STATS):
        r = run_punctum(args.punctum, model, tiny, os.path.join(work, "tiny.h5"), stats, 4096)
        over[stats] = r["secs"]
        print(f"bench_cuda: fixed cost ({stats}): {r['secs']:.1f} s, exit {r['rc']}", flush=True)
        if r["rc"]:
            print(r["log"])
    results["fixed_cost_s"] = over

    for T in [int(x) for x in args.T.split(",")]:
        n = max(1, TOKENS_PER_RUN // T)
        pairs = os.path.join(work, f"T{T}.jsonl")
        write_pairs(pairs, T, n, vocab, T)
        bt = max(T, 16384)
        row = {"T": T, "n_seqs": n, "tokens": n * T, "batch_tokens": bt}
        for tag, stats in (("plain", "none"), ("stats", STATS)):
            r = run_punctum(args.punctum, model, pairs, os.path.join(work, f"T{T}.{tag}.h5"), stats, bt)
            net = max(r["secs"] - over[stats], 1e-9)
            row[tag] = {"rc": r["rc"], "wall_s": r["secs"], "net_s": net, "tok_s": n * T / net if r["rc"] == 0 else None,
                        "peak_mib": r["peak_mib"], "cmd": r["cmd"]}
            if r["rc"]:
                row[tag]["log"] = r["log"]
            print(f"bench_cuda: T={T} {tag}: exit {r['rc']} wall {r['secs']:.1f} s net {net:.2f} s "
                  f"{row[tag]['tok_s'] or 0:.0f} tok/s peak {r['peak_mib']} MiB", flush=True)
        flops_tok = 2 * p_nonembed + 2 * 2 * L * H * hd * T / 2
        if row["plain"]["tok_s"]:
            row["mfu_plain"] = flops_tok * row["plain"]["tok_s"] / (peak * 1e12)
        if row["stats"]["tok_s"]:
            row["mfu_stats"] = flops_tok * row["stats"]["tok_s"] / (peak * 1e12)
        try:
            row["gemm_floor"] = gemm_floor(T)
            if row["plain"]["tok_s"]:
                t_fwd_ms = 1000 * T / row["plain"]["tok_s"]
                row["gemm_floor"]["share_of_plain"] = row["gemm_floor"]["forward_ms"] / t_fwd_ms
        except Exception as exc:  # pragma: no cover
            row["gemm_floor"] = {"error": str(exc)[:200]}
        if not args.skip_hf and T <= args.hf_max_T:
            row["hf"] = hf_bench(model, T, max(1, min(n, 8)), vocab)
            print(f"bench_cuda: T={T} transformers: {row['hf']}", flush=True)
        results["rows"].append(row)
        with open(os.path.join(args.out, "bench_cuda.json"), "w") as f:
            json.dump(results, f, indent=1)

    lines = render(results)
    with open(os.path.join(args.out, "bench_cuda.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    if not shutil.which("nvidia-smi"):
        print("bench_cuda: no nvidia-smi: this needs a GPU machine", file=sys.stderr)
        sys.exit(77)
    sys.exit(main())
