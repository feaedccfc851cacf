"""``--freq cols=``: plink2 2.00a3.5's ``.afreq`` column sets, byte for byte, from the allele counts.

References: plink2 ``--freq cols=…`` on the consortium fixture's chromosome 1 (hard calls with
missing calls), ``tests/data/cols/expected/freq_*.afreq`` (made by ``scripts/make_cols_fixture.py``);
the dosage fixture's run goes through the daemons in tests/test_glm_cols.py.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from fedstat.data.variants import VariantTable
from fedstat.errors import InputError
from fedstat.formats.columns import FREQ_COLUMNS, FREQ_DEFAULT, freq_columns
from fedstat.formats.plink2 import write_afreq, write_reports
from fedstat.jobs import JobSpec
from fedstat.stats.allele import SUM_NAMES, AlleleStats, finish, local_sums
from tests.conftest import read_pooled

CONSORTIUM = Path(__file__).parent / "data" / "consortium"
EXPECTED = Path(__file__).parent / "data" / "cols" / "expected"
#: the fixture script's FREQ_RUNS
RUNS = {
    "freq_all": "chrom,pos,ref,alt1,alt,reffreq,alt1freq,freq,nobs",
    "freq_eq": "+pos,-altfreq,+eq",
    "freq_eqz": "-altfreq,+eqz",
    "freq_alteq": "-altfreq,+alteq,+reffreq",
    "freq_alteqz": "-altfreq,+alteqz",
    "freq_numeq": "-altfreq,+numeq",
    "freq_altnumeq": "-altfreq,+altnumeq,-chrom",
    "freq_nobs": "nobs",
}


@pytest.fixture(scope="module")
def chr1() -> tuple[VariantTable, AlleleStats]:
    """Chromosome 1 of the consortium fixture, counted site by site and added."""
    geno, variants, iids = read_pooled(CONSORTIUM)
    rows = np.flatnonzero(variants.chrom == "1")
    site = np.array([iid.split("_")[0] for iid in iids])
    total = {name: np.zeros(rows.size, dtype=np.int64) for name in SUM_NAMES}
    for s in sorted(set(site)):
        for name, arr in local_sums(geno[rows][:, site == s]).items():
            total[name] += arr
    return variants.take(rows), finish(total)


@pytest.mark.parametrize("run", sorted(RUNS))
def test_write_afreq__cols_sets_byte_identical_to_plink2(run, chr1, tmp_path):
    variants, stats = chr1
    path = write_afreq(tmp_path / f"{run}.afreq", variants, stats, freq_columns(RUNS[run]))
    assert path.read_bytes() == (EXPECTED / f"{run}.afreq").read_bytes()


def test_write_afreq__eq_lists_leave_out_absent_alleles(chr1, tmp_path):
    # a monomorphic variant: eq names REF only, alteq prints '.', eqz and alteqz keep the zeros
    variants, stats = chr1
    mono = np.flatnonzero(stats.alt_freq == 0)
    assert mono.size, "the fixture's chromosome 1 has a monomorphic variant"
    v = int(mono[0])
    ref, alt = variants.ref[v], variants.alt[v]
    got = {}
    for kind in ("eq", "eqz", "alteq", "alteqz", "numeq", "altnumeq"):
        path = write_afreq(tmp_path / kind, variants, stats, frozenset({kind}))
        got[kind] = path.read_text().splitlines()[1 + v].split("\t")[1]
    assert got == {
        "eq": f"{ref}=1",
        "eqz": f"{ref}=1,{alt}=0",
        "alteq": ".",
        "alteqz": f"{alt}=0",
        "numeq": "0=1",
        "altnumeq": ".",
    }


def test_write_afreq__no_observation_prints_nan_and_default_is_unchanged(tmp_path):
    variants = VariantTable(
        chrom=np.array(["1", "1"], dtype=object),
        pos=np.array([5, 9], dtype=np.int64),
        id=np.array(["a", "b"], dtype=object),
        ref=np.array(["A", "G"], dtype=object),
        alt=np.array(["C", "T"], dtype=object),
    )
    stats = finish({"hom_ref": np.array([1, 0]), "het": np.array([2, 0]), "hom_alt": np.array([0, 0]),
                    "missing": np.array([0, 3])})  # fmt: skip
    lines = write_afreq(tmp_path / "x", variants, stats, freq_columns("+reffreq,-altfreq,+eqz")).read_text()
    assert lines.splitlines() == [
        "#CHROM\tID\tREF\tALT\tREF_FREQ\tFREQS\tOBS_CT",
        "1\ta\tA\tC\t0.666667\tA=0.666667,C=0.333333\t6",
        "1\tb\tG\tT\tnan\tG=nan,T=nan\t0",
    ]
    (default,) = write_reports(tmp_path / "d", variants, stats, ["freq"])
    (spelled,) = write_reports(tmp_path / "s", variants, stats, ["freq"], freq_columns=FREQ_DEFAULT)
    assert default.read_bytes() == spelled.read_bytes()
    assert default.read_text().startswith("#CHROM\tID\tREF\tALT\tALT_FREQS\tOBS_CT\n")


def test_write_afreq__refuses_what_plink2_refuses_and_what_is_not_computed(tmp_path):
    variants = VariantTable(
        chrom=np.array(["1"], dtype=object),
        pos=np.array([5], dtype=np.int64),
        id=np.array(["a"], dtype=object),
        ref=np.array(["A=B"], dtype=object),
        alt=np.array(["C"], dtype=object),
    )
    stats = finish({"hom_ref": np.array([1]), "het": np.array([2]), "hom_alt": np.array([0]), "missing": np.array([0])})
    with pytest.raises(InputError, match="holds '='"):
        write_afreq(tmp_path / "x", variants, stats, frozenset({"eq"}))
    assert (
        write_afreq(tmp_path / "y", variants, stats, frozenset({"numeq"}))
        .read_text()
        .endswith("0=0.666667,1=0.333333\n")
    )
    for name in ("machr2", "minimac3r2"):
        with pytest.raises(InputError, match=name):
            write_afreq(tmp_path / "z", variants, stats, frozenset({name}))
    assert not (tmp_path / "x").exists() and not (tmp_path / "z").exists()


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("+freq", "exclude each other"),  # the default holds altfreq: plink2 stops too
        ("-altfreq,+eq,+numeq", "exclude each other"),
        ("-chrom,-ref,-alt,-altfreq,-nobs", "excludes every column"),
        ("+provref", "later plink2 versions"),
        ("pos,-ref", "every column must be preceded by"),
        ("", "names no column"),
    ],
)
def test_freq_columns__plink2_refusals(text, match):
    with pytest.raises(InputError, match=match):
        freq_columns(text)


def test_freq_columns__sets():
    assert freq_columns(None) == FREQ_DEFAULT == {"chrom", "ref", "alt", "altfreq", "nobs"}
    assert freq_columns("-altfreq,+freq") == (FREQ_DEFAULT - {"altfreq"}) | {"freq"}
    assert len(FREQ_COLUMNS) == 18


@pytest.mark.parametrize(
    ("options", "analyses", "match"),
    [
        ({"freq_cols": "+machr2,+minimac3r2"}, ("freq",), "machr2 and minimac3r2 exclude each other"),
        ({"freq_cols": "-altfreq,+minimac3r2"}, ("freq",), "minimac3r2 cannot be written"),
        ({"freq_cols": "+pos"}, ("hardy",), "needs --freq"),
        ({"freq_cols": "+freq"}, ("freq",), "--freq cols="),
    ],
)
def test_spec__freq_cols_refusals(options, analyses, match):
    with pytest.raises(InputError, match=match):
        JobSpec(analyses=analyses, options=options).validated()
    assert JobSpec(analyses=("freq",), options={"freq_cols": "+pos,+reffreq"}).validated()


def test_write_afreq__refuses_frequencies_that_are_not_dosage_quotients(chr1, tmp_path):
    """REF_FREQ and the lists come from the ALT dosage the frequency implies: a frequency computed any
    other way (so the REF one could be off in a last digit) is refused, not written."""
    variants, stats = chr1
    shifted = dataclasses.replace(stats, alt_freq=np.nextafter(stats.alt_freq, 1.0))
    with pytest.raises(InputError, match="not allele dosages over their total"):
        write_afreq(tmp_path / "x", variants, shifted, freq_columns("+reffreq"))
    assert not (tmp_path / "x").exists()
    write_afreq(tmp_path / "y", variants, shifted)  # the default columns print ALT_FREQS as given
