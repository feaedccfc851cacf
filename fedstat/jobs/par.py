"""plink2's ``--split-par``: chrX positions inside the pseudo-autosomal regions renamed PAR1 / PAR2.

A job option (``split_par``: a build code or two positions) applied to the harmonized variants
before the variant selection (``coordinator.harmonizer.select_variants``), as plink2 applies it at
load: chrX variants at or below the PAR1 bound become ``PAR1``, those at or above the PAR2 bound
``PAR2``; both are then diploid (:mod:`fedstat.stats.sexchr`), and ``--chr X`` no longer selects them.

References
----------
plink2 2.00a3.5 ``--split-par <bp1> <bp2>`` / ``--split-par <build>`` (``b36``/``hg18``,
``b37``/``hg19``, ``b38``/``hg38``); it refuses a dataset that already holds PAR1 or PAR2.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fedstat.data.variants import VariantTable
from fedstat.errors import InputError, shown

__all__ = ["BUILDS", "split_par", "split_par_bounds"]

#: plink2's build codes: (last position of PAR1, first position of PAR2) on chrX.
BUILDS = {
    "b36": (2709521, 154584237),
    "hg18": (2709521, 154584237),
    "b37": (2699520, 154931044),
    "hg19": (2699520, 154931044),
    "b38": (2781479, 155701383),
    "hg38": (2781479, 155701383),
}


def split_par_bounds(options: Mapping[str, str]) -> tuple[int, int] | None:
    """The ``--split-par`` bounds of a job's ``options`` (PAR1's last, PAR2's first position), None
    without it.

    Raises
    ------
    InputError
        If the option is neither a build code nor two positions ``bp1 bp2`` with bp1 < bp2.
    """
    value = options.get("split_par")
    if value is None:
        return None
    if value in BUILDS:
        return BUILDS[value]
    parts = value.replace(",", " ").split()
    try:
        bp1, bp2 = (int(p) for p in parts)
    except ValueError:
        bp1 = bp2 = -1
    if not 0 <= bp1 < bp2:
        raise InputError(f"--split-par {shown(value)}: give a build ({', '.join(BUILDS)}) or two positions bp1 < bp2")
    return bp1, bp2


def split_par(variants: VariantTable, bounds: tuple[int, int]) -> tuple[VariantTable, int]:
    """``variants`` with chrX's pseudo-autosomal positions renamed, and how many were renamed.

    Raises
    ------
    InputError
        If the variants already hold PAR1 or PAR2, as plink2 refuses them.
    """
    chrom = variants.chrom.astype(str)
    if np.isin(chrom, ["PAR1", "PAR2"]).any():
        raise InputError("--split-par cannot be used on variants that already include PAR1 or PAR2 (as plink2)")
    x = chrom == "X"
    par1, par2 = x & (variants.pos <= bounds[0]), x & (variants.pos >= bounds[1])
    renamed = np.where(par1, "PAR1", np.where(par2, "PAR2", chrom)).astype(object)
    n = int((par1 | par2).sum())
    table = VariantTable(chrom=renamed, pos=variants.pos, id=variants.id, ref=variants.ref, alt=variants.alt)
    return (table if n else variants), n
