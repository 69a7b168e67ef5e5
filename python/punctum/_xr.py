"""Lazily indexed arrays over the committed rows of one or more files (xarray backend)."""
from __future__ import annotations

import numpy as np
from xarray.backends import BackendArray
from xarray.core import indexing


class RowsArray(BackendArray):
    """Rows of a table concatenated over segments [(part, lo, hi)]; values come from
    fetch(part, lo, hi) -> ndarray of hi-lo rows. Reads only the rows indexed."""

    def __init__(self, segments, fetch, trail, dtype, fetch_sel=None):
        self.segments = list(segments)
        self.fetch = fetch
        self.fetch_sel = fetch_sel  # fetch_sel(p, lo, hi, sel): rows with a trailing selection
        sizes = [hi - lo for _, lo, hi in self.segments]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.shape = (int(self.offsets[-1]),) + tuple(trail)
        self.dtype = np.dtype(dtype)

    def read(self, start, stop, sel=None):
        """Rows [start, stop) of the concatenation (sel: trailing selection, when the
        fetch function takes one)."""
        pieces = []
        for k, (p, lo, hi) in enumerate(self.segments):
            a, b = self.offsets[k], self.offsets[k + 1]
            s, e = max(start, a), min(stop, b)
            if s < e:
                r0, r1 = lo + int(s - a), lo + int(e - a)
                piece = self.fetch(p, r0, r1) if sel is None else self.fetch_sel(p, r0, r1, sel)
                pieces.append(np.asarray(piece))
        if not pieces:
            shape = self.shape[1:] if sel is None else \
                np.empty(self.shape[1:], dtype=np.uint8)[sel].shape
            return np.empty((0,) + shape, dtype=self.dtype)
        out = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
        return out.astype(self.dtype, copy=False)

    def __getitem__(self, key):
        return indexing.explicit_indexing_adapter(
            key, self.shape, indexing.IndexingSupport.BASIC, self._raw)

    def _raw(self, key):
        k0, rest = key[0], tuple(key[1:])
        n = self.shape[0]
        if isinstance(k0, (int, np.integer)):
            i = int(k0) + (n if k0 < 0 else 0)
            return self.read(i, i + 1)[(0,) + rest]
        start, stop, step = k0.indices(n)
        if step < 0:  # xarray normally hands backends positive steps only
            data = self.read(0, n)
            return data[(k0,) + rest]
        if stop <= start:
            return np.empty((0,) + self.shape[1:], dtype=self.dtype)[(slice(None),) + rest]
        if self.fetch_sel is not None and _narrows(rest):
            # e.g. one layer across many tokens: h5py reads only the chunks holding it
            return self.read(start, stop, rest)[::step]
        data = self.read(start, stop)
        return data[(slice(None, None, step),) + rest]


def _narrows(rest):
    """Whether a trailing selection (ints and positive-step slices) selects less than all."""
    return any(isinstance(k, (int, np.integer)) or
               (isinstance(k, slice) and k != slice(None) and (k.step or 1) > 0)
               for k in rest)


def lazy_rows(segments, fetch, trail, dtype, lazy=True, fetch_sel=None):
    arr = RowsArray(segments, fetch, trail, dtype, fetch_sel)
    if lazy:
        return indexing.LazilyIndexedArray(arr)
    return arr.read(0, arr.shape[0])
