"""The layers import only downwards: read from the source's import statements (top-level and lazy ones alike)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "multireward_grpo"

# engine code that must know nothing of the entry layer (CLI, plots, reports)
ENGINE = ("train", "generation", "models.py", "rewards", "integrations")
ENTRY = ("multireward_grpo.cli", "multireward_grpo.viz", "multireward_grpo.report")


def _imported_modules(path: Path, root: Path = PACKAGE) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in a file under ``root``, at any depth (lazy imports count)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = ".".join(path.relative_to(root.parent).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def _files(*parts: str) -> list[Path]:
    files = []
    for part in parts:
        target = PACKAGE / part
        files += sorted(target.rglob("*.py")) if target.is_dir() else [target]
    return files


def _violations(files, forbidden, root: Path = PACKAGE) -> list[str]:
    return [f"{path.relative_to(root)}:{line} imports {module}"
            for path in files for line, module in _imported_modules(path, root)
            if any(module == f or module.startswith(f + ".") for f in forbidden)]


def test_engine_imports_nothing_from_the_entry_layer():
    assert _violations(_files(*ENGINE), ENTRY) == []


def test_trainer_package_imports_no_cli():
    files = _files("train")
    assert len(files) >= 8  # the check reads the real package
    assert _violations(files, ("multireward_grpo.cli",)) == []


def test_rollout_backend_and_models_do_not_reach_into_the_trainer():
    """Model loading and device choice live in models.py, below the trainer and the HF rollout backend."""
    assert _violations(_files("generation/hf.py", "models.py"), ("multireward_grpo.train.trainer",)) == []


def test_checker_sees_lazy_and_relative_imports(tmp_path):
    """The checker itself: an import inside a function, and a relative one, are both found."""
    root = tmp_path / "multireward_grpo"
    probe = root / "train" / "probe.py"
    probe.parent.mkdir(parents=True)
    probe.write_text("import os\ndef f():\n    from multireward_grpo.cli.common import x\n    from ..cli import train\n")
    bad = _violations([probe], ("multireward_grpo.cli",), root)
    assert sorted({b.split(" ")[0] for b in bad}) == ["train/probe.py:3", "train/probe.py:4"]


@pytest.mark.parametrize("name", ["_require_llm", "_device_and_dtype", "_load", "quiet_peft"])
def test_old_private_names_still_importable_from_the_trainer(name):
    from multireward_grpo.train import trainer

    assert callable(getattr(trainer, name))


def test_hf_backend_and_trainer_share_one_device_choice():
    pytest.importorskip("torch")
    import torch

    from multireward_grpo.models import resolve_device_and_dtype
    from multireward_grpo.train.config import GRPOConfig
    from multireward_grpo.train.trainer import _device_and_dtype

    assert resolve_device_and_dtype("cpu", "auto") == (torch.device("cpu"), torch.float32)
    assert _device_and_dtype(GRPOConfig(device="cpu", dtype="bfloat16")) == (torch.device("cpu"), torch.bfloat16)
    # a launcher's per-process device is what "auto" means
    assert resolve_device_and_dtype("auto", "float32", process_device=torch.device("cpu"))[0] == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device_and_dtype("cuda", "auto")
