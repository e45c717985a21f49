"""Expected recovery curves: the grade a muscle should reach by day t after the index operation.

The shape and every parameter come from a reference file under data/reference/ (published or calibrated
from a clinic's own follow-ups); nothing clinical is a constant here. See docs/clinical-basis.md.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from dashboard.clinical.data_files import read_yaml
from dashboard.clinical.frames import join_rows, rows_in
from dashboard.clinical.mrc import MRC_MAX

REFERENCE_DIR = Path(__file__).resolve().parents[2] / "data" / "reference"
PUBLISHED_REFERENCE = REFERENCE_DIR / "published.yaml"
FACTORS = ("deficit_days", "diabetes", "age")
STATUS_THRESHOLDS = ("normal_grade", "measurement_noise", "deterioration_drop", "marked_drop_from_baseline",
                     "behind_tolerance")


class ReferenceError(ValueError):
    """A reference file that cannot be used, with the place of the problem."""


@dataclass(frozen=True)
class Reference:
    """A loaded reference: baseline groups, patient modifiers, status thresholds and their sources."""

    reference_id: str
    title: str
    kind: str
    groups: pd.DataFrame  # one row per group, in matching order
    modifiers: pd.DataFrame  # one row per modifier
    status: dict[str, float]
    sources: dict[str, dict]
    path: Path
    provenance: dict = field(default_factory=dict)
    band: dict = field(default_factory=dict)  # what the band is: label, evidence (and percentiles when fitted)

    def group_label(self, group_id: str) -> str:
        return str(self.groups.set_index("id").at[group_id, "label"])

    @property
    def band_label(self) -> str:
        """What the band is, in words for the legend and reports (never a percentile unless fitted as one)."""
        return band_label(self.band, self.kind)


DEFAULT_BAND_LABEL = "expected range (expert estimate from published series, mostly decompression)"


def band_label(band: dict | None, kind: str = "published") -> str:
    """The band's name: the file's `band.label`; else, for a fitted (calibrated) file that states its
    percentiles, those percentiles; else the published expected range."""
    band = band or {}
    if band.get("label"):
        return str(band["label"])
    if kind == "calibrated" and "low_percentile" in band and "high_percentile" in band:
        return (f"{band['low_percentile']:g}th–{band['high_percentile']:g}th percentile fitted to the clinic's "
                "patients")
    return DEFAULT_BAND_LABEL


def load_reference(path: str | Path | None = None) -> Reference:
    """Read and check the file once per version of it (cached by path and modification time)."""
    path = Path(path or PUBLISHED_REFERENCE).resolve()
    return _load_reference_cached(path, path.stat().st_mtime_ns if path.exists() else 0)


@functools.lru_cache(maxsize=16)
def _load_reference_cached(path: Path, _mtime: int) -> Reference:
    return _read_reference(path)


def _read_reference(path: str | Path | None = None) -> Reference:
    """Read and check a reference file; any problem names the group or field."""
    path = Path(path or PUBLISHED_REFERENCE)
    try:
        raw = read_yaml(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as problem:
        raise ReferenceError(f"{path}: cannot be read: {problem}") from problem
    if not isinstance(raw, dict):
        raise ReferenceError(f"{path}: expected a mapping at the top level")
    for key in ("reference_id", "title", "kind", "groups", "modifiers", "status", "sources"):
        if key not in raw:
            raise ReferenceError(f"{path}: missing field '{key}'")
    sources = raw["sources"] or {}
    groups = pd.DataFrame([_check_group(path, g, sources) for g in raw["groups"]])
    modifiers = pd.DataFrame([_check_modifier(path, m, sources) for m in raw["modifiers"] or []],
                             columns=["id", "label", "factor", "threshold", "rmax_factor", "tau_factor", "sources"])
    status = {}
    for name in STATUS_THRESHOLDS:
        value = raw["status"].get(name)
        if not isinstance(value, (int, float)):
            raise ReferenceError(f"{path}: status: '{name}' must be a number, found {value!r}")
        status[name] = float(value)
    band = raw.get("band") or {}
    if not isinstance(band, dict):
        raise ReferenceError(f"{path}: band: expected a mapping (label, evidence), found {band!r}")
    return Reference(raw["reference_id"], raw["title"], raw["kind"], groups, modifiers, status, sources, path,
                     raw.get("provenance", {}), band)


def _number(path: Path, where: str, value, low: float, high: float) -> float:
    if not isinstance(value, (int, float)) or not (low <= value <= high):
        raise ReferenceError(f"{path}: {where}: must be a number from {low:g} to {high:g}, found {value!r}")
    return float(value)


def _check_sources(path: Path, where: str, entry: dict, sources: dict) -> list[dict]:
    cited = entry.get("sources") or []
    if not cited:
        raise ReferenceError(f"{path}: {where}: every parameter needs a source ('sources' is empty)")
    for source in cited:
        if source.get("key") not in sources:
            raise ReferenceError(f"{path}: {where}: source '{source.get('key')}' is not in 'sources'")
    return cited


def _check_group(path: Path, group: dict, sources: dict) -> dict:
    where = f"group '{group.get('id', '?')}'"
    rmax, tau = group.get("rmax") or {}, group.get("tau_days") or {}
    row = {
        "id": group.get("id"),
        "label": group.get("label", group.get("id")),
        "baseline_min": _number(path, f"{where}: baseline_min", group.get("baseline_min"), 0, MRC_MAX),
        "baseline_max": _number(path, f"{where}: baseline_max", group.get("baseline_max"), 0, MRC_MAX),
        "rmax_p10": _number(path, f"{where}: rmax.p10", rmax.get("p10"), 0, 1),
        "rmax_median": _number(path, f"{where}: rmax.median", rmax.get("median"), 0, 1),
        "rmax_p90": _number(path, f"{where}: rmax.p90", rmax.get("p90"), 0, 1),
        "tau_fast": _number(path, f"{where}: tau_days.fast", tau.get("fast"), 1, 3650),
        "tau_median": _number(path, f"{where}: tau_days.median", tau.get("median"), 1, 3650),
        "tau_slow": _number(path, f"{where}: tau_days.slow", tau.get("slow"), 1, 3650),
        "confidence": group.get("confidence", "unstated"),
        "n_patients": group.get("n_patients"),
        "sources": _check_sources(path, where, group, sources),
        "basis": _check_basis(path, where, group.get("basis")),
        "note": group.get("note"),
        "evidence": group.get("evidence"),
    }
    if not row["rmax_p10"] <= row["rmax_median"] <= row["rmax_p90"]:
        raise ReferenceError(f"{path}: {where}: rmax must satisfy p10 <= median <= p90")
    if not row["tau_fast"] <= row["tau_median"] <= row["tau_slow"]:
        raise ReferenceError(f"{path}: {where}: tau_days must satisfy fast <= median <= slow")
    if row["baseline_min"] > row["baseline_max"]:
        raise ReferenceError(f"{path}: {where}: baseline_min is above baseline_max")
    return row


PARAMETERS = ("rmax.p10", "rmax.median", "rmax.p90", "tau_days.fast", "tau_days.median", "tau_days.slow")


def _check_basis(path: Path, where: str, basis) -> dict[str, str]:
    """A group's `basis`: for each parameter (or `rmax` / `tau_days` for all three), the source and population
    it comes from, or 'judgement'. Optional (calibrated groups cite the fit instead); when given, every key
    must name parameters."""
    if basis is None:
        return {}
    if not isinstance(basis, dict):
        raise ReferenceError(f"{path}: {where}: basis must map parameters to their source, found {basis!r}")
    for key, text in basis.items():
        if key not in PARAMETERS and key not in ("rmax", "tau_days"):
            raise ReferenceError(f"{path}: {where}: basis: '{key}' is not a parameter ({', '.join(PARAMETERS)})")
        if not isinstance(text, str) or not text.strip():
            raise ReferenceError(f"{path}: {where}: basis: '{key}' must say its source or 'judgement'")
    return {str(k): str(v) for k, v in basis.items()}


def parameter_basis(basis: dict[str, str], parameter: str) -> str | None:
    """The basis of one parameter ('rmax.p10'): its own entry, else its family's ('rmax'), else None."""
    return basis.get(parameter) or basis.get(parameter.split(".")[0])


def _check_modifier(path: Path, modifier: dict, sources: dict) -> dict:
    where = f"modifier '{modifier.get('id', '?')}'"
    if modifier.get("factor") not in FACTORS:
        raise ReferenceError(f"{path}: {where}: factor must be one of {', '.join(FACTORS)}")
    if modifier["factor"] != "diabetes" and not isinstance(modifier.get("threshold"), (int, float)):
        raise ReferenceError(f"{path}: {where}: threshold must be a number")
    return {
        "id": modifier.get("id"),
        "label": modifier.get("label", modifier.get("id")),
        "factor": modifier["factor"],
        "threshold": modifier.get("threshold"),
        "rmax_factor": _number(path, f"{where}: rmax_factor", modifier.get("rmax_factor", 1.0), 0, 2),
        "tau_factor": _number(path, f"{where}: tau_factor", modifier.get("tau_factor", 1.0), 0.1, 10),
        "sources": _check_sources(path, where, modifier, sources),
    }


def group_index(baseline: np.ndarray, reference: Reference) -> np.ndarray:
    """The row of `reference.groups` for each baseline grade, the first matching group (-1 where none does)."""
    baseline = np.asarray(baseline, dtype=float)
    conditions = [(baseline >= row.baseline_min) & (baseline <= row.baseline_max)
                  for row in reference.groups.itertuples()]
    return np.select(conditions, range(len(conditions)), default=-1) if conditions else \
        np.full(baseline.shape, -1)


def group_of(baseline: np.ndarray, reference: Reference) -> np.ndarray:
    """The reference group id of each baseline grade ('' where none applies, e.g. a normal baseline)."""
    ids = np.append(reference.groups["id"].to_numpy(dtype=object), "")
    return ids[group_index(baseline, reference)]


def _modifier_flag(factors: pd.DataFrame, modifier) -> pd.Series:
    value = factors[modifier.factor]
    if modifier.factor == "diabetes":
        return value.astype("boolean")
    return (value.astype("Float64") > modifier.threshold).astype("boolean")


def modifier_flags(factors: pd.DataFrame, reference: Reference) -> pd.DataFrame:
    """Which modifiers apply to each row (True / False / <NA> where the factor is unknown)."""
    return pd.DataFrame({modifier.id: _modifier_flag(factors, modifier)
                         for modifier in reference.modifiers.itertuples()}, index=factors.index)


def modifier_multipliers(factors: pd.DataFrame, reference: Reference) -> tuple[np.ndarray, np.ndarray]:
    """The product of the applying modifiers' rmax and tau factors, per row of `factors` (1 where none;
    an unknown factor applies no modifier)."""
    rmax_factor = np.ones(len(factors))
    tau_factor = np.ones(len(factors))
    for modifier in reference.modifiers.itertuples():
        applies = _modifier_flag(factors, modifier).to_numpy(dtype=bool, na_value=False)
        rmax_factor = np.where(applies, rmax_factor * modifier.rmax_factor, rmax_factor)
        tau_factor = np.where(applies, tau_factor * modifier.tau_factor, tau_factor)
    return rmax_factor, tau_factor


def band_arrays(baseline, days, rmax_factor: np.ndarray, tau_factor: np.ndarray, reference: Reference
                ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """`expected_band` on plain arrays, with the modifiers already multiplied out (`modifier_multipliers`).

    Returns each row's group (row of `reference.groups`, -1 for none) and the expected, low and high grades.
    """
    baseline = np.asarray(baseline, dtype=float)
    group = group_index(np.nan_to_num(baseline, nan=-1), reference)
    rows = np.flatnonzero(group >= 0)  # the other rows have no curve: NaN
    start = baseline[rows]
    room = MRC_MAX - start
    days, rmax_factor, tau_factor = (np.broadcast_to(np.asarray(values, dtype=float), baseline.shape)[rows]
                                     for values in (days, rmax_factor, tau_factor))
    days = np.clip(days, 0, None)

    def param(column: str) -> np.ndarray:
        return reference.groups[column].to_numpy(dtype=float)[group[rows]]

    def curve(rmax_col: str, tau_col: str) -> np.ndarray:
        rmax = np.minimum(param(rmax_col) * rmax_factor, 1.0)
        tau = param(tau_col) * tau_factor
        values = np.full(len(baseline), np.nan)
        values[rows] = np.clip(start + room * rmax * (1 - np.exp(-days / tau)), 0, MRC_MAX)
        return values

    return group, {"expected_mrc": curve("rmax_median", "tau_median"),
                   "expected_low": curve("rmax_p10", "tau_slow"),
                   "expected_high": curve("rmax_p90", "tau_fast")}


def expected_band(baseline, days, factors: pd.DataFrame, reference: Reference) -> pd.DataFrame:
    """Expected grade and band for each row: baseline grade, days since the index operation, factors.

    Rows whose baseline has no group (normal or missing baseline) get NaN: no curve applies.
    """
    group, band = band_arrays(baseline, days, *modifier_multipliers(factors, reference), reference)
    ids = np.append(reference.groups["id"].to_numpy(dtype=object), None)
    return pd.DataFrame({"curve_group": ids[group], **band})


def curve_table(baseline: float, factors: dict, reference: Reference, days: np.ndarray | None = None
                ) -> pd.DataFrame:
    """One expected curve over time (for charts): day, expected, low, high."""
    days = np.arange(0, 731, 7) if days is None else np.asarray(days)
    frame = pd.DataFrame({name: [factors.get(name)] * len(days) for name in FACTORS})
    band = expected_band(np.full(len(days), baseline), days, frame, reference)
    band.insert(0, "day", days)
    return band


def patient_factors(patients: pd.DataFrame, index_surgery: pd.DataFrame) -> pd.DataFrame:
    """Recovery factors per patient at the index operation: age, diabetes, days of deficit before it.

    `index_surgery` has patient_id, surgery_date and deficit_onset_date. Unknown stays <NA>.
    """
    merged = join_rows(index_surgery[["patient_id", "surgery_date", "deficit_onset_date"]],
                       patients[["patient_id", "birth_year", "diabetes"]],
                       rows_in(index_surgery["patient_id"], patients["patient_id"]))
    return pd.DataFrame({
        "patient_id": merged["patient_id"],
        "age": (merged["surgery_date"].dt.year - merged["birth_year"].astype("Float64")).astype("Float64"),
        "diabetes": merged["diabetes"].astype("boolean"),
        "deficit_days": (merged["surgery_date"] - merged["deficit_onset_date"]).dt.days.astype("Float64"),
    })
