"""Independent float64 reference for punctum's statistics, computed from Hugging Face
transformers' own outputs (model in float32, eager attention, output_attentions=True,
output_hidden_states=True), and the checker that compares a punctum HDF5 file with it.

Definitions (SPEC §3), per sequence of T tokens, A[l,h,i,j] = HF's attention weights:
  attn_mass[j,l,h]  = sum_{i>=j} A[l,h,i,j]
  attn_last[j,l,h]  = A[l,h,T-1,j]
  resid_norm[j,l]   = ||residual entering layer l at j||; l = L: the final residual
                      BEFORE the final norm (captured with a forward pre-hook on the norm;
                      HF's last hidden_states entry is after the norm)
  P                 = softmax(float32 logits at T-1); the reference takes the float32 logits
                      to float64 and does log_softmax / every sum in float64
  entropy           = -sum P log P
  topk              = K largest log P, descending
  kl_ab = KL(Pa||Pb), kl_ba = KL(Pb||Pa), js = 1/2 KL(Pa||M) + 1/2 KL(Pb||M), M = (Pa+Pb)/2
  resid_cos[l]      = cos(residual entering layer l at a's final position,
                          the same at b's final position) (l = L: pre-norm final)
  patterns          = A, rows (i, j<=i) of the lower triangle, row-major, per sequence

Records are parsed and validated here too (JSON, a_ids / b_ids lists of integers inside the
vocabulary, non-empty, at most max_positions long; target_id an integer inside the
vocabulary), so the expected /pairs/status is the reference's own reading of SPEC §7.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any

import numpy as np
import torch

from tiny_models import _byte_to_unicode, load_hf

# ---------------------------------------------------------------------------------------
# tolerances (engine float32 vs reference float64-of-HF-float32), |got-ref| <= atol + rtol|ref|
# ---------------------------------------------------------------------------------------
RTOL = 1e-4
ATOL_PROB = 1e-6      # attention probabilities (attn_last, patterns)
ATOL_MASS = 1e-5      # attn_mass: sums of up to T probabilities
ATOL_LOGP = 1e-5      # log-probabilities, entropy (nats)
ATOL_DIV = 1e-6       # kl_ab, kl_ba, js (nats)
ATOL_NORM = 1e-5      # resid_norm
ATOL_COS = 1e-5       # resid_cos
TOPK_TIE = 1e-6       # top-k ids may swap only where reference log-probs tie within this

FLOAT_TOL = {
    "/pairs/kl_ab": (RTOL, ATOL_DIV), "/pairs/kl_ba": (RTOL, ATOL_DIV),
    "/pairs/js": (RTOL, ATOL_DIV), "/pairs/resid_cos": (RTOL, ATOL_COS),
    "/seqs/entropy": (RTOL, ATOL_LOGP), "/seqs/topk_logprob": (RTOL, ATOL_LOGP),
    "/seqs/target_logprob": (RTOL, ATOL_LOGP),
    "/tokens/attn_mass": (RTOL, ATOL_MASS), "/tokens/attn_last": (RTOL, ATOL_PROB),
    "/tokens/resid_norm": (RTOL, ATOL_NORM), "/patterns/value": (RTOL, ATOL_PROB),
}

# ---------------------------------------------------------------------------------------
# records
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class Record:
    line: int                 # 1-based physical line
    id: str
    ok: bool
    reason: str = ""          # why a bad record is bad (reference's words, for messages)
    a_ids: list[int] | None = None
    b_ids: list[int] | None = None
    target_id: int | None = None


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_ids(v, key, vocab, max_pos) -> str:
    if not isinstance(v, list):
        return f"{key} is not a list"
    if not all(_is_int(x) for x in v):
        return f"{key} holds a non-integer"
    if len(v) == 0:
        return f"{key} is empty"
    if any(x < 0 or x >= vocab for x in v):
        return f"{key} has an id outside the vocabulary"
    if len(v) > max_pos:
        return f"{key} is longer than the model's context"
    return ""


def parse_pairs(text: str, vocab: int, max_pos: int) -> list[Record]:
    """Parse a pairs JSONL text the way SPEC §2/§7 describe, id-only records."""
    recs = []
    for n, raw in enumerate(text.split("\n"), start=1):
        if raw.strip() == "":
            continue
        try:
            obj = json.loads(raw)
        except ValueError:
            recs.append(Record(n, str(n), False, "invalid JSON"))
            continue
        if not isinstance(obj, dict):
            recs.append(Record(n, str(n), False, "not an object"))
            continue
        rid = obj.get("id", str(n))
        rid = rid if isinstance(rid, str) else str(rid)
        if "a_ids" not in obj:
            recs.append(Record(n, rid, False, "missing a_ids"))
            continue
        why = _check_ids(obj["a_ids"], "a_ids", vocab, max_pos)
        b = obj.get("b_ids")
        if not why and b is not None:
            why = _check_ids(b, "b_ids", vocab, max_pos)
        t = obj.get("target_id")
        if not why and t is not None and (not _is_int(t) or t < 0 or t >= vocab):
            why = "target_id outside the vocabulary"
        if why:
            recs.append(Record(n, rid, False, why))
            continue
        recs.append(Record(n, rid, True, "", list(obj["a_ids"]), None if b is None else list(b), t))
    return recs


def write_pairs(path: str, lines: list) -> str:
    """Write a JSONL file: dict items are json-dumped, str items written verbatim
    (for malformed lines and blank lines). Returns the text written."""
    out = []
    for item in lines:
        out.append(item if isinstance(item, str) else json.dumps(item))
    text = "\n".join(out) + "\n"
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return text


# ---------------------------------------------------------------------------------------
# HF forward with captures
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class SeqOut:
    ids: tuple
    logp: np.ndarray       # [V] float64 log_softmax of the float32 logits at T-1
    attn: np.ndarray       # [L, H, T, T] float64
    resid: np.ndarray      # [T, L+1, D] float64 (pre-norm final at L)
    hidden_states: list    # HF's output_hidden_states (float32 tensors), for sanity checks
    logits32: np.ndarray   # [T, V] float32 logits


def layers_and_final_norm(model):
    if model.config.model_type == "gpt2":
        return model.transformer.h, model.transformer.ln_f
    return model.model.layers, model.model.norm


class Reference:
    """One model directory; forward results cached by token-id tuple."""

    def __init__(self, model_dir: str):
        self.model_dir = model_dir
        self.model = load_hf(model_dir)
        cfg = self.model.config
        self.model_type = cfg.model_type
        self.vocab_size = cfg.vocab_size
        self.n_layers = cfg.num_hidden_layers
        self.n_heads = cfg.num_attention_heads
        self.max_positions = getattr(cfg, "n_positions", None) or cfg.max_position_embeddings
        self._cache: dict[tuple, SeqOut] = {}
        self.tokenizer = None
        tj = os.path.join(model_dir, "tokenizer.json")
        if os.path.exists(tj):
            from tokenizers import Tokenizer
            self.tokenizer = Tokenizer.from_file(tj)

    @torch.no_grad()
    def forward(self, ids) -> SeqOut:
        key = tuple(int(x) for x in ids)
        if key in self._cache:
            return self._cache[key]
        layers, norm = layers_and_final_norm(self.model)
        L = len(layers)
        cap: list[Any] = [None] * (L + 1)

        def pre(idx):
            def hook(_mod, args, kwargs):
                x = args[0] if args else kwargs["hidden_states"]
                cap[idx] = x.detach().clone()
            return hook

        hs = [layers[l].register_forward_pre_hook(pre(l), with_kwargs=True) for l in range(L)]
        hs.append(norm.register_forward_pre_hook(pre(L), with_kwargs=True))
        try:
            x = torch.tensor([key], dtype=torch.long)
            out = self.model(input_ids=x, output_attentions=True, output_hidden_states=True,
                             use_cache=False)
        finally:
            for h in hs:
                h.remove()
        assert out.attentions is not None and len(out.attentions) == L
        logits32 = out.logits[0].float()
        logp = torch.log_softmax(logits32[-1].double(), dim=-1).numpy()
        attn = torch.stack([a[0] for a in out.attentions]).double().numpy()
        resid = torch.stack([c[0] for c in cap], dim=1).double().numpy()
        so = SeqOut(key, logp, attn, resid, list(out.hidden_states), logits32.numpy())
        self._cache[key] = so
        return so

    # ------------------------------------------------------------------ token text
    def piece(self, tid: int) -> tuple[str, bool]:
        """(decoded piece, unambiguous). Without tokenizer.json: ("", True). A byte-level
        token whose bytes are not valid UTF-8 on their own is ambiguous (the engine may
        write U+FFFD or another replacement)."""
        if self.tokenizer is None:
            return "", True
        tok = self.tokenizer.id_to_token(tid)
        u2b = {v: k for k, v in _byte_to_unicode().items()}
        if tok is not None and all(ch in u2b for ch in tok):
            raw = bytes(u2b[ch] for ch in tok)
            try:
                text = raw.decode("utf-8")
                # a NUL cannot live in an HDF5 variable-length string
                return text, "\x00" not in text
            except UnicodeDecodeError:
                return self.tokenizer.decode([tid]), False
        return self.tokenizer.decode([tid]), True


# SPEC §3 punctuation rule
PUNCT_END = (".", ",", ";", ":", "!", "?", "\u2026", "\u3002", "\u3001", "\uff0c", "\uff0e")
# characters whose status as "white space" / "line break" differs between reasonable
# readings of the rule (Python's str.strip/splitlines vs ASCII-only): skipped in checks
AMBIGUOUS_CHARS = set("\r\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0\u2028\u2029")


def is_punct(text: str) -> bool:
    if "\n" in text or "\r" in text:
        return True
    s = text.strip()
    return bool(s) and s.endswith(PUNCT_END)


def punct_ambiguous(text: str) -> bool:
    return any(c in AMBIGUOUS_CHARS for c in text)


# ---------------------------------------------------------------------------------------
# the expected file
# ---------------------------------------------------------------------------------------


def _kl(p_log: np.ndarray, q_log: np.ndarray) -> float:
    p = np.exp(p_log)
    return float(np.sum(p * (p_log - q_log)))


def _js(p_log: np.ndarray, q_log: np.ndarray) -> float:
    p, q = np.exp(p_log), np.exp(q_log)
    m = 0.5 * (p + q)
    with np.errstate(divide="ignore", invalid="ignore"):
        lm = np.log(m)
        a = np.where(p > 0, p * (p_log - lm), 0.0)
        b = np.where(q > 0, q * (q_log - lm), 0.0)
    return float(0.5 * a.sum() + 0.5 * b.sum())


def _cos(u: np.ndarray, v: np.ndarray) -> float:
    return float(np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v)))


def topk_of(logp: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-logp, kind="stable")[:k]
    return order.astype(np.int64), logp[order]


@dataclasses.dataclass
class Expected:
    records: list[Record]
    data: dict[str, np.ndarray]         # dataset path -> expected values
    K: int
    n_layers: int
    n_heads: int
    logp: list[np.ndarray]              # per /seqs row: full reference log-probs (tie checks)
    piece_ok: np.ndarray                # per /tokens row: decoded piece unambiguous


def expected(ref: Reference, records: list[Record], topk: int = 10,
             patterns: bool = False) -> Expected:
    L, H = ref.n_layers, ref.n_heads
    N = len(records)
    d: dict[str, list] = {k: [] for k in (
        "/pairs/id", "/pairs/line", "/pairs/status", "/pairs/seq_a", "/pairs/seq_b",
        "/pairs/kl_ab", "/pairs/kl_ba", "/pairs/js", "/pairs/resid_cos",
        "/seqs/pair", "/seqs/side", "/seqs/text", "/seqs/tok_start", "/seqs/n_tok",
        "/seqs/entropy", "/seqs/topk_id", "/seqs/topk_logprob", "/seqs/target_id",
        "/seqs/target_logprob", "/seqs/pattern_start",
        "/tokens/id", "/tokens/seq", "/tokens/pos", "/tokens/text", "/tokens/byte_start",
        "/tokens/byte_end", "/tokens/is_punct", "/tokens/attn_mass", "/tokens/attn_last",
        "/tokens/resid_norm", "/patterns/value")}
    logps = []
    piece_ok = []
    n_seq = 0
    n_tok = 0
    n_pat = 0
    for pi, r in enumerate(records):
        d["/pairs/id"].append(r.id)
        d["/pairs/line"].append(r.line)
        d["/pairs/status"].append(0 if r.ok else 1)
        nan_row = np.full(L + 1, np.nan)
        if not r.ok:
            d["/pairs/seq_a"].append(-1)
            d["/pairs/seq_b"].append(-1)
            for k in ("/pairs/kl_ab", "/pairs/kl_ba", "/pairs/js"):
                d[k].append(np.nan)
            d["/pairs/resid_cos"].append(nan_row)
            continue
        sides = [r.a_ids] + ([r.b_ids] if r.b_ids is not None else [])
        outs = []
        for side, ids in enumerate(sides):
            so = ref.forward(ids)
            outs.append(so)
            T = len(ids)
            d["/pairs/seq_a" if side == 0 else "/pairs/seq_b"].append(n_seq)
            d["/seqs/pair"].append(pi)
            d["/seqs/side"].append(side)
            d["/seqs/text"].append("")
            d["/seqs/tok_start"].append(n_tok)
            d["/seqs/n_tok"].append(T)
            p = np.exp(so.logp)
            d["/seqs/entropy"].append(float(-np.sum(p * so.logp)))
            ti, tl = topk_of(so.logp, topk)
            d["/seqs/topk_id"].append(ti)
            d["/seqs/topk_logprob"].append(tl)
            d["/seqs/target_id"].append(-1 if r.target_id is None else r.target_id)
            d["/seqs/target_logprob"].append(
                np.nan if r.target_id is None else float(so.logp[r.target_id]))
            d["/seqs/pattern_start"].append(n_pat)
            logps.append(so.logp)
            A = so.attn                                     # [L,H,T,T]
            mass = A.sum(axis=2).transpose(2, 0, 1)         # [T(j),L,H]
            last = A[:, :, T - 1, :].transpose(2, 0, 1)     # [T(j),L,H]
            norms = np.linalg.norm(so.resid, axis=2)        # [T,L+1]
            for j in range(T):
                tid = int(ids[j])
                text, unamb = ref.piece(tid)
                piece_ok.append(unamb)
                d["/tokens/id"].append(tid)
                d["/tokens/seq"].append(n_seq)
                d["/tokens/pos"].append(j)
                d["/tokens/text"].append(text)
                d["/tokens/byte_start"].append(-1)
                d["/tokens/byte_end"].append(-1)
                d["/tokens/is_punct"].append(1 if is_punct(text) else 0)
                d["/tokens/attn_mass"].append(mass[j])
                d["/tokens/attn_last"].append(last[j])
                d["/tokens/resid_norm"].append(norms[j])
            if patterns:
                for i in range(T):
                    for j in range(i + 1):
                        d["/patterns/value"].append(A[:, :, i, j])
                n_pat += T * (T + 1) // 2
            n_seq += 1
            n_tok += T
        if len(outs) == 2:
            a, b = outs
            d["/pairs/kl_ab"].append(_kl(a.logp, b.logp))
            d["/pairs/kl_ba"].append(_kl(b.logp, a.logp))
            d["/pairs/js"].append(_js(a.logp, b.logp))
            d["/pairs/resid_cos"].append(np.array(
                [_cos(a.resid[-1, l], b.resid[-1, l]) for l in range(L + 1)]))
        else:
            d["/pairs/seq_b"].append(-1)
            for k in ("/pairs/kl_ab", "/pairs/kl_ba", "/pairs/js"):
                d[k].append(np.nan)
            d["/pairs/resid_cos"].append(nan_row)
    shapes = {"/pairs/resid_cos": (0, L + 1), "/seqs/topk_id": (0, topk),
              "/seqs/topk_logprob": (0, topk), "/tokens/attn_mass": (0, L, H),
              "/tokens/attn_last": (0, L, H), "/tokens/resid_norm": (0, L + 1),
              "/patterns/value": (0, L, H)}
    data = {}
    for k, v in d.items():
        if k in ("/pairs/id", "/seqs/text", "/tokens/text"):
            data[k] = np.array(v, dtype=object)
        elif len(v) == 0:
            data[k] = np.zeros(shapes.get(k, (0,)))
        else:
            data[k] = np.array(v)
    if not patterns:
        del data["/patterns/value"], data["/seqs/pattern_start"]
    return Expected(records, data, topk, L, H, logps, np.array(piece_ok, dtype=bool))


# ---------------------------------------------------------------------------------------
# comparison
# ---------------------------------------------------------------------------------------


def read_str(ds) -> list[str]:
    out = []
    for x in ds[()]:
        out.append(x.decode("utf-8") if isinstance(x, bytes) else str(x))
    return out


def _fmt_index(idx) -> str:
    return "[" + ",".join(str(int(i)) for i in idx) + "]"


def compare_float(name: str, got: np.ndarray, want: np.ndarray, rtol: float, atol: float,
                  context=None, limit: int = 8) -> list[str]:
    """Mismatch descriptions (empty list: agree). NaN must match NaN."""
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        return [f"{name}: shape {got.shape} != expected {want.shape}"]
    gn, wn = np.isnan(got), np.isnan(want)
    bad = gn != wn
    diff = np.abs(got - want)
    with np.errstate(invalid="ignore"):
        bad |= (~wn) & ~(diff <= atol + rtol * np.abs(want))
    idx = np.argwhere(bad)
    if len(idx) == 0:
        return []
    finite = ~(gn | wn)
    maxd = float(np.max(diff[finite])) if finite.any() else float("nan")
    msgs = [f"{name}: {len(idx)} of {got.size} values outside |d| <= {atol:g} + {rtol:g}|ref| "
            f"(max |d| {maxd:.3g})"]
    for i in idx[:limit]:
        t = tuple(i)
        where = context(t) if context else ""
        msgs.append(f"  {name}{_fmt_index(t)}{where}: got {got[t]!r} ref {want[t]!r} "
                    f"|d|={abs(got[t] - want[t]):.3g}")
    return msgs


def compare_exact(name: str, got, want, context=None, limit: int = 8) -> list[str]:
    got = np.asarray(got)
    want = np.asarray(want)
    if got.shape != want.shape:
        return [f"{name}: shape {got.shape} != expected {want.shape}"]
    if got.dtype == object or want.dtype == object:
        bad = np.array([g != w for g, w in zip(got.ravel(), want.ravel())],
                       dtype=bool).reshape(got.shape)
    else:
        bad = got != want
    idx = np.argwhere(bad)
    if len(idx) == 0:
        return []
    msgs = [f"{name}: {len(idx)} of {got.size} values differ"]
    for i in idx[:limit]:
        t = tuple(i)
        where = context(t) if context else ""
        msgs.append(f"  {name}{_fmt_index(t)}{where}: got {got[t]!r} ref {want[t]!r}")
    return msgs


def compare_topk(h5, exp: Expected, limit: int = 8) -> list[str]:
    """topk ids exact, except swaps among reference log-probs tied within TOPK_TIE.
    (The log-prob column is compared separately against the sorted reference values.)"""
    got = np.asarray(h5["/seqs/topk_id"][()], dtype=np.int64)
    want = exp.data["/seqs/topk_id"]
    if got.shape[0] != want.shape[0]:
        return [f"/seqs/topk_id: {got.shape[0]} rows, expected {want.shape[0]}"]
    K = got.shape[1]
    msgs = []
    for s in range(got.shape[0]):
        lp = exp.logp[s]
        for k in range(K):
            g, w = int(got[s, k]), int(want[s, k])
            if g == w:
                continue
            if 0 <= g < lp.size and abs(lp[g] - lp[w]) <= TOPK_TIE:
                continue
            msgs.append(f"  /seqs/topk_id[{s},{k}]: got {g} ref {w} (ref logp of got "
                        f"{lp[g] if 0 <= g < lp.size else float('nan'):.7g}, of ref {lp[w]:.7g})")
    if msgs:
        return [f"/seqs/topk_id: {len(msgs)} mismatches"] + msgs[:limit]
    return []


def token_context(exp: Expected):
    """index -> ' (seq s side x pos j pair p line n)' for /tokens rows."""
    seq = exp.data["/tokens/seq"]
    pos = exp.data["/tokens/pos"]
    pair = exp.data["/seqs/pair"]
    side = exp.data["/seqs/side"]

    def ctx(t):
        r = t[0]
        if r >= len(seq):
            return ""
        s = int(seq[r])
        p = int(pair[s])
        extra = ""
        if len(t) >= 3:
            extra = f" layer {t[1]} head {t[2]}"
        elif len(t) == 2:
            extra = f" layer {t[1]}"
        return (f" (pair {p} id {exp.records[p].id!r} line {exp.records[p].line} "
                f"side {'ab'[int(side[s])]} pos {int(pos[r])}{extra})")
    return ctx


def seq_context(exp: Expected):
    pair = exp.data["/seqs/pair"]
    side = exp.data["/seqs/side"]

    def ctx(t):
        s = t[0]
        if s >= len(pair):
            return ""
        p = int(pair[s])
        return f" (pair {p} id {exp.records[p].id!r} side {'ab'[int(side[s])]})"
    return ctx


def pair_context(exp: Expected):
    def ctx(t):
        p = t[0]
        if p >= len(exp.records):
            return ""
        return f" (id {exp.records[p].id!r} line {exp.records[p].line})"
    return ctx


INT_DATASETS = ["/pairs/line", "/pairs/status", "/pairs/seq_a", "/pairs/seq_b",
                "/seqs/pair", "/seqs/side", "/seqs/tok_start", "/seqs/n_tok",
                "/seqs/target_id", "/tokens/id", "/tokens/seq", "/tokens/pos",
                "/tokens/byte_start", "/tokens/byte_end", "/seqs/pattern_start"]


def compare_file(h5, exp: Expected, names=None, scale: float = 1.0,
                 check_text: bool = True) -> list[str]:
    """Compare every dataset in exp.data (or `names`) that the spec defines for the file.
    `scale` multiplies the float tolerances (e.g. --store f16)."""
    msgs: list[str] = []
    names = list(exp.data) if names is None else names
    ctx_for = {"/pairs": pair_context(exp), "/seqs": seq_context(exp),
               "/tokens": token_context(exp), "/patterns": None}
    ok_pairs = np.array([r.ok for r in exp.records], dtype=bool)
    for name in names:
        if name not in h5:
            msgs.append(f"{name}: missing from the file")
            continue
        got = h5[name][()]
        want = exp.data[name]
        grp = "/" + name.split("/")[1]
        ctx = ctx_for.get(grp)
        if name in ("/pairs/id", "/seqs/text"):
            msgs += compare_exact(name, np.array(read_str(h5[name]), dtype=object), want, ctx)
        elif name == "/tokens/text":
            if not check_text:
                continue
            got_s = read_str(h5[name])
            if len(got_s) != len(want):
                msgs.append(f"{name}: {len(got_s)} rows, expected {len(want)}")
                continue
            unamb = exp.piece_ok
            g = np.array(got_s, dtype=object)
            msgs += compare_exact(name, g[unamb], want[unamb])
        elif name == "/tokens/is_punct":
            texts = exp.data["/tokens/text"]
            keep = np.array([exp.piece_ok[i] and not punct_ambiguous(texts[i])
                             for i in range(len(texts))], bool)
            g = np.asarray(got)
            if g.shape != want.shape:
                msgs.append(f"{name}: shape {g.shape} != expected {want.shape}")
                continue
            bad = np.argwhere(keep & (g.astype(np.int64) != want.astype(np.int64)))
            if len(bad):
                msgs.append(f"{name}: {len(bad)} values differ")
                for (i,) in bad[:8]:
                    msgs.append(f"  {name}[{i}] text {texts[i]!r}: got {int(g[i])} ref {int(want[i])}")
        elif name == "/seqs/topk_id":
            msgs += compare_topk(h5, exp)
        elif name in FLOAT_TOL:
            rtol, atol = FLOAT_TOL[name]
            w = want
            g = np.asarray(got, dtype=np.float64)
            if name.startswith("/pairs/"):
                # bad records: values unspecified; compare good records only
                if g.shape[:1] != w.shape[:1]:
                    msgs.append(f"{name}: shape {g.shape} != expected {w.shape}")
                    continue
                g, w = g.copy(), w.copy()
                g[~ok_pairs] = 0.0
                w[~ok_pairs] = 0.0
            msgs += compare_float(name, g, w, rtol * scale, atol * scale, ctx)
        else:
            msgs += compare_exact(name, np.asarray(got).astype(np.int64),
                                  np.asarray(want).astype(np.int64), ctx)
    return msgs


ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|\+00:?00)$")


def attr_value(v):
    if isinstance(v, bytes):
        return v.decode("utf-8")
    if isinstance(v, np.ndarray) and v.shape == ():
        v = v[()]
    if isinstance(v, np.generic):
        return v.item()
    return v

