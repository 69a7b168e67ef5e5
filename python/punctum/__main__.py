"""python -m punctum report FILE.h5 --out report.html | python -m punctum info FILE.h5"""
from __future__ import annotations

import argparse
import sys

from ._store import PunctumFormatError


def _info(path):
    from .reader import PunctumFile

    with PunctumFile(path) as f:
        a = f.attrs
        print(f"{path}: {a.get('model_type', '?')} ({a.get('model_dir', '?')}), "
              f"{f.n_layers} layers x {f.n_heads} heads")
        print(f"  committed pairs {f.n_pairs:,} (rows present {f.rows_present:,})"
              + ("  [in progress]" if f.in_progress else "")
              + (f"  [view over {len(f._parts)} files]" if f.is_view else ""))
        for t, n in f.counts().items():
            if n:
                print(f"  {t:9s} {n:,}")
        fails = f.failures
        if len(fails):
            print(f"  skipped records: {len(fails):,}")
            for _, r in fails.head(10).iterrows():
                m = str(r["message"])
                print("    " + (m if m.startswith("line ") else f"line {r['line']}: {m}"))
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m punctum",
                                 description="Read punctum sweep output (HDF5).")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("report", help="write a self-contained HTML report of a sweep")
    r.add_argument("file", help="punctum output file (.h5), or an MPI view")
    r.add_argument("--out", "-o", default=None, help="output HTML (default: FILE.html)")
    r.add_argument("--top", type=int, default=10, help="pairs in the most-different table")
    r.add_argument("--pairs", type=int, default=3, help="pairs drawn as attention heatmaps")
    r.add_argument("--max-tokens", type=int, default=48,
                   help="heatmaps show at most the last N tokens of a prompt")
    r.add_argument("--title", default=None)
    i = sub.add_parser("info", help="print a short summary of a file")
    i.add_argument("file")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "info":
            return _info(args.file)
        from .report import write_report

        out = args.out or (args.file[:-3] if args.file.endswith(".h5") else args.file) + ".html"
        write_report(args.file, out, top=args.top, n_pairs=args.pairs,
                     max_tokens=args.max_tokens, title=args.title)
        print(out)
        return 0
    except (OSError, PunctumFormatError, KeyError) as e:
        print(f"punctum: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
