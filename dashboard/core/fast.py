"""Vectorised helpers for Arrow-backed text columns (pandas 3 strings).

pandas' hash tables on Arrow strings are several times slower than Arrow's own kernels on a million-row
cohort; these helpers go through pyarrow and hand back numpy integer codes that the core groups on.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dashboard.core.joins import encode


def factorize(values: pd.Series) -> tuple[np.ndarray, pd.Series]:
    """Integer codes (-1 where missing) and the distinct values, in order of first appearance.

    Text codes stay 32-bit, as Arrow makes them: a million-row column is not copied to widen them.
    """
    if isinstance(values.dtype, pd.StringDtype) or values.dtype == object:
        codes, distinct = encode(values)
        return codes, pd.Series(distinct.to_pandas(), dtype="string")
    codes, uniques = pd.factorize(values)
    return codes, pd.Series(uniques)


def codes_in(values: pd.Series, categories: pd.Index | list | tuple) -> np.ndarray:
    """Position of each value in `categories` (-1 where absent or missing), computed per distinct value."""
    codes, uniques = factorize(values)
    positions = pd.Index(categories).get_indexer(uniques.astype(object))
    return np.where(codes >= 0, positions[np.maximum(codes, 0)] if len(positions) else -1, -1)


def days(dates: pd.Series) -> np.ndarray:
    """Dates as whole days since 1970 (float, NaN where missing), for arithmetic on plain arrays."""
    out = dates.to_numpy(dtype="datetime64[D]").astype(np.int64).astype(float)
    out[dates.isna().to_numpy()] = np.nan
    return out
