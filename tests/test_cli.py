"""The ``m365sim`` command: serve (as a real subprocess), scenario validate, ca-path."""

from __future__ import annotations

import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from m365sim.cli import app

runner = CliRunner()


def _serve(data_dir: Path, *args: str) -> tuple[subprocess.Popen[str], str]:
    port_file = data_dir / "port"
    port_file.unlink(missing_ok=True)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "m365sim.cli",
            "serve",
            "--port",
            "0",
            "--port-file",
            str(port_file),
            "--data-dir",
            str(data_dir),
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not port_file.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            out, err = process.communicate()
            pytest.fail(f"m365sim serve did not start: {out}\n{err}")
        time.sleep(0.05)
    return process, f"https://localhost:{port_file.read_text()}"


def _stop(process: subprocess.Popen[str]) -> tuple[str, str]:
    process.send_signal(signal.SIGTERM)
    try:
        out, err = process.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"m365sim serve did not stop on SIGTERM: {err}")
    assert process.returncode == 0, err
    return out, err


def test_serve_answers_health_saves_on_exit_and_reloads(tmp_path: Path) -> None:
    state_file = tmp_path / "saved.json"
    process, base = _serve(
        tmp_path, "--scenario", "blank", "--state-file", str(state_file), "--save-on-exit"
    )
    context = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    with httpx.Client(base_url=base, verify=context, trust_env=False, timeout=10) as client:
        assert client.get("/_emulator/health").text == "ok"
        created = client.post(
            "/_emulator/tenants", json={"displayName": "CLI Inc", "domain": "cli.test"}
        )
        assert created.status_code == 201
    out, err = _stop(process)
    assert f"Base URL        {base}" in out and "CA bundle" in out
    assert state_file.is_file() and "State saved" in err

    process, base = _serve(tmp_path, "--state-file", str(state_file), "--quiet")
    with httpx.Client(base_url=base, verify=context, trust_env=False, timeout=10) as client:
        tenants = client.get("/_emulator/tenants").json()["value"]
        assert [t["domain"] for t in tenants] == ["cli.test"]
    out, _ = _stop(process)
    assert out == ""


def test_serve_with_a_bad_scenario_exits_with_a_message(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["serve", "--scenario", str(tmp_path / "missing.yaml"), "--data-dir", str(tmp_path)]
    )
    assert result.exit_code == 1
    assert "no scenario" in result.output


def test_scenario_validate(tmp_path: Path) -> None:
    ok = runner.invoke(app, ["scenario", "validate", "demo"])
    assert ok.exit_code == 0, ok.output
    assert "40 message(s)" in ok.output

    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "tenants:\n  - displayName: X\n    domain: x.test\n    users:\n"
        "      - {userPrincipalName: a, displayName: A}\n"
    )
    refused = runner.invoke(app, ["scenario", "validate", str(bad)])
    assert refused.exit_code == 1
    assert "tenants[0].users[0].password is required" in refused.output

    not_yaml = tmp_path / "broken.yaml"
    not_yaml.write_text("tenants: [")
    assert "not valid YAML" in runner.invoke(app, ["scenario", "validate", str(not_yaml)]).output

    listed = runner.invoke(app, ["scenario", "list"])
    assert listed.output.split() == ["blank", "demo"]


def test_ca_path_creates_and_prints_the_ca(tmp_path: Path) -> None:
    result = runner.invoke(app, ["ca-path", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0
    path = Path(result.output.strip())
    assert path.is_file() and path.read_text().startswith("-----BEGIN CERTIFICATE-----")
