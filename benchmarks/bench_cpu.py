#!/usr/bin/env python3
"""CPU benchmark (SPEC §8): punctum's cpu backend against its own plain forward and against
Hugging Face transformers, on a SmolLM2-135M-shaped random model, same machine, one run.

    python benchmarks/bench_cpu.py [--model DIR] [--threads N] [--lengths 256,1024]
                                   [--seqs 256:4,1024:2] [--mem-length 4096] [--repeat 2]

Measured, per T in --lengths (each a few random-id sequences, --seqs T:COUNT):
  * punctum run --stats none                       (plain forward: the cost baseline)
  * punctum run --stats mass,last,resid,topk       (the statistics)
  * transformers, eager attention, output_attentions=True, output_hidden_states=True,
    torch threads = --threads, the same statistics computed from its outputs with
    vectorised torch code (attn_mass, attn_last, resid_norm incl. the pre-norm final
    residual via a hook, entropy, top-k); and transformers' plain forward (sdpa), the
    baseline of punctum's --stats none. Both under torch.inference_mode at the batch size
    that is best for them among the powers of two up to the sequence count that fit in
    memory (--hf-mem-cap bytes of attention outputs), as a user tuning it would run them.
Tokens/s for punctum are steady-state: (process wall time - startup) where startup is the
wall time of the same command on a single 1-token record (model load, HDF5 setup); the
end-to-end figure is printed too. Best of --repeat runs.
Peak RSS (ru_maxrss of the child) of punctum at T = --mem-length, stats vs none.

Prints a markdown report (machine, date, git commit, commands, table, ratios) on stdout.
Does not write benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
STATS = "mass,last,resid,topk"


def sh(cmd) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=False,
                              shell=isinstance(cmd, str)).stdout.strip()
    except OSError:
        return ""


def machine() -> tuple[str, str]:
    model = ""
    for line in sh(["lscpu"]).splitlines():
        if line.startswith("Model name:"):
            model = line.split(":", 1)[1].strip()
    if not model:
        model = platform.processor() or platform.machine()
    n_online = os.cpu_count() or 1
    try:
        n_avail = len(os.sched_getaffinity(0))
    except AttributeError:
        n_avail = n_online
    return model, f"{n_avail} usable of {n_online}"


def git_commit() -> str:
    c = sh(["git", "-C", REPO, "rev-parse", "--short", "HEAD"])
    if not c:
        return "(no commit)"
    dirty = sh(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"])
    return c + ("+dirty" if dirty else "")


def write_pairs(path: str, T: int, n: int, vocab: int, seed: int) -> None:
    rng = random.Random(seed)
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"s{i}", "a_ids": [rng.randrange(vocab) for _ in range(T)]})
                    + "\n")


def run_punctum(binary: str, model: str, pairs: str, out: str, stats: str, threads: int,
                extra: list[str]) -> tuple[float, int, str, float]:
    """(wall seconds, peak RSS KiB of the child, command, child CPU seconds) — measured in a
    fresh wrapper process so the rusage belongs to this one child."""
    cmd = [binary, "run", "--model", model, "--pairs", pairs, "--out", out, "--force",
           "--stats", stats, "--threads", str(threads), "--backend", "cpu"] + extra
    wrapper = ("import resource, subprocess, sys, time, json\n"
               "t = time.perf_counter()\n"
               "p = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)\n"
               "w = time.perf_counter() - t\n"
               "u = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
               "r, c = u.ru_maxrss, u.ru_utime + u.ru_stime\n"
               "print(json.dumps({'rc': p.returncode, 'wall': w, 'rss': r, 'cpu': c, "
               "'err': p.stderr.decode(errors='replace')[-2000:]}))\n")
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    res = subprocess.run([sys.executable, "-c", wrapper] + cmd, capture_output=True, text=True,
                         env=env)
    lines = res.stdout.strip().splitlines()
    if not lines:
        raise RuntimeError(f"could not run {' '.join(cmd)}:\n{res.stderr[-2000:]}")
    info = json.loads(lines[-1])
    if info["rc"] != 0:
        raise RuntimeError(f"punctum failed ({info['rc']}): {' '.join(cmd)}\n{info['err']}")
    return info["wall"], info["rss"], " ".join(cmd), info["cpu"]


def hf_batch_sizes(n: int, T: int, n_layers: int, n_heads: int, stats: bool,
                   cap_bytes: float) -> list[int]:
    """Batch sizes to try: powers of two up to n whose eager attention outputs (L x B x H x T x
    T floats, kept for the statistics) fit in cap_bytes."""
    out, b = [], 1
    while b <= n:
        if not stats or b == 1 or n_layers * b * n_heads * T * T * 4 <= cap_bytes:
            out.append(b)
        b *= 2
    return out


def hf_bench(model_dir: str, T: int, n: int, vocab: int, threads: int, topk: int, seed: int,
             repeat: int, stats: bool = True, mem_cap: float = 6e9) -> tuple[float, float, int]:
    """(wall, CPU) seconds for n sequences of T tokens, and the batch size that gave them: the
    best of every batch size that fits (hf_batch_sizes), under torch.inference_mode, as a user
    tuning transformers would run it. stats: eager attention with output_attentions and
    output_hidden_states, the statistics computed batched from them (attn_mass, attn_last,
    resid_norm incl. the pre-norm final residual via a hook, entropy, top-k); else the plain
    forward with sdpa attention (the baseline of punctum's --stats none)."""
    import torch
    from transformers import AutoModelForCausalLM
    torch.set_num_threads(threads)
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.float32, attn_implementation="eager" if stats else "sdpa").eval()
    cfg = model.config
    rng = random.Random(seed)
    ids = torch.tensor([[rng.randrange(vocab) for _ in range(T)] for _ in range(n)])
    cap = {}
    h = model.model.norm.register_forward_pre_hook(
        lambda _m, args: cap.__setitem__("final", args[0]))
    sink = []

    def run_batch(x):
        if not stats:
            out = model(input_ids=x, use_cache=False, logits_to_keep=1)
            sink.append(out.logits[:, -1].argmax(-1).sum().item())
            return
        out = model(input_ids=x, output_attentions=True, output_hidden_states=True,
                    use_cache=False, logits_to_keep=1)
        A = torch.stack(out.attentions)                          # [L,B,H,T,T]
        mass = A.sum(dim=3).permute(1, 3, 0, 2).contiguous()     # [B,T,L,H]
        last = A[:, :, :, -1, :].permute(1, 3, 0, 2).contiguous()  # [B,T,L,H]
        res = list(out.hidden_states[:-1]) + [cap["final"]]      # entering layer l; pre-norm
        rn = torch.stack([r.norm(dim=-1) for r in res], dim=2)   # [B,T,L+1]
        logp = torch.log_softmax(out.logits[:, -1].double(), -1)
        ent = -(logp.exp() * logp).sum(-1)
        tv, ti = torch.topk(logp, topk, dim=-1)
        sink.append((mass.sum().item(), last.sum().item(), rn.sum().item(), ent.sum().item(),
                     ti[:, 0].sum().item()))

    def timed(b: int, reps: int) -> tuple[float, float]:
        best, best_cpu = float("inf"), float("inf")
        for _ in range(reps):
            t, c = time.perf_counter(), time.process_time()
            for i in range(0, n, b):
                run_batch(ids[i:i + b])
            best = min(best, time.perf_counter() - t)
            best_cpu = min(best_cpu, time.process_time() - c)
        return best, best_cpu

    with torch.inference_mode():
        run_batch(ids[:1, :16])  # warm-up
        sizes = hf_batch_sizes(n, T, cfg.num_hidden_layers, cfg.num_attention_heads, stats, mem_cap)
        trial = {b: timed(b, 1)[0] for b in sizes}
        best_b = min(trial, key=trial.get)
        wall, cpu = timed(best_b, repeat)
    h.remove()
    del model
    return min(wall, trial[best_b]), cpu, best_b


def main(argv=None) -> int:
    model_d, cores_d = machine()
    try:
        default_threads = len(os.sched_getaffinity(0))
    except AttributeError:
        default_threads = os.cpu_count() or 1
    ap = argparse.ArgumentParser(description="punctum CPU benchmark (SPEC §8)")
    ap.add_argument("--bin", default=os.environ.get("PUNCTUM_BIN",
                                                    os.path.join(REPO, "build", "punctum")))
    ap.add_argument("--model", default=os.path.join(REPO, "benchmarks", "out", "smollm2-135m-random"),
                    help="model dir (created with make_model.py if missing)")
    ap.add_argument("--threads", type=int, default=default_threads)
    ap.add_argument("--lengths", default="256,1024")
    ap.add_argument("--seqs", default="256:8,1024:4", help="T:COUNT sequences per length")
    ap.add_argument("--hf-mem-cap", type=float, default=6e9,
                    help="bytes of eager attention outputs a transformers batch may hold")
    ap.add_argument("--mem-length", type=int, default=4096, help="T of the peak-RSS runs (0: skip)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--topk", type=int, default=10)
    ap.add_argument("--no-hf", action="store_true", help="skip the transformers runs")
    ap.add_argument("--extra", default="", help="extra punctum run options, e.g. '--batch-tokens 4096'")
    ap.add_argument("--workdir", default=None, help="where pairs/outputs go (default: a temp dir)")
    args = ap.parse_args(argv)

    if not os.access(args.bin, os.X_OK):
        print(f"bench_cpu: punctum binary not found: {args.bin}", file=sys.stderr)
        return 1
    if not os.path.exists(os.path.join(args.model, "config.json")):
        print(f"bench_cpu: creating {args.model}", file=sys.stderr)
        subprocess.run([sys.executable, os.path.join(HERE, "make_model.py"), args.model],
                       check=True)
    with open(os.path.join(args.model, "config.json")) as f:
        vocab = json.load(f)["vocab_size"]
    lengths = [int(x) for x in args.lengths.split(",") if x]
    counts = {int(k): int(v) for k, v in (p.split(":") for p in args.seqs.split(",") if p)}
    extra = args.extra.split() + ["--topk", str(args.topk)]
    work = args.workdir or tempfile.mkdtemp(prefix="punctum-bench-")
    os.makedirs(work, exist_ok=True)
    cmds = []

    # startup cost: one 1-token record
    p1 = os.path.join(work, "one.jsonl")
    write_pairs(p1, 1, 1, vocab, 0)
    startup, startup_cpu = {}, {}
    # warm-up, not counted: the model files into the page cache (a cold first start would be
    # subtracted as "startup" from every steady-state figure of that kind)
    run_punctum(args.bin, args.model, p1, os.path.join(work, "one.h5"), "none", args.threads, extra)
    for st in ("none", STATS):
        runs = [run_punctum(args.bin, args.model, p1, os.path.join(work, "one.h5"), st,
                            args.threads, extra) for _ in range(args.repeat)]
        startup[st] = min(x[0] for x in runs)
        startup_cpu[st] = min(x[3] for x in runs)

    rows = []
    for T in lengths:
        n = counts.get(T, 2)
        pairs = os.path.join(work, f"T{T}.jsonl")
        write_pairs(pairs, T, n, vocab, T)
        r = {"T": T, "n": n, "tokens": T * n}
        for key, st in (("none", "none"), ("stats", STATS)):
            best, best_cpu = float("inf"), float("inf")
            for _ in range(args.repeat):
                w, _rss, cmd, c = run_punctum(args.bin, args.model, pairs,
                                              os.path.join(work, f"T{T}-{key}.h5"), st,
                                              args.threads, extra)
                best, best_cpu = min(best, w), min(best_cpu, c)
            cmds.append(cmd)
            r[f"{key}_wall"] = best
            r[f"{key}_steady"] = max(best - startup[st], 1e-9)
            r[f"{key}_cpu"] = max(best_cpu - startup_cpu[st], 1e-9)
        if not args.no_hf:
            r["hf"], r["hf_cpu"], r["hf_b"] = hf_bench(args.model, T, n, vocab, args.threads,
                                                       args.topk, T, args.repeat, True,
                                                       args.hf_mem_cap)
            r["hfp"], r["hfp_cpu"], r["hfp_b"] = hf_bench(args.model, T, n, vocab, args.threads,
                                                          args.topk, T, args.repeat, False)
        rows.append(r)
        print(f"bench_cpu: T={T} done", file=sys.stderr)

    mem = None
    if args.mem_length:
        T = args.mem_length
        pairs = os.path.join(work, f"mem{T}.jsonl")
        write_pairs(pairs, T, 1, vocab, 99)
        mem = {}
        for key, st in (("none", "none"), ("stats", STATS)):
            w, rss, cmd, _c = run_punctum(args.bin, args.model, pairs,
                                          os.path.join(work, f"mem-{key}.h5"), st,
                                          args.threads, extra)
            mem[key] = (rss, w)
            cmds.append(cmd)

    # ---------------------------------------------------------------- report
    version = sh([args.bin, "--version"]) or "?"
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    out = []
    out.append("## CPU benchmark (SPEC §8)\n")
    out.append(f"- machine: {model_d}; cores: {cores_d}; threads used: {args.threads}")
    out.append(f"- date: {now}")
    out.append(f"- git commit: {git_commit()}; punctum --version: {version}")
    out.append(f"- python {platform.python_version()}, " + _lib_versions())
    out.append(f"- model: SmolLM2-135M-shaped random Llama ({args.model}), F32")
    out.append(f"- benchmark command: `python {' '.join(sys.argv)}`")
    out.append(f"- punctum startup (1-token record, subtracted for steady-state tokens/s): "
               f"none {startup['none']:.2f} s, stats {startup[STATS]:.2f} s")
    out.append("")
    out.append("| T | seqs | punctum none tok/s | punctum stats tok/s | HF eager+stats tok/s (batch) "
               "| HF sdpa plain tok/s (batch) | stats / none time | punctum stats / HF tok/s "
               "| punctum none / HF plain tok/s | end-to-end s (none / stats) |")
    out.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    flagged = False
    for r in rows:
        tn = r["tokens"] / r["none_steady"]
        ts = r["tokens"] / r["stats_steady"]
        hf = r["tokens"] / r["hf"] if "hf" in r else float("nan")
        hfp = r["tokens"] / r["hfp"] if "hfp" in r else float("nan")
        # steady-state figures are unreliable when startup is most of the wall time
        mark = ""
        if min(r["none_steady"] / r["none_wall"], r["stats_steady"] / r["stats_wall"]) < 0.5:
            mark, flagged = " †", True
        ge = 3 if r["T"] < 1024 else 5
        out.append(f"| {r['T']} | {r['n']} | {tn:.1f}{mark} | {ts:.1f}{mark} | {hf:.1f} "
                   f"({r.get('hf_b', '-')}) | {hfp:.1f} ({r.get('hfp_b', '-')}) | "
                   f"{r['stats_steady'] / r['none_steady']:.3f}{mark} (≤ 1.1) | "
                   f"{ts / hf:.2f}{mark} (≥ {ge}) | {tn / hfp:.2f}{mark} (≥ 1.1) | "
                   f"{r['none_wall']:.2f} / {r['stats_wall']:.2f} |")
    out.append("")
    out.append("Same ratios on CPU time (user + system of the process, startup subtracted; less "
               "sensitive to other load on a shared machine, but OpenMP spin-waiting counts):")
    out.append("")
    out.append("| T | stats / none CPU time | punctum stats / HF tok per CPU-s "
               "| punctum none / HF plain tok per CPU-s |")
    out.append("|---:|---:|---:|---:|")
    for r in rows:
        hfc, hfpc = r.get("hf_cpu", float("nan")), r.get("hfp_cpu", float("nan"))
        out.append(f"| {r['T']} | {r['stats_cpu'] / r['none_cpu']:.3f} | "
                   f"{hfc / r['stats_cpu']:.2f} | {hfpc / r['none_cpu']:.2f} |")
    if flagged:
        out.append("")
        out.append("† startup is more than half of the wall time: steady-state figures are "
                   "noisy; raise --seqs.")
    if mem:
        out.append("")
        out.append(f"| peak RSS at T = {args.mem_length} | none | stats | stats / none |")
        out.append("|---|---:|---:|---:|")
        rn, rs = mem["none"][0], mem["stats"][0]
        out.append(f"| punctum (ru_maxrss) | {rn / 1024:.0f} MiB | {rs / 1024:.0f} MiB | "
                   f"{rs / max(rn, 1):.3f} (≤ 1.2) |")
    out.append("")
    out.append("punctum commands (pairs/outputs in a temp dir):")
    for c in dict.fromkeys(cmds):
        out.append(f"    {c}")
    print("\n".join(out))
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _lib_versions() -> str:
    try:
        import torch
        import transformers
        return f"torch {torch.__version__}, transformers {transformers.__version__}"
    except Exception:
        return "torch/transformers not importable"


if __name__ == "__main__":
    sys.exit(main())
