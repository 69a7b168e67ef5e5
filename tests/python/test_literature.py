"""punctum.literature (sink_share, massive_census, punct_vs_other) against independent numpy
computations from the raw datasets (h5py), on synthetic files and on engine-made files.

The census of massive activations is also checked on real engine bookkeeping: the three
datasets of the stat `massive` (SPEC §5) are computed from transformers' hidden states in
float64 (massive_ref.py) and written into an engine-made file, unless the engine writes
them itself, in which case its values are compared with transformers' and used.

The bootstrap is checked against a literal loop over replicates that follows the protocol
documented in punctum/literature.py (seed, cluster order, draws), so the intervals are
compared exactly, not only for plausibility.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "python"))
sys.path.insert(0, HERE)

import punctum  # noqa: E402
import synth_h5  # noqa: E402
from punctum import literature as lit  # noqa: E402

N_BOOT = 300
SEED = 11
RTOL = 1e-9


# ------------------------------------------------------------------------------------
# the independent side: raw datasets, plain loops


class Raw:
    """Committed rows of a self-contained file, read whole with h5py."""

    def __init__(self, path):
        with h5py.File(path, "r", locking=False) as f:
            self.d = {}
            f.visititems(lambda n, o: self.d.__setitem__(
                n, o.asstr()[...] if h5py.check_string_dtype(o.dtype) else o[...])
                if isinstance(o, h5py.Dataset) else None)
            self.P = int(f.attrs["committed_pairs"])
        d = self.d
        self.seqs = []   # (seq, pair, side) of committed, ok pairs
        for k in range(self.P):
            if d["pairs/status"][k] != 0:
                continue
            for side, name in ((0, "pairs/seq_a"), (1, "pairs/seq_b")):
                s = int(d[name][k])
                if s >= 0:
                    self.seqs.append((s, k, side))

    def pid(self, k):
        return str(self.d["pairs/id"][k])

    def rows(self, s):
        a = int(self.d["seqs/tok_start"][s])
        return range(a, a + int(self.d["seqs/n_tok"][s]))


def naive_boot(clusters, n_boot=N_BOOT, seed=SEED, level=0.95):
    """clusters: {key: (sums [k], counts [k])}. The documented protocol, as a loop."""
    keys = sorted(clusters)
    sums = np.array([clusters[c][0] for c in keys], np.float64)
    counts = np.array([clusters[c][1] for c in keys], np.float64)
    used = counts.sum(axis=1) > 0
    sums, counts = sums[used], counts[used]
    est = sums.sum(axis=0) / counts.sum(axis=0)
    rng = np.random.default_rng(seed)
    C = len(sums)
    reps = []
    for _ in range(n_boot):
        idx = rng.integers(0, C, C)
        with np.errstate(invalid="ignore", divide="ignore"):
            reps.append(sums[idx].sum(axis=0) / counts[idx].sum(axis=0))
    reps = np.array(reps)
    q = [(1 - level) / 2, (1 + level) / 2]
    return est, reps, np.nanquantile(reps, q, axis=0).T


def _acc(clusters, key, k, col, value, weight=1.0):
    s, c = clusters.setdefault(key, (np.zeros(k), np.zeros(k)))
    s[col] += value * weight
    c[col] += weight


def np_sink(raw, prefix, eps):
    d = raw.d
    clusters, n = {}, 0
    L = d["tokens/attn_mass"].shape[1]
    for s, k, _ in raw.seqs:
        if not raw.pid(k).startswith(prefix):
            continue
        T = int(d["seqs/n_tok"][s])
        a0 = d["tokens/attn_mass"][int(d["seqs/tok_start"][s])].astype(np.float64) / T
        sink = a0 > eps
        for col, v in enumerate([sink.mean()] + list(sink.mean(axis=1))):
            _acc(clusters, k, L + 1, col, v)
        n += 1
    return n, clusters


def np_kinds(raw, s):
    """Kind per token of sequence s: hand-written rule, one token at a time."""
    d = raw.d
    out, delim_seen = [], False
    for r in raw.rows(s):
        pos, text = int(d["tokens/pos"][r]), str(d["tokens/text"][r])
        if pos == 0:
            out.append("first")
        elif not delim_seen and ("\n" in text or text.strip().endswith(".")):
            out.append("first_delim")
            delim_seen = True
        elif d["tokens/is_punct"][r]:
            out.append("other_punct")
        else:
            out.append("other")
    return out


def np_census(raw, threshold, ratio, keep=lambda pid: True):
    d = raw.d
    K = len(lit.KINDS)
    vmax = d["tokens/resid_max"].astype(np.float64)
    vmed = d["tokens/resid_median"].astype(np.float64)
    arg = d["tokens/resid_argmax"]
    L1 = vmax.shape[1]
    out = {"tokens": np.zeros(K, int), "carriers": np.zeros(K, int),
           "massive": np.zeros((K, L1), int), "max": np.full((K, L1), -np.inf),
           "logs": [[[] for _ in range(L1)] for _ in range(K)], "dims": {}, "values": []}
    clusters = {}
    for s, k, _ in raw.seqs:
        if not keep(raw.pid(k)):
            continue
        for r, kind in zip(raw.rows(s), np_kinds(raw, s)):
            ki = lit.KINDS.index(kind)
            m = (vmax[r] > threshold) & (vmax[r] >= ratio * vmed[r])
            out["tokens"][ki] += 1
            out["carriers"][ki] += bool(m.any())
            _acc(clusters, k, K, ki, float(m.any()))
            for l in range(L1):
                out["massive"][ki, l] += bool(m[l])
                out["max"][ki, l] = max(out["max"][ki, l], vmax[r, l])
                out["logs"][ki][l].append(np.log10(vmax[r, l]))
                if m[l]:
                    out["dims"][int(arg[r, l])] = out["dims"].get(int(arg[r, l]), 0) + 1
                    out["values"].append(vmax[r, l])
    out["clusters"] = clusters
    return out


def check_census(c, want, n_boot=N_BOOT, seed=SEED):
    K = c.kinds
    np.testing.assert_array_equal(K["tokens"].to_numpy(), want["tokens"])
    np.testing.assert_array_equal(K["carriers"].to_numpy(), want["carriers"])
    bl = c.by_layer
    for ki, kind in enumerate(lit.KINDS):
        if not want["tokens"][ki]:
            continue
        np.testing.assert_array_equal(bl.loc[kind]["massive"].to_numpy(), want["massive"][ki])
        np.testing.assert_allclose(bl.loc[kind]["max"].to_numpy(), want["max"][ki], rtol=1e-12)
        gm = [10 ** np.mean(v) for v in want["logs"][ki]]
        np.testing.assert_allclose(bl.loc[kind]["gmean"].to_numpy(), gm, rtol=1e-9)
    got_dims = dict(zip(c.dims["dim"].tolist(), c.dims["count"].tolist()))
    assert got_dims == want["dims"]
    top = sorted(want["values"], reverse=True)[:len(c.top)]
    np.testing.assert_allclose(c.top["value"].to_numpy(), top, rtol=1e-12)
    est, _, ci = naive_boot(want["clusters"], n_boot, seed)
    np.testing.assert_allclose(K["share"].to_numpy(), est, rtol=RTOL, equal_nan=True)
    np.testing.assert_allclose(K[["ci_lo", "ci_hi"]].to_numpy(), ci, rtol=RTOL, equal_nan=True)


def np_punct(raw, window, keep=lambda pid: True):
    """Knockout KL and attention α by group (punct, other, first), per pair."""
    d = raw.d
    ko = {}
    seq_pair = {s: k for s, k, _ in raw.seqs}
    for r in range(len(d.get("ablation/knockout/seq", []))):
        s = int(d["ablation/knockout/seq"][r])
        if s not in seq_pair or d["ablation/knockout/window"][r] != window:
            continue
        k = seq_pair[s]
        if not keep(raw.pid(k)):
            continue
        j = int(d["ablation/knockout/pos"][r])
        tok = int(d["seqs/tok_start"][s]) + j
        g = 2 if j == 0 else (0 if d["tokens/is_punct"][tok] else 1)
        _acc(ko, k, 9, 3 * g, float(d["ablation/knockout/kl"][r]))
        _acc(ko, k, 9, 3 * g + 1, float(d["ablation/knockout/top1_changed"][r]))
        _acc(ko, k, 9, 3 * g + 2, float(d["ablation/knockout/dlogp_top1"][r]))
    att = {}
    L = d["tokens/attn_mass"].shape[1]
    for s, k, _ in raw.seqs:
        if not keep(raw.pid(k)):
            continue
        T = int(d["seqs/n_tok"][s])
        for r in raw.rows(s):
            j = int(d["tokens/pos"][r])
            if j == T - 1:
                continue
            g = 2 if j == 0 else (0 if d["tokens/is_punct"][r] else 1)
            alpha = d["tokens/attn_mass"][r].astype(np.float64) / (T - j)   # [L, H]
            vals = [alpha.mean()] + list(alpha.mean(axis=1)) + [j]
            for i, v in enumerate(vals):
                _acc(att, k, 3 * (L + 2), g * (L + 2) + i, v)
    return ko, att


def check_punct(pv, raw, window, keep=lambda pid: True):
    ko, att = np_punct(raw, window, keep)
    if ko:
        est, reps, ci = naive_boot(ko)
        for g, name in enumerate(lit.GROUPS):
            row = pv.knockout.loc[name]
            np.testing.assert_allclose([row["mean"], row["top1_changed"], row["dlogp_top1"]],
                                       est[3 * g:3 * g + 3], rtol=RTOL, equal_nan=True)
            np.testing.assert_allclose([row["ci_lo"], row["ci_hi"]], ci[3 * g], rtol=RTOL,
                                       equal_nan=True)
        ratio = reps[:, 0] / reps[:, 3]
        want = [est[0] / est[3], *np.nanquantile(ratio, [0.025, 0.975])]
        np.testing.assert_allclose(pv.knockout_ratio, want, rtol=RTOL)
    else:
        assert pv.knockout is None
    est, reps, ci = naive_boot(att)
    L = pv.attention_by_layer.shape[0]
    for g, name in enumerate(lit.GROUPS):
        row = pv.attention.loc[name]
        j = g * (L + 2)
        np.testing.assert_allclose([row["mean"], row["ci_lo"], row["ci_hi"], row["mean_pos"]],
                                   [est[j], ci[j, 0], ci[j, 1], est[j + L + 1]], rtol=RTOL)
        np.testing.assert_allclose(pv.attention_by_layer[name].to_numpy(),
                                   est[j + 1:j + 1 + L], rtol=RTOL)
    o = L + 2
    want = [est[0] / est[o], *np.nanquantile(reps[:, 0] / reps[:, o], [0.025, 0.975])]
    np.testing.assert_allclose(pv.attention_ratio, want, rtol=RTOL)


def check_sink(raw, path, prefix, eps):
    n, clusters = np_sink(raw, prefix, eps)
    r = lit.sink_share(path, eps=eps, select=prefix, n_boot=N_BOOT, seed=SEED)
    assert r.n_seqs == n
    if not n:
        assert np.isnan(r.share)
        return r
    est, _, ci = naive_boot(clusters)
    np.testing.assert_allclose(r.share, est[0], rtol=RTOL)
    np.testing.assert_allclose(r.ci, ci[0], rtol=RTOL)
    np.testing.assert_allclose(r.per_layer, est[1:], rtol=RTOL)
    np.testing.assert_allclose(r.per_layer_ci, ci[1:], rtol=RTOL)
    want_T = {}
    for s, k, _ in raw.seqs:
        if raw.pid(k).startswith(prefix):
            T = int(raw.d["seqs/n_tok"][s])
            want_T[T] = want_T.get(T, 0) + 1
    assert r.lengths == want_T
    return r


# ------------------------------------------------------------------------------------
# the bootstrap and the token kinds, by hand


def test_bootstrap_follows_the_documented_protocol():
    rng = np.random.default_rng(3)
    sums = rng.normal(size=(37, 4))
    counts = rng.integers(0, 4, size=(37, 4)).astype(float)
    counts[:, 0] = 1
    est, reps = lit.bootstrap(sums, counts, n_boot=257, seed=5)
    clusters = {i: (sums[i], counts[i]) for i in range(37)}
    e2, r2, ci2 = naive_boot(clusters, n_boot=257, seed=5)
    np.testing.assert_allclose(est, e2, rtol=1e-12)
    np.testing.assert_allclose(reps, r2, rtol=1e-9, equal_nan=True)
    np.testing.assert_allclose(lit.interval(reps), ci2, rtol=1e-9, equal_nan=True)
    # identical clusters: an interval of zero width; none: NaN
    e, r = lit.bootstrap(np.ones((5, 1)) * 0.25, np.ones((5, 1)), n_boot=50)
    assert e[0] == 0.25 and np.all(lit.interval(r) == 0.25)
    e, r = lit.bootstrap(np.zeros((0, 2)), np.zeros((0, 2)), n_boot=10)
    assert np.isnan(e).all() and np.isnan(lit.interval(r)).all()


def test_token_kinds_hand_checked():
    seq = [4, 4, 4, 4, 4, 4, 5, 5, 5]
    pos = [0, 1, 2, 3, 4, 5, 0, 1, 2]
    text = ["Dear", " Anna", ",", "\n", "Hi", ".", ".", " x", ".\n"]
    pun = [0, 0, 1, 1, 0, 1, 1, 0, 1]
    want = ["first", "other", "other_punct", "first_delim", "other", "other_punct",
            "first", "other", "first_delim"]
    got = lit.token_kinds(seq, pos, np.array(text, dtype=object), pun)
    assert [lit.KINDS[k] for k in got] == want
    # the same rows in two chunks: the delimiter seen in the first chunk stays the first
    seen = set()
    a = lit.token_kinds(seq[:4], pos[:4], np.array(text[:4], dtype=object), pun[:4], seen)
    assert seen == {4}
    b = lit.token_kinds(seq[4:], pos[4:], np.array(text[4:], dtype=object), pun[4:], seen)
    assert [lit.KINDS[k] for k in np.concatenate([a, b])] == want
    assert lit.is_first_delim_text(" .  ") and lit.is_first_delim_text("\n\n")
    assert not lit.is_first_delim_text(",") and not lit.is_first_delim_text("…")


# ------------------------------------------------------------------------------------
# synthetic files


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    d = tmp_path_factory.mktemp("lit")
    path = str(d / "lit.h5")
    recs = synth_h5.make_records(14, n_failed=2) + synth_h5.literature_records(start_line=15)
    synth_h5.write(path, records=recs, positions="all", n_layers=4, n_heads=3, chunk_rows=9,
                   stats=("mass", "last", "resid", "topk", "massive"))
    return path


def test_sink_share_matches_numpy(synth):
    raw = Raw(synth)
    nat = check_sink(raw, synth, "sink-natural-", 0.3)
    rep = check_sink(raw, synth, "sink-repeat-", 0.3)
    assert nat.share > 0.9 and rep.share < 0.5          # the toy model's planted sink
    for eps in (0.05, 0.6):
        check_sink(raw, synth, "", eps)
    check_sink(raw, synth, "no-such-", 0.3)
    assert "T = " in nat.length and "sequences" in str(nat)
    # side and explicit id lists
    r = lit.sink_share(synth, select=["pair-0", "pair-2"], side="b", n_boot=20)
    assert set(r.per_seq["pair_id"]) == {"pair-0", "pair-2"} and set(r.per_seq["side"]) == {"b"}
    r = lit.sink_share(synth, select=lambda i: i.endswith("-3"), n_boot=20)
    assert set(r.per_seq["pair_id"]) <= {"pair-3", "sink-natural-03"}


def test_massive_census_matches_numpy(synth, monkeypatch):
    raw = Raw(synth)
    c = lit.massive_census(synth, n_boot=N_BOOT, seed=SEED)
    check_census(c, np_census(raw, 100, 1000))
    # the planted pattern (synth_h5.massive_rows): first token from layer 1, first
    # delimiter from layer 2, both fading at the final residual, each in its own dimension
    k = c.kinds
    assert k.loc["first", "share"] == 1 and k.loc["first", "onset"] == 1
    assert k.loc["first_delim", "share"] == 1 and k.loc["first_delim", "onset"] == 2
    assert k.loc["first", "layers"] == "1–3" and k.loc["first_delim", "layers"] == "2–3"
    assert k.loc["first", "dims"][0] == synth_h5.MASSIVE_DIMS[0]
    assert k.loc["first_delim", "dims"] == [synth_h5.MASSIVE_DIMS[1]]
    assert 0 < k.loc["other", "share"] < 0.2
    # other thresholds, a selection, and chunks far smaller than a sequence
    want = np_census(raw, 2.0, 5.0, keep=lambda p: not p.startswith("sink-repeat-"))
    monkeypatch.setattr(lit, "CHUNK", 5)
    c2 = lit.massive_census(synth, threshold=2.0, ratio=5.0, n_boot=N_BOOT, seed=SEED,
                            select=lambda p: not p.startswith("sink-repeat-"))
    check_census(c2, want)


def test_punct_vs_other_matches_numpy(synth):
    raw = Raw(synth)
    wins = raw.d["ablation/windows"]
    widest = int(np.argmax(wins[:, 1] - wins[:, 0]))
    pv = lit.punct_vs_other(synth, n_boot=N_BOOT, seed=SEED)
    assert pv.window == tuple(int(x) for x in wins[widest])
    check_punct(pv, raw, widest)
    keep = lambda p: not p.startswith("sink-")  # noqa: E731
    pv = lit.punct_vs_other(synth, window=1, select=keep, n_boot=N_BOOT, seed=SEED)
    check_punct(pv, raw, 1, keep)
    # the toy model's knockouts of punctuation are ~10x stronger (synth_h5._build)
    assert pv.knockout_ratio[1] > 2


def test_census_of_a_view_and_an_in_progress_file(tmp_path):
    recs = synth_h5.literature_records(4, 2, 4)
    view = str(tmp_path / "OUT.h5")
    kw = dict(stats=("mass", "resid", "massive"), knockout=False, patching=False, n_layers=3)
    synth_h5.write_sharded(view, 10, 3, n_failed=0, **kw)   # the same model, other records
    c = lit.massive_census(view, n_boot=50)
    parts = [lit.massive_census(str(tmp_path / f"OUT.rank{r}.h5"), n_boot=50) for r in range(3)]
    for col in ("tokens", "carriers"):
        np.testing.assert_array_equal(c.kinds[col].to_numpy(),
                                      sum(p.kinds[col].to_numpy() for p in parts))
    s = lit.sink_share(view, n_boot=50)
    assert s.n_seqs == sum(lit.sink_share(str(tmp_path / f"OUT.rank{r}.h5")).n_seqs
                           for r in range(3))
    # only committed rows count
    prog = str(tmp_path / "prog.h5")
    synth_h5.write(prog, records=recs, committed=5, **kw)
    cw = lit.massive_census(prog, n_boot=50)
    raw = Raw(prog)
    check_census(cw, np_census(raw, 100, 1000), n_boot=50, seed=0)
    assert cw.n_seqs == 5


def test_missing_statistics_say_why(tmp_path):
    p = str(tmp_path / "plain.h5")
    synth_h5.write(p, 6, stats=("topk",), knockout=False, patching=False)
    with pytest.raises(ValueError, match="without mass in --stats"):
        lit.sink_share(p)
    with pytest.raises(ValueError, match="add massive to --stats"):
        lit.massive_census(p)
    with pytest.raises(ValueError, match="neither knockout rows nor"):
        lit.punct_vs_other(p)
    with pytest.raises(TypeError):
        lit.sink_share(42)
    q = str(tmp_path / "mass.h5")
    synth_h5.write(q, 6, stats=("mass",), knockout=False, patching=False)
    pv = lit.punct_vs_other(q, n_boot=20)
    assert pv.knockout is None and pv.attention is not None


# ------------------------------------------------------------------------------------
# engine-made files (tiny models)


def _records(model_dir):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    enc = lambda s: tok.encode(s).ids  # noqa: E731
    texts = ["the cat sat. the cat sat,\n and the cat", " the cat, and the cat sat.\n the",
             "cat sat and the cat. and\n\n the cat sat", " and the cat sat, the cat."]
    recs = []
    for k, t in enumerate(texts):
        recs.append({"id": f"sink-natural-{k + 1:02d}", "a_ids": enc(t)})
    for k, w in enumerate([" the", " cat"]):
        recs.append({"id": f"sink-repeat-{k + 1:02d}", "a_ids": enc(w) * (16 + 2 * k)})
    recs.append({"id": "pair-1", "a_ids": enc("the cat sat"), "b_ids": enc("the cat sat.")})
    recs.append({"id": "pair-2", "a_ids": enc(" the cat, and"), "b_ids": enc(" the cat. and")})
    recs.append({"id": "bad", "a_ids": [10 ** 6]})
    return recs


def _with_tokenizer(tiny_model, name, tmp):
    """The tiny model `name` with the tiny gpt2's tokenizer.json beside it (so that
    token texts, and with them punctuation and delimiters, exist for every type)."""
    m = tiny_model(name)
    if m.has_tokenizer:
        return m.path
    d = os.path.join(tmp, name + "-tok")
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(m.path):
        if f.endswith((".json", ".safetensors")) and not os.path.exists(os.path.join(d, f)):
            os.symlink(os.path.join(m.path, f), os.path.join(d, f))
    src = os.path.join(tiny_model("gpt2").path, "tokenizer.json")
    with open(src, "rb") as a, open(os.path.join(d, "tokenizer.json"), "wb") as b:
        b.write(a.read())
    return d


def _run(punctum, model_dir, tmp, name, *extra):
    pairs = os.path.join(tmp, name + ".jsonl")
    with open(pairs, "w") as fh:
        for r in _records(model_dir):
            fh.write(json.dumps(r) + "\n")
    out = os.path.join(tmp, name + ".h5")
    punctum.run(model_dir, pairs, out, *extra)
    return out


def _engine_has_massive(punctum):
    p = punctum("run", "--help", expect=None, threads=False)
    return "massive" in (p.stdout + p.stderr)


def test_sink_and_punct_on_engine_output(punctum, tiny_model, tmp_path):
    d = _with_tokenizer(tiny_model, "llama_gqa", str(tmp_path))
    out = _run(punctum, d, str(tmp_path), "eng", "--stats", "mass,last,resid,topk",
               "--ablate", "knockout", "--positions", "all", "--windows", "0:1,1:3,0:3")
    raw = Raw(out)
    assert len(raw.d["ablation/knockout/seq"]) and raw.d["tokens/is_punct"].any()
    # a threshold at the median α_0 keeps the share away from 0 and 1
    a0 = [raw.d["tokens/attn_mass"][int(raw.d["seqs/tok_start"][s])] / raw.d["seqs/n_tok"][s]
          for s, _, _ in raw.seqs]
    for eps in (0.3, float(np.median(a0))):
        for prefix in ("sink-natural-", "sink-repeat-", ""):
            check_sink(raw, out, prefix, eps)
    pv = lit.punct_vs_other(out, n_boot=N_BOOT, seed=SEED)
    assert pv.window == (0, 3)
    check_punct(pv, raw, 2)
    keep = lambda p: not p.startswith(lit.REPEAT_PREFIX)  # noqa: E731
    check_punct(lit.punct_vs_other(out, window=0, select=keep, n_boot=N_BOOT, seed=SEED),
                raw, 0, keep)


def _compare_engine_massive(raw, ref):
    """The engine's own massive datasets against transformers (float64)."""
    d = raw.d
    T = len(ref["resid_max"])
    vmax = d["tokens/resid_max"][:T].astype(np.float64)
    np.testing.assert_allclose(vmax, ref["resid_max"], rtol=1e-4, atol=1e-5)
    med = d["tokens/resid_median"][:T].astype(np.float64)
    # SPEC §3 does not say which median an even d_model gets (the mean of the two middle
    # values, or one of them, as a selection gives): any value between them is accepted
    lo, hi = ref["median_lo"], ref["median_hi"]
    tol = 1e-4 * hi + 1e-5
    bad = (med < lo - tol) | (med > hi + tol)
    assert not bad.any(), f"resid_median outside [lower, upper middle]: {np.argwhere(bad)[:5]}"
    arg = d["tokens/resid_argmax"][:T]
    # a different argmax only where two dimensions tie within float32 precision
    differ = arg != ref["resid_argmax"]
    assert differ.mean() < 0.01, f"argmax differs at {differ.sum()} of {differ.size}"
    assert (arg >= 0).all() and (arg < ref["d_model"]).all()


@pytest.mark.parametrize("name", ["gpt2", "llama_gqa", "qwen2"])
def test_massive_census_on_engine_bookkeeping(punctum, tiny_model, tmp_path, name):
    import massive_ref

    d = _with_tokenizer(tiny_model, name, str(tmp_path))
    engine_massive = _engine_has_massive(punctum)
    stats = "mass,resid,topk" + (",massive" if engine_massive else "")
    out = _run(punctum, d, str(tmp_path), name, "--stats", stats)
    ref = massive_ref.compute_for_file(d, out)
    ref["d_model"] = tiny_model(name).d_model
    raw = Raw(out)
    T = len(ref["resid_max"])
    # the rows line up: the engine's residual norms are transformers'
    np.testing.assert_allclose(raw.d["tokens/resid_norm"][:T], ref["resid_norm"],
                               rtol=1e-3, atol=1e-4)
    if engine_massive:
        _compare_engine_massive(raw, ref)
    else:
        massive_ref.add_to_file(d, out, ref)
        raw = Raw(out)
        # the comparison the engine's own values will get accepts transformers' values
        # (stored as float32) and rejects a median off by 1 %
        _compare_engine_massive(raw, ref)
        raw.d["tokens/resid_median"] = raw.d["tokens/resid_median"] * 1.01
        with pytest.raises(AssertionError, match="resid_median"):
            _compare_engine_massive(raw, ref)
        raw = Raw(out)
        # transformers' values, stored as float32
        np.testing.assert_allclose(raw.d["tokens/resid_max"][:T], ref["resid_max"], rtol=1e-6)
    # thresholds inside the data's range, so that every kind has both outcomes
    vmax = raw.d["tokens/resid_max"][:T].astype(np.float64)
    rat = vmax / raw.d["tokens/resid_median"][:T]
    thr, ratio = float(np.quantile(vmax, 0.5)), float(np.quantile(rat, 0.3))
    c = lit.massive_census(out, threshold=thr, ratio=ratio, n_boot=N_BOOT, seed=SEED)
    want = np_census(raw, thr, ratio)
    check_census(c, want)
    assert want["tokens"][1] > 0 and want["tokens"][2] > 0, "no delimiter / punctuation"
    assert 0 < c.kinds["carriers"].sum() < c.kinds["tokens"].sum()
    # Sun et al.'s own thresholds on a tiny random model: checked, whatever they give
    check_census(lit.massive_census(out, n_boot=N_BOOT, seed=SEED), np_census(raw, 100, 1000))


# ------------------------------------------------------------------------------------
# the bundled prompts


def test_literature_jsonl():
    path = os.path.join(REPO, "examples", "literature.jsonl")
    with open(path, encoding="utf-8") as fh:
        recs = [json.loads(ln) for ln in fh if ln.strip()]
    ids = [r["id"] for r in recs]
    assert len(ids) == len(set(ids))
    fam = [i.rsplit("-", 1)[0] for i in ids]
    assert fam.count("sink-natural") >= 20 and fam.count("sink-repeat") >= 6
    assert fam.count("massive") >= 10 and set(fam) == {"sink-natural", "sink-repeat", "massive"}
    for r in recs:
        assert set(r) == {"id", "a"} and r["a"]
        if r["id"].startswith("massive-"):   # an early "." and a line break
            assert "\n" in r["a"] and "." in r["a"]
            assert min(r["a"].find("."), r["a"].find("\n")) < 40
    tok = os.path.join(os.environ.get("PUNCTUM_CACHE", os.path.expanduser("~/.cache/punctum")),
                       "models", "smollm2-135m-instruct", "tokenizer.json")
    if not os.path.exists(tok):
        pytest.skip("SmolLM2's tokenizer is absent (scripts/fetch-model.sh): lengths unchecked")
    from tokenizers import Tokenizer

    t = Tokenizer.from_file(tok)
    for r in recs:
        n = len(t.encode(r["a"], add_special_tokens=False).ids)
        if r["id"].startswith("sink-"):
            assert n == 64, (r["id"], n)
        if r["id"].startswith("sink-repeat-"):
            assert len(set(t.encode(r["a"]).ids)) == 1
    p = subprocess.run([sys.executable, os.path.join(REPO, "examples", "make_literature.py"),
                        "--tokenizer", tok, "--check", path], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
