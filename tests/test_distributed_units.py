"""The process layout without launching processes: shares, refusals, the one-process identity, the example configs."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from multireward_grpo.train.distributed import (
    Processes,
    check_batch_split,
    current_processes,
    share_of,
)

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "examples" / "accelerate"
EXPECTED = {"ddp.yaml": "MULTI_GPU", "fsdp.yaml": "FSDP", "deepspeed_zero2_lora.yaml": "DEEPSPEED"}


@pytest.mark.parametrize("n_items", [0, 1, 3, 4, 7, 12])
@pytest.mark.parametrize("world_size", [1, 2, 3, 5])
def test_shares_are_contiguous_disjoint_and_cover_everything(n_items, world_size):
    shares = [share_of(n_items, rank, world_size) for rank in range(world_size)]
    covered = [i for s in shares for i in range(n_items)[s]]
    assert covered == list(range(n_items))
    sizes = [s.stop - s.start for s in shares]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_uneven_batch_is_refused_naming_what_works():
    check_batch_split(8, 4)  # fine
    with pytest.raises(ValueError, match=r"batch_prompts=6 cannot be split over 4 processes") as err:
        check_batch_split(6, 4)
    text = str(err.value)
    assert "multiple of 4 (e.g. 4 or 8)" in text and "launch 1 or 2 or 3 or 6 processes" in text


def test_one_process_collectives_are_the_identity():
    processes = Processes()
    assert (processes.rank, processes.world_size, processes.is_main, processes.device) == (0, 1, True, None)
    assert processes.sum_floats([1.5, 2]) == [1.5, 2.0] and processes.max_floats([3]) == [3.0]
    assert processes.gather({"a": 1}) == [{"a": 1}]
    assert processes.batch_share(5) == slice(0, 5) and processes.items_share(3) == slice(0, 3)


def test_without_a_launcher_no_distributed_machinery_is_used(monkeypatch):
    import sys

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    before = "accelerate" in sys.modules
    assert type(current_processes("cpu")) is Processes
    assert ("accelerate" in sys.modules) == before  # not imported for one process


def test_deepspeed_config_is_refused_naming_what_runs(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    with pytest.raises(ValueError, match=r"asks for DeepSpeed.*examples/accelerate/fsdp.yaml.*ddp.yaml.*TRL"):
        current_processes("cpu")


FSDP2 = {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2"}


def test_fsdp_settings_read_what_accelerate_announces():
    from multireward_grpo.train.sharding import FSDPSettings, fsdp_settings

    assert fsdp_settings({}) is None and fsdp_settings({"ACCELERATE_USE_FSDP": "false", "FSDP_VERSION": "2"}) is None
    assert fsdp_settings(FSDP2) == FSDPSettings()  # accelerate's defaults: layer-wise units, reshard, no rank-0 load
    settings = fsdp_settings({**FSDP2, "FSDP_RESHARD_AFTER_FORWARD": "false", "FSDP_AUTO_WRAP_POLICY": "NO_WRAP",
                              "FSDP_TRANSFORMER_CLS_TO_WRAP": "LlamaDecoderLayer, Qwen2DecoderLayer",
                              "FSDP_CPU_RAM_EFFICIENT_LOADING": "true", "FSDP_OFFLOAD_PARAMS": "false"})
    assert settings == FSDPSettings(reshard_after_forward=False, wrap_layers=False,
                                    layer_classes=("LlamaDecoderLayer", "Qwen2DecoderLayer"), rank0_loads=True)


@pytest.mark.parametrize(("env", "message"), [
    ({"FSDP_VERSION": "1"}, r"FSDP version 1.*set fsdp_version: 2"),
    ({"FSDP_VERSION": None}, r"FSDP version 1.*set fsdp_version: 2"),  # accelerate's default is version 1
    ({"FSDP_OFFLOAD_PARAMS": "true"}, r"fsdp_offload_params to true.*set fsdp_offload_params: false"),
    ({"FSDP_ACTIVATION_CHECKPOINTING": "true"}, r"fsdp_activation_checkpointing.*--gradient-checkpointing"),
    ({"FSDP_AUTO_WRAP_POLICY": "SIZE_BASED_WRAP"}, r"SIZE_BASED_WRAP is not supported.*TRANSFORMER_BASED_WRAP"),
])
def test_unsupported_fsdp_options_are_refused_with_what_to_set(monkeypatch, env, message):
    from multireward_grpo.train.sharding import fsdp_settings

    environ = {k: v for k, v in {**FSDP2, **env}.items() if v is not None}
    with pytest.raises(ValueError, match=message):
        fsdp_settings(environ)
    monkeypatch.setenv("WORLD_SIZE", "2")  # the trainer's entry point refuses it before any process group starts
    monkeypatch.delenv("FSDP_VERSION", raising=False)
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValueError, match=message):
        current_processes("cpu")


def test_fsdp_layer_classes_are_found_or_refused_by_name():
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tiny_lm import make_model, make_tokenizer

    from multireward_grpo.train.sharding import FSDPSettings, _layer_classes

    model = make_model(make_tokenizer())
    assert [c.__name__ for c in _layer_classes(model, FSDPSettings())] == ["LlamaDecoderLayer"]  # _no_split_modules
    assert _layer_classes(model, FSDPSettings(wrap_layers=False)) == ()
    with pytest.raises(ValueError, match=r"names Qwen2DecoderLayer, which LlamaForCausalLM does not contain; its "
                                         r"layer classes: LlamaDecoderLayer"):
        _layer_classes(model, FSDPSettings(layer_classes=("Qwen2DecoderLayer",)))
    bare = torch.nn.Sequential(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match=r"Sequential names no decoder layer class.*NO_WRAP"):
        _layer_classes(bare, FSDPSettings())


def test_malformed_world_size_is_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE='two'"):
        current_processes("cpu")


def test_trainer_refuses_uneven_split_before_loading_a_model(monkeypatch, tmp_path):
    pytest.importorskip("torch")
    from trainer_helpers import PROMPTS, e_reward, tiny_config

    from multireward_grpo.train import GRPOTrainer, distributed, trainer

    class TwoProcesses(Processes):
        world_size = 2

        def batch_share(self, batch_prompts):
            check_batch_split(batch_prompts, self.world_size)
            return share_of(batch_prompts, self.rank, self.world_size)

    monkeypatch.setattr(trainer, "current_processes", lambda device: TwoProcesses())
    monkeypatch.setattr(trainer, "_load", lambda *a, **k: pytest.fail("the model was loaded"))
    assert distributed.current_processes is not None
    with pytest.raises(ValueError, match="batch_prompts=3 cannot be split over 2 processes"):
        GRPOTrainer(tiny_config(tmp_path, batch_prompts=3), e_reward, PROMPTS)


# --------------------------------------------------------------------------- example Accelerate configs


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_accelerate_config_is_what_accelerate_reads(name):
    pytest.importorskip("accelerate")
    from accelerate.commands.config.config_args import ClusterConfig
    from accelerate.commands.launch import launch_command_parser

    path = CONFIGS / name
    text = path.read_text()
    assert text.startswith("# ") and "What it is for" in text and "accelerate launch --config_file" in text
    config = ClusterConfig.from_yaml_file(str(path))  # refuses unknown top-level keys and distributed types
    assert config.distributed_type.value == EXPECTED[name]
    # the nested keys become `accelerate launch` options: each must be one it knows
    options = {action.dest for action in launch_command_parser()._actions}
    nested = dict(config.fsdp_config or {}) | dict(config.deepspeed_config or {})
    assert [key for key in nested if key not in options] == []
    if name == "deepspeed_zero2_lora.yaml":
        assert config.deepspeed_config["zero_stage"] == 2
    if name == "fsdp.yaml":
        assert config.fsdp_config["fsdp_version"] == 2


def test_every_example_config_is_tested():
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(EXPECTED)


def _launch_lines():
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Many GPUs with Accelerate"):text.index("## Already on TRL or verl?")]
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL):
        lines += [line.split("#", 1)[0].strip() for line in block.splitlines() if line.strip()]
    return lines


def test_readme_launch_lines_parse():
    """accelerate's own parser accepts the launcher part, our CLI the train part; the configs named exist."""
    pytest.importorskip("accelerate")
    from accelerate.commands.launch import launch_command_parser

    from multireward_grpo.cli import build_parser

    lines = _launch_lines()
    assert len(lines) >= 3
    ours = build_parser()
    for line in lines:
        argv = shlex.split(line)
        if argv[:2] == ["accelerate", "launch"]:
            launch_args = launch_command_parser().parse_args(argv[2:])
            if launch_args.config_file:
                assert (ROOT / launch_args.config_file).is_file(), line
            script_args = [launch_args.training_script, *launch_args.training_script_args]
        else:
            assert argv[0] == "torchrun", line
            script_args = argv[argv.index("-m") + 1:]
        if script_args[0] == "multireward_grpo":
            ours.parse_args(script_args[1:])
        else:
            assert script_args[0].endswith(".py"), line


def test_explicit_gpu_index_under_several_processes_is_refused():
    torch = pytest.importorskip("torch")
    from multireward_grpo.models import resolve_device_and_dtype

    with pytest.raises(ValueError, match="each with the GPU of its local rank: set device='auto' or 'cuda'"):
        resolve_device_and_dtype("cuda:0", "float32", process_device=torch.device("cuda", 1))


def test_fsdp_launch_environment_comes_from_accelerates_launcher():
    pytest.importorskip("accelerate")
    from multireward_grpo.train.sharding import (
        FSDPSettings,
        fsdp_launch_environment,
        fsdp_settings,
    )

    env = fsdp_launch_environment(CONFIGS / "fsdp.yaml")
    assert fsdp_settings(env) == FSDPSettings(rank0_loads=True)  # what the example config asks of the trainer
    with pytest.raises(ValueError, match=r"ddp.yaml is not an FSDP config"):
        fsdp_launch_environment(CONFIGS / "ddp.yaml")
