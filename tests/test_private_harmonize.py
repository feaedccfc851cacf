"""Private harmonization (issue 14, O1): the coordinator learns the variants present at every site
and nothing about the others; a coordinator that tampers with the exchange is caught.

The exchange runs here with the coordinator's real ``Exchange`` and the sites' real
``SiteHarmonizer``, joined by an in-memory relay that a test may make deviate.
"""

from __future__ import annotations

import types
from collections.abc import Callable

import numpy as np
import pytest

from coordinator.harmonizer import Exchange, harmonize_revealed
from fedstat.data.variants import VariantTable, harmonize
from fedstat.errors import PolicyRefused, PrivacyError, ProtocolError
from fedstat.privacy import psi
from fedstat.privacy.secagg import RoundKeyPair
from fedstat.wire import site_pb2
from site_agent.harmonize import SiteHarmonizer, SiteIdentity

SITES = ("AFR", "EAS", "EUR")


def vt(rows) -> VariantTable:
    chrom, pos, id_, ref, alt = zip(*rows, strict=True)
    return VariantTable.from_lists(chrom, pos, id_, ref, alt)


def identity(session_pki, name: str, *, min_sites: int = 2) -> SiteIdentity:
    tls = session_pki.tls(name)
    return SiteIdentity(
        name=name,
        key_pem=tls.key.read_bytes(),
        cert_pem=tls.cert.read_bytes(),
        ca_pem=tls.ca.read_bytes(),
        revoked=None,
        min_sites=min_sites,
    )


class Relay:
    """The coordinator's transport to in-memory sites; ``tamper(site, kind, body)`` may change what
    the coordinator sends (a deviating coordinator), and every site message is kept."""

    def __init__(self, session_pki, tables: dict[str, VariantTable], tamper: Callable | None = None):
        self.job_id = "J1"
        self.sites = {
            n: SiteHarmonizer(
                self.job_id, identity(session_pki, n), types.SimpleNamespace(variants=t, multiallelic_skipped=0)
            )
            for n, t in tables.items()
        }
        self.inbox: list[tuple[str, site_pb2.SiteMessage]] = []
        self.received: list[tuple[str, site_pb2.SiteMessage]] = []
        self.tamper = tamper

    def send(self, site: str, **kind) -> None:
        ((name, body),) = kind.items()
        if self.tamper is not None:
            body = self.tamper(site, name, body) or body
        for out in self.sites[site].handle(site_pb2.CoordinatorMessage(**{name: body})):
            self.inbox.append((site, out))
            self.received.append((site, out))

    def receive(self, deadline, what, pending):
        assert self.inbox, f"no site answered while waiting for {what} from {pending()}"
        return self.inbox.pop(0)

    def run(self, names=SITES, attempt: int = 1):
        return Exchange(self, list(names), attempt, timeout_s=10).run()


def _random_tables(seed: int) -> dict[str, VariantTable]:
    """Three sites over shared and private variants, with swapped alleles, duplicates, several
    variants at one position and other chromosome names."""
    rng = np.random.default_rng(seed)
    bases = np.array(list("ACGT"))
    pool = []
    for i in range(300):
        chrom = str(rng.integers(1, 4))
        ref, alt = rng.choice(bases, 2, replace=False)
        pool.append((chrom, int(rng.integers(1, 60)) * 1000 + 1, f"rs{i}", str(ref), str(alt)))
    pool.append(("chr1", 1001, "rsC", "A", "G"))
    tables = {}
    for k, site in enumerate(SITES):
        rows = [r for j, r in enumerate(pool) if j < 200 or rng.random() < 0.4]
        rows = [
            (c, p, i if rng.random() < 0.8 else ".", *((a, r) if rng.random() < 0.3 else (r, a)))
            for c, p, i, r, a in rows
        ]
        rows += rows[5 + k : 7 + k]  # a duplicated key at each site
        order = rng.permutation(len(rows))
        tables[site] = vt([rows[j] for j in order])
    return tables


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_exchange__equals_harmonizing_the_full_lists_and_reveals_only_the_intersection(session_pki, seed):
    tables = _random_tables(seed)
    relay = Relay(session_pki, tables)
    revealed = relay.run()
    private = harmonize_revealed(revealed)
    full = harmonize(tables)
    for col in ("chrom", "pos", "id", "ref", "alt"):
        assert list(getattr(private.variants, col)) == list(getattr(full.variants, col)), col
    assert private.n_excluded == full.n_excluded > 0
    assert private.n_duplicate == full.n_duplicate and min(full.n_duplicate.values()) > 0
    for site in SITES:
        plan = relay.sites[site].site_plan(private.plans[site], 1)  # the site maps revealed rows to its own
        np.testing.assert_array_equal(plan.local_index, full.plans[site].local_index)
        np.testing.assert_array_equal(plan.flip, full.plans[site].flip)
        # what the site revealed is exactly its rows of the common variants, nothing else
        got = revealed.tables[site]
        assert len(got) == len(full.variants)
        common = {
            (c, p, *sorted((r, a)))
            for c, p, r, a in zip(
                full.variants.chrom, full.variants.pos, full.variants.ref, full.variants.alt, strict=True
            )
        }
        assert {
            (c, p, *sorted((r, a))) for c, p, r, a in zip(got.chrom, got.pos, got.ref, got.alt, strict=True)
        } == common
    # nothing but hashes, sealed shares, keys and tags before the reveal; hashes sorted by value
    for _, msg in relay.received:
        kind = msg.WhichOneof("kind")
        assert kind in ("round_key", "harmonize_shares", "keys", "harmonize_tag")
        if kind == "keys" and not msg.keys.revealed:
            assert len(msg.keys.keys.pos) == 0 and msg.keys.hashes
            h = psi.as_hashes(msg.keys.hashes)
            assert np.all(h[1:] > h[:-1])


def test_hash_variants__swapped_alleles_hash_alike_duplicates_dropped_and_counted():
    key = bytes(range(32))
    t = vt([("1", 5, "a", "A", "G"), ("1", 5, "b", "G", "A"), ("1", 6, "c", "A", "G"), ("chr1", 6, "d", "A", "G")])
    h = psi.hash_variants(t, key)
    assert h.n_duplicate == 1 and sorted(h.rows.tolist()) == [2, 3]  # rows 0/1 are one key listed twice
    other = psi.hash_variants(t, bytes(32))
    assert not set(h.hashes.tolist()) & set(other.hashes.tolist())  # another key, other hashes


def test_exchange__coordinator_substituting_a_key_is_detected(session_pki):
    tables = _random_tables(4)
    own = RoundKeyPair()

    def substitute(site, kind, body):
        if kind == "harmonize" and body.peer_keys:
            body.peer_keys[1].public_key = own.public_key  # the coordinator's own key for EAS

    with pytest.raises(PrivacyError, match="harmonization: secure aggregation: .*key substitution detected"):
        Relay(session_pki, tables, substitute).run()


def test_exchange__coordinator_changing_or_dropping_a_share_is_detected(session_pki):
    tables = _random_tables(5)

    def change(site, kind, body):
        if kind == "harmonize" and body.shares and site == "EUR":
            c = body.shares[0].ciphertext
            body.shares[0].ciphertext = bytes([c[0] ^ 1]) + c[1:]

    with pytest.raises(PrivacyError, match="the share site AFR sealed for this site does not open"):
        Relay(session_pki, tables, change).run()

    def drop(site, kind, body):
        if kind == "harmonize" and body.shares and site == "EUR":
            del body.shares[1]

    with pytest.raises(PrivacyError, match=r"no share from site\(s\) EAS"):
        Relay(session_pki, tables, drop).run()

    def readdress(site, kind, body):  # AFR's share for EAS relayed to EUR
        if kind == "harmonize" and body.shares and site == "EUR":
            body.shares[0].recipient = "EAS"

    with pytest.raises(PrivacyError, match="not one this site expects"):
        Relay(session_pki, tables, readdress).run()


def _private_hash(relay: Relay, site: str, common_with: str) -> bytes:
    """A hash ``site`` sent that ``common_with`` did not (the coordinator holds both lists)."""
    lists = {}
    for s, msg in relay.received:
        if msg.WhichOneof("kind") == "keys" and not msg.keys.revealed:
            lists.setdefault(s, set()).update(psi.as_hashes(msg.keys.hashes).tolist())
    return sorted(lists[site] - lists[common_with])[0]


def test_exchange__coordinator_asking_one_site_for_a_variant_only_it_holds_gets_nothing(session_pki):
    """Attack O1 by a deviating coordinator: it adds to EAS's intersection one hash only EAS sent.
    EAS holds it and confirms, but the other sites confirmed another intersection: EAS reveals
    nothing."""
    tables = _random_tables(6)
    relay: Relay

    def extra_for_eas(site, kind, body):
        if kind == "intersection" and site == "EAS":
            h = np.sort(np.append(psi.as_hashes(body.hashes), _private_hash(relay, "EAS", "AFR")))
            return site_pb2.HarmonizeIntersection(
                job_id=body.job_id, attempt=body.attempt, total=len(h), hashes=h.tobytes()
            )
        return None

    relay = Relay(session_pki, tables, extra_for_eas)
    with pytest.raises(PrivacyError, match="did not confirm the intersection this site was sent"):
        relay.run()
    assert not [m for _, m in relay.received if m.WhichOneof("kind") == "keys" and m.keys.revealed]

    def extra_for_all(site, kind, body):
        if kind == "intersection":
            h = np.sort(np.append(psi.as_hashes(body.hashes), _private_hash(relay, "EAS", "AFR")))
            return site_pb2.HarmonizeIntersection(
                job_id=body.job_id, attempt=body.attempt, total=len(h), hashes=h.tobytes()
            )
        return None

    relay = Relay(session_pki, tables, extra_for_all)
    with pytest.raises(ProtocolError, match=r"holds 1 hash\(es\) this site does not hold; .* reveals nothing"):
        relay.run()
    assert not [m for _, m in relay.received if m.WhichOneof("kind") == "keys" and m.keys.revealed]


def test_exchange__a_replayed_confirmation_from_an_earlier_exchange_is_refused(session_pki):
    tables = _random_tables(7)
    first = Relay(session_pki, tables)
    first.run()
    old_tags = [m.harmonize_tag for _, m in first.received if m.WhichOneof("kind") == "harmonize_tag"]

    def replay(site, kind, body):
        if kind == "harmonize" and body.tags:
            for t, old in zip(body.tags, old_tags, strict=True):
                t.tag = old.tag

    with pytest.raises(PrivacyError, match="did not confirm the intersection"):
        Relay(session_pki, tables, replay).run()


def test_site_harmonizer__refuses_too_few_sites_other_sites_and_stale_exchanges(session_pki):
    t = vt([("1", 1, "a", "A", "G")])
    geno = types.SimpleNamespace(variants=t, multiallelic_skipped=0)
    site = SiteHarmonizer("J", identity(session_pki, "AFR", min_sites=3), geno)

    def request(participants, attempt=1):
        msg = site_pb2.CoordinatorMessage(
            keys_request=site_pb2.KeysRequest(job_id="J", participants=participants, attempt=attempt)
        )
        return list(site.handle(msg))

    with pytest.raises(PolicyRefused, match=r"harmonization over 2 site\(s\) is below this site's minimum of 3"):
        request(["AFR", "EAS"])  # a coordinator shrinking the set to learn a larger intersection
    with pytest.raises(ProtocolError, match="does not list this site"):
        request(["EAS", "EUR", "SAS"])
    assert request(["AFR", "EAS", "EUR"])[0].round_key.round == psi.HARMONIZE_ROUND
    with pytest.raises(ProtocolError, match="other sites than this job's first harmonization"):
        request(["AFR", "EAS", "SAS"], attempt=2)
    with pytest.raises(ProtocolError, match="is not newer than exchange 1"):
        request(["AFR", "EAS", "EUR"], attempt=1)
    # a coordinator looping exchanges (each a pass over the site's variants) is stopped
    from site_agent.harmonize import MAX_EXCHANGES

    for attempt in range(2, MAX_EXCHANGES + 1):
        assert request(["AFR", "EAS", "EUR"], attempt=attempt)
    with pytest.raises(ProtocolError, match=f"more than {MAX_EXCHANGES} exchanges for one job"):
        request(["AFR", "EAS", "EUR"], attempt=MAX_EXCHANGES + 1)
    pinned = SiteHarmonizer("J", identity(session_pki, "AFR"), geno, sites=("AFR", "EAS", "EUR"))
    with pytest.raises(ProtocolError, match="other sites than the job's signed --sites"):
        list(
            pinned.handle(
                site_pb2.CoordinatorMessage(
                    keys_request=site_pb2.KeysRequest(job_id="J", participants=["AFR", "EAS"], attempt=1)
                )
            )
        )


def test_harmonization_key__is_never_valid_for_a_round(session_pki):
    """A harmonization key is signed over round 0 and digest harmonize/v1: a round's key check
    (its own round and digest) refuses it."""
    from fedstat.privacy.base import RoundContext
    from fedstat.privacy.secagg import verify_round_keys

    tls = {n: identity(session_pki, n) for n in ("AFR", "EAS")}
    ctx = psi.harmonize_context("J", 1, ("AFR", "EAS"))
    keys = {
        n: psi.GroupKeyAgreement(ctx, n).signed(signing_key_pem=i.key_pem, certificate_pem=i.cert_pem)
        for n, i in tls.items()
    }
    round_ctx = RoundContext("J", 0, 1, ("AFR", "EAS"), round_digest="0" * 64)
    with pytest.raises(PrivacyError, match="signature does not verify"):
        verify_round_keys(round_ctx, list(keys.values()), ca_pem=tls["AFR"].ca_pem, own=keys["AFR"])


# --- through the real agents and coordinator (mTLS) --------------------------------------------

PRIVATE = ("22", 48_000_123, "rsPRIVATE01", "G", "C")  # listed only in EAS's VCF


@pytest.fixture()
def consortium_data(tmp_path):
    """The GWAS fixture with one variant in EAS's VCF that no other site lists (attack O1: a VCF
    listing observed variants tells whoever sees the list that a carrier is there)."""
    import gzip
    import shutil

    from tests.conftest import GWAS

    root = tmp_path / "data"
    shutil.copytree(GWAS, root)
    vcf = root / "EAS" / "genotypes.vcf.gz"
    lines = gzip.decompress(vcf.read_bytes()).decode().splitlines()
    n_samples = len(lines[-1].split("\t")) - 9
    chrom, pos, id_, ref, alt = PRIVATE
    lines.append("\t".join([chrom, str(pos), id_, ref, alt, ".", "PASS", ".", "GT", "0/1"] + ["0/0"] * (n_samples - 1)))
    vcf.unlink()
    (root / "EAS" / "genotypes.vcf").write_text("\n".join(lines) + "\n")
    return root


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


@pytest.fixture()
def recorded(monkeypatch) -> list[tuple[str, site_pb2.SiteMessage]]:
    """Every message any site sends the coordinator, as it arrives."""
    from coordinator.sessions import SiteRegistry

    seen: list[tuple[str, site_pb2.SiteMessage]] = []
    route = SiteRegistry.route

    def recording(self, site, msg):
        seen.append((site, msg))
        route(self, site, msg)

    monkeypatch.setattr(SiteRegistry, "route", recording)
    return seen


def test_o1__a_variant_listed_at_one_site_never_reaches_the_coordinator(session_pki, consortium, recorded, tmp_path):
    from fedstat.client import Client
    from fedstat.jobs import JobSpec
    from tests.conftest import analyst_profile

    coord, port = consortium
    with Client(analyst_profile(session_pki, port)) as c:
        job = c.wait(c.submit(JobSpec(analyses=("freq",), out_name="f")).job_id)
        files = c.fetch_results(job.job_id, tmp_path / "out")
        log = "\n".join(c.get(job.job_id).log)
    chrom, pos, id_, ref, alt = PRIVATE
    wire = b"".join(m.SerializeToString() for _, m in recorded)
    assert len(recorded) > 20 and len(wire) > 100_000
    assert id_.encode() not in wire
    assert str(pos).encode() not in wire and _varint(pos) not in wire  # as text or as a protobuf int64
    revealed = [m.keys for _, m in recorded if m.WhichOneof("kind") == "keys" and m.keys.revealed]
    assert len(revealed) == 3 and all(len(k.keys.pos) == 800 for k in revealed)  # the intersection only
    assert all(pos not in k.keys.pos for k in revealed)
    hashed = {s: m.keys.total for s, m in recorded if m.WhichOneof("kind") == "keys" and not m.keys.revealed}
    assert hashed == {"AFR": 800, "EAS": 801, "EUR": 800}  # what remains: EAS lists one more (a count)
    assert "harmonized 800 variants present at all 3 sites; 1 excluded (absent at some sites)" in log
    afreq = next(f for f in files if f.name == "f.afreq").read_text()
    assert len(afreq.splitlines()) == 801 and id_ not in afreq and id_ not in log
    from site_agent.audit_verify import show

    (record,) = [r for r in show(tmp_path / "EAS" / "audit.log") if r["event"] == "harmonize"]
    assert record["job_id"] == job.job_id and record["sites"] == ["AFR", "EAS", "EUR"]
    assert (
        record["reason"]
        == "revealed the keys of the 800 variants every site confirmed holding; keyed hashes of 801 sent"
    )


def test_o1__a_coordinator_asking_one_site_for_its_private_variant_gets_nothing(
    session_pki, consortium, recorded, monkeypatch
):
    """The deviating coordinator adds the hash only EAS sent to the intersection it sends EAS: EAS
    holds it and confirms, but AFR and EUR confirmed the true intersection, so no site reveals."""
    from coordinator.harmonizer import Exchange
    from fedstat.client import Client
    from fedstat.jobs import JobSpec
    from tests.conftest import analyst_profile

    honest = Exchange.intersection_for

    def deviating(self, site, common):
        hashes = honest(self, site, common)
        if site != "EAS":
            return hashes
        sent = {
            s: set(psi.as_hashes(m.keys.hashes).tolist())
            for s, m in recorded
            if m.WhichOneof("kind") == "keys" and not m.keys.revealed
        }
        (only_eas,) = sent["EAS"] - sent["AFR"]
        return np.sort(np.append(hashes, np.array([only_eas], dtype=hashes.dtype)))

    monkeypatch.setattr(Exchange, "intersection_for", deviating)
    _, port = consortium
    with Client(analyst_profile(session_pki, port)) as c:
        job = c.wait(c.submit(JobSpec(analyses=("freq",), out_name="f")).job_id, raise_on_failure=False)
    assert job.state == "FAILED"
    assert "did not confirm the intersection this site was sent" in job.error, job.error
    assert not [m for _, m in recorded if m.WhichOneof("kind") == "keys" and m.keys.revealed]
    assert str(PRIVATE[1]).encode() not in b"".join(m.SerializeToString() for _, m in recorded)


def test_harmonize_revealed__a_site_revealing_other_keys_than_the_intersection_fails_the_job(session_pki):
    from fedstat.errors import JobFailed

    relay = Relay(session_pki, _random_tables(8))
    revealed = relay.run()
    afr = revealed.tables["AFR"]
    doubled = afr.take(np.r_[0, np.arange(len(afr) - 1)])  # its first key twice, its last one left out
    bad = type(revealed)(**{**revealed.__dict__, "tables": {**revealed.tables, "AFR": doubled}})
    with pytest.raises(JobFailed, match="do not match the intersection of their hashes"):
        harmonize_revealed(bad)
