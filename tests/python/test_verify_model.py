"""scripts/verify-model, the fidelity certificate, on tiny random models.

- it passes on a Llama model with grouped-query attention and a byte-level BPE
  tokenizer.json that prepends BOS (text prompts, punctum's own tokenizer when it has one),
  on a GPT-2 model without a tokenizer (id prompts) and on a Qwen2 model stored in BF16
  (q/k/v biases; the reference loads it in float32);
- it FAILS when the weights punctum runs differ from the reference's: one element of a
  layer-norm weight has its sign flipped in the safetensors file (config untouched) and
  the copy is certified against the original with --reference;
- it FAILS when punctum's output is off by 1e-3 relative in a single attention value and
  still PASSES when it is off by 1e-7 (a wrapper around the engine perturbs its HDF5
  output), so the thresholds it prints are the ones it applies.

Skipped only when the engine binary ($PUNCTUM_BIN or build/punctum) is missing.
"""
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SCRIPT = os.path.join(REPO, "scripts", "verify-model")
PUNCTUM = os.environ.get("PUNCTUM_BIN") or os.path.join(REPO, "build", "punctum")
HAVE_PUNCTUM = os.path.isfile(PUNCTUM) and os.access(PUNCTUM, os.X_OK)

pytestmark = pytest.mark.skipif(
    not HAVE_PUNCTUM,
    reason=f"punctum engine binary not found at {PUNCTUM} (build it or set PUNCTUM_BIN); "
           f"verify-model compares that binary with transformers")

# A small corpus to train the test tokenizer on (written for this test).
CORPUS = [
    "Create a sign with a message on it that describes your situation.",
    "What time does the last train to the coast leave on Sundays?",
    "He saw a carrot and had to grab it,\nHis hunger was like a starving rabbit.",
    "Note: the meeting moved to Friday; bring the slides, the budget, and two spare cables!",
    "Dear Ms. Okafor,\n\nThank you for the quick reply.\n",
    "The river froze early that winter, and the ferry stopped running.",
    "Yes. No? Maybe! The cat sat on the mat, and the dog sat on the log.",
]


def _randomize(model, seed):
    """Large random weights, so attention is far from uniform and errors show."""
    import torch
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ("norm" in name or "ln_" in name) and name.endswith("weight"):
                p.copy_(torch.rand(p.shape, generator=g) * 0.8 + 0.6)
            elif name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
            elif "embed" in name or "wte" in name or "wpe" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def _tokenizer(path, vocab_size=320):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)])
    tok.save(os.path.join(path, "tokenizer.json"))
    return tok.get_vocab_size(), bos


def _build(kind, path):
    import torch
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, Qwen2Config
    os.makedirs(path, exist_ok=True)
    dtype = None
    if kind == "llama_gqa":
        vocab, bos = _tokenizer(path)
        cfg = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=96,
                          num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                          max_position_embeddings=128, rms_norm_eps=1e-5,
                          tie_word_embeddings=False, bos_token_id=bos, eos_token_id=bos + 1,
                          rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
        seed = 11
    elif kind == "gpt2":
        cfg = GPT2Config(vocab_size=256, n_positions=64, n_embd=48, n_layer=3, n_head=4,
                         activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0,
                         attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
        seed = 12
    elif kind == "qwen2_bf16":
        cfg = Qwen2Config(vocab_size=200, hidden_size=64, intermediate_size=96,
                          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                          max_position_embeddings=64, rms_norm_eps=1e-6,
                          tie_word_embeddings=True, use_sliding_window=False,
                          rope_parameters={"rope_type": "default", "rope_theta": 1e6},
                          bos_token_id=None, eos_token_id=3)
        seed = 13
        dtype = torch.bfloat16
    else:
        raise ValueError(kind)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")
    _randomize(model, seed)
    if dtype is not None:
        model = model.to(dtype)
    model.save_pretrained(path, safe_serialization=True)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("verify_models")
    cache = {}

    def get(kind):
        if kind not in cache:
            cache[kind] = _build(kind, str(root / kind))
        return cache[kind]
    return get


def _verify(model_dir, *extra, punctum=PUNCTUM, tmp=None):
    argv = [SCRIPT, model_dir, "--punctum", punctum, "--threads", "1", *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    env.setdefault("PUNCTUM_PYTHON", sys.executable)
    p = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env)
    return p, p.stdout + "\n--- stderr ---\n" + p.stderr[-3000:]


def _verdicts(stdout):
    """{quantity: PASS/FAIL/SKIP} from the verdict lines."""
    out = {}
    for line in stdout.splitlines():
        for v in ("PASS", "FAIL", "SKIP"):
            if line.startswith(v + "  "):
                out[line[len(v) + 2:].split(" (")[0].strip()] = v
    return out


STAT_CHECKS = ("topk_id", "topk_logprob", "entropy", "attn_mass", "attn_last", "resid_norm",
               "kl_ab", "kl_ba", "js", "resid_cos")


@pytest.mark.parametrize("kind", ["llama_gqa", "gpt2", "qwen2_bf16"])
def test_verify_model_passes(models, kind, tmp_path):
    path = models(kind)
    report = tmp_path / "report.json"
    p, out = _verify(path, "--json", str(report))
    assert p.returncode == 0, out
    assert "OVERALL: PASS" in p.stdout, out
    v = _verdicts(p.stdout)
    for q in STAT_CHECKS:
        assert v.get(q) == "PASS", f"{q}: {v.get(q)}\n{out}"
    res = json.loads(report.read_text())
    assert res["overall"] == "PASS"
    assert res["checks"]["attn_mass"]["n"] > 0
    if kind == "llama_gqa":
        # text prompts: token ids are checked whenever punctum can tokenize
        assert v.get("token ids") in ("PASS", "SKIP"), out
        assert v.get("target_logprob") == "PASS", out
    else:
        assert v.get("token ids") == "SKIP", out


def _flip_norm_element(src, dst, tensor):
    """Copy a model dir and negate element 0 of `tensor` in model.safetensors."""
    from safetensors.torch import load_file, save_file
    shutil.copytree(src, dst)
    fn = os.path.join(dst, "model.safetensors")
    sd = load_file(fn)
    assert tensor in sd, sorted(sd)
    t = sd[tensor].clone()
    t[0] = -t[0]
    sd[tensor] = t
    save_file(sd, fn, metadata={"format": "pt"})


@pytest.mark.parametrize("kind,tensor", [
    ("llama_gqa", "model.layers.0.input_layernorm.weight"),
    ("gpt2", "transformer.h.1.ln_2.weight"),
])
def test_verify_model_fails_on_corrupted_weights(models, kind, tensor, tmp_path):
    clean = models(kind)
    bad = str(tmp_path / (kind + "_corrupt"))
    _flip_norm_element(clean, bad, tensor)
    with open(os.path.join(clean, "config.json")) as f1, \
            open(os.path.join(bad, "config.json")) as f2:
        assert f1.read() == f2.read()
    p, out = _verify(bad, "--reference", clean)
    assert p.returncode == 1, out
    assert "OVERALL: FAIL" in p.stdout, out
    v = _verdicts(p.stdout)
    assert v.get("resid_norm") == "FAIL", out
    assert v.get("topk_logprob") == "FAIL", out
    if kind == "llama_gqa":
        # the clean model certified against itself through the same path passes
        p2, out2 = _verify(clean, "--reference", clean)
        assert p2.returncode == 0, out2


WRAPPER = textwrap.dedent('''\
    #!{python}
    # Runs the real engine, then scales one attn_last value of its output by (1 + EPS).
    import os, subprocess, sys
    real = {real!r}
    eps = {eps!r}
    r = subprocess.run([real] + sys.argv[1:]).returncode
    if r == 0 and len(sys.argv) > 1 and sys.argv[1] == "run":
        import h5py
        out = sys.argv[sys.argv.index("--out") + 1]
        with h5py.File(out, "r+") as f:
            d = f["tokens/attn_last"]
            v = d[0]
            v[0, 0] = v[0, 0] * (1.0 + eps)   # token 0 (BOS / first token): a large value
            d[0] = v
    sys.exit(r)
''')


@pytest.mark.parametrize("eps,expect", [(1e-3, 1), (1e-7, 0)])
def test_verify_model_threshold_is_applied(models, tmp_path, eps, expect):
    path = models("gpt2")
    wrapper = tmp_path / "punctum-perturbed"
    wrapper.write_text(WRAPPER.format(python=sys.executable, real=os.path.abspath(PUNCTUM),
                                      eps=eps))
    wrapper.chmod(0o755)
    p, out = _verify(path, punctum=str(wrapper))
    assert p.returncode == expect, out
    v = _verdicts(p.stdout)
    if expect == 1:
        assert v.get("attn_last") == "FAIL", out
        assert "OVERALL: FAIL - failed: attn_last" in p.stdout, out
        assert v.get("attn_mass") == "PASS", out
    else:
        assert v.get("attn_last") == "PASS", out


def test_verify_model_usage_errors(tmp_path):
    p = subprocess.run([SCRIPT, str(tmp_path), "--punctum", PUNCTUM],
                       capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, PUNCTUM_PYTHON=sys.executable))
    assert p.returncode == 2, p.stdout + p.stderr
    assert "config.json" in p.stderr
