"""Installing and packaging (issue 19): `cmake --install`, the .deb, the man page, the version.

Fast (every run):
- the version: `punctum --version` is `<VERSION>+g<commit>[-dirty]`, the commit being the
  checkout's HEAD; cmake/gen-version.cmake on scratch repositories gives -dirty exactly for a
  modified tracked file or an untracked file where sources are globbed, the commit of a
  `git archive` tarball (export-subst), +unknown without either, and rewrites its outputs only
  when the string changes; the Python package and pyproject carry the same semantic version;
- resuming: a file started by another build keeps that build's punctum_version and lists the
  resuming build in punctum_version_resumed (a rebuilt binary resumes its own files);
- the build under test ($PUNCTUM_BIN's build folder), `cmake --install`ed into a temporary
  prefix: the installed punctum runs `--version` and a one-pair sweep from there with no build
  folder on PATH and none in its run-time path, and writes what the built binary writes; the
  installed Python package imports from the prefix and reads the file; punctum-verify-model
  finds the punctum next to it; `man -l` renders the installed page, which documents every
  option of `punctum --help` and every `punctum CMD --help`;
- the .deb metadata of that build: the CUDA runtime is a dependency, and the description says
  so, exactly when the build has the cuda backend.

Slow (the full suite; `-m "not slow"` leaves them out):
- a fresh configure and build (no CUDA, only punctum and the man page) of a scratch copy of
  this tree with one tracked file edited: its version ends in -dirty, in `--version` and in the
  file it writes; installed into a prefix it sweeps with its build and source folders renamed
  away; committing the edit and building again (no re-configure) drops -dirty and names the
  new commit;
- the .deb of that build (cpack): version and fields, `dpkg -x` into a scratch root, every
  shared library the binary loads provided by a declared dependency (or their dependencies)
  or by the base system (Essential / Priority required), `apt-get install -s ./DEB` resolving
  its dependencies (where apt has package lists), the unpacked binary's `--version` and
  a one-pair sweep, `man -l` on its page, the Python package from its dist-packages;
- a run started by the dirty installed build and resumed by the rebuilt one records both.
"""
from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

h5py = pytest.importorskip("h5py")

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from conftest import REPO, punctum_bin  # noqa: E402

GEN_VERSION = os.path.join(REPO, "cmake", "gen-version.cmake")
SEMVER = open(os.path.join(REPO, "VERSION")).readline().strip()
VERSION_RE = re.compile(r"^(\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?)\+(g[0-9a-f]{12}(-dirty)?|unknown)$")
PAIR = {"id": "p1", "a": "the cat sat on the mat", "b": "the cat sat on the mat."}
GIT_ID = ["-c", "user.name=punctum test", "-c", "user.email=test@punctum.invalid",
          "-c", "commit.gpgsign=false"]


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

def sh(argv, expect=0, timeout=900, **kw) -> subprocess.CompletedProcess:
    p = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout, **kw)
    if expect is not None and p.returncode != expect:
        pytest.fail(f"{' '.join(map(str, argv))}: exit {p.returncode} (expected {expect})\n"
                    f"stdout:\n{p.stdout[-3000:]}\nstderr:\n{p.stderr[-3000:]}", pytrace=False)
    return p


def plain_env(**extra) -> dict:
    """The environment of a user who installed punctum: system PATH (plus `extra_path`), no
    build folder, no PYTHONPATH, one thread."""
    e = {k: v for k, v in os.environ.items()
         if k not in ("PYTHONPATH", "PUNCTUM_BIN", "PUNCTUM_EMU_BIN", "LD_LIBRARY_PATH")}
    path = extra.pop("extra_path", None)
    e["PATH"] = (f"{path}:" if path else "") + "/usr/local/bin:/usr/bin:/bin"
    e.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    e.update({k: str(v) for k, v in extra.items()})
    return e


def version_of(binary) -> str:
    out = sh([binary, "--version"], env=plain_env()).stdout
    m = re.match(r"^punctum (\S+) \(", out)
    assert m, f"unexpected --version output: {out!r}"
    return m.group(1)


def sweep(binary, model, work, name, *extra, expect=0, cwd=None) -> str:
    """One pair through `binary run` (cpu, one thread) into WORK/NAME.h5."""
    pairs = os.path.join(work, f"{name}.jsonl")
    if not os.path.exists(pairs):
        with open(pairs, "w") as f:
            f.write(json.dumps(PAIR) + "\n")
    out = os.path.join(work, f"{name}.h5")
    sh([binary, "run", "--model", model, "--pairs", pairs, "--out", out, "--backend", "cpu",
        "--threads", "1", "--progress", "never", "--force", *extra],
       expect=expect, cwd=cwd or work, env=plain_env())
    return out


def read_sweep(path) -> dict:
    with h5py.File(path, "r") as f:
        n = int(f.attrs["committed_pairs"])
        return {"attrs": {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()},
                "n": n, "status": f["pairs/status"][:n].tolist(),
                "kl_ab": f["pairs/kl_ab"][:n].tolist(), "js": f["pairs/js"][:n].tolist(),
                "attn_mass": f["tokens/attn_mass"][:].tolist()}


def check_one_pair(path, version, like=None):
    """The sweep finished its one pair, names `version`, and (given `like`, the same sweep by
    another binary of the same code) computed exactly the same numbers."""
    r = read_sweep(path)
    assert r["n"] == 1 and r["status"] == [0], r
    assert r["attrs"]["run_complete"] == 1
    assert r["attrs"]["punctum_version"] == version
    assert r["kl_ab"][0] > 0 and r["js"][0] > 0  # "a" and "a." predict differently
    if like is not None:
        o = read_sweep(like)
        for k in ("kl_ab", "js", "attn_mass"):
            assert r[k] == o[k], f"{k} differs from the build's own output"
    return r


def help_options(binary) -> set:
    """Every --option named by `punctum --help` and `punctum CMD --help` (stdout or stderr)."""
    main = sh([binary, "--help"], env=plain_env()).stdout
    cmds = sorted(set(re.findall(r"^\s+punctum ([a-z]+)", main, re.M)))
    assert {"run", "inspect", "merge", "tokenize"} <= set(cmds), main
    opts = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", main))
    for c in cmds:
        p = sh([binary, c, "--help"], env=plain_env())
        opts |= set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", p.stdout + p.stderr))
    assert "--batch-tokens" in opts and "--allow-partial" in opts, opts
    return opts


def check_man_page(page, binary):
    """`man -l` renders the page: the sections, the version and every option of the help."""
    assert os.path.isfile(page), f"no man page at {page}"
    text = sh(["man", "-l", page], env=plain_env(MANWIDTH=250, LANG="C.UTF-8")).stdout
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "EXIT STATUS", "ENVIRONMENT"):
        assert re.search(rf"^{section}$", text, re.M), f"{page}: no {section} section\n{text}"
    for cmd in ("run", "inspect", "merge", "tokenize"):
        assert re.search(rf"^\s+punctum {cmd}$", text, re.M), f"{page}: no punctum {cmd}"
    missing = sorted(o for o in help_options(binary) if o not in text)
    assert not missing, f"{page} lacks options that --help lists: {missing}"
    assert version_of(binary) in text
    return text


def check_runpath(binary, *forbidden):
    d = sh(["readelf", "-d", binary]).stdout
    for line in d.splitlines():
        if "RPATH" in line or "RUNPATH" in line:
            for bad in forbidden:
                assert bad not in line, f"{binary}: run-time path points into {bad}: {line}"


def check_python_package(pydir, h5, report=False):
    """The installed analysis package imports from `pydir` (not the checkout) and reads h5;
    with `report`, its HTML report names the versions that wrote h5 (returns the HTML)."""
    code = ("import punctum, sys; f = punctum.open(sys.argv[1]); "
            "print(punctum.__file__); print(len(f.pairs))")
    p = sh([sys.executable, "-c", code, h5], env=plain_env(PYTHONPATH=pydir), cwd="/")
    where, n = p.stdout.split()
    assert where.startswith(pydir), where
    assert n == "1"
    if report:
        html = h5 + ".html"
        sh([sys.executable, "-m", "punctum", "report", h5, "--out", html],
           env=plain_env(PYTHONPATH=pydir, MPLBACKEND="Agg"), cwd="/")
        text = open(html, encoding="utf-8").read()
        assert read_sweep(h5)["attrs"]["punctum_version"] in text
        return text
    return None


def git(repo, *args, **kw) -> str:
    return sh(["git", *GIT_ID, "-C", repo, *args], **kw).stdout.strip()


def gen_version(src, *defs) -> str:
    p = sh(["cmake", f"-DSRC={src}", *defs, "-P", GEN_VERSION])
    return p.stdout.strip()


def build_dir_of(binary) -> str:
    d = os.path.dirname(os.path.abspath(binary))
    if not os.path.isfile(os.path.join(d, "cmake_install.cmake")):
        pytest.fail(f"{binary} is not in a CMake build folder (no cmake_install.cmake)",
                    pytrace=False)
    return d


def cache_value(build, key) -> str:
    with open(os.path.join(build, "CMakeCache.txt")) as f:
        for line in f:
            if line.startswith(key + ":"):
                return line.split("=", 1)[1].strip()
    return ""


@pytest.fixture(scope="module")
def model(tiny_model):
    return tiny_model("gpt2").path  # carries a tokenizer.json: the pair is text


# ---------------------------------------------------------------------------------------------
# the version
# ---------------------------------------------------------------------------------------------

def test_version_names_the_commit(punctum):
    v = version_of(punctum.path)
    m = VERSION_RE.match(v)
    assert m and m.group(1) == SEMVER, f"{v}: not {SEMVER}+g<12 hex>[-dirty]"
    if os.path.exists(os.path.join(REPO, ".git")) and shutil.which("git"):
        head = git(REPO, "rev-parse", "HEAD")[:12]
        assert m.group(2).startswith("g" + head), \
            f"{punctum.path} says {v} but the checkout is at {head}: rebuild it"


def test_python_package_has_the_same_semantic_version():
    init = open(os.path.join(REPO, "python", "punctum", "__init__.py")).read()
    pyproject = open(os.path.join(REPO, "python", "pyproject.toml")).read()
    assert re.search(rf'^__version__ = "{re.escape(SEMVER)}"$', init, re.M), "python/punctum/__init__.py"
    assert re.search(rf'^version = "{re.escape(SEMVER)}"$', pyproject, re.M), "python/pyproject.toml"


@pytest.fixture
def scratch_repo(tmp_path):
    """A tiny git repository with VERSION, a tracked src/a.c, cmake/git-commit.txt marked for
    export-subst, and build*/ ignored."""
    r = tmp_path / "repo"
    (r / "src").mkdir(parents=True)
    (r / "cmake").mkdir()
    (r / "VERSION").write_text("1.2.3\n")
    (r / "src" / "a.c").write_text("int a;\n")
    (r / "README").write_text("hello\n")
    shutil.copy(os.path.join(REPO, "cmake", "git-commit.txt"), r / "cmake" / "git-commit.txt")
    shutil.copy(os.path.join(REPO, ".gitattributes"), r / ".gitattributes")
    (r / ".gitignore").write_text("/build*/\n*.o\n")
    sh(["git", "init", "-q", str(r)])
    git(str(r), "add", "-A")
    git(str(r), "commit", "-q", "-m", "one")
    return str(r)


def test_gen_version_dirty_exactly_when_the_tree_differs(scratch_repo):
    r = scratch_repo
    head = git(r, "rev-parse", "HEAD")
    clean = f"1.2.3+g{head[:12]}"
    assert gen_version(r) == clean
    os.makedirs(os.path.join(r, "build"))
    for name in ("build/x.c", "src/b.o", "notes.txt"):  # ignored, or not where sources are globbed
        open(os.path.join(r, name), "w").write("x\n")
    assert gen_version(r) == clean
    open(os.path.join(r, "src", "new.c"), "w").write("int b;\n")  # would be compiled in
    assert gen_version(r) == clean + "-dirty"
    os.remove(os.path.join(r, "src", "new.c"))
    open(os.path.join(r, "README"), "a").write("edit\n")  # a tracked file, any directory
    assert gen_version(r) == clean + "-dirty"
    git(r, "add", "README")  # staged only
    assert gen_version(r) == clean + "-dirty"
    git(r, "commit", "-q", "-m", "two")
    assert gen_version(r) == f"1.2.3+g{git(r, 'rev-parse', 'HEAD')[:12]}"
    assert gen_version(r, "-DCOMMIT=ABCDEF0123456789abcdef") == "1.2.3+gabcdef012345"


def test_gen_version_tarballs(scratch_repo, tmp_path):
    r = scratch_repo
    head = git(r, "rev-parse", "HEAD")
    # `git archive` substitutes the commit into cmake/git-commit.txt
    tar = tmp_path / "src.tar"
    git(r, "archive", "-o", str(tar), "HEAD")
    out = tmp_path / "unpacked"
    out.mkdir()
    sh(["tar", "-xf", tar, "-C", out])
    assert gen_version(str(out)) == f"1.2.3+g{head[:12]}"
    # a plain copy (no .git, git-commit.txt unsubstituted)
    plain = tmp_path / "plain"
    shutil.copytree(r, plain, ignore=shutil.ignore_patterns(".git"))
    assert open(plain / "cmake" / "git-commit.txt").read().startswith("$Format")
    assert gen_version(str(plain)) == "1.2.3+unknown"
    (plain / "VERSION").write_text("1.2\n")
    p = sh(["cmake", f"-DSRC={plain}", "-P", GEN_VERSION], expect=None)
    assert p.returncode != 0 and "not a semantic version" in p.stderr


def test_gen_version_rewrites_its_outputs_only_on_change(scratch_repo, tmp_path):
    c, t = tmp_path / "v.c", tmp_path / "v.txt"
    defs = [f"-DOUT_C={c}", f"-DOUT_TXT={t}"]
    gen_version(scratch_repo, *defs)
    v = t.read_text().strip()
    assert VERSION_RE.match(v) and f'const char pt_version[] = "{v}";' in c.read_text()
    os.utime(c, (1, 1))
    os.utime(t, (1, 1))
    gen_version(scratch_repo, *defs)
    assert os.stat(c).st_mtime == 1 and os.stat(t).st_mtime == 1  # nothing recompiles
    open(os.path.join(scratch_repo, "README"), "a").write("edit\n")
    gen_version(scratch_repo, *defs)
    assert t.read_text().strip() == v + "-dirty" and os.stat(c).st_mtime > 1


# ---------------------------------------------------------------------------------------------
# resuming with another build
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("started,resumed_before,expect_resumed,report", [
    ("0.0.9+g111111111111", None, "{now}", False),                         # another build resumes
    ("0.0.9+g111111111111", "0.0.9+g222222222222", "0.0.9+g222222222222,{now}", True),
    ("0.0.9+g111111111111", "0.0.9+g222222222222,{now}", "0.0.9+g222222222222,{now}", False),
    ("{now}", None, None, False),                                          # its own file
])
def test_resume_by_another_build_keeps_both_versions(punctum, model, tmp_path, started,
                                                     resumed_before, expect_resumed, report):
    now = version_of(punctum.path)
    work = str(tmp_path)
    with open(os.path.join(work, "r.jsonl"), "w") as f:  # --strict stops at the bad line
        f.write(json.dumps(PAIR) + "\n" + '{"id": "bad", "a": \n' + json.dumps(PAIR) + "\n")
    out = sweep(punctum.path, model, work, "r", "--strict", expect=1)
    with h5py.File(out, "r+") as f:
        assert f.attrs["run_complete"] == 0 and f.attrs["punctum_version"] == now
        f.attrs["punctum_version"] = started.format(now=now)
        if resumed_before:
            f.attrs["punctum_version_resumed"] = resumed_before.format(now=now)
    sh([punctum.path, "run", "--model", model, "--pairs", os.path.join(work, "r.jsonl"),
        "--out", out, "--backend", "cpu", "--threads", "1", "--progress", "never", "--resume"],
       env=plain_env())
    r = read_sweep(out)
    assert r["attrs"]["run_complete"] == 1 and r["status"] == [0, 1, 0]
    assert r["attrs"]["punctum_version"] == started.format(now=now)
    got = r["attrs"].get("punctum_version_resumed")
    assert got == (expect_resumed.format(now=now) if expect_resumed else None)
    if report:  # the HTML report (this checkout's python/) says so too
        html = out + ".html"
        sh([sys.executable, "-m", "punctum", "report", out, "--out", html],
           env=plain_env(PYTHONPATH=os.path.join(REPO, "python"), MPLBACKEND="Agg"))
        text = open(html, encoding="utf-8").read()
        assert f"by punctum {started.format(now=now)}" in text and f"resumed by {got}" in text


# ---------------------------------------------------------------------------------------------
# the build under test, installed
# ---------------------------------------------------------------------------------------------

def test_install_of_this_build(punctum, model, tmp_path):
    build = build_dir_of(punctum.path)
    prefix = str(tmp_path / "prefix")
    sh(["cmake", "--install", build, "--prefix", prefix])
    for f in ("bin/punctum", "bin/punctum-verify-model", "include/punctum/common.h",
              "include/punctum/backend.h", "lib/python3/dist-packages/punctum/__init__.py",
              "share/man/man1/punctum.1", "share/doc/punctum/CHANGELOG.md",
              "share/doc/punctum/README.md", "share/doc/punctum/examples/pairs.jsonl"):
        assert os.path.isfile(os.path.join(prefix, f)), f"not installed: {f}"
    assert os.access(os.path.join(prefix, "bin", "punctum-verify-model"), os.X_OK)
    installed = os.path.join(prefix, "bin", "punctum")
    check_runpath(installed, build, REPO)
    assert version_of(installed) == version_of(punctum.path)

    work = str(tmp_path / "work")
    os.makedirs(work)
    ours = sweep(punctum.path, model, work, "built")
    # through PATH, from an unrelated directory, with the prefix as the only punctum on it
    pairs = os.path.join(work, "built.jsonl")
    h5 = os.path.join(work, "installed.h5")
    sh(["punctum", "run", "--model", model, "--pairs", pairs, "--out", h5, "--backend", "cpu",
        "--threads", "1", "--progress", "never"], cwd=work,
       env=plain_env(extra_path=os.path.dirname(installed)))
    check_one_pair(h5, version_of(installed), like=ours)

    check_python_package(os.path.join(prefix, "lib", "python3", "dist-packages"), h5, report=True)
    p = sh([os.path.join(prefix, "bin", "punctum-verify-model"), "--help"], env=plain_env())
    assert installed in p.stdout.replace("\n", "").replace(" ", ""), p.stdout
    check_man_page(os.path.join(prefix, "share", "man", "man1", "punctum.1"), installed)


def test_deb_dependencies_follow_the_cuda_backend(punctum):
    build = build_dir_of(punctum.path)
    cfg = open(os.path.join(build, "CPackConfig.cmake")).read()

    def cpack(var):
        m = re.search(rf'^set\({var} "((?:[^"\\]|\\.)*)"\)', cfg, re.M)
        return m.group(1) if m else ""
    depends, desc = cpack("CPACK_DEBIAN_PACKAGE_DEPENDS"), cpack("CPACK_DEBIAN_PACKAGE_DESCRIPTION")
    assert cpack("CPACK_DEBIAN_PACKAGE_SHLIBDEPS") == "ON"
    assert cpack("CPACK_GENERATOR") == "DEB" and cpack("CPACK_PACKAGE_NAME") == "punctum"
    if cache_value(build, "PT_CUDA_BACKEND_BUILT") == "ON":
        assert "cudart" in depends and "cublas" in depends, depends
        assert "has the cuda backend" in desc and "CUDA runtime" in desc, desc
    else:
        assert "cuda" not in depends.lower(), depends
        assert "has no cuda backend" in desc, desc


# ---------------------------------------------------------------------------------------------
# slow: a fresh build of a scratch copy, installed and packaged
# ---------------------------------------------------------------------------------------------

def snapshot(dst):
    """This tree as it is (tracked and untracked files, not ignored ones) in a new git
    repository at dst with one commit."""
    files = sh(["git", "-C", REPO, "ls-files", "-co", "--exclude-standard", "-z"]).stdout
    for rel in filter(None, files.split("\0")):
        src = os.path.join(REPO, rel)
        if os.path.isfile(src):
            os.makedirs(os.path.dirname(os.path.join(dst, rel)), exist_ok=True)
            shutil.copy2(src, os.path.join(dst, rel))
    sh(["git", "init", "-q", dst])
    git(dst, "add", "-A")
    git(dst, "commit", "-q", "-m", "snapshot")


@pytest.fixture(scope="module")
def fresh(tmp_path_factory, model):
    """A scratch copy of the tree, one tracked file edited, configured without CUDA, punctum and
    the man page built, installed into a prefix, and a one-pair sweep by the build."""
    if not shutil.which("git") or not os.path.exists(os.path.join(REPO, ".git")):
        pytest.fail("the fresh-build tests copy the checkout with git", pytrace=False)
    root = tmp_path_factory.mktemp("fresh")
    ns = type("Fresh", (), {})()
    ns.src, ns.build, ns.prefix, ns.work = (str(root / d) for d in ("src", "build", "prefix", "work"))
    os.makedirs(ns.work)
    snapshot(ns.src)
    ns.commit1 = git(ns.src, "rev-parse", "HEAD")[:12]
    with open(os.path.join(ns.src, "README.md"), "a") as f:
        f.write("\nAn uncommitted edit.\n")
    sh(["cmake", "-S", ns.src, "-B", ns.build, "-DCMAKE_BUILD_TYPE=Release", "-DPT_CUDA=OFF",
        "-DPT_CUDA_EMU=OFF"])
    sh(["nice", "cmake", "--build", ns.build, "-j2", "--target", "punctum", "punctum-man"])
    ns.bin = os.path.join(ns.build, "punctum")
    ns.dirty_version = version_of(ns.bin)
    sh(["cmake", "--install", ns.build, "--prefix", ns.prefix])
    ns.built_h5 = sweep(ns.bin, model, ns.work, "built")
    ns.model = model
    return ns


@pytest.fixture(scope="module")
def fresh_committed(fresh):
    """`fresh` after committing the edit and building again, without re-configuring."""
    cache = os.path.join(fresh.build, "CMakeCache.txt")
    before = os.stat(cache).st_mtime
    git(fresh.src, "commit", "-q", "-a", "-m", "the edit")
    fresh.commit2 = git(fresh.src, "rev-parse", "HEAD")[:12]
    sh(["nice", "cmake", "--build", fresh.build, "-j2", "--target", "punctum"])
    assert os.stat(cache).st_mtime == before, "the build re-configured"
    fresh.clean_version = version_of(fresh.bin)
    return fresh


@pytest.mark.slow
def test_fresh_build_of_a_dirty_tree_installs_and_says_dirty(fresh):
    assert fresh.dirty_version == f"{SEMVER}+g{fresh.commit1}-dirty"
    check_one_pair(fresh.built_h5, fresh.dirty_version)
    installed = os.path.join(fresh.prefix, "bin", "punctum")
    check_runpath(installed, fresh.build, fresh.src)
    # nothing of the build or the source is reachable while the installed program runs
    os.rename(fresh.build, fresh.build + ".away")
    os.rename(fresh.src, fresh.src + ".away")
    try:
        assert version_of(installed) == fresh.dirty_version
        h5 = os.path.join(fresh.work, "installed.h5")
        sh(["punctum", "run", "--model", fresh.model, "--pairs",
            os.path.join(fresh.work, "built.jsonl"), "--out", h5, "--backend", "cpu", "--threads",
            "1", "--progress", "never"], cwd=fresh.work,
           env=plain_env(extra_path=os.path.join(fresh.prefix, "bin")))
        r = check_one_pair(h5, fresh.dirty_version, like=fresh.built_h5)
        assert r["attrs"]["punctum_version"].endswith("-dirty")
        check_python_package(os.path.join(fresh.prefix, "lib", "python3", "dist-packages"), h5)
        check_man_page(os.path.join(fresh.prefix, "share", "man", "man1", "punctum.1"), installed)
    finally:
        os.rename(fresh.build + ".away", fresh.build)
        os.rename(fresh.src + ".away", fresh.src)


@pytest.mark.slow
def test_fresh_build_follows_a_commit_without_reconfigure(fresh_committed):
    f = fresh_committed
    assert f.commit2 != f.commit1
    assert f.clean_version == f"{SEMVER}+g{f.commit2}"
    assert sweep(f.bin, f.model, f.work, "clean") and \
        read_sweep(os.path.join(f.work, "clean.h5"))["attrs"]["punctum_version"] == f.clean_version


@pytest.mark.slow
def test_resume_across_builds(fresh_committed):
    """Started by the dirty installed build, stopped at a bad record, resumed by the rebuilt
    one: accepted, and the file names both."""
    f = fresh_committed
    pairs = os.path.join(f.work, "strict.jsonl")
    with open(pairs, "w") as fh:
        fh.write(json.dumps(PAIR) + "\n" + '{"id": "bad", "a": \n' + json.dumps(PAIR) + "\n")
    out = os.path.join(f.work, "strict.h5")
    base = ["run", "--model", f.model, "--pairs", pairs, "--out", out, "--backend", "cpu",
            "--threads", "1", "--progress", "never"]
    sh([os.path.join(f.prefix, "bin", "punctum"), *base, "--strict"], expect=1, env=plain_env())
    sh([f.bin, *base, "--resume"], env=plain_env())
    a = read_sweep(out)["attrs"]
    assert a["run_complete"] == 1
    assert a["punctum_version"] == f.dirty_version
    assert a["punctum_version_resumed"] == f.clean_version


# ---- the .deb -----------------------------------------------------------------------------------

def dpkg_owner(path):
    """The installed package that ships `path` (merged /usr: try both spellings)."""
    cands = []
    for p in (path, os.path.realpath(path)):
        cands += [p, p[4:] if p.startswith("/usr/lib/") else "/usr" + p if p.startswith("/lib") else p]
    for c in dict.fromkeys(cands):
        r = subprocess.run(["dpkg-query", "-S", c], capture_output=True, text=True)
        if r.returncode == 0:
            return r.stdout.split(":", 1)[0].split(",")[0].strip()
    return None


def parse_depends(field):
    """"a (>= 1), b | c" -> [["a"], ["b", "c"]]"""
    groups = []
    for g in filter(None, (x.strip() for x in field.split(","))):
        groups.append([re.split(r"[\s(:]", alt.strip())[0] for alt in g.split("|")])
    return groups


def installed_packages():
    out = sh(["dpkg-query", "-W", "-f", "${Package}\t${Status}\t${Essential}\t${Priority}\t"
              "${Provides}\t${Depends}, ${Pre-Depends}\n"]).stdout
    pkgs = {}
    for line in out.splitlines():
        name, status, essential, prio, provides, deps = line.split("\t")
        if status.endswith(" installed"):
            pkgs[name] = {"base": essential == "yes" or prio == "required",
                          "provides": [g[0] for g in parse_depends(provides)],
                          "depends": parse_depends(deps)}
    return pkgs


def closure(pkgs, names):
    """Installed packages reachable from `names` through Depends/Pre-Depends (virtual
    packages through Provides)."""
    providers = {}
    for n, p in pkgs.items():
        for v in [n] + p["provides"]:
            providers.setdefault(v, []).append(n)
    seen, todo = set(), list(names)
    while todo:
        for n in providers.get(todo.pop(), []):
            if n not in seen:
                seen.add(n)
                todo += [alt for g in pkgs[n]["depends"] for alt in g]
    return seen


@pytest.fixture(scope="module")
def deb(fresh_committed, tmp_path_factory):
    f = fresh_committed
    for old in (x for x in os.listdir(f.build) if x.endswith(".deb")):
        os.remove(os.path.join(f.build, old))
    sh(["nice", "cpack", "-G", "DEB"], cwd=f.build)
    debs = [x for x in os.listdir(f.build) if x.startswith("punctum_") and x.endswith(".deb")]
    assert len(debs) == 1, debs
    f.deb = os.path.join(f.build, debs[0])
    f.root = str(tmp_path_factory.mktemp("debroot"))
    sh(["dpkg-deb", "-x", f.deb, f.root])
    f.fields = {k: sh(["dpkg-deb", "-f", f.deb, k]).stdout.strip()
                for k in ("Package", "Version", "Architecture", "Depends", "Description")}
    return f


@pytest.mark.slow
def test_deb_fields(deb):
    fl = deb.fields
    assert fl["Package"] == "punctum"
    assert fl["Version"] == deb.clean_version.replace("-", "~")
    assert os.path.basename(deb.deb) == f"punctum_{fl['Version']}_{fl['Architecture']}.deb"
    assert fl["Architecture"] == sh(["dpkg", "--print-architecture"]).stdout.strip()
    assert "has no cuda backend" in fl["Description"]
    assert "cuda" not in fl["Depends"].lower()
    for lib in ("libhdf5", "libopenblas0-openmp", "libjansson", "libutf8proc", "libpcre2-8"):
        assert lib in fl["Depends"], (lib, fl["Depends"])
    if "MPI)" in sh([deb.bin, "--version"]).stdout:
        assert "libopenmpi" in fl["Depends"]


@pytest.mark.slow
def test_deb_libraries_come_from_declared_dependencies(deb):
    binary = os.path.join(deb.root, "usr", "bin", "punctum")
    pkgs = installed_packages()
    declared = parse_depends(deb.fields["Depends"])
    # what `apt install ./punctum_*.deb` does, simulated (where apt has package lists)
    if shutil.which("apt-get") and glob.glob("/var/lib/apt/lists/*Packages*"):
        p = sh(["apt-get", "install", "-s", "--no-install-recommends", deb.deb])
        assert re.search(r"^Inst punctum ", p.stdout, re.M), p.stdout
    else:
        for g in declared:
            assert any(a in pkgs for a in g), f"Depends names no installed package in {g}"
    direct = {a for g in declared for a in g}
    base = closure(pkgs, [n for n, p in pkgs.items() if p["base"]])
    reachable = closure(pkgs, direct) | base

    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]",
                        sh(["readelf", "-d", binary]).stdout)
    loaded = {}
    for line in sh(["ldd", binary]).stdout.splitlines():
        m = re.match(r"\s*(\S+) => (\S+)", line)
        if m:
            assert m.group(2) != "not", f"{binary}: {line.strip()}"
            loaded[m.group(1)] = m.group(2)
    assert needed and set(needed) <= set(loaded), (needed, loaded)
    for soname, path in loaded.items():
        owner = dpkg_owner(path)
        assert owner, f"{soname} ({path}) belongs to no Debian package"
        if soname in needed:
            assert owner in direct or owner in base, \
                f"{binary} needs {soname} from {owner}: not in Depends, not base"
        assert owner in reachable, f"{soname} comes from {owner}: not a dependency, not base"


@pytest.mark.slow
def test_deb_unpacked_runs_and_its_man_page_renders(deb):
    usr = os.path.join(deb.root, "usr")
    binary = os.path.join(usr, "bin", "punctum")
    assert version_of(binary) == deb.clean_version
    h5 = sweep(binary, deb.model, deb.work, "deb")
    clean = os.path.join(deb.work, "clean.h5")
    if not os.path.exists(clean):
        sweep(deb.bin, deb.model, deb.work, "clean")
    check_one_pair(h5, deb.clean_version, like=clean)
    check_man_page(os.path.join(usr, "share", "man", "man1", "punctum.1"), binary)
    check_python_package(os.path.join(usr, "lib", "python3", "dist-packages"), h5)
    for f in ("bin/punctum-verify-model", "include/punctum/common.h",
              "share/doc/punctum/CHANGELOG.md"):
        assert os.path.isfile(os.path.join(usr, f)), f
