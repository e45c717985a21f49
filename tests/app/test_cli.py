"""The command line as docs/assessment-format.md describes it: exit codes, stderr, JSON shape."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd

from dashboard.cli import main
from dashboard.demo import SCENARIO_TIMING_DEPENDENT

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "data" / "demo"
ANCHOR = "2026-11-20"
SCENARIOS = pd.read_csv(DEMO / "scenarios.csv", dtype=str, keep_default_na=False)


def test_validate_valid_and_invalid_exit_codes_with_errors_on_stderr(tmp_path, capsys):
    assert main(["validate", str(DEMO)]) == 0
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("patients.csv", "surgeries.csv"):
        (bad / name).write_bytes((DEMO / name).read_bytes())
    (bad / "strength.csv").write_text("patient_id,exam_date,muscle,side,mrc\nP00001,2026-01-05,toe,L,7\n")
    capsys.readouterr()
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert "strength.csv:2: mrc: '7' is not an MRC grade (0–5, 4-, 4+, 5-)" in err
    assert err[-1] == "2 error(s): nothing was assessed or stored."


def test_assess_json_follows_the_spec(capsys):
    assert main(["assess", str(DEMO), "--as-of", ANCHOR, "--format", "json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["as_of"] == ANCHOR and result["reference"] == "published-v2"
    patients = result["patients"]
    assert len(patients) == 200
    first = patients[0]
    assert set(first) == {"patient_id", "index_surgery", "days_since_surgery", "muscles", "prompts"}
    assert set(first["index_surgery"]) == {"date", "procedure", "levels", "instrumented"}
    muscle_keys = {"muscle", "root", "side", "baseline_mrc", "latest_mrc", "latest_date", "expected_mrc",
                   "expected_low", "expected_high", "status", "curve"}
    prompt_keys = {"rule_id", "category", "modality", "urgency", "summary", "evidence", "source", "rule_ids"}
    assert all(set(m) == muscle_keys for p in patients for m in p["muscles"])
    assert all(set(x) == prompt_keys for p in patients for x in p["prompts"])
    rank = {"emergency": 0, "urgent": 1, "routine": 2}
    top = [min((rank[x["urgency"]] for x in p["prompts"]), default=3) for p in patients]
    assert top == sorted(top)
    for urgency in set(top):  # ties by patient_id
        ids = [p["patient_id"] for p, t in zip(patients, top, strict=True) if t == urgency]
        assert ids == sorted(ids)
    assert patients[0]["prompts"][0]["category"] == "red_flag"


def test_assess_statuses_match_the_demo_scenarios(capsys):
    main(["assess", str(DEMO), "--as-of", ANCHOR, "--format", "json"])
    by_patient = {p["patient_id"]: p for p in json.loads(capsys.readouterr().out)["patients"]}
    for row in SCENARIOS.itertuples():
        patient = by_patient[row.patient_id]
        muscle = next(m for m in patient["muscles"] if m["muscle"] == row.affected_muscle
                      and m["side"] == row.affected_side)
        assert muscle["status"] in row.expected_status.split("/"), row
        categories = {x["category"] for x in patient["prompts"]}
        expected = set(filter(None, row.expected_rule_categories.split(";")))
        assert expected <= categories <= expected | SCENARIO_TIMING_DEPENDENT.get(row.scenario, set()), row


def test_as_of_hides_later_data(capsys):
    main(["assess", str(DEMO), "--as-of", "2025-01-01", "--format", "json"])
    early = json.loads(capsys.readouterr().out)["patients"]
    dates = [m["latest_date"] for p in early for m in p["muscles"] if m["latest_date"]]
    assert dates and max(dates) <= "2025-01-01"
    assert all(p["index_surgery"] is None or p["index_surgery"]["date"] <= "2025-01-01" for p in early)


def test_table_format_and_real_process_exit_code(tmp_path):
    done = subprocess.run([sys.executable, "-m", "dashboard", "assess", str(DEMO), "--as-of", ANCHOR],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0
    lines = done.stdout.splitlines()
    assert lines[0] == "Assessment as of 20 Nov 2026 · reference published-v2 · 200 patients, 77 with prompts"
    assert max(len(line) for line in lines) <= 100  # a 100-column terminal (issue 19: lines were 486 wide)
    assert not re.search(r"\b[a-z]+_[a-z_]+\b", done.stdout)  # clinical words, no code identifiers
    assert lines[2:4] == ["P00020 · PLIF L4-L5 on 11 Nov 2026 · day 9",
                          "  Emergency — now, within hours · MRI lumbar spine: Possible cauda equina compression?"]
    missing = subprocess.run([sys.executable, "-m", "dashboard", "validate", str(tmp_path / "none")],
                             capture_output=True, text=True, cwd=ROOT)
    assert missing.returncode == 2 and "not a records folder or an .xlsx workbook" in missing.stderr


def test_demo_is_deterministic(tmp_path):
    assert main(["demo", str(tmp_path / "a"), "--patients", "50", "--seed", "3"]) == 0
    assert main(["demo", str(tmp_path / "b"), "--patients", "50", "--seed", "3"]) == 0
    for name in ("patients.csv", "surgeries.csv", "strength.csv", "visits.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_assess_store_streams_chunks_and_equals_assess_on_files(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    assert main(["import", str(DEMO), "--database", url]) == 0
    capsys.readouterr()
    assert main(["assess", str(DEMO), "--as-of", ANCHOR, "--format", "json"]) == 0
    from_files = json.loads(capsys.readouterr().out)
    assert main(["assess-store", "--database", url, "--as-of", ANCHOR, "--chunk-patients", "37"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == from_files
    assert "assessed 200 patients" in captured.err


# ------------------------------------------------------------------ --user names an active user of the store
def _store_with_users(tmp_path):
    """A store with the small cohort, an active admin 'admin.a' and a deactivated 'dr.gone'."""
    from dashboard.store import get_engine, import_records
    from dashboard.store.users import account, add_user, change_user
    from tests.store_fixtures import GOOD_FILES, records_from

    url = f"sqlite:///{tmp_path / 'store.db'}"
    engine = get_engine(url)
    import_records(engine, records_from(tmp_path / "cohort", GOOD_FILES), "cohort")
    add_user(engine, "setup", "admin", "admin.a", "Admin A", "admin", "unused-hash")
    add_user(engine, "setup", "admin", "dr.gone", "Dr Gone", "surgeon", "unused-hash")
    change_user(engine, "setup", "admin", "dr.gone", account(engine, "dr.gone").version, active=False)
    engine.dispose()
    return url


def _audit_rows(url):
    from dashboard.store import get_engine
    from dashboard.store.backup import store_digest

    engine = get_engine(url)
    try:
        return store_digest(engine)
    finally:
        engine.dispose()


REFUSED_USER = ("refused: --user '{}' is not a user of this store; nothing was done (name an active user of the "
                "Users screen, or leave --user out to be named as the system account)")
DEACTIVATED_USER = ("refused: --user '{}' is deactivated; nothing was done (name an active user of the Users screen, "
                    "or leave --user out to be named as the system account)")


def _commands(tmp_path, url):
    """Every command whose --user the audit log records, with an output it must not write when refused."""
    out = tmp_path / "out"
    return {
        "backup": ["backup", str(out / "store.bak"), "--database", url],
        "restore": ["restore", str(out / "missing.bak"), "--database", url, "--safety-dir", str(out / "s")],
        "import": ["import", str(DEMO), "--database", url],
        "correct-patient": ["correct-patient", "P1", "--name", "Ann Exemple", "--database", url],
        "import-fhir": ["import-fhir", str(tmp_path / "none.json"), "--database", url],
        "import-redcap": ["import-redcap", str(tmp_path / "none.csv"), "--mapping", "data/redcap/mapping.yaml",
                          "--database", url],
        "outcomes": ["outcomes", "--database", url, "--out", str(out / "outcomes.html")],
    }


def test_every_command_refuses_a_user_who_is_not_an_active_user_of_the_store(tmp_path, capsys):
    url = _store_with_users(tmp_path)
    before = _audit_rows(url)
    for name, command in _commands(tmp_path, url).items():
        for user, message in (("admin.x", REFUSED_USER), ("dr.gone", DEACTIVATED_USER),
                              ("\x1b[2Jroot", REFUSED_USER)):
            capsys.readouterr()
            assert main([*command, "--user", user]) == 2, (name, user)
            shown = user.replace("\x1b", "\\x1b")  # an escape is shown, never acted on by the terminal
            assert capsys.readouterr().err.strip() == message.format(shown), (name, user)
    assert _audit_rows(url) == before  # nothing stored, restored, corrected or audited
    assert not (tmp_path / "out").exists()  # no backup, safety copy or report written


def test_an_active_user_of_the_store_is_accepted_and_named_in_the_audit_log(tmp_path, capsys):
    from dashboard.store import get_engine
    from dashboard.store.audit import audit_log

    url = _store_with_users(tmp_path)
    assert main(["backup", str(tmp_path / "store.bak"), "--database", url, "--user", "admin.a"]) == 0
    assert main(["backup", str(tmp_path / "store2.bak"), "--database", url, "--user", "Admin.A"]) == 0
    assert main(["backup", str(tmp_path / "store3.bak"), "--database", url]) == 0  # the system account
    engine = get_engine(url)
    try:
        names = audit_log(engine, actions=["backup"]).sort_values("id")["user_name"].tolist()
    finally:
        engine.dispose()
    assert names[:2] == ["admin.a", "admin.a"] and names[2].startswith("cli:")


def test_a_user_cannot_be_checked_where_there_is_no_store_and_none_is_created(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'nowhere' / 'store.db'}"
    assert main(["backup", str(tmp_path / "store.bak"), "--database", url, "--user", "admin.a"]) == 2
    assert capsys.readouterr().err.strip() == REFUSED_USER.format("admin.a")
    assert not (tmp_path / "nowhere").exists() and not (tmp_path / "store.bak").exists()


def test_commands_take_arrow_memory_from_the_system_allocator_unless_a_pool_was_chosen(monkeypatch, capsys):
    """pyarrow's default pool (mimalloc) doubled the kernel time of `assess` here (docs/performance.md)."""
    import pyarrow as pa

    chosen: list[str] = []
    monkeypatch.setattr(pa, "set_memory_pool", lambda pool: chosen.append(pool.backend_name))
    monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL", raising=False)
    assert main(["validate", str(DEMO)]) == 0
    monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", "jemalloc")
    assert main(["validate", str(DEMO)]) == 0
    assert chosen == ["system"]
