"""Project layout promises: layering of imports, generated wire code up to date, no per-participant fields."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PURE = ("stats", "privacy", "consent", "data", "formats")


def test_layering__numeric_core_never_imports_grpc_or_wire():
    offenders = []
    for pkg in PURE:
        for path in (ROOT / "fedstat" / pkg).rglob("*.py"):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                for n in names:
                    if n.split(".")[0] in ("grpc", "grpc_health", "coordinator", "site_agent") or n.startswith(
                        "fedstat.wire"
                    ):
                        offenders.append(f"{path.relative_to(ROOT)} imports {n}")
    assert offenders == []


def test_layering__only_cli_imports_the_daemons():
    offenders = []
    for path in (ROOT / "fedstat").rglob("*.py"):
        if "cli" in path.relative_to(ROOT).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            mod = node.module if isinstance(node, ast.ImportFrom) else None
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else ([mod] if mod else [])
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in ("coordinator", "site_agent")]
    assert offenders == []


def test_wire__generated_code_is_up_to_date():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_wire__no_message_has_a_per_participant_field():
    """Arrays travel only as SumsChunk bytes; no message is keyed by sample or holds genotypes."""
    from fedstat.wire import analyst_pb2, common_pb2, site_pb2

    forbidden = ("sample", "iid", "fid", "genotype", "phenotype_value", "individual", "participant_id")
    fields = []
    for module in (analyst_pb2, common_pb2, site_pb2):
        for msg in module.DESCRIPTOR.message_types_by_name.values():
            for f in msg.fields:
                fields.append(f"{msg.name}.{f.name}")
    bad = [f for f in fields if any(word in f.lower() for word in forbidden)]
    assert bad == []
    bytes_fields = [
        f"{m.name}.{f.name}"
        for mod in (analyst_pb2, common_pb2, site_pb2)
        for m in mod.DESCRIPTOR.message_types_by_name.values()
        for f in m.fields
        if f.type == f.TYPE_BYTES
    ]
    assert sorted(bytes_fields) == [
        "AddScheduleRequest.spec_signature",  # the owner's signature of a schedule's job template
        "AuditHead.certificate",  # a site's signed audit head: its public certificate (PEM) …
        "AuditHead.signature",  # … and its signature of (site, seq, hash, time)
        "Contribution.certificate",  # --privacy paillier: a site's signed statement of its round's chunks
        "Contribution.chunks_digest",
        "Contribution.signature",
        "DecryptReply.words",  # --privacy paillier: round totals (all sites), decrypted by the analyst
        "DecryptRequest.ciphertexts",  # the product of every participant's ciphertexts
        "HarmonizeIntersection.hashes",  # private harmonization: keyed hashes of variant keys (no data)
        "HarmonizeShare.ciphertext",  # a site's sealed share of the harmonization group key
        "HarmonizeShare.nonce",
        "HarmonizeTag.tag",  # a site's MAC confirming the intersection
        "JobOffer.analyst_certificate",  # the submitting analyst's public certificate (PEM)
        "JobOffer.spec_signature",  # the analyst's signature of the job spec
        "KeysChunk.hashes",  # keyed hashes of a site's variant keys, sorted (no data)
        "ResultChunk.data",
        "RoundKey.certificate",  # key material of the secure-aggregation exchange
        "RoundKey.public_key",
        "RoundKey.signature",
        "SubmitRequest.spec_signature",  # the analyst's signature of the job spec
        "SumsChunk.data",
        "VariantPlanChunk.flip",
        "VariantPlanChunk.local_index",
    ]
