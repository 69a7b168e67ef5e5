"""HDF5 layout (SPEC §5): chunked, extendible along axis 0, gzip + shuffle, variable-length
UTF-8 strings, the dtypes of the table, every root attribute, --store f16."""
from __future__ import annotations

import datetime as dt
import json
import os
import random

import h5py
import numpy as np
import pytest

import reference as R

MODEL = "gpt2"   # carries a tokenizer.json, so /tokens/text is non-trivial

DTYPES = {
    "/pairs/id": "str", "/pairs/line": "i8", "/pairs/status": "i1", "/pairs/message": "str",
    "/pairs/seq_a": "i8", "/pairs/seq_b": "i8", "/pairs/kl_ab": "f", "/pairs/kl_ba": "f",
    "/pairs/js": "f", "/pairs/resid_cos": "f",
    "/seqs/pair": "i8", "/seqs/side": "i1", "/seqs/text": "str", "/seqs/tok_start": "i8",
    "/seqs/n_tok": "i4", "/seqs/entropy": "f", "/seqs/topk_id": "i4", "/seqs/topk_logprob": "f",
    "/seqs/target_id": "i4", "/seqs/target_logprob": "f", "/seqs/pattern_start": "i8",
    "/tokens/id": "i4", "/tokens/seq": "i8", "/tokens/pos": "i4", "/tokens/text": "str",
    "/tokens/byte_start": "i4", "/tokens/byte_end": "i4", "/tokens/is_punct": "i1", "/tokens/role": "i1",
    "/tokens/attn_mass": "f", "/tokens/attn_last": "f", "/tokens/resid_norm": "f",
    "/tokens/resid_max": "f", "/tokens/resid_argmax": "i4", "/tokens/resid_median": "f",
    "/patterns/value": "f",
}
ROOT_ATTRS = ["punctum_format", "punctum_version", "model_dir", "model_type", "n_layers",
              "n_heads", "n_kv_heads", "d_model", "vocab_size", "backend", "device",
              "compute_dtype", "command_line", "created", "committed_pairs"]


def _lines(V):
    rng = random.Random(4)
    out = []
    for n in (5, 9, 3, 12):
        a = [rng.randrange(V) for _ in range(n)]
        out.append({"id": f"p{n}", "a_ids": a, "b_ids": a + [rng.randrange(V)],
                    "target_id": rng.randrange(V)})
    out.append({"id": "solo", "a_ids": [rng.randrange(V) for _ in range(7)]})
    out.append({"id": "bad", "a_ids": [V + 1]})
    return out


def _run(punctum, m, tmp_path, *extra, name="o"):
    pairs = tmp_path / f"{name}.jsonl"
    text = R.write_pairs(str(pairs), _lines(m.vocab_size))
    out = tmp_path / f"{name}.h5"
    started = dt.datetime.now(dt.timezone.utc)
    punctum.run(m.path, str(pairs), str(out), *extra)
    return text, str(out), started


@pytest.fixture(scope="module")
def full_run(tiny_model, punctum, tmp_path_factory):
    m = tiny_model(MODEL)
    tmp = tmp_path_factory.mktemp("layout")
    text, out, started = _run(punctum, m, tmp, "--stats", "mass,last,resid,topk,massive,patterns")
    return m, text, out, started


def _all_datasets(f):
    out = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            out["/" + name] = obj
    f.visititems(visit)
    return out


def _dtype_ok(ds, want):
    if want == "str":
        info = h5py.check_string_dtype(ds.dtype)
        return info is not None and info.encoding == "utf-8" and info.length is None
    if want == "f":
        return ds.dtype == np.float32
    return ds.dtype == np.dtype(want)


def test_every_dataset_chunked_extendible_compressed(full_run):
    m, text, out, _ = full_run
    problems = []
    with h5py.File(out, "r") as f:
        dsets = _all_datasets(f)
        assert dsets, "no datasets"
        for name, ds in dsets.items():
            if ds.chunks is None:
                problems.append(f"{name}: not chunked")
            if ds.maxshape is None or ds.maxshape[0] is not None:
                problems.append(f"{name}: maxshape {ds.maxshape}, axis 0 not unlimited")
            if ds.compression != "gzip":
                problems.append(f"{name}: compression {ds.compression!r}, expected gzip")
            if not ds.shuffle:
                problems.append(f"{name}: no shuffle filter")
            if ds.maxshape is not None and tuple(ds.maxshape[1:]) != tuple(ds.shape[1:]):
                problems.append(f"{name}: maxshape {ds.maxshape} vs shape {ds.shape}")
    assert not problems, "\n".join(problems)


def test_dtypes_and_shapes(full_run):
    m, text, out, _ = full_run
    recs = R.parse_pairs(text, m.vocab_size, m.max_positions)
    N = len(recs)
    S = sum(1 + (r.b_ids is not None) for r in recs if r.ok)
    lens = [len(x) for r in recs if r.ok for x in ([r.a_ids] + ([r.b_ids] if r.b_ids else []))]
    Ttot = sum(lens)
    Rp = sum(t * (t + 1) // 2 for t in lens)
    L, H = m.n_layers, m.n_heads
    shapes = {"/pairs": (N,), "/seqs": (S,), "/tokens": (Ttot,)}
    special = {"/pairs/resid_cos": (N, L + 1), "/seqs/topk_id": (S, 10),
               "/seqs/topk_logprob": (S, 10), "/tokens/attn_mass": (Ttot, L, H),
               "/tokens/attn_last": (Ttot, L, H), "/tokens/resid_norm": (Ttot, L + 1),
               "/tokens/resid_max": (Ttot, L + 1), "/tokens/resid_argmax": (Ttot, L + 1),
               "/tokens/resid_median": (Ttot, L + 1), "/patterns/value": (Rp, L, H)}
    problems = []
    with h5py.File(out, "r") as f:
        for name, want in DTYPES.items():
            if name not in f:
                problems.append(f"{name}: missing")
                continue
            ds = f[name]
            if not _dtype_ok(ds, want):
                problems.append(f"{name}: dtype {ds.dtype} ({h5py.check_string_dtype(ds.dtype)}),"
                                f" expected {want}")
            grp = "/" + name.split("/")[1]
            shp = special.get(name, shapes.get(grp))
            if shp is not None and ds.shape != shp:
                problems.append(f"{name}: shape {ds.shape}, expected {shp}")
        extra = set(_all_datasets(f)) - set(DTYPES)
        if extra:
            problems.append(f"datasets not in SPEC §5 for these options: {sorted(extra)}")
    assert not problems, "\n".join(problems)


def test_root_attributes(full_run):
    m, text, out, started = full_run
    with open(os.path.join(m.path, "config.json")) as fh:
        cfg = json.load(fh)
    problems = []
    with h5py.File(out, "r") as f:
        a = {k: R.attr_value(v) for k, v in f.attrs.items()}
        n_pairs = f["/pairs/id"].shape[0]
    for k in ROOT_ATTRS:
        if k not in a:
            problems.append(f"attribute {k!r} missing")

    def expect(k, want):
        if k in a and a[k] != want:
            problems.append(f"attribute {k} = {a[k]!r}, expected {want!r}")

    expect("punctum_format", 1)
    expect("model_type", cfg["model_type"])
    expect("n_layers", cfg["n_layer"])
    expect("n_heads", cfg["n_head"])
    expect("n_kv_heads", cfg["n_head"])
    expect("d_model", cfg["n_embd"])
    expect("vocab_size", cfg["vocab_size"])
    expect("committed_pairs", n_pairs)
    for k in ("n_layers", "n_heads", "n_kv_heads", "d_model", "vocab_size", "committed_pairs",
              "punctum_format"):
        if k in a and not isinstance(a[k], int):
            problems.append(f"attribute {k} is {type(a[k]).__name__}, expected an integer")
    if "model_dir" in a and os.path.realpath(str(a["model_dir"])) != os.path.realpath(m.path):
        problems.append(f"model_dir {a['model_dir']!r} is not {m.path!r}")
    if "backend" in a and a["backend"] not in ("cpu", "cuda"):
        problems.append(f"backend {a['backend']!r}")
    if a.get("backend") == "cpu" and a.get("compute_dtype") != "f32":
        problems.append(f"compute_dtype {a.get('compute_dtype')!r} on cpu, expected 'f32'")
    for k in ("punctum_version", "device", "command_line"):
        if k in a and (not isinstance(a[k], str) or not a[k]):
            problems.append(f"attribute {k} = {a[k]!r}: expected a non-empty string")
    cl = str(a.get("command_line", ""))
    if "run" not in cl or "--model" not in cl:
        problems.append(f"command_line {cl!r} does not look like the command")
    c = str(a.get("created", ""))
    if not R.ISO_UTC.match(c):
        problems.append(f"created {c!r} is not ISO 8601 UTC (YYYY-MM-DDThh:mm:ss[.f](Z|+00:00))")
    else:
        t = dt.datetime.fromisoformat(c.replace("Z", "+00:00"))
        now = dt.datetime.now(dt.timezone.utc)
        if not (started - dt.timedelta(seconds=5) <= t <= now + dt.timedelta(seconds=5)):
            problems.append(f"created {c} is not the run's time ({started.isoformat()} .. "
                            f"{now.isoformat()})")
    assert not problems, "\n".join(problems)


def test_values_of_layout_run(full_run, reference):
    """The same file, checked against the reference (bad record included)."""
    m, text, out, _ = full_run
    exp = R.expected(reference(MODEL), R.parse_pairs(text, m.vocab_size, m.max_positions),
                     patterns=True)
    with h5py.File(out, "r") as f:
        ids = R.read_str(f["/pairs/id"])
        msgs = R.compare_file(f, exp)
        assert ids[-1] == "bad"
    assert not msgs, "\n".join(msgs)


def test_store_f16(tiny_model, reference, punctum, tmp_path):
    m = tiny_model(MODEL)
    text, out, _ = _run(punctum, m, tmp_path, "--store", "f16", "--stats",
                        "mass,last,resid,topk,patterns")
    exp = R.expected(reference(MODEL), R.parse_pairs(text, m.vocab_size, m.max_positions),
                     patterns=True)
    problems = []
    with h5py.File(out, "r") as f:
        for name, want in DTYPES.items():
            if want == "f" and name in f and f[name].dtype != np.float16:
                problems.append(f"{name}: dtype {f[name].dtype} with --store f16")
            if want != "f" and name in f and not _dtype_ok(f[name], want):
                problems.append(f"{name}: dtype {f[name].dtype} changed by --store f16")
        # float16 keeps ~11 bits: tolerances x10 (rtol 1e-3)
        problems += R.compare_file(f, exp, scale=10.0)
    assert not problems, "\n".join(problems)


def test_store_f16_saturates_and_counts(tiny_model, punctum, tmp_path):
    """--store f16 never writes an infinity for a finite value: a model whose residual norms
    exceed float16's range (embeddings scaled by 1e6) stores them as +-65504, counts every one
    in the root attribute f16_saturated and warns once at the end; the other values are the f32
    run's rounded to float16."""
    import shutil

    from safetensors.numpy import load_file, save_file
    m = tiny_model(MODEL)
    big = str(tmp_path / "big-model")
    shutil.copytree(m.path, big)
    w = load_file(os.path.join(big, "model.safetensors"))
    w["transformer.wte.weight"] = w["transformer.wte.weight"] * np.float32(1e6)
    save_file(w, os.path.join(big, "model.safetensors"))
    pairs = tmp_path / "p.jsonl"
    R.write_pairs(str(pairs), _lines(m.vocab_size))
    f32, f16 = str(tmp_path / "f32.h5"), str(tmp_path / "f16.h5")
    stats = ["--stats", "mass,last,resid,topk,lens"]
    punctum.run(big, str(pairs), f32, *stats)
    p = punctum.run(big, str(pairs), f16, *stats, "--store", "f16")
    want_sat = 0
    with h5py.File(f32, "r") as a, h5py.File(f16, "r") as b:
        for name, ds in _all_datasets(a).items():
            if ds.dtype != np.float32:
                continue
            x = ds[()]
            y = b[name][()]
            assert y.dtype == np.float16, name
            over = np.isfinite(x) & (np.abs(x) >= 65520)  # rounds beyond float16's range
            want_sat += int(over.sum())
            expect = np.where(over, np.sign(x) * 65504, x).astype(np.float16)
            np.testing.assert_array_equal(y, expect, err_msg=name)
            assert not (np.isinf(y) & np.isfinite(x)).any(), name
        assert want_sat > 0, "the scaled model should overflow float16"
        assert int(b.attrs["f16_saturated"]) == want_sat
    warn = [l for l in p.stderr.splitlines() if "f16_saturated" in l]
    assert len(warn) == 1 and str(want_sat) in warn[0] and "65504" in warn[0], p.stderr


def test_h5dump_reads_the_chunks(full_run):
    """The chunks punctum encodes itself (shuffle + deflate, written with H5Dwrite_chunk) decode
    in the HDF5 command-line tools too: h5dump lists the two filters and prints every value of
    the statistics as h5py reads them."""
    import re
    import shutil
    import subprocess
    h5dump = shutil.which("h5dump")
    if not h5dump:
        pytest.skip("h5dump not installed (scripts/setup.sh installs hdf5-tools)")
    _, _, out, _ = full_run
    with h5py.File(out, "r") as f:
        for name in ("/tokens/attn_mass", "/tokens/resid_norm", "/patterns/value", "/tokens/id",
                     "/tokens/resid_argmax", "/tokens/resid_median"):
            head = subprocess.run([h5dump, "-p", "-H", "-d", name, out], capture_output=True,
                                  text=True, check=True).stdout
            assert "PREPROCESSING SHUFFLE" in head and "COMPRESSION DEFLATE" in head, head
            body = subprocess.run([h5dump, "-y", "-w", "0", "-m", "%.9g", "-d", name, out],
                                  capture_output=True, text=True, check=True).stdout
            data = body[body.index("DATA {") + 6:body.rindex("}", 0, body.rindex("}"))]
            vals = np.array([float(v) for v in re.findall(r"[-+0-9.eEinfa]+", data)
                             if re.match(r"^[-+]?(\d|inf|nan)", v)])
            want = f[name][()].astype(np.float64).ravel()
            assert vals.shape == want.shape, (name, vals.shape, want.shape)
            np.testing.assert_array_equal(vals.astype(f[name].dtype), want.astype(f[name].dtype),
                                          err_msg=name)
