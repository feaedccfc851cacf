"""The job options of ``--glm``'s and ``--freq``'s modifiers as the command line gives them.

plink2 writes ``--glm hide-covar cols=+a1freq,+a1freqcc``: the modifiers travel in the job option
``glm`` (comma-separated), so ``cols=``, whose text holds commas itself, travels apart in
``glm_cols`` (and ``--freq cols=…`` in ``freq_cols``); :mod:`fedstat.jobs.options` reads them.
"""

from __future__ import annotations

import argparse

from fedstat.errors import InputError, shown

__all__ = ["modifier_options", "split_names", "submit_options"]


def _split_cols(flag: str, words: list[str]) -> tuple[list[str], str | None]:
    """``words`` without their ``cols=…`` modifier, and the text after ``cols=`` (None: absent)."""
    cols = [w for w in words if w.startswith("cols=")]
    if len(cols) > 1:
        raise InputError(f"--{flag}: cols= is given more than once (plink2: Multiple --{flag} cols= modifiers)")
    return [w for w in words if not w.startswith("cols=")], cols[0][len("cols=") :] if cols else None


def modifier_options(args: argparse.Namespace) -> dict[str, str]:
    """Job options ``glm``, ``glm_cols`` and ``freq_cols`` from ``--glm MODIFIER…`` and ``--freq MODIFIER…``.

    Raises
    ------
    InputError
        If ``cols=`` is given twice, or ``--freq`` has a modifier other than ``cols=``.
    """
    options: dict[str, str] = {}
    if args.glm:
        mods, cols = _split_cols("glm", args.glm)
        if mods:
            options["glm"] = ",".join(mods)
        if cols is not None:
            options["glm_cols"] = cols
    if args.freq:
        mods, cols = _split_cols("freq", args.freq)
        if mods:
            raise InputError(f"--freq: unsupported modifier {shown(mods[0])}; this version takes cols= only")
        if cols is not None:
            options["freq_cols"] = cols
    return options


def split_names(s: str) -> tuple[str, ...]:
    """The comma-separated names of ``s``, stripped, empty ones left out."""
    return tuple(x.strip() for x in s.split(",") if x.strip())


def submit_options(args: argparse.Namespace) -> dict[str, str]:
    """The job options of ``fedstat submit``'s flags (variant selection aside: :mod:`fedstat.cli.selection`).

    Raises
    ------
    InputError
        For ``--keep``/``--remove``: an analyst's list of participant IDs is never accepted.
    """
    options = modifier_options(args)
    if args.genome_assembly != "NR":
        options["genome_assembly"] = args.genome_assembly
    if args.epsilon is not None:
        options["dp_epsilon"] = repr(args.epsilon)
    if args.delta is not None:
        options["dp_delta"] = repr(args.delta)
    for key in ("mind", "geno", "maf"):
        if getattr(args, key) is not None:
            options[key] = repr(getattr(args, key))
    if args.hwe:
        options["hwe"] = " ".join(args.hwe)
    if args.pca is not None:
        options["pca"] = str(args.pca)
    if args.require_pheno is not None:
        options["require_pheno"] = ",".join(split_names(args.require_pheno)) or "1"
    if args.require_covar:
        options["require_covar"] = "1"
    if args.ci is not None:
        options["ci"] = repr(args.ci)
    if args.adjust is not None:
        options["adjust"] = " ".join(args.adjust)
    if args.covar_variance_standardize is not None:
        options["covar_variance_standardize"] = ",".join(split_names(",".join(args.covar_variance_standardize))) or "1"
    if args.id_list is not None:
        raise InputError(
            "--keep/--remove take a list of participant IDs, which fedstat does not accept from an analyst: two "
            "jobs over lists that differ by one person give that person's genotype sums. Use --sample-set NAME, "
            "a set each site's operator defines (`fedstat jobs policies` lists them)"
        )
    if args.sample_set is not None:
        options["sample_set"] = args.sample_set
    return options
