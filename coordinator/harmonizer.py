"""The coordinator's side of private harmonization (fedstat.privacy.psi).

The coordinator relays signed keys, sealed shares and confirmations it cannot read or forge,
intersects the sites' keyed hashes, and receives the plaintext keys of the intersection only.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from fedstat.data.variants import HAPLOID_CHROMS, Harmonization, VariantTable, harmonize
from fedstat.errors import InputError, JobFailed, ProtocolError
from fedstat.jobs import JobSpec, qc_filters, variant_selection
from fedstat.jobs.options import sex_chromosome_analyses
from fedstat.jobs.par import split_par, split_par_bounds
from fedstat.privacy import psi
from fedstat.privacy.modes import get_mode
from fedstat.protocol import HashAssembler, KeysAssembler, intersection_chunks
from fedstat.wire import site_pb2

#: Messages a site may still send from an abandoned round attempt while an exchange runs.
_LATE = ("sums", "progress", "round_key", "keys", "harmonize_shares", "harmonize_tag")


@dataclass(frozen=True)
class Revealed:
    """One exchange's outcome.

    Attributes
    ----------
    tables : per site, the plaintext keys it revealed (the intersection, in its file order)
    intersection : the hashes present at every site and the number of distinct hashes overall
    n_duplicate, multiallelic, non_snv : per site, counts about its file (aggregate facts)
    multiallelic_split : per site, its multiallelic records split into biallelic ones
    """

    tables: dict[str, VariantTable]
    intersection: psi.Intersection
    n_duplicate: dict[str, int]
    multiallelic: dict[str, int]
    non_snv: dict[str, int]
    multiallelic_split: dict[str, int] = field(default_factory=dict)

    def file_notes(self) -> list[str]:
        """Job-log lines about each site's file: multiallelic records split or skipped, non-SNVs skipped."""
        return [
            f"site {n}: split {self.multiallelic_split.get(n, 0)} multiallelic records into biallelic ones (one per "
            f"SNV ALT); skipped {self.multiallelic[n]} multiallelic records that could not be split and "
            f"{self.non_snv[n]} non-SNV variants"
            for n in sorted(self.multiallelic)
            if self.multiallelic_split.get(n, 0) or self.multiallelic[n] or self.non_snv[n]
        ]


class Exchange:
    """One harmonization exchange among ``names``, driven by a job runner's send/receive."""

    def __init__(self, runner, names: list[str], attempt: int, timeout_s: float):  # noqa: ANN001
        self.runner, self.job_id, self.attempt = runner, runner.job_id, attempt
        self.names = sorted(names)
        self.timeout_s = timeout_s

    def _collect(self, what: str, step: Callable[[str, site_pb2.SiteMessage], bool | None]) -> None:
        """Receive until ``step`` returned True for every site; ``step`` returns None for a
        message it does not take (a late one of an earlier step or attempt)."""
        waiting = set(self.names)
        deadline = time.monotonic() + self.timeout_s
        while waiting:
            site, msg = self.runner.receive(deadline, what, lambda: sorted(waiting))
            if site not in waiting:
                continue
            kind = msg.WhichOneof("kind")
            body = getattr(msg, kind)
            taken = step(site, msg) if getattr(body, "attempt", None) == self.attempt else None
            if taken is None:
                if kind in _LATE:
                    continue
                raise ProtocolError(f"site {site} sent {kind} during harmonization")
            if taken:
                waiting.discard(site)

    def intersection_for(self, site: str, common: psi.Intersection) -> np.ndarray:
        """The hashes ``site`` is asked to reveal: the intersection (a deviating coordinator's seam)."""
        return common.hashes

    def run(self) -> Revealed:
        job_id, attempt, names = self.job_id, self.attempt, self.names
        for name in names:
            self.runner.send(
                name, keys_request=site_pb2.KeysRequest(job_id=job_id, participants=names, attempt=attempt)
            )
        keys: dict[str, site_pb2.RoundKey] = {}

        def on_key(site: str, msg: site_pb2.SiteMessage) -> bool | None:
            k = msg.round_key
            if msg.WhichOneof("kind") != "round_key" or k.round != psi.HARMONIZE_ROUND:
                return None
            if k.site != site:
                raise ProtocolError(f"site {site} sent a harmonization key in the name of {k.site!r}")
            keys[site] = k
            return True

        self._collect("harmonization keys", on_key)
        relay = site_pb2.HarmonizeRelay(job_id=job_id, attempt=attempt, peer_keys=[keys[n] for n in names])
        for name in names:
            self.runner.send(name, harmonize=relay)
        sealed: dict[str, list[site_pb2.HarmonizeShare]] = {n: [] for n in names}

        def on_shares(site: str, msg: site_pb2.SiteMessage) -> bool | None:
            if msg.WhichOneof("kind") != "harmonize_shares":
                return None
            for s in msg.harmonize_shares.shares:
                if s.sender != site or s.recipient not in sealed:
                    raise ProtocolError(f"site {site} sent a key share that is not its own for a participant")
                sealed[s.recipient].append(s)
            return True

        self._collect("harmonization key shares", on_shares)
        for name in names:
            self.runner.send(
                name, harmonize=site_pb2.HarmonizeRelay(job_id=job_id, attempt=attempt, shares=sealed[name])
            )
        hashes = {n: HashAssembler(f"site {n}'s harmonization hashes") for n in names}

        def on_hashes(site: str, msg: site_pb2.SiteMessage) -> bool | None:
            if msg.WhichOneof("kind") != "keys" or msg.keys.revealed:
                return None
            return hashes[site].add(msg.keys)

        self._collect("variant hashes", on_hashes)
        common = psi.intersect({n: a.hashes() for n, a in hashes.items()})
        for name in names:
            for c in intersection_chunks(job_id, attempt, self.intersection_for(name, common)):
                self.runner.send(name, intersection=c)
        tags: dict[str, site_pb2.HarmonizeTag] = {}

        def on_tag(site: str, msg: site_pb2.SiteMessage) -> bool | None:
            if msg.WhichOneof("kind") != "harmonize_tag":
                return None
            tags[site] = msg.harmonize_tag
            return True

        self._collect("confirmations of the intersection", on_tag)
        relay = site_pb2.HarmonizeRelay(job_id=job_id, attempt=attempt, tags=[tags[n] for n in names])
        for name in names:
            self.runner.send(name, harmonize=relay)
        revealed = {n: KeysAssembler() for n in names}

        def on_revealed(site: str, msg: site_pb2.SiteMessage) -> bool | None:
            if msg.WhichOneof("kind") != "keys" or not msg.keys.revealed:
                return None
            if msg.keys.total != len(common.hashes):
                raise ProtocolError(
                    f"site {site} revealed {msg.keys.total} variants for an intersection of {len(common.hashes)}"
                )
            return revealed[site].add(msg.keys)

        self._collect("the intersection's variant keys", on_revealed)
        return Revealed(
            tables={n: a.table() for n, a in revealed.items()},
            intersection=common,
            n_duplicate={n: a.duplicates for n, a in hashes.items()},
            multiallelic={n: a.multiallelic for n, a in hashes.items()},
            non_snv={n: a.non_snv for n, a in hashes.items()},
            multiallelic_split={n: a.multiallelic_split for n, a in hashes.items()},
        )


def harmonize_revealed(revealed: Revealed) -> Harmonization:
    """:func:`fedstat.data.variants.harmonize` over the revealed intersection, with the counts the
    sites' hashes give (keys absent at some site; keys listed twice at a site)."""
    try:
        h = harmonize(revealed.tables, keys_unique=True)  # each site revealed distinct keys
    except InputError as exc:
        raise JobFailed(f"harmonization failed: {exc}") from exc
    n = len(revealed.intersection.hashes)
    if len(h.variants) != n or any(
        len(p.local_index) != n or np.any(np.bincount(p.local_index, minlength=n) != 1) for p in h.plans.values()
    ):
        raise JobFailed(
            "harmonization failed: the variant keys the sites revealed do not match the intersection of their "
            f"hashes ({len(h.variants)} of {len(revealed.intersection.hashes)} in common); a site's agent is faulty"
        )
    return replace(h, n_excluded=revealed.intersection.n_excluded, n_duplicate=revealed.n_duplicate)


def site_rows(table: VariantTable, local_index: np.ndarray) -> VariantTable:
    """A site's revealed rows in the global order of a plan."""
    return table.take(np.asarray(local_index, dtype=np.int64))


def select_variants(h: Harmonization, spec: JobSpec) -> tuple[Harmonization, list[str]]:
    """The job's variants: the harmonized ``h``, its chrX pseudo-autosomal positions renamed PAR1/PAR2
    under ``--split-par`` (:mod:`fedstat.jobs.par`), as the spec's variant selection (``--chr``,
    ``--extract``, ...; :mod:`fedstat.jobs.selection`) chooses, less the variants on chrX, chrY and
    MT where the job cannot count them, with the job-log lines saying what each left out. Every
    harmonization of a job (the first and each after a reconnect) goes through here, so all select
    the same variants.

    Variants on X, Y and MT are counted by ``--freq``, ``--geno-counts``, ``--hardy`` and
    ``--missing`` as plink2 counts them (males haploid on X, Y in males only, MT haploid,
    ``.hardy.x``; :mod:`fedstat.stats.sexchr`), and regressed by ``--glm`` as plink2 does (SEX
    covariate on X, Y over the males, Y and MT haploid; :mod:`fedstat.stats.glm_sexchr`) unless the
    job has ``--assoc``/``--model`` too. ``--pca``, ``--assoc`` and ``--model`` leave them out: their
    results are plink2's with ``--not-chr X,Y,MT``. A job with ``--mind``, ``--geno``, ``--hwe`` or ``--maf``
    leaves them out of everything, since those filters do not count them yet, and so does a job
    under differential privacy (noisy counts by sex are not calibrated yet). XY, PAR1 and PAR2
    (pseudo-autosomal, diploid) are counted as autosomes.

    Raises
    ------
    JobFailed
        If no variant is left.
    """
    lines: list[str] = []
    bounds = split_par_bounds(spec.options)
    if bounds is not None:
        try:
            variants, n_par = split_par(h.variants, bounds)
        except InputError as exc:
            raise JobFailed(str(exc)) from exc
        h = replace(h, variants=variants)
        lines.append(f"--split-par: {n_par} variants on chrX renamed PAR1/PAR2")
    chrom = h.variants.chrom.astype(str)
    sex = np.isin(chrom, sorted(HAPLOID_CHROMS))
    reports, others = sex_chromosome_analyses(spec)
    mind, qc, _ = qc_filters(spec)
    noisy = get_mode(spec.privacy).adds_noise
    counted = bool(reports) and mind is None and not qc.active and not noisy
    keep = np.ones(len(chrom), dtype=bool)
    selection = variant_selection(spec)
    if selection.flags:
        chosen = selection.keep(h.variants)
        flags = "/".join(selection.flags)
        if not chosen.any() or not (counted or (chosen & ~sex).any()):
            also = f" ({int(chosen.sum())} on chrX/chrY/MT, which this job leaves out)" if chosen.any() else ""
            raise JobFailed(
                f"no variant selected: {flags} keep none of the {len(h.variants)} harmonized variants{also}"
            )
        lines.append(f"{int(chosen.sum())} of {len(chosen)} variants selected by {flags}")
        keep &= chosen
    n_sex = int((keep & sex).sum())
    if n_sex and not counted:
        if not reports:
            why = f"--{'/--'.join(others)} do not count them yet"
        elif noisy:
            why = f"--privacy {spec.privacy} does not count them by sex yet"
        else:
            why = "--mind/--geno/--hwe/--maf do not count them yet"
        lines.append(f"{n_sex} variants on chrX/chrY/MT left out: {why} (results are plink2's with --not-chr X,Y,MT)")
        keep &= ~sex
    elif n_sex and others:
        if not (keep & ~sex).any():
            raise JobFailed(
                f"no variant left for --{'/--'.join(others)}: all {int(keep.sum())} selected variants are on "
                "chrX/chrY/MT, which they leave out"
            )
        lines.append(
            f"{n_sex} variants on chrX/chrY/MT are counted in --{'/--'.join(reports)} only: --{'/--'.join(others)} "
            "leave them out (their results are plink2's with --not-chr X,Y,MT)"
        )
    if not keep.any():
        raise JobFailed(f"no variant left: all {len(h.variants)} harmonized variants are on chrX/chrY/MT")
    return (h if keep.all() else h.take(np.flatnonzero(keep))), lines


def variants_digest(table: VariantTable) -> str:
    """A digest of a variant list (chromosome, position, ID, alleles), to check it is unchanged."""
    d = hashlib.sha256()
    for name in ("chrom", "pos", "id", "ref", "alt"):
        d.update("\x1f".join(map(str, getattr(table, name))).encode() + b"\x1e")
    return d.hexdigest()
