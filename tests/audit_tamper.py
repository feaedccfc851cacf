"""What someone who can write a site's state directory does to its audit log: cut, edit, delete or
reorder records, then renumber, re-chain and re-hash them and rewrite the head anchor, so that the
log is consistent again and a plain `verify` passes."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from site_agent.audit_schema import GENESIS, canonical_json
from site_agent.audit_verify import verify


def records(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def rewrite(log: Path, recs: list[dict[str, Any]]) -> None:
    """Write ``recs`` as a fresh, consistent chain (seq, prev, hash recomputed) and its anchor."""
    prev, lines, digest = GENESIS, [], GENESIS
    for i, r in enumerate(recs):
        r = {k: v for k, v in r.items() if k != "hash"} | {"seq": i, "prev": prev}
        r["hash"] = hashlib.sha256(canonical_json(r).encode()).hexdigest()
        line = canonical_json(r)
        lines.append(line)
        prev = hashlib.sha256(line.encode()).hexdigest()
        digest = r["hash"]
    log.write_text("".join(line + "\n" for line in lines))
    anchor = {"seq": len(recs) - 1, "hash": digest, "line_sha256": prev}
    log.with_name(log.name + ".head").write_text(canonical_json(anchor) + "\n")


def cut_last(n: int) -> Callable[[list[dict[str, Any]]], list[dict[str, Any]]]:
    return lambda recs: recs[:-n]


def edit_first(recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    first = dict(recs[0])
    first["reason"] = "nothing happened here"
    return [first, *recs[1:]]


def delete_second(recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [recs[0], *recs[2:]]


def swap_first_two(recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [recs[1], recs[0], *recs[2:]]


def tamper(log: Path, how: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]) -> None:
    """Change the log's records with ``how`` and rewrite chain and anchor consistently."""
    rewrite(log, how(records(log)))
    assert verify(log).ok  # the attack works against a plain verify


def site_toml(session_pki: Any, state_dir: Path, name: str, path: Path) -> Path:
    """A site config at ``path`` for the `fedstat site audit` command: site ``name``'s TLS files and state."""
    tls = session_pki.tls(name)
    path.write_text(
        f'[site]\ncoordinator = "localhost:1"\nstate_dir = "{state_dir}"\n\n'
        f'[tls]\nca = "{tls.ca}"\ncert = "{tls.cert}"\nkey = "{tls.key}"\n\n'
        f'[[datasets]]\nname = "main"\npath = "{path.parent}"\n'
    )
    return path
