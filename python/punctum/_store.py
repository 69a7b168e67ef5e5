"""Low-level access to punctum HDF5 files: opening without locking, retrying reads on a
file that a sweep is still writing, committed-row bookkeeping, and MPI views.

A *part* is one self-contained punctum file (a plain output file, or one
`OUT.rankR.h5` of an MPI run). A plain file is one part. An MPI view (`OUT.h5` whose
datasets are HDF5 virtual datasets over the rank files) is read as its parts: each rank
file carries its own `committed_pairs` and its own, local, row indices; the view's
virtual-dataset mappings say where each part's rows sit in the view, and that placement
gives the global row numbers the reader reports (they equal the view's row numbers).
"""
from __future__ import annotations

import os
import time
import warnings

import h5py
import numpy as np

RETRIES = 9          # reads retried (file reopened) this many times on a changing file
                     # (backing off 20 ms, 40 ms, ... : about 5 s in all)
GAP = 2048           # gather(): rows between wanted rows that are read rather than skipped
SCAN = 65536         # rows per read when scanning backwards for committed rows
# HDF5 chunk cache per dataset. Reads here are large sequential slices, so a big cache buys
# little; with h5py's default preemption policy (w0 0.75) one pass over a 1M-pair file was
# measured to grow the resident set by ~170 MB, with w0 = 1 (evict fully read chunks
# first) by a few tens. 1 MiB holds one of the engine's chunks (up to 512 KiB) whole.
RDCC = {"rdcc_nbytes": 1024 * 1024, "rdcc_w0": 1.0}

# table -> the dataset whose virtual-dataset mapping places a part's rows in a view
TABLE_KEY = {
    "pairs": "pairs/id",
    "seqs": "seqs/pair",
    "tokens": "tokens/seq",
    "patterns": "patterns/value",
    "knockout": "ablation/knockout/seq",
    "patching": "patching/resid/pair",
    "lens": "lens/seq",
    "gen": "gen/seq",
    "gen_tokens": "gen/tokens/id",
}
TABLE_GROUP = {
    "pairs": "pairs", "seqs": "seqs", "tokens": "tokens", "patterns": "patterns",
    "knockout": "ablation/knockout", "patching": "patching/resid", "lens": "lens",
    "gen": "gen", "gen_tokens": "gen/tokens",
}


SETTLE = 0.05        # a file unmodified this long (s) is taken to be between two commits
CHANGE_WAIT = 30.0   # give up after this long (s) without a read the file did not disturb


class PunctumFormatError(ValueError):
    """The file is not a punctum output file (or not one this reader understands)."""


class StaleRead(RuntimeError):
    """Data read from a file that a writer changed underneath: read again."""


def _stamp(path):
    st = os.stat(path)
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def wait_quiet(path, settle=SETTLE, limit=CHANGE_WAIT):
    """Wait until the file has not been modified for `settle` seconds (a sweep writes a
    commit in one burst, then computes: a quiet file is one between commits)."""
    t0 = time.monotonic()
    while True:
        try:
            age = time.time() - os.stat(path).st_mtime_ns / 1e9
        except OSError:
            return
        if age >= settle or age < -1.0 or time.monotonic() - t0 > limit:
            return  # (age < -1: a clock skewed against the file server's; do not wait)
        time.sleep(min(settle - age + 0.002, settle))


def open_h5(path):
    """Open read-only without taking the HDF5 file lock, so a running sweep is never
    blocked (HDF5_USE_FILE_LOCKING=FALSE semantics); SWMR read mode when the file allows
    it, plain read-only otherwise."""
    kw = {"locking": False, **RDCC}
    last = None
    for swmr in (True, False):
        try:
            return h5py.File(path, "r", swmr=swmr, **kw)
        except (TypeError, ValueError) as e:
            if "locking" in str(e) and "locking" in kw:  # pragma: no cover - old HDF5/h5py
                os.environ.setdefault("HDF5_USE_FILE_LOCKING", "FALSE")
                kw = dict(RDCC)
                try:
                    return h5py.File(path, "r", swmr=swmr, **kw)
                except (OSError, ValueError) as e2:
                    last = e2
                    continue
            last = e
        except OSError as e:
            last = e
    raise last


def _py(v):
    """An HDF5 attribute value as a plain Python value."""
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, np.ndarray):
        if v.dtype.kind in "SO" and v.size == 1:
            return _py(v.reshape(-1)[0])
        if v.size == 1:
            return v.reshape(-1)[0].item()
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    return v


def read_attrs(h5):
    return {k: _py(h5.attrs[k]) for k in h5.attrs.keys()}


class Part:
    """One self-contained punctum file, with retrying reads and committed-row counts."""

    def __init__(self, path, index=0):
        self.path = os.path.abspath(path)
        self.index = index
        self.h5 = None
        self.damaged = False
        self.open()

    # ---- file handle -------------------------------------------------------------
    def open(self):
        # Close first: while any handle to the file is open, HDF5 hands a new open the
        # same shared file state, stale metadata cache included, and nothing is re-read.
        self.close()
        delay = 0.02
        for attempt in range(RETRIES):
            try:
                wait_quiet(self.path)
                self.stamp = _stamp(self.path)
                self.h5 = open_h5(self.path)
                break
            except (OSError, ValueError):
                if attempt == RETRIES - 1 or not os.path.exists(self.path):
                    raise
                time.sleep(delay)
                delay *= 2
        self._ds = {}

    def close(self):
        if self.h5 is not None:
            try:
                self.h5.close()
            except Exception:  # noqa: BLE001 - closing a file that changed under us
                pass
        self.h5 = None
        self._ds = {}

    def changed(self):
        """Whether the file was modified since this handle was opened."""
        try:
            return _stamp(self.path) != self.stamp
        except OSError:
            return True

    def _retry(self, fn):
        """Run a read. A sweep that is writing the file (without SWMR) moves chunks and
        reuses the space they leave, so a handle opened before a write can read errors
        or, worse, other data. Hence: on an error, reopen and retry; and a read during
        which the file changed since the handle was opened is done again on a fresh
        handle. A file nobody writes costs one stat() per read."""
        delay = 0.02
        errors = 0
        deadline = time.monotonic() + CHANGE_WAIT
        while True:
            try:
                out = fn()
            except (OSError, RuntimeError):
                errors += 1
                if errors >= RETRIES:
                    raise
                time.sleep(delay)
                delay *= 2
                try:
                    self.open()
                except (OSError, ValueError):
                    pass
                continue
            if not self.changed():
                return out
            if time.monotonic() > deadline:
                raise StaleRead(f"{self.path}: the file kept changing for {CHANGE_WAIT:.0f} s "
                                "while being read; no consistent read was possible")
            self.open()

    def ds(self, name):
        d = self._ds.get(name)
        if d is None:
            d = self._ds[name] = self.h5[name]
        return d

    def has(self, name):
        return self._retry(lambda: name in self.h5)

    def attrs(self):
        return self._retry(lambda: read_attrs(self.h5))

    def rows(self, name):
        return self._retry(lambda: self.ds(name).shape[0])

    def shape(self, name):
        return self._retry(lambda: self.ds(name).shape)

    def is_str(self, name):
        return h5py.check_string_dtype(self.ds(name).dtype) is not None

    # ---- reads -------------------------------------------------------------------
    def read(self, name, lo=None, hi=None, sel=()):
        """Rows lo:hi of a dataset as numpy (strings as str objects, float16 as float32);
        sel: a selection along the trailing axes (e.g. one layer), read by h5py so that
        only the chunks holding it are decompressed."""

        def go():
            d = self.ds(name)
            sl = (slice(lo, hi),) + tuple(sel)
            if h5py.check_string_dtype(d.dtype) is not None:
                a = d.asstr(errors="replace")[sl]
            else:
                a = d[sl]
            return a

        a = self._retry(go)
        if a.dtype == np.float16:
            a = a.astype(np.float32)
        return a

    def gather(self, name, idx):
        """Rows at the given indices (any order, repeats allowed, all valid)."""
        idx = np.asarray(idx, dtype=np.int64)
        if idx.size == 0:
            shape = self.shape(name)
            dt = object if self.is_str(name) else self.ds(name).dtype
            if dt == np.float16:
                dt = np.float32
            return np.empty((0,) + tuple(shape[1:]), dtype=dt)
        u, inv = np.unique(idx, return_inverse=True)
        breaks = np.nonzero(np.diff(u) > GAP)[0] + 1
        pieces = []
        for seg in np.split(u, breaks):
            block = self.read(name, int(seg[0]), int(seg[-1]) + 1)
            pieces.append(block[seg - seg[0]])
        return np.concatenate(pieces)[inv]

    # ---- committed rows ----------------------------------------------------------
    def last_where(self, name, n, pred):
        """1 + the largest row index i < n with pred(values)[i] true (0 if none),
        reading backwards in chunks; pred also receives the values' row offset."""
        hi = n
        while hi > 0:
            lo = max(0, hi - SCAN)
            v = self.read(name, lo, hi)
            ok = np.nonzero(pred(v))[0]
            if ok.size:
                return lo + int(ok[-1]) + 1
            hi = lo
        return 0

    def compute_committed(self, fallback_pairs=None):
        """Committed row counts of every table of this part (local row counts).

        /pairs: rows < committed_pairs. /seqs: up to the last sequence a committed pair
        points at. /tokens and /patterns: up to the end of the last committed sequence.
        Ablation, patching and lens tables: up to the last row that refers to a committed
        sequence (pair); rows of uncommitted ones past it are ignored, and the readers
        also filter every row they return on that reference."""
        a = self.attrs()
        self.attrs_cache = a
        c = {}
        if not self.has("pairs/id"):
            raise PunctumFormatError(f"{self.path}: no /pairs/id: not a punctum output file")
        n_rows = self.rows("pairs/id")
        cp = a.get("committed_pairs", None)
        if cp is None:
            if fallback_pairs is not None:
                cp = fallback_pairs
            else:
                warnings.warn(f"{self.path}: no committed_pairs attribute; "
                              "treating no rows as committed", stacklevel=3)
                cp = 0
        P = max(0, min(int(cp), n_rows))
        self.rows_present = n_rows
        c["pairs"] = P
        # seqs
        S = 0
        if self.has("seqs/pair") and P > 0:
            n_seq_rows = self.rows("seqs/pair")
            for col in ("pairs/seq_a", "pairs/seq_b"):
                if not self.has(col):
                    continue
                end = self.last_where(col, P, lambda v: v >= 0)
                if end:
                    v = self.read(col, max(0, end - SCAN), end)
                    S = max(S, int(v.max()) + 1)
            if S > n_seq_rows:
                if self.changed():
                    raise StaleRead(f"{self.path}: read while being written")
                warnings.warn(f"{self.path}: committed pairs refer to /seqs rows past the "
                              f"{n_seq_rows} present; the file is damaged", stacklevel=3)
                S = n_seq_rows
                self.damaged = True
        c["seqs"] = S
        # tokens
        T = 0
        if S > 0 and self.has("tokens/seq") and self.has("seqs/tok_start"):
            lo = max(0, S - 256)
            ts = self.read("seqs/tok_start", lo, S).astype(np.int64)
            nt = self.read("seqs/n_tok", lo, S).astype(np.int64)
            good = ts >= 0
            if good.any():
                T = int((ts[good] + nt[good]).max())
            T = min(T, self.rows("tokens/seq"))
        c["tokens"] = T
        R = 0
        if S > 0 and self.has("patterns/value") and self.has("seqs/pattern_start"):
            lo = max(0, S - 256)
            ps = self.read("seqs/pattern_start", lo, S).astype(np.int64)
            nt = self.read("seqs/n_tok", lo, S).astype(np.int64)
            good = ps >= 0
            if good.any():
                R = int((ps[good] + nt[good] * (nt[good] + 1) // 2).max())
            R = min(R, self.rows("patterns/value"))
        c["patterns"] = R
        for table, limit in (("knockout", S), ("lens", S), ("patching", P), ("gen", S)):
            key = TABLE_KEY[table]
            if limit > 0 and self.has(key):
                n = self.rows(key)
                c[table] = self.last_where(key, n, lambda v, m=limit: (v >= 0) & (v < m))
            else:
                c[table] = 0
        # generated tokens: up to the end of the last committed /gen row
        GT = 0
        if c["gen"] > 0 and self.has("gen/tok_start"):
            lo = max(0, c["gen"] - 256)
            ts = self.read("gen/tok_start", lo, c["gen"]).astype(np.int64)
            nt = self.read("gen/n_tok", lo, c["gen"]).astype(np.int64)
            GT = min(int((ts + nt).max()), self.rows("gen/tokens/id"))
        c["gen_tokens"] = GT
        self.committed = c
        return c


# --------------------------------------------------------------------------------------
# views


def _regular(space):
    """(start, stride) of a one-block-per-stride selection along axis 0, or None."""
    try:
        if space.get_select_type() != h5py.h5s.SEL_HYPERSLABS:
            return None
        if space.is_regular_hyperslab():
            start, stride, count, block = space.get_regular_hyperslab()
            if count[0] == 1 or block[0] == 1:
                return int(start[0]), (1 if count[0] == 1 else int(stride[0]))
            return None
        blocks = space.get_select_hyper_blocklist()
        if len(blocks) == 1:
            return int(blocks[0][0][0]), 1
    except Exception:  # noqa: BLE001 - an unusual selection: fall back to counting
        return None
    return None


def resolve_source(view_path, name):
    """Where a virtual dataset's source file is: as given when absolute, else relative to
    the view's directory, then to $HDF5_VDS_PREFIX, then to the working directory."""
    if os.path.isabs(name):
        if os.path.exists(name):
            return name
        cands = [os.path.join(os.path.dirname(os.path.abspath(view_path)), os.path.basename(name))]
    else:
        cands = [os.path.join(os.path.dirname(os.path.abspath(view_path)), name)]
        pre = os.environ.get("HDF5_VDS_PREFIX")
        if pre:
            cands.append(os.path.join(pre.replace("${ORIGIN}",
                                                  os.path.dirname(os.path.abspath(view_path))),
                                      name))
        cands.append(os.path.abspath(name))
    for c in cands:
        if os.path.exists(c):
            return c
    raise FileNotFoundError(
        f"{view_path}: the view's source file {name!r} was not found (looked at: "
        + ", ".join(cands) + ")")


def discover(path):
    """-> (root attributes, [Part], {table: [(start, stride) per part]}, is_view)."""
    h5 = None
    delay = 0.02
    for attempt in range(RETRIES):
        try:
            h5 = open_h5(path)
            break
        except (OSError, ValueError):
            if attempt == RETRIES - 1 or not os.path.exists(path):
                raise
            time.sleep(delay)
            delay *= 2
    try:
        attrs = read_attrs(h5)
        if "pairs/id" not in h5:
            raise PunctumFormatError(f"{path}: no /pairs/id: not a punctum output file")
        d = h5["pairs/id"]
        srcs = d.virtual_sources() if d.is_virtual else []
        external = [s for s in srcs if s.file_name != "."]
        if not external:
            h5.close()
            h5 = None
            return attrs, [Part(path, 0)], None, False
        # an MPI view: one part per source file, in the order they sit in /pairs
        order = sorted(external, key=lambda s: (_regular(s.vspace) or (1 << 62, 0))[0])
        names = []
        for s in order:
            if s.file_name not in names:
                names.append(s.file_name)
        parts = [Part(resolve_source(path, n), i) for i, n in enumerate(names)]
        maps = {}
        for table, key in TABLE_KEY.items():
            m = [None] * len(parts)
            if key in h5 and h5[key].is_virtual:
                for s in h5[key].virtual_sources():
                    if s.file_name in names:
                        m[names.index(s.file_name)] = _regular(s.vspace)
            maps[table] = m
        return attrs, parts, maps, True
    finally:
        if h5 is not None:
            h5.close()
