"""Shared fixtures: per-session PKI (never committed), in-process coordinator on port 0."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from fedstat import pki
from fedstat.config import AnalystProfile, CoordinatorConfig, DatasetConfig, SiteConfig, SitePolicy
from fedstat.data.genotypes import open_genotypes
from fedstat.data.variants import VariantTable
from fedstat.pki import TlsFiles

FIXTURE = Path(__file__).parent / "data" / "consortium"


@pytest.fixture(autouse=True)
def _root_logging_restored() -> Iterator[None]:
    """`fedstat.cli.main.main` routes the root logger to the sys.stderr of the moment, which pytest
    closes after the test; restore the handlers so that a server thread still winding down does
    not log to a closed stream in a later test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
    for h in handlers:
        if h not in root.handlers:
            root.addHandler(h)
    root.setLevel(level)


def read_pooled(fixture: Path) -> tuple[np.ndarray, VariantTable, tuple[str, ...]]:
    """A fixture's pooled dataset through fedstat's own reader: (genotypes (V, N) int8 ALT counts with
    -9 missing, variants, sample IIDs in file order)."""
    with open_genotypes(fixture / "pooled") as source:
        n = source.n_variants
        (_, geno), *rest = source.read_blocks(np.arange(n), block_size=max(n, 1))
        assert not rest
        return np.ascontiguousarray(geno), source.variants, source.samples.iid


@dataclass(frozen=True)
class Pki:
    root: Path
    ca: Path

    def tls(self, name: str) -> TlsFiles:
        return TlsFiles(ca=self.ca / "ca.pem", cert=self.root / f"{name}.pem", key=self.root / f"{name}.key")


@pytest.fixture(scope="session")
def session_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    pki.init_ca(root / "ca")
    pki.issue(root / "ca", root, name="coordinator", role="coordinator", hosts=("localhost", "127.0.0.1"))
    for site in ("AFR", "EUR", "EAS"):
        pki.issue(root / "ca", root, name=site, role="site")
    pki.issue(root / "ca", root, name="alice", role="analyst")
    pki.issue(root / "ca", root, name="bob", role="analyst")
    # a second, unrelated CA and a certificate it issued
    pki.init_ca(root / "rogue-ca")
    pki.issue(root / "rogue-ca", root / "rogue", name="alice", role="analyst")
    return Pki(root=root, ca=root / "ca")


def coordinator_config(session_pki: Pki, tmp_path: Path) -> CoordinatorConfig:
    """Tests' coordinator settings: port 0, short deadlines, 2 s for a dropped site to come back."""
    return CoordinatorConfig(
        path=tmp_path / "coordinator.toml",
        listen="127.0.0.1:0",
        state_dir=tmp_path / "state",
        tls=session_pki.tls("coordinator"),
        offer_timeout_s=20,
        round_timeout_s=60,
        site_reconnect_s=2,
    )


@pytest.fixture()
def coordinator(session_pki: Pki, tmp_path: Path) -> Iterator[tuple[object, int]]:
    """A coordinator served in-process on a free port: yields ``(coordinator, port)``."""
    from coordinator.server import running_coordinator

    with running_coordinator(coordinator_config(session_pki, tmp_path)) as coord:
        yield coord, coord.port


def analyst_profile(session_pki: Pki, port: int, name: str = "alice") -> AnalystProfile:
    return AnalystProfile(path=Path("analyst.toml"), coordinator=f"localhost:{port}", tls=session_pki.tls(name))


GWAS = Path(__file__).parent / "data" / "gwas"
GWAS_SITES = ("AFR", "EAS", "EUR")


def missing_rates(site: str, cache_dir: Path) -> tuple[int, np.ndarray]:
    """(participants, their missing-call rates, highest first) of a GWAS fixture site: what an
    attacker's --mind binary search aims its thresholds at."""
    from fedstat.data.dataset import open_dataset

    dataset = open_dataset(site, GWAS / site, cache_dir=cache_dir)
    n_var = dataset.genotypes.n_variants
    ((_, block),) = dataset.genotypes.read_blocks(np.arange(n_var), block_size=n_var)
    return dataset.genotypes.n_samples, np.sort((block < 0).sum(axis=0) / n_var)[::-1]


@pytest.fixture()
def consortium_data() -> Path:
    """The datasets of ``consortium_agents`` (a test module may override it with its own copy)."""
    return GWAS


@pytest.fixture()
def consortium_agents(session_pki, coordinator, tmp_path, consortium_data) -> Iterator[dict[str, object]]:
    """Three in-process site agents on the GWAS fixture, connected to the in-process coordinator.
    A test may swap an agent's ``config`` (e.g. its policy) between jobs."""
    coord, port = coordinator
    agents = {}
    for name in GWAS_SITES:
        cfg = SiteConfig(
            path=tmp_path / f"{name}.toml",
            coordinator=f"localhost:{port}",
            state_dir=tmp_path / name,
            tls=session_pki.tls(name),
            datasets=(DatasetConfig(name="main", path=consortium_data / name),),
            policy=SitePolicy(),
            block_size=256,
        )
        from site_agent.agent import SiteAgent

        agent = SiteAgent(cfg)
        threading.Thread(target=agent.run, daemon=True).start()
        agents[name] = agent
    deadline = time.monotonic() + 20
    while {s.name for s in coord.registry.connected()} != set(GWAS_SITES):
        assert time.monotonic() < deadline, "site agents did not connect"
        time.sleep(0.05)
    try:
        yield agents
    finally:
        for a in agents.values():
            a.stop()


@pytest.fixture()
def consortium(coordinator, consortium_agents) -> tuple[object, int]:
    """The in-process coordinator with three in-process site agents on the GWAS fixture."""
    return coordinator
