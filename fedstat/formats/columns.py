"""plink2's ``cols=`` column sets for ``--glm`` and ``--freq``: their names, defaults and parser.

A column set descriptor is either a list of column names (``cols=chrom,pos,ref,alt,p``: exactly
those) or a list of edits to the default set (``cols=+a1freq,-err``); the two forms cannot be
mixed. Names are plink2 2.00a3.5's, in its file order; :data:`GLM_COLUMNS` and
:data:`FREQ_COLUMNS` list them, :data:`GLM_DEFAULT` and :data:`FREQ_DEFAULT` are the sets written
without ``cols=``. ``ID`` (and for ``--glm`` ``A1``) is always written.

References
----------
plink2 2.00a3.5 ``ParseColDescriptor`` (``plink2_cmdline.cc``), the ``--glm`` / ``--freq`` flag
parsing in ``plink2.cc`` (``kfGlmCol*``, ``kfAlleleFreqCol*``) and its checks there.
"""

from __future__ import annotations

from collections.abc import Sequence

from fedstat.errors import InputError, shown

__all__ = [
    "FREQ_COLUMNS",
    "FREQ_DEFAULT",
    "FREQ_EXCLUSIVE",
    "GLM_COLUMNS",
    "GLM_DEFAULT",
    "freq_columns",
    "glm_columns",
    "parse_col_descriptor",
]

#: ``--glm cols=`` names, in plink2 2.00a3.5's column order (``kfGlmCol*``)
GLM_COLUMNS = (
    "chrom",
    "pos",
    "ref",
    "alt1",
    "alt",
    "ax",
    "a1count",
    "totallele",
    "a1countcc",
    "totallelecc",
    "gcountcc",
    "a1freq",
    "a1freqcc",
    "machr2",
    "firth",
    "test",
    "nobs",
    "beta",
    "orbeta",
    "se",
    "ci",
    "tz",
    "p",
    "err",
)
#: plink2's ``kfGlmColDefault``
GLM_DEFAULT = frozenset({"chrom", "pos", "ref", "alt", "firth", "test", "nobs", "orbeta", "se", "ci", "tz", "p", "err"})
#: ``--freq cols=`` names, in plink2 2.00a3.5's column order (``kfAlleleFreqCol*``)
FREQ_COLUMNS = (
    "chrom",
    "pos",
    "ref",
    "alt1",
    "alt",
    "reffreq",
    "alt1freq",
    "altfreq",
    "freq",
    "eq",
    "eqz",
    "alteq",
    "alteqz",
    "numeq",
    "altnumeq",
    "machr2",
    "minimac3r2",
    "nobs",
)
#: plink2's ``kfAlleleFreqColDefault``
FREQ_DEFAULT = frozenset({"chrom", "ref", "alt", "altfreq", "nobs"})
#: at most one of these (plink2's ``kfAlleleFreqColMutex``): they all fill the one frequency list column
FREQ_EXCLUSIVE = ("altfreq", "freq", "eq", "eqz", "alteq", "alteqz", "numeq", "altnumeq")
# columns of later plink2 versions: named in the refusal, so an analyst sees why they are missing
_LATER = {"provref", "omitted"}


def parse_col_descriptor(text: str, known: Sequence[str], default: frozenset[str], flag: str) -> frozenset[str]:
    """The column set ``cols=<text>`` names, as plink2's ``ParseColDescriptor`` reads it.

    Parameters
    ----------
    text : what follows ``cols=``, e.g. ``+a1freq,-err`` or ``chrom,pos,p``
    known : the flag's column names
    default : the flag's default set, which ``+``/``-`` items edit
    flag : ``glm`` or ``freq``, for the messages

    Raises
    ------
    InputError
        With plink2's reason: an empty descriptor, an unknown name, +/- items mixed with plain
        ones, or a set with no column left.
    """
    if not text:
        raise InputError(f"--{flag} cols= names no column (plink2: Invalid --{flag} argument 'cols=')")
    items = text.split(",")
    signed = items[0][:1] in ("+", "-")
    if any((item[:1] in ("+", "-")) != signed for item in items):
        raise InputError(
            f"--{flag} cols={shown(text)}: either every column must be preceded by + or -, or none of them can be"
        )
    names = [item[1:] if signed else item for item in items]
    for name in names:
        if name not in known:
            later = " (a column of later plink2 versions; fedstat writes plink2 2.00a3.5's)" if name in _LATER else ""
            raise InputError(f"--{flag} cols=: unknown column {shown(name)}{later}; known: {', '.join(known)}")
    if not signed:
        cols = set(names)
    else:
        cols = set(default)
        for item, name in zip(items, names, strict=True):
            (cols.add if item[0] == "+" else cols.discard)(name)
    if not cols:
        raise InputError(f"--{flag} cols={shown(text)} excludes every column")
    return frozenset(cols)


def glm_columns(text: str | None, *, ci: float = 0.0) -> frozenset[str]:
    """``--glm cols=<text>``'s column set (:data:`GLM_DEFAULT` for None), with plink2's check that
    ``se`` and (under ``--ci``) ``ci`` come with ``beta`` or ``orbeta``."""
    if text is None:
        return GLM_DEFAULT
    cols = parse_col_descriptor(text, GLM_COLUMNS, GLM_DEFAULT, "glm")
    if not cols & {"beta", "orbeta"} and ("se" in cols or ("ci" in cols and ci)):
        raise InputError("--glm cols=: the 'se' and 'ci' columns need 'beta' or 'orbeta' too (plink2 stops here too)")
    return cols


def freq_columns(text: str | None) -> frozenset[str]:
    """``--freq cols=<text>``'s column set (:data:`FREQ_DEFAULT` for None), with plink2's checks
    that at most one of :data:`FREQ_EXCLUSIVE` and one of machr2/minimac3r2 is named."""
    if text is None:
        return FREQ_DEFAULT
    cols = parse_col_descriptor(text, FREQ_COLUMNS, FREQ_DEFAULT, "freq")
    exclusive = [c for c in FREQ_EXCLUSIVE if c in cols]
    if len(exclusive) > 1:
        raise InputError(
            f"--freq cols=: the columns {', '.join(FREQ_EXCLUSIVE)} exclude each other, got {', '.join(exclusive)} "
            "(the default set holds altfreq: write e.g. cols=-altfreq,+freq)"
        )
    if {"machr2", "minimac3r2"} <= cols:
        raise InputError("--freq cols=: machr2 and minimac3r2 exclude each other")
    return cols
