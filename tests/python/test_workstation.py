"""Workstation-scale runs (SPEC §1 weights, §4 start-up line / progress / --model org/name,
§7 out of memory):

- a BF16 checkpoint runs in about its file size of host memory (no float32 copy of the model);
- under the cuda emulation, host memory beyond the mapping and the emulated device memory does
  not grow with the model;
- out of memory (the test-only PUNCTUM_TEST_ALLOC_LIMIT) halves the batch, warns, and gives
  the same file as an unlimited run, on the cpu backend and on the emulated cuda backend; below
  one record it stops with exit 1 and a readable file that --resume completes;
- the cpu backend's GEMMs on the best OpenBLAS kernels the CPU runs (restarting with
  OPENBLAS_CORETYPE where OpenBLAS does not know the CPU's model), the user's own choice kept;
- the start-up line, --backend auto's fallback reason, --dtype bf16 without a GPU, progress
  lines when stderr is not a terminal, a Hugging Face model id from a local cache, the
  `patterns` size guard, warnings for options that do nothing.

Memory is measured as the child's peak RSS (ru_maxrss, in a fresh wrapper process).
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from conftest import REPO, punctum_bin  # noqa: E402

STARTUP = re.compile(
    r"^punctum: (?P<backend>cpu|cuda) backend \((?P<note>.*)\), (?P<dtype>f32|bf16|f16) compute "
    r"\(weights (?P<wdtype>f32|bf16|f16)(?P<dnote>[^)]*)\), model (?P<model>.*) \((?P<type>\w+), "
    r"(?P<layers>\d+) layers\), batch (?P<batch>\d+) tokens \((?P<why>[^)]*)\)(?P<rest>.*)$")
RTOL = 1e-5  # forward batches of other sizes: float32 GEMM rounding (test_engine's PACK_RTOL)
SEED = 20251206


# peak RSS means nothing under AddressSanitizer (shadow memory, quarantine)
SANITIZED = os.environ.get("PT_SANITIZE") == "1" or "ASAN_OPTIONS" in os.environ
sanitized = pytest.mark.skipif(SANITIZED, reason="memory bounds are not measurable under ASan")


def emu_bin() -> str | None:
    b = os.environ.get("PUNCTUM_EMU_BIN") or os.path.join(REPO, "build", "punctum-emu")
    return b if os.access(b, os.X_OK) else None


def env(**extra) -> dict:
    e = dict(os.environ)
    e.setdefault("OMP_NUM_THREADS", "2")
    e.setdefault("OPENBLAS_NUM_THREADS", "1")
    for k, v in extra.items():
        if v is None:
            e.pop(k, None)
        else:
            e[k] = str(v)
    return e


def run(args, expect=0, binary=None, timeout=600, **envkw):
    argv = [binary or punctum_bin()] + [str(a) for a in args]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env(**envkw))
    if expect is not None:
        ok = p.returncode in expect if isinstance(expect, tuple) else p.returncode == expect
        assert ok, f"exit {p.returncode} (expected {expect}): {' '.join(argv)}\n{p.stderr[-3000:]}"
    return p


def sweep(model, pairs, out, *extra, **kw):
    return run(["run", "--model", model, "--pairs", pairs, "--out", out, "--force", *extra], **kw)


def peak_rss(argv, **envkw) -> tuple[int, str, int]:
    """(exit code, stderr, peak RSS in bytes) of argv, measured in a fresh wrapper process so
    that ru_maxrss belongs to this one child."""
    wrapper = ("import json, resource, subprocess, sys\n"
               "p = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)\n"
               "r = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
               "print(json.dumps([p.returncode, p.stderr.decode(errors='replace'), r]))\n")
    p = subprocess.run([sys.executable, "-c", wrapper] + [str(a) for a in argv], capture_output=True,
                       text=True, timeout=600, env=env(**envkw))
    rc, err, kb = json.loads(p.stdout.strip().splitlines()[-1])
    return rc, err, kb * 1024


def startup(stderr: str) -> re.Match:
    first = stderr.splitlines()[0] if stderr.strip() else ""
    m = STARTUP.match(first)
    assert m, f"the first line of stderr is not the start-up line:\n{stderr}"
    return m


def datasets(path) -> dict:
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda n, o: out.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None)
    return out


def assert_same_content(got: str, want: str, rtol: float = RTOL):
    a, b = datasets(got), datasets(want)
    assert sorted(a) == sorted(b)
    for k in sorted(a):
        x, y = a[k], b[k]
        assert x.shape == y.shape and x.dtype == y.dtype, k
        if x.dtype.kind == "f":
            assert np.allclose(x, y, rtol=rtol, atol=rtol, equal_nan=True), k
        else:
            assert np.array_equal(x, y), k
    with h5py.File(got) as f, h5py.File(want) as g:
        assert int(f.attrs["committed_pairs"]) == int(g.attrs["committed_pairs"])


def write_records(path, recs) -> str:
    with open(path, "w") as f:
        for r in recs:
            f.write(json.dumps(r) + "\n")
    return str(path)


def id_records(vocab: int, n: int, lo: int = 5, hi: int = 12, seed: int = SEED) -> list[dict]:
    """Records of token ids: b = a + one token (prefix sharing) or a token swapped (equal
    lengths: residual patching applies), some with targets."""
    r = random.Random(seed)
    out = []
    for i in range(n):
        a = [r.randrange(vocab) for _ in range(r.randint(lo, hi))]
        rec = {"id": f"r{i}", "a_ids": a}
        if i % 3 == 0:
            rec["b_ids"] = a + [r.randrange(vocab)]
        elif i % 3 == 1:
            rec["b_ids"] = a[:-1] + [(a[-1] + 1) % vocab]
        if i % 4 == 0:
            rec["target_id"] = r.randrange(vocab)
        out.append(rec)
    return out


# ---------------------------------------------------------------------------------------------
# memory: no float32 copy of a BF16 checkpoint (cpu), no host copy at all (cuda emulation)
# ---------------------------------------------------------------------------------------------

def write_llama(path: str, d: int, layers: int, vocab: int, ff: int, dtype: str, seed: int = 0) -> int:
    """A random Llama checkpoint (config.json + model.safetensors) of the given shape; returns
    the file size. Values do not matter here, only bytes and shapes."""
    import torch
    from safetensors.torch import save_file
    os.makedirs(path, exist_ok=True)
    heads, kv = max(1, d // 64), max(1, d // 128)
    cfg = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": d,
           "intermediate_size": ff, "num_hidden_layers": layers, "num_attention_heads": heads,
           "num_key_value_heads": kv, "vocab_size": vocab, "max_position_embeddings": 256,
           "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": False,
           "bos_token_id": 1, "eos_token_id": 2}
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(cfg, f)
    g = torch.Generator().manual_seed(seed)
    dt = {"bf16": torch.bfloat16, "f32": torch.float32}[dtype]

    def mat(*shape):
        return (torch.randn(*shape, generator=g) * 0.02).to(dt)

    hd = d // heads
    t = {"model.embed_tokens.weight": mat(vocab, d), "lm_head.weight": mat(vocab, d),
         "model.norm.weight": torch.ones(d, dtype=dt)}
    for l in range(layers):
        p = f"model.layers.{l}."
        t.update({p + "input_layernorm.weight": torch.ones(d, dtype=dt),
                  p + "post_attention_layernorm.weight": torch.ones(d, dtype=dt),
                  p + "self_attn.q_proj.weight": mat(heads * hd, d),
                  p + "self_attn.k_proj.weight": mat(kv * hd, d),
                  p + "self_attn.v_proj.weight": mat(kv * hd, d),
                  p + "self_attn.o_proj.weight": mat(d, heads * hd),
                  p + "mlp.gate_proj.weight": mat(ff, d), p + "mlp.up_proj.weight": mat(ff, d),
                  p + "mlp.down_proj.weight": mat(d, ff)})
    save_file(t, os.path.join(path, "model.safetensors"))
    return os.path.getsize(os.path.join(path, "model.safetensors"))


@pytest.fixture(scope="module")
def bf16_models(tmp_path_factory):
    """A ~140 MB BF16 checkpoint and a tiny one of the same architecture (the process's own
    memory: libraries, buffers, activations of a few tokens)."""
    root = tmp_path_factory.mktemp("bf16")
    big = str(root / "big")
    small = str(root / "small")
    size_big = write_llama(big, 512, 12, 32000, 1376, "bf16", seed=1)
    size_small = write_llama(small, 64, 1, 512, 128, "bf16", seed=2)
    pairs = write_records(root / "pairs.jsonl", id_records(500, 4, 20, 40))
    return big, size_big, small, size_small, pairs


@sanitized
def test_bf16_checkpoint_peak_rss(bf16_models, tmp_path):
    """SPEC §1/§8: peak RSS of a cpu run on a BF16 checkpoint <= 1.2 x its file size plus
    activations (here: above the same run on a tiny model). A float32 copy of the weights alone
    would add twice the file size."""
    big, size_big, small, _size_small, pairs = bf16_models
    args = ["run", "--pairs", pairs, "--backend", "cpu", "--threads", "2", "--progress", "never",
            "--batch-tokens", "256", "--force"]
    rc, err, rss_big = peak_rss([punctum_bin(), *args, "--model", big, "--out", tmp_path / "b.h5"])
    assert rc == 0, err
    m = startup(err)
    assert m["wdtype"] == "bf16" and m["dtype"] == "f32", err
    rc, err, rss_small = peak_rss([punctum_bin(), *args, "--model", small, "--out", tmp_path / "s.h5"])
    assert rc == 0, err
    # activations of a 256-token batch at d = 512: well under 16 MiB
    allowed = 1.2 * size_big + (16 << 20)
    grown = rss_big - rss_small
    print(f"file {size_big / 2**20:.1f} MiB, peak RSS {rss_big / 2**20:.1f} MiB, "
          f"tiny model {rss_small / 2**20:.1f} MiB: +{grown / 2**20:.1f} MiB (allowed "
          f"{allowed / 2**20:.1f})")
    assert grown <= allowed


@sanitized
def test_cuda_emulation_keeps_no_host_copy(tmp_path):
    """The cuda backend uploads the weights from the mapping through a bounded staging buffer
    and keeps no host copy: under the emulation (device memory is host memory there), peak RSS
    minus the emulated device memory minus the mapped file stays the same for a model 10x
    larger."""
    emu = emu_bin()
    if not emu:
        pytest.skip("no punctum-emu in this build (needs the CUDA headers)")
    pairs = write_records(tmp_path / "p.jsonl", id_records(500, 2, 6, 8))
    host_only = {}
    for name, layers in (("one", 1), ("ten", 10)):
        model = str(tmp_path / name)
        size = write_llama(model, 512, layers, 2048, 1376, "bf16", seed=layers)
        rc, err, rss = peak_rss([emu, "run", "--model", model, "--pairs", pairs, "--out",
                                 tmp_path / f"{name}.h5", "--backend", "cuda", "--dtype", "bf16",
                                 "--batch-tokens", "64", "--progress", "always", "--force"])
        assert rc == 0, err
        dev = re.search(r", cuda [^(]*\((\d+) bytes\)", err)
        assert dev, err
        host_only[name] = (rss - int(dev.group(1)) - size, size, rss)
    (h1, s1, r1), (h10, s10, r10) = host_only["one"], host_only["ten"]
    print(f"host beyond mapping and device: {h1 / 2**20:.1f} MiB (1 layer, file "
          f"{s1 / 2**20:.1f} MiB), {h10 / 2**20:.1f} MiB (10 layers, file {s10 / 2**20:.1f} MiB)")
    assert s10 - s1 > 40 << 20
    assert h10 - h1 < 6 << 20, "host memory grows with the model"


# ---------------------------------------------------------------------------------------------
# out of memory: halve, warn, same content; below one record: exit 1, readable, resumable
# ---------------------------------------------------------------------------------------------

EXPERIMENTS = ["--stats", "mass,last,resid,topk,lens", "--ablate", "knockout", "--positions",
               "all", "--patch", "resid"]


def backends():
    out = [("cpu", None, [])]
    if emu_bin():
        out.append(("cuda-emu", emu_bin(), ["--backend", "cuda", "--dtype", "f32"]))
    return out


@pytest.mark.parametrize("name,binary,opts", backends(), ids=[b[0] for b in backends()])
@pytest.mark.parametrize("extra", [[], EXPERIMENTS], ids=["stats", "experiments"])
def test_out_of_memory_halves_and_gives_the_same_file(tiny_model, tmp_path, name, binary, opts, extra):
    if SANITIZED and name == "cuda-emu" and extra:
        pytest.skip("the emulated experiments take many minutes under ASan (they run in the plain suite)")
    tiny = tiny_model("llama_gqa")
    pairs = write_records(tmp_path / "p.jsonl", id_records(tiny.vocab_size, 40))
    want = str(tmp_path / "want.h5")
    got = str(tmp_path / "got.h5")
    common = [*opts, *extra, "--batch-tokens", "4096", "--progress", "never"]
    p = sweep(tiny.path, pairs, want, *common, binary=binary)
    assert "warning" not in p.stderr
    # 120 kB a buffer: the ~370-row batch needs ~360 kB for the MLP's input alone
    p = sweep(tiny.path, pairs, got, *common, binary=binary, PUNCTUM_TEST_ALLOC_LIMIT=120000)
    warns = [l for l in p.stderr.splitlines() if "warning" in l]
    assert warns and all("out of memory" in w and "retrying with forward batches of" in w
                         for w in warns), p.stderr
    budgets = [int(re.search(r"batches of (\d+) tokens", w).group(1)) for w in warns]
    assert budgets == sorted(budgets, reverse=True) and len(set(budgets)) == len(budgets)
    assert_same_content(got, want)


@pytest.mark.parametrize("name,binary,opts", backends(), ids=[b[0] for b in backends()])
def test_out_of_memory_below_one_record_stops_resumably(tiny_model, tmp_path, name, binary, opts):
    """A record too large for the memory even alone: exit 1 with one line naming the bytes
    and --batch-tokens; the commits before it stay readable; --resume (with memory) gives the
    file of an unlimited run."""
    tiny = tiny_model("llama_gqa")
    recs = id_records(tiny.vocab_size, 30)
    recs[20] = {"id": "long", "a_ids": [7] * 60, "b_ids": [7] * 60 + [9]}
    pairs = write_records(tmp_path / "p.jsonl", recs)
    limit = 40000
    if name == "cuda-emu":  # bf16 weights (40 kB for the largest) fit under a 45 kB limit
        opts, limit = ["--backend", "cuda", "--dtype", "bf16"], 45000
    common = [*opts, "--batch-tokens", "24", "--progress", "never"]
    want = str(tmp_path / "want.h5")
    out = str(tmp_path / "out.h5")
    sweep(tiny.path, pairs, want, *common, binary=binary)
    # the long pair's MLP input (about 75 rows x 768 bytes) does not fit, the short ones' do
    p = sweep(tiny.path, pairs, out, *common, binary=binary, expect=1, PUNCTUM_TEST_ALLOC_LIMIT=limit)
    lines = p.stderr.strip().splitlines()
    startup(p.stderr)
    err = [l for l in lines[1:] if "warning" not in l and not l.startswith("==")]  # (ASan's notes)
    assert len(err) == 1, p.stderr
    assert "out of memory" in err[0] and "line 21" in err[0] and "--batch-tokens 24" in err[0]
    assert re.search(r"\d+ (B|KiB|MiB) asked for", err[0]) and "--resume" in err[0], err[0]
    with h5py.File(out, "r") as f:
        n = int(f.attrs["committed_pairs"])
        assert 0 < n <= 20 and int(f.attrs["run_complete"]) == 0
        assert f["pairs/id"][:n].astype(str).tolist() == [r["id"] for r in recs[:n]]
    run(["run", "--model", tiny.path, "--pairs", pairs, "--out", out, "--resume", *common],
        binary=binary)
    assert_same_content(out, want)


# ---------------------------------------------------------------------------------------------
# the start-up line, progress, --model org/name, warnings, the patterns guard
# ---------------------------------------------------------------------------------------------

def test_startup_line_states_backend_dtype_model_and_budget(tiny_model, tmp_path):
    tiny = tiny_model("gpt2")
    pairs = write_records(tmp_path / "p.jsonl", [{"a": "The cat sat.", "b": "The cat sat"}])
    p = sweep(tiny.path, pairs, tmp_path / "o.h5", "--backend", "cpu", "--threads", "2",
              "--progress", "never")
    m = startup(p.stderr)
    assert m["backend"] == "cpu" and m["note"].startswith("2 threads, ")
    assert m["dtype"] == "f32" and m["wdtype"] == "f32" and m["dnote"] == ""
    assert m["model"] == tiny.path and m["type"] == "gpt2" and m["layers"] == "3"
    # sized to memory: a multiple of 256 in the cpu backend's range, saying from what
    assert 256 <= int(m["batch"]) <= 8192 and int(m["batch"]) % 256 == 0
    assert re.fullmatch(r"sized to [\d.]+ [KMGT]?i?B available", m["why"]), m["why"]
    assert len(p.stderr.strip().splitlines()) == 1  # --progress never: nothing else
    with h5py.File(tmp_path / "o.h5") as f:
        assert int(f.attrs["opt_batch_tokens"]) == int(m["batch"])
    p = sweep(tiny.path, pairs, tmp_path / "o.h5", "--backend", "cpu", "--batch-tokens", "100",
              "--progress", "never")
    m = startup(p.stderr)
    assert m["batch"] == "100" and m["why"] == "--batch-tokens"


def cpu_flags() -> set:
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


AVX512_KERNELS = {"SkylakeX", "Cooperlake", "SapphireRapids"}
AVX2_KERNELS = AVX512_KERNELS | {"Haswell", "Zen", "Excavator"}


def blas_kernels(stderr: str) -> str:
    m = re.search(r", OpenBLAS (\S+) kernels$", startup(stderr)["note"])
    assert m, stderr
    return m.group(1)


@pytest.mark.skipif(not os.path.exists("/proc/cpuinfo"), reason="needs /proc/cpuinfo")
def test_gemm_kernels_are_the_best_the_cpu_runs(tiny_model, tmp_path):
    """OpenBLAS picks its kernels by CPU model when it loads and falls back to SSE3 ("Prescott")
    on models newer than itself (Emerald Rapids under Debian 12's 0.3.21: 4x slower GEMMs).
    punctum restarts itself with OPENBLAS_CORETYPE naming the best set the CPU's instruction sets
    allow, leaves the user's own OPENBLAS_CORETYPE alone, and the numbers agree either way."""
    tiny = tiny_model("llama_gqa")
    pairs = write_records(tmp_path / "p.jsonl", id_records(tiny.vocab_size, 6))
    p = sweep(tiny.path, pairs, tmp_path / "best.h5", "--backend", "cpu", "--progress", "never",
              "--stats", "mass,last,resid,topk", OPENBLAS_CORETYPE=None)
    kernels, flags = blas_kernels(p.stderr), cpu_flags()
    if {"avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd"} <= flags:
        assert kernels in AVX512_KERNELS, kernels
    elif {"avx2", "fma"} <= flags:
        assert kernels in AVX2_KERNELS, kernels
    p = sweep(tiny.path, pairs, tmp_path / "sse3.h5", "--backend", "cpu", "--progress", "never",
              "--stats", "mass,last,resid,topk", OPENBLAS_CORETYPE="Prescott")
    assert blas_kernels(p.stderr) == "Prescott"
    with h5py.File(tmp_path / "best.h5") as a, h5py.File(tmp_path / "sse3.h5") as b:
        assert (a["pairs/status"][()] == 0).all(), a["pairs/message"][()]
        for name in ("tokens/attn_mass", "tokens/attn_last", "tokens/resid_norm", "seqs/entropy",
                     "pairs/js"):
            x, y = np.asarray(a[name][()], np.float64), np.asarray(b[name][()], np.float64)
            assert x.size and np.isfinite(x).any(), name  # js: NaN where a record has no b
            np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5, err_msg=name)


def test_auto_without_gpu_says_why_and_bf16_falls_back(tiny_model, tmp_path):
    """--backend auto (the default) without a usable GPU runs on the cpu and says why in the
    start-up line; --dtype bf16 is then not an error but f32, also said there. --backend cpu
    --dtype bf16 stays an error."""
    tiny = tiny_model("gpt2")
    pairs = write_records(tmp_path / "p.jsonl", [{"a": "The cat sat."}])
    kw = dict(CUDA_VISIBLE_DEVICES="", PUNCTUM_EMU_NO_DEVICE=1)
    p = sweep(tiny.path, pairs, tmp_path / "a.h5", "--progress", "never", **kw)
    m = startup(p.stderr)
    assert m["backend"] == "cpu" and re.match(r"auto: no usable CUDA GPU: .+; \d+ threads?, ",
                                               m["note"]), m["note"]
    p = sweep(tiny.path, pairs, tmp_path / "b.h5", "--dtype", "bf16", "--progress", "never", **kw)
    m = startup(p.stderr)
    assert m["dtype"] == "f32" and m["dnote"] == "; --dtype bf16 needs a GPU", p.stderr
    with h5py.File(tmp_path / "b.h5") as f:
        assert f.attrs["compute_dtype"] == "f32" and f.attrs["backend"] == "cpu"
    p = sweep(tiny.path, pairs, tmp_path / "c.h5", "--backend", "cpu", "--dtype", "bf16", expect=2)
    assert "--dtype bf16" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    emu = emu_bin()
    if emu:  # the same through the emulation build, whose "GPU" can be switched off
        p = sweep(tiny.path, pairs, tmp_path / "d.h5", "--progress", "never", binary=emu, **kw)
        assert "auto: no usable CUDA GPU: no CUDA-capable device" in startup(p.stderr)["note"]
        p = sweep(tiny.path, pairs, tmp_path / "e.h5", "--progress", "never", binary=emu,
                  PUNCTUM_EMU_NO_DEVICE=None, CUDA_VISIBLE_DEVICES=None)
        m = startup(p.stderr)
        assert m["backend"] == "cuda" and m["dtype"] == "bf16" and "emulation" in m["note"]


def test_progress_lines_when_not_a_terminal(tiny_model, tmp_path):
    """stderr not a terminal (a log, a batch job): complete lines (no carriage returns), at
    most one per PUNCTUM_PROGRESS_SECONDS (30 by default), and a final summary."""
    tiny = tiny_model("llama_gqa")
    pairs = write_records(tmp_path / "p.jsonl", id_records(tiny.vocab_size, 60))
    p = sweep(tiny.path, pairs, tmp_path / "o.h5", "--batch-tokens", "16",
              PUNCTUM_PROGRESS_SECONDS=0)
    assert "\r" not in p.stderr
    lines = p.stderr.strip().splitlines()
    startup(p.stderr)
    prog = [l for l in lines if re.match(r"punctum: \d+/60 pairs, [\d.]+ pairs/s, \d+ tok/s, ETA ", l)]
    assert len(prog) >= 5, p.stderr
    seen = [int(re.match(r"punctum: (\d+)/", l).group(1)) for l in prog]
    assert seen == sorted(seen) and seen[-1] <= 60
    assert re.match(r"punctum: done: 60 pairs, \d+ tokens in [\d.]+ s .*peak memory: host .* -> .*o\.h5$",
                    lines[-1]), lines[-1]
    assert len(lines) == 1 + len(prog) + 1
    # the default interval: a short run prints the start-up line and the summary only
    p = sweep(tiny.path, pairs, tmp_path / "o.h5", "--batch-tokens", "16", PUNCTUM_PROGRESS_SECONDS=None)
    assert len(p.stderr.strip().splitlines()) == 2, p.stderr
    # --progress always: lines as well, even where auto would draw one line on a terminal
    p = sweep(tiny.path, pairs, tmp_path / "o.h5", "--batch-tokens", "16", "--progress", "always",
              PUNCTUM_PROGRESS_SECONDS=0)
    assert "\r" not in p.stderr and len(p.stderr.strip().splitlines()) >= 7


def _fake_hub(root, org, name, model_dir, hash_="0123abcd") -> str:
    repo = os.path.join(root, f"models--{org}--{name}")
    snap = os.path.join(repo, "snapshots", hash_)
    os.makedirs(snap)
    os.makedirs(os.path.join(repo, "refs"))
    with open(os.path.join(repo, "refs", "main"), "w") as f:
        f.write(hash_ + "\n")  # as huggingface_hub writes it (no newline; either is read)
    for fn in os.listdir(model_dir):  # snapshots hold symlinks into blobs/
        os.symlink(os.path.join(model_dir, fn), os.path.join(snap, fn))
    return snap


def test_model_id_from_the_local_hugging_face_cache(tiny_model, tmp_path):
    tiny = tiny_model("gpt2")
    pairs = write_records(tmp_path / "p.jsonl", [{"a": "The cat sat.", "b": "The cat sat"}])
    want = str(tmp_path / "want.h5")
    sweep(tiny.path, pairs, want, "--progress", "never")
    # $HF_HUB_CACHE
    hub = str(tmp_path / "hub")
    snap = _fake_hub(hub, "tiny-org", "gpt2.tiny_v1", tiny.path)
    out = str(tmp_path / "a.h5")
    p = sweep("tiny-org/gpt2.tiny_v1", pairs, out, "--progress", "never", HF_HUB_CACHE=hub, HF_HOME=None)
    assert startup(p.stderr)["model"] == snap
    assert_same_content(out, want, rtol=0)
    # `punctum tokenize` resolves the same ids
    env = dict(os.environ, HF_HUB_CACHE=hub)
    env.pop("HF_HOME", None)
    tok = [subprocess.run([punctum_bin(), "tokenize", "--model", m, "--json", "The cat sat."],
                          capture_output=True, text=True, env=env) for m in
           (tiny.path, "tiny-org/gpt2.tiny_v1", "tiny-org/absent")]
    assert tok[0].returncode == 0 and tok[1].returncode == 0 and tok[1].stdout == tok[0].stdout
    assert tok[2].returncode == 2 and "models--tiny-org--absent" in tok[2].stderr
    # $HF_HOME/hub, then ~/.cache/huggingface/hub
    home = tmp_path / "hfhome"
    _fake_hub(str(home / "hub"), "o", "m", tiny.path)
    sweep("o/m", pairs, tmp_path / "b.h5", "--progress", "never", HF_HUB_CACHE=None, HF_HOME=home)
    user = tmp_path / "user"
    snap = _fake_hub(str(user / ".cache" / "huggingface" / "hub"), "o", "m", tiny.path, "feed")
    p = sweep("o/m", pairs, tmp_path / "c.h5", "--progress", "never", HF_HUB_CACHE=None, HF_HOME=None,
              HOME=user)
    assert startup(p.stderr)["model"] == snap
    # not cached: exit 2 before anything is written, one line saying where it looked
    p = sweep("o/absent", pairs, tmp_path / "d.h5", HF_HUB_CACHE=hub, expect=2)
    msg = p.stderr.strip()
    assert len(msg.splitlines()) == 1 and "o/absent" in msg and "models--o--absent/refs/main" in msg
    assert hub in msg and "HF_HUB_CACHE" in msg and "nothing is downloaded" in msg
    assert not os.path.exists(tmp_path / "d.h5")
    # a path that does not exist is not a model id: the usual error naming the directory
    p = sweep(str(tmp_path / "nowhere" / "x"), pairs, tmp_path / "e.h5", expect=(1, 2))
    assert "nowhere" in p.stderr and "Hugging Face" not in p.stderr


def test_patterns_size_is_stated_and_guarded(tiny_model, tmp_path):
    tiny = tiny_model("llama_gqa")
    recs = id_records(tiny.vocab_size, 10)
    pairs = write_records(tmp_path / "p.jsonl", recs)
    L, H = 3, 4
    want = sum(n * (n + 1) // 2 for r in recs for k in ("a_ids", "b_ids") if k in r
               for n in [len(r[k])]) * L * H * 4
    p = sweep(tiny.path, pairs, tmp_path / "o.h5", "--stats", "mass,patterns", "--progress", "never")
    rest = startup(p.stderr)["rest"]
    m = re.fullmatch(r", patterns ([\d.]+) (B|KiB|MiB)", rest)
    assert m, rest
    got = float(m.group(1)) * {"B": 1, "KiB": 1024, "MiB": 2**20}[m.group(2)]
    assert abs(got - want) <= 0.05 * want
    with h5py.File(tmp_path / "o.h5") as f:
        assert f["patterns/value"].size * 4 == want
    p = sweep(tiny.path, pairs, tmp_path / "r.h5", "--stats", "patterns", "--patterns-limit", "2K",
              expect=2)
    assert "--patterns-limit" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert not os.path.exists(tmp_path / "r.h5")
    sweep(tiny.path, pairs, tmp_path / "r.h5", "--stats", "patterns", "--patterns-limit", "none",
          "--progress", "never")


def test_options_that_do_nothing_are_said_once(tiny_model, tmp_path):
    tiny = tiny_model("llama_gqa")
    recs = id_records(tiny.vocab_size, 6)
    recs[1]["positions"] = [0, 50]   # 50 is beyond the prompt
    recs[3]["positions"] = [1, 99]
    pairs = write_records(tmp_path / "p.jsonl", recs)
    p = sweep(tiny.path, pairs, tmp_path / "a.h5", "--stats", "mass", "--topk", "5", "--windows",
              "0:1", "--positions", "all", "--backend", "cpu", "--device", "1", "--progress", "never")
    warns = [l for l in p.stderr.splitlines() if "warning" in l]
    assert any("--topk does nothing without topk" in w for w in warns)
    assert any("--windows does nothing without --ablate knockout" in w for w in warns)
    assert any("--positions does nothing" in w for w in warns)
    assert any("--device does nothing on the cpu backend" in w for w in warns)
    assert sum('"positions" does nothing' in w for w in warns) == 1  # records: said once
    assert len(warns) == 5, warns
    p = sweep(tiny.path, pairs, tmp_path / "b.h5", "--ablate", "knockout", "--progress", "never")
    warns = [l for l in p.stderr.splitlines() if "warning" in l]
    assert len(warns) == 1 and "line 2: position 50 is beyond the prompt" in warns[0], warns
    plain = write_records(tmp_path / "q.jsonl", id_records(tiny.vocab_size, 6))
    p = sweep(tiny.path, plain, tmp_path / "c.h5", "--progress", "never")  # defaults: nothing
    assert "warning" not in p.stderr
