"""Shared test set-up: offline, deterministic, and the slow and gpu tiers opt-in."""

import os

import pytest

for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_var, "1")

# marker: (option that turns it on, reason shown when it is off)
_TIERS = {
    "slow": ("--run-slow", "slow tier: pass --run-slow (or -m slow) to run it"),
    "gpu": ("--run-gpu", "gpu tier: pass --run-gpu (or -m gpu) on a machine with CUDA to run it"),
}


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="also run tests marked slow")
    parser.addoption("--run-gpu", action="store_true", help="also run tests marked gpu (they need CUDA)")


def pytest_collection_modifyitems(config, items):
    chosen = config.getoption("-m") or ""
    for marker, (option, reason) in _TIERS.items():
        if config.getoption(option) or marker in chosen:
            continue
        skip = pytest.mark.skip(reason=reason)
        for item in items:
            if marker in item.keywords:
                item.add_marker(skip)
