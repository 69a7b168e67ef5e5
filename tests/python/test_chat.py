"""--chat (SPEC §2, §4, §5): chat templates rendered exactly as transformers'
apply_chat_template(..., add_generation_prompt=True, tokenize=False), tokenized as
tokenizer(rendered, add_special_tokens=False), with /tokens/role from the prompt's own bytes.

The reference is transformers itself (AutoTokenizer over a directory holding the fixture's
tokenizer_config.json), on the published chat templates in tests/data/chat_templates/ (see its
README for their provenance), and jinja2 (transformers' compiled sandboxed environment) for
the interpreter's semantics on small templates.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

transformers = pytest.importorskip("transformers")
h5py = pytest.importorskip("h5py")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from conftest import punctum_bin  # noqa: E402
import test_tokenizer as tt  # noqa: E402  (tokenizer builders)
import tiny_models  # noqa: E402

FIXTURES = HERE.parent / "data" / "chat_templates"
SMOL_DIR = Path(os.environ.get("PUNCTUM_CACHE", Path.home() / ".cache" / "punctum")) / "models" / \
    "smollm2-135m-instruct"

BYTE, META = "byte", "meta"
FAMILIES = {
    "smollm2": (BYTE, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]),
    "llama3": (BYTE, ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                      "<|end_header_id|>", "<|eot_id|>", "<|eom_id|>", "<|python_tag|>"]),
    "mistral": (META, ["[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]",
                       "[TOOL_CALLS]", "[TOOL_RESULTS]", "[/TOOL_RESULTS]"]),
    "qwen2.5": (BYTE, ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<tool_call>", "</tool_call>"]),
    "qwen3": (BYTE, ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]),
    "gemma2": (META, ["<bos>", "<eos>", "<pad>", "<start_of_turn>", "<end_of_turn>"]),
    "gemma3": (META, ["<bos>", "<eos>", "<pad>", "<start_of_turn>", "<end_of_turn>",
                      "<start_of_image>"]),
    "olmo2": (BYTE, ["<|endoftext|>", "<|pad|>"]),
    "phi3": (META, ["<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]),
    "smollm3": (BYTE, ["<|im_start|>", "<|im_end|>", "<think>", "</think>"]),
}

PROMPTS = [
    "Create a sign with a message on it that describes your situation",
    "Create a sign with a message on it that describes your situation.",
    "  padded on both sides \n",
    "Unicode: café, naïve, 中文字符, emoji 🎉🦀 and ß",
    "Looks like template syntax: {{ messages }} {% if x %}y{% endif %} {# c #} {{- '-' -}}",
    "line one\nline two\r\nthree\ttabbed",
    "Say <|im_end|> and [INST] literally",
]
SYSTEMS = [None, "You are a helpful assistant."]


def run(args, input_text=None):
    return subprocess.run([punctum_bin()] + args, input=input_text, capture_output=True, text=True,
                          encoding="utf-8")


@pytest.fixture(scope="session")
def base_tokenizers():
    return {BYTE: tt.build_qwen2(), META: tt.build_mistral("mistral")}


@pytest.fixture(scope="session")
def family_dir(tmp_path_factory, base_tokenizers):
    """A directory with the family's fixture (template, special tokens) and a tokenizer.json
    whose added tokens include the family's special tokens."""
    cache = {}

    def get(name):
        if name not in cache:
            kind, special = FAMILIES[name]
            d = tmp_path_factory.mktemp("chat-" + name)
            for f in (FIXTURES / name).iterdir():
                shutil.copy(f, d / f.name)
            tok = tt.Tokenizer.from_str(base_tokenizers[kind].to_str())
            tok.add_special_tokens(special)
            tok.save(str(d / "tokenizer.json"))
            cfg = json.loads((d / "tokenizer_config.json").read_text(encoding="utf-8"))
            cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
            (d / "tokenizer_config.json").write_text(json.dumps(cfg, ensure_ascii=False), encoding="utf-8")
            cache[name] = (d, transformers.AutoTokenizer.from_pretrained(str(d)))
        return cache[name]

    return get


def hf_render(hf, system, prompt):
    msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    return hf.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)


def prompt_bytes(rendered, prompt):
    """[lo, hi) of the prompt's own text in the rendered conversation (templates may trim it)."""
    for cand in (prompt, prompt.strip()):
        i = rendered.rfind(cand)
        if cand and i >= 0:
            lo = len(rendered[:i].encode("utf-8"))
            return lo, lo + len(cand.encode("utf-8"))
    raise AssertionError(f"prompt {prompt!r} not found in {rendered!r}")


def check_rendering(d, hf, system, prompts):
    """punctum tokenize --chat vs transformers: text, ids, byte spans, roles."""
    args = ["tokenize", "--model", str(d), "--chat", "--json", "--jsonl", "-"]
    if system:
        args[4:4] = ["--system", system]
    p = run(args, "".join(json.dumps(t) + "\n" for t in prompts))
    assert p.returncode == 0, p.stderr
    outs = [json.loads(x) for x in p.stdout.splitlines()]
    assert len(outs) == len(prompts)
    for prompt, o in zip(prompts, outs):
        want = hf_render(hf, system, prompt)
        assert o["text"] == want, f"prompt {prompt!r}"
        enc = hf(want, add_special_tokens=False, return_offsets_mapping=True)
        assert o["ids"] == enc["input_ids"], f"prompt {prompt!r}"
        spans = tt.byte_offsets(want, enc["offset_mapping"])
        assert list(zip(o["byte_start"], o["byte_end"])) == spans, f"prompt {prompt!r}"
        lo, hi = prompt_bytes(want, prompt)
        roles = [int(s < hi and e > lo and e > s) for s, e in spans]
        assert o["role"] == roles, f"prompt {prompt!r}"
        assert any(roles), f"prompt {prompt!r}: no token of the prompt"


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_family_matches_transformers(name, family_dir):
    d, hf = family_dir(name)
    for system in SYSTEMS:
        try:
            hf_render(hf, system, PROMPTS[0])
        except Exception as exc:  # the template refuses (Gemma 2 has no system role)
            p = run(["tokenize", "--model", str(d), "--chat", "--system", system, PROMPTS[0]])
            assert p.returncode == 1 and str(exc) in p.stderr, p.stderr
            assert "tokenizer_config.json[chat_template]:1:" in p.stderr
            continue
        check_rendering(d, hf, system, PROMPTS)


def test_smollm2_converted_model(tmp_path):
    """The bundled model's own template (kept from its GGUF by scripts/fetch-model.sh)."""
    if not (SMOL_DIR / "chat_template.jinja").exists():
        pytest.skip(f"SmolLM2 model not converted with its chat template: run scripts/fetch-model.sh ({SMOL_DIR})")
    hf = transformers.AutoTokenizer.from_pretrained(str(SMOL_DIR))
    assert (SMOL_DIR / "chat_template.jinja").read_text() == (FIXTURES / "smollm2" / "chat_template.jinja").read_text()
    for system in SYSTEMS:
        check_rendering(SMOL_DIR, hf, system, PROMPTS[:4])


# ---- interpreter semantics against jinja2 (transformers' environment) -------------------------

SNIPPETS = [
    # whitespace control: trim_blocks, lstrip_blocks, "-", "+", comments, raw
    "a\n  {% if true %}\n    b\n  {% endif %}\nc",
    "a  {%- if true -%}  b  {%- endif -%}  c",
    "x\n    {%+ if true %}y{% endif %}\n{# comment #}\nz  {#- c -#}  w",
    "{% raw %}{{ not rendered }}{% endraw %}\n{{ 'after' }}",
    "{{ 'a' }}\n{{ 'b' }}\n\n",
    "line\r\nwindows\rmac {{ 1 }}\r\n",
    # literals and operators
    "{{ 1 + 2 * 3 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 2 ** 10 }} {{ 7 / 2 }}",
    "{{ 1.5 }} {{ 0.1 + 0.2 }} {{ 1e20 }} {{ 1.0 }} {{ 3 / 3 }} {{ 1e-5 }} {{ 123456789.125 }}",
    "{{ 'a' ~ 1 ~ none ~ true }} {{ 'x' * 3 }} {{ [1, 2] + [3] }} {{ (1, 'b') }} {{ (1,) }}",
    "{{ {'k': 'v', 'n': [1, none, true, 1.5]} }} {{ ['it\\'s', \"q\\\"d\", 'tab\\t', 'é\\n'] }}",
    "{{ '\\x41\\u00e9\\U0001F600\\101\\q' }} {{ 'adjacent' 'strings' }}",
    "{{ true and 'x' }} {{ false or 'y' }} {{ not none }} {{ 1 if false }}|{{ 'a' if 0 else 'b' }}",
    "{{ 1 < 2 < 3 }} {{ 'a' < 'b' }} {{ 1 == 1.0 }} {{ true == 1 }} {{ [1] == [1] }} {{ 'ab' in 'cabd' }} {{ 3 not in [1, 2] }}",
    # strings: indexing, slicing, methods
    "{% set s = '  Héllo, wörld  ' %}[{{ s.strip() }}][{{ s.lstrip() }}][{{ s.rstrip() }}][{{ s|trim }}]",
    "{% set s = 'héllo wörld' %}{{ s[0] }}{{ s[-1] }}{{ s[1:4] }}{{ s[::-1] }}{{ s[::2] }}{{ s[-3:] }}{{ s[:100] }}",
    "{{ 'a,b,,c'.split(',') }} {{ ' a  b\\tc\\n'.split() }} {{ 'a b c'.split(' ', 1) }} {{ 'a.b.c'.rsplit('.', 1) }}",
    "{{ 'abc'.startswith('ab') }} {{ 'abc'.endswith(('x', 'c')) }} {{ 'xxhixx'.strip('x') }} {{ 'aXbX'.replace('X', '-') }}",
    "{{ 'Straße İ'.upper() if false else 'MiXeD'.lower() }} {{ 'abc'.upper() }} {{ 'hello'.find('l') }} {{ 'hello'.count('l') }}",
    "{{ '-'.join(['a', 'b']) }} {{ 'a\\n\\nb'.split('\\n') }} {{ '</think>x'.split('</think>')[-1].lstrip('\\n') }}",
    # filters
    "{{ [3, 1, 2]|length }} {{ 'héllo'|length }} {{ {'a': 1}|length }} {{ undefined_var|length }}",
    "{{ ['a', 'b']|join(', ') }} {{ [1, 2]|join }} {{ 'abc'|list }} {{ [1, 2]|first }} {{ [1, 2]|last }} {{ 'ab'|reverse }}",
    "{{ none|default('d') }} {{ undefined_var|default('d') }} {{ ''|default('e', true) }} {{ 'x'|d('y') }}",
    "{{ {'a': 1, 'b': [1, 'é']}|tojson }} {{ {'a': 1}|tojson(indent=2) }} {{ 'x\"\\n'|tojson }} {{ [1, 2.5, none, true]|tojson }}",
    "{{ {'b': 1, 'a': {'c': []}}|tojson(indent=4) }}",
    "{{ messages|selectattr('role', 'equalto', 'user')|list|length }} {{ messages|map(attribute='role')|join(',') }}",
    "{{ messages|rejectattr('role', 'eq', 'user')|list }} {{ [0, 1, 2]|select|list }} {{ [1, 2, 3]|reject('odd')|list }}",
    "{{ {'x': 1, 'y': 2}|items|list }} {{ 'a-b'|replace('-', '+') }} {{ 'Up'|upper }} {{ 'Up'|lower }} {{ -3|abs }} {{ '42'|int + 1 }} {{ '2.5'|float }}",
    "{{ 42|string ~ 'x' }} {{ [1]|string }} {{ 'x'|safe }} {{ [1, 2, 3]|count }}",
    # tests
    "{{ none is none }} {{ 1 is number }} {{ 'x' is string }} {{ x is defined }} {{ x is undefined }} {{ {} is mapping }}",
    "{{ [1] is iterable }} {{ 3 is odd }} {{ 4 is even }} {{ true is true }} {{ 1 is true }} {{ false is false }} {{ 6 is divisibleby 3 }}",
    "{{ 1 is integer }} {{ 1.0 is float }} {{ 'a' is in 'abc' }} {{ 'a' is eq 'a' }} {{ 2 is gt 1 }} {{ true is boolean }} {{ 'AB' is upper }}",
    # statements: for / loop / else / break / continue / filter, set scoping, namespace, macro
    "{% for m in messages %}{{ loop.index }}/{{ loop.index0 }}/{{ loop.revindex }}/{{ loop.length }}/{{ loop.first }}/{{ loop.last }}|{% endfor %}",
    "{% for x in [1, 2, 3, 4] if x is even %}{{ loop.index }}:{{ x }}{{ loop.cycle('a', 'b') }} {% endfor %}",
    "{% for x in [] %}no{% else %}empty{% endfor %} {% for x in [1, 2, 3] %}{% if x == 2 %}{% continue %}{% endif %}{{ x }}{% if x == 3 %}{% break %}{% endif %}{% endfor %}",
    "{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }}{% if not loop.last %},{% endif %}{% endfor %}",
    "{% for x in [1, 2] %}{{ loop.previtem }}>{{ x }}<{{ loop.nextitem }} {% endfor %}",
    "{% set x = 1 %}{% for i in [1] %}{% set x = 2 %}{{ x }}{% endfor %}{{ x }}{% if true %}{% set x = 3 %}{% endif %}{{ x }}",
    "{% set ns = namespace(n=0, s='') %}{% for i in range(5) %}{% set ns.n = ns.n + i %}{% set ns.s = ns.s ~ i %}{% endfor %}{{ ns.n }} {{ ns.s }}",
    "{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('a') }} {{ greet('b', punct='?') }} {{ greet(name='c') }}",
    "{% set block %}captured {{ 1 + 1 }}{% endset %}[{{ block }}] {% set a, b = 1, 'two' %}{{ a }}{{ b }}",
    "{% if messages[0]['role'] == 'system' %}S{% elif messages[0].role == 'user' %}U{% else %}?{% endif %}",
    "{{ messages[0].get('content') }} {{ messages[0].get('nope', 'dflt') }} {{ messages[0].keys()|list }} {{ messages[-1]['content'][:5] }}",
    "{{ bos_token }}|{{ eos_token }}|{{ add_generation_prompt }}|{{ tools }}|{{ documents }}|{{ tools is none }}",
    "{% generation %}gen {{ 1 }}{% endgeneration %} {{ dict(a=1) }} {{ range(3)|list }} {{ range(1, 7, 2)|list }}",
    "{{ messages }}",
]


@pytest.fixture(scope="session")
def snippet_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("chat-snippets")
    tiny_models._write_tokenizer(str(d), 400)
    return d


def jinja_render(src, messages, **variables):
    from transformers.utils.chat_template_utils import _compile_jinja_template
    return _compile_jinja_template(src).render(messages=messages, tools=None, documents=None,
                                               add_generation_prompt=True, **variables)


@pytest.mark.parametrize("idx", range(len(SNIPPETS)))
def test_interpreter_matches_jinja2(idx, snippet_dir):
    src = SNIPPETS[idx]
    (snippet_dir / "chat_template.jinja").write_text(src, encoding="utf-8", newline="")
    (snippet_dir / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "</s>"}))
    for system in SYSTEMS:
        msgs = ([{"role": "system", "content": system}] if system else []) + \
            [{"role": "user", "content": "Héllo {{ there }}"}]
        # transformers reads the file in text mode (universal newlines), as jinja2 then sees it
        want = jinja_render(src.replace("\r\n", "\n").replace("\r", "\n"), msgs, bos_token="<s>", eos_token="</s>")
        args = ["tokenize", "--model", str(snippet_dir), "--chat", "--json", "Héllo {{ there }}"]
        if system:
            args[4:4] = ["--system", system]
        p = run(args)
        assert p.returncode == 0, p.stderr
        assert json.loads(p.stdout)["text"] == want, f"template {src!r}"


# ---- refusals ---------------------------------------------------------------------------------

@pytest.mark.parametrize("src,line,construct", [
    ("ok\n{{ messages|sort }}", 2, "unsupported filter 'sort'"),
    ("{% include 'other.jinja' %}", 1, "unsupported tag 'include'"),
    ("a\nb\n{% for m in messages recursive %}{% endfor %}", 3, "unsupported: recursive for loops"),
    ("{{ 'x'.format(1) }}", 1, "unsupported method 'format'"),
    ("{{ messages is sameas_nothing }}", 1, "unsupported test 'sameas_nothing'"),
    ("{{ '%s' % 'x' }}", 1, "unsupported: '%' string formatting"),
    ("{% call m() %}{% endcall %}", 1, "unsupported tag 'call'"),
])
def test_unsupported_construct_is_named(src, line, construct, snippet_dir):
    (snippet_dir / "chat_template.jinja").write_text(src, encoding="utf-8")
    p = run(["tokenize", "--model", str(snippet_dir), "--chat", "hello"])
    assert p.returncode == 2, p.stderr
    assert f"chat_template.jinja:{line}: {construct}" in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_template_syntax_error_and_limits(snippet_dir):
    for src, what in [("{% if x %}", "expected 'endif'"), ("{{ 1 +* 2 }}", "unexpected"),
                      ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "steps"),
                      ("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", "nests deeper"),
                      ("{{ 'x' * 100000000 }}", "repetition too large")]:
        (snippet_dir / "chat_template.jinja").write_text(src, encoding="utf-8")
        p = run(["tokenize", "--model", str(snippet_dir), "--chat", "hello"])
        assert p.returncode == 2, (src, p.stderr)
        assert what in p.stderr and "chat_template.jinja" in p.stderr, (src, p.stderr)


def test_named_templates_take_default(snippet_dir, tmp_path):
    d = tmp_path / "named"
    shutil.copytree(snippet_dir, d)
    (d / "chat_template.jinja").unlink()
    cfg = {"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D{{ messages[0].content }}"}]}
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    p = run(["tokenize", "--model", str(d), "--chat", "--json", "x"])
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["text"] == "Dx"
    cfg["chat_template"] = cfg["chat_template"][:1]
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    p = run(["tokenize", "--model", str(d), "--chat", "x"])
    assert p.returncode == 2 and "without a \"default\"" in p.stderr, p.stderr


def test_no_template_is_exit_2(snippet_dir, tmp_path):
    d = tmp_path / "plain"
    d.mkdir()
    shutil.copy(snippet_dir / "tokenizer.json", d / "tokenizer.json")
    p = run(["tokenize", "--model", str(d), "--chat", "x"])
    assert p.returncode == 2 and "no chat template" in p.stderr, p.stderr


# ---- the sweep ------------------------------------------------------------------------------------

CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content']"
          " + '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


@pytest.fixture(scope="session")
def chat_model(tiny_model, tmp_path_factory):
    """The tiny gpt2 model with ChatML special tokens (two placeholder ids renamed) and a template."""
    m = tiny_model("gpt2")
    d = tmp_path_factory.mktemp("chat-model") / "gpt2-chat"
    shutil.copytree(m.path, d)
    j = json.loads((d / "tokenizer.json").read_text())
    vocab = j["model"]["vocab"]
    added = []
    spare = sorted(v for k, v in vocab.items() if k.startswith("<unused"))[-2:]
    for tok, ph in zip(("<|im_start|>", "<|im_end|>"), spare):
        del vocab[f"<unused{ph}>"]
        vocab[tok] = ph
        added.append({"id": ph, "content": tok, "single_word": False, "lstrip": False, "rstrip": False,
                      "normalized": False, "special": True})
    j["added_tokens"] = added
    (d / "tokenizer.json").write_text(json.dumps(j))
    (d / "tokenizer_config.json").write_text(json.dumps({
        "chat_template": CHATML, "eos_token": "<|im_end|>", "tokenizer_class": "PreTrainedTokenizerFast"}))
    return d


def entropy_ref(model_dir, ids):
    import torch
    model = tiny_models.load_hf(str(model_dir)).double()
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0, -1].double(), -1)
    return float(-(logp.exp() * logp).sum())


def test_run_chat(chat_model, tmp_path):
    recs = [{"id": "sign", "a": "Create a sign", "system": "Be brief."},
            {"id": "ids", "a_ids": [1, 2, 3]},
            {"id": "syntax", "a": "x {{ y }} {% z %}", "target": " the"}]
    pairs = tmp_path / "p.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in recs))
    out = tmp_path / "o.h5"
    p = run(["run", "--model", str(chat_model), "--pairs", str(pairs), "--out", str(out), "--chat",
             "--derive-b", "append:.", "--backend", "cpu", "--threads", "2", "--progress", "never"])
    assert p.returncode == 0, p.stderr
    hf = transformers.AutoTokenizer.from_pretrained(str(chat_model))
    with h5py.File(out) as f:
        assert list(f["pairs/status"][:]) == [0, 1, 0]
        assert "given as ids is skipped" in f["pairs/message"][1].decode()
        texts = [t.decode() for t in f["seqs/text"][:]]
        want_sides = [("Be brief.", "Create a sign"), ("Be brief.", "Create a sign."),
                      (None, "x {{ y }} {% z %}"), (None, "x {{ y }} {% z %}.")]
        assert len(texts) == len(want_sides)
        for s, (system, prompt) in enumerate(want_sides):
            want = hf_render(hf, system, prompt)
            assert texts[s] == want
            t0, n = int(f["seqs/tok_start"][s]), int(f["seqs/n_tok"][s])
            enc = hf(want, add_special_tokens=False, return_offsets_mapping=True)
            assert list(f["tokens/id"][t0:t0 + n]) == enc["input_ids"]
            spans = tt.byte_offsets(want, enc["offset_mapping"])
            assert list(zip(f["tokens/byte_start"][t0:t0 + n], f["tokens/byte_end"][t0:t0 + n])) == spans
            lo, hi = prompt_bytes(want, prompt)
            assert list(f["tokens/role"][t0:t0 + n]) == [int(a < hi and b > lo) for a, b in spans]
            got = float(f["seqs/entropy"][s])
            assert np.isfinite(got) and abs(got - entropy_ref(chat_model, enc["input_ids"])) < 1e-4
        # the target is tokenized in context after the rendered prompt, without added specials
        tgt = hf(texts[2] + " the", add_special_tokens=False)["input_ids"][len(hf(texts[2], add_special_tokens=False)["input_ids"])]
        assert int(f["seqs/target_id"][2]) == tgt
        assert f.attrs["opt_chat"] != "none"
        role0 = list(f["tokens/role"][int(f["seqs/tok_start"][0]):][:int(f["seqs/n_tok"][0])])
    import punctum  # the analysis package shows the roles too
    assert list(punctum.open(str(out)).tokens("sign", "a")["role"]) == role0


def test_run_chat_without_template_writes_nothing(tiny_model, tmp_path):
    m = tiny_model("gpt2")
    pairs = tmp_path / "p.jsonl"
    pairs.write_text('{"a": "hello"}\n')
    out = tmp_path / "o.h5"
    p = run(["run", "--model", str(m.path), "--pairs", str(pairs), "--out", str(out), "--chat",
             "--backend", "cpu", "--progress", "never"])
    assert p.returncode == 2, p.stderr
    assert "no chat template" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert not out.exists() and not Path(str(out) + ".parts").exists()


def test_role_without_chat(tiny_model, tmp_path):
    m = tiny_model("gpt2")
    pairs = tmp_path / "p.jsonl"
    pairs.write_text('{"a": "the cat sat", "b": "the cat sat."}\n{"a_ids": [5, 6, 7]}\n')
    out = tmp_path / "o.h5"
    p = run(["run", "--model", str(m.path), "--pairs", str(pairs), "--out", str(out), "--backend", "cpu",
             "--progress", "never"])
    assert p.returncode == 0, p.stderr
    with h5py.File(out) as f:
        role = f["tokens/role"][:]
        assert role.dtype == np.int8 and len(role) == len(f["tokens/id"]) and (role == 1).all()
        assert f.attrs["opt_chat"] == "none"
