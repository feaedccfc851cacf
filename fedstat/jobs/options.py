"""What a job's options mean: the analyses, modifiers and limits a spec may name, and the
readers that turn its option text into thresholds (``--mind``, ``--geno``, ``--hwe``, ``--maf``,
``--pca``, ``--require-pheno``, ``--epsilon``/``--delta``) and column names (plink2's ranges).

Both sides read a spec through these functions: the coordinator to plan the job
(:mod:`fedstat.jobs.planner`), every site to check its rounds (:mod:`fedstat.jobs.checks`) and
its policy.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

from fedstat.errors import InputError, shown
from fedstat.formats.columns import freq_columns, glm_columns
from fedstat.privacy.modes import get_mode
from fedstat.stats import allele, pca
from fedstat.stats.adjust import AdjustOptions
from fedstat.stats.qc import VariantQc

if TYPE_CHECKING:
    from fedstat.jobs.spec import JobSpec

__all__ = [
    "DP_ANALYSES",
    "GLM_MODIFIERS",
    "HWE_MODIFIERS",
    "KNOWN_ANALYSES",
    "KNOWN_OPTIONS",
    "NAME_RE",
    "QC_OPTIONS",
    "check_dp",
    "checks_pooled_coding",
    "derived_columns",
    "dosage_refusal",
    "reads_dosages",
    "expand_names",
    "fitted_parameters",
    "freq_cols",
    "freq_machr2",
    "glm_adjust",
    "glm_ci",
    "glm_cols",
    "pca_components",
    "qc_filters",
    "required_phenotypes",
    "seeded_randomness",
]

#: Analyses this version runs, as plink2 (or PLINK 1.9: assoc, model) flag names without dashes.
KNOWN_ANALYSES: tuple[str, ...] = (*allele.ANALYSES, "pca", "glm", "assoc", "model")
#: Analyses available under differential privacy: their rounds' computations declare DP
#: sensitivities (fedstat.computations); --glm and --pca sums are real-valued and need clipping bounds
DP_ANALYSES = ("freq", "geno-counts", "hardy", "missing", "assoc", "model")
#: --glm modifiers as plink2 spells them, plus fedstat's ``show-covar`` (covariate rows are
#: hidden by default, as with plink2's ``hide-covar``).
GLM_MODIFIERS = frozenset(
    {"hide-covar", "show-covar", "firth", "no-firth", "firth-fallback", "allow-no-covars", "no-x-sex"}
)
#: A site, dataset, column or output name.
NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")
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
    "mach_r2_filter": 60,  # plink2's --mach-r2-filter: "min max" (or "min": max 2)
    "pca": 40,
    # "1": plink2's --require-pheno over the job's --pheno-name columns; or the phenotype columns
    # named (comma-separated), as plink2's --require-pheno NAMES
    "require_pheno": 1000,
    "require_covar": 1,  # "1": plink2's --require-covar over the job's --covar-name columns
    "ci": 40,  # --glm's --ci level, e.g. "0.95"
    "adjust": 200,  # --glm's --adjust: its modifiers separated by spaces ("" for none)
    # --covar-variance-standardize: "1" (every quantitative covariate) or the covariates named, comma-separated
    "covar_variance_standardize": 20_000,
    # --glm cols= and --freq cols=: plink2's column set descriptor (the text after "cols="), e.g.
    # "+a1freq,+a1freqcc"; kept out of the comma-separated "glm" modifiers it would split
    "glm_cols": 400,
    "freq_cols": 400,
    # variant selection (fedstat.jobs.selection), applied to the harmonized variants before any round
    "split_par": 40,  # plink2's --split-par: a build code or "bp1 bp2" (fedstat.jobs.par)
    "chr": 1000,
    "not_chr": 1000,
    "from_bp": 20,
    "to_bp": 20,
    # --extract/--exclude: variant IDs separated by spaces; 2 x 2 MB keeps the signed spec (sent whole
    # in one gRPC message of at most 8 MiB, with the analyst's certificate) well within bounds
    "extract": 2_000_000,
    "exclude": 2_000_000,
    "snps_only": 20,  # "1" or "just-acgt"
    # --sample-set: the name of a sample set each site defines (its own members there); never a list of IDs
    "sample_set": 100,
}
#: Job options that filter samples or variants before the analyses (plink2's order of application).
QC_OPTIONS = ("mind", "geno", "hwe", "maf", "mach_r2_filter")
#: --hwe modifiers: ``controls`` (test the controls of the case/control --pheno-name only; PLINK
#: 1.9's default for case/control data). plink2's ``midp`` is not supported.
HWE_MODIFIERS = frozenset({"controls"})
#: Most phenotypes, covariates (after range expansion) and sites one job may name.
MAX_PHENOS, MAX_COVARS, MAX_SITES = 100, 1000, 1000
MAX_BLOCK_SIZE = 1 << 20


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
    qc = VariantQc(
        geno=_unit_option(spec, "geno"),
        hwe=_unit_option(spec, "hwe"),
        maf=_unit_option(spec, "maf"),
        mach_r2=mach_r2_bounds(spec),
    )
    return mind, qc, controls


def mach_r2_bounds(spec: JobSpec) -> tuple[float, float] | None:
    """``--mach-r2-filter min [max]``'s bounds (plink2: max 2 when only min is given); None when absent.

    Raises
    ------
    InputError
        For plink2's invalid arguments, for the bare flag (plink2 2.00a3.5 documents the defaults
        0.1 and 2 but then filters nothing, its maximum left unset: fedstat asks for the bounds
        rather than guess which was meant), and under a mode that adds noise (the squared dosage
        sums have no DP sensitivity).
    """
    raw = spec.options.get("mach_r2_filter")
    if raw is None:
        return None
    words = raw.split()
    if not words:
        raise InputError(
            "--mach-r2-filter needs its bounds: plink2 2.00a3.5 documents the defaults 0.1 and 2 but, given none, "
            "filters nothing; write --mach-r2-filter 0.1 2 for the documented filter"
        )
    if len(words) > 2:
        raise InputError(f"--mach-r2-filter takes at most two numbers (min, max), got {shown(raw)}")

    def number(word: str, which: str) -> float:
        try:
            value = float(word)
        except ValueError:
            value = math.nan
        if math.isnan(value) or value < 0 or (which == "max" and value == 0):
            must = " (must be nonnegative)" if which == "min" and value < 0 else ""
            raise InputError(f"Invalid --mach-r2-filter {which} argument {shown(word)}{must}")
        return value

    low = number(words[0], "min")
    high = number(words[1], "max") if len(words) == 2 else 2.0
    if high < low:
        raise InputError("--mach-r2-filter min argument cannot be larger than max argument")
    if get_mode(spec.privacy).adds_noise:
        raise InputError(
            f"--mach-r2-filter cannot run under --privacy {spec.privacy}: its squared dosage sums have no DP "
            "sensitivity in this version"
        )
    return low, high


def pca_components(spec: JobSpec) -> int:
    """--pca K from the spec's options (0 when absent)."""
    raw = spec.options.get("pca")
    if raw is None:
        return 0
    if not raw.isdigit() or not 1 <= int(raw) <= pca.MAX_PCS:
        raise InputError(f"--pca takes a number of components from 1 to {pca.MAX_PCS}, got {shown(raw)}")
    return int(raw)


def seeded_randomness(spec: JobSpec) -> dict[str, int]:
    """The seeds of a job's seeded randomness, for its provenance: the PCA's start subspace
    (fixed, so a resumed job replays identically). Masks, keys and DP noise are never seeded:
    they come from the OS's CSPRNG."""
    return {"pca_start_subspace": pca.START_SEED} if pca_components(spec) else {}


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


def reads_dosages(spec: JobSpec) -> bool:
    """Whether the job's ``--freq`` reads dosages (its allele round sends dosage sums): always, but
    under a mode that adds noise, whose sensitivities cover the genotype counts only."""
    return "freq" in spec.analyses and not get_mode(spec.privacy).adds_noise


def dosage_refusal(spec: JobSpec) -> str | None:
    """Why a dataset with imputed dosages cannot take part in the job, or None.

    plink2 computes ``--freq``, ``--glm`` and ``--pca``, and ``--maf`` through the frequencies, from
    dosages; the others from hard calls. fedstat reads dosages there too, except under a privacy
    mode that adds noise (its noise covers the counts): such a job is refused rather than computed
    from the hard calls.
    """
    if "freq" in spec.analyses and not reads_dosages(spec):
        return f"--freq under --privacy {spec.privacy} reads hard calls only in this version, and plink2 would use the dosages"
    if spec.options.get("maf") is not None and get_mode(spec.privacy).adds_noise:
        return (
            f"--maf under --privacy {spec.privacy} reads hard-call frequencies in this version, and plink2 filters "
            "on dosage frequencies"
        )
    return None


def derived_columns(spec: JobSpec) -> frozenset[str]:
    """Covariates the job computes itself (``PC1``… of its own --pca), which no sample table needs."""
    k = pca_components(spec)
    return frozenset(c for c in spec.covar_names if c in pca.pc_names(k))


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


def check_dp(spec: JobSpec) -> None:
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


def glm_ci(spec: JobSpec) -> float:
    """--ci's confidence level for --glm's L/U columns (0.0 when absent); plink2's range [0.01, 1)."""
    raw = spec.options.get("ci")
    if raw is None:
        return 0.0
    if "glm" not in spec.analyses:
        raise InputError("--ci adds confidence intervals to --glm's output: it needs --glm")
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0.01 <= value < 1.0:
        raise InputError(f"--ci takes a confidence level from 0.01 to below 1, e.g. --ci 0.95; got {shown(raw)}")
    return value


def glm_adjust(spec: JobSpec) -> AdjustOptions | None:
    """--adjust's modifiers (None when absent): computed at the coordinator from --glm's p-values."""
    raw = spec.options.get("adjust")
    if raw is None:
        return None
    if "glm" not in spec.analyses:
        raise InputError("--adjust corrects --glm's p-values for multiple testing: it needs --glm")
    return AdjustOptions.parse(raw.split())


def covar_standardize(spec: JobSpec) -> tuple[str, ...] | None:
    """``--covar-variance-standardize``'s covariates: None when absent, () for every quantitative
    covariate, else those named (plink2 ignores a name that is not a covariate, and so does fedstat)."""
    raw = spec.options.get("covar_variance_standardize")
    if raw is None:
        return None
    if "glm" not in spec.analyses:
        raise InputError("--covar-variance-standardize rescales --glm's covariates: it needs --glm")
    if raw == "1":
        return ()
    names = tuple(raw.split(","))
    bad = [n for n in names if not NAME_RE.match(n)]
    if bad or len(set(names)) != len(names):
        raise InputError(
            "--covar-variance-standardize takes distinct covariate names separated by commas, got "
            f"{shown(bad[0] if bad else raw)}"
        )
    return names


#: --glm columns that need sums a --glm job does not release, and why (fedstat refuses them rather
#: than add a release)
GLM_COLS_REFUSED = {
    "gcountcc": "plink2's case/control hard-call genotype counts (CASE_NON_A1_CT ... CTRL_HOM_A1_CT) need "
    "per-variant genotype counts by case status, which the --glm rounds do not release (they release "
    "dosage sums); fedstat refuses the column rather than add a release",
    "machr2": "MACH_R2 needs each variant's sum of squared dosages over the regression's samples, which the "
    "--glm rounds do not release",
}
#: --freq columns not computed in this version, and why
FREQ_COLS_REFUSED = {
    "minimac3r2": "MINIMAC3_R2 needs each variant's phased haplotype dosages (its sum of squared haplotype "
    "dosages), which no round releases; MACH_R2 (cols=+machr2) is available",
}


def glm_cols(spec: JobSpec) -> frozenset[str]:
    """--glm cols='s column set (plink2's default when absent); InputError naming --glm for a
    descriptor plink2 refuses or a column fedstat cannot compute from what the job releases."""
    raw = spec.options.get("glm_cols")
    if raw is not None and "glm" not in spec.analyses:
        raise InputError("--glm cols= selects --glm's output columns: it needs --glm")
    cols = glm_columns(raw, ci=glm_ci(spec))
    refused = [c for c in GLM_COLS_REFUSED if c in cols]
    if refused:
        raise InputError(f"--glm cols=: column {refused[0]} cannot be written: {GLM_COLS_REFUSED[refused[0]]}")
    modifiers = spec.options.get("glm", "").split(",")
    if "test" not in cols and "show-covar" in modifiers and spec.covar_names:
        # plink2 stops when it writes a file with more than one test per variant and no TEST column
        raise InputError(
            "--glm cols=: the 'test' column cannot be left out when covariate rows are shown (show-covar): "
            "plink2 stops with \"--glm's 'test' column cannot be omitted when results for multiple predictors "
            'are reported"'
        )
    return cols


def freq_cols(spec: JobSpec) -> frozenset[str]:
    """--freq cols='s column set (plink2's default when absent); InputError naming --freq for a
    descriptor plink2 refuses or a column this version does not compute."""
    raw = spec.options.get("freq_cols")
    if raw is not None and "freq" not in spec.analyses:
        raise InputError("--freq cols= selects --freq's output columns: it needs --freq")
    cols = freq_columns(raw)
    refused = [c for c in FREQ_COLS_REFUSED if c in cols]
    if refused:
        raise InputError(
            f"--freq cols=: column {refused[0]} cannot be written in this version: {FREQ_COLS_REFUSED[refused[0]]}"
        )
    if "machr2" in cols and not reads_dosages(spec):
        raise InputError(
            f"--freq cols=: column machr2 cannot be written under --privacy {spec.privacy}: its squared dosage sums "
            "have no DP sensitivity in this version"
        )
    return cols


def freq_machr2(spec: JobSpec) -> bool:
    """Whether the job's ``--freq`` writes MACH_R2 (``cols=+machr2``): its allele rounds then also
    release each variant's sum of squared dosages (``machr2=1``)."""
    return "freq" in spec.analyses and "freq_cols" in spec.options and "machr2" in freq_cols(spec)


def sex_chromosome_analyses(spec: JobSpec) -> tuple[list[str], list[str]]:
    """(the job's analyses that count chrX/chrY/MT as plink2 does, the others): the allele reports,
    and ``--glm`` unless ``--assoc``/``--model`` share its GWAS outputs."""
    glm = "glm" in spec.analyses and not {"assoc", "model"} & set(spec.analyses)
    reports = [a for a in spec.analyses if a in allele.ANALYSES or (a == "glm" and glm)]
    return reports, [a for a in spec.analyses if a not in reports]
