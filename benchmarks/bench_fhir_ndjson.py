"""FHIR Bulk Data NDJSON export benchmark: `python benchmarks/bench_fhir_ndjson.py [--patients 20000] [--database URL]`.

Without `--database` it writes a demo cohort of `--patients` (seed 1) and imports it into a new SQLite store
in a temporary folder (not timed). Then it runs `python -m dashboard export-fhir OUT --ndjson` in a child
process and reports its wall-clock time, CPU time (user + system) and peak memory (max RSS), and the
resources written. A benchmark, not a test: it asserts nothing. Figures: docs/interoperability.md.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dashboard", *args], cwd=ROOT, capture_output=True, text=True,
                          check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=20_000)
    parser.add_argument("--database", default=None, help="an existing store (default: a new demo store)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        url = args.database
        if url is None:
            url = f"sqlite:///{folder / 'store.db'}"
            run(["demo", str(folder / "cohort"), "--patients", str(args.patients), "--seed", "1"])
            run(["import", str(folder / "cohort"), "--database", url])
        out = folder / "bulk"
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = run(["export-fhir", str(out), "--ndjson", "--database", url])
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        size = sum(p.stat().st_size for p in out.iterdir())
        print(done.stderr.strip())
        print(f"wall {wall:.1f} s, CPU {cpu:.1f} s, peak memory {after.ru_maxrss / 1024:.0f} MB (max RSS of the "
              f"largest child so far), output {size / 1e9:.2f} GB, load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
