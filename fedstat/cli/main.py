"""The ``fedstat`` command. The only place errors become exit codes and one-line messages.

Exit codes: 0 success, 1 a job failed or was refused, 2 bad usage or input, 3 cannot reach or
authenticate to a peer, 4 internal error.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import fedstat
from fedstat.cli.common import add_profile
from fedstat.cli.modifiers import add_mach_r2_filter, split_names, submit_options
from fedstat.cli.selection import add_variant_selection, selection_options
from fedstat.counts import WITHHELD, describe_count
from fedstat.errors import (
    AuthError,
    ConfigError,
    FedstatError,
    InputError,
    JobFailed,
    PolicyRefused,
    SiteUnavailable,
)

if TYPE_CHECKING:
    from fedstat.wire import analyst_pb2, common_pb2

EPILOG_SUBMIT = """\
examples:
  fedstat submit --profile W/analyst.toml --freq --geno-counts --hardy --missing --out results/run1
  fedstat submit --profile W/analyst.toml --glm --pheno-name QT,CC --covar-name AGE,SEX,PC1-PC10 --covar-variance-standardize --out results/gwas
  fedstat submit --profile W/analyst.toml --assoc --model --pheno-name CC --out results/cc
  fedstat submit --profile W/analyst.toml --freq --sites AFR,EUR --no-wait
  fedstat submit --profile W/analyst.toml --freq --sample-set unrelated --out results/unrelated
  # the whole pipeline as one job: QC, then PCA, then a GWAS with the PCs as covariates
  fedstat submit --profile W/analyst.toml --maf 0.01 --geno 0.05 --hwe 1e-6 --pca 10 \
      --glm --pheno-name CC --covar-name AGE,SEX,PC1-PC10 --covar-variance-standardize --out results/pipeline

Output files are named as plink2 names them: <out>.afreq, <out>.gcount, <out>.hardy, <out>.vmiss,
<out>.<PHENO>.glm.linear / .glm.logistic.hybrid, <out>.assoc, <out>.model, <out>.eigenval and
<out>.eigenvec.allele (--pca; the per-participant .eigenvec stays at the sites); --glm adds
<out>.<PHENO>.ssf.tsv.gz (GWAS-SSF) with -meta.yaml, Manhattan and QQ plots and <out>.report.html;
every job writes <out>.provenance.json (fedstat version, job spec, sites and counts, privacy mode).
"""


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="fedstat",
        description="Federated, privacy-preserving genomics statistics: plink2 results on data that never leaves its sites.",
        epilog="Start with `fedstat demo`, or see README.md for operators' and analysts' guides.",
    )
    ap.add_argument("--version", action="version", version=f"fedstat {fedstat.__version__}")
    ap.add_argument("-v", "--verbose", action="store_true", help="log debug details (never participant data)")
    ap.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=None,
        help="daemon logs as text (default) or one JSON object per line; overrides the config's log_format",
    )
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    # analyst
    p = sub.add_parser(
        "submit",
        help="submit a job and (by default) wait for its results",
        description="Submit a federated job. Flags follow plink2.",
        epilog=EPILOG_SUBMIT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_profile(p)
    g = p.add_argument_group("analyses (plink2 flags)")
    g.add_argument(
        "--freq",
        nargs="*",
        metavar="MODIFIER",
        default=None,
        help="allele frequencies → <out>.afreq. Modifier as plink2: cols=… selects the columns, either a list "
        "(cols=chrom,pos,ref,alt,reffreq,nobs) or edits of the default chrom,ref,alt,altfreq,nobs "
        "(cols=+pos,+reffreq): chrom, pos, ref, alt1, alt, reffreq, alt1freq, and one of altfreq, freq, eq, "
        "eqz, alteq, alteqz, numeq, altnumeq; machr2 (MaCH r², from the sites' sums of squared dosages); nobs",
    )
    g.add_argument("--geno-counts", action="store_true", help="genotype counts → <out>.gcount")
    g.add_argument("--hardy", action="store_true", help="exact Hardy–Weinberg test → <out>.hardy")
    g.add_argument(
        "--missing",
        action="store_true",
        help="variant missingness → <out>.vmiss (per-sample missingness stays at the sites)",
    )
    g.add_argument(
        "--glm",
        nargs="*",
        metavar="MODIFIER",
        default=None,
        help="association: linear (quantitative) or logistic with firth-fallback (1/2 case/control) regression "
        "per variant → <out>.<PHENO>.glm.linear / .glm.logistic.hybrid, plus GWAS-SSF, plots and an HTML "
        "report. Modifiers as plink2: firth, no-firth; covariate rows are hidden unless show-covar; cols=… "
        "selects the columns as plink2 2.00a3.5 names them, a list (cols=chrom,pos,ref,alt,a1freq,beta,se,p) or "
        "edits of the default chrom,pos,ref,alt,firth,test,nobs,orbeta,se,ci,tz,p,err "
        "(cols=+a1freq,+a1freqcc): chrom, pos, ref, alt1, alt, ax, a1count, totallele, a1freq; logistic only "
        "a1countcc, totallelecc, a1freqcc (A1 counts and frequencies in cases and controls), firth; test, "
        "nobs, beta (logistic: log-odds instead of OR), orbeta, se, ci, tz, p, err. Written from the "
        "released sums: gcountcc and machr2 would need new ones and are refused",
    )
    g.add_argument(
        "--ci",
        type=float,
        metavar="SIZE",
        help="with --glm: add SIZE confidence intervals, e.g. --ci 0.95 adds L95 and U95 after SE "
        "(BETA ± z·SE with the normal quantile z, as plink2; odds-ratio scale for logistic)",
    )
    g.add_argument(
        "--adjust",
        nargs="*",
        metavar="MODIFIER",
        default=None,
        help="with --glm: multiple-testing corrections of each phenotype's ADD p-values → "
        "<out>.<PHENO>.glm.linear.adjusted (…logistic.hybrid.adjusted): GC, Bonferroni, Holm, Sidak, "
        "Benjamini-Hochberg and -Yekutieli FDR, sorted by p; λGC goes to the job log. Modifiers as plink2: "
        "gc (correct the GC p-values), log10 (-log10 values), cols=+qq,+pos,+ref,+alt1,+alt. Computed at the "
        "coordinator from the released results: no extra round at the sites",
    )
    g.add_argument(
        "--covar-variance-standardize",
        nargs="*",
        metavar="COVARIATE",
        default=None,
        help="with --glm: rescale quantitative covariates (all, or those named) to mean 0 and SD 1 over the "
        "job's cohort, as plink2 does; needed when covariate scales differ too much for plink2's "
        "single-precision fit (e.g. year of birth), which plink2 and fedstat refuse otherwise. Computed from "
        "the cohort's pooled sums: no extra release",
    )
    g.add_argument("--assoc", action="store_true", help="allelic chi-square test (PLINK 1.9) → <out>.assoc")
    g.add_argument(
        "--model", action="store_true", help="genotypic tests incl. Cochran-Armitage TREND (PLINK 1.9) → <out>.model"
    )
    g.add_argument(
        "--pca",
        type=int,
        metavar="K",
        help="principal components over the variants QC keeps → <out>.eigenval and <out>.eigenvec.allele "
        "(variant weights); participants' scores stay at their sites, and --covar-name PC1-PCK uses them",
    )
    q = p.add_argument_group(
        "quality control (plink2 flags; applied before the analyses, in plink2's order)",
        "--mind runs at each site on its own participants; --geno, --hwe and --maf apply to the pooled counts "
        "and keep exactly the variants plink2 keeps on the pooled data. The job log shows what each removed.",
    )
    q.add_argument("--mind", type=float, metavar="RATE", help="drop participants missing more than RATE of calls")
    q.add_argument("--geno", type=float, metavar="RATE", help="drop variants missing more than RATE of calls")
    q.add_argument(
        "--hwe",
        nargs="+",
        metavar=("P", "controls"),
        help="drop variants with Hardy-Weinberg exact-test p below P; add 'controls' to test the controls of the "
        "case/control --pheno-name only",
    )
    q.add_argument("--maf", type=float, metavar="FREQ", help="drop variants with minor allele frequency below FREQ")
    add_mach_r2_filter(q)
    q.add_argument(
        "--require-pheno",
        nargs="?",
        const="",
        default=None,
        metavar="A,B",
        help="leave out, at every site and before anything else, participants missing any --pheno-name phenotype, "
        "or any phenotype named here (as plink2 --require-pheno [names]): the job's analyses then share one "
        "cohort, which the sites' release ledgers need when phenotypes have a few missing values. Name the "
        "phenotypes of your other analyses to keep every job on their common cohort, e.g. "
        "--assoc --pheno-name CC --require-pheno QT,CC",
    )
    q.add_argument(
        "--require-covar",
        action="store_true",
        help="likewise for participants missing any --covar-name covariate (as plink2 --require-covar)",
    )
    add_variant_selection(p)
    p.add_argument(
        "--sample-set",
        metavar="NAME",
        help="run over the sample set NAME that each site's operator defines (e.g. unrelated, qc_pass; "
        "`fedstat jobs policies` lists them), as plink2 --keep would over the union of the sites' sets. "
        "A set is a name, never a list of IDs: two jobs over lists that differ by one person would give that "
        "person's genotype sums (a differencing 'tracker'), so participant IDs are not accepted. Releases over "
        "a set pass each site's release ledger like any other cohort; a site without the set refuses the job",
    )
    p.add_argument("--keep", "--remove", dest="id_list", metavar="FILE", help=argparse.SUPPRESS)  # refused
    p.add_argument("--out", required=True, help="output prefix, e.g. results/run1 (as plink2's --out)")
    p.add_argument(
        "--genome-assembly",
        default="NR",
        metavar="BUILD",
        help="genome build of the sites' positions for the GWAS-SSF metadata, e.g. GRCh38 (default NR: not reported)",
    )
    p.add_argument("--pheno-name", default="", metavar="A,B", help="phenotype columns of the sites' samples.tsv")
    p.add_argument(
        "--covar-name", default="", metavar="A,B", help="covariate columns for --glm; ranges like PC1-PC10 allowed"
    )
    p.add_argument(
        "--privacy",
        default="secagg",
        help="how sums leave the sites: secagg (default; pairwise masks, the coordinator sees only totals), "
        "paillier (sites encrypt under a key this command generates; the coordinator multiplies ciphertexts "
        "and this command decrypts the totals, so it must keep running), "
        "dp (secagg plus distributed discrete Gaussian noise for --epsilon/--delta, charged to each site's "
        "budget; counts-based analyses), paillier,dp (the same noise under paillier) "
        "or none (plaintext sums inside mutual TLS, if every site allows it)",
    )
    p.add_argument(
        "--paillier-bits",
        type=int,
        default=2048,
        choices=(2048, 3072),
        help="--privacy paillier: modulus size of the job's key (default 2048, about 112-bit security)",
    )
    p.add_argument("--epsilon", type=float, metavar="E", help="--privacy dp: the job's ε (each site charges it)")
    p.add_argument("--delta", type=float, metavar="D", help="--privacy dp: the job's δ, e.g. 1e-6")
    p.add_argument(
        "--purpose",
        default="GRU",
        metavar="DUO",
        help="purpose of use as a DUO code: GRU (general research, default), HMB (health/medical), "
        "DS:MONDO:0005148 (that disease), POA (population origins/ancestry); add ,MDS for methods "
        "development and ,COMMERCIAL for commercial use. Each site includes only participants whose "
        "consent matches.",
    )
    p.add_argument("--sites", default="", metavar="A,B", help="sites to run on (default: every connected site)")
    p.add_argument("--dataset", default="", help="dataset name at each site (default: each site's first)")
    p.add_argument("--block-size", type=int, default=0, metavar="N", help="variants per block at the sites")
    p.add_argument("--no-wait", action="store_true", help="print the job id and return immediately")

    jobs = sub.add_parser("jobs", help="list, show, cancel jobs and fetch their results").add_subparsers(
        dest="jobs_command", required=True, metavar="ACTION"
    )
    p = jobs.add_parser("list", help="your jobs, newest first")
    add_profile(p)
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--all", action="store_true", help="every analyst's jobs (needs the view-all role)")
    p.add_argument("--state", choices=("QUEUED", "RUNNING", "DONE", "FAILED", "CANCELLED"), help="only jobs in STATE")
    p = jobs.add_parser("show", help="one job: state, sites, log")
    add_profile(p)
    p.add_argument("job_id")
    p = jobs.add_parser("cancel", help="cancel a job at the coordinator and every site")
    add_profile(p)
    p.add_argument("job_id")
    p = jobs.add_parser("results", help="download a finished job's files")
    add_profile(p)
    p.add_argument("job_id")
    p.add_argument("--out", required=True, help="output prefix or directory: files go to its directory")
    p = jobs.add_parser("sites", help="sites connected to the coordinator and their datasets")
    add_profile(p)
    p = jobs.add_parser(
        "policies",
        help="each connected site's disclosure-control settings (privacy modes, minimum cohort and cell "
        "counts, --glm parameter ratio, DP budget left, the names of its sample sets) and the strictest, which "
        "your job must meet",
    )
    add_profile(p)
    p.add_argument("--dataset", default="", help="dataset name at each site (default: each site's first)")

    # operators
    ca = sub.add_parser("ca", help="consortium certificate authority").add_subparsers(
        dest="ca_command", required=True, metavar="ACTION"
    )
    p = ca.add_parser("init", help="create a CA (ca.pem, ca.key) in DIR")
    p.add_argument("dir", type=Path)
    p = ca.add_parser(
        "issue",
        help="issue a certificate for a coordinator, site or analyst",
        epilog="example: fedstat ca issue ca/ --name AFR --role site --out certs/",
    )
    p.add_argument("ca_dir", type=Path)
    p.add_argument("--name", required=True, help="the party's name (site name, analyst name)")
    p.add_argument("--role", required=True, choices=("coordinator", "site", "analyst"))
    p.add_argument("--host", action="append", default=[], help="DNS name or IP (coordinator; repeatable)")
    p.add_argument("--out", required=True, type=Path, help="directory for NAME.pem and NAME.key")
    p = ca.add_parser(
        "revoke",
        help="revoke a certificate: adds it to CA_DIR/crl.pem, which the coordinator and sites re-read",
        epilog="example: fedstat ca revoke ca/ --cert certs/bob.pem --reason key_compromise",
    )
    p.add_argument("ca_dir", type=Path)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--cert", type=Path, help="the certificate's PEM file")
    which.add_argument("--serial", help="the certificate's serial number (hex, as `fedstat ca revoked` prints)")
    p.add_argument(
        "--reason",
        default="unspecified",
        choices=("unspecified", "key_compromise", "superseded", "cessation_of_operation"),
    )
    p = ca.add_parser("revoked", help="list the certificates CA_DIR/crl.pem revokes")
    p.add_argument("ca_dir", type=Path, help="the CA directory made by `fedstat ca init`")
    p = ca.add_parser(
        "crl",
        help=f"re-sign CA_DIR/crl.pem with a fresh nextUpdate ({pki_days()} days): the daemons and analysts "
        "refuse a stale revocation list, so run this regularly (e.g. weekly from cron) and copy crl.pem out",
    )
    p.add_argument("ca_dir", type=Path, help="the CA directory made by `fedstat ca init`")
    p = ca.add_parser(
        "rotate",
        help="new CA key and certificate; ca.pem becomes a bundle of the new and old CA, so certificates "
        "issued so far stay valid while parties are re-issued one by one",
        epilog="then: copy ca.pem to every party (daemons re-read it), re-issue certificates with "
        "`fedstat ca issue`, and revoke the old ones",
    )
    p.add_argument("ca_dir", type=Path)

    coordinator = sub.add_parser("coordinator", help="the coordinator daemon").add_subparsers(
        dest="coordinator_command", required=True, metavar="ACTION"
    )
    s = coordinator.add_parser("serve", help="run the coordinator (foreground; SIGTERM drains)")
    s.add_argument("--config", required=True, type=Path)
    from fedstat.cli import audit as audit_cli  # noqa: PLC0415 - `site audit` and `coordinator audit-heads`

    audit_cli.add_coordinator_parser(coordinator)

    site = sub.add_parser("site", help="the site agent daemon").add_subparsers(
        dest="site_command", required=True, metavar="ACTION"
    )
    s = site.add_parser("serve", help="run the site agent (foreground; dials out to the coordinator)")
    s.add_argument("--config", required=True, type=Path)
    s = site.add_parser("check", help="open and validate the site's datasets, building caches")
    s.add_argument("--config", required=True, type=Path)
    audit_cli.add_site_audit_parser(site)

    p = sub.add_parser(
        "status",
        help="the coordinator's state: sites connected, jobs by state, round latencies (role admin)",
    )
    add_profile(p)
    p.add_argument("--json", action="store_true", help="print it as JSON (for monitoring)")
    p = sub.add_parser("whoami", help="your name and roles on the coordinator")
    add_profile(p)

    from fedstat.cli import schedule  # noqa: PLC0415 - `fedstat schedule` and `fedstat reports`

    schedule.add_parsers(sub)

    # proof of concept on one machine
    poc = sub.add_parser("poc", help="a whole consortium on this machine, for trying fedstat").add_subparsers(
        dest="poc_command", required=True, metavar="ACTION"
    )
    p = poc.add_parser(
        "prepare",
        help="make certificates and configs for a coordinator, sites and an analyst",
        epilog="example: fedstat poc prepare --workspace W --site AFR=data/afr --site EUR=data/eur",
    )
    p.add_argument("--workspace", required=True, type=Path)
    p.add_argument(
        "--site",
        action="append",
        required=True,
        metavar="NAME=DIR",
        help="a site and its data directory (genotypes.* + samples.tsv); repeat per site",
    )
    p.add_argument(
        "--dataset-option",
        action="append",
        metavar="SITE:KEY=VALUE",
        help="a key of the site's [[datasets]] entry in site.toml: vcf_dosage (DS, HDS, GP or GT: the "
        "FORMAT field a VCF's dosages are read from) or bgen_ref (first or last: a BGEN's REF allele), "
        "e.g. VCF:vcf_dosage=DS; repeat per key",
    )
    p.add_argument("--analyst", default="analyst", help="the analyst's name (default: analyst)")
    p.add_argument("--port", type=int, default=0, help="coordinator port (default: a free one)")
    p.add_argument("--skip-check", action="store_true", help="do not open the datasets now")
    p = poc.add_parser(
        "restart",
        help="stop and start one component (to exercise faults: --signal KILL is a crash)",
        epilog="example: fedstat poc restart --workspace W --component coordinator --signal KILL",
    )
    p.add_argument("--workspace", required=True, type=Path)
    p.add_argument("--component", required=True, help="coordinator, or a site's name")
    p.add_argument("--signal", default="TERM", choices=("TERM", "KILL"), help="TERM drains (default), KILL crashes")
    p.add_argument("--down", type=float, default=0.0, metavar="S", help="stay stopped S seconds before starting")
    for name, helptext in (
        ("start", "start the coordinator and every site agent in the background"),
        ("status", "each component: pid, address, health"),
        ("stop", "stop every component (SIGTERM, then SIGKILL after 15 s)"),
    ):
        p = poc.add_parser(name, help=helptext)
        p.add_argument("--workspace", required=True, type=Path)

    p = sub.add_parser("demo", help="simulate a 3-site consortium and run a whole job end to end")
    p.add_argument(
        "--workspace",
        type=Path,
        default=Path("fedstat-demo"),
        help="where data, daemons and results go (default: ./fedstat-demo)",
    )
    p.add_argument("--samples", type=int, default=3000, help="participants in all (default 3000)")
    p.add_argument("--variants", type=int, default=10000, help="variants (default 10000)")
    p.add_argument("--seed", type=int, default=2026)
    return ap


#: Without a terminal (logs, CI), progress is printed on every phase change and at most this often.
PROGRESS_LOG_INTERVAL_S = 5.0


def _progress_printer() -> Callable[[analyst_pb2.JobStatus], None]:
    last_line, last_phase, last_at = "", "", 0.0
    is_tty = sys.stderr.isatty()

    def show(status: analyst_pb2.JobStatus) -> None:
        nonlocal last_line, last_phase, last_at
        sites = []
        for s in status.sites:
            blocks = f" {s.blocks_done}/{s.blocks_total}" if s.blocks_total else ""
            sites.append(f"{s.site}:{s.state.lower()}{blocks}")
        phase = f"{status.state.lower()} {status.phase}"
        line = f"[{status.job_id}] {phase}  " + " ".join(sites)
        if line == last_line:
            return
        now = time.monotonic()
        if is_tty:
            sys.stderr.write("\r\033[K" + line)
        elif phase != last_phase or now - last_at >= PROGRESS_LOG_INTERVAL_S:
            sys.stderr.write(line + "\n")
            last_phase, last_at = phase, now
        else:
            return
        sys.stderr.flush()
        last_line = line

    return show


def cmd_submit(args: argparse.Namespace) -> int:
    from fedstat.client import Client  # noqa: PLC0415
    from fedstat.errors import InputError  # noqa: PLC0415
    from fedstat.jobs import JobSpec  # noqa: PLC0415
    from fedstat.privacy.modes import get_mode  # noqa: PLC0415

    flags = (
        ("freq", args.freq is not None),
        ("geno-counts", args.geno_counts),
        ("hardy", args.hardy),
        ("missing", args.missing),
        ("pca", args.pca is not None),
        ("glm", args.glm is not None),
        ("assoc", args.assoc),
        ("model", args.model),
    )
    analyses = tuple(a for a, on in flags if on)
    options = submit_options(args)
    options.update(selection_options(args))
    out = Path(args.out)
    spec = JobSpec(
        analyses=analyses,
        pheno_names=split_names(args.pheno_name),
        covar_names=split_names(args.covar_name),
        privacy=args.privacy,
        purpose=args.purpose,
        sites=split_names(args.sites),
        out_name=out.name,
        block_size=args.block_size,
        dataset=args.dataset,
        options=options,
    ).validated()
    if args.no_wait and get_mode(spec.privacy).needs_public_key:
        raise InputError(
            f"--privacy {spec.privacy} cannot use --no-wait: this command holds the private key and decrypts "
            "each round's totals, so it has to stay until the job ends"
        )
    with Client.from_profile(args.profile) as c:
        job = c.submit(spec, paillier_bits=args.paillier_bits)
        if args.no_wait:
            print(job.job_id)
            return 0
        print(f"submitted job {job.job_id}", file=sys.stderr)
        started = time.monotonic()
        try:
            final = c.wait(job.job_id, progress=_progress_printer())
        finally:
            if sys.stderr.isatty():
                sys.stderr.write("\n")
        files = c.fetch_results(final.job_id, out.parent)
    print(
        f"job {final.job_id} done in {time.monotonic() - started:.1f} s; "
        f"{_total_participants(final.sites)} at {len(final.sites)} sites"
    )
    for f in files:
        print(f"  {f}")
    return 0


def _count(site: analyst_pb2.SiteStatus) -> str:
    """A site's participants as it reported them (coarsened or withheld; :mod:`fedstat.counts`)."""
    return describe_count(site.cohort_size, site.count_granularity, "").strip()


def _total_participants(sites: Sequence[analyst_pb2.SiteStatus]) -> str:
    total = sum(s.cohort_size for s in sites)
    if any(s.count_granularity == WITHHELD for s in sites):
        return "participants withheld (differential privacy)"
    coarse = any(s.count_granularity != 1 for s in sites)
    return f"{'at least ' if coarse else ''}{total} participants"


def _print_job(j: analyst_pb2.JobStatus, *, detail: bool) -> None:
    print(
        f"{j.job_id}  {j.state:<9} {j.created_at}  {' '.join('--' + a for a in j.spec.analyses)}"
        + (f"  error: {j.error}" if j.error and not detail else "")
    )
    if detail:
        print(f"  phase: {j.phase}   privacy: {j.spec.privacy}   analyst: {j.analyst}")
        if j.error:
            print(f"  error: {j.error}")
        for s in j.sites:
            print(
                f"  site {s.site:<10} {s.state:<9} participants={_count(s)} blocks={s.blocks_done}/{s.blocks_total}"
                + (f"  {s.detail}" if s.detail else "")
            )
        for line in j.log:
            print(f"  | {line}")
        for f in j.result_files:
            print(f"  file: {f}")


def cmd_jobs(args: argparse.Namespace) -> int:
    from fedstat.client import Client  # noqa: PLC0415

    with Client.from_profile(args.profile) as c:
        if args.jobs_command == "list":
            jobs = c.list_jobs(args.limit, all_analysts=args.all, state=args.state or "")
            if not jobs:
                print("no jobs yet")
            for j in jobs:
                _print_job(j, detail=False)
        elif args.jobs_command == "show":
            _print_job(c.get(args.job_id), detail=True)
        elif args.jobs_command == "cancel":
            j = c.cancel(args.job_id)
            print(f"{j.job_id} {j.state}")
        elif args.jobs_command == "results":
            out = Path(args.out)
            directory = out if out.is_dir() or args.out.endswith("/") else out.parent
            for f in c.fetch_results(args.job_id, directory):
                print(f)
        elif args.jobs_command == "policies":
            _print_policies(c.policies(args.dataset))
        elif args.jobs_command == "sites":
            sites = c.sites()
            if not sites:
                print("no site is connected")
            for s in sites:
                ds = ", ".join(
                    f"{d.name} ({d.format}, {d.n_variants} variants)" if d.ok else f"{d.name} (BROKEN: {d.problem})"
                    for d in s.datasets
                )
                print(f"{s.site:<10} since {s.connected_since}  fedstat {s.agent_version}  {ds}")
    return 0


def _print_policies(resp: analyst_pb2.SitePoliciesResponse) -> None:
    rows: list[common_pb2.DisclosurePolicy] = list(resp.sites)
    if not rows:
        print("no site is connected")
        return
    head = (
        "site",
        "dataset",
        "privacy accepted",
        "min cohort",
        "min cell",
        "glm params/N",
        "min sites",
        "DP ε left",
        "counts by",
        "DP share/analyst",
        "sample sets",
    )
    table = [head]
    for p in [*rows, resp.strictest]:
        table.append(
            (
                p.site or "STRICTEST",
                p.dataset or "-",
                ",".join(p.allowed_privacy) or "(none in common)",
                str(p.min_cohort),
                str(p.min_cell_count) if p.min_cell_count else "off",
                f"{p.max_params_ratio:g}",
                str(p.min_sites),
                f"{p.dp_epsilon_remaining:.3g} (δ={p.dp_delta:g})",
                str(p.count_granularity),
                f"{p.dp_analyst_share:g}",
                ",".join(p.set_names) or "-",
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    for r in table:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    common = list(resp.strictest.allowed_analyses)
    print("analyses every site allows: " + (", ".join("--" + a for a in common) or "none"))


def pki_days() -> int:
    from fedstat.pki import CRL_VALID_DAYS  # noqa: PLC0415

    return CRL_VALID_DAYS


def cmd_ca(args: argparse.Namespace) -> int:
    from fedstat import pki  # noqa: PLC0415

    if args.ca_command == "init":
        cert, key = pki.init_ca(args.dir)
        print(f"CA certificate: {cert}\nCA key (keep it offline): {key}\nrevocation list: {args.dir / 'crl.pem'}")
    elif args.ca_command == "revoke":
        try:
            serial = int(args.serial, 16) if args.serial else None
        except ValueError:
            raise InputError(f"--serial {args.serial!r}: expected a hexadecimal serial number") from None
        serial = pki.revoke(args.ca_dir, cert=args.cert, serial=serial, reason=args.reason)
        print(f"revoked serial {serial:x}; {args.ca_dir / 'crl.pem'} now lists {len(pki.revoked_entries(args.ca_dir))}")
    elif args.ca_command == "revoked":
        entries = pki.revoked_entries(args.ca_dir)
        if not entries:
            print("no certificate is revoked")
        for e in entries:
            print(f"{e.serial:x}  {e.revoked_at.isoformat(timespec='seconds')}  {e.reason}")
    elif args.ca_command == "crl":
        path = pki.refresh_crl(args.ca_dir)
        print(f"re-signed {path}: valid for {pki.CRL_VALID_DAYS} days; copy it to every party")
    elif args.ca_command == "rotate":
        bundle = pki.rotate_ca(args.ca_dir)
        print(f"new CA key in {args.ca_dir / 'ca.key'}; {bundle} is now the bundle of the new and old CA certificates")
        print("next: give every party the new ca.pem, re-issue certificates, then revoke the old ones")
    else:
        cert, key = pki.issue(args.ca_dir, args.out, name=args.name, role=args.role, hosts=tuple(args.host))
        print(f"certificate: {cert}\nkey: {key}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from fedstat.client import Client  # noqa: PLC0415

    with Client.from_profile(args.profile) as c:
        if args.command == "whoami":
            who = c.whoami()
            print(f"{who.name} ({who.role}); roles: {', '.join(who.roles) or 'none'}")
            return 0
        st = c.status()
    if args.json:
        import json  # noqa: PLC0415

        from google.protobuf.json_format import MessageToDict  # noqa: PLC0415

        print(json.dumps(MessageToDict(st, always_print_fields_with_no_presence=True), indent=2, sort_keys=True))
        return 0
    print(f"coordinator fedstat {st.coordinator_version}, up {st.uptime_s / 3600:.1f} h (since {st.started_at})")
    print(f"sites connected: {len(st.sites)}" + (": " + ", ".join(s.site for s in st.sites) if st.sites else ""))
    states = ("QUEUED", "RUNNING", "DONE", "FAILED", "CANCELLED")
    print(
        "jobs: "
        + "  ".join(f"{s} {st.jobs_by_state.get(s, 0)}" for s in states)
        + f"  (at most {st.max_concurrent_jobs} run at once)"
    )
    print(f"decryptors attached: {st.decryptors_attached}")
    refused = ", ".join(f"{k} {v}" for k, v in sorted(st.refused_calls.items()))
    print(f"refused calls since start: {refused or 'none'}")
    if st.round_latencies:
        print("round latencies, last 24 h:")
        for r in st.round_latencies:
            print(
                f"  {r.computation:<24} n={r.count:<5} mean {r.mean_s:.2f} s  p95 {r.p95_s:.2f} s  max {r.max_s:.2f} s"
            )
    return 0


def cmd_daemon(args: argparse.Namespace) -> int:
    from fedstat import logs  # noqa: PLC0415
    from fedstat.config import load_coordinator_config, load_site_config  # noqa: PLC0415

    if args.command == "coordinator" and args.coordinator_command == "audit-heads":
        from fedstat.cli.audit import run_audit_heads  # noqa: PLC0415

        return run_audit_heads(args)
    if args.command == "coordinator":
        from coordinator.server import serve  # noqa: PLC0415

        config = load_coordinator_config(args.config)
        if args.log_format is None and config.log_format != "text":
            logs.configure(level=logging.DEBUG if args.verbose else logging.INFO, fmt=config.log_format)
        serve(config)
        return 0
    if args.site_command == "check":
        from site_agent.agent import SiteAgent  # noqa: PLC0415

        agent = SiteAgent(load_site_config(args.config))
        agent.load_datasets()
        for name, d in agent.datasets.items():
            print(f"dataset {name}: OK, {d.genotypes.format}, {d.n_samples} samples, {d.genotypes.n_variants} variants")
            for set_name, rows in d.sample_sets.items():  # shown to the operator here; sizes never leave the site
                print(f"  sample set {set_name}: {len(rows)} samples")
        for name, problem in agent.problems.items():
            print(f"dataset {name}: BROKEN: {problem}")
        return 2 if agent.problems else 0
    if args.site_command == "audit":
        from fedstat.cli.audit import run_site_audit  # noqa: PLC0415

        return run_site_audit(args)
    from site_agent.agent import serve as site_serve  # noqa: PLC0415

    site_config = load_site_config(args.config)
    if args.log_format is None and site_config.log_format != "text":
        logs.configure(level=logging.DEBUG if args.verbose else logging.INFO, fmt=site_config.log_format)
    site_serve(site_config)
    return 0


#: BLAS threads in the daemons unless the environment says otherwise: a site agent is one
#: process per site and the coordinator's work is light, so several daemons on one machine must
#: not each spin a full pool of OpenBLAS threads (oversubscribed pools made a federated GWAS 4x
#: slower on 2 cores). Must be set before numpy is first imported.
DAEMON_BLAS_THREADS = "1"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("coordinator", "site") and "numpy" not in sys.modules:
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(var, DAEMON_BLAS_THREADS)
    from fedstat import logs  # noqa: PLC0415

    daemon = args.command in ("coordinator", "site")
    logs.configure(
        level=logging.DEBUG if args.verbose else (logging.INFO if daemon else logging.WARNING),
        fmt=args.log_format or "text",
    )
    try:
        if args.command == "submit":
            return cmd_submit(args)
        if args.command == "jobs":
            return cmd_jobs(args)
        if args.command == "ca":
            return cmd_ca(args)
        if args.command in ("status", "whoami"):
            return cmd_status(args)
        if args.command in ("coordinator", "site"):
            return cmd_daemon(args)
        if args.command in ("schedule", "reports"):
            from fedstat.cli import schedule  # noqa: PLC0415

            return schedule.run(args)
        if args.command == "poc":
            from fedstat.cli import poc  # noqa: PLC0415

            return poc.run(args)
        if args.command == "demo":
            from fedstat.cli import demo  # noqa: PLC0415

            return demo.run(args, cli=main)
    except KeyboardInterrupt:
        print("fedstat: interrupted", file=sys.stderr)
        return 130
    except (JobFailed, PolicyRefused) as exc:
        print(f"fedstat: {exc}", file=sys.stderr)
        return 1
    except (InputError, ConfigError) as exc:
        print(f"fedstat: error: {exc}", file=sys.stderr)
        return 2
    except (SiteUnavailable, AuthError) as exc:
        print(f"fedstat: {exc}", file=sys.stderr)
        return 3
    except FedstatError as exc:
        print(f"fedstat: {exc}", file=sys.stderr)
        return 4
    raise AssertionError(f"unhandled command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
