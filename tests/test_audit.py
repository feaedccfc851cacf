"""The site audit log: hash chain, head anchor, crash handling, concurrency, filters, payload checks."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import site_agent.audit_log as audit_module
from fedstat.errors import FedstatError, InputError
from site_agent.audit_log import AuditLog
from site_agent.audit_schema import (
    GENESIS,
    MAX_LIST_ITEMS,
    AuditError,
    AuditPayloadError,
    canonical_json,
    check_no_participant_data,
    spec_digest,
    validate_payload,
)
from site_agent.audit_verify import format_record, show, verify

SPEC = {"analyses": ["freq", "glm"], "pheno_names": ["BMI"], "privacy": "dp", "options": {"glm": "hide-covar"}}


def offer(i: int, **extra: Any) -> dict[str, Any]:
    """A full offer payload; every field set so that edits can touch each of them."""
    return {
        "event": "offer",
        "analyst": "analyst:alice",
        "job_id": f"job-{i}",
        "spec_digest": spec_digest(SPEC),
        "analyses": ["freq", "glm"],
        "privacy": "dp",
        "purpose": "DS:MONDO:0005148",
        "dataset": "main",
        "decision": "accepted",
        "reason": "",
        "cohort_size": 118 + i,
        "consent_excluded": 4,
        "dp": {"epsilon": 1.0, "delta": 1e-6, "rho": 0.0123, "remaining": 0.9},
        **extra,
    }


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "audit.log"


def write_log(path: Path, n: int, **kwargs: Any) -> list[dict[str, Any]]:
    with AuditLog(path, **kwargs) as audit:
        return [audit.append(**offer(i)) for i in range(n)]


def lines_of(path: Path) -> list[str]:
    return path.read_text(encoding="ascii").splitlines(keepends=True)


def stepping_clock(start: datetime, step: timedelta) -> Iterator[datetime]:
    t = start
    while True:
        yield t
        t += step


# --- the chain ------------------------------------------------------------------------------


def test_append__chain_of_records_verifies(log_path: Path) -> None:
    records = write_log(log_path, 5)
    result = verify(log_path)
    assert result.ok, result.problem
    assert (result.n_records, result.first_bad_line, result.problem, result.problems) == (5, None, "", ())
    lines = lines_of(log_path)
    assert [json.loads(line) for line in lines] == records
    assert [r["seq"] for r in records] == [0, 1, 2, 3, 4]
    assert records[0]["prev"] == GENESIS
    for line, record, nxt in zip(lines, records, [*records[1:], None], strict=True):
        assert line == canonical_json(record) + "\n"  # one canonical line per record
        body = {k: v for k, v in record.items() if k != "hash"}
        assert record["hash"] == hashlib.sha256(canonical_json(body).encode()).hexdigest()
        if nxt is not None:
            assert nxt["prev"] == hashlib.sha256(line[:-1].encode()).hexdigest()
        assert datetime.fromisoformat(record["time"]).utcoffset() == timedelta(0)
    head = json.loads(log_path.with_name("audit.log.head").read_text())
    assert (head["seq"], head["hash"]) == (4, records[-1]["hash"])


def test_append__returns_the_payload_normalised(log_path: Path) -> None:
    with AuditLog(log_path) as audit:
        record = audit.append(
            event="done",
            job_id="j",
            cohort_size=np.int64(7),
            analyses=("freq",),
            dp={"rho": np.float64(0.5)},
            reason=None,
        )
    assert record["cohort_size"] == 7 and type(record["cohort_size"]) is int
    assert record["analyses"] == ["freq"] and record["dp"] == {"rho": 0.5}
    assert "reason" not in record
    assert verify(log_path).ok


def test_verify__empty_log_is_ok(log_path: Path) -> None:
    AuditLog(log_path).close()
    assert verify(log_path) == verify(log_path, check_head=False)
    assert verify(log_path).ok and verify(log_path).n_records == 0


def test_verify__missing_file_raises_naming_it(tmp_path: Path) -> None:
    with pytest.raises(AuditError, match="nowhere.log"):
        verify(tmp_path / "nowhere.log")


def edited(value: Any) -> Any:
    """A different value of the same type and shape, so only the hash can catch the edit."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 2 + 1
    if isinstance(value, str):
        if len(value) == 64 and all(c in "0123456789abcdef" for c in value):
            return ("1" if value[0] != "1" else "2") + value[1:]
        if value == "accepted":
            return "refused"
        if value.endswith("Z"):
            return (datetime.fromisoformat(value) - timedelta(days=1)).isoformat().replace("+00:00", "Z")
        return value + "x"
    if isinstance(value, list):
        return [*value, "hardy"]
    if isinstance(value, dict):
        return {k: edited(v) for k, v in value.items()}
    raise AssertionError(type(value))


@pytest.mark.parametrize("field", sorted({*offer(0), "seq", "time", "prev", "hash"}))
def test_verify__edited_field_of_middle_record_names_its_line(log_path: Path, field: str) -> None:
    write_log(log_path, 5)
    lines = lines_of(log_path)
    record = json.loads(lines[2])
    record[field] = edited(record[field])
    lines[2] = canonical_json(record) + "\n"
    log_path.write_text("".join(lines), encoding="ascii")
    result = verify(log_path)
    assert not result.ok
    assert result.first_bad_line == 3
    assert f"{log_path} line 3:" in result.problem
    assert "hash does not match" in result.problem
    assert result.n_records == 2  # the edited record is stepped over, so line 4 then breaks the chain
    assert "line 4: seq 3 where 2 was expected" in result.problems[-1]


def test_verify__edit_with_recomputed_hash_breaks_the_chain_at_the_next_line(log_path: Path) -> None:
    write_log(log_path, 5)
    lines = lines_of(log_path)
    record = json.loads(lines[2])
    record["cohort_size"] = 9999
    record["hash"] = hashlib.sha256(
        canonical_json({k: v for k, v in record.items() if k != "hash"}).encode()
    ).hexdigest()
    lines[2] = canonical_json(record) + "\n"
    log_path.write_text("".join(lines), encoding="ascii")
    result = verify(log_path)
    assert (result.ok, result.first_bad_line, result.n_records) == (False, 4, 3)
    assert "line 4: prev does not match" in result.problem


def test_verify__non_canonical_line_is_refused(log_path: Path) -> None:
    write_log(log_path, 3)
    lines = lines_of(log_path)
    lines[1] = json.dumps(json.loads(lines[1]), sort_keys=True) + "\n"  # same content, with spaces
    log_path.write_text("".join(lines), encoding="ascii")
    result = verify(log_path)
    assert result.first_bad_line == 2 and "canonical" in result.problem


def test_verify__deleted_middle_record_fails(log_path: Path) -> None:
    write_log(log_path, 5)
    lines = lines_of(log_path)
    del lines[2]
    log_path.write_text("".join(lines), encoding="ascii")
    result = verify(log_path)
    assert (result.ok, result.first_bad_line, result.n_records) == (False, 3, 2)
    assert f"{log_path} line 3: seq 3 where 2 was expected" in result.problem


def test_verify__swapped_records_fail(log_path: Path) -> None:
    write_log(log_path, 5)
    lines = lines_of(log_path)
    lines[1], lines[2] = lines[2], lines[1]
    log_path.write_text("".join(lines), encoding="ascii")
    result = verify(log_path)
    assert (result.ok, result.first_bad_line, result.n_records) == (False, 2, 1)
    assert "line 2: seq 2 where 1 was expected" in result.problem


def test_verify__deleted_last_record_is_caught_by_the_head_anchor(log_path: Path) -> None:
    write_log(log_path, 5)
    lines = lines_of(log_path)
    log_path.write_text("".join(lines[:-1]), encoding="ascii")
    assert verify(log_path, check_head=False).ok  # the chain alone cannot see it
    result = verify(log_path)
    assert (result.ok, result.n_records, result.first_bad_line) == (False, 4, None)
    assert "audit.log.head" in result.problem
    assert "names seq 4 but the log's last record is seq 3: 1 record(s) were removed" in result.problem


def test_verify__missing_head_anchor_fails(log_path: Path) -> None:
    write_log(log_path, 2)
    log_path.with_name("audit.log.head").unlink()
    result = verify(log_path)
    assert not result.ok and "head anchor is missing" in result.problem


def test_verify__head_one_record_behind_is_a_crash_window(log_path: Path) -> None:
    head = log_path.with_name("audit.log.head")
    write_log(log_path, 3)
    old_head = head.read_bytes()
    with AuditLog(log_path) as audit:
        audit.append(**offer(3))
    head.write_bytes(old_head)  # as if the process died between the record's fsync and the anchor's rename
    assert verify(log_path).ok
    with AuditLog(log_path) as audit:  # opening repairs the anchor
        assert audit.head[0] == 3
    assert json.loads(head.read_text())["seq"] == 3


# --- crashes --------------------------------------------------------------------------------


def crash_mid_write(path: Path, n_bytes: int = 40) -> None:
    """Leave the first bytes of a would-be next record at the end of the log, the anchor untouched."""
    record = json.loads(lines_of(path)[-1])
    partial = canonical_json({**record, "seq": record["seq"] + 1})[:n_bytes]
    with open(path, "a", encoding="ascii") as f:
        f.write(partial)


def test_verify__truncated_last_line_is_reported(log_path: Path) -> None:
    write_log(log_path, 3)
    crash_mid_write(log_path)
    result = verify(log_path)
    assert (result.ok, result.n_records, result.first_bad_line) == (False, 3, 4)
    assert f"{log_path} line 4: truncated record" in result.problem
    assert len(result.problems) == 1  # the anchor still names the last complete record


def test_auditlog__after_a_crash_the_partial_line_is_kept_and_the_chain_continues(
    log_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    records = write_log(log_path, 3)
    crash_mid_write(log_path)
    with AuditLog(log_path) as audit:
        assert audit.head == (2, records[-1]["hash"])
        new = audit.append(**offer(3))
    assert "not records" in caplog.text
    assert new["seq"] == 3
    assert new["prev"] == hashlib.sha256(lines_of(log_path)[2][:-1].encode()).hexdigest()
    lines = lines_of(log_path)
    assert len(lines) == 5 and lines[3].startswith('{"analyses"') and json.loads(lines[4]) == new
    result = verify(log_path)
    assert (result.ok, result.first_bad_line, result.n_records) == (False, 4, 4)  # reported, records after it checked
    assert result.problems == (f"{log_path} line 4: not a record: invalid JSON (truncated or garbled line)",)


def test_auditlog__a_complete_record_missing_its_newline_is_kept(log_path: Path) -> None:
    write_log(log_path, 2)
    head = log_path.with_name("audit.log.head")
    old_head = head.read_bytes()
    with AuditLog(log_path) as audit:
        audit.append(**offer(2))
    head.write_bytes(old_head)
    log_path.write_bytes(log_path.read_bytes()[:-1])  # the crash cut only the newline
    with AuditLog(log_path) as audit:
        assert audit.head[0] == 2
        audit.append(**offer(3))
    assert verify(log_path).ok and verify(log_path).n_records == 4


def test_append__a_failed_write_is_reported_and_the_next_record_starts_a_new_line(
    log_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write_all = audit_module._write_all

    def disk_full_half_way(fd: int, data: bytes) -> None:
        real_write_all(fd, data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    with AuditLog(log_path) as audit:
        audit.append(**offer(0))
        monkeypatch.setattr(audit_module, "_write_all", disk_full_half_way)
        with pytest.raises(AuditError, match="cannot write to the audit log: No space left on device"):
            audit.append(**offer(1))
        monkeypatch.setattr(audit_module, "_write_all", real_write_all)
        assert audit.append(**offer(2))["seq"] == 1
    result = verify(log_path)
    assert (result.first_bad_line, result.n_records, len(result.problems)) == (2, 2, 1)


def test_append__a_record_that_landed_despite_an_error_is_kept_in_the_chain(
    log_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fsync_fails(fd: int) -> None:
        raise OSError(5, "Input/output error")

    with AuditLog(log_path) as audit:
        audit.append(**offer(0))
        monkeypatch.setattr(audit_module.os, "fsync", fsync_fails)
        with pytest.raises(AuditError, match="Input/output error"):
            audit.append(**offer(1))
        monkeypatch.undo()
        assert audit.append(**offer(2))["seq"] == 2
    result = verify(log_path)
    assert result.ok and result.n_records == 3


def test_auditlog__reopen_and_append_continues_the_chain(log_path: Path) -> None:
    first = write_log(log_path, 3)
    with AuditLog(log_path) as audit:
        assert audit.head == (2, first[-1]["hash"])
        more = [audit.append(**offer(i)) for i in (3, 4)]
    assert [r["seq"] for r in more] == [3, 4]
    assert more[0]["prev"] == hashlib.sha256(canonical_json(first[-1]).encode()).hexdigest()
    result = verify(log_path)
    assert result.ok and result.n_records == 5


def test_auditlog__refuses_to_open_when_the_tail_was_removed(log_path: Path) -> None:
    write_log(log_path, 4)
    log_path.write_text("".join(lines_of(log_path)[:-2]), encoding="ascii")
    before = log_path.read_bytes()
    with pytest.raises(AuditError, match=r"names seq 3 but the last valid record is seq 1 \(line 2\)"):
        AuditLog(log_path)
    assert log_path.read_bytes() == before  # nothing appended over the evidence


def test_auditlog__refuses_to_open_without_its_head_anchor(log_path: Path) -> None:
    write_log(log_path, 1)
    log_path.with_name("audit.log.head").unlink()
    with pytest.raises(AuditError, match="head anchor of a non-empty audit log is missing"):
        AuditLog(log_path)


def test_auditlog__one_writer_at_a_time(log_path: Path) -> None:
    with AuditLog(log_path) as audit:
        with pytest.raises(AuditError, match="already open"):
            AuditLog(log_path)
        audit.append(event="start")
    audit.close()  # twice is fine
    with pytest.raises(AuditError, match="closed"):
        audit.append(event="start")
    AuditLog(log_path).close()  # the lock went with the first instance


def test_auditlog__refuses_to_append_after_the_file_changed_under_it(log_path: Path) -> None:
    with AuditLog(log_path) as audit:
        audit.append(event="start")
        with open(log_path, "a", encoding="ascii") as f:
            f.write("{}\n")
        with pytest.raises(AuditError, match="changed on disk"):
            audit.append(event="start")


def test_append__concurrent_threads_give_one_valid_chain(log_path: Path) -> None:
    n_threads, per_thread = 4, 15
    barrier = threading.Barrier(n_threads)
    errors: list[BaseException] = []
    with AuditLog(log_path) as audit:

        def worker(t: int) -> None:
            try:
                barrier.wait()
                for i in range(per_thread):
                    audit.append(event="round", job_id=f"job-{t}", round=i)
            except BaseException as exc:  # reported below; a thread cannot raise into the test
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not errors
    result = verify(log_path)
    assert result.ok and result.n_records == n_threads * per_thread
    records = list(show(log_path))
    assert [r["seq"] for r in records] == list(range(n_threads * per_thread))
    for t in range(n_threads):  # every thread's records, each thread's in its own order
        assert [r["round"] for r in records if r["job_id"] == f"job-{t}"] == list(range(per_thread))


# --- reading ----------------------------------------------------------------------------------


def test_show__filters_by_analyst_job_and_date(log_path: Path) -> None:
    clock = stepping_clock(datetime(2025, 5, 1, 12, tzinfo=UTC), timedelta(days=1))
    with AuditLog(log_path, clock=lambda: next(clock)) as audit:  # one record a day, 1 to 6 May
        for i, who in enumerate(["alice", "bob", "alice", "carol", "alice", "bob"]):
            audit.append(**offer(i, analyst=f"analyst:{who}", job_id=f"job-{i % 2}"))
    assert len(list(show(log_path))) == 6
    assert [r["seq"] for r in show(log_path, analyst="analyst:alice")] == [0, 2, 4]
    assert [r["seq"] for r in show(log_path, job_id="job-1")] == [1, 3, 5]
    assert [r["seq"] for r in show(log_path, analyst="analyst:bob", job_id="job-1")] == [1, 5]
    assert [r["seq"] for r in show(log_path, since="2025-05-03", until="2025-05-05")] == [2, 3]  # until excluded
    assert [r["seq"] for r in show(log_path, since=date(2025, 5, 5))] == [4, 5]
    assert [r["seq"] for r in show(log_path, until=datetime(2025, 5, 2, 12, tzinfo=UTC))] == [0]
    naive_is_utc = datetime(2025, 5, 6, 11)
    assert [r["seq"] for r in show(log_path, since=naive_is_utc)] == [5]
    assert [r["seq"] for r in show(log_path, since="2025-05-06T13:00+02:00")] == [5]  # 11:00 UTC
    assert list(show(log_path, analyst="analyst:nobody")) == []


def test_show__bad_date_or_missing_file_raise(log_path: Path) -> None:
    write_log(log_path, 1)
    with pytest.raises(InputError, match="since: 'last tuesday' is not an ISO-8601"):
        show(log_path, since="last tuesday")
    with pytest.raises(AuditError, match="no such audit log"):
        show(log_path.with_name("other.log"))


def test_show__skips_crash_debris_with_a_warning(log_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_log(log_path, 2)
    crash_mid_write(log_path)
    assert [r["seq"] for r in show(log_path)] == [0, 1]
    assert f"{log_path} line 3: not an audit record" in caplog.text


def test_format_record__one_readable_line(log_path: Path) -> None:
    with AuditLog(log_path) as audit:
        record = audit.append(**offer(0, decision="refused", reason="cohort of 3 is below\nthis site's minimum"))
    line = format_record(record)
    assert "\n" not in line
    assert line.startswith(record["time"] + " #0 offer analyst:alice job=job-0 refused analyses=freq,glm privacy=dp")
    assert "cohort=118 consent-excluded=4 dp(epsilon=1 delta=1e-06 rho=0.0123 remaining=0.9)" in line
    assert line.endswith(f"spec={record['spec_digest'][:12]} — cohort of 3 is below this site's minimum")
    assert format_record({"seq": 1, "time": "t", "event": "done"}) == "t #1 done"


# --- payloads ---------------------------------------------------------------------------------


def test_spec_digest__ignores_key_order_and_refuses_non_json() -> None:
    reordered = dict(reversed(list(SPEC.items())))
    assert spec_digest(SPEC) == spec_digest(reordered)
    assert spec_digest(SPEC) == hashlib.sha256(canonical_json(SPEC).encode()).hexdigest()
    assert spec_digest(SPEC) != spec_digest({**SPEC, "privacy": "secagg"})
    with pytest.raises(AuditPayloadError, match="not plain JSON"):
        spec_digest({"x": np.zeros(3)})
    with pytest.raises(AuditPayloadError, match="not plain JSON"):
        spec_digest({"x": float("nan")})


def test_validate_payload__refuses_unknown_and_reserved_keys(log_path: Path) -> None:
    with pytest.raises(AuditPayloadError, match="unknown audit field.*'genotypes'"):
        validate_payload({"event": "offer", "genotypes": "x"})
    with pytest.raises(AuditPayloadError, match="hash, seq are set by the log"):
        validate_payload({"seq": 3, "hash": "0" * 64})
    with pytest.raises(AuditPayloadError, match="at least one"):
        validate_payload({"reason": None})
    with pytest.raises(AuditPayloadError, match=r"'dp' has unknown key\(s\) 'sigma'"):
        validate_payload({"dp": {"sigma": 2.0}})
    with AuditLog(log_path) as audit, pytest.raises(AuditPayloadError, match="sample_ids"):
        audit.append(event="offer", sample_ids="x")
    assert log_path.read_bytes() == b""  # nothing written
    assert issubclass(AuditPayloadError, ValueError) and issubclass(AuditError, FedstatError)


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        ({"cohort_size": "118"}, "'cohort_size' must be an integer"),
        ({"cohort_size": True}, "'cohort_size' must be an integer"),
        ({"cohort_size": -1}, "'cohort_size' must be >= 0"),
        ({"consent_excluded": 2.0}, "'consent_excluded' must be an integer"),
        ({"decision": "maybe"}, "'decision' must be one of"),
        ({"event": "Offer!"}, "'event' must be a lower-case name"),
        ({"spec_digest": "abc"}, "'spec_digest' must be 64 lower-case hex digits"),
        ({"analyses": "freq"}, "'analyses' must be a list"),
        ({"analyses": ["freq", "../x"]}, "'analyses' item 1 must be an analysis name"),
        ({"analyst": "analyst:\nalice"}, "'analyst' contains a control character"),
        ({"dataset": "d" * 300}, "'dataset' is 300 characters long"),
        ({"dp": {"rho": float("inf")}}, r"'dp.rho' must be a finite number"),
        ({"dp": {"epsilon": -1}}, r"'dp.epsilon' must be a finite number >= 0"),
        ({"dp": {}}, "'dp' is empty"),
    ],
)
def test_validate_payload__checks_types(payload: dict[str, Any], match: str) -> None:
    with pytest.raises(AuditPayloadError, match=match):
        validate_payload(payload)


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        ({"analyses": [0.1, 0.7, 1.3]}, "list holding numbers"),
        ({"analyses": ["freq", 2]}, "list holding numbers"),
        ({"analyses": ["a"] * (MAX_LIST_ITEMS + 1)}, f"list of {MAX_LIST_ITEMS + 1} items"),
        ({"cohort_size": np.array([1, 0, 2])}, "is a ndarray"),
        ({"reason": b"\x00\x01\x02"}, "is a bytes"),
        ({"reason": {"NA1": 0, "NA2": 1}}, "must be text"),
        ({"reason": "genotypes 0/1 0/0 1/1 0/1 0/0 0/0 1/1 0/1"}, "run of 8 or more numbers"),
        ({"reason": "BMI values: 23.1, 27.4, 31.0, 22.8, 25.5, 29.9, 24.2, 26.7"}, "run of 8 or more numbers"),
        ({"purpose": "1 2 3 4 5 6 7 8 9"}, "'purpose' holds a run"),
    ],
)
def test_validate_payload__refuses_participant_like_values(payload: dict[str, Any], match: str) -> None:
    with pytest.raises(AuditPayloadError, match=match) as info:
        validate_payload(payload)
    for secret in ("0/1", "23.1", "NA1", "1 2 3"):
        assert secret not in str(info.value)  # the message names the field and shape, never the value


def test_check_no_participant_data__allows_counts_names_and_ordinary_text() -> None:
    for name, value in [
        ("reason", "cohort of 12 is below this site's minimum of 20 participants"),
        ("reason", "started 2025-05-01 12:00:00, round 3 of 4, 1e-6 delta"),
        ("analyses", ["freq", "hardy", "glm"]),
        ("cohort_size", np.int64(118)),
        ("dp", {"epsilon": 1.0, "delta": 1e-6}),
        ("purpose", "DS:MONDO:0005148,MDS"),
    ]:
        check_no_participant_data(name, value)


def test_validate_payload__cuts_a_long_reason() -> None:
    out = validate_payload({"reason": "x" * 5000})
    assert len(out["reason"]) == 2000 and out["reason"].endswith("…")
