"""Sweeps that never lose work (SPEC §4, §5, §7): kill -9 / SIGINT / SIGTERM at random moments
and --resume, refusals that leave the output untouched, --strict, a full disk, a 100 MB line,
broken model directories.

The output of a running sweep is OUT.h5, an HDF5 virtual-dataset view over immutable segment
files in OUT.h5.parts/, replaced atomically at every commit; at the end it is consolidated into
one self-contained OUT.h5. These tests check the contract, not the mechanism: OUT.h5 opens in
h5py after any kill and shows only committed rows, and --resume then yields the same datasets
as an uninterrupted run.

Knobs used here (environment of punctum): PUNCTUM_COMMIT_SECONDS=0 commits after every batch
(many commits, compaction exercised); PUNCTUM_FSYNC=0 skips fsync in the kill loops (a killed
process loses nothing that was written before; fsync only matters for power loss) — one test
keeps fsync on; PUNCTUM_COMPACT_FANIN=2 and PUNCTUM_WRITER_DELAY (a pause before each dataset
a compaction merges and each step of finishing the final file) make those phases long enough
for kills to land in them. Random kill times come from a fixed seed, printed. SIGINT/SIGTERM
are sent once the process has installed its handlers (before that they end it like any
process: a limit of the engine's start-up, not of the writer).
"""
from __future__ import annotations

import json
import os
import random
import re
import resource
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from conftest import punctum_bin  # noqa: E402

SEED = int(os.environ.get("PUNCTUM_RESILIENCE_SEED", "20261125"))
N_RECORDS = 1100
BATCH = ["--batch-tokens", "160", "--threads", "1"]
WORDS = ["the", "cat", "sat", "and", "a", "dog", "ran", "over", "hill", "sun", "moon", "tree",
         "he", "saw", "carrot", "rabbit", "line", "poem"]


# ---------------------------------------------------------------------------------------------
# helpers (also used by test_merge.py and test_mpi.py)
# ---------------------------------------------------------------------------------------------

def make_pairs(path: str, n: int, seed: int = 7, bad_every: int = 97) -> str:
    """n records: pairs with b = a + "." (prefix sharing), some with targets, some without b,
    a few invalid lines (bad records) and blank lines (not records)."""
    r = random.Random(seed)
    with open(path, "w") as f:
        for i in range(n):
            if i % 50 == 17:
                f.write("\n")
            if bad_every and i % bad_every == 5:
                f.write('{"id": "broken", "a": \n')
                continue
            a = " ".join(r.choice(WORDS) for _ in range(r.randint(3, 11)))
            rec = {"id": f"p{i}", "a": a}
            if i % 11 == 4:  # equal token counts (residual patching applies): one word swapped
                rec["a"], rec["b"] = a + " cat", a + " sat"
            elif i % 7 != 3:
                rec["b"] = a + ("." if i % 3 else ",\n")
            if i % 5 == 0:
                rec["target"] = " " + r.choice(WORDS)
            f.write(json.dumps(rec) + "\n")
    return path


def env(**extra) -> dict:
    e = dict(os.environ)
    e.setdefault("OMP_NUM_THREADS", "1")
    e.setdefault("OPENBLAS_NUM_THREADS", "1")
    e.update({k: str(v) for k, v in extra.items()})
    return e


def run_args(model: str, pairs: str, out: str, *extra) -> list[str]:
    return [punctum_bin(), "run", "--model", model, "--pairs", pairs, "--out", out,
            "--progress", "never", *BATCH, *extra]


STARTUP = re.compile(r"^punctum: (rank \d+: )?(cpu|cuda) backend \(.*\), (f32|bf16|f16) compute "
                     r"\(weights (f32|bf16|f16)[^)]*\), model .* batch \d+ tokens \(.*\)")


def messages(stderr: str) -> list[str]:
    """stderr's lines without the start-up line every run prints first (SPEC §4), which must be
    there; what is left are the run's own messages."""
    lines = stderr.strip().splitlines()
    assert lines and STARTUP.match(lines[0]), f"no start-up line first:\n{stderr}"
    return lines[1:]


def run(args, expect=0, timeout=600, **envkw):
    p = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env(**envkw))
    if expect is not None:
        ok = p.returncode in expect if isinstance(expect, tuple) else p.returncode == expect
        assert ok, f"exit {p.returncode} (expected {expect}): {' '.join(args)}\n{p.stderr[-3000:]}"
    return p


def datasets(f) -> dict:
    out = {}
    f.visititems(lambda n, o: out.__setitem__(n, o) if isinstance(o, h5py.Dataset) else None)
    return out


def assert_same_h5(got: str, want: str, float_tol: float = 0.0, skip_attrs=("created", "command_line")):
    """Every dataset equal (floats: exactly, NaN == NaN, unless float_tol > 0: absolute +
    relative tolerance); root attributes equal except skip_attrs."""
    with h5py.File(got, "r") as a, h5py.File(want, "r") as b:
        da, db = datasets(a), datasets(b)
        assert sorted(da) == sorted(db), f"dataset sets differ: {sorted(set(da) ^ set(db))}"
        for k in sorted(da):
            x, y = da[k][()], db[k][()]
            assert x.shape == y.shape, f"{k}: shape {x.shape} != {y.shape}"
            assert x.dtype == y.dtype, f"{k}: dtype {x.dtype} != {y.dtype}"
            if x.dtype.kind == "f":
                if float_tol:
                    ok = np.allclose(x, y, rtol=float_tol, atol=float_tol, equal_nan=True)
                else:
                    ok = np.array_equal(x, y, equal_nan=True)
            else:
                ok = np.array_equal(x, y)
            if not ok:
                bad = np.argwhere(~np.isclose(x, y, equal_nan=True)) if x.dtype.kind == "f" else np.argwhere(x != y)
                raise AssertionError(f"{k} differs at {bad[:5].tolist()} (of {len(bad)})")
        for key in sorted(set(a.attrs) | set(b.attrs)):
            if key in skip_attrs:
                continue
            va, vb = a.attrs.get(key), b.attrs.get(key)
            assert str(va) == str(vb), f"attribute {key}: {va!r} != {vb!r}"


def check_consistent(path: str) -> int:
    """The file opens; it shows exactly committed_pairs pairs and every index points inside it.
    Returns committed_pairs."""
    with h5py.File(path, "r") as f:
        n = int(f.attrs["committed_pairs"])
        assert f["pairs/id"].shape[0] == n == f["pairs/line"].shape[0] == f["pairs/status"].shape[0]
        S = f["seqs/pair"].shape[0]
        T = f["tokens/id"].shape[0]
        seq_a, seq_b = f["pairs/seq_a"][()], f["pairs/seq_b"][()]
        assert ((seq_a >= -1) & (seq_a < S)).all() and ((seq_b >= -1) & (seq_b < S)).all()
        pair = f["seqs/pair"][()]
        assert (pair < n).all() and (np.diff(pair) >= 0).all()
        tok_start, n_tok = f["seqs/tok_start"][()], f["seqs/n_tok"][()]
        assert int(n_tok.sum()) == T
        if S:
            assert tok_start[-1] + n_tok[-1] == T
        assert (f["tokens/seq"][()] < S).all()
        lines = f["pairs/line"][()]
        assert (np.diff(lines) > 0).all()
        for d in datasets(f).values():  # every dataset reads (no missing segment)
            d[()]
    return n


@pytest.fixture(scope="module")
def model(tiny_model):
    return tiny_model("gpt2").path


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("resilience")


@pytest.fixture(scope="module")
def pairs(work):
    return make_pairs(str(work / "pairs.jsonl"), N_RECORDS)


@pytest.fixture(scope="module")
def reference(work, model, pairs):
    out = str(work / "reference.h5")
    t0 = time.time()
    run(run_args(model, pairs, out))
    print(f"[reference run: {time.time() - t0:.1f} s, seed {SEED}]")
    with h5py.File(out, "r") as f:
        assert int(f.attrs["committed_pairs"]) == N_RECORDS
        assert int(f.attrs["run_complete"]) == 1
    assert not os.path.exists(out + ".parts")
    return out


def wait_for_handlers(p, timeout=60.0):
    """Until process p catches SIGINT and SIGTERM (its /proc status SigCgt mask), or ends."""
    want = (1 << (signal.SIGINT - 1)) | (1 << (signal.SIGTERM - 1))
    deadline = time.time() + timeout
    while p.poll() is None and time.time() < deadline:
        try:
            with open(f"/proc/{p.pid}/status") as f:
                caught = int(next(l for l in f if l.startswith("SigCgt:")).split()[1], 16)
            if caught & want == want:
                return
        except (OSError, StopIteration):
            return
        time.sleep(0.005)


def interrupt_loop(model, pairs, out, sig, rng, max_interrupts, expect_code, **envkw):
    """Start the sweep, deliver `sig` after a random delay, check the file, --resume; repeat
    until a run finishes. Returns the number of interruptions."""
    n_int = 0
    first = True
    committed = []
    while True:
        args = run_args(model, pairs, out, *([] if first else ["--resume"]), *([] if not first else ["--force"]))
        p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env(**envkw))
        first = False
        delay = rng.uniform(0.05, 1.6) if n_int < max_interrupts else None
        if sig != signal.SIGKILL and delay is not None:
            wait_for_handlers(p)
        try:
            rc = p.wait(timeout=delay if delay is not None else 600)
            err = p.stderr.read()
            assert rc == 0, f"run exited {rc}: {err[-2000:]}"
            break
        except subprocess.TimeoutExpired:
            p.send_signal(sig)
            rc = p.wait(timeout=600)
            err = p.stderr.read()
        n_int += 1
        if sig == signal.SIGKILL:
            # 0: the run finished inside wait()'s last poll interval, before the signal landed
            assert rc in (-signal.SIGKILL, 0), f"exit {rc} after SIGKILL: {err[-2000:]}"
        else:
            assert rc in (expect_code, 0), f"exit {rc} after {sig.name} (expected {expect_code}): {err[-2000:]}"
            assert "Traceback" not in err and len(err.strip().splitlines()) <= 1, err
        if not os.path.exists(out):
            continue  # killed before the output was created
        n = check_consistent(out)
        committed.append(n)
        print(f"  {sig.name} after {delay:.2f}s: exit {rc}, {n} pairs committed")
        if rc == 0:
            break
    assert committed == sorted(committed), f"commits went backwards: {committed}"
    return n_int


# ---------------------------------------------------------------------------------------------
# kill -9, SIGINT, SIGTERM
# ---------------------------------------------------------------------------------------------

def test_kill9_at_random_moments_then_resume(work, model, pairs, reference):
    rng = random.Random(SEED)
    print(f"[kill -9 seed {SEED}]")
    out = str(work / "kill9.h5")
    n = interrupt_loop(model, pairs, out, signal.SIGKILL, rng, 10, None,
                       PUNCTUM_COMMIT_SECONDS=0, PUNCTUM_FSYNC=0)
    assert n >= 3
    assert not os.path.exists(out + ".parts")
    assert_same_h5(out, reference)


def _merging(out):
    """A compaction is writing its merged segment (seg-N.h5.merge.tmp)."""
    try:
        return any(n.endswith(".merge.tmp") for n in os.listdir(out + ".parts"))
    except OSError:
        return False


def _finishing(out):
    """The view holds every record but the run is not complete: the final file is being made."""
    try:
        with h5py.File(out, "r") as f:
            return int(f.attrs["committed_pairs"]) == N_RECORDS and int(f.attrs["run_complete"]) == 0
    except (OSError, KeyError):
        return False


def test_kill9_during_compaction_and_finishing_then_resume(work, model, pairs, reference):
    """kill -9 while segments are merged (fan-in 2) and while the final file is finished (the
    unfinished chunks, a resumed run's earlier rows copied as chunks, the attributes): every
    time the file opens and shows only committed rows, and --resume yields the reference."""
    rng = random.Random(SEED + 9)
    print(f"[kill -9 in compaction/finishing, seed {SEED + 9}]")
    out = str(work / "kill9-phases.h5")
    kw = dict(PUNCTUM_COMMIT_SECONDS=0, PUNCTUM_FSYNC=0, PUNCTUM_COMPACT_FANIN=2,
              PUNCTUM_WRITER_DELAY=0.01)
    hits = {"merge": 0, "finishing": 0}
    complete = True  # start afresh (--force) after a run that completed
    for attempt in range(16):
        extra = ["--force"] if complete else ["--resume"]
        p = subprocess.Popen(run_args(model, pairs, out, *extra), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, env=env(**kw))
        if attempt % 2:  # wait for the last commit, then kill while finishing
            while p.poll() is None and not _finishing(out):
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.1))
        else:
            time.sleep(rng.uniform(0.1, 1.5))
        merging, finishing = _merging(out), _finishing(out)
        complete = p.poll() is not None
        if complete:  # finished before the kill
            assert p.wait() == 0, p.stderr.read()[-2000:]
            p.stderr.close()
            assert_same_h5(out, reference)
            if hits["merge"] and hits["finishing"]:
                break
            continue
        p.send_signal(signal.SIGKILL)
        rc = p.wait(timeout=120)
        if rc == 0:  # it finished between the poll above and the signal: a complete run
            p.stderr.close()
            complete = True
            assert_same_h5(out, reference)
            continue
        assert rc == -signal.SIGKILL, p.stderr.read()[-2000:]
        p.stderr.close()
        hits["merge"] += merging
        hits["finishing"] += finishing
        n = check_consistent(out)
        print(f"  kill -9 (attempt {attempt}): {n} pairs committed"
              f"{', merging' if merging else ''}{', finishing' if finishing else ''}")
    if not complete:
        run(run_args(model, pairs, out, "--resume"), **kw)
    print(f"  kills while merging: {hits['merge']}, while finishing: {hits['finishing']}")
    assert hits["merge"] >= 1 and hits["finishing"] >= 1, hits
    assert not os.path.exists(out + ".parts")
    assert_same_h5(out, reference)


@pytest.mark.parametrize("signame,code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_signal_commits_then_resume(work, model, pairs, reference, signame, code):
    rng = random.Random(SEED + code)
    print(f"[{signame} seed {SEED + code}]")
    out = str(work / f"{signame}.h5")
    # SIGTERM keeps fsync on: the same protocol with durability
    kw = {"PUNCTUM_COMMIT_SECONDS": 0}
    if signame == "SIGINT":
        kw["PUNCTUM_FSYNC"] = 0
    n = interrupt_loop(model, pairs, out, getattr(signal, signame), rng, 5, code, **kw)
    assert n >= 2
    assert_same_h5(out, reference)


def test_signal_exit_code_and_resumable_state(work, model, pairs):
    """SIGTERM mid-run: exit 143, one line, a committed view that --resume continues."""
    out = str(work / "term.h5")
    p = subprocess.Popen(run_args(model, pairs, out, "--force"), stderr=subprocess.PIPE, text=True,
                         env=env(PUNCTUM_COMMIT_SECONDS=0, PUNCTUM_FSYNC=0))
    deadline = time.time() + 60
    while time.time() < deadline:  # wait for a few commits
        time.sleep(0.1)
        try:
            with h5py.File(out, "r") as f:
                if int(f.attrs["committed_pairs"]) >= 50:
                    break
        except (OSError, KeyError):
            pass
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=120) == 143
    assert messages(p.stderr.read()) == []
    n = check_consistent(out)
    assert 50 <= n < N_RECORDS
    with h5py.File(out, "r") as f:
        assert int(f.attrs["run_complete"]) == 0


def test_readers_see_committed_rows_during_the_run(work, model, pairs):
    """OUT.h5 opens in h5py at every moment of the run, and only ever grows."""
    out = str(work / "readers.h5")
    p = subprocess.Popen(run_args(model, pairs, out, "--force"), stderr=subprocess.PIPE, text=True,
                         env=env(PUNCTUM_COMMIT_SECONDS=0, PUNCTUM_FSYNC=0))
    seen, errors = [], []

    def reader():
        while p.poll() is None:
            if os.path.exists(out):
                try:
                    with h5py.File(out, "r") as f:
                        n = int(f.attrs["committed_pairs"])
                        assert f["pairs/id"].shape[0] == n
                        f["tokens/attn_mass"][-5:]
                        seen.append(n)
                except Exception as exc:  # noqa: BLE001
                    errors.append(repr(exc))
            time.sleep(0.02)

    t = threading.Thread(target=reader)
    t.start()
    assert p.wait(timeout=600) == 0, p.stderr.read()
    t.join()
    assert not errors, errors[:3]
    assert len(seen) >= 10 and seen == sorted(seen), seen[:20]
    check_consistent(out)


# ---------------------------------------------------------------------------------------------
# refusals: nothing touched
# ---------------------------------------------------------------------------------------------

def _digest(path):
    st = os.stat(path)
    with open(path, "rb") as f:
        return st.st_mtime_ns, st.st_size, hash(f.read())


@pytest.fixture(scope="module")
def interrupted(work, model, pairs):
    """A run stopped by SIGINT after some commits (view + parts)."""
    out = str(work / "interrupted.h5")
    p = subprocess.Popen(run_args(model, pairs, out, "--force"), stderr=subprocess.PIPE, text=True,
                         env=env(PUNCTUM_COMMIT_SECONDS=0, PUNCTUM_FSYNC=0))
    deadline = time.time() + 60
    while time.time() < deadline:
        time.sleep(0.1)
        try:
            with h5py.File(out, "r") as f:
                if int(f.attrs["committed_pairs"]) >= 30:
                    break
        except (OSError, KeyError):
            pass
    p.send_signal(signal.SIGINT)
    assert p.wait(timeout=120) == 130
    return out


@pytest.mark.parametrize("extra,option", [
    (["--topk", "5"], "--topk"),
    (["--stats", "mass,last"], "--stats"),
    (["--batch-tokens", "300"], "--batch-tokens"),
    (["--store", "f16"], "--store"),
    (["--derive-b", "append:!"], "--derive-b"),
    (["--shard", "1/2"], "--shard"),
    (["--ablate", "knockout"], "--ablate"),
    (["--patch", "resid"], "--patch"),
])
def test_resume_with_another_option_is_refused(interrupted, model, pairs, extra, option):
    before = _digest(interrupted)
    parts = sorted(os.listdir(interrupted + ".parts"))
    args = run_args(model, pairs, interrupted, "--resume")
    # the later occurrence wins (getopt): the changed option
    p = run(args + extra, expect=2)
    msg = p.stderr.strip()
    assert len(msg.splitlines()) == 1 and option in msg and "--resume" in msg, msg
    assert _digest(interrupted) == before
    assert sorted(os.listdir(interrupted + ".parts")) == parts


def test_resume_with_another_input_or_model_is_refused(work, interrupted, model, pairs, tiny_model):
    before = _digest(interrupted)
    other = str(work / "other.jsonl")
    with open(pairs) as f, open(other, "w") as g:
        g.write(f.read() + '{"a": "one more"}\n')
    p = run(run_args(model, other, interrupted, "--resume"), expect=2)
    assert "--pairs" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    p = run(run_args(tiny_model("llama_gqa").path, pairs, interrupted, "--resume"), expect=(1, 2))
    assert len(p.stderr.strip().splitlines()) == 1
    assert _digest(interrupted) == before


def test_existing_output_without_force_is_refused(work, model, pairs, reference):
    before = _digest(reference)
    p = run(run_args(model, pairs, reference), expect=2)
    assert "--force" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert _digest(reference) == before
    # not even a bad model is looked at before that
    p = run(run_args(str(work / "no-such-model"), pairs, reference), expect=2)
    assert _digest(reference) == before


def test_resume_of_a_complete_file_does_nothing(model, pairs, reference):
    before = _digest(reference)
    p = run(run_args(model, pairs, reference, "--resume"), expect=0)
    assert "already complete" in p.stderr
    assert _digest(reference) == before


def test_resume_without_output_is_a_usage_error(work, model, pairs):
    out = str(work / "never-written.h5")
    p = run(run_args(model, pairs, out, "--resume"), expect=2)
    assert "--resume" in p.stderr and not os.path.exists(out)


# ---------------------------------------------------------------------------------------------
# --strict, a full disk
# ---------------------------------------------------------------------------------------------

def test_strict_stops_at_the_first_bad_record(work, model, pairs):
    out = str(work / "strict.h5")
    p = run(run_args(model, pairs, out, "--strict", "--force"), expect=1, PUNCTUM_COMMIT_SECONDS=0)
    msg = "\n".join(messages(p.stderr))
    assert len(msg.splitlines()) == 1 and "line " in msg and "invalid JSON" in msg, msg
    n = check_consistent(out)
    with h5py.File(out, "r") as f:
        first_bad_line = 6  # record 5 is the first broken one (see make_pairs); no blank line before it
        assert n == 5 and (f["pairs/line"][()] < first_bad_line).all()
        assert (f["pairs/status"][()] == 0).all()


def test_full_disk_keeps_the_last_commit(work, model, pairs, reference):
    """A file-size limit (ulimit -f, SIGXFSZ) stands in for a full disk: a one-line error,
    exit 1, the last good commit readable; --resume without the limit finishes the run."""
    out = str(work / "full-disk.h5")
    limit = 600 * 1024

    def limit_fsize():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    p = subprocess.run(run_args(model, pairs, out, "--force"), capture_output=True, text=True, timeout=600,
                       env=env(PUNCTUM_COMMIT_SECONDS=0, PUNCTUM_FSYNC=0), preexec_fn=limit_fsize)
    assert p.returncode == 1, p.stderr
    msg = "\n".join(messages(p.stderr))
    assert len(msg.splitlines()) == 1 and "intact" in msg and "file too large" in msg, msg
    n = check_consistent(out)
    assert 0 < n < N_RECORDS
    run(run_args(model, pairs, out, "--resume"), PUNCTUM_COMMIT_SECONDS=0, PUNCTUM_FSYNC=0)
    assert_same_h5(out, reference)


# ---------------------------------------------------------------------------------------------
# hostile input
# ---------------------------------------------------------------------------------------------

def _maxrss_kb(args) -> tuple[int, subprocess.CompletedProcess]:
    """Run args in a fresh Python so RUSAGE_CHILDREN is this one child's peak RSS."""
    code = ("import resource, subprocess, sys, json; a = json.loads(sys.argv[1]); "
            "p = subprocess.run(a, capture_output=True, text=True); "
            "print(json.dumps([resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, p.returncode, p.stderr]))")
    q = subprocess.run([sys.executable, "-c", code, json.dumps(args)], capture_output=True, text=True,
                       timeout=600, env=env())
    rss, rc, err = json.loads(q.stdout)
    return rss, subprocess.CompletedProcess(args, rc, "", err)


def test_a_100MB_line_is_a_bad_record_in_bounded_memory(work, model):
    big = str(work / "big.jsonl")
    small = str(work / "small.jsonl")
    with open(big, "w") as f:
        f.write(json.dumps({"id": "x1", "a": "the cat sat"}) + "\n")
        f.write('{"id": "huge", "a": "' + "a" * (100 * 1024 * 1024) + '"}\n')
        f.write(json.dumps({"id": "x3", "a": "the dog ran", "b": "the dog ran."}) + "\n")
    with open(small, "w") as f:
        f.write(json.dumps({"id": "x1", "a": "the cat sat"}) + "\n")
    rss_big, p = _maxrss_kb(run_args(model, big, str(work / "big.h5"), "--force"))
    assert p.returncode == 0, p.stderr
    rss_small, p2 = _maxrss_kb(run_args(model, small, str(work / "small.h5"), "--force"))
    assert p2.returncode == 0, p2.stderr
    print(f"[peak RSS: {rss_big} kB with the 100 MB line, {rss_small} kB without]")
    assert rss_big - rss_small < 48 * 1024, (rss_big, rss_small)
    with h5py.File(str(work / "big.h5"), "r") as f:
        assert list(f["pairs/status"][()]) == [0, 1, 0]
        msg = f["pairs/message"][1].decode()
        assert msg.startswith("line 2:") and "longer than" in msg
        assert f["pairs/id"][2].decode() == "x3"


def _break(d, kind):
    cfg = os.path.join(d, "config.json")
    st = os.path.join(d, "model.safetensors")
    tok = os.path.join(d, "tokenizer.json")
    if kind == "no_config":
        os.remove(cfg)
    elif kind == "config_not_json":
        open(cfg, "w").write('{"model_type": ')
    elif kind == "unsupported_model_type":
        c = json.load(open(cfg))
        c["model_type"] = "bert"
        json.dump(c, open(cfg, "w"))
    elif kind == "shape_mismatch":
        c = json.load(open(cfg))
        c["n_embd"] = c["n_embd"] * 2
        json.dump(c, open(cfg, "w"))
    elif kind == "no_weights":
        os.remove(st)
    elif kind == "truncated_weights":
        os.truncate(st, 1000)
    elif kind == "huge_header_length":
        with open(st, "r+b") as f:
            f.write((2**63 - 1).to_bytes(8, "little"))
    elif kind == "header_not_json":
        with open(st, "r+b") as f:
            f.seek(8)
            f.write(b"\xff" * 16)
    elif kind == "tokenizer_not_json":
        open(tok, "w").write("garbage")
    elif kind == "tokenizer_unsupported":
        open(tok, "w").write('{"model": {"type": "WordPiece", "vocab": {}}}')


BROKEN = ["missing_dir", "no_config", "config_not_json", "unsupported_model_type", "shape_mismatch",
          "no_weights", "truncated_weights", "huge_header_length", "header_not_json",
          "tokenizer_not_json", "tokenizer_unsupported"]


@pytest.mark.parametrize("kind", BROKEN)
def test_broken_model_dir_is_one_line_and_no_output(tmp_path, model, kind):
    import shutil
    d = str(tmp_path / "model")
    if kind != "missing_dir":
        shutil.copytree(model, d)
        _break(d, kind)
    pairs = make_pairs(str(tmp_path / "p.jsonl"), 5)
    out = str(tmp_path / "out.h5")
    p = subprocess.run(run_args(d, pairs, out), capture_output=True, text=True, timeout=120, env=env())
    assert p.returncode in (1, 2), (p.returncode, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("punctum: "), p.stderr
    assert not os.path.exists(out) and not os.path.exists(out + ".parts") and not os.path.exists(out + ".tmp")
