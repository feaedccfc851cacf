"""The per-dataset differential-privacy budget ledger (SQLite, ρ-zCDP), with a per-analyst share.

A site charges its ledger once per job at its first release; :meth:`BudgetLedger.charge` refuses
a charge that would take the dataset past its total, or the job's analyst past their share of it
(``analyst_share``), with :class:`BudgetExceeded`.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from fedstat.errors import InputError, PolicyRefused, PrivacyError
from fedstat.privacy.dp.accounting import (
    Conversion,
    check_conversion,
    check_delta,
    check_nonneg,
    epsilon_to_rho,
    rho_to_epsilon,
)

#: Relative slack when comparing spent ρ with the total, so that e.g. ten charges of total/10
#: fit exactly despite float rounding. Overspending by 1e-12 of the budget is immaterial.
_RHO_RTOL = 1e-12

_SCHEMA = """
CREATE TABLE IF NOT EXISTS charges (
    dataset TEXT NOT NULL,
    job_id TEXT NOT NULL,
    rho REAL NOT NULL CHECK (rho >= 0),
    first_at TEXT NOT NULL,
    last_at TEXT NOT NULL,
    PRIMARY KEY (dataset, job_id)
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    dataset TEXT NOT NULL,
    job_id TEXT NOT NULL,
    rho_added REAL NOT NULL,
    rho_job REAL NOT NULL,
    detail TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_dataset ON events (dataset, seq);
"""


@dataclass(frozen=True)
class PrivacyLoss:
    """A privacy loss as ρ-zCDP and its (ε, δ) view; unpacks as ``rho, epsilon, delta``.

    Attributes
    ----------
    rho : zCDP ρ (what composes: losses add in ρ)
    epsilon : ε of ``rho`` at ``delta`` under the ledger's conversion
    delta : the budget's δ
    """

    rho: float
    epsilon: float
    delta: float

    def __iter__(self) -> Iterator[float]:
        return iter((self.rho, self.epsilon, self.delta))


@dataclass(frozen=True)
class LedgerEntry:
    """One increase of one job's charge.

    Attributes
    ----------
    job_id : the job charged
    rho_added : ρ added to the dataset's spending by this event
    rho_job : the job's total ρ after it
    detail : free text from the caller (analysis, round, calibration); never participant data
    at : UTC time, ISO 8601
    """

    job_id: str
    rho_added: float
    rho_job: float
    detail: str
    at: str


@dataclass(frozen=True)
class ChargeReceipt:
    """The outcome of :meth:`BudgetLedger.charge`.

    Attributes
    ----------
    dataset, job_id : what was charged
    rho_job : the job's total ρ after the call
    rho_added : ρ newly spent by this call (0 when it was a retry)
    spent, remaining : the dataset's spending and what is left after the call
    """

    dataset: str
    job_id: str
    rho_job: float
    rho_added: float
    spent: PrivacyLoss
    remaining: PrivacyLoss


class BudgetExceeded(PolicyRefused):
    """A charge would take a dataset's privacy spending past its budget; nothing was charged."""

    def __init__(self, message: str, *, dataset: str, job_id: str, requested_rho: float, remaining: PrivacyLoss):
        super().__init__(message)
        self.dataset, self.job_id = dataset, job_id
        self.requested_rho, self.remaining = requested_rho, remaining


def _check_name(what: str, value: str) -> str:
    if not isinstance(value, str) or not value:
        raise InputError(f"{what} must be a non-empty string, got {value!r}")
    return value


class BudgetLedger:
    """Per-dataset privacy budget in ρ-zCDP, persisted in SQLite, charged idempotently per job.

    Parameters
    ----------
    path : the SQLite file (created if missing; its directory must exist). WAL journal,
        ``synchronous=FULL`` so that a committed charge survives a crash.
    total_delta : δ of the budget, at which every (ε, δ) view is taken
    total_epsilon : the budget's ε; the total ρ is :func:`epsilon_to_rho` (total_epsilon, total_delta)
    total_rho : the total ρ directly (give exactly one of ``total_epsilon`` and ``total_rho``)
    conversion : zCDP → (ε, δ) conversion, see :func:`rho_to_epsilon`
    timeout : seconds to wait for another writer's lock before failing

    Notes
    -----
    Every dataset in the file has the same total (the site policy's); the file stores only the
    charges, so a policy may change the total between openings. Releases compose by adding ρ
    [BS16, Lemma 2.3]; the (ε, δ) views of spent and remaining ρ are each converted at
    ``total_delta`` and do not add up in ε.

    Each method opens its own connection, so one ledger may be shared by threads and several
    ledgers (processes) may share the file: a charge reads and writes inside ``BEGIN IMMEDIATE``,
    which serialises writers, so concurrent charges never exceed the budget together.

    References
    ----------
    [BS16] Lemma 2.3 (composition); SQLite "Write-Ahead Logging" and "BEGIN IMMEDIATE" documentation.
    """

    def __init__(
        self,
        path: Path,
        *,
        total_delta: float,
        total_epsilon: float | None = None,
        total_rho: float | None = None,
        conversion: Conversion = "cks20",
        timeout: float = 30.0,
        analyst_share: float = 1.0,
    ):
        if (total_epsilon is None) == (total_rho is None):
            raise InputError("give the budget as exactly one of total_epsilon and total_rho (with total_delta)")
        check_conversion(conversion)
        delta = check_delta(total_delta)
        self.path, self.conversion, self._timeout = Path(path), conversion, timeout
        if not 0.0 < analyst_share <= 1.0:
            raise InputError(f"analyst_share must be in (0, 1] (1 = no per-analyst cap), got {analyst_share!r}")
        self.analyst_share = float(analyst_share)
        if total_rho is not None:
            rho = check_nonneg("total_rho", total_rho)
        else:
            assert total_epsilon is not None
            rho = epsilon_to_rho(total_epsilon, delta, conversion=conversion)
        if not math.isfinite(rho):
            raise InputError("the privacy budget must be finite")
        self.total = PrivacyLoss(rho, rho_to_epsilon(rho, delta, conversion=conversion), delta)
        with self._connect() as conn:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise PrivacyError(f"budget ledger {self.path}: SQLite refused WAL journaling (got {mode})")
            conn.executescript(_SCHEMA)
            columns = {r[1] for r in conn.execute("PRAGMA table_info(charges)")}
            if "analyst" not in columns:  # a ledger made by an earlier version: its charges name no analyst
                conn.execute("ALTER TABLE charges ADD COLUMN analyst TEXT NOT NULL DEFAULT ''")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A fresh autocommit connection (transactions are explicit); SQLite errors become PrivacyError."""
        try:
            conn = sqlite3.connect(self.path, timeout=self._timeout, isolation_level=None)
        except sqlite3.Error as exc:
            raise PrivacyError(f"budget ledger {self.path}: cannot open ({exc})") from exc
        try:
            conn.execute("PRAGMA synchronous=FULL")
            yield conn
        except sqlite3.Error as exc:  # locked beyond the timeout, disk full, corrupt file
            raise PrivacyError(f"budget ledger {self.path}: {exc}") from exc
        finally:
            conn.close()

    @staticmethod
    def _spent_rho(conn: sqlite3.Connection, dataset: str, analyst: str | None = None) -> float:
        if analyst is None:
            rows = conn.execute("SELECT rho FROM charges WHERE dataset = ?", (dataset,)).fetchall()
        else:
            rows = conn.execute(
                "SELECT rho FROM charges WHERE dataset = ? AND analyst = ?", (dataset, analyst)
            ).fetchall()
        return math.fsum(r[0] for r in rows)

    def _check_share(self, conn: sqlite3.Connection, dataset: str, job_id: str, analyst: str, added: float) -> None:
        """BudgetExceeded if ``analyst`` would spend more than ``analyst_share`` of the dataset's ρ."""
        if self.analyst_share >= 1.0 or not analyst:
            return
        cap = self.analyst_share * self.total.rho
        spent = self._spent_rho(conn, dataset, analyst)
        if spent + added > cap * (1.0 + _RHO_RTOL):
            left = self._view(max(0.0, cap - spent))
            raise BudgetExceeded(
                f"analyst {analyst}'s share of dataset {dataset!r}'s privacy budget is exhausted: the share is "
                f"{self.analyst_share:g} of the total (rho={cap:.6g}), job {job_id!r} needs rho={added:.6g} more and "
                f"only rho={left.rho:.6g} of the share remains, i.e. (epsilon={left.epsilon:.6g}, "
                f"delta={left.delta:.6g}); other analysts' shares are unaffected (site policy dp_analyst_share)",
                dataset=dataset,
                job_id=job_id,
                requested_rho=added,
                remaining=left,
            )

    def _view(self, rho: float) -> PrivacyLoss:
        delta = self.total.delta
        return PrivacyLoss(rho, rho_to_epsilon(rho, delta, conversion=self.conversion), delta)

    def charge(
        self, dataset: str, job_id: str, rho: float, *, detail: str = "", dry_run: bool = False, analyst: str = ""
    ) -> ChargeReceipt:
        """Charge job ``job_id``'s release(s) of ``rho`` to ``dataset``, at most once per job.

        Parameters
        ----------
        dataset : the dataset whose budget is spent
        job_id : the job; retries of the job or of its rounds reuse it
        rho : the job's total zCDP ρ so far (e.g. the sum of its :attr:`NoiseCalibration.rho`)
        detail : free text stored with the event (analysis, rounds, σ); never participant data
        dry_run : only check: the receipt the charge would give, or BudgetExceeded; nothing written
        analyst : who submitted the job; with ``analyst_share`` < 1 their charges on ``dataset``
            together may not exceed that fraction of its total (a job keeps its first analyst)

        Returns
        -------
        ChargeReceipt

        Raises
        ------
        BudgetExceeded
            If the charge would take the dataset past its budget, or the analyst past their share;
            the message states what remains as ρ and as (ε, δ). Nothing is charged.

        Notes
        -----
        Idempotent per (dataset, job_id): ``rho`` is the job's *total*, so a second charge with the
        same or a smaller ρ is a no-op (a retried round), and a larger one charges only the
        difference (the job went on to spend more). The check and the write happen in one
        ``BEGIN IMMEDIATE`` transaction.
        """
        _check_name("dataset", dataset)
        _check_name("job_id", job_id)
        rho = check_nonneg("rho", rho)
        if not math.isfinite(rho):
            raise InputError("rho to charge must be finite")
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute(
                    "SELECT rho FROM charges WHERE dataset = ? AND job_id = ?", (dataset, job_id)
                ).fetchone()
                previous = None if row is None else float(row[0])
                spent = self._spent_rho(conn, dataset)
                if previous is not None and rho <= previous:  # a retry: already paid for
                    conn.execute("ROLLBACK")
                    return self._receipt(dataset, job_id, previous, 0.0, spent)
                added = rho - (previous or 0.0)
                if spent + added > self.total.rho * (1.0 + _RHO_RTOL):
                    left = self._view(max(0.0, self.total.rho - spent))
                    raise BudgetExceeded(
                        f"privacy budget of dataset {dataset!r} exceeded: job {job_id!r} needs rho={added:.6g} "
                        f"more but only rho={left.rho:.6g} remains, i.e. (epsilon={left.epsilon:.6g}, "
                        f"delta={left.delta:.6g}), of a total rho={self.total.rho:.6g} "
                        f"(epsilon={self.total.epsilon:.6g}, delta={self.total.delta:.6g})",
                        dataset=dataset,
                        job_id=job_id,
                        requested_rho=added,
                        remaining=left,
                    )
                self._check_share(conn, dataset, job_id, analyst, added)
                if dry_run:
                    conn.execute("ROLLBACK")
                    return self._receipt(dataset, job_id, rho, added, spent + added)
                now = datetime.now(UTC).isoformat(timespec="milliseconds")
                conn.execute(
                    "INSERT INTO charges (dataset, job_id, rho, first_at, last_at, analyst) VALUES (?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (dataset, job_id) DO UPDATE SET rho = excluded.rho, last_at = excluded.last_at",
                    (dataset, job_id, rho, now, now, str(analyst)),
                )
                conn.execute(
                    "INSERT INTO events (dataset, job_id, rho_added, rho_job, detail, at) VALUES (?, ?, ?, ?, ?, ?)",
                    (dataset, job_id, added, rho, str(detail), now),
                )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        return self._receipt(dataset, job_id, rho, added, spent + added)

    def _receipt(self, dataset: str, job_id: str, rho_job: float, added: float, spent: float) -> ChargeReceipt:
        return ChargeReceipt(
            dataset=dataset,
            job_id=job_id,
            rho_job=rho_job,
            rho_added=added,
            spent=self._view(spent),
            remaining=self._view(max(0.0, self.total.rho - spent)),
        )

    def spent(self, dataset: str) -> PrivacyLoss:
        """ρ spent on ``dataset`` so far, with its (ε, δ) view at the budget's δ."""
        with self._connect() as conn:
            return self._view(self._spent_rho(conn, _check_name("dataset", dataset)))

    def remaining(self, dataset: str, analyst: str = "") -> PrivacyLoss:
        """ρ left for ``dataset`` (total − spent, at least 0), with its (ε, δ) view at the budget's δ;
        with ``analyst`` and an ``analyst_share`` below 1, the smaller of that and what is left of their share."""
        left = max(0.0, self.total.rho - self.spent(dataset).rho)
        if analyst and self.analyst_share < 1.0:
            with self._connect() as conn:
                mine = self._spent_rho(conn, _check_name("dataset", dataset), analyst)
            left = min(left, max(0.0, self.analyst_share * self.total.rho - mine))
        return self._view(left)

    def history(self, dataset: str) -> tuple[LedgerEntry, ...]:
        """Every charge event of ``dataset`` in the order they were committed (no-op retries leave none)."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT job_id, rho_added, rho_job, detail, at FROM events WHERE dataset = ? ORDER BY seq",
                (_check_name("dataset", dataset),),
            ).fetchall()
        return tuple(LedgerEntry(job_id=r[0], rho_added=r[1], rho_job=r[2], detail=r[3], at=r[4]) for r in rows)
