"""Configuration files: TOML parsed into frozen dataclasses, validated at load.

Relative paths in a config file are relative to the directory holding that file. Every
problem raises :class:`~fedstat.errors.ConfigError` naming the file and the key.

coordinator.toml::

    [coordinator]
    listen = "127.0.0.1:7443"        # address:port to serve on
    state_dir = "state"              # SQLite database and results/ live here
    offer_timeout_s = 60             # how long sites have to accept or refuse a job
    round_timeout_s = 3600           # deadline for one round at every site
    max_concurrent_jobs = 2
    min_sites = 3                    # secagg/paillier: never release a sum over fewer sites (>= 2)

    [tls]
    ca = "ca.pem"
    cert = "coordinator.pem"
    key = "coordinator.key"

site.toml::

    [site]
    coordinator = "localhost:7443"   # the site dials out; no inbound port
    state_dir = "state"              # caches and logs
    block_size = 4096                # variants per block (bounds memory)
    threads = 1

    [tls]
    ca = "ca.pem"
    cert = "AFR.pem"
    key = "AFR.key"

    [[datasets]]
    name = "main"                    # the first dataset is the default
    path = "/data/afr"               # directory with genotypes.* and samples.tsv

    [policy]
    allowed_analyses = ["freq", "geno-counts", "hardy", "missing"]
    allowed_privacy = ["secagg", "paillier", "dp"]  # modes this site accepts (none, secagg, paillier, dp, "paillier,dp")
    weakest_privacy = "secagg"       # refuse weaker modes (none < secagg = paillier < dp = "paillier,dp")
    min_cohort = 10                  # refuse jobs whose cohort is smaller
    min_sites = 2                    # refuse a secure-aggregation round with fewer participants
    min_cell_count = 3               # --assoc/--model: rows with a genotype cell of 1-2 are suppressed
    max_params_ratio = 0.33          # --glm: at most 0.33 parameters per cohort member

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
            names = {int: "an integer", float: "a number", str: "a string", list: "a list", dict: "a table"}
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
    r.check_unknown({"ca", "cert", "key"})
    return TlsFiles(ca=r.path_("ca"), cert=r.path_("cert"), key=r.path_("key"))


def _missing(path: Path, section: str) -> Any:
    raise ConfigError(f"{path}: section [{section}] is required")


def _address(r: _Reader, key: str) -> str:
    value = r.get(key, str)
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"{r.where(key)} must be host:port, got {value!r}")
    return value


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
    r.check_unknown({"listen", "state_dir", "offer_timeout_s", "round_timeout_s", "max_concurrent_jobs", "min_sites"})
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
    )


@dataclass(frozen=True)
class DatasetConfig:
    name: str
    path: Path
    consent_default: str = ""  # DUO code for participants with an empty consent cell (e.g. "HMB;NPU")


@dataclass(frozen=True)
class SitePolicy:
    allowed_analyses: tuple[str, ...] = ALL_ANALYSES
    allowed_privacy: tuple[str, ...] = PRIVACY_MODES
    min_cohort: int = 1
    min_sites: int = 2
    consent_cleared: tuple[str, ...] = ()  # DUO modifiers (IRB, COL, ...) the site has cleared for every job
    disease_ontology: Path | None = None  # OBO file (e.g. mondo.obo) for DS:<disease> ancestry
    dp_epsilon_total: float = 10.0  # each dataset's differential-privacy budget, as ε at dp_delta
    dp_delta: float = 1e-6
    # disclosure control (DataSHIELD nfilter spirit; the strictest participating site wins)
    min_cell_count: int = 0  # case/control tables: a genotype cell of 1..min_cell_count-1 is never released
    max_params_ratio: float = 0.33  # --glm: parameters per cohort member at most this (nfilter.glm)
    weakest_privacy: str = "none"  # refuse any mode weaker than this (none < secagg = paillier < dp)

    def accepts_privacy(self, mode: str) -> bool:
        """Whether a job in privacy mode ``mode`` (canonical name) passes this policy."""
        from fedstat.privacy.base import STRENGTH  # noqa: PLC0415

        return mode in self.allowed_privacy and STRENGTH.get(mode, -1) >= STRENGTH[self.weakest_privacy]


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
    r.check_unknown({"coordinator", "state_dir", "block_size", "threads"})
    raw_datasets = doc.get("datasets")
    if not isinstance(raw_datasets, list) or not raw_datasets:
        raise ConfigError(f"{path}: at least one [[datasets]] entry (name, path) is required")
    datasets = []
    for i, raw in enumerate(raw_datasets):
        dr = _Reader(path, f"datasets[{i}]", raw)
        dr.check_unknown({"name", "path", "consent_default"})
        default = dr.get("consent_default", str, "")
        if default:
            from fedstat.privacy.consent import parse_consent  # noqa: PLC0415

            try:
                parse_consent(default)
            except ValueError as exc:
                raise ConfigError(f"{dr.where('consent_default')}: {exc}") from None
        datasets.append(DatasetConfig(name=dr.get("name", str), path=dr.path_("path"), consent_default=default))
    names = [d.name for d in datasets]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: dataset names must be unique, got {', '.join(names)}")
    pr = _Reader(path, "policy", doc.get("policy", {}))
    pr.check_unknown(
        {
            "allowed_analyses",
            "allowed_privacy",
            "min_cohort",
            "min_sites",
            "consent_cleared",
            "disease_ontology",
            "dp_epsilon_total",
            "dp_delta",
            "min_cell_count",
            "max_params_ratio",
            "weakest_privacy",
        }
    )
    policy = SitePolicy(
        allowed_analyses=pr.str_list("allowed_analyses", ALL_ANALYSES),
        allowed_privacy=pr.str_list("allowed_privacy", PRIVACY_MODES),
        min_cohort=pr.positive_int("min_cohort", 1),
        min_sites=max(2, pr.positive_int("min_sites", 2)),
        consent_cleared=pr.str_list("consent_cleared", ()),
        disease_ontology=pr.path_("disease_ontology", "") if "disease_ontology" in pr.table else None,
        dp_epsilon_total=float(pr.get("dp_epsilon_total", (int, float), 10.0)),
        dp_delta=float(pr.get("dp_delta", (int, float), 1e-6)),
        min_cell_count=int(pr.get("min_cell_count", int, 0)),
        max_params_ratio=float(pr.get("max_params_ratio", (int, float), 0.33)),
        weakest_privacy=pr.get("weakest_privacy", str, "none"),
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
    )


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
