"""Steps that end a training run in time, from a calibration run's log (see lent_gpu_lib.sh).

    python benchmarks/calibrated_steps.py METRICS_JSONL T0 END CAL BATCH

The rate comes from the first and last logged steps, so the loop's start-up is left out; the
start-up is then added back for the real run, with 15 s for its final save and a 5% margin.
"""

from __future__ import annotations

import json
import sys
import time


def main() -> None:
    path = sys.argv[1]
    t0, end, cal, batch = (float(a) for a in sys.argv[2:6])
    try:
        with open(path) as f:
            rows = [json.loads(line) for line in f if '"train"' in line]
    except OSError:
        rows = []
    if len(rows) < 2:
        print(f"calibration gave {len(rows)} log lines; no run", file=sys.stderr)
        print(0)
        return
    (s1, p1), (s2, p2) = [(r["step"], r["patches_per_s"]) for r in (rows[0], rows[-1])]
    t1, t2 = s1 * batch / p1, s2 * batch / p2
    rate = (s2 - s1) / (t2 - t1)
    startup = max(10.0, cal - t2)
    left = t0 + end - time.time() - startup - 15
    print(f"rate {rate:.2f} steps/s (steps {s1}-{s2}), loop started {startup:.0f} s after launch, {left:.0f} s left to train",
          file=sys.stderr)
    print(max(0, int(rate * left * 0.95) // 100 * 100))


if __name__ == "__main__":
    main()
