"""Issue 14 requirement 5: the analyst's client decrypts a Paillier product only with a signed
contribution statement from exactly the sites of the job's participant list, all for this job,
round and attempt, and each round under one attempt only (unit tests of AnalystDecryptor with real
site certificates, keys and ciphertexts; the attacks through the daemons are in
test_paillier_attacks.py)."""

from __future__ import annotations

import dataclasses
from functools import reduce

import numpy as np
import pytest
from cryptography import x509

from fedstat import pki
from fedstat.errors import ConfigError, PrivacyError
from fedstat.privacy.base import ProtectedChunk, RoundContext
from fedstat.privacy.contribution import ChunkDigest, Contribution, verify_contributions
from fedstat.privacy.paillier import AnalystDecryptor, PaillierKeys, PaillierProtector
from fedstat.privacy.paillier_crypto import (
    PaillierDecryptor,
    PaillierEncryptor,
    add_ciphertexts,
    ciphertexts_from_bytes,
    ciphertexts_to_bytes,
    generate_keypair,
)
from fedstat.privacy.secagg import RoundKeyPair, SecAggProtector
from fedstat.protocol import contribution_from_pb, contribution_to_pb

SITES = ("AFR", "EAS", "EUR")


@pytest.fixture(scope="module")
def keypair():
    return generate_keypair(2048)


@pytest.fixture(scope="module")
def encryptor(keypair):
    with PaillierEncryptor(keypair[0], backend="inline", window_bits=4) as enc:
        yield enc


def signed_statements(session_pki, ctx: RoundContext, digests: dict[str, bytes]) -> list[Contribution]:
    """Each participant's statement of round ``ctx``, signed with its own certificate key."""
    return [
        Contribution.signed(
            ctx,
            site,
            digests[site],
            key_pem=session_pki.tls(site).key.read_bytes(),
            certificate_pem=session_pki.tls(site).cert.read_bytes(),
        )
        for site in sorted(ctx.participants)
    ]


def _round(session_pki, keypair, encryptor, ctx: RoundContext, name: str = "x", values=None) -> dict:
    """What an honest coordinator asks for round ``ctx``: the product of every participant's
    masked, encrypted ``values`` and every participant's signed statement of its chunks."""
    public_key = keypair[0]
    pairs = {s: RoundKeyPair() for s in ctx.participants}
    values = values or {s: [i + 1, 10 * (i + 1), 100 * (i + 1)] for i, s in enumerate(ctx.participants)}
    cts, digests = [], {}
    for s in ctx.participants:
        keys = PaillierKeys(
            keypair=pairs[s], peers={p: pairs[p].public_key for p in ctx.participants if p != s}, encryptor=encryptor
        )
        protector = PaillierProtector(ctx, s, keys)
        (chunk,) = protector.protect(name, 0, 3, np.array(values[s]))
        cts.append(ciphertexts_from_bytes(chunk.data, public_key))
        digests[s] = protector.contribution_digest()
    product = reduce(lambda a, b: add_ciphertexts(a, b, public_key), cts)
    return dict(
        job_id=ctx.job_id,
        round_no=ctx.round,
        attempt=ctx.attempt,
        name=name,
        first=0,
        summands=len(ctx.participants),
        data=ciphertexts_to_bytes(product, public_key),
        contributions=signed_statements(session_pki, ctx, digests),
    )


def _decryptor(session_pki, keypair, sites=(), revoked=None) -> AnalystDecryptor:
    ca_pem = session_pki.tls("alice").ca.read_bytes()
    return AnalystDecryptor("job1", PaillierDecryptor(keypair[1]), ca_pem=ca_pem, sites=sites, revoked=revoked)


def _ctx(round_no=1, attempt=0, participants=SITES, job_id="job1") -> RoundContext:
    return RoundContext(
        job_id=job_id, round=round_no, attempt=attempt, participants=participants, round_digest="d" * 64
    )


def test_analyst_decryptor__decrypts_a_product_every_participant_vouched_for(session_pki, keypair, encryptor):
    d = _decryptor(session_pki, keypair, sites=SITES)
    words = d.decrypt(**_round(session_pki, keypair, encryptor, _ctx()))
    assert words[:3].tolist() == [6, 60, 600]  # 1+2+3, 10+20+30, 100+200+300: the masks cancel
    words = d.decrypt(**_round(session_pki, keypair, encryptor, _ctx(round_no=2)))
    assert words[:3].tolist() == [6, 60, 600]


def test_analyst_decryptor__refuses_a_missing_or_duplicated_statement(session_pki, keypair, encryptor):
    d = _decryptor(session_pki, keypair)
    req = _round(session_pki, keypair, encryptor, _ctx())
    afr, eas, eur = req["contributions"]
    with pytest.raises(PrivacyError, match=r"no signed contribution from site\(s\) EUR, participant\(s\) of the round"):
        d.decrypt(**{**req, "contributions": [afr, eas], "summands": 2})
    with pytest.raises(PrivacyError, match="forwarded no signed contribution statement"):
        d.decrypt(**{**req, "contributions": []})
    with pytest.raises(PrivacyError, match="two contribution statements from site EAS"):
        d.decrypt(**{**req, "contributions": [afr, eas, eas]})
    # a coordinator that says fewer (or more) sites were multiplied in than vouched
    with pytest.raises(PrivacyError, match="says 2 sites' ciphertexts were multiplied in, but forwards 3 signed"):
        d.decrypt(**{**req, "summands": 2})
    # none of these refused requests used the round up: the honest one still decrypts
    assert d.decrypt(**req)[:3].tolist() == [6, 60, 600]


def test_analyst_decryptor__refuses_forged_statements(session_pki, keypair, encryptor, tmp_path):
    d = _decryptor(session_pki, keypair)
    req = _round(session_pki, keypair, encryptor, _ctx())
    afr, eas, eur = req["contributions"]
    eur_digest = {s: eur.chunks_digest for s in SITES}
    # a certificate for "EUR" from a CA that is not the consortium's, and the statement signed with its key
    pki.issue(session_pki.root / "rogue-ca", tmp_path, name="EUR", role="site")
    rogue = Contribution.signed(
        _ctx(),
        "EUR",
        eur.chunks_digest,
        key_pem=(tmp_path / "EUR.key").read_bytes(),
        certificate_pem=(tmp_path / "EUR.pem").read_bytes(),
    )
    forged = {
        "a certificate the consortium CA did not issue": rogue,
        # EUR's real certificate, the statement signed with another site's key
        "site EUR's contribution statement signature does not verify": dataclasses.replace(
            eur, signature=pki.sign_statement(session_pki.tls("AFR").key.read_bytes(), eur.transcript())
        ),
        # changed after signing: another chunk digest, or another round digest
        "signature does not verify \\(forged or changed after signing\\)": dataclasses.replace(
            eur, chunks_digest=b"\x00" * 32
        ),
        # an analyst's certificate (issued by the CA, but not site EUR's) with its own key
        "the certificate sent with site EUR's contribution statement is not site EUR's": Contribution.signed(
            _ctx(),
            "EUR",
            eur.chunks_digest,
            key_pem=session_pki.tls("alice").key.read_bytes(),
            certificate_pem=session_pki.tls("alice").cert.read_bytes(),
        ),
        "with a certificate the consortium CA did not issue": dataclasses.replace(eur, certificate=b"not a pem"),
    }
    for why, statement in forged.items():
        with pytest.raises(PrivacyError, match=why):
            d.decrypt(**{**req, "contributions": [afr, eas, statement]})
    # EUR signed another round digest than the others (told of another computation)
    other = signed_statements(session_pki, dataclasses.replace(_ctx(), round_digest="e" * 64), eur_digest)
    with pytest.raises(PrivacyError, match="disagree on the round's participants or on what it computed"):
        d.decrypt(**{**req, "contributions": [afr, eas, other[2]]})
    assert d.decrypt(**req)[:3].tolist() == [6, 60, 600]


def test_analyst_decryptor__refuses_statements_of_another_attempt_round_or_job(session_pki, keypair, encryptor):
    d = _decryptor(session_pki, keypair)
    req = _round(session_pki, keypair, encryptor, _ctx(round_no=2, attempt=1))
    digests = {s: c.chunks_digest for s, c in zip(SITES, req["contributions"], strict=True)}
    for ctx, shown in [
        (_ctx(round_no=2, attempt=0), "is for round 2 \\(attempt 0\\) of job job1"),
        (_ctx(round_no=1, attempt=1), "is for round 1 \\(attempt 1\\) of job job1"),
        (_ctx(round_no=2, attempt=1, job_id="job0"), "is for round 2 \\(attempt 1\\) of job job0"),
    ]:
        replayed = signed_statements(session_pki, ctx, digests)  # real signatures, of another round attempt
        with pytest.raises(
            PrivacyError, match=f"refusing to decrypt round 2 \\(attempt 1\\) of job job1: site AFR's.*{shown}"
        ):
            d.decrypt(**{**req, "contributions": replayed})
        mixed = [replayed[0], *req["contributions"][1:]]
        with pytest.raises(PrivacyError, match="a replayed statement"):
            d.decrypt(**{**req, "contributions": mixed})
    assert d.decrypt(**req)[:3].tolist() == [6, 60, 600]


def test_analyst_decryptor__participants_must_be_the_sites_the_analyst_signed(session_pki, keypair, encryptor):
    # a subset of the job's --sites, signed consistently by the two sites it was run over
    d = _decryptor(session_pki, keypair, sites=SITES)
    subset = _round(session_pki, keypair, encryptor, _ctx(participants=("AFR", "EUR")))
    with pytest.raises(
        PrivacyError,
        match="its contributions come from AFR, EUR; the job's signed site list \\(--sites\\) is AFR, EAS, EUR",
    ):
        d.decrypt(**subset)
    # an extra site beyond the job's --sites
    d = _decryptor(session_pki, keypair, sites=("AFR", "EAS"))
    with pytest.raises(
        PrivacyError, match="come from AFR, EAS, EUR; the job's signed site list \\(--sites\\) is AFR, EAS$"
    ):
        d.decrypt(**_round(session_pki, keypair, encryptor, _ctx()))
    assert d.decrypt(**_round(session_pki, keypair, encryptor, _ctx(participants=("AFR", "EAS"))))[:3].tolist() == [
        3,
        30,
        300,
    ]


def test_analyst_decryptor__without_sites_the_first_round_fixes_the_participants(session_pki, keypair, encryptor):
    d = _decryptor(session_pki, keypair)
    assert d.decrypt(**_round(session_pki, keypair, encryptor, _ctx()))[:3].tolist() == [6, 60, 600]
    # attack C1 under paillier: round 1 again (a fresh attempt) over all sites but EAS
    for participants in (("AFR", "EUR"), ("AFR", "EAS")):
        for round_no in (1, 2):
            req = _round(session_pki, keypair, encryptor, _ctx(round_no=round_no, attempt=1, participants=participants))
            with pytest.raises(
                PrivacyError,
                match=f"come from {', '.join(participants)}; the job's earlier rounds were decrypted over AFR, EAS, EUR",
            ):
                d.decrypt(**req)
    assert d.decrypt(**_round(session_pki, keypair, encryptor, _ctx(round_no=2)))[:3].tolist() == [6, 60, 600]


def test_analyst_decryptor__a_round_is_decrypted_under_one_attempt_only(session_pki, keypair, encryptor):
    d = _decryptor(session_pki, keypair)
    first = _round(session_pki, keypair, encryptor, _ctx(round_no=1, attempt=0), name="x")
    d.decrypt(**first)
    # round 1 again under attempt 1: fresh masks and ciphertexts, validly signed by every site, any
    # array name; it is refused even though only one array of round 1 was decrypted so far
    for name in ("x", "y"):
        again = _round(session_pki, keypair, encryptor, _ctx(round_no=1, attempt=1), name=name)
        with pytest.raises(
            PrivacyError,
            match="refusing to decrypt round 1 again under attempt 1: it was decrypted under attempt 0; each round",
        ):
            d.decrypt(**again)
    # the same attempt goes on (another array of round 1, under the round's statements), and so does
    # the next round
    other = _round(session_pki, keypair, encryptor, _ctx(round_no=1, attempt=0), name="y")
    assert d.decrypt(**{**other, "contributions": first["contributions"]})[:1] == [6]
    assert d.decrypt(**_round(session_pki, keypair, encryptor, _ctx(round_no=2, attempt=1)))[:1] == [6]


def test_analyst_decryptor__a_round_recomputed_under_the_same_attempt_is_refused(session_pki, keypair, encryptor):
    # found in review: the sites asked for round 1, attempt 0 again (e.g. over a changed plan) sign
    # fresh statements for the same (round, attempt); decrypting those under new array names would
    # difference the two computations
    d = _decryptor(session_pki, keypair)
    d.decrypt(**_round(session_pki, keypair, encryptor, _ctx(round_no=1, attempt=0), name="x"))
    again = _round(session_pki, keypair, encryptor, _ctx(round_no=1, attempt=0), name="x#again")
    with pytest.raises(PrivacyError, match="the round was decrypted with other signed contributions"):
        d.decrypt(**again)


def test_analyst_decryptor__revoked_site_certificates_are_refused(session_pki, keypair, encryptor):
    serial = x509.load_pem_x509_certificate(session_pki.tls("EUR").cert.read_bytes()).serial_number
    d = _decryptor(session_pki, keypair, revoked=lambda cert: cert.serial_number == serial)
    req = _round(session_pki, keypair, encryptor, _ctx())
    with pytest.raises(PrivacyError, match="paillier: site EUR's certificate has been revoked"):
        d.decrypt(**req)

    def stale(cert):
        raise ConfigError("tls.crl: crl.pem is stale")

    d = _decryptor(session_pki, keypair, revoked=stale)
    with pytest.raises(PrivacyError, match="refusing to decrypt round 1 .*: tls.crl: crl.pem is stale"):
        d.decrypt(**req)


def test_contribution__digest_covers_every_chunk_field_and_travels_intact(session_pki, keypair, encryptor):
    chunk = ProtectedChunk(name="x", offset=0, length=2, total_length=4, encoding="paillier-ring64", data=b"ab")
    base = ChunkDigest()
    base.update(chunk)
    for change in ({"name": "y"}, {"offset": 2}, {"length": 1}, {"total_length": 5}, {"encoding": "e"},
                   {"data": b"ac"}, {"shape": (2, 2)}):  # fmt: skip
        other = ChunkDigest()
        other.update(dataclasses.replace(chunk, **change))
        assert other.digest() != base.digest(), change
    # the protector's digest is the digest of exactly what it yielded, in order: the coordinator's check
    pairs = {s: RoundKeyPair() for s in ("AFR", "EAS")}
    keys = PaillierKeys(keypair=pairs["AFR"], peers={"EAS": pairs["EAS"].public_key}, encryptor=encryptor)
    protector = PaillierProtector(_ctx(participants=("AFR", "EAS")), "AFR", keys)
    received = ChunkDigest()
    for lo, hi in ((0, 30), (30, 100)):
        for c in protector.protect("i", lo, 100, np.arange(lo, hi)):
            received.update(c)
    assert protector.contribution_digest() == received.digest()
    tls = session_pki.tls("AFR")
    signed = Contribution.of(protector, key_pem=tls.key.read_bytes(), certificate_pem=tls.cert.read_bytes())
    assert signed is not None and signed.site == "AFR" and signed.chunks_digest == received.digest()
    assert pki.verify_statement(
        x509.load_pem_x509_certificate(signed.certificate), signed.transcript(), signed.signature
    )
    # a mode whose totals nobody decrypts signs nothing
    masks = SecAggProtector(_ctx(participants=("AFR", "EAS")), "AFR", pairs["AFR"], {"EAS": pairs["EAS"].public_key})
    assert Contribution.of(masks, key_pem=tls.key.read_bytes(), certificate_pem=tls.cert.read_bytes()) is None
    req = _round(session_pki, keypair, encryptor, _ctx())
    (statement, *_) = req["contributions"]
    assert statement.covers(_ctx(), "AFR", statement.chunks_digest)
    assert not statement.covers(_ctx(attempt=1), "AFR", statement.chunks_digest)
    assert not statement.covers(_ctx(), "AFR", base.digest())
    assert contribution_from_pb(contribution_to_pb(statement)) == statement
    ca_pem = session_pki.tls("alice").ca.read_bytes()
    assert verify_contributions(req["contributions"], job_id="job1", round_no=1, attempt=0, ca_pem=ca_pem) == SITES
