"""Plots and the offline HTML report: values, escaping, no external fetches, PNGs, rendering."""

from __future__ import annotations

import base64
import io
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import stats

from fedstat.errors import InputError
from fedstat.report import html, plots

REPO = Path(__file__).resolve().parent.parent
RENDER = REPO / "scripts" / "render_report.py"


def _gwas(n: int = 3000, seed: int = 7) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    chrom = np.array([str(c) for c in rng.integers(1, 23, n)], dtype=object)
    chrom[:50] = "X"
    pos = rng.integers(1, 10**8, n)
    p = rng.uniform(size=n)
    p[10:15] = [1e-9, 3e-12, 2e-20, 0.0, 4e-8]
    log10_p = np.log10(np.where(p > 0, p, 1.0))
    log10_p[13] = -350.2  # underflowed p with its exact log10
    p[20] = np.nan
    return {
        "chrom": chrom,
        "pos": pos,
        "ids": np.array([f"rs{i}" for i in range(n)], dtype=object),
        "a1": np.array(["A"] * n, dtype=object),
        "effect": rng.normal(0, 0.1, n),
        "se": np.full(n, 0.05),
        "p": p,
        "log10_p": log10_p,
    }


def _report(tmp_path: Path, title: str = 'GWAS <CC> & "friends"') -> tuple[Path, float]:
    g = _gwas()
    man = plots.manhattan(g["chrom"], g["pos"], g["p"], tmp_path / "m.png", title="CC", log10_p=g["log10_p"])
    lam = plots.qq(g["p"], tmp_path / "q.png", title="CC", log10_p=g["log10_p"])
    table = html.top_hits(
        chrom=g["chrom"],
        pos=g["pos"],
        ids=g["ids"],
        a1=g["a1"],
        effect=g["effect"],
        se=g["se"],
        p=g["p"],
        log10_p=g["log10_p"],
        k=20,
    )
    section = html.Section(
        title="CC — logistic regression <glm>",
        summary={"Variants tested": 2999, "Cases": 261, "Controls": 382},
        table=table,
        figures=[html.Figure("Manhattan plot", man), html.Figure("QQ plot", q := tmp_path / "q.png")],
        lambda_gc=lam,
        notes=["BATCH excluded: constant <covariate>"],
        files=["job.CC.glm.logistic.hybrid", "job.CC.ssf.tsv.gz"],
    )
    assert q.is_file()
    path = html.write_report(
        tmp_path / "job.report.html",
        title=title,
        job={
            "job_id": "job-42",
            "created": "2026-01-02 10:00 UTC",
            "privacy": "secagg",
            "spec": {"analyses": ["glm"], "pheno_names": ["CC"], "note": "<b>not bold</b>"},
        },
        sites=[("AFR", 220), ("EAS", 180), ("EUR <lab>", 260)],
        analyses=[section],
        notes=["harmonized 800 variants"],
    )
    return path, lam


def test_write_report__sections_values_and_escaping(tmp_path):
    path, lam = _report(tmp_path)
    doc = path.read_text(encoding="utf-8")
    assert path.name == "job.report.html"
    assert "GWAS &lt;CC&gt; &amp; &quot;friends&quot;" in doc and "<CC>" not in doc
    assert "EUR &lt;lab&gt;" in doc and "&lt;b&gt;not bold&lt;/b&gt;" in doc
    assert "BATCH excluded: constant &lt;covariate&gt;" in doc
    for text in ("job-42", "secagg", "AFR", "660", "Top hits", "Manhattan plot", "QQ plot", "job.CC.ssf.tsv.gz"):
        assert text in doc
    assert f"{lam:.3f}" in doc
    # the underflowed p-value is ranked first and printed from its log10
    first_row = re.search(r"<tbody><tr>(.*?)</tr>", doc.split("Top hits")[1]).group(1)
    assert "6.31e-351" in first_row
    assert "<script" not in doc.lower()


def test_write_report__self_contained_no_external_references(tmp_path):
    path, _ = _report(tmp_path)
    doc = path.read_text(encoding="utf-8")
    assert "http://" not in doc and "https://" not in doc
    refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", doc)
    assert refs and all(r.startswith(("data:image/png;base64,", "#")) for r in refs)
    assert "@import" not in doc and "url(" not in doc
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', doc)
    assert len(images) == 2
    for b64 in images:
        img = Image.open(io.BytesIO(base64.b64decode(b64, validate=True)))
        assert img.format == "PNG" and img.size[0] >= 400


def test_lambda_gc__matches_chi2_median_and_log_space():
    rng = np.random.default_rng(3)
    chisq = stats.chi2.rvs(1, size=20001, random_state=rng) * 1.2
    p = stats.chi2.sf(chisq, 1)
    assert plots.lambda_gc(p) == pytest.approx(np.median(chisq) / 0.4549364, rel=1e-6)
    # log10 p gives the same quantiles where p is representable, and finite ones where it is not
    assert plots.lambda_gc(p, np.log10(p)) == pytest.approx(plots.lambda_gc(p), rel=1e-9)
    tiny = np.array([0.0, 0.5, np.nan])
    assert np.isfinite(plots._chisq_1df(np.array([400.0])))[0]
    assert plots.lambda_gc(tiny, np.array([-400.0, np.log10(0.5), np.nan])) > 0
    assert np.isnan(plots.lambda_gc(np.array([np.nan])))


def test_manhattan_and_qq__fast_on_100k_points(tmp_path):
    rng = np.random.default_rng(11)
    n = 100_000
    chrom = np.repeat(np.arange(1, 23).astype(str), n // 22 + 1)[:n]
    pos = rng.integers(1, 2 * 10**8, n)
    p = rng.uniform(size=n)
    p[:3] = [0.0, 1e-30, 1e-9]
    t0 = time.perf_counter()
    out = plots.manhattan(chrom, pos, p, tmp_path / "m.png", title="100k")
    lam = plots.qq(p, tmp_path / "q.png", title="100k")
    assert time.perf_counter() - t0 < 10
    assert 0.9 < lam < 1.1
    for png in (out, tmp_path / "q.png"):
        with Image.open(png) as img:
            assert img.format == "PNG" and len(img.convert("RGB").getcolors(maxcolors=1 << 20) or ()) > 20


def test_manhattan__rejects_mismatched_lengths(tmp_path):
    with pytest.raises(InputError, match="differ"):
        plots.manhattan(["1", "2"], np.array([1, 2, 3]), np.array([0.1, 0.2]), tmp_path / "x.png", title="x")
    with pytest.raises(InputError, match="not a PNG"):
        html.Figure("bad", b"GIF89a").data()


@pytest.mark.browser
def test_render_report__headless_chromium_draws_the_page(tmp_path):
    """Renders with headless Chromium (CI installs it; never skipped)."""
    path, _ = _report(tmp_path)
    png = tmp_path / "report.png"
    done = subprocess.run(
        [sys.executable, str(RENDER), str(path), str(png), "--width", "1280", "--height", "1600"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    with Image.open(png) as img:
        assert img.size == (1280, 1600)
        rgb = img.convert("RGB")
        colors = rgb.getcolors(maxcolors=1 << 20)
    assert colors is not None and len(colors) > 200  # text, plots, header: far from blank
    most_common = max(colors)[0] / (1280 * 1600)
    assert most_common < 0.8
    # the header bar is drawn in the accent colour
    assert rgb.getpixel((640, 20))[2] > rgb.getpixel((640, 20))[0]
