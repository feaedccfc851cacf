"""A site's check that a round belongs to the job the analyst signed (a deviating coordinator).

The site side of every computation, with what it declares, is in :mod:`fedstat.computations`;
here :func:`check_round` ties a round's computation and parameters to the signed spec.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from fedstat.data.categories import MAX_LEVELS, split_indicator
from fedstat.data.variants import SitePlan, VariantTable
from fedstat.errors import ProtocolError
from fedstat.jobs.options import derived_columns, freq_machr2, qc_filters, reads_dosages
from fedstat.jobs.spec import JobSpec
from fedstat.privacy.modes import get_mode
from fedstat.stats import allele

__all__ = ["check_round", "check_round_variants"]


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
        # with dosage sums only for a --freq that reads dosages (fedstat.jobs.reads_dosages) or a --pca
        # (its frequencies; never under a mode that adds noise), their squares only for MACH_R2
        dosage = reads_dosages(spec) or ("pca" in analyses and not get_mode(spec.privacy).adds_noise)
        expected: dict[str, str] = {"dosage": "1"} if params.get("dosage") == "1" and dosage else {}
        expected |= _machr2(spec, params, expected)
    elif computation == "allele_counts_sex":
        sex = params.get("sex", "")
        if not analyses & set(allele.ANALYSES):
            raise refuse("the job has no --freq/--geno-counts/--hardy/--missing")
        if sex not in ("male", "female") or (sex == "female" and "hardy" not in analyses):
            raise refuse("its sex is not one the job's allele reports count by (males; females for --hardy)")
        if mind is not None or qc.active or get_mode(spec.privacy).adds_noise:
            raise refuse("under --mind/--geno/--hwe/--maf or dp the job counts no variant by sex")
        dosage = sex == "male" and params.get("dosage") == "1" and reads_dosages(spec)
        expected = {"sex": sex} | ({"dosage": "1"} if dosage else {})
        expected |= _machr2(spec, params, expected)
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
        if qc.mach_r2 is not None:  # --mach-r2-filter: the cohort's dosage sums and their squares
            expected["machr2"] = "1"
        if qc.maf is not None and not get_mode(spec.privacy).adds_noise:  # --maf on dosage frequencies
            expected["dosage"] = "1"
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
    elif computation in ("glm_describe", "glm_linear", "glm_logistic", "glm_describe_males"):
        if "glm" not in analyses:
            raise refuse("the job has no --glm")
        try:
            if computation == "glm_describe_males":
                pass  # no parameters; its variants (chrX, chrY only) are checked by check_round_variants
            elif computation == "glm_describe":
                columns = json.loads(params.get("columns", "[]"))
                check_glm_columns([c for c in columns if c not in phenos], covars, refuse, "it describes columns")
                if len(set(columns)) != len(columns):
                    raise refuse("it names a column twice")
            else:
                specs = json.loads(params.get("spec", "[]"))
                # one regression per phenotype: two specs of one phenotype differing in their mask
                # would difference out the participants between the masks
                if len({d["name"] for d in specs}) != len(specs):
                    raise refuse("it names a phenotype twice")
                for d in specs:
                    d = _without_sex_covariate(d, refuse)
                    if d["name"] not in phenos or not set(d["mask_covars"]) <= covars:
                        raise refuse("its phenotype or covariates are not the job's")
                    check_glm_columns(d["covars"], covars, refuse, "its covariates include columns")
                    # an indicator's covariate masks its regression (NONE is missing)
                    splits = (split_indicator(c, covars) for c in d["covars"] if c not in covars)
                    if not {x[0] for x in splits if x is not None} <= set(d["mask_covars"]):
                        raise refuse("its indicator columns' covariates do not mask the regression")
                    scaled = "covar_variance_standardize" in spec.options
                    if "scale" in d and (not scaled or not {c for c, _, _ in d["scale"]} <= covars):
                        raise refuse("it rescales columns that are not the job's covariates")
        except (ValueError, KeyError, TypeError):
            raise refuse("its parameters cannot be read") from None
        expected = {k: params[k] for k in ("columns", "spec") if k in params}
    else:
        raise refuse("unknown computation")
    if dict(params) != expected:
        raise refuse(f"unexpected parameters {sorted(set(params) ^ set(expected))}")


def _machr2(spec: JobSpec, params: Mapping[str, str], expected: Mapping[str, str]) -> dict[str, str]:
    """``{"machr2": "1"}`` when an allele round asks for squared dosage sums and may: the job writes
    --freq's MACH_R2 and the round reads dosages; else nothing (so the parameter is refused)."""
    return {"machr2": "1"} if params.get("machr2") == "1" and "dosage" in expected and freq_machr2(spec) else {}


def _without_sex_covariate(d: dict[str, Any], refuse: Callable[[str], ProtocolError]) -> dict[str, Any]:
    """A glm round's phenotype spec less plink2's chrX covariate SEX (``"sex": "x"``: last in its
    covariates and mask); ``"sex": "male"`` (chrY) adds none. Any other ``sex`` is refused."""
    sex = d.get("sex", "")
    if sex not in ("", "x", "male"):
        raise refuse("its sample set by sex is not one --glm uses (chrX's SEX covariate, chrY's males)")
    if sex != "x":
        return d
    if d["covars"][-1:] != ["SEX"] or d["mask_covars"][-1:] != ["SEX"]:
        raise refuse("its chrX regression does not end with plink2's SEX covariate")
    return d | {"covars": d["covars"][:-1], "mask_covars": d["mask_covars"][:-1]}


def check_glm_columns(names: list[str], covars: set[str], refuse: Callable[[str], ProtocolError], what: str) -> None:
    """A glm round's covariate columns: the job's covariates, or indicators ``COL=LEVEL`` of them
    (any level: a site declares each category's members as a release group, so a rare one meets
    its ledger), each once, at most :data:`MAX_LEVELS` per covariate."""
    if len(set(names)) != len(names):
        raise refuse("it names a covariate column twice")
    per_covariate: dict[str, int] = {}
    for n in names:
        if n in covars:
            continue
        split = split_indicator(n, covars)
        if split is None:
            raise refuse(f"{what} the job does not name")
        per_covariate[split[0]] = per_covariate.get(split[0], 0) + 1
    if any(k > MAX_LEVELS for k in per_covariate.values()):
        raise refuse(f"it gives a covariate more than {MAX_LEVELS} categories")


def check_round_variants(
    round_no: int,
    computation: str,
    params: Mapping[str, str],
    variants: np.ndarray,
    plan: SitePlan,
    site_variants: VariantTable,
) -> None:
    """Refuse a round over variants it cannot cover: indices outside the harmonized list, or counts
    by sex over variants the job does not count by sex (a deviating coordinator asking for the
    males' counts on autosomes): the males' only on chrX and chrY, the females' only on chrX, as
    this site's own files name the round's variants; ``--glm``'s males' describe round on chrX and
    chrY, its regressions with the SEX covariate on chrX and over the males on chrY only.

    Parameters
    ----------
    variants : [array, shape: (n_round,), integer] the round's indices into the harmonized list
    plan : the site's harmonization plan (its row of each harmonized variant)
    site_variants : the site's own variants (rows of ``plan.local_index``)

    Raises
    ------
    ProtocolError
        naming the round or the computation and what it asked for
    """
    if variants.size and (variants.min() < 0 or variants.max() >= len(plan.local_index)):
        raise ProtocolError(f"round {round_no}: variant subset outside the harmonized list")
    if computation == "allele_counts_sex":
        allowed = ["X"] if params.get("sex") == "female" else ["X", "Y"]
    elif computation == "glm_describe_males":
        allowed = ["X", "Y"]  # the males' sums fix A1 on chrX and chrY
    elif computation in ("glm_linear", "glm_logistic"):
        # plink2's chrX regression (SEX covariate) on chrX only, its males-only one on chrY only
        try:
            sexes = {d.get("sex", "") for d in json.loads(params.get("spec", "[]"))}
        except (ValueError, TypeError, AttributeError):
            raise ProtocolError(f"round {computation!r}: its parameters cannot be read") from None
        if sexes == {""}:
            return
        if len(sexes) != 1:
            raise ProtocolError(f"round {computation!r} mixes regressions by sex and others")
        allowed = ["X"] if sexes == {"x"} else ["Y"]
    else:
        return
    chrom = site_variants.chrom[np.asarray(plan.local_index)[variants]]
    if not np.isin(np.asarray(chrom).astype(str), allowed).all():
        raise ProtocolError(
            f"round {computation!r} does not belong to the job the analyst signed: it asks for sums by sex on "
            f"variants outside chr{'/chr'.join(allowed)}"
        )
