"""`punctum merge` (SPEC §4): shards back into one self-contained file in input order with every
index renumbered; parts that disagree, unfinished parts and missing shards refused (exit 2)
unless --allow-partial.

The shards' batches differ from the unsharded run's, and the cpu backend's logits-derived
statistics (entropy, top-k log-probabilities, KL) can differ in the last bit with the batch
composition; those float columns are compared with a 1e-5 tolerance, everything else exactly.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import test_resilience as R  # noqa: E402
from conftest import punctum_bin  # noqa: E402

N = 160
EXPERIMENTS = ["--ablate", "knockout", "--patch", "resid", "--stats", "mass,last,resid,topk,lens,massive,patterns",
               "--positions", "last:2", "--windows", "0:1,1:3"]
TOL = 1e-5


def merge(*args, expect=0):
    p = subprocess.run([punctum_bin(), "merge", *args], capture_output=True, text=True, timeout=600, env=R.env())
    assert p.returncode == expect, f"exit {p.returncode} (expected {expect}): {p.stderr[-2000:]}"
    return p


@pytest.fixture(scope="module")
def model(tiny_model):
    return tiny_model("gpt2").path


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("merge")


@pytest.fixture(scope="module")
def pairs(work):
    return R.make_pairs(str(work / "pairs.jsonl"), N, seed=11, bad_every=41)


@pytest.fixture(scope="module")
def whole(work, model, pairs):
    out = str(work / "whole.h5")
    R.run(R.run_args(model, pairs, out, *EXPERIMENTS))
    return out


@pytest.fixture(scope="module")
def shards(work, model, pairs):
    outs = []
    procs = []
    for i in range(3):
        out = str(work / f"shard{i}.h5")
        outs.append(out)
        # a different batch size per shard: merge must not care
        procs.append(subprocess.Popen(R.run_args(model, pairs, out, *EXPERIMENTS, "--shard", f"{i}/3",
                                                 "--batch-tokens", str(120 + 40 * i)),
                                      stderr=subprocess.PIPE, text=True, env=R.env()))
    for p in procs:
        assert p.wait(timeout=600) == 0, p.stderr.read()
    return outs


def test_merge_of_three_shards_equals_one_run(work, shards, whole):
    out = str(work / "merged.h5")
    merge("--out", out, shards[2], shards[0], shards[1])  # any order of parts
    R.check_consistent(out)
    with h5py.File(out, "r") as f, h5py.File(whole, "r") as g:
        assert int(f.attrs["committed_pairs"]) == N and int(f.attrs["run_complete"]) == 1
        assert f.attrs["opt_shard"] == g.attrs["opt_shard"] == "0/1"
        for k in ("ablation/knockout/seq", "patching/resid/pair", "lens/seq", "seqs/pattern_start",
                  "tokens/resid_argmax", "tokens/resid_max", "tokens/resid_median"):
            assert f[k].shape[0] > 0, k
    R.assert_same_h5(out, whole, float_tol=TOL,
                     skip_attrs=("created", "command_line", "merged_from", "opt_batch_tokens", "input_offset",
                                 "input_line", "input_index"))
    # the index columns and the other non-float data exactly (assert_same_h5 did too; explicit here)
    with h5py.File(out, "r") as f, h5py.File(whole, "r") as g:
        for k in ("pairs/seq_a", "pairs/seq_b", "seqs/pair", "seqs/tok_start", "seqs/pattern_start", "tokens/seq",
                  "ablation/knockout/seq", "patching/resid/pair", "lens/seq", "pairs/line", "tokens/id",
                  "tokens/text", "seqs/topk_id", "pairs/status", "pairs/message"):
            assert np.array_equal(f[k][()], g[k][()]), k


def test_merged_file_is_self_contained(work, shards):
    out = str(work / "merged2.h5")
    merge("--out", out, *shards)
    moved = str(work / "moved")
    os.makedirs(moved, exist_ok=True)
    os.rename(out, os.path.join(moved, "m.h5"))
    with h5py.File(os.path.join(moved, "m.h5"), "r") as f:
        for d in R.datasets(f).values():
            assert not d.is_virtual
            d[()]


def test_existing_output_needs_force(work, shards):
    out = str(work / "exists.h5")
    open(out, "w").write("keep me")
    p = merge("--out", out, *shards, expect=2)
    assert "--force" in p.stderr and open(out).read() == "keep me"
    merge("--out", out, "--force", *shards)


def test_disagreeing_parts_are_refused(work, model, pairs, shards):
    other = str(work / "shard1-topk.h5")
    R.run(R.run_args(model, pairs, other, *EXPERIMENTS, "--shard", "1/3", "--topk", "4"))
    p = merge("--out", str(work / "bad.h5"), shards[0], other, shards[2], expect=2)
    assert "--topk" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert not os.path.exists(str(work / "bad.h5"))
    # another split
    half = str(work / "half.h5")
    R.run(R.run_args(model, pairs, half, *EXPERIMENTS, "--shard", "1/2"))
    p = merge("--out", str(work / "bad.h5"), shards[0], half, expect=2)
    assert "split" in p.stderr
    # the same shard twice
    p = merge("--out", str(work / "bad.h5"), shards[0], shards[0], shards[1], expect=2)
    assert "same shard" in p.stderr


def test_other_input_is_refused(work, model, pairs, shards):
    other_pairs = R.make_pairs(str(work / "other.jsonl"), N, seed=12, bad_every=41)
    other = str(work / "shard1-other-input.h5")
    R.run(R.run_args(model, other_pairs, other, *EXPERIMENTS, "--shard", "1/3"))
    p = merge("--out", str(work / "bad.h5"), shards[0], other, shards[2], expect=2)
    assert "--pairs" in p.stderr


def test_missing_shard_needs_allow_partial(work, shards, whole):
    p = merge("--out", str(work / "two.h5"), shards[0], shards[2], expect=2)
    assert "shard 1/3 is missing" in p.stderr
    out = str(work / "two.h5")
    merge("--out", out, "--allow-partial", shards[0], shards[2])
    R.check_consistent(out)
    with h5py.File(out, "r") as f, h5py.File(whole, "r") as g:
        assert int(f.attrs["run_complete"]) == 0
        lines = f["pairs/line"][()]
        assert list(lines) == sorted(lines)
        want = [ln for i, ln in enumerate(g["pairs/line"][()]) if i % 3 != 1]
        assert list(lines) == want


def test_unfinished_part_needs_allow_partial(work, model, pairs, shards):
    """A shard stopped by SIGINT (its view of committed rows) is refused, then merged with
    --allow-partial: exactly its committed pairs."""
    part = str(work / "shard1-partial.h5")
    p = subprocess.Popen(R.run_args(model, pairs, part, *EXPERIMENTS, "--shard", "1/3", "--batch-tokens", "60"),
                         stderr=subprocess.PIPE, text=True, env=R.env(PUNCTUM_COMMIT_SECONDS=0, PUNCTUM_FSYNC=0))
    deadline = time.time() + 60
    while time.time() < deadline:
        time.sleep(0.05)
        try:
            with h5py.File(part, "r") as f:
                if int(f.attrs["committed_pairs"]) >= 5:
                    break
        except (OSError, KeyError):
            pass
    p.send_signal(signal.SIGINT)
    rc = p.wait(timeout=120)
    if rc == 0:
        pytest.skip("the shard finished before SIGINT arrived")
    assert rc == 130
    with h5py.File(part, "r") as f:
        n_part = int(f.attrs["committed_pairs"])
    out = str(work / "with-partial.h5")
    q = merge("--out", out, *[shards[0], part, shards[2]], expect=2)
    assert "unfinished" in q.stderr and "--allow-partial" in q.stderr
    merge("--out", out, "--allow-partial", shards[0], part, shards[2])
    R.check_consistent(out)
    with h5py.File(out, "r") as f, h5py.File(shards[0], "r") as a, h5py.File(shards[2], "r") as c:
        total = int(a.attrs["committed_pairs"]) + n_part + int(c.attrs["committed_pairs"])
        assert int(f.attrs["committed_pairs"]) == total and int(f.attrs["run_complete"]) == 0


def test_merge_usage_errors(work):
    p = subprocess.run([punctum_bin(), "merge", "--out", str(work / "x.h5")], capture_output=True, text=True)
    assert p.returncode == 2
    p = subprocess.run([punctum_bin(), "merge", "--bogus"], capture_output=True, text=True)
    assert p.returncode == 2
    p = subprocess.run([punctum_bin(), "merge", "--out", str(work / "x.h5"), str(work / "nope.h5")],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "nope.h5" in p.stderr
