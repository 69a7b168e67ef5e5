"""Synthetic punctum output files, written with h5py exactly as SPEC §5 lays them out.

The reader and report tests use these until (and alongside) real engine output. The
numbers are not a model's, but they obey the definitions of SPEC §3 where that is cheap:
attention rows are causal softmaxes (so Σ_j attn_mass = T and Σ_j attn_last = 1), the
next-token distributions are real softmaxes and KL / JS / entropy / top-k are computed
from them, and a sequence's tokens carry UTF-8 byte spans into its text.

    write(path, n_pairs=12, knockout=True, patching=True, lens=True, n_failed=2, ...)
    write_sharded(path, n_ranks=3, ...)        # OUT.rankR.h5 + OUT.h5 (virtual-dataset view)
    write_large(path, n_pairs=1_000_000)       # big pairs/seqs tables, no tokens

Run as a script to write an example: python tests/python/synth_h5.py OUT.h5 [N]
"""
from __future__ import annotations

import datetime as _dt
import os
import re
import sys
import zlib

import h5py
import numpy as np

STR = h5py.string_dtype("utf-8")

# --------------------------------------------------------------------------------------
# prompts and a toy tokenizer

_PROMPTS = [
    "Create a sign with a message on it that describes your situation",
    "He saw a carrot and had to grab it,\nHis hunger was like a starving",
    "The quick brown fox jumps over the lazy dog",
    "Write a short note to your neighbour about the noise; be polite",
    "Le café est fermé le dimanche",
    "It was late, and the streets were empty",
    "Roses are red,\nViolets are blue,\nSugar is sweet",
    "Summarise the meeting in two sentences",
    "東京は日本の首都です",
    "Why does the sky look blue at noon",
    "She opened the door: nobody was there",
    "List three fruits, then three vegetables",
    "The report is due on Friday",
    "Once upon a time there lived a king",
]
_TARGETS = [" rabbit", " tomorrow", " again", " home", None, None]

_TOKEN_RE = re.compile(r"\n|[ ]?[^\W\d_]+|[ ]?\d+|[ ]?[^\w\s]|\s+", re.UNICODE)
_PUNCT_END = tuple(". , ; : ! ? … 。 、 ，".split())


def is_punct(piece: str) -> bool:
    """SPEC §3 position set `punct`."""
    if "\n" in piece:
        return True
    s = piece.strip()
    return bool(s) and s.endswith(_PUNCT_END)


def tokenize(text: str, vocab: int, bos: bool = True):
    """-> list of (id, piece, byte_start, byte_end). A deterministic toy, not a real BPE."""
    out = []
    if bos:
        out.append((1, "<s>", 0, 0))
    pos = 0  # byte offset
    for m in _TOKEN_RE.finditer(text):
        piece = m.group(0)
        nb = len(piece.encode("utf-8"))
        tid = 2 + zlib.crc32(piece.encode("utf-8")) % (vocab - 2)
        out.append((tid, piece, pos, pos + nb))
        pos += nb
    return out


def make_records(n: int, seed: int = 0, n_failed: int = 2, every_no_b: int = 7,
                 every_equal: int = 5):
    """Records in input order: dicts with id, line, a, b, target, failed message."""
    rng = np.random.default_rng(seed)
    recs = []
    fail_at = set(np.linspace(1, max(n - 2, 1), n_failed).astype(int).tolist()) if n_failed else set()
    for k in range(n):
        a = _PROMPTS[k % len(_PROMPTS)]
        if k >= len(_PROMPTS):
            a = a + f" {k}"
        rec = {"id": f"pair-{k}", "line": k + 1, "a": a, "b": None, "target": None,
               "error": None}
        if k in fail_at:
            rec["error"] = [f'line {k + 1}: invalid JSON: expected "," or "}}" at column {10 + k}',
                            f'line {k + 1}: missing "a" (and no "a_ids")',
                            f"line {k + 1}: token id 99999 out of vocabulary (vocab_size 64)"][k % 3]
            recs.append(rec)
            continue
        if every_no_b and k % every_no_b == every_no_b - 1:
            rec["b"] = None  # a single prompt with a target
        elif every_equal and k % every_equal == every_equal - 1:
            rec["a"] = a + ","
            rec["b"] = a + "."  # same token count: residual patching applies
        else:
            rec["b"] = a + "."
        rec["target"] = _TARGETS[int(rng.integers(len(_TARGETS)))]
        recs.append(rec)
    return recs


def literature_records(n_natural=6, n_repeat=3, n_massive=4, start_line=1):
    """Records named as examples/literature.jsonl names them: sink-natural-NN (natural
    text), sink-repeat-NN (one token repeated), massive-NN (an early '.' and line break);
    single prompts (no b)."""
    recs = []
    natural = [p for p in _PROMPTS if len(p) > 30]
    words = [" the", " cat", " and", " blue"]
    early = ["Summer is warm. Winter is cold.\nSpring is mild", "Dear Anna,\nThe cat sat. Yes",
             "It rained. The roads were wet", "Hello.\nMy name is Sam, and I live here"]
    for k in range(n_natural):
        recs.append({"id": f"sink-natural-{k + 1:02d}", "a": natural[k % len(natural)]})
    for k in range(n_repeat):
        recs.append({"id": f"sink-repeat-{k + 1:02d}", "a": words[k % len(words)] * (12 + k)})
    for k in range(n_massive):
        recs.append({"id": f"massive-{k + 1:02d}", "a": early[k % len(early)]})
    for i, r in enumerate(recs):
        r.update(line=start_line + i, b=None, target=None, error=None)
    return recs


# --------------------------------------------------------------------------------------
# a toy "model": attention patterns and next-token distributions that obey SPEC §3


def _softmax(x, axis=-1):
    x = x - x.max(axis=axis, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


def _attention(toks, L, H, rng):
    T = len(toks)
    punct = np.array([is_punct(t[1]) for t in toks], dtype=bool)
    s = rng.normal(0.0, 1.0, size=(L, H, T, T))
    if len({t[1] for t in toks[1:]}) > 1:          # no sink on one repeated token (Gu et al.)
        s[..., 0] += 3.0                           # attention sink on the first token
    s[..., punct] += 1.5 * (np.arange(L) / max(L - 1, 1))[:, None, None, None] + 0.5
    i = np.arange(T)
    s += -0.15 * (i[:, None] - i[None, :])         # recency
    s = np.where(i[None, None, :, None] >= i[None, None, None, :], s, -np.inf)
    return _softmax(s, axis=-1)                    # A[l, h, i, j]


def _logprobs(text, vocab, rng_seed):
    r = np.random.default_rng(zlib.crc32(text.encode("utf-8")) ^ rng_seed)
    base = np.random.default_rng(rng_seed).normal(0.0, 2.0, size=vocab)
    logits = base + r.normal(0.0, 1.0, size=vocab)
    logits = logits - logits.max()
    return logits - np.log(np.exp(logits).sum())


def _kl(lp, lq):
    p = np.exp(lp)
    return float(np.sum(p * (lp - lq)))


# massive activations (stat `massive`, SPEC §3): planted the way Sun et al. (2024) found
# them: from layer 1 on (column 0 is the embeddings) the first token carries |h| ~ 1e3 in
# dimension MASSIVE_DIMS[0], from layer 2 on the first delimiter ("." or a line break) in
# MASSIVE_DIMS[1]; both fade in the final residual (column L); other tokens' largest |h|
# is a few times their median (~0.5), except about one token in 20, which gets one
# borderline entry at one layer (|h| = 150 with median 0.1: massive) to exercise the other
# kinds.

D_MODEL = 32
MASSIVE_DIMS = (7, 19)


def first_delim(pieces):
    """Position of the first token (pos > 0) whose text, stripped, ends with '.' or that
    contains a line break; -1 if none."""
    for p, piece in enumerate(pieces):
        if p > 0 and ("\n" in piece or piece.strip().endswith(".")):
            return p
    return -1


def massive_rows(pieces, L, D, rng):
    """-> resid_max [T, L+1], resid_argmax [T, L+1] (int32), resid_median [T, L+1]."""
    T = len(pieces)
    med = 0.3 + 0.4 * rng.random((T, L + 1))
    vmax = med * (2.0 + 3.0 * rng.random((T, L + 1)))
    arg = rng.integers(0, D, (T, L + 1)).astype(np.int32)
    lay = np.arange(L + 1)
    big = (lay >= 1) & (lay < L)
    vmax[0, big] = 800.0 + 400.0 * rng.random(big.sum())
    med[0, big] = 0.2 + 0.1 * rng.random(big.sum())
    arg[0, big] = MASSIVE_DIMS[0]
    d = first_delim(pieces)
    if d > 0:
        big = (lay >= 2) & (lay < L)
        vmax[d, big] = 300.0 + 200.0 * rng.random(big.sum())
        med[d, big] = 0.2 + 0.1 * rng.random(big.sum())
        arg[d, big] = MASSIVE_DIMS[1]
    odd = rng.random(T) < 0.05
    odd[0] = False
    if d > 0:
        odd[d] = False
    for p in np.nonzero(odd)[0]:
        l = int(rng.integers(0, L + 1))
        vmax[p, l], med[p, l], arg[p, l] = 150.0, 0.1, MASSIVE_DIMS[0]
    return vmax, arg, med


# --------------------------------------------------------------------------------------
# table building


class _Tables:
    """Columns of every dataset, built row by row in input order (local to one file)."""

    def __init__(self):
        self.c = {}

    def add(self, name, value):
        self.c.setdefault(name, []).append(value)

    def ensure(self, name):
        self.c.setdefault(name, [])


def _build(recs, *, L, H, vocab, K, stats, knockout, windows, patching, positions, seed):
    T_ = _Tables()
    n_tok_total = 0
    n_pat_total = 0
    rng = np.random.default_rng(seed + 17)
    for k, rec in enumerate(recs):
        T_.add("pairs/id", rec["id"])
        T_.add("pairs/line", rec["line"])
        if rec["error"]:
            T_.add("pairs/status", 1)
            T_.add("pairs/message", rec["error"])
            T_.add("pairs/seq_a", -1)
            T_.add("pairs/seq_b", -1)
            for n in ("kl_ab", "kl_ba", "js"):
                T_.add("pairs/" + n, np.nan)
            if "resid" in stats:
                T_.add("pairs/resid_cos", np.full(L + 1, np.nan))
            continue
        T_.add("pairs/status", 0)
        T_.add("pairs/message", "")
        sides = [rec["a"]] + ([rec["b"]] if rec["b"] is not None else [])
        lps, seq_rows, seq_toks = [], [], []
        for side, text in enumerate(sides):
            s = len(T_.c.get("seqs/pair", []))
            seq_rows.append(s)
            toks = tokenize(text, vocab)
            Tn = len(toks)
            seq_toks.append(toks)
            lp = _logprobs(text, vocab, seed)
            lps.append(lp)
            T_.add("seqs/pair", k)
            T_.add("seqs/side", side)
            T_.add("seqs/text", text)
            T_.add("seqs/tok_start", n_tok_total)
            T_.add("seqs/n_tok", Tn)
            T_.add("seqs/entropy", float(-np.sum(np.exp(lp) * lp)))
            order = np.argsort(-lp, kind="stable")
            if "topk" in stats:
                T_.add("seqs/topk_id", order[:K].astype(np.int32))
                T_.add("seqs/topk_logprob", lp[order[:K]].astype(np.float32))
            if rec["target"] is not None:
                tid = 2 + zlib.crc32(rec["target"].encode()) % (vocab - 2)
                T_.add("seqs/target_id", tid)
                T_.add("seqs/target_logprob", float(lp[tid]))
            else:
                tid = -1
                T_.add("seqs/target_id", -1)
                T_.add("seqs/target_logprob", np.nan)
            A = _attention(toks, L, H, rng) if ({"mass", "last", "patterns"} & set(stats)) else None
            if {"mass", "last", "resid", "massive"} & set(stats):
                for p, (id_, piece, b0, b1) in enumerate(toks):
                    T_.add("tokens/id", id_)
                    T_.add("tokens/seq", s)
                    T_.add("tokens/pos", p)
                    T_.add("tokens/text", piece)
                    T_.add("tokens/byte_start", b0)
                    T_.add("tokens/byte_end", b1)
                    T_.add("tokens/is_punct", int(is_punct(piece)))
                if "mass" in stats:
                    for row in A.sum(axis=2).transpose(2, 0, 1):  # [T, L, H]
                        T_.add("tokens/attn_mass", row)
                if "last" in stats:
                    for row in A[:, :, Tn - 1, :].transpose(2, 0, 1):
                        T_.add("tokens/attn_last", row)
                if "resid" in stats:
                    norms = np.sqrt(np.arange(1, L + 2))[None, :] * (3 + rng.random((Tn, 1)))
                    for row in norms:
                        T_.add("tokens/resid_norm", row)
                if "massive" in stats:
                    vmax, arg, med = massive_rows([t[1] for t in toks], L, D_MODEL, rng)
                    for a, b, c in zip(vmax, arg, med):
                        T_.add("tokens/resid_max", a)
                        T_.add("tokens/resid_argmax", b)
                        T_.add("tokens/resid_median", c)
                n_tok_total += Tn
            if "patterns" in stats:
                T_.add("seqs/pattern_start", n_pat_total)
                ii, jj = np.tril_indices(Tn)
                for i, j in zip(ii, jj):
                    T_.add("patterns/value", A[:, :, i, j])
                n_pat_total += len(ii)
            punct_pos = [p for p, t in enumerate(toks[:-1]) if is_punct(t[1])]
            if positions == "all":
                pos_set = list(range(Tn - 1))
            elif positions.startswith("last:"):
                kk = int(positions[5:])
                pos_set = list(range(max(Tn - 1 - kk, 0), Tn - 1))
            else:
                pos_set = punct_pos
            top1 = int(np.argmax(lp))
            if knockout:
                for j in pos_set:
                    for w, (lo, hi) in enumerate(windows):
                        base = 0.5 if is_punct(toks[j][1]) else 0.05
                        kl = float(rng.exponential(base * (hi - lo) / L) / (1 + 0.1 * (Tn - 1 - j)))
                        T_.add("ablation/knockout/seq", s)
                        T_.add("ablation/knockout/pos", j)
                        T_.add("ablation/knockout/window", w)
                        T_.add("ablation/knockout/kl", kl)
                        T_.add("ablation/knockout/dlogp_top1", -kl * (0.5 + rng.random()))
                        T_.add("ablation/knockout/dlogp_target",
                               np.nan if tid < 0 else float(rng.normal(-kl, 0.1)))
                        T_.add("ablation/knockout/top1_changed", int(kl > 0.6))
            if "lens" in stats:
                for j in pos_set + [Tn - 1]:
                    T_.add("lens/seq", s)
                    T_.add("lens/pos", j)
                    frac = np.arange(L + 1) / L
                    sharp = 1.0 if j == Tn - 1 else (0.6 if is_punct(toks[j][1]) else 0.3)
                    end = float(lp[top1])
                    curve = np.log(1.0 / vocab) * (1 - frac ** (1 / sharp)) + end * frac
                    T_.add("lens/logp_top1", curve + rng.normal(0, 0.05, L + 1))
                    if tid >= 0:
                        T_.add("lens/logp_target", curve - 1.0 + rng.normal(0, 0.1, L + 1))
                    else:
                        T_.add("lens/logp_target", np.full(L + 1, np.nan))
        T_.add("pairs/seq_a", seq_rows[0])
        T_.add("pairs/seq_b", seq_rows[1] if len(seq_rows) > 1 else -1)
        if len(lps) == 2:
            la, lb = lps
            m = np.log(0.5 * (np.exp(la) + np.exp(lb)))
            T_.add("pairs/kl_ab", _kl(la, lb))
            T_.add("pairs/kl_ba", _kl(lb, la))
            T_.add("pairs/js", 0.5 * _kl(la, m) + 0.5 * _kl(lb, m))
        else:
            for n in ("kl_ab", "kl_ba", "js"):
                T_.add("pairs/" + n, np.nan)
        if "resid" in stats:
            if len(lps) == 2:
                T_.add("pairs/resid_cos", 1.0 - np.linspace(0, 0.3, L + 1) * rng.random())
            else:
                T_.add("pairs/resid_cos", np.full(L + 1, np.nan))
        if patching and len(seq_toks) == 2 and len(seq_toks[0]) == len(seq_toks[1]):
            Tn = len(seq_toks[0])
            pset = list(range(Tn)) if positions == "all" else \
                [p for p, t in enumerate(seq_toks[0]) if is_punct(t[1])] + [Tn - 1]
            for layer in range(L):
                for p in sorted(set(pset)):
                    T_.add("patching/resid/pair", k)
                    T_.add("patching/resid/layer", layer)
                    T_.add("patching/resid/pos", p)
                    kab = _kl(lps[0], lps[1])
                    frac = (layer + 1) / (L + 1) if p == Tn - 1 else 0.2
                    T_.add("patching/resid/kl_to_b", kab * frac)
                    T_.add("patching/resid/kl_from_a", kab * (1 - frac))
                    T_.add("patching/resid/dlogp_top1_b", float(rng.normal(0.2, 0.1)))
    return T_.c


# dataset name -> (dtype, trailing shape given L, H, K, W)
def _schema(L, H, K, fdt):
    return {
        "pairs/id": (STR, ()), "pairs/line": (np.int64, ()),
        "pairs/status": (np.int8, ()), "pairs/message": (STR, ()),
        "pairs/seq_a": (np.int64, ()), "pairs/seq_b": (np.int64, ()),
        "pairs/kl_ab": (fdt, ()), "pairs/kl_ba": (fdt, ()), "pairs/js": (fdt, ()),
        "pairs/resid_cos": (fdt, (L + 1,)),
        "seqs/pair": (np.int64, ()), "seqs/side": (np.int8, ()), "seqs/text": (STR, ()),
        "seqs/tok_start": (np.int64, ()), "seqs/n_tok": (np.int32, ()),
        "seqs/entropy": (fdt, ()),
        "seqs/topk_id": (np.int32, (K,)), "seqs/topk_logprob": (fdt, (K,)),
        "seqs/target_id": (np.int32, ()), "seqs/target_logprob": (fdt, ()),
        "seqs/pattern_start": (np.int64, ()), "patterns/value": (fdt, (L, H)),
        "tokens/id": (np.int32, ()), "tokens/seq": (np.int64, ()), "tokens/pos": (np.int32, ()),
        "tokens/text": (STR, ()), "tokens/byte_start": (np.int32, ()),
        "tokens/byte_end": (np.int32, ()), "tokens/is_punct": (np.int8, ()),
        "tokens/attn_mass": (fdt, (L, H)), "tokens/attn_last": (fdt, (L, H)),
        "tokens/resid_norm": (fdt, (L + 1,)),
        "tokens/resid_max": (fdt, (L + 1,)), "tokens/resid_median": (fdt, (L + 1,)),
        "tokens/resid_argmax": (np.int32, (L + 1,)),
        "ablation/knockout/seq": (np.int64, ()), "ablation/knockout/pos": (np.int32, ()),
        "ablation/knockout/window": (np.int32, ()),
        "ablation/knockout/kl": (fdt, ()), "ablation/knockout/dlogp_top1": (fdt, ()),
        "ablation/knockout/dlogp_target": (fdt, ()),
        "ablation/knockout/top1_changed": (np.int8, ()),
        "patching/resid/pair": (np.int64, ()), "patching/resid/layer": (np.int32, ()),
        "patching/resid/pos": (np.int32, ()),
        "patching/resid/kl_to_b": (fdt, ()), "patching/resid/kl_from_a": (fdt, ()),
        "patching/resid/dlogp_top1_b": (fdt, ()),
        "lens/seq": (np.int64, ()), "lens/pos": (np.int32, ()),
        "lens/logp_top1": (fdt, (L + 1,)), "lens/logp_target": (fdt, (L + 1,)),
    }


def _create(h5, name, dtype, trail, chunk_rows, data=None):
    n = 0 if data is None else len(data)
    shape = (n,) + tuple(trail)
    chunks = (max(1, chunk_rows),) + tuple(trail)
    ds = h5.create_dataset(name, shape=shape, maxshape=(None,) + tuple(trail), dtype=dtype,
                           chunks=chunks, compression="gzip", compression_opts=4, shuffle=True)
    if n:
        ds[...] = data
    return ds


def _root_attrs(L, H, vocab, committed, model_type="llama", extra=None):
    a = {
        "punctum_format": np.int64(1), "punctum_version": "0.1.0-synthetic",
        "model_dir": "/models/synthetic-tiny", "model_type": model_type,
        "n_layers": np.int64(L), "n_heads": np.int64(H), "n_kv_heads": np.int64(max(H // 2, 1)),
        "d_model": np.int64(D_MODEL), "vocab_size": np.int64(vocab), "backend": "cpu",
        "device": "cpu (synthetic, tests/python/synth_h5.py)", "compute_dtype": "f32",
        "command_line": "punctum run --model /models/synthetic-tiny --pairs pairs.jsonl "
                        "--out out.h5 --stats mass,last,resid,topk,lens --ablate knockout",
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "committed_pairs": np.int64(committed),
    }
    a.update(extra or {})
    return a


def write(path, n_pairs: int = 12, *, n_layers: int = 3, n_heads: int = 4, vocab: int = 64,
          topk: int = 5, stats=("mass", "last", "resid", "topk", "lens"), knockout: bool = True,
          windows=None, patching: bool = True, positions: str = "punct", n_failed: int = 2,
          committed: int | None = None, store: str = "f32", seed: int = 0,
          chunk_rows: int = 64, records=None, attrs=None):
    """Write one punctum file. `committed` < rows present makes an in-progress file: the
    rows past it are present (a batch written but not yet committed) and must be ignored.
    Returns the records written (input order)."""
    recs = records if records is not None else make_records(n_pairs, seed=seed, n_failed=n_failed)
    L, H, K = n_layers, n_heads, topk
    stats = tuple(stats)
    if windows is None:
        windows = [(0, L)] if L < 2 else [(0, L), (0, L // 2), (L // 2, L)]
    cols = _build(recs, L=L, H=H, vocab=vocab, K=K, stats=stats, knockout=knockout,
                  windows=windows, patching=patching, positions=positions, seed=seed)
    fdt = np.float16 if store == "f16" else np.float32
    schema = _schema(L, H, K, fdt)
    want = {"pairs", "seqs"}
    if {"mass", "last", "resid", "massive"} & set(stats):
        want.add("tokens")
    if knockout:
        want.add("ablation")
    if patching:
        want.add("patching")
    if "lens" in stats:
        want.add("lens")
    if "patterns" in stats:
        want.add("patterns")
    skip = set()
    if "resid" not in stats:
        skip |= {"pairs/resid_cos", "tokens/resid_norm"}
    if "mass" not in stats:
        skip.add("tokens/attn_mass")
    if "last" not in stats:
        skip.add("tokens/attn_last")
    if "topk" not in stats:
        skip |= {"seqs/topk_id", "seqs/topk_logprob"}
    if "patterns" not in stats:
        skip.add("seqs/pattern_start")
    if "massive" not in stats:
        skip |= {"tokens/resid_max", "tokens/resid_median", "tokens/resid_argmax"}
    with h5py.File(path, "w") as h5:
        for name, (dt, trail) in schema.items():
            if name.split("/")[0] not in want or name in skip:
                continue
            data = cols.get(name)
            arr = None
            if data:
                arr = np.array(data, dtype=object) if dt is STR else np.asarray(data, dtype=dt)
            _create(h5, name, dt, trail, chunk_rows, arr)
        if knockout:
            _create(h5, "ablation/windows", np.int32, (2,), 16,
                    np.asarray(windows, dtype=np.int32).reshape(-1, 2))
        n = len(recs)
        c = n if committed is None else committed
        for k, v in _root_attrs(L, H, vocab, c, extra=attrs).items():
            h5.attrs[k] = v
    return recs


def write_sharded(path, n_pairs: int = 14, n_ranks: int = 3, *, committed_per_rank=None,
                  relative: bool = True, interleave: bool = False, **kw):
    """An MPI run: rank r takes the records whose 0-based index % n_ranks == r and writes
    OUT.rankR.h5 (a complete punctum file of its own, indices local to it); OUT.h5 is the
    view: every dataset a virtual dataset concatenating the ranks' rows in rank order
    (interleave=True: the /pairs datasets map rank r to rows r, r+N, ... instead, which
    restores input order). /ablation/windows (the same in every rank) is copied.
    Returns (records, [rank paths])."""
    recs = make_records(n_pairs, seed=kw.get("seed", 0), n_failed=kw.pop("n_failed", 2))
    base = path[:-3] if path.endswith(".h5") else path
    rank_paths = []
    for r in range(n_ranks):
        rp = f"{base}.rank{r}.h5"
        c = None if committed_per_rank is None else committed_per_rank[r]
        write(rp, records=recs[r::n_ranks], committed=c,
              attrs={"command_line": f"mpirun -n {n_ranks} punctum run ... (rank {r})"}, **kw)
        rank_paths.append(rp)
    # the view
    srcs = [h5py.File(p, "r") for p in rank_paths]
    try:
        names = []
        srcs[0].visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        with h5py.File(path, "w") as out:
            for name in names:
                d0 = srcs[0][name]
                if name == "ablation/windows":
                    out.create_dataset(name, data=d0[...])
                    continue
                total = sum(s[name].shape[0] for s in srcs)
                layout = h5py.VirtualLayout(shape=(total,) + d0.shape[1:], dtype=d0.dtype)
                off = 0
                for r, (p, s) in enumerate(zip(rank_paths, srcs)):
                    n = s[name].shape[0]
                    fname = os.path.basename(p) if relative else os.path.abspath(p)
                    src = h5py.VirtualSource(fname, name, shape=s[name].shape)
                    if interleave and name.startswith("pairs/"):
                        layout[r:r + n_ranks * (n - 1) + 1:n_ranks] = src
                    else:
                        layout[off:off + n] = src
                    off += n
                fill = "" if h5py.check_string_dtype(d0.dtype) else 0
                out.create_virtual_dataset(name, layout, fillvalue=fill if fill == 0 else None)
            total_c = sum(int(s.attrs["committed_pairs"]) for s in srcs)
            for k, v in srcs[0].attrs.items():
                out.attrs[k] = v
            out.attrs["committed_pairs"] = np.int64(total_c)
            out.attrs["command_line"] = f"mpirun -n {n_ranks} punctum run ..."
    finally:
        for s in srcs:
            s.close()
    return recs, rank_paths


def write_progressively(path, n_pairs: int = 60, batch: int = 6, delay: float = 0.05,
                        **kw):
    """Write a file the way a sweep does, while readers may be looking: datasets created
    empty, then per batch every table's rows appended, the file flushed, and only then
    `committed_pairs` advanced (and flushed). Meant to run in a separate process."""
    import time

    tmp = path + ".full.h5"
    recs = write(tmp, n_pairs, **kw)
    with h5py.File(tmp, "r") as src:
        names = []
        src.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        data = {n: (src[n].asstr()[...] if h5py.check_string_dtype(src[n].dtype) else src[n][...])
                for n in names}
        dtypes = {n: src[n].dtype for n in names}
        attrs = dict(src.attrs)
    os.remove(tmp)
    seq_a, seq_b = data["pairs/seq_a"], data["pairs/seq_b"]
    tok_end = data["seqs/tok_start"] + data["seqs/n_tok"] if "seqs/tok_start" in data else None
    with h5py.File(path, "w") as h5:
        for n in names:
            trail = data[n].shape[1:]
            _create(h5, n, dtypes[n], trail, 8,
                    data[n] if n == "ablation/windows" else None)
        for k, v in attrs.items():
            h5.attrs[k] = v
        h5.attrs["committed_pairs"] = np.int64(0)
        h5.flush()
        for p1 in range(batch, n_pairs + batch, batch):
            p1 = min(p1, n_pairs)
            s1 = int(max(seq_a[:p1].max(), seq_b[:p1].max())) + 1
            t1 = int(tok_end[s1 - 1]) if tok_end is not None and s1 > 0 else 0
            ends = {"pairs": p1, "seqs": s1, "tokens": t1}
            for n in names:
                if n == "ablation/windows":
                    continue
                g = n.split("/")[0]
                if g in ends:
                    hi = ends[g]
                else:  # ablation / lens / patching: rows of committed seqs (pairs)
                    key = {"ablation": "ablation/knockout/seq", "lens": "lens/seq",
                           "patching": "patching/resid/pair"}[g]
                    lim = p1 if g == "patching" else s1
                    hi = int(np.searchsorted(data[key], lim, side="left"))
                d = h5[n]
                lo = d.shape[0]
                if hi > lo:
                    d.resize(hi, axis=0)
                    d[lo:hi] = data[n][lo:hi]
            h5.flush()
            h5.attrs["committed_pairs"] = np.int64(p1)
            h5.flush()
            time.sleep(delay)
    return recs


def write_large(path, n_pairs: int = 1_000_000, *, n_layers: int = 4, topk: int = 5,
                block: int = 131072, seed: int = 0, committed: int | None = None):
    """A big file: pairs + seqs only (as `--stats topk` without token statistics would
    give), about 1 % skipped records, appended block by block as the engine would."""
    L, K = n_layers, topk
    rng = np.random.default_rng(seed)
    fdt = np.float32
    schema = _schema(L, 2, K, fdt)
    pair_names = ["pairs/id", "pairs/line", "pairs/status", "pairs/message", "pairs/seq_a",
                  "pairs/seq_b", "pairs/kl_ab", "pairs/kl_ba", "pairs/js", "pairs/resid_cos"]
    seq_names = ["seqs/pair", "seqs/side", "seqs/text", "seqs/tok_start", "seqs/n_tok",
                 "seqs/entropy", "seqs/topk_id", "seqs/topk_logprob", "seqs/target_id",
                 "seqs/target_logprob"]
    with h5py.File(path, "w") as h5:
        ds = {n: _create(h5, n, schema[n][0], schema[n][1], 16384) for n in pair_names + seq_names}
        s_off = 0
        for b0 in range(0, n_pairs, block):
            b1 = min(b0 + block, n_pairs)
            k = np.arange(b0, b1)
            failed = (k % 97) == 13
            ok = ~failed
            nseq = np.where(ok, 2, 0)
            seq_a = np.where(ok, s_off + np.cumsum(nseq) - nseq, -1)
            seq_b = np.where(ok, seq_a + 1, -1)
            pc = {
                "pairs/id": np.array([f"rec-{i}" for i in k], dtype=object),
                "pairs/line": k + 1, "pairs/status": failed.astype(np.int8),
                "pairs/message": np.array([f"line {i + 1}: invalid JSON" if f else ""
                                           for i, f in zip(k, failed)], dtype=object),
                "pairs/seq_a": seq_a, "pairs/seq_b": seq_b,
                "pairs/kl_ab": np.where(ok, rng.exponential(0.05, len(k)), np.nan),
                "pairs/kl_ba": np.where(ok, rng.exponential(0.05, len(k)), np.nan),
                "pairs/js": np.where(ok, rng.exponential(0.01, len(k)), np.nan),
                "pairs/resid_cos": np.where(ok[:, None], rng.random((len(k), L + 1)), np.nan),
            }
            okk = k[ok]
            S = 2 * len(okk)
            pair_col = np.repeat(okk, 2)
            side = np.tile(np.array([0, 1], np.int8), len(okk))
            texts = np.empty(S, dtype=object)
            texts[0::2] = [f"prompt number {i}" for i in okk]
            texts[1::2] = [f"prompt number {i}." for i in okk]
            n_tok = np.where(side == 0, 4, 5).astype(np.int32)
            sc = {
                "seqs/pair": pair_col, "seqs/side": side, "seqs/text": texts,
                "seqs/tok_start": np.full(S, -1, np.int64), "seqs/n_tok": n_tok,
                "seqs/entropy": rng.random(S) * 5,
                "seqs/topk_id": rng.integers(0, 1000, (S, K)).astype(np.int32),
                "seqs/topk_logprob": -np.sort(rng.random((S, K)) * 5, axis=1),
                "seqs/target_id": np.full(S, -1, np.int32),
                "seqs/target_logprob": np.full(S, np.nan),
            }
            for name, arr in list(pc.items()) + list(sc.items()):
                d = ds[name]
                n0 = d.shape[0]
                d.resize(n0 + len(arr), axis=0)
                d[n0:] = arr
            s_off += S
        for kk, v in _root_attrs(L, 2, 1000, n_pairs if committed is None else committed).items():
            h5.attrs[kk] = v
        h5.attrs["command_line"] = "punctum run --stats topk ... (synthetic large file)"


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else "synthetic.h5"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 12
    write(out, n)
    print(out)
