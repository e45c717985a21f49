"""The cohort assessment that `assess` prints and the app shows: index operation, muscles, prompts.

Everything is computed from what was known on the assessment day (`as_of`): later rows are ignored.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from dashboard.clinical.curves import Reference, load_reference, patient_factors
from dashboard.clinical.frames import codes_in, join_rows, rows_in, sort_rank, take_rows, text_column
from dashboard.clinical.mrc import MUSCLES, SIDES
from dashboard.clinical.records.validate import Records
from dashboard.clinical.status import index_surgeries, muscle_trajectories

URGENCY_ORDER = {"emergency": 0, "urgent": 1, "routine": 2}


@dataclass
class Assessment:
    """Assessment of a cohort on one day: one frame per level of detail."""

    as_of: date
    patients: pd.DataFrame  # one row per patient: index operation, days since it, factors
    muscles: pd.DataFrame  # one row per patient×muscle×side (status.MUSCLE_COLUMNS)
    prompts: pd.DataFrame  # one row per imaging prompt (checklist.PROMPT_COLUMNS)
    visits: pd.DataFrame  # visits known on the day, with day since the index operation
    reference: Reference
    records: Records  # what was known on the day (for per-patient detail)


def known_on(records: Records, as_of: date) -> Records:
    """The records as they stood on `as_of`: everything dated later is left out."""
    limit = pd.Timestamp(as_of)
    return records.narrowed({name: (records.frames()[name][column] <= limit).to_numpy()
                             for name, column in (("surgeries", "surgery_date"), ("strength", "exam_date"),
                                                  ("visits", "visit_date"))})


def assess(records: Records, as_of: date | None = None, reference: Reference | None = None,
           rules=None) -> Assessment:
    """Assess every patient of a cohort as of one day."""
    from dashboard.clinical.imaging import checklist  # noqa: PLC0415 — the checklist builds on this module's frames

    as_of = as_of or date.today()
    reference = reference or load_reference()
    known = known_on(records, as_of)
    index_ops = index_surgeries(known.surgeries)
    factors = patient_factors(known.patients, index_ops)
    muscles = muscle_trajectories(known.strength, index_ops, factors, reference)

    op_row = rows_in(known.patients["patient_id"], index_ops["patient_id"])
    patients = join_rows(known.patients, index_ops, op_row, suffixes=("", "_surgery"))
    # factors has one row per index operation, in the same order
    patients = join_rows(patients, factors[["patient_id", "age", "deficit_days"]], op_row)
    patients["days_since_surgery"] = (pd.Timestamp(as_of) - patients["surgery_date"]).dt.days.astype("Int64")
    patients["implants"], patients["implant_levels"], patients["operated_levels"] = _operations(known.surgeries,
                                                                                                patients)
    surgery_date = take_rows(index_ops[["surgery_date"]], rows_in(known.visits["patient_id"], index_ops["patient_id"]))
    visits = known.visits.reset_index(drop=True)
    visits["day"] = (visits["visit_date"] - surgery_date["surgery_date"]).dt.days.astype("Int64")

    prompts = checklist.evaluate(patients, muscles, visits, rules or checklist.load_rules(), reference.status)
    patients = _sort_by_urgency(patients, prompts)
    return Assessment(as_of, patients, muscles, prompts, visits, reference, known)


def _operations(surgeries: pd.DataFrame, patients: pd.DataFrame) -> tuple[pd.array, pd.array, pd.array]:
    """Per patient, from every operation up to the index one: whether any placed implants, the levels of
    those that did, and the levels of all of them (';'-joined). Implants of an earlier operation count.

    Most patients have one operation: their levels are taken as they are; only the few with several are
    joined one by one."""
    patient = rows_in(surgeries["patient_id"], patients["patient_id"])
    surgery_date = patients["surgery_date"].to_numpy()
    known = patient >= 0
    up_to_index = np.zeros(len(surgeries), dtype=bool)
    up_to_index[known] = surgeries["surgery_date"].to_numpy()[known] <= surgery_date[patient[known]]
    placed = surgeries["instrumented"].fillna(False).to_numpy(dtype=bool) & up_to_index
    levels = surgeries["levels"].to_numpy(dtype=object, na_value=None)

    def levels_of(mask: np.ndarray) -> pd.array:
        rows = np.flatnonzero(mask)
        count = np.bincount(patient[rows], minlength=len(patients))
        out = np.full(len(patients), None, dtype=object)
        single = count[patient[rows]] == 1
        out[patient[rows[single]]] = levels[rows[single]]
        for who in np.unique(patient[rows[~single]]).tolist():
            texts = [str(text) for text in levels[rows[patient[rows] == who]] if text]
            out[who] = ";".join(dict.fromkeys(level.strip() for text in texts for level in text.split(";")))
        return pd.array(out, dtype="string")

    implants = pd.array(np.bincount(patient[placed], minlength=len(patients)) > 0, dtype="boolean")
    implants[patients["surgery_date"].isna().to_numpy()] = pd.NA
    return implants, levels_of(placed), levels_of(up_to_index)


def _sort_by_urgency(patients: pd.DataFrame, prompts: pd.DataFrame) -> pd.DataFrame:
    """Patients by their most urgent prompt, then patient_id, with that urgency and its rank (3: none)."""
    patient = rows_in(prompts["patient_id"], patients["patient_id"])
    urgency = codes_in(prompts["urgency"], list(URGENCY_ORDER))
    known = (patient >= 0) & (urgency >= 0)
    rank = np.full(len(patients), len(URGENCY_ORDER))
    np.minimum.at(rank, patient[known], urgency[known])
    has_prompt = rank < len(URGENCY_ORDER)
    patients = patients.assign(  # the rank's type as pandas' map gave it: floats once a patient has no prompt
        top_urgency_rank=pd.array(rank, dtype="int64[pyarrow]" if has_prompt.all() else "double[pyarrow]"),
        top_urgency=text_column(pa.array(list(URGENCY_ORDER)), np.where(has_prompt, rank, -1)))
    return take_rows(patients, np.lexsort((sort_rank(patients["patient_id"]), rank)))


def to_json_dict(assessment: Assessment) -> dict:
    """The assessment in the output format of docs/assessment-format.md (plus documented extensions).

    Built from whole columns: each field is converted once for the cohort (rounding, ISO dates, None for
    missing), then the muscles and prompts are cut into each patient's run by position. No per-patient frames:
    a 20,000-patient cohort is ~200,000 muscle-sides.
    """
    rows, bounds = _muscle_runs(assessment)
    fields = {name: np.array([*values, None], dtype=object)[codes]  # code -1 (null) takes the last
              for name, (codes, values) in _muscle_fields(assessment.muscles).items()}
    names = list(fields)
    muscle_rows = [dict(zip(names, values, strict=True)) for values in zip(*fields.values(), strict=True)]
    return _output(assessment, lambda i: [muscle_rows[row] for row in rows[bounds[i]:bounds[i + 1]]])


def to_json_bytes(assessment: Assessment) -> bytes:
    """`to_json_dict` as indented JSON text, the `assess --format json` output: byte for byte
    orjson.dumps(to_json_dict(assessment), option=OPT_INDENT_2 | OPT_APPEND_NEWLINE)."""
    return b"".join(json_pieces(assessment))


def json_pieces(assessment: Assessment, patients_per_piece: int = 1000) -> Iterator[bytes]:
    """`to_json_bytes` in pieces of a thousand patients, to be written as they come: the whole text of a
    20,000-patient cohort (about 100 MB) is never held at once.

    The muscles, most of the output, are written as text from whole columns: each distinct value's JSON once,
    the objects joined by pyarrow in each patient's order into one buffer, and each patient's list placed as an
    orjson fragment cut from it — instead of 200,000 dicts made and then serialised. Each piece is orjson's
    indented text of a list of patients, moved one level in (orjson escapes line breaks inside strings: every
    line break in its text starts an indented line).
    """
    import orjson  # noqa: PLC0415 — only the command line writes JSON text

    rows, bounds = _muscle_runs(assessment)
    objects = _muscle_objects(assessment.muscles, rows)
    _, offsets, data = objects.buffers()
    text = memoryview(data) if len(objects) else b""  # cut without copying: each fragment copies its part once
    starts = np.frombuffer(offsets, dtype=np.int64)[objects.offset:][bounds].tolist()  # each patient's, in `text`
    between = len(_MUSCLE_BETWEEN.encode())
    opening, closing = ("[\n" + MUSCLE_INDENT).encode(), ("\n" + MUSCLE_INDENT[:-2] + "]").encode()

    def muscles_of(i: int) -> list | orjson.Fragment:
        if starts[i] == starts[i + 1]:
            return []
        return orjson.Fragment(opening + bytes(text[starts[i]:starts[i + 1] - between]) + closing)

    head = {"as_of": assessment.as_of.isoformat(), "reference": assessment.reference.reference_id}
    patients = _patient_objects(assessment, muscles_of)
    first = list(itertools.islice(patients, patients_per_piece))
    yield orjson.dumps(head, option=orjson.OPT_INDENT_2)[:-2] + b',\n  "patients": '
    if not first:
        yield b"[]\n}\n"
        return
    yield b"["
    piece, separator = first, b""
    while piece:
        text_of_piece = orjson.dumps(piece, option=orjson.OPT_INDENT_2)  # "[\n  {…},\n  {…}\n]"
        yield separator + text_of_piece[1:-2].replace(b"\n", b"\n  ")
        piece, separator = list(itertools.islice(patients, patients_per_piece)), b","
    yield b"\n  ]\n}\n"


#: A muscle's object sits in a patient's "muscles" list, in a piece's list of patients: three levels of two
#: spaces (the piece is then moved one level in, to its place in "patients").
MUSCLE_INDENT = " " * 6
_MUSCLE_BETWEEN = ",\n" + MUSCLE_INDENT  # between two objects of one list


def _output(assessment: Assessment, muscles_of) -> dict:  # noqa: ANN001 — patient position → its muscles value
    return {"as_of": assessment.as_of.isoformat(), "reference": assessment.reference.reference_id,
            "patients": list(_patient_objects(assessment, muscles_of))}


def _patient_objects(assessment: Assessment, muscles_of) -> Iterator[dict]:  # noqa: ANN001 — as in _output
    """Each patient's output object, in order, made as it is asked for."""
    patients, prompts = assessment.patients, assessment.prompts
    prompt_records = _prompt_records(prompts)
    rows, bounds = _grouped_rows(prompts["patient_id"], patients["patient_id"], np.arange(len(prompts)))
    prompts_in_order, bounds = [prompt_records[row] for row in rows.tolist()], bounds.tolist()
    surgeries = zip(patients["surgery_date"].notna().tolist(), _iso_dates(patients["surgery_date"]),
                    _texts(patients["procedure"]), _texts(patients["levels"]),
                    patients["instrumented"].to_numpy(dtype=object, na_value=None).tolist(), strict=True)
    days = patients["days_since_surgery"].to_numpy(dtype=object, na_value=None).tolist()
    for i, (patient_id, (operated, day, procedure, levels, instrumented), since) in enumerate(
            zip(patients["patient_id"].tolist(), surgeries, days, strict=True)):
        yield {
            "patient_id": patient_id,
            "index_surgery": {"date": day, "procedure": procedure, "levels": str(levels).split(";"),
                              "instrumented": bool(instrumented)} if operated else None,
            "days_since_surgery": since,
            "muscles": muscles_of(i),
            "prompts": prompts_in_order[bounds[i]:bounds[i + 1]],
        }


def _muscle_runs(assessment: Assessment) -> tuple[np.ndarray, np.ndarray]:
    """The muscle rows in output order (by patient as listed, then muscle and side), and where each patient's
    run starts (one bound more than patients)."""
    muscles = assessment.muscles
    muscle_side = codes_in(muscles["muscle"], list(MUSCLES)) * len(SIDES) + codes_in(muscles["side"], list(SIDES))
    return _grouped_rows(muscles["patient_id"], assessment.patients["patient_id"], muscle_side)


def _grouped_rows(patient_ids: pd.Series, order: pd.Series, within: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows of `patient_ids` grouped by patient in the order of `order` (rows of other patients left out),
    sorted by `within` inside a patient; and the bounds of each patient's run."""
    patient = rows_in(patient_ids, order)
    rows = np.lexsort((within, patient))
    rows = rows[patient[rows] >= 0]
    return rows, np.searchsorted(patient[rows], np.arange(len(order) + 1))


def _iso_dates(series: pd.Series) -> list[str | None]:
    """ISO dates, each distinct day written once."""
    codes, days = pd.factorize(series)
    text = np.array([*days.strftime("%Y-%m-%d"), None], dtype=object)  # code -1 (missing) takes the last
    return text[codes].tolist()


def _texts(series: pd.Series) -> list[str | None]:
    return series.astype(object).where(series.notna(), None).tolist()


#: The muscles' output fields: name → (column, decimals to round to; None: text, "date": ISO date).
_MUSCLE_FIELDS = {
    "muscle": ("muscle", None), "root": ("root", None), "side": ("side", None),
    "baseline_mrc": ("baseline_mrc", 2), "latest_mrc": ("latest_mrc", 2), "latest_date": ("latest_date", "date"),
    "expected_mrc": ("expected_mrc", 1), "expected_low": ("expected_low", 1), "expected_high": ("expected_high", 1),
    "status": ("status", None), "curve": ("curve_group", None),
}


def _muscle_fields(muscles: pd.DataFrame) -> dict[str, tuple[np.ndarray, list]]:
    """Each output field of the muscles as each row's code into the field's distinct values (-1: null).

    Numbers take Python's round (exact decimal halves, unlike numpy's scaled rounding), once per distinct value:
    grades and band edges repeat across a cohort's muscle-sides."""
    fields = {}
    for name, (column, form) in _MUSCLE_FIELDS.items():
        series = muscles[column]
        if form is None:
            codes, distinct = pd.factorize(series)
            fields[name] = (codes, [str(value) for value in distinct])
        elif form == "date":
            codes, days = pd.factorize(series)
            fields[name] = (codes, list(days.strftime("%Y-%m-%d")))
        else:
            distinct, codes = np.unique(series.astype("float64").to_numpy(), return_inverse=True)
            fields[name] = (codes, [None if v != v else round(v, form) for v in distinct.tolist()])  # NaN: null
    return fields


def _muscle_objects(muscles: pd.DataFrame, rows: np.ndarray) -> pa.LargeStringArray:
    """The JSON object of each muscle-side of `rows`, in that order, as orjson writes it at MUSCLE_INDENT with
    two-space indents, followed by what goes between two objects of a list."""
    import orjson  # noqa: PLC0415

    fields = _muscle_fields(muscles)
    last = len(fields) - 1
    columns = []
    for place, (name, (codes, values)) in enumerate(fields.items()):
        texts = [f'"{name}": ' + orjson.dumps(value).decode() for value in [*values, None]]  # null last
        if place == 0:
            texts = ["{\n" + MUSCLE_INDENT + "  " + t for t in texts]
        if place == last:
            texts = [t + "\n" + MUSCLE_INDENT + "}" + _MUSCLE_BETWEEN for t in texts]
        in_order = np.where(codes < 0, len(values), codes)[rows]
        columns.append(pa.array(texts, type=pa.large_string()).take(pa.array(in_order)))
    return pc.binary_join_element_wise(*columns, pa.scalar(",\n" + MUSCLE_INDENT + "  ", pa.large_string()))


def _prompt_records(prompts: pd.DataFrame) -> list[dict]:
    columns = {
        "rule_id": _texts(prompts["rule_id"]), "category": _texts(prompts["category"]),
        "modality": _texts(prompts["modality"]), "urgency": _texts(prompts["urgency"]),
        "summary": _texts(prompts["summary"]), "evidence": [list(e) for e in prompts["evidence"]],
        "source": _texts(prompts["source"]),
        "rule_ids": [list(r) for r in prompts["rule_ids"]],  # extension: every rule behind this one scan
    }
    names = list(columns)
    return [dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def status_counts(muscles: pd.DataFrame) -> pd.Series:
    """How many muscle-sides have each status (for the clinic overview)."""
    return muscles["status"].value_counts().reindex(np.unique(muscles["status"]), fill_value=0)
