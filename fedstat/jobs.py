"""Job specs and the analyses' round structure, with no network in sight.

A job is a list of plink2-style analyses. Each analysis is a sequence of rounds: the
coordinator names a *local computation* and its parameters, every site runs it over its
harmonized variant blocks and returns named sum arrays, and the coordinator's analysis turns
the global sums into the next round or the final result files.

The site side of every computation, with what it declares, is in :mod:`fedstat.computations`;
here :func:`plan_job` (coordinator side) turns a spec into the
:class:`~fedstat.stats.base.JobAnalysis` that proposes rounds and writes results.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from fedstat.data.variants import VariantTable
from fedstat.errors import InputError, ProtocolError, shown
from fedstat.report.gwas import JobContext, assoc_section, glm_outputs, write_report
from fedstat.stats import allele, assoc, glm, pca
from fedstat.stats.base import JobAnalysis, RoundPlan
from fedstat.stats.qc import QcResult, VariantQc, variant_filter

#: Analyses this version runs, as plink2 (or PLINK 1.9: assoc, model) flag names without dashes.
KNOWN_ANALYSES: tuple[str, ...] = (*allele.ANALYSES, "pca", "glm", "assoc", "model")
#: Analyses available under differential privacy: their rounds' computations declare DP
#: sensitivities (fedstat.computations); --glm and --pca sums are real-valued and need clipping bounds
DP_ANALYSES = ("freq", "geno-counts", "hardy", "missing", "assoc", "model")
#: --glm modifiers as plink2 spells them, plus fedstat's ``show-covar`` (covariate rows are
#: hidden by default, as with plink2's ``hide-covar``).
GLM_MODIFIERS = frozenset({"hide-covar", "show-covar", "firth", "no-firth", "firth-fallback", "allow-no-covars"})
_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")
#: Job options the coordinator and sites understand, with the longest value each may hold.
KNOWN_OPTIONS = {
    "glm": 200,
    "genome_assembly": 40,
    "dp_epsilon": 40,
    "dp_delta": 40,
    "paillier_public_key": 4096,
    "mind": 40,
    "geno": 40,
    "hwe": 60,
    "maf": 40,
    "pca": 40,
    # "1": plink2's --require-pheno over the job's --pheno-name columns; or the phenotype columns
    # named (comma-separated), as plink2's --require-pheno NAMES
    "require_pheno": 1000,
    "require_covar": 1,  # "1": plink2's --require-covar over the job's --covar-name columns
}
#: Prefix of the statement an analyst signs for a job (:meth:`JobSpec.signing_bytes`).
SPEC_SIGNATURE_LABEL = b"fedstat job spec v1\x00"
#: Job options that filter samples or variants before the analyses (plink2's order of application).
QC_OPTIONS = ("mind", "geno", "hwe", "maf")
#: --hwe modifiers: ``midp`` (plink2's mid-p adjustment), ``controls`` (test the controls of the
#: case/control --pheno-name only; PLINK 1.9's default for case/control data).
HWE_MODIFIERS = frozenset({"controls"})
#: Most phenotypes, covariates (after range expansion) and sites one job may name.
MAX_PHENOS, MAX_COVARS, MAX_SITES = 100, 1000, 1000
MAX_BLOCK_SIZE = 1 << 20


@dataclass(frozen=True)
class JobSpec:
    """An analyst's request. Mirrors ``fedstat.v1.JobSpec``.

    Attributes
    ----------
    analyses : plink2 flags without dashes, e.g. ``("freq", "hardy")``
    pheno_names, covar_names : sample-table columns the analyses use (checked at every site)
    privacy : privacy mode name
    purpose : purpose of use (DUO code), empty when unspecified
    sites : sites to run on; empty = every connected site
    out_name : result file prefix (a plain name, no directories)
    block_size : variants per block at the sites; 0 = each site's default
    dataset : dataset name at each site; empty = each site's default
    options : analysis modifiers for later analyses
    """

    analyses: tuple[str, ...]
    pheno_names: tuple[str, ...] = ()
    covar_names: tuple[str, ...] = ()
    privacy: str = "secagg"
    purpose: str = ""
    sites: tuple[str, ...] = ()
    out_name: str = "fedstat"
    block_size: int = 0
    dataset: str = ""
    options: Mapping[str, str] = field(default_factory=dict)

    def validated(self) -> JobSpec:
        """Return the spec with analyses in canonical order; InputError naming what is wrong."""
        from fedstat.privacy.base import canonical_mode, get_mode  # noqa: PLC0415 - avoids an import cycle

        unknown_options = sorted(set(self.options) - set(KNOWN_OPTIONS))
        if unknown_options:
            raise InputError(
                f"unknown job option(s) {', '.join(shown(o) for o in unknown_options[:5])}; "
                f"known: {', '.join(KNOWN_OPTIONS)}"
            )
        for key, value in self.options.items():
            if not isinstance(value, str) or len(value) > KNOWN_OPTIONS[key]:
                raise InputError(f"job option {key} must be text of at most {KNOWN_OPTIONS[key]} characters")
        if self.options.get("require_covar", "1") != "1":
            raise InputError("job option require_covar must be '1' (on) or absent")
        required = self.options.get("require_pheno", "1")
        if required != "1":
            names = required.split(",")
            bad = [n for n in names if not _NAME_RE.match(n)]
            if bad or len(set(names)) != len(names):
                raise InputError(
                    f"job option require_pheno must be '1' (the job's --pheno-name columns) or distinct column "
                    f"names separated by commas, got {shown(required)}"
                )
        for what, names in (("site", self.sites), ("dataset", (self.dataset,) if self.dataset else ())):
            bad = [n for n in names if not _NAME_RE.match(n)]
            if bad:
                raise InputError(f"invalid {what} name {shown(bad[0])}: letters, digits, _ . - only (at most 100)")
        if len(self.sites) > MAX_SITES or len(self.pheno_names) > MAX_PHENOS:
            raise InputError(f"a job names at most {MAX_SITES} sites and {MAX_PHENOS} phenotypes")
        if len(self.purpose) > 200:
            raise InputError("--purpose is at most 200 characters of DUO codes")
        if not self.analyses:
            raise InputError(
                "no analysis requested: give at least one of " + ", ".join(f"--{a}" for a in KNOWN_ANALYSES)
            )
        unknown = [a for a in self.analyses if a not in KNOWN_ANALYSES]
        if unknown:
            raise InputError(
                f"unknown analysis {', '.join(shown(a) for a in unknown[:3])}; this version runs: {', '.join(KNOWN_ANALYSES)}"
            )
        mode = get_mode(self.privacy)
        if mode.needs_public_key and self.options.get("paillier_public_key"):
            from fedstat.privacy.paillier import job_public_key  # noqa: PLC0415

            job_public_key(self.options)  # InputError naming a malformed key
        if mode.adds_noise:
            _check_dp(self)
        elif "dp_epsilon" in self.options or "dp_delta" in self.options:
            raise InputError("--epsilon and --delta apply to --privacy dp only")
        if self.purpose:
            from fedstat.privacy.consent import parse_purpose  # noqa: PLC0415

            purpose = str(parse_purpose(self.purpose))  # canonical text; InputError naming the bad code
        else:
            purpose = ""
        if not _NAME_RE.match(self.out_name):
            raise InputError(
                f"output name {shown(self.out_name)} must be a plain file name prefix (letters, digits, _ . -)"
            )
        for col in (*self.pheno_names, *self.covar_names):
            if not _NAME_RE.match(col):
                raise InputError(f"invalid column name {shown(col)}: letters, digits, _ . - only (at most 100)")
        pheno, covar = expand_names(self.pheno_names), expand_names(self.covar_names)
        both = set(pheno) & set(covar)
        if both:
            raise InputError(f"{', '.join(sorted(both))} named as both phenotype and covariate")
        modifiers = tuple(m for m in self.options.get("glm", "").split(",") if m)
        unknown_mods = [m for m in modifiers if m not in GLM_MODIFIERS]
        if unknown_mods:
            raise InputError(
                f"unknown --glm modifier {', '.join(shown(m) for m in unknown_mods[:3])}; "
                f"known: {', '.join(sorted(GLM_MODIFIERS))}"
            )
        if "firth" in modifiers and "no-firth" in modifiers:
            raise InputError("--glm firth and no-firth exclude each other")
        if any(a in self.analyses for a in ("glm", "assoc", "model")) and not pheno:
            raise InputError("--glm, --assoc and --model need --pheno-name (the phenotype column(s) to test)")
        if ("assoc" in self.analyses or "model" in self.analyses) and len(pheno) != 1:
            raise InputError("--assoc and --model test one case/control phenotype: give exactly one --pheno-name")
        qc_filters(self)  # InputError naming a bad --mind/--geno/--hwe/--maf
        k = pca_components(self)
        if ("pca" in self.analyses) != bool(k):
            raise InputError("--pca needs the number of components, e.g. --pca 10")
        if mode.adds_noise and (k or any(o in self.options for o in QC_OPTIONS)):
            raise InputError(
                "--pca and the QC filters (--mind, --geno, --hwe, --maf) cannot run under --privacy dp in this "
                "version (their rounds would spend budget the job does not account for)"
            )
        if covar and "glm" not in self.analyses:
            raise InputError("--covar-name is used by --glm only")
        if len(set(self.sites)) != len(self.sites):
            raise InputError("a site is listed twice in --sites")
        if not 0 <= self.block_size <= MAX_BLOCK_SIZE:
            raise InputError(f"block size must be between 1 and {MAX_BLOCK_SIZE} (0: each site's default)")
        if len(covar) > MAX_COVARS:
            raise InputError(f"--covar-name names {len(covar)} columns; at most {MAX_COVARS}")
        ordered = tuple(a for a in KNOWN_ANALYSES if a in self.analyses)
        return replace(
            self,
            analyses=ordered,
            pheno_names=pheno,
            covar_names=covar,
            purpose=purpose,
            privacy=canonical_mode(self.privacy),
        )

    def to_json(self) -> dict[str, Any]:
        d = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}
        d["options"] = dict(self.options)
        return d

    def signing_bytes(self) -> bytes:
        """What the analyst signs and every site verifies: the whole spec (analyses, columns,
        purpose, sites, privacy mode and its parameters, the Paillier key, QC thresholds) as
        canonical JSON, after a domain-separation label."""
        return SPEC_SIGNATURE_LABEL + json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> JobSpec:
        tuples = {"analyses", "pheno_names", "covar_names", "sites"}
        return cls(**{k: (tuple(v) if k in tuples else v) for k, v in d.items() if k in cls.__dataclass_fields__})


# --- QC and PCA options ----------------------------------------------------------------------


def _unit_option(spec: JobSpec, key: str) -> float | None:
    raw = spec.options.get(key)
    if raw is None:
        return None
    try:
        value = float(raw.split()[0]) if raw.split() else math.nan
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:
        raise InputError(f"--{key} takes a number between 0 and 1, got {shown(raw)}")
    return value


def qc_filters(spec: JobSpec) -> tuple[float | None, VariantQc, bool]:
    """(--mind threshold, the variant filters, whether --hwe tests controls only) from a spec's options."""
    mind = _unit_option(spec, "mind")
    hwe_words = spec.options.get("hwe", "").split()
    bad = [w for w in hwe_words[1:] if w not in HWE_MODIFIERS]
    if bad:
        raise InputError(f"unknown --hwe modifier {shown(bad[0])}; known: {', '.join(sorted(HWE_MODIFIERS))}")
    controls = "controls" in hwe_words[1:]
    if controls and len(expand_names(spec.pheno_names)) != 1:
        raise InputError("--hwe ... controls tests the controls of one case/control phenotype: give one --pheno-name")
    qc = VariantQc(geno=_unit_option(spec, "geno"), hwe=_unit_option(spec, "hwe"), maf=_unit_option(spec, "maf"))
    return mind, qc, controls


def pca_components(spec: JobSpec) -> int:
    """--pca K from the spec's options (0 when absent)."""
    raw = spec.options.get("pca")
    if raw is None:
        return 0
    if not raw.isdigit() or not 1 <= int(raw) <= pca.MAX_PCS:
        raise InputError(f"--pca takes a number of components from 1 to {pca.MAX_PCS}, got {shown(raw)}")
    return int(raw)


def required_phenotypes(spec: JobSpec) -> tuple[str, ...]:
    """The phenotype columns a participant must have to take part (``--require-pheno``): the job's
    ``--pheno-name`` columns, the columns named (``--require-pheno QT,CC``, as plink2's
    ``--require-pheno NAMES``), or none."""
    required = spec.options.get("require_pheno")
    if required is None:
        return ()
    return tuple(spec.pheno_names) if required == "1" else tuple(required.split(","))


def fitted_parameters(spec: JobSpec) -> int:
    """Parameters a job's regressions fit per variant (intercept, genotype, covariates; ``--glm``),
    0 for a job without regressions: what a site's ``max_params_ratio`` limits."""
    return 2 + len(spec.covar_names) if "glm" in spec.analyses else 0


def checks_pooled_coding(spec: JobSpec) -> bool:
    """Whether the job's analyses check a phenotype's case/control coding over the pooled data
    (``--glm``, ``--assoc``, ``--model``), so a site may read 0 as missing under ``--require-pheno``."""
    return bool({"glm", "assoc", "model"} & set(spec.analyses))


def derived_columns(spec: JobSpec) -> frozenset[str]:
    """Covariates the job computes itself (``PC1``… of its own --pca), which no sample table needs."""
    k = pca_components(spec)
    return frozenset(c for c in spec.covar_names if c in pca.pc_names(k))


def check_round(spec: JobSpec, computation: str, params: Mapping[str, str]) -> None:
    """Refuse a round the analyst's signed spec does not ask for (a deviating coordinator).

    Each site checks every round against the job it accepted: the computation belongs to one of
    the spec's analyses, and its parameters (the ``--mind`` threshold, the phenotype of
    ``--assoc`` / ``--hwe … controls``, the phenotypes and covariates of ``--glm``, the PC names
    of ``--pca``) are the spec's own. What the coordinator still chooses (which variants, Newton
    iterates, PCA subspaces) is bound into the signed key exchange with the round's digest, so all
    sites compute the same round or none is unmasked.

    Raises
    ------
    ProtocolError
        naming the computation and the parameter that does not match the job
    """

    def refuse(why: str) -> ProtocolError:
        return ProtocolError(f"round {computation!r} does not belong to the job the analyst signed: {why}")

    analyses = set(spec.analyses)
    phenos, covars = set(spec.pheno_names), set(spec.covar_names)
    mind, qc, controls = qc_filters(spec)
    if computation == "allele_counts":
        if not analyses & {*allele.ANALYSES, "pca"}:
            raise refuse("the job has no --freq/--geno-counts/--hardy/--missing/--pca")
        expected: dict[str, str] = {}
    elif computation == "sample_missing":
        if mind is None:
            raise refuse("the job has no --mind")
        try:
            if float(params.get("mind", "nan")) != mind:
                raise refuse("its --mind threshold is not the job's")
        except ValueError:
            raise refuse("its --mind threshold is not a number") from None
        expected = {"mind": params.get("mind", "")}
    elif computation == "qc_counts":
        if not qc.active:
            raise refuse("the job has no --geno/--hwe/--maf")
        expected = {"controls": spec.pheno_names[0]} if controls else {}
    elif computation in ("pca_multiply", "pca_scores"):
        if "pca" not in analyses:
            raise refuse("the job has no --pca")
        names = [n for n in params.get("names", "").split(",") if n]
        if computation == "pca_scores" and not set(names) <= derived_columns(spec):
            raise refuse("its PC names are not covariates of the job")
        expected = {"names": params.get("names", "")} if computation == "pca_scores" else {}
    elif computation == "assoc_counts":
        if not analyses & {"assoc", "model"} or params.get("pheno") != spec.pheno_names[0]:
            raise refuse("the job has no --assoc/--model on this phenotype")
        expected = {"pheno": spec.pheno_names[0]}
    elif computation in ("glm_describe", "glm_linear", "glm_logistic"):
        if "glm" not in analyses:
            raise refuse("the job has no --glm")
        try:
            if computation == "glm_describe":
                if not set(json.loads(params.get("columns", "[]"))) <= phenos | covars:
                    raise refuse("it describes columns the job does not name")
            else:
                for d in json.loads(params.get("spec", "[]")):
                    if d["name"] not in phenos or not set(d["covars"]) | set(d["mask_covars"]) <= covars:
                        raise refuse("its phenotype or covariates are not the job's")
        except (ValueError, KeyError, TypeError):
            raise refuse("its parameters cannot be read") from None
        expected = {k: params[k] for k in ("columns", "spec") if k in params}
    else:
        raise refuse("unknown computation")
    if dict(params) != expected:
        raise refuse(f"unexpected parameters {sorted(set(params) ^ set(expected))}")


# --- names ---------------------------------------------------------------------------------

_RANGE_RE = re.compile(r"^([A-Za-z_.]*?)(\d+)-\1(\d+)$")


def expand_names(names: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Expand plink2-style ranges: ``("AGE", "PC1-PC3")`` -> ``("AGE", "PC1", "PC2", "PC3")``."""
    out: list[str] = []
    for name in names:
        m = _RANGE_RE.match(name)
        if m:
            prefix, lo, hi = m.group(1), int(m.group(2)), int(m.group(3))
            if hi < lo:
                raise InputError(f"column range {shown(name)} runs backwards")
            if hi - lo >= MAX_COVARS:
                raise InputError(f"column range {shown(name)} names more than {MAX_COVARS} columns")
            out.extend(f"{prefix}{i}" for i in range(lo, hi + 1))
        else:
            out.append(name)
    if len(set(out)) != len(out):
        raise InputError(f"a column is named twice in {', '.join(names)}")
    return tuple(out)


# --- site side -----------------------------------------------------------------------------


def _check_dp(spec: JobSpec) -> None:
    bad = [a for a in spec.analyses if a not in DP_ANALYSES]
    if bad:
        raise InputError(
            f"{', '.join('--' + a for a in bad)} cannot run under --privacy dp in this version (its sums are "
            f"real-valued and need clipping bounds); available under dp: {', '.join('--' + a for a in DP_ANALYSES)}"
        )
    for key, flag, lo, hi in (("dp_epsilon", "--epsilon", 0.0, 100.0), ("dp_delta", "--delta", 0.0, 0.01)):
        raw = spec.options.get(key)
        if raw is None:
            raise InputError(f"--privacy dp needs {flag} (e.g. --epsilon 1 --delta 1e-6)")
        try:
            value = float(raw)
        except ValueError:
            raise InputError(f"{flag} must be a number, got {shown(raw)}") from None
        if not lo < value <= hi:
            raise InputError(f"{flag} must be in ({lo:g}, {hi:g}], got {raw}")


# --- coordinator side ------------------------------------------------------------------------


class AlleleAnalysis:
    """``--freq --geno-counts --hardy --missing``: one round of genotype counts."""

    def __init__(self, analyses: tuple[str, ...]):
        self.analyses = analyses
        self.stats: allele.AlleleStats | None = None

    def next_round(self, sums: Mapping[str, np.ndarray] | None) -> RoundPlan | None:
        if sums is None:
            return RoundPlan("allele_counts")
        self.stats = allele.finish(sums)
        return None

    def write(self, out_prefix: Path, variants: VariantTable) -> list[Path]:
        assert self.stats is not None, "write() before the counts round finished"
        return [Path(p) for p in allele.write_reports(out_prefix, variants, self.stats, self.analyses)]

    def log_lines(self) -> list[str]:
        return []


class MindAnalysis:
    """``--mind``: one round over every harmonized variant; each site drops its own participants whose
    missing-call rate exceeds the threshold (per-participant data never leaves the site)."""

    def __init__(self, threshold: float):
        self.threshold = threshold
        self.removed: int | None = None

    def next_round(self, sums: Mapping[str, np.ndarray] | None) -> RoundPlan | None:
        if sums is None:
            return RoundPlan("sample_missing", params={"mind": repr(self.threshold)})
        self.removed = int(np.asarray(sums["removed"]).sum())
        return None

    def write(self, out_prefix: Path, variants: VariantTable) -> list[Path]:
        return []

    def log_lines(self) -> list[str]:
        if self.removed is None:
            return []
        # each site reports its count rounded down to its policy's count_granularity (fedstat.counts)
        return [
            f"--mind {self.threshold:g}: {self.removed} participants removed due to missing genotype data "
            "(sites round their counts down to their count_granularity)"
        ]


class KeptVariants:
    """The harmonized variants the QC round kept (shared by the later steps of a job); None = all."""

    def __init__(self) -> None:
        self.index: np.ndarray | None = None


class QcAnalysis:
    """``--geno``, ``--hwe``, ``--maf``: one round of pooled genotype counts, then plink2's filters."""

    def __init__(self, qc: VariantQc, kept: KeptVariants, *, controls: str = ""):
        self.qc, self.kept, self.controls = qc, kept, controls
        self.result: QcResult | None = None

    def next_round(self, sums: Mapping[str, np.ndarray] | None) -> RoundPlan | None:
        if sums is None:
            return RoundPlan("qc_counts", params={"controls": self.controls} if self.controls else {})
        counts = {k: np.asarray(sums[k]) for k in allele.SUM_NAMES}
        if not self.controls:
            result = variant_filter(self.qc, **counts)
        else:  # plink2's order, geno then hwe then maf; hwe on the controls' counts
            controls = {k: np.asarray(sums[f"control_{k}"]) for k in allele.SUM_NAMES}
            geno = variant_filter(VariantQc(geno=self.qc.geno), **counts)
            hwe_fail = ~variant_filter(VariantQc(hwe=self.qc.hwe), **controls).keep & geno.keep
            maf = variant_filter(VariantQc(maf=self.qc.maf), **counts)
            removed = {"geno": geno.removed["geno"]} if self.qc.geno is not None else {}
            removed["hwe"] = int(hwe_fail.sum())
            if self.qc.maf is not None:
                removed["maf"] = int((~maf.keep & geno.keep & ~hwe_fail).sum())
            result = QcResult(keep=geno.keep & ~hwe_fail & maf.keep, removed=removed)
        self.result = result
        self.kept.index = np.flatnonzero(result.keep).astype(np.int64)
        return None

    def write(self, out_prefix: Path, variants: VariantTable) -> list[Path]:
        return []

    def log_lines(self) -> list[str]:
        if self.result is None:
            return []
        lines = self.result.log_lines()
        if self.controls and "hwe" in self.result.removed:
            lines[list(self.result.removed).index("hwe")] += f" (in the controls of {self.controls})"
        return lines


class SubsetAnalysis:
    """Runs ``inner`` on the variants QC kept: its rounds cover (subsets of) them and it writes them only."""

    def __init__(self, inner: JobAnalysis, kept: KeptVariants):
        self.inner, self.kept = inner, kept

    def next_round(self, sums: Mapping[str, np.ndarray] | None) -> RoundPlan | None:
        plan = self.inner.next_round(sums)
        if plan is None or self.kept.index is None:
            return plan
        index = self.kept.index if plan.variants is None else self.kept.index[np.asarray(plan.variants)]
        return replace(plan, variants=index)

    def write(self, out_prefix: Path, variants: VariantTable) -> list[Path]:
        return self.inner.write(out_prefix, variants if self.kept.index is None else variants.take(self.kept.index))

    def log_lines(self) -> list[str]:
        return self.inner.log_lines()


class CompositeAnalysis:
    """Runs several analyses one after another; their rounds follow each other."""

    def __init__(self, parts: list[JobAnalysis]):
        if not parts:
            raise InputError("no analysis to run")
        self.parts = parts
        self._i = 0

    def next_round(self, sums: Mapping[str, np.ndarray] | None) -> RoundPlan | None:
        plan = self.parts[self._i].next_round(sums)
        while plan is None and self._i + 1 < len(self.parts):
            self._i += 1
            plan = self.parts[self._i].next_round(None)
        return plan

    def write(self, out_prefix: Path, variants: VariantTable) -> list[Path]:
        return [f for part in self.parts for f in part.write(out_prefix, variants)]

    def log_lines(self) -> list[str]:
        return [line for part in self.parts for line in part.log_lines()]


class GwasOutputs:
    """No rounds of its own: after --glm / --assoc finish, writes GWAS-SSF, plots and the HTML report."""

    def __init__(self, ctx: JobContext, glm_job: glm.GlmJob | None, assoc_job: assoc.AssocAnalysis | None, pheno: str):
        self.ctx, self.glm_job, self.assoc_job, self.pheno = ctx, glm_job, assoc_job, pheno

    def next_round(self, sums: Mapping[str, np.ndarray] | None) -> RoundPlan | None:
        return None

    def write(self, out_prefix: Path, variants: VariantTable) -> list[Path]:
        files: list[Path] = []
        sections = []
        if self.glm_job is not None:
            notes = self.glm_job.log_lines()
            for res in self.glm_job.results.values():
                written, section = glm_outputs(out_prefix, variants, res, self.ctx, notes)
                files += written
                sections.append(section)
        if self.assoc_job is not None:
            names = [
                f"{out_prefix.name}.{ext}"
                for ext, on in (("assoc", self.assoc_job.assoc), ("model", self.assoc_job.model))
                if on
            ]
            written, section = assoc_section(out_prefix, variants, self.pheno, self.assoc_job.result(variants), names)
            files += written
            sections.append(section)
        files.append(write_report(out_prefix, self.ctx, sections, []))
        return files

    def log_lines(self) -> list[str]:
        """Genomic inflation λGC of each ADD test (the median χ²₁ of its p-values / 0.4549)."""
        from fedstat.report.plots import lambda_gc  # noqa: PLC0415 - matplotlib only when reporting

        lines = []
        if self.glm_job is not None:
            for res in self.glm_job.results.values():
                log10_p = res.log_p[:, 0] / math.log(10.0)
                lam = lambda_gc(np.exp(res.log_p[:, 0]), log10_p)
                covars = ", ".join(res.covariates) or "no covariates"
                lines.append(f"λGC {res.pheno} (--glm ADD, {covars}): {lam:.4f}")
        return lines


def plan_job(spec: JobSpec, ctx: JobContext | None = None) -> JobAnalysis:
    """The coordinator-side analysis for a validated spec (``ctx``: facts for the HTML report).

    Steps run in plink2's order: ``--mind`` (at each site), the variant filters on pooled
    counts, then the analyses over the variants kept: allele reports, ``--pca`` (whose PCs later
    steps may use as covariates), ``--glm`` / ``--assoc`` / ``--model`` and the GWAS outputs.
    """
    ctx = ctx or JobContext(spec=spec.to_json())
    parts: list[JobAnalysis] = []
    mind, qc, controls = qc_filters(spec)
    if mind is not None:
        parts.append(MindAnalysis(mind))
    kept = KeptVariants()
    if qc.active:
        parts.append(QcAnalysis(qc, kept, controls=spec.pheno_names[0] if controls else ""))
    allele_flags = tuple(a for a in spec.analyses if a in allele.ANALYSES)
    if allele_flags:
        parts.append(SubsetAnalysis(AlleleAnalysis(allele_flags), kept))
    k = pca_components(spec)
    if k:
        scores = tuple(c for c in spec.covar_names if c in derived_columns(spec))
        n_samples = sum(n for _, n in ctx.sites)
        parts.append(SubsetAnalysis(pca.PcaAnalysis(k, scores=scores, n_samples=n_samples), kept))
    glm_job = assoc_job = None
    if "glm" in spec.analyses:
        mods = {m for m in spec.options.get("glm", "").split(",") if m}
        if "show-covar" in mods:
            mods.discard("show-covar")
        else:
            mods.add("hide-covar")  # fedstat's default: covariate rows hidden
        glm_job = glm.plan_glm(spec.pheno_names, spec.covar_names, frozenset(mods))
        parts.append(SubsetAnalysis(glm_job, kept))
    if "assoc" in spec.analyses or "model" in spec.analyses:
        assoc_job = assoc.plan_assoc(
            spec.pheno_names[0],
            assoc="assoc" in spec.analyses,
            model="model" in spec.analyses,
            min_cell_count=ctx.min_cell_count,
        )
        parts.append(SubsetAnalysis(assoc_job, kept))
    if glm_job is not None or assoc_job is not None:
        parts.append(SubsetAnalysis(GwasOutputs(ctx, glm_job, assoc_job, spec.pheno_names[0]), kept))
    return CompositeAnalysis(parts)
