"""The site's phenotype / covariate table (``samples.tsv``).

The table follows plink2's ``--pheno`` / ``--covar`` format: one header line naming the
columns, then one line per sample::

    #FID    IID     AGE     BMI     T2D     consent
    f1      s1      54      27.1    2       DUO:0000042
    f1      s2      NA      31.0    1       DUO:0000006

* The header starts with ``#FID IID`` or ``#IID`` (the ``#`` may be omitted).
* Fields are separated by tabs when the header line contains a tab (then an empty field is a
  missing value), otherwise by runs of whitespace.
* ``NA`` and ``nan`` (any capitalization), ``-9`` and the empty field are missing values.
* A column whose every value is a number or missing is numeric (float64, NaN for missing),
  exactly as plink2 reads it: 0 stays 0, and a 0/1 or 1/2 column is just numbers here. Whether a
  *phenotype* is case/control is decided later, over the pooled data, by plink2's rule (see
  :func:`fedstat.stats.glm` and :mod:`fedstat.stats.assoc`); covariates are always numbers.
* Any other column is kept as text: a column named ``consent`` (any case), and columns holding
  words (e.g. a categorical ``CAT`` with ``A``/``B``, or ``inf``, which plink2 also reads as a
  category). A text column does not stop the table from loading; a job that names it as a
  phenotype or covariate is refused (:meth:`SampleTable.column`).
* At most :data:`MAX_COLUMNS` columns.

Errors name the file and the 1-based line, never a participant's value or sample ID.

References
----------
plink2 file formats, "Phenotype/covariate file" (``--pheno``, ``--covar``):
https://www.cog-genomics.org/plink/2.0/input#pheno
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np

from fedstat.data.categories import MISSING_CATEGORY, level_problem
from fedstat.errors import InputError, SampleTableError, shown

#: Tokens read as a missing value, compared case-insensitively: plink2's ``NA`` / ``nan``, its
#: default missing phenotype ``-9``, and the empty field.
MISSING_TOKENS = frozenset({"", "na", "nan", "-9"})

#: Columns kept as text rather than parsed as numbers (compared case-insensitively).
TEXT_COLUMNS = frozenset({"consent"})

#: Most columns (FID / IID included) a table may have. A job uses at most 1100 of them
#: (:data:`fedstat.jobs.MAX_PHENOS` + ``MAX_COVARS``); a far wider table is a wrong or
#: transposed file, refused before its rows are parsed.
MAX_COLUMNS = 10_000


@dataclass(frozen=True, eq=False)
class SampleTable:
    """A parsed ``samples.tsv``.

    Attributes
    ----------
    path : the file the table was read from
    fid : family IDs, one per sample, or ``None`` when the table has no FID column
    iid : individual IDs, one per sample, in file order
    numeric : column name -> [array, shape: (n_samples,), dtype float64], NaN where missing;
        read-only arrays, in header order. Values as written: a case/control phenotype keeps
        its 1/2 coding and a 0/1 covariate its zeros.
    text : column name -> one string per sample (``""`` where missing): ``consent`` and every
        column that holds words
    lines : 1-based line number of each sample's row in the file (for error messages)
    """

    path: Path
    fid: tuple[str, ...] | None
    iid: tuple[str, ...]
    numeric: Mapping[str, np.ndarray]
    text: Mapping[str, tuple[str, ...]]
    lines: tuple[int, ...] = ()

    @property
    def n_samples(self) -> int:
        return len(self.iid)

    def __len__(self) -> int:
        return len(self.iid)

    @property
    def columns(self) -> tuple[str, ...]:
        """Names of the numeric phenotype / covariate columns, in header order."""
        return tuple(self.numeric)

    def column(self, name: str) -> np.ndarray:
        """The numeric column ``name``.

        Returns
        -------
        [array, shape: (n_samples,), dtype float64], NaN where missing (read-only).

        Raises
        ------
        InputError
            If the table has no numeric column of that name: a text column is named as such
            (it cannot be a phenotype or covariate yet), an unknown one with the columns there are.
        """
        try:
            return self.numeric[name]
        except KeyError:
            pass
        if name in self.text:
            raise InputError(text_column_message(name, self.path.name))
        known = ", ".join(self.numeric) or "(none)"
        raise InputError(f"unknown phenotype/covariate {name!r} in {self.path}; columns are: {known}")

    def categorical(self, name: str) -> tuple[str, ...]:
        """The categorical column ``name``: one category per sample, ``""`` where missing.

        ``NONE`` (plink2's missing category), ``NA`` and an empty field are missing.

        Raises
        ------
        InputError
            If ``name`` is not a text column (``consent`` never is a category), holds a number
            beside its words (plink2 refuses such a column as either type), or a category that
            cannot be one (whitespace, over-long); the message names the file and line, never a value.
        """
        values = self.text.get(name) if name.lower() not in TEXT_COLUMNS else None
        if values is None:
            raise InputError(f"column {shown(name)} in {self.path.name} is not a categorical column")
        out = tuple("" if v == MISSING_CATEGORY else v for v in values)
        for row, v in enumerate(out):
            if not v:
                continue
            number = _parse_number(v)
            if number is not None and not math.isnan(number):
                raise InputError(
                    f"column {shown(name)} in {self.path} holds words and numbers (line {self._line(row)} is a "
                    "number): plink2 reads a column as categorical or numeric, never both; write the categories "
                    "as words (e.g. batch7, not 7), or the whole column as numbers"
                )
            problem = level_problem(v)
            if problem:
                raise InputError(f"column {shown(name)} in {self.path}, line {self._line(row)}: {problem}")
        return out

    def _line(self, row: int) -> int:
        return self.lines[row] if self.lines else row + 2


def text_column_message(name: str, where: str) -> str:
    """Why the text column ``name`` (of the table ``where``) cannot be used as a phenotype."""
    return (
        f"column {shown(name)} in {where} holds words, not numbers: a phenotype is a number (plink2's 1/2 "
        "coding, or a quantitative trait); a column of words can be a covariate (categorical, as plink2 reads it)"
    )


def _split(line: str, tabbed: bool) -> list[str]:
    if tabbed:
        return [field.strip() for field in line.split("\t")]
    return line.split()


def _parse_number(token: str) -> float | None:
    """The value of ``token`` as float64 (NaN when missing), or None when not a number."""
    if token.lower() in MISSING_TOKENS:
        return math.nan
    try:
        value = float(token)
    except ValueError:
        return None
    if math.isnan(value):
        return math.nan
    if math.isinf(value):
        return None
    return math.nan if value == -9.0 else value


def _numeric_column(tokens: list[str]) -> np.ndarray | None:
    """The tokens as a read-only float64 column (NaN where missing), or None if one is not a number."""
    values = np.empty(len(tokens), dtype=np.float64)
    for k, token in enumerate(tokens):
        value = _parse_number(token)
        if value is None:
            return None
        values[k] = value
    values.flags.writeable = False
    return values


def read_sample_table(path: str | Path) -> SampleTable:
    """Read a plink2-style phenotype / covariate table.

    Parameters
    ----------
    path : the ``samples.tsv`` file (format in the module docstring)

    Returns
    -------
    SampleTable
        IDs in file order; numeric columns as float64 arrays of shape (n_samples,) with NaN
        for missing values; the ``consent`` column (if any) as text.

    Raises
    ------
    SampleTableError
        One line naming the file and 1-based line number: unreadable or empty file, missing
        header, no IID column, duplicate column name, more than :data:`MAX_COLUMNS` columns,
        wrong field count, or a duplicate sample ID (FID+IID when FID is present). A value that
        is not a number makes its column a text column, not an error.
    """
    path = Path(path)
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            lines = fh.read().splitlines()
    except OSError as exc:
        raise SampleTableError(f"{path}: cannot read sample table ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        raise SampleTableError(f"{path}: sample table is not UTF-8 text") from exc

    header_at = next((i for i, line in enumerate(lines) if line.strip()), None)
    if header_at is None:
        raise SampleTableError(f"{path}: sample table is empty")
    header_line = lines[header_at]
    tabbed = "\t" in header_line
    header = _split(header_line, tabbed)
    header_lineno = header_at + 1
    if len(header) > MAX_COLUMNS:
        raise SampleTableError(
            f"{path}: line {header_lineno}: {len(header)} columns in the header, at most {MAX_COLUMNS} are supported"
        )
    first = header[0]
    has_hash = first.startswith("#")
    if has_hash:
        header[0] = first[1:]
    names_upper = [h.upper() for h in header]
    if names_upper[:2] == ["FID", "IID"]:
        id_cols = 2
    elif names_upper[:1] == ["IID"]:
        id_cols = 1
    elif "IID" in names_upper:
        raise SampleTableError(f"{path}: line {header_lineno}: header must start with '#FID IID' or '#IID'")
    elif has_hash or "FID" in names_upper:
        raise SampleTableError(f"{path}: line {header_lineno}: header has no IID column")
    else:
        raise SampleTableError(f"{path}: line {header_lineno}: missing header (expected '#FID IID ...' or '#IID ...')")
    data_names = header[id_cols:]
    seen_names: set[str] = set()
    for name in data_names:
        if not name:
            raise SampleTableError(f"{path}: line {header_lineno}: empty column name in header")
        if name in seen_names or name.upper() in ("FID", "IID"):
            raise SampleTableError(f"{path}: line {header_lineno}: duplicate column {shown(name)}")
        seen_names.add(name)
    is_text = [name.lower() in TEXT_COLUMNS for name in data_names]
    n_fields = len(header)

    fids: list[str] = []
    iids: list[str] = []
    rows: list[list[str]] = []
    row_linenos: list[int] = []
    first_seen: dict[tuple[str, str], int] = {}
    for i in range(header_at + 1, len(lines)):
        line = lines[i]
        lineno = i + 1
        if not line.strip():
            continue
        fields = _split(line, tabbed)
        if len(fields) != n_fields:
            raise SampleTableError(f"{path}: line {lineno}: {len(fields)} fields, header has {n_fields}")
        fid = fields[0] if id_cols == 2 else ""
        iid = fields[id_cols - 1]
        if not iid or (id_cols == 2 and not fid):
            raise SampleTableError(f"{path}: line {lineno}: empty sample ID")
        key = (fid, iid)
        if key in first_seen:
            raise SampleTableError(f"{path}: line {lineno}: duplicate sample ID (first seen on line {first_seen[key]})")
        first_seen[key] = lineno
        fids.append(fid)
        iids.append(iid)
        rows.append(fields[id_cols:])
        row_linenos.append(lineno)

    numeric: dict[str, np.ndarray] = {}
    text: dict[str, tuple[str, ...]] = {}
    for j, name in enumerate(data_names):
        values = None if is_text[j] else _numeric_column([row[j] for row in rows])
        if values is None:
            text[name] = tuple("" if row[j].lower() in MISSING_TOKENS else row[j] for row in rows)
        else:
            numeric[name] = values

    return SampleTable(
        path=path,
        fid=tuple(fids) if id_cols == 2 else None,
        iid=tuple(iids),
        numeric=MappingProxyType(numeric),
        text=MappingProxyType(text),
        lines=tuple(row_linenos),
    )
