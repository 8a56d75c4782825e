"""Packaging contract: light import, version from metadata, CLI skeleton."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata

import pytest

import multireward_grpo
from multireward_grpo.cli import main

HEAVY = ("torch", "transformers", "peft", "accelerate", "matplotlib", "datasets", "pandas", "pyarrow", "vllm", "trl")


def test_import_is_light():
    code = (
        "import sys, multireward_grpo, multireward_grpo.advantage, multireward_grpo.cli;"
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_version_comes_from_metadata():
    assert multireward_grpo.__version__ == metadata.version("multireward-grpo")


def test_cli_version_and_estimators(capsys):
    assert main(["version"]) == 0
    assert capsys.readouterr().out.strip() == f"multireward-grpo {multireward_grpo.__version__}"
    assert main(["estimators", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed == multireward_grpo.list_estimators()


def test_cli_help_and_no_command(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "estimators" in capsys.readouterr().out
    assert main([]) == 2


def test_console_script_is_installed():
    out = subprocess.run(["multireward-grpo", "version"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("multireward-grpo ")
