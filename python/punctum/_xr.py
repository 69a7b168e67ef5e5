"""Lazily indexed arrays over the committed rows of one or more files (xarray backend)."""
from __future__ import annotations

import numpy as np
from xarray.backends import BackendArray
from xarray.core import indexing


class RowsArray(BackendArray):
    """Rows of a table concatenated over segments [(part, lo, hi)]; values come from
    fetch(part, lo, hi) -> ndarray of hi-lo rows. Reads only the rows indexed."""

    def __init__(self, segments, fetch, trail, dtype):
        self.segments = list(segments)
        self.fetch = fetch
        sizes = [hi - lo for _, lo, hi in self.segments]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.shape = (int(self.offsets[-1]),) + tuple(trail)
        self.dtype = np.dtype(dtype)

    def read(self, start, stop):
        """Rows [start, stop) of the concatenation."""
        pieces = []
        for k, (p, lo, hi) in enumerate(self.segments):
            a, b = self.offsets[k], self.offsets[k + 1]
            s, e = max(start, a), min(stop, b)
            if s < e:
                pieces.append(np.asarray(self.fetch(p, lo + int(s - a), lo + int(e - a))))
        if not pieces:
            return np.empty((0,) + self.shape[1:], dtype=self.dtype)
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
        data = self.read(start, stop)
        return data[(slice(None, None, step),) + rest]


def lazy_rows(segments, fetch, trail, dtype, lazy=True):
    arr = RowsArray(segments, fetch, trail, dtype)
    if lazy:
        return indexing.LazilyIndexedArray(arr)
    return arr.read(0, arr.shape[0])
