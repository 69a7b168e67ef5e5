"""Shared fixtures for the punctum reference tests.

- ``tiny_model(name)``: builds (once per session) a tiny random HF model; see tiny_models.py.
  Set PUNCTUM_TEST_MODELS=/some/dir to keep the models between sessions (rebuilt only if
  the directory lacks them).
- ``reference(name)``: the float64 reference (reference.Reference) for that model, cached.
- ``punctum``: runs the engine binary ($PUNCTUM_BIN, default <repo>/build/punctum). A
  missing binary FAILS the test that needs it (it is never skipped).
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
# this checkout's analysis package first: a venv shared between checkouts may have another
# one installed (editable) and the tests must test this one
for _p in (os.path.join(os.path.dirname(os.path.dirname(HERE)), "python"), HERE):
    if _p not in sys.path:
        sys.path.insert(0, _p)
_PKG = os.path.join(os.path.dirname(os.path.dirname(HERE)), "python")  # ... and `python -m punctum`
os.environ["PYTHONPATH"] = os.pathsep.join(
    [_PKG] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != _PKG])

import tiny_models  # noqa: E402

# Under ASan + UBSan (PT_SANITIZE=1 scripts/test.sh) the end-to-end sweeps through the CUDA
# emulation build take minutes each; they run in the plain suite, and the emulated kernels
# themselves run under ASan in ctest's op table (test_workstation.py decides for itself).
SANITIZED = os.environ.get("PT_SANITIZE") == "1" or "ASAN_OPTIONS" in os.environ


REPO = os.path.dirname(os.path.dirname(HERE))
DEFAULT_BIN = os.path.join(REPO, "build", "punctum")
THREADS = os.environ.get("PUNCTUM_TEST_THREADS", "2")
RUN_TIMEOUT = float(os.environ.get("PUNCTUM_TEST_TIMEOUT", "300"))


def punctum_bin() -> str:
    return os.environ.get("PUNCTUM_BIN") or DEFAULT_BIN


def pytest_configure(config):
    try:
        import torch
        torch.set_num_threads(1)
    except Exception:  # pragma: no cover
        pass


def pytest_report_header(config):
    seeds = ", ".join(f"{k}={v}" for k, v in tiny_models.SEEDS.items())
    b = punctum_bin()
    state = "present" if os.access(b, os.X_OK) else "MISSING"
    return [f"punctum binary: {b} ({state})", f"tiny model torch seeds: {seeds}"]


@pytest.fixture(scope="session")
def models_root(tmp_path_factory):
    d = os.environ.get("PUNCTUM_TEST_MODELS")
    if d:
        os.makedirs(d, exist_ok=True)
        return d
    return str(tmp_path_factory.mktemp("tiny_models"))


_MODELS: dict = {}
_REFS: dict = {}


@pytest.fixture(scope="session")
def tiny_model(models_root):
    def get(name: str) -> tiny_models.TinyModel:
        if name not in _MODELS:
            m = tiny_models.build(name, models_root)
            print(f"[tiny model {name}: seed {m.seed}, {m.path}]")
            _MODELS[name] = m
        return _MODELS[name]
    return get


@pytest.fixture(scope="session")
def reference(tiny_model):
    import reference as ref_mod

    def get(name: str) -> "ref_mod.Reference":
        if name not in _REFS:
            _REFS[name] = ref_mod.Reference(tiny_model(name).path)
        return _REFS[name]
    return get


class Punctum:
    def __init__(self, path: str):
        self.path = path

    def __call__(self, *args, expect=0, timeout=RUN_TIMEOUT, threads=True):
        """Run `punctum ARGS...`; `expect`: an exit code, a tuple of allowed codes, or None."""
        argv = [self.path] + [str(a) for a in args]
        if threads and args and args[0] == "run" and "--threads" not in args:
            argv += ["--threads", THREADS]
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", THREADS)
        env.setdefault("OPENBLAS_NUM_THREADS", "1")
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
        if expect is not None:
            ok = p.returncode in expect if isinstance(expect, tuple) else p.returncode == expect
            if not ok:
                pytest.fail(f"punctum exited {p.returncode} (expected {expect})\n"
                            f"command: {' '.join(argv)}\nstdout:\n{p.stdout[-3000:]}\n"
                            f"stderr:\n{p.stderr[-3000:]}", pytrace=False)
        return p

    def run(self, model_dir, pairs, out, *extra, expect=0, force=True, **kw):
        args = ["run", "--model", model_dir, "--pairs", pairs, "--out", out]
        if force:
            args.append("--force")
        return self(*args, *extra, expect=expect, **kw)


@pytest.fixture(scope="session")
def punctum():
    b = punctum_bin()
    if not (os.path.isfile(b) and os.access(b, os.X_OK)):
        pytest.fail(f"punctum engine binary not found or not executable: {b} "
                    f"(build it: cmake -S . -B build && cmake --build build, or set PUNCTUM_BIN)",
                    pytrace=False)
    return Punctum(b)


def pytest_collection_modifyitems(config, items):
    skip_emu = pytest.mark.skip(reason="emulated end-to-end sweep: runs in the plain suite, not under ASan")
    for it in items:
        if "punctum" in getattr(it, "fixturenames", ()):
            it.add_marker(pytest.mark.engine)
        if SANITIZED and "emu" in it.name and "test_workstation.py" not in it.nodeid:
            it.add_marker(skip_emu)
