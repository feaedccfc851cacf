"""``fedstat submit``'s variant selection flags (plink2's ``--chr``, ``--extract``, ...): the argument
group and the job options they become (:mod:`fedstat.jobs.selection` reads them)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fedstat.errors import InputError

__all__ = ["add_variant_selection", "selection_options"]


def add_variant_selection(p: argparse.ArgumentParser) -> None:
    """The "variant selection" argument group of ``fedstat submit``."""
    s = p.add_argument_group(
        "variant selection (plink2 flags; applied at load, before QC and every analysis)",
        "The coordinator keeps only these variants of the harmonized list, as plink2 would on the pooled "
        "file: --mind, --geno, --hwe, --maf and every analysis then see the selected variants only. IDs are "
        "the harmonized ones, as the pooled .pvar would list them. Under --privacy dp fewer variants mean "
        "less noise per variant for the same epsilon. Variants on X, Y and MT are counted as plink2 counts them "
        "by --freq, --geno-counts, --hardy and --missing (males haploid on X, Y in males only, MT haploid); "
        "--pca, --glm, --assoc, --model leave them out, and a job with --mind, --geno, --hwe, --maf or under "
        "dp leaves them out of everything (results then equal plink2's with --not-chr X,Y,MT). The job log "
        "says how many variants each step kept.",
    )
    s.add_argument(
        "--chr",
        nargs="+",
        metavar="CODES",
        help="keep only these chromosomes: codes and numeric ranges, comma-separated, e.g. --chr 1-4,22,XY "
        "(chr1, 01 and 1 are the same; 23-26 are X, Y, XY, MT as in plink2)",
    )
    s.add_argument("--not-chr", nargs="+", metavar="CODES", help="leave out these chromosomes (syntax as --chr)")
    s.add_argument(
        "--split-par",
        nargs="+",
        metavar="BUILD|BP",
        help="rename chrX variants in the pseudo-autosomal regions PAR1/PAR2 before the selection, as plink2: "
        "a build (b36/hg18, b37/hg19, b38/hg38) or two positions bp1 bp2",
    )
    s.add_argument(
        "--from-bp",
        metavar="N",
        help="keep positions from N on (inclusive); needs --chr with exactly one chromosome, e.g. --chr 6 "
        "--from-bp 28477797 --to-bp 33448354",
    )
    s.add_argument("--to-bp", metavar="N", help="keep positions up to N (inclusive); as --from-bp")
    s.add_argument(
        "--extract",
        type=Path,
        metavar="FILE",
        help="keep only the variants whose IDs FILE lists (separated by any whitespace, e.g. one per line, "
        "as plink2 --extract or a .snplist); the IDs travel in the signed job spec, so at most 1,000,000 "
        "IDs in 2 MB",
    )
    s.add_argument(
        "--exclude", type=Path, metavar="FILE", help="leave out the variants whose IDs FILE lists (as --extract)"
    )
    s.add_argument(
        "--snps-only",
        nargs="?",
        const="1",
        choices=("1", "just-acgt"),
        metavar="just-acgt",
        help="keep only SNPs: every allele one character; with just-acgt, every allele A, C, G or T",
    )


def _read(flag: str, path: Path, max_chars: int) -> str:
    from fedstat.jobs.selection import read_id_list  # noqa: PLC0415

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{flag} {path}: cannot read ({exc.strerror})") from exc
    except UnicodeDecodeError:
        raise InputError(f"{flag} {path}: not UTF-8 text") from None
    return read_id_list(f"{flag} {path}", text, max_chars=max_chars)


def selection_options(args: argparse.Namespace) -> dict[str, str]:
    """The job options of the variant selection flags given (the ID files read here)."""
    from fedstat.jobs.options import KNOWN_OPTIONS  # noqa: PLC0415

    options: dict[str, str] = {}
    for key in ("chr", "not_chr"):
        codes = getattr(args, key)
        if codes:
            options[key] = ",".join(codes)
    if getattr(args, "split_par", None):
        options["split_par"] = " ".join(args.split_par)
    for key in ("from_bp", "to_bp"):
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    for key in ("extract", "exclude"):
        path = getattr(args, key)
        if path is not None:
            options[key] = _read("--" + key, path, KNOWN_OPTIONS[key])
    if args.snps_only is not None:
        options["snps_only"] = args.snps_only
    return options
