"""Identity of an import's patients against the store: one patient id is one person, and stays so.

Before a file's rows touch the store, each of its patients is compared with the stored patients:
- the same patient_id with another recorded name, MRN, sex or birth year is another person (or a typing
  error) under that id — an error naming the stored and the new values, never an overwrite;
- an id that differs from a stored one only by case or look-alike letters is the same id written differently;
- an MRN stored under another patient_id means one person under two ids.
A blank identity field in the file is "not recorded" and matches anything (the stored value is kept).
A genuine correction is an explicit, audited admin action (`python -m dashboard correct-patient`).

Messages name values because the importing clinician must see them to decide; they go to that user's screen
or terminal only, never to a log or the audit trail (which record the error's type).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from sqlalchemy import Connection, Engine, select, update

from dashboard.clinical.records.identity import id_match_key, mrn_match_key
from dashboard.store import audit
from dashboard.store.models import Patient

#: Identity fields compared with the store, with how they are shown.
IDENTITY_FIELDS: dict[str, str] = {"name": "name", "mrn": "MRN", "sex": "sex", "birth_year": "birth year"}


class IdentityConflictError(ValueError):
    """The file would change who a stored patient is; nothing was stored. `problems`: one line each."""

    def __init__(self, problems: list[str]):
        super().__init__(f"{len(problems)} identity conflict(s) with stored patients; nothing was stored")
        self.problems = problems


@dataclass(frozen=True)
class _Stored:
    frame: pd.DataFrame  # patient_id, name, mrn, sex, birth_year

    def by_key(self) -> dict[str, str]:
        return {id_match_key(pid): pid for pid in self.frame["patient_id"]}

    def by_mrn(self) -> dict[str, str]:
        mrns = self.frame.dropna(subset=["mrn"])
        return {mrn_match_key(m): pid for m, pid in zip(mrns["mrn"], mrns["patient_id"], strict=True) if m.strip()}


def stored_identities(conn: Connection) -> pd.DataFrame:
    table = Patient.__table__
    rows = conn.execute(select(table.c.patient_id, *(table.c[f] for f in IDENTITY_FIELDS))).all()
    return pd.DataFrame(rows, columns=["patient_id", *IDENTITY_FIELDS], dtype=object)


def identity_conflicts(conn: Connection, patients: pd.DataFrame) -> list[str]:
    """Every way the file's patients contradict the stored ones (empty: none), one plain sentence each."""
    stored = _Stored(stored_identities(conn))
    if stored.frame.empty:
        return []
    problems: list[str] = []
    known = stored.frame.set_index("patient_id")
    stored_keys, stored_mrns = stored.by_key(), stored.by_mrn()
    for row in patients.itertuples(index=False):
        patient_id = row.patient_id
        if patient_id in known.index:
            changes = [_change(field, known.at[patient_id, field], getattr(row, field, None))
                       for field in IDENTITY_FIELDS]
            changes = [c for c in changes if c]
            if changes:
                problems.append(f"patient {patient_id}: {'; '.join(changes)}. A different person under the same id? "
                                "Give the new patient a new id; a genuine correction is an admin's "
                                "`correct-patient`.")
        else:
            twin = stored_keys.get(id_match_key(patient_id))
            if twin is not None:
                problems.append(f"patient {patient_id}: reads the same as stored patient {twin} (case or look-alike "
                                "letters differ). Use the stored id for the same person, or a clearly different id.")
        mrn = getattr(row, "mrn", None)
        if isinstance(mrn, str) and mrn.strip():
            owner = stored_mrns.get(mrn_match_key(mrn))
            if owner is not None and owner != patient_id:
                problems.append(f"patient {patient_id}: MRN '{mrn}' is stored for patient {owner}. One MRN is one "
                                "person.")
    return problems


def _change(field: str, old: object, new: object) -> str | None:
    """'name stored as 'A', the file has 'B'' when both are recorded and differ; None otherwise."""
    if _blank(old) or _blank(new):
        return None
    if field == "birth_year":
        same = int(old) == int(new)
    elif field == "mrn":
        same = mrn_match_key(str(old)) == mrn_match_key(str(new))
    else:
        same = " ".join(str(old).casefold().split()) == " ".join(str(new).casefold().split())
    if same:
        return None
    shown = (int(old), int(new)) if field == "birth_year" else (f"'{old}'", f"'{new}'")
    return f"{IDENTITY_FIELDS[field]} is stored as {shown[0]}, the file has {shown[1]}"


def _blank(value: object) -> bool:
    return value is None or (not isinstance(value, str) and pd.isna(value)) or (isinstance(value, str)
                                                                                 and not value.strip())


def correct_identity(engine: Engine, patient_id: str, changes: dict[str, object], user: str,
                     role: str | None = "admin") -> dict[str, object]:
    """An admin's explicit correction of who a stored patient is (name, MRN, sex, birth year); returns the
    values it replaced. The change and its audit entry (which fields, never their values) land together.

    Refused (ValueError) for an unknown patient, a field that is not an identity field, or an MRN stored for
    another patient.
    """
    unknown = set(changes) - set(IDENTITY_FIELDS)
    if unknown or not changes:
        raise ValueError(f"only {', '.join(IDENTITY_FIELDS)} can be corrected here")
    table = Patient.__table__
    with engine.begin() as conn:
        old = conn.execute(select(*(table.c[f] for f in changes)).where(table.c.patient_id == patient_id)).first()
        if old is None:
            raise ValueError(f"there is no stored patient {patient_id}")
        mrn = changes.get("mrn")
        if isinstance(mrn, str) and mrn.strip():
            owner = _Stored(stored_identities(conn)).by_mrn().get(mrn_match_key(mrn))
            if owner is not None and owner != patient_id:
                raise ValueError(f"MRN '{mrn}' is stored for patient {owner}: one MRN is one person")
        conn.execute(update(table).where(table.c.patient_id == patient_id).values(**changes))
        # An import-kind change of the records (the audit log's actions are fixed by the schema).
        audit.record(conn, user, "import", role=role, patient_id=patient_id, kind="identity_correction",
                     status="succeeded", fields=",".join(sorted(changes)))
    return dict(zip(changes, old, strict=True))
