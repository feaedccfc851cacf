"""Writing a job's results: the writer of each result type, chosen by :func:`write_result`.

An analysis returns a frozen result object (:meth:`fedstat.stats.base.JobAnalysis.result`); it
never writes a file. This module maps each result type to its writer, statically, at import:

=============================================  ====================================================
:class:`~fedstat.stats.allele.AlleleReports`    ``.afreq``, ``.gcount``, ``.hardy``, ``.hardy.x``, ``.vmiss``
                                               (:func:`fedstat.formats.plink2.write_reports`)
:class:`~fedstat.stats.pca.PcaResult`           ``.eigenval``, ``.eigenvec.allele``
:class:`~fedstat.stats.glm.GlmTables`           ``.<PHENO>.glm.*`` (:func:`~fedstat.formats.plink2.write_glm`)
:class:`~fedstat.stats.assoc.AssocTables`       ``.assoc``, ``.model`` (:mod:`fedstat.formats.plink1`)
:class:`~fedstat.report.gwas.GwasReport`        GWAS-SSF, plots, ``.report.html``
:class:`~fedstat.stats.base.Results`            each part, in order
``None``                                       nothing
=============================================  ====================================================

A new analysis gets its files written by returning its own frozen result type and registering
that type's writer here.
"""

from __future__ import annotations

from functools import singledispatch
from pathlib import Path

from fedstat.formats import plink1, plink2
from fedstat.report.gwas import GwasReport, write_gwas
from fedstat.stats.allele import AlleleReports
from fedstat.stats.assoc import AssocTables
from fedstat.stats.base import Results
from fedstat.stats.glm import GlmTables
from fedstat.stats.pca import PcaResult

__all__ = ["write_result"]


@singledispatch
def write_result(result: object, out_prefix: Path) -> list[Path]:
    """Write ``result`` as files named ``<out_prefix>.<extension>`` (atomically); returns their paths.

    Raises
    ------
    TypeError
        If no writer is registered for the result's type.
    """
    raise TypeError(f"no writer for a result of type {type(result).__name__}")


@write_result.register
def _nothing(result: None, out_prefix: Path) -> list[Path]:
    return []


@write_result.register
def _in_order(result: Results, out_prefix: Path) -> list[Path]:
    return [f for part in result.parts for f in write_result(part, out_prefix)]


write_result.register(AlleleReports, plink2.write_allele_reports)
write_result.register(PcaResult, plink2.write_pca)
write_result.register(GlmTables, plink2.write_glm_tables)
write_result.register(AssocTables, plink1.write_assoc_tables)
write_result.register(GwasReport, write_gwas)
