#!/usr/bin/env python3
"""Mutation check of the emulation's checks (issue 17): "deleting any barrier or cp.async wait
from the kernels makes an emulated test fail", and any event wait of the backend's host code
(kernels/cuda_backend.cu: the pinned staging ring's cudaEventSynchronize, replaced by
`cudaSuccess`; caught by the op test's staging_ring row as pinned-reuse).

For every `__syncthreads()`, `__syncwarp(...)` and `pt_cp_async_wait<N>()` /
`pt_cp_async_wait_all()` call in kernels/*.cuh (and the barriers of the block reductions in
kernels/pt_cuda.h), one at a time: replace the call by `(void)0` (same line numbers), rebuild
the emulated op test and the emulation's self-test (whose kernels use the reductions the way
any kernel may, e.g. twice on one scratch), run them, and record whether they fail and how (a
check's report, or a wrong result only). It works on a copy of the working tree (BUILD/src), so the checkout is never
modified. Prints a table; exit status 1 if any mutation goes unnoticed.

Slow (one rebuild of the kernels per mutation, about a minute each): not part of the test suite.

    tests/emu/mutate.py [--build build-mutate] [--filter attention] [--list] [--jobs 2]

(BUILD/src: the mutated copy; BUILD/obj: its build, kept between runs.)
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROOT = REPO  # the tree that is mutated and built: a copy (copy_tree)
CALL = re.compile(r"__syncthreads\(\)|__syncwarp\([^()]*\)|pt_cp_async_wait<\s*\w+\s*>\(\)|pt_cp_async_wait_all\(\)")
# in pt_cuda.h only the reductions' barriers are kernel code (the rest defines the wrappers)
PT_CUDA_CALL = re.compile(r"__syncthreads\(\)")
DECL = re.compile(r"^(?:template <[^>]*>\s*)?(?:__global__|PT_DEV)[^{;]*", re.M)
# the backend's host code: the event waits that guard reuse of pinned staging
HOST_FILE = "cuda_backend.cu"
HOST_CALL = re.compile(r"cudaEventSynchronize\([^()]*\)")
HOST_DECL = re.compile(r"^static [^;{=]*\(", re.M)


def func_name(decl: str) -> str:
    decl = re.sub(r"__launch_bounds__\([^)]*\)", "", decl)
    m = re.search(r"(\w+)\s*\(", decl)
    return m.group(1) if m else "?"


def targets():
    out = []
    kdir = os.path.join(ROOT, "kernels")
    for name in sorted(os.listdir(kdir)):
        if not (name.endswith(".cuh") or name in ("pt_cuda.h", HOST_FILE)):
            continue
        path = os.path.join(kdir, name)
        text = open(path).read()
        host = name == HOST_FILE
        pat = HOST_CALL if host else PT_CUDA_CALL if name == "pt_cuda.h" else CALL
        for m in pat.finditer(text):
            line_start = text.rfind("\n", 0, m.start()) + 1
            line = text[line_start:text.find("\n", m.start())]
            if line.lstrip().startswith(("/*", "*", "//")):
                continue  # a comment that names the call
            decls = [d for d in (HOST_DECL if host else DECL).finditer(text, 0, m.start())]
            func = func_name(decls[-1].group(0)) if decls else "?"
            out.append({"file": name, "path": path, "start": m.start(), "end": m.end(), "call": m.group(0),
                        "line": text.count("\n", 0, m.start()) + 1, "func": func,
                        "repl": "cudaSuccess" if host else "(void)0"})
    return out


def copy_tree(dst: str) -> None:
    """The checkout's tracked and untracked-but-not-ignored files, into dst."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                           capture_output=True).stdout.decode().split("\0")
    if os.path.exists(dst):
        shutil.rmtree(dst)
    for rel in filter(None, files):
        src = os.path.join(REPO, rel)
        if not os.path.isfile(src):
            continue
        os.makedirs(os.path.dirname(os.path.join(dst, rel)), exist_ok=True)
        # fresh modification times (not copy2's): a kept BUILD/obj may hold objects of the last
        # run's mutants, newer than the checkout's files, which make would then not rebuild
        shutil.copy(src, os.path.join(dst, rel))


def sh(cmd, cwd=None, timeout=None):
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout + p.stderr


def configure(build):
    obj = os.path.join(build, "obj")
    if os.path.exists(os.path.join(obj, "CMakeCache.txt")):
        return obj
    rc, out = sh(["cmake", "-S", ROOT, "-B", obj, "-DCMAKE_BUILD_TYPE=Release", "-DPT_CUDA=OFF"])
    if rc:
        sys.exit("mutate: configure failed:\n" + out[-3000:])
    return obj


TESTS = ("test_backend_ops_emu", "test_emu_selftest")


def build_and_test(build, jobs, test_timeout):
    rc, out = sh(["nice", "cmake", "--build", build, "--target", *TESTS, "-j", str(jobs)])
    if rc:
        return "build failed", out[-2000:]
    for test in TESTS:
        try:
            rc, out = sh([os.path.join(build, test)], timeout=test_timeout)
        except subprocess.TimeoutExpired:
            return f"caught (timeout of {test})", "ran past %d s" % test_timeout
        if rc:
            break
    if rc == 0:
        return "MISSED", ""
    checks = re.findall(r"cuda-emu: ([a-z-]+) in (?:kernel|host code)", out)
    if checks:
        first = next(l for l in out.splitlines()
                     if l.startswith("cuda-emu: ") and (" in kernel " in l or " in host code" in l))
        kinds = sorted(set(checks))
        return "caught: " + ",".join(kinds), first
    bad = [l for l in out.splitlines() if l.rstrip().endswith("FAIL") or l.startswith("FAIL")]
    if bad:
        return "caught: wrong result only", bad[0]
    return "caught: exit %d" % rc, out.strip().splitlines()[-1] if out.strip() else ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(REPO, "build-mutate"))
    ap.add_argument("--filter", default="", help="only calls in files or functions containing this")
    ap.add_argument("--list", action="store_true", help="list the mutations and exit")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--test-timeout", type=int, default=300)
    args = ap.parse_args()

    global ROOT
    args.build = os.path.abspath(args.build)
    ROOT = os.path.join(args.build, "src")
    copy_tree(ROOT)
    ts = [t for t in targets() if args.filter in t["file"] or args.filter in t["func"]]
    if args.list:
        for t in ts:
            print(f"{t['file']}:{t['line']}  {t['func']}  {t['call']}")
        return 0
    obj = configure(args.build)
    print(f"mutate: {len(ts)} mutations; baseline build and op test first", flush=True)
    verdict, detail = build_and_test(obj, args.jobs, args.test_timeout)
    if verdict != "MISSED":  # MISSED here means: the unmutated test passes
        sys.exit(f"mutate: the unmutated op test does not pass ({verdict}): {detail}")
    rows = []
    for i, t in enumerate(ts):
        original = open(t["path"]).read()
        mutated = original[:t["start"]] + t["repl"] + original[t["end"]:]
        t0 = time.time()
        try:
            with open(t["path"], "w") as f:
                f.write(mutated)
            verdict, detail = build_and_test(obj, args.jobs, args.test_timeout)
        finally:
            with open(t["path"], "w") as f:
                f.write(original)
        rows.append((t, verdict, detail))
        print(f"[{i + 1}/{len(ts)}] {t['file']}:{t['line']} {t['func']} {t['call']}: {verdict} "
              f"({time.time() - t0:.0f} s)", flush=True)

    print()
    print("| where | function | deleted | result | first report |")
    print("|---|---|---|---|---|")
    for t, verdict, detail in rows:
        detail = detail.replace("|", "\\|")
        if len(detail) > 160:
            detail = detail[:157] + "..."
        print(f"| {t['file']}:{t['line']} | {t['func']} | `{t['call']}` | {verdict} | {detail} |")
    missed = [r for r in rows if r[1] in ("MISSED", "build failed")]
    print(f"\nmutate: {len(rows) - len(missed)} of {len(rows)} mutations caught")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
