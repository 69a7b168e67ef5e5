"""The model families of SPEC v2 §1 beyond gpt2 / llama / mistral / qwen2 (Qwen3, Gemma 2,
OLMo 2, ...): tiny random models built by transformers itself (tiny_models.FAMILY_MODELS:
GQA ratios 3 and 4, head_dim != hidden / heads, sliding windows shorter than the prompts on
some layers only, tied and untied heads, a two-shard checkpoint, BF16 weights), compared with
transformers in float64 (reference.py, experiments_ref.py) at SPEC §6's tolerances:

- the default statistics (attn_mass, attn_last, resid_norm, entropy / top-k, pair KL / JS /
  cos) and patterns;
- knockout, residual patching and the logit lens;
- the same through the CUDA emulation build (``punctum-emu --backend cuda``, PUNCTUM_EMU_BIN),
  when it is built;
- config.json values the engine does not implement: exit 2 naming the field.
"""
from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil

import h5py
import numpy as np
import pytest

import experiments_ref as E
import reference as R
import tiny_models
from test_engine import assert_no_mismatch, run_and_read, standard_lines
from test_experiments import check_file, main_records, run_engine

FAMILIES = tiny_models.FAMILY_MODELS
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_EXP: dict = {}


@pytest.fixture(scope="session")
def fam_exp_ref(tiny_model):
    def get(name: str) -> E.ExpRef:
        if name not in _EXP:
            _EXP[name] = E.ExpRef(tiny_model(name).path)
        return _EXP[name]
    return get


def layer_windows(m: tiny_models.TinyModel) -> list:
    """Each layer's sliding window (None: global), as transformers' config says."""
    with open(os.path.join(m.path, "config.json")) as f:
        cfg = json.load(f)
    cfg = cfg.get("text_config", cfg)
    types = cfg.get("layer_types") or ["full_attention"] * m.n_layers
    return [cfg.get("sliding_window") if t == "sliding_attention" else None for t in types]


# ---------------------------------------------------------------------------------------
# the reference itself
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", FAMILIES)
def test_family_reference_sanity(name, tiny_model, reference):
    """The float64 reference sees what the test means to exercise: per-layer windows shorter
    than the prompt, causal rows summing to 1, peaked attention, residual hooks equal to
    transformers' hidden_states."""
    m = tiny_model(name)
    ref = reference(name)
    rng = random.Random(7)
    ids = [rng.randrange(m.vocab_size) for _ in range(13)]
    so = ref.forward(ids)
    T, L = len(ids), m.n_layers
    A = so.attn
    assert A.shape == (L, m.n_heads, T, T)
    assert np.abs(np.triu(A, k=1)).max() == 0.0
    np.testing.assert_allclose(A.sum(-1), 1.0, atol=1e-6)
    i, j = np.indices((T, T))
    for l, W in enumerate(layer_windows(m)):
        if W:
            assert W < T, "the window must be shorter than the prompt"
            assert np.abs(A[l][:, (i - j) >= W]).max() == 0.0, f"layer {l}: keys outside the window"
        else:
            assert (np.tril(A[l]) > 0).sum() == m.n_heads * T * (T + 1) // 2, f"layer {l}: global"
    assert A[:, :, T - 1, :].max() > 3.0 / T
    for l in range(L):
        np.testing.assert_array_equal(so.resid[:, l, :], so.hidden_states[l][0].double().numpy())
    p = np.exp(so.logp)
    ent = -(p * so.logp).sum()
    assert 0.3 < ent < np.log(m.vocab_size) - 0.3


# ---------------------------------------------------------------------------------------
# the engine against the reference
# ---------------------------------------------------------------------------------------

def default_stats_msgs(binary, m, ref, tmp_path, *extra):
    lines = standard_lines(m, tiny_models.SEEDS[m.name])
    text, out = run_and_read(binary, m, tmp_path, lines, "--stats", "mass,last,resid,topk,patterns",
                             *extra)
    recs = R.parse_pairs(text, m.vocab_size, m.max_positions)
    exp = R.expected(ref, recs, topk=10, patterns=True)
    with h5py.File(out, "r") as f:
        return R.compare_file(f, exp)


@pytest.mark.parametrize("name", FAMILIES)
def test_family_default_stats(name, tiny_model, reference, punctum, tmp_path):
    m = tiny_model(name)
    assert_no_mismatch(default_stats_msgs(punctum, m, reference(name), tmp_path), name)


def experiments(binary, m, ref, tmp_path, *extra):
    L = m.n_layers
    wspec = f"1:2,0:{L}"
    recs = main_records(m.vocab_size)
    out = run_engine(binary, m, tmp_path, recs, "--ablate", "knockout", "--patch", "resid",
                     "--stats", "topk,lens", "--positions", "all", "--windows", wspec, *extra)
    with h5py.File(out, "r") as f:
        check_file(f, ref, recs, mode="all", windows=E.parse_windows(wspec, L), knockout=True,
                   patch=True, lens=True)


@pytest.mark.parametrize("name", FAMILIES)
def test_family_experiments(name, tiny_model, fam_exp_ref, punctum, tmp_path):
    """knockout (every position, two layer windows), patching, lens."""
    experiments(punctum, tiny_model(name), fam_exp_ref(name), tmp_path)


# ---------------------------------------------------------------------------------------
# the CUDA backend through the emulation build
# ---------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def punctum_emu():
    from conftest import Punctum
    b = os.environ.get("PUNCTUM_EMU_BIN") or os.path.join(REPO, "build", "punctum-emu")
    if not (os.path.isfile(b) and os.access(b, os.X_OK)):
        pytest.skip(f"no CUDA emulation build at {b} (PUNCTUM_EMU_BIN)")
    return Punctum(b)


@pytest.mark.parametrize("name", FAMILIES)
def test_family_emu(name, tiny_model, reference, fam_exp_ref, punctum_emu, tmp_path):
    """The cuda backend (emulated, float32) against the same float64 reference."""
    m = tiny_model(name)
    msgs = default_stats_msgs(punctum_emu, m, reference(name), tmp_path, "--backend", "cuda", "--dtype", "f32")
    assert_no_mismatch(msgs, name, "(cuda emulation)")
    experiments(punctum_emu, m, fam_exp_ref(name), tmp_path, "--backend", "cuda", "--dtype", "f32")


# ---------------------------------------------------------------------------------------
# config.json values that would make a different model: exit 2 naming the field
# ---------------------------------------------------------------------------------------

BAD_CONFIGS = [
    ("qwen3", {"hidden_act": "gelu"}, "hidden_act"),
    ("qwen3", {"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0}},
     "rope_type"),
    ("qwen3", {"layer_types": ["full_attention", "chunked_attention", "full_attention"]},
     "layer_types"),
    ("qwen3", {"layer_types": ["full_attention"]}, "layer_types"),
    ("gemma2", {"hidden_activation": "relu"}, "hidden_activation"),
    ("gemma2", {"query_pre_attn_scalar": -1}, "query_pre_attn_scalar"),
    ("gemma2", {"attn_logit_softcapping": -3}, "attn_logit_softcapping"),
    ("gemma2", {"final_logit_softcapping": "x"}, "final_logit_softcapping"),
    ("gemma2", {"sliding_window": 0}, "sliding_window"),
    ("gemma2", {"use_bidirectional_attention": True}, "use_bidirectional_attention"),
    ("olmo2", {"rope_parameters": {"rope_type": "dynamic", "rope_theta": 1e4, "factor": 2.0}},
     "rope_type"),
    ("olmo2", {"partial_rotary_factor": 0.5}, "partial_rotary_factor"),
    ("gemma3", {"rope_parameters": {
        "sliding_attention": {"rope_type": "linear", "rope_theta": 1e4, "factor": 2.0},
        "full_attention": {"rope_type": "default", "rope_theta": 1e6}}}, "sliding_attention"),
    ("gemma3", {"layer_types": ["sliding_attention", "full_attention"]}, "layer_types"),
    ("smollm3", {"no_rope_layers": [1, 0, 1]}, "no_rope_layers"),
    ("smollm3", {"no_rope_layers": [1, 0, 2, 1]}, "no_rope_layers"),
    ("phi3", {"rope_parameters": {"rope_type": "longrope", "rope_theta": 1e4,
                                  "short_factor": [1.0, 1.0], "long_factor": [1.0, 2.0, 3.0, 4.0]}},
     "short_factor"),
    ("phi3", {"rope_parameters": {"rope_type": "longrope", "rope_theta": 1e4,
                                  "short_factor": [1.0, 1.0, 1.0, 1.0]}}, "long_factor"),
    ("phi3", {"rope_parameters": {"rope_type": "dynamic", "rope_theta": 1e4, "factor": 2.0}},
     "rope_type"),
    ("phi3", {"hidden_act": "gelu_new"}, "hidden_act"),
]


@pytest.mark.parametrize("name,edit,field", BAD_CONFIGS,
                         ids=[f"{n}-{f}-{i}" for i, (n, _, f) in enumerate(BAD_CONFIGS)])
def test_family_config_errors(name, edit, field, tiny_model, punctum, tmp_path):
    m = tiny_model(name)
    d = tmp_path / "model"
    shutil.copytree(m.path, d)
    with open(d / "config.json") as f:
        cfg = json.load(f)
    cfg.update(edit)
    with open(d / "config.json", "w") as f:
        json.dump(cfg, f)
    pairs = tmp_path / "p.jsonl"
    pairs.write_text(json.dumps({"a_ids": [1, 2, 3]}) + "\n")
    p = punctum.run(str(d), str(pairs), str(tmp_path / "o.h5"), expect=2)
    err = p.stderr.strip().splitlines()
    assert err and field in err[-1] and "config.json" in err[-1], p.stderr


# ---------------------------------------------------------------------------------------
# longrope (Phi-3): short or long factors by each sequence's own length
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("binary", ["cpu", "emu"])
def test_phi3_longrope_mixed_batch(binary, tiny_model, reference, punctum, tmp_path, request):
    """Sequences on both sides of original_max_position_embeddings (16) in one batch, and a
    pair whose b (17 tokens: long factors) extends its a (16: short factors), so b cannot
    reuse a's keys."""
    m = tiny_model("phi3")
    exe, extra = punctum, ()
    if binary == "emu":
        exe, extra = request.getfixturevalue("punctum_emu"), ("--backend", "cuda", "--dtype", "f32")
    rng = random.Random(5)

    def ids(n):
        return [rng.randrange(m.vocab_size) for _ in range(n)]
    a16, a15 = ids(16), ids(15)
    lines = [{"id": "cross", "a_ids": a16, "b_ids": a16 + ids(1), "target_id": 3},
             {"id": "cross-down", "a_ids": a15 + ids(3), "b_ids": a15, "target_id": 4},
             {"id": "short", "a_ids": ids(5), "b_ids": ids(16)},
             {"id": "long", "a_ids": ids(30), "b_ids": ids(17)}]
    text, out = run_and_read(exe, m, tmp_path, lines, "--stats", "mass,last,resid,topk", *extra)
    recs = R.parse_pairs(text, m.vocab_size, m.max_positions)
    exp = R.expected(reference("phi3"), recs, topk=10)
    with h5py.File(out, "r") as f:
        assert_no_mismatch(R.compare_file(f, exp), "phi3", binary)


# ---------------------------------------------------------------------------------------
# Gemma 3's multimodal checkpoints: model_type gemma3, the text model under text_config and
# model.language_model.* (as transformers 5 saves Gemma3ForConditionalGeneration)
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("prefix", ["model.language_model.", "language_model.model."])
def test_gemma3_multimodal_layout(prefix, tiny_model, punctum, tmp_path):
    """transformers 5's names (model.language_model.*) and the Hub originals'
    (language_model.model.*)."""
    from safetensors.torch import load_file, save_file
    m = tiny_model("gemma3")
    d = tmp_path / "gemma3_mm"
    d.mkdir()
    with open(os.path.join(m.path, "config.json")) as f:
        text = json.load(f)
    outer = {"model_type": "gemma3", "architectures": ["Gemma3ForConditionalGeneration"],
             "text_config": text, "vision_config": {"model_type": "siglip_vision_model"},
             "tie_word_embeddings": text.get("tie_word_embeddings", True)}
    for k in ("bos_token_id", "eos_token_id", "tie_word_embeddings"):
        text.pop(k, None)   # the outer config's apply
    with open(d / "config.json", "w") as f:
        json.dump(outer, f)
    sd = load_file(os.path.join(m.path, "model.safetensors"))
    out = {(prefix + k[len("model."):] if k.startswith("model.") else k): v
           for k, v in sd.items()}
    out["model.vision_tower.dummy.weight"] = sd["model.norm.weight"].clone()  # ignored
    save_file(out, str(d / "model.safetensors"), metadata={"format": "pt"})
    lines = standard_lines(m, 3)
    _, want = run_and_read(punctum, m, tmp_path, lines, name="text")
    mm = dataclasses.replace(m, path=str(d))
    _, got = run_and_read(punctum, mm, tmp_path, lines, name="mm")
    with h5py.File(want, "r") as a, h5py.File(got, "r") as b:
        for k in ("/tokens/attn_mass", "/tokens/attn_last", "/tokens/resid_norm",
                  "/seqs/topk_logprob", "/seqs/topk_id", "/pairs/kl_ab"):
            np.testing.assert_array_equal(a[k][()], b[k][()], err_msg=k)


def test_help_and_readme_name_the_families(punctum):
    """README's model list and `punctum --help` name every family the tests cover."""
    help_text = punctum("--help").stdout
    with open(os.path.join(REPO, "README.md")) as f:
        readme = f.read()
    for mt in ("gpt2", "llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "gemma3",
               "olmo2", "phi3", "smollm3"):
        assert mt in help_text, mt
        assert f"`{mt}`" in readme, mt


@pytest.mark.parametrize("name", ["gemma3", "phi3"] + [
    pytest.param(n, marks=pytest.mark.slow) for n in ("qwen3", "gemma2", "olmo2", "smollm3")])
def test_family_verify_model(name, tiny_model, punctum):
    """scripts/verify-model certifies a checkpoint of each family (here the tiny one)."""
    import subprocess
    import sys
    m = tiny_model(name)
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    env.setdefault("PUNCTUM_PYTHON", sys.executable)
    p = subprocess.run([os.path.join(REPO, "scripts", "verify-model"), m.path, "--punctum",
                        punctum.path, "--threads", "1"], capture_output=True, text=True,
                       timeout=600, env=env)
    assert p.returncode == 0 and "OVERALL: PASS" in p.stdout, p.stdout + p.stderr[-2000:]


@pytest.mark.parametrize("name", ["gemma2_bf16", "gemma3_bf16"])
def test_family_emu_bf16(name, tiny_model, punctum, punctum_emu, tmp_path):
    """The cuda backend's bf16 compute (tensor-core attention: soft-capping and head_dim 24;
    head_dim 256) against the cpu run of the same (BF16) weights: attention statistics within
    SPEC §6's 2e-2."""
    m = tiny_model(name)
    lines = standard_lines(m, 17)
    _, ref = run_and_read(punctum, m, tmp_path, lines, "--stats", "mass,last,topk", name="cpu")
    _, got = run_and_read(punctum_emu, m, tmp_path, lines, "--stats", "mass,last,topk",
                          "--backend", "cuda", "--dtype", "bf16", name="bf16")
    with h5py.File(ref, "r") as a, h5py.File(got, "r") as b:
        last_a, last_b = a["/tokens/attn_last"][()], b["/tokens/attn_last"][()]
        assert np.isfinite(last_b).all()
        assert np.abs(last_a - last_b).max() <= 2e-2
        # attn_mass over the number of queries that see the key (at most T - pos)
        n_tok, pos = b["/seqs/n_tok"][()], b["/tokens/pos"][()]
        seq = b["/tokens/seq"][()]
        seen = (n_tok[seq] - pos).astype(np.float64)[:, None, None]
        assert np.abs((a["/tokens/attn_mass"][()] - b["/tokens/attn_mass"][()]) / seen).max() <= 2e-2
