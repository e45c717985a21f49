"""The checked-in assessment of the shipped demo cohort: any change to a curve, a rule or the output shows
here as a diff to review (CHIME-style golden output; issue 17 and 19).

After a deliberate change, regenerate it and review the diff before committing:

    python -m dashboard assess data/demo --as-of 2026-11-20 --format json > tests/golden/assess-demo.json
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "assess-demo.json"
ANCHOR = "2026-11-20"  # dashboard.demo.DEFAULT_ANCHOR: the demo's day


def test_the_demo_assessment_is_the_reviewed_one() -> None:
    done = subprocess.run([sys.executable, "-m", "dashboard", "assess", "data/demo", "--as-of", ANCHOR,
                           "--format", "json"], cwd=ROOT, capture_output=True, check=False, timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    if done.stdout == GOLDEN.read_bytes():
        return
    now, then = json.loads(done.stdout), json.loads(GOLDEN.read_text(encoding="utf-8"))
    assert (now["as_of"], now["reference"]) == (then["as_of"], then["reference"])
    before = {p["patient_id"]: p for p in then["patients"]}
    changed = [p["patient_id"] for p in now["patients"] if before.get(p["patient_id"]) != p]
    order = [p["patient_id"] for p in now["patients"]] != [p["patient_id"] for p in then["patients"]]
    raise AssertionError(f"the demo assessment changed for {len(changed)} patient(s) {changed[:10]}"
                         f"{' and the patient order' if order else ''}: review the diff, then regenerate "
                         "tests/golden/assess-demo.json (see this file's docstring)")


def test_the_json_text_is_the_output_dict_as_orjson_writes_it() -> None:
    """`assess --format json` writes the muscles as text built from whole columns (issue 19: the command's
    time): it must be exactly the serialisation of the output dict the CDS service and the batch read."""
    import orjson

    from dashboard.clinical.assessment import assess, json_pieces, to_json_bytes, to_json_dict
    from dashboard.clinical.records.validate import validate

    records, report = validate(ROOT / "data" / "demo")
    assert records is not None, report.error_lines()
    assessment = assess(records, as_of=date.fromisoformat(ANCHOR))
    assert assessment.muscles["baseline_mrc"].isna().any()  # missing values are in it (written null)
    expected = orjson.dumps(to_json_dict(assessment), option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
    assert to_json_bytes(assessment) == expected
    for patients_per_piece in (1, 2, 7, len(assessment.patients), 10_000):  # pieces joined at every place
        assert b"".join(json_pieces(assessment, patients_per_piece)) == expected

    nobody, report = validate({"patients.csv": b"patient_id\n", "surgeries.csv": b"patient_id,surgery_date,procedure,"
                               b"levels,instrumented\n", "strength.csv": b"patient_id,exam_date,muscle,side,mrc\n"})
    assert nobody is not None, report.error_lines()
    empty = assess(nobody, as_of=date.fromisoformat(ANCHOR))
    assert to_json_bytes(empty) == orjson.dumps(to_json_dict(empty), option=orjson.OPT_INDENT_2
                                                | orjson.OPT_APPEND_NEWLINE)
