"""Input checks shared by the statistics: turn bad input into a ``ValueError`` naming the argument."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def as_float_array(values: npt.ArrayLike, name: str, *, ndim: int | tuple[int, ...] = 1) -> FloatArray:
    """Return ``values`` as a float64 array of the expected dimensionality, or raise naming ``name``."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name}: expected numbers, got {type(values).__name__} ({error})") from None
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if array.ndim not in allowed:
        raise ValueError(f"{name}: expected a {' or '.join(f'{d}-D' for d in allowed)} array, got shape {array.shape}")
    return array


def require_finite(array: FloatArray, name: str) -> None:
    """Raise if ``array`` holds NaN or an infinity (missing values are counted apart, never binned)."""
    if not np.isfinite(array).all():
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise ValueError(
            f"{name}: {bad} value(s) are NaN or infinite; "
            "drop missing values first (they are counted as missing, not measured)"
        )


def require_non_empty(array: FloatArray, name: str, *, axis: int = 0) -> None:
    """Raise if ``array`` has no element along ``axis`` (a statistic of nothing is undefined)."""
    if array.shape[axis] == 0:
        raise ValueError(f"{name}: is empty; at least one value is needed")
