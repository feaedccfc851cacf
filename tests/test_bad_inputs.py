"""Bad input is refused cleanly: each broken file or message gets one clear error naming the
file, line or record and what was expected, never a participant's value or sample ID; nothing
half-written is left behind; and the daemons keep serving.

What is already covered elsewhere is not repeated here: .bim/.pvar/.fam/.psam/.bed/.pgen
malformations and the first VCF failures in ``test_data_genotypes.py``, the sample table's
format errors in ``test_data_samples.py``, generated input in ``test_fuzz_inputs.py``.
"""

from __future__ import annotations

import struct
import threading
import time
from pathlib import Path

import cyvcf2
import grpc
import numpy as np
import pytest

from fedstat.config import load_site_config
from fedstat.data.genotypes import open_genotypes
from fedstat.data.samples import MAX_COLUMNS, SampleTable, read_sample_table
from fedstat.errors import GenotypeFileError, InputError, SampleTableError
from fedstat.net import secure_channel
from fedstat.wire import analyst_pb2, analyst_pb2_grpc, common_pb2, site_pb2
from tests.conftest import Pki

VCF_HEADER = (
    "##fileformat=VCFv4.2\n##contig=<ID=1>\n"
    '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n'
    '##FORMAT=<ID=DP,Number=1,Type=Integer,Description="Depth">\n'
    "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tpatient7\tpatient8\tpatient9\n"
)
GOOD_RECORD = "1\t10\trs1\tA\tG\t.\t.\t.\tGT\t0/1\t0/0\t1/1\n"
BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")


def _record(calls: str, *, pos: str = "20", vid: str = "rs2", fmt: str = "GT") -> str:
    return f"1\t{pos}\t{vid}\tC\tT\t.\t.\t.\t{fmt}\t{calls}\n"


def _refused(
    path: Path, cache_dir: Path, *needles: str, secrets: tuple[str, ...] = (), named: Path | None = None
) -> str:
    """Open ``path``; expect a one-line GenotypeFileError naming ``named`` (default: ``path``) and
    ``needles``, quoting none of ``secrets``, and leaving no file (temporary or final) in ``cache_dir``."""
    with pytest.raises(GenotypeFileError) as info:
        open_genotypes(path, cache_dir=cache_dir)
    message = str(info.value)
    assert str(named or path) in message
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message
    for secret in secrets:
        assert secret not in message, message
    assert not cache_dir.exists() or list(cache_dir.iterdir()) == []
    return message


def _bgzip(text: str, out: Path, *, mode: str = "wz") -> bytes:
    """``text`` as a real BGZF ``.vcf.gz`` (mode ``wz``) or BCF (``wb``), written by htslib."""
    plain = out.with_name(out.name + ".src.vcf")
    plain.write_text(text)
    reader = cyvcf2.VCF(str(plain))
    writer = cyvcf2.Writer(str(out), reader, mode=mode)
    for rec in reader:
        writer.write_record(rec)
    writer.close()
    reader.close()
    plain.unlink()
    return out.read_bytes()


def _bgzf_block_ends(data: bytes) -> list[int]:
    """Offsets where BGZF blocks end (BSIZE, bytes 16-17 of each block, is its size minus 1)."""
    ends, offset = [], 0
    while offset < len(data):
        offset += struct.unpack("<H", data[offset + 16 : offset + 18])[0] + 1
        ends.append(offset)
    return ends


def _many_records(n: int) -> str:
    rng = np.random.default_rng(3)
    calls = rng.choice(["0/0", "0/1", "1/1", "./."], size=(n, 3))
    return "".join(f"1\t{100 + k}\trs{k}\tA\tG\t.\t.\t.\tGT\t" + "\t".join(row) + "\n" for k, row in enumerate(calls))


# --------------------------------------------------------------------------------- VCF records


@pytest.mark.parametrize(
    ("record", "needle"),
    [
        (_record("0/X\t0/1\t0/0"), "malformed or truncated VCF at record 2 (after 1:10)"),
        (_record("0/1\t./.:garbage\t0/0"), "malformed or truncated VCF at record 2 (after 1:10)"),
        (_record("0/1\t1/1:oops\t0/0", fmt="GT:DP"), "malformed or truncated VCF at record 2 (after 1:10)"),
        (_record("0/1\t0/0"), "malformed or truncated VCF at record 2 (after 1:10)"),  # a sample column short
        (_record("0/1\t0/0\t1/1", pos="2x0"), "malformed or truncated VCF at record 2 (after 1:10)"),
        (_record("0/1\t0/0\t1/1", pos="-20"), "malformed or truncated VCF at record 2 (after 1:10)"),
        (_record("0/1/1\t0/0\t1/1"), "record 2 (1:20): ploidy above 2 is not supported"),
        (_record("0/1\t0/0\t1/1", vid="rs 2"), "record 2 (1:20): whitespace in CHROM or ID"),
    ],
    ids=[
        "allele-X",
        "extra-subfield",
        "non-integer-DP",
        "short-row",
        "pos-not-int",
        "pos-negative",
        "ploidy-3",
        "id-space",
    ],
)
def test_open_genotypes__malformed_vcf_record_names_record_and_leaves_no_cache(tmp_path, record, needle):
    vcf = tmp_path / "genotypes.vcf"
    vcf.write_text(VCF_HEADER + GOOD_RECORD + record + _record("0/0\t0/0\t0/1", pos="30"))
    _refused(vcf, tmp_path / "cache", needle, secrets=("patient", "garbage", "oops"))


@pytest.mark.parametrize("call", ["0/65536", "0/65537", "65535/0", "0/32768", "1|99999"])
def test_open_genotypes__vcf_allele_index_beyond_int16_is_refused_not_wrapped(tmp_path, call):
    # cyvcf2's genotype.array() narrows allele indices to int16: 0/65536 read as 0/0 and
    # 0/65537 as 0/1, silently; the raw GT values must be checked instead
    vcf = tmp_path / "genotypes.vcf"
    vcf.write_text(VCF_HEADER + GOOD_RECORD + _record(f"0/1\t{call}\t0/0"))
    _refused(vcf, tmp_path / "cache", "record 2 (1:20): GT allele index above 1 in a biallelic record")


def test_open_genotypes__vcf_haploid_and_missing_calls_still_decode_from_raw_gt(tmp_path):
    vcf = tmp_path / "genotypes.vcf"
    vcf.write_text(
        VCF_HEADER
        + GOOD_RECORD
        + _record("1\t0\t.")  # haploid record: 1 -> 2, 0 -> 0
        + _record("1|0\t0\t./.", pos="30")  # haploid sample in a diploid record
        + _record("1/.\t.|1\t1/1", pos="40")  # half-calls are missing
        + _record("0/1:7\t.:3\t1/1:.", pos="50", fmt="GT:DP")
    )
    with open_genotypes(vcf, cache_dir=tmp_path / "cache") as src:
        (_, got), *rest = src.read_blocks(np.arange(src.n_variants))
    assert not rest
    np.testing.assert_array_equal(got, [[1, 0, 2], [2, 0, -9], [1, 0, -9], [-9, -9, 2], [1, -9, 2]])


def test_open_genotypes__vcf_header_without_chrom_line(tmp_path):
    vcf = tmp_path / "genotypes.vcf"
    vcf.write_text(VCF_HEADER.rsplit("#CHROM", 1)[0] + GOOD_RECORD)
    _refused(vcf, tmp_path / "cache", "not a readable VCF/BCF file (or its header is malformed)")


@pytest.mark.parametrize(
    "prefix",
    [b"", b"\x1f\x8b\x08\x00", bytes.fromhex("1f8b08040000000000ff060042430200")],
    ids=["random", "gzip-magic", "bgzf-header"],
)
def test_open_genotypes__binary_garbage_named_vcf_gz(tmp_path, prefix):
    vcf = tmp_path / "genotypes.vcf.gz"
    vcf.write_bytes(prefix + np.random.default_rng(1).bytes(4096))
    message = _refused(vcf, tmp_path / "cache")
    assert "not a readable VCF/BCF file" in message or "BGZF end-of-file block is missing" in message


@pytest.mark.parametrize("name", ["genotypes.vcf.gz", "genotypes.bcf"])
def test_open_genotypes__bgzf_cut_at_a_block_boundary_is_truncated_not_shorter(tmp_path, name):
    # htslib only warns when the end-of-file block is missing: a copy cut between blocks would
    # otherwise be read as a valid file with fewer variants
    text = VCF_HEADER + _many_records(6000)
    whole = _bgzip(text, tmp_path / name, mode="wz" if name.endswith(".gz") else "wb")
    assert whole.endswith(BGZF_EOF)
    with open_genotypes(tmp_path / name, cache_dir=tmp_path / "ok") as src:
        assert src.n_variants == 6000
    ends = _bgzf_block_ends(whole)
    assert len(ends) > 3
    site = tmp_path / "site"
    site.mkdir()
    for cut in (ends[len(ends) // 2], ends[len(ends) // 2] + 100, len(whole) - len(BGZF_EOF)):
        (site / name).write_bytes(whole[:cut])
        _refused(site / name, tmp_path / "cache", "truncated: the BGZF end-of-file block is missing")


def test_open_genotypes__truncated_vcf_text_names_last_good_record(tmp_path):
    text = VCF_HEADER + _many_records(50)
    vcf = tmp_path / "genotypes.vcf"
    vcf.write_text(text[: text.index("rs20\t") + 12])  # inside record 21's calls
    _refused(vcf, tmp_path / "cache", "malformed or truncated VCF at record 21 (after 1:119)")


def test_open_genotypes__vcf_sample_names_not_utf8(tmp_path):
    vcf = tmp_path / "genotypes.vcf"
    vcf.write_bytes(
        VCF_HEADER.replace("patient8", "J\udcf6rg").encode("utf-8", "surrogateescape") + GOOD_RECORD.encode()
    )
    _refused(vcf, tmp_path / "cache", "VCF sample names are not UTF-8 text", secrets=("patient", "rg"))


@pytest.mark.parametrize("field", ["chrom", "ref", "alt"])
def test_open_genotypes__vcf_record_not_utf8(tmp_path, field):
    record = {"chrom": b"\xf61\t20\t.\tC\tT", "ref": b"1\t20\t.\t\xf6\tT", "alt": b"1\t20\t.\tC\t\xf6"}[field]
    vcf = tmp_path / "genotypes.vcf"
    vcf.write_bytes((VCF_HEADER + GOOD_RECORD).encode() + record + b"\t.\t.\t.\tGT\t0/1\t0/0\t1/1\n")
    _refused(vcf, tmp_path / "cache", "record 2 (after 1:10): CHROM, REF or ALT is not UTF-8")


def test_open_genotypes__refused_vcf_opens_once_fixed(tmp_path):
    vcf = tmp_path / "genotypes.vcf"
    vcf.write_text(VCF_HEADER + GOOD_RECORD + _record("0/1\t0/65536\t0/0"))
    for _ in range(2):  # a refused file leaves nothing that a second open could take for a cache
        _refused(vcf, tmp_path / "cache", "allele index above 1")
    vcf.write_text(VCF_HEADER + GOOD_RECORD + _record("0/1\t0/1\t0/0"))
    with open_genotypes(vcf, cache_dir=tmp_path / "cache") as src:
        assert src.n_variants == 2
        assert src.samples.iid == ("patient7", "patient8", "patient9")


# --------------------------------------------------------------------------------- PLINK files


def _bed_site(directory: Path, n_var: int = 5, n_samp: int = 6) -> Path:
    """A small .bed/.bim/.fam set: every genotype hom REF (code 3 with A1 = ALT)."""
    directory.mkdir(parents=True, exist_ok=True)
    width = -(-n_samp // 4)
    (directory / "genotypes.bed").write_bytes(bytes((0x6C, 0x1B, 0x01)) + b"\xff" * (n_var * width))
    (directory / "genotypes.bim").write_text("".join(f"1\trs{i}\t0\t{100 + i}\tG\tA\n" for i in range(n_var)))
    (directory / "genotypes.fam").write_text("".join(f"f s{j} 0 0 1 -9\n" for j in range(n_samp)))
    return directory / "genotypes.bed"


@pytest.mark.parametrize(
    ("delta", "size"),
    [(-3, 3 + 5 * 2 - 3), (+1, 3 + 5 * 2 + 1), (+2, 3 + 6 * 2)],
    ids=["cut-mid-variant", "one-byte-over", "one-variant-over"],
)
def test_open_genotypes__bed_size_differs_from_bim_and_fam(tmp_path, delta, size):
    bed = _bed_site(tmp_path)
    data = bed.read_bytes()
    bed.write_bytes(data[:delta] if delta < 0 else data + b"\x00" * delta)
    _refused(
        bed, tmp_path / "unused", f"{size} bytes, but genotypes.bim (5 variants) and genotypes.fam (6 samples) need 13"
    )


@pytest.mark.parametrize("companion", ["genotypes.bim", "genotypes.fam"])
def test_open_genotypes__binary_companion_file(tmp_path, companion):
    bed = _bed_site(tmp_path)
    (tmp_path / companion).write_bytes(b"\x80\xfe\x00" + np.random.default_rng(2).bytes(300))
    _refused(bed, tmp_path / "unused", f"{tmp_path / companion}: not UTF-8 text", named=tmp_path / companion)


# --------------------------------------------------------------------------------- sample tables


def _table_error(path: Path) -> str:
    with pytest.raises(SampleTableError) as info:
        read_sample_table(path)
    message = str(info.value)
    assert str(path) in message
    assert "\n" not in message
    assert len(message) < len(str(path)) + 200  # a long input is never echoed
    return message.replace(str(path), "<path>")


def test_read_sample_table__million_columns_refused_fast(tmp_path):
    path = tmp_path / "samples.tsv"
    n = 1_000_000
    path.write_text("#IID\t" + "\t".join(f"PC{i}" for i in range(n)) + "\n" + "a\t" + "\t".join(["1"] * n) + "\n")
    started = time.monotonic()
    message = _table_error(path)
    assert time.monotonic() - started < 5  # refused before any row is parsed
    assert message == f"<path>: line 1: {n + 1} columns in the header, at most {MAX_COLUMNS} are supported"


def test_read_sample_table__max_columns_is_still_accepted(tmp_path):
    path = tmp_path / "samples.tsv"
    names = [f"PC{i}" for i in range(MAX_COLUMNS - 1)]
    path.write_text("#IID\t" + "\t".join(names) + "\na\t" + "\t".join(["0.5"] * len(names)) + "\n")
    table = read_sample_table(path)
    assert len(table.columns) == MAX_COLUMNS - 1
    np.testing.assert_array_equal(table.column(f"PC{MAX_COLUMNS - 2}"), [0.5])


def _column_error(table: SampleTable, name: str) -> str:
    with pytest.raises(InputError) as info:
        table.column(name)
    message = str(info.value)
    assert "\n" not in message and len(message) < 400  # a long input is never echoed
    return message


def test_read_sample_table__ten_megabyte_value_makes_a_text_column_refused_when_used(tmp_path):
    path = tmp_path / "samples.tsv"
    path.write_text("#IID\tAGE\tBMI\na\t50\t21.5\nb\t61\t" + "7" * 10_000_000 + "\n")
    table = read_sample_table(path)  # an unused column never blocks the dataset
    np.testing.assert_array_equal(table.column("AGE"), [50.0, 61.0])
    assert "column 'BMI' in samples.tsv holds words" in _column_error(table, "BMI")


def test_read_sample_table__ten_megabyte_column_name_is_quoted_cut_short(tmp_path):
    path = tmp_path / "samples.tsv"
    name = "Q" * 10_000_000
    path.write_text(f"#IID\t{name}\t{name}\na\t1\t2\n")
    message = _table_error(path)
    assert message.startswith("<path>: line 1: duplicate column 'QQQ")
    assert message.endswith("...'")


def test_read_sample_table__text_in_phenotype_column_loads_as_text_and_is_named_without_values(tmp_path):
    path = tmp_path / "samples.tsv"
    rows = [f"s{i}\t{i % 2 + 1}\t{40 + i}" for i in range(200)]
    rows[137] = "s137\tcase\t177"
    rows[150] = "s150\t2\tmale"
    path.write_text("#IID\tT2D\tAGE\n" + "\n".join(rows) + "\n")
    table = read_sample_table(path)
    assert table.columns == () and set(table.text) == {"T2D", "AGE"}
    for name in ("T2D", "AGE"):
        message = _column_error(table, name)
        assert f"column '{name}' in samples.tsv holds words" in message
        assert "case" not in message and "male" not in message and "s137" not in message


def test_read_sample_table__duplicate_iid_without_fid_names_lines_not_id(tmp_path):
    path = tmp_path / "samples.tsv"
    path.write_text("#IID\tY\nNA12878\t1\nNA12891\t2\nNA12878\t3\n")
    message = _table_error(path)
    assert message == "<path>: line 4: duplicate sample ID (first seen on line 2)"
    assert "NA128" not in message


# --------------------------------------------------------------------------------- site agent


def _write_dataset(directory: Path, genotypes: tuple[str, bytes], table: str) -> None:
    directory.mkdir(parents=True)
    (directory / genotypes[0]).write_bytes(genotypes[1])
    (directory / "samples.tsv").write_text(table)


def _site_toml(tmp_path: Path, session_pki: Pki, port: int, datasets: dict[str, Path]) -> Path:
    tls = session_pki.tls("AFR")
    path = tmp_path / "site" / "site.toml"
    path.parent.mkdir()
    path.write_text(
        "[site]\n"
        f'coordinator = "localhost:{port}"\n'
        'state_dir = "state"\n\n'
        "[tls]\n"
        f'ca = "{tls.ca}"\ncert = "{tls.cert}"\nkey = "{tls.key}"\n\n'
        + "".join(f'[[datasets]]\nname = "{name}"\npath = "{p}"\n\n' for name, p in datasets.items())
        + "[policy]\nmin_cohort = 1\n"
    )
    return path


def test_site_agent__starts_and_serves_with_broken_datasets(session_pki, coordinator, tmp_path):
    from site_agent.agent import SiteAgent

    coord, port = coordinator
    good_vcf = (VCF_HEADER + GOOD_RECORD + _record("0/1\t0/0\t0/0")).encode()
    table = "#IID\tY\npatient7\t1\npatient8\t2\npatient9\t1\n"
    data = tmp_path / "data"
    _write_dataset(data / "good", ("genotypes.vcf", good_vcf), table)
    _write_dataset(data / "cut", ("genotypes.vcf", good_vcf[:-9]), table)
    _write_dataset(
        data / "latin1", ("genotypes.vcf", good_vcf.replace(b"patient8", b"J\xf6rg")), table.replace("patient8", "Jorg")
    )
    _write_dataset(data / "wide", ("genotypes.vcf", good_vcf), "#IID\t" + "\t".join(["c"] * 20_000) + "\n")
    _write_dataset(data / "dup", ("genotypes.vcf", good_vcf), table + "patient8\t2\n")
    config = load_site_config(
        _site_toml(tmp_path, session_pki, port, {n: data / n for n in ("good", "cut", "latin1", "wide", "dup")})
    )

    agent = SiteAgent(config)
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 15
        while not coord.registry.connected():
            assert thread.is_alive(), "the site agent died on a broken dataset"
            assert time.monotonic() < deadline, "the site agent did not connect"
            time.sleep(0.05)
        assert set(agent.datasets) == {"good"}
        assert agent.problems == {
            "cut": f"{data / 'cut' / 'genotypes.vcf'}: malformed or truncated VCF at record 2 (after 1:10)",
            "latin1": f"{data / 'latin1' / 'genotypes.vcf'}: VCF sample names are not UTF-8 text",
            "wide": f"{data / 'wide' / 'samples.tsv'}: line 1: 20001 columns in the header, at most {MAX_COLUMNS} are supported",
            "dup": f"{data / 'dup' / 'samples.tsv'}: line 5: duplicate sample ID (first seen on line 3)",
        }
        assert not any("patient" in p for p in agent.problems.values())

        # the coordinator lists the site with each dataset's state; the problems reach the analyst
        with secure_channel(f"localhost:{port}", session_pki.tls("alice")) as channel:
            sites = analyst_pb2_grpc.AnalystStub(channel).ListSites(analyst_pb2.ListSitesRequest(), timeout=5).sites
        assert [s.site for s in sites] == ["AFR"]
        infos = {d.name: d for d in sites[0].datasets}
        assert (infos["good"].ok, infos["good"].format, infos["good"].n_variants) == (True, "vcf", 2)
        assert {n: (d.ok, d.problem) for n, d in infos.items() if n != "good"} == {
            n: (False, p) for n, p in agent.problems.items()
        }
    finally:
        agent.stop()
        thread.join(timeout=10)
    assert not thread.is_alive()


# --------------------------------------------------------------------------------- coordinator


def _raw_channel(session_pki: Pki, port: int, name: str = "alice") -> grpc.Channel:
    """A mutual-TLS channel without fedstat's client-side message limit, to reach the server's."""
    ca, cert, key = session_pki.tls(name).load()
    creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
    return grpc.secure_channel(f"localhost:{port}", creds, options=[("grpc.max_send_message_length", -1)])


def _serves(session_pki: Pki, port: int) -> None:
    """The coordinator still answers an ordinary call on a fresh channel."""
    with secure_channel(f"localhost:{port}", session_pki.tls("bob")) as channel:
        reply = analyst_pb2_grpc.AnalystStub(channel).ListSites(analyst_pb2.ListSitesRequest(), timeout=5)
    assert list(reply.sites) == []


def _submit(purpose: str) -> analyst_pb2.SubmitRequest:
    return analyst_pb2.SubmitRequest(spec=common_pb2.JobSpec(analyses=["freq"], purpose=purpose, out_name="x"))


def test_coordinator__message_over_8_mib_is_refused_and_server_keeps_serving(session_pki, coordinator):
    coord, port = coordinator
    huge = _submit("GRU," * (9 << 18))  # 9 MiB
    assert huge.ByteSize() > 8 << 20
    with _raw_channel(session_pki, port) as channel:
        stub = analyst_pb2_grpc.AnalystStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.Submit(huge, timeout=10)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "GRU" not in (info.value.details() or "")
        # the same channel, and a new one, still work
        assert list(stub.ListSites(analyst_pb2.ListSitesRequest(), timeout=5).sites) == []
    _serves(session_pki, port)
    # fedstat's own channel refuses to send it at all
    with secure_channel(f"localhost:{port}", session_pki.tls("alice")) as channel, pytest.raises(grpc.RpcError) as info:
        analyst_pb2_grpc.AnalystStub(channel).Submit(huge, timeout=10)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert coord.store.list_jobs(limit=10) == []


def test_coordinator__long_field_under_the_limit_is_invalid_argument_not_echoed(session_pki, coordinator):
    coord, port = coordinator
    with secure_channel(f"localhost:{port}", session_pki.tls("alice")) as channel, pytest.raises(grpc.RpcError) as info:
        analyst_pb2_grpc.AnalystStub(channel).Submit(_submit("HMB" * 300_000), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "--purpose is at most 200 characters" in info.value.details()
    assert "HMBHMB" not in info.value.details()
    assert coord.store.list_jobs(limit=10) == []
    _serves(session_pki, port)


@pytest.mark.parametrize("payload", [b"\xff\xff\xff", b"\x0a\xff\xff\xff\xff\x0f", b"\x0a\x05ab"])
def test_coordinator__garbage_bytes_for_a_request_are_refused(session_pki, coordinator, payload):
    coord, port = coordinator
    with _raw_channel(session_pki, port) as channel:
        submit = channel.unary_unary("/fedstat.v1.Analyst/Submit", request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as info:
            submit(payload, timeout=5)
    # grpc answers a request that does not decode before any servicer code runs
    assert (info.value.code(), info.value.details()) == (grpc.StatusCode.INTERNAL, "Exception deserializing request!")
    assert coord.store.list_jobs(limit=10) == []
    _serves(session_pki, port)


HELLO = site_pb2.SiteMessage(hello=site_pb2.Hello(agent_version="test")).SerializeToString()


@pytest.mark.parametrize(
    ("messages", "code"),
    [
        ([b"\x12\xff\xff\xff\xff\x0f"], None),  # garbage as the first message
        ([HELLO, b"\x12\xff\xff\xff\xff\x0f"], grpc.StatusCode.INTERNAL),  # garbage after a good Hello
        (
            [site_pb2.SiteMessage(hello=site_pb2.Hello(agent_version="x" * (9 << 20))).SerializeToString()],
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        ),
    ],
    ids=["garbage-first", "garbage-after-hello", "over-8-mib"],
)
def test_coordinator__broken_site_stream_is_dropped_and_server_keeps_serving(session_pki, coordinator, messages, code):
    coord, port = coordinator
    with _raw_channel(session_pki, port, "EUR") as channel:
        connect = channel.stream_stream(
            "/fedstat.v1.SiteGateway/Connect", request_serializer=None, response_deserializer=None
        )
        with pytest.raises(grpc.RpcError) as info:
            list(connect(iter(messages), timeout=5))
    # grpc answers an undecodable first message before the servicer runs (INTERNAL) or the
    # servicer aborts (INVALID_ARGUMENT); either way the server can still drain (coordinator teardown)
    assert (
        info.value.code() == code
        if code
        else info.value.code()
        in (
            grpc.StatusCode.INTERNAL,
            grpc.StatusCode.INVALID_ARGUMENT,
        )
    )
    deadline = time.monotonic() + 5
    while coord.registry.connected():
        assert time.monotonic() < deadline, "a broken site stream stayed registered"
        time.sleep(0.05)
    _serves(session_pki, port)
