"""Regenerate the config.json fixtures used by tests/unit/test_config.c with transformers itself.

    ~/.cache/punctum/venv/bin/python tests/data/configs/generate.py
"""
import json
import os
import tempfile

from transformers import GPT2Config, LlamaConfig, MistralConfig, Qwen2Config

HERE = os.path.dirname(os.path.abspath(__file__))

CONFIGS = {
    # Llama 3.x style: GQA, llama3 rope scaling, tied embeddings
    "llama3.json": LlamaConfig(
        vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=[2, 3], tie_word_embeddings=True,
        rope_theta=500000.0,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 128}),
    # Llama 2 style with linear rope scaling and biases
    "llama_linear.json": LlamaConfig(
        vocab_size=100, hidden_size=48, intermediate_size=80, num_hidden_layers=3,
        num_attention_heads=6, max_position_embeddings=256, attention_bias=True, mlp_bias=True,
        rope_scaling={"type": "linear", "factor": 2.0}),
    "gpt2.json": GPT2Config(vocab_size=100, n_positions=64, n_embd=32, n_layer=2, n_head=4,
                            bos_token_id=0, eos_token_id=1),
    # Mistral NeMo style: head_dim != hidden_size / heads
    "mistral.json": MistralConfig(
        vocab_size=100, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=32, sliding_window=16,
        max_position_embeddings=1024, rope_theta=1000000.0),
    "qwen2.json": Qwen2Config(
        vocab_size=100, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
        rope_theta=1000000.0, bos_token_id=None, eos_token_id=7),
}

for name, cfg in CONFIGS.items():
    with tempfile.TemporaryDirectory() as d:
        cfg.save_pretrained(d)
        with open(os.path.join(d, "config.json")) as f:
            data = json.load(f)
    data.pop("transformers_version", None)  # keep the fixtures stable across versions
    with open(os.path.join(HERE, name), "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
    print("wrote", name)
