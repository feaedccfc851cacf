"""Participants' sex, as plink2 reads it, for the allele reports on chrX, chrY and MT.

plink2 takes sex from the genotype file set's sample table: column 5 of a ``.fam``, the ``SEX``
column of a ``.psam`` (a header-less ``.psam`` is a ``.fam``). A one-character value ``1``/``M``/
``m`` is male, ``2``/``F``/``f`` female, anything else (``0``, ``NA``, ``-9``, no ``SEX`` column)
unknown. A VCF/BCF carries no sex: every sample is of unknown sex.

fedstat adds one rule: a ``SEX`` column in the site's ``samples.tsv`` (plink2 coding: 1 male,
2 female, 0 / NA / -9 unknown) replaces the genotype files' sex for every sample, as
``plink2 --update-sex samples.tsv col-num=<SEX column>`` would on the pooled data. Any other
value in that column (e.g. a 0/1 coding) cannot be read as a sex; :func:`sex_codes` marks those
samples :data:`INVALID` and the rounds that need sex refuse them with a message naming the file.

References
----------
plink2 2.00a3.5 ``plink2_psam.cc`` ``LoadPsam`` (``CharToSex`` on one-character SEX tokens);
``plink2_misc.cc`` ``UpdateSampleSexes`` (``--update-sex``: 1/M/m male, 2/F/f female, 0/N/U missing).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedstat.errors import GenotypeFileError

__all__ = [
    "FEMALE",
    "INVALID",
    "MALE",
    "SEX_COLUMN",
    "UNKNOWN",
    "genotype_file_sex",
    "invalid_sex_message",
    "sex_codes",
]

#: Sex codes (plink2's): male, female, unknown; INVALID marks a samples.tsv value that is no sex code.
MALE, FEMALE, UNKNOWN, INVALID = 1, 2, 0, -1
#: The samples.tsv column whose values, when present, are the participants' sex.
SEX_COLUMN = "SEX"

_CHAR_SEX = {"1": MALE, "M": MALE, "m": MALE, "2": FEMALE, "F": FEMALE, "f": FEMALE}


def _token_sex(token: str) -> int:
    return _CHAR_SEX.get(token, UNKNOWN) if len(token) == 1 else UNKNOWN


def _read_lines(path: Path) -> list[str]:
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            return fh.read().splitlines()
    except OSError as exc:
        raise GenotypeFileError(f"{path}: cannot read the sample sexes ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        raise GenotypeFileError(f"{path}: not UTF-8 text") from exc


def genotype_file_sex(genotype_path: Path, fmt: str, n_samples: int) -> np.ndarray:
    """The sexes the genotype file set records, in its sample order.

    Parameters
    ----------
    genotype_path : the ``.bed`` / ``.pgen`` the genotypes are read from (for a BGEN its cached
        ``.pgen``, whose ``.psam`` holds the ``.sample``'s sex), or the VCF
    fmt : the format of that file (``bed``, ``pgen``; ``vcf``, ``bcf``: no sex recorded)
    n_samples : the samples the source holds (checked against the file read)

    Returns
    -------
    [array, shape: (n_samples,), dtype int8] :data:`MALE`, :data:`FEMALE` or :data:`UNKNOWN`

    Raises
    ------
    GenotypeFileError
        If the ``.fam`` / ``.psam`` cannot be read or lists another number of samples.
    """
    if fmt not in ("bed", "pgen"):
        return np.full(n_samples, UNKNOWN, dtype=np.int8)  # a VCF/BCF records no sex
    path = genotype_path.with_suffix(".fam" if fmt == "bed" else ".psam")
    lines = _read_lines(path)
    i = 0
    column = 4  # .fam (and header-less .psam): FID IID PAT MAT SEX PHENO
    while i < len(lines) and (lines[i].startswith("##") or not lines[i].strip()):
        i += 1
    if fmt == "pgen" and i < len(lines) and lines[i].startswith("#"):
        header = lines[i][1:].split()
        column = header.index("SEX") if "SEX" in header else -1
        i += 1
    codes = []
    for line in lines[i:]:
        fields = line.split()
        if fields:
            codes.append(_token_sex(fields[column]) if 0 <= column < len(fields) else UNKNOWN)
    if len(codes) != n_samples:
        raise GenotypeFileError(f"{path}: lists {len(codes)} samples, the genotype file holds {n_samples}")
    return np.asarray(codes, dtype=np.int8)


def sex_codes(file_sex: np.ndarray, table_column: np.ndarray | tuple[str, ...] | None) -> np.ndarray:
    """Each sample's sex: the samples.tsv ``SEX`` column where the table has one, else the files'.

    Parameters
    ----------
    file_sex : [array, shape: (n,), dtype int8] :func:`genotype_file_sex`, in sample-table order
    table_column : the table's ``SEX`` column: numeric ([array, shape: (n,), float64], NaN where
        missing) or text (one string per sample, ``""`` where missing, ``M``/``F`` as
        ``--update-sex`` reads them); None when the table has none

    Returns
    -------
    [array, shape: (n,), dtype int8] :data:`MALE`, :data:`FEMALE`, :data:`UNKNOWN`, or
    :data:`INVALID` where the table holds a value that is no sex code
    """
    if table_column is None:
        return np.asarray(file_sex, dtype=np.int8)
    if isinstance(table_column, tuple):
        text = {"1": MALE, "M": MALE, "m": MALE, "2": FEMALE, "F": FEMALE, "f": FEMALE}
        text |= dict.fromkeys(("", "0", "N", "n", "U", "u"), UNKNOWN)
        out = np.asarray([text.get(t, INVALID) for t in table_column], dtype=np.int8)
    else:
        col = np.asarray(table_column, dtype=np.float64)
        out = np.full(col.shape, INVALID, dtype=np.int8)
        out[np.isnan(col) | (col == 0)] = UNKNOWN
        out[col == 1] = MALE
        out[col == 2] = FEMALE
    assert out.shape == np.asarray(file_sex).shape
    return out


def invalid_sex_message() -> str:
    """Why a round that needs sex refuses a cohort with :data:`INVALID` codes (no value shown)."""
    return (
        f"samples.tsv: column {SEX_COLUMN} holds values other than 1 (male), 2 (female), 0 or NA (unknown), so it "
        "cannot give the sexes plink2 needs on chrX/chrY; recode it (plink2 coding) or rename the column"
    )
