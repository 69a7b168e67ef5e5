#!/usr/bin/env python3
"""Resource report of every CUDA kernel of punctum (issue 17): registers, shared memory, barriers,
stack frame and spills per kernel and architecture, as ptxas reports them (`-Xptxas -v`),
compiled with the flags the build uses (build/compile_commands.json). No GPU needed.

usage: kernel_resources.py [--build build] [--arch 80,90] [--markdown]

The occupancy column is the number of blocks of the kernel's declared launch bound that fit on
one SM by registers alone (65536 registers, allocated per warp in units of 256) and by shared
memory (228 KB on sm_90, 164 KB on sm_80, minus 1 KB reserved per block), the smaller of the
two; kernels without a declared bound show "-".
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE = "kernels/cuda_backend.cu"
SMEM_PER_SM = {"80": 164 * 1024, "90": 228 * 1024}  # CUDA C programming guide, table 21
REGS_PER_SM = 65536


def nvcc_command(build: str) -> tuple[list[str], str]:
    """The build's nvcc command for cuda_backend.cu, without its -o, arch and ptxas options."""
    with open(os.path.join(build, "compile_commands.json")) as f:
        for c in json.load(f):
            if c["file"].endswith(SOURCE):
                argv = shlex.split(c["command"])
                keep, skip = [], False
                for a in argv:
                    if skip:
                        skip = False
                        continue
                    if a == "-o":
                        skip = True
                        continue
                    if a.startswith("--generate-code") or a.startswith("-Xptxas") or a == "-c":
                        continue
                    if a.endswith(SOURCE):
                        continue
                    keep.append(a)
                return keep, c["directory"]
    sys.exit(f"kernel_resources: {SOURCE} not in {build}/compile_commands.json "
             "(configure with the CUDA toolkit installed)")


def demangle(names: list[str]) -> dict[str, str]:
    p = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True)
    return dict(zip(names, p.stdout.splitlines())) if p.returncode == 0 else {n: n for n in names}


def launch_bounds() -> dict[str, object]:
    """Kernel name -> threads of its __launch_bounds__ where that is a literal or a known
    constant, or (index of a template parameter P, k) where it is `k * P` (k * WARPS: the
    instance's threads then come from its template arguments, bound_of)."""
    consts = {"PT_VOCAB_THREADS": None}
    bounds = {}
    for fn in os.listdir(os.path.join(REPO, "kernels")):
        text = open(os.path.join(REPO, "kernels", fn)).read()
        for m in re.finditer(r"#define\s+(PT_\w+_THREADS)\s+(\d+)", text):
            consts[m.group(1)] = int(m.group(2))
        for m in re.finditer(r"enum\s*\{[^}]*?(PT_\w+_THREADS)\s*=\s*(\d+)", text):
            consts[m.group(1)] = int(m.group(2))
    for fn in os.listdir(os.path.join(REPO, "kernels")):
        text = open(os.path.join(REPO, "kernels", fn)).read()
        for m in re.finditer(r"__launch_bounds__\(([^,)]+)[^)]*\)\s*(\w+)\s*\(", text):
            v = m.group(1).strip()
            n = int(v) if v.isdigit() else consts.get(v)
            prod = re.fullmatch(r"(\d+)\s*\*\s*(\w+)", v)
            if prod and not n:  # k * a template parameter of the kernel's template <...>
                tmpl = re.findall(r"template\s*<([^>]*)>", text[:m.start()])
                params = [re.sub(r"\s*=.*", "", x).split()[-1] for x in tmpl[-1].split(",")] if tmpl else []
                if prod.group(2) in params:
                    n = (params.index(prod.group(2)), int(prod.group(1)))
            if n:
                bounds[m.group(2)] = n
    return bounds


def bound_of(bound, name: str):
    """Threads of one instance (demangled name) under launch_bounds()'s entry."""
    if not isinstance(bound, tuple):
        return bound
    m = re.search(r"<(.*)>", name.split("(")[0])
    args = [x.strip() for x in m.group(1).split(",")] if m else []
    i, k = bound
    return k * int(args[i]) if i < len(args) and args[i].isdigit() else None


def ptxas_report(cmd: list[str], cwd: str, arch: str) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        argv = cmd + [f"--generate-code=arch=compute_{arch},code=[sm_{arch}]",
                      "-Xptxas=-v,-warn-spills", "-c", os.path.join(REPO, SOURCE),
                      "-o", os.path.join(tmp, "k.o")]
        p = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    if p.returncode:
        sys.exit(f"kernel_resources: nvcc failed for sm_{arch}:\n{p.stderr[-3000:]}")
    rows, cur = [], None
    for line in p.stderr.splitlines():
        m = re.search(r"Compiling entry function '(\w+)' for 'sm_(\d+)'", line)
        if m:
            cur = {"mangled": m.group(1), "arch": m.group(2), "stack": 0, "spill_st": 0,
                   "spill_ld": 0, "regs": 0, "barriers": 0, "smem": 0}
            rows.append(cur)
            continue
        if cur is None:
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads",
                      line)
        if m:
            cur["stack"], cur["spill_st"], cur["spill_ld"] = map(int, m.groups())
        m = re.search(r"Used (\d+) registers", line)
        if m:
            cur["regs"] = int(m.group(1))
            b = re.search(r"used (\d+) barriers", line)
            s = re.search(r"(\d+) bytes smem", line)
            cur["barriers"] = int(b.group(1)) if b else 0
            cur["smem"] = int(s.group(1)) if s else 0
    return rows


def blocks_per_sm(regs: int, smem: int, threads: int | None, arch: str) -> str:
    if not threads:
        return "-"
    warps = (threads + 31) // 32
    regs_per_warp = ((max(regs, 1) * 32 + 255) // 256) * 256
    by_regs = REGS_PER_SM // (regs_per_warp * warps)
    by_smem = SMEM_PER_SM[arch] // (smem + 1024) if smem else 32
    return str(min(by_regs, by_smem, 32))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(REPO, "build"))
    ap.add_argument("--arch", default="80,90")
    a = ap.parse_args()
    cmd, cwd = nvcc_command(a.build)
    archs = [x.strip() for x in a.arch.split(",") if x.strip()]
    rows = [r for arch in archs for r in ptxas_report(cmd, cwd, arch)]
    names = demangle(sorted({r["mangled"] for r in rows}))
    bounds = launch_bounds()
    print("| kernel | sm | registers | smem (B) | barriers | stack (B) | spill st/ld (B) "
          "| launch bound | blocks/SM |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    spills = 0
    for r in sorted(rows, key=lambda r: (names[r["mangled"]], r["arch"])):
        name = names[r["mangled"]]
        base = re.sub(r"<.*", "", name.split("(")[0]).split()[-1]
        t = bound_of(bounds.get(base), name)
        spills += r["spill_st"] + r["spill_ld"]
        print(f"| `{name.split('(')[0]}` | {r['arch']} | {r['regs']} | {r['smem']} | "
              f"{r['barriers']} | {r['stack']} | {r['spill_st']}/{r['spill_ld']} | "
              f"{t or '-'} | {blocks_per_sm(r['regs'], r['smem'], t, r['arch'])} |")
    print()
    print(f"{len(rows)} kernel instances over sm_{', sm_'.join(archs)}; "
          f"{'no spills' if spills == 0 else f'{spills} bytes of spill traffic in total'}.")


if __name__ == "__main__":
    main()
