#!/usr/bin/env python3
"""Check examples/pairs.jsonl (or another pairs file written in the same design).

    python3 examples/validate_pairs.py [FILE] [--tokenizer DIR/tokenizer.json]

Every line must be a JSON object with string "id", "a" and "b" (and "target" for poems),
ids unique, and each family must follow its design (see examples/README.md):
  instr-*, stmt-*  b == a + "."         (a has no final punctuation)
  q-*              b == a + "?"
  poem-*           a has a line break; b == a with its LAST line break replaced by a
                   space; target starts with a space and is one word
With --tokenizer (needs the `tokenizers` package), also prints token counts and lists
the poems whose target is more than one token (the engine scores its first token).
Exit status 0 when the file is valid, 1 otherwise.
"""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
END_PUNCT = tuple(".?!;:,")


def check(path):
    errors, recs, seen = [], [], set()
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for n, line in enumerate(lines, 1):
        where = f"{path}:{n}"
        if not line.strip():
            errors.append(f"{where}: blank line")
            continue
        try:
            r = json.loads(line)
        except ValueError as e:
            errors.append(f"{where}: invalid JSON ({e})")
            continue
        if not isinstance(r, dict):
            errors.append(f"{where}: not a JSON object")
            continue
        rid = r.get("id")
        if not isinstance(rid, str) or not rid:
            errors.append(f"{where}: missing or non-string id")
            continue
        where += f" ({rid})"
        if rid in seen:
            errors.append(f"{where}: duplicate id")
        seen.add(rid)
        family = rid.split("-")[0]
        need = ["a", "b"] + (["target"] if family == "poem" else [])
        bad = [k for k in need if not isinstance(r.get(k), str) or not r.get(k)]
        if bad:
            errors.append(f"{where}: missing or empty {', '.join(bad)}")
            continue
        extra = set(r) - {"id", "a", "b", "target"}
        if extra:
            errors.append(f"{where}: unexpected keys {sorted(extra)}")
        a, b = r["a"], r["b"]
        if a != a.strip() or "  " in a:
            errors.append(f"{where}: stray white space in a")
        if family in ("instr", "stmt"):
            if b != a + ".":
                errors.append(f"{where}: b is not a + '.'")
            if a.endswith(END_PUNCT):
                errors.append(f"{where}: a already ends with punctuation")
        elif family == "q":
            if b != a + "?":
                errors.append(f"{where}: b is not a + '?'")
            if a.endswith(END_PUNCT):
                errors.append(f"{where}: a already ends with punctuation")
        elif family == "poem":
            head, sep, tail = a.rpartition("\n")
            if not sep:
                errors.append(f"{where}: a has no line break")
            elif b != head + " " + tail:
                errors.append(f"{where}: b is not a with its last line break made a space")
            t = r["target"]
            if not t.startswith(" ") or len(t.split()) != 1:
                errors.append(f"{where}: target must be one word with a leading space")
            if a.endswith((" ", "\n")) or a.endswith(END_PUNCT):
                errors.append(f"{where}: a must stop right before the rhyme word")
        else:
            errors.append(f"{where}: unknown family {family!r} (instr, stmt, q, poem)")
        recs.append(r)
    return recs, errors


def token_report(recs, tok_path):
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(tok_path)
    fams = {}
    multi = []
    for r in recs:
        fam = r["id"].split("-")[0]
        na, nb = len(tok.encode(r["a"]).ids), len(tok.encode(r["b"]).ids)
        fams.setdefault(fam, []).append((na, nb))
        if "target" in r:
            p = tok.encode(r["a"], add_special_tokens=False).ids
            full = tok.encode(r["a"] + r["target"], add_special_tokens=False).ids
            t = tok.encode(r["target"], add_special_tokens=False).ids
            if len(t) != 1 or full[:len(p)] != p or len(full) != len(p) + 1:
                multi.append((r["id"], r["target"], [tok.id_to_token(i) for i in t]))
    for fam, v in fams.items():
        na = [x for x, _ in v]
        d = sorted({y - x for x, y in v})
        print(f"  {fam:6s} {len(v):4d} pairs, a: {min(na)}-{max(na)} tokens "
              f"(mean {sum(na) / len(na):.1f}), len(b) - len(a) in {d}")
    if multi:
        print(f"  {len(multi)} targets are not one token in context (scored by first token):")
        for rid, t, pieces in multi:
            print(f"    {rid}: {t!r} -> {pieces}")
    else:
        print("  every target is a single token in context")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("file", nargs="?", default=os.path.join(HERE, "pairs.jsonl"))
    ap.add_argument("--tokenizer", help="tokenizer.json for token statistics")
    args = ap.parse_args()
    recs, errors = check(args.file)
    for e in errors:
        print("error: " + e)
    fams = {}
    for r in recs:
        fams[r["id"].split("-")[0]] = fams.get(r["id"].split("-")[0], 0) + 1
    print(f"{args.file}: {len(recs)} records " +
          ", ".join(f"{k} {v}" for k, v in fams.items()) +
          f"; {len(errors)} error(s)")
    if args.tokenizer and not errors:
        token_report(recs, args.tokenizer)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
