"""A site's decision on a job offer: allowed analysis, privacy mode, columns, consent, cohort size.

Returns the cohort (which genotyped samples take part) or raises
:class:`~fedstat.errors.PolicyRefused` / :class:`~fedstat.errors.InputError` with the reason
the analyst will see. Reasons name settings and column names, never participants.

Consent: when the sample table has a ``consent`` column or the dataset declares
``consent_default``, only participants whose DUO consent matches the job's ``--purpose`` take
part (:mod:`fedstat.consent`; a job that declares no purpose is general research use,
GRU). A participant once marked WITHDRAWN is recorded in the site's withdrawal registry and never
included again. Without any consent information every participant of the table takes part.

Sample sets: a job naming ``--sample-set NAME`` runs over the members of the set this site defines
under that name for the dataset (``sample_sets`` in ``site.toml``), intersected with the
consent-matching participants and ``--require-pheno`` / ``--require-covar``. The consent step still
runs over the whole table (it records every withdrawal), so the consent counts a job reports
describe the dataset, not the set. A site that defines no such set refuses, listing the sets it
defines. The cohort then passes the release gate and ledger like any other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedstat.config import SitePolicy
from fedstat.consent import (
    ConsentSummary,
    DiseaseOntology,
    WithdrawalRegistry,
    parse_purpose,
    select_participants,
)
from fedstat.counts import coarsen
from fedstat.data.categories import MAX_LEVELS, natural_sorted
from fedstat.data.dataset import Dataset
from fedstat.data.samples import text_column_message
from fedstat.errors import InputError, PolicyRefused
from fedstat.jobs import (
    JobSpec,
    checks_pooled_coding,
    derived_columns,
    dosage_refusal,
    fitted_parameters,
    required_phenotypes,
)
from fedstat.privacy.modes import get_mode

from .gate import count_words


@dataclass(frozen=True)
class ConsentSetup:
    """What the site's consent step needs: the dataset's default code, the registry, the ontology."""

    registry_path: Path
    default: str = ""
    ontology: DiseaseOntology | None = None
    cleared: tuple[str, ...] = ()


@dataclass(frozen=True)
class Decision:
    """An accepted job's cohort: sorted genotype columns, and the consent counts (no IDs)."""

    members: np.ndarray
    consent: ConsentSummary | None
    zero_dropped: dict[str, int] | None = None  # --require-pheno: participants left out for a 0 (case/control missing)
    # categorical covariate -> the categories its cohort holds (each by >= min_group participants)
    levels: dict[str, tuple[str, ...]] = field(default_factory=dict)


def check_access(spec: JobSpec, policy: SitePolicy, dataset: str, analyst: str, roles: frozenset[str]) -> None:
    """The site's ``[[policy.access]]`` rules: some rule naming the analyst (or one of the roles the
    coordinator granted them) for ``dataset`` must cover every analysis of the job."""
    if not policy.access:
        return
    rules = [r for r in policy.access if r.matches(analyst, roles, dataset)]
    if not rules:
        raise PolicyRefused(f"analyst {analyst} may not run jobs on dataset {dataset} at this site (policy access)")
    uncovered = [a for a in spec.analyses if not any(r.covers(a) for r in rules)]
    if uncovered:
        raise PolicyRefused(
            f"analyst {analyst} may not run {', '.join('--' + a for a in uncovered)} on dataset {dataset} at this "
            "site (policy access)"
        )


def decide(spec: JobSpec, policy: SitePolicy, dataset: Dataset, consent: ConsentSetup | None = None) -> Decision:
    """The participants in the job's cohort (sorted genotype columns) and the consent counts.

    Raises
    ------
    PolicyRefused
        analysis or privacy mode not allowed here (or weaker than ``weakest_privacy``), the cohort
        is smaller than ``min_cohort``, ``--glm`` has more parameters than ``max_params_ratio``
        of the cohort allows, or the job's ``--sample-set`` is not a set this site defines for the
        dataset
    InputError
        a phenotype or covariate the job names is not a column of this site's sample table
    """
    refused = [a for a in spec.analyses if a not in policy.allowed_analyses]
    if refused:
        raise PolicyRefused(
            f"analysis {', '.join('--' + a for a in refused)} is not allowed by this site's policy "
            f"(allowed: {', '.join(policy.allowed_analyses)})"
        )
    if spec.privacy not in policy.allowed_privacy:
        raise PolicyRefused(
            f"privacy mode {spec.privacy!r} is not accepted here (accepted: {', '.join(policy.allowed_privacy)})"
        )
    if not policy.accepts_privacy(spec.privacy):
        raise PolicyRefused(
            f"privacy mode {spec.privacy!r} is weaker than this site's weakest accepted mode "
            f"{policy.weakest_privacy!r} (order: none < secagg = paillier < dp = paillier,dp)"
        )
    if dataset.genotypes.has_dosages:
        why = dosage_refusal(spec)
        if why is not None:
            raise PolicyRefused(
                f"dataset {dataset.name} holds imputed dosages: {why}; leave that analysis out, or point a "
                "dataset at a hard-call copy (plink2 --pfile … --make-pgen erase-dosage)"
            )
    columns = set(dataset.samples.numeric)  # text columns (consent, words) are never phenotypes
    derived = derived_columns(spec)  # PC1… of the job's own --pca are computed at the site
    categorical = categorical_covariates(spec, dataset)
    for kind, names in (("phenotype", spec.pheno_names), ("covariate", spec.covar_names)):
        text = [n for n in names if n in dataset.samples.text and n not in derived and n not in categorical]
        if text:
            raise InputError(
                f"{kind} " + text_column_message(text[0], f"{dataset.samples.path.name} of dataset {dataset.name}")
            )
        unknown = [n for n in names if n not in columns and n not in derived and n not in categorical]
        if unknown:
            raise InputError(
                f"unknown {kind} {', '.join(repr(n) for n in unknown)} in {dataset.samples.path.name} of dataset "
                f"{dataset.name}; its columns are: {', '.join(sorted(columns)) or '(none)'}"
            )
    members_of_set = sample_set_rows(spec, dataset)
    summary = None
    rows = np.arange(dataset.n_samples)
    cells = dataset.samples.text.get("consent")
    if consent is not None and (cells is not None or consent.default):
        selection = select_participants(
            dataset.samples.iid,
            cells if cells is not None else ("",) * dataset.n_samples,
            purpose=parse_purpose(spec.purpose or "GRU"),
            registry=WithdrawalRegistry(consent.registry_path),
            default=consent.default or None,
            ontology=consent.ontology,
            cleared=consent.cleared,
            lines=dataset.samples.lines or None,
            source=dataset.samples.path,
        )
        rows = np.flatnonzero(selection.mask)
        summary = selection.summary
    if members_of_set is not None:
        rows = np.intersect1d(rows, members_of_set)
    rows, zero_dropped = required_rows(spec, dataset, rows)
    cohort = np.sort(dataset.genotype_index[rows])
    noisy = get_mode(spec.privacy).adds_noise
    if len(cohort) < policy.min_cohort:
        raise PolicyRefused(
            f"the job's cohort at this site ({count_words(policy, len(cohort), noisy=noisy)}) is below this site's "
            "minimum of "
            f"{policy.min_cohort} participants (policy min_cohort)"
        )
    levels = {name: category_levels(name, cats[rows], policy) for name, cats in categorical.items()}
    # each categorical covariate fits one parameter per category but one
    n_params = fitted_parameters(spec) + sum(max(0, len(v) - 2) for v in levels.values())
    if n_params:
        # decided on the coarsened count: the analyst chooses n_params, so a decision on the exact
        # count would tell it to within one participant (a --pca K stepped one PC at a time)
        if n_params > policy.max_params_ratio * coarsen(len(cohort), policy.granularity):
            raise PolicyRefused(
                f"--glm fits {n_params} parameters; this site's cohort for the job "
                f"({count_words(policy, len(cohort), noisy=noisy)}) "
                f"allows fewer (policy max_params_ratio {policy.max_params_ratio:g}: parameters per participant)"
            )
    return Decision(members=cohort, consent=summary, zero_dropped=zero_dropped, levels=levels)


def sample_set_rows(spec: JobSpec, dataset: Dataset) -> np.ndarray | None:
    """The sample-table rows of the job's ``--sample-set`` at this site (sorted), or None for a job
    that names no set. A set this site does not define refuses the job, naming the ones it does
    (operator-chosen names, which the site also states in its disclosure policy)."""
    name = spec.options.get("sample_set")
    if name is None:
        return None
    rows = dataset.sample_sets.get(name)
    if rows is None:
        defined = ", ".join(dataset.sample_sets) or "none"
        raise PolicyRefused(
            f"this site defines no sample set {name!r} for dataset {dataset.name} (its sample sets: {defined}); "
            "a set is named by each site's operator, and its members are that site's own"
        )
    return rows


def categorical_covariates(spec: JobSpec, dataset: Dataset) -> dict[str, np.ndarray]:
    """The job's covariates that are categorical in this site's table: each one's categories,
    [array, shape: (n_table_rows,), dtype object], ``""`` where missing (``--glm`` reads them)."""
    out = {}
    for name in spec.covar_names:
        if name in dataset.samples.text and name.lower() != "consent":
            out[name] = np.asarray(dataset.samples.categorical(name), dtype=object)
    return out


def category_levels(name: str, cats: np.ndarray, policy: SitePolicy) -> tuple[str, ...]:
    """The categories the cohort holds for covariate ``name`` (natural order), each held by at least
    ``min_group`` of its participants; a job whose cohort holds a rarer one is refused.

    The levels leave the site (the coordinator needs their names for the indicator columns
    ``COL=LEVEL``), so a category held by a few participants is never named: its members' sums
    would single them out, and its name could (a rare ancestry, a village). The refusal names
    neither the category nor how many hold it.
    """
    present = cats[cats != ""]
    found, counts = np.unique(present, return_counts=True) if present.size else (np.zeros(0, object), np.zeros(0))
    if (counts < policy.min_group).any():
        raise PolicyRefused(
            f"covariate {name}: a category is held by fewer than {policy.min_group} of this job's participants at "
            "this site (policy min_group); their sums would single them out, so the job is refused without naming "
            "it. Merge rare categories into a larger one (or write NONE for them) in the sample table, or leave "
            f"{name} out of --covar-name"
        )
    if len(found) > MAX_LEVELS:
        raise InputError(f"covariate {name} has more than {MAX_LEVELS} categories here: is it a category?")
    return natural_sorted(str(v) for v in found)


def required_rows(spec: JobSpec, dataset: Dataset, rows: np.ndarray) -> tuple[np.ndarray, dict[str, int]]:
    """The sample-table ``rows`` left after ``--require-pheno`` / ``--require-covar``, and per
    phenotype how many were left out for a 0.

    plink2 leaves out samples missing a required phenotype or covariate before anything else. A
    covariate is missing when NA (or -9). A phenotype is missing when NA, and also when 0 if it is
    case/control; that is decided over the pooled data (every value 0, 1, 2 or missing), which a
    site cannot see, so a site whose own values are all 0, 1, 2 or missing reads 0 as missing and
    reports how many it left out (``Cohort.zero_dropped``): ``--glm``'s first round refuses the
    job when the pooled phenotype turns out quantitative, so no 0 is ever dropped where plink2
    would keep it.
    """
    derived = derived_columns(spec)
    keep = np.ones(len(rows), dtype=bool)
    zero_dropped: dict[str, int] = {}
    for name in required_phenotypes(spec):
        v = np.asarray(dataset.samples.column(name))[rows]
        present = ~np.isnan(v)
        if np.isin(v[present], (0.0, 1.0, 2.0)).all():
            zero_dropped[name] = int(np.count_nonzero(keep & (v == 0.0)))
            present &= v != 0.0
        keep &= present
    # a 0 is missing only if the phenotype is case/control over the pooled data, which --glm,
    # --assoc and --model check for the phenotypes they analyse, and nothing checks for the others
    unchecked = [
        n for n, k in zero_dropped.items() if k and (n not in spec.pheno_names or not checks_pooled_coding(spec))
    ]
    if unchecked:
        raise InputError(
            f"--require-pheno: phenotype {unchecked[0]} holds 0 values here, which are missing only if it is "
            "case/control over the pooled data, and this job does not analyse it with --glm/--assoc/--model to "
            "check that; write missing values as NA in the sample table"
        )
    zero_dropped = {n: k for n, k in zero_dropped.items() if n in spec.pheno_names}
    if spec.options.get("require_covar") == "1":
        categorical = categorical_covariates(spec, dataset)
        for name in spec.covar_names:
            if name in categorical:
                keep &= categorical[name][rows] != ""
            elif name not in derived:
                keep &= ~np.isnan(np.asarray(dataset.samples.column(name))[rows])
    return rows[keep], zero_dropped
