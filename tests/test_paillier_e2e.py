"""--privacy paillier with the real agents, coordinator and analyst client: results equal secagg
(bit for bit) and none (to the fixed-point precision), the coordinator's messages cannot be opened
without the analyst's key and, masked underneath, not even one site's with it; the analyst's
client refuses what would expose one site."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from phe import PaillierPrivateKey

from coordinator.decryptors import DecryptorRegistry
from coordinator.sessions import SiteRegistry
from fedstat.client import Client
from fedstat.errors import InputError, JobFailed, PrivacyError
from fedstat.jobs import JobSpec
from fedstat.privacy.base import RoundContext
from fedstat.privacy.paillier import (
    PUBLIC_KEY_OPTION,
    AnalystDecryptor,
    PaillierAggregator,
    PaillierKeys,
    PaillierProtector,
    layout_for,
)
from fedstat.privacy.paillier_crypto import (
    PaillierDecryptor,
    PaillierEncryptor,
    add_ciphertexts,
    ciphertexts_from_bytes,
    ciphertexts_to_bytes,
    generate_keypair,
)
from fedstat.privacy.secagg import RoundKeyPair
from tests.conftest import analyst_profile
from tests.test_paillier_contributions import signed_statements
from tests.test_secagg_e2e import _columns, _run

GLM = dict(
    analyses=("freq", "hardy", "glm"),
    pheno_names=("QT", "CC"),
    covar_names=("AGE", "SEX"),
    out_name="r",
    options={"require_pheno": "1"},  # one cohort for every round (the sites' release ledgers)
)


@pytest.fixture(scope="module")
def keypair():
    return generate_keypair(2048)


def test_paillier__results_equal_secagg_exactly_and_none_to_fixed_point(session_pki, consortium, tmp_path):
    _, port = consortium
    _, plain = _run(session_pki, port, tmp_path, JobSpec(privacy="none", **GLM))
    _, masked = _run(session_pki, port, tmp_path, JobSpec(privacy="secagg", **GLM))
    job_id, encrypted = _run(session_pki, port, tmp_path, JobSpec(privacy="paillier", **GLM))
    # the same ring totals as secure aggregation, so the same bytes
    assert sorted(encrypted) == sorted(masked)
    for name in encrypted:
        assert encrypted[name] == masked[name], name
    for name in ("r.afreq", "r.hardy"):
        assert encrypted[name] == plain[name], name
    a, b = _columns(plain["r.QT.glm.linear"]), _columns(encrypted["r.QT.glm.linear"])
    assert len(a) == len(b) > 100
    for ra, rb in zip(a[1:], b[1:], strict=True):
        for x, y in zip(ra, rb, strict=True):
            assert x == y or abs(float(x) - float(y)) <= 1e-5 * abs(float(x)), (x, y)
    with Client(analyst_profile(session_pki, port)) as c:
        log = "\n".join(c.get(job_id).log)
    assert "totals decrypted by the analyst's client" in log
    assert c._decryptors == {}  # the private key is forgotten when the job ends


def test_paillier__eavesdropping_coordinator_sees_only_ciphertexts(
    session_pki, consortium, tmp_path, monkeypatch, keypair
):
    """Every sums message the coordinator receives is ciphertext under the analyst's key; the
    coordinator holds no private key; even with the analyst's key one site's chunk opens only to
    uniformly masked words, and only the product over all sites opens to the true total."""
    coord, port = consortium
    recorded: list[tuple[str, object]] = []
    route = SiteRegistry.route

    def recording_route(self, site, msg):
        if msg.WhichOneof("kind") == "sums":
            recorded.append((site, msg.sums.chunk))
        route(self, site, msg)

    monkeypatch.setattr(SiteRegistry, "route", recording_route)
    public_key, private_key = keypair
    spec = JobSpec(
        analyses=("geno-counts",),
        privacy="paillier",
        out_name="g",
        options={PUBLIC_KEY_OPTION: _key_text(public_key)},
    )
    with Client(analyst_profile(session_pki, port)) as c:
        job = c.submit(spec)
        from fedstat.privacy.paillier_crypto import PaillierDecryptor as D

        c._decryptors[job.job_id] = AnalystDecryptor(
            job.job_id, D(private_key), ca_pem=session_pki.ca.joinpath("ca.pem").read_bytes()
        )
        c.wait(job.job_id)
    assert {s for s, _ in recorded} == {"AFR", "EAS", "EUR"}
    assert all(chunk.encoding == "paillier-ring64" for _, chunk in recorded)
    # nothing on the coordinator holds a private key
    assert not any(isinstance(v, PaillierPrivateKey) for v in vars(coord.engine).values())
    # plaintext sums of the same job
    monkeypatch.setattr(SiteRegistry, "route", route)
    truth = {}

    def plain_route(self, site, msg):
        if msg.WhichOneof("kind") == "sums":
            c = msg.sums.chunk
            truth.setdefault((site, c.name), []).append(np.frombuffer(c.data, dtype="<i8").copy())
        route(self, site, msg)

    monkeypatch.setattr(SiteRegistry, "route", plain_route)
    _run(session_pki, port, tmp_path, JobSpec(analyses=("geno-counts",), privacy="none", out_name="g"))
    firsts = {s: c for s, c in recorded if c.name == "hom_ref" and c.offset == 0}
    assert len(firsts) == 3 and len({c.length for c in firsts.values()}) == 1
    n = firsts["AFR"].length
    opened = {s: _open(private_key, c.data)[:n] for s, c in firsts.items()}  # the key holder, bypassing its client
    true = {s: np.concatenate(truth[(s, "hom_ref")])[:n] for s in firsts}
    for s in firsts:
        # even the key holder cannot read one site's ciphertext: under it lie masked ring words
        assert not np.any(opened[s].view(np.int64) == true[s]), s
        bits = np.unpackbits(opened[s].view(np.uint8))
        assert abs(bits.mean() - 0.5) < 6 * 0.5 / np.sqrt(bits.size), s
    # only the product over every site opens to the true total (the masks cancel)
    total = opened["AFR"] + opened["EAS"] + opened["EUR"]  # mod 2^64
    assert np.array_equal(total.view(np.int64), true["AFR"] + true["EAS"] + true["EUR"])
    _, other_private = generate_keypair(2048)
    for c in firsts.values():  # and no other key opens anything
        try:
            other = _open(other_private, c.data)
        except PrivacyError:
            continue  # the plaintext does not even fit the slot layout
        assert not np.array_equal(other[:n], opened["AFR"])


def _open(private_key, data: bytes) -> np.ndarray:
    """The ring words under ciphertexts ``data``, decrypted with the private key directly."""
    layout = layout_for(private_key.public_key)
    plaintexts = PaillierDecryptor(private_key).decrypt_plaintexts(ciphertexts_from_bytes(data, private_key.public_key))
    return layout.unpack(plaintexts, len(plaintexts) * layout.slots)


def _key_text(public_key) -> str:
    from fedstat.privacy.paillier_crypto import public_key_to_bytes

    return public_key_to_bytes(public_key).decode()


def test_paillier_dp__the_same_noise_as_dp_under_encryption(session_pki, consortium, tmp_path):
    _, port = consortium
    dp = {"dp_epsilon": "1.0", "dp_delta": "1e-6"}
    _, plain = _run(session_pki, port, tmp_path, JobSpec(privacy="none", analyses=("freq",), out_name="f"))
    obs = {}
    for mode in ("dp", "paillier,dp"):
        job_id, noisy = _run(
            session_pki, port, tmp_path, JobSpec(privacy=mode, analyses=("freq",), out_name="f", options=dp)
        )
        rows = list(zip(_columns(plain["f.afreq"])[1:], _columns(noisy["f.afreq"])[1:], strict=True))
        assert len(rows) > 100
        obs[mode] = np.array([float(b[-1]) - float(a[-1]) for a, b in rows])  # OBS_CT noise
        with Client(analyst_profile(session_pki, port)) as c:
            assert "differential privacy budget: will charge at its first release ε=1" in "\n".join(c.get(job_id).log)
    assert np.count_nonzero(obs["paillier,dp"]) > 0.9 * obs["paillier,dp"].size
    ratio = obs["paillier,dp"].std() / obs["dp"].std()
    assert 0.75 < ratio < 1.33, ratio  # same calibration whichever way the sums travel


def test_paillier__needs_the_client_that_holds_the_key(session_pki, consortium, tmp_path, keypair):
    coord, port = consortium
    coord.engine.config.__dict__["offer_timeout_s"] = 2.0  # how long the coordinator waits for a decryptor
    public_key, _ = keypair
    spec = JobSpec(
        analyses=("freq",), privacy="paillier", out_name="f", options={PUBLIC_KEY_OPTION: _key_text(public_key)}
    )
    with Client(analyst_profile(session_pki, port)) as c:
        job = c.submit(spec)  # a key of its own: this client holds no private key for it
        with pytest.raises(JobFailed, match="the analyst's client, which holds the private key, is not connected"):
            c.wait(job.job_id)
        with pytest.raises(InputError, match="paillier_public_key"):
            c.submit(JobSpec(analyses=("freq",), privacy="paillier", options={PUBLIC_KEY_OPTION: "{}"}))


def _site_keys(ctx: RoundContext, encryptor) -> dict[str, PaillierKeys]:
    """Every participant's verified round keys, as the agents hold them after the exchange."""
    pairs = {s: RoundKeyPair() for s in ctx.participants}
    return {
        s: PaillierKeys(
            keypair=pairs[s], peers={p: pairs[p].public_key for p in ctx.participants if p != s}, encryptor=encryptor
        )
        for s in ctx.participants
    }


def test_analyst_decryptor__refuses_lone_site_sums_repeats_and_other_jobs(session_pki, keypair):
    public_key, private_key = keypair
    d = AnalystDecryptor("job1", PaillierDecryptor(private_key), ca_pem=(session_pki.ca / "ca.pem").read_bytes())
    ctx = RoundContext(job_id="job1", round=1, attempt=0, participants=("AFR", "EUR"))
    with PaillierEncryptor(public_key, backend="inline", window_bits=4) as enc:
        keys = _site_keys(ctx, enc)
        protectors = {s: PaillierProtector(ctx, s, keys[s]) for s in ctx.participants}
        a, b = (
            next(protectors[s].protect("x", 0, 3, np.array(v))) for s, v in (("AFR", [1, 2, 3]), ("EUR", [10, 20, 30]))
        )
    product = add_ciphertexts(
        ciphertexts_from_bytes(a.data, public_key), ciphertexts_from_bytes(b.data, public_key), public_key
    )
    statements = signed_statements(session_pki, ctx, {s: p.contribution_digest() for s, p in protectors.items()})
    kw = dict(
        job_id="job1",
        round_no=1,
        attempt=0,
        name="x",
        first=0,
        data=ciphertexts_to_bytes(product, public_key),
        contributions=statements,
    )
    with pytest.raises(PrivacyError, match="one site's sums"):
        d.decrypt(summands=1, **kw)
    assert d.decrypt(summands=2, **kw)[:3].tolist() == [11, 22, 33]
    with pytest.raises(PrivacyError, match="asked again"):
        d.decrypt(summands=2, **kw)
    # attack C4: the same total again under another offset or name, or claimed summands
    for change in ({"first": 5}, {"name": "y"}):
        with pytest.raises(PrivacyError, match="asked again"):
            d.decrypt(summands=2, **{**kw, **change})
    with pytest.raises(PrivacyError, match="says 999 sites' ciphertexts were multiplied in, but forwards 2"):
        d.decrypt(summands=999, **kw)
    # ... under another attempt or round number (with the sites' statements of that round attempt)
    for round_no, attempt, why in ((1, 7, "again under attempt 7"), (2, 0, "asked again")):
        ctx2 = replace(ctx, round=round_no, attempt=attempt)
        digests = {s.site: s.chunks_digest for s in statements}
        again = {
            **kw,
            "round_no": round_no,
            "attempt": attempt,
            "contributions": signed_statements(session_pki, ctx2, digests),
        }
        with pytest.raises(PrivacyError, match=why):
            d.decrypt(summands=2, **again)
    with pytest.raises(PrivacyError, match="belongs to job job1"):
        d.decrypt(summands=2, **{**kw, "job_id": "job2"})


def test_paillier_protector_and_aggregator__chunks_cut_anywhere_sum_exactly(session_pki, keypair):
    """Sites cut arrays at different block boundaries; the packing grid keeps slots aligned."""
    public_key, private_key = keypair
    rng = np.random.default_rng(7)
    ctx = RoundContext(job_id="j", round=1, attempt=0, participants=("AFR", "EAS", "EUR"))
    n = 100
    ints = {s: rng.integers(-1000, 1000, size=n) for s in ctx.participants}
    reals = {s: rng.normal(size=(n, 2)) * 1e3 for s in ctx.participants}
    dec = AnalystDecryptor("j", PaillierDecryptor(private_key), ca_pem=(session_pki.ca / "ca.pem").read_bytes())
    digests: dict[str, bytes] = {}

    def decrypt(c, sums, key):
        assert key.n == public_key.n
        return {
            s.name: dec.decrypt(
                job_id="j",
                round_no=c.round,
                attempt=c.attempt,
                name=s.name,
                first=0,
                summands=s.summands,
                data=b"".join(int(x).to_bytes(512, "big") for x in s.ciphertexts),
                contributions=signed_statements(session_pki, c, digests),
            )
            for s in sums
        }

    agg = PaillierAggregator(ctx, public_key, decrypt)
    with PaillierEncryptor(public_key, backend="inline", window_bits=4) as enc:
        keys = _site_keys(ctx, enc)
        for site, cut in zip(ctx.participants, (1, 13, 50), strict=True):
            p = PaillierProtector(ctx, site, keys[site])
            for lo, hi in ((0, cut), (cut, n)):
                for chunk in p.protect("i", lo, n, ints[site][lo:hi]):
                    agg.add(site, chunk)
                flat = reals[site].reshape(-1)
                for chunk in p.protect("r", 2 * lo, 2 * n, flat[2 * lo : 2 * hi], (n, 2)):
                    agg.add(site, chunk)
            digests[site] = p.contribution_digest()
    totals = agg.result()
    assert np.array_equal(totals["i"], sum(ints.values()))
    assert totals["r"].shape == (n, 2)
    assert np.allclose(totals["r"], sum(reals.values()), rtol=0, atol=1e-12)


def test_decryptor_registry__times_out_with_a_clear_message(keypair):
    reg = DecryptorRegistry()
    ctx = RoundContext(job_id="j", round=1, attempt=0, participants=("A", "B"))
    with pytest.raises(Exception, match="not connected to decrypt"):
        reg.decrypt(ctx, [], public_key=keypair[0], attach_timeout_s=0.1, reply_timeout_s=1, cancelled=lambda: False)
