"""Tiny random Hugging Face models for the punctum reference tests.

Every model is built with transformers itself, given deliberately large random weights
(so attention patterns are far from uniform and the comparison is sensitive), saved with
``save_pretrained`` (safetensors) and then, where a test needs a particular on-disk
shape, rewritten: legacy ``rope_theta`` / ``rope_scaling`` keys in config.json (what
checkpoints on the Hub carry), a GPT-2 file without the ``transformer.`` prefix and with
the legacy ``attn.bias`` / ``attn.masked_bias`` buffers, F16 / BF16 weights, shards.

After saving, every model is reloaded from its directory the way the reference loads it
(float32, eager attention) and its logits are checked against the in-memory original, so a
weight silently dropped or re-initialised on load cannot go unnoticed.

Use :func:`build` (or the session fixture ``tiny_model`` in conftest.py).
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Callable

import torch

# Per-model torch seeds: fixed, listed in the pytest header (conftest.pytest_report_header).
SEEDS = {
    "gpt2": 1001,
    "gpt2_legacy": 1002,
    "llama_gqa": 1003,
    "llama_rope3_tied": 1004,
    "llama_linear": 1005,
    "mistral_swa": 1006,
    "mistral_nemo": 1007,
    "qwen2": 1008,
    "llama_f16": 1009,
    "llama_bf16": 1010,
    "llama_sharded": 1011,
}

# The families of SPEC v2 §1 beyond gpt2 / llama / mistral / qwen2, one or more tiny models
# each (test_families.py; the generation tests can be parametrised over FAMILY_MODELS).
FAMILY_SEEDS = {
    "qwen3": 1101,
    "qwen3_sharded": 1102,
    "gemma2": 1103,
    "gemma2_bf16": 1104,
    "olmo2": 1105,
    "gemma3": 1106,
    "smollm3": 1107,
    "phi3": 1108,
    "gemma3_bf16": 1109,
}
SEEDS.update(FAMILY_SEEDS)
FAMILY_MODELS = list(FAMILY_SEEDS)

ALL_MODELS = [n for n in SEEDS if n not in FAMILY_SEEDS]

# Weight scales: projections ~N(0, PROJ_STD) give pre-softmax attention scores with a
# standard deviation of a few units at these widths (peaked but not saturated patterns).
PROJ_STD = 0.2
EMB_STD = 0.3
BIAS_STD = 0.1


@dataclasses.dataclass
class TinyModel:
    name: str
    path: str
    seed: int
    model_type: str
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_model: int
    head_dim: int
    vocab_size: int
    max_positions: int
    sliding_window: int | None   # effective window (None: full causal)
    has_tokenizer: bool
    dtype: str                   # on-disk dtype of the weights: F32 / F16 / BF16
    sharded: bool


# ---------------------------------------------------------------------------------------
# configs
# ---------------------------------------------------------------------------------------

def _gpt2_config():
    from transformers import GPT2Config
    return GPT2Config(vocab_size=300, n_positions=64, n_embd=48, n_layer=3, n_head=4,
                      activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0,
                      attn_pdrop=0.0, layer_norm_epsilon=1e-5, bos_token_id=0, eos_token_id=0,
                      tie_word_embeddings=True)


def _llama_config(**kw):
    from transformers import LlamaConfig
    base = dict(vocab_size=320, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
    rope = kw.pop("rope", {"rope_type": "default", "rope_theta": 10000.0})
    base.update(kw)
    return LlamaConfig(rope_parameters=dict(rope), **base)


def _mistral_config(**kw):
    from transformers import MistralConfig
    base = dict(vocab_size=288, hidden_size=64, intermediate_size=112, num_hidden_layers=3,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                rms_norm_eps=1e-5, tie_word_embeddings=False, sliding_window=None,
                bos_token_id=1, eos_token_id=2)
    base.update(kw)
    return MistralConfig(rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, **base)


def _qwen2_config():
    from transformers import Qwen2Config
    return Qwen2Config(vocab_size=352, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                       rms_norm_eps=1e-6, tie_word_embeddings=False, use_sliding_window=False,
                       rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
                       bos_token_id=None, eos_token_id=3)


def _qwen3_config(**kw):
    """GQA ratio 3, head_dim 16 != hidden / heads (8), per-head q/k norms."""
    from transformers import Qwen3Config
    base = dict(vocab_size=352, hidden_size=48, intermediate_size=96, num_hidden_layers=3,
                num_attention_heads=6, num_key_value_heads=2, head_dim=16,
                max_position_embeddings=64, rms_norm_eps=1e-6, tie_word_embeddings=False,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                bos_token_id=None, eos_token_id=3)
    base.update(kw)
    return Qwen3Config(**base)


def _gemma2_config(**kw):
    """GQA ratio 4, head_dim 24 != hidden / heads (16), local (window 5) and global layers
    alternating, query_pre_attn_scalar != head_dim, soft-capping small enough to bite, GeGLU,
    (1 + w) norms, tied head."""
    from transformers import Gemma2Config
    base = dict(vocab_size=320, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                num_attention_heads=4, num_key_value_heads=1, head_dim=24,
                max_position_embeddings=64, rms_norm_eps=1e-6, sliding_window=5,
                query_pre_attn_scalar=20, attn_logit_softcapping=3.0,
                final_logit_softcapping=4.0, hidden_activation="gelu_pytorch_tanh",
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                bos_token_id=2, eos_token_id=1, pad_token_id=0)
    base.update(kw)
    return Gemma2Config(**base)


def _olmo2_config(**kw):
    """Norms after the sublayers, q/k norms over the whole projections, GQA ratio 3."""
    from transformers import Olmo2Config
    base = dict(vocab_size=288, hidden_size=48, intermediate_size=80, num_hidden_layers=3,
                num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=64,
                rms_norm_eps=1e-6, tie_word_embeddings=False,
                rope_parameters={"rope_type": "default", "rope_theta": 50000.0},
                bos_token_id=None, eos_token_id=5, pad_token_id=1)
    base.update(kw)
    return Olmo2Config(**base)


def _gemma3_config(**kw):
    """GQA ratio 3, head_dim 32 != hidden / heads (16), mixed local (window 4, local RoPE base)
    and global (linear-scaled RoPE) layers, per-head (1 + w) q/k norms, no soft-capping."""
    from transformers import Gemma3TextConfig
    base = dict(vocab_size=320, hidden_size=48, intermediate_size=80, num_hidden_layers=4,
                num_attention_heads=3, num_key_value_heads=1, head_dim=32,
                max_position_embeddings=64, rms_norm_eps=1e-6, sliding_window=4,
                query_pre_attn_scalar=24, hidden_activation="gelu_pytorch_tanh",
                layer_types=["sliding_attention", "full_attention", "sliding_attention",
                             "sliding_attention"],
                rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                                 "full_attention": {"rope_type": "linear", "rope_theta": 1e6,
                                                    "factor": 2.0}},
                bos_token_id=2, eos_token_id=1, pad_token_id=0)
    base.update(kw)
    return Gemma3TextConfig(**base)


def _smollm3_config(**kw):
    """Layers without RoPE (no_rope_layers), GQA ratio 4, tied head."""
    from transformers import SmolLM3Config
    base = dict(vocab_size=320, hidden_size=64, intermediate_size=96, num_hidden_layers=4,
                num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=64,
                rms_norm_eps=1e-6, tie_word_embeddings=True, no_rope_layers=[1, 0, 1, 0],
                rope_parameters={"rope_type": "default", "rope_theta": 100000.0},
                bos_token_id=1, eos_token_id=2, pad_token_id=0)
    base.update(kw)
    return SmolLM3Config(**base)


def _phi3_config(**kw):
    """Fused qkv_proj / gate_up_proj, partial rotary (half of each head), longrope with a
    pretraining length (16) shorter than some test prompts: short and long factors both
    occur, in the same batch."""
    from transformers import Phi3Config
    base = dict(vocab_size=320, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                original_max_position_embeddings=16, rms_norm_eps=1e-5,
                tie_word_embeddings=False, partial_rotary_factor=0.5,
                rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0,
                                 "partial_rotary_factor": 0.5,
                                 "short_factor": [1.0, 1.5, 2.0, 3.0],
                                 "long_factor": [1.5, 2.5, 5.0, 9.0]},
                bos_token_id=1, eos_token_id=2, pad_token_id=0)
    base.update(kw)
    return Phi3Config(**base)


# name -> (config factory, options)
_SPECS: dict[str, tuple[Callable, dict]] = {
    "gpt2": (_gpt2_config, {"tokenizer": True}),
    "gpt2_legacy": (_gpt2_config, {"legacy_gpt2": True}),
    "llama_gqa": (lambda: _llama_config(), {}),
    # llama3 scaling with a tiny original context so all three frequency regimes occur at
    # head_dim 16 (wavelength < 8: unchanged; 8..32: smoothed; > 32: divided by factor);
    # MQA (one kv head) and tied embeddings.
    "llama_rope3_tied": (lambda: _llama_config(
        num_key_value_heads=1, tie_word_embeddings=True,
        rope={"rope_type": "llama3", "rope_theta": 20000.0, "factor": 8.0,
              "low_freq_factor": 1.0, "high_freq_factor": 4.0,
              "original_max_position_embeddings": 32}), {}),
    # linear scaling; rope_scaling written with the old spelling {"type": "linear"}
    "llama_linear": (lambda: _llama_config(
        hidden_size=32, num_attention_heads=2, num_key_value_heads=2, intermediate_size=80,
        num_hidden_layers=2, rope={"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0}),
        {"linear_old_key": True}),
    # sliding window far smaller than the test prompts
    "mistral_swa": (lambda: _mistral_config(sliding_window=5), {}),
    # NeMo style: head_dim (24) != hidden_size / num_attention_heads (12)
    "mistral_nemo": (lambda: _mistral_config(hidden_size=48, head_dim=24, num_hidden_layers=2,
                                             sliding_window=None), {}),
    # biases on q, k, v; config.json also carries a small sliding_window with
    # use_sliding_window = false (as real Qwen2.5 configs do): it must be ignored
    "qwen2": (_qwen2_config, {"qwen_inactive_window": 6}),
    "llama_f16": (lambda: _llama_config(num_hidden_layers=2), {"dtype": torch.float16}),
    "llama_bf16": (lambda: _llama_config(num_hidden_layers=2), {"dtype": torch.bfloat16}),
    "llama_sharded": (lambda: _llama_config(num_hidden_layers=2), {"shard": "40KB"}),
    # the families (config.json kept as transformers 5 writes it: rope_parameters)
    "qwen3": (_qwen3_config, {"native_rope": True}),
    "qwen3_sharded": (lambda: _qwen3_config(num_hidden_layers=2, tie_word_embeddings=True),
                      {"native_rope": True, "shard": "40KB"}),
    "gemma2": (_gemma2_config, {"native_rope": True}),
    "gemma2_bf16": (lambda: _gemma2_config(num_hidden_layers=2, tie_word_embeddings=False),
                    {"native_rope": True, "dtype": torch.bfloat16}),
    "olmo2": (_olmo2_config, {"native_rope": True}),
    "gemma3": (_gemma3_config, {"native_rope": True}),
    # Gemma's real head_dim (256: the tensor-core attention's widest tile), BF16 weights
    "gemma3_bf16": (lambda: _gemma3_config(num_attention_heads=2, head_dim=256, query_pre_attn_scalar=256,
                                           num_hidden_layers=3, layer_types=["sliding_attention",
                                           "sliding_attention", "full_attention"]),
                    {"native_rope": True, "dtype": torch.bfloat16}),
    "smollm3": (_smollm3_config, {"native_rope": True}),
    "phi3": (_phi3_config, {"native_rope": True}),
}


# ---------------------------------------------------------------------------------------
# weights
# ---------------------------------------------------------------------------------------

def _randomize(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Large random weights: N(0, PROJ_STD) matrices, N(0, EMB_STD) embeddings, norm
    weights U(0.6, 1.4), biases N(0, BIAS_STD)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.split(".")[-2] if "." in name else name
            is_norm = any(s in name for s in ("norm", "ln_", ".ln"))
            if is_norm and name.endswith("weight"):
                p.copy_(torch.rand(p.shape, generator=gen) * 0.8 + 0.6)
            elif name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=gen) * BIAS_STD)
            elif leaf in ("wte", "wpe", "embed_tokens"):
                p.copy_(torch.randn(p.shape, generator=gen) * EMB_STD)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * PROJ_STD)
        # q/k/v biases of qwen2 a bit larger, so they matter
        for name, p in model.named_parameters():
            if any(s in name for s in ("q_proj.bias", "k_proj.bias", "v_proj.bias")):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)


# ---------------------------------------------------------------------------------------
# tokenizer (byte-level BPE, GPT-2 style) for models that carry one
# ---------------------------------------------------------------------------------------

def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + \
        list(range(0xAE, 0xFF + 1))
    out = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in out:
            out[b] = chr(256 + extra)
            extra += 1
    return out


TOKENIZER_WORDS = [" the", " and", "ing", " a", ".\n", "\n\n", "\u3002", ", ", " cat", " sat", "!",
                   "\u2026", "\u3001", " ."]


def _write_tokenizer(path: str, vocab_size: int) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    b2u = _byte_to_unicode()
    vocab = {b2u[b]: b for b in range(256)}
    merges: list[tuple[str, str]] = []
    for w in TOKENIZER_WORDS:
        parts = [b2u[b] for b in w.encode("utf-8")]
        cur = parts[0]
        for nxt in parts[1:]:
            merged = cur + nxt
            if merged not in vocab:
                merges.append((cur, nxt))
                vocab[merged] = len(vocab)
            cur = merged
    assert len(vocab) <= vocab_size
    # fill the rest of the vocabulary with unreachable placeholder tokens
    while len(vocab) < vocab_size:
        vocab[f"<unused{len(vocab)}>"] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.save(os.path.join(path, "tokenizer.json"))


# ---------------------------------------------------------------------------------------
# on-disk rewrites
# ---------------------------------------------------------------------------------------

def _legacy_rope_config(path: str, linear_old_key: bool) -> None:
    """Rewrite config.json the way checkpoints on the Hub carry RoPE settings:
    top-level rope_theta and (where scaled) a rope_scaling object."""
    cfg_path = os.path.join(path, "config.json")
    with open(cfg_path) as f:
        cfg = json.load(f)
    rp = cfg.pop("rope_parameters", None)
    if rp is None:
        return
    rp = dict(rp)
    cfg["rope_theta"] = rp.pop("rope_theta", 10000.0)
    rtype = rp.pop("rope_type", rp.pop("type", "default"))
    if rtype != "default":
        scaling = {"rope_type": rtype}
        if linear_old_key:
            scaling = {"type": rtype}
        scaling.update(rp)
        cfg["rope_scaling"] = scaling
    with open(cfg_path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)


def _qwen_inactive_window(path: str, window: int) -> None:
    cfg_path = os.path.join(path, "config.json")
    with open(cfg_path) as f:
        cfg = json.load(f)
    cfg["use_sliding_window"] = False
    cfg["sliding_window"] = window
    cfg["max_window_layers"] = 0
    cfg.pop("layer_types", None)   # as in Qwen2.5 checkpoints on the Hub
    with open(cfg_path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)


def _rewrite_legacy_gpt2(path: str, n_layer: int, n_pos: int) -> None:
    """Original-GPT-2-style file: no "transformer." prefix, no lm_head, plus the legacy
    attention buffers h.N.attn.bias ([1,1,P,P] lower triangle) and h.N.attn.masked_bias."""
    from safetensors.torch import load_file, save_file
    fn = os.path.join(path, "model.safetensors")
    sd = load_file(fn)
    out = {}
    for k, v in sd.items():
        if k.startswith("lm_head."):
            continue
        out[k[len("transformer."):] if k.startswith("transformer.") else k] = v.contiguous()
    tri = torch.tril(torch.ones(n_pos, n_pos, dtype=torch.float32)).view(1, 1, n_pos, n_pos)
    for i in range(n_layer):
        out[f"h.{i}.attn.bias"] = tri.clone()
        out[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4, dtype=torch.float32)
    os.remove(fn)
    save_file(out, fn, metadata={"format": "pt"})


# ---------------------------------------------------------------------------------------
# loading (shared with reference.py)
# ---------------------------------------------------------------------------------------

def load_hf(path: str):
    """The reference's view of a model directory: float32, eager attention, eval mode."""
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32,
                                                 attn_implementation="eager")
    model.eval()
    return model


def _probe_ids(vocab: int, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (1, n), generator=g)


def build(name: str, root: str) -> TinyModel:
    """Create model `name` under root/name (once; reused if already complete)."""
    from transformers import AutoModelForCausalLM
    cfg_factory, opts = _SPECS[name]
    seed = SEEDS[name]
    path = os.path.join(root, name)
    done = os.path.join(path, ".complete")
    torch.manual_seed(seed)
    cfg = cfg_factory()
    cfg._attn_implementation = "eager"
    if not os.path.exists(done):
        os.makedirs(path, exist_ok=True)
        gen = torch.Generator().manual_seed(seed)
        model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")
        _randomize(model, gen)
        model.eval()
        dtype = opts.get("dtype")
        ref = model
        if dtype is not None:
            # round the float32 model's weights to the storage dtype (the reference view),
            # and save a converted copy
            with torch.no_grad():
                for p in model.parameters():
                    p.copy_(p.to(dtype).float())
            import copy
            model = copy.deepcopy(model).to(dtype)
        kw = {}
        if "shard" in opts:
            kw["max_shard_size"] = opts["shard"]
        model.save_pretrained(path, safe_serialization=True, **kw)
        if cfg.model_type != "gpt2" and not opts.get("native_rope"):
            _legacy_rope_config(path, opts.get("linear_old_key", False))
        if "qwen_inactive_window" in opts:
            _qwen_inactive_window(path, opts["qwen_inactive_window"])
        if opts.get("legacy_gpt2"):
            _rewrite_legacy_gpt2(path, cfg.n_layer, cfg.n_positions)
        if opts.get("tokenizer"):
            _write_tokenizer(path, cfg.vocab_size)
        # the reloaded model must be exactly the model we built
        ids = _probe_ids(cfg.vocab_size, min(20, _max_pos(cfg)), seed)
        with torch.no_grad():
            want = ref(ids).logits
            got = load_hf(path)(ids).logits
        if not torch.allclose(want, got, rtol=0, atol=1e-5):
            raise RuntimeError(f"tiny model {name}: reloaded logits differ from the built model "
                               f"(max |d| = {(want - got).abs().max().item():.3g})")
        if opts.get("shard"):
            assert os.path.exists(os.path.join(path, "model.safetensors.index.json")), \
                f"{name}: save_pretrained did not shard"
        with open(done, "w") as f:
            f.write("ok\n")
    return describe(name, path)


def _max_pos(cfg) -> int:
    return getattr(cfg, "n_positions", None) or cfg.max_position_embeddings


def describe(name: str, path: str) -> TinyModel:
    with open(os.path.join(path, "config.json")) as f:
        cfg = json.load(f)
    opts = _SPECS[name][1]
    mt = cfg["model_type"]
    if mt == "gpt2":
        L, H, D = cfg["n_layer"], cfg["n_head"], cfg["n_embd"]
        kv, hd, P = H, D // H, cfg["n_positions"]
    else:
        L, H, D = cfg["num_hidden_layers"], cfg["num_attention_heads"], cfg["hidden_size"]
        kv = cfg.get("num_key_value_heads") or H
        hd = cfg.get("head_dim") or D // H
        P = cfg["max_position_embeddings"]
    win = None
    if mt == "mistral":
        win = cfg.get("sliding_window")
    elif mt == "qwen2" and cfg.get("use_sliding_window"):
        win = cfg.get("sliding_window")
    elif "sliding_attention" in (cfg.get("layer_types") or []):
        win = cfg.get("sliding_window")   # some layers only (TinyModel.layer_windows)
    dt = {None: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}[opts.get("dtype")]
    return TinyModel(name=name, path=path, seed=SEEDS[name], model_type=mt, n_layers=L,
                     n_heads=H, n_kv_heads=kv, d_model=D, head_dim=hd,
                     vocab_size=cfg["vocab_size"], max_positions=P, sliding_window=win,
                     has_tokenizer=os.path.exists(os.path.join(path, "tokenizer.json")),
                     dtype=dt, sharded=bool(opts.get("shard")))


if __name__ == "__main__":  # python tests/python/tiny_models.py OUTDIR [NAME...]
    import sys
    root = sys.argv[1]
    for n in sys.argv[2:] or ALL_MODELS:
        print(build(n, root))
