"""Independent Python references for punctum's text records (SPEC §1-§3, §5):

- tiny model directories that carry a byte-level BPE ``tokenizer.json`` trained here with the
  Hugging Face ``tokenizers`` library (llama style: BOS prepended by a TemplateProcessing,
  offsets untrimmed, like Llama 3; gpt2 style: no BOS, ByteLevel post-processor with
  ``trim_offsets``), plus a few added tokens that end in Unicode white space or are a
  Unicode line break (they exercise the is_punct rule);
- the SPEC §3 punctuation rule, written from the spec text (not from the engine);
- the target token "tokenized in context"; --derive-b strip-punct;
- character offsets -> UTF-8 byte spans; HDF5 reading helpers.
"""
from __future__ import annotations

import json
import os
import shutil

import numpy as np

# ---------------------------------------------------------------------------------------
# tokenizers
# ---------------------------------------------------------------------------------------

# The trainer learns the most frequent pairs first: multi-byte words are repeated so that
# merges inside and across multi-byte characters are learned within the tiny vocabularies.
CORPUS = (
    ["the cat sat on the mat. the dog ran, and the cat sat!"] * 6
    + ["café naïve façade café naïve — café…"] * 8
    + ["日本語。日本、東京。日本語，"] * 8
    + ["He saw a carrot and had to grab it,\nHis hunger was like a starving rabbit.\n\n"] * 3
    + ["Why? Really?! Yes: no; maybe…\r\n"] * 3
    + ["😀 🐇 😀 🐇"] * 4
)

# Added (non-special) tokens, matched before the BPE model. Their decoded text is their
# content: "。" + IDEOGRAPHIC SPACE and "!" + NO-BREAK SPACE end in punctuation once stripped
# of (Unicode) white space; LINE SEPARATOR is a line break; IDEOGRAPHIC SPACE alone is not
# punctuation; "！" is a full-width exclamation mark (see FULLWIDTH_EXTRA below).
ADDED = ["\u3002\u3000", "!\u00a0", "\u2028", "\u3000", "\uff01"]

SPECIALS = {"llama": ["<unk>", "<s>", "</s>"], "gpt2": ["<|endoftext|>"],
            # SentencePiece style: byte-fallback tokens <0x00> ... <0xFF> at ids 3 ... 258
            "metaspace": ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]}
STYLES = list(SPECIALS)


def train_tokenizer(style: str, vocab_size: int):
    """llama: byte-level BPE, BOS by TemplateProcessing, offsets untrimmed (as Llama 3);
    gpt2: byte-level BPE, no BOS, ByteLevel post-processor trimming offsets;
    metaspace: Llama 2 / Mistral style (normalizer Prepend + Replace, no pre-tokenizer, BPE
    with byte fallback, decoder Replace / ByteFallback / Fuse / Strip, BOS)."""
    from tokenizers import (AddedToken, Tokenizer, decoders, models, normalizers,
                            pre_tokenizers, processors, trainers)
    n_room = len(ADDED)
    if style == "metaspace":
        tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
        # trained split at spaces (as SentencePiece does), used without pre-tokenizer
        tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first", split=True)
        tr = trainers.BpeTrainer(vocab_size=vocab_size - n_room, special_tokens=SPECIALS[style],
                                 limit_alphabet=24, show_progress=False)
        tok.train_from_iterator(CORPUS, tr)
        tok.pre_tokenizer = None
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"),
                                               normalizers.Replace(" ", "\u2581")])
        tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(),
                                         decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    else:
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tr = trainers.BpeTrainer(vocab_size=vocab_size - n_room, special_tokens=SPECIALS[style],
                                 initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                 show_progress=False)
        tok.train_from_iterator(CORPUS, tr)
    if style == "gpt2":
        tok.post_processor = processors.ByteLevel(trim_offsets=True)
    else:
        bos = tok.token_to_id("<s>")
        tp = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
        tok.post_processor = tp if style == "metaspace" else processors.Sequence(
            [processors.ByteLevel(trim_offsets=False), tp])
    tok.add_tokens([AddedToken(a, normalized=False) for a in ADDED])
    assert tok.get_vocab_size() <= vocab_size, (style, tok.get_vocab_size(), vocab_size)
    return tok


def make_text_model(src_dir: str, dst_dir: str, style: str, vocab_size: int) -> str:
    """dst_dir: src_dir's config.json and weights (symlinked) plus our tokenizer.json."""
    os.makedirs(dst_dir, exist_ok=True)
    shutil.copy(os.path.join(src_dir, "config.json"), dst_dir)
    for fn in os.listdir(src_dir):
        if fn.endswith(".safetensors") or fn.endswith(".safetensors.index.json"):
            dst = os.path.join(dst_dir, fn)
            if not os.path.exists(dst):
                os.symlink(os.path.join(src_dir, fn), dst)
    train_tokenizer(style, vocab_size).save(os.path.join(dst_dir, "tokenizer.json"))
    return dst_dir


def load_tokenizer(model_dir: str):
    from tokenizers import Tokenizer
    return Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))


def piece(tok, tid: int) -> str:
    """The decoded text of one token as Hugging Face decodes it; special tokens kept
    (tokenizers' decode() skips them by default, which would make BOS an empty string)."""
    return tok.decode([int(tid)], skip_special_tokens=False)


def byte_spans(text: str, offsets) -> tuple[list[int], list[int]]:
    """tokenizers' character offsets -> spans in the UTF-8 encoding of text."""
    c2b = [0]
    for ch in text:
        c2b.append(c2b[-1] + len(ch.encode("utf-8")))
    return [c2b[s] for s, _ in offsets], [c2b[e] for _, e in offsets]


# ---------------------------------------------------------------------------------------
# SPEC §3 punctuation rule
# ---------------------------------------------------------------------------------------

# ". , ; : ! ? …" and a CJK full stop / comma: IDEOGRAPHIC FULL STOP / COMMA and their
# full-width forms U+FF0E / U+FF0C.
PUNCT_END = (".", ",", ";", ":", "!", "?", "\u2026", "\u3002", "\u3001", "\uff0c", "\uff0e")
# Not listed by the SPEC, but counted by the engine: FULLWIDTH EXCLAMATION / QUESTION MARK
# (the CJK forms of "!" and "?"). Kept as a separate, explicit reading (see the report).
FULLWIDTH_EXTRA = ("\uff01", "\uff1f")
# "white space": the Unicode White_Space property (PropList.txt)
WHITE_SPACE = ("\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
               "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
# "line break": the mandatory breaks of UAX #14 (classes BK, CR, LF, NL)
LINE_BREAKS = "\n\r\x0b\x0c\x85\u2028\u2029"


def is_punct(text: str) -> bool:
    if any(c in LINE_BREAKS for c in text):
        return True
    s = text.rstrip(WHITE_SPACE)
    return s.endswith(PUNCT_END + FULLWIDTH_EXTRA)


def strip_punct(a: str) -> str:
    """--derive-b strip-punct: a without its trailing sentence punctuation: the final run of
    the marks above and of white space other than line breaks, when that run holds at least
    one mark; a unchanged when it ends in no mark."""
    marks = PUNCT_END + FULLWIDTH_EXTRA
    spaces = "".join(c for c in WHITE_SPACE if c not in LINE_BREAKS)
    s, cut = a, False
    while True:
        s = s.rstrip(spaces)
        m = next((m for m in marks if s.endswith(m)), None)
        if m is None:
            break
        s, cut = s[: -len(m)], True
    return s if cut else a


# ---------------------------------------------------------------------------------------
# targets
# ---------------------------------------------------------------------------------------

def target_in_context(tok, prompt: str, target: str) -> tuple[int, bool]:
    """SPEC §2: the first token of the continuation tokenized in context after the prompt:
    encode(prompt + target), and take the first token whose span ends beyond the prompt.
    Returns (id, merged): merged when that token starts inside the prompt (the boundary
    merged a prompt character with the continuation), or -1 when there is none."""
    n = len(prompt)
    enc = tok.encode(prompt + target)
    for tid, (s, e) in zip(enc.ids, enc.offsets):
        if e > n:
            return tid, s < n
    return -1, False


# ---------------------------------------------------------------------------------------
# HDF5
# ---------------------------------------------------------------------------------------

def write_jsonl(path: str, records) -> None:
    with open(path, "wb") as f:
        for r in records:
            if isinstance(r, bytes):
                f.write(r + b"\n")
            elif isinstance(r, str):
                f.write(r.encode("utf-8") + b"\n")
            else:
                f.write(json.dumps(r).encode("utf-8") + b"\n")


class Out:
    """An output file read whole (small test files)."""

    def __init__(self, path: str):
        import h5py
        self.d: dict = {}
        with h5py.File(path, "r") as f:
            def visit(name, obj):
                if isinstance(obj, h5py.Dataset):
                    if h5py.check_string_dtype(obj.dtype) is not None:
                        self.d[name] = list(obj.asstr()[:])
                    else:
                        self.d[name] = obj[:]
            f.visititems(visit)
            self.attrs = dict(f.attrs)

    def __getitem__(self, k):
        return self.d[k]

    def __contains__(self, k):
        return k in self.d

    def seq_row(self, pair: int, side: int) -> int:
        return int(self.d["pairs/seq_a" if side == 0 else "pairs/seq_b"][pair])

    def tok_rows(self, seq: int) -> slice:
        s = int(self.d["seqs/tok_start"][seq])
        return slice(s, s + int(self.d["seqs/n_tok"][seq]))

    def tok(self, name: str, seq: int):
        v = self.d["tokens/" + name]
        r = self.tok_rows(seq)
        return v[r] if isinstance(v, np.ndarray) else v[r.start:r.stop]
