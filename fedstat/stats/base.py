"""The contract between an analysis and the rest of fedstat.

An analysis has two halves that never see the network or a privacy mode:

- **site side**, a :class:`LocalComputation`: given the site's cohort (the job's phenotype and
  covariate columns) and a round's input, it returns named arrays of *sums over the site's
  participants*: per-variant sums from :meth:`~LocalComputation.block_sums`, called once per
  block of genotypes, and cohort-level sums (not per variant) from
  :meth:`~LocalComputation.cohort_sums`, called once per round.
- **coordinator side**, a :class:`JobAnalysis`: from the global (summed over sites) arrays of
  one round it proposes the next :class:`RoundPlan` or finishes with a frozen result object
  (:meth:`JobAnalysis.result`), which :func:`fedstat.formats.results.write_result` writes as files
  chosen by its type: analyses never write files themselves.

A round may carry *global* arrays from the coordinator to the sites (e.g. per-variant
coefficients of a Newton step) and may cover a subset of the harmonized variants (e.g. the
variants whose logistic fit has not converged yet). Nothing per-participant ever crosses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from fedstat.data.genotypes import HARDCALLS
from fedstat.data.variants import VariantTable
from fedstat.errors import ProtocolError


@dataclass(frozen=True)
class Cohort:
    """A site's participants in one job, in the column order of the genotype blocks.

    Attributes
    ----------
    n : number of participants (genotype block columns)
    columns : sample-table column name -> [array, shape: (n,), dtype float64], NaN where
        missing, values as written in samples.tsv (a case/control phenotype keeps its 1/2
        coding and a 0/1 covariate its zeros; only NA / -9 are NaN). Holds the job's phenotype
        and covariate columns. How a phenotype is coded (case/control or quantitative) is
        decided by the analysis over the pooled data, never per site.
    zero_dropped : phenotype -> participants this site left out up front for a 0 under
        ``--require-pheno`` (0 is missing only for a case/control phenotype; ``--glm`` checks
        the pooled coding agrees)
    categories : categorical covariate -> [array, shape: (n,), dtype object] each participant's
        category, ``""`` where missing (:mod:`fedstat.data.categories`); ``--glm`` reads its
        indicator columns ``COL=LEVEL`` through :func:`fedstat.stats.glm_common.cohort_column`
    sex : [array, shape: (n,), dtype int8] each participant's sex in plink2's codes (1 male,
        2 female, 0 unknown; -1 a sample-table value that is no sex, :mod:`fedstat.data.sex`), which
        the allele reports on chrX/chrY need; None when not given (then a round that needs it refuses)
    """

    n: int
    columns: Mapping[str, np.ndarray]
    zero_dropped: Mapping[str, int] = field(default_factory=dict)
    categories: Mapping[str, np.ndarray] = field(default_factory=dict)
    sex: np.ndarray | None = None


@dataclass(frozen=True)
class RoundInput:
    """What a site gets for one round besides its genotypes.

    Attributes
    ----------
    params : string parameters of the round (from :attr:`RoundPlan.params`)
    arrays : global arrays sent by the coordinator (full shapes, e.g. ``beta``:
        (n_round_variants, n_params)); empty for most rounds
    variants : [array, shape: (n_round_variants,), dtype int64] indices into the harmonized
        variant list of the variants this round covers, increasing
    """

    params: Mapping[str, str]
    arrays: Mapping[str, np.ndarray]
    variants: np.ndarray
    local: dict[str, np.ndarray] = field(default_factory=dict)
    """Site-only working arrays of this round (e.g. per-participant accumulators of a first pass
    over the blocks); filled by the computation itself, never sent."""


@dataclass(frozen=True)
class SiteUpdate:
    """How a round changes a site's cohort for the job's later rounds (stays at the site).

    Attributes
    ----------
    keep : [array, shape: (cohort.n,), dtype bool] participants that stay in the job (e.g. after
        ``--mind``); None = all
    columns : derived per-participant columns added to the cohort (e.g. ``PC1`` … from released
        PCA weights), each [array, shape: (cohort.n,)] before ``keep`` applies
    sums : cohort-level sums sent after the blocks (aggregates only, e.g. counts removed)
    """

    keep: np.ndarray | None = None
    columns: Mapping[str, np.ndarray] = field(default_factory=dict)
    sums: Mapping[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class SumArray:
    """One array a local computation sends in a round, declared before the round runs.

    The coordinator checks every chunk a site sends against these declarations before it
    allocates anything (:func:`fedstat.bounds.round_arrays`); the site checks its own outputs
    against them too (:func:`run_local`).

    Attributes
    ----------
    shape : the whole array's shape; for a per-variant array the shape of one variant's row
        (``()`` for one number per variant)
    integer : integer sums (counts, exact int64) rather than real sums (float64)
    per_variant : a block sum whose first axis is the round's variants
    """

    shape: tuple[int, ...] = ()
    integer: bool = False
    per_variant: bool = False

    def full_shape(self, n_variants: int) -> tuple[int, ...]:
        """The whole array's shape in a round over ``n_variants`` variants."""
        return (n_variants, *self.shape) if self.per_variant else self.shape


def per_variant(names: Iterable[str], *shape: int, integer: bool = False) -> dict[str, SumArray]:
    """Declarations of per-variant arrays ``names``, each row of ``shape``."""
    return {name: SumArray(tuple(shape), integer, True) for name in names}


def cohort_level(names: Iterable[str], *shape: int, integer: bool = False) -> dict[str, SumArray]:
    """Declarations of cohort-level (not per-variant) arrays ``names`` of ``shape``."""
    return {name: SumArray(tuple(shape), integer, False) for name in names}


class LocalComputation(Protocol):
    """Site side of an analysis round. Must be vectorised: no Python loop per sample or variant.

    Every computation declares the arrays a round sends with ``sum_arrays(params, arrays)``:
    name → :class:`SumArray`, from the round's parameters and the coordinator's arrays alone
    (never the site's data), so the coordinator knows them before any site sends.

    Optional methods, looked up with ``getattr``:

    - ``first_pass(block, cohort, inp, rows) -> None``: a computation that needs two passes over
      the round's blocks (e.g. ``Xᵀ(X V)``) accumulates its first pass into ``inp.local``;
    - ``finish(cohort, inp) -> SiteUpdate``: called after the blocks; may drop participants or
      add derived columns for later rounds, and may return cohort-level sums;
    - ``genotypes(params) -> str``: what the round's blocks hold
      (:data:`fedstat.data.genotypes.GENOTYPE_VALUES`): ``"hardcalls"`` (the default: int8 ALT
      counts, -9 missing), ``"dosages"`` (float32 ALT dosages where the site's file has them, -9
      missing, else its int8 hard calls: the kernel takes either), or ``"both"`` (a
      :class:`~fedstat.data.genotypes.GenotypeBlock`); a kernel asks for dosages exactly where
      plink2 uses them;
    - ``release_groups(cohort, inp) -> dict[str, bool array (cohort.n,)]``: the groups of
      participants the round's sums are taken over (e.g. each phenotype's regression cohort, the
      cases and the controls), checked by the site's release ledger before anything is computed;
      without it, the whole cohort (see :func:`release_groups`).
    """

    def sum_arrays(self, params: Mapping[str, str], arrays: Mapping[str, np.ndarray]) -> dict[str, SumArray]:
        """The arrays a round of this computation sends (per-variant ones by their row shape)."""
        ...

    def cohort_sums(self, cohort: Cohort, inp: RoundInput) -> dict[str, np.ndarray]:
        """Sums over the site's participants that are not per variant (any shape); may be empty."""
        ...

    def block_sums(self, block: np.ndarray, cohort: Cohort, inp: RoundInput, rows: slice) -> dict[str, np.ndarray]:
        """Per-variant sums for one block.

        Parameters
        ----------
        block : [array, shape: (b, cohort.n), dtype int8] ALT allele counts 0/1/2, -9 missing,
            already in the harmonized orientation
        rows : positions of the block's variants within ``inp.variants`` (use it to slice
            per-variant ``inp.arrays``)

        Returns
        -------
        name -> array whose first axis has length b (float64 or int64)
        """
        ...


@dataclass(frozen=True)
class RoundPlan:
    """One round: which local computation the sites run, on which variants, with which inputs.

    Attributes
    ----------
    computation : key in :data:`fedstat.computations.LOCAL_COMPUTATIONS`
    params : string parameters
    arrays : global arrays sent to every site (coefficients, inverses; never participant data)
    variants : harmonized-variant indices the round covers; None = all
    """

    computation: str
    params: Mapping[str, str] = field(default_factory=dict)
    arrays: Mapping[str, np.ndarray] = field(default_factory=dict)
    variants: np.ndarray | None = None


class JobAnalysis(Protocol):
    """Coordinator side of an analysis: a state machine over rounds."""

    def next_round(self, sums: Mapping[str, np.ndarray] | None) -> RoundPlan | None:
        """Given the previous round's global sums (None at the start), the next round or None when done.

        ``sums`` holds every array the sites returned, summed over sites, in full shape:
        per-variant arrays have first axis ``len(plan.variants)`` (or all variants).
        """
        ...

    def result(self, variants: VariantTable) -> object | None:
        """The finished analysis as a frozen result object, None when it has no files to write.

        ``variants`` are the harmonized variants the analysis ran on, one row per variant of its
        results; :func:`fedstat.formats.results.write_result` picks the writer by the result's type.
        """
        ...

    def log_lines(self) -> list[str]:
        """Aggregate facts for the job log (e.g. 'BATCH excluded: constant'); may be empty."""
        ...


@dataclass(frozen=True)
class Results:
    """The results of several analyses of one job, written one after another.

    Attributes
    ----------
    parts : each analysis' result, in the order the analyses ran (None: no files)
    """

    parts: tuple[object | None, ...]


@dataclass(frozen=True)
class Output:
    """One named array (or a slice of it) a site sends for a round; see :func:`run_local`."""

    name: str
    offset: int  # flat offset of ``values`` within the whole array
    total: int  # flat size of the whole array
    values: np.ndarray  # flat
    shape: tuple[int, ...]  # the whole array's shape
    per_variant: bool = False  # a block sum (first axis: the round's variants), not a cohort sum


def run_local(
    compute: LocalComputation,
    cohort: Cohort,
    inp: RoundInput,
    read_blocks: Callable[[], Iterator[tuple[int, np.ndarray]]],
    *,
    on_block: Callable[[int], None] | None = None,
) -> Iterator[Output | SiteUpdate]:
    """Run one round of ``compute`` at a site: what a site agent (or a test's in-process site) does.

    Yields the arrays to send, block by block (memory stays bounded by the block), then the
    round's :class:`SiteUpdate` when the computation has a ``finish`` step. ``read_blocks()``
    yields ``(offset, block)`` over ``inp.variants``; it is called twice for two-pass computations.
    ``on_block(done)`` is called after each block of the main pass.
    """
    n = len(inp.variants)
    declared = declared_arrays(compute, inp.params, inp.arrays)

    def checked(out: Output) -> Output:
        """``out`` if the computation declared it so (name, shape, integer or real, per variant)."""
        d = declared.get(out.name) if declared is not None else None
        if declared is not None and (
            d is None
            or d.full_shape(n) != out.shape
            or d.per_variant != out.per_variant
            or d.integer != (out.values.dtype.kind in "iu")
        ):
            raise ProtocolError(
                f"{type(compute).__name__} sends array {out.name!r} of shape {out.shape} ({out.values.dtype}), "
                "which its sum_arrays declaration does not list so; fix the declaration"
            )
        return out

    for name, values in compute.cohort_sums(cohort, inp).items():
        values = np.asarray(values)
        yield checked(Output(name, 0, values.size, values.reshape(-1), values.shape))
    first_pass = getattr(compute, "first_pass", None)
    if first_pass is not None:
        for offset, block in read_blocks():
            first_pass(block, cohort, inp, slice(offset, offset + block.shape[0]))
    for done, (offset, block) in enumerate(read_blocks(), start=1):
        sums = compute.block_sums(block, cohort, inp, slice(offset, offset + block.shape[0]))
        for name, values in sums.items():
            values = np.asarray(values)
            assert values.shape[0] == block.shape[0], f"{name} is not per variant"
            per_row = int(np.prod(values.shape[1:], dtype=np.int64))
            yield checked(Output(name, offset * per_row, n * per_row, values.reshape(-1), (n, *values.shape[1:]), True))
        if on_block is not None:
            on_block(done)
    finish = getattr(compute, "finish", None)
    if finish is not None:
        update = finish(cohort, inp)
        for name, values in update.sums.items():
            values = np.asarray(values)
            yield checked(Output(name, 0, values.size, values.reshape(-1), values.shape))
        yield update


def genotype_values(compute: LocalComputation, params: Mapping[str, str]) -> str:
    """What the blocks of a round of ``compute`` hold (its optional ``genotypes(params)``; hard calls
    when it declares nothing): the site reads its genotype file accordingly."""
    declared = getattr(compute, "genotypes", None)
    return HARDCALLS if declared is None else str(declared(params))


def declared_arrays(
    compute: LocalComputation, params: Mapping[str, str], arrays: Mapping[str, np.ndarray]
) -> dict[str, SumArray] | None:
    """What ``compute`` declares a round with ``params`` and coordinator ``arrays`` sends; None for
    a computation without a declaration (a test's stand-in)."""
    declare = getattr(compute, "sum_arrays", None)
    return None if declare is None else dict(declare(params, arrays))


def release_groups(compute: LocalComputation, cohort: Cohort, inp: RoundInput) -> dict[str, np.ndarray]:
    """The participant groups a round releases sums over, as boolean masks over the cohort.

    Returns
    -------
    name -> [array, shape: (cohort.n,), dtype bool]; ``{"cohort": all True}`` for a computation
    that declares none (its sums are over the whole cohort).
    """
    declared = getattr(compute, "release_groups", None)
    if declared is None:
        return {"cohort": np.ones(cohort.n, dtype=bool)}
    groups = {name: np.asarray(mask, dtype=bool) for name, mask in declared(cohort, inp).items()}
    for name, mask in groups.items():
        assert mask.shape == (cohort.n,), f"release group {name} has shape {mask.shape}"
    return groups


def updated_cohort(cohort: Cohort, update: SiteUpdate) -> Cohort:
    """The cohort for later rounds after ``update``: derived columns added, dropped participants gone."""
    columns = {**cohort.columns, **{k: np.asarray(v, dtype=np.float64) for k, v in update.columns.items()}}
    if update.keep is None:
        return Cohort(
            n=cohort.n,
            columns=columns,
            zero_dropped=cohort.zero_dropped,
            categories=cohort.categories,
            sex=cohort.sex,
        )
    keep = np.asarray(update.keep, dtype=bool)
    return Cohort(
        n=int(keep.sum()),
        columns={k: v[keep] for k, v in columns.items()},
        zero_dropped=cohort.zero_dropped,
        categories={k: v[keep] for k, v in cohort.categories.items()},
        sex=None if cohort.sex is None else cohort.sex[keep],
    )
