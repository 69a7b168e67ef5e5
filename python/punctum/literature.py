"""Published phenomena, measured on a sweep.

    import punctum
    f = punctum.open("sweep.h5")
    punctum.sink_share(f, select="sink-natural-")   # Gu et al., ICLR 2025
    punctum.massive_census(f)                        # Sun et al., COLM 2024
    punctum.punct_vs_other(f)                        # cf. LLM-Microscope, Razzhigaev et al. 2025

**Attention sinks** (Gu et al., "When Attention Sink Emerges in Language Models: An
Empirical View", ICLR 2025). Per head, α_j = attn_mass[j] / (T − j): the average attention
token j (0-based) receives from itself and every later position. A head "sinks" on the
first token when α_0 > ε (ε = 0.3); the sink share is the fraction of the (layer, head)
pairs that do. Published at T = 64: LLaMA-3-8B about 99 %, GPT-2-XL about 77 %, and 0 %
on inputs of one repeated token for models with rotary positions.

**Massive activations** (Sun et al., "Massive Activations in Large Language Models", COLM
2024): single dimensions of the residual stream with |h_d| > 100 and ≥ 1000 × the median
|h_d| of that residual vector, appearing from an early layer on at the first token and at
the first "." or line break. Needs the stat ``massive`` (``/tokens/resid_max``,
``/tokens/resid_argmax``, ``/tokens/resid_median``; SPEC §3, §5).

**Punctuation vs other tokens**: the knockout effect (``/ablation/knockout/kl``) and the
attention received (α_j as above) of punctuation tokens against the other tokens, the
question of LLM-Microscope (Razzhigaev et al. 2025, "LLM-Microscope: Uncovering the Hidden
Role of Punctuation in Context Memory of Transformers"), which found that removing
punctuation and stop words hurts more than removing other tokens.

Intervals. Every interval is a seeded percentile bootstrap over *pairs*: the two prompts
of a pair share their prefix, and the rows of one sequence are not independent, so pairs
(with everything computed from them) are resampled as units. Protocol, exactly: clusters
are the pair rows modulo ``MAX_CLUSTERS`` (50,000; so each pair is its own cluster in any
file with fewer pairs), in ascending order, those without an observation dropped;
``rng = numpy.random.default_rng(seed)``; replicate b draws ``rng.integers(0, C, C)``
(C clusters, with replacement) and computes each statistic as (Σ of the drawn clusters'
sums) / (Σ of their counts); the interval is ``numpy.nanquantile`` of the replicates at
(1 − level)/2 and (1 + level)/2. Defaults: 2,000 replicates, seed 0, level 0.95.

Selecting sequences: ``select`` is None (all), a string (pair ids that start with it), a
collection of pair ids, or a function of the pair id returning True for those to keep;
``side`` is None, 'a' or 'b'. The bundled study (examples/literature.jsonl) names its
records ``sink-natural-NN`` (natural text of 64 tokens), ``sink-repeat-NN`` (one token
repeated 64 times) and ``massive-NN`` (an early "." and line break).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os

import numpy as np
import pandas as pd

from ._store import StaleRead
from .reader import CHUNK, PunctumFile, _robust

SINK_EPS = 0.3
MASSIVE_ABS = 100.0
MASSIVE_RATIO = 1000.0
N_BOOT = 2000
SEED = 0
LEVEL = 0.95
MAX_CLUSTERS = 50_000
NATURAL_PREFIX = "sink-natural-"
REPEAT_PREFIX = "sink-repeat-"

KINDS = ("first", "first_delim", "other_punct", "other")
KIND_LABELS = {"first": "first token", "first_delim": "first delimiter",
               "other_punct": "other punctuation", "other": "other tokens"}
GROUPS = ("punct", "other", "first")

# the published values the report sets beside a sweep's (see the module docstring)
PUBLISHED = {
    "sink": {"value": "LLaMA-3-8B ≈ 99 %, GPT-2-XL ≈ 77 % (T = 64, ε = 0.3)",
             "source": "Gu et al., ICLR 2025"},
    "sink_repeat": {"value": "0 % for models with rotary positions (T = 64)",
                    "source": "Gu et al., ICLR 2025"},
    "massive_first": {"value": "yes: |h| > 100 and ≥ 1000 × median, from an early layer on "
                               "(LLaMA2-7B: dims 1415 and 2533)",
                      "source": "Sun et al., COLM 2024"},
    "massive_delim": {"value": "yes: the first \".\" or \"\\n\" carries them too",
                      "source": "Sun et al., COLM 2024"},
    "massive_other": {"value": "rare: a few tokens per sequence at most",
                      "source": "Sun et al., COLM 2024"},
    "punct": {"value": "no comparable number: removing punctuation and stop words hurts "
                       "more than removing other tokens",
              "source": "Razzhigaev et al. 2025 (LLM-Microscope)"},
}


# ------------------------------------------------------------------------------ helpers

@contextlib.contextmanager
def _opened(ds):
    """A PunctumFile for ds (an open file, or a path opened and closed here)."""
    if isinstance(ds, PunctumFile):
        yield ds
        return
    if isinstance(ds, (str, os.PathLike)):
        f = PunctumFile(ds)
        try:
            yield f
        finally:
            f.close()
        return
    raise TypeError(f"expected a punctum file (punctum.open) or a path, not {type(ds).__name__}")


def _selector(select):
    """select (see the module docstring) -> function(array of pair ids) -> bool mask."""
    if select is None:
        return lambda ids: np.ones(len(ids), bool)
    if isinstance(select, str):
        keep = lambda x: isinstance(x, str) and x.startswith(select)  # noqa: E731
    elif callable(select):
        keep = lambda x: isinstance(x, str) and bool(select(x))  # noqa: E731
    else:
        wanted = {str(x) for x in select}
        keep = lambda x: x in wanted  # noqa: E731

    def mask(ids):
        ids = np.asarray(ids, dtype=object)
        if not len(ids):
            return np.zeros(0, bool)
        u, inv = np.unique(ids.astype(str), return_inverse=True)
        ok = np.fromiter((keep(x) for x in u), bool, len(u))
        return ok[inv] & np.array([isinstance(x, str) for x in ids])
    return mask


def _side_code(side):
    if side is None:
        return None
    code = {"a": 0, "b": 1, 0: 0, 1: 1}.get(side)
    if code is None:
        raise ValueError(f"side must be None, 'a' or 'b', not {side!r}")
    return code


def is_first_delim_text(text):
    """Sun et al.'s delimiters: a token whose text, stripped of white space, ends with
    "." or that contains a line break."""
    t = "" if text is None else str(text)
    return "\n" in t or t.strip().endswith(".")


class _Clusters:
    """Per-cluster sums and counts of k statistics (clusters: pair row % MAX_CLUSTERS),
    kept only for the clusters seen."""

    def __init__(self, k):
        self.k = k
        self.keys, self.sums, self.counts = [], [], []
        self.n = 0

    def add(self, pair, values, weights):
        """pair: [n] global pair rows; values, weights: [n, k] (weight 0: no observation;
        the value there is ignored)."""
        key = np.asarray(pair, np.int64) % MAX_CLUSTERS
        if not len(key):
            return
        w = np.broadcast_to(np.asarray(weights, np.float64), (len(key), self.k))
        v = np.where(w > 0, np.asarray(values, np.float64), 0.0) * w
        u, inv = np.unique(key, return_inverse=True)
        s = np.zeros((len(u), self.k))
        c = np.zeros((len(u), self.k))
        np.add.at(s, inv, v)
        np.add.at(c, inv, w)
        self.keys.append(u)
        self.sums.append(s)
        self.counts.append(c)
        self.n += len(u)
        if self.n > 4 * MAX_CLUSTERS:
            self._reduce()

    def _reduce(self):
        key = np.concatenate(self.keys)
        u, inv = np.unique(key, return_inverse=True)
        s = np.zeros((len(u), self.k))
        c = np.zeros((len(u), self.k))
        np.add.at(s, inv, np.concatenate(self.sums))
        np.add.at(c, inv, np.concatenate(self.counts))
        self.keys, self.sums, self.counts, self.n = [u], [s], [c], len(u)

    def arrays(self):
        """(sums, counts) [C, k] of the clusters with an observation, by ascending key."""
        if not self.keys:
            return np.zeros((0, self.k)), np.zeros((0, self.k))
        self._reduce()
        used = self.counts[0].sum(axis=1) > 0
        return self.sums[0][used], self.counts[0][used]


def bootstrap(sums, counts, n_boot=N_BOOT, seed=SEED):
    """Cluster bootstrap of ratio means. sums, counts: [C, k] per cluster (in cluster
    order). Returns (estimate [k] = Σ sums / Σ counts, replicates [n_boot, k]); replicate
    b resamples C clusters with rng.integers(0, C, C), rng = default_rng(seed), drawn in
    order b = 0, 1, ..."""
    sums = np.asarray(sums, np.float64)
    counts = np.asarray(counts, np.float64)
    C = len(sums)
    k = sums.shape[1] if sums.ndim == 2 else 0
    with np.errstate(invalid="ignore", divide="ignore"):
        est = sums.sum(axis=0) / counts.sum(axis=0)
    reps = np.full((n_boot, k), np.nan)
    if C == 0 or n_boot <= 0:
        return est, reps
    rng = np.random.default_rng(seed)
    block = max(1, min(n_boot, 4_000_000 // C))
    for b0 in range(0, n_boot, block):
        b1 = min(b0 + block, n_boot)
        w = np.stack([np.bincount(rng.integers(0, C, C), minlength=C) for _ in range(b0, b1)])
        w = w.astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            reps[b0:b1] = (w @ sums) / (w @ counts)
    return est, reps


def interval(reps, level=LEVEL):
    """Percentile interval of bootstrap replicates along axis 0: [..., 2] (lo, hi)."""
    reps = np.asarray(reps, np.float64)
    q = [(1 - level) / 2, (1 + level) / 2]
    out = np.full(reps.shape[1:] + (2,), np.nan)
    good = np.isfinite(reps).any(axis=0)
    if np.any(good):
        qq = np.nanquantile(reps[:, good], q, axis=0)
        out[good] = np.moveaxis(qq, 0, -1)
    return out


def _pct(x):
    return "–" if x is None or not np.isfinite(x) else f"{100 * x:.1f} %"


def _length_text(lengths):
    if not lengths:
        return "no sequence"
    ts = sorted(lengths)
    if len(ts) == 1:
        return f"T = {ts[0]}"
    allv = np.repeat(ts, [lengths[t] for t in ts])
    return f"T = {ts[0]}–{ts[-1]} (median {int(np.median(allv))})"


def _token_parts(f):
    return sorted(f._parts, key=lambda q: f._map["tokens"][q.index][0])


def _seq_end(p, limit):
    """The committed token rows [0, hi) of part p, hi ≤ limit, ending at a sequence end."""
    n = p.committed["tokens"]
    if limit is None or limit >= n:
        return n
    if limit <= 0:
        return 0
    pos = p.read("tokens/pos", limit - 1, limit + 1).astype(np.int64)
    seq = p.read("tokens/seq", limit - 1, limit + 1).astype(np.int64)
    if len(seq) == 2 and seq[0] == seq[1]:
        return int(limit - 1 - pos[0])  # the sequence goes on past the limit: leave it out
    return limit


def _token_rows(f, p, lo, hi, names, sel, side):
    """One chunk of committed token rows of part p: bookkeeping and the datasets in names,
    restricted to valid rows of selected sequences."""
    seq = p.read("tokens/seq", lo, hi).astype(np.int64)
    pos = p.read("tokens/pos", lo, hi).astype(np.int64)
    valid, info = f._seq_join(p, seq)
    keep = valid & (info["pair"] >= 0) & (pos >= 0) & (pos < info["n_tok"])
    if side is not None:
        keep &= info["side"] == side
    if keep.any():
        keep[keep] = sel(info["pair_id"][keep])
    out = {"row": np.arange(lo, hi)[keep], "seq_local": seq[keep],
           "seq": f._g("seqs", p, seq[keep]), "pair": f._g("pairs", p, info["pair"][keep]),
           "pair_id": info["pair_id"][keep], "side": info["side"][keep], "pos": pos[keep],
           "n_tok": info["n_tok"][keep]}
    for name in names:
        if keep.any():
            out[name] = p.read("tokens/" + name, lo, hi)[keep]
        else:
            shp = p.shape("tokens/" + name)[1:]
            out[name] = np.empty((0,) + tuple(shp))
    return out


def _token_chunks(f, names, select=None, side=None, max_tokens=None):
    """Chunks (dicts of arrays) of the committed token rows of the selected sequences,
    over every part, in file order; at most max_tokens rows (whole sequences) are read."""
    sel = _selector(select)
    sd = _side_code(side)
    p0 = f._parts[0]
    width = 1
    for name in names:
        width += int(np.prod(p0.shape("tokens/" + name)[1:], dtype=np.int64))
    step = int(max(1, min(CHUNK, (1 << 23) // width)))   # ~64 MB of float64 per chunk
    seen = 0
    for p in _token_parts(f):
        left = None if max_tokens is None else max_tokens - seen
        n = _seq_end(p, left)
        for lo in range(0, n, step):
            hi = min(lo + step, n)
            yield p, _robust(lambda q, a, b: _token_rows(f, q, a, b, names, sel, sd), p, lo, hi)
        seen += n
        if max_tokens is not None and seen >= max_tokens:
            break


def _need(f, name, why):
    if not f._parts[0].has(name):
        raise ValueError(f"{f.path}: no /{name} ({why})")


# ------------------------------------------------------------------------------ sinks

@dataclasses.dataclass
class SinkShare:
    """Gu et al.'s attention-sink share of one set of sequences (see sink_share)."""

    share: float                 # fraction of heads with α_0 > eps, mean over sequences
    ci: tuple                    # its bootstrap interval (lo, hi)
    per_layer: np.ndarray        # [L] fraction of the layer's heads, mean over sequences
    per_layer_ci: np.ndarray     # [L, 2]
    alpha0: np.ndarray           # [L, H] mean α_0 over sequences
    eps: float
    n_seqs: int
    n_pairs: int
    lengths: dict                # T -> number of sequences
    per_seq: pd.DataFrame        # seq, pair, pair_id, side, n_tok, share
    n_boot: int = N_BOOT
    seed: int = SEED
    level: float = LEVEL

    @property
    def length(self):
        """The sequence length(s) T it was computed at, in words ('T = 64')."""
        return _length_text(self.lengths)

    def __str__(self):
        lo, hi = self.ci
        return (f"sink share {_pct(self.share)} [{_pct(lo)}, {_pct(hi)}] of heads with "
                f"α_0 > {self.eps:g}, over {self.n_seqs} sequences ({self.length})")


def sink_share(ds, eps=SINK_EPS, select=None, side=None, n_boot=N_BOOT, seed=SEED,
               level=LEVEL):
    """Gu et al.'s (ICLR 2025) attention-sink share on the sequences of a sweep.

    Per sequence of T tokens and per (layer, head): α_0 = attn_mass[0] / T, the average
    attention the first token receives from each position (itself included). The
    sequence's share is the fraction of the L × H heads with α_0 > eps; the result is the
    mean of that over the selected sequences, each weighted equally whatever its length,
    with a bootstrap interval over pairs (module docstring). The lengths T the sequences
    have are reported (``lengths``, ``length``): the published values are at T = 64, and
    the share depends on T. Short sequences inflate it: a head that attends uniformly has
    α_0 = (1 + 1/2 + ... + 1/T) / T, which exceeds 0.3 for every T < 10 (0.074 at T = 64).

    ds: a punctum file (punctum.open) or a path. select / side: which sequences (module
    docstring). Needs /tokens/attn_mass (stat ``mass``). Returns a SinkShare."""
    with _opened(ds) as f:
        _need(f, "tokens/attn_mass", "the sweep was run without mass in --stats")
        sel = _selector(select)
        sd = _side_code(side)
        L, H = f._parts[0].shape("tokens/attn_mass")[1:]
        frames, a0_sum = [], np.zeros((L, H))
        cl = _Clusters(L + 1)
        for p in f._parts:
            S = p.committed["seqs"]
            for lo in range(0, S, CHUNK):
                hi = min(lo + CHUNK, S)
                got = _robust(lambda q, a, b: _first_tokens(f, q, a, b, sel, sd), p, lo, hi)
                if got is None:
                    continue
                df, mass = got
                T = df["n_tok"].to_numpy(np.float64)
                alpha = mass / T[:, None, None]
                sink = alpha > eps
                per_layer = sink.mean(axis=2)
                df["share"] = sink.reshape(len(df), -1).mean(axis=1)
                frames.append(df)
                a0_sum += alpha.sum(axis=0)
                vals = np.concatenate([df["share"].to_numpy()[:, None], per_layer], axis=1)
                cl.add(df["pair"].to_numpy(), vals, np.ones_like(vals))
        per_seq = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
            columns=["seq", "pair", "pair_id", "side", "n_tok", "share"])
        sums, counts = cl.arrays()
        est, reps = bootstrap(sums, counts, n_boot, seed)
        ci = interval(reps, level) if len(est) else np.full((L + 1, 2), np.nan)
        n = len(per_seq)
        lengths = {int(t): int(c) for t, c in per_seq["n_tok"].value_counts().items()} if n else {}
        return SinkShare(
            share=float(est[0]), ci=(float(ci[0, 0]), float(ci[0, 1])),
            per_layer=est[1:], per_layer_ci=ci[1:], alpha0=a0_sum / max(n, 1), eps=eps,
            n_seqs=n, n_pairs=int(per_seq["pair"].nunique()) if n else 0, lengths=lengths,
            per_seq=per_seq, n_boot=n_boot, seed=seed, level=level)


def _first_tokens(f, p, lo, hi, sel, side):
    """Sequences [lo, hi) of part p that are selected: (frame, attn_mass of their first
    token [n, L, H]) or None."""
    pair = p.read("seqs/pair", lo, hi).astype(np.int64)
    sd = p.read("seqs/side", lo, hi).astype(np.int64)
    n_tok = p.read("seqs/n_tok", lo, hi).astype(np.int64)
    ts = p.read("seqs/tok_start", lo, hi).astype(np.int64)
    ok = (pair >= 0) & (pair < p.committed["pairs"]) & (ts >= 0) & (n_tok >= 1)
    ok &= ts < p.committed["tokens"]
    if side is not None:
        ok &= sd == side
    ids = np.empty(hi - lo, dtype=object)
    ids[ok] = f._pair_ids(p, pair[ok])
    if ok.any():
        ok[ok] = sel(ids[ok])
    if not ok.any():
        return None
    rows = ts[ok]
    seq_local = np.arange(lo, hi)[ok]
    if not (np.all(p.gather("tokens/seq", rows) == seq_local)
            and np.all(p.gather("tokens/pos", rows) == 0)) and not p.damaged:
        raise StaleRead(f"{p.path}: inconsistent first-token rows (read while being written?)")
    mass = p.gather("tokens/attn_mass", rows).astype(np.float64)
    df = pd.DataFrame({"seq": f._g("seqs", p, seq_local), "pair": f._g("pairs", p, pair[ok]),
                       "pair_id": ids[ok], "side": np.array(["a", "b"])[sd[ok].clip(0, 1)],
                       "n_tok": n_tok[ok]})
    return df, mass


# ------------------------------------------------------------------------------ massive

def token_kinds(seq, pos, text, is_punct, seen_delim=None):
    """Kind codes (index into KINDS) of token rows in sequence order: 0 first token (pos
    0), 1 first delimiter (the first token with pos > 0 whose text, stripped, ends with
    "." or contains a line break), 2 other punctuation (is_punct), 3 other.
    seen_delim: set of seq values whose first delimiter came in an earlier chunk (updated)."""
    seq = np.asarray(seq, np.int64)
    pos = np.asarray(pos, np.int64)
    pun = np.asarray(is_punct, bool)
    kind = np.where(pun, 2, 3)
    cand = np.zeros(len(seq), bool)
    idx = np.nonzero(pun & (pos > 0))[0]   # every delimiter is punctuation (SPEC §3)
    if len(idx):
        cand[idx] = [is_first_delim_text(text[i]) for i in idx]
    ci = np.nonzero(cand)[0]
    if len(ci):
        _, first = np.unique(seq[ci], return_index=True)
        first = ci[first]
        if seen_delim:
            first = first[~np.isin(seq[first], list(seen_delim))]
        kind[first] = 1
        if seen_delim is not None:
            seen_delim.update(int(s) for s in seq[first])
    kind[pos == 0] = 0
    return kind


@dataclasses.dataclass
class MassiveCensus:
    """Sun et al.'s massive activations in a sweep, by token kind (see massive_census)."""

    threshold: float
    ratio: float
    kinds: pd.DataFrame          # per kind (see massive_census)
    by_layer: pd.DataFrame       # per (kind, layer) (see massive_census)
    dims: pd.DataFrame           # per dimension of massive entries (see massive_census)
    top: pd.DataFrame            # the largest massive entries (see massive_census)
    n_seqs: int
    n_tokens: int
    n_layers: int                # columns: L + 1 (l = L: the final residual, before the final norm)
    n_boot: int = N_BOOT
    seed: int = SEED
    level: float = LEVEL

    def __str__(self):
        parts = []
        for k in KINDS:
            r = self.kinds.loc[k]
            if r["tokens"]:
                parts.append(f"{KIND_LABELS[k]} {_pct(r['share'])} of {int(r['tokens'])}")
        return (f"massive activations (|h| > {self.threshold:g}, ≥ {self.ratio:g} × median): "
                + "; ".join(parts))


def massive_census(ds, threshold=MASSIVE_ABS, ratio=MASSIVE_RATIO, select=None, side=None,
                   max_tokens=None, n_top=20, n_boot=N_BOOT, seed=SEED, level=LEVEL):
    """Sun et al.'s (COLM 2024) census of massive activations.

    A (token, layer) entry is massive when resid_max > threshold and resid_max ≥ ratio ×
    resid_median (the largest |h_d| of the residual stream entering that layer, and the
    median |h_d|; column l = L is the final residual before the final norm). Tokens are
    grouped by kind (``token_kinds``): the first token, the first delimiter ("." or a line
    break; Sun et al.'s "first '.' or '\\n'"), other punctuation, other tokens.

    Returns a MassiveCensus:
    - ``kinds``: per kind: tokens, carriers (tokens massive in at least one layer), share
      (carriers / tokens) with its bootstrap interval over pairs (ci_lo, ci_hi), peak (the
      largest massive |h|), onset (first layer where at least half the tokens of the kind
      are massive; -1 if none), layers (where at least half are, as text: '2–28'), dims
      (the most frequent dimensions of its massive entries), and, whatever the criterion,
      max_abs (its largest resid_max), dim_of_max and layer_of_max (where), max_ratio
      (its largest resid_max / resid_median): how far from massive a kind stays;
    - ``by_layer``: per (kind, layer): tokens, massive (entries), frac, gmean and gsd
      (geometric mean and geometric s.d., a factor, of resid_max), min, max,
      median_gmean (geometric mean of resid_median), ratio_gmean and ratio_max (of
      resid_max / resid_median);
    - ``dims``: per dimension that is the argmax of a massive entry, how often, per kind,
      and its first and last layer;
    - ``top``: the n_top largest massive entries with their token.
    max_tokens: read at most this many token rows (whole sequences; None: all).
    Needs the stat ``massive`` (/tokens/resid_max, resid_argmax, resid_median)."""
    with _opened(ds) as f:
        _need(f, "tokens/resid_max", "the sweep did not record the stat massive: add "
              "massive to --stats")
        _need(f, "tokens/resid_argmax", "a file with resid_max must also have resid_argmax")
        _need(f, "tokens/resid_median", "a file with resid_max must also have resid_median")
        L1 = f._parts[0].shape("tokens/resid_max")[1]
        acc = _MassiveAcc(L1, int(f.attrs.get("d_model", 0) or 0), n_top, threshold, ratio)
        for p, c in _token_chunks(f, ["resid_max", "resid_argmax", "resid_median", "is_punct"],
                                  select, side, max_tokens):
            if not len(c["row"]):
                continue
            pun = c["is_punct"] != 0
            vmax = c["resid_max"].astype(np.float64)
            hit = ((vmax > threshold) & (vmax >= ratio * c["resid_median"])).any(axis=1)
            need = pun | hit   # delimiters are punctuation: read only the texts needed
            c["text"] = np.empty(len(c["row"]), dtype=object)
            if need.any():
                c["text"][need] = p.gather("tokens/text", c["row"][need])
            seen = acc.seen.setdefault(p.index, set())
            kind = token_kinds(c["seq_local"], c["pos"], c["text"], pun, seen)
            last = int(c["seq_local"][-1])   # sequences are contiguous: only the last
            acc.seen[p.index] = {last} & seen  # one can go on in the next chunk
            acc.add(c, kind)
        return acc.result(n_boot, seed, level)


class _MassiveAcc:
    """Streaming accumulators of massive_census, per token kind k and layer column l."""

    def __init__(self, L1, d_model, n_top, threshold, ratio):
        K = len(KINDS)
        self.L1, self.n_top = L1, n_top
        self.threshold, self.ratio = threshold, ratio
        self.D = max(d_model, 1)
        z = lambda dt=np.float64: np.zeros((K, L1), dt)  # noqa: E731
        self.tokens = np.zeros(K, np.int64)
        self.carriers = np.zeros(K, np.int64)
        self.massive = z(np.int64)
        self.log = {"max": [z(), z(), z(np.int64)], "med": [z(), z(), z(np.int64)],
                    "ratio": [z(), z(), z(np.int64)]}   # Σ log10, Σ log10², n (finite, > 0)
        self.vmin = np.full((K, L1), np.inf)
        self.vmax = np.full((K, L1), -np.inf)
        self.rmax = np.full((K, L1), -np.inf)
        self.at_max = np.full((K, 2), -1, np.int64)    # (dim, layer) of each kind's largest |h|
        self.dim_count = np.zeros((K, self.D), np.int64)
        self.dim_lo = np.full(self.D, np.iinfo(np.int64).max)
        self.dim_hi = np.full(self.D, -1)
        self.cl = _Clusters(K)
        self.top = []
        self.seqs = set()
        self.seen = {}

    def add(self, c, kind):
        K = len(KINDS)
        vmax = c["resid_max"].astype(np.float64)
        vmed = c["resid_median"].astype(np.float64)
        arg = c["resid_argmax"].astype(np.int64)
        m = (vmax > self.threshold) & (vmax >= self.ratio * vmed)
        self.seqs.update(c["seq"].tolist())
        carrier = m.any(axis=1)
        onehot = kind[:, None] == np.arange(K)[None, :]
        self.tokens += onehot.sum(axis=0)
        self.carriers += (onehot & carrier[:, None]).sum(axis=0)
        self.cl.add(c["pair"], np.broadcast_to(carrier[:, None], onehot.shape), onehot)
        with np.errstate(divide="ignore", invalid="ignore"):
            logs = {"max": np.log10(vmax), "med": np.log10(vmed),
                    "ratio": np.log10(vmax / vmed)}
        for k in range(K):
            sel = kind == k
            if not sel.any():
                continue
            self.massive[k] += m[sel].sum(axis=0)
            for key, lg in logs.items():
                g = lg[sel]
                ok = np.isfinite(g)
                acc = self.log[key]
                acc[0][k] += np.where(ok, g, 0).sum(axis=0)
                acc[1][k] += np.where(ok, g * g, 0).sum(axis=0)
                acc[2][k] += ok.sum(axis=0)
            v = np.where(np.isfinite(vmax[sel]), vmax[sel], np.nan)
            with np.errstate(invalid="ignore", divide="ignore"):
                r = np.where(np.isfinite(logs["ratio"][sel]), vmax[sel] / vmed[sel], np.nan)
                self.vmin[k] = np.fmin(self.vmin[k], np.nanmin(v, axis=0, initial=np.inf))
                cmax = np.nanmax(v, axis=0, initial=-np.inf)
                self.rmax[k] = np.fmax(self.rmax[k], np.nanmax(r, axis=0, initial=-np.inf))
            if np.nanmax(cmax) > np.nanmax(self.vmax[k]):
                i, l = np.unravel_index(np.nanargmax(v), v.shape)
                self.at_max[k] = (arg[sel][i, l], l)
            self.vmax[k] = np.fmax(self.vmax[k], cmax)
        self._add_massive(c, kind, m, vmax, arg)

    def _add_massive(self, c, kind, m, vmax, arg):
        """Dimensions and the largest entries among the massive ones."""
        ti, tl = np.nonzero(m)
        if not len(ti):
            return
        d = arg[ti, tl]
        good = (d >= 0) & (d < self.D)
        np.add.at(self.dim_count, (kind[ti][good], d[good]), 1)
        np.minimum.at(self.dim_lo, d[good], tl[good])
        np.maximum.at(self.dim_hi, d[good], tl[good])
        vals = vmax[ti, tl]
        for j in np.argsort(-vals, kind="stable")[: self.n_top]:
            i, l = int(ti[j]), int(tl[j])
            self.top.append((float(vals[j]), int(arg[i, l]), l, KINDS[kind[i]],
                             c["pair_id"][i], "ab"[int(c["side"][i])], int(c["pos"][i]),
                             c["text"][i]))
        self.top.sort(key=lambda t: -t[0])
        del self.top[self.n_top:]

    def _gstats(self, key):
        s, s2, n = self.log[key]
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = s / n
            sd = np.sqrt(np.maximum(s2 / n - mean ** 2, 0))
        return 10 ** mean, 10 ** sd

    def result(self, n_boot, seed, level):
        K, L1 = len(KINDS), self.L1
        sums, counts = self.cl.arrays()
        est, reps = bootstrap(sums, counts, n_boot, seed)
        ci = interval(reps, level) if len(sums) else np.full((K, 2), np.nan)
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = self.massive / self.tokens[:, None]
        gm, gsd = self._gstats("max")
        gmed, _ = self._gstats("med")
        grat, _ = self._gstats("ratio")
        rows, krows = [], []
        for k, name in enumerate(KINDS):
            seen = self.log["max"][2][k] > 0
            for l in range(L1):
                rows.append({"kind": name, "layer": l, "tokens": int(self.tokens[k]),
                             "massive": int(self.massive[k, l]), "frac": frac[k, l],
                             "gmean": gm[k, l], "gsd": gsd[k, l],
                             "min": self.vmin[k, l] if seen[l] else np.nan,
                             "max": self.vmax[k, l] if seen[l] else np.nan,
                             "median_gmean": gmed[k, l], "ratio_gmean": grat[k, l],
                             "ratio_max": self.rmax[k, l] if seen[l] else np.nan})
            krows.append(self._kind_row(k, name, est, ci, frac, len(sums)))
        return MassiveCensus(threshold=self.threshold, ratio=self.ratio,
                             kinds=pd.DataFrame(krows).set_index("kind"),
                             by_layer=pd.DataFrame(rows).set_index(["kind", "layer"]),
                             dims=self._dims(), top=self._top(),
                             n_seqs=len(self.seqs), n_tokens=int(self.tokens.sum()),
                             n_layers=L1, n_boot=n_boot, seed=seed, level=level)

    def _kind_row(self, k, name, est, ci, frac, n_clusters):
        half = np.nonzero(frac[k] >= 0.5)[0] if self.tokens[k] else np.zeros(0, int)
        dc = self.dim_count[k]
        any_h = np.isfinite(self.vmax[k]) & (self.vmax[k] > -np.inf)
        return {"kind": name, "label": KIND_LABELS[name], "tokens": int(self.tokens[k]),
                "carriers": int(self.carriers[k]),
                "share": est[k] if n_clusters else np.nan, "ci_lo": ci[k, 0], "ci_hi": ci[k, 1],
                "peak": np.nanmax(np.where(self.massive[k] > 0, self.vmax[k], np.nan))
                if self.massive[k].any() else np.nan,
                "onset": int(half[0]) if len(half) else -1, "layers": _ranges(half),
                "dims": [int(d) for d in np.argsort(-dc, kind="stable")[:3] if dc[d] > 0],
                "max_abs": float(self.vmax[k][any_h].max()) if any_h.any() else np.nan,
                "dim_of_max": int(self.at_max[k, 0]), "layer_of_max": int(self.at_max[k, 1]),
                "max_ratio": float(np.nanmax(self.rmax[k])) if np.isfinite(self.rmax[k]).any()
                else np.nan}

    def _top(self):
        cols = list(zip(*self.top)) if self.top else [()] * 8
        types = (np.float64, np.int64, np.int64, object, object, object, np.int64, object)
        names = ("value", "dim", "layer", "kind", "pair_id", "side", "pos", "text")
        return pd.DataFrame({n: np.array(c, dtype=t) for n, c, t in zip(names, cols, types)})

    def _dims(self):
        tot = self.dim_count.sum(axis=0)
        used = np.nonzero(tot)[0]
        used = used[np.argsort(-tot[used], kind="stable")]
        return pd.DataFrame({"dim": used, "count": tot[used],
                             "share": tot[used] / max(int(tot.sum()), 1),
                             **{k: self.dim_count[i, used] for i, k in enumerate(KINDS)},
                             "first_layer": self.dim_lo[used], "last_layer": self.dim_hi[used]})


def _ranges(idx):
    """Sorted integers as text: [2, 3, 4, 7] -> '2–4, 7'."""
    idx = [int(i) for i in idx]
    if not idx:
        return ""
    out, start, prev = [], idx[0], idx[0]
    for i in idx[1:] + [None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        out.append(f"{start}" if start == prev else f"{start}–{prev}")
        if i is not None:
            start = prev = i
    return ", ".join(out)


# ------------------------------------------------------------------------------ punct

@dataclasses.dataclass
class PunctVsOther:
    """Punctuation vs other tokens (see punct_vs_other)."""

    knockout: pd.DataFrame | None      # per group: rows, mean (KL), ci_lo, ci_hi, ...
    knockout_diff: tuple | None        # punct − other mean KL: (estimate, lo, hi)
    knockout_ratio: tuple | None       # punct / other mean KL: (estimate, lo, hi)
    window: tuple | None               # the knockout layer window [lo, hi)
    attention: pd.DataFrame | None     # per group: tokens, mean α, ci_lo, ci_hi, mean position
    attention_ratio: tuple | None      # punct / other mean α: (estimate, lo, hi)
    attention_by_layer: pd.DataFrame | None   # [layer] × group: mean α
    n_boot: int = N_BOOT
    seed: int = SEED
    level: float = LEVEL

    def __str__(self):
        out = []
        if self.knockout is not None:
            k = self.knockout
            out.append(f"knockout KL: punctuation {k.loc['punct', 'mean']:.4g}, other "
                       f"{k.loc['other', 'mean']:.4g}")
        if self.attention is not None:
            a = self.attention
            out.append(f"attention α: punctuation {a.loc['punct', 'mean']:.4g}, other "
                       f"{a.loc['other', 'mean']:.4g}")
        return "; ".join(out) or "no knockout and no attention statistics"


def _group_of(pos, n_tok, is_punct):
    """0 punct, 1 other, 2 first token, -1 the final position (left out)."""
    g = np.where(np.asarray(is_punct, bool), 0, 1)
    g = np.where(pos == 0, 2, g)
    return np.where(pos >= n_tok - 1, -1, g)


def punct_vs_other(ds, select=None, side=None, window=None, max_tokens=None, n_boot=N_BOOT,
                   seed=SEED, level=LEVEL):
    """Punctuation tokens against the other tokens: knockout effect and attention received.

    Groups: ``punct`` (is_punct), ``other``, and ``first`` (position 0, the attention
    sink, kept apart: its knockout effect and attention are of another order and would
    swamp the comparison). The final position is left out (it is never knocked out, and
    only itself attends to it).

    - knockout: mean KL(P‖Q) per group over the rows of /ablation/knockout of one layer
      window (window: its index in /ablation/windows; default the widest, i.e. all
      layers), with top-1 change rate and mean dlogp_top1; plus punct − other and punct /
      other with intervals.
    - attention: per token α_j = attn_mass[j] / (T − j), averaged over layers and heads
      (the average attention j receives per query that can see it, Gu et al.'s
      normalisation, which makes early and late positions comparable); mean per group
      with intervals, punct / other, the mean position of each group, and per layer.
    Intervals: bootstrap over pairs (module docstring). max_tokens bounds the token rows
    read for the attention part (whole sequences). Returns a PunctVsOther; a part whose
    statistic the file lacks is None."""
    with _opened(ds) as f:
        has_ko = f.has("knockout") and f.counts()["knockout"] > 0
        has_mass = f.has("attn_mass")
        if not (has_ko or has_mass):
            raise ValueError(f"{f.path}: neither knockout rows nor /tokens/attn_mass")
        res = dict(knockout=None, knockout_diff=None, knockout_ratio=None, window=None,
                   attention=None, attention_ratio=None, attention_by_layer=None)
        if has_ko:
            res.update(_knockout_groups(f, select, side, window, n_boot, seed, level))
        if has_mass:
            res.update(_attention_groups(f, select, side, max_tokens, n_boot, seed, level))
        return PunctVsOther(**res, n_boot=n_boot, seed=seed, level=level)


def _triple(est, reps, level):
    ci = interval(reps[:, None], level)[0] if len(reps) else (np.nan, np.nan)
    return (float(est), float(ci[0]), float(ci[1]))


def _knockout_groups(f, select, side, window, n_boot, seed, level):
    wins = f.windows
    if window is None:
        span = (wins["hi"] - wins["lo"]).to_numpy() if len(wins) else np.zeros(1)
        window = int(np.argmax(span))
    sel = _selector(select)
    sd = _side_code(side)
    cl = _Clusters(9)   # per group: kl, top1_changed, dlogp_top1
    for df in f.iter_knockout():
        df = df[(df["window"].to_numpy() == window) & df["pair"].notna().to_numpy()]
        if sd is not None:
            df = df[df["side"].astype(str).to_numpy() == "ab"[sd]]
        if not len(df):
            continue
        df = df[sel(df["pair_id"].to_numpy())]
        pun = df["is_punct"].fillna(False).to_numpy(bool) if "is_punct" in df else \
            np.zeros(len(df), bool)
        g = _group_of(df["pos"].to_numpy(), df["n_tok"].to_numpy(), pun)
        kl = df["kl"].to_numpy(np.float64)
        ok = (g >= 0) & np.isfinite(kl)
        vals = np.stack([kl, df["top1_changed"].to_numpy(np.float64),
                         df["dlogp_top1"].to_numpy(np.float64)], axis=1)
        V = np.zeros((len(df), 9))
        W = np.zeros((len(df), 9))
        for k in range(3):
            m = ok & (g == k)
            V[m, 3 * k:3 * k + 3] = np.nan_to_num(vals[m])
            W[m, 3 * k:3 * k + 3] = np.isfinite(vals[m])
        cl.add(df["pair"].to_numpy(np.int64), V, W)
    sums, counts = cl.arrays()
    est, reps = bootstrap(sums, counts, n_boot, seed)
    ci = interval(reps, level) if len(sums) else np.full((9, 2), np.nan)
    n = counts.sum(axis=0) if len(counts) else np.zeros(9)
    rows = []
    for k, name in enumerate(GROUPS):
        j = 3 * k
        rows.append({"group": name, "rows": int(n[j]), "mean": est[j] if len(sums) else np.nan,
                     "ci_lo": ci[j, 0], "ci_hi": ci[j, 1],
                     "top1_changed": est[j + 1] if len(sums) else np.nan,
                     "dlogp_top1": est[j + 2] if len(sums) else np.nan})
    lo = int(wins["lo"].iloc[window]) if len(wins) > window else 0
    hi = int(wins["hi"].iloc[window]) if len(wins) > window else f.n_layers
    out = {"knockout": pd.DataFrame(rows).set_index("group"), "window": (lo, hi)}
    if len(sums):
        out["knockout_diff"] = _triple(est[0] - est[3], reps[:, 0] - reps[:, 3], level)
        with np.errstate(invalid="ignore", divide="ignore"):
            out["knockout_ratio"] = _triple(est[0] / est[3], reps[:, 0] / reps[:, 3], level)
    return out


def _attention_groups(f, select, side, max_tokens, n_boot, seed, level):
    L = f._parts[0].shape("tokens/attn_mass")[1]
    ng = len(GROUPS)
    cl = _Clusters(ng * (L + 2))   # per group: overall α, α per layer, position
    for _, c in _token_chunks(f, ["attn_mass", "is_punct"], select, side, max_tokens):
        if not len(c["row"]):
            continue
        pos, T = c["pos"], c["n_tok"]
        g = _group_of(pos, T, c["is_punct"] != 0)
        alpha = c["attn_mass"].astype(np.float64).mean(axis=2) / np.maximum(T - pos, 1)[:, None]
        vals = np.concatenate([alpha.mean(axis=1)[:, None], alpha, pos[:, None]], axis=1)
        V = np.zeros((len(pos), ng * (L + 2)))
        W = np.zeros_like(V)
        for k in range(ng):
            m = g == k
            V[m, k * (L + 2):(k + 1) * (L + 2)] = vals[m]
            W[m, k * (L + 2):(k + 1) * (L + 2)] = 1
        cl.add(c["pair"], V, W)
    sums, counts = cl.arrays()
    est, reps = bootstrap(sums, counts, n_boot, seed)
    ci = interval(reps, level) if len(sums) else np.full((ng * (L + 2), 2), np.nan)
    if not len(sums):
        est = np.full(ng * (L + 2), np.nan)
    n = counts.sum(axis=0) if len(counts) else np.zeros(ng * (L + 2))
    rows = []
    for k, name in enumerate(GROUPS):
        j = k * (L + 2)
        rows.append({"group": name, "tokens": int(n[j]), "mean": est[j], "ci_lo": ci[j, 0],
                     "ci_hi": ci[j, 1], "mean_pos": est[j + L + 1]})
    by_layer = pd.DataFrame({name: est[k * (L + 2) + 1:k * (L + 2) + 1 + L]
                             for k, name in enumerate(GROUPS)},
                            index=pd.RangeIndex(L, name="layer"))
    out = {"attention": pd.DataFrame(rows).set_index("group"), "attention_by_layer": by_layer}
    if len(sums):
        o = L + 2
        with np.errstate(invalid="ignore", divide="ignore"):
            out["attention_ratio"] = _triple(est[0] / est[o], reps[:, 0] / reps[:, o], level)
    return out
