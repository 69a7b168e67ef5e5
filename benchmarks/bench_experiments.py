#!/usr/bin/env python3
"""Cost of punctum's causal experiments relative to the plain forward (SPEC §8), CPU backend.

On a SmolLM2-135M-shaped llama with random weights (30 layers, hidden 576, 9 heads, 3 kv
heads, intermediate 1536, vocab 49152, tied embeddings), for each T:

 (a) knockout of all positions: `--ablate knockout --positions all --windows all --stats none`
     on one T-token sequence, divided by T x the cost of one plain forward of that sequence
     (`--stats none`, one sequence per forward batch: `--batch-tokens T`).
     Target <= 0.55 (the prefix-reuse limit is 0.5). For large T, where knocking out all
     T-1 positions does not fit the time available, a uniform stratified sample of positions
     (per-record "positions") is timed and scaled by (T-1)/sample; the table says so.
 (b) prefix sharing: N pairs (a, a + ".") vs the N prompts a alone, same options.
     Target <= 1.1.

Times are CPU seconds (user + sys) of the engine process minus those of the same command on
a one-token prompt (start-up, model loading, file creation), single-threaded by default:
on shared machines CPU time is what other processes disturb least, and ratios are what
SPEC §8 asks of CPU runs. Each measurement is the minimum over --reps runs.

usage: bench_experiments.py [--bin build/punctum] [--T 128,512] [--reps 2] [--threads 1]
                            [--pair-tokens 4096] [--ko-budget-s 150] [--model-dir DIR]
                            [--prefix-stats none,mass,last,resid,topk]
Prints a markdown table (machine, date, commit, commands, ratios).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.dirname(os.path.abspath(__file__))
# the same model directory as bench_cpu.py (created by make_model.py)
DEFAULT_MODEL_DIR = os.path.join(REPO, "benchmarks", "out", "smollm2-135m-random")
SHAPE = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
             num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
             rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)
DOT = 30   # the token id used as "." (any fixed id: the model has random weights)


def make_model(path: str) -> str:
    """Create (once) the random SmolLM2-135M-shaped llama: with benchmarks/make_model.py
    where it exists (the model bench_cpu.py uses), else directly with transformers."""
    if os.path.exists(os.path.join(path, "config.json")) and \
            os.path.exists(os.path.join(path, "model.safetensors")):
        return path
    mk = os.path.join(HERE, "make_model.py")
    if os.path.exists(mk):
        subprocess.run([sys.executable, mk, path], check=True)
        return path
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    cfg = LlamaConfig(rope_parameters={"rope_type": "default", "rope_theta": 100000.0}, **SHAPE)
    model = LlamaForCausalLM(cfg).eval()
    os.makedirs(path, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    return path


def sh(cmd: str) -> str:
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=30).stdout
    except Exception:
        return ""


def machine() -> str:
    model = ""
    for line in sh("lscpu").splitlines():
        if line.startswith("Model name:"):
            model = line.split(":", 1)[1].strip()
    return f"{model or 'unknown CPU'}, {os.cpu_count()} cores"


class Bench:
    """Runs the engine and measures the CPU time (user + sys) of the process, minus the CPU
    time of the same command on a one-token prompt (process start-up, model mapping and
    loading, output file creation). CPU time, not wall time: the machines are shared, and
    single-threaded CPU time is what another process's load disturbs least."""

    def __init__(self, binary: str, model: str, threads: int, workdir: str):
        self.bin, self.model, self.threads, self.dir = binary, model, threads, workdir
        self.commands: list[str] = []
        self._startup: dict = {}

    def write(self, name: str, records: list[dict]) -> str:
        p = os.path.join(self.dir, name + ".jsonl")
        with open(p, "w") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")
        return p

    def _cpu(self, pairs: str, opts: tuple, record: bool) -> tuple[float, float]:
        out = os.path.join(self.dir, "out.h5")
        argv = [self.bin, "run", "--model", self.model, "--pairs", pairs, "--out", out,
                "--force", "--threads", str(self.threads), "--progress", "never", *opts]
        env = dict(os.environ, OMP_NUM_THREADS=str(self.threads),
                   OPENBLAS_NUM_THREADS=str(self.threads))
        log = os.path.join(self.dir, "stderr.txt")
        t0 = time.perf_counter()
        with open(log, "w") as err:
            p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, env=env)
            _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        rc = os.waitstatus_to_exitcode(status)
        if rc != 0:
            with open(log) as f:
                sys.exit(f"punctum failed ({rc}): {' '.join(argv)}\n{f.read()[-2000:]}")
        if record:
            cmd = " ".join(shlex.quote(a) for a in argv[1:])
            if cmd not in self.commands:
                self.commands.append(cmd)
        return ru.ru_utime + ru.ru_stime, wall

    def startup(self, opts: tuple) -> float:
        if opts not in self._startup:
            one = self.write("startup", [{"id": "s", "a_ids": [1]}])
            self._startup[opts] = min(self._cpu(one, opts, False)[0] for _ in range(3))
        return self._startup[opts]

    def best(self, reps: int, pairs: str, *opts: str) -> float:
        """Minimum over reps of the run's CPU seconds beyond start-up."""
        t = min(self._cpu(pairs, opts, True)[0] for _ in range(reps))
        return max(t - self.startup(opts), 1e-9)


def ids_for(T: int, seed: int) -> list[int]:
    import random
    rng = random.Random(seed)
    return [1] + [rng.randrange(100, SHAPE["vocab_size"]) for _ in range(T - 1)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.environ.get("PUNCTUM_BIN",
                                                    os.path.join(REPO, "build", "punctum")))
    ap.add_argument("--model-dir", default=DEFAULT_MODEL_DIR)
    ap.add_argument("--T", default="128,512")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pair-tokens", type=int, default=4096,
                    help="prompt tokens of side a in the prefix-sharing runs (pairs = this / T)")
    ap.add_argument("--prefix-stats", default="none;mass,last,resid,topk",
                    help="';'-separated --stats values for the prefix-sharing ratio")
    ap.add_argument("--ko-budget-s", type=float, default=150.0,
                    help="CPU seconds allowed for one knockout run; above it positions are "
                         "sampled")
    args = ap.parse_args()
    Ts = [int(t) for t in args.T.split(",")]
    model = make_model(args.model_dir)
    work = tempfile.mkdtemp(prefix="punctum-bench-exp-")
    B = Bench(args.bin, model, args.threads, work)
    rows = []
    for T in Ts:
        a = ids_for(T, T)
        # plain forward of one T-token sequence (one sequence per batch), a few sequences
        n_base = 3
        base_recs = [{"id": f"c{k}", "a_ids": ids_for(T, 1000 + k)} for k in range(n_base)]
        f_base = B.write(f"base{T}", base_recs)
        t_fwd = B.best(args.reps, f_base, "--stats", "none", "--batch-tokens", str(T)) / n_base
        # (a) knockout of all positions (or a uniform sample of them)
        ko_all = t_fwd * T * 0.55
        sample = None
        if ko_all > args.ko_budget_s:
            n = max(8, int((T - 1) * args.ko_budget_s / ko_all))
            # stratified: the middle of each of n equal strata of 0 .. T-2
            sample = sorted({int((k + 0.5) * (T - 1) / n) for k in range(n)})
        rec = {"id": "ko", "a_ids": a}
        if sample is not None:
            rec["positions"] = sample
        f_ko = B.write(f"ko{T}", [rec])
        ko_reps = 1 if sample is not None or ko_all > 60 else args.reps
        t_ko = B.best(ko_reps, f_ko, "--ablate", "knockout", "--positions", "all", "--windows",
                      "all", "--stats", "none")
        if sample is not None:
            t_ko = (t_ko - t_fwd) * (T - 1) / len(sample) + t_fwd
        ratio_ko = t_ko / (T * t_fwd)
        # (b) prefix sharing: (a, a + ".") vs a alone, many pairs
        N = max(2, args.pair_tokens // T)
        single = [{"id": f"s{k}", "a_ids": ids_for(T, 2000 + k)} for k in range(N)]
        paired = [dict(r, b_ids=r["a_ids"] + [DOT]) for r in single]
        f_s, f_p = B.write(f"single{T}", single), B.write(f"paired{T}", paired)
        res = {}
        for stats in args.prefix_stats.split(";"):
            ts = B.best(args.reps, f_s, "--stats", stats)
            tp = B.best(args.reps, f_p, "--stats", stats)
            res[stats] = (ts, tp, tp / ts)
        rows.append(dict(T=T, t_fwd=t_fwd, t_ko=t_ko, ratio_ko=ratio_ko, sample=sample, res=res,
                         N=N))
        print(f"T={T}: forward {t_fwd:.3f}s, knockout {t_ko:.2f}s"
              f"{' (sampled %d positions)' % len(sample) if sample else ''} -> {ratio_ko:.3f}; "
              + "; ".join(f"prefix[{k}] {v[1]:.2f}/{v[0]:.2f} = {v[2]:.3f}"
                          for k, v in res.items()), file=sys.stderr)

    commit = sh(f"git -C {shlex.quote(REPO)} rev-parse --short HEAD").strip() or "?"
    dirty = " (+ uncommitted changes)" if sh(f"git -C {shlex.quote(REPO)} status --porcelain "
                                             "--untracked-files=no").strip() else ""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print("### Causal experiments vs the plain forward (CPU backend)\n")
    print(f"- machine: {machine()}; engine threads: {args.threads}; times: CPU seconds "
          "beyond start-up (see the script's docstring)")
    print(f"- date: {now}; commit: {commit}{dirty}")
    print("- model: SmolLM2-135M-shaped llama, random weights (30 layers, d 576, 9 heads / "
          f"3 kv heads, d_ff 1536, vocab 49152, tied), float32 safetensors: {model}")
    print(f"- benchmark: `python benchmarks/bench_experiments.py --T {args.T} --reps {args.reps}"
          f" --threads {args.threads} --pair-tokens {args.pair_tokens} --ko-budget-s "
          f"{args.ko_budget_s:g}`; minimum of {args.reps} runs (1 for knockout runs over 60 s)\n")
    stats_list = args.prefix_stats.split(";")
    head = ["T", "plain forward (s)", "knockout, all positions (s)",
            "**knockout / (T x forward)** (target <= 0.55)"]
    head += [f"pair (a, a+\".\") / a alone, --stats {st}" + (" (target <= 1.1)" if i == 0 else "")
             for i, st in enumerate(stats_list)]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        smp = f" (est. from {len(r['sample'])} sampled positions)" if r["sample"] else ""
        cells = [str(r["T"]), f"{r['t_fwd']:.3f}", f"{r['t_ko']:.1f}{smp}",
                 f"**{r['ratio_ko']:.3f}**"]
        for st in stats_list:
            ts, tp, ratio = r["res"][st]
            cells.append(f"**{ratio:.3f}** ({tp:.2f} s / {ts:.2f} s, {r['N']} pairs)")
        print("| " + " | ".join(cells) + " |")
    print("\nCommands (engine arguments):\n")
    for c in B.commands:
        print(f"    punctum {c}")


if __name__ == "__main__":
    main()
