"""The README's Python blocks run as written, and its command lines parse.

The rules these tests hold the README to:

- Every ```python block runs **on its own**, in a fresh namespace (nothing
  carries over from the blocks above it), so a reader can copy any one block.
- Blocks run in a temporary working directory with the Hugging Face offline
  variables set, each within ``BLOCK_BUDGET_S`` seconds. A block that reads a
  data file by name (``FIXTURES``) finds a small file in that file's released
  schema there.
- A block that needs the network (a model download) is marked by the HTML
  comment ``<!-- skip-test: reason -->`` on the line right before it. Such a
  block is not skipped silently: every name it imports must resolve, and it
  is dry-run with :class:`DryRunTrainer` in place of ``GRPOTrainer``, so its
  config, prompts and reward function are checked without downloading.
  A skipped block that trains through TRL-style ``reward_funcs`` (the
  "Already on TRL or verl?" block) instead runs for real, one step each, with
  the tests' tiny model in place of the Hub model (:func:`_tiny_trainers`).
- Estimators a block registers are unregistered after it.
"""

from __future__ import annotations

import ast
import importlib
import re
import shlex
import signal
import time
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK_BUDGET_S = 60  # per block; the slowest offline block (the Theorem 3 corpus) takes about a second
OFFLINE_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
_BLOCK = re.compile(r"(?:<!--\s*skip-test:\s*(?P<reason>.*?)\s*-->[ \t]*\n)?```python\n(?P<code>.*?)```", re.DOTALL)


def _blocks() -> list[tuple[str, str | None]]:
    """(code, skip reason or None) of every python block, in README order."""
    return [(m["code"], m["reason"]) for m in _BLOCK.finditer(README.read_text())]


def _runnable():
    return [code for code, reason in _blocks() if reason is None]


def _skipped():
    return [(code, reason) for code, reason in _blocks() if reason is not None]


def _block_id(code: str) -> str:
    lines = [line for line in code.splitlines() if line.strip() and not line.startswith(("import ", "from "))]
    return (lines or code.splitlines() or ["empty"])[0][:40]


# --------------------------------------------------------------------------- fixtures


def _write_gsm8k_rollouts(path: Path) -> None:
    """A small table in the released GSM8K rollout schema (one row per rollout)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    P, K, m = 6, 12, 4
    rows = [
        {"prompt_idx": p, "seed_idx": k, "rollout_idx": j, "group_size_m_max": m,
         "correctness": float(rng.random() < 0.5), "length": float(rng.random()), "format": float(rng.random() < 0.7)}
        for p in range(P) for k in range(K) for j in range(m)
    ]
    pq.write_table(pa.Table.from_pylist(rows), path)


FIXTURES = {"gsm8k_rollouts.parquet": _write_gsm8k_rollouts}


class DryRunTrainer:
    """Stands in for GRPOTrainer in blocks marked skip-test: checks the inputs, trains nothing.

    The reward function scores one canned reply for the first prompt, which
    must give one number per weight, as the real trainer would require.
    """

    instances: ClassVar[list] = []  # every trainer made, for the test to inspect

    def __init__(self, config, reward_fn, prompts, **kwargs):
        from multireward_grpo.rewards import as_reward_function

        if not prompts:
            raise ValueError("no prompts")
        reward = as_reward_function(reward_fn, n_channels=len(config.weights))
        self.scores = reward("Thank you for reaching out. You can open a dispute in the app.", prompts[0])
        self.config, self.prompts = config, prompts
        DryRunTrainer.instances.append(self)

    def train(self):
        return []


@contextmanager
def _time_budget(seconds: int, what: str):
    """Stop a block that runs past ``seconds`` (SIGALRM: the main thread on POSIX)."""

    def stop(signum, frame):
        raise TimeoutError(f"{what} ran past its {seconds} s budget")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """A temporary working directory, offline, with the fixture files; estimators registered there are removed."""
    import multireward_grpo as mg

    monkeypatch.chdir(tmp_path)
    for var in OFFLINE_ENV:
        monkeypatch.setenv(var, "1")
    pytest.importorskip("pyarrow")
    for name, write in FIXTURES.items():
        write(tmp_path / name)
    before = set(mg.list_estimators())
    yield tmp_path
    for name in set(mg.list_estimators()) - before:
        mg.unregister_estimator(name)


def _run(code: str) -> dict:
    namespace: dict = {"__name__": "readme_block"}
    start = time.perf_counter()
    with _time_budget(BLOCK_BUDGET_S, f"README block {_block_id(code)!r}"):
        exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - our own documentation
    assert time.perf_counter() - start < BLOCK_BUDGET_S
    return namespace


# --------------------------------------------------------------------------- the blocks


def test_readme_has_snippets():
    assert len(_runnable()) >= 8
    assert len(_skipped()) >= 2


def test_skip_markers_sit_right_before_a_block():
    """A marker anywhere else would skip nothing, or the wrong block."""
    text = README.read_text()
    markers = re.findall(r"^<!--\s*skip-test:", text, flags=re.MULTILINE)
    assert len(markers) == len(_skipped())
    assert all(reason for _, reason in _skipped()), "say why a block is skipped"


@pytest.mark.parametrize("code", _runnable(), ids=_block_id)
def test_readme_block_runs_on_its_own(code, sandbox, capsys):
    namespace = _run(code)
    if "summary_print" in code:
        assert "Theorem 3 check" in capsys.readouterr().out
    for name in ("A", "A_na", "A_an"):  # the advantages a block computes are numbers
        if name in namespace:
            assert np.all(np.isfinite(np.asarray(namespace[name])))


def _imported_names(code: str) -> list[tuple[str, str | None]]:
    """(module, name or None) for every import statement of a block."""
    found = []
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.ImportFrom):
            found += [(node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names]
    return found


@pytest.mark.parametrize("code", [code for code, _ in _skipped()], ids=_block_id)
def test_skipped_block_imports_resolve(code):
    names = _imported_names(code)
    assert names
    for module, name in names:
        mod = importlib.import_module(module)
        if name is not None:
            assert hasattr(mod, name), f"README imports {name} from {module}, which has no such name"


@pytest.mark.parametrize("code", [code for code, _ in _skipped()], ids=_block_id)
def test_skipped_block_dry_runs_with_the_trainer_stubbed(code, sandbox, monkeypatch):
    import multireward_grpo as mg

    if "multireward_grpo.hub import" in code:
        pytest.skip("runs as written against a fake Hub in tests/test_hub.py::test_readme_hub_blocks_run_against_fakes")
    if "RunPodClient" in code:
        pytest.skip("runs as written in tests/test_runpod.py::test_readme_snippet_runs_as_written (fake API, real sshd)")
    if "HFBackend" in code:
        pytest.skip("runs on the tiny model in tests/test_thm3_real_example.py")
    assert "GRPOTrainer" in code, "a skipped block that does not train needs its own offline check here"
    if "reward_funcs=" in code:
        pytest.skip("runs for real on the tiny model in test_trl_style_block_trains_one_step_on_a_tiny_model")
    monkeypatch.setattr(mg, "GRPOTrainer", DryRunTrainer)
    DryRunTrainer.instances.clear()
    _run(code)
    (trainer,) = DryRunTrainer.instances
    assert len(trainer.scores) == len(trainer.config.weights)
    assert trainer.config.mode in mg.list_estimators()


def _tiny_trainers(monkeypatch):
    """Our GRPOTrainer and MultiRewardGRPOTrainer on the tests' tiny model, one step each; records the runs."""
    import multireward_grpo as mg
    from multireward_grpo.integrations import trl as mr_trl

    from tiny_lm import make_model, make_tokenizer

    tokenizer, runs = make_tokenizer(), []

    class TinyOurs(mg.GRPOTrainer):
        def __init__(self, config, *args, **kwargs):
            small = config.replace(n_steps=1, max_new_tokens=6, device="cpu", verbose=False)
            super().__init__(small, *args, model=make_model(tokenizer), tokenizer=tokenizer, **kwargs)
            runs.append(self)

    class TinyTRL(mr_trl.MultiRewardGRPOTrainer):
        def __init__(self, *, model, args, **kwargs):
            assert isinstance(model, str)  # the block names a Hub model; the tiny one stands in
            args.max_steps, args.max_completion_length, args.disable_tqdm = 1, 6, True
            super().__init__(model=make_model(tokenizer), args=args, processing_class=tokenizer, **kwargs)
            runs.append(self)

    import trl

    checks = trl.GRPOConfig.__post_init__

    def on_the_cpu(self):  # TRL's config picks bf16 unless told it runs on the CPU
        self.use_cpu = True
        checks(self)

    monkeypatch.setattr(mg, "GRPOTrainer", TinyOurs)
    monkeypatch.setattr(mr_trl, "MultiRewardGRPOTrainer", TinyTRL)
    monkeypatch.setattr(trl.GRPOConfig, "__post_init__", on_the_cpu)
    return runs


@pytest.mark.filterwarnings("ignore:`(is_)?gradient_checkpointing.*is deprecated:FutureWarning")  # TRL's own config
def test_trl_style_block_trains_one_step_on_a_tiny_model(sandbox, monkeypatch):
    """The TRL block: the same reward functions and dataset train under TRL and our trainer."""
    pytest.importorskip("trl")
    pytest.importorskip("datasets")
    (code,) = [code for code, reason in _skipped() if "reward_funcs=" in code]
    runs = _tiny_trainers(monkeypatch)
    _run(code)
    trl_run, ours = runs
    assert [row for row in trl_run.state.log_history if "multireward/noise_factor" in row]
    assert len(ours.history) == 1 and "noise_factor" in ours.history[0]
    assert (sandbox / "trl_out" / "rollouts.jsonl").stat().st_size > 0


def test_register_estimator_snippet_registers_a_working_estimator(sandbox):
    import multireward_grpo as mg

    (block,) = [code for code in _runnable() if "@register_estimator" in code]
    _run(block)
    out = mg.compute_advantage(np.random.default_rng(0).random((4, 3)), mode="max_channel")
    assert out.shape == (4,) and abs(out.sum()) < 1e-9


def test_readme_comments_state_true_numbers():
    """The numbers the 'other laws' block prints in its comments."""
    from multireward_grpo.analysis.bias import gamma_star
    from multireward_grpo.analysis.resolution import resolution

    sigma = [1, 2**0.5, 3.1]
    assert resolution(3, w=[1, 1, 1], sigma=sigma, mode="na") == 27
    assert resolution(3, w=[1, 1, 1], sigma=sigma, mode="an") == 7
    assert gamma_star(0.6, 0.5, 1.0) == pytest.approx(1.2)


def test_readme_states_the_slow_tier_duration():
    text = README.read_text()
    assert "pytest -q --run-slow tests/test_slow_real_model.py" in text
    assert re.search(r"slow tier takes about 9-10 minutes on 2 CPU cores", text)


# --------------------------------------------------------------------------- command lines


def _cli_lines():
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.DOTALL):
        for line in block.splitlines():
            command = line.split("#", 1)[0].strip()
            for part in command.split("&&"):
                part = part.strip()
                if part.startswith("multireward-grpo "):
                    lines.append(part)
    return lines


def test_readme_command_lines_parse():
    """Every `multireward-grpo ...` command the README shows is accepted by the CLI's parser."""
    from multireward_grpo.cli import build_parser

    lines = _cli_lines()
    assert len(lines) >= 10
    parser = build_parser()
    for line in lines:
        argv = shlex.split(line)[1:]
        if argv == ["--help"]:
            continue
        try:
            parser.parse_args(argv)
        except SystemExit as exc:  # argparse exits 2 on an unknown flag or a bad value
            pytest.fail(f"README command does not parse: {line!r} (exit {exc.code})")
