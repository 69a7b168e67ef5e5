#!/usr/bin/env python3
"""Resource report of every CUDA kernel of punctum (issue 17): registers, shared memory, barriers,
stack frame and spills per kernel and architecture, as ptxas reports them (`-Xptxas -v`),
compiled with the flags the build uses (build/compile_commands.json). No GPU needed.

usage: kernel_resources.py [--build build] [--arch 80,90] [--markdown]

The launch bound of every instance (template ones included: `32 * WARPS` evaluated per
instance) is read from the PTX the same compile keeps (`.maxntid`, and `.minnctapersm`, the
minimum blocks per SM, after a slash where declared). The occupancy column is the number of
blocks of that bound that fit on one SM by registers alone (65536 registers, allocated per warp
in units of 256) and by shared memory (228 KB on sm_90, 164 KB on sm_80, minus 1 KB reserved
per block), the smaller of the two; kernels without a declared bound show "-". Kernels that use
dynamic shared memory (sized at launch, unknown here) show "+dyn" after their static bytes, and
their occupancy counts the static bytes only (an upper bound).
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


def ptx_entries(ptx: str) -> dict[str, dict]:
    """Mangled entry name -> {"threads": .maxntid product or None, "min_blocks": .minnctapersm or
    None, "dyn": whether it addresses the dynamic shared memory} from PTX text."""
    out = {}
    parts = re.split(r"\.entry\s+", ptx)
    for part in parts[1:]:
        m = re.match(r"(\w+)", part)
        if not m:
            continue
        head = part[:part.find("{")] if "{" in part else part
        body_end = part.find("\n}")
        body = part[:body_end] if body_end >= 0 else part
        nt = re.search(r"\.(?:maxntid|reqntid)\s+(\d+)(?:\s*,\s*(\d+))?(?:\s*,\s*(\d+))?", head)
        threads = None
        if nt:
            threads = 1
            for g in nt.groups():
                threads *= int(g) if g else 1
        mb = re.search(r"\.minnctapersm\s+(\d+)", head)
        out[m.group(1)] = {"threads": threads, "min_blocks": int(mb.group(1)) if mb else None,
                           "dyn": "pt_dynamic_smem_" in body}
    return out


def ptxas_report(cmd: list[str], cwd: str, arch: str) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        argv = cmd + [f"--generate-code=arch=compute_{arch},code=[sm_{arch}]",
                      "-Xptxas=-v,-warn-spills", "--keep", f"--keep-dir={tmp}", "-c",
                      os.path.join(REPO, SOURCE), "-o", os.path.join(tmp, "k.o")]
        p = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
        if p.returncode:
            sys.exit(f"kernel_resources: nvcc failed for sm_{arch}:\n{p.stderr[-3000:]}")
        ptx = [f for f in os.listdir(tmp) if f.endswith(".ptx")]
        if len(ptx) != 1:
            sys.exit(f"kernel_resources: expected one kept .ptx for sm_{arch}, found {ptx}")
        with open(os.path.join(tmp, ptx[0])) as f:
            entries = ptx_entries(f.read())
    rows, cur = [], None
    for line in p.stderr.splitlines():
        m = re.search(r"Compiling entry function '(\w+)' for 'sm_(\d+)'", line)
        if m:
            e = entries.get(m.group(1))
            if e is None:
                sys.exit(f"kernel_resources: {m.group(1)} is not an entry of the sm_{arch} PTX")
            cur = {"mangled": m.group(1), "arch": m.group(2), "stack": 0, "spill_st": 0,
                   "spill_ld": 0, "regs": 0, "barriers": 0, "smem": 0, **e}
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
    print("| kernel | sm | registers | smem (B) | barriers | stack (B) | spill st/ld (B) "
          "| launch bound | blocks/SM |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    spills = 0
    for r in sorted(rows, key=lambda r: (names[r["mangled"]], r["arch"])):
        name = names[r["mangled"]]
        t = r["threads"]
        bound = "-" if not t else f"{t}/{r['min_blocks']}" if r["min_blocks"] else str(t)
        smem = f"{r['smem']}+dyn" if r["dyn"] else str(r["smem"])
        spills += r["spill_st"] + r["spill_ld"]
        print(f"| `{name.split('(')[0]}` | {r['arch']} | {r['regs']} | {smem} | "
              f"{r['barriers']} | {r['stack']} | {r['spill_st']}/{r['spill_ld']} | "
              f"{bound} | {blocks_per_sm(r['regs'], r['smem'], t, r['arch'])} |")
    print()
    print(f"{len(rows)} kernel instances over sm_{', sm_'.join(archs)}; "
          f"{'no spills' if spills == 0 else f'{spills} bytes of spill traffic in total'}.")


if __name__ == "__main__":
    main()
