"""Command line: validate, assess, demo, calibrate, rules-doc, import (see shared/spec/assessment.md).

Exit status 0 when the input is valid (warnings on standard error), 2 when it is not, with every error
on standard error; nothing is assessed or stored from invalid input.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path

from dashboard.core.records import Records, validate

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
        print(f"{len(report.errors)} error(s): nothing was assessed or stored.", file=sys.stderr)
    return records


def cmd_validate(args: argparse.Namespace) -> int:
    records = _load_valid(args.records)
    if records is None:
        return EXIT_INVALID
    counts = ", ".join(f"{len(frame)} {name}" for name, frame in records.frames().items())
    print(f"valid: {counts}", file=sys.stderr)
    return EXIT_OK


def cmd_assess(args: argparse.Namespace) -> int:
    from dashboard.core.assessment import assess, to_json_dict
    from dashboard.core.curves import ReferenceError, load_reference

    records = _load_valid(args.records)
    if records is None:
        return EXIT_INVALID
    try:
        reference = load_reference(args.reference)
    except ReferenceError as problem:
        print(problem, file=sys.stderr)
        return EXIT_INVALID
    result = assess(records, as_of=args.as_of or date.today(), reference=reference)
    if args.format == "json":
        json.dump(to_json_dict(result), sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        from dashboard.core.summary import assessment_table

        print(assessment_table(result).to_string(index=False))
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from dashboard.demo import write_cohort

    out = write_cohort(Path(args.out_dir), n_patients=args.patients, seed=args.seed)
    print(f"wrote {args.patients} synthetic patients to {out}", file=sys.stderr)
    return EXIT_OK


def cmd_calibrate(args: argparse.Namespace) -> int:
    from dashboard.core.calibration import CalibrationError, calibrate_reference

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
    from dashboard.core.catalogue import write_catalogue

    path = write_catalogue(Path(args.out))
    print(f"wrote {path}", file=sys.stderr)
    return EXIT_OK


def cmd_import(args: argparse.Namespace) -> int:
    from dashboard.store import get_engine, import_records

    records = _load_valid(args.records)
    if records is None:
        return EXIT_INVALID
    result = import_records(get_engine(args.database), records, source_name=Path(args.records).name,
                            user=args.user)
    print(result, file=sys.stderr)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dashboard", description=__doc__.splitlines()[0])
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

    p = commands.add_parser("demo", help="write a synthetic, non-identifying demo cohort")
    p.add_argument("out_dir")
    p.add_argument("--patients", type=int, default=200)
    p.add_argument("--seed", type=int, default=7)
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
    p.set_defaults(run=cmd_import)

    db_help = "database URL (default: SPINE_DASHBOARD_DB_URL or SQLite)"
    p = commands.add_parser("import-fhir", help="validate and store a FHIR R4 Bundle (docs/interoperability.md)")
    p.add_argument("bundle")
    p.add_argument("--database", default=None, help=db_help)
    p.add_argument("--user", default=None)
    p.set_defaults(run=cmd_import_fhir)

    p = commands.add_parser("export-fhir", help="write stored patients as a FHIR R4 Bundle")
    p.add_argument("out")
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

    p = commands.add_parser("serve-cds", help="run the CDS Hooks service (patient-view)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8090)
    p.add_argument("--database", default=None, help=db_help)
    p.add_argument("--as-of", type=_date, default=None, help="assess as of this day (default: today)")
    p.set_defaults(run=cmd_serve_cds)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)
