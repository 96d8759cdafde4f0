"""Read training data into named columns: CSV (the csv module), Parquet (pyarrow, optional) or NumPy (.npy/.npz).

Every column comes back as a 1-D array: float64 for numbers (NaN = missing) or object holding ``str`` / ``None``
for text. Errors name the file, the row and the column, since a bad training file is usually found by a person
with an editor open on it.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

MISSING_TOKENS = frozenset({"", "na", "n/a", "nan", "null", "none"})
"""CSV cells read as missing (case-insensitive)."""


class DataFileError(ValueError):
    """A training-data file that cannot be read; the message names the file, row and column."""


@dataclass(frozen=True)
class Table:
    """Named columns of equal length, in file order."""

    columns: dict[str, npt.NDArray[np.float64] | npt.NDArray[np.object_]]
    rows: int
    path: str


def read_table(path: str | Path, *, column_names: list[str] | None = None) -> Table:
    """Read ``path`` by its extension (``.csv``, ``.parquet``/``.pq``, ``.npy``, ``.npz``).

    Args:
        path: the data file.
        column_names: names for the columns of a plain 2-D ``.npy`` array (default ``f0, f1, ...``).
    """
    source = Path(path)
    if not source.is_file():
        raise DataFileError(f"{source}: no such file")
    suffix = source.suffix.lower()
    if suffix in {".csv", ".txt"}:
        table = _read_csv(source)
    elif suffix in {".parquet", ".pq"}:
        table = _read_parquet(source)
    elif suffix == ".npy":
        table = _read_npy(source, column_names)
    elif suffix == ".npz":
        table = _read_npz(source)
    else:
        raise DataFileError(f"{source}: unknown data format {suffix!r}; use .csv, .parquet, .npy or .npz")
    if table.rows == 0:
        raise DataFileError(f"{source}: has no data rows")
    if not table.columns:
        raise DataFileError(f"{source}: has no columns")
    return table


def _read_csv(source: Path) -> Table:
    try:
        handle = source.open(newline="", encoding="utf-8")
    except OSError as error:
        raise DataFileError(f"{source}: cannot open ({error.strerror or error})") from None
    with handle:
        reader = csv.reader(handle)
        try:
            header = next(reader)
        except StopIteration:
            raise DataFileError(f"{source}: is empty (expected a header row)") from None
        except (csv.Error, UnicodeDecodeError) as error:
            raise DataFileError(f"{source}: row 1: {error}") from None
        names = [h.strip() for h in header]
        for position, name in enumerate(names, start=1):
            if not name:
                raise DataFileError(f"{source}: row 1 (header): column {position} has no name")
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise DataFileError(f"{source}: row 1 (header): column name(s) repeated: {', '.join(duplicates)}")
        cells: list[list[str]] = [[] for _ in names]
        try:
            for row in reader:
                if not row:  # blank line
                    continue
                if len(row) != len(names):
                    raise DataFileError(
                        f"{source}: row {reader.line_num}: {len(row)} fields, the header has {len(names)}"
                    )
                for column, cell in zip(cells, row, strict=True):
                    column.append(cell)
        except (csv.Error, UnicodeDecodeError) as error:
            raise DataFileError(f"{source}: row {reader.line_num}: {error}") from None
    columns = {name: _csv_column(source, name, values) for name, values in zip(names, cells, strict=True)}
    return Table(columns=columns, rows=len(cells[0]), path=str(source))


def _csv_column(source: Path, name: str, values: list[str]) -> npt.NDArray[np.float64] | npt.NDArray[np.object_]:
    """Numbers if every present cell parses as a finite number; otherwise text (``None`` = missing)."""
    present = [v.strip() for v in values]
    numbers = np.empty(len(present), dtype=np.float64)
    for index, cell in enumerate(present):
        if cell.lower() in MISSING_TOKENS:
            numbers[index] = math.nan
            continue
        try:
            number = float(cell)
        except ValueError:
            return np.array([None if c.lower() in MISSING_TOKENS else c for c in present], dtype=object)
        if math.isinf(number):
            raise DataFileError(f"{source}: row {index + 2}, column {name!r}: infinite value {cell!r}")
        numbers[index] = number
    return numbers


def _read_parquet(source: Path) -> Table:
    try:
        import pyarrow.parquet as pq  # optional extra: the sidecar itself never needs it
    except ImportError:
        raise DataFileError(
            f"{source}: reading Parquet needs pyarrow (pip install 'modelmonitor[parquet]'); or use CSV / .npz"
        ) from None
    try:
        arrow = pq.read_table(source)
    except Exception as error:  # pyarrow raises its own exception family
        raise DataFileError(f"{source}: not a readable Parquet file ({error})") from None
    columns: dict[str, npt.NDArray[np.float64] | npt.NDArray[np.object_]] = {}
    for name in arrow.column_names:
        values = arrow.column(name).to_pylist()
        columns[name] = _python_column(source, name, values)
    return Table(columns=columns, rows=arrow.num_rows, path=str(source))


def _python_column(source: Path, name: str, values: list[object]) -> npt.NDArray[np.float64] | npt.NDArray[np.object_]:
    if all(v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in values):
        array = np.array([math.nan if v is None else v for v in values], dtype=np.float64)
        _check_no_inf(source, name, array)
        return array
    return np.array([None if v is None else canonical_category(v) for v in values], dtype=object)


def _read_npy(source: Path, column_names: list[str] | None) -> Table:
    try:
        array = np.load(source, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise DataFileError(f"{source}: not a readable .npy file ({error})") from None
    if array.dtype.names:  # structured array: its fields are the columns
        columns = {n: _numpy_column(source, n, array[n]) for n in array.dtype.names}
        return Table(columns=columns, rows=int(array.shape[0]), path=str(source))
    if array.ndim != 2:
        raise DataFileError(f"{source}: expected a 2-D (rows, columns) array, got shape {array.shape}")
    names = column_names or [f"f{j}" for j in range(array.shape[1])]
    if len(names) != array.shape[1]:
        raise DataFileError(f"{source}: {array.shape[1]} columns but {len(names)} column names were given")
    columns = {n: _numpy_column(source, n, array[:, j]) for j, n in enumerate(names)}
    return Table(columns=columns, rows=int(array.shape[0]), path=str(source))


def _read_npz(source: Path) -> Table:
    try:
        archive = np.load(source, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise DataFileError(f"{source}: not a readable .npz file ({error})") from None
    columns: dict[str, npt.NDArray[np.float64] | npt.NDArray[np.object_]] = {}
    rows: int | None = None
    with archive:
        for name in archive.files:
            values = archive[name]
            if values.ndim != 1:
                raise DataFileError(
                    f"{source}: array {name!r} has shape {values.shape}; a .npz holds one 1-D array per column"
                )
            if rows is not None and values.shape[0] != rows:
                raise DataFileError(f"{source}: column {name!r} has {values.shape[0]} rows, the others {rows}")
            rows = int(values.shape[0])
            columns[name] = _numpy_column(source, name, values)
    return Table(columns=columns, rows=rows or 0, path=str(source))


def _numpy_column(
    source: Path, name: str, values: npt.NDArray[np.generic]
) -> npt.NDArray[np.float64] | npt.NDArray[np.object_]:
    if values.dtype.kind in "iuf":
        array = values.astype(np.float64)
        _check_no_inf(source, name, array)
        return array
    if values.dtype.kind in "USb":
        return np.array([canonical_category(v.item() if hasattr(v, "item") else v) for v in values], dtype=object)
    raise DataFileError(f"{source}: column {name!r} has unsupported dtype {values.dtype}")


def _check_no_inf(source: Path, name: str, array: npt.NDArray[np.float64]) -> None:
    infinite = np.flatnonzero(np.isinf(array))
    if infinite.size:
        raise DataFileError(
            f"{source}: row {int(infinite[0])} (0-based), column {name!r}: infinite value "
            f"({infinite.size} infinite value(s) in the column)"
        )


def canonical_category(value: object) -> str:
    """The string a category value is known by, the same for training data and live traffic.

    ``True`` -> ``"true"``, ``3`` and ``3.0`` -> ``"3"``, bytes decoded as UTF-8, strings unchanged.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        number = float(value)
        return str(int(number)) if number.is_integer() else repr(number)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)
