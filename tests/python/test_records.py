"""Bad input (SPEC §7): bad records are recorded and the sweep goes on; --strict stops;
usage errors exit 2; an existing output is never clobbered without --force; a bad model
directory is a one-line error before any output exists."""
from __future__ import annotations

import json
import os
import random
import shutil
import zlib

import h5py
import numpy as np
import pytest

import reference as R

MODEL = "llama_gqa"      # vocab 320, max positions 64


def _good(rng, V, n=6, rid="good", with_b=True):
    a = [rng.randrange(V) for _ in range(n)]
    rec = {"id": rid, "a_ids": a, "target_id": rng.randrange(V)}
    if with_b:
        rec["b_ids"] = a + [rng.randrange(V)]
    return rec


def bad_lines(V: int, P: int) -> dict:
    """kind -> the bad line (a str written verbatim)."""
    return {
        "invalid-json": '{"id": "bad", "a_ids": [1, 2, 3',
        "not-an-object": "[1, 2, 3]",
        "missing-a_ids": json.dumps({"id": "bad", "b_ids": [1, 2]}),
        "a_ids-not-list": json.dumps({"id": "bad", "a_ids": "1 2 3"}),
        "a_ids-non-integer": json.dumps({"id": "bad", "a_ids": [1, "two", 3]}),
        "a_ids-float": json.dumps({"id": "bad", "a_ids": [1, 2.5, 3]}),
        "a_ids-negative": json.dumps({"id": "bad", "a_ids": [4, -1, 5]}),
        "a_ids-out-of-vocab": json.dumps({"id": "bad", "a_ids": [4, V, 5]}),
        "a_ids-too-long": json.dumps({"id": "bad", "a_ids": [7] * (P + 1)}),
        "a_ids-empty": json.dumps({"id": "bad", "a_ids": []}),
        "b_ids-out-of-vocab": json.dumps({"id": "bad", "a_ids": [1, 2], "b_ids": [1, V + 5]}),
        "b_ids-too-long": json.dumps({"id": "bad", "a_ids": [1, 2], "b_ids": [3] * (P + 1)}),
        "target_id-out-of-vocab": json.dumps({"id": "bad", "a_ids": [1, 2], "target_id": V}),
    }


KINDS = list(bad_lines(320, 64))


@pytest.mark.parametrize("kind", KINDS)
def test_bad_record_is_recorded_and_sweep_goes_on(kind, tiny_model, reference, punctum,
                                                   tmp_path):
    m = tiny_model(MODEL)
    rng = random.Random(zlib.crc32(kind.encode()))
    V, P = m.vocab_size, m.max_positions
    lines = [_good(rng, V, 5, "first"), "", bad_lines(V, P)[kind],
             _good(rng, V, 8, "after"), _good(rng, V, 4, "after-2", with_b=False)]
    pairs = tmp_path / "pairs.jsonl"
    text = R.write_pairs(str(pairs), lines)
    out = tmp_path / "out.h5"
    punctum.run(m.path, str(pairs), str(out), expect=0)
    recs = R.parse_pairs(text, V, P)
    assert [r.ok for r in recs] == [True, False, True, True], "reference misreads the file"
    exp = R.expected(reference(MODEL), recs)
    msgs = []
    with h5py.File(out, "r") as f:
        status = f["/pairs/status"][()]
        if list(status) != [0, 1, 0, 0]:
            msgs.append(f"/pairs/status {list(status)} != [0, 1, 0, 0]")
        lines_ds = list(f["/pairs/line"][()])
        if lines_ds != [1, 3, 4, 5]:
            msgs.append(f"/pairs/line {lines_ds} != [1, 3, 4, 5]")
        msg = R.read_str(f["/pairs/message"])
        if len(msg) == 4:
            if "line 3" not in msg[1]:
                msgs.append(f"/pairs/message[1] {msg[1]!r} does not contain 'line 3'")
            if "\n" in msg[1].strip() or not msg[1].strip():
                msgs.append(f"/pairs/message[1] {msg[1]!r} is not one non-empty line")
        if f["/pairs/seq_a"][1] != -1 or f["/pairs/seq_b"][1] != -1:
            msgs.append(f"bad record: seq_a/seq_b = {f['/pairs/seq_a'][1]}, "
                        f"{f['/pairs/seq_b'][1]}, expected -1, -1")
        if kind != "invalid-json" and kind != "not-an-object":
            ids = R.read_str(f["/pairs/id"])
            if len(ids) == 4 and ids[1] != "bad":
                msgs.append(f"/pairs/id[1] {ids[1]!r} != 'bad'")
        ids = R.read_str(f["/pairs/id"])
        exp.data["/pairs/id"][1] = ids[1] if len(ids) == 4 else exp.data["/pairs/id"][1]
        # everything else (good records, /seqs and /tokens rows) as the reference says
        msgs += R.compare_file(f, exp)
    if msgs:
        pytest.fail(f"{kind}:\n" + "\n".join(msgs), pytrace=False)


def test_strict_stops_with_exit_1(tiny_model, punctum, tmp_path):
    m = tiny_model(MODEL)
    rng = random.Random(1)
    lines = [_good(rng, m.vocab_size), json.dumps({"id": "bad", "a_ids": [m.vocab_size]}),
             _good(rng, m.vocab_size)]
    pairs = tmp_path / "p.jsonl"
    R.write_pairs(str(pairs), lines)
    p = punctum.run(m.path, str(pairs), str(tmp_path / "o.h5"), "--strict", expect=1)
    assert "line 2" in p.stderr, f"stderr does not name line 2: {p.stderr!r}"


def test_strict_all_good_is_ok(tiny_model, punctum, tmp_path):
    m = tiny_model(MODEL)
    rng = random.Random(2)
    pairs = tmp_path / "p.jsonl"
    R.write_pairs(str(pairs), [_good(rng, m.vocab_size), _good(rng, m.vocab_size, 3)])
    out = tmp_path / "o.h5"
    punctum.run(m.path, str(pairs), str(out), "--strict", expect=0)
    with h5py.File(out, "r") as f:
        assert list(f["/pairs/status"][()]) == [0, 0]


@pytest.mark.parametrize("args", [["--frobnicate"], ["--stats", "mass,bogus"], ["--topk", "x"],
                                  ["--batch-tokens", "-5"]],
                         ids=["unknown-option", "unknown-stat", "topk-not-int", "negative-budget"])
def test_usage_errors_exit_2(args, tiny_model, punctum, tmp_path):
    m = tiny_model(MODEL)
    pairs = tmp_path / "p.jsonl"
    R.write_pairs(str(pairs), [{"a_ids": [1, 2, 3]}])
    out = tmp_path / "o.h5"
    p = punctum.run(m.path, str(pairs), str(out), *args, expect=2)
    assert p.stderr.strip(), "no message on stderr"
    assert not out.exists(), "output file created on a usage error"


def test_unknown_subcommand_exit_2(punctum):
    punctum("frobnicate", expect=2)


def test_existing_output_needs_force(tiny_model, punctum, tmp_path):
    m = tiny_model(MODEL)
    pairs = tmp_path / "p.jsonl"
    R.write_pairs(str(pairs), [{"a_ids": [1, 2, 3], "b_ids": [1, 2]}])
    out = tmp_path / "o.h5"
    punctum.run(m.path, str(pairs), str(out), expect=0)
    before = out.read_bytes()
    st = os.stat(out)
    p = punctum.run(m.path, str(pairs), str(out), expect=(1, 2), force=False)
    assert p.stderr.strip(), "no message on stderr"
    assert len(p.stderr.strip().splitlines()) == 1, f"not one line: {p.stderr!r}"
    assert out.read_bytes() == before, "existing output modified"
    assert os.stat(out).st_mtime_ns == st.st_mtime_ns, "existing output touched"
    # a non-HDF5 file is protected just the same
    other = tmp_path / "notes.h5"
    other.write_bytes(b"my precious notes\n")
    punctum.run(m.path, str(pairs), str(other), expect=(1, 2), force=False)
    assert other.read_bytes() == b"my precious notes\n"
    # --force overwrites
    punctum.run(m.path, str(pairs), str(other), expect=0)
    with h5py.File(other, "r") as f:
        assert f.attrs["committed_pairs"] == 1


@pytest.mark.parametrize("breakage", ["no-config", "no-dir", "bad-config-json",
                                      "no-weights", "truncated-weights"])
def test_bad_model_dir(breakage, tiny_model, punctum, tmp_path):
    m = tiny_model(MODEL)
    d = tmp_path / "model"
    shutil.copytree(m.path, d)
    named = "config.json"
    if breakage == "no-config":
        os.remove(d / "config.json")
    elif breakage == "no-dir":
        shutil.rmtree(d)
        named = "model"
    elif breakage == "bad-config-json":
        (d / "config.json").write_text('{"model_type": "llama", "hidden_size": ')
    elif breakage == "no-weights":
        os.remove(d / "model.safetensors")
        named = "safetensors"
    elif breakage == "truncated-weights":
        data = (d / "model.safetensors").read_bytes()
        (d / "model.safetensors").write_bytes(data[: len(data) // 2])
        named = "model.safetensors"
    pairs = tmp_path / "p.jsonl"
    R.write_pairs(str(pairs), [{"a_ids": [1, 2, 3]}])
    out = tmp_path / "o.h5"
    p = punctum.run(str(d), str(pairs), str(out), expect=(1, 2))
    err = p.stderr.strip()
    assert err, "no message on stderr"
    assert len(err.splitlines()) == 1, f"message is not one line: {p.stderr!r}"
    assert named in err, f"message does not name {named!r}: {err!r}"
    assert not out.exists(), "output file created although the model directory is bad"


def test_missing_pairs_file(tiny_model, punctum, tmp_path):
    m = tiny_model(MODEL)
    out = tmp_path / "o.h5"
    p = punctum.run(m.path, str(tmp_path / "nope.jsonl"), str(out), expect=(1, 2))
    assert "nope.jsonl" in p.stderr
    assert not out.exists()


def test_only_bad_records(tiny_model, punctum, tmp_path):
    """A file with nothing but bad records still gives a readable file, with empty
    /seqs and /tokens."""
    m = tiny_model(MODEL)
    pairs = tmp_path / "p.jsonl"
    R.write_pairs(str(pairs), ['{"a_ids": ', json.dumps({"a_ids": []})])
    out = tmp_path / "o.h5"
    punctum.run(m.path, str(pairs), str(out), expect=0)
    with h5py.File(out, "r") as f:
        assert list(f["/pairs/status"][()]) == [1, 1]
        assert list(f["/pairs/line"][()]) == [1, 2]
        msg = R.read_str(f["/pairs/message"])
        assert "line 1" in msg[0] and "line 2" in msg[1], msg
        assert f["/seqs/n_tok"].shape == (0,)
        assert int(f.attrs["committed_pairs"]) == 2
        assert np.all(f["/pairs/seq_a"][()] == -1)
