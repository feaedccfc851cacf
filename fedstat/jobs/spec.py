"""The job spec: what an analyst asks for, validated, canonical, and signed.

:class:`JobSpec` mirrors ``fedstat.v1.JobSpec``. :meth:`JobSpec.validated` refuses a spec that
names an unknown analysis, option or column, or combines them in a way this version cannot run;
:meth:`JobSpec.signing_bytes` is what the analyst signs and every site verifies.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from fedstat.consent import parse_purpose
from fedstat.errors import InputError, shown
from fedstat.jobs.options import (
    GLM_MODIFIERS,
    KNOWN_ANALYSES,
    KNOWN_OPTIONS,
    MAX_BLOCK_SIZE,
    MAX_COVARS,
    MAX_PHENOS,
    MAX_SITES,
    NAME_RE,
    QC_OPTIONS,
    check_dp,
    covar_standardize,
    expand_names,
    freq_cols,
    glm_adjust,
    glm_ci,
    glm_cols,
    pca_components,
    qc_filters,
)
from fedstat.jobs.par import split_par_bounds
from fedstat.jobs.selection import variant_selection
from fedstat.privacy.modes import canonical_mode, get_mode
from fedstat.privacy.paillier import job_public_key

__all__ = ["SPEC_SIGNATURE_LABEL", "JobSpec"]

#: Prefix of the statement an analyst signs for a job (:meth:`JobSpec.signing_bytes`).
SPEC_SIGNATURE_LABEL = b"fedstat job spec v1\x00"


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
    options : analysis modifiers for later analyses, and ``sample_set``: the name of a sample
        set each site defines (``--sample-set``), the cohort's participants at each site
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

        unknown_options = sorted(set(self.options) - set(KNOWN_OPTIONS))
        if unknown_options:
            raise InputError(
                f"unknown job option(s) {', '.join(shown(o) for o in unknown_options[:5])}; "
                f"known: {', '.join(KNOWN_OPTIONS)}"
            )
        for key, value in self.options.items():
            if not isinstance(value, str) or len(value) > KNOWN_OPTIONS[key]:
                raise InputError(f"job option {key} must be text of at most {KNOWN_OPTIONS[key]} characters")
        split_par_bounds(self.options)  # InputError naming a bad --split-par
        if self.options.get("require_covar", "1") != "1":
            raise InputError("job option require_covar must be '1' (on) or absent")
        required = self.options.get("require_pheno", "1")
        if required != "1":
            columns = required.split(",")
            bad = [n for n in columns if not NAME_RE.match(n)]
            if bad or len(set(columns)) != len(columns):
                raise InputError(
                    f"job option require_pheno must be '1' (the job's --pheno-name columns) or distinct column "
                    f"names separated by commas, got {shown(required)}"
                )
        sample_set = self.options.get("sample_set")
        for what, names in (
            ("site", self.sites),
            ("dataset", (self.dataset,) if self.dataset else ()),
            ("sample set", (sample_set,) if sample_set is not None else ()),
        ):
            bad = [n for n in names if not NAME_RE.match(n)]
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
            job_public_key(self.options)  # InputError naming a malformed key
        if mode.adds_noise:
            check_dp(self)
        elif "dp_epsilon" in self.options or "dp_delta" in self.options:
            raise InputError("--epsilon and --delta apply to --privacy dp only")
        if self.purpose:
            purpose = str(parse_purpose(self.purpose))  # canonical text; InputError naming the bad code
        else:
            purpose = ""
        if not NAME_RE.match(self.out_name):
            raise InputError(
                f"output name {shown(self.out_name)} must be a plain file name prefix (letters, digits, _ . -)"
            )
        for col in (*self.pheno_names, *self.covar_names):
            if not NAME_RE.match(col):
                raise InputError(f"invalid column name {shown(col)}: letters, digits, _ . - only (at most 100)")
        pheno, covar = expand_names(self.pheno_names), expand_names(self.covar_names)
        both = set(pheno) & set(covar)
        if both:
            raise InputError(f"{', '.join(sorted(both))} named as both phenotype and covariate")
        modifiers = tuple(m for m in self.options.get("glm", "").split(",") if m)
        unknown_mods = [m for m in modifiers if m not in GLM_MODIFIERS]
        if any(m.startswith("cols=") for m in modifiers):
            raise InputError(
                "--glm cols= goes in the job option glm_cols (its text after 'cols='), not among the modifiers"
            )
        if unknown_mods:
            raise InputError(
                f"unknown --glm modifier {', '.join(shown(m) for m in unknown_mods[:3])}; "
                f"known: {', '.join(sorted(GLM_MODIFIERS))}"
            )
        if "firth" in modifiers and "no-firth" in modifiers:
            raise InputError("--glm firth and no-firth exclude each other")
        glm_ci(self)  # InputError naming a bad --ci
        glm_adjust(self)  # InputError naming a bad --adjust modifier
        covar_standardize(self)  # InputError naming a bad --covar-variance-standardize
        glm_cols(self)  # InputError naming --glm for a bad or uncomputable cols= column
        freq_cols(self)  # InputError naming --freq for a bad or uncomputable cols= column
        if any(a in self.analyses for a in ("glm", "assoc", "model")) and not pheno:
            raise InputError("--glm, --assoc and --model need --pheno-name (the phenotype column(s) to test)")
        if ("assoc" in self.analyses or "model" in self.analyses) and len(pheno) != 1:
            raise InputError("--assoc and --model test one case/control phenotype: give exactly one --pheno-name")
        qc_filters(self)  # InputError naming a bad --mind/--geno/--hwe/--maf
        variant_selection(self)  # InputError naming a bad --chr/--from-bp/--extract/...
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
        fields: dict[str, Any] = {
            k: (tuple(v) if k in tuples else v) for k, v in d.items() if k in cls.__dataclass_fields__
        }
        return cls(**fields)
