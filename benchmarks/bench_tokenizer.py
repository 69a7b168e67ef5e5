#!/usr/bin/env python3
"""Tokenizer encoding throughput: punctum vs Hugging Face `tokenizers`, one thread each, same
texts, SmolLM2's tokenizer.json. Prints a markdown table (machine, date, commit, command).

    benchmarks/bench_tokenizer.py [--rounds R] [--model DIR]

punctum is timed inside the binary (`punctum tokenize --bench R -`: the encode calls only, no
I/O); tokenizers with `encode_batch` (its fastest single-thread path, RAYON_NUM_THREADS=1) and
with a loop of `encode`. Two inputs: the conformance corpus (tests/python/tokenizer_corpus.py,
5,200 mostly short texts) and the same text joined into ~8 KB documents. Best of 3 runs.
Environment: PUNCTUM_BIN (default build/punctum), PUNCTUM_CACHE.
"""

import os

# before tokenizers is imported: its thread pool is sized once
os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "python"))
from tokenizer_corpus import corpus  # noqa: E402


def machine():
    cpu = platform.processor() or "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def commit():
    try:
        c = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                           text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return (c or "none") + ("+dirty" if dirty else "")
    except OSError:
        return "unknown"


def documents(texts, size=8192):
    docs, cur, n = [], [], 0
    for t in texts:
        cur.append(t)
        n += len(t.encode())
        if n >= size:
            docs.append("\n".join(cur))
            cur, n = [], 0
    if cur:
        docs.append("\n".join(cur))
    return docs


def bench_punctum(binary, model, texts, rounds):
    data = "".join(json.dumps(t) + "\n" for t in texts)
    best = None
    for _ in range(3):
        p = subprocess.run([binary, "tokenize", "--model", str(model), "--jsonl", "--bench", str(rounds), "-"],
                           input=data, capture_output=True, text=True, encoding="utf-8")
        if p.returncode != 0:
            raise SystemExit(f"bench_tokenizer: punctum failed: {p.stderr.strip()}")
        r = json.loads(p.stdout)
        best = r["seconds"] if best is None else min(best, r["seconds"])
    return best / rounds, r["tokens"]


def bench_hf(tok, texts, rounds, batch):
    best = None
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(rounds):
            if batch:
                tok.encode_batch(texts)
            else:
                for t in texts:
                    tok.encode(t)
        dt = (time.perf_counter() - t0) / rounds
        best = dt if best is None else min(best, dt)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    cache = Path(os.environ.get("PUNCTUM_CACHE", Path.home() / ".cache" / "punctum"))
    ap.add_argument("--model", default=str(cache / "models" / "smollm2-135m-instruct"))
    args = ap.parse_args()
    binary = os.environ.get("PUNCTUM_BIN", str(REPO / "build" / "punctum"))
    model = Path(args.model)
    if not (model / "tokenizer.json").exists():
        raise SystemExit(f"bench_tokenizer: {model}/tokenizer.json missing (run scripts/fetch-model.sh)")
    if not os.access(binary, os.X_OK):
        raise SystemExit(f"bench_tokenizer: {binary} is not executable (build first or set PUNCTUM_BIN)")

    import tokenizers
    from tokenizers import Tokenizer
    hf = Tokenizer.from_file(str(model / "tokenizer.json"))

    texts = corpus()
    inputs = [("corpus (5,200 texts)", texts), ("~8 KB documents", documents(texts))]

    # sanity: both sides agree on the first texts
    chk = texts[:300]
    p = subprocess.run([binary, "tokenize", "--model", str(model), "--json", "--jsonl", "-"],
                       input="".join(json.dumps(t) + "\n" for t in chk), capture_output=True, text=True)
    ours = [json.loads(x)["ids"] for x in p.stdout.splitlines()]
    if ours != [e.ids for e in hf.encode_batch(chk)]:
        raise SystemExit("bench_tokenizer: punctum and tokenizers disagree; run tests/python/test_tokenizer.py")

    rows = []
    for name, xs in inputs:
        nbytes = sum(len(t.encode()) for t in xs)
        pt_s, ntok = bench_punctum(binary, model, xs, args.rounds)
        hb_s = bench_hf(hf, xs, args.rounds, batch=True)
        hl_s = bench_hf(hf, xs, max(1, args.rounds // 2), batch=False)
        rows.append((name, len(xs), nbytes, ntok, pt_s, hb_s, hl_s))

    print("### Tokenizer encoding throughput (one thread)\n")
    print(f"- machine: {machine()}")
    print(f"- date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}")
    print(f"- git commit: {commit()}")
    print(f"- command: `{' '.join(shlex.quote(a) for a in [sys.argv[0]] + sys.argv[1:])}` "
          f"(punctum: `{binary}`; tokenizers {tokenizers.__version__}, RAYON_NUM_THREADS=1)")
    print(f"- tokenizer: {model / 'tokenizer.json'}; best of 3 runs x {args.rounds} rounds\n")
    print("| input | texts | MB | tokens | punctum texts/s | punctum MB/s | tokenizers encode_batch texts/s "
          "| tokenizers MB/s | tokenizers encode() loop MB/s | punctum / tokenizers (batch) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, n, nbytes, ntok, pt_s, hb_s, hl_s in rows:
        mb = nbytes / 1e6
        print(f"| {name} | {n} | {mb:.2f} | {ntok} | {n / pt_s:,.0f} | {mb / pt_s:.2f} | {n / hb_s:,.0f} | "
              f"{mb / hb_s:.2f} | {mb / hl_s:.2f} | {hb_s / pt_s:.1f}x |")


if __name__ == "__main__":
    main()
