"""The README's "Real generations for Theorem 3" example, on the tests' tiny model instead of SmolLM2.

The README block is skipped by test_readme (it runs the real model for minutes); here it runs as written
with ``HFBackend`` swapped for one on the tiny model, then the README's ``analyze`` command lines run on the
corpus it wrote.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

README = Path(__file__).resolve().parents[1] / "README.md"


def _section() -> str:
    text = README.read_text()
    start = text.index("### Real generations for Theorem 3")
    return text[start:text.index("\n## ", start)]


@pytest.mark.filterwarnings("ignore:channel .* is constant in:RuntimeWarning")  # what the example shows
def test_readme_real_generation_example_runs_on_a_tiny_model(tmp_path, monkeypatch, capsys):
    import multireward_grpo.generation as generation
    import multireward_grpo.models as models
    from multireward_grpo.cli import main
    from tiny_lm import make_model, make_tokenizer

    tokenizer = make_tokenizer()

    class TinyBackend(generation.HFBackend):
        def __init__(self, model_name, **kwargs):
            assert model_name == "demo-model"
            kwargs.update(max_new_tokens=6)
            super().__init__(model=make_model(tokenizer), tokenizer=tokenizer, **kwargs)

    monkeypatch.setattr(generation, "HFBackend", TinyBackend)
    monkeypatch.setattr(models, "demo_model_path", lambda: "demo-model")
    monkeypatch.chdir(tmp_path)
    section = _section()
    (code,) = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    exec(compile(code, "README.md", "exec"), {"__name__": "readme_block"})  # noqa: S102 - our own documentation
    (corpus_file,) = tmp_path.glob("*.jsonl")
    header = json.loads(corpus_file.read_text().splitlines()[0])
    backend = header["metadata"]["backend"]
    assert backend["score_projection"]["method"] == "central_finite_difference"
    assert backend["reward"]["function"].endswith("math_and_more")
    assert all("scores" in json.loads(line) for line in corpus_file.read_text().splitlines()[1:])
    commands = [line[2:] for line in section.splitlines() if line.startswith("$ multireward-grpo analyze")]
    assert len(commands) >= 2
    for command in commands:
        argv = shlex.split(command)[1:] + ["--n-resamples", "50", "--no-progress"]
        assert main(argv) == 0, command
        out = capsys.readouterr().out
        assert "THIS ratio tests Theorem 3" in out and "scores: given (real score projections)" in out
