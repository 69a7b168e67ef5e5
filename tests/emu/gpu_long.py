"""GPU-only correctness check at realistic size (issue 17): T = 4096 tokens and Llama 3's
128256-token vocabulary, punctum --backend cuda against --backend cpu.

The tiny models of e2e.py keep every kernel's shape small (a few key tiles, a 96-token
vocabulary); this run has hundreds of key tiles per sequence, query tiles far from the
diagonal, prefix sharing at full length, and the vocabulary kernels (log-softmax, top-k, KL)
over 128256 entries. Too slow for the emulation: scripts/gpu-check.sh runs it on a GPU.

Model: make_models.py's ``llama_vocab128k`` (random, fixed seed). Records: an equal-length
pair differing in its last token, a pair whose b extends a by one token (T in all), and a short
pair. Sweeps with ``--stats mass,last,resid,topk,lens --ablate knockout --positions last:2``:

- f32: every dataset within e2e.py's f32 tolerances of the cpu run (1e-4 relative);
- bf16 (against the cpu run of the same model saved in BF16): attention statistics within
  2e-2 absolute (attn_last; attn_mass per query that sees the key), as e2e.py.

    python gpu_long.py --punctum build-gpu/punctum --work DIR [--T 4096] [--cpu PUNCTUM]

Exit status 0 pass, 1 fail, 77 skipped (no usable GPU, or Python packages missing).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

MODEL = "llama_vocab128k"


def write_pairs(path: str, T: int, vocab: int, seed: int) -> None:
    import numpy as np

    rs = np.random.RandomState(seed)

    def ids(n):
        return [int(x) for x in rs.randint(3, vocab, size=n)]

    a = ids(T)
    b = list(a)
    b[-1] = (b[-1] + 1) % vocab
    recs = [{"id": "equal", "a_ids": a, "b_ids": b, "target_id": int(rs.randint(vocab))}]
    a = ids(T - 1)
    recs.append({"id": "extend", "a_ids": a, "b_ids": a + ids(1), "target_id": int(rs.randint(vocab))})
    a = ids(37)
    recs.append({"id": "short", "a_ids": a, "b_ids": a[:-3]})
    with open(path, "w") as f:
        for r in recs:
            f.write(json.dumps(r) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--punctum", required=True, help="a punctum with the cuda backend")
    ap.add_argument("--cpu", default=None, help="the binary for the cpu reference (default: --punctum)")
    ap.add_argument("--work", required=True)
    ap.add_argument("--T", type=int, default=4096)
    args = ap.parse_args()
    try:
        import h5py  # noqa: F401
        import numpy  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        print(f"gpu_long: skipped: {exc}")
        return 77
    import e2e
    import make_models

    os.makedirs(args.work, exist_ok=True)
    t0 = time.time()
    path = make_models.build(MODEL, os.path.join(args.work, "models"))
    path16 = make_models.build(MODEL, os.path.join(args.work, "models"), "bf16")
    with open(os.path.join(path, "config.json")) as f:
        vocab = json.load(f)["vocab_size"]
    pairs = os.path.join(args.work, "long.jsonl")
    write_pairs(pairs, args.T, vocab, make_models.SEEDS[MODEL] + 1)
    print(f"gpu_long: model {MODEL} (seed {make_models.SEEDS[MODEL]}, vocabulary {vocab}), T = {args.T}, "
          f"built in {time.time() - t0:.1f} s", flush=True)
    cpu_bin = args.cpu or args.punctum
    common = ["run", "--pairs", pairs, "--force", "--progress", "never", "--stats", "mass,last,resid,topk,lens",
              "--ablate", "knockout", "--positions", "last:2"]
    tab = e2e.Table()
    outs = {}
    for tag, binary, model, extra in (("cpu", cpu_bin, path, ["--backend", "cpu"]),
                                      ("f32", args.punctum, path, ["--backend", "cuda", "--dtype", "f32"]),
                                      ("cpu16", cpu_bin, path16, ["--backend", "cpu"]),
                                      ("bf16", args.punctum, path16, ["--backend", "cuda", "--dtype", "bf16"])):
        out = os.path.join(args.work, f"long.{tag}.h5")
        rc, log, secs = e2e.run([binary] + common + ["--model", model, "--out", out] + extra)
        print(f"gpu_long: {tag}: exit {rc} in {secs:.1f} s", flush=True)
        if rc != 0:
            last = log.splitlines()[-1] if log else ""
            if tag in ("f32", "bf16") and "no usable CUDA GPU" in log:
                print(f"gpu_long: skipped: {last}")
                return 77
            tab.add(MODEL, f"run {tag}", 0, 0, 0, False, last)
            continue
        outs[tag] = out
    if "cpu" in outs and "f32" in outs:
        e2e.compare_f32(tab, f"T{args.T}", outs["cpu"], outs["f32"])
    if "cpu16" in outs and "bf16" in outs:
        e2e.compare_bf16(tab, f"T{args.T}", outs["cpu16"], outs["bf16"])
    print(f"gpu_long: {len(tab.rows)} rows, {tab.failed} failed, {time.time() - t0:.1f} s")
    return 1 if tab.failed else 0


if __name__ == "__main__":
    sys.exit(main())
