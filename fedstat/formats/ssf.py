"""GWAS-SSF v1.0 summary statistics (GWAS Catalog): a gzipped TSV and its ``-meta.yaml``.

:func:`write_ssf` writes ``<prefix>.ssf.tsv.gz`` and ``<prefix>.ssf.tsv.gz-meta.yaml``.

Data file (tab-separated, header line, gzip, ``#NA`` for missing values):

=====  ==============================  =====================================================
col    name                            fedstat fills it with
=====  ==============================  =====================================================
0      ``chromosome``                  1-22, X = 23, Y = 24, MT = 25 (PAR ``XY`` -> 23)
1      ``base_pair_location``          1-based position (``coordinate_system: 1-based``)
2      ``effect_allele``               A1 of the test
3      ``other_allele``                the other allele
4      ``beta`` or ``odds_ratio``      the effect on A1
5      ``standard_error``              SE of beta; for ``odds_ratio`` files SE of ln(OR)
6      ``effect_allele_frequency``     A1 frequency among the samples tested
7      ``p_value``                     p (``neg_log_10_p_value`` on request, see below)
8-10   ``variant_id rsid n``           ``<chrom>_<pos>_<ref>_<alt>``, ``rs…`` or ``#NA``,
                                       samples in the test
11     ``ref_allele``                  ``EA``/``OA``, when the REF allele is known
=====  ==============================  =====================================================

Decisions, with the rule each follows:

- Columns 0-7 are mandatory and in this order, and "must be present and filled with non-null
  values" (GWAS-SSF v1.0.0 §3, Table 1); rows whose estimate, SE, frequency or p-value is
  missing (e.g. plink2 ERRCODE rows) or whose alleles are not nucleotide strings are left out,
  and their number is stated in the metadata's ``author_notes``.
- Rows are sorted by chromosome code then position (stable), so ``is_sorted: true``.
- A p-value that underflows double precision keeps its ``p_value`` column: when ``log10_p``
  is given, it is written as mantissa and exponent (``3.2e-412``), which the GWAS Catalog
  validator reads as such (gwas-sumstats-tools splits p into mantissa and exponent because
  doubles cannot hold such values). A p of exactly 0 is only written when nothing better is
  known, and is then covered by ``analysis_software`` in the metadata (Table 1 note a).
- ``rsid`` must match ``^rs[0-9]+$`` and ``variant_id`` ``^[A-Za-z0-9_]+$`` (validator);
  other values become ``#NA``.
- Metadata follows the v1.0 example ``0000123.tsv-meta.yaml`` and the pydantic/yamale schemas:
  sample fields (``sample_size``, ``case_count``, ``control_count``, ``case_control_study``,
  ``sample_ancestry_category``) sit in the ``samples`` list; ``file_type: GWAS-SSF v1.0``;
  ``is_harmonised: false`` (fedstat's cross-site allele harmonisation is not the Catalog's
  harmonisation to a reference genome); ``data_file_md5sum`` is the md5 of the gzipped bytes.
- The gzip stream carries no timestamp or file name, so equal rows give equal bytes and md5.

Both files are written atomically (temporary file, fsync, rename); the metadata last, after
the data file it describes is in place.

References
----------
GWAS-SSF v1.0.0, https://github.com/EBISPOT/gwas-summary-statistics-standard
(``gwas-ssf_v1.0.0.tex``, ``examples/0000123.tsv-meta.yaml``, ``schema/``);
gwas-sumstats-tools ``schema/data_table.py`` and ``schema/metadata.py`` (validation rules).
"""

from __future__ import annotations

import datetime as _dt
import gzip
import hashlib
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedstat import __version__
from fedstat.data.variants import normalise_chrom
from fedstat.errors import InputError
from fedstat.formats.atomic import atomic_path, atomic_write_text
from fedstat.formats.numbers import format_g

__all__ = [
    "MANDATORY_COLUMNS",
    "NA",
    "SsfMeta",
    "SsfRows",
    "chromosome_code",
    "format_p",
    "write_ssf",
]

NA = "#NA"
FILE_TYPE = "GWAS-SSF v1.0"
#: mandatory columns; index 4 is ``beta`` or ``odds_ratio``, index 7 ``p_value`` or ``neg_log_10_p_value``
MANDATORY_COLUMNS = (
    "chromosome",
    "base_pair_location",
    "effect_allele",
    "other_allele",
    "beta",
    "standard_error",
    "effect_allele_frequency",
    "p_value",
)
_EFFECT_KINDS = ("beta", "odds_ratio")
_CHROM_CODES = {"X": 23, "Y": 24, "XY": 23, "MT": 25}
_ALLELE_RE = re.compile(r"^[ACGTacgt]+$")
_RSID_RE = re.compile(r"^rs[0-9]+$")
_VARIANT_ID_RE = re.compile(r"^[A-Za-z0-9_]+$")


@dataclass(frozen=True)
class SsfRows:
    """One GWAS's per-variant results. Arrays are [array, shape: (n_variants,)].

    Attributes
    ----------
    chrom : chromosome codes as in the variant table (``1``, ``chr2``, ``X``, ``MT``, …)
    pos : int, 1-based positions
    effect_allele, other_allele : str; effect_allele = A1 of the test
    effect : float64 beta (``effect_kind="beta"``) or odds ratio (``"odds_ratio"``)
    se : float64 standard error of beta, or of ln(OR) for odds-ratio files (plink2 LOG(OR)_SE)
    eaf : float64 effect-allele (A1) frequency
    p : float64 p-values; 0 where the value underflowed
    effect_kind : ``"beta"`` or ``"odds_ratio"``
    log10_p : optional float64 log10(p) (negative), used where ``p`` underflows to 0
    variant_id : optional str IDs; None = built from ``ref_is_effect`` when given, else ``#NA``
    rsid : optional str; values not of the form ``rs<digits>`` are written as ``#NA``
    n : optional int samples in each test (e.g. plink2 OBS_CT)
    ref_is_effect : optional bool, the effect allele is the reference allele (``ref_allele``
        column EA/OA)
    """

    chrom: np.ndarray
    pos: np.ndarray
    effect_allele: np.ndarray
    other_allele: np.ndarray
    effect: np.ndarray
    se: np.ndarray
    eaf: np.ndarray
    p: np.ndarray
    effect_kind: str = "beta"
    log10_p: np.ndarray | None = None
    variant_id: np.ndarray | None = None
    rsid: np.ndarray | None = None
    n: np.ndarray | None = None
    ref_is_effect: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.effect_kind not in _EFFECT_KINDS:
            raise InputError(f"SsfRows.effect_kind must be one of {_EFFECT_KINDS}, got {self.effect_kind!r}")
        n = len(self.chrom)
        for name in ("pos", "effect_allele", "other_allele", "effect", "se", "eaf", "p"):
            if len(getattr(self, name)) != n:
                raise InputError(f"SsfRows.{name} has {len(getattr(self, name))} rows, chrom has {n}")
        for name in ("log10_p", "variant_id", "rsid", "n", "ref_is_effect"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise InputError(f"SsfRows.{name} has {len(value)} rows, chrom has {n}")

    def __len__(self) -> int:
        return len(self.chrom)


@dataclass(frozen=True)
class SsfMeta:
    """What the ``-meta.yaml`` says about the GWAS (GWAS-SSF v1.0 Table 2).

    Attributes
    ----------
    trait_description : author-reported trait description(s)
    genome_assembly : e.g. ``GRCh38``, ``GRCh37``; ``NR`` when not reported
    sample_size : samples in the analysis (largest per-variant N)
    case_count, control_count : for case/control traits (``case_control_study: true``)
    sample_ancestry_category : GWAS Catalog ancestry categories, e.g. ``European``
    sample_ancestry : free-text ancestry descriptions
    ancestry_method : e.g. ``self-reported``, ``genetically determined``
    genotyping_technology : e.g. ``Genome-wide genotyping array``
    coordinate_system : ``1-based`` (plink positions) or ``0-based``
    analysis_software : software and version; always set (it also covers p-values of 0)
    adjusted_covariates : covariates the model adjusts for
    ontology_mapping : trait ontology short forms, e.g. ``EFO_0000305``
    sex : ``combined``, ``M`` or ``F``
    gwas_id : GWAS Catalog accession ``GCST…`` when known
    author_notes : free text
    minor_allele_freq_lower_limit : frequency floor applied to ``effect_allele_frequency``
    date_last_modified : metadata date; None = today
    """

    trait_description: tuple[str, ...]
    genome_assembly: str
    sample_size: int
    case_count: int | None = None
    control_count: int | None = None
    sample_ancestry_category: tuple[str, ...] = ("NR",)
    sample_ancestry: tuple[str, ...] = ()
    ancestry_method: tuple[str, ...] = ()
    genotyping_technology: tuple[str, ...] = ("Genome-wide genotyping array",)
    coordinate_system: str = "1-based"
    analysis_software: str = f"fedstat {__version__} (federated; pooled-equal to plink2 2.00a3.5)"
    adjusted_covariates: tuple[str, ...] = ()
    ontology_mapping: tuple[str, ...] = ()
    sex: str = "combined"
    gwas_id: str | None = None
    author_notes: str | None = None
    minor_allele_freq_lower_limit: float | None = None
    date_last_modified: _dt.date | None = None
    extra: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.coordinate_system not in ("0-based", "1-based"):
            raise InputError(f"coordinate_system must be '0-based' or '1-based', got {self.coordinate_system!r}")
        if self.sex not in ("M", "F", "combined", "NR"):
            raise InputError(f"sex must be 'M', 'F' or 'combined', got {self.sex!r}")
        if self.gwas_id is not None and not re.fullmatch(r"GCST\d+", self.gwas_id):
            raise InputError(f"gwas_id must look like GCST<digits>, got {self.gwas_id!r}")
        if self.sample_size < 0 or (self.case_count or 0) < 0 or (self.control_count or 0) < 0:
            raise InputError("sample_size, case_count and control_count must be non-negative")
        if (self.case_count is None) != (self.control_count is None):
            raise InputError("give both case_count and control_count, or neither")
        if not self.trait_description:
            raise InputError("trait_description needs at least one entry")


def chromosome_code(chrom: str) -> int:
    """GWAS-SSF chromosome code: 1-22, X = 23, Y = 24, MT = 25 (pseudo-autosomal XY -> 23).

    Raises
    ------
    InputError
        For any other contig.
    """
    s = normalise_chrom(str(chrom))  # plink2's code: 1-22, X, Y, XY, MT or a contig name
    if s.isdigit() and 1 <= int(s) <= 22:
        return int(s)
    code = _CHROM_CODES.get(s)
    if code is None:
        raise InputError(f"GWAS-SSF has no chromosome code for {chrom!r} (only 1-22, X, Y, XY, MT)")
    return code


def _g6(x: float) -> str:
    """6 significant digits in C's %g style (SSF needs no plink2-exact spelling; this is fast)."""
    return f"{x:.6g}" if math.isfinite(x) else NA


def format_p(p: float, log10_p: float | None = None) -> str:
    """A p-value for the ``p_value`` column, 6 significant digits.

    Parameters
    ----------
    p : the p-value (0 where it underflowed)
    log10_p : log10(p) when known; used when ``p`` is 0 (or subnormal) to write the true
        mantissa and exponent, e.g. ``format_p(0.0, -412.5) == '3.16228e-413'``

    Returns
    -------
    str
    """
    if log10_p is not None and math.isfinite(log10_p) and (p == 0.0 or p < 2.2250738585072014e-308):
        exponent = math.floor(log10_p)
        mantissa = float(f"{10.0 ** (log10_p - exponent):.6g}")
        if mantissa >= 10.0:
            mantissa, exponent = 1.0, exponent + 1
        digits = _g6(mantissa)
        return f"{digits}e-{-exponent:02d}" if exponent < 0 else f"{digits}e+{exponent:02d}"
    return _g6(p)


def _neg_log10(p: float, log10_p: float | None) -> str:
    if log10_p is not None and math.isfinite(log10_p):
        return format_g(max(0.0, -log10_p))
    return format_g(-math.log10(p)) if p > 0 else "inf"


def _complete(rows: SsfRows) -> np.ndarray:
    """Rows whose mandatory fields are all present and valid."""
    effect = np.asarray(rows.effect, dtype=np.float64)
    se = np.asarray(rows.se, dtype=np.float64)
    eaf = np.asarray(rows.eaf, dtype=np.float64)
    p = np.asarray(rows.p, dtype=np.float64)
    ok = np.isfinite(effect) & np.isfinite(se) & np.isfinite(eaf) & (eaf >= 0) & (eaf <= 1)
    ok &= np.isfinite(p) & (p >= 0) & (p <= 1)
    if rows.effect_kind == "odds_ratio":
        ok &= effect >= 0
    alleles_ok = [
        bool(_ALLELE_RE.match(str(a)) and _ALLELE_RE.match(str(b)))
        for a, b in zip(rows.effect_allele, rows.other_allele, strict=True)
    ]
    ok &= np.asarray(alleles_ok, dtype=bool)
    pos = np.asarray(rows.pos, dtype=np.int64)
    ok &= pos > 0
    return ok


def _write_gzip(path: Path, lines: Iterable[str]) -> Path:
    """``lines`` as UTF-8 in a reproducible gzip file, written atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as raw:
        # no timestamp, no file name: identical rows give identical bytes (and md5)
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=1) as gz:  # speed over size
            buf: list[str] = []
            for line in lines:
                buf.append(line)
                if len(buf) >= 8192:
                    gz.write("".join(buf).encode("utf-8"))
                    buf.clear()
            gz.write("".join(buf).encode("utf-8"))
    return path


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_PLAIN_RE = re.compile(r"^[A-Za-z][A-Za-z0-9 _.,()/+-]*$")
_YAML_RESERVED = {"true", "false", "yes", "no", "on", "off", "null", "y", "n"}


def _yaml_scalar(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, _dt.date):
        return value.isoformat()
    s = str(value)
    if _PLAIN_RE.match(s) and s.lower() not in _YAML_RESERVED and not s.endswith(" ") and " #" not in s:
        return s
    return json.dumps(s, ensure_ascii=False)  # a JSON string is a valid double-quoted YAML scalar


def _yaml_lines(mapping: Sequence[tuple[str, object]], indent: str = "") -> list[str]:
    out: list[str] = []
    for key, value in mapping:
        if isinstance(value, list | tuple):
            if not value:
                continue
            out.append(f"{indent}{key}:")
            for item in value:
                if isinstance(item, dict):
                    sub = _yaml_lines(list(item.items()), indent + "    ")
                    out.append(f"{indent}  - {sub[0].lstrip()}")
                    out.extend(sub[1:])
                else:
                    out.append(f"{indent}  - {_yaml_scalar(item)}")
        elif value is not None:
            out.append(f"{indent}{key}: {_yaml_scalar(value)}")
    return out


def _meta_yaml(meta: SsfMeta, data_file: Path, md5: str, n_omitted: int) -> str:
    sample: dict[str, object] = {"sample_size": int(meta.sample_size)}
    if meta.case_count is not None:
        sample["case_count"] = int(meta.case_count)
        sample["control_count"] = int(meta.control_count or 0)
        sample["case_control_study"] = True
    else:
        sample["case_control_study"] = False
    sample["sample_ancestry_category"] = list(meta.sample_ancestry_category)
    if meta.sample_ancestry:
        sample["sample_ancestry"] = list(meta.sample_ancestry)
    if meta.ancestry_method:
        sample["ancestry_method"] = list(meta.ancestry_method)
    notes = meta.author_notes
    if n_omitted:
        plural = "variant" if n_omitted == 1 else "variants"
        omitted = f"{n_omitted} {plural} without a complete estimate (effect, SE, frequency, p) omitted"
        notes = f"{notes}; {omitted}" if notes else omitted
    date = meta.date_last_modified or _dt.date.today()
    items: list[tuple[str, object]] = [
        ("gwas_id", meta.gwas_id),
        ("author_notes", notes),
        ("date_metadata_last_modified", date),
        ("trait_description", list(meta.trait_description)),
        ("ontology_mapping", list(meta.ontology_mapping)),
        ("genome_assembly", meta.genome_assembly),
        ("coordinate_system", meta.coordinate_system),
        ("genotyping_technology", list(meta.genotyping_technology)),
        ("samples", [sample]),
        ("sex", meta.sex),
        ("data_file_name", data_file.name),
        ("file_type", FILE_TYPE),
        ("data_file_md5sum", md5),
        ("analysis_software", meta.analysis_software),
        ("adjusted_covariates", list(meta.adjusted_covariates)),
        ("minor_allele_freq_lower_limit", meta.minor_allele_freq_lower_limit),
        ("is_harmonised", False),
        ("is_sorted", True),
        *sorted(meta.extra.items()),
    ]
    return "---\n" + "\n".join(_yaml_lines(items)) + "\n"


def write_ssf(
    path_prefix: str | Path,
    rows: SsfRows,
    meta: SsfMeta,
    *,
    neg_log10_p: bool = False,
) -> list[Path]:
    """Write a GWAS-SSF v1.0 data file and its metadata.

    Parameters
    ----------
    path_prefix : e.g. ``<out>.<PHENO>``; writes ``<path_prefix>.ssf.tsv.gz`` and
        ``<path_prefix>.ssf.tsv.gz-meta.yaml``
    rows : per-variant results (any order; written sorted by chromosome code and position)
    meta : study metadata
    neg_log10_p : write column 7 as ``neg_log_10_p_value`` instead of ``p_value``

    Returns
    -------
    list of Path
        [data file, metadata file]

    Raises
    ------
    InputError
        If a chromosome has no GWAS-SSF code, or no row has a complete estimate.
    """
    prefix = str(path_prefix)
    data_path = Path(f"{prefix}.ssf.tsv.gz")
    meta_path = Path(f"{prefix}.ssf.tsv.gz-meta.yaml")
    n = len(rows)
    codes = {c: chromosome_code(c) for c in {str(c) for c in rows.chrom}}
    chrom = np.fromiter((codes[str(c)] for c in rows.chrom), dtype=np.int64, count=n)
    pos = np.asarray(rows.pos, dtype=np.int64)
    keep = _complete(rows)
    order = np.lexsort((np.arange(n), pos, chrom))  # by chromosome, position, then input order
    order = order[keep[order]]
    if n and not order.size:
        raise InputError("write_ssf: no variant has a complete estimate (effect, SE, frequency and p)")

    columns = list(MANDATORY_COLUMNS)
    columns[4] = rows.effect_kind
    if neg_log10_p:
        columns[7] = "neg_log_10_p_value"
    columns += ["variant_id", "rsid", "n"]
    if rows.ref_is_effect is not None:
        columns.append("ref_allele")

    effect = np.asarray(rows.effect, dtype=np.float64)
    se = np.asarray(rows.se, dtype=np.float64)
    eaf = np.asarray(rows.eaf, dtype=np.float64)
    p = np.asarray(rows.p, dtype=np.float64)
    log10_p = None if rows.log10_p is None else np.asarray(rows.log10_p, dtype=np.float64)
    ref_is_effect = None if rows.ref_is_effect is None else np.asarray(rows.ref_is_effect, dtype=bool)

    def variant_id(i: int) -> str:
        if rows.variant_id is not None:
            vid = str(rows.variant_id[i])
        elif ref_is_effect is not None:
            ref, alt = (
                (rows.effect_allele[i], rows.other_allele[i])
                if ref_is_effect[i]
                else (rows.other_allele[i], rows.effect_allele[i])
            )
            vid = f"{chrom[i]}_{pos[i]}_{ref}_{alt}"
        else:
            return NA
        return vid if _VARIANT_ID_RE.match(vid) else NA

    def n_text(i: int) -> str:
        if rows.n is None:
            return NA
        v = float(rows.n[i])
        return str(int(v)) if math.isfinite(v) and v >= 0 else NA

    def lines() -> Iterable[str]:
        yield "\t".join(columns) + "\n"
        effect_, se_, eaf_, p_ = effect.tolist(), se.tolist(), eaf.tolist(), p.tolist()  # Python floats: fast
        log10_p_ = None if log10_p is None else log10_p.tolist()
        for i in order.tolist():
            lp = None if log10_p_ is None else log10_p_[i]
            pv = _neg_log10(p_[i], lp) if neg_log10_p else format_p(p_[i], lp)
            rsid = NA if rows.rsid is None else str(rows.rsid[i])
            fields = [
                str(chrom[i]),
                str(pos[i]),
                str(rows.effect_allele[i]),
                str(rows.other_allele[i]),
                _g6(effect_[i]),
                _g6(se_[i]),
                _g6(eaf_[i]),
                pv,
                variant_id(i),
                rsid if _RSID_RE.match(rsid) else NA,
                n_text(i),
            ]
            if ref_is_effect is not None:
                fields.append("EA" if ref_is_effect[i] else "OA")
            yield "\t".join(fields) + "\n"

    _write_gzip(data_path, lines())
    atomic_write_text(meta_path, [_meta_yaml(meta, data_path, _md5(data_path), int(n - order.size))])
    return [data_path, meta_path]
