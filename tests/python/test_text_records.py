"""Text records (SPEC §1-§5) from a user's point of view, against independent references:

- tiny random llama / gpt2 models (tiny_models.py) given a tokenizer.json trained here with
  Hugging Face ``tokenizers`` (text_ref.py: byte-level BPE, llama style prepending BOS, gpt2
  style trimming offsets; and a Llama 2 style Metaspace BPE with byte fallback):
  /tokens/id == tokenizers' encode(text).ids, byte spans == its offsets in UTF-8 bytes,
  /tokens/text == decode([id], skip_special_tokens=False), /seqs/text == the prompt,
  is_punct == the SPEC §3 rule computed in Python, and every statistic equal to the same
  prompts given as a_ids / b_ids;
- "target": the first token of encode(prompt + target) that ends beyond the prompt, and its
  log-probability against transformers' log_softmax of the final logits;
- --derive-b append:STR / strip-punct; bad text records; --positions punct for knockout and
  the logit lens;
- the real SmolLM2-135M-Instruct against transformers (float32, eager attention).

Tolerances: text vs ids runs of the same engine: 1e-6 relative (1e-12 absolute floor).
Engine vs transformers float32: target log-probs 1e-4 relative + 1e-5 absolute (tiny
models); SmolLM2: 1e-4 relative with an absolute floor of 1e-6 (log-probs, entropy,
attention) and 2e-6 (kl_ab: a difference of two float32 log-prob vectors).
"""
from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest

import text_ref as T
import tiny_models

STYLES = {"llama": "llama_gqa", "gpt2": "gpt2", "metaspace": "llama_gqa"}
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Prompts: multi-byte characters (2-, 3- and 4-byte UTF-8, split across byte tokens and
# merged), punctuation inside and at the end, CR LF, and the added tokens of text_ref.ADDED.
PAIRS = [
    {"id": "period", "a": "the cat sat on the mat", "b": "the cat sat on the mat.",
     "target": " and"},
    {"id": "cafe", "a": "café naïve façade", "b": "café naïve façade…", "target": " café"},
    {"id": "cjk", "a": "日本語。東京、大阪", "b": "日本語。東京、大阪。", "target": "，"},
    {"id": "poem", "a": "He saw a carrot,\nHis hunger was like a", "target": " rabbit"},
    {"id": "emoji", "a": "😀 and 🐇; done", "b": "😀 and 🐇; done!\u00a0", "target": "!"},
    {"id": "spaces", "a": "Why?\u3000Really?! Yes:", "b": "Why。\u3000Really！\u2028ok",
     "target": " no"},
    # the prompt ends in a space: " mat" starts inside the prompt (the boundary merges)
    {"id": "merge", "a": "the cat sat on the ", "target": "mat"},
    # ... and here "ca" + "t" merge into one token
    {"id": "merge2", "a": "the ca", "b": "the cat", "target": "t sat"},
    {"id": "crlf", "a": "maybe…\r\nthe dog ran", "target": ","},
]

REL, FLOOR = 1e-6, 1e-12          # text run vs ids run


# ---------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------

class TextModel:
    def __init__(self, style: str, tiny, path: str):
        self.style, self.tiny, self.path = style, tiny, path
        self.tok = T.load_tokenizer(path)
        self.vocab_size = tiny.vocab_size
        self.bos = self.tok.token_to_id("<s>")      # None for the gpt2 style
        self._hf = None
        self._logp: dict = {}

    def logp(self, ids) -> np.ndarray:
        """transformers' log_softmax of the final logits (float32 forward, float64 softmax)."""
        import torch
        key = tuple(int(i) for i in ids)
        if key not in self._logp:
            if self._hf is None:
                self._hf = tiny_models.load_hf(self.path)
            with torch.no_grad():
                lg = self._hf(input_ids=torch.tensor([key])).logits[0, -1]
            self._logp[key] = torch.log_softmax(lg.double(), -1).numpy()
        return self._logp[key]


@pytest.fixture(scope="module")
def text_model(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("text_models")
    cache: dict = {}

    def get(style: str) -> TextModel:
        if style not in cache:
            tiny = tiny_model(STYLES[style])
            d = T.make_text_model(tiny.path, str(root / style), style, tiny.vocab_size)
            cache[style] = TextModel(style, tiny, d)
        return cache[style]
    return get


def run(punctum, model_dir, tmp_path, records, *opts, name="out", expect=0):
    pairs = os.path.join(str(tmp_path), f"{name}.jsonl")
    out = os.path.join(str(tmp_path), f"{name}.h5")
    T.write_jsonl(pairs, records)
    p = punctum.run(model_dir, pairs, out, *opts, expect=expect)
    return (T.Out(out) if os.path.exists(out) and p.returncode == 0 else None), p


def ids_records(tm: TextModel, pairs) -> list[dict]:
    """The same prompts as pre-tokenized ids (tokenizers' encodings), target_id = a's."""
    out = []
    for r in pairs:
        x = {"id": r["id"], "a_ids": tm.tok.encode(r["a"]).ids}
        if "b" in r:
            x["b_ids"] = tm.tok.encode(r["b"]).ids
        if "target" in r:
            x["target_id"] = T.target_in_context(tm.tok, r["a"], r["target"])[0]
        out.append(x)
    return out


_RUNS: dict = {}


@pytest.fixture(scope="module")
def text_runs(text_model, punctum, tmp_path_factory):
    """style -> (TextModel, text run, ids run), default statistics."""
    def get(style):
        if style not in _RUNS:
            tm = text_model(style)
            d = tmp_path_factory.mktemp(f"runs_{style}")
            for r in PAIRS:
                for k in ("a", "b"):
                    if k in r:
                        assert len(tm.tok.encode(r[k]).ids) <= tm.tiny.max_positions, r
            txt, _ = run(punctum, tm.path, d, PAIRS, name="text")
            ids, _ = run(punctum, tm.path, d, ids_records(tm, PAIRS), name="ids")
            _RUNS[style] = (tm, txt, ids)
        return _RUNS[style]
    return get


def sides(rec):
    return [0, 1] if "b" in rec else [0]


def side_text(rec, side):
    return rec["a"] if side == 0 else rec["b"]


# ---------------------------------------------------------------------------------------
# tokens of text records
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("style", list(STYLES))
def test_text_tokens_match_tokenizers(style, text_runs):
    tm, O, _ = text_runs(style)
    assert list(O["pairs/status"]) == [0] * len(PAIRS), O["pairs/message"]
    assert O["pairs/id"] == [r["id"] for r in PAIRS]
    errors = []
    n_multibyte = n_punct = 0
    for p, rec in enumerate(PAIRS):
        for side in sides(rec):
            text = side_text(rec, side)
            s = O.seq_row(p, side)
            where = f"{rec['id']}/{'ab'[side]}"
            assert O["seqs/text"][s] == text, where
            enc = tm.tok.encode(text)
            ids = [int(i) for i in O.tok("id", s)]
            if ids != enc.ids:
                errors.append(f"{where}: ids {ids} != tokenizers {enc.ids}")
                continue
            assert int(O["seqs/n_tok"][s]) == len(enc.ids)
            assert list(O.tok("pos", s)) == list(range(len(ids)))
            assert set(O.tok("seq", s)) == {s}
            bs, be = T.byte_spans(text, enc.offsets)
            got_bs = [int(x) for x in O.tok("byte_start", s)]
            got_be = [int(x) for x in O.tok("byte_end", s)]
            if (got_bs, got_be) != (bs, be):
                errors.append(f"{where}: byte spans {list(zip(got_bs, got_be))} != "
                              f"{list(zip(bs, be))}")
            pieces = [T.piece(tm.tok, i) for i in ids]
            got_pieces = O.tok("text", s)
            if got_pieces != pieces:
                errors.append(f"{where}: pieces {got_pieces!r} != {pieces!r}")
            want_p = [int(T.is_punct(x)) for x in pieces]
            got_p = [int(x) for x in O.tok("is_punct", s)]
            if got_p != want_p:
                bad = [(pieces[i], got_p[i], want_p[i]) for i in range(len(ids))
                       if got_p[i] != want_p[i]]
                errors.append(f"{where}: is_punct differs at (piece, engine, spec): {bad!r}")
            n_multibyte += sum(e - b > 1 for b, e in zip(bs, be))
            n_punct += sum(want_p)
    assert not errors, "\n".join(errors)
    assert n_multibyte > 10 and n_punct > 10   # the prompts exercise what they should


@pytest.mark.parametrize("style", list(STYLES))
def test_text_statistics_equal_ids_statistics(style, text_runs):
    tm, A, B = text_runs(style)
    assert list(B["pairs/status"]) == [0] * len(PAIRS)
    for k in ("tokens/id", "tokens/pos", "tokens/seq", "tokens/is_punct", "seqs/n_tok",
              "seqs/pair", "seqs/side", "pairs/seq_a", "pairs/seq_b", "seqs/topk_id"):
        np.testing.assert_array_equal(A[k], B[k], err_msg=k)
    # ids records have no text: no spans, but the decoded pieces are the same
    assert A["tokens/text"] == B["tokens/text"]
    assert (B["tokens/byte_start"] == -1).all() and (B["tokens/byte_end"] == -1).all()
    assert set(B["seqs/text"]) == {""}
    for k in ("tokens/attn_mass", "tokens/attn_last", "tokens/resid_norm", "seqs/entropy",
              "seqs/topk_logprob", "pairs/kl_ab", "pairs/kl_ba", "pairs/js", "pairs/resid_cos"):
        np.testing.assert_allclose(A[k], B[k], rtol=REL, atol=FLOOR, equal_nan=True,
                                   err_msg=k)
    # targets: the ids run gives a's target to both sides; compare where they coincide
    for p, rec in enumerate(PAIRS):
        for side in sides(rec):
            s = A.seq_row(p, side)
            if "target" in rec and A["seqs/target_id"][s] == B["seqs/target_id"][s]:
                np.testing.assert_allclose(A["seqs/target_logprob"][s],
                                           B["seqs/target_logprob"][s], rtol=REL, atol=FLOOR)


# ---------------------------------------------------------------------------------------
# target
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("style", list(STYLES))
def test_target_tokenized_in_context(style, text_runs):
    tm, O, _ = text_runs(style)
    merged, ctx_matters = [], []
    for p, rec in enumerate(PAIRS):
        for side in sides(rec):
            s = O.seq_row(p, side)
            if "target" not in rec:
                assert O["seqs/target_id"][s] == -1 and np.isnan(O["seqs/target_logprob"][s])
                continue
            prompt = side_text(rec, side)
            want, m = T.target_in_context(tm.tok, prompt, rec["target"])
            assert want >= 0
            if m:
                merged.append(f"{rec['id']}/{'ab'[side]}")
            assert int(O["seqs/target_id"][s]) == want, \
                (rec["id"], side, int(O["seqs/target_id"][s]), want)
            alone = [i for i in tm.tok.encode(rec["target"]).ids if i != tm.bos]
            if alone[:1] != [want]:
                ctx_matters.append(rec["id"])
            lp = tm.logp(O.tok("id", s))
            np.testing.assert_allclose(O["seqs/target_logprob"][s], lp[want], rtol=1e-4,
                                       atol=1e-5, err_msg=f"{rec['id']}/{side}")
    # the boundary-merge cases really merge (a prompt character joins the target token; the
    # gpt2 style's trimmed offsets hide that " mat" starts with the prompt's final space, and
    # the metaspace vocabulary has no "▁mat")
    assert ({"merge/a", "merge2/a"} if style == "llama" else {"merge2/a"}) <= set(merged), merged
    # ... and there the target is not the first token of the target tokenized alone
    assert "merge2" in ctx_matters, ctx_matters


# ---------------------------------------------------------------------------------------
# --derive-b
# ---------------------------------------------------------------------------------------

DERIVE_RECORDS = [
    {"id": "plain", "a": "the cat sat"},
    {"id": "cjk", "a": "日本語"},
    {"id": "target", "a": "the cat", "target": " sat"},
    {"id": "has_b", "a": "the cat sat", "b": "the dog ran"},
    {"id": "has_b_ids", "a": "the cat sat", "b_ids": [5, 6, 7]},
    {"id": "ids_only", "a_ids": [5, 6, 7]},
]

STRIP_CASES = {
    "the cat sat.": "the cat sat",
    "Really?! ": "Really",
    "Wait . . .": "Wait",
    "maybe…": "maybe",
    "日本語。": "日本語",
    "東京、": "東京",
    "大阪！": "大阪",
    "He said: \"no.\"": "He said: \"no.\"",      # ends in a quote: no trailing punctuation
    "no punct here": "no punct here",
    "trailing space ": "trailing space ",        # no punctuation: a unchanged
    "a line.\n": "a line.\n",                    # a line break is not sentence punctuation
    "mid. sentence": "mid. sentence",
    "?": "",                                     # llama: b = BOS alone (see test_empty_prompt)
}


@pytest.mark.parametrize("derive", ["append:.", "append:。", "strip-punct"])
def test_derive_b(derive, text_model, punctum, tmp_path):
    tm = text_model("llama")
    recs = list(DERIVE_RECORDS)
    if derive == "strip-punct":
        recs += [{"id": f"strip{i}", "a": a} for i, a in enumerate(STRIP_CASES)]
    O, _ = run(punctum, tm.path, tmp_path, recs, "--derive-b", derive)
    st = dict(zip(O["pairs/id"], O["pairs/status"]))
    msg = dict(zip(O["pairs/id"], O["pairs/message"]))
    assert st.pop("ids_only") == 1 and "derive-b" in msg["ids_only"], msg["ids_only"]
    assert set(st.values()) == {0}, msg
    for p, rec in enumerate(recs):
        if rec["id"] == "ids_only":
            continue
        sb = O.seq_row(p, 1)
        assert sb >= 0, rec
        if "b_ids" in rec:                       # left alone
            assert list(O.tok("id", sb)) == rec["b_ids"]
            continue
        if "b" in rec:                           # left alone
            want_b = rec["b"]
        elif derive.startswith("append:"):
            want_b = rec["a"] + derive[len("append:"):]
        else:
            want_b = T.strip_punct(rec["a"])
            assert want_b == STRIP_CASES.get(rec["a"], want_b)
        assert O["seqs/text"][sb] == want_b, (rec, O["seqs/text"][sb])
        assert [int(i) for i in O.tok("id", sb)] == tm.tok.encode(want_b).ids, rec
        if "target" in rec:                      # b's target in b's own context
            assert int(O["seqs/target_id"][sb]) == \
                T.target_in_context(tm.tok, want_b, rec["target"])[0]
        if want_b == rec["a"]:                   # identical prompts: identical predictions
            assert O["pairs/kl_ab"][p] == pytest.approx(0.0, abs=1e-9)


# ---------------------------------------------------------------------------------------
# bad text records
# ---------------------------------------------------------------------------------------

def test_text_record_without_tokenizer(tiny_model, punctum, tmp_path):
    m = tiny_model("llama_gqa")
    assert not os.path.exists(os.path.join(m.path, "tokenizer.json"))
    recs = [{"id": "text", "a": "the cat"},
            {"id": "ids", "a_ids": [5, 6, 7], "b_ids": [5, 6, 7, 8]},
            {"id": "target", "a_ids": [5, 6, 7], "b_ids": [5], "target": " sat"},
            {"id": "derived", "a_ids": [5, 6]}]
    O, _ = run(punctum, m.path, tmp_path, recs, "--derive-b", "append:.")
    assert list(O["pairs/status"]) == [1, 0, 1, 1], O["pairs/message"]
    msgs = O["pairs/message"]
    assert msgs[0].startswith("line 1:") and "tokenizer" in msgs[0], msgs[0]
    assert msgs[2].startswith("line 3:") and "tokenizer" in msgs[2], msgs[2]
    assert msgs[3].startswith("line 4:"), msgs[3]
    assert list(O.tok("id", O.seq_row(1, 1))) == [5, 6, 7, 8]
    # --strict: exit 1 at the first bad record, saying which
    _, p = run(punctum, m.path, tmp_path, recs, "--strict", name="strict", expect=1)
    assert "line 1" in p.stderr and "tokenizer" in p.stderr, p.stderr


def test_bad_text_records(text_model, punctum, tmp_path):
    """Strings JSON can carry but UTF-8 cannot (lone surrogates), NUL, raw invalid UTF-8 in
    the file, and other malformed text records: each a recorded bad record, never a crash."""
    tm = text_model("llama")
    P = tm.tiny.max_positions
    long_text = "x" * (P + 10)
    assert len(tm.tok.encode(long_text).ids) > P
    bad_json = [
        '{"id": "lone-high", "a": "x\\ud800y"}',
        '{"id": "lone-low", "a": "\\udc00"}',
        '{"id": "lone-b", "a": "ok", "b": "ok\\udbff"}',
        '{"id": "lone-target", "a": "ok", "target": " \\ud800"}',
        '{"id": "reversed-pair", "a": "\\ude00\\ud83d"}',
        '{"id": "nul", "a": "a\\u0000b"}',             # NUL: cannot be a C / HDF5 string
        b'{"id": "raw-ff", "a": "\xff\xfe"}',            # raw invalid UTF-8 in the file
        b'{"id": "overlong", "a": "\xc0\xaf"}',
        b'{"id": "surrogate-bytes", "a": "\xed\xa0\x80"}',  # CESU / WTF-8 lone surrogate
    ]
    bad_other = {
        "too-long": ({"id": "too-long", "a": long_text}, "longer than the model's context"),
        "too-long-b": ({"id": "too-long-b", "a": "ok", "b": long_text}, "'b' has"),
        "both": ({"id": "both", "a": "ok", "a_ids": [5]}, "not both"),
        "a-number": ({"id": "a-number", "a": 5}, "must be a string"),
        "target-list": ({"id": "target-list", "a": "ok", "target": ["x"]}, "must be a string"),
        "target-empty": ({"id": "target-empty", "a": "ok", "target": ""}, "no token"),
        "target-ids": ({"id": "target-ids", "a_ids": [5, 6], "target": "x"}, "text prompts"),
    }
    good = ['{"id": "good-pair", "a": "\\ud83d\\ude00 and \\ud83d\\udc07"}',  # surrogate pairs
            {"id": "good", "a": "the cat sat."}]
    lines = bad_json + [r for r, _ in bad_other.values()] + good
    O, _ = run(punctum, tm.path, tmp_path, lines)
    n, nb = len(lines), len(lines) - len(good)
    assert list(O["pairs/line"]) == list(range(1, n + 1))
    assert list(O["pairs/status"]) == [1] * nb + [0] * len(good), O["pairs/message"]
    msgs = O["pairs/message"]
    for i in range(len(bad_json)):
        assert msgs[i].startswith(f"line {i + 1}:") and ("JSON" in msgs[i] or "UTF" in msgs[i]), \
            msgs[i]
    for i, (kind, (_, want)) in enumerate(bad_other.items(), start=len(bad_json)):
        assert msgs[i].startswith(f"line {i + 1}:") and want in msgs[i], (kind, msgs[i])
    for p, text in ((nb, "\U0001F600 and \U0001F407"), (nb + 1, "the cat sat.")):
        s = O.seq_row(p, 0)
        assert O["seqs/text"][s] == text
        ids = tm.tok.encode(text).ids
        assert [int(i) for i in O.tok("id", s)] == ids
        assert O.tok("text", s) == [T.piece(tm.tok, i) for i in ids]
    # bad records have no sequences
    assert list(O["pairs/seq_a"][:nb]) == [-1] * nb


def test_empty_prompt(text_model, punctum, tmp_path):
    """An empty prompt is a bad record ("no tokens") unless the tokenizer adds BOS: then it is
    the 1-token sequence [BOS] (what tokenizers' encode("") gives), a valid prompt."""
    recs = [{"id": "empty", "a": ""},
            {"id": "empty_b", "a": "the cat", "b": ""},
            {"id": "empty_target", "a": "", "target": "the cat"},
            {"id": "good", "a": "the cat"}]
    # gpt2 style: no BOS -> no tokens -> bad records
    tg = text_model("gpt2")
    assert tg.tok.encode("").ids == []
    O, _ = run(punctum, tg.path, tmp_path, recs, name="gpt2")
    assert list(O["pairs/status"]) == [1, 1, 1, 0], O["pairs/message"]
    for m, side in zip(O["pairs/message"][:3], "aba"):
        assert f"'{side}' has no tokens" in m, m
    # llama style: [BOS]
    tl = text_model("llama")
    bos = tl.tok.token_to_id("<s>")
    assert tl.tok.encode("").ids == [bos]
    O, _ = run(punctum, tl.path, tmp_path, recs, name="llama")
    assert list(O["pairs/status"]) == [0, 0, 0, 0], O["pairs/message"]
    for p, side in ((0, 0), (1, 1), (2, 0)):
        s = O.seq_row(p, side)
        assert O["seqs/text"][s] == ""
        assert int(O["seqs/n_tok"][s]) == 1
        assert list(O.tok("id", s)) == [bos]
        assert list(O.tok("byte_start", s)) == [0] and list(O.tok("byte_end", s)) == [0]
        assert O.tok("text", s) == ["<s>"]
        assert np.allclose(O.tok("attn_mass", s), 1.0) and np.allclose(O.tok("attn_last", s), 1)
    s = O.seq_row(2, 0)
    want = T.target_in_context(tl.tok, "", "the cat")[0]
    assert want == tl.tok.encode("the cat").ids[1]
    assert int(O["seqs/target_id"][s]) == want
    np.testing.assert_allclose(O["seqs/target_logprob"][s], tl.logp([bos])[want], rtol=1e-4,
                               atol=1e-5)


# ---------------------------------------------------------------------------------------
# --positions punct
# ---------------------------------------------------------------------------------------

POS_PROMPTS = [
    "the cat sat. the dog ran, and",
    "Why?\u3000Really?! Yes:",                  # ends in punctuation (final: not knocked out)
    "He saw a carrot,\nHis hunger",
    "no punct here",
    "日本語。\u3000東京",                        # added token "。" + IDEOGRAPHIC SPACE
    "ok\u2028the end!\u00a0",                  # LINE SEPARATOR; "!" + NO-BREAK SPACE at the end
    "café… naïve",
]


def test_positions_punct_knockout_and_lens(text_model, punctum, tmp_path):
    tm = text_model("llama")
    recs = [{"id": f"p{i}", "a": a} for i, a in enumerate(POS_PROMPTS)]
    O, _ = run(punctum, tm.path, tmp_path, recs, "--ablate", "knockout", "--positions",
               "punct", "--stats", "topk,lens")
    assert list(O["pairs/status"]) == [0] * len(recs)
    assert O["ablation/windows"].tolist() == [[0, tm.tiny.n_layers]]
    ko = {}
    for s, pos in zip(O["ablation/knockout/seq"], O["ablation/knockout/pos"]):
        ko.setdefault(int(s), []).append(int(pos))
    lens = {}
    for s, pos in zip(O["lens/seq"], O["lens/pos"]):
        lens.setdefault(int(s), []).append(int(pos))
    n_final_punct = 0
    for p, a in enumerate(POS_PROMPTS):
        s = O.seq_row(p, 0)
        ids = tm.tok.encode(a).ids
        T_ = len(ids)
        punct = [i for i, t in enumerate(ids) if T.is_punct(T.piece(tm.tok, t))]
        n_final_punct += (T_ - 1) in punct
        assert sorted(ko.get(s, [])) == [i for i in punct if i != T_ - 1], (a, punct)
        assert sorted(lens.get(s, [])) == sorted(set(punct) | {T_ - 1}), (a, punct)
    assert n_final_punct >= 2 and not ko.get(O.seq_row(3, 0))


# ---------------------------------------------------------------------------------------
# the real model: SmolLM2-135M-Instruct against transformers
# ---------------------------------------------------------------------------------------

SMOL_PAIRS = [
    {"id": "sign", "a": "Create a sign with a message on it that describes your situation",
     "b": "Create a sign with a message on it that describes your situation."},
    {"id": "question", "a": "What is the capital of France",
     "b": "What is the capital of France?"},
    {"id": "poem", "a": "He saw a carrot and had to grab it,\nHis hunger was like a starving",
     "b": "He saw a carrot and had to grab it.\nHis hunger was like a starving",
     "target": " rabbit"},
]
SMOL_REL, SMOL_FLOOR, SMOL_KL_FLOOR = 1e-4, 1e-6, 2e-6


def smollm2_dir() -> str:
    cache = os.environ.get("PUNCTUM_CACHE", os.path.expanduser("~/.cache/punctum"))
    d = os.path.join(cache, "models", "smollm2-135m-instruct")
    need = ("config.json", "model.safetensors", "tokenizer.json")
    if all(os.path.exists(os.path.join(d, f)) for f in need):
        return d
    try:
        p = subprocess.run([os.path.join(REPO, "scripts", "fetch-model.sh")], capture_output=True,
                           text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"SmolLM2 absent and scripts/fetch-model.sh failed: {e}")
    if p.returncode != 0:
        pytest.skip(f"SmolLM2 absent and scripts/fetch-model.sh failed: {p.stderr[-500:]}")
    d = p.stdout.strip().splitlines()[-1]
    if not all(os.path.exists(os.path.join(d, f)) for f in need):
        pytest.skip(f"scripts/fetch-model.sh printed {d}, which lacks the model files")
    return d


def _close(name, got, want, rel, floor):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    err = np.abs(got - want)
    tol = rel * np.abs(want) + floor
    if not (err <= tol).all():
        i = np.unravel_index(np.argmax(err - tol), err.shape)
        pytest.fail(f"{name}: at {i} engine {got[i]!r} vs transformers {want[i]!r} "
                    f"(|d| = {err[i]:.3g} > {tol[i]:.3g})", pytrace=False)


def test_smollm2_against_transformers(punctum, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    d = smollm2_dir()
    K = 10
    O, _ = run(punctum, d, tmp_path, SMOL_PAIRS, "--stats", "mass,last,topk", "--topk", K)
    assert list(O["pairs/status"]) == [0] * len(SMOL_PAIRS), O["pairs/message"]
    hf_tok = AutoTokenizer.from_pretrained(d)
    tok = T.load_tokenizer(d)
    model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    for p, rec in enumerate(SMOL_PAIRS):
        logp = []
        for side in (0, 1):
            text = side_text(rec, side)
            s = O.seq_row(p, side)
            where = f"{rec['id']}/{'ab'[side]}"
            ids = [int(i) for i in O.tok("id", s)]
            assert ids == hf_tok(text)["input_ids"] == tok.encode(text).ids, where
            assert O.tok("text", s) == [T.piece(tok, i) for i in ids], where
            assert [int(x) for x in O.tok("is_punct", s)] == \
                [int(T.is_punct(T.piece(tok, i))) for i in ids], where
            with torch.no_grad():
                out = model(input_ids=torch.tensor([ids]), output_attentions=True,
                            use_cache=False)
            lp = torch.log_softmax(out.logits[0, -1].double(), -1).numpy()
            logp.append(lp)
            A = torch.stack([a[0] for a in out.attentions]).double().numpy()  # [L, H, T, T]
            _close(f"{where} attn_mass", O.tok("attn_mass", s),
                   A.sum(axis=2).transpose(2, 0, 1), SMOL_REL, SMOL_FLOOR)
            _close(f"{where} attn_last", O.tok("attn_last", s),
                   A[:, :, -1, :].transpose(2, 0, 1), SMOL_REL, SMOL_FLOOR)
            _close(f"{where} entropy", O["seqs/entropy"][s], -np.sum(np.exp(lp) * lp),
                   SMOL_REL, SMOL_FLOOR)
            top_id = O["seqs/topk_id"][s]
            _close(f"{where} topk_logprob", O["seqs/topk_logprob"][s], lp[top_id], SMOL_REL,
                   SMOL_FLOOR)
            _close(f"{where} topk (sorted values)", O["seqs/topk_logprob"][s],
                   np.sort(lp)[::-1][:K], SMOL_REL, SMOL_FLOOR)
            assert int(top_id[0]) == int(np.argmax(lp)), where
            if "target" in rec:
                want = T.target_in_context(tok, text, rec["target"])[0]
                assert int(O["seqs/target_id"][s]) == want, where
                _close(f"{where} target_logprob", O["seqs/target_logprob"][s], lp[want],
                       SMOL_REL, SMOL_FLOOR)
        kl = float(np.sum(np.exp(logp[0]) * (logp[0] - logp[1])))
        _close(f"{rec['id']} kl_ab", O["pairs/kl_ab"][p], kl, SMOL_REL, SMOL_KL_FLOOR)
    # the poem's target: " rabbit" is one token, and a likely one
    s = O.seq_row(2, 0)
    assert tok.decode([int(O["seqs/target_id"][s])]) == " rabbit"
