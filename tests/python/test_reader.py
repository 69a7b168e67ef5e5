"""The punctum Python reader (python/punctum) against direct h5py reads of the same files.

Synthetic files (tests/python/synth_h5.py, written exactly per SPEC §5) cover failed
records, knockout, patching, lens, patterns, --store f16, a file whose committed_pairs is
less than the rows present, a file being written while it is read, an MPI view (virtual
datasets over rank files, opened from another working directory), and a 1,000,000-pair
file read in bounded memory. The last tests run the same checks on real engine output
(build/punctum, or $PUNCTUM_BIN) and are skipped when the binary is absent.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import h5py
import numpy as np
import pandas as pd
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "python"))
sys.path.insert(0, HERE)

import punctum  # noqa: E402
import synth_h5  # noqa: E402


# ------------------------------------------------------------------------------------
# the truth: everything committed, read whole with plain h5py (small files only)


def _s(ds):
    return ds.asstr()[...] if h5py.check_string_dtype(ds.dtype) else ds[...]


class Truth:
    """Committed rows of one self-contained file, read directly (no punctum code)."""

    def __init__(self, path):
        with h5py.File(path, "r") as f:
            self.attrs = dict(f.attrs)
            self.d = {}
            f.visititems(lambda n, o: self.d.__setitem__(n, _s(o))
                         if isinstance(o, h5py.Dataset) else None)
        d = self.d
        self.P = int(self.attrs["committed_pairs"])
        sa, sb = d["pairs/seq_a"][: self.P], d["pairs/seq_b"][: self.P]
        self.S = int(max(sa.max(initial=-1), sb.max(initial=-1))) + 1
        if "tokens/seq" in d and self.S:
            self.T = int(d["seqs/tok_start"][self.S - 1] + d["seqs/n_tok"][self.S - 1])
        else:
            self.T = 0

    def tok_text(self, seq, pos):
        return self.d["tokens/text"][self.d["seqs/tok_start"][seq] + pos]


def _na(v):
    return v is None or v is pd.NA or (isinstance(v, (float, np.floating)) and np.isnan(v))


def _eq_num(got, want, what):
    got = np.asarray(pd.array(got, dtype="Float64").to_numpy(dtype=np.float64, na_value=np.nan))
    want = np.asarray(want, dtype=np.float64)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=0, equal_nan=True, err_msg=what)


def _ints(col):
    """Nullable int column -> int64 with -1 for <NA>."""
    return pd.array(col, dtype="Int64").to_numpy(dtype=np.int64, na_value=-1)


def check_file(path, t: Truth | None = None, seq_off=0, pair_off=0, tok_off=0):
    """Every table of punctum.open(path) against the truth of the same file."""
    t = t or Truth(path)
    d, P, S = t.d, t.P, t.S
    with punctum.open(path) as f:
        assert f.n_pairs == P
        # ---- pairs
        df = f.pairs
        assert list(df.index) == list(range(pair_off, pair_off + P))
        assert list(df["id"]) == list(d["pairs/id"][:P])
        assert list(df["line"]) == list(d["pairs/line"][:P])
        assert list(df["status"]) == list(d["pairs/status"][:P])
        assert list(df["message"]) == list(d["pairs/message"][:P])
        for k in ("kl_ab", "kl_ba", "js"):
            _eq_num(df[k], d["pairs/" + k][:P], k)
        if "pairs/resid_cos" in d:
            _eq_num(df["resid_cos_final"], d["pairs/resid_cos"][:P, -1], "resid_cos")
            rc = f.resid_cos
            np.testing.assert_allclose(rc.to_numpy(), d["pairs/resid_cos"][:P], equal_nan=True)
        for side in ("a", "b"):
            s = d["pairs/seq_" + side][:P]
            got = _ints(df["seq_" + side])
            np.testing.assert_array_equal(got, np.where(s >= 0, s + seq_off, -1))
            for k in range(P):
                if s[k] < 0:
                    assert _na(df["text_" + side].iloc[k])
                    assert df["n_tok_" + side].isna().iloc[k]
                    continue
                assert df["text_" + side].iloc[k] == d["seqs/text"][s[k]]
                assert df["n_tok_" + side].iloc[k] == d["seqs/n_tok"][s[k]]
                assert np.isclose(df["entropy_" + side].iloc[k], d["seqs/entropy"][s[k]])
                if "seqs/topk_id" in d:
                    assert df["top1_id_" + side].iloc[k] == d["seqs/topk_id"][s[k], 0]
                tid = d["seqs/target_id"][s[k]]
                if tid < 0:
                    assert df["target_id_" + side].isna().iloc[k]
                else:
                    assert df["target_id_" + side].iloc[k] == tid
        # iter_pairs in small chunks gives the same rows
        it = pd.concat(list(f.iter_pairs(chunk=5)))
        pd.testing.assert_frame_equal(it, df)
        # ---- failures
        bad = d["pairs/status"][:P] != 0
        fl = f.failures
        assert list(fl["id"]) == list(d["pairs/id"][:P][bad])
        assert list(fl["message"]) == list(d["pairs/message"][:P][bad])
        # ---- seqs
        sq = f.seqs
        assert len(sq) == S
        assert list(sq.index) == list(range(seq_off, seq_off + S))
        np.testing.assert_array_equal(sq["pair"].to_numpy(), d["seqs/pair"][:S] + pair_off)
        assert list(sq["pair_id"]) == list(d["pairs/id"][d["seqs/pair"][:S]])
        assert list(sq["side"]) == ["ab"[x] for x in d["seqs/side"][:S]]
        assert list(sq["text"]) == list(d["seqs/text"][:S])
        if "tokens/seq" in d:
            np.testing.assert_array_equal(_ints(sq["tok_start"]), d["seqs/tok_start"][:S] + tok_off)
        # ---- knockout
        if "ablation/knockout/seq" in d:
            ks = d["ablation/knockout/seq"]
            keep = np.nonzero(ks < S)[0]
            ko = f.knockout
            assert len(ko) == len(keep)
            np.testing.assert_array_equal(ko["seq"].to_numpy(), ks[keep] + seq_off)
            np.testing.assert_array_equal(ko["pos"].to_numpy(), d["ablation/knockout/pos"][keep])
            np.testing.assert_array_equal(ko["window"].to_numpy(),
                                          d["ablation/knockout/window"][keep])
            for k in ("kl", "dlogp_top1", "dlogp_target"):
                _eq_num(ko[k], d["ablation/knockout/" + k][keep], k)
            np.testing.assert_array_equal(ko["top1_changed"].to_numpy(),
                                          d["ablation/knockout/top1_changed"][keep] != 0)
            w = d["ablation/windows"]
            np.testing.assert_array_equal(ko["lo"].to_numpy(), w[d["ablation/knockout/window"][keep], 0])
            np.testing.assert_array_equal(ko["hi"].to_numpy(), w[d["ablation/knockout/window"][keep], 1])
            for r, i in enumerate(keep[:200]):
                s, p = ks[i], d["ablation/knockout/pos"][i]
                assert ko["token"].iloc[r] == t.tok_text(s, p)
                assert bool(ko["is_punct"].iloc[r]) == bool(
                    d["tokens/is_punct"][d["seqs/tok_start"][s] + p])
                assert ko["pair_id"].iloc[r] == d["pairs/id"][d["seqs/pair"][s]]
                assert ko["side"].iloc[r] == "ab"[d["seqs/side"][s]]
                assert ko["dist_to_last"].iloc[r] == d["seqs/n_tok"][s] - 1 - p
        else:
            assert f.knockout.empty
        # ---- patching
        if "patching/resid/pair" in d:
            pp = d["patching/resid/pair"]
            keep = np.nonzero(pp < P)[0]
            pt = f.patching
            assert len(pt) == len(keep)
            np.testing.assert_array_equal(pt["pair"].to_numpy(), pp[keep] + pair_off)
            np.testing.assert_array_equal(pt["layer"].to_numpy(), d["patching/resid/layer"][keep])
            np.testing.assert_array_equal(pt["pos"].to_numpy(), d["patching/resid/pos"][keep])
            for k in ("kl_to_b", "kl_from_a", "dlogp_top1_b"):
                _eq_num(pt[k], d["patching/resid/" + k][keep], k)
            for r, i in enumerate(keep):
                pr, p = pp[i], d["patching/resid/pos"][i]
                assert pt["token_a"].iloc[r] == t.tok_text(d["pairs/seq_a"][pr], p)
                assert pt["token_b"].iloc[r] == t.tok_text(d["pairs/seq_b"][pr], p)
        else:
            assert f.patching.empty
        # ---- lens (long format)
        if "lens/seq" in d:
            ls = d["lens/seq"]
            keep = np.nonzero(ls < S)[0]
            L1 = d["lens/logp_top1"].shape[1]
            ln = f.lens
            assert len(ln) == len(keep) * L1
            np.testing.assert_array_equal(ln["seq"].to_numpy(), np.repeat(ls[keep], L1) + seq_off)
            np.testing.assert_array_equal(ln["layer"].to_numpy(), np.tile(np.arange(L1), len(keep)))
            _eq_num(ln["logp_top1"], d["lens/logp_top1"][keep].reshape(-1), "logp_top1")
            _eq_num(ln["logp_target"], d["lens/logp_target"][keep].reshape(-1), "logp_target")
            fin = d["lens/pos"][keep] == d["seqs/n_tok"][ls[keep]] - 1
            np.testing.assert_array_equal(ln["is_final"].to_numpy(), np.repeat(fin, L1))
        else:
            assert f.lens.empty
    return t


# ------------------------------------------------------------------------------------
# synthetic files


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("reader")
    out = {}
    out["full"] = str(d / "full.h5")
    synth_h5.write(out["full"], 24, n_failed=3, chunk_rows=7)
    out["all"] = str(d / "all.h5")
    synth_h5.write(out["all"], 10, positions="all", n_layers=4, n_heads=2, chunk_rows=16,
                   stats=("mass", "last", "resid", "topk", "lens", "patterns"))
    out["inprog"] = str(d / "inprog.h5")
    synth_h5.write(out["inprog"], 20, committed=11, chunk_rows=5)
    out["f16"] = str(d / "f16.h5")
    synth_h5.write(out["f16"], 8, store="f16")
    out["none"] = str(d / "none.h5")
    synth_h5.write(out["none"], 8, stats=(), knockout=False, patching=False)
    return out


def test_full_file_matches_h5py(files):
    t = check_file(files["full"])
    assert (t.d["pairs/status"] != 0).sum() == 3          # failed records are in it
    assert len(t.d["ablation/knockout/seq"]) and len(t.d["patching/resid/pair"])


def test_positions_all_with_patterns_matches_h5py(files):
    check_file(files["all"])


def test_store_f16_reads_as_float32(files):
    check_file(files["f16"])
    with punctum.open(files["f16"]) as f:
        assert f.pairs["kl_ab"].dtype == np.float32
        assert f.tokens("pair-0", "a").attn_mass.dtype == np.float32


def test_stats_none_file(files):
    check_file(files["none"])
    with punctum.open(files["none"]) as f:
        assert not f.has("tokens") and not f.has("knockout")
        t = f.tokens("pair-0", "b")
        assert len(t) == 0 and t.info["text"].endswith(".")
        with pytest.raises(ValueError, match="no /tokens"):
            f.to_xarray()


@pytest.mark.parametrize("store", ["f32", "f16"])
def test_massive_stat(tmp_path, store):
    """/tokens/resid_max, resid_argmax, resid_median (stat massive, SPEC §5): per sequence
    and in the xarray view, equal to h5py's reads."""
    path = str(tmp_path / "massive.h5")
    synth_h5.write(path, 8, stats=("mass", "resid", "massive"), store=store, n_layers=3)
    t = Truth(path)
    d = t.d
    with punctum.open(path) as f:
        assert f.has("massive")
        for pid, side in (("pair-0", "b"), ("pair-3", "a")):
            tk = f.tokens(pid, side)
            k = f.pair_index(pid)
            s = d["pairs/seq_" + side][k]
            ts, n = d["seqs/tok_start"][s], d["seqs/n_tok"][s]
            for name in ("resid_max", "resid_argmax", "resid_median"):
                da = getattr(tk, name)
                assert da.dims == ("token", "resid_layer") and da.shape == (n, 4)
                np.testing.assert_array_equal(da.values, d["tokens/" + name][ts:ts + n])
            assert tk.resid_argmax.dtype == np.int32 and tk.resid_max.dtype == np.float32
        ds = f.to_xarray()
        for name in ("resid_max", "resid_argmax", "resid_median"):
            np.testing.assert_array_equal(ds[name].isel(token=slice(2, 9)).values,
                                          d["tokens/" + name][2:9])
    synth_h5.write(path, 4, stats=("mass",))
    with punctum.open(path) as f:
        assert not f.has("massive")
        with pytest.raises(AttributeError, match="did not store it"):
            f.tokens("pair-0", "a").resid_max


def test_failed_records(files):
    t = Truth(files["full"])
    bad = np.nonzero(t.d["pairs/status"] != 0)[0]
    with punctum.open(files["full"]) as f:
        fl = f.failures
        assert list(fl.index) == list(bad)
        assert all(m.startswith(f"line {ln}:") for m, ln in zip(fl["message"], fl["line"]))
        row = f.pairs.loc[bad[0]]
        assert not row["ok"] and _na(row["text_a"]) and _na(row["kl_ab"])
        with pytest.raises(KeyError, match="skipped"):
            f.tokens(str(t.d["pairs/id"][bad[0]]), "a")
        # no seqs / knockout / lens row refers to a failed pair
        assert not f.seqs["pair"].isin(bad).any()
        assert not f.knockout["pair"].isin(bad).any()


def test_tokens_of_one_sequence(files):
    t = Truth(files["all"])
    d = t.d
    with punctum.open(files["all"]) as f:
        for pid, side in (("pair-0", "a"), ("pair-0", "b"), ("pair-4", "b"), (2, "a")):
            tk = f.tokens(pid, side)
            k = f.pair_index(pid)
            s = d["pairs/seq_" + side][k]
            ts, n = d["seqs/tok_start"][s], d["seqs/n_tok"][s]
            assert isinstance(tk, pd.DataFrame) and len(tk) == n
            assert list(tk.index) == list(range(n))
            assert list(tk["text"]) == list(d["tokens/text"][ts:ts + n])
            np.testing.assert_array_equal(tk["id"], d["tokens/id"][ts:ts + n])
            np.testing.assert_array_equal(tk["is_punct"], d["tokens/is_punct"][ts:ts + n] != 0)
            np.testing.assert_array_equal(tk["byte_start"], d["tokens/byte_start"][ts:ts + n])
            np.testing.assert_array_equal(tk["byte_end"], d["tokens/byte_end"][ts:ts + n])
            # byte spans index the UTF-8 text
            raw = tk.info["text"].encode("utf-8")
            for piece, b0, b1 in zip(tk["text"], tk["byte_start"], tk["byte_end"]):
                if b1 > b0:
                    assert raw[b0:b1].decode("utf-8") == piece
            am = tk.attn_mass
            assert am.dims == ("token", "layer", "head")
            assert am.shape == (n, f.n_layers, f.n_heads)
            np.testing.assert_array_equal(am.values, d["tokens/attn_mass"][ts:ts + n])
            np.testing.assert_array_equal(tk.attn_last.values, d["tokens/attn_last"][ts:ts + n])
            np.testing.assert_allclose(am.sum("token").values, n, rtol=1e-4)      # Σ_j = T
            np.testing.assert_allclose(tk.attn_last.sum("token").values, 1, rtol=1e-4)
            assert list(am["text"].values) == list(tk["text"])
            assert tk.resid_norm.dims == ("token", "resid_layer")
            # the full pattern, rebuilt from the lower triangle, gives the same statistics
            pat = tk.attn_pattern
            assert pat.dims == ("layer", "head", "query", "key")
            np.testing.assert_allclose(pat.sum("query").transpose("key", "layer", "head").values,
                                       am.values, rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(pat.isel(query=n - 1).transpose("key", "layer", "head")
                                       .values, tk.attn_last.values, rtol=1e-5, atol=1e-6)
            # derived frames are plain DataFrames
            assert type(tk[tk["is_punct"]]) is pd.DataFrame
        with pytest.raises(KeyError, match="no committed pair"):
            f.tokens("no-such-id")
        with pytest.raises(ValueError):
            f.tokens("pair-0", "c")


def test_to_xarray_lazy_and_selection(files):
    t = Truth(files["all"])
    d = t.d
    with punctum.open(files["all"]) as f:
        ds = f.to_xarray()
        T = t.T
        assert ds.sizes["token"] == T
        assert ds.attn_mass.dims == ("token", "layer", "head")
        # nothing loaded yet; indexing reads just what it needs
        assert not isinstance(ds.attn_mass.variable._data, np.ndarray)
        np.testing.assert_array_equal(ds.attn_mass.isel(token=slice(3, 17)).values,
                                      d["tokens/attn_mass"][3:17])
        np.testing.assert_array_equal(ds.attn_last.isel(token=slice(1, 40, 3), layer=2).values,
                                      d["tokens/attn_last"][1:40:3, 2])
        np.testing.assert_array_equal(ds.resid_norm.isel(token=5).values, d["tokens/resid_norm"][5])
        # one layer (or head) across all tokens: the selection goes to h5py (fewer chunks read)
        np.testing.assert_array_equal(ds.attn_mass.isel(layer=1).values, d["tokens/attn_mass"][:T, 1])
        np.testing.assert_array_equal(ds.attn_mass.isel(layer=slice(1, 3), head=-1).values,
                                      d["tokens/attn_mass"][:T, 1:3, -1])
        np.testing.assert_array_equal(ds.resid_norm.isel(resid_layer=0).values,
                                      d["tokens/resid_norm"][:T, 0])
        np.testing.assert_array_equal(ds.seq.values, d["tokens/seq"][:T])
        assert list(ds.text.values) == list(d["tokens/text"][:T])
        np.testing.assert_array_equal(ds.is_punct.values, d["tokens/is_punct"][:T] != 0)
        assert list(ds.pair_id.values) == list(d["pairs/id"][d["seqs/pair"][d["tokens/seq"][:T]]])
        # a computation over the lazy dataset equals numpy's
        got = ds.attn_mass.where(ds.is_punct).mean(["token", "head"]).values
        want = d["tokens/attn_mass"][:T][d["tokens/is_punct"][:T] != 0].mean(axis=(0, 2))
        np.testing.assert_allclose(got, want, rtol=1e-5)
        # a selection of pairs, loaded
        sel = f.to_xarray(pairs=["pair-3", "pair-0"], side="b")
        rows = []
        for k in (3, 0):
            s = d["pairs/seq_b"][k]
            rows += list(range(d["seqs/tok_start"][s], d["seqs/tok_start"][s] + d["seqs/n_tok"][s]))
        np.testing.assert_array_equal(sel.token_row.values, rows)
        np.testing.assert_array_equal(sel.attn_mass.values, d["tokens/attn_mass"][rows])
        assert set(sel.side.values) == {"b"}
        both = f.to_xarray(pairs=slice(0, 2))
        assert set(both.pair_id.values) == {"pair-0"}     # pair-1 is a failed record
        assert set(both.side.values) == {"a", "b"}


def test_in_progress_file_ignores_uncommitted_rows(files, tmp_path):
    path = str(tmp_path / "inprog.h5")
    import shutil

    shutil.copy(files["inprog"], path)
    with h5py.File(path, "r") as h:
        n_rows = h["pairs/id"].shape[0]
        assert h.attrs["committed_pairs"] == 11 < n_rows == 20
    t = check_file(path)
    with punctum.open(path) as f:
        assert f.in_progress and f.rows_present == 20 and f.n_pairs == 11
        assert len(f.pairs) == 11
        assert f.seqs["pair"].max() < 11
        assert (f.knockout["seq"] < t.S).all() and (f.lens["seq"] < t.S).all()
        assert f.patching.empty or (f.patching["pair"] < 11).all()
        ds = f.to_xarray()
        assert ds.sizes["token"] == t.T < len(t.d["tokens/seq"])
        with pytest.raises(KeyError):
            f.tokens("pair-15", "a")                 # present but not committed
        # the sweep (another process: HDF5 refuses a second, writable open in this one)
        # commits more; refresh() sees it
        _set_committed(path, 20)
        assert f.n_pairs == 11
        f.refresh()
        assert f.n_pairs == 20 and not f.in_progress
        assert f.tokens("pair-15", "a").info["pair_id"] == "pair-15"
    check_file(path)


def _set_committed(path, n):
    code = (f"import h5py, numpy as np\n"
            f"with h5py.File({path!r}, 'a') as h:\n"
            f"    h.attrs['committed_pairs'] = np.int64({n})\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr


def test_missing_committed_pairs_and_not_a_punctum_file(tmp_path):
    p = str(tmp_path / "x.h5")
    with h5py.File(p, "w") as h:
        h["foo"] = np.arange(3)
    with pytest.raises(punctum.PunctumFormatError):
        punctum.open(p)
    q = str(tmp_path / "y.h5")
    synth_h5.write(q, 4)
    with h5py.File(q, "r+") as h:
        del h.attrs["committed_pairs"]
    with pytest.warns(UserWarning, match="committed_pairs"):
        f = punctum.open(q)
    assert f.n_pairs == 0 and f.pairs.empty and f.knockout.empty


def test_reader_does_not_lock_the_writer(files, tmp_path):
    """While the reader holds the file open, a writer (default HDF5 locking) can open it."""
    path = str(tmp_path / "locked.h5")
    synth_h5.write(path, 6)
    with punctum.open(path) as f:
        assert f.n_pairs == 6
        _set_committed(path, 5)         # opens with HDF5's default file locking
        f.refresh()
        assert f.n_pairs == 5


def test_reading_while_a_sweep_writes(tmp_path):
    """A writer process appends batches and advances committed_pairs; the reader
    refreshes repeatedly and only ever sees complete, consistent committed rows."""
    path = str(tmp_path / "live.h5")
    n_pairs = 60
    code = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {HERE!r})
        import synth_h5
        synth_h5.write_progressively({path!r}, {n_pairs}, batch=4, delay=0.15, n_failed=2)
    """)
    ref = str(tmp_path / "ref.h5")
    synth_h5.write(ref, n_pairs, n_failed=2)
    want = Truth(ref)
    w = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while not os.path.exists(path) and time.time() < deadline:
            time.sleep(0.01)
        seen, last = set(), -1
        f = None
        while time.time() < deadline:
            try:
                f = punctum.open(path) if f is None else f.refresh()
            except (OSError, punctum.PunctumFormatError):
                time.sleep(0.01)      # the file is still being created
                continue
            n = f.n_pairs
            assert n >= last
            last = n
            seen.add(n)
            df = f.pairs
            assert len(df) == n
            assert list(df["id"]) == list(want.d["pairs/id"][:n])
            ta = df["text_a"].to_numpy()
            exp = [want.d["seqs/text"][s] if s >= 0 else None
                   for s in want.d["pairs/seq_a"][:n]]
            assert all((_na(a) and b is None) or a == b for a, b in zip(ta, exp))
            ko = f.knockout
            if len(ko):
                assert (ko["pair"].to_numpy() < n).all()
            if n == n_pairs and w.poll() is not None:
                break
            time.sleep(0.005)
        assert w.wait(timeout=60) == 0, w.stderr.read()
        f.refresh()
        assert f.n_pairs == n_pairs
        assert len(seen) > 3, f"the reader saw too few commits: {sorted(seen)}"
        f.close()
    finally:
        if w.poll() is None:
            w.kill()
    check_file(path)


# ------------------------------------------------------------------------------------
# MPI views


def _view_expect(view, ranks):
    """Per-rank offsets of the synthetic view (concatenated in rank order)."""
    offs = {"pairs": [], "seqs": [], "tokens": []}
    acc = {k: 0 for k in offs}
    for r in ranks:
        with h5py.File(r, "r") as h:
            for k, key in (("pairs", "pairs/id"), ("seqs", "seqs/pair"), ("tokens", "tokens/seq")):
                offs[k].append(acc[k])
                acc[k] += h[key].shape[0]
    return offs


def test_mpi_view(tmp_path, monkeypatch):
    view = str(tmp_path / "sweep" / "OUT.h5")
    os.makedirs(os.path.dirname(view))
    recs, ranks = synth_h5.write_sharded(view, 17, 3, committed_per_rank=[6, 4, 5])
    offs = _view_expect(view, ranks)
    # each rank file on its own is a complete punctum file
    truths = [check_file(r) for r in ranks]
    # open from another working directory, by absolute and by relative path
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.chdir(other)
    # the view, read through HDF5's own virtual-dataset layer (before the reader opens
    # the rank files: HDF5 refuses to mix locking flags on one file within a process)
    with h5py.File(view, "r") as h:
        vid = h["pairs/id"].asstr()[...]
        vseq = h["pairs/seq_a"][...]
        vtext = h["seqs/text"].asstr()[...]
        vkl = h["pairs/kl_ab"][...]
    for path in (view, os.path.relpath(view)):
        with punctum.open(path) as f:
            assert f.is_view and f.n_pairs == 15 and f.rows_present == 17
            df = f.pairs
            rows = [o + k for o, t in zip(offs["pairs"], truths) for k in range(t.P)]
            assert list(df.index) == rows
            assert list(df["id"]) == list(vid[rows])
            _eq_num(df["kl_ab"], vkl[rows], "kl_ab")
            for r, (o, so, t) in enumerate(zip(offs["pairs"], offs["seqs"], truths)):
                part = df.loc[o:o + t.P - 1]
                la = vseq[o:o + t.P]
                np.testing.assert_array_equal(_ints(part["seq_a"]), np.where(la >= 0, la + so, -1))
                for k, s in enumerate(la):
                    if s >= 0:
                        assert part["text_a"].iloc[k] == vtext[so + s]
            # every rank's committed rows, with indices moved to the view's numbering
            for r, (rp, t) in enumerate(zip(ranks, truths)):
                with punctum.open(rp) as g:
                    kr = g.knockout
                ko = f.knockout
                mine = ko[(ko["pair"] >= offs["pairs"][r])
                          & (ko["pair"] < offs["pairs"][r] + t.P)]
                assert len(mine) == len(kr)
                np.testing.assert_array_equal(mine["seq"].to_numpy(),
                                              kr["seq"].to_numpy() + offs["seqs"][r])
                assert list(mine["token"]) == list(kr["token"])
                assert list(mine["pair_id"]) == list(kr["pair_id"])
            # one sequence, by id, from the last rank
            pid = str(truths[2].d["pairs/id"][1])
            tk = f.tokens(pid, "a")
            with punctum.open(ranks[2]) as g:
                tr = g.tokens(pid, "a")
            pd.testing.assert_frame_equal(pd.DataFrame(tk), pd.DataFrame(tr))
            np.testing.assert_array_equal(tk.attn_mass.values, tr.attn_mass.values)
            assert tk.info["seq"] == tr.info["seq"] + offs["seqs"][2]
            ds = f.to_xarray()
            assert ds.sizes["token"] == sum(t.T for t in truths)
            assert set(ds.pair_id.values) == set(df["id"][df["ok"]])
            assert ds.token_row.values[-1] == offs["tokens"][2] + truths[2].T - 1
    # the view moved away from its rank files: a clear error naming the missing file
    moved = tmp_path / "moved.h5"
    os.rename(view, moved)
    with pytest.raises(FileNotFoundError, match="OUT.rank0.h5"):
        punctum.open(str(moved))


def test_mpi_view_interleaved_pairs(tmp_path):
    """A view that maps rank r's pairs to rows r, r+N, ... (input order) reads in order."""
    view = str(tmp_path / "IL.h5")
    recs, ranks = synth_h5.write_sharded(view, 11, 3, interleave=True)
    with punctum.open(view) as f:
        df = f.pairs
        assert list(df["id"]) == [r["id"] for r in recs]
        assert list(df.index) == list(range(11))
        assert list(df["line"]) == list(range(1, 12))
        chunks = list(f.iter_pairs(chunk=4))
        assert [len(c) for c in chunks] == [4, 4, 3]
        pd.testing.assert_frame_equal(pd.concat(chunks), df)
        ok = df[df["ok"]]
        for pid, text in zip(ok["id"], ok["text_b"]):
            rec = next(r for r in recs if r["id"] == pid)
            assert _na(text) if rec["b"] is None else text == rec["b"]


# ------------------------------------------------------------------------------------
# a million pairs


@pytest.fixture(scope="module")
def large(tmp_path_factory):
    p = str(tmp_path_factory.mktemp("large") / "large.h5")
    synth_h5.write_large(p, 1_000_000)
    return p


MEASURE = textwrap.dedent("""
    import json, sys, time
    sys.path.insert(0, {py!r})
    import numpy as np, punctum
    def status(key):  # /proc/self/status, MB (VmHWM: peak RSS of this process image only;
        for line in open("/proc/self/status"):  # ru_maxrss would include the parent's
            if line.startswith(key + ":"):       # RSS from before exec)
                return int(line.split()[1]) / 1024
    f = punctum.open({path!r})
    n0 = len(f)
    first = next(iter(f.iter_pairs(chunk=8)))     # warm up imports / caches
    del first
    try:
        open("/proc/self/clear_refs", "w").write("5")   # reset VmHWM to the current RSS
    except OSError:
        pass
    base = status("VmRSS")
    t = time.time()
    rows = ok = 0
    kl = 0.0
    last_id = None
    for df in f.iter_pairs(chunk={chunk}, join={join}):
        rows += len(df)
        ok += int(df["ok"].sum())
        kl += float(np.nansum(df["kl_ab"].to_numpy(dtype=np.float64)))
        last_id = df["id"].iloc[-1]
        if {join}:
            assert df["text_b"].dropna().str.endswith(".").all()
    peak = status("VmHWM")
    print(json.dumps(dict(n=n0, rows=rows, ok=ok, kl=kl, last_id=last_id, base=base,
                          growth=peak - base, seconds=time.time() - t)))
""")


def _measure(path, chunk, join):
    code = MEASURE.format(py=os.path.join(REPO, "python"), path=path, chunk=chunk, join=join)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_large_file_iterates_in_bounded_memory(large):
    with h5py.File(large, "r") as h:
        n = h["pairs/id"].shape[0]
        status = h["pairs/status"][...]
        kl = h["pairs/kl_ab"][...].astype(np.float64)
        last_id = h["pairs/id"].asstr()[n - 1]
    assert n == 1_000_000
    r = _measure(large, 65536, True)
    assert r["n"] == r["rows"] == n
    assert r["ok"] == int((status == 0).sum())
    assert r["last_id"] == last_id
    assert np.isclose(r["kl"], np.nansum(kl), rtol=1e-6)
    # the whole table as a DataFrame needs > 500 MB; one 65536-row slice far less
    assert r["growth"] < 200, f"reading 1M pairs in slices grew the process by {r['growth']:.0f} MB"
    r2 = _measure(large, 16384, False)
    assert r2["rows"] == n and r2["growth"] < 100, r2


def test_large_file_lookup_and_counts(large):
    with punctum.open(large) as f:
        assert len(f) == 1_000_000 and f.n_seqs == 2 * (1_000_000 - len(range(13, 1_000_000, 97)))
        g = f.pair_index("rec-999998")
        assert g == 999998
        row = f.read_pairs([g, 5]).reset_index()
        assert list(row["id"]) == ["rec-999998", "rec-5"]
        assert row["text_b"].iloc[0] == "prompt number 999998."


# ------------------------------------------------------------------------------------
# real engine output (skipped without build/punctum)


def _engine():
    b = os.environ.get("PUNCTUM_BIN") or os.path.join(REPO, "build", "punctum")
    return b if os.path.isfile(b) and os.access(b, os.X_OK) else None


needs_engine = pytest.mark.skipif(
    _engine() is None,
    reason="engine binary build/punctum (or $PUNCTUM_BIN) is absent: build it with "
           "cmake -S . -B build && cmake --build build; synthetic files cover the reader")


def engine_records(model):
    """Records of token ids: pairs b = a + '.', a line break, a comma vs period, a record
    without b, and one out-of-vocabulary (skipped) record."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(model.path, "tokenizer.json"))
    enc = lambda s: tok.encode(s).ids  # noqa: E731
    texts = ["the cat sat on the mat", "He saw a carrot and had to grab it,\nHis hunger",
             "and then the cat", "the mat, the cat"]
    recs = []
    for k, t in enumerate(texts):
        recs.append({"id": f"dot-{k}", "a_ids": enc(t), "b_ids": enc(t + "."),
                     "target_id": enc(" the")[0]})
    recs.append({"id": "comma-vs-period", "a_ids": enc("the cat sat,"), "b_ids": enc("the cat sat.")})
    recs.append({"id": "solo", "a_ids": enc("the cat sat on the mat.\nand")})
    recs.append({"id": "bad", "a_ids": [model.vocab_size + 5]})
    return recs


def engine_run(model, tmp, name, *extra):
    pairs = os.path.join(tmp, f"{name}.jsonl")
    with open(pairs, "w") as fh:
        for r in engine_records(model):
            fh.write(json.dumps(r) + "\n")
    out = os.path.join(tmp, f"{name}.h5")
    argv = [_engine(), "run", "--model", model.path, "--pairs", pairs, "--out", out, "--force",
            "--threads", "2", *extra]
    env = dict(os.environ, OMP_NUM_THREADS="2", OPENBLAS_NUM_THREADS="1")
    p = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env)
    if p.returncode != 0:
        pytest.fail(f"engine run failed ({p.returncode}): {' '.join(argv)}\n{p.stderr[-3000:]}",
                    pytrace=False)
    return out


@needs_engine
@pytest.mark.parametrize("extra", [
    (),
    ("--stats", "mass,last,resid,topk,lens,patterns", "--ablate", "knockout", "--positions",
     "all", "--windows", "each", "--patch", "resid"),
    ("--stats", "mass,last,topk", "--store", "f16", "--ablate", "knockout"),
], ids=["default", "everything", "f16"])
def test_engine_output_matches_h5py(tiny_model, tmp_path, extra):
    m = tiny_model("gpt2")
    out = engine_run(m, str(tmp_path), "eng", *extra)
    t = check_file(out)
    with punctum.open(out) as f:
        assert f.n_pairs == len(engine_records(m))
        fl = f.failures
        assert list(fl["id"]) == ["bad"] and "line 7" in fl["message"].iloc[0]
        tk = f.tokens("dot-1", "b")
        assert tk["is_punct"].iloc[-1] and tk["text"].iloc[-1] == "."
        assert "\n" in "".join(tk["text"]) and tk["is_punct"][tk["text"].str.contains("\n")].all()
        np.testing.assert_allclose(tk.attn_mass.sum("token").values, len(tk), rtol=2e-3)
        np.testing.assert_allclose(tk.attn_last.sum("token").values, 1, rtol=2e-3)
        ds = f.to_xarray(pairs=["dot-0"])
        assert set(ds.side.values) == {"a", "b"}
        if "patterns" in " ".join(extra):
            pat = tk.attn_pattern
            np.testing.assert_allclose(pat.sum("query").transpose("key", "layer", "head").values,
                                       tk.attn_mass.values, rtol=2e-3, atol=1e-4)
        if "f16" in extra:
            assert f.knockout["kl"].dtype == np.float32 and len(f.knockout)
        if "--patch" in extra:
            assert len(f.knockout) and len(f.lens) and len(f.patching)
            assert set(f.patching["pair_id"]) == {"comma-vs-period"}
            assert t.d["lens/logp_top1"].shape[1] == m.n_layers + 1
