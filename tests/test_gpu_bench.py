"""The GPU section of benchmarks/trainer_bench.py: FLOPs count, device table, step accounting, and the GPU script.

The FLOPs formula is checked against torch's own FLOP counter on a small
Qwen2; the per-step accounting against a worker run of ours on CPU whose
token counts are known; ``benchmarks/gpu_run.sh --dry-run`` end to end (slow).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


@pytest.fixture(scope="module")
def gpu_bench():
    sys.path.insert(0, str(BENCH))
    try:
        import _trainer_gpu
        import _trainer_gpu_worker

        yield _trainer_gpu, _trainer_gpu_worker
    finally:
        sys.path.remove(str(BENCH))


def _small_qwen2(eager: bool = True):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(vocab_size=500, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=160, tie_word_embeddings=True,
                      attn_implementation="eager" if eager else "sdpa")
    torch.manual_seed(0)
    return Qwen2ForCausalLM(cfg).eval()


def test_forward_flops_match_torch_flop_counter(gpu_bench):
    """torch counts every matmul: ours + the masked half of causal attention - norms and biases (not matmuls)."""
    from torch.utils.flop_counter import FlopCounterMode

    bench, worker = gpu_bench
    model = _small_qwen2()
    shape = worker.model_shape(model)
    n_rows, length, kept = 2, 30, 10
    ids = torch.randint(0, 500, (n_rows, length), generator=torch.Generator().manual_seed(0))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(input_ids=ids, logits_to_keep=kept)
    ours = bench.forward_flops(shape, sequences=n_rows, prompt_tokens=n_rows * (length - kept),
                               new_tokens=n_rows * kept)
    d, layers, tokens = shape["hidden_size"], shape["n_layers"], n_rows * length
    masked_half = 2 * layers * length * length * d * n_rows  # eager attention computes the full score matrix
    not_matmul = sum(p.numel() for n, p in model.named_parameters() if "norm" in n or n.endswith(".bias"))
    assert counter.get_total_flops() == ours + masked_half - 2 * not_matmul * tokens


def test_model_shape_counts_parameters_without_the_embedding(gpu_bench):
    _, worker = gpu_bench
    model = _small_qwen2()
    shape = worker.model_shape(model)
    d, inter, kv = 64, 160, 2 * 16  # 2 KV heads of head size 16
    per_layer = (d * d + d) + 2 * (d * kv + kv) + d * d + 3 * d * inter + 2 * d  # q, k+v, o, MLP, 2 norms
    assert shape["non_embedding_parameters"] == 3 * per_layer + d  # + the final norm
    assert shape["parameters"] == shape["non_embedding_parameters"] + 500 * d  # tied: counted once


def test_update_flops_count_three_forwards_with_lora_and_a_reference(gpu_bench):
    bench, _ = gpu_bench
    shape = {"non_embedding_parameters": 1000, "n_layers": 2, "hidden_size": 8, "vocab_size": 50}
    kw = {"sequences": 4, "prompt_tokens": 40, "new_tokens": 24}
    forward = bench.forward_flops(shape, **kw)
    # 64 tokens x (2 x 1000 + 2 x 2 x 16 x 8) + 24 x 2 x 8 x 50
    assert forward == 64 * (2000 + 512) + 24 * 800
    assert bench.update_flops(shape, **kw) == 3 * forward
    assert bench.update_flops(shape, **kw, reference=False) == 2 * forward
    assert bench.update_flops(shape, **kw, lora=False) == 4 * forward


@pytest.mark.parametrize("name, peak", [("NVIDIA H200", 989.4e12), ("NVIDIA H100 80GB HBM3", 989.4e12),
                                        ("NVIDIA H100 PCIe", 756e12), ("NVIDIA A100-SXM4-80GB", 312e12),
                                        ("NVIDIA GeForce RTX 4090", None)])
def test_peak_flops_table(gpu_bench, name, peak):
    bench, _ = gpu_bench
    assert bench.peak_flops(name) == peak


def test_split_by_step_assigns_generate_calls_to_the_step_they_precede(gpu_bench):
    _, worker = gpu_bench
    calls = [(0.0, 1.0, 4, 40, 16), (1.0, 2.5, 4, 44, 16), (5.0, 6.0, 8, 80, 32)]  # two calls for step 0
    steps = worker.split_by_step(calls, [3.0, 7.0, 9.0])
    assert steps[0] == {"gen_s": 2.5, "rows": 8, "prompt_tokens": 84, "new_tokens": 32, "calls": 2}
    assert steps[1] == {"gen_s": 1.0, "rows": 8, "prompt_tokens": 80, "new_tokens": 32, "calls": 1}
    assert steps[2]["calls"] == 0


def test_summarize_against_hand_computed_figures(gpu_bench):
    bench, _ = gpu_bench
    shape = {"non_embedding_parameters": 10**9, "n_layers": 10, "hidden_size": 1000, "vocab_size": 1000}
    step = {"rows": 64, "prompt_tokens": 12800, "new_tokens": 16384, "calls": 2}
    run = {"step_median_s": 10.0, "gen_s_per_interval": [8.0, 8.0], "update_s_per_interval": [2.0, 2.0],
           "model": shape, "peak_memory_mb": 1234.0,
           "generation_per_step": [dict(step, gen_s=g) for g in (9.0, 8.0, 8.0)]}
    out = bench.summarize(run, peak=1e15, kl=True)
    flops = bench.update_flops(shape, sequences=64, prompt_tokens=12800, new_tokens=16384)
    assert out["gen_tokens_per_s"] == 16384 / 8.0
    assert out["train_tokens_per_s"] == (12800 + 16384) / 2.0
    assert out["update_mfu"] == pytest.approx(flops / (2.0 * 1e15), rel=1e-12)
    assert out["gen_calls_per_step"] == 2 and out["peak_memory_mb"] == 1234.0


def test_gpu_prompts_have_the_asked_length(gpu_bench):
    bench, _ = gpu_bench
    from tiny_lm import make_tokenizer

    tok = make_tokenizer()
    prompts = bench.gpu_prompts(tok, 6, 50)
    lengths = [len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    assert all(45 <= n <= 55 + 3 for n in lengths), lengths  # +-10%, and the last word may add a few tokens
    assert len(set(lengths)) > 1  # different lengths: the batch is left-padded
    assert bench.gpu_prompts(tok, 6, 50) == prompts  # deterministic


def test_worker_counts_the_tokens_of_every_step(gpu_bench, tmp_path):
    """A 2-step run of ours on CPU: per step, P x m rows, their prompt tokens, max_new_tokens each."""
    bench, worker = gpu_bench
    from tiny_lm import make_tokenizer

    tok = make_tokenizer()
    tok.save_pretrained(tmp_path / "tok")
    prompts = ["hello there", "one two three four five six seven"]
    job = {"mode": "an", "weights": [1.0, 1.0], "temperature": 1.0, "lr": 1e-3, "kl_coef": 0.05, "ppo_clip": 0.2,
           "seed": 0, "lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "lora_targets": ["q_proj", "v_proj"],
           "workload": "tiny", "impl": "ours", "arch": bench.TINY, "tokenizer": str(tmp_path / "tok"),
           "device": "cpu", "dtype": "float32", "prompts": prompts, "P": 2, "m": 3, "max_new_tokens": 5,
           "n_steps": 2, "micro_batch": 4, "out_dir": str(tmp_path / "run"), "model": "tiny"}
    from transformers.generation.utils import GenerationMixin

    original = GenerationMixin.generate
    out = worker.run(job)
    assert GenerationMixin.generate is original  # the timer put generate back
    assert "error" not in out, out.get("error")
    rendered = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
                for p in prompts]
    prompt_tokens = 3 * sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in rendered)
    assert len(out["generation_per_step"]) == 2
    for step in out["generation_per_step"]:
        assert step["rows"] == 6 and step["calls"] == 1  # generation_batch_size 32 >= 6 rows
        assert step["prompt_tokens"] == prompt_tokens
        assert step["new_tokens"] <= 6 * 5 and step["new_tokens"] % 6 == 0
        assert step["gen_s"] > 0
    assert len(out["step_intervals_s"]) == 1
    assert out["update_s_per_interval"][0] == pytest.approx(out["step_intervals_s"][0] - out["gen_s_per_interval"][0])
    assert out["model"]["n_layers"] == 2


@pytest.fixture()
def trainer_bench(gpu_bench):
    sys.path.insert(0, str(BENCH))
    try:
        import trainer_bench

        yield trainer_bench
    finally:
        sys.path.remove(str(BENCH))


def test_gpu_section_without_cuda_says_how_to_smoke_test_it(trainer_bench, tmp_path, capsys):
    assert trainer_bench.main(["--gpu", "--device", "cpu", "--json", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err
    assert "needs CUDA" in err and "--tiny" in err
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("flags, message", [(["--gpu-sizes", "7b"], "choose GPU workloads"),
                                            (["--gpu-steps", "1"], "--gpu-steps must be at least 2")])
def test_gpu_flags_are_checked(trainer_bench, capsys, flags, message):
    with pytest.raises(SystemExit) as stop:
        trainer_bench.parse_args(["--gpu", *flags])
    assert stop.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.slow
def test_gpu_run_script_dry_run_end_to_end(tmp_path):
    """The GPU script on CPU in the tiny configuration: every stage runs and writes its files (~2-4 min here)."""
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(["bash", str(BENCH / "gpu_run.sh"), "--dry-run"], capture_output=True, text=True, cwd=ROOT,
                          env=env, check=False, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    measured = json.loads((out / "gpu_tests_measured.json").read_text())
    assert len(measured) == 4 and all(r["outcome"] == "passed" for r in measured.values())
    bench = json.loads((out / "trainer_gpu.json").read_text())
    assert {(s["workload"], s["impl"]) for s in bench["summaries"]} >= {("tiny", "ours")}
    assert all(s["step_s"] > 0 and s["gen_tokens_per_s"] > 0 for s in bench["summaries"])
    assert bench["meta"]["torch"] == torch.__version__
    phases = json.loads((out / "profile" / "tiny" / "profile_phases.json").read_text())["phases_s"]
    assert {"generation", "reference_pass", "loss_forward_backward", "optimizer"} <= set(phases)
    assert "Self CPU" in (out / "profile" / "tiny" / "profile_ops.txt").read_text()
    variant = json.loads((out / "trainer_gpu_variant.json").read_text())
    assert variant["meta"]["ours_options"] == {"generation_batch_size": 64}
