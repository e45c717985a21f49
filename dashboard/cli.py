"""Command line: validate, assess, demo, calibrate, rules-doc, import (see docs/assessment-format.md).

Exit status 0 when the input is valid (warnings on standard error), 2 when it is not, with every error
on standard error; nothing is assessed or stored from invalid input.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from datetime import date
from pathlib import Path

from dashboard.clinical.records.validate import Records, validate
from dashboard.private_files import owner_only

EXIT_OK, EXIT_INVALID = 0, 2


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as problem:
        raise argparse.ArgumentTypeError(f"'{text}' is not a date YYYY-MM-DD") from problem


def _load_valid(path: str) -> Records | None:
    """Validate and print the report; records only when valid."""
    records, report = validate(path)
    for line in report.warning_lines():
        print(f"warning: {line}", file=sys.stderr)
    for line in report.error_lines():
        print(line, file=sys.stderr)
    if records is None:
        print(f"{report.error_count:,} error(s): nothing was assessed or stored.", file=sys.stderr)
    return records


def cmd_validate(args: argparse.Namespace) -> int:
    records = _load_valid(args.records)
    if records is None:
        return EXIT_INVALID
    counts = ", ".join(f"{len(frame)} {name}" for name, frame in records.frames().items())
    print(f"valid: {counts}", file=sys.stderr)
    return EXIT_OK


def _reference(path: str | None):
    """The reference-curve file to assess with (published by default); None after printing why not."""
    from dashboard.clinical.curves import ReferenceError, load_reference

    try:
        return load_reference(path)
    except ReferenceError as problem:
        print(problem, file=sys.stderr)
        return None


def cmd_assess(args: argparse.Namespace) -> int:
    from dashboard.clinical.assessment import assess, json_pieces

    records = _load_valid(args.records)
    reference = _reference(args.reference) if records is not None else None
    if records is None or reference is None:
        return EXIT_INVALID
    result = assess(records, as_of=args.as_of or date.today(), reference=reference)
    if args.format == "json":
        sys.stdout.buffer.writelines(json_pieces(result))  # the text of json.dump(indent=2, ensure_ascii=False)
    else:
        from dashboard.clinical.summary import assessment_lines

        print("\n".join(assessment_lines(result)))
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from dashboard.demo import write_cohort

    first = args.first_id if args.first_id is not None else _first_free_demo_number(args.database)
    out = write_cohort(Path(args.out_dir), n_patients=args.patients, seed=args.seed, first_id=first)
    width = max(5, len(str(first + args.patients - 1)))
    print(f"wrote {args.patients} synthetic patients (P{first:0{width}d} …) to {out}", file=sys.stderr)
    return EXIT_OK


def _first_free_demo_number(database: str | None) -> int:
    """1, or one past the highest P-number stored: a new demo cohort never reuses a stored patient's id.

    Only looks when the store exists (a SQLite file that is not there yet is not created for this)."""
    from sqlalchemy import create_engine, inspect, text
    from sqlalchemy.engine import make_url

    from dashboard.store import database_url

    url = make_url(database or database_url())
    if url.get_backend_name() == "sqlite" and (not url.database or not Path(url.database).exists()):
        return 1
    engine = create_engine(url)
    try:
        if not inspect(engine).has_table("patients"):
            return 1
        with engine.connect() as conn:
            ids = conn.execute(text("SELECT patient_id FROM patients")).scalars()
            numbers = [int(pid[1:]) for pid in ids if pid[:1] in "Pp" and pid[1:].isdigit()]
    finally:
        engine.dispose()
    return max(numbers, default=0) + 1


def cmd_calibrate(args: argparse.Namespace) -> int:
    from dashboard.clinical.calibration import CalibrationError, calibrate_reference

    records = _load_valid(args.records)
    if records is None:
        return EXIT_INVALID
    try:
        report = calibrate_reference(records, Path(args.out), source_name=Path(args.records).name,
                                     min_patients=args.min_patients)
    except CalibrationError as problem:
        print(problem, file=sys.stderr)
        return EXIT_INVALID
    print(report, file=sys.stderr)
    return EXIT_OK


def cmd_rules_doc(args: argparse.Namespace) -> int:
    from dashboard.clinical.imaging.catalogue import write_catalogue

    path = write_catalogue(Path(args.out))
    print(f"wrote {path}", file=sys.stderr)
    return EXIT_OK


def cmd_import(args: argparse.Namespace) -> int:
    from dashboard.store import IdentityConflictError, StoreImportError, get_engine, import_records
    from dashboard.store.audit import record

    records = _load_valid(args.records)
    if records is None:
        return EXIT_INVALID
    engine = get_engine(args.database)
    name = Path(args.records).name
    try:
        result = import_records(engine, records, source_name=name, user=args.user, dry_run=args.dry_run,
                                audit_user=_cli_user(args.user))
    except IdentityConflictError as conflict:  # the importing user must see the values to decide
        for line in conflict.problems:
            print(_terminal_safe(line), file=sys.stderr)
        print(f"{conflict}.", file=sys.stderr)
        return EXIT_INVALID
    except StoreImportError as problem:  # value-free message; nothing was stored
        record(engine, _cli_user(args.user), "import", file=name, status="failed", error=type(problem).__name__)
        print(f"nothing was stored: {problem}", file=sys.stderr)
        return EXIT_FAILED
    if result.dry_run:
        print(f"preview, nothing stored: {result.patients_summary()}; {result.summary()}", file=sys.stderr)
    else:
        print(f"imported {name}: {result.patients_summary()}; {result.summary()}", file=sys.stderr)
        _log_prompts_after_import(engine, [*result.new_patients, *result.changed_patients])
    return EXIT_OK


def _log_prompts_after_import(engine, patient_ids: list[str]) -> None:  # noqa: ANN001 — an Engine, imported late
    """Log the prompts of the patients the import added or changed, as of today (docs/outcomes.md): a prompt the
    new records make is known to have fired even if it is gone before anyone opens the app. The import has landed
    whatever happens here: a failure is a warning, and the app logs the prompts when it next assesses the store."""
    from dashboard.batch import log_store_prompts

    if not patient_ids:
        return
    try:
        logged = log_store_prompts(engine, date.today(), patient_ids=patient_ids)
    except Exception as problem:  # noqa: BLE001 — named by type only (no patient data on the terminal's log)
        print(f"warning: the prompts could not be written to the prompt log ({type(problem).__name__}); the import "
              "is stored, and the app logs them when it next assesses the store", file=sys.stderr)
        return
    patients = f"{logged.patients:,} patient" + ("" if logged.patients == 1 else "s")
    print(f"prompt log: {logged.added:,} new of {logged.prompts:,} prompts ({patients} assessed as of "
          f"{date.today()})", file=sys.stderr)


def cmd_correct_patient(args: argparse.Namespace) -> int:
    """An admin's explicit, audited correction of a stored patient's identity (an import never changes it)."""
    from dashboard.store import get_engine
    from dashboard.store.identity import correct_identity

    changes = {field: value for field, value in (("name", args.name), ("mrn", args.mrn), ("sex", args.sex),
                                                 ("birth_year", args.birth_year)) if value is not None}
    try:
        old = correct_identity(get_engine(args.database), args.patient_id, changes, _cli_user(args.user))
    except ValueError as problem:
        print(f"nothing was changed: {_terminal_safe(str(problem))}", file=sys.stderr)
        return EXIT_INVALID
    for field, value in changes.items():
        print(_terminal_safe(f"{args.patient_id}: {field} {old[field]!r} → {value!r}"), file=sys.stderr)
    return EXIT_OK


def _terminal_safe(text: str) -> str:
    """Control characters (ANSI escapes, carriage returns) shown as escapes, never acted on by the terminal."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


# ---------------------------------------------------------------- login configuration, backup, restore (issue 8)
EXIT_FAILED = 1


def _cli_user(user: str | None) -> str:
    from dashboard.store.audit import command_line_user

    return command_line_user(user)


def _unknown_cli_user(args: argparse.Namespace) -> str | None:
    """Why --user is refused (None: accepted). The audit log must name who acted, so --user must be an active
    account of the store the command works on; without --user the log names the operating-system account.

    Checked before the command does anything (a refused backup writes no file, a refused restore replaces
    nothing). `outcomes` audits only with --database; without it --user is not used.
    """
    user = getattr(args, "user", None)
    if user is None or (args.command == "outcomes" and not args.database):
        return None
    from dashboard.store import database_url
    from dashboard.store.users import store_account

    name = _terminal_safe(user.strip())
    found = store_account(database_url(args.database), user.strip())
    if found is None:
        return (f"refused: --user '{name}' is not a user of this store; nothing was done (name an active user of "
                "the Users screen, or leave --user out to be named as the system account)")
    if not found.active:
        return (f"refused: --user '{name}' is deactivated; nothing was done (name an active user of the Users "
                "screen, or leave --user out to be named as the system account)")
    args.user = found.username  # the audit log names the account as stored ('Admin.A' is 'admin.a')
    return None


def _audit_export(args: argparse.Namespace, kind: str, out: Path, **details: object) -> None:
    """An export from the command line is audited in the store it read (--database); a file-only run has none."""
    if not getattr(args, "database", None):
        return
    from dashboard.store import get_engine
    from dashboard.store.audit import record

    engine = get_engine(args.database)
    try:
        record(engine, _cli_user(getattr(args, "user", None)), "export", kind=kind,
               format=out.suffix.lstrip(".").lower(), file=out.name, **details)
    finally:
        engine.dispose()


def _backup_secret(args: argparse.Namespace, *, required: bool) -> bytes | None:
    """The backup key: --key-file, else $SPINE_BACKUP_PASSPHRASE (EncryptionError when unusable)."""
    from dashboard.store.encryption import PASSPHRASE_ENV, EncryptionError, secret_from

    secret = secret_from(getattr(args, "key_file", None))
    if secret is None and required:
        raise EncryptionError(f"--encrypt needs a passphrase in {PASSPHRASE_ENV} or a key file (--key-file)")
    return secret


def cmd_backup(args: argparse.Namespace) -> int:
    from dashboard.store import get_engine
    from dashboard.store.audit import record
    from dashboard.store.backup import BackupError, backup
    from dashboard.store.encryption import EncryptionError

    try:
        secret = _backup_secret(args, required=args.encrypt) if args.encrypt else None
        result = backup(args.out, args.database, secret=secret)
    except (BackupError, EncryptionError) as problem:
        print(f"backup failed: {problem}", file=sys.stderr)
        return EXIT_FAILED
    engine = get_engine(args.database)
    try:
        record(engine, _cli_user(args.user), "backup", file=result.path.name, backend=result.backend,
               bytes=result.bytes, counts=result.counts, revision=result.revision)
    finally:
        engine.dispose()
    rows = ", ".join(f"{n} {table}" for table, n in result.counts.items())
    print(f"backed up ({result.backend}, {'encrypted, ' if result.encrypted else ''}{result.bytes / 1e6:.1f} MB, "
          f"{result.seconds:.1f} s) to {result.path}, manifest {result.manifest}: {rows}", file=sys.stderr)
    return EXIT_OK


def cmd_restore(args: argparse.Namespace) -> int:
    from dashboard.store.backup import BackupError, RestoredUnprotectedError, restore
    from dashboard.store.encryption import EncryptionError

    try:
        secret = _backup_secret(args, required=False)
        result = restore(args.backup, args.database, safety_dir=args.safety_dir, secret=secret,
                         unverified=args.unverified, user=_cli_user(args.user))
    except (BackupError, EncryptionError) as problem:
        print(f"restore failed, nothing was changed: {problem}", file=sys.stderr)
        return EXIT_FAILED
    except RestoredUnprotectedError as problem:
        print(f"restored, but {problem}", file=sys.stderr)
        return EXIT_FAILED
    if result.safety_copy is not None:
        print(f"the store as it was before is kept in {result.safety_copy}", file=sys.stderr)
    if not result.verified:
        print("restored WITHOUT a manifest (--unverified): its checksum and row counts were not checked; its "
              "schema, append-only triggers, CHECK constraints and foreign keys were", file=sys.stderr)
    if result.carried_audit_entries:
        print(f"{result.carried_audit_entries} audit entries the backup did not have were kept", file=sys.stderr)
    rows = ", ".join(f"{n} {table}" for table, n in result.counts.items())
    print(f"restored {result.source} ({result.backend}, schema {result.revision}): {rows}", file=sys.stderr)
    return EXIT_OK


def cmd_hash_password(args: argparse.Namespace) -> int:
    from dashboard.access import hash_password

    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("the two entries differ", file=sys.stderr)
            return EXIT_INVALID
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    try:
        print(hash_password(password))
    except ValueError as problem:
        print(problem, file=sys.stderr)
        return EXIT_INVALID
    return EXIT_OK


def cmd_check_auth(args: argparse.Namespace) -> int:
    from dashboard.access import AuthConfigError, load_auth_config

    try:
        config = load_auth_config(args.file, demo=args.demo)
    except AuthConfigError as problem:
        print(problem, file=sys.stderr)
        return EXIT_INVALID
    roles = ", ".join(f"{u.username} ({u.role})" for u in config.users.values())
    print(f"ok: {config.path} — {len(config.users)} user(s): {roles}", file=sys.stderr)
    return EXIT_OK


def cmd_import_fhir(args: argparse.Namespace) -> int:
    from dashboard.interop.commands import import_fhir

    return import_fhir(args)


def cmd_export_fhir(args: argparse.Namespace) -> int:
    from dashboard.interop.commands import export_fhir

    return export_fhir(args)


def cmd_import_redcap(args: argparse.Namespace) -> int:
    from dashboard.interop.commands import import_redcap

    return import_redcap(args)


def cmd_serve_cds(args: argparse.Namespace) -> int:
    from dashboard.interop.commands import serve_cds

    return serve_cds(args)


def cmd_assess_store(args: argparse.Namespace) -> int:
    from dashboard.batch import LoggedPrompts, assess_store
    from dashboard.store import get_engine

    reference = _reference(args.reference)
    if reference is None:
        return EXIT_INVALID
    engine = get_engine(args.database)
    logged, failures = LoggedPrompts(), []

    def log_chunk(result) -> None:  # noqa: ANN001 — an Assessment
        """Each chunk's prompts into the prompt log; a failure never stops the assessment (a warning below)."""
        try:
            logged.add(result, engine)
        except Exception as problem:  # noqa: BLE001 — named by type only
            failures.append(type(problem).__name__)

    count = assess_store(engine, sys.stdout, as_of=args.as_of or date.today(), chunk_patients=args.chunk_patients,
                         reference=reference, on_assessed=log_chunk)
    print(f"assessed {count} patients; prompt log: {logged.added:,} new of {logged.prompts:,} prompts",
          file=sys.stderr)
    if failures:
        print(f"warning: the prompts of {len(failures)} chunk(s) could not be written to the prompt log "
              f"({', '.join(sorted(set(failures)))}); the assessment above is complete", file=sys.stderr)
    return EXIT_OK


def _handout_inputs(args: argparse.Namespace):
    """Records, assessment and prompts (with the store's decisions when --database is given)."""
    from dashboard.clinical.assessment import assess

    records = _load_valid(args.records)
    if records is None:
        return None
    result = assess(records, as_of=args.as_of or date.today())
    prompts = result.prompts
    if args.database:
        from dashboard.clinical.decisions import with_decisions
        from dashboard.store import get_engine, latest_decisions

        prompts = with_decisions(prompts, latest_decisions(get_engine(args.database)))
    return result, prompts


def cmd_handout(args: argparse.Namespace) -> int:
    """De-identified case-conference handout (.pdf or .html) for a case list by filter or by patient ids."""
    import time

    from dashboard.clinical.conference import hand_picked, select_cases
    from dashboard.clinical.patient_view import ExamIndex
    from dashboard.reports import ReportError, build_handout
    from dashboard.reports.handout import write

    if Path(args.out).suffix.lower() not in (".pdf", ".html", ".htm"):
        print(f"--out must end in .pdf or .html: {args.out}", file=sys.stderr)
        return EXIT_INVALID
    inputs = _handout_inputs(args)
    if inputs is None:
        return EXIT_INVALID
    result, prompts = inputs
    try:
        ids = (hand_picked(result, [p.strip() for p in args.patients.split(",") if p.strip()]) if args.patients
               else select_cases(result, prompts, filter=args.filter, statuses=args.status, surgeons=args.surgeon))
    except (KeyError, ValueError) as problem:
        print(problem.args[0], file=sys.stderr)
        return EXIT_INVALID
    if not ids:
        print("no patient matches the case list: nothing written", file=sys.stderr)
        return EXIT_INVALID
    started = time.perf_counter()
    try:
        path = write(args.out, build_handout(result, ids, prompts, ExamIndex(result.records.strength).exams))
    except ReportError as problem:
        print(problem, file=sys.stderr)
        return EXIT_INVALID
    print(f"wrote {len(ids)} de-identified cases to {path} in {time.perf_counter() - started:.1f} s",
          file=sys.stderr)
    _audit_export(args, "conference_handout", Path(path), patients=len(ids), identified=False)
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    """Identified follow-up report of one patient (.pdf or .html), for the patient's chart."""
    from dashboard.reports import ReportError, build_report

    suffix = Path(args.out).suffix.lower()
    if suffix not in (".pdf", ".html", ".htm"):
        print(f"--out must end in .pdf or .html: {args.out}", file=sys.stderr)
        return EXIT_INVALID
    inputs = _handout_inputs(args)
    if inputs is None:
        return EXIT_INVALID
    result, prompts = inputs
    if args.patient_id not in set(result.patients.loc[result.patients["surgery_date"].notna(), "patient_id"]):
        print("no patient with that id in follow-up on the assessment day", file=sys.stderr)
        return EXIT_INVALID
    try:
        report = build_report(result, args.patient_id, prompts)
        out = Path(args.out)
        if suffix == ".pdf":
            out.write_bytes(report.pdf())
        else:
            out.write_text(report.html, encoding="utf-8")
    except ReportError as problem:
        print(problem, file=sys.stderr)
        return EXIT_INVALID
    print(f"wrote the follow-up report to {out} (identified: for the patient's chart)", file=sys.stderr)
    _audit_export(args, "follow_up_report", out, patient_id=args.patient_id, identified=True)
    return EXIT_OK


def cmd_outcomes(args: argparse.Namespace) -> int:
    """Cohort outcomes and prompt performance (docs/outcomes.md): printed, or written as .html or .csv."""
    from dashboard.clinical.assessment import assess
    from dashboard.clinical.imaging.checklist import load_rules
    from dashboard.clinical.outcomes import cohort_outcomes
    from dashboard.clinical.prompt_performance import rule_performance
    from dashboard.reports.outcomes import write
    from dashboard.store.decisions import _frame

    if args.out and Path(args.out).suffix.lower() not in (".html", ".htm", ".csv"):
        print(f"--out must end in .html or .csv: {args.out}", file=sys.stderr)
        return EXIT_INVALID
    if not args.records and not args.database:
        print("give a records folder or workbook, or --database URL", file=sys.stderr)
        return EXIT_INVALID
    engine = None
    if args.database:
        from dashboard.store import get_engine

        engine = get_engine(args.database)
    if args.records:
        records = _load_valid(args.records)
        if records is None:
            return EXIT_INVALID
    else:
        from dashboard.store import load_records

        records = load_records(engine)
    as_of = args.as_of or date.today()
    result = assess(records, as_of=as_of)
    outcomes = cohort_outcomes(result.records, as_of, result.reference)
    log = None
    if engine is not None:
        from dashboard.store.decisions import decision_history
        from dashboard.store.prompt_log import prompt_log

        history, log = decision_history(engine), prompt_log(engine)
        engine.dispose()
    else:
        history = _frame([])
    rules, _, reasons = rule_performance(result.prompts, history, result.visits, as_of, load_rules(), log=log)
    if not args.out:
        milestones = outcomes.recovery("all", args.endpoint)[1]
        print(f"{len(outcomes.operations)} operations, {len(outcomes.sides)} weak muscle-sides as of {as_of}")
        print(milestones.to_string(index=False))
        print(outcomes.lost[outcomes.lost["grouping"] == "all"].to_string(index=False))
        print(rules.to_string(index=False))
        gone = int(rules["emergencies_went_away_undecided"].sum())
        print(f"prompts fired: {int(rules['fired'].sum()):,}; went away undecided: "
              f"{int(rules['went_away_undecided'].sum()):,} (emergencies: {gone:,})"
              + ("" if log is not None else " — no prompt log without --database: only prompts firing now and "
                 "decided prompts are known"))
        return EXIT_OK
    path = write(args.out, outcomes, rules, reasons, result.reference.title, args.endpoint)
    print(f"wrote the cohort outcomes to {path} (aggregates: no patient identified)", file=sys.stderr)
    _audit_export(args, "outcomes", path, patients=int(outcomes.operations["patient_id"].nunique()),
                  identified=False)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dashboard", description=__doc__.splitlines()[0],
        epilog="RECORDS is a folder of CSV files or an .xlsx workbook in the records format: docs/records-format.md "
               "(extensions: docs/format-extensions.md).")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("validate", help="check a records folder or workbook")
    p.add_argument("records")
    p.set_defaults(run=cmd_validate)

    p = commands.add_parser("assess", help="assess every patient as of a day")
    p.add_argument("records")
    p.add_argument("--as-of", type=_date, default=None, help="assess with what was known on that day")
    p.add_argument("--format", choices=("json", "table"), default="table")
    p.add_argument("--reference", default=None, help="reference-curve file (default: published)")
    p.set_defaults(run=cmd_assess)

    p = commands.add_parser("assess-store", help="assess every stored patient, chunk by chunk (JSON)")
    p.add_argument("--database", default=None, help="database URL (default: SPINE_DASHBOARD_DB_URL or SQLite)")
    p.add_argument("--as-of", type=_date, default=None)
    p.add_argument("--chunk-patients", type=int, default=5000, help="patients per chunk (bounds memory)")
    p.add_argument("--reference", default=None)
    p.set_defaults(run=cmd_assess_store)

    p = commands.add_parser("demo", help="write a synthetic, non-identifying demo cohort")
    p.add_argument("out_dir")
    p.add_argument("--patients", type=int, default=200)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--first-id", type=int, default=None,
                   help="number of the first patient id (default: one past the highest id in the store, so a new "
                        "cohort never reuses a stored patient's id)")
    p.add_argument("--database", default=None, help="the store whose ids to avoid (default: SPINE_DASHBOARD_DB_URL "
                                                    "or the SQLite store)")
    p.set_defaults(run=cmd_demo)

    p = commands.add_parser("calibrate", help="fit reference curves from a clinic's own follow-ups")
    p.add_argument("records")
    p.add_argument("--out", required=True)
    p.add_argument("--min-patients", type=int, default=30)
    p.set_defaults(run=cmd_calibrate)

    p = commands.add_parser("rules-doc", help="write the rule catalogue from the rules file")
    p.add_argument("--out", default="docs/rule-catalogue.md")
    p.set_defaults(run=cmd_rules_doc)

    p = commands.add_parser("import", help="validate and store records (atomic: all or nothing)")
    p.add_argument("records")
    p.add_argument("--database", default=None, help="database URL (default: SPINE_DASHBOARD_DB_URL or SQLite)")
    p.add_argument("--user", default=None)
    p.add_argument("--dry-run", action="store_true",
                   help="show the new, changed and unchanged patients and rows, and store nothing")
    p.set_defaults(run=cmd_import)

    p = commands.add_parser("correct-patient", help="correct a stored patient's name, MRN, sex or birth year "
                                                     "(admin; audited)")
    p.add_argument("patient_id")
    p.add_argument("--name")
    p.add_argument("--mrn")
    p.add_argument("--sex", choices=("F", "M", "X"))
    p.add_argument("--birth-year", type=int)
    p.add_argument("--database", default=None)
    p.add_argument("--user", default=None, help="the admin making the correction (audit log)")
    p.set_defaults(run=cmd_correct_patient)

    about = ("online backup of the store to a new file (SQLite backup API / pg_dump), with a manifest beside it "
             "(OUT.manifest.json: schema revision, rows per table, SHA-256), both 0600")
    p = commands.add_parser("backup", help=about, description=about)
    p.add_argument("out")
    p.add_argument("--database", default=None, help="database URL (default: SPINE_DASHBOARD_DB_URL or SQLite)")
    p.add_argument("--user", default=None, help="who, for the audit log (default: the system account)")
    p.add_argument("--encrypt", action="store_true",
                   help="encrypt the backup (AES-256-GCM, key from scrypt) with the passphrase in "
                        "SPINE_BACKUP_PASSPHRASE or the key file given by --key-file")
    p.add_argument("--key-file", default=None, help="a file holding the backup key or passphrase (with --encrypt)")
    p.set_defaults(run=cmd_backup)

    about = ("replace the store with a verified backup: refused unless its checksum matches its manifest and its "
             "schema, append-only triggers, CHECK constraints, foreign keys and row counts are as written; the "
             "current store is kept first (safety copy), and its audit entries the backup lacks are kept")
    p = commands.add_parser("restore", help=about, description=about)
    p.add_argument("backup")
    p.add_argument("--database", default=None, help="database URL (default: SPINE_DASHBOARD_DB_URL or SQLite)")
    p.add_argument("--user", default=None, help="who, for the audit log (default: the system account)")
    p.add_argument("--safety-dir", default=None, help="where the copy of the current store goes (default: var/backups)")
    p.add_argument("--key-file", default=None,
                   help="key file of an encrypted backup (else the passphrase in SPINE_BACKUP_PASSPHRASE)")
    p.add_argument("--unverified", action="store_true",
                   help="restore a backup that has no manifest (older versions): its checksum and row counts "
                        "are then NOT checked; schema, triggers, CHECK constraints and foreign keys still are")
    p.set_defaults(run=cmd_restore)

    p = commands.add_parser("hash-password", help="bcrypt hash of a password for the login configuration")
    p.set_defaults(run=cmd_hash_password)

    p = commands.add_parser("check-auth", help="check a login configuration as the app does outside demo mode")
    p.add_argument("file", nargs="?", default=None, help="default: $SPINE_DASHBOARD_AUTH_FILE")
    p.add_argument("--demo", action="store_true", help="check as in demo mode (demo secrets allowed)")
    p.set_defaults(run=cmd_check_auth)

    db_help = "database URL (default: SPINE_DASHBOARD_DB_URL or SQLite)"
    p = commands.add_parser("import-fhir", help="validate and store FHIR R4: a Bundle (.json), NDJSON, or a Bulk "
                            "Data folder of .ndjson files (docs/interoperability.md)")
    p.add_argument("bundle", metavar="PATH", help="a Bundle .json, an .ndjson file, or a folder of .ndjson files")
    p.add_argument("--database", default=None, help=db_help)
    p.add_argument("--user", default=None)
    p.set_defaults(run=cmd_import_fhir)

    p = commands.add_parser("export-fhir", help="write stored patients as a FHIR R4 Bundle or Bulk Data NDJSON")
    p.add_argument("out", help="the Bundle .json, or with --ndjson a folder")
    p.add_argument("--ndjson", action="store_true",
                   help="write Bulk Data NDJSON (one file per resource type), streamed chunk by chunk")
    p.add_argument("--patient", action="append", default=None, help="a patient_id (repeatable; default: all)")
    p.add_argument("--identified", action="store_true", help="include names, MRNs, notes and extra columns")
    p.add_argument("--database", default=None, help=db_help)
    p.set_defaults(run=cmd_export_fhir)

    p = commands.add_parser("import-redcap", help="validate and store a REDCap CSV export through a mapping")
    p.add_argument("export")
    p.add_argument("--mapping", required=True, help="mapping file (example: data/redcap/mapping.yaml)")
    p.add_argument("--database", default=None, help=db_help)
    p.add_argument("--user", default=None)
    p.set_defaults(run=cmd_import_redcap)

    p = commands.add_parser("serve-cds", help="run the CDS Hooks service (patient-view, feedback)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8090, help="port to listen on (default 8090)")
    p.add_argument("--database", default=None, help=db_help)
    p.add_argument("--as-of", type=_date, default=None, help="assess as of this day (default: today)")
    p.add_argument("--source-url", default=None,
                   help="where a card's source links: the published rule catalogue (#rule_id is added)")
    p.add_argument("--cors-origin", action="append", default=None, metavar="ORIGIN",
                   help="a browser origin allowed to call the service (repeat for more; default: no CORS)")
    p.add_argument("--fhir-timeout", type=float, default=5.0,
                   help="seconds per request to the EHR's FHIR server (default 5)")
    p.add_argument("--auth-config", default=None, metavar="FILE",
                   help="YAML/JSON file of trusted CDS Clients: each issuer (iss) with its JWK Set (file, inline "
                        "or URL); required unless --no-auth (docs/interoperability.md)")
    p.add_argument("--service-url", default=None, metavar="URL",
                   help="this service's base URL as the EHR calls it: the JWT audience is URL/cds-services/<id> "
                        "(default: the configuration's service_url, else http://HOST:PORT)")
    p.add_argument("--allowed-host", action="append", default=None, metavar="HOST[:PORT]",
                   help="another Host header value to answer (repeatable; default: HOST:PORT, the loopback names "
                        "with PORT, and the service URL's host)")
    p.add_argument("--max-body-bytes", type=int, default=10 * 1024 * 1024,
                   help="largest request body accepted, in bytes (default 10 MiB; larger: 413)")
    p.add_argument("--no-auth", action="store_true",
                   help="no JWT check: demo mode only (SPINE_DASHBOARD_MODE=demo) and a loopback --host only")
    p.set_defaults(run=cmd_serve_cds)

    p = commands.add_parser("handout", help="de-identified case-conference handout (.pdf or .html)")
    p.add_argument("records")
    p.add_argument("--out", required=True, help="FILE.pdf or FILE.html")
    p.add_argument("--as-of", type=_date, default=None, help="assess with what was known on that day")
    p.add_argument("--filter", choices=("urgent", "emergency", "open", "all"), default="urgent",
                   help="patients with open urgent/emergency prompts (default), emergency only, any open prompt, all")
    p.add_argument("--status", action="append", default=None, help="worst muscle status (repeatable)")
    p.add_argument("--surgeon", action="append", default=None, help="surgeon (repeatable)")
    p.add_argument("--patients", default=None, help="comma-separated patient ids, in case order (overrides filters)")
    p.add_argument("--database", default=None, help="include the decisions recorded in this store (URL)")
    p.set_defaults(run=cmd_handout)

    p = commands.add_parser("report", help="identified follow-up report of one patient (.pdf or .html)")
    p.add_argument("records")
    p.add_argument("patient_id")
    p.add_argument("--out", required=True, help="FILE.pdf or FILE.html")
    p.add_argument("--as-of", type=_date, default=None, help="assess with what was known on that day")
    p.add_argument("--database", default=None, help="include the decisions recorded in this store (URL)")
    p.set_defaults(run=cmd_report)

    p = commands.add_parser("outcomes", help="cohort outcomes and prompt performance (.html or .csv with --out)")
    p.add_argument("records", nargs="?", default=None, help="records folder or workbook (or --database)")
    p.add_argument("--database", default=None, help="read the store (URL): its records when RECORDS is not given, "
                   "its decisions and its prompt log")
    p.add_argument("--out", default=None, help="FILE.html or FILE.csv (default: a summary on standard output)")
    p.add_argument("--as-of", type=_date, default=None, help="with what was known on that day (default: today)")
    p.add_argument("--endpoint", choices=("recovered", "normal", "improved"), default="recovered",
                   help="what recovery means (docs/outcomes.md)")
    p.add_argument("--user", default=None, help="who, for the audit log of the store (default: the system account)")
    p.set_defaults(run=cmd_outcomes)
    return parser


def _arrow_memory_from_the_system_allocator() -> None:
    """A command is a short process that builds its arrays once: pyarrow's default pool (mimalloc) returned and
    re-faulted memory so often that the kernel's time for it doubled (assess at 20,000 patients: 0.8–1.6 s of
    system time with mimalloc, 0.5 s with the system allocator; docs/performance.md). Someone who chose a pool
    with pyarrow's own setting (ARROW_DEFAULT_MEMORY_POOL) keeps it."""
    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        return
    import pyarrow as pa  # noqa: PLC0415 — validation imports it anyway

    pa.set_memory_pool(pa.system_memory_pool())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    owner_only()  # the store, backups and reports it writes hold patient data
    _arrow_memory_from_the_system_allocator()
    refused = _unknown_cli_user(args)
    if refused is not None:
        print(refused, file=sys.stderr)
        return EXIT_INVALID
    try:
        return args.run(args)
    except BrokenPipeError:  # `… | head`: the reader has what it wanted
        sys.stderr.close()
        return EXIT_OK
