"""The stat `massive` (SPEC §3) computed by Hugging Face transformers in float64.

For each sequence of an engine-made file (its token ids in /tokens/id), the residual
stream entering every layer l (l = 0: the embeddings; l = L: the final residual before the
final norm, captured by forward pre-hooks, as reference.py does) is reduced over the model
dimension to max |h_d|, its d, and the median |h_d| (numpy's: the mean of the two middle
values when d_model is even). ``add_to_file`` writes them as /tokens/resid_max,
/tokens/resid_argmax, /tokens/resid_median ([Ttot, L+1], float32 / int32, chunked, gzip),
the layout SPEC §5 gives them, so that the census can be checked on real engine
bookkeeping before the engine writes the stat itself.

    python tests/python/massive_ref.py MODEL_DIR FILE.h5     # add the three datasets
"""
from __future__ import annotations

import os
import sys

import h5py
import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from reference import layers_and_final_norm  # noqa: E402
from tiny_models import load_hf  # noqa: E402

NAMES = ("resid_max", "resid_argmax", "resid_median")


class MassiveRef:
    """One model in float64; residuals entering each layer, reduced per token."""

    def __init__(self, model_dir):
        self.model = load_hf(model_dir).double()
        self.layers, self.norm = layers_and_final_norm(self.model)

    @torch.no_grad()
    def resid(self, ids):
        """[T, L+1, D] float64 residual streams entering each layer (L: before the norm)."""
        L = len(self.layers)
        cap = [None] * (L + 1)

        def pre(idx):
            def hook(_mod, args, kwargs):
                x = args[0] if args else kwargs["hidden_states"]
                cap[idx] = x.detach().clone()
            return hook

        hs = [self.layers[i].register_forward_pre_hook(pre(i), with_kwargs=True)
              for i in range(L)]
        hs.append(self.norm.register_forward_pre_hook(pre(L), with_kwargs=True))
        try:
            self.model(input_ids=torch.tensor([list(ids)], dtype=torch.long), use_cache=False)
        finally:
            for h in hs:
                h.remove()
        return torch.stack([c[0] for c in cap], dim=1).numpy()

    def massive(self, ids):
        """dict of [T, L+1] arrays: resid_max, resid_argmax, resid_median, resid_norm, and
        the lower and upper middle values (median_lo, median_hi: equal for odd d_model)."""
        h = np.abs(self.resid(ids))
        D = h.shape[2]
        srt = np.sort(h, axis=2)
        return {"resid_max": h.max(axis=2), "resid_argmax": h.argmax(axis=2),
                "resid_median": np.median(h, axis=2), "resid_norm": np.sqrt((h * h).sum(axis=2)),
                "median_lo": srt[:, :, (D - 1) // 2], "median_hi": srt[:, :, D // 2]}


def compute_for_file(model_dir, path):
    """The three statistics (and resid_norm, median_lo, median_hi: see MassiveRef) for
    every committed token row of an engine-made file: dict name -> [Ttot, L+1] float64
    (argmax int64)."""
    ref = MassiveRef(model_dir)
    with h5py.File(path, "r") as f:
        P = int(f.attrs["committed_pairs"])
        sa, sb = f["pairs/seq_a"][:P], f["pairs/seq_b"][:P]
        S = int(max(sa.max(initial=-1), sb.max(initial=-1))) + 1
        ts, nt = f["seqs/tok_start"][:S], f["seqs/n_tok"][:S]
        T = int((ts + nt).max()) if S else 0
        ids = f["tokens/id"][:T]
        L1 = int(f.attrs["n_layers"]) + 1
    out = {n: np.zeros((T, L1)) for n in NAMES + ("resid_norm", "median_lo", "median_hi")}
    out["resid_argmax"] = np.zeros((T, L1), np.int64)
    for s in range(S):
        a, n = int(ts[s]), int(nt[s])
        if a < 0 or n <= 0:
            continue
        for name, v in ref.massive(ids[a:a + n]).items():
            out[name][a:a + n] = v
    return out


def add_to_file(model_dir, path, values=None):
    """Write /tokens/resid_max, resid_argmax, resid_median into an engine-made file (as
    SPEC §5 lays them out). Returns the float64 values written."""
    values = values or compute_for_file(model_dir, path)
    with h5py.File(path, "r+") as f:
        T, L1 = values["resid_max"].shape
        chunk = f["tokens/seq"].chunks[0] if f["tokens/seq"].chunks else 1024
        for name in NAMES:
            if "tokens/" + name in f:
                raise ValueError(f"{path}: /tokens/{name} is already there")
            dt = np.int32 if name == "resid_argmax" else np.float32
            d = f.create_dataset("tokens/" + name, shape=(T, L1), maxshape=(None, L1),
                                 dtype=dt, chunks=(max(1, min(chunk, T or 1)), L1),
                                 compression="gzip", shuffle=True)
            if T:
                d[...] = values[name].astype(dt)
    return values


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: massive_ref.py MODEL_DIR FILE.h5")
    add_to_file(sys.argv[1], sys.argv[2])
    print(sys.argv[2])
