"""The postroom entry point exists and answers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from postroom import __version__
from postroom.classify import embed
from postroom.cli import app


def test_version_command_prints_the_version() -> None:
    result = CliRunner().invoke(app, ["version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"postroom {__version__}"


def test_installed_console_script_runs() -> None:
    exe = str(Path(sys.executable).parent / "postroom")
    completed = subprocess.run([exe, "version"], capture_output=True, text=True, timeout=30)
    assert completed.returncode == 0, completed.stderr
    assert __version__ in completed.stdout


def test_a_classifier_recipe_without_its_model_stops_the_start_with_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("POSTROOM_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("POSTROOM_CLASSIFIER_EMBEDDER", "e5+minilm")
    monkeypatch.setattr(embed, "MINILM_DISTRIBUTION", "no-such-distribution-postroom")
    result = CliRunner().invoke(app, ["worker"])
    assert result.exit_code == 2
    assert "Configuration error" in result.output
    assert "requirements/models.txt" in result.output

    monkeypatch.setenv("POSTROOM_CLASSIFIER_EMBEDDER", "bert")
    result = CliRunner().invoke(app, ["web"])
    assert result.exit_code == 2 and "classifier_embedder" in result.output


def test_web_freezes_the_start_up_heap_before_it_serves(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The long-running commands take the start-up objects out of the garbage collector's
    sight before serving (webhook p99, docs/performance.md)."""
    import gc
    import signal

    import uvicorn

    monkeypatch.setenv("POSTROOM_DATA_DIR", str(tmp_path))
    frozen_at_serve: list[int] = []
    monkeypatch.setattr(
        uvicorn, "run", lambda application, **kwargs: frozen_at_serve.append(gc.get_freeze_count())
    )
    handler = signal.getsignal(signal.SIGTERM)
    gc.unfreeze()
    try:
        result = CliRunner().invoke(app, ["web"])
    finally:
        gc.unfreeze()
        signal.signal(signal.SIGTERM, handler)
    assert result.exit_code == 0, result.output
    assert frozen_at_serve and frozen_at_serve[0] > 0
