"""Tiny random Hugging Face models for the cuda-emu / GPU end-to-end tests.

Built with transformers itself and saved with ``save_pretrained`` (safetensors):

- ``llama_gqa``: 2 layers, hidden 64, 4 heads, 2 key/value heads (GQA), SwiGLU, RoPE.
- ``mistral_swa``: as llama, with ``sliding_window=4`` (prompts longer than the window).
- ``gpt2``: 2 layers, n_embd 48, 4 heads (head_dim 12), LayerNorm, GELU-tanh, learned
  positions, biases, tied LM head.
- ``qwen2``: 2 layers, q/k/v biases, GQA.
- ``llama_vocab128k``: a llama with Llama 3's vocabulary size (128256) and 8192 positions,
  hidden 128, 2 layers, 4 heads (head_dim 32), 2 key/value heads: the GPU-only long-context
  check (gpu_long.py, scripts/gpu-check.sh), too slow for the emulation.

Weights are redrawn with a larger scale than transformers' default initialisation so that
attention patterns are peaked rather than uniform and the comparisons are sensitive, and with
an LM head scaled so that next-token distributions are peaked (top-1 margins of a nat or so, as
in trained models, rather than the near-ties of a random head). Seeds are fixed (SEEDS) and
printed by e2e.py.

``build(name, dir, dtype="bf16")`` saves the same model with BF16 weights (``NAME_bf16``): the
reference for the cuda backend's bf16 compute dtype, so that the comparison measures the
backend's own rounding (activations, attention operands), not the rounding of the weights.

    python make_models.py OUT_DIR [name ...]
"""
from __future__ import annotations

import json
import os
import sys

SEEDS = {"llama_gqa": 7101, "mistral_swa": 7102, "gpt2": 7103, "qwen2": 7104, "llama_vocab128k": 7105}
VOCAB = 96
MAX_POS = 64


def _config(name: str):
    import transformers as tf

    common = dict(vocab_size=VOCAB, max_position_embeddings=MAX_POS, bos_token_id=1, eos_token_id=2)
    if name == "llama_gqa":
        return tf.LlamaConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
                              tie_word_embeddings=False, **common)
    if name == "mistral_swa":
        return tf.MistralConfig(hidden_size=64, intermediate_size=112, num_hidden_layers=2,
                                num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
                                tie_word_embeddings=False, sliding_window=4, **common)
    if name == "qwen2":
        return tf.Qwen2Config(hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6,
                              tie_word_embeddings=False, use_sliding_window=False, **common)
    if name == "llama_vocab128k":
        return tf.LlamaConfig(vocab_size=128256, max_position_embeddings=8192, bos_token_id=1, eos_token_id=2,
                              hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
                              tie_word_embeddings=False)
    if name == "gpt2":
        return tf.GPT2Config(vocab_size=VOCAB, n_positions=MAX_POS, n_embd=48, n_layer=2, n_head=4,
                             activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0,
                             attn_pdrop=0.0, layer_norm_epsilon=1e-5, bos_token_id=0,
                             eos_token_id=0, tie_word_embeddings=True)
    raise ValueError(name)


def build(name: str, out_dir: str, dtype: str = "f32") -> str:
    import torch
    import transformers as tf

    path = os.path.join(out_dir, name if dtype == "f32" else f"{name}_{dtype}")
    if os.path.exists(os.path.join(path, "model.safetensors")):
        return path
    if dtype != "f32":
        src = build(name, out_dir)
        model = tf.AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
        model = model.to(torch.bfloat16 if dtype == "bf16" else torch.float16)
        os.makedirs(path, exist_ok=True)
        model.save_pretrained(path, safe_serialization=True)
        return path
    torch.manual_seed(SEEDS[name])
    cfg = _config(name)
    model = tf.AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "norm" in pname or "ln_" in pname:
                if pname.endswith("weight"):
                    p.copy_(1.0 + 0.1 * torch.randn_like(p))
                else:
                    p.copy_(0.1 * torch.randn_like(p))
            elif pname.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
            elif "lm_head" in pname or "wte" in pname:
                p.copy_(1.0 * torch.randn_like(p))  # the LM head (gpt2: tied with wte)
            elif "embed" in pname or "wpe" in pname:
                p.copy_(0.3 * torch.randn_like(p))
            else:
                p.copy_(0.2 * torch.randn_like(p))
    os.makedirs(path, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    with open(os.path.join(path, "punctum_test_model.json"), "w") as f:
        json.dump({"name": name, "seed": SEEDS[name]}, f)
    return path


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    out = argv[0]
    names = argv[1:] or list(SEEDS)
    os.makedirs(out, exist_ok=True)
    for n in names:
        print(build(n, out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
