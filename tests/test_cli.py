"""The command line: help that teaches, one-line errors with exit codes, no tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fedstat import pki
from fedstat.cli.main import build_parser, main
from fedstat.config import load_analyst_profile, load_coordinator_config, load_site_config
from fedstat.errors import ConfigError, InputError


def test_help__submit_lists_plink2_flags_and_examples(capsys):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["submit", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--freq", "--geno-counts", "--hardy", "--missing", "--out", "--no-wait", "examples:"):
        assert flag in out


def test_main__missing_profile_is_one_line_error_exit_2(tmp_path, capsys):
    rc = main(["jobs", "list", "--profile", str(tmp_path / "nope.toml")])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.strip() == f"fedstat: error: config file {tmp_path / 'nope.toml'} does not exist"


def test_main__no_analysis_requested_exit_2(tmp_path, capsys):
    rc = main(["submit", "--profile", str(tmp_path / "p.toml"), "--out", "x"])
    assert rc == 2
    assert "no analysis requested" in capsys.readouterr().err


def test_main__unreachable_coordinator_exit_3(session_pki, tmp_path, capsys):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tls = session_pki.tls("alice")
    (tmp_path / "p.toml").write_text(
        f'[analyst]\ncoordinator = "localhost:{port}"\n[tls]\nca = "{tls.ca}"\ncert = "{tls.cert}"\nkey = "{tls.key}"\n'
    )
    rc = main(["jobs", "list", "--profile", str(tmp_path / "p.toml")])
    err = capsys.readouterr().err
    assert rc == 3
    assert f"cannot reach the coordinator at localhost:{port}" in err
    assert len(err.strip().splitlines()) == 1


def test_console_script__user_error_prints_no_traceback(tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, "-m", "fedstat.cli.main", "poc", "start", "--workspace", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "is not a prepared workspace" in proc.stderr


def test_poc_prepare__bad_site_argument_and_missing_dir(tmp_path, capsys):
    assert main(["poc", "prepare", "--workspace", str(tmp_path / "W"), "--site", "AFR"]) == 2
    assert "expected NAME=DIR" in capsys.readouterr().err
    assert main(["poc", "prepare", "--workspace", str(tmp_path / "W"), "--site", f"AFR={tmp_path / 'none'}"]) == 2
    assert "data directory" in capsys.readouterr().err and not (tmp_path / "W" / "poc.json").exists()


def test_ca__init_refuses_overwrite_and_keys_are_private(tmp_path):
    cert, key = pki.init_ca(tmp_path / "ca")
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    with pytest.raises(InputError, match="refusing to overwrite"):
        pki.init_ca(tmp_path / "ca")
    c, k = pki.issue(tmp_path / "ca", tmp_path / "out", name="AFR", role="site")
    assert pki.identity_from_pem(c.read_bytes()) == pki.Identity(name="AFR", role="site")
    assert oct(k.stat().st_mode & 0o777) == "0o600"
    with pytest.raises(InputError, match="unknown role"):
        pki.issue(tmp_path / "ca", tmp_path / "out", name="x", role="king")
    with pytest.raises(InputError, match="invalid name"):
        pki.issue(tmp_path / "ca", tmp_path / "out", name="../evil", role="site")


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


TLS = '[tls]\nca = "ca.pem"\ncert = "c.pem"\nkey = "c.key"\n'


def test_config__site_config_resolves_paths_and_defaults(tmp_path):
    cfg = load_site_config(
        _write(
            tmp_path / "site.toml",
            '[site]\ncoordinator = "localhost:7443"\n' + TLS + '[[datasets]]\nname = "main"\npath = "data"\n',
        )
    )
    assert cfg.datasets[0].path == tmp_path / "data"
    assert cfg.tls.ca == tmp_path / "ca.pem"
    assert cfg.block_size == 4096 and cfg.policy.allowed_privacy == ("none", "secagg", "paillier", "dp", "paillier,dp")
    assert cfg.dataset("").name == "main"
    with pytest.raises(ConfigError, match="no dataset named 'other'"):
        cfg.dataset("other")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[site]\ncoordinator = "localhost"\n' + TLS + '[[datasets]]\nname="m"\npath="d"\n',
            "site.coordinator must be host:port",
        ),
        (
            '[site]\ncoordinator = "h:1"\nblock_size = 0\n' + TLS + '[[datasets]]\nname="m"\npath="d"\n',
            "site.block_size must be positive",
        ),
        (
            '[site]\ncoordinator = "h:1"\nblok_size = 5\n' + TLS + '[[datasets]]\nname="m"\npath="d"\n',
            "unknown key(s) in [site]: blok_size",
        ),
        ('[site]\ncoordinator = "h:1"\n' + TLS, "at least one [[datasets]]"),
        ('[site]\ncoordinator = "h:1"\n[[datasets]]\nname="m"\npath="d"\n', "section [tls] is required"),
        (
            '[site]\ncoordinator = "h:1"\n'
            + TLS
            + '[[datasets]]\nname="m"\npath="d"\n[policy]\nallowed_analyses=["glmm"]\n',
            "unknown analysis 'glmm'",
        ),
        ("[site\n", "not valid TOML"),
    ],
)
def test_config__site_errors_name_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError) as info:
        load_site_config(_write(tmp_path / "site.toml", text))
    assert message in str(info.value) and "site.toml" in str(info.value)


def test_config__coordinator_and_analyst(tmp_path):
    c = load_coordinator_config(_write(tmp_path / "c.toml", '[coordinator]\nlisten = "0.0.0.0:7443"\n' + TLS))
    assert c.db_path == tmp_path / "state" / "coordinator.sqlite" and c.offer_timeout_s == 60.0
    with pytest.raises(ConfigError, match="coordinator.offer_timeout_s must be a number, got str"):
        load_coordinator_config(
            _write(tmp_path / "c.toml", '[coordinator]\nlisten = "h:1"\noffer_timeout_s = "x"\n' + TLS)
        )
    a = load_analyst_profile(_write(tmp_path / "a.toml", '[analyst]\ncoordinator = "h:1"\n' + TLS))
    assert a.coordinator == "h:1"


def test_demo__runs_end_to_end_on_a_small_consortium(tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedstat.cli.main",
            "demo",
            "--workspace",
            str(tmp_path / "demo"),
            "--samples",
            "300",
            "--variants",
            "400",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    for ext in ("afreq", "gcount", "hardy", "vmiss", "provenance.json"):
        assert (tmp_path / "demo" / "results" / f"run1.{ext}").is_file()
        assert (tmp_path / "demo" / "results" / "fetched" / f"run1.{ext}").is_file()
    assert "stopped: AFR, EAS, EUR, coordinator" in proc.stdout
    assert "demo finished" in proc.stdout


def test_ca__revoke_list_rotate(tmp_path, capsys):
    ca = tmp_path / "ca"
    assert main(["ca", "init", str(ca)]) == 0
    assert (ca / "crl.pem").exists()
    assert main(["ca", "issue", str(ca), "--name", "bob", "--role", "analyst", "--out", str(tmp_path)]) == 0
    assert main(["ca", "revoked", str(ca)]) == 0
    assert "no certificate is revoked" in capsys.readouterr().out
    assert main(["ca", "revoke", str(ca), "--cert", str(tmp_path / "bob.pem"), "--reason", "superseded"]) == 0
    serial = pki.revoked_entries(ca)[0].serial
    assert f"revoked serial {serial:x}" in capsys.readouterr().out
    assert main(["ca", "revoked", str(ca)]) == 0
    assert capsys.readouterr().out.split()[::2] == [f"{serial:x}", "superseded"]
    assert main(["ca", "revoke", str(ca), "--serial", "zz"]) == 2
    assert "expected a hexadecimal serial number" in capsys.readouterr().err
    assert main(["ca", "rotate", str(ca)]) == 0
    assert (ca / "ca.pem").read_text().count("BEGIN CERTIFICATE") == 2
    assert [e.serial for e in pki.revoked_entries(ca)] == [serial]  # kept across the rotation
    assert len(list((ca / "retired").glob("ca-*.key"))) == 1


def test_status_and_whoami__admin_sees_the_coordinator_others_are_refused(session_pki, tmp_path, capsys):
    import dataclasses
    import json

    from coordinator.server import running_coordinator
    from fedstat.config import AccessConfig, CoordinatorConfig

    cfg = CoordinatorConfig(
        path=tmp_path / "c.toml",
        listen="127.0.0.1:0",
        state_dir=tmp_path / "state",
        tls=session_pki.tls("coordinator"),
        access=AccessConfig(analysts=(("alice", ("admin",)),)),
    )
    with running_coordinator(dataclasses.replace(cfg)) as coord:
        profiles = {}
        for name in ("alice", "bob"):
            tls = session_pki.tls(name)
            profiles[name] = tmp_path / f"{name}.toml"
            profiles[name].write_text(
                f'[analyst]\ncoordinator = "localhost:{coord.port}"\n[tls]\n'
                f'ca = "{tls.ca}"\ncert = "{tls.cert}"\nkey = "{tls.key}"\n'
            )
        assert main(["whoami", "--profile", str(profiles["bob"])]) == 0
        assert capsys.readouterr().out.strip() == "bob (analyst); roles: submit, view-own"
        assert main(["status", "--profile", str(profiles["bob"])]) == 3
        assert "lacks the role 'admin'" in capsys.readouterr().err
        assert main(["status", "--profile", str(profiles["alice"])]) == 0
        out = capsys.readouterr().out
        assert "sites connected: 0" in out and "jobs: QUEUED 0  RUNNING 0  DONE 0" in out
        assert "refused calls since start: PERMISSION_DENIED 1" in out
        assert main(["status", "--profile", str(profiles["alice"]), "--json"]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["jobsByState"]["RUNNING"] == 0 and doc["maxConcurrentJobs"] == 2


def test_logs__json_format_is_one_object_per_line():
    import json
    import logging

    from fedstat.logs import JsonFormatter

    record = logging.LogRecord("fedstat.site", logging.WARNING, __file__, 1, "job %s refused", ("J1",), None)
    doc = json.loads(JsonFormatter().format(record))
    assert doc["level"] == "WARNING" and doc["logger"] == "fedstat.site" and doc["message"] == "job J1 refused"
    assert doc["time"].endswith("+00:00")


def test_daemon__json_log_format_and_sigterm_drain(session_pki, tmp_path):
    """A coordinator started with --log-format json logs JSON lines, and SIGTERM drains it."""
    import json
    import signal
    import time

    tls = session_pki.tls("coordinator")
    config = tmp_path / "coordinator.toml"
    config.write_text(
        f'[coordinator]\nlisten = "127.0.0.1:0"\nstate_dir = "{tmp_path / "state"}"\n'
        f'[tls]\nca = "{tls.ca}"\ncert = "{tls.cert}"\nkey = "{tls.key}"\n'
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fedstat.cli.main",
            "--log-format",
            "json",
            "coordinator",
            "serve",
            "--config",
            str(config),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        lines = []
        while not any("serving on port" in line for line in lines):
            assert time.monotonic() < deadline and proc.poll() is None, lines
            lines.append(proc.stderr.readline())
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=30)
    finally:
        proc.kill()
    records = [json.loads(line) for line in [*lines, *rest.splitlines()] if line.strip()]
    assert proc.returncode == 0
    assert {r["logger"] for r in records} == {"fedstat.coordinator"}
    assert [r["message"] for r in records][-1] == "shutting down"


def test_submit_require_pheno__takes_optional_names_as_plink2():
    from fedstat.cli.main import build_parser

    named = build_parser().parse_args(
        ["submit", "--profile", "p", "--assoc", "--pheno-name", "CC", "--require-pheno", "QT,CC", "--out", "x"]
    )
    bare = build_parser().parse_args(
        ["submit", "--profile", "p", "--glm", "--pheno-name", "QT,CC", "--require-pheno", "--out", "x"]
    )
    off = build_parser().parse_args(["submit", "--profile", "p", "--freq", "--out", "x"])
    assert (named.require_pheno, bare.require_pheno, off.require_pheno) == ("QT,CC", "", None)
