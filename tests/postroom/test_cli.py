"""The postroom entry point exists and answers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from postroom import __version__
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
