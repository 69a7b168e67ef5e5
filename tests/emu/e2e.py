"""End-to-end check of the cuda backend against the cpu reference (SPEC §6).

For each tiny random model (make_models.py: a GQA llama, a mistral with sliding_window=4, a
gpt2 and a qwen2), one JSONL of id records is swept twice with

    --ablate knockout --positions all --patch resid --stats mass,last,resid,topk,lens,massive

once by ``PUNCTUM --backend cpu`` and once by ``OTHER --backend cuda`` (OTHER is punctum-emu for
the cuda-emu test, or a GPU build of punctum), and every dataset of the two HDF5 files is
compared:

- f32: strings and integers exactly; floats within 1e-4 relative (+ 5e-5 absolute for values
  near zero: differences of log-probabilities such as dlogp_top1_b, KL divergences between
  nearly identical distributions); NaN where NaN.
- bf16: against the cpu run of the same model saved with BF16 weights (so the comparison
  measures the backend's own rounding of activations and attention operands, not the rounding
  of the weights, which alone moves these models' attention probabilities by up to ~4e-2 in
  transformers itself): the attention statistics of the knockout sweep within 2e-2 absolute
  (attn_last, and attn_mass divided by the number of queries that can see the key), and the
  next-token top-1 of a plain sweep of 300 sequences (TOP1_RECORDS pairs) agreeing on at least
  99% of them, where a reference near-tie (the cuda top-1 within TIE_NATS = 0.05 nats of the
  reference top-1: no defined top-1 at bf16 resolution) counts as agreement; the raw agreement
  is printed beside it. The agreement of the knockout variants' top1_changed flags is reported, not
  asserted (a knockout that moves the distribution to a near-tie flips under any rounding).

A second, smaller sweep adds ``patterns`` and ``--windows each`` (f32 only). Last, under the
emulation only, the launches that are host waits on a GPU (``k_divergence``, ``k_pick``,
device-to-host copies) are counted on llama_gqa's records with knockout, patching and
``--generate``, then on the same records twice over: the counts must not grow.

    python e2e.py --punctum build/punctum --other build/punctum-emu --work DIR
                  [--models llama_gqa,...] [--skip-without-cuda]

Exit status: 0 pass, 1 fail, 77 skipped (Python packages missing, or --skip-without-cuda and
the cuda backend is not usable).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

F32_RTOL, F32_ATOL = 1e-4, 5e-5
BF16_STAT_ATOL = 2e-2
BF16_TOP1_MIN = 0.99
# q/k/v rounding in the tensor-core path: attention statistics within this of the cpu run
STATS = "mass,last,resid,topk,lens,massive"
# resid_argmax (stat massive): the index of the largest |h_d|, which two backends may resolve
# differently where two dimensions tie within float32 rounding: at most this share of rows
ARGMAX_MAX_DIFFER = 0.01
TOP1_RECORDS = 150
TIE_NATS = 0.05  # about the bf16 resolution of these models' log-probabilities


def pairs_for(name: str, vocab: int, path: str) -> None:
    """Deterministic records covering prefix sharing (both directions), equal-length pairs
    (residual patching), a single prompt, and prompts longer than the sliding window."""
    import numpy as np

    import make_models

    rs = np.random.RandomState(make_models.SEEDS[name] + 1)
    def ids(n):
        return [int(x) for x in rs.randint(3, vocab, size=n)]
    recs = []
    a = ids(9)
    recs.append({"id": "prefix", "a_ids": a, "b_ids": a + ids(1), "target_id": int(rs.randint(vocab))})
    a = ids(12)
    b = list(a)
    b[-1] = (b[-1] + 7) % vocab
    recs.append({"id": "equal", "a_ids": a, "b_ids": b, "target_id": int(rs.randint(vocab))})
    recs.append({"id": "single", "a_ids": ids(6)})
    a = ids(10)
    recs.append({"id": "shrink", "a_ids": a, "b_ids": a[:-2], "target_id": int(rs.randint(vocab))})
    a = ids(7)
    b = list(a)
    b[3] = (b[3] + 11) % vocab
    recs.append({"id": "mid", "a_ids": a, "b_ids": b})
    a = ids(18)
    recs.append({"id": "long", "a_ids": a, "b_ids": a + ids(2), "target_id": int(rs.randint(vocab))})
    with open(path, "w") as f:
        for r in recs:
            f.write(json.dumps(r) + "\n")


def run(cmd: list[str], env=None) -> tuple[int, str, float]:
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    return p.returncode, (p.stdout + p.stderr).strip(), time.time() - t0


class Table:
    def __init__(self):
        self.rows = []
        self.failed = 0

    def add(self, model, what, n, max_abs, max_rel, ok, note=""):
        self.rows.append((model, what, n, max_abs, max_rel, ok, note))
        if not ok:
            self.failed += 1
        print(f"{model:12s} {what:44s} {n:8d} {max_abs:10.3e} {max_rel:10.3e} {'ok' if ok else 'FAIL'} {note}",
              flush=True)


def walk(h5):
    import h5py
    out = {}
    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            out[name] = obj
    h5.visititems(visit)
    return out


def compare_f32(tab: Table, model: str, ref_path: str, got_path: str) -> None:
    import h5py
    import numpy as np

    with h5py.File(ref_path, "r") as fr, h5py.File(got_path, "r") as fg:
        dr, dg = walk(fr), walk(fg)
        if set(dr) != set(dg):
            tab.add(model, "dataset names", len(dr), 0, 0, False,
                    f"only cpu: {sorted(set(dr) - set(dg))} only cuda: {sorted(set(dg) - set(dr))}")
        for name in sorted(set(dr) & set(dg)):
            a, b = dr[name][()], dg[name][()]
            if a.shape != b.shape:
                tab.add(model, name, a.size, 0, 0, False, f"shape {a.shape} vs {b.shape}")
                continue
            if a.dtype.kind in "OSU":
                same = all(x == y for x, y in zip(a.ravel().tolist(), b.ravel().tolist()))
                tab.add(model, name, a.size, 0, 0, same, "" if same else "strings differ")
                continue
            if a.dtype.kind in "iub":
                bad = int(np.count_nonzero(a != b))
                ok = bad == 0 or (name.endswith("resid_argmax") and bad <= ARGMAX_MAX_DIFFER * a.size)
                tab.add(model, name, a.size, float(np.abs(a.astype(np.int64) - b.astype(np.int64)).max(initial=0)),
                        0, ok, "" if bad == 0 else f"{bad} differ")
                continue
            a64, b64 = a.astype(np.float64), b.astype(np.float64)
            nan_a, nan_b = np.isnan(a64), np.isnan(b64)
            inf_mis = np.count_nonzero(np.isinf(a64) != np.isinf(b64))
            nan_mis = int(np.count_nonzero(nan_a != nan_b)) + int(inf_mis)
            fin = np.isfinite(a64) & np.isfinite(b64)
            d = np.abs(a64[fin] - b64[fin])
            ref = np.abs(a64[fin])
            max_abs = float(d.max(initial=0.0))
            with np.errstate(divide="ignore", invalid="ignore"):
                rel = np.where(ref > 0, d / ref, 0.0)
            max_rel = float(rel.max(initial=0.0))
            bad = int(np.count_nonzero(d > F32_ATOL + F32_RTOL * ref)) + nan_mis
            tab.add(model, name, a.size, max_abs, max_rel, bad == 0,
                    "" if bad == 0 else f"{bad} beyond tolerance ({nan_mis} nan/inf mismatches)")


def compare_bf16(tab: Table, model: str, ref_path: str, got_path: str) -> None:
    import h5py
    import numpy as np

    with h5py.File(ref_path, "r") as fr, h5py.File(got_path, "r") as fg:
        if "ablation/knockout/kl" in fr:
            fa, fb = fr["ablation/knockout/top1_changed"][()], fg["ablation/knockout/top1_changed"][()]
            agree = int(np.count_nonzero(fa == fb))
            tab.add(model, "bf16 knockout top1_changed agreement (info)", fa.size, 0, 1 - agree / max(fa.size, 1),
                    True, f"{agree}/{fa.size}")
        last_a, last_b = fr["tokens/attn_last"][()], fg["tokens/attn_last"][()]
        d = np.abs(last_a.astype(np.float64) - last_b)
        tab.add(model, "bf16 tokens/attn_last", d.size, float(d.max(initial=0)), 0,
                bool((d <= BF16_STAT_ATOL).all()), f"abs tol {BF16_STAT_ATOL}")
        # attn_mass per query that sees the key: mass[j] / (number of queries i >= j)
        mass_a, mass_b = fr["tokens/attn_mass"][()], fg["tokens/attn_mass"][()]
        pos = fr["tokens/pos"][()]
        seq = fr["tokens/seq"][()]
        n_tok = fr["seqs/n_tok"][()]
        nq = (n_tok[seq] - pos).astype(np.float64)[:, None, None]
        d = np.abs(mass_a.astype(np.float64) - mass_b) / nq
        tab.add(model, "bf16 tokens/attn_mass / #queries", d.size, float(d.max(initial=0)), 0,
                bool((d <= BF16_STAT_ATOL).all()), f"abs tol {BF16_STAT_ATOL}")


def compare_top1(tab: Table, model: str, ref_path: str, got_path: str) -> None:
    """Top-1 agreement; a position where the reference has the cuda top-1 token within
    TIE_NATS of its own top-1 (a tie at bf16 resolution, no defined top-1) counts as agreeing.
    The raw agreement is printed too."""
    import h5py
    import numpy as np

    with h5py.File(ref_path, "r") as fr, h5py.File(got_path, "r") as fg:
        ids_r, lp_r = fr["seqs/topk_id"][()], fr["seqs/topk_logprob"][()]
        a, b = ids_r[:, 0], fg["seqs/topk_id"][:, 0]
        raw = int(np.count_nonzero(a == b))
        tie = 0
        for r in np.nonzero(a != b)[0]:
            hit = np.nonzero(ids_r[r] == b[r])[0]
            if hit.size and lp_r[r, 0] - lp_r[r, hit[0]] < TIE_NATS:
                tie += 1
        frac = (raw + tie) / max(a.size, 1)
        tab.add(model, "bf16 next-token top-1 agreement", a.size, 0, 1 - frac, frac >= BF16_TOP1_MIN,
                f"{raw + tie}/{a.size} = {100 * frac:.2f}% (need >= {100 * BF16_TOP1_MIN:.0f}%; "
                f"raw {raw}/{a.size}, {tie} ties within {TIE_NATS} nats)")


def top1_pairs(vocab: int, seed: int, path: str) -> None:
    import numpy as np

    rs = np.random.RandomState(seed)
    with open(path, "w") as f:
        for i in range(TOP1_RECORDS):
            n = int(rs.randint(2, 24))
            a = [int(x) for x in rs.randint(3, vocab, size=n)]
            b = a + [int(x) for x in rs.randint(3, vocab, size=int(rs.randint(1, 4)))]
            f.write(json.dumps({"id": f"t{i}", "a_ids": a, "b_ids": b}) + "\n")


def launches(path: str) -> dict[str, int]:
    """Kernel launches and copies by name, from a PUNCTUM_EMU_ROOFLINE table."""
    with open(path) as f:
        rows = [line.rstrip("\n").split("\t") for line in f][1:]
    return {r[0]: int(r[1]) for r in rows}


def check_waits(tab: Table, other: str, env: dict, model: str, pairs: str, work: str) -> None:
    """The comparisons of knockout and patching variants with their clean runs, the /pairs
    divergences, the logit lens' picks and the decode steps' picks are one call per sub-batch,
    lens chunk or step, whatever the number of pairs: on a GPU each is a launch and a host wait. Counted by the emulation on the
    records and on the same records twice over (one batch, one sub-batch per layer either way)."""
    with open(pairs) as f:
        recs = [json.loads(line) for line in f]
    counts = []
    for rep in (1, 2):
        path = os.path.join(work, f"waits{rep}.jsonl")
        with open(path, "w") as f:
            for k in range(rep):
                for r in recs:
                    f.write(json.dumps(dict(r, id=f"{r['id']}.{k}")) + "\n")
        table = os.path.join(work, f"waits{rep}.tsv")
        if os.path.exists(table):
            os.remove(table)
        cmd = [other, "run", "--model", model, "--pairs", path, "--force", "--progress", "never",
               "--out", os.path.join(work, f"waits{rep}.h5"), "--backend", "cuda", "--dtype", "f32",
               "--ablate", "knockout", "--positions", "last:2", "--patch", "resid", "--generate", "3",
               "--stats", "lens"]
        rc, log, _ = run(cmd, dict(env, PUNCTUM_EMU_ROOFLINE=table))
        if rc != 0:
            tab.add("waits", "run", 0, 0, 0, False, log.splitlines()[-1:] if log else "")
            return
        if not os.path.exists(table):
            print("e2e: waits: not an emulation build, launches not counted")
            return
        counts.append(launches(table))
    for k in ("k_divergence", "k_pick", "cudaMemcpy DtoH"):
        n1, n2 = counts[0].get(k, 0), counts[1].get(k, 0)
        tab.add("waits", f"{k}: records x1 / x2", n1, 0, 0, n1 == n2 and n1 > 0, f"{n1} / {n2}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--punctum", required=True, help="binary run with --backend cpu (the reference)")
    ap.add_argument("--other", required=True, help="binary run with --backend cuda (punctum-emu or a GPU build)")
    ap.add_argument("--work", required=True, help="directory for models, inputs and outputs")
    ap.add_argument("--models", default="llama_gqa,mistral_swa,gpt2,qwen2")
    ap.add_argument("--skip-without-cuda", action="store_true",
                    help="exit 77 (skipped) when the cuda backend is not usable")
    ap.add_argument("--no-bf16", action="store_true")
    args = ap.parse_args()

    try:
        import h5py  # noqa: F401
        import numpy  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        print(f"e2e: skipped: {exc} (run scripts/setup.sh for the test virtual environment)")
        return 77
    import make_models

    for b in (args.punctum, args.other):
        if not os.access(b, os.X_OK):
            print(f"e2e: FAIL: binary {b} missing")
            return 1
    os.makedirs(args.work, exist_ok=True)
    models_dir = os.path.join(args.work, "models")
    print("e2e: model seeds: " + ", ".join(f"{k}={v}" for k, v in make_models.SEEDS.items()))
    print(f"e2e: reference {args.punctum} --backend cpu; under test {args.other} --backend cuda")
    tab = Table()
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    t_start = time.time()
    if args.skip_without_cuda:
        # is the cuda backend usable at all? (a one-record sweep of the first model)
        probe_model = make_models.build(args.models.split(",")[0], models_dir)
        probe = os.path.join(args.work, "probe.jsonl")
        with open(probe, "w") as f:
            f.write(json.dumps({"id": "probe", "a_ids": [5, 6, 7]}) + "\n")
        rc, log, _ = run([args.other, "run", "--model", probe_model, "--pairs", probe, "--force", "--progress",
                          "never", "--out", os.path.join(args.work, "probe.h5"), "--backend", "cuda"], env)
        if rc != 0 and "no usable CUDA GPU" in log:
            print(f"e2e: skipped: {log.splitlines()[-1]}")
            return 77
    for name in args.models.split(","):
        path = make_models.build(name, models_dir)
        with open(os.path.join(path, "config.json")) as f:
            vocab = json.load(f)["vocab_size"]
        pairs = os.path.join(args.work, f"{name}.jsonl")
        pairs_for(name, vocab, pairs)
        common = ["run", "--model", path, "--pairs", pairs, "--force", "--progress", "never",
                  "--ablate", "knockout", "--positions", "all", "--patch", "resid", "--stats", STATS]
        outs = {}
        path16 = None if args.no_bf16 else make_models.build(name, models_dir, "bf16")
        for tag, binary, extra in (("cpu", args.punctum, ["--backend", "cpu", "--threads", "1"]),
                                   ("f32", args.other, ["--backend", "cuda", "--dtype", "f32"]),
                                   ("cpu16", args.punctum, ["--backend", "cpu", "--threads", "1"]),
                                   ("bf16", args.other, ["--backend", "cuda", "--dtype", "bf16"])):
            if tag in ("cpu16", "bf16") and args.no_bf16:
                continue
            out = os.path.join(args.work, f"{name}.{tag}.h5")
            cmd = [binary] + common + ["--out", out] + extra
            if tag in ("cpu16", "bf16"):
                cmd[cmd.index(path)] = path16
            rc, log, secs = run(cmd, env)
            print(f"e2e: {name} {tag}: exit {rc} in {secs:.1f} s")
            if rc != 0:
                if tag != "cpu" and args.skip_without_cuda and "no usable CUDA GPU" in log:
                    print(f"e2e: skipped: {log.splitlines()[-1] if log else ''}")
                    return 77
                tab.add(name, f"run {tag}", 0, 0, 0, False, log.splitlines()[-1] if log else "")
                continue
            outs[tag] = out
        if "cpu" in outs and "f32" in outs:
            compare_f32(tab, name, outs["cpu"], outs["f32"])
        if "cpu16" in outs and "bf16" in outs:
            compare_bf16(tab, name, outs["cpu16"], outs["bf16"])
        if path16:
            tp = os.path.join(args.work, f"{name}.top1.jsonl")
            top1_pairs(vocab, make_models.SEEDS[name] + 2, tp)
            c3 = ["run", "--model", path16, "--pairs", tp, "--force", "--progress", "never", "--stats", "topk"]
            o1 = os.path.join(args.work, f"{name}.top1.cpu16.h5")
            o2 = os.path.join(args.work, f"{name}.top1.bf16.h5")
            rc1, log1, _ = run([args.punctum] + c3 + ["--out", o1, "--backend", "cpu", "--threads", "1"], env)
            rc2, log2, s2 = run([args.other] + c3 + ["--out", o2, "--backend", "cuda", "--dtype", "bf16"], env)
            print(f"e2e: {name} top-1 sweep: exit {rc1}/{rc2}, cuda {s2:.1f} s")
            if rc1 or rc2:
                tab.add(name, "top-1 sweep", 0, 0, 0, False, (log1 if rc1 else log2).splitlines()[-1:])
            else:
                compare_top1(tab, name, o1, o2)
        if name == "llama_gqa" or name == "mistral_swa":
            # patterns and per-layer knockout windows
            common2 = ["run", "--model", path, "--pairs", pairs, "--force", "--progress", "never",
                       "--ablate", "knockout", "--positions", "last:3", "--windows", "each",
                       "--stats", "mass,last,patterns,topk"]
            o1 = os.path.join(args.work, f"{name}.pat.cpu.h5")
            o2 = os.path.join(args.work, f"{name}.pat.f32.h5")
            rc1, log1, _ = run([args.punctum] + common2 + ["--out", o1, "--backend", "cpu", "--threads", "1"], env)
            rc2, log2, _ = run([args.other] + common2 + ["--out", o2, "--backend", "cuda", "--dtype", "f32"], env)
            if rc1 or rc2:
                tab.add(name, "patterns run", 0, 0, 0, False, (log1 if rc1 else log2).splitlines()[-1:])
            else:
                compare_f32(tab, name + "+pat", o1, o2)
    if "llama_gqa" in args.models.split(","):
        check_waits(tab, args.other, env, make_models.build("llama_gqa", models_dir),
                    os.path.join(args.work, "llama_gqa.jsonl"), args.work)
    print(f"e2e: {len(tab.rows)} rows, {tab.failed} failed, {time.time() - t_start:.1f} s")
    return 1 if tab.failed else 0


if __name__ == "__main__":
    sys.exit(main())
