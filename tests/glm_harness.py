"""A pure in-process federation for ``--glm`` tests: sites are sample partitions of one matrix.

The driver does exactly what the daemons do: for every RoundPlan, each site runs the named
LocalComputation (cohort sums once, block sums per variant block) on its own samples, the
arrays are added over sites, and the totals go back to the JobAnalysis.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedstat.data.samples import SampleTable, read_sample_table
from fedstat.data.variants import VariantTable
from fedstat.stats.base import Cohort, RoundInput
from fedstat.stats.glm import LOCAL_COMPUTATIONS, GlmJob
from tests.conftest import read_pooled

GWAS = Path(__file__).parent / "data" / "gwas"
POOLED = GWAS / "pooled"
EXPECTED = GWAS / "expected"
COVARS = ("AGE", "SEX", "BATCH", "PC1", "PC2")
SITES = ("AFR", "EAS", "EUR")


@dataclass(frozen=True)
class Pooled:
    geno: np.ndarray  # (V, N) int8, ALT counts, -9 missing
    table: SampleTable
    variants: VariantTable

    @property
    def site_of(self) -> np.ndarray:
        """Site index (into SITES) of each sample, from the FID prefix."""
        return np.array([SITES.index(f.split("_")[0]) for f in self.table.fid or self.table.iid])


_POOLED: Pooled | None = None


def load_pooled() -> Pooled:
    global _POOLED
    if _POOLED is None:
        geno, variants, _ = read_pooled(POOLED.parent)
        table = read_sample_table(POOLED / "samples.tsv")
        _POOLED = Pooled(geno=geno, table=table, variants=variants)
    return _POOLED


def make_cohort(table: SampleTable, idx: np.ndarray, columns: Sequence[str]) -> Cohort:
    return Cohort(n=int(idx.size), columns={c: np.asarray(table.column(c))[idx] for c in columns})


def run_job(
    job: GlmJob,
    geno: np.ndarray,
    cohorts: Sequence[tuple[Cohort, np.ndarray]],
    *,
    block: int = 256,
) -> tuple[GlmJob, int]:
    """Drive ``job`` to completion over sites ``(cohort, sample indices into geno's columns)``.

    Returns the job and the number of rounds run.
    """
    sums = None
    rounds = 0
    n_var = geno.shape[0]
    while (plan := job.next_round(sums)) is not None:
        rounds += 1
        comp = LOCAL_COMPUTATIONS[plan.computation]
        variants = np.arange(n_var) if plan.variants is None else np.asarray(plan.variants)
        total: dict[str, np.ndarray] = {}
        for cohort, idx in cohorts:
            # one RoundInput per site, as each site agent builds its own: inp.local is that site's
            inp = RoundInput(params=plan.params, arrays=plan.arrays, variants=variants)
            parts = dict(comp.cohort_sums(cohort, inp))
            blocks: dict[str, list[np.ndarray]] = {}
            for start in range(0, variants.size, block):
                rows = slice(start, min(start + block, variants.size))
                gb = np.ascontiguousarray(geno[variants[rows]][:, idx])
                for key, arr in comp.block_sums(gb, cohort, inp, rows).items():
                    assert arr.shape[0] == rows.stop - rows.start, key
                    blocks.setdefault(key, []).append(arr)
            for key, arrs in blocks.items():
                parts[key] = np.concatenate(arrs, axis=0)
            for key, arr in parts.items():
                assert arr.dtype in (np.float64, np.int64), (key, arr.dtype)
                total[key] = total[key] + arr if key in total else arr.copy()
        sums = total
    return job, rounds


def run_split(
    pheno: Sequence[str],
    covars: Sequence[str],
    modifiers: frozenset[str],
    site_of: np.ndarray,
    n_sites: int,
    *,
    geno: np.ndarray | None = None,
    table: SampleTable | None = None,
) -> GlmJob:
    """Run a job with samples assigned to sites by ``site_of`` (empty sites allowed)."""
    pooled = load_pooled() if geno is None or table is None else None
    geno = pooled.geno if geno is None else geno
    table = pooled.table if table is None else table
    cols = (*pheno, *covars)
    cohorts = []
    for s in range(n_sites):
        idx = np.flatnonzero(site_of == s)
        cohorts.append((make_cohort(table, idx, cols), idx))
    job = GlmJob(tuple(pheno), tuple(covars), frozenset(modifiers))
    return run_job(job, geno, cohorts)[0]


# ---------------------------------------------------------------------------------------------
# comparison with plink2's files
# ---------------------------------------------------------------------------------------------


@dataclass
class Conformance:
    rows: int = 0
    identical: int = 0
    key_mismatch: int = 0  # ID/A1/FIRTH?/TEST/OBS_CT/ERRCODE differ
    max_beta_dev_se: float = 0.0  # max |ΔBETA| / SE (log-OR for logistic), beyond print rounding
    max_log10p_dev: float = 0.0
    mismatches: list[str] | None = None


def _num(s: str) -> float:
    return math.nan if s == "NA" else float(s)


def _log10p(s: str) -> float:
    if s == "NA":
        return math.nan
    if "e" in s:
        mant, exp = s.split("e")
        return math.log10(float(mant)) + int(exp)
    return math.log10(float(s)) if float(s) > 0 else -math.inf


def compare(ours: Path, expected: Path) -> Conformance:
    a = ours.read_text().splitlines()
    b = expected.read_text().splitlines()
    out = Conformance(mismatches=[])
    assert a[0] == b[0], f"header differs: {a[0]!r} vs {b[0]!r}"
    head = b[0].split("\t")
    assert len(a) == len(b), f"{len(a)} lines vs {len(b)}"
    key_cols = [head.index(c) for c in ("ID", "A1", "TEST", "OBS_CT", "ERRCODE")]
    if "FIRTH?" in head:
        key_cols.append(head.index("FIRTH?"))
    is_or = "OR" in head
    bcol = head.index("OR" if is_or else "BETA")
    scol = head.index("LOG(OR)_SE" if is_or else "SE")
    pcol = head.index("P")
    for la, lb in zip(a[1:], b[1:], strict=True):
        out.rows += 1
        if la == lb:
            out.identical += 1
            continue
        fa, fb = la.split("\t"), lb.split("\t")
        if any(fa[c] != fb[c] for c in key_cols):
            out.key_mismatch += 1
            out.mismatches.append(f"{la}\n   vs {lb}")
            continue
        if fb[bcol] == "NA":
            continue
        x, y, se = _num(fa[bcol]), _num(fb[bcol]), _num(fb[scol])
        if is_or:
            x, y = math.log(x), math.log(y)
        # both sides are printed to 6 significant digits: allow that rounding on top
        slack = 1e-5 * max(abs(x), abs(y)) if not is_or else 1e-5
        dev = max(abs(x - y) - slack, 0.0) / se
        out.max_beta_dev_se = max(out.max_beta_dev_se, dev)
        dp = max(abs(_log10p(fa[pcol]) - _log10p(fb[pcol])) - 5e-6 * 2, 0.0)
        out.max_log10p_dev = max(out.max_log10p_dev, dp)
    return out
