"""Fuzzing re-imports with hypothesis (issue 22): after each import the store holds exactly the data of before
(refused: every error reported, nothing changed) or of after (accepted: exactly the expected merge).

Each example starts from the same stored cohort (tests.store_fixtures.GOOD_FILES, copied from a template SQLite
file: cheap) and imports a generated file that mixes, per stored patient and per cell: identity changes under a
stored id (name, MRN, sex, birth year), spelling variants of the same identity, ids that differ from a stored or
another new one only by case or by a Cyrillic / Greek / full-width look-alike letter, a mixed-script id, one MRN
under two ids (in the file, or a stored one under a new id), absent optional columns and files, blank cells, new
patients, rows and extra columns, and valid changes. The expected outcome is computed here, independently of
the importer: the errors (exact messages), or the merged store (a blank cell or an absent column keeps the
stored value, a recorded one replaces it, nothing is deleted), the per-file counts and the new / changed /
unchanged patients, which the dry-run preview must show exactly as the import then does.

Most examples hand typed records to the importer directly (validation costs ~85 ms, most of an example's
time); those with in-file identity problems, and a share of the others, go through `validate_frames`, which
must then produce exactly the typed frames built here (so the direct ones are what validation would give).
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from dashboard.clinical.records.format import FILES, FileSpec
from dashboard.clinical.records.validate import Records, validate_frames
from dashboard.store import IdentityConflictError, get_engine, import_records, load_records
from tests.clinical.test_fuzz_import import FUZZ, examples
from tests.store_fixtures import GOOD_FILES, TODAY, edited, records_from, store_engine, store_url

FIXTURES = (store_engine, store_url)  # imported for pytest, which finds fixtures by name
SPECS: dict[str, FileSpec] = {spec.stem: spec for spec in FILES}
TABLES = {"patients": "patients", "surgeries": "surgeries", "strength": "strength_exams", "visits": "visits"}
KINDS = {stem: {c.name: c.kind for c in spec.columns} for stem, spec in SPECS.items()}
IDENTITY = ("name", "mrn", "sex", "birth_year")
SHOWN = {"name": "name", "mrn": "MRN", "sex": "sex", "birth_year": "birth year"}
#: What the generator writes for a Latin letter to make a look-alike id (and how this test reads it back).
LOOK_ALIKE = {"cyrillic": "\u0420", "greek": "\u03a1", "fullwidth": "\uff30"}  # Р, Ρ, Ｐ for P
MIXED_ID = "P\u04109"  # Latin P with a Cyrillic А: mixes scripts
READ_AS = {"\u0420": "P", "\u03a1": "P", "\uff30": "P", "\u0410": "A"}
#: Outcomes seen over the run (printed at the end; the last test checks every kind occurred).
SEEN: Counter[str] = Counter()


# ------------------------------------------------------------------------------------------ the stored cohort
Row = dict[str, Any]


def plain(value: Any) -> Any:
    """One cell as a plain Python value (None for missing), the same whatever frame or driver it came from."""
    if value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (pd.Timestamp,)):
        return value.strftime("%Y-%m-%d")
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    return str(value)


def frame_rows(frame: pd.DataFrame) -> list[Row]:
    return [{k: plain(v) for k, v in row.items()} for row in frame.astype(object).to_dict("records")]


def key_of(stem: str, row: Row) -> tuple:
    return tuple(row[k] for k in SPECS[stem].key)


def recorded(row: Row) -> Row:
    return {k: v for k, v in row.items() if v is not None}


def stored_content(engine: Engine) -> dict[str, dict[tuple, Row]]:
    """Every stored record row, by key, holding its recorded values only (extra columns merged in).

    Raw SQL on the store's own tables: load_records would cost more than the rest of an example.
    """
    content: dict[str, dict[tuple, Row]] = {}
    with engine.connect() as conn:
        for stem, table in TABLES.items():
            kinds = KINDS[stem]
            names = list(kinds)
            rows = conn.exec_driver_sql(f"SELECT {', '.join(names)}, extra FROM {table}").all()
            content[stem] = {}
            for raw in rows:
                row = {name: _stored_value(kinds[name], value) for name, value in zip(names, raw[:-1], strict=True)}
                row.update(json.loads(raw[-1]) if raw[-1] else {})
                row = recorded(row)
                content[stem][key_of(stem, row)] = row
    return content


def _stored_value(kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind == "boolean":
        return bool(value)
    if kind in ("number", "mrc"):
        return float(value)
    return value if kind == "integer" else str(value)


def untouched(engine: Engine) -> tuple:
    """Everything but the import log, row for row (a refused import is logged there as failed)."""
    with engine.connect() as conn:
        return tuple(tuple(conn.exec_driver_sql(f"SELECT * FROM {table} ORDER BY id").all())
                     for table in (*TABLES.values(), "audit_log", "decisions"))


def import_log(engine: Engine) -> list[tuple]:
    with engine.connect() as conn:
        return conn.exec_driver_sql("SELECT status, error FROM imports ORDER BY id").all()


class Store:
    """The stored cohort: an engine on a working copy of a template file, and what the template holds."""

    def __init__(self, engine: Engine, path: Path, template: Path, before: dict[str, dict[tuple, Row]],
                 base: dict[str, list[Row]]):
        self.engine, self.path, self.template = engine, path, template
        self.before = before  # the stored rows by key (recorded values only)
        self.base = base  # the stored cohort's rows as plain values, to derive files from

    def __repr__(self) -> str:  # hypothesis prints it with a failing example
        return f"Store({self.path.name})"

    def reset(self) -> None:
        """Back to the stored cohort: no connection open (so no WAL file), then the template's bytes."""
        self.engine.dispose()
        shutil.copyfile(self.template, self.path)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    folder = tmp_path_factory.mktemp("reimport")
    base = records_from(folder / "base", GOOD_FILES)
    template = folder / "template.db"
    engine = get_engine(f"sqlite:///{template}")
    import_records(engine, base, "base")
    before = stored_content(engine)
    engine.dispose()
    path = folder / "store.db"
    shutil.copyfile(template, path)
    engine = get_engine(f"sqlite:///{path}", migrate=False)
    yield Store(engine, path, template, before, {stem: frame_rows(f) for stem, f in base.frames().items()})
    engine.dispose()


@pytest.fixture(scope="module", autouse=True)
def summary(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None and SEEN:
        with capture.global_and_fixture_disabled():
            reporter.write_line("\nre-import fuzz: " + ", ".join(f"{k} {v}" for k, v in sorted(SEEN.items())))


# ------------------------------------------------------------------------------------------ generated files
@dataclass
class Case:
    """One generated import: rows per file as plain values (None: a blank cell), absent columns dropped."""

    rows: dict[str, list[Row]]
    extras: dict[str, list[str]]
    absent: dict[str, set[str]] = field(default_factory=dict)
    visits_file: bool = True
    validate: bool = False  # also through validate_frames (always when the file itself has identity errors)


NAMES = ["Dora Other", "Eve Novak"]
SURGEONS = ["Dr C", "Dr A"]
WARDS = ["W3", "W1"]
PROCEDURES = ["PLIF", "TLIF", "XLIF"]
LEVELS = ["L4-L5", "L3-L4;L4-L5"]


def _variant(field_name: str, value: Any) -> Any:
    """The same identity written differently: the store must take it as the same person."""
    if value is None or field_name not in ("name", "mrn"):
        return value
    if field_name == "name":
        return value.swapcase()
    return f"{value[:3].lower()} {value[3:]}"


def _id_form(form: str, patient_id: str) -> str:
    return patient_id.lower() if form == "lower" else patient_id.replace("P", LOOK_ALIKE[form], 1)


#: Each strategy made once (by its arguments): a strategy object is validated and labelled at its first draw, which
#: cost as much as the draws themselves (an example makes ~160). The same strategies, so the same examples.
_MADE: dict[tuple, st.SearchStrategy] = {}


def _once(kind: str, key: tuple, make: Any) -> st.SearchStrategy:
    made = _MADE.get((kind, key))
    if made is None:
        made = _MADE[(kind, key)] = make()
    return made


def _typed_key(values: Any) -> tuple:
    return tuple((type(v), v) for v in values)  # True and 1 are different values here


def sampled(values: list[Any]) -> st.SearchStrategy:
    """st.sampled_from(values), made once."""
    return _once("sampled", _typed_key(values), lambda: st.sampled_from(list(values)))


def just(value: Any) -> st.SearchStrategy:
    return _once("just", _typed_key([value]), lambda: st.just(value))


def either(first: st.SearchStrategy, second: st.SearchStrategy) -> st.SearchStrategy:
    """first | second, made once (for strategies made once)."""
    return _once("or", (id(first), id(second)), lambda: first | second)


BOOLEANS = st.booleans()
ONE_IN_15 = st.integers(0, 14)
GRADES = st.integers(0, 5).map(float)


@st.composite
def _cell(draw: st.DrawFn, stored: Any, changed: st.SearchStrategy, required: bool = False) -> Any:
    """Keep the stored value, leave the cell blank, or record another value."""
    action = draw(sampled(["keep", "keep", "change"] + ([] if required else ["blank"])))
    return stored if action == "keep" else None if action == "blank" else draw(changed)


def cell(stored: Any, changed: st.SearchStrategy, required: bool = False) -> st.SearchStrategy:
    """_cell, made once (`changed`: a strategy made once)."""
    return _once("cell", (*_typed_key([stored]), id(changed), required), lambda: _cell(stored, changed, required))


@st.composite
def reimport(draw: st.DrawFn, base: dict[str, list[Row]]) -> Case:
    """A file against the stored cohort `base`; `trouble` says which kinds of identity error it may hold."""
    trouble = draw(sampled(["none", "none", "identity", "id", "mrn", "store", "in-file"]))

    def allow(kind: str) -> bool:  # "store": every kind of conflict with the store, none in the file itself
        return trouble == kind or (trouble == "store" and kind != "in-file")

    stored_mrns = [p["mrn"] for p in base["patients"] if p["mrn"]]
    fresh_mrn = iter(f"MRN00001{n:02d}" for n in range(100))  # never stored, never repeated by accident
    patients: list[Row] = []
    exact: list[str] = []  # stored ids the file has as they are stored
    for stored in base["patients"]:
        if not draw(sampled([True, True, True, False])):
            continue
        forms = ["exact"] * 3 + (["lower", *LOOK_ALIKE] if allow("id") else []) + (["both"] if allow("in-file") else [])
        form = draw(sampled(forms))
        row: Row = {"patient_id": stored["patient_id"]}
        for name in IDENTITY:
            old = stored[name]
            mrns = [next(fresh_mrn)] + ([_variant("mrn", m) for m in stored_mrns if m != old] if allow("mrn") else [])
            pools = {"name": NAMES, "mrn": mrns, "sex": ["F", "M", "X"], "birth_year": [1948, 1990]}
            changes = sampled(pools[name]) if allow("identity") or old is None else just(old)
            row[name] = draw(either(sampled([old, old, None, _variant(name, old)]), changes))
        row["diabetes"] = draw(cell(stored["diabetes"], BOOLEANS))
        row["smoker"] = draw(cell(stored["smoker"], BOOLEANS))
        row["surgeon"] = draw(cell(stored["surgeon"], sampled(SURGEONS)))
        row["ward"] = draw(cell(stored["ward"], sampled(WARDS)))
        row["bed"] = draw(sampled([None, "12"]))
        if form in ("exact", "both"):
            patients.append(row)
            exact.append(stored["patient_id"])
        if form != "exact":  # the same person under an id that reads the same
            patients.append({**stored, "patient_id": _id_form("lower" if form == "both" else form,
                                                               stored["patient_id"]), "bed": None})
    new_ids = ["P8", "P9"] + (["p8", "\u04208", MIXED_ID] if allow("in-file") else [])
    for new_id in draw(_once("ids", _typed_key(new_ids), lambda: st.lists(sampled(new_ids), unique=True, max_size=2))):
        mrns = [next(fresh_mrn), None] + ([_variant("mrn", m) for m in stored_mrns] if allow("mrn") else []) + \
            ([p["mrn"] for p in patients if p["mrn"]] if allow("in-file") else [])
        patients.append({"patient_id": new_id, "name": draw(sampled([*NAMES, None])),
                         "mrn": draw(sampled(mrns)), "sex": draw(sampled(["F", "M", None])),
                         "birth_year": draw(sampled([1948, None])), "diabetes": None, "smoker": False,
                         "surgeon": None, "ward": draw(sampled([None, "W2"])), "bed": None})
    if not patients:
        patients.append({**base["patients"][0], "bed": None})
        exact.append(base["patients"][0]["patient_id"])
    patients = draw(st.permutations(patients))
    ids = [p["patient_id"] for p in patients]
    others = [i for i in ids if i not in exact]  # new patients and look-alikes of stored ones: fresh rows

    surgeries = [row for pid in exact for row in _kept(draw, base["surgeries"], pid, lambda s: {
        **s, "procedure": draw(cell(s["procedure"], sampled(PROCEDURES), required=True)),
        "levels": draw(cell(s["levels"], sampled(LEVELS), required=True)),
        "instrumented": draw(cell(s["instrumented"], BOOLEANS, required=True)),
        "revision": draw(cell(s["revision"], BOOLEANS)),
        "deficit_onset_date": draw(cell(s["deficit_onset_date"], just("2025-05-01")))})]
    surgeries += [{"patient_id": pid, "surgery_date": "2026-05-01", "procedure": "TLIF", "levels": "L4-L5",
                   "instrumented": True, "revision": None, "deficit_onset_date": None} for pid in others]
    surgeries += [{"patient_id": pid, "surgery_date": "2026-06-01", "procedure": "XLIF", "levels": "L3-L4",
                   "instrumented": False, "revision": True, "deficit_onset_date": None}
                  for pid in exact if draw(BOOLEANS)]
    grades = GRADES
    strength = [row for pid in exact for row in _kept(draw, base["strength"], pid, lambda s: {
        **s, "mrc": draw(cell(s["mrc"], grades, required=True)),
        "examiner": draw(cell(s["examiner"], just("physio 9")))})]
    strength += [{"patient_id": pid, "exam_date": "2026-06-10", "muscle": "hip_flexion", "side": "L",
                  "mrc": draw(grades), "examiner": None} for pid in [*others, *exact] if pid in others or
                 draw(BOOLEANS)]
    visits = [row for pid in exact for row in _kept(draw, base["visits"], pid, lambda v: {
        **v, "leg_pain_nrs": draw(cell(v["leg_pain_nrs"], sampled([0.0, 7.5]))),
        "saddle_anesthesia": draw(cell(v["saddle_anesthesia"], BOOLEANS)),
        "numbness": draw(cell(v["numbness"], BOOLEANS)),
        "notes": draw(cell(v["notes"], just("worse again")))}, keep_first=False)]
    visits += [{"patient_id": pid, "visit_date": "2026-07-01", "leg_pain_nrs": 2.0, "saddle_anesthesia": False,
                "notes": None} for pid in ids if draw(sampled([False, False, True]))]
    rows = {"patients": patients, "surgeries": surgeries, "strength": strength, "visits": visits}
    optional = {stem: [c.name for c in spec.columns if not c.required] for stem, spec in SPECS.items()}
    optional["patients"] += ["ward", "bed"]
    optional["strength"] += ["examiner"]
    absent = {stem: {c for c in names if not draw(sampled([True, True, False]))}
              for stem, names in optional.items()}
    extras = {"patients": [c for c in ("ward", "bed") if c not in absent["patients"]],
              "surgeries": [], "strength": [] if "examiner" in absent["strength"] else ["examiner"], "visits": []}
    return Case(rows=_complete(rows, absent, extras), extras=extras, absent=absent,
                visits_file=bool(visits) and draw(BOOLEANS), validate=draw(ONE_IN_15) == 0)


def _kept(draw: st.DrawFn, stored: list[Row], patient_id: str, change: Any, keep_first: bool = True) -> list[Row]:
    """A stored patient's rows of one file, each kept (changed or not) or left out of the file; the first one
    kept when `keep_first` (a patient with exams needs an operation in the file)."""
    own = [row for row in stored if row["patient_id"] == patient_id]
    return [change(row) for i, row in enumerate(own) if (keep_first and i == 0) or draw(BOOLEANS)]


def _complete(rows: dict[str, list[Row]], absent: dict[str, set[str]], extras: dict[str, list[str]]
              ) -> dict[str, list[Row]]:
    """Every row with every column of its file (None where blank or where the column is absent)."""
    done = {}
    for stem, stem_rows in rows.items():
        names = [*KINDS[stem], *extras[stem]]
        done[stem] = [{name: None if name in absent[stem] else row.get(name) for name in names} for row in stem_rows]
    return done


# --------------------------------------------------------------------------------- the file, typed or as text
def _present(case: Case, stem: str) -> bool:
    return stem != "visits" or case.visits_file


def typed_records(case: Case) -> Records:
    """The records validation gives for this file: every format column (all-missing where absent), then extras."""
    frames = {}
    for stem in SPECS:
        rows = case.rows[stem] if _present(case, stem) else []
        data = {name: _typed([row[name] for row in rows], kind) for name, kind in KINDS[stem].items()}
        data.update({name: pd.array([row[name] for row in rows], dtype="string")
                     for name in (case.extras[stem] if _present(case, stem) else [])})
        frames[stem] = pd.DataFrame(data)
    # Typed as the loader types stored rows, without validation's cost (about 12% of the examples are also run
    # through validate_frames, which must give these very frames): the loader's construction route.
    return Records.from_store(frames, {stem: list(names) if _present(case, stem) else []
                                       for stem, names in case.extras.items()})


def _typed(values: list[Any], kind: str) -> Any:
    """One column with validation's dtype (numpy and pandas arrays: Series per column cost most of a run)."""
    if kind == "date":
        return np.array([np.datetime64(v if v else "NaT") for v in values], dtype="datetime64[us]")
    if kind in ("number", "mrc"):
        return np.array([np.nan if v is None else v for v in values], dtype=float)
    return pd.array(values, dtype={"integer": "Int64", "boolean": "boolean"}.get(kind, "string"))


def text_frames(case: Case) -> dict[str, pd.DataFrame | None]:
    """The file as a reader hands it to validation: text cells, "" where blank, absent columns left out."""
    frames: dict[str, pd.DataFrame | None] = {}
    for stem, spec in SPECS.items():
        if not _present(case, stem):
            frames[spec.name] = None
            continue
        kinds = {**KINDS[stem], **dict.fromkeys(case.extras[stem], "text")}
        names = [name for name in kinds if name not in case.absent[stem]]
        frames[spec.name] = pd.DataFrame({name: [_text(row[name], kinds[name]) for row in case.rows[stem]]
                                          for name in names}, columns=names, dtype="string")
    return frames


def _text(value: Any, kind: str) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if kind == "mrc" and value != int(value) and value * 2 != int(value * 2):  # 4+ is 4⅓, 5- is 4⅔
        return f"{round(value)}{'+' if value > round(value) else '-'}"
    return str(value)


# ----------------------------------------------------------------------------------------- what must happen
def read_as(patient_id: str) -> str:
    """How a reader takes the id: look-alike letters as the Latin ones, any case."""
    return "".join(READ_AS.get(ch, ch) for ch in patient_id).lower()


def _scripts(patient_id: str) -> set[str]:
    return {"cyrillic" if ch in "\u0420\u0410" else "greek" if ch == "\u03a1" else "latin"
            for ch in patient_id if ch.isalpha()}


def _mrn_key(mrn: str) -> str:
    return "".join(mrn.lower().split())


def expected_file_errors(patients: list[Row]) -> list[str]:
    """Validation's errors for the file's own ids and MRNs (line 2 is the first row)."""
    errors: list[str] = []
    first_id: dict[str, tuple[int, str]] = {}
    first_mrn: dict[str, tuple[int, str]] = {}
    for line, row in enumerate(patients, start=2):
        pid, mrn = row["patient_id"], row["mrn"]
        if len(_scripts(pid)) > 1:
            errors.append(f"patients.csv:{line}: patient_id: '{pid}' mixes letters of different scripts "
                          f"({', '.join(sorted(_scripts(pid)))}): look-alike letters make two ids that read the same")
        else:
            earlier = first_id.setdefault(read_as(pid), (line, pid))
            if earlier[1] != pid:
                errors.append(f"patients.csv:{line}: patient_id: '{pid}' reads the same as patient_id "
                              f"'{earlier[1]}' on line {earlier[0]} (case or look-alike letters differ): one person "
                              "cannot have two ids")
        if mrn:
            earlier = first_mrn.setdefault(_mrn_key(mrn), (line, pid))
            if earlier[1] != pid:
                errors.append(f"patients.csv:{line}: mrn: '{mrn}' is also the MRN of patient_id '{earlier[1]}' on line "
                              f"{earlier[0]}: one MRN is one person")
    return errors


def _same(name: str, old: Any, new: Any) -> bool:
    if name == "birth_year":
        return int(old) == int(new)
    if name == "mrn":
        return _mrn_key(old) == _mrn_key(new)
    return " ".join(str(old).casefold().split()) == " ".join(str(new).casefold().split())


def expected_store_problems(patients: list[Row], stored: list[Row]) -> list[str]:
    """The importer's identity errors against the stored patients, one per problem, in the file's order."""
    by_id = {p["patient_id"]: p for p in stored}
    problems = []
    for row in patients:
        pid = row["patient_id"]
        if pid in by_id:
            changes = [f"{SHOWN[name]} is stored as {_shown(name, by_id[pid][name])}, the file has "
                       f"{_shown(name, row[name])}" for name in IDENTITY
                       if by_id[pid][name] is not None and row[name] is not None
                       and not _same(name, by_id[pid][name], row[name])]
            if changes:
                problems.append(f"patient {pid}: {'; '.join(changes)}. A different person under the same id? Give "
                                "the new patient a new id; a genuine correction is an admin's `correct-patient`.")
        else:
            twin = next((s for s in by_id if read_as(s) == read_as(pid)), None)
            if twin:
                problems.append(f"patient {pid}: reads the same as stored patient {twin} (case or look-alike letters "
                                "differ). Use the stored id for the same person, or a clearly different id.")
        owner = next((s for s, p in by_id.items() if row["mrn"] and p["mrn"]
                      and _mrn_key(p["mrn"]) == _mrn_key(row["mrn"])), None)
        if owner is not None and owner != pid:
            problems.append(f"patient {pid}: MRN '{row['mrn']}' is stored for patient {owner}. One MRN is one person.")
    return problems


def _shown(name: str, value: Any) -> str:
    return str(int(value)) if name == "birth_year" else f"'{value}'"


@dataclass
class Merge:
    content: dict[str, dict[tuple, Row]]
    counts: dict[str, tuple[int, int, int]]  # inserted, unchanged, updated
    new: tuple[str, ...]
    changed: tuple[str, ...]
    unchanged: int


def expected_merge(before: dict[str, dict[tuple, Row]], case: Case) -> Merge:
    """A new key adds its row; a stored key takes the file's recorded values and keeps the rest; nothing goes."""
    content = {stem: dict(rows) for stem, rows in before.items()}
    counts, new, touched = {}, set(), set()
    for stem in SPECS:
        inserted = unchanged = updated = 0
        for row in case.rows[stem] if _present(case, stem) else []:
            key, values = key_of(stem, row), recorded(row)
            old = before[stem].get(key)
            if old is None:
                content[stem][key], inserted = values, inserted + 1
                touched.add(row["patient_id"])
                new |= {row["patient_id"]} if stem == "patients" else set()
            elif any(old.get(name) != value for name, value in values.items()):
                content[stem][key], updated = {**old, **values}, updated + 1
                touched.add(row["patient_id"])
            else:
                unchanged += 1
        counts[stem] = (inserted, unchanged, updated)
    changed = touched - new
    return Merge(content, counts, tuple(sorted(new)), tuple(sorted(changed)),
                 len(case.rows["patients"]) - len(new) - len(changed))


# ------------------------------------------------------------------------------------------------- the fuzz
@settings(max_examples=examples(1000), **FUZZ)
@given(data=st.data())
def test_a_reimport_leaves_exactly_the_store_of_before_or_of_after(store: Store, data: st.DataObject) -> None:
    case = data.draw(reimport(store.base))
    store.reset()
    engine = store.engine
    file_errors = expected_file_errors(case.rows["patients"])
    records = None if file_errors else typed_records(case)
    if file_errors or case.validate:
        validated, report = validate_frames(text_frames(case), {}, today=TODAY)
        if file_errors:  # refused before the store is touched: every error of the file at once
            assert validated is None and sorted(report.error_lines()) == sorted(file_errors)
            SEEN["refused by validation"] += 1
            return
        assert validated is not None and records is not None, report.error_lines()
        assert validated.extra_columns == records.extra_columns
        for stem, frame in records.frames().items():
            pd.testing.assert_frame_equal(validated.frames()[stem], frame)
        SEEN["validated"] += 1

    before, log = untouched(engine), import_log(engine)
    problems = expected_store_problems(case.rows["patients"], store.base["patients"])
    if problems:  # the preview and the import both refuse, naming every problem, and store nothing
        for dry_run in (True, False):
            with pytest.raises(IdentityConflictError) as refused:
                import_records(engine, records, "fuzz", dry_run=dry_run)
            assert refused.value.problems == problems
        assert untouched(engine) == before
        assert import_log(engine) == [*log, ("failed", "IdentityConflictError"), ("failed", "IdentityConflictError")]
        SEEN["refused: identity differs from the store"] += 1
        return

    preview = import_records(engine, records, "fuzz", dry_run=True)
    assert preview.dry_run and untouched(engine) == before and import_log(engine) == log
    result = import_records(engine, records, "fuzz")
    merge = expected_merge(store.before, case)
    for shown in (preview, result):
        assert {stem: (c.inserted, c.unchanged, c.updated) for stem, c in shown.counts.items()} == merge.counts
        assert (shown.new_patients, shown.changed_patients, shown.unchanged_patients) == (
            merge.new, merge.changed, merge.unchanged)
    assert stored_content(engine) == merge.content
    assert import_log(engine) == [*log, ("succeeded", None)]
    SEEN["accepted: " + ("changed" if result.updated else "added" if result.inserted else "unchanged")] += 1


def test_the_fuzz_generated_every_outcome() -> None:
    """The generator is worth its examples only if each outcome occurs often (run with the fuzz above)."""
    if not SEEN:
        pytest.skip("runs after the fuzz test in the same session")
    total = sum(SEEN[kind] for kind in SEEN if kind != "validated")
    # Runs of 1,000 gave 9.4–21 %, 35–40 %, 41 %, 2 % and 16–18 % (the examples are random, not derandomised): each
    # floor is about half the lowest share seen, so a run fails only when the generator has really drifted.
    shares = {"refused by validation": 0.05, "refused: identity differs from the store": 0.2, "accepted: changed": 0.2,
              "accepted: unchanged": 0.01, "validated": 0.01}
    assert all(SEEN[kind] >= total * share for kind, share in shares.items()), SEEN


# ----------------------------------------------------------------------------- what the fuzz found, pinned
def test_blank_or_absent_extra_columns_keep_their_stored_values(store_engine: Engine, tmp_path: Path) -> None:
    """Found by the fuzz: extra columns are one JSON object per row, and a re-import replaced the whole object,
    so a blank `ward` cell, or a file with a new `bed` column but no `ward`, erased the stored wards (and a
    re-import of the same patients counted them as updated)."""
    import_records(store_engine, records_from(tmp_path / "v1", GOOD_FILES), "v1")
    blank_ward = edited(GOOD_FILES, "patients.csv", "P1,Ann Example,MRN0000001,1960,F,yes,no,Dr A,W1",
                        "P1,Ann Example,MRN0000001,1960,F,yes,no,Dr A,")
    blank_ward = edited(blank_ward, "strength.csv", "P1,2026-01-08,ankle_dorsiflexion,R,3,physio 1",
                        "P1,2026-01-08,ankle_dorsiflexion,R,3,")
    second = import_records(store_engine, records_from(tmp_path / "v2", blank_ward), "v2")
    assert (second.updated, second.changed_patients) == (0, ())

    bed_only = {**GOOD_FILES, "patients.csv": "patient_id,bed\nP1,12\nP2,\nP3,\n"}
    third = import_records(store_engine, records_from(tmp_path / "v3", bed_only), "v3")
    assert (third.counts["patients"].updated, third.changed_patients) == (1, ("P1",))

    stored = load_records(store_engine)
    patients = stored.patients.set_index("patient_id")
    assert patients["ward"].fillna("-").tolist() == ["W1", "-", "W2"]
    assert patients["bed"].fillna("-").tolist() == ["12", "-", "-"]
    assert stored.strength["examiner"].fillna("-").tolist() == ["physio 1", "-", "physio 2", "-", "-", "-"]
