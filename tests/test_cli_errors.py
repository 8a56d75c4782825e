"""Bad command lines exit 2 with one line on stderr (``multireward-grpo CMD: error: ...``) and no traceback."""

from __future__ import annotations

import json

import pytest

from multireward_grpo import cli
from multireward_grpo.cli import build_parser, main
from multireward_grpo.cli.common import join_negative_values


@pytest.fixture
def paths(tmp_path):
    """Files the table below refers to as {name}."""
    (tmp_path / "folder").mkdir()
    (tmp_path / "arrays.jsonl").write_text("[1, 2, 3]\n[4, 5, 6]\n")
    (tmp_path / "bad.yaml").write_text("mode: na\nweights: [1, 2\nm: 3\n")
    (tmp_path / "bad.toml").write_text('mode = "na"\nm = \n')
    (tmp_path / "bad.json").write_text('{"mode": "na",\n "m": 4,\n}\n')
    (tmp_path / "typo.toml").write_text("[grpo]\nn_step = 3\n")
    (tmp_path / "negative.json").write_text('{"lr": -1}')
    return {"tmp": str(tmp_path), "folder": str(tmp_path / "folder"), "arrays": str(tmp_path / "arrays.jsonl"),
            **{p.stem + p.suffix.replace(".", "_"): str(p) for p in tmp_path.iterdir() if p.is_file()}}


def _run(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own errors exit from inside parse_args
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.err


def _assert_one_line_error(code, err, command, fragment):
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1, err
    assert lines[0].startswith(f"multireward-grpo {command}: error: ") or \
        lines[0].startswith("multireward-grpo: error: "), lines[0]
    assert fragment in lines[0], lines[0]


BAD_COMMAND_LINES = [
    # analyze: paths that are not rollout files, and every float flag
    ("analyze {folder}", "is a directory"),
    ("analyze {arrays}", "is a JSON array, expected an object"),
    ("analyze {arrays} --tol -1", "argument --tol: must be > 0, got '-1'"),
    ("analyze {arrays} --tol nan", "argument --tol: must be a finite number, got 'nan'"),
    ("analyze {arrays} --tau2 0", "argument --tau2: must be > 0"),
    ("analyze {arrays} --weights 0,0,0", "argument --weights: the values must not all be 0"),
    ("analyze {arrays} --m 1", "argument --m: every value must be >= 2"),
    # thm3-check
    ("thm3-check --tol -1", "argument --tol: must be > 0, got '-1'"),
    ("thm3-check --tol nan", "argument --tol: must be a finite number"),
    ("thm3-check --tol inf", "argument --tol: must be a finite number"),
    ("thm3-check --tau2 -1", "argument --tau2: must be > 0"),
    ("thm3-check --rho 1.5", "argument --rho: must be <= 1"),
    ("thm3-check --rho nan", "argument --rho: must be a finite number"),
    ("thm3-check --weights 0,0,0", "argument --weights: the values must not all be 0"),
    ("thm3-check --weights -1,1,1", "argument --weights: every value must be >= 0"),
    ("thm3-check --weights nan,1,1", "argument --weights: every value must be a finite number"),
    ("thm3-check --K 1", "argument --K: must be >= 2"),
    ("thm3-check --m 4,1", "argument --m: every value must be >= 2"),
    ("thm3-check --n-prompts 0", "argument --n-prompts: must be >= 1"),
    ("thm3-check --n-resamples -1", "argument --n-resamples: must be >= 0"),
    ("thm3-check --seed -1", "argument --seed: must be >= 0"),
    ("thm3-check --modes nna", "unknown mode 'nna' (did you mean 'na'?)"),
    ("thm3-check --condition 0:0", "the gate and the target must be different channels"),
    ("thm3-check --condition -1:2", "conditioning rule '-1:2': Conditioning.gate must be a channel index >= 0"),
    ("thm3-check --condition 0:-2", "conditioning rule '0:-2': Conditioning.target must be a channel index >= 0"),
    ("thm3-check --marginals gausian", "invalid choice: 'gausian' (did you mean 'gaussian'?)"),
    # prop1
    ("prop1 --sigmas 0,1", "argument --sigmas: every value must be > 0"),
    ("prop1 --rho nan", "argument --rho: must be a finite number"),
    ("prop1 --m 1", "argument --m: must be >= 2"),
    ("prop1 --n-groups 1", "argument --n-groups: must be >= 2"),
    ("prop1 --weights nan,1,1", "argument --weights: every value must be a finite number"),
    ("prop1 --modes an,nna", "unknown mode 'nna' (did you mean 'na'?)"),
    ("prop1 --file {folder}", "is a directory"),
    # prop2
    ("prop2 --weights 0,0,0", "argument --weights: the values must not all be 0"),
    ("prop2 --weights -1,1,1", "argument --weights: every value must be >= 0"),
    ("prop2 --weights nan,1,1", "argument --weights: every value must be a finite number"),
    ("prop2 --sigmas 1,0,1", "argument --sigmas: every value must be > 0"),
    ("prop2 --levels 0", "argument --levels: every value must be >= 1"),
    # prop4
    ("prop4 --max-z=-1", "argument --max-z: must be >= 0, got '-1'"),
    ("prop4 --max-z -1", "argument --max-z: must be >= 0, got '-1'"),
    ("prop4 --max-z nan", "argument --max-z: must be a finite number"),
    ("prop4 --p-a 1.5", "argument --p-a: must be <= 1"),
    ("prop4 --p-b 1", "argument --p-b: must be < 1"),
    ("prop4 --alpha-c inf", "argument --alpha-c: must be a finite number"),
    ("prop4 --gammas 0,nan", "argument --gammas: every value must be a finite number"),
    ("prop4 --w-b -1e-3", "argument --w-b: must be >= 0, got '-1e-3'"),
    ("prop4 --n 1", "argument --n: must be >= 2"),
    # train: everything is refused before a model loads (--print-config would exit 0 otherwise)
    ("train --condition 0:0", "conditioning rule '0:0': the gate and the target must be different channels"),
    ("train --condition -1:2", "conditioning rule '-1:2': Conditioning.gate must be a channel index >= 0"),
    ("train --condition 0:-2", "conditioning rule '0:-2': Conditioning.target must be a channel index >= 0"),
    ("train --condition 0-1", "use GATE:TARGET[:METHOD[:GAMMA]]"),
    ("train --condition 0:5", "target=5 but rewards have 3 channels"),
    ("train --lr -1e-3", "lr must be > 0, got -0.001"),
    ("train --lr nan", "lr must be a finite number"),
    ("train --temperature inf", "temperature must be a finite number"),
    ("train --mode nna", "mode='nna' (did you mean 'na'?)"),
    ("train --loss-type grpoo", "loss_type='grpoo' (did you mean 'grpo'?)"),
    ("train --lr-scheduler cosin", "lr_scheduler='cosin' (did you mean 'cosine'?)"),
    ("train --nan-policy omitt", "nan_policy='omitt' (did you mean 'omit'?)"),
    ("train --report-to tensorbord", "report_to has 'tensorbord' (did you mean 'tensorboard'?)"),
    ("train --lora-alpha -4", "lora_alpha=-4 must be a positive integer"),
    ("train --lora-alpha 0", "lora_alpha=0 must be a positive integer"),
    ("train --lora-target-modules ,", "use_lora=True needs lora_target_modules"),
    ("train --m 1", "m=1: a group needs at least 2 rollouts"),
    ("train --device gpu", "device='gpu'; use auto, cpu, cuda, cuda:N or mps"),
    ("train --n-scenarios 0", "argument --n-scenarios: must be >= 1"),
    ("train --config {bad_yaml}", "could not parse config file {bad_yaml}: line 3"),
    ("train --config {bad_toml}", "could not parse config file {bad_toml}:"),
    ("train --config {bad_json}", "could not parse config file {bad_json}: line 3"),
    ("train --config {typo_toml}", "'n_step' (did you mean 'n_steps'?)"),
    ("train --config {negative_json}", "config file {negative_json}: lr must be > 0"),
    ("train --config {folder}", "is a directory"),
    # eval: argument checks before anything loads
    ("eval --m 0", "argument --m: must be >= 1"),
    ("eval --n-prompts 0", "argument --n-prompts: must be >= 1"),
    ("eval --temperature inf", "argument --temperature: must be a finite number"),
    ("eval --temperature 0", "argument --temperature: must be > 0"),
    ("eval --seed -1", "argument --seed: must be >= 0"),
    ("eval --weights 0,0,0", "argument --weights: the values must not all be 0"),
    # mistyped commands and flags
    ("thm3-chek", "invalid choice: 'thm3-chek' (did you mean 'thm3-check'?)"),
    ("thm3-check --tool 0.1", "unrecognized arguments: --tool 0.1; --tool (did you mean '--tol'?)"),
    ("estimators --jsn", "--jsn (did you mean '--json'?)"),
    ("train --n-stpes 3", "--n-stpes (did you mean '--n-steps'?)"),
]


@pytest.mark.parametrize("command_line, fragment", BAD_COMMAND_LINES)
def test_bad_command_lines_exit_2_with_one_line(command_line, fragment, paths, capsys):
    argv = [token.format(**paths) for token in command_line.split()]
    if argv[0] == "train":
        argv.append("--print-config")
    code, err = _run(argv, capsys)
    _assert_one_line_error(code, err, argv[0], fragment.format(**paths))


def test_eval_weights_are_checked_against_the_task_before_the_model_loads(tmp_path, capsys):
    pytest.importorskip("torch")
    code, err = _run(["eval", "--task", "fintech", "--model", str(tmp_path / "no-model"), "--weights", "1,1",
                      "--device", "cpu", "--n-prompts", "2"], capsys)
    _assert_one_line_error(code, err, "eval", "task fintech has 3 reward channels")


def test_negative_values_reach_their_option():
    parser = build_parser()
    assert join_negative_values(parser, ["prop4", "--max-z", "-1", "--json"]) == ["prop4", "--max-z=-1", "--json"]
    assert join_negative_values(parser, ["train", "--lr", "-1e-3", "--condition", "-1:2"]) == \
        ["train", "--lr=-1e-3", "--condition=-1:2"]
    assert join_negative_values(parser, ["prop4", "--alpha-c", "-.5", "--gammas", "-inf"]) == \
        ["prop4", "--alpha-c=-.5", "--gammas=-inf"]
    # a flag without a value, a value that is not a number, and everything after "--" stay as they are
    assert join_negative_values(parser, ["analyze", "--json", "-1.jsonl"]) == ["analyze", "--json", "-1.jsonl"]
    assert join_negative_values(parser, ["prop4", "--seed", "-x"]) == ["prop4", "--seed", "-x"]
    assert join_negative_values(parser, ["thm3-check", "--", "--tol", "-1"]) == ["thm3-check", "--", "--tol", "-1"]


def test_valid_negative_values_are_used(capsys):
    code, err = _run(["prop4", "--alpha-c", "-0.5", "--n", "2000", "--gammas", "-0.5,0.5", "--json"], capsys)
    assert code in (0, 1), err
    code = main(["prop4", "--alpha-c", "-0.5", "--n", "2000", "--gammas", "-0.5,0.5", "--json"])
    payload = json.loads(capsys.readouterr().out)
    # gamma* = alpha_c p_a / (1 - p_b) = -0.5 * 0.6 / 0.5
    assert payload["gamma_star"] == pytest.approx(-0.6, rel=1e-12)


def _fake_command(monkeypatch, error):
    def run(args):
        raise error

    monkeypatch.setattr(cli, "_COMMANDS", [cli._Command("boom", "raises", cli._no_arguments, run)])


@pytest.mark.parametrize("error, fragment", [
    (PermissionError(13, "Permission denied", "/data/rollouts.jsonl"), "Permission denied: /data/rollouts.jsonl"),
    (IsADirectoryError(21, "Is a directory", "/data"), "Is a directory: /data"),
    (json.JSONDecodeError("Expecting value", '{"a":\n}', 6), "Expecting value: line 2 column 1"),
    (ValueError("first line\n  second line"), "first line second line"),
    (OSError("the hub is unreachable"), "the hub is unreachable"),
])
def test_input_errors_become_one_line(monkeypatch, capsys, error, fragment):
    _fake_command(monkeypatch, error)
    code, err = _run(["boom"], capsys)
    _assert_one_line_error(code, err, "boom", fragment)


def test_programming_errors_keep_their_traceback(monkeypatch):
    _fake_command(monkeypatch, AttributeError("'NoneType' object has no attribute 'x'"))
    with pytest.raises(AttributeError):
        main(["boom"])
