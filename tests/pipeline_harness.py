"""An in-process federation for whole jobs (QC → PCA → GWAS): sites are sample partitions of one matrix.

It does what the daemons do, through the same :func:`fedstat.stats.base.run_local`: every
RoundPlan runs at each site on its own participants, the arrays are added over sites, and the
totals go back to the job's analysis. Round effects that stay at a site (``--mind`` removals, PC
scores) update that site's cohort for the later rounds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedstat.computations import LOCAL_COMPUTATIONS
from fedstat.data.samples import read_sample_table
from fedstat.data.variants import VariantTable
from fedstat.formats.results import write_result
from fedstat.jobs import JobSpec, derived_columns, plan_job
from fedstat.report.gwas import JobContext
from fedstat.stats.base import Cohort, Output, RoundInput, SiteUpdate, run_local, updated_cohort
from tests.conftest import read_pooled


@dataclass
class Site:
    name: str
    members: np.ndarray  # columns of the pooled matrix
    cohort: Cohort


@dataclass
class Run:
    analysis: object
    sites: list[Site]
    rounds: list[str]
    files: list[Path]


def load(data_dir: Path) -> tuple[np.ndarray, VariantTable, object]:
    geno, variants, _ = read_pooled(data_dir)
    return geno, variants, read_sample_table(data_dir / "pooled" / "samples.tsv")


def make_sites(table: object, spec: JobSpec, names: Sequence[str]) -> list[Site]:
    site_of = np.array([iid.split("_")[0] for iid in table.iid])
    derived = derived_columns(spec)
    cols = [c for c in dict.fromkeys((*spec.pheno_names, *spec.covar_names)) if c not in derived]
    sites = []
    for name in names:
        idx = np.flatnonzero(site_of == name)
        columns = {c: np.asarray(table.column(c), dtype=np.float64)[idx] for c in cols}
        sites.append(Site(name, idx, Cohort(n=int(idx.size), columns=columns)))
    return sites


def run_pipeline(
    spec: JobSpec,
    geno: np.ndarray,
    variants: VariantTable,
    table: object,
    *,
    names: Sequence[str] = ("AFR", "EAS", "EUR"),
    out_prefix: Path | None = None,
    block: int = 300,
) -> Run:
    spec = spec.validated()
    sites = make_sites(table, spec, names)
    ctx = JobContext(spec=spec.to_json(), sites=tuple((s.name, s.cohort.n) for s in sites))
    analysis = plan_job(spec, ctx, variants)
    sums = None
    rounds: list[str] = []
    n_var = geno.shape[0]
    while (plan := analysis.next_round(sums)) is not None:
        rounds.append(plan.computation)
        comp = LOCAL_COMPUTATIONS[plan.computation]
        vidx = np.arange(n_var) if plan.variants is None else np.asarray(plan.variants)
        total: dict[str, np.ndarray] = {}
        shapes: dict[str, tuple[int, ...]] = {}
        for site in sites:
            inp = RoundInput(params=dict(plan.params), arrays=dict(plan.arrays), variants=vidx)

            def read_blocks(site: Site = site, vidx: np.ndarray = vidx) -> object:
                for start in range(0, vidx.size, block):
                    rows = vidx[start : start + block]
                    yield start, np.ascontiguousarray(geno[rows][:, site.members])

            parts: dict[str, np.ndarray] = {}
            for out in run_local(comp, site.cohort, inp, read_blocks):
                if isinstance(out, SiteUpdate):
                    if out.keep is not None:
                        site.members = site.members[np.asarray(out.keep, dtype=bool)]
                    site.cohort = updated_cohort(site.cohort, out)
                    continue
                assert isinstance(out, Output)
                arr = parts.setdefault(out.name, np.zeros(out.total, dtype=out.values.dtype))
                arr[out.offset : out.offset + out.values.size] = out.values
                shapes[out.name] = out.shape
            for key, arr in parts.items():
                arr = arr.reshape(shapes[key])
                total[key] = total[key] + arr if key in total else arr.copy()
        sums = total
    files = write_result(analysis.result(variants), out_prefix) if out_prefix is not None else []
    return Run(analysis=analysis, sites=sites, rounds=rounds, files=files)
