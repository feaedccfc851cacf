"""Site-defined sample sets: named subsets of a dataset's participants, in plink2's ``--keep`` format.

A site operator names subsets of a dataset (``unrelated``, ``qc_pass``) in ``site.toml``; an analyst
selects one by name (``fedstat submit --sample-set unrelated``) and never supplies IDs. Each set is
a file read as plink2 2.00a3.5 reads a ``--keep`` file (``LoadXidHeader`` / ``XidRead`` in
``plink2_common.cc``)::

    #FID    IID
    f1      s1
    f1      s2

* Leading lines starting with ``#`` are comments, up to a header line ``#FID IID`` or ``#IID``
  (either may be followed by ``SID``, which is ignored, and by more columns, also ignored).
* Without a header, a line of two or more tokens is ``FID IID …``, and a line of one token is an
  IID whose FID is ``0``; under ``#IID`` every line's first token is an IID whose FID is ``0``.
  So, as in plink2, a one-column list does not match samples that have a family ID: with
  ``#FID IID`` in ``samples.tsv`` write both columns.
* Tokens are separated by spaces or tabs; an empty line is allowed only at the end.

IDs are those of the dataset's ``samples.tsv`` (its ``#FID IID`` columns; a table without FID has
FID ``0`` as plink2 gives it). Where plink2 skips an ID it does not know and warns about a
repeated one, a set refuses both: a set file is the operator's statement of who is in it, and a
line that names nobody is a mistake to fix, not to drop silently. An empty set is refused.

Errors name the file and the 1-based line, never a sample ID.

References
----------
plink2 ``--keep``: https://www.cog-genomics.org/plink/2.0/filter#sample
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from fedstat.data.samples import SampleTable
from fedstat.errors import SampleTableError

__all__ = ["SET_NAME_RE", "read_sample_set"]

#: A sample set's name: what an analyst types after ``--sample-set``.
SET_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")

#: plink2's FID for a sample (or a --keep line) without one.
NO_FID = "0"
_DELIMITERS = re.compile(r"[ \t]+")


def _tokens(line: str) -> list[str]:
    """A line's tokens as plink2 splits them: on runs of spaces and tabs only."""
    return [t for t in _DELIMITERS.split(line) if t]


def _table_keys(table: SampleTable) -> dict[tuple[str, str], int]:
    fids = table.fid if table.fid is not None else (NO_FID,) * len(table.iid)
    return {(f, i): row for row, (f, i) in enumerate(zip(fids, table.iid, strict=True))}


def _header(path: Path, lines: list[str]) -> tuple[int, int, bool]:
    """(first data line's index, ID columns per line, whether the first token is the IID) of a
    --keep file: plink2 skips ``#`` lines up to a ``#FID IID`` / ``#IID`` header; without one the
    data start at the first other line, each line ``FID IID`` or a lone IID."""
    for at, line in enumerate(lines):
        if not line.startswith("#"):
            return at, 0, False  # no header: plink2 skips the comments above
        tokens = _tokens(line[1:]) if line[1:2] not in (" ", "\t", "") else []  # "#FID" a header, "# FID" not
        if tokens[:1] == ["FID"]:
            if tokens[1:2] != ["IID"]:
                raise SampleTableError(f"{path}: line {at + 1}: header has no IID column (expected #FID IID or #IID)")
            return at + 1, 2 + (tokens[2:3] == ["SID"]), False
        if tokens[:1] == ["IID"]:
            return at + 1, 1 + (tokens[1:2] == ["SID"]), True
    return len(lines), 0, False  # only comments: no sample


def read_sample_set(path: Path, table: SampleTable, *, name: str, dataset: str) -> np.ndarray:
    """The rows of ``table`` that the set file ``path`` lists.

    Parameters
    ----------
    path : the set file (plink2 ``--keep`` format, see the module docstring)
    table : the dataset's sample table, whose IDs the file names
    name, dataset : the set's and the dataset's names, for messages

    Returns
    -------
    [array, shape: (n_members,), dtype int64] sorted sample-table rows, read-only.

    Raises
    ------
    SampleTableError
        naming the file and line: unreadable file, an ID that is not in the table, a sample listed
        twice, a header without IID, a line with fewer IDs than the header names, an interior empty
        line; or a set with no member.
    """
    path = Path(path)
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            lines = fh.read().splitlines()
    except FileNotFoundError:
        raise SampleTableError(f"{path}: sample set {name} of dataset {dataset}: file not found") from None
    except OSError as exc:
        raise SampleTableError(f"{path}: cannot read sample set {name} ({exc.strerror})") from exc
    except UnicodeDecodeError:
        raise SampleTableError(f"{path}: sample set {name} is not UTF-8 text") from None
    while lines and not _tokens(lines[-1]):
        lines.pop()  # plink2 allows empty lines at the end only
    keys = _table_keys(table)
    at, columns, one_id = _header(path, lines)
    rows: list[int] = []
    first_line: dict[int, int] = {}
    for k in range(at, len(lines)):
        lineno = k + 1
        tokens = _tokens(lines[k])
        if not tokens:
            raise SampleTableError(f"{path}: line {lineno}: empty line (only allowed at the end, as plink2 --keep)")
        if len(tokens) < columns:
            raise SampleTableError(f"{path}: line {lineno}: fewer IDs than the header names")
        if one_id or len(tokens) == 1:
            key = (NO_FID, tokens[0])
        else:
            key = (tokens[0], tokens[1])
        row = keys.get(key)
        if row is None:
            hint = ""
            if key[0] == NO_FID and table.fid is not None and (one_id or len(tokens) == 1):
                hint = (
                    "; a line of one ID (or an #IID header) names a sample whose FID is 0, as plink2 --keep reads "
                    "it, and this table has family IDs: write FID and IID"
                )
            elif tokens[0].startswith("#") or tokens[0].upper() == "FID":
                hint = "; a header line comes first and starts with #FID IID or #IID"
            raise SampleTableError(
                f"{path}: line {lineno}: sample set {name} names a sample that is not in {table.path.name} of dataset "
                f"{dataset}{hint}"
            )
        if row in first_line:
            raise SampleTableError(
                f"{path}: line {lineno}: sample set {name} names the sample of line {first_line[row]} again"
            )
        first_line[row] = lineno
        rows.append(row)
    if not rows:
        raise SampleTableError(
            f"{path}: sample set {name} of dataset {dataset} lists no sample; a set needs at least one participant"
        )
    out = np.sort(np.asarray(rows, dtype=np.int64))
    out.flags.writeable = False
    return out
