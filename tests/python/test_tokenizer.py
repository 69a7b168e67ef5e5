"""punctum's tokenizer.json implementation against Hugging Face `tokenizers`.

For each tokenizer family (built here with `tokenizers`, trained on a small corpus, with the
exact normalizer / pre-tokenizer / model / post-processor / decoder settings of the family) and
for SmolLM2's real tokenizer, every text of tests/python/tokenizer_corpus.py must get the same
ids and the same byte spans (HF's character offsets converted to UTF-8 byte offsets), and every
id's piece must equal tokenizers' decode([id], skip_special_tokens=False).

The binary: $PUNCTUM_BIN (default <repo>/build/punctum).
"""

import json
import os
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

tokenizers = pytest.importorskip("tokenizers")
from tokenizers import (AddedToken, Regex, Tokenizer, decoders, models, normalizers,  # noqa: E402
                        pre_tokenizers, processors, trainers)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))
from tokenizer_corpus import corpus  # noqa: E402

BIN = os.environ.get("PUNCTUM_BIN", str(REPO / "build" / "punctum"))
CACHE = Path(os.environ.get("PUNCTUM_CACHE", Path.home() / ".cache" / "punctum"))
SMOL_DIR = CACHE / "models" / "smollm2-135m-instruct"

LLAMA3_PAT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
              r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_PAT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
             r"|\s*[\r\n]+|\s+(?!\S)|\s+")

TEXTS = corpus()


def run_bin(args, input_text=None, check=True):
    p = subprocess.run([BIN, "tokenize"] + args, input=input_text, capture_output=True, text=True,
                       encoding="utf-8")
    if check and p.returncode != 0:
        raise AssertionError(f"punctum tokenize {args} failed ({p.returncode}): {p.stderr}")
    return p


def training_texts():
    base = TEXTS[::3]
    extra = ["The quick brown fox jumps over the lazy dog. " * 3,
             "Hello world! How are you today? I'm fine, thanks.",
             "He saw a carrot and had to grab it, his hunger was like a starving rabbit."] * 20
    return base + extra


def _bytelevel_trainer(vocab_size, special):
    return trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special, show_progress=False,
                               initial_alphabet=pre_tokenizers.ByteLevel.alphabet())


# ---- tokenizer families ------------------------------------------------------------------------

def build_gpt2(variant):
    tok = Tokenizer(models.BPE())
    prefix = variant == "gpt2_prefix"
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=prefix, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(training_texts(), _bytelevel_trainer(1500, ["<|endoftext|>"]))
    if variant == "gpt2":  # GPT-2's own settings
        tok.post_processor = processors.ByteLevel(add_prefix_space=True, trim_offsets=False)
    elif variant == "gpt2_trim":
        tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=True)
    else:
        tok.post_processor = processors.ByteLevel(add_prefix_space=True, trim_offsets=True)
    return tok


def build_llama3():
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PAT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    special = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
               "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    tok.train_from_iterator(training_texts(), _bytelevel_trainer(1800, []))
    # whole words in the vocabulary that merges cannot reach: only ignore_merges finds them
    j = json.loads(tok.to_str())
    vocab = j["model"]["vocab"]
    for w in ["ĠHelloWorld", "quickbrown", "Ġcarrotcake", "ĠThe"]:
        if w not in vocab:
            vocab[w] = len(vocab)
    j["model"]["ignore_merges"] = True
    tok = Tokenizer.from_str(json.dumps(j))
    tok.add_special_tokens(special)
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True),
        processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                      pair="<|begin_of_text|> $A <|begin_of_text|>:1 $B:1",
                                      special_tokens=[("<|begin_of_text|>", bos)])])
    return tok


def build_qwen2():
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PAT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.train_from_iterator(training_texts(), _bytelevel_trainer(1600, []))
    tok.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    return tok


def _sentencepiece_bpe(tok, byte_fallback, fuse_unk, limit_alphabet=120, vocab_size=1400):
    """Train, then lay the vocabulary out as SentencePiece conversions do: <unk> <s> </s>,
    then <0x00>..<0xFF> (with byte fallback), then the learned pieces."""
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"],
                                  show_progress=False, limit_alphabet=limit_alphabet)
    tok.train_from_iterator(training_texts(), trainer)
    j = json.loads(tok.to_str())
    old = sorted(j["model"]["vocab"].items(), key=lambda kv: kv[1])
    names = [k for k, _ in old if k in ("<unk>", "<s>", "</s>")]
    if byte_fallback:
        names += ["<0x%02X>" % b for b in range(256)]
    names += [k for k, _ in old if k not in ("<unk>", "<s>", "</s>")]
    j["model"]["vocab"] = {k: i for i, k in enumerate(names)}
    j["model"]["unk_token"] = "<unk>"
    j["model"]["byte_fallback"] = byte_fallback
    j["model"]["fuse_unk"] = fuse_unk
    j["added_tokens"] = [
        {"id": i, "content": c, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True} for i, c in enumerate(["<unk>", "<s>", "</s>"])]
    return Tokenizer.from_str(json.dumps(j))


def _sp_decoder():
    return decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                              decoders.Strip(" ", 1, 0)])


def build_llama2(byte_fallback=True):
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=byte_fallback, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok = _sentencepiece_bpe(tok, byte_fallback, True)
    tok.decoder = _sp_decoder()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B:1",
                                                       special_tokens=[("<s>", 1)])
    return tok


def build_mistral(variant):
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    if variant == "mistral":
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    else:
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok = _sentencepiece_bpe(tok, True, True)
    if variant == "mistral":
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    else:
        tok.decoder = _sp_decoder()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B:1",
                                                       special_tokens=[("<s>", 1)])
    return tok


def _add_flagged_tokens(tok):
    tok.add_special_tokens([AddedToken("[MASK]", lstrip=True, rstrip=True, special=True)])
    tok.add_tokens([AddedToken("<sep>", normalized=True, special=False),
                    AddedToken("xyz_tok", single_word=True, normalized=False, special=False)])


def build_misc(variant):
    """Components the big families do not use: NFKC/NFD/NFKD, Lowercase, regex Replace, Strip,
    Digits, Split behaviours and invert, added tokens with lstrip/rstrip/single_word/normalized,
    unk without byte fallback, a template with a suffix token."""
    if variant == "misc1":
        tok = Tokenizer(models.BPE())
        tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase(),
                                               normalizers.Replace(Regex("[0-9]{4,}"), "#")])
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.Split("-", behavior="merged_with_previous"),
            pre_tokenizers.Split(Regex(r"\s+"), behavior="removed"),
            pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)])
        tok.decoder = decoders.ByteLevel()
        tok.train_from_iterator(training_texts(), _bytelevel_trainer(1200, ["<bos>", "<eos>"]))
        _add_flagged_tokens(tok)
        tok.post_processor = processors.Sequence([
            processors.ByteLevel(add_prefix_space=True, trim_offsets=True),
            processors.TemplateProcessing(single="<bos> $A <eos>",
                                          special_tokens=[("<bos>", tok.token_to_id("<bos>")),
                                                          ("<eos>", tok.token_to_id("<eos>"))])])
        return tok
    if variant == "misc2":
        tok = Tokenizer(models.BPE())
        tok.normalizer = normalizers.Sequence([normalizers.NFD(), normalizers.Strip(left=True, right=True)])
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=False),
            pre_tokenizers.Split(",", behavior="merged_with_next"),
            pre_tokenizers.Split(Regex(r"[!?.]+"), behavior="contiguous"),
            pre_tokenizers.Split(Regex(r"\d+"), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        tok.decoder = decoders.ByteLevel()
        tok.train_from_iterator(training_texts(), _bytelevel_trainer(900, []))
        _add_flagged_tokens(tok)
        return tok
    # misc3: NFKD + Metaspace(always, split) + unk without byte fallback, no fusing
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=False, fuse_unk=False))
    tok.normalizer = normalizers.NFKD()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok = _sentencepiece_bpe(tok, False, False, limit_alphabet=80, vocab_size=900)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    _add_flagged_tokens(tok)
    return tok


# ---- the families of SPEC v2 §1 (their published tokenizer.json pipelines, rebuilt) ---------------

def build_gemma():
    """Gemma 2 / 3: SentencePiece BPE with byte fallback, no pre-tokenizer (merges may cross
    spaces), normalizer Replace(" ", "▁") without a prefix, <pad> <eos> <bos> <unk> first, a
    <bos> template, and its chat markers as special tokens."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    trainer = trainers.BpeTrainer(vocab_size=1400, special_tokens=["<pad>", "<eos>", "<bos>", "<unk>"],
                                  show_progress=False, limit_alphabet=120, max_token_length=12)
    tok.train_from_iterator(training_texts(), trainer)
    j = json.loads(tok.to_str())
    old = sorted(j["model"]["vocab"].items(), key=lambda kv: kv[1])
    first = ["<pad>", "<eos>", "<bos>", "<unk>"]
    names = first + ["<0x%02X>" % b for b in range(256)] + [k for k, _ in old if k not in first]
    j["model"]["vocab"] = {k: i for i, k in enumerate(names)}
    j["model"]["unk_token"] = "<unk>"
    j["model"]["byte_fallback"] = True
    j["added_tokens"] = [
        {"id": i, "content": c, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True} for i, c in enumerate(first)]
    tok = Tokenizer.from_str(json.dumps(j))
    tok.add_special_tokens(["<start_of_turn>", "<end_of_turn>"])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A <bos>:1 $B:1",
                                                       special_tokens=[("<bos>", 2)])
    return tok


def build_qwen3():
    """Qwen3: Qwen2's byte-level BPE (NFC, its split pattern), plus its special tokens."""
    tok = build_qwen2()
    tok.add_special_tokens(["<|endoftext|>", "<think>", "</think>", "<tool_call>"])
    return tok


def build_olmo2():
    """OLMo 2: cl100k-style split (Llama 3's pattern) then byte-level BPE, no normalizer, merges
    in the usual order (no ignore_merges), <|endoftext|> and <|pad|> special."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PAT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)
    tok.train_from_iterator(training_texts(), _bytelevel_trainer(1700, ["<|endoftext|>", "<|pad|>"]))
    return tok


def build_phi3():
    """Phi-3: Llama 2's SentencePiece BPE (byte fallback, Prepend + Replace normalizer, <s>
    template), with its chat markers as added special tokens (rstrip on some, as published)."""
    tok = build_llama2(True)
    tok.add_special_tokens([AddedToken("<|endoftext|>", special=True),
                            AddedToken("<|assistant|>", rstrip=True, special=True),
                            AddedToken("<|user|>", rstrip=True, special=True),
                            AddedToken("<|end|>", rstrip=True, special=True)])
    return tok


def build_smollm3():
    """SmolLM3: Llama 3's tokenizer (split pattern, byte level, ignore_merges) without a BOS
    template, with <|im_start|> / <|im_end|>."""
    tok = build_llama3()
    tok.post_processor = processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True)
    tok.add_special_tokens(["<|im_start|>", "<|im_end|>"])
    return tok


FAMILIES = {
    "gpt2": lambda: build_gpt2("gpt2"),
    "gpt2_trim": lambda: build_gpt2("gpt2_trim"),
    "gpt2_prefix": lambda: build_gpt2("gpt2_prefix"),
    "llama3": build_llama3,
    "qwen2": build_qwen2,
    "llama2": lambda: build_llama2(True),
    "llama2_unk": lambda: build_llama2(False),
    "mistral": lambda: build_mistral("mistral"),
    "metaspace_split": lambda: build_mistral("metaspace_split"),
    "misc1": lambda: build_misc("misc1"),
    "misc2": lambda: build_misc("misc2"),
    "misc3": lambda: build_misc("misc3"),
    "gemma": build_gemma,
    "qwen3": build_qwen3,
    "olmo2": build_olmo2,
    "phi3": build_phi3,
    "smollm3": build_smollm3,
}


@pytest.fixture(scope="session")
def family_dir(tmp_path_factory):
    cache = {}

    def get(name):
        if name not in cache:
            if name == "smollm2":
                if not (SMOL_DIR / "tokenizer.json").exists():
                    pytest.skip(f"SmolLM2 model not converted: run scripts/fetch-model.sh (looked in {SMOL_DIR})")
                cache[name] = (SMOL_DIR, Tokenizer.from_file(str(SMOL_DIR / "tokenizer.json")))
            else:
                tok = FAMILIES[name]()
                d = tmp_path_factory.mktemp(name)
                tok.save(str(d / "tokenizer.json"))
                # reload what was saved, so both sides read the same file
                cache[name] = (d, Tokenizer.from_file(str(d / "tokenizer.json")))
        return cache[name]

    return get


def byte_offsets(text, offsets):
    pos = [0]
    for ch in text:
        pos.append(pos[-1] + len(ch.encode("utf-8")))
    n = len(text)
    return [(pos[min(s, n)], pos[min(e, n)]) for s, e in offsets]


def punctum_encode(d, texts, special=True):
    args = ["--model", str(d), "--json", "--jsonl", "-"]
    if not special:
        args.insert(0, "--no-special")
    p = run_bin(args, "".join(json.dumps(t) + "\n" for t in texts))
    lines = p.stdout.splitlines()
    assert len(lines) == len(texts), f"expected {len(texts)} output lines, got {len(lines)}: {p.stderr}"
    return [json.loads(x) for x in lines]


# Case mapping (Lowercase normalizer) uses utf8proc 2.8, i.e. Unicode 15.0 data, while tokenizers
# uses Rust's (Unicode 17.0): for the family with a Lowercase normalizer, texts holding code points
# unassigned in Python's Unicode 14.0 database are encoded (must not fail) but not compared.
UNICODE_LIMITED = {"misc1"}


def recent_chars(text):
    return any(unicodedata.category(c) == "Cn" for c in text)


def compare(name, d, hf, texts, special=True):
    ours = punctum_encode(d, texts, special)
    if name in UNICODE_LIMITED:
        keep = [i for i, t in enumerate(texts) if not recent_chars(t)]
        assert len(keep) > 0.8 * len(texts)
        texts, ours = [texts[i] for i in keep], [ours[i] for i in keep]
    theirs = hf.encode_batch(texts, add_special_tokens=special)
    bad = []
    for text, o, h in zip(texts, ours, theirs):
        hb = byte_offsets(text, h.offsets)
        ob = list(zip(o["byte_start"], o["byte_end"]))
        if o["ids"] != h.ids or ob != hb:
            bad.append(f"{text!r}\n   hf ids {h.ids} spans {hb}\n   us ids {o['ids']} spans {ob}")
    assert not bad, f"{name}: {len(bad)} of {len(texts)} texts differ; first ones:\n" + "\n".join(bad[:5])
    return len(texts)


ALL = list(FAMILIES) + ["smollm2"]


@pytest.mark.parametrize("name", ALL)
def test_encode_matches_hf(name, family_dir):
    d, hf = family_dir(name)
    compare(name, d, hf, TEXTS, special=True)


@pytest.mark.parametrize("name", ["gpt2", "llama3", "llama2", "mistral", "misc1", "smollm2", "gemma", "olmo2",
                                  "phi3"])
def test_encode_no_special_matches_hf(name, family_dir):
    d, hf = family_dir(name)
    compare(name, d, hf, TEXTS[:1500], special=False)


@pytest.mark.parametrize("name", ALL)
def test_pieces_match_hf_decode(name, family_dir):
    d, hf = family_dir(name)
    p = run_bin(["--model", str(d), "--vocab"])
    pieces = [json.loads(x) for x in p.stdout.splitlines()]
    n = hf.get_vocab_size(with_added_tokens=True)
    assert len(pieces) >= n
    bad = []
    for i in range(len(pieces)):
        want = hf.decode([i], skip_special_tokens=False)
        if pieces[i] != want:
            bad.append((i, hf.id_to_token(i), want, pieces[i]))
    assert not bad, f"{name}: {len(bad)} pieces differ, first: {bad[:5]}"


def test_smollm2_reference_encoding(family_dir):
    d, hf = family_dir("smollm2")
    text = "The capital of France is"
    o = punctum_encode(d, [text])[0]
    assert o["ids"] == hf.encode(text).ids
    assert "".join(o["pieces"]) == text


# ---- CLI behaviour -------------------------------------------------------------------------------

def test_text_output_format(family_dir):
    d, hf = family_dir("gpt2")
    p = run_bin(["--model", str(d), "Hello\tworld\n!"])
    rows = [r.split("\t") for r in p.stdout.splitlines()]
    enc = hf.encode("Hello\tworld\n!")
    assert [int(r[0]) for r in rows] == enc.ids
    assert all(len(r) == 4 for r in rows)
    assert "\\t" in "".join(r[3] for r in rows) and "\\n" in "".join(r[3] for r in rows)


def test_stdin_lines_and_json(family_dir):
    d, hf = family_dir("llama3")
    p = run_bin(["--model", str(d), "--json", "-"], "one line\nsecond, line.\n\n")
    objs = [json.loads(x) for x in p.stdout.splitlines()]
    assert len(objs) == 3
    for t, o in zip(["one line", "second, line.", ""], objs):
        h = hf.encode(t)
        assert o["ids"] == h.ids
        assert o["byte_start"][0] == 0 and o["byte_end"][0] == 0  # BOS
        assert len(o["pieces"]) == len(o["ids"])


def test_usage_errors(tmp_path):
    for args in ([], ["--model"], ["--model", str(tmp_path)], ["--bogus", "--model", str(tmp_path), "x"],
                 ["--model", str(tmp_path), "a", "b"], ["--model", str(tmp_path), "--jsonl", "x"]):
        p = run_bin(args, check=False)
        assert p.returncode == 2, (args, p.returncode, p.stderr)
        assert p.stderr.strip()


def test_missing_model_names_file(tmp_path):
    p = run_bin(["--model", str(tmp_path / "nope"), "hi"], check=False)
    assert p.returncode == 1
    assert "tokenizer.json" in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_invalid_utf8_on_stdin(family_dir):
    d, _ = family_dir("gpt2")
    p = subprocess.run([BIN, "tokenize", "--model", str(d), "-"], input=b"ok\n\xff\xfe bad\n",
                       capture_output=True)
    assert p.returncode == 1
    assert b"UTF-8" in p.stderr


def _minimal(**over):
    j = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
         "normalizer": None, "pre_tokenizer": None, "post_processor": None, "decoder": None,
         "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                   "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                   "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}}
    for k, v in over.items():
        j[k] = v
    return j


def _load_error(tmp_path, content):
    (tmp_path / "tokenizer.json").write_text(content if isinstance(content, str) else json.dumps(content))
    p = run_bin(["--model", str(tmp_path), "ab"], check=False)
    return p


def test_minimal_tokenizer_both_merge_forms(tmp_path):
    for merges in (["a b"], [["a", "b"]]):
        j = _minimal()
        j["model"]["merges"] = merges
        p = _load_error(tmp_path, j)
        assert p.returncode == 0, p.stderr
        assert p.stdout.split("\t")[0] == "2"


@pytest.mark.parametrize("component,bad,needle", [
    ("pre_tokenizer", {"type": "Whitespace"}, "pre_tokenizer type 'Whitespace' is not supported"),
    ("normalizer", {"type": "BertNormalizer"}, "normalizer type 'BertNormalizer' is not supported"),
    ("normalizer", {"type": "Precompiled", "precompiled_charsmap": ""}, "normalizer type 'Precompiled'"),
    ("post_processor", {"type": "RobertaProcessing"}, "post_processor type 'RobertaProcessing'"),
    ("decoder", {"type": "WordPiece"}, "decoder type 'WordPiece' is not supported"),
    ("model", {"type": "Unigram", "vocab": []}, "model type 'Unigram' is not supported"),
    ("model", {"type": "WordPiece", "vocab": {}}, "model type 'WordPiece' is not supported"),
])
def test_unsupported_components_are_named(tmp_path, component, bad, needle):
    p = _load_error(tmp_path, _minimal(**{component: bad}))
    assert p.returncode == 1
    assert needle in p.stderr, p.stderr
    assert "tokenizer.json" in p.stderr


@pytest.mark.parametrize("mutate,needle", [
    (lambda j: j["model"].update(vocab={"a": -1}), "vocab"),
    (lambda j: j["model"].update(vocab={"a": 0, "b": 0}), "used twice"),
    (lambda j: j["model"].update(vocab={"a": 1 << 40}), "vocab"),
    (lambda j: j["model"].update(vocab={"a": "x"}), "vocab"),
    (lambda j: j["model"].update(vocab=[1, 2]), "vocab"),
    (lambda j: j["model"].update(merges=["a c"]), "not in the vocabulary"),
    (lambda j: j["model"].update(merges=["a b c"]), "merges"),
    (lambda j: j["model"].update(merges=[["a"]]), "merges"),
    (lambda j: j["model"].update(merges=["b a"]), "not in the vocabulary"),
    (lambda j: j["model"].update(dropout=0.1), "dropout"),
    (lambda j: j["model"].update(continuing_subword_prefix="##"), "continuing_subword_prefix"),
    (lambda j: j.update(added_tokens=[{"id": 9, "content": "<x>", "special": True}]), "id"),
    (lambda j: j.update(added_tokens=[{"id": "z", "content": "<x>"}]), "id"),
    (lambda j: j.update(added_tokens=7), "added_tokens"),
    (lambda j: j.update(truncation={"max_length": 5}), "truncation"),
    (lambda j: j.update(pre_tokenizer={"type": "Split", "pattern": {"Regex": "("}, "behavior": "Isolated"}), "regex"),
    (lambda j: j.update(pre_tokenizer={"type": "Split", "pattern": {"Regex": "a"}, "behavior": "Sideways"}), "behavior"),
    (lambda j: j.update(pre_tokenizer={"type": "Metaspace", "replacement": "ab"}), "single character"),
    (lambda j: j.update(post_processor={"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}],
                                        "special_tokens": {}}), "special_tokens"),
    (lambda j: j.update(post_processor={"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}],
                                        "special_tokens": {"<s>": {"id": "<s>", "ids": [99], "tokens": ["<s>"]}}}), "outside"),
    (lambda j: j.pop("model"), "model"),
])
def test_hostile_files_fail_cleanly(tmp_path, mutate, needle):
    j = _minimal()
    mutate(j)
    p = _load_error(tmp_path, j)
    assert p.returncode == 1, p.stdout
    assert needle in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("content", ["", "{", "[]", "null", "{\"model\": 5}", "\x00\x01", "{\"a\":1,\"a\":2}"])
def test_garbage_files_fail_cleanly(tmp_path, content):
    p = _load_error(tmp_path, content)
    assert p.returncode == 1
    assert "tokenizer.json" in p.stderr
