"""Reading punctum output files (SPEC §5) as pandas DataFrames and xarray objects.

    import punctum
    f = punctum.open("sweep.h5")
    f.pairs                        # one row per committed pair, prompt texts joined in
    f.knockout.groupby("is_punct").kl.mean()
    t = f.tokens("sign-1", "b")    # one sequence: token text, is_punct, byte spans ...
    t.attn_mass.mean("head")       # ... and attention statistics as xarray (token, layer, head)
    ds = f.to_xarray()             # token-level arrays of the whole file, read lazily

Only committed rows are read (the root attribute ``committed_pairs``); the file may be
one a sweep is still writing (it is opened without locking, read in SWMR mode when
possible, and reads are retried on a fresh handle if the file changes underneath), or an
MPI view whose datasets are virtual datasets over ``OUT.rankR.h5``. Big tables are read
in slices (``iter_pairs(chunk=65536)`` and friends never hold more than one slice).
"""
from __future__ import annotations

import os
import time

import numpy as np
import pandas as pd

from ._store import RETRIES, TABLE_KEY, PunctumFormatError, StaleRead, discover

CHUNK = 65536
SIDES = pd.CategoricalDtype(["a", "b"])

_NA_INT = {"Int64", "Int32"}
# the stat `massive` (SPEC §3): per token and layer input, max |h_d|, its d, median |h_d|
MASSIVE = ("resid_max", "resid_argmax", "resid_median")


# string columns: pandas' own string dtype where it is the default (pandas >= 3), so that
# a slice whose strings are all missing has the same dtype as any other slice
_STR = pd.StringDtype(na_value=np.nan) if int(pd.__version__.split(".")[0]) >= 3 else object
_STR_COLS = {"id", "message", "text_a", "text_b", "pair_id", "text", "token", "token_a",
             "token_b"}


def _frame(cols, index=None):
    for k in _STR_COLS & set(cols):
        a = np.asarray(cols[k], dtype=object)
        if _STR is not object and (len(a) == 0 or pd.isna(a).all()):
            # nothing to infer the string dtype from (pandas infers it from a str element)
            a = pd.array(np.full(len(a), np.nan, dtype=object), dtype=_STR)
        cols[k] = a
    return pd.DataFrame(cols, index=index)


def _check(ok, p, what):
    """A reference that cannot be right in a committed row: the read was disturbed by a
    writer (unless the file is known to be damaged)."""
    if not p.damaged and not bool(np.all(ok)):
        raise StaleRead(f"{p.path}: inconsistent {what} (read while being written?)")


def _robust(fn, p, *args, **kw):
    """Build one frame; rebuild it on a fresh handle if its references are inconsistent."""
    delay = 0.02
    for attempt in range(RETRIES):
        try:
            return fn(p, *args, **kw)
        except StaleRead:
            if attempt == RETRIES - 1:
                raise
            time.sleep(delay)
            delay *= 2
            p.open()


def _cat_side(side_codes):
    codes = np.asarray(side_codes, dtype=np.int64)
    codes = np.where((codes == 0) | (codes == 1), codes, -1)
    return pd.Categorical.from_codes(codes, dtype=SIDES)


def _nullable(a, valid, dtype="Int64"):
    """Integer column with <NA> where not valid."""
    a = np.asarray(a)
    out = pd.array(np.where(valid, a, 0).astype(np.int64), dtype=dtype)
    if not np.all(valid):
        out[~np.asarray(valid, dtype=bool)] = pd.NA
    return out


def _nullable_bool(a):
    """int8 flags with -1 for missing -> nullable boolean."""
    col = pd.array(a == 1, dtype="boolean")
    col[a < 0] = pd.NA
    return col


GEN_KINDS = pd.CategoricalDtype(["clean", "knockout", "patching"])
GEN_STOPS = pd.CategoricalDtype(["length", "eos", "newline"])


def _objcol(n, fill=None):
    a = np.empty(n, dtype=object)
    a[:] = fill
    return a


class SeqTokens(pd.DataFrame):
    """The tokens of one sequence: a DataFrame (index: position) of token id, text,
    is_punct and byte spans, with the sequence's statistics as xarray DataArrays:

    ``attn_mass``, ``attn_last`` (token × layer × head), ``resid_norm``, ``resid_max``,
    ``resid_argmax``, ``resid_median`` (token × resid_layer; the last three with the stat
    massive), ``attn_pattern`` (layer × head × query × key, when patterns were
    stored), and ``info`` (a dict: seq, pair, pair_id, side, text, n_tok, ...).
    Frames derived from it (slices, groupbys) are plain DataFrames."""

    _metadata = ["_arrays", "info"]

    @property
    def _constructor(self):
        return pd.DataFrame

    def _da(self, name, dims):
        arrays = getattr(self, "_arrays", None) or {}
        if name not in arrays:
            raise AttributeError(f"{name}: not in this file (the sweep did not store it)")
        import xarray as xr

        a = arrays[name]
        if dims[0] == "token":
            coords = {
                "token": np.asarray(self.index),
                "text": ("token", np.asarray(self["text"], dtype=object)),
                "is_punct": ("token", np.asarray(self["is_punct"], dtype=bool)),
            }
        else:
            coords = {}
        for d, n in zip(dims, a.shape):
            if d in ("layer", "head", "resid_layer", "query", "key"):
                coords[d] = np.arange(n)
        return xr.DataArray(a, dims=dims, coords=coords, name=name,
                            attrs={k: v for k, v in self.info.items() if k != "text"})

    @property
    def attn_mass(self):
        return self._da("attn_mass", ("token", "layer", "head"))

    @property
    def attn_last(self):
        return self._da("attn_last", ("token", "layer", "head"))

    @property
    def resid_norm(self):
        return self._da("resid_norm", ("token", "resid_layer"))

    @property
    def resid_max(self):
        return self._da("resid_max", ("token", "resid_layer"))

    @property
    def resid_argmax(self):
        return self._da("resid_argmax", ("token", "resid_layer"))

    @property
    def resid_median(self):
        return self._da("resid_median", ("token", "resid_layer"))

    @property
    def attn_pattern(self):
        return self._da("attn_pattern", ("layer", "head", "query", "key"))


class PunctumFile:
    """An open punctum output file. See the module docstring; ``punctum.open`` makes one.

    Row numbers reported (the ``pair``, ``seq``, ``row`` indices and columns) are the
    file's own row numbers, or for an MPI view the view's."""

    def __init__(self, path):
        self.path = os.fspath(path)
        self._load()

    # ------------------------------------------------------------------ lifecycle
    def _load(self):
        """Open and take the committed-row snapshot, retrying while a writer is in the
        middle of an update (HDF5 then reports corrupt metadata or a failed filter)."""
        delay = 0.02
        for attempt in range(RETRIES):
            try:
                return self._load_once()
            except (OSError, RuntimeError, KeyError, PunctumFormatError) as e:
                if isinstance(e, FileNotFoundError) or attempt == RETRIES - 1:
                    raise
                for p in getattr(self, "_parts", []):
                    p.close()
                time.sleep(delay)
                delay *= 2

    def _load_once(self):
        attrs, parts, maps, is_view = discover(self.path)
        self.attrs = attrs
        self.is_view = is_view
        self._parts = parts
        for p in parts:
            p.compute_committed(fallback_pairs=None)
        self._map = {}
        for table, key in TABLE_KEY.items():
            placed, nxt = [], 0
            for i, p in enumerate(parts):
                m = maps[table][i] if maps else None
                if m is None:
                    m = (nxt, 1)
                placed.append(m)
                n = p.rows(key) if p.has(key) else 0
                nxt = max(nxt, m[0] + m[1] * n)
            self._map[table] = placed
        self._ids = {}
        self._cache = {}

    def refresh(self):
        """Re-open the file(s) and pick up pairs committed since opening."""
        self.close()
        self._load()
        return self

    def close(self):
        for p in getattr(self, "_parts", []):
            p.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        prog = ""
        if self.in_progress:
            prog = f", in progress: {self.rows_present} rows present"
        view = f", view over {len(self._parts)} files" if self.is_view else ""
        return (f"<punctum file {self.path!r}: {self.attrs.get('model_type', '?')} "
                f"L={self.n_layers} H={self.n_heads}, {self.n_pairs} committed pairs"
                f"{prog}{view}>")

    def __len__(self):
        return self.n_pairs

    # ------------------------------------------------------------------ metadata
    @property
    def n_layers(self):
        return int(self.attrs.get("n_layers", 0))

    @property
    def n_heads(self):
        return int(self.attrs.get("n_heads", 0))

    @property
    def n_pairs(self):
        """Committed pairs (the sum over the parts of a view)."""
        return sum(p.committed["pairs"] for p in self._parts)

    @property
    def committed_pairs(self):
        return self.n_pairs

    @property
    def rows_present(self):
        return sum(p.rows_present for p in self._parts)

    @property
    def in_progress(self):
        """True when rows past committed_pairs are present (a sweep still writing, or
        one interrupted before its last commit)."""
        return self.rows_present > self.n_pairs

    @property
    def n_seqs(self):
        return sum(p.committed["seqs"] for p in self._parts)

    @property
    def n_tokens(self):
        return sum(p.committed["tokens"] for p in self._parts)

    def has(self, what):
        """Whether the file holds a statistic: 'tokens', 'attn_mass', 'attn_last',
        'resid_norm', 'resid_cos', 'topk', 'patterns', 'knockout', 'patching', 'lens',
        'massive' (resid_max / resid_argmax / resid_median)."""
        name = {
            "tokens": "tokens/seq", "attn_mass": "tokens/attn_mass",
            "attn_last": "tokens/attn_last", "resid_norm": "tokens/resid_norm",
            "resid_cos": "pairs/resid_cos", "topk": "seqs/topk_id",
            "patterns": "patterns/value", "knockout": "ablation/knockout/seq",
            "patching": "patching/resid/pair", "lens": "lens/seq", "gen": "gen/seq",
            "massive": "tokens/resid_max",
        }.get(what, what)
        return self._parts[0].has(name)

    def counts(self):
        """Committed rows per table."""
        out = {}
        for t in TABLE_KEY:
            out[t] = sum(p.committed[t] for p in self._parts)
        return out

    @property
    def windows(self):
        """Knockout layer windows: DataFrame (index: window) of lo, hi ([lo, hi))."""
        p = self._parts[0]
        if not p.has("ablation/windows"):
            return pd.DataFrame({"lo": pd.Series([], dtype=np.int32),
                                 "hi": pd.Series([], dtype=np.int32)})
        w = p.read("ablation/windows").reshape(-1, 2)
        return pd.DataFrame({"lo": w[:, 0], "hi": w[:, 1]},
                            index=pd.RangeIndex(len(w), name="window"))

    # ------------------------------------------------------------------ index mapping
    def _g(self, table, p, local):
        start, stride = self._map[table][p.index]
        return start + np.asarray(local, dtype=np.int64) * stride

    def _segments(self, table, chunk):
        """(part, lo, hi) local committed ranges, in part order, at most chunk rows."""
        for p in sorted(self._parts, key=lambda q: self._map[table][q.index][0]):
            n = p.committed[table]
            for lo in range(0, n, chunk):
                yield p, lo, min(lo + chunk, n)

    def _pair_chunks(self, chunk):
        """Lists of (part, lo, hi) whose pairs fall in consecutive global ranges."""
        maps = self._map["pairs"]
        if all(m[1] == 1 for m in maps):
            for seg in self._segments("pairs", chunk):
                yield [seg]
            return
        G = max(m[0] + m[1] * p.committed["pairs"] for m, p in zip(maps, self._parts))
        for g0 in range(0, G, chunk):
            g1 = g0 + chunk
            segs = []
            for p in self._parts:
                start, stride = maps[p.index]
                n = p.committed["pairs"]
                lo = min(max(0, -(-(g0 - start) // stride)), n)
                hi = min(max(0, -(-(g1 - start) // stride)), n)
                if hi > lo:
                    segs.append((p, lo, hi))
            if segs:
                yield segs

    # ------------------------------------------------------------------ joins
    def _seq_fields(self, p, seq, fields):
        """Values of seqs columns at local seq indices (all valid)."""
        out = {}
        for f in fields:
            if f == "top1_id":
                if p.has("seqs/topk_id"):
                    out[f] = p.gather("seqs/topk_id", seq)[:, 0] if len(seq) else \
                        np.empty(0, np.int32)
            elif f == "top1_logprob":
                if p.has("seqs/topk_logprob"):
                    out[f] = p.gather("seqs/topk_logprob", seq)[:, 0] if len(seq) else \
                        np.empty(0, np.float32)
            elif p.has("seqs/" + f):
                out[f] = p.gather("seqs/" + f, seq)
        return out

    def _pair_ids(self, p, pair_local):
        return p.gather("pairs/id", pair_local)

    def _token_fields(self, p, tok_start, pos, fields=("text", "id", "is_punct")):
        """Token columns at (sequence start row + pos); NA where absent."""
        n = len(pos)
        rows = np.asarray(tok_start, dtype=np.int64) + np.asarray(pos, dtype=np.int64)
        ok = (np.asarray(tok_start) >= 0) & (rows >= 0) & (rows < p.committed["tokens"])
        out = {}
        if p.committed["tokens"] and p.has("tokens/pos") and ok.any():
            _check(p.gather("tokens/pos", rows[ok]) == np.asarray(pos)[ok], p, "token rows")
        for f in fields:
            name = "tokens/" + f
            if not p.has(name) or p.committed["tokens"] == 0:
                out[f] = None
                continue
            vals = p.gather(name, rows[ok])
            if f == "text":
                col = _objcol(n)
                col[ok] = vals
            else:
                col = np.zeros(n, dtype=np.int64)
                col[ok] = vals
                col = (col, ok)
            out[f] = col
        return out

    # ------------------------------------------------------------------ pairs
    def _pairs_frame(self, p, lo, hi, join=True):
        r = lambda name: p.read(name, lo, hi)  # noqa: E731
        n = hi - lo
        S = p.committed["seqs"]
        cols = {"id": r("pairs/id")}
        cols["line"] = r("pairs/line").astype(np.int64)
        status = r("pairs/status").astype(np.int8)
        cols["status"] = status
        cols["ok"] = status == 0
        cols["message"] = r("pairs/message") if p.has("pairs/message") else _objcol(n, "")
        seq = {}
        for side in ("a", "b"):
            name = "pairs/seq_" + side
            seq[side] = r(name).astype(np.int64) if p.has(name) else np.full(n, -1, np.int64)
            _check((seq[side] == -1) | ((seq[side] >= 0) & (seq[side] < S)), p, name)
        if join:
            fields = ["text", "n_tok", "entropy", "top1_id", "top1_logprob", "target_id",
                      "target_logprob"]
            joined = {}
            for side in ("a", "b"):
                s = seq[side]
                valid = (s >= 0) & (s < S)
                vals = self._seq_fields(p, s[valid], fields)
                joined[side] = (valid, vals)
            for f in fields:
                for side in ("a", "b"):
                    valid, vals = joined[side]
                    if f not in vals:
                        continue
                    v = vals[f]
                    if f == "text":
                        col = _objcol(n)
                        col[valid] = v
                    elif f in ("n_tok", "top1_id", "target_id"):
                        full = np.full(n, -1, dtype=np.int64)
                        full[valid] = v
                        good = valid & (full >= 0) if f == "target_id" else valid
                        col = _nullable(full, good, "Int64")
                    else:
                        col = np.full(n, np.nan, dtype=np.float32)
                        col[valid] = v
                    cols[f"{f}_{side}"] = col
        for k in ("kl_ab", "kl_ba", "js", "gen_kl_ab"):
            if p.has("pairs/" + k):
                cols[k] = r("pairs/" + k)
        if p.has("pairs/gen_diverge"):
            dv = r("pairs/gen_diverge").astype(np.int64)
            cols["gen_diverge"] = dv
        if p.has("pairs/resid_cos"):
            rc = r("pairs/resid_cos")
            cols["resid_cos_final"] = rc[:, -1] if rc.ndim == 2 and rc.shape[1] else \
                np.full(n, np.nan, np.float32)
        for side in ("a", "b"):
            s = seq[side]
            valid = (s >= 0) & (s < S)
            cols["seq_" + side] = _nullable(self._g("seqs", p, s), valid)
        idx = pd.Index(self._g("pairs", p, np.arange(lo, hi)), name="pair")
        df = _frame(cols, idx)
        order = ["id", "line", "status", "ok", "message", "text_a", "text_b", "n_tok_a",
                 "n_tok_b", "kl_ab", "kl_ba", "js", "resid_cos_final", "entropy_a",
                 "entropy_b", "top1_id_a", "top1_id_b", "top1_logprob_a", "top1_logprob_b",
                 "target_id_a", "target_id_b", "target_logprob_a", "target_logprob_b",
                 "gen_diverge", "gen_kl_ab", "seq_a", "seq_b"]
        return df[[c for c in order if c in df.columns]]

    def iter_pairs(self, chunk=CHUNK, join=True):
        """Committed pairs as DataFrames of at most ``chunk`` rows, in file (view) order.
        join=False skips the prompt texts and sequence statistics (faster)."""
        for segs in self._pair_chunks(chunk):
            frames = [_robust(self._pairs_frame, p, lo, hi, join=join) for p, lo, hi in segs]
            df = frames[0] if len(frames) == 1 else pd.concat(frames).sort_index()
            yield df

    def read_pairs(self, rows):
        """Pairs at the given global row numbers (any order) as one DataFrame."""
        rows = np.atleast_1d(np.asarray(rows, dtype=np.int64))
        frames = []
        for g in rows:
            p, local = self._locate_pair(int(g))
            frames.append(_robust(self._pairs_frame, p, local, local + 1))
        if not frames:
            return self._pairs_frame(self._parts[0], 0, 0)
        return pd.concat(frames)

    @property
    def pairs(self):
        """All committed pairs: DataFrame indexed by pair row, with id, line, status,
        message, the two prompts' texts and token counts, kl_ab/kl_ba/js, the final
        resid_cos, per-side entropy, top-1 token and target log-prob, and the seqs rows.
        Loads the whole table: for big files use ``iter_pairs``."""
        if "pairs" not in self._cache:
            frames = list(self.iter_pairs())
            self._cache["pairs"] = pd.concat(frames) if frames else \
                self._pairs_frame(self._parts[0], 0, 0)
        return self._cache["pairs"]

    @property
    def failures(self):
        """Pairs whose status is not 0 (skipped records): id, line, status, message."""
        out = []
        for df in self.iter_pairs(join=False):
            bad = df[df.status != 0]
            if len(bad):
                out.append(bad[["id", "line", "status", "message"]])
        if not out:
            return self._pairs_frame(self._parts[0], 0, 0, join=False)[
                ["id", "line", "status", "message"]]
        return pd.concat(out)

    @property
    def resid_cos(self):
        """resid_cos per pair (rows) and layer (columns 0..L; L: final residual)."""
        frames = []
        for p, lo, hi in self._segments("pairs", CHUNK):
            if not p.has("pairs/resid_cos"):
                continue
            v = p.read("pairs/resid_cos", lo, hi)
            frames.append(pd.DataFrame(
                v, index=pd.Index(self._g("pairs", p, np.arange(lo, hi)), name="pair"),
                columns=pd.RangeIndex(v.shape[1], name="layer")))
        if not frames:
            return pd.DataFrame(index=pd.Index([], name="pair", dtype=np.int64))
        return pd.concat(frames).sort_index()

    def _locate_pair(self, g):
        for p in self._parts:
            start, stride = self._map["pairs"][p.index]
            if g >= start and (g - start) % stride == 0:
                local = (g - start) // stride
                if local < p.committed["pairs"]:
                    return p, int(local)
        raise KeyError(f"pair row {g}: no such committed pair")

    def pair_index(self, pair):
        """Global row of a pair given its record id (str) or its row number (int)."""
        if isinstance(pair, (int, np.integer)) and not isinstance(pair, bool):
            self._locate_pair(int(pair))
            return int(pair)
        key = str(pair)
        if key in self._ids:
            return self._ids[key]
        for p, lo, hi in self._segments("pairs", CHUNK):
            ids = p.read("pairs/id", lo, hi)
            hit = np.nonzero(ids == key)[0]
            if hit.size:
                g = int(self._g("pairs", p, lo + int(hit[0])))
                if len(self._ids) > 4096:
                    self._ids.clear()
                self._ids[key] = g
                return g
        raise KeyError(f"pair id {key!r}: no committed pair has this id")

    # ------------------------------------------------------------------ seqs
    def _seqs_frame(self, p, lo, hi):
        r = lambda name: p.read(name, lo, hi)  # noqa: E731
        P = p.committed["pairs"]
        pair = r("seqs/pair").astype(np.int64)
        keep = (pair >= 0) & (pair < P)
        cols = {}
        cols["pair"] = self._g("pairs", p, pair)
        ids = _objcol(hi - lo)
        ids[keep] = self._pair_ids(p, pair[keep])
        cols["pair_id"] = ids
        cols["side"] = _cat_side(r("seqs/side"))
        cols["text"] = r("seqs/text")
        n_tok = r("seqs/n_tok").astype(np.int64)
        cols["n_tok"] = n_tok
        if p.has("seqs/tok_start"):
            ts = r("seqs/tok_start").astype(np.int64)
            cols["tok_start"] = _nullable(self._g("tokens", p, ts), ts >= 0)
        if p.has("seqs/entropy"):
            cols["entropy"] = r("seqs/entropy")
        if p.has("seqs/topk_id"):
            cols["top1_id"] = r("seqs/topk_id")[:, 0]
            cols["top1_logprob"] = r("seqs/topk_logprob")[:, 0]
        if p.has("seqs/target_id"):
            t = r("seqs/target_id").astype(np.int64)
            cols["target_id"] = _nullable(t, t >= 0)
            cols["target_logprob"] = r("seqs/target_logprob")
        idx = pd.Index(self._g("seqs", p, np.arange(lo, hi)), name="seq")
        df = _frame(cols, idx)
        return df[keep] if not keep.all() else df

    def iter_seqs(self, chunk=CHUNK):
        for p, lo, hi in self._segments("seqs", chunk):
            yield _robust(self._seqs_frame, p, lo, hi)

    @property
    def seqs(self):
        """All committed sequences (one per prompt): pair, pair_id, side ('a'/'b'), text,
        n_tok, tok_start (row in /tokens), entropy, top-1 id and log-prob, target."""
        if "seqs" not in self._cache:
            frames = list(self.iter_seqs())
            self._cache["seqs"] = pd.concat(frames) if frames else pd.DataFrame(
                index=pd.Index([], name="seq", dtype=np.int64))
        return self._cache["seqs"]

    @property
    def topk(self):
        """Top-k next tokens per sequence, long format: seq, rank, token_id, logprob."""
        frames = []
        for p, lo, hi in self._segments("seqs", CHUNK):
            if not p.has("seqs/topk_id"):
                break
            ids = p.read("seqs/topk_id", lo, hi)
            lps = p.read("seqs/topk_logprob", lo, hi)
            K = ids.shape[1]
            frames.append(pd.DataFrame({
                "seq": np.repeat(self._g("seqs", p, np.arange(lo, hi)), K),
                "rank": np.tile(np.arange(K), hi - lo),
                "token_id": ids.reshape(-1), "logprob": lps.reshape(-1)}))
        if not frames:
            return pd.DataFrame({"seq": [], "rank": [], "token_id": [], "logprob": []})
        return pd.concat(frames, ignore_index=True)

    def _seq_join(self, p, seq_local):
        """Per-row sequence info for local seq indices: (valid, dict of arrays)."""
        S = p.committed["seqs"]
        valid = (seq_local >= 0) & (seq_local < S)
        s = seq_local[valid]
        info = self._seq_fields(p, s, ["pair", "side", "n_tok", "tok_start"])
        n = len(seq_local)
        out = {}
        pair = np.full(n, -1, np.int64)
        pair[valid] = info["pair"]
        side = np.full(n, -1, np.int64)
        side[valid] = info["side"]
        n_tok = np.full(n, -1, np.int64)
        n_tok[valid] = info["n_tok"]
        ts = np.full(n, -1, np.int64)
        if "tok_start" in info:
            ts[valid] = info["tok_start"]
        _check((pair[valid] >= 0) & (pair[valid] < p.committed["pairs"])
               & ((side[valid] == 0) | (side[valid] == 1)) & (n_tok[valid] >= 1), p,
               "/seqs rows")
        ids = _objcol(n)
        pv = valid & (pair >= 0) & (pair < p.committed["pairs"])
        ids[pv] = self._pair_ids(p, pair[pv])
        out.update(pair=pair, side=side, n_tok=n_tok, tok_start=ts, pair_id=ids)
        return valid, out

    # ------------------------------------------------------------------ knockout
    def _knockout_frame(self, p, lo, hi):
        g = "ablation/knockout/"
        r = lambda name: p.read(g + name, lo, hi)  # noqa: E731
        seq = r("seq").astype(np.int64)
        valid, info = self._seq_join(p, seq)
        pos = r("pos").astype(np.int64)
        win = r("window").astype(np.int64)
        _check((pos[valid] >= 0) & (pos[valid] < info["n_tok"][valid]), p, "knockout positions")
        toks = self._token_fields(p, info["tok_start"], pos)
        wdf = self.windows
        wl = np.full(len(win), -1, np.int64)
        wh = np.full(len(win), -1, np.int64)
        okw = (win >= 0) & (win < len(wdf))
        wl[okw] = wdf["lo"].to_numpy()[win[okw]]
        wh[okw] = wdf["hi"].to_numpy()[win[okw]]
        cols = {
            "seq": self._g("seqs", p, seq),
            "pair": _nullable(self._g("pairs", p, info["pair"]), info["pair"] >= 0),
            "pair_id": info["pair_id"],
            "side": _cat_side(info["side"]),
            "pos": pos,
            "n_tok": info["n_tok"],
            "dist_to_last": info["n_tok"] - 1 - pos,
            "token": toks["text"] if toks["text"] is not None else _objcol(len(pos)),
        }
        if toks["id"] is not None:
            cols["token_id"] = _nullable(*toks["id"], "Int64")
            v, ok = toks["is_punct"]
            cols["is_punct"] = pd.array(np.where(ok, v != 0, False), dtype="boolean")
            if not ok.all():
                cols["is_punct"][~ok] = pd.NA
        cols.update({
            "window": win, "lo": wl, "hi": wh,
            "kl": r("kl"), "dlogp_top1": r("dlogp_top1"),
            "dlogp_target": r("dlogp_target") if p.has(g + "dlogp_target") else
            np.full(len(pos), np.nan, np.float32),
            "top1_changed": r("top1_changed") != 0,
        })
        idx = pd.Index(self._g("knockout", p, np.arange(lo, hi)), name="row")
        df = _frame(cols, idx)
        return df[valid] if not valid.all() else df

    def iter_knockout(self, chunk=CHUNK):
        for p, lo, hi in self._segments("knockout", chunk):
            yield _robust(self._knockout_frame, p, lo, hi)

    @property
    def knockout(self):
        """Attention-knockout rows: seq, pair, pair_id, side, pos (the knocked-out
        position), n_tok, dist_to_last (n_tok-1-pos), token (its text), token_id,
        is_punct, window, lo, hi (layers [lo, hi)), kl, dlogp_top1, dlogp_target,
        top1_changed. Empty without --ablate knockout."""
        return self._full("knockout", self.iter_knockout, self._knockout_frame)

    def _full(self, key, it, empty_fn):
        if key not in self._cache:
            frames = list(it())
            if frames:
                self._cache[key] = pd.concat(frames)
            elif self._parts[0].has(TABLE_KEY[key]):
                self._cache[key] = empty_fn(self._parts[0], 0, 0)
            else:
                self._cache[key] = pd.DataFrame()
        return self._cache[key]

    # ------------------------------------------------------------------ patching
    def _patching_frame(self, p, lo, hi):
        g = "patching/resid/"
        r = lambda name: p.read(g + name, lo, hi)  # noqa: E731
        pair = r("pair").astype(np.int64)
        P = p.committed["pairs"]
        valid = (pair >= 0) & (pair < P)
        n = hi - lo
        pos = r("pos").astype(np.int64)
        ids = _objcol(n)
        ids[valid] = self._pair_ids(p, pair[valid])
        sa = np.full(n, -1, np.int64)
        sb = np.full(n, -1, np.int64)
        sa[valid] = p.gather("pairs/seq_a", pair[valid])
        sb[valid] = p.gather("pairs/seq_b", pair[valid])
        _, ia = self._seq_join(p, sa)
        _, ib = self._seq_join(p, sb)
        ta = self._token_fields(p, ia["tok_start"], pos)
        tb = self._token_fields(p, ib["tok_start"], pos, fields=("text",))
        cols = {
            "pair": self._g("pairs", p, pair), "pair_id": ids,
            "layer": r("layer").astype(np.int64), "pos": pos,
            "n_tok": ia["n_tok"], "dist_to_last": ia["n_tok"] - 1 - pos,
            "token_a": ta["text"] if ta["text"] is not None else _objcol(n),
            "token_b": tb["text"] if tb["text"] is not None else _objcol(n),
        }
        if ta["is_punct"] is not None:
            v, ok = ta["is_punct"]
            col = pd.array(np.where(ok, v != 0, False), dtype="boolean")
            if not ok.all():
                col[~ok] = pd.NA
            cols["is_punct"] = col
        cols.update({"kl_to_b": r("kl_to_b"), "kl_from_a": r("kl_from_a"),
                     "dlogp_top1_b": r("dlogp_top1_b")})
        idx = pd.Index(self._g("patching", p, np.arange(lo, hi)), name="row")
        df = _frame(cols, idx)
        return df[valid] if not valid.all() else df

    def iter_patching(self, chunk=CHUNK):
        for p, lo, hi in self._segments("patching", chunk):
            yield _robust(self._patching_frame, p, lo, hi)

    @property
    def patching(self):
        """Residual-patching rows: pair, pair_id, layer, pos, n_tok, dist_to_last,
        token_a, token_b (texts at pos), is_punct (of a's token), kl_to_b, kl_from_a,
        dlogp_top1_b. Empty without --patch resid."""
        return self._full("patching", self.iter_patching, self._patching_frame)

    # ------------------------------------------------------------------ generation
    def _gen_frame(self, p, lo, hi):
        g = "gen/"
        r = lambda name: p.read(g + name, lo, hi)  # noqa: E731
        seq = r("seq").astype(np.int64)
        valid, info = self._seq_join(p, seq)
        n = hi - lo
        kind = r("kind").astype(np.int64)
        variant = r("variant").astype(np.int64)
        ts = r("tok_start").astype(np.int64)
        nt = r("n_tok").astype(np.int64)
        GT = p.committed["gen_tokens"]
        ok_tok = (ts >= 0) & (nt >= 0) & (ts + nt <= GT)
        _check(ok_tok[valid], p, "/gen token rows")
        ids = p.read(g + "tokens/id", 0, GT) if GT else np.zeros(0, np.int32)
        lps = p.read(g + "tokens/logprob", 0, GT) if GT else np.zeros(0, np.float32)
        tok_ids, lp_sum = _objcol(n), np.full(n, np.nan, np.float64)
        for i in np.flatnonzero(ok_tok):
            tok_ids[i] = ids[ts[i]:ts[i] + nt[i]].tolist()
            lp_sum[i] = float(np.sum(lps[ts[i]:ts[i] + nt[i]], dtype=np.float64))
        # the variant each row continues: knockout (pos, window) or patching (layer, pos)
        pos = np.full(n, -1, np.int64)
        layer = np.full(n, -1, np.int64)
        window = np.full(n, -1, np.int64)
        ko = (kind == 1) & (variant >= 0) & (variant < p.committed["knockout"])
        pa = (kind == 2) & (variant >= 0) & (variant < p.committed["patching"])
        if ko.any():
            pos[ko] = p.gather("ablation/knockout/pos", variant[ko])
            window[ko] = p.gather("ablation/knockout/window", variant[ko])
        if pa.any():
            pos[pa] = p.gather("patching/resid/pos", variant[pa])
            layer[pa] = p.gather("patching/resid/layer", variant[pa])
        vrow = np.where(ko, self._g("knockout", p, variant),
                        np.where(pa, self._g("patching", p, variant), -1))

        flag = lambda a: _nullable_bool(a.astype(np.int64))  # noqa: E731

        cols = {
            "seq": self._g("seqs", p, seq),
            "pair": _nullable(self._g("pairs", p, info["pair"]), info["pair"] >= 0),
            "pair_id": info["pair_id"],
            "side": _cat_side(info["side"]),
            "kind": pd.Categorical.from_codes(np.clip(kind, 0, 2), GEN_KINDS.categories),
            "variant": _nullable(vrow, vrow >= 0),
            "pos": _nullable(pos, pos >= 0),
            "window": _nullable(window, window >= 0),
            "layer": _nullable(layer, layer >= 0),
            "n_tok": nt,
            "text": r("text"),
            "stop": pd.Categorical.from_codes(np.clip(r("stop").astype(np.int64), 0, 2),
                                              GEN_STOPS.categories),
            "diverge": r("diverge").astype(np.int64),
            "hit": flag(r("hit")),
            "hit_b": flag(r("hit_b")),
            "token_ids": tok_ids,
            "logprob_sum": lp_sum,
        }
        idx = pd.Index(self._g("gen", p, np.arange(lo, hi)), name="row")
        df = _frame(cols, idx)
        return df[valid] if not valid.all() else df

    def iter_gen(self, chunk=CHUNK):
        for p, lo, hi in self._segments("gen", chunk):
            yield _robust(self._gen_frame, p, lo, hi)

    @property
    def gen(self):
        """Generated continuations (``--generate``), one row per continued sequence: seq,
        pair, pair_id, side, kind (clean / knockout / patching), variant (its row in
        ``knockout`` / ``patching``), pos, window (knockout), layer (patching), n_tok, text,
        stop (length / eos / newline), diverge (first step differing from the other side for
        clean rows, from the clean continuation for variants; -1 none), hit / hit_b (whether
        the text has target / target_b as a whole word; NA without one), token_ids,
        logprob_sum. Per pair, ``pairs`` has gen_diverge and gen_kl_ab. Empty without
        --generate."""
        return self._full("gen", self.iter_gen, self._gen_frame)

    # ------------------------------------------------------------------ lens
    def _lens_frame(self, p, lo, hi):
        r = lambda name: p.read("lens/" + name, lo, hi)  # noqa: E731
        seq = r("seq").astype(np.int64)
        valid, info = self._seq_join(p, seq)
        pos = r("pos").astype(np.int64)
        _check((pos[valid] >= 0) & (pos[valid] < info["n_tok"][valid]), p, "lens positions")
        toks = self._token_fields(p, info["tok_start"], pos)
        top1 = r("logp_top1")
        tgt = r("logp_target") if p.has("lens/logp_target") else np.full_like(top1, np.nan)
        if not valid.all():
            keep = np.nonzero(valid)[0]
            seq, pos, top1, tgt = seq[keep], pos[keep], top1[keep], tgt[keep]
            info = {k: v[keep] for k, v in info.items()}
            toks = {k: (None if v is None else
                        (v[0][keep], v[1][keep]) if isinstance(v, tuple) else v[keep])
                    for k, v in toks.items()}
            rows = self._g("lens", p, np.arange(lo, hi))[keep]
        else:
            rows = self._g("lens", p, np.arange(lo, hi))
        n, L1 = top1.shape if top1.ndim == 2 else (len(seq), 0)
        rep = lambda a: np.repeat(a, L1)  # noqa: E731
        cols = {
            "row": rep(rows),
            "seq": rep(self._g("seqs", p, seq)),
            "pair": rep(self._g("pairs", p, info["pair"])),
            "pair_id": rep(info["pair_id"]),
            "side": _cat_side(rep(info["side"])),
            "pos": rep(pos), "n_tok": rep(info["n_tok"]),
            "dist_to_last": rep(info["n_tok"] - 1 - pos),
            "is_final": rep(pos == info["n_tok"] - 1),
            "token": rep(toks["text"]) if toks["text"] is not None else _objcol(n * L1),
        }
        if toks["is_punct"] is not None:
            v, ok = toks["is_punct"]
            col = pd.array(np.where(ok, v != 0, False), dtype="boolean")
            if not ok.all():
                col[~ok] = pd.NA
            cols["is_punct"] = pd.array(np.repeat(np.asarray(col, dtype=object), L1),
                                        dtype="boolean")
        cols["layer"] = np.tile(np.arange(L1), n)
        cols["logp_top1"] = top1.reshape(-1)
        cols["logp_target"] = tgt.reshape(-1)
        return _frame(cols)

    def iter_lens(self, chunk=CHUNK):
        """Logit-lens rows in long format, one row per (lens row, layer); ``chunk``
        counts lens rows (each gives L+1 DataFrame rows)."""
        for p, lo, hi in self._segments("lens", chunk):
            yield _robust(self._lens_frame, p, lo, hi)

    @property
    def lens(self):
        """Logit lens, long format: row (in /lens), seq, pair, pair_id, side, pos, n_tok,
        dist_to_last, is_final, token, is_punct, layer (0..L; the residual entering that
        layer, L: final), logp_top1, logp_target. Empty without lens in --stats."""
        if "lens" not in self._cache:
            frames = list(self.iter_lens())
            if frames:
                self._cache["lens"] = pd.concat(frames, ignore_index=True)
            elif self._parts[0].has("lens/seq"):
                self._cache["lens"] = self._lens_frame(self._parts[0], 0, 0)
            else:
                self._cache["lens"] = pd.DataFrame()
        return self._cache["lens"]

    # ------------------------------------------------------------------ one sequence
    def _seq_of(self, pair, side):
        g = self.pair_index(pair)
        p, local = self._locate_pair(g)
        side_n = {"a": 0, "b": 1, 0: 0, 1: 1}.get(side)
        if side_n is None:
            raise ValueError(f"side must be 'a' or 'b', not {side!r}")
        s = int(p.read("pairs/seq_" + "ab"[side_n], local, local + 1)[0])
        if s < 0 or s >= p.committed["seqs"]:
            status = int(p.read("pairs/status", local, local + 1)[0])
            why = "the record was skipped" if status else f"the pair has no side {'ab'[side_n]}"
            raise KeyError(f"pair {pair!r} side {'ab'[side_n]}: no sequence ({why})")
        return g, p, local, s, "ab"[side_n]

    def tokens(self, pair, side="a"):
        """The tokens of one sequence (pair: record id or pair row; side: 'a' or 'b')."""
        g, p, local, s, side = self._seq_of(pair, side)
        return _robust(self._tokens_of, p, g, local, s, side)

    def _tokens_of(self, p, g, local, s, side):
        sf = self._seq_fields(p, np.array([s]), ["text", "n_tok", "tok_start", "entropy",
                                                 "target_id", "target_logprob",
                                                 "pattern_start"])
        n = int(sf["n_tok"][0])
        ts = int(sf["tok_start"][0]) if "tok_start" in sf else -1
        info = {"seq": int(self._g("seqs", p, s)), "pair": g,
                "pair_id": str(p.read("pairs/id", local, local + 1)[0]), "side": side,
                "text": sf["text"][0], "n_tok": n}
        if "entropy" in sf:
            info["entropy"] = float(sf["entropy"][0])
        if "target_id" in sf and int(sf["target_id"][0]) >= 0:
            info["target_id"] = int(sf["target_id"][0])
            info["target_logprob"] = float(sf["target_logprob"][0])
        arrays = {}
        cols = {}
        if ts >= 0 and p.has("tokens/seq") and ts + n <= p.committed["tokens"]:
            rd = lambda name: p.read("tokens/" + name, ts, ts + n)  # noqa: E731
            _check((rd("seq") == s) & (rd("pos") == np.arange(n)), p, "token rows")
            cols = {"id": rd("id"), "text": rd("text"), "is_punct": rd("is_punct") != 0,
                    "byte_start": rd("byte_start"), "byte_end": rd("byte_end")}
            if p.has("tokens/role"):  # 0 chat template, 1 prompt text, 2 generated (SPEC §2)
                cols["role"] = rd("role").astype(np.int8)
            for name in ("attn_mass", "attn_last", "resid_norm") + MASSIVE:
                if p.has("tokens/" + name):
                    arrays[name] = rd(name)
            if "pattern_start" in sf and p.has("patterns/value") and sf["pattern_start"][0] >= 0:
                ps = int(sf["pattern_start"][0])
                rows = p.read("patterns/value", ps, ps + n * (n + 1) // 2)  # [R, L, H]
                full = np.zeros((rows.shape[1], rows.shape[2], n, n), dtype=rows.dtype)
                ii, jj = np.tril_indices(n)
                full[:, :, ii, jj] = rows.transpose(1, 2, 0)
                arrays["attn_pattern"] = full
        else:
            cols = {"id": np.empty(0, np.int32), "text": np.empty(0, object),
                    "is_punct": np.empty(0, bool), "byte_start": np.empty(0, np.int32),
                    "byte_end": np.empty(0, np.int32)}
        cols["text"] = _frame({"text": cols["text"]})["text"].array
        df = SeqTokens(cols, index=pd.RangeIndex(len(cols["id"]), name="pos"))
        df._arrays = arrays
        df.info = info
        return df

    # ------------------------------------------------------------------ xarray
    def _select_seqs(self, pairs, side):
        """-> list of (part, local seq) for a pair selection (ids, rows, slice, frame)."""
        if isinstance(pairs, pd.DataFrame):
            pairs = list(pairs.index)
        elif isinstance(pairs, slice):
            pairs = range(*pairs.indices(max(
                (m[0] + m[1] * p.committed["pairs"]
                 for m, p in zip(self._map["pairs"], self._parts)), default=0)))
        elif isinstance(pairs, (str, int, np.integer)):
            pairs = [pairs]
        sides = ("a", "b") if side is None else (side,)
        out = []
        for pr in pairs:
            try:
                g = self.pair_index(pr)
                p, local = self._locate_pair(g)
            except KeyError:
                if isinstance(pr, str):
                    raise
                continue
            for sd in sides:
                s = int(p.read("pairs/seq_" + sd, local, local + 1)[0])
                if 0 <= s < p.committed["seqs"]:
                    out.append((p, s))
        return out

    def to_xarray(self, pairs=None, side=None):
        """Token-level arrays as an xarray Dataset on a flat ``token`` dimension.

        Data variables (those the file holds): attn_mass, attn_last (token, layer, head),
        resid_norm, resid_max, resid_argmax, resid_median (token, resid_layer).
        Coordinates on ``token``: token_row (row in /tokens), seq, pair, pair_id, side,
        pos, text, tok_id, is_punct.
        pairs=None: the whole file, read lazily (nothing is loaded until used; select
        first, e.g. ``ds.isel(token=slice(0, 1000))`` or ``ds.where(ds.is_punct)``).
        pairs=[ids or rows] / slice of rows / a DataFrame of pairs: those pairs' tokens,
        loaded (side='a' or 'b' for one side only)."""
        import xarray as xr

        from ._xr import lazy_rows

        if not self.has("tokens"):
            raise ValueError(f"{self.path}: no /tokens (the sweep stored no token "
                             "statistics: --stats without mass, last or resid)")
        if pairs is None:
            segs = [(p, 0, p.committed["tokens"]) for p in
                    sorted(self._parts, key=lambda q: self._map["tokens"][q.index][0])
                    if p.committed["tokens"] > 0]
            lazy = True
        else:
            segs = []
            for p, s in self._select_seqs(pairs, side):
                ts = int(p.read("seqs/tok_start", s, s + 1)[0])
                n = int(p.read("seqs/n_tok", s, s + 1)[0])
                if ts >= 0 and n > 0:
                    segs.append((p, ts, ts + n))
            lazy = False
        p0 = self._parts[0]

        def col(fetch, trail, dtype, fetch_sel=None):
            return lazy_rows(segs, fetch, trail, dtype, lazy=lazy, fetch_sel=fetch_sel)

        def plain(name):
            def fetch(p, lo, hi):
                return p.read("tokens/" + name, lo, hi)
            return fetch

        def plain_sel(name):  # a layer (or head) selection goes to h5py: fewer chunks read
            def fetch(p, lo, hi, sel):
                return p.read("tokens/" + name, lo, hi, sel)
            return fetch

        def seqinfo(key):
            def fetch(p, lo, hi):
                s = p.read("tokens/seq", lo, hi).astype(np.int64)
                valid, info = self._seq_join(p, s)
                if key == "seq":
                    return self._g("seqs", p, s)
                if key == "pair":
                    return self._g("pairs", p, info["pair"])
                if key == "side":
                    return np.array(["a", "b", ""], dtype=object)[
                        np.where(info["side"] >= 0, info["side"], 2)]
                return info[key]
            return fetch

        L, H = self.n_layers, self.n_heads
        data_vars = {}
        for name, dims in (("attn_mass", ("token", "layer", "head")),
                           ("attn_last", ("token", "layer", "head")),
                           ("resid_norm", ("token", "resid_layer")),
                           *((m, ("token", "resid_layer")) for m in MASSIVE)):
            if p0.has("tokens/" + name):
                shp = p0.shape("tokens/" + name)[1:]
                dt = p0.ds("tokens/" + name).dtype
                dt = np.dtype(np.float32) if dt == np.float16 else dt
                data_vars[name] = (dims, col(plain(name), shp, dt, plain_sel(name)))
        coords = {
            "token_row": ("token", col(lambda p, lo, hi: self._g("tokens", p, np.arange(lo, hi)),
                                       (), np.dtype(np.int64))),
            "seq": ("token", col(seqinfo("seq"), (), np.dtype(np.int64))),
            "pair": ("token", col(seqinfo("pair"), (), np.dtype(np.int64))),
            "pair_id": ("token", col(seqinfo("pair_id"), (), np.dtype(object))),
            "side": ("token", col(seqinfo("side"), (), np.dtype(object))),
            "pos": ("token", col(plain("pos"), (), np.dtype(np.int32))),
            "text": ("token", col(plain("text"), (), np.dtype(object))),
            "tok_id": ("token", col(plain("id"), (), np.dtype(np.int32))),
            "is_punct": ("token", col(lambda p, lo, hi: p.read("tokens/is_punct", lo, hi) != 0,
                                      (), np.dtype(bool))),
        }
        if L:
            coords["layer"] = np.arange(L)
        if H:
            coords["head"] = np.arange(H)
        for name in ("resid_norm",) + MASSIVE:
            if name in data_vars:
                coords["resid_layer"] = np.arange(data_vars[name][1].shape[1])
        ds = xr.Dataset(data_vars, coords=coords,
                        attrs={k: v for k, v in self.attrs.items()
                               if isinstance(v, (str, int, float))})
        ds.attrs["source"] = os.path.abspath(self.path)
        return ds


def open(path):  # noqa: A001 - the package's entry point is punctum.open
    """Open a punctum output file (or MPI view) for reading. See PunctumFile."""
    return PunctumFile(path)
