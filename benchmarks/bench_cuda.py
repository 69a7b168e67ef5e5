"""CUDA benchmarks (SPEC §8), run by scripts/gpu-check.sh on a machine with a GPU.

A Llama-3.2-1B-shaped model with random bf16 weights (16 layers, d 2048, 32 heads, 8 kv heads,
head_dim 64, d_ff 8192, vocab 128256, tied embeddings) is swept at T = 512, 2048, 4096, 8192,
32768 (about 64k tokens per run):

- punctum --backend cuda --dtype bf16, plain forward (--stats none) and with
  --stats mass,last,resid,topk. Timed in punctum's own process: the sweep time it reports at
  the end of a run (`--progress always`: from after the weights are on the GPU to the last
  commit), so process start, model loading and weight conversion are excluded. Peak GPU memory
  of the process (nvidia-smi, polled); an out-of-memory shows as a failed run.
- Hugging Face transformers on the same GPU, in this process: bf16, eager attention,
  output_attentions=True and output_hidden_states=True, the same statistics computed from its
  outputs (attention mass by key, last-row attention, residual norms, top-k of the final
  position), timed with CUDA events (median of several forwards after a warm-up), at the batch
  size that is fastest among those that fit; an out-of-memory is recorded as such.
- model FLOPs utilisation of the plain forward: (2 * non-embedding parameters + attention
  FLOPs) per token (punctum decodes the final position only, so the LM head is not counted
  per token; attention: 2 * 2 * L * H * head_dim * T/2 for causal QK^T and PV) over the
  card's dense bf16 peak (H100/H200 SXM 989 TFLOP/s, H100 PCIe 756, A100 312; --peak-tflops);
- the projection GEMMs alone through cuBLASLt (torch.nn.functional.linear, bf16, CUDA events)
  for the shapes punctum runs (batches of --batch-tokens rows), against punctum's own
  projection time in the T = 2048 sweep (one extra run with PUNCTUM_PROFILE=1, which
  synchronises around each operation: an upper bound of its GEMM time).

Ends with the SPEC §8 targets, each marked met or not. Writes OUT/bench_cuda.json and
OUT/bench_cuda.md (after every T, so a run cut short keeps what it measured).

    python3 benchmarks/bench_cuda.py --punctum build-gpu/punctum --out DIR [--T 512,2048]
                                     [--deadline SECONDS]
"""
from __future__ import annotations

import argparse
import json
import os
import re
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
DECODE_T, DECODE_SEQS, DECODE_STEPS = 256, 64, 64  # decode_pack: prompts, sequences, generated tokens
STATS = "mass,last,resid,topk"
PROFILE_T = 2048
# "punctum: done: 2 pairs, 65536 tokens in 1.23 s (writer busy 0.10 s, final copy 0.05 s), ..."
SWEEP_LINE = re.compile(r"(?:\[punctum\]|punctum: \w+:) \d+ pairs, (\d+) tokens in ([0-9.]+) s")
PROFILE_LINE = re.compile(r"\[punctum profile\] forward ([0-9.]+) s:(.*)")


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


def run_punctum(binary: str, model: str, pairs: str, out: str, stats: str, batch_tokens: int,
                profile: bool = False, env_extra: dict | None = None, extra_args: list | None = None) -> dict:
    cmd = [binary, "run", "--model", model, "--pairs", pairs, "--out", out, "--force", "--progress", "always",
           "--backend", "cuda", "--dtype", "bf16", "--stats", stats, "--batch-tokens", str(batch_tokens)]
    cmd += extra_args or []
    env = dict(os.environ, **(env_extra or {}))
    if profile:
        env["PUNCTUM_PROFILE"] = "1"
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    mem = MemPoll(p.pid)
    log, _ = p.communicate()
    secs = time.perf_counter() - t0
    peak = mem.done()
    r = {"rc": p.returncode, "wall_s": secs, "peak_mib": peak, "log": log.strip()[-2000:], "cmd": " ".join(cmd)}
    m = SWEEP_LINE.search(log)
    if m:  # punctum's own measurement of the sweep (model loading excluded)
        r["tokens"], r["sweep_s"] = int(m.group(1)), float(m.group(2))
    m = PROFILE_LINE.search(log)
    if m:
        r["profile_forward_s"] = float(m.group(1))
        r["profile"] = {k: float(v) for k, v in re.findall(r" ([a-z_]+) ([0-9.]+)", m.group(2))}
    return r


def decode_pack(binary: str, model: str, work: str, vocab: int) -> dict:
    """Greedy decoding with the attention forward GQA-packed (one block per K/V head: the cache
    read once per group) or one head a block (PUNCTUM_CUDA_ATTN_PACK=1|0; cuda_attention packs
    decode steps by itself): the emulation counts the bytes, this times them (the sweep's
    seconds and PUNCTUM_PROFILE's attention seconds, prompts and decode steps together)."""
    pairs = os.path.join(work, f"decode.T{DECODE_T}.jsonl")
    write_pairs(pairs, DECODE_T, DECODE_SEQS, vocab, 7)
    out = {"T": DECODE_T, "seqs": DECODE_SEQS, "generate": DECODE_STEPS}
    for pack in (0, 1):
        r = run_punctum(binary, model, pairs, os.path.join(work, f"decode.p{pack}.h5"), "none",
                        DECODE_T * DECODE_SEQS, profile=True, env_extra={"PUNCTUM_CUDA_ATTN_PACK": str(pack)},
                        extra_args=["--generate", str(DECODE_STEPS)])
        out[pack] = {"rc": r["rc"], "sweep_s": r.get("sweep_s"), "attention_s": r.get("profile", {}).get("attention")}
        if r["rc"]:
            out[pack]["log"] = r["log"]
    return out


def hf_load(model_path: str):
    import torch
    import transformers as tf

    try:
        model = tf.AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.bfloat16, attn_implementation="eager")
    except TypeError:
        model = tf.AutoModelForCausalLM.from_pretrained(model_path, torch_dtype=torch.bfloat16,
                                                        attn_implementation="eager")
    return model.cuda().eval()


def hf_bench(model, T: int, vocab: int, reps: int = 3) -> dict:
    """transformers eager + the statistics, timed with CUDA events; the fastest batch size
    among those that fit (the attention maps of all layers dominate the memory)."""
    import numpy as np
    import torch

    L, H = CFG["num_hidden_layers"], CFG["num_attention_heads"]
    free, _ = torch.cuda.mem_get_info()
    per_seq = L * H * T * T * 2 * 3  # bf16 maps + softmax / statistics temporaries
    cands = [b for b in (1, 2, 4, 8, 16) if b * per_seq < 0.6 * free] or [1]
    cands = sorted({cands[0], cands[len(cands) // 2], cands[-1]})
    rs = np.random.RandomState(T)

    def one(ids):
        kw = dict(output_attentions=True, output_hidden_states=True, use_cache=False)
        try:
            out = model(ids, logits_to_keep=1, **kw)
        except TypeError:
            out = model(ids, **kw)
        mass = torch.stack([a.float().sum(dim=2) for a in out.attentions])         # [L, B, H, T]
        last = torch.stack([a[:, :, -1, :].float() for a in out.attentions])       # [L, B, H, T]
        resid = torch.stack([h.float().norm(dim=-1) for h in out.hidden_states])   # [L+1, B, T]
        lp = torch.log_softmax(out.logits[:, -1].float(), dim=-1)
        top = torch.topk(lp, 10, dim=-1)
        ent = -(lp.exp() * lp).sum(dim=-1)
        return float(mass.sum() + last.sum() + resid.sum() + top.values.sum() + ent.sum())

    best = {"T": T, "ok": False, "tried": []}
    for b in cands:
        ids = torch.tensor(rs.randint(0, vocab, size=(b, T)), device="cuda")
        try:
            torch.cuda.reset_peak_memory_stats()
            with torch.no_grad():
                one(ids)  # warm-up
                torch.cuda.synchronize()
                ms = []
                for _ in range(reps):
                    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    e0.record()
                    one(ids)
                    e1.record()
                    e1.synchronize()
                    ms.append(e0.elapsed_time(e1))
            med = statistics.median(ms) / 1000
            tok_s = b * T / med
            best["tried"].append({"batch": b, "tok_s": tok_s})
            if tok_s > best.get("tok_s", 0):
                best.update(ok=True, tok_s=tok_s, batch=b, secs=med,
                            peak_mib=torch.cuda.max_memory_allocated() / 2**20)
        except torch.cuda.OutOfMemoryError as exc:
            best["tried"].append({"batch": b, "error": "out of memory"})
            if not best["ok"]:
                best["error"] = f"out of memory: {str(exc).splitlines()[0][:120]}"
        except RuntimeError as exc:
            best["tried"].append({"batch": b, "error": str(exc).splitlines()[0][:120]})
            if not best["ok"]:
                best["error"] = str(exc).splitlines()[0][:160]
        torch.cuda.empty_cache()
    return best


def gemm_floor(T: int, reps: int = 20) -> dict:
    """Time of the projection GEMMs of one forward over T rows, each called alone (cuBLASLt
    through torch, bf16, float accumulation), CUDA events, median."""
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
        ms = []
        for _ in range(reps):
            ev0, ev1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            ev0.record()
            torch.nn.functional.linear(x[k], w[k])
            ev1.record()
            ev1.synchronize()
            ms.append(ev0.elapsed_time(ev1))
        out[k] = statistics.median(ms)
        total += out[k] * L
    out["forward_ms"] = total
    return out


def num(x, f="{:.0f}"):
    return f.format(x) if isinstance(x, (int, float)) and x == x else "-"


def targets(results: dict) -> list[tuple[str, str, bool | None]]:
    """SPEC §8's CUDA criteria: (criterion, measured, met: True / False / None = not measured)."""
    rows = {r["T"]: r for r in results["rows"]}
    out = []
    r = rows.get(2048)
    mfu = r.get("mfu_plain") if r else None
    out.append(("plain forward >= 50% of the bf16 tensor-core peak at T = 2048 (MFU)",
                num(mfu, "{:.3f}"), None if mfu is None else mfu >= 0.5))
    ratios = [(t, x["stats_over_plain"]) for t, x in sorted(rows.items()) if x.get("stats_over_plain")]
    worst = max((v for _, v in ratios), default=None)
    out.append(("mass,last,resid,topk <= 1.1x the plain forward's time",
                ", ".join(f"T={t}: {v:.3f}" for t, v in ratios) or "-", None if worst is None else worst <= 1.1))
    for T, need in ((512, 3.0), (4096, 8.0)):
        sp = rows.get(T, {}).get("speedup_vs_hf")
        out.append((f">= {need:.0f}x transformers eager + statistics at T = {T}", num(sp, "{:.1f}x"),
                    None if sp is None else sp >= need))
    r = rows.get(32768)
    ok = None if not r else (r["plain"]["rc"] == 0 and r["stats"]["rc"] == 0)
    out.append(("T = 32768 without out-of-memory", "-" if not r else
                f"plain exit {r['plain']['rc']}, stats exit {r['stats']['rc']}", ok))
    share = results.get("gemm_share")
    out.append(("projection GEMMs >= 90% of cuBLASLt's own time (T = 2048; cuBLASLt alone / punctum)",
                num(share, "{:.2f}"), None if share is None else share >= 0.9))
    r = rows.get(8192)
    mr = None
    if r and r["plain"]["peak_mib"] and r["stats"]["peak_mib"]:
        mr = r["stats"]["peak_mib"] / r["plain"]["peak_mib"]
    out.append(("GPU memory at T = 8192 within 1.2x of the plain forward", num(mr, "{:.2f}"),
                None if mr is None else mr <= 1.2))
    out.append(("host memory for an 8B BF16 checkpoint <= 2 GiB beyond the mapped file", "not measured here", None))
    return out


def render(results: dict) -> list[str]:
    gpu, peak, over = results["gpu"], results["peak_tflops"], results.get("fixed_cost_s", {})
    lines = [f"# CUDA benchmarks: {gpu}", "",
             f"date {results['date']}, commit {results['commit']}, model Llama-3.2-1B-shaped random bf16, "
             f"peak {peak} TFLOP/s dense bf16; punctum timed in its own process (sweep time, model loading "
             f"excluded; a one-token sweep takes {num(over.get('none'), '{:.1f}')} s end to end); "
             f"transformers and cuBLASLt with CUDA events", "",
             "| T | plain tok/s | stats tok/s | stats/plain time | HF eager tok/s (batch) | speed-up vs HF (stats) "
             "| MFU plain | peak MiB plain | peak MiB stats | HF peak MiB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results["rows"]:
        p, s, h = r["plain"], r["stats"], r.get("hf", {})
        hf = h.get("tok_s") if h.get("ok") else None
        hf_cell = f"{num(hf)} ({h.get('batch')})" if hf else (h.get("error", "skipped")[:40] if h else "skipped")
        lines.append(
            f"| {r['T']} | {num(p['tok_s']) if p['tok_s'] else 'FAIL'} | {num(s['tok_s']) if s['tok_s'] else 'FAIL'} | "
            f"{num(r.get('stats_over_plain'), '{:.3f}')} | {hf_cell} | {num(r.get('speedup_vs_hf'), '{:.1f}x')} | "
            f"{num(r.get('mfu_plain'), '{:.3f}')} | {p['peak_mib']} | {s['peak_mib']} | "
            f"{num(h.get('peak_mib')) if hf else '-'} |")
    g = results.get("gemm")
    if g:
        lines += ["", f"Projection GEMMs of the T = {PROFILE_T} sweep: punctum {num(g.get('punctum_ms'), '{:.1f}')} ms "
                      f"(PUNCTUM_PROFILE), cuBLASLt alone on the same shapes ({g.get('rows')} rows) "
                      f"{num(g.get('cublaslt_ms'), '{:.1f}')} ms (per batch and layer: qkv {num(g.get('qkv'), '{:.3f}')}, "
                      f"o {num(g.get('o'), '{:.3f}')}, up {num(g.get('up'), '{:.3f}')}, down "
                      f"{num(g.get('down'), '{:.3f}')} ms)."]
    w = results.get("attn_warps")
    if w:
        cells = [f"{k} warps: sweep {num(v.get('sweep_s'), '{:.2f}')} s, attention "
                 f"{num(v.get('attention_s'), '{:.3f}')} s (exit {v.get('rc')}), with --stats mass "
                 f"{num(v.get('mass_attention_s'), '{:.3f}')} s (exit {v.get('mass_rc', '-')})" for k, v in w.items()]
        lines += ["", f"Attention tiles at T = {PROFILE_T} (PUNCTUM_CUDA_ATTN_WARPS: both passes; PUNCTUM_PROFILE's "
                      "attention seconds, the forward alone and with the statistics pass): " + "; ".join(cells) + "."]
    dp = results.get("decode_pack")
    if dp:
        cells = [f"{'packed' if k in (1, '1') else 'one head a block'}: sweep {num(v.get('sweep_s'), '{:.2f}')} s, "
                 f"attention {num(v.get('attention_s'), '{:.3f}')} s (exit {v.get('rc')})"
                 for k, v in dp.items() if isinstance(v, dict)]
        lines += ["", f"Greedy decoding, {dp['seqs']} prompts of {dp['T']} tokens, --generate {dp['generate']} "
                      "(PUNCTUM_CUDA_ATTN_PACK, PUNCTUM_PROFILE): " + "; ".join(cells) + "."]
    if results.get("skipped"):
        lines += ["", "Not measured (time): " + ", ".join(results["skipped"])]
    lines += ["", "| SPEC §8 target | measured | met |", "|---|---|---|"]
    for crit, meas, ok in targets(results):
        lines.append(f"| {crit} | {meas} | {'-' if ok is None else ('yes' if ok else 'NO')} |")
    return lines


def write(results: dict, out_dir: str) -> None:
    with open(os.path.join(out_dir, "bench_cuda.json"), "w") as f:
        json.dump(results, f, indent=1)
    with open(os.path.join(out_dir, "bench_cuda.md"), "w") as f:
        f.write("\n".join(render(results)) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--punctum", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--work", default=None, help="model and inputs (default: OUT/../bench-cuda-work)")
    ap.add_argument("--T", default="512,2048,4096,8192,32768")
    ap.add_argument("--peak-tflops", type=float, default=None)
    ap.add_argument("--skip-hf", action="store_true")
    ap.add_argument("--hf-max-T", type=int, default=4096, help="largest T tried with transformers")
    ap.add_argument("--deadline", type=float, default=None, help="seconds: start nothing new after that")
    args = ap.parse_args()
    t_start = time.time()

    def left() -> float:
        return float("inf") if args.deadline is None else args.deadline - (time.time() - t_start)

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
               "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rows": [], "skipped": []}
    results["commit"] = os.environ.get("GPU_CHECK_COMMIT", "")
    if not results["commit"]:
        try:
            results["commit"] = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True,
                                               text=True).stdout.strip() or "unknown"
        except Exception:
            results["commit"] = "unknown"

    # warm-up (model files into the page cache) and the end-to-end cost of a one-token sweep
    tiny = os.path.join(work, "tiny.jsonl")
    write_pairs(tiny, 16, 1, vocab, 1)
    over = {}
    for stats in ("none", STATS):
        r = run_punctum(args.punctum, model, tiny, os.path.join(work, "tiny.h5"), stats, 4096)
        over[stats] = r["wall_s"]
        print(f"bench_cuda: one-token sweep ({stats}): {r['wall_s']:.1f} s, exit {r['rc']}", flush=True)
        if r["rc"]:
            print(r["log"])
    results["fixed_cost_s"] = over
    hf_model = None

    for T in [int(x) for x in args.T.split(",")]:
        need = 25 + T / 2048  # seconds a T costs, roughly (two model loads dominate)
        if left() < need:
            results["skipped"].append(f"T={T}")
            print(f"bench_cuda: T={T} skipped: {left():.0f} s left", flush=True)
            continue
        n = max(1, TOKENS_PER_RUN // T)
        pairs = os.path.join(work, f"T{T}.jsonl")
        write_pairs(pairs, T, n, vocab, T)
        bt = max(T, 16384)
        row = {"T": T, "n_seqs": n, "tokens": n * T, "batch_tokens": bt}
        for tag, stats in (("plain", "none"), ("stats", STATS)):
            r = run_punctum(args.punctum, model, pairs, os.path.join(work, f"T{T}.{tag}.h5"), stats, bt)
            secs = r.get("sweep_s") or max(r["wall_s"] - over[stats], 1e-9)
            row[tag] = {"rc": r["rc"], "wall_s": r["wall_s"], "sweep_s": secs,
                        "timed": "in-process" if "sweep_s" in r else "wall minus one-token sweep",
                        "tok_s": n * T / secs if r["rc"] == 0 else None, "peak_mib": r["peak_mib"], "cmd": r["cmd"]}
            if r["rc"]:
                row[tag]["log"] = r["log"]
            print(f"bench_cuda: T={T} {tag}: exit {r['rc']} wall {r['wall_s']:.1f} s sweep {secs:.2f} s "
                  f"{row[tag]['tok_s'] or 0:.0f} tok/s peak {r['peak_mib']} MiB", flush=True)
        flops_tok = 2 * p_nonembed + 2 * 2 * L * H * hd * T / 2
        if row["plain"]["tok_s"]:
            row["mfu_plain"] = flops_tok * row["plain"]["tok_s"] / (peak * 1e12)
        if row["plain"]["tok_s"] and row["stats"]["tok_s"]:
            row["stats_over_plain"] = row["plain"]["tok_s"] / row["stats"]["tok_s"]
        if T == PROFILE_T and row["plain"]["rc"] == 0 and left() > 30:
            r = run_punctum(args.punctum, model, pairs, os.path.join(work, f"T{T}.profile.h5"), "none", bt,
                            profile=True)
            g = gemm_floor(bt)  # the shapes punctum runs: batches of bt rows
            scale = n * T / bt  # batches' worth of rows in the sweep
            results["gemm"] = {"rows": bt, "cublaslt_ms": g["forward_ms"] * scale,
                               **{k: g[k] for k in ("qkv", "o", "up", "down")}}
            if r.get("profile", {}).get("gemm"):
                results["gemm"]["punctum_ms"] = 1000 * r["profile"]["gemm"]
                results["gemm_share"] = results["gemm"]["cublaslt_ms"] / results["gemm"]["punctum_ms"]
            results["gemm"]["profile"] = r.get("profile")
            print(f"bench_cuda: GEMMs at T={T}: {results['gemm']}", flush=True)
            # the attention forward on 4 or 8 warps (cuda_attention picks 8 at these lengths): the
            # emulation cannot time the choice, this does (PUNCTUM_PROFILE's attention seconds)
            results["attn_warps"] = {}
            for warps in (4, 8):
                if left() < 30:
                    break
                r = run_punctum(args.punctum, model, pairs, os.path.join(work, f"T{T}.w{warps}.h5"), "none", bt,
                                profile=True, env_extra={"PUNCTUM_CUDA_ATTN_WARPS": str(warps)})
                results["attn_warps"][warps] = {"rc": r["rc"], "sweep_s": r.get("sweep_s"),
                                                "attention_s": r.get("profile", {}).get("attention")}
                if left() < 30:
                    continue
                # the statistics pass too (it follows the same override): attention with --stats mass
                r = run_punctum(args.punctum, model, pairs, os.path.join(work, f"T{T}.w{warps}.mass.h5"), "mass",
                                bt, profile=True, env_extra={"PUNCTUM_CUDA_ATTN_WARPS": str(warps)})
                results["attn_warps"][warps].update(
                    {"mass_rc": r["rc"], "mass_attention_s": r.get("profile", {}).get("attention")})
            print(f"bench_cuda: attention warps at T={T}: {results['attn_warps']}", flush=True)
        if not args.skip_hf and T <= args.hf_max_T and left() > 20:
            if hf_model is None:
                hf_model = hf_load(model)
            row["hf"] = hf_bench(hf_model, T, vocab)
            if row["hf"].get("ok") and row["stats"]["tok_s"]:
                row["speedup_vs_hf"] = row["stats"]["tok_s"] / row["hf"]["tok_s"]
            print(f"bench_cuda: T={T} transformers: {row['hf']}", flush=True)
        results["rows"].append(row)
        write(results, args.out)

    if left() > 60:
        results["decode_pack"] = decode_pack(args.punctum, model, work, vocab)
        print(f"bench_cuda: decode, GQA-packed or not: {results['decode_pack']}", flush=True)
    write(results, args.out)
    print("\n".join(render(results)))
    return 0


if __name__ == "__main__":
    if not shutil.which("nvidia-smi"):
        print("bench_cuda: no nvidia-smi: this needs a GPU machine", file=sys.stderr)
        sys.exit(77)
    sys.exit(main())
