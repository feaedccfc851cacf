"""Issue 14 requirement 5 through the real agents, coordinator and analyst client (mutual TLS): a
deviating coordinator that forwards a Paillier product without every participant's signed
contribution statement, with a forged one, with statements of another round, or that runs a
decrypted round again under a fresh attempt, is refused by the analyst's client with its reason;
nothing more is decrypted. The bulk of the cases are unit tests in test_paillier_contributions.py."""

from __future__ import annotations

import dataclasses

from coordinator import engine
from fedstat import pki
from fedstat.client import Client
from fedstat.jobs import JobSpec
from fedstat.privacy.contribution import Contribution
from fedstat.privacy.paillier import AnalystDecryptor
from tests.conftest import analyst_profile

REFUSED = "the analyst's client refused to decrypt round {r}: paillier: "


def _deviate(monkeypatch, change) -> None:
    """Make the coordinator pass each round's statements through ``change(ctx, statements)`` before
    it forwards them with the decryption requests."""
    original = engine._JobRunner.decrypt_with_analyst

    def decrypt_with_analyst(self, contributions, ctx, sums, public_key):
        return original(self, change(ctx, dict(contributions)), ctx, sums, public_key)

    monkeypatch.setattr(engine._JobRunner, "decrypt_with_analyst", decrypt_with_analyst)


def _counting(monkeypatch) -> list[int]:
    """Record how many ciphertexts the analyst's client decrypts."""
    counts: list[int] = []
    original = AnalystDecryptor.decrypt

    def decrypt(self, **kw):
        words = original(self, **kw)
        counts.append(len(words))
        return words

    monkeypatch.setattr(AnalystDecryptor, "decrypt", decrypt)
    return counts


def _run(session_pki, port: int, spec: JobSpec):
    with Client(analyst_profile(session_pki, port)) as c:
        job = c.submit(spec)
        return c.wait(job.job_id, raise_on_failure=False)


FREQ = JobSpec(analyses=("freq",), privacy="paillier", out_name="f")
# two rounds: --mind's count, then the allele counts (no participant is removed at 0.5)
TWO_ROUNDS = JobSpec(analyses=("freq",), privacy="paillier", out_name="m", options={"mind": "0.5"})


def test_paillier__a_missing_statement_is_refused(session_pki, consortium, monkeypatch):
    _, port = consortium
    decrypted = _counting(monkeypatch)
    _deviate(monkeypatch, lambda ctx, st: {s: c for s, c in st.items() if s != "EUR"})
    job = _run(session_pki, port, FREQ)
    assert job.state == "FAILED"
    assert REFUSED.format(r=1) in job.error
    assert "no signed contribution from site(s) EUR, participant(s) of the round (AFR, EAS, EUR)" in job.error
    assert decrypted == [] and not job.result_files


def test_paillier__a_forged_statement_is_refused(session_pki, consortium, monkeypatch, tmp_path):
    _, port = consortium
    # the coordinator makes itself a certificate for "EUR" under a CA of its own and signs EUR's statement
    pki.issue(session_pki.root / "rogue-ca", tmp_path, name="EUR", role="site")

    def forge(ctx, statements):
        eur = statements["EUR"]
        fake = dataclasses.replace(eur, certificate=(tmp_path / "EUR.pem").read_bytes(), signature=b"")
        signature = pki.sign_statement((tmp_path / "EUR.key").read_bytes(), fake.transcript())
        return {**statements, "EUR": dataclasses.replace(fake, signature=signature)}

    _deviate(monkeypatch, forge)
    job = _run(session_pki, port, FREQ)
    assert job.state == "FAILED"
    assert REFUSED.format(r=1) in job.error
    assert "site EUR's contribution statement comes with a certificate the consortium CA did not issue" in job.error


def test_paillier__statements_of_another_round_are_refused(session_pki, consortium, monkeypatch):
    _, port = consortium
    kept: dict[str, Contribution] = {}

    def replay(ctx, statements):
        if ctx.round == 1:
            kept.update(statements)
            return statements
        return {**statements, "AFR": kept["AFR"]}  # round 1's genuine statement, replayed in round 2

    decrypted = _counting(monkeypatch)
    _deviate(monkeypatch, replay)
    job = _run(session_pki, port, TWO_ROUNDS)
    assert job.state == "FAILED"
    assert REFUSED.format(r=2) in job.error
    assert "site AFR's contribution statement is for round 1 (attempt 0)" in job.error
    assert "(a replayed statement)" in job.error
    assert len(decrypted) == 1  # round 1 only (its one array, the --mind count)


def test_paillier__a_decrypted_round_run_again_under_another_attempt_is_refused(session_pki, consortium, monkeypatch):
    """Attack C1 under paillier by a deviating coordinator: having had round 1 decrypted, it runs
    round 1 again under a fresh attempt (fresh keys: every site computes and signs it again)."""
    _, port = consortium
    original = engine._JobRunner.run_round

    def run_round(self, spec, round_no, plan, n_variants):
        totals = original(self, spec, round_no, plan, n_variants)
        if round_no == 1:
            self.attempt += 1
            original(self, spec, round_no, plan, n_variants)
        return totals

    decrypted = _counting(monkeypatch)
    monkeypatch.setattr(engine._JobRunner, "run_round", run_round)
    job = _run(session_pki, port, FREQ)
    assert job.state == "FAILED"
    assert (
        REFUSED.format(r=1) + "refusing to decrypt round 1 again under attempt 1: it was decrypted under attempt 0"
        in job.error
    )
    n_arrays = len(decrypted)
    assert n_arrays >= 1  # the first attempt's arrays only
    # an honest coordinator: the same job runs, and its statements reached the client
    monkeypatch.setattr(engine._JobRunner, "run_round", original)
    job = _run(session_pki, port, FREQ)
    assert job.state == "DONE", job.error
    assert len(decrypted) == 2 * n_arrays


def test_paillier__a_site_reconnecting_after_a_decrypted_state_round_is_recovered_without_redecryption(
    session_pki, consortium, monkeypatch, tmp_path
):
    """Legitimate recovery is not refused: EUR drops at round 2 of a --mind job and is back at once.
    The sites run the --mind round again to rebuild their state; its totals are known, so it is not
    decrypted again (the client would refuse a second attempt of a decrypted round), and round 2
    is retried under a new attempt. The results equal an unfaulted run's."""
    from fedstat.errors import SiteDropped
    from tests.test_secagg_e2e import _run as run_and_fetch

    _, port = consortium
    decrypted = _counting(monkeypatch)
    _, clean = run_and_fetch(session_pki, port, tmp_path / "clean", TWO_ROUNDS)
    n_clean = len(decrypted)
    original = engine._JobRunner.run_round
    dropped: list[int] = []

    def run_round(self, spec, round_no, plan, n_variants, **kw):
        if round_no == 2 and not dropped:
            dropped.append(self.attempt)
            raise SiteDropped("EUR", "site EUR disconnected during round 2")
        return original(self, spec, round_no, plan, n_variants, **kw)

    monkeypatch.setattr(engine._JobRunner, "run_round", run_round)
    job_id, recovered = run_and_fetch(session_pki, port, tmp_path / "faulted", TWO_ROUNDS)
    assert dropped == [0]
    with Client(analyst_profile(session_pki, port)) as c:
        log = "\n".join(c.get(job_id).log)
    assert "round 1 (sample_missing) run again so every site holds its result" in log
    assert "retrying round 2 as attempt 1" in log
    assert recovered == clean and "m.afreq" in recovered
    assert len(decrypted) == 2 * n_clean  # as many requests as the clean run: no round decrypted twice
