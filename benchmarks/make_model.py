#!/usr/bin/env python3
"""Create a random SmolLM2-135M-shaped Llama model for the benchmarks.

    python benchmarks/make_model.py OUT_DIR [--seed 0] [--layers 30]

Shape (SmolLM2-135M): 30 layers, hidden 576, 9 heads, 3 kv heads (head_dim 64),
intermediate 1536, vocab 49152, tied embeddings, rope_theta 100000, max positions 8192,
RMSNorm eps 1e-5. Weights are random (N(0, 0.02), norms 1), saved as F32 safetensors with a
config.json in the layout checkpoints on the Hub use (top-level rope_theta). Timing does not
depend on the values; only shapes matter.
"""
from __future__ import annotations

import argparse
import json
import os
import sys


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("out_dir")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--layers", type=int, default=30, help="number of layers (default 30)")
    ap.add_argument("--force", action="store_true", help="overwrite an existing model")
    args = ap.parse_args(argv)

    done = os.path.join(args.out_dir, "model.safetensors")
    if os.path.exists(done) and not args.force:
        print(f"make_model: {done} exists (use --force to rebuild)", file=sys.stderr)
        return 0

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(args.seed)
    cfg = LlamaConfig(
        vocab_size=49152, hidden_size=576, intermediate_size=1536,
        num_hidden_layers=args.layers, num_attention_heads=9, num_key_value_heads=3,
        max_position_embeddings=8192, rms_norm_eps=1e-5, tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 100000.0},
        bos_token_id=1, eos_token_id=2, initializer_range=0.02)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02)
    model = model.float().eval()
    os.makedirs(args.out_dir, exist_ok=True)
    model.save_pretrained(args.out_dir, safe_serialization=True, max_shard_size="10GB")

    # config.json as Hub checkpoints carry it (rope_theta at top level)
    cp = os.path.join(args.out_dir, "config.json")
    with open(cp) as f:
        c = json.load(f)
    rp = c.pop("rope_parameters", None) or {}
    c["rope_theta"] = rp.get("rope_theta", 100000.0)
    with open(cp, "w") as f:
        json.dump(c, f, indent=2, sort_keys=True)
    n = sum(p.numel() for p in model.parameters())
    print(f"make_model: wrote {args.out_dir} ({n / 1e6:.1f} M parameters, F32)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
