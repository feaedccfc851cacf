"""plink2 number formatting and table writers.

The expected strings below were printed by plink2 2.00a3.5 (Debian) for the given counts:
``.vmiss`` F_MISS = MISSING_CT / OBS_CT and ``.afreq`` ALT_FREQS = ALT alleles / OBS_CT.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedstat.data.variants import VariantTable
from fedstat.formats.atomic import atomic_write_text
from fedstat.formats.numbers import format_g, format_g_array
from fedstat.formats.plink2 import (
    AFREQ_HEADER,
    write_afreq,
    write_hardy,
    write_vmiss,
)
from fedstat.stats.allele import finish

FIXTURE = Path(__file__).parent / "data" / "consortium" / "expected"

# (MISSING_CT, OBS_CT, F_MISS as printed). Exact decimal ties at the 7th digit: plink2 rounds
# them half-to-even where C's printf("%g") would round the binary value (e.g. 0.0101563).
PLINK2_TIES = [
    (13, 1280, "0.0101562"),
    (19, 1280, "0.0148438"),
    (21, 1280, "0.0164062"),
    (254, 1280, "0.198438"),
    (91, 1280, "0.0710938"),
    (558, 1280, "0.435938"),
    (214, 1280, "0.167188"),
    (1162, 1280, "0.907812"),
    (1046, 1280, "0.817188"),
    (2337, 3200, "0.730312"),
    (3101, 3200, "0.969062"),
    (1941, 3200, "0.606562"),
    (1213, 3200, "0.379062"),
    (737, 3200, "0.230312"),
    (2401, 3200, "0.750312"),
]
# (ALT allele count, OBS_CT, ALT_FREQS as printed)
PLINK2_FREQS = [
    (0, 6506, "0"),
    (1, 9268, "0.000107898"),
    (2, 9964, "0.000200723"),
    (2, 9736, "0.000205423"),
    (12, 5560, "0.00215827"),
    (20, 3494, "0.0057241"),
    (801, 6024, "0.132968"),
    (11, 44, "0.25"),
    (34, 92, "0.369565"),
    (1598, 3418, "0.467525"),
    (3065, 5362, "0.571615"),
    (28, 42, "0.666667"),
    (18, 22, "0.818182"),
    (2765, 2796, "0.988913"),
    (8, 8, "1"),
    (44, 106, "0.415094"),
    (103, 106, "0.971698"),
    (4, 5, "0.8"),
    (4947, 5000, "0.9894"),
    (4960, 5000, "0.992"),
]


@pytest.mark.parametrize(("num", "den", "printed"), PLINK2_TIES)
def test_format_g__rounds_decimal_ties_half_even_like_plink2(num, den, printed):
    assert format_g(num / den) == printed


@pytest.mark.parametrize(("num", "den", "printed"), PLINK2_FREQS)
def test_format_g__matches_plink2_frequencies(num, den, printed):
    assert format_g(num / den) == printed


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.0, "0"),
        (float("nan"), "nan"),
        (float("inf"), "inf"),
        (-0.5, "-0.5"),
        (1e-05, "1e-05"),
        (0.0001, "0.0001"),
        (9.9999951e-05, "0.0001"),
        (9.99999e-05, "9.99999e-05"),
        (1.5e-100, "1.5e-100"),
        (5e-324, "4.94066e-324"),
        (0.999999, "0.999999"),
        (0.9999995, "1"),
        (10.0, "10"),
        (100.5, "100.5"),
        (123456.5, "123456"),
        (123457.5, "123458"),
        (999999.4, "999999"),
        (999999.5, "1e+06"),
        (1234567.0, "1.23457e+06"),
        (1e300, "1e+300"),
        (0.0009765625, "0.000976562"),
        (1 / 3, "0.333333"),
        (2 / 3, "0.666667"),
    ],
)
def test_format_g__spellings_and_exponents(value, text):
    assert format_g(value) == text


def test_format_g__other_digit_counts_use_percent_g():
    assert format_g(1 / 3, digits=8) == "0.33333333"
    assert format_g(1e-5, digits=3) == "1e-05"
    assert format_g(float("nan"), digits=4) == "nan"
    with pytest.raises(ValueError, match="significant digit"):
        format_g(1.0, digits=0)


def test_format_g_array__matches_scalar_and_handles_nan():
    values = np.array([0.5, np.nan, 0.5, 13 / 1280, np.nan])
    assert format_g_array(values) == ["0.5", "nan", "0.5", "0.0101562", "nan"]


def _table(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text().splitlines()[1:]]


def test_format_g__reproduces_every_fixture_frequency_and_missing_rate():
    afreq = _table(FIXTURE / "pooled.afreq")
    gcount = _table(FIXTURE / "pooled.gcount")
    vmiss = _table(FIXTURE / "pooled.vmiss")
    assert len(afreq) == len(gcount) == len(vmiss) == 1500
    for a, g, v in zip(afreq, gcount, vmiss, strict=True):
        alt = int(g[5]) + 2 * int(g[6])
        obs = int(a[5])
        assert format_g(alt / obs if obs else float("nan")) == a[4], a
        assert format_g(int(v[2]) / int(v[3])) == v[4], v


def _variants(n: int) -> VariantTable:
    return VariantTable.from_lists(["1"] * n, list(range(1, n + 1)), [f"rs{i}" for i in range(n)], ["A"] * n, ["G"] * n)


def test_write_afreq__header_rows_and_nan(tmp_path):
    stats = finish(
        {"hom_ref": np.array([3, 0]), "het": np.array([2, 0]), "hom_alt": np.array([1, 0]), "missing": np.array([1, 7])}
    )
    path = write_afreq(tmp_path / "x.afreq", _variants(2), stats)
    assert path.read_text() == ("\t".join(AFREQ_HEADER) + "\n1\trs0\tA\tG\t0.333333\t12\n1\trs1\tA\tG\tnan\t0\n")
    assert not (tmp_path / "x.afreq.tmp").exists()


def test_write_hardy__a1_is_ref_and_empty_variant_prints_like_plink2(tmp_path):
    stats = finish(
        {
            "hom_ref": np.array([30, 0]),
            "het": np.array([2, 0]),
            "hom_alt": np.array([21, 0]),
            "missing": np.array([0, 53]),
        }
    )
    text = write_hardy(tmp_path / "x.hardy", _variants(2), stats).read_text().splitlines()
    assert text[0] == "#CHROM\tID\tA1\tAX\tHOM_A1_CT\tHET_A1_CT\tTWO_AX_CT\tO(HET_A1)\tE(HET_A1)\tP"
    # both rows as plink2 2.00a3.5 printed them
    assert text[1] == "1\trs0\tA\tG\t30\t2\t21\t0.0377358\t0.485582\t4.60758e-13"
    assert text[2] == "1\trs1\tA\tG\t0\t0\t0\tnan\t0\t1"


def test_write_vmiss__obs_ct_counts_all_samples(tmp_path):
    stats = finish(
        {"hom_ref": np.array([500]), "het": np.array([400]), "hom_alt": np.array([100]), "missing": np.array([4000])}
    )
    text = write_vmiss(tmp_path / "x.vmiss", _variants(1), stats).read_text()
    assert text == "#CHROM\tID\tMISSING_CT\tOBS_CT\tF_MISS\n1\trs0\t4000\t5000\t0.8\n"


def test_write_afreq__row_count_mismatch_raises(tmp_path):
    stats = finish({"hom_ref": np.array([1]), "het": np.array([1]), "hom_alt": np.array([1]), "missing": np.array([0])})
    with pytest.raises(ValueError, match="2 rows but the statistics have 1"):
        write_afreq(tmp_path / "x.afreq", _variants(2), stats)
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_text__error_leaves_no_partial_file(tmp_path):
    target = tmp_path / "out.txt"

    def half_then_fail(fh):
        fh.write("half a table\n")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        atomic_write_text(target, half_then_fail)
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_text__error_keeps_previous_version(tmp_path):
    target = tmp_path / "out.txt"
    atomic_write_text(target, ["old\n"])

    def chunks():
        yield "new, partial\n"
        raise OSError("no space left")

    with pytest.raises(OSError, match="no space"):
        atomic_write_text(target, chunks())
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
