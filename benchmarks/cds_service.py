"""The CDS Hooks service under requests, as an EHR calls it: `python benchmarks/cds_service.py [--patients N]`.

Makes a demo cohort, imports it into a SQLite store, starts `python -m dashboard serve-cds` as its own process on
127.0.0.1 (demo mode, authentication off: the JWT check costs about 1 ms a request, measured in
tests/interop/test_cds_auth.py), then sends patient-view requests without prefetch (the store path) for random
patients, one at a time, the first one right after the service answers its discovery. Prints the first
request's time and the p50/p95/max of the rest. A benchmark: it asserts nothing, and only talks to loopback.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
AS_OF = "2026-11-20"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(patient_id: str) -> dict:
    return {"hook": "patient-view", "hookInstance": str(uuid.uuid4()),
            "context": {"userId": "Practitioner/benchmark", "patientId": patient_id}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=20_000)
    parser.add_argument("--requests", type=int, default=100)
    args = parser.parse_args(argv)
    env = {**os.environ, "SPINE_DASHBOARD_MODE": "demo"}
    with tempfile.TemporaryDirectory() as work:
        folder, store = Path(work) / "cohort", f"sqlite:///{Path(work) / 'store.db'}"
        dashboard = [sys.executable, "-m", "dashboard"]
        subprocess.run([*dashboard, "demo", str(folder), "--patients", str(args.patients), "--first-id", "1"],
                       cwd=ROOT, check=True, capture_output=True, env=env)
        subprocess.run([*dashboard, "import", str(folder), "--database", store], cwd=ROOT, check=True,
                       capture_output=True, env=env)
        port = _free_port()
        service = subprocess.Popen([*dashboard, "serve-cds", "--no-auth", "--port", str(port), "--database", store,
                                    "--as-of", AS_OF], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            with httpx.Client(base_url=base, timeout=60) as client:
                deadline = time.monotonic() + 120
                while True:
                    try:
                        if client.get("/cds-services").status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    if time.monotonic() > deadline:
                        raise RuntimeError("the service did not start")
                    time.sleep(0.1)
                width = max(5, len(str(args.patients)))
                ids = [f"P{random.randint(1, args.patients):0{width}d}" for _ in range(args.requests + 1)]
                times = []
                for patient_id in ids:
                    start = time.perf_counter()
                    answer = client.post("/cds-services/patient-view", json=_request(patient_id))
                    times.append(time.perf_counter() - start)
                    answer.raise_for_status()
        finally:
            service.terminate()
            service.wait(timeout=30)
    rest = sorted(times[1:])
    p95 = rest[int(0.95 * (len(rest) - 1))]
    print(f"{args.patients:,} patients: first request {times[0] * 1000:.0f} ms; next {len(rest)}: "
          f"p50 {statistics.median(rest) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, max {rest[-1] * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
