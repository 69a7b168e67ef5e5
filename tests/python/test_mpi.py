"""`mpirun -np N punctum run` (SPEC §4): each rank takes a contiguous block of the input's
records and writes OUT.rankR.h5 with the same commit protocol as a plain run; rank 0 then
writes OUT.h5, a virtual-dataset view over the rank files with rows in input order (index
columns stored renumbered), and `punctum merge` makes it one self-contained file.

Needs a punctum built with MPI (`punctum --version` says "MPI") and mpirun; otherwise the MPI
tests are skipped, and a build without MPI is checked to refuse a launch by mpirun instead.

Rank blocks batch differently from one plain run, and the cpu backend's float statistics can
differ in the last bits with the batch composition: floats are compared with a 1e-5 tolerance
against the plain run, everything else exactly. A killed and resumed job is compared exactly
with an uninterrupted job of the same size (same blocks, same batches).
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

h5py = pytest.importorskip("h5py")

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import test_resilience as R  # noqa: E402
from conftest import punctum_bin  # noqa: E402

N = 500
TOL = 1e-5
MPIRUN = shutil.which("mpirun")


def built_with_mpi() -> bool:
    p = subprocess.run([punctum_bin(), "--version"], capture_output=True, text=True)
    return "MPI" in p.stdout


needs_mpi = pytest.mark.skipif(not MPIRUN or not built_with_mpi(),
                               reason="needs mpirun and a punctum built with MPI (cmake/mpi.cmake)")


def mpirun_args(np_: int, *args) -> list[str]:
    return [MPIRUN, "--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "-np", str(np_), *args]


def mpi_env(**kw):
    e = R.env(**kw)
    e.setdefault("OMPI_MCA_btl_vader_single_copy_mechanism", "none")  # containers without CMA
    return e


@pytest.fixture(scope="module")
def model(tiny_model):
    return tiny_model("gpt2").path


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("mpi")


@pytest.fixture(scope="module")
def pairs(work):
    return R.make_pairs(str(work / "pairs.jsonl"), N, seed=23, bad_every=61)


@pytest.fixture(scope="module")
def plain(work, model, pairs):
    out = str(work / "plain.h5")
    R.run(R.run_args(model, pairs, out, *STATS))
    return out


# the default statistics and the stat massive (its three [Ttot, L+1] columns: int32 and float)
STATS = ["--stats", "mass,last,resid,topk,massive"]
SKIP_ATTRS = ("created", "command_line", "mpi_size", "mpi_view", "rank_files", "merged_from", "device")


@needs_mpi
@pytest.mark.parametrize("np_", [2, 3])
def test_view_and_merge_equal_one_plain_run(work, model, pairs, plain, np_):
    out = str(work / f"job{np_}.h5")
    p = subprocess.run(mpirun_args(np_, *R.run_args(model, pairs, out, *STATS)), capture_output=True,
                       text=True, timeout=600, env=mpi_env())
    assert p.returncode == 0, p.stderr[-3000:]
    for r in range(np_):
        rank_file = str(work / f"job{np_}.rank{r}.h5")
        with h5py.File(rank_file, "r") as f:
            assert int(f.attrs["run_complete"]) == 1 and int(f.attrs["mpi_rank"]) == r
        assert not os.path.exists(rank_file + ".parts")
    R.check_consistent(out)
    with h5py.File(out, "r") as f:
        assert int(f.attrs["committed_pairs"]) == N and int(f.attrs["mpi_size"]) == np_
        assert f["tokens/attn_mass"].is_virtual and f["pairs/kl_ab"].is_virtual
        assert f["tokens/resid_argmax"].is_virtual and f["tokens/resid_median"].is_virtual
        assert not f["tokens/seq"].is_virtual and not f["pairs/seq_a"].is_virtual  # renumbered, stored
    R.assert_same_h5(out, plain, float_tol=TOL, skip_attrs=SKIP_ATTRS)
    merged = str(work / f"job{np_}-merged.h5")
    q = subprocess.run([punctum_bin(), "merge", "--out", merged, out], capture_output=True, text=True, env=R.env())
    assert q.returncode == 0, q.stderr
    with h5py.File(merged, "r") as f:
        assert not any(d.is_virtual for d in R.datasets(f).values())
    R.assert_same_h5(merged, plain, float_tol=TOL, skip_attrs=SKIP_ATTRS)
    # the rank files themselves merge to the same
    merged2 = str(work / f"job{np_}-merged-ranks.h5")
    ranks = [str(work / f"job{np_}.rank{r}.h5") for r in reversed(range(np_))]
    q = subprocess.run([punctum_bin(), "merge", "--out", merged2, *ranks], capture_output=True, text=True, env=R.env())
    assert q.returncode == 0, q.stderr
    R.assert_same_h5(merged2, merged, skip_attrs=SKIP_ATTRS + ("input_offset", "input_line", "input_index"))


def _rank_pid(mpirun_pid: int, rank: int):
    """The pid of a rank: a child of mpirun whose environment says OMPI_COMM_WORLD_RANK=rank."""
    try:
        children = open(f"/proc/{mpirun_pid}/task/{mpirun_pid}/children").read().split()
    except OSError:
        return None
    for c in children:
        try:
            env = open(f"/proc/{c}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        if f"OMPI_COMM_WORLD_RANK={rank}".encode() in env:
            return int(c)
    return None


@needs_mpi
def test_kill_one_rank_then_resume(work, model, pairs):
    np_ = 3
    ref = str(work / "uninterrupted.h5")
    args = R.run_args(model, pairs, ref)
    assert subprocess.run(mpirun_args(np_, *args), capture_output=True, env=mpi_env()).returncode == 0

    out = str(work / "killed.h5")
    kw = dict(PUNCTUM_COMMIT_SECONDS=0, PUNCTUM_FSYNC=0)
    job = subprocess.Popen(mpirun_args(np_, *R.run_args(model, pairs, out)), stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True, env=mpi_env(**kw))
    victim = None
    rank1 = str(work / "killed.rank1.h5")
    deadline = time.time() + 120
    while time.time() < deadline and job.poll() is None:
        time.sleep(0.05)
        try:
            with h5py.File(rank1, "r") as f:
                if int(f.attrs["committed_pairs"]) >= 20:
                    victim = _rank_pid(job.pid, 1)
                    break
        except (OSError, KeyError):
            pass
    if victim is None:
        job.wait()
        pytest.skip("the job finished before rank 1 could be killed")
    os.kill(victim, signal.SIGKILL)
    rc = job.wait(timeout=300)
    err = job.stderr.read()
    assert rc != 0, err
    n1 = R.check_consistent(rank1)
    assert 20 <= n1
    # the same command again, with --resume: rank 0 says what it resumes; the job completes
    p = subprocess.run(mpirun_args(np_, *R.run_args(model, pairs, out, "--resume")), capture_output=True, text=True,
                       timeout=600, env=mpi_env(**kw))
    assert p.returncode == 0, p.stderr[-3000:]
    assert "rank 1 (shard 1/3" in p.stderr, p.stderr
    R.check_consistent(out)
    R.assert_same_h5(out, ref, skip_attrs=SKIP_ATTRS)
    # another job size is refused, naming it
    p = subprocess.run(mpirun_args(2, *R.run_args(model, pairs, out, "--resume")), capture_output=True, text=True,
                       timeout=600, env=mpi_env())
    assert p.returncode != 0 and "mpirun -np" in p.stderr


@needs_mpi
def test_shard_with_mpirun_is_refused(work, model, pairs):
    out = str(work / "shard-mpi.h5")
    p = subprocess.run(mpirun_args(2, *R.run_args(model, pairs, out, "--shard", "0/2")), capture_output=True,
                       text=True, timeout=300, env=mpi_env())
    assert p.returncode != 0 and "--shard" in p.stderr
    assert not os.path.exists(str(work / "shard-mpi.rank0.h5"))


@pytest.mark.skipif(built_with_mpi(), reason="only a build without MPI refuses a launcher")
@pytest.mark.parametrize("var", ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"])
def test_build_without_mpi_refuses_a_launcher(work, model, pairs, var):
    out = str(work / f"no-mpi-{var}.h5")
    p = subprocess.run(R.run_args(model, pairs, out), capture_output=True, text=True, timeout=120,
                       env=R.env(**{var: "3"}))
    assert p.returncode == 2
    assert "without MPI" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert not os.path.exists(out)
    # a launcher with one process is a plain run
    p = subprocess.run(R.run_args(model, pairs, out), capture_output=True, text=True, timeout=300,
                       env=R.env(**{var: "1"}))
    assert p.returncode == 0, p.stderr
