"""punctum run vs the float64 Hugging Face reference, on every tiny model.

Tolerances (reference.py): |got - ref| <= atol + 1e-4 |ref| with atol 1e-6 for attention
probabilities (attn_last, patterns) and KL / JS, 1e-5 for attn_mass, log-probs, entropy,
resid_norm and resid_cos. Top-k ids exact except swaps among reference log-probs tied within
1e-6. Integer and string datasets exact. Runs of the same records under different
--batch-tokens and in shuffled order must agree within PACK_RTOL = 1e-5 relative plus
PACK_ATOL = 1e-6 absolute: float32 noise level. (The cpu backend is not bit-identical across
batch compositions: different GEMM shapes round differently; measured up to ~6e-6 relative /
1.4e-6 absolute on attention values after 3 layers. Real packing bugs, e.g. attention leaking
across packed sequences, are orders of magnitude larger.)
"""
from __future__ import annotations

import json
import random

import h5py
import numpy as np
import pytest
import torch

import reference as R
import tiny_models

STATS_DATASETS = {
    "mass": ["/tokens/attn_mass"],
    "last": ["/tokens/attn_last"],
    "resid": ["/tokens/resid_norm"],
    "patterns": ["/patterns/value", "/seqs/pattern_start"],
}
# always written (bookkeeping and the pair / next-token statistics)
CORE = ["/pairs/id", "/pairs/line", "/pairs/status", "/pairs/seq_a", "/pairs/seq_b",
        "/pairs/kl_ab", "/pairs/kl_ba", "/pairs/js", "/pairs/resid_cos",
        "/seqs/pair", "/seqs/side", "/seqs/text", "/seqs/tok_start", "/seqs/n_tok",
        "/seqs/entropy", "/seqs/topk_id", "/seqs/topk_logprob", "/seqs/target_id",
        "/seqs/target_logprob"]
TOKEN_BOOK = ["/tokens/id", "/tokens/seq", "/tokens/pos", "/tokens/text",
              "/tokens/byte_start", "/tokens/byte_end", "/tokens/is_punct"]
ABSENT_GROUPS = ["/lens", "/ablation", "/patching"]
PACK_RTOL = 1e-5
PACK_ATOL = 1e-6


def standard_lines(m: tiny_models.TinyModel, seed: int) -> list:
    """Pairs of different lengths: b = a + one token, b shorter than a, no b, T = 1,
    b a prefix of a, b == a, prompts longer than the mistral window, blank lines,
    records with and without id / target_id."""
    rng = random.Random(seed)
    V = m.vocab_size

    def ids(n):
        return [rng.randrange(V) for _ in range(n)]

    a1 = ids(7)
    long_a = ids(20)
    same = ids(6)
    lines = [
        {"id": "append", "a_ids": a1, "b_ids": a1 + [rng.randrange(V)], "target_id": rng.randrange(V)},
        {"id": "b-shorter", "a_ids": ids(12), "b_ids": ids(9)},
        {"id": "a-only", "a_ids": ids(10), "target_id": rng.randrange(V)},
        "",
        {"a_ids": ids(1), "b_ids": ids(2), "target_id": rng.randrange(V)},
        {"id": "b-prefix-of-a", "a_ids": long_a, "b_ids": long_a[:-1], "target_id": 0},
        {"id": "same", "a_ids": same, "b_ids": same},
        "   ",
        {"id": "long", "a_ids": ids(24), "b_ids": ids(16), "target_id": V - 1},
        {"id": "a-only-short", "a_ids": ids(3)},
    ]
    if m.has_tokenizer:
        lines.append(text_record(m))
    return lines


def text_record(m: tiny_models.TinyModel) -> dict:
    """ids of merged / punctuation tokens of the tiny byte-level tokenizer."""
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(f"{m.path}/tokenizer.json")
    b2u = tiny_models._byte_to_unicode()

    def tid(s):
        t = "".join(b2u[b] for b in s.encode("utf-8"))
        i = tok.token_to_id(t)
        assert i is not None, s
        return i
    pieces = ["T", " th", " cat", " sat", ",", " the", " and", "ing", ".\n", "\n\n", "!", "?",
              ";", ":", " a", "。", "\u2026", "\u3001", " ", "\t", ", ", "x", " ."]
    a = [tid(p) for p in pieces]
    return {"id": "text-pieces", "a_ids": a, "b_ids": a[:-1] + [tid(".")], "target_id": tid(".")}


def run_and_read(punctum, m, tmp_path, lines, *extra, name="out"):
    pairs = tmp_path / f"{name}.jsonl"
    text = R.write_pairs(str(pairs), lines)
    out = tmp_path / f"{name}.h5"
    punctum.run(m.path, str(pairs), str(out), *extra)
    return text, str(out)


def assert_no_mismatch(msgs, model, what=""):
    if msgs:
        pytest.fail(f"{model}{' ' + what if what else ''}: engine output differs from the "
                    f"reference:\n" + "\n".join(msgs), pytrace=False)


# ---------------------------------------------------------------------------------------
# the reference itself (no engine needed)
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", tiny_models.ALL_MODELS)
def test_reference_sanity(name, tiny_model, reference):
    m = tiny_model(name)
    ref = reference(name)
    rng = random.Random(7)
    ids = [rng.randrange(m.vocab_size) for _ in range(13)]
    so = ref.forward(ids)
    T, L = len(ids), m.n_layers
    A = so.attn
    assert A.shape == (L, m.n_heads, T, T)
    # causal: nothing above the diagonal; rows sum to 1
    assert np.abs(np.triu(A, k=1)).max() == 0.0
    np.testing.assert_allclose(A.sum(-1), 1.0, atol=1e-6)
    if m.sliding_window:
        W = m.sliding_window
        i, j = np.indices((T, T))
        assert np.abs(A[:, :, (i - j) >= W]).max() == 0.0, "keys outside the window attended"
        assert A[:, :, (i - j) == W - 1].min() > 0.0
    else:
        assert (np.tril(A[:, :, :, :]) > 0).sum() == L * m.n_heads * T * (T + 1) // 2
    mass = A.sum(axis=2)
    np.testing.assert_allclose(mass.sum(-1), T, rtol=1e-6)             # sum_j attn_mass = T
    np.testing.assert_allclose(A[:, :, T - 1, :].sum(-1), 1.0, atol=1e-6)  # sum attn_last = 1
    # attention far from uniform (the test is sensitive): peak weights well above 1/(i+1)
    assert A[:, :, T - 1, :].max() > 3.0 / T
    # hooks: residual entering layer l == HF's hidden_states[l] for l < L
    for l in range(L):
        np.testing.assert_array_equal(so.resid[:, l, :], so.hidden_states[l][0].double().numpy())
    # layer 0 input == the embeddings, computed by hand
    model = ref.model
    x = torch.tensor([ids])
    with torch.no_grad():
        if m.model_type == "gpt2":
            emb = model.transformer.wte(x) + model.transformer.wpe(torch.arange(T)[None])
        else:
            emb = model.model.embed_tokens(x)
        np.testing.assert_allclose(so.resid[:, 0, :], emb[0].double().numpy(), rtol=0, atol=0)
        # captured final residual is the final norm's input: norm -> lm_head gives the logits
        _, norm = R.layers_and_final_norm(model)
        fin = torch.tensor(so.resid[:, L, :], dtype=torch.float32)[None]
        logits = model.lm_head(norm(fin))[0].numpy()
        np.testing.assert_allclose(logits, so.logits32, rtol=1e-5, atol=1e-5)
        # and it differs from HF's last hidden_states entry (which is after the norm)
        assert not np.allclose(so.resid[:, L, :], so.hidden_states[L][0].double().numpy())
        # final residual = last layer's input + that layer's output delta, by hand
        layers, _ = R.layers_and_final_norm(model)
        h_in = torch.tensor(so.resid[:, L - 1, :], dtype=torch.float32)[None]
        from transformers.masking_utils import create_causal_mask, \
            create_sliding_window_causal_mask
        pos = torch.arange(T)[None]
        mk = create_sliding_window_causal_mask if m.sliding_window else create_causal_mask
        mask = mk(config=model.config, inputs_embeds=h_in, attention_mask=None,
                  past_key_values=None, position_ids=pos)
        if m.model_type == "gpt2":
            h_out = layers[L - 1](h_in, attention_mask=mask)
        else:
            pe = model.model.rotary_emb(h_in, pos)
            h_out = layers[L - 1](h_in, attention_mask=mask, position_embeddings=pe,
                                  position_ids=pos)
        h_out = h_out[0] if isinstance(h_out, tuple) else h_out
        np.testing.assert_allclose(h_out[0].double().numpy(), so.resid[:, L, :], rtol=1e-5,
                                   atol=1e-5)
    # distributions are neither one-hot nor uniform
    p = np.exp(so.logp)
    assert abs(p.sum() - 1) < 1e-12
    ent = -(p * so.logp).sum()
    assert 0.3 < ent < np.log(m.vocab_size) - 0.3


def test_reference_pair_statistics(tiny_model, reference):
    """KL / JS / cos identities on the reference itself."""
    m = tiny_model("llama_gqa")
    ref = reference("llama_gqa")
    lines = standard_lines(m, 11)
    text = "\n".join(l if isinstance(l, str) else json.dumps(l) for l in lines)
    recs = R.parse_pairs(text, m.vocab_size, m.max_positions)
    assert all(r.ok for r in recs)
    assert [r.line for r in recs][:4] == [1, 2, 3, 5]
    assert recs[3].id == "5"  # default id: the line number
    e = R.expected(ref, recs, topk=5)
    d = e.data
    i_same = [r.id for r in recs].index("same")
    assert abs(d["/pairs/kl_ab"][i_same]) < 1e-12 and abs(d["/pairs/js"][i_same]) < 1e-12
    np.testing.assert_allclose(d["/pairs/resid_cos"][i_same], 1.0, atol=1e-12)
    ok = ~np.isnan(d["/pairs/js"])
    assert (d["/pairs/js"][ok] <= np.log(2) + 1e-12).all() and (d["/pairs/js"][ok] >= 0).all()
    assert (d["/pairs/kl_ab"][ok] >= 0).all()
    mass = d["/tokens/attn_mass"]
    for s, (t0, n) in enumerate(zip(d["/seqs/tok_start"], d["/seqs/n_tok"])):
        np.testing.assert_allclose(mass[t0:t0 + n].sum(0), n, rtol=1e-6)
        np.testing.assert_allclose(d["/tokens/attn_last"][t0:t0 + n].sum(0), 1.0, atol=1e-6)
    assert (np.diff(d["/seqs/topk_logprob"], axis=1) <= 0).all()


# ---------------------------------------------------------------------------------------
# every model, default statistics
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", tiny_models.ALL_MODELS)
def test_default_stats_match_reference(name, tiny_model, reference, punctum, tmp_path):
    m = tiny_model(name)
    ref = reference(name)
    lines = standard_lines(m, tiny_models.SEEDS[name])
    text, out = run_and_read(punctum, m, tmp_path, lines)   # default: mass,last,resid,topk; K=10
    recs = R.parse_pairs(text, m.vocab_size, m.max_positions)
    exp = R.expected(ref, recs, topk=10)
    with h5py.File(out, "r") as f:
        msgs = R.compare_file(f, exp)
        for g in ABSENT_GROUPS + ["/patterns", "/seqs/pattern_start"]:
            if g in f:
                msgs.append(f"{g}: present although not asked for")
        if "/pairs/message" in f:
            mm = R.read_str(f["/pairs/message"])
            if any(mm):
                msgs.append(f"/pairs/message: non-empty for good records: {mm!r}")
    assert_no_mismatch(msgs, name)


@pytest.mark.parametrize("name", ["llama_gqa", "mistral_swa", "gpt2"])
def test_topk_option(name, tiny_model, reference, punctum, tmp_path):
    m = tiny_model(name)
    lines = standard_lines(m, 5)[:3]
    text, out = run_and_read(punctum, m, tmp_path, lines, "--topk", "3")
    exp = R.expected(reference(name), R.parse_pairs(text, m.vocab_size, m.max_positions), topk=3)
    with h5py.File(out, "r") as f:
        msgs = R.compare_file(f, exp, names=CORE)
    assert_no_mismatch(msgs, name, "--topk 3")


# ---------------------------------------------------------------------------------------
# ragged packing: batch budgets and record order do not change the numbers
# ---------------------------------------------------------------------------------------

def _by_pair(f) -> dict:
    """pair id -> {dataset: values} with /seqs and /tokens rows gathered per side."""
    ids = R.read_str(f["/pairs/id"])
    out = {}
    seq_a, seq_b = f["/pairs/seq_a"][()], f["/pairs/seq_b"][()]
    tok_start, n_tok = f["/seqs/tok_start"][()], f["/seqs/n_tok"][()]
    cache = {k: f["/seqs/" + k][()] for k in f["/seqs"].keys() if k not in ("text",)}
    tcache = {k: f["/tokens/" + k][()] for k in f["/tokens"].keys() if k not in ("text",)} \
        if "/tokens" in f else {}
    for p, pid in enumerate(ids):
        d = {}
        for k in ("kl_ab", "kl_ba", "js", "resid_cos", "status"):
            d[f"/pairs/{k}"] = f[f"/pairs/{k}"][p]
        for side, s in (("a", seq_a[p]), ("b", seq_b[p])):
            if s < 0:
                continue
            for k, v in cache.items():
                if k in ("pair", "tok_start", "pattern_start"):
                    continue
                d[f"/seqs/{k}:{side}"] = v[s]
            t0, n = tok_start[s], n_tok[s]
            for k, v in tcache.items():
                if k == "seq":
                    continue
                d[f"/tokens/{k}:{side}"] = v[t0:t0 + n]
        out[pid] = d
    return out


PACK_MODELS = ["llama_gqa", "mistral_swa", "gpt2", "qwen2", "mistral_nemo"]


@pytest.mark.parametrize("name", PACK_MODELS)
def test_ragged_packing_and_order(name, tiny_model, reference, punctum, tmp_path):
    m = tiny_model(name)
    lines = [l for l in standard_lines(m, 99) if not isinstance(l, str)]
    for i, l in enumerate(lines):
        l.setdefault("id", f"rec{i}")
    longest = max(max(len(l["a_ids"]), len(l.get("b_ids") or [])) for l in lines)
    total = sum(len(l["a_ids"]) + len(l.get("b_ids") or []) for l in lines)
    budgets = [longest, max(longest, total // 3), 1 << 20]
    shuffled = lines[:]
    random.Random(3).shuffle(shuffled)
    runs = {}
    for bt in budgets:
        text, out = run_and_read(punctum, m, tmp_path, lines, "--stats", "mass,last,resid,topk",
                                 "--batch-tokens", str(bt), name=f"bt{bt}")
        runs[f"batch-tokens {bt}"] = out
    _, out = run_and_read(punctum, m, tmp_path, shuffled, "--batch-tokens", str(budgets[1]),
                          name="shuffled")
    runs["shuffled"] = out
    # the first run against the reference
    exp = R.expected(reference(name), R.parse_pairs(text, m.vocab_size, m.max_positions))
    with h5py.File(runs[f"batch-tokens {longest}"], "r") as f:
        assert_no_mismatch(R.compare_file(f, exp), name, f"--batch-tokens {longest}")
    # all runs against each other, pair by pair
    base_name = f"batch-tokens {longest}"
    with h5py.File(runs[base_name], "r") as f:
        base = _by_pair(f)
    msgs = []
    for rn, path in runs.items():
        if rn == base_name:
            continue
        with h5py.File(path, "r") as f:
            other = _by_pair(f)
            if rn == "shuffled":
                got_order = R.read_str(f["/pairs/id"])
                want_order = [l["id"] for l in shuffled]
                if got_order != want_order:
                    msgs.append(f"{rn}: /pairs rows not in input order: {got_order}")
        if set(other) != set(base):
            msgs.append(f"{rn}: pair ids {sorted(other)} != {sorted(base)}")
            continue
        for pid in base:
            for k, v in base[pid].items():
                if k not in other[pid]:
                    msgs.append(f"{rn}: pair {pid!r} lacks {k}")
                    continue
                g = np.asarray(other[pid][k])
                v = np.asarray(v)
                if np.issubdtype(v.dtype, np.floating):
                    ok = g.shape == v.shape and np.allclose(g, v, rtol=PACK_RTOL,
                                                            atol=PACK_ATOL, equal_nan=True)
                else:
                    ok = g.shape == v.shape and np.array_equal(g, v)
                if not ok:
                    with np.errstate(invalid="ignore"):
                        dmax = np.nanmax(np.abs(g.astype(float) - v.astype(float))) \
                            if g.shape == v.shape else "shape"
                    msgs.append(f"{rn} vs {base_name}: pair {pid!r} {k} differs (max |d| {dmax})")
    assert_no_mismatch(msgs[:40], name, "packing")


# ---------------------------------------------------------------------------------------
# patterns
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["llama_gqa", "mistral_swa", "gpt2", "mistral_nemo", "qwen2"])
def test_patterns(name, tiny_model, reference, punctum, tmp_path):
    m = tiny_model(name)
    rng = random.Random(21)
    V = m.vocab_size
    a = [rng.randrange(V) for _ in range(8)]   # 8 > the mistral window (5)
    lines = [{"id": "p1", "a_ids": a, "b_ids": a[:5]},
             {"id": "p2", "a_ids": [rng.randrange(V)]},
             {"id": "p3", "a_ids": [rng.randrange(V) for _ in range(4)],
              "b_ids": [rng.randrange(V) for _ in range(6)], "target_id": 3}]
    text, out = run_and_read(punctum, m, tmp_path, lines, "--stats", "mass,patterns")
    exp = R.expected(reference(name), R.parse_pairs(text, V, m.max_positions), patterns=True)
    with h5py.File(out, "r") as f:
        names = CORE + TOKEN_BOOK + ["/tokens/attn_mass", "/patterns/value",
                                     "/seqs/pattern_start"]
        # (resid_cos without `resid`: test_pair_statistics_always_present)
        skip = {"/seqs/topk_id", "/seqs/topk_logprob", "/pairs/resid_cos"}
        msgs = R.compare_file(f, exp, names=[n for n in names if n not in skip])
        for ds in ("/tokens/attn_last", "/tokens/resid_norm"):
            if ds in f:
                msgs.append(f"{ds}: present with --stats mass,patterns")
        if "/patterns/value" in f:
            R_rows = sum(n * (n + 1) // 2 for n in exp.data["/seqs/n_tok"])
            if f["/patterns/value"].shape != (R_rows, m.n_layers, m.n_heads):
                msgs.append(f"/patterns/value shape {f['/patterns/value'].shape} != "
                            f"{(R_rows, m.n_layers, m.n_heads)}")
    assert_no_mismatch(msgs, name, "patterns")


# ---------------------------------------------------------------------------------------
# --stats subsets and none
# ---------------------------------------------------------------------------------------

SUBSETS = ["none", "mass", "last", "resid", "topk", "last,resid", "mass,topk,resid"]


@pytest.mark.parametrize("stats", SUBSETS)
@pytest.mark.parametrize("name", ["llama_gqa", "gpt2"])
def test_stats_subsets(name, stats, tiny_model, reference, punctum, tmp_path):
    m = tiny_model(name)
    lines = standard_lines(m, 77)
    text, out = run_and_read(punctum, m, tmp_path, lines, "--stats", stats, "--topk", "4")
    asked = set() if stats == "none" else set(stats.split(","))
    K = 4 if "topk" in asked else 1
    exp = R.expected(reference(name), R.parse_pairs(text, m.vocab_size, m.max_positions), topk=K)
    msgs = []
    with h5py.File(out, "r") as f:
        for st, dsets in STATS_DATASETS.items():
            for ds in dsets:
                if st in asked and ds not in f:
                    msgs.append(f"{ds}: missing with --stats {stats}")
                if st not in asked and ds in f:
                    msgs.append(f"{ds}: present although --stats {stats}")
        for g in ABSENT_GROUPS + ["/patterns"]:
            if g in f:
                msgs.append(f"{g}: present with --stats {stats}")
        if "/seqs/topk_id" in f and f["/seqs/topk_id"].ndim == 2 \
                and f["/seqs/topk_id"].shape[1] != K:
            msgs.append(f"/seqs/topk_id: width {f['/seqs/topk_id'].shape[1]}, expected {K} "
                        f"(top-1 only without 'topk')")
        names = CORE + [ds for st in asked for ds in STATS_DATASETS.get(st, [])]
        if "resid" not in asked and "/pairs/resid_cos" not in f:
            names.remove("/pairs/resid_cos")  # see test_pair_statistics_always_present
        if asked - {"topk"}:
            names += [n for n in TOKEN_BOOK if n != "/tokens/text"]
        msgs += R.compare_file(f, exp, names=names)
    assert_no_mismatch(msgs, name, f"--stats {stats}")


# ---------------------------------------------------------------------------------------
# the models' specifics matter: getting them wrong moves the numbers far beyond tolerance
# ---------------------------------------------------------------------------------------

def _variant_mass(model_dir, edit, ids):
    """attn_mass and final log-probs of the model with its config edited in memory."""
    import json
    import os
    import shutil
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        for fn in os.listdir(model_dir):
            if fn.endswith(".safetensors") or fn.endswith(".json"):
                shutil.copy(os.path.join(model_dir, fn), d)
        with open(os.path.join(d, "config.json")) as f:
            cfg = json.load(f)
        edit(cfg)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(cfg, f)
        so = R.Reference(d).forward(ids)
    return so.attn.sum(axis=2), so.logp


@pytest.mark.parametrize("name,edit", [
    ("llama_rope3_tied", lambda c: c.pop("rope_scaling")),
    ("llama_linear", lambda c: c.pop("rope_scaling")),
    ("mistral_swa", lambda c: c.update(sliding_window=None)),
    ("mistral_swa", lambda c: c.update(sliding_window=6)),
    ("qwen2", lambda c: (c.update(use_sliding_window=True), c.pop("layer_types", None))),
    ("qwen2", lambda c: c.update(rope_theta=10000.0)),
], ids=["llama3-scaling", "linear-scaling", "window-off", "window-off-by-one",
        "qwen-window-on", "qwen-theta"])
def test_model_specifics_are_detectable(name, edit, tiny_model, reference):
    m = tiny_model(name)
    rng = random.Random(5)
    ids = [rng.randrange(m.vocab_size) for _ in range(24)]
    so = reference(name).forward(ids)
    mass, logp = _variant_mass(m.path, edit, ids)
    d_mass = np.abs(mass - so.attn.sum(axis=2)).max()
    d_logp = np.abs(logp - so.logp).max()
    assert d_mass > 100 * R.ATOL_MASS and d_logp > 100 * R.ATOL_LOGP, (d_mass, d_logp)


@pytest.mark.parametrize("stats", ["none", "mass", "topk"])
def test_pair_statistics_always_present(stats, tiny_model, reference, punctum, tmp_path):
    """kl_ab / kl_ba / js / resid_cos are pair statistics: written whatever --stats says
    (the lead's reading of SPEC §5: '/pairs' is kept whole under --stats none)."""
    name = "llama_gqa"
    m = tiny_model(name)
    lines = standard_lines(m, 13)[:3]
    text, out = run_and_read(punctum, m, tmp_path, lines, "--stats", stats)
    K = 10 if stats == "topk" else 1
    exp = R.expected(reference(name), R.parse_pairs(text, m.vocab_size, m.max_positions), topk=K)
    with h5py.File(out, "r") as f:
        msgs = R.compare_file(f, exp, names=["/pairs/kl_ab", "/pairs/kl_ba", "/pairs/js",
                                             "/pairs/resid_cos"])
    assert_no_mismatch(msgs, name, f"--stats {stats}")


@pytest.mark.parametrize("name", ["llama_gqa", "gpt2"])
def test_cpu_deterministic(name, tiny_model, punctum, tmp_path):
    """SPEC §6: the cpu backend is deterministic — the same command twice gives identical
    numbers; --threads 1 vs 2 agrees within the packing tolerance."""
    m = tiny_model(name)
    lines = standard_lines(m, 31)
    outs = {}
    for tag, thr in (("t2", "2"), ("t2-again", "2"), ("t1", "1")):
        _, outs[tag] = run_and_read(punctum, m, tmp_path, lines, "--threads", thr, name=tag)
    msgs = []
    with h5py.File(outs["t2"], "r") as f0, h5py.File(outs["t2-again"], "r") as f1, \
            h5py.File(outs["t1"], "r") as f2:
        for grp in ("pairs", "seqs", "tokens"):
            for k in f0[grp]:
                a, b, c = f0[grp][k][()], f1[grp][k][()], f2[grp][k][()]
                if a.dtype.kind == "f":
                    if not np.array_equal(a, b, equal_nan=True):
                        msgs.append(f"/{grp}/{k}: differs between two identical runs "
                                    f"(max |d| {np.nanmax(np.abs(a - b)):.3g})")
                    if a.shape != c.shape or not np.allclose(a, c, rtol=PACK_RTOL, atol=PACK_ATOL,
                                                             equal_nan=True):
                        msgs.append(f"/{grp}/{k}: --threads 1 vs 2 beyond tolerance")
                elif a.dtype.kind != "O" and not (np.array_equal(a, b) and np.array_equal(a, c)):
                    msgs.append(f"/{grp}/{k}: integer data differs between runs")
    assert_no_mismatch(msgs, name, "determinism")
