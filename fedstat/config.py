"""Configuration files: TOML parsed into frozen dataclasses, validated at load.

Relative paths in a config file are relative to the directory holding that file. Every
problem raises :class:`~fedstat.errors.ConfigError` naming the file and the key.

coordinator.toml::

    [coordinator]
    listen = "127.0.0.1:7443"        # address:port to serve on
    state_dir = "state"              # SQLite database and results/ live here
    offer_timeout_s = 60             # how long sites have to accept or refuse a job
    round_timeout_s = 3600           # deadline for one round at every site
    max_concurrent_jobs = 2          # more jobs wait QUEUED
    min_sites = 3                    # secagg/paillier: never release a sum over fewer sites (>= 2)
    site_reconnect_s = 120           # a site dropping mid-round has this long to reconnect; then the job fails
    log_format = "text"              # or "json": one JSON object per line

    [access]                         # analyst roles: submit, view-own, view-all, admin
    default = ["submit", "view-own"] # analysts not listed below
    analysts = { carol = ["admin"], dave = ["view-own"] }

    [tls]
    ca = "ca.pem"
    cert = "coordinator.pem"
    key = "coordinator.key"
    crl = "crl.pem"                  # optional: the consortium's revocation list, re-read when it changes

site.toml::

    [site]
    coordinator = "localhost:7443"   # the site dials out; no inbound port
    state_dir = "state"              # caches and logs
    block_size = 4096                # variants per block (bounds memory)
    threads = 1
    max_concurrent_jobs = 2          # rounds computed at once; other jobs' rounds wait their turn

    [tls]
    ca = "ca.pem"
    cert = "AFR.pem"
    key = "AFR.key"
    crl = "crl.pem"                  # optional: refuse revoked coordinators, peers and analysts

    [[datasets]]
    name = "main"                    # the first dataset is the default
    path = "/data/afr"               # directory with genotypes.* and samples.tsv
    # bgen_ref = "first"             # genotypes.bgen only: REF is each record's first allele ("last": the second)
    # vcf_dosage = "DS"              # a VCF's imputed dosages, as plink2 --vcf ... dosage=DS (or HDS, GP;
                                     # "GT": hard calls only); unset, a VCF holding dosages is refused
    # sample_sets = { unrelated = "sets/unrelated.txt", qc_pass = "sets/qc_pass.txt" }
                                     # named subsets analysts select with --sample-set NAME: plink2 --keep
                                     # files (FID IID per line), relative to the dataset's path

    [policy]
    allowed_analyses = ["freq", "geno-counts", "hardy", "missing"]
    allowed_privacy = ["secagg", "paillier", "dp"]  # modes this site accepts (none, secagg, paillier, dp, "paillier,dp")
    weakest_privacy = "secagg"       # refuse weaker modes (none < secagg = paillier < dp = "paillier,dp")
    min_cohort = 10                  # refuse jobs whose cohort is smaller
    min_group = 10                   # no combination of released sums may single out fewer participants
    count_granularity = 10           # counts reaching job logs are rounded down to multiples (default min_group)
    dp_analyst_share = 1.0           # --privacy dp: fraction of each dataset's budget one analyst may spend
    allow_site_differencing = false  # true: allow site sets whose difference is one site's sums
    min_sites = 2                    # refuse a secure-aggregation round or a harmonization with fewer participants
    min_cell_count = 3               # --assoc/--model: rows with a genotype cell of 1-2 are suppressed
    max_params_ratio = 0.33          # --glm: at most 0.33 parameters per cohort member

    [[policy.access]]                # optional; with any entry, only matching analysts may run jobs
    who = ["alice", "role:admin"]    # analyst names (certificate CN), role:<coordinator role>, or "*"
    datasets = ["main"]              # default "*"
    analyses = ["freq", "glm"]       # default "*"

analyst.toml (a "profile")::

    [analyst]
    coordinator = "localhost:7443"

    [tls]
    ca = "ca.pem"
    cert = "alice.pem"
    key = "alice.key"
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedstat.data.import_cache import BGEN_REF_ALLELES, DEFAULT_IMPORT, VCF_DOSAGE_FIELDS, ImportOptions
from fedstat.data.sample_sets import SET_NAME_RE
from fedstat.errors import ConfigError
from fedstat.jobs import KNOWN_ANALYSES as ALL_ANALYSES
from fedstat.pki import TlsFiles

PRIVACY_MODES = ("none", "secagg", "paillier", "dp", "paillier,dp")


class _Reader:
    """Typed access to one TOML table, naming ``file: section.key`` in errors."""

    def __init__(self, path: Path, section: str, table: Any):
        self.path, self.section = path, section
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [{section}] must be a table")
        self.table: dict[str, Any] = table

    def where(self, key: str) -> str:
        return f"{self.path}: {self.section}.{key}"

    def get(self, key: str, typ: type | tuple[type, ...], default: Any = ...) -> Any:
        if key not in self.table:
            if default is ...:
                raise ConfigError(f"{self.where(key)} is required")
            return default
        value = self.table[key]
        if isinstance(value, bool) and typ is int or not isinstance(value, typ):
            names = {
                int: "an integer",
                float: "a number",
                str: "a string",
                list: "a list",
                dict: "a table",
                bool: "true or false",
            }
            name = names.get(typ, "a number") if isinstance(typ, type) else "a number"
            raise ConfigError(f"{self.where(key)} must be {name}, got {type(value).__name__}")
        return value

    def positive_int(self, key: str, default: int) -> int:
        value = self.get(key, int, default)
        if value <= 0:
            raise ConfigError(f"{self.where(key)} must be positive, got {value}")
        return int(value)

    def path_(self, key: str, default: Any = ...) -> Path:
        value = self.get(key, str, default)
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self.path.parent / p).resolve()

    def str_list(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self.get(key, list, list(default))
        if not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{self.where(key)} must be a list of strings")
        return tuple(value)

    def check_unknown(self, known: set[str]) -> None:
        unknown = sorted(set(self.table) - known)
        if unknown:
            raise ConfigError(
                f"{self.path}: unknown key(s) in [{self.section}]: {', '.join(unknown)}; "
                f"expected: {', '.join(sorted(known))}"
            )


def _load(path: Path) -> dict[str, Any]:
    path = Path(path)
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc


def _tls(path: Path, doc: dict[str, Any]) -> TlsFiles:
    r = _Reader(path, "tls", doc.get("tls", None) if "tls" in doc else _missing(path, "tls"))
    r.check_unknown({"ca", "cert", "key", "crl"})
    crl = r.path_("crl") if "crl" in r.table else None
    return TlsFiles(ca=r.path_("ca"), cert=r.path_("cert"), key=r.path_("key"), crl=crl)


def _missing(path: Path, section: str) -> Any:
    raise ConfigError(f"{path}: section [{section}] is required")


def _address(r: _Reader, key: str) -> str:
    value: str = r.get(key, str)
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"{r.where(key)} must be host:port, got {value!r}")
    return value


#: Analyst roles on the coordinator. ``admin`` implies every other; ``view-all`` implies ``view-own``.
ANALYST_ROLES = ("submit", "view-own", "view-all", "admin")
DEFAULT_ANALYST_ROLES = ("submit", "view-own")


@dataclass(frozen=True)
class AccessConfig:
    """Which analyst (by certificate name) holds which roles; unlisted analysts hold ``default``."""

    default: tuple[str, ...] = DEFAULT_ANALYST_ROLES
    analysts: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def roles(self, analyst: str) -> frozenset[str]:
        granted = dict(self.analysts).get(analyst, self.default)
        roles = set(granted)
        if "admin" in roles:
            roles |= set(ANALYST_ROLES)
        if "view-all" in roles:
            roles.add("view-own")
        return frozenset(roles)


def _access(path: Path, doc: dict[str, Any]) -> AccessConfig:
    r = _Reader(path, "access", doc.get("access", {}))
    r.check_unknown({"default", "analysts"})
    default = r.str_list("default", DEFAULT_ANALYST_ROLES)
    ar = _Reader(path, "access.analysts", r.get("analysts", dict, {}))
    analysts = []
    for name in ar.table:
        analysts.append((name, ar.str_list(name, ())))
    for where, roles in (("access.default", default), *((f"access.analysts.{n}", rs) for n, rs in analysts)):
        unknown = [x for x in roles if x not in ANALYST_ROLES]
        if unknown:
            raise ConfigError(
                f"{path}: {where}: unknown role(s) {', '.join(map(repr, unknown))}; known: {', '.join(ANALYST_ROLES)}"
            )
    return AccessConfig(default=default, analysts=tuple(analysts))


LOG_FORMATS = ("text", "json")


@dataclass(frozen=True)
class CoordinatorConfig:
    path: Path
    listen: str
    state_dir: Path
    tls: TlsFiles
    offer_timeout_s: float = 60.0
    round_timeout_s: float = 3600.0
    max_concurrent_jobs: int = 2
    min_sites: int = 3
    site_reconnect_s: float = 120.0  # a site that drops mid-round has this long to come back
    access: AccessConfig = field(default_factory=AccessConfig)
    log_format: str = "text"

    @property
    def db_path(self) -> Path:
        return self.state_dir / "coordinator.sqlite"

    @property
    def results_dir(self) -> Path:
        return self.state_dir / "results"


def load_coordinator_config(path: Path) -> CoordinatorConfig:
    path = Path(path).resolve()
    doc = _load(path)
    r = _Reader(path, "coordinator", doc.get("coordinator") or _missing(path, "coordinator"))
    r.check_unknown(
        {
            "listen",
            "state_dir",
            "offer_timeout_s",
            "round_timeout_s",
            "max_concurrent_jobs",
            "min_sites",
            "site_reconnect_s",
            "log_format",
        }
    )
    min_sites = r.positive_int("min_sites", 3)
    if min_sites < 2:
        raise ConfigError(f"{r.where('min_sites')} must be at least 2: a sum over one site is that site's sums")
    return CoordinatorConfig(
        path=path,
        listen=_address(r, "listen"),
        state_dir=r.path_("state_dir", "state"),
        tls=_tls(path, doc),
        offer_timeout_s=float(r.get("offer_timeout_s", (int, float), 60.0)),
        round_timeout_s=float(r.get("round_timeout_s", (int, float), 3600.0)),
        max_concurrent_jobs=r.positive_int("max_concurrent_jobs", 2),
        min_sites=min_sites,
        site_reconnect_s=float(r.get("site_reconnect_s", (int, float), 120.0)),
        access=_access(path, doc),
        log_format=_log_format(r),
    )


def _log_format(r: _Reader) -> str:
    value: str = r.get("log_format", str, "text")
    if value not in LOG_FORMATS:
        raise ConfigError(f"{r.where('log_format')} must be one of {', '.join(LOG_FORMATS)}, got {value!r}")
    return value


@dataclass(frozen=True)
class DatasetConfig:
    name: str
    path: Path
    consent_default: str = ""  # DUO code for participants with an empty consent cell (e.g. "HMB;NPU")
    import_options: ImportOptions = DEFAULT_IMPORT  # vcf_dosage / bgen_ref: how a VCF or BGEN is read
    # the site's named sample sets: (name, plink2 --keep file), read when the dataset opens
    sample_sets: tuple[tuple[str, Path], ...] = ()


@dataclass(frozen=True)
class AccessRule:
    """One ``[[policy.access]]`` entry: who may run which analyses on which datasets.

    ``who`` holds analyst names (their certificates' CN), ``role:<coordinator role>`` or ``*``;
    ``datasets`` and ``analyses`` hold names or ``*``."""

    who: tuple[str, ...]
    datasets: tuple[str, ...] = ("*",)
    analyses: tuple[str, ...] = ("*",)

    def matches(self, analyst: str, roles: frozenset[str] | set[str], dataset: str) -> bool:
        who = "*" in self.who or analyst in self.who or any(f"role:{r}" in self.who for r in roles)
        return who and ("*" in self.datasets or dataset in self.datasets)

    def covers(self, analysis: str) -> bool:
        return "*" in self.analyses or analysis in self.analyses


@dataclass(frozen=True)
class SitePolicy:
    allowed_analyses: tuple[str, ...] = ALL_ANALYSES
    allowed_privacy: tuple[str, ...] = PRIVACY_MODES
    min_cohort: int = 1
    # the release ledger: no combination of released sums singles out fewer participants than this
    min_group: int = 10
    allow_site_differencing: bool = False  # True: per-site results are public anyway
    min_sites: int = 2
    consent_cleared: tuple[str, ...] = ()  # DUO modifiers (IRB, COL, ...) the site has cleared for every job
    disease_ontology: Path | None = None  # OBO file (e.g. mondo.obo) for DS:<disease> ancestry
    dp_epsilon_total: float = 10.0  # each dataset's differential-privacy budget, as ε at dp_delta
    dp_delta: float = 1e-6
    # --privacy dp: the fraction of each dataset's total ρ one analyst may spend (1.0: no per-analyst cap)
    dp_analyst_share: float = 1.0
    # participant counts leaving the site (job logs, status) are rounded down to multiples of this;
    # 0 means min_group (see fedstat.counts)
    count_granularity: int = 0
    # disclosure control (DataSHIELD nfilter spirit; the strictest participating site wins)
    min_cell_count: int = 0  # case/control tables: a genotype cell of 1..min_cell_count-1 is never released
    max_params_ratio: float = 0.33  # --glm: parameters per cohort member at most this (nfilter.glm)
    weakest_privacy: str = "none"  # refuse any mode weaker than this (none < secagg = paillier < dp)
    access: tuple[AccessRule, ...] = ()  # empty: every analyst of the consortium may run any allowed analysis

    def accepts_privacy(self, mode: str) -> bool:
        """Whether a job in privacy mode ``mode`` (canonical name) passes this policy."""
        from fedstat.privacy.base import STRENGTH  # noqa: PLC0415

        return mode in self.allowed_privacy and STRENGTH.get(mode, -1) >= STRENGTH[self.weakest_privacy]

    @property
    def granularity(self) -> int:
        """The granularity of counts this site reports under exact modes (``count_granularity``, else ``min_group``)."""
        return self.count_granularity or self.min_group


@dataclass(frozen=True)
class SiteConfig:
    path: Path
    coordinator: str
    state_dir: Path
    tls: TlsFiles
    datasets: tuple[DatasetConfig, ...]
    policy: SitePolicy
    block_size: int = 4096
    threads: int = 1
    max_concurrent_jobs: int = 2  # rounds computed at once; more jobs wait their turn (bounds CPU and memory)
    log_format: str = "text"

    @property
    def cache_dir(self) -> Path:
        return self.state_dir / "cache"

    def dataset(self, name: str) -> DatasetConfig:
        if not name:
            return self.datasets[0]
        for d in self.datasets:
            if d.name == name:
                return d
        raise ConfigError(
            f"{self.path}: no dataset named {name!r}; this site serves: " + ", ".join(d.name for d in self.datasets)
        )


def load_site_config(path: Path) -> SiteConfig:
    path = Path(path).resolve()
    doc = _load(path)
    r = _Reader(path, "site", doc.get("site") or _missing(path, "site"))
    r.check_unknown({"coordinator", "state_dir", "block_size", "threads", "max_concurrent_jobs", "log_format"})
    raw_datasets = doc.get("datasets")
    if not isinstance(raw_datasets, list) or not raw_datasets:
        raise ConfigError(f"{path}: at least one [[datasets]] entry (name, path) is required")
    datasets = []
    for i, raw in enumerate(raw_datasets):
        dr = _Reader(path, f"datasets[{i}]", raw)
        dr.check_unknown({"name", "path", "consent_default", "vcf_dosage", "bgen_ref", "sample_sets"})
        default = dr.get("consent_default", str, "")
        if default:
            from fedstat.consent import parse_consent  # noqa: PLC0415

            try:
                parse_consent(default)
            except ValueError as exc:
                raise ConfigError(f"{dr.where('consent_default')}: {exc}") from None
        vcf_dosage = dr.get("vcf_dosage", str, "")
        if vcf_dosage and vcf_dosage not in VCF_DOSAGE_FIELDS:
            raise ConfigError(
                f"{dr.where('vcf_dosage')} must be one of {', '.join(VCF_DOSAGE_FIELDS)} (the FORMAT field holding "
                f"dosages, as plink2's --vcf … dosage=; GT reads hard calls only), got {vcf_dosage!r}"
            )
        bgen_ref = dr.get("bgen_ref", str, "")
        if bgen_ref and bgen_ref not in BGEN_REF_ALLELES:
            raise ConfigError(
                f'{dr.where("bgen_ref")} must be "first" or "last" (which allele of a BGEN record is REF, '
                f"as plink2's --bgen ref-first / ref-last), got {bgen_ref!r}"
            )
        data = dr.path_("path")
        datasets.append(
            DatasetConfig(
                name=dr.get("name", str),
                path=data,
                consent_default=default,
                import_options=ImportOptions(vcf_dosage=vcf_dosage, bgen_ref=bgen_ref),
                sample_sets=_sample_sets(dr, data),
            )
        )
    names = [d.name for d in datasets]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: dataset names must be unique, got {', '.join(names)}")
    pr = _Reader(path, "policy", doc.get("policy", {}))
    pr.check_unknown(
        {
            "allowed_analyses",
            "allowed_privacy",
            "min_cohort",
            "min_group",
            "allow_site_differencing",
            "min_sites",
            "consent_cleared",
            "disease_ontology",
            "dp_epsilon_total",
            "dp_delta",
            "dp_analyst_share",
            "count_granularity",
            "min_cell_count",
            "max_params_ratio",
            "weakest_privacy",
            "access",
        }
    )
    policy = SitePolicy(
        allowed_analyses=pr.str_list("allowed_analyses", ALL_ANALYSES),
        allowed_privacy=pr.str_list("allowed_privacy", PRIVACY_MODES),
        min_cohort=pr.positive_int("min_cohort", 1),
        min_group=pr.positive_int("min_group", 10),
        allow_site_differencing=bool(pr.get("allow_site_differencing", bool, False)),
        min_sites=max(2, pr.positive_int("min_sites", 2)),
        consent_cleared=pr.str_list("consent_cleared", ()),
        disease_ontology=pr.path_("disease_ontology", "") if "disease_ontology" in pr.table else None,
        dp_epsilon_total=float(pr.get("dp_epsilon_total", (int, float), 10.0)),
        dp_delta=float(pr.get("dp_delta", (int, float), 1e-6)),
        dp_analyst_share=float(pr.get("dp_analyst_share", (int, float), 1.0)),
        count_granularity=pr.positive_int("count_granularity", 0) if "count_granularity" in pr.table else 0,
        min_cell_count=int(pr.get("min_cell_count", int, 0)),
        max_params_ratio=float(pr.get("max_params_ratio", (int, float), 0.33)),
        weakest_privacy=pr.get("weakest_privacy", str, "none"),
        access=_access_rules(path, pr),
    )
    if policy.min_cell_count < 0:
        raise ConfigError(f"{pr.where('min_cell_count')} must be 0 (off) or positive, got {policy.min_cell_count}")
    if not 0 < policy.max_params_ratio <= 1:
        raise ConfigError(f"{pr.where('max_params_ratio')} must be in (0, 1], got {policy.max_params_ratio}")
    if policy.weakest_privacy not in PRIVACY_MODES:
        raise ConfigError(
            f"{pr.where('weakest_privacy')}: unknown privacy mode {policy.weakest_privacy!r}; "
            f"known: {', '.join(PRIVACY_MODES)}"
        )
    if not policy.dp_epsilon_total > 0 or not 0 < policy.dp_delta < 1:
        raise ConfigError(f"{pr.where('dp_epsilon_total')}/dp_delta: need ε > 0 and 0 < δ < 1")
    if not 0 < policy.dp_analyst_share <= 1:
        raise ConfigError(
            f"{pr.where('dp_analyst_share')} must be in (0, 1] (the fraction of a dataset's budget one analyst may "
            f"spend; 1 = no per-analyst cap), got {policy.dp_analyst_share}"
        )
    for m in policy.allowed_privacy:
        if m not in PRIVACY_MODES:
            raise ConfigError(
                f"{pr.where('allowed_privacy')}: unknown privacy mode {m!r}; known: {', '.join(PRIVACY_MODES)}"
            )
    for a in policy.allowed_analyses:
        if a not in ALL_ANALYSES:
            raise ConfigError(
                f"{pr.where('allowed_analyses')}: unknown analysis {a!r}; known: {', '.join(ALL_ANALYSES)}"
            )
    return SiteConfig(
        path=path,
        coordinator=_address(r, "coordinator"),
        state_dir=r.path_("state_dir", "state"),
        tls=_tls(path, doc),
        datasets=tuple(datasets),
        policy=policy,
        block_size=r.positive_int("block_size", 4096),
        threads=r.positive_int("threads", 1),
        max_concurrent_jobs=r.positive_int("max_concurrent_jobs", 2),
        log_format=_log_format(r),
    )


def _sample_sets(dr: _Reader, data: Path) -> tuple[tuple[str, Path], ...]:
    """A dataset's ``sample_sets = { NAME = "file", ... }``: each file relative to the dataset's
    directory (or absolute). The files are read when the dataset opens (:mod:`fedstat.data.sample_sets`)."""
    sr = _Reader(dr.path, f"{dr.section}.sample_sets", dr.get("sample_sets", dict, {}))
    out = []
    for name in sr.table:
        if not SET_NAME_RE.match(name):
            raise ConfigError(
                f"{sr.where(name)}: a sample set's name is letters, digits, _ . - (at most 100): analysts type it "
                "after --sample-set"
            )
        file = Path(sr.get(name, str)).expanduser()
        if not str(file).strip() or file == Path():
            raise ConfigError(f"{sr.where(name)} must name a file (plink2 --keep format, relative to the dataset)")
        out.append((name, file if file.is_absolute() else data / file))
    return tuple(out)


def _access_rules(path: Path, pr: _Reader) -> tuple[AccessRule, ...]:
    raw = pr.get("access", list, [])
    rules = []
    for i, entry in enumerate(raw):
        ar = _Reader(path, f"policy.access[{i}]", entry)
        ar.check_unknown({"who", "datasets", "analyses"})
        who = ar.str_list("who", ())
        if not who:
            raise ConfigError(f'{ar.where("who")} is required: analyst names, role:<role> or "*"')
        for w in who:
            if w.startswith("role:") and w[5:] not in ANALYST_ROLES:
                raise ConfigError(f"{ar.where('who')}: unknown role {w[5:]!r}; known: {', '.join(ANALYST_ROLES)}")
        analyses = ar.str_list("analyses", ("*",))
        for a in analyses:
            if a != "*" and a not in ALL_ANALYSES:
                raise ConfigError(f"{ar.where('analyses')}: unknown analysis {a!r}; known: {', '.join(ALL_ANALYSES)}")
        rules.append(AccessRule(who=who, datasets=ar.str_list("datasets", ("*",)), analyses=analyses))
    return tuple(rules)


@dataclass(frozen=True)
class AnalystProfile:
    path: Path
    coordinator: str
    tls: TlsFiles


def load_analyst_profile(path: Path) -> AnalystProfile:
    path = Path(path).resolve()
    doc = _load(path)
    r = _Reader(path, "analyst", doc.get("analyst") or _missing(path, "analyst"))
    r.check_unknown({"coordinator"})
    return AnalystProfile(path=path, coordinator=_address(r, "coordinator"), tls=_tls(path, doc))
