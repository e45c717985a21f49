"""The command-line side of interoperability (`import-fhir`, `export-fhir`, `import-redcap`, `serve-cds`).

Same contract as the other commands (docs/assessment-format.md): exit status 2 and every error on
standard error for invalid input, and nothing stored from it. Only counts and messages are printed,
never row values beyond what a validation message quotes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dashboard.clinical.records.validate import Records, ValidationReport

EXIT_OK, EXIT_INVALID = 0, 2


def print_report(report: ValidationReport) -> None:
    """Warnings and errors on standard error, in the records format's message form."""
    for line in report.warning_lines():
        print(f"warning: {line}", file=sys.stderr)
    for line in report.error_lines():
        print(line, file=sys.stderr)
    if not report.ok:
        print(f"{len(report.errors)} error(s): nothing was stored.", file=sys.stderr)


def _store(records: Records, args: argparse.Namespace, source: str, kind: str) -> int:
    from dashboard.store import IdentityConflictError, get_engine, import_records  # noqa: PLC0415
    from dashboard.store.audit import command_line_user  # noqa: PLC0415

    engine = get_engine(args.database)
    try:
        result = import_records(engine, records, source_name=source, user=args.user, source_kind=kind,
                                audit_user=command_line_user(args.user))
    except IdentityConflictError as conflict:
        for line in conflict.problems:
            print(line, file=sys.stderr)
        print(f"{conflict}.", file=sys.stderr)
        return EXIT_INVALID
    print(f"imported {source}: {result.patients_summary()}; {result.summary()}", file=sys.stderr)
    return EXIT_OK


def import_fhir(args: argparse.Namespace) -> int:
    """Validate a FHIR R4 Bundle, NDJSON file or Bulk Data folder like a records folder; store it (all or nothing)."""
    from dashboard.interop.fhir import no_spine_operations, read_fhir  # noqa: PLC0415

    records, report = read_fhir(args.bundle)
    print_report(report)
    if records is None and no_spine_operations(report):
        print("no spine operations found: nothing was stored.", file=sys.stderr)
        return EXIT_OK
    if records is None:
        return EXIT_INVALID
    return _store(records, args, Path(args.bundle).name, "fhir")


def export_fhir(args: argparse.Namespace) -> int:
    """Write stored patients (all, or those named) as a FHIR R4 Bundle, or as Bulk Data NDJSON (streamed)."""
    from dashboard.interop.fhir import write_bundle, write_ndjson  # noqa: PLC0415
    from dashboard.store import get_engine, load_records  # noqa: PLC0415
    from dashboard.store.audit import command_line_user, record  # noqa: PLC0415

    engine = get_engine(args.database)
    what = "identified" if args.identified else "pseudonymous (no names, MRNs, notes or extra columns)"
    if getattr(args, "ndjson", False):
        try:
            counts = write_ndjson(engine, args.out, args.patient or None, identified=args.identified)
        except KeyError as problem:
            print(f"{problem.args[0]}: nothing was written.", file=sys.stderr)
            return EXIT_INVALID
        patients = counts["Patient"]
        record(engine, command_line_user(getattr(args, "user", None)), "export", kind="fhir_bulk", format="ndjson",
               file=Path(args.out).name, patients=patients, identified=bool(args.identified),
               patient_ids=list(args.patient) if args.patient and len(args.patient) <= 1000 else None)
        files = ", ".join(f"{kind}.ndjson {n}" for kind, n in counts.items())
        print(f"wrote {patients} patient(s) to {args.out}/ as NDJSON ({files}), {what}", file=sys.stderr)
        return EXIT_OK
    records = load_records(engine)
    try:
        path = write_bundle(records, args.out, args.patient or None, identified=args.identified)
    except KeyError as problem:
        print(f"{problem.args[0]}: nothing was written.", file=sys.stderr)
        return EXIT_INVALID
    count = len(args.patient) if args.patient else len(records.patients)
    record(engine, command_line_user(getattr(args, "user", None)), "export", kind="fhir_bundle", format="json",
           file=Path(path).name, patients=count, identified=bool(args.identified),
           patient_ids=list(args.patient) if args.patient and len(args.patient) <= 1000 else None)
    print(f"wrote {count} patient(s) to {path}, {what}", file=sys.stderr)
    return EXIT_OK


def import_redcap(args: argparse.Namespace) -> int:
    """Read a REDCap flat CSV export through a mapping file, validate and store it (all or nothing)."""
    from dashboard.interop.redcap import MappingError, load_mapping, read_export  # noqa: PLC0415

    try:
        mapping = load_mapping(args.mapping)
    except MappingError as problem:
        print(problem, file=sys.stderr)
        print("the mapping cannot be used: nothing was stored.", file=sys.stderr)
        return EXIT_INVALID
    records, report = read_export(args.export, mapping)
    print_report(report)
    if records is None:
        return EXIT_INVALID
    return _store(records, args, Path(args.export).name, "redcap")


def serve_cds(args: argparse.Namespace) -> int:
    """Run the CDS Hooks service until interrupted: with the JWT check, or (demo mode only) --no-auth."""
    from dashboard.access import MODE_ENV, demo_mode  # noqa: PLC0415
    from dashboard.interop.cds_hooks import DEFAULT_SOURCE_URL, serve  # noqa: PLC0415
    from dashboard.interop.cds_security import LOOPBACK_HOSTS, AuthConfigError, load_auth_config  # noqa: PLC0415

    auth = None
    if args.no_auth:
        if args.auth_config:
            print("give either --auth-config or --no-auth, not both", file=sys.stderr)
            return EXIT_INVALID
        if not demo_mode():
            print(f"--no-auth is refused outside demo mode ({MODE_ENV}=demo): give --auth-config", file=sys.stderr)
            return EXIT_INVALID
        if args.host not in (*LOOPBACK_HOSTS, "::1"):
            print("--no-auth only with a loopback --host (127.0.0.1, localhost, ::1)", file=sys.stderr)
            return EXIT_INVALID
    elif not args.auth_config:
        print("the CDS service authenticates its callers: give --auth-config FILE (trusted issuers and their keys, "
              "docs/interoperability.md), or --no-auth in demo mode", file=sys.stderr)
        return EXIT_INVALID
    else:
        try:
            auth = load_auth_config(args.auth_config)
        except AuthConfigError as problem:
            print(problem, file=sys.stderr)
            return EXIT_INVALID
    if auth is not None and not (args.service_url or auth.service_url) and args.host in ("0.0.0.0", "::"):  # noqa: S104
        print("listening on every interface: give --service-url (the URL the EHR calls, the JWT audience)",
              file=sys.stderr)
        return EXIT_INVALID
    if args.max_body_bytes < 1:
        print("--max-body-bytes must be positive", file=sys.stderr)
        return EXIT_INVALID
    try:
        serve(args.host, args.port, args.database, args.as_of, source_url=args.source_url or DEFAULT_SOURCE_URL,
              cors_origins=args.cors_origin or (), fhir_timeout=args.fhir_timeout, auth=auth,
              service_url=args.service_url, no_auth=args.no_auth, allowed_hosts=args.allowed_host or (),
              max_body_bytes=args.max_body_bytes)
    except ValueError as problem:
        print(problem, file=sys.stderr)
        return EXIT_INVALID
    return EXIT_OK
