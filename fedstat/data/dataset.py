"""A site's dataset: one genotype source plus its sample table, checked against each other.

A dataset directory holds exactly one of ``genotypes.bed/.bim/.fam``, ``genotypes.pgen/.pvar/
.psam``, ``genotypes.vcf.gz`` / ``genotypes.vcf`` / ``genotypes.bcf``, and ``samples.tsv``. Every
sample of the table must be in the genotypes and vice versa; otherwise opening fails with an
error naming the file and the first offending line (never a participant's values).

A dataset may also carry the site's named **sample sets** (``sample_sets`` in its ``[[datasets]]``
entry, :mod:`fedstat.data.sample_sets`): each is read and checked against the sample table when the
dataset opens, so a set naming an unknown sample, or none, keeps the dataset from loading.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np

from fedstat.data.genotypes import GenotypeSource, open_genotypes
from fedstat.data.import_cache import DEFAULT_IMPORT, ImportOptions
from fedstat.data.sample_sets import read_sample_set
from fedstat.data.samples import SampleTable, read_sample_table
from fedstat.data.sex import SEX_COLUMN, genotype_file_sex, sex_codes
from fedstat.errors import SampleTableError

SAMPLES_FILE = "samples.tsv"


@dataclass(frozen=True)
class Dataset:
    """An opened dataset.

    Attributes
    ----------
    name : the dataset's name in the site config
    directory : where its files are
    genotypes : the genotype source (variants, blocks)
    samples : the sample table
    genotype_index : [array, shape: (n_table_rows,), dtype int64] for each row of the sample
        table, the column of that sample in the genotype files
    sex : [array, shape: (n_table_rows,), dtype int8] each sample's sex in plink2's codes, from the
        sample table's ``SEX`` column or else the genotype files (:mod:`fedstat.data.sex`)
    sample_sets : the site's named sample sets (``sample_sets`` in site.toml) -> [array, dtype
        int64] the sorted sample-table rows of each set's members (:mod:`fedstat.data.sample_sets`)
    """

    name: str
    directory: Path
    genotypes: GenotypeSource
    samples: SampleTable
    genotype_index: np.ndarray
    sex: np.ndarray
    sample_sets: Mapping[str, np.ndarray] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def n_samples(self) -> int:
        return len(self.samples.iid)

    def close(self) -> None:
        self.genotypes.close()


def _keys(fid: tuple[str, ...] | None, iid: tuple[str, ...], use_fid: bool) -> list[str]:
    if use_fid and fid is not None:
        return [f"{f}\t{i}" for f, i in zip(fid, iid, strict=True)]
    return list(iid)


def open_dataset(
    name: str,
    directory: Path,
    *,
    cache_dir: Path,
    threads: int = 1,
    options: ImportOptions = DEFAULT_IMPORT,
    sample_sets: Sequence[tuple[str, Path]] = (),
) -> Dataset:
    """Open and cross-check a dataset directory; raises InputError subclasses naming the problem.

    ``options`` says how a VCF or BGEN is imported (the dataset's ``vcf_dosage`` / ``bgen_ref``);
    ``sample_sets`` are the site's named sets, ``(name, file)`` (a relative file is in ``directory``)."""
    directory = Path(directory)
    genotypes = open_genotypes(directory, cache_dir=cache_dir, threads=threads, options=options)
    try:
        table_path = directory / SAMPLES_FILE
        if not table_path.is_file():
            raise SampleTableError(
                f"{table_path}: sample table not found (expected {SAMPLES_FILE} next to the genotypes)"
            )
        table = read_sample_table(table_path)
        geno_ids = genotypes.samples
        use_fid = table.fid is not None and geno_ids.fid is not None
        gkeys = _keys(geno_ids.fid, geno_ids.iid, use_fid)
        tkeys = _keys(table.fid, table.iid, use_fid)
        gpos = {k: i for i, k in enumerate(gkeys)}
        missing_rows = [row for row, k in enumerate(tkeys) if k not in gpos]
        if missing_rows:
            raise SampleTableError(
                f"{table_path}: {len(missing_rows)} sample(s) are not in {genotypes.path.name} "
                f"(first on line {table.lines[missing_rows[0]]}); every sample in the table needs genotypes"
            )
        tset = set(tkeys)
        extra = [i for i, k in enumerate(gkeys) if k not in tset]
        if extra:
            raise SampleTableError(
                f"{genotypes.path.name}: {len(extra)} genotyped sample(s) are missing from {table_path} "
                f"(first is genotype sample #{extra[0] + 1}); add them to the table (with NA values) or remove them"
            )
        index = np.fromiter((gpos[k] for k in tkeys), dtype=np.int64, count=len(tkeys))
        # the files read: a BGEN's cache .psam holds its .sample's sex; a VCF cache's records none
        fmt = {"bed": "bed", "pgen": "pgen", "bgen": "pgen"}.get(genotypes.format, genotypes.format)
        file_sex = genotype_file_sex(genotypes.genotype_path, fmt, genotypes.n_samples)[index]
        sex = sex_codes(file_sex, table.numeric.get(SEX_COLUMN, table.text.get(SEX_COLUMN)))
        sets = {s: read_sample_set(directory / f, table, name=s, dataset=name) for s, f in sample_sets}
    except BaseException:
        genotypes.close()
        raise
    return Dataset(
        name=name,
        directory=directory,
        genotypes=genotypes,
        samples=table,
        genotype_index=index,
        sex=sex,
        sample_sets=MappingProxyType(sets),
    )
