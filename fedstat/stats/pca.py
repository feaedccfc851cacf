"""Federated ``--pca K``: plink2's principal components from securely summed ``XᵀX V`` products.

plink2 (2.00a3.5, non-approx ``--pca``) standardizes every genotype with the pooled ALT
frequency, ``x = (g − 2p) / sqrt(2p(1 − p))`` (0 for a missing call or a monomorphic variant),
forms the relationship matrix ``XXᵀ / M`` over the ``M`` variants (monomorphic ones count) and
reports its top eigenvalues (``.eigenval``), its unit eigenvectors (``.eigenvec``, per sample) and,
with ``allele-wts``, variant weights ``±sqrt(M)/2 · v`` (``.eigenvec.allele``) where ``v`` are the
unit eigenvectors of ``XᵀX / M`` (variant space; same non-zero eigenvalues).

A federation cannot form ``XXᵀ`` (it pairs participants of different sites), but ``XᵀX V`` for
an ``M × L`` matrix ``V`` is a sum over participants, so it runs as **subspace iteration with
Rayleigh–Ritz** in variant space:

1. ``allele_counts`` — pooled ALT dosage sums give ``p`` for every PCA variant (the hard-call counts
   at a site without dosages);
2. ``pca_multiply`` (repeated) — the coordinator sends ``V``; each site makes two passes over
   its blocks, ``U = X_s V`` (kept at the site) then ``X_sᵀ U`` per variant, and the secure sum
   is ``XᵀX V``. The coordinator solves the small ``L × L`` Ritz problem and orthonormalizes; it
   stops when every requested Ritz pair's relative residual ``‖XᵀXv − θv‖ / θ`` is below
   :data:`RESIDUAL_TOL` (reported in the job log);
3. ``pca_scores`` (only when later steps name ``PC1``…) — the coordinator releases the weights
   ``v / sqrt(θ)``; each site computes its own participants' scores ``X_s v / sqrt(θ)`` (plink2's
   ``.eigenvec`` values, up to sign) and keeps them as cohort columns. Only the sums of the
   scores and of their squares leave the site, a check that the pooled eigenvectors have unit
   length.

Dosages. plink2 reads every genotype with ``PgrGetD`` (``LoadBiallelicCenteredVarmaj`` in
``plink2_matrix_calc.cc``): an imputed ALT dosage where the file stores one, else the hard call, and
standardizes it as above with ``p`` the dosage frequency (``ComputeAlleleFreqs``); a genotype is
missing only where neither a dosage nor a hard call is present. The site kernels therefore read
their blocks as dosages (:data:`~fedstat.data.genotypes.DOSAGES`; a file without a dosage track is
read as its int8 hard calls, unchanged), and the counts round sends the ALT dosage sums.

Missing calls. plink2 divides each relationship entry by the number of variants observed in
*both* participants, which pairs participants across sites and so cannot be federated exactly.
fedstat uses the separable form of that correction, scaling participant ``i``'s row by
``M / M_i`` (``M_i`` its observed variants), which equals plink2's when no call is missing and
approximates it otherwise (see ``docs/pca.md``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from fedstat.data.genotypes import DOSAGES
from fedstat.data.variants import VariantTable
from fedstat.errors import InputError
from fedstat.stats import allele
from fedstat.stats.base import (
    Cohort,
    LocalComputation,
    RoundInput,
    RoundPlan,
    SiteUpdate,
    SumArray,
    cohort_level,
    per_variant,
)

__all__ = [
    "LOCAL_COMPUTATIONS",
    "MAX_ITERATIONS",
    "MAX_PCS",
    "RESIDUAL_TOL",
    "START_SEED",
    "PcaAnalysis",
    "PcaResult",
    "basis_width",
    "pc_names",
]

MAX_PCS = 100
RESIDUAL_TOL = 1e-6  # relative Ritz residual of every requested pair at convergence
MAX_ITERATIONS = 400
#: Seed of the PCA's start subspace: fixed, so a resumed job replays identically (recorded in provenance).
START_SEED = 0x5EED


def basis_width(k: int) -> int:
    """Most columns of the subspace iteration's basis for ``--pca k`` (the ``v`` a round sends)."""
    return max(2 * k + 10, 20)


def pc_names(k: int) -> tuple[str, ...]:
    return tuple(f"PC{i}" for i in range(1, k + 1))


# ---------------------------------------------------------------------------------------------
# site side
# ---------------------------------------------------------------------------------------------


def standardized(block: np.ndarray, freq: np.ndarray) -> np.ndarray:
    """plink2's variance-standardized genotypes [shape: (b, n), float64]; 0 where missing or monomorphic.

    ``block`` holds int8 hard calls or float32 ALT dosages (multiples of 1/16384, exact in float64),
    negative where missing: plink2 standardizes a dosage as it does a hard call, and a missing one is
    mean-imputed (0 after centring).
    """
    p = np.asarray(freq, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        sd = np.sqrt(2.0 * p * (1.0 - p))
        ok_var = np.isfinite(sd) & (sd > 0)
        inv = np.where(ok_var, 1.0 / np.where(ok_var, sd, 1.0), 0.0)
    g = block.astype(np.float64)
    x = (g - 2.0 * np.where(ok_var, p, 0.0)[:, None]) * inv[:, None]
    x[block < 0] = 0.0
    return x


def _round_arrays(inp: RoundInput, rows: slice, name: str) -> np.ndarray:
    try:
        return np.asarray(inp.arrays[name])[rows]
    except KeyError:
        raise InputError(f"pca round is missing its {name!r} array") from None


def _accumulate(block: np.ndarray, cohort: Cohort, inp: RoundInput, rows: slice, name: str) -> None:
    """``inp.local['u'] += X_bᵀ W_b`` for the round array ``name``, and count each participant's missing calls."""
    w = _round_arrays(inp, rows, name)
    if "u" not in inp.local:
        inp.local["u"] = np.zeros((cohort.n, w.shape[1]))
        inp.local["missing"] = np.zeros(cohort.n)
    inp.local["u"] += standardized(block, _round_arrays(inp, rows, "freq")).T @ w
    inp.local["missing"] += np.count_nonzero(block < 0, axis=0)


def _row_scale(inp: RoundInput) -> np.ndarray:
    """M / M_i per participant: the separable missingness correction (1 when nothing is missing)."""
    m = float(len(inp.variants))
    observed = m - inp.local["missing"]
    return np.where(observed > 0, m / np.maximum(observed, 1.0), 0.0)


def _columns(arrays: Mapping[str, np.ndarray], name: str) -> int:
    """Columns of the round's (variants × columns) array ``name``; 0 when it is missing or not 2-D."""
    shape = np.shape(arrays.get(name, ()))
    return int(shape[1]) if len(shape) == 2 else 0


class _Multiply:
    """``X_sᵀ (D⁻² X_s V)`` per variant, in two passes over the round's blocks."""

    def genotypes(self, params: Mapping[str, str]) -> str:
        """Dosages where the site's file has them (int8 hard calls otherwise), as plink2's ``--pca``."""
        return DOSAGES

    def sum_arrays(self, params: Mapping[str, str], arrays: Mapping[str, np.ndarray]) -> dict[str, SumArray]:
        return per_variant(("z",), _columns(arrays, "v"))

    def cohort_sums(self, cohort: Cohort, inp: RoundInput) -> dict[str, np.ndarray]:
        return {}

    def first_pass(self, block: np.ndarray, cohort: Cohort, inp: RoundInput, rows: slice) -> None:
        _accumulate(block, cohort, inp, rows, "v")

    def block_sums(self, block: np.ndarray, cohort: Cohort, inp: RoundInput, rows: slice) -> dict[str, np.ndarray]:
        if "scaled" not in inp.local:
            inp.local["scaled"] = inp.local["u"] * (_row_scale(inp) ** 2)[:, None]
        x = standardized(block, _round_arrays(inp, rows, "freq"))
        return {"z": x @ inp.local["scaled"]}


class _Scores:
    """Each participant's scores ``D⁻¹ X_s W`` on the released weights; they stay at the site."""

    def genotypes(self, params: Mapping[str, str]) -> str:
        return DOSAGES

    def sum_arrays(self, params: Mapping[str, str], arrays: Mapping[str, np.ndarray]) -> dict[str, SumArray]:
        return cohort_level(("score_sum", "score_sumsq"), _columns(arrays, "w"))

    def cohort_sums(self, cohort: Cohort, inp: RoundInput) -> dict[str, np.ndarray]:
        return {}

    def block_sums(self, block: np.ndarray, cohort: Cohort, inp: RoundInput, rows: slice) -> dict[str, np.ndarray]:
        _accumulate(block, cohort, inp, rows, "w")
        return {}

    def finish(self, cohort: Cohort, inp: RoundInput) -> SiteUpdate:
        names = [n for n in inp.params.get("names", "").split(",") if n]
        k = int(np.asarray(inp.arrays["w"]).shape[1]) if "w" in inp.arrays else 0
        if len(names) != k:
            raise InputError("pca_scores round: the PC names do not match the weights")
        if "u" not in inp.local:  # no variants in the round
            inp.local["u"], inp.local["missing"] = np.zeros((cohort.n, k)), np.zeros(cohort.n)
        scores = inp.local["u"] * _row_scale(inp)[:, None]
        return SiteUpdate(
            columns={name: scores[:, i] for i, name in enumerate(names)},
            sums={"score_sum": scores.sum(axis=0), "score_sumsq": (scores**2).sum(axis=0)},
        )


LOCAL_COMPUTATIONS: dict[str, LocalComputation] = {"pca_multiply": _Multiply(), "pca_scores": _Scores()}


# ---------------------------------------------------------------------------------------------
# coordinator side
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PcaResult:
    """The principal components of a job, as plink2 writes them (``.eigenval``, ``.eigenvec.allele``).

    Attributes
    ----------
    variants : the variants analysed
    eigenvalues : [array, shape: (n_pcs,)] the relationship matrix's top eigenvalues, descending
    allele_weights : [array, shape: (n_variants, n_pcs)] plink2's allele weights for A1 = ALT,
        ``sqrt(M)/2 · v`` (negated for A1 = REF)
    """

    variants: VariantTable
    eigenvalues: np.ndarray
    allele_weights: np.ndarray


def _g(values: np.ndarray) -> list[str]:
    return [f"{v:g}" for v in values.tolist()]


class PcaAnalysis:
    """``--pca K`` over the variants it is given (a :class:`~fedstat.jobs.steps.SubsetAnalysis` narrows them).

    Parameters
    ----------
    k : number of principal components
    scores : PC column names the sites must compute for later steps (``PC1``…); empty = none
    n_samples : participants in the job (caps the number of components); 0 = unknown
    number_format : how the job log prints the eigenvalues (the planner passes plink2's
        :func:`fedstat.formats.numbers.format_g_array`, as in ``.eigenval``; analyses do not
        import the file formats); default C ``%g``
    """

    def __init__(
        self,
        k: int,
        *,
        scores: tuple[str, ...] = (),
        n_samples: int = 0,
        number_format: Callable[[np.ndarray], list[str]] = _g,
    ):
        if not 1 <= k <= MAX_PCS:
            raise InputError(f"--pca takes 1 to {MAX_PCS} components, got {k}")
        self.k, self.score_names, self.n_samples = k, scores, n_samples
        self.number_format = number_format
        self.freq: np.ndarray | None = None
        self.m = 0
        self.v: np.ndarray | None = None  # current orthonormal basis (M x L)
        self.theta: np.ndarray | None = None  # Ritz values, descending
        self.vectors: np.ndarray | None = None  # Ritz vectors for theta (M x L)
        self.residual = math.inf
        self.iterations = 0
        self._stage = "start"
        self.score_check: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def n_pcs(self) -> int:
        assert self.theta is not None
        return min(self.k, len(self.theta))

    @property
    def eigenvalues(self) -> np.ndarray:
        """The relationship matrix's top eigenvalues (plink2's ``.eigenval``)."""
        assert self.theta is not None
        return self.theta[: self.n_pcs] / self.m

    @property
    def weights(self) -> np.ndarray:
        """Unit variant-space eigenvectors [shape: (M, n_pcs)], each with its largest entry positive.

        A monomorphic variant's entries are 0 (its standardized genotypes are, so they are in exact
        arithmetic; plink2 prints 0), not the rounding residue of the iteration.
        """
        assert self.vectors is not None and self.freq is not None
        v = self.vectors[:, : self.n_pcs].copy()
        v[~((self.freq > 0) & (self.freq < 1))] = 0.0
        for j in range(v.shape[1]):
            if v[np.argmax(np.abs(v[:, j])), j] < 0:
                v[:, j] = -v[:, j]
        return v

    def next_round(self, sums: Mapping[str, np.ndarray] | None) -> RoundPlan | None:
        if self._stage == "start":
            self._stage = "counts"
            # with the ALT dosage sums: plink2 standardizes with the dosage frequencies (a site
            # without dosages sends its hard-call counts as dosage sums, the same frequencies)
            return RoundPlan("allele_counts", params={"dosage": "1"})
        assert sums is not None
        if self._stage == "counts":
            stats = allele.finish(sums)
            self.m = len(stats)
            if self.m == 0:
                raise InputError("--pca: no variant is left to compute principal components from")
            self.freq = np.where(np.isfinite(stats.alt_freq), stats.alt_freq, 0.0)
            poly = int(np.count_nonzero((stats.alt_freq > 0) & (stats.alt_freq < 1)))
            cap = min(poly, self.n_samples - 1) if self.n_samples else poly
            if cap < self.k:
                raise InputError(
                    f"--pca {self.k}: only {cap} components can be computed from {poly} polymorphic variants"
                    + (f" and {self.n_samples} participants" if self.n_samples else "")
                )
            width = min(self.m, cap, basis_width(self.k))
            start = np.random.default_rng(START_SEED).standard_normal((self.m, width))
            self.v = np.linalg.qr(start)[0]
            self._stage = "iterate"
            return self._multiply_plan()
        if self._stage == "iterate":
            self._ritz(np.asarray(sums["z"], dtype=np.float64))
            if self.residual > RESIDUAL_TOL and self.iterations < MAX_ITERATIONS:
                return self._multiply_plan()
            if not self.score_names:
                self._stage = "done"
                return None
            self._stage = "scores"
            assert self.theta is not None and self.freq is not None
            w = self.weights[:, : len(self.score_names)] / np.sqrt(self.theta[: len(self.score_names)])
            return RoundPlan(
                "pca_scores",
                params={"names": ",".join(self.score_names)},
                arrays={"freq": self.freq, "w": np.ascontiguousarray(w)},
            )
        if self._stage == "scores":
            self.score_check = (np.asarray(sums["score_sum"]), np.asarray(sums["score_sumsq"]))
            self._stage = "done"
            return None
        raise AssertionError(f"next_round after the PCA finished ({self._stage})")

    def _multiply_plan(self) -> RoundPlan:
        assert self.freq is not None and self.v is not None
        return RoundPlan("pca_multiply", arrays={"freq": self.freq, "v": np.ascontiguousarray(self.v)})

    def _ritz(self, z: np.ndarray) -> None:
        """One Rayleigh–Ritz step on ``Z = XᵀX V``; the next basis is ``orth(Z)`` in Ritz order."""
        assert self.v is not None
        self.iterations += 1
        h = self.v.T @ z
        theta, s = np.linalg.eigh((h + h.T) / 2.0)
        order = np.argsort(theta)[::-1]
        theta, s = theta[order], s[:, order]
        vectors, zs = self.v @ s, z @ s
        k = min(self.k, len(theta))
        top = np.maximum(theta[:k], 1e-300)
        self.residual = float(np.max(np.linalg.norm(zs[:, :k] - vectors[:, :k] * theta[:k], axis=0) / top))
        self.theta, self.vectors = theta, vectors
        self.v = np.linalg.qr(zs)[0]

    def result(self, variants: VariantTable) -> PcaResult:
        """The eigenvalues and allele weights over ``variants`` (the :attr:`m` variants analysed)."""
        assert self.theta is not None, "result() before the PCA finished"
        if len(variants) != self.m:
            raise InputError(f"--pca: {len(variants)} variants to write, {self.m} analysed")
        wts = self.weights * (math.sqrt(self.m) / 2.0)  # plink2's allele weights for A1 = ALT
        return PcaResult(variants=variants, eigenvalues=self.eigenvalues, allele_weights=wts)

    def log_lines(self) -> list[str]:
        if self.theta is None:
            return []
        assert self.vectors is not None
        state = "converged" if self.residual <= RESIDUAL_TOL else "did NOT converge"
        lines = [
            f"--pca {self.k}: {self.m} variants; subspace iteration {state} after {self.iterations} rounds "
            f"(basis of {self.vectors.shape[1]}, largest relative Ritz residual {self.residual:.2e}, "
            f"tolerance {RESIDUAL_TOL:g})",
            "--pca eigenvalues: " + " ".join(self.number_format(self.eigenvalues)),
        ]
        if self.score_check is not None:
            sumsq = self.score_check[1]
            lines.append(
                f"PC scores computed at each site for {', '.join(self.score_names)}; pooled Σ score² per PC "
                f"{float(sumsq.min()):.6f}..{float(sumsq.max()):.6f} (1 = plink2's unit eigenvectors)"
            )
        return lines
