"""The stat `massive` (SPEC §3, §5) against Hugging Face transformers in float64.

For every tiny model type (tiny_models.py) the engine writes /tokens/resid_max,
/tokens/resid_argmax and /tokens/resid_median; massive_ref.MassiveRef captures the residual
stream entering each layer (l = L: before the final norm) and reduces |h| over the model
dimension with numpy: the maximum, the first index of the maximum, np.median (the mean of the
two middle values for even d_model, as `punctum run --help` says). Checked on the cpu backend
and on the cuda backend through the emulation build (punctum-emu, f32 compute), with prompt
pairs whose b side extends a (prefix-shared sequences) and sequences of several lengths.

Tolerances: float32 engine vs float64 reference, rtol 1e-4 + atol 1e-5 (the engine's
resid_norm test holds float32 forwards to 1e-3); an argmax may differ only where the
reference's |h| at the engine's index ties the maximum within that tolerance, and in under 1 %
of the rows.
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import massive_ref  # noqa: E402
import tiny_models  # noqa: E402
from conftest import REPO, punctum_bin  # noqa: E402

SEED = 18018
RTOL, ATOL = 1e-4, 1e-5


def emu_bin() -> str | None:
    b = os.environ.get("PUNCTUM_EMU_BIN") or os.path.join(REPO, "build", "punctum-emu")
    return b if os.access(b, os.X_OK) else None


def engine(backend: str) -> list[str]:
    if backend == "cpu":
        return [punctum_bin(), "run", "--backend", "cpu", "--threads", "2"]
    b = emu_bin()
    if not b:
        pytest.skip("no punctum-emu in this build (needs the CUDA headers)")
    return [b, "run", "--backend", "cuda", "--dtype", "f32"]


def write_pairs(path: str, vocab: int, seed: int) -> None:
    """Random ids (seed printed by the failing assertion): single prompts of several lengths,
    and pairs whose b extends a (b shares a's rows: prefix sharing) or differs at the end."""
    rng = random.Random(seed)
    ids = lambda n: [rng.randrange(vocab) for _ in range(n)]  # noqa: E731
    recs = [{"id": f"one-{k}", "a_ids": ids(n)} for k, n in enumerate((1, 2, 7, 19, 33))]
    for k, n in enumerate((3, 12, 25)):
        a = ids(n)
        recs.append({"id": f"ext-{k}", "a_ids": a, "b_ids": a + ids(1 + k)})
        recs.append({"id": f"alt-{k}", "a_ids": a, "b_ids": a[:-1] + ids(1)})
    with open(path, "w") as fh:
        for r in recs:
            fh.write(json.dumps(r) + "\n")


def run_engine(argv: list[str], model: str, pairs: str, out: str, stats: str) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="2", OPENBLAS_NUM_THREADS="1")
    p = subprocess.run(argv + ["--model", model, "--pairs", pairs, "--out", out, "--force",
                               "--progress", "never", "--stats", stats],
                       capture_output=True, text=True, timeout=600, env=env)
    assert p.returncode == 0, f"exit {p.returncode}: {' '.join(argv)}\n{p.stderr[-3000:]}"


def check_against_reference(model_dir: str, out: str, seed: int) -> int:
    """Every token row of every sequence of `out` against MassiveRef; returns rows checked."""
    ref = massive_ref.MassiveRef(model_dir)
    with h5py.File(out, "r") as f:
        ts, nt = f["seqs/tok_start"][()], f["seqs/n_tok"][()]
        ids = f["tokens/id"][()]
        L1 = int(f.attrs["n_layers"]) + 1
        got = {n: f["tokens/" + n][()] for n in massive_ref.NAMES}
        assert got["resid_argmax"].dtype == np.int32
        assert got["resid_max"].dtype == got["resid_median"].dtype == np.float32
    for n in massive_ref.NAMES:
        assert got[n].shape == (len(ids), L1), (n, got[n].shape)
    rows = differ = 0
    for s in range(len(ts)):
        a, n = int(ts[s]), int(nt[s])
        if a < 0 or n <= 0:
            continue
        h = np.abs(ref.resid(ids[a:a + n]))  # [T, L+1, D] float64
        want_max, want_med = h.max(axis=2), np.median(h, axis=2)
        where = f"sequence {s} (seed {seed})"
        for name in massive_ref.NAMES:
            assert np.isfinite(got[name][a:a + n]).all(), f"{name}: not finite in {where}"
        np.testing.assert_allclose(got["resid_max"][a:a + n], want_max, rtol=RTOL, atol=ATOL,
                                   err_msg=f"resid_max, {where}")
        np.testing.assert_allclose(got["resid_median"][a:a + n], want_med, rtol=RTOL, atol=ATOL,
                                   err_msg=f"resid_median, {where}")
        arg = got["resid_argmax"][a:a + n].astype(np.int64)
        assert ((arg >= 0) & (arg < h.shape[2])).all(), f"resid_argmax out of range, {where}"
        at_arg = np.take_along_axis(h, arg[:, :, None], axis=2)[:, :, 0]
        assert (at_arg >= want_max - (RTOL * want_max + ATOL)).all(), \
            f"resid_argmax points below the maximum, {where}"
        differ += int((arg != h.argmax(axis=2)).sum())
        rows += arg.size
    assert rows > 0 and differ <= 0.01 * rows, f"argmax differs in {differ} of {rows} rows"
    return rows


@pytest.mark.parametrize("backend", ["cpu", "cuda-emu"])
@pytest.mark.parametrize("name", tiny_models.ALL_MODELS)
def test_massive_matches_transformers(tiny_model, tmp_path, name, backend):
    argv = engine(backend)
    m = tiny_model(name)
    seed = SEED + tiny_models.ALL_MODELS.index(name)
    pairs, out = str(tmp_path / "pairs.jsonl"), str(tmp_path / "out.h5")
    write_pairs(pairs, m.vocab_size, seed)
    run_engine(argv, m.path, pairs, out, "resid,massive")
    assert check_against_reference(m.path, out, seed) > 0


def test_massive_only_when_asked_and_listed(tiny_model, tmp_path):
    m = tiny_model("gpt2")
    pairs, out = str(tmp_path / "pairs.jsonl"), str(tmp_path / "out.h5")
    write_pairs(pairs, m.vocab_size, SEED)
    run_engine([punctum_bin(), "run", "--threads", "2"], m.path, pairs, out, "mass,resid")
    with h5py.File(out, "r") as f:
        assert "tokens/resid_norm" in f
        assert not any("tokens/" + n in f for n in massive_ref.NAMES)
        assert "massive" not in str(f.attrs.get("opt_stats", ""))
    run_engine([punctum_bin(), "run", "--threads", "2"], m.path, pairs, out, "massive")
    with h5py.File(out, "r") as f:
        assert all("tokens/" + n in f for n in massive_ref.NAMES)
        assert "tokens/resid_norm" not in f
    p = subprocess.run([punctum_bin(), "run", "--help"], capture_output=True, text=True)
    text = p.stdout + p.stderr
    assert "massive" in text and "mean of the" in text and "two middle values" in text
