"""Does `keep_freed_memory` stop large freed tensors being faulted in again, on this machine?

    python benchmarks/freed_memory_faults.py [--trials 20] [--passes 4]

Each trial is a fresh process. A pass allocates and frees five 48 MB tensors (over glibc's default
32 MB mmap ceiling) and counts the minor page faults of the last four; one pass runs before
`place_model` turns the setting on, ``--passes`` after it. Whether the freed memory is found
again is up to the host's C library: torch asks for 64-byte aligned blocks, which glibc serves
by over-asking (size + 64 + 32 bytes), so a freed block that a small allocation has since taken
a bite of no longer fits the next block of the same size, and the heap grows instead, for the
first pass or two, until freed neighbours merge. So this is a measurement of the machine, not a
unit test: the tests check that the setting is asked for.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

PROBE = """
import resource, sys, torch
from denoisecli.device import keep_freed_memory, place_model

torch.set_num_threads(1)

def faults():
    torch.ones(12 << 20)
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(4):
        torch.ones(12 << 20)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start

def heap_mb():
    for line in open("/proc/self/maps"):
        if line.rstrip().endswith("[heap]"):
            start, end = (int(a, 16) for a in line.split()[0].split("-"))
            return (end - start) >> 20
    return 0

before = faults()
place_model(torch.nn.Conv2d(1, 1, 3), torch.device("cpu"))
after = [faults() for _ in range(int(sys.argv[1]))]
print(keep_freed_memory(), before, heap_mb(), *after)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--passes", type=int, default=4)
    args = parser.parse_args()
    rows = []
    for _ in range(args.trials):
        cmd = [sys.executable, "-c", PROBE, str(args.passes)]
        took, *counts = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()
        if took != "True":
            sys.exit("mallopt is not available here (not glibc): nothing to measure")
        rows.append([int(c) for c in counts])
    before = [r[0] for r in rows]
    print(f"page faults for four 48 MB tensors, {args.trials} fresh processes")
    print(f"  default malloc:          median {statistics.median(before):,.0f}")
    for k in range(args.passes):
        after = [r[2 + k] for r in rows]
        reused = sum(a < b / 10 for a, b in zip(after, before))
        print(f"  keep_freed_memory, pass {k + 1}: median {statistics.median(after):,.0f}, max {max(after):,}, "
              f"under a tenth of the default in {reused} of {args.trials}")
    print(f"  heap after the passes:   median {statistics.median(r[1] for r in rows):,.0f} MB")

if __name__ == "__main__":
    main()
