"""Loss options (clip-higher, GSPO sequence ratios, truncated-completion masking, bnpo/dapo) against a per-token loop.

The reference below walks sequences and tokens in plain Python on float64 scalars, so its autograd gradient is
an independent check of :func:`policy_loss`'s vectorized value and gradient, whole-batch and micro-batched.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from multireward_grpo.cli import main  # noqa: E402
from multireward_grpo.train import GRPOConfig  # noqa: E402
from multireward_grpo.train.checkpoint import _config_changes  # noqa: E402
from multireward_grpo.train.losses import LossDenominators, loss_mask, objective_options, policy_loss  # noqa: E402

CLIP, CLIP_HIGH = 0.2, 0.28
LOSS_TYPES = ["grpo", "dr_grpo", "token_mean", "dapo", "bnpo"]


# --------------------------------------------------------------------------- the loop reference


def _clipped(ratio, low, high):
    """clip(ratio, low, high) of a 0-d tensor: a constant outside the band (no gradient), the ratio inside."""
    if float(ratio.detach()) < low:
        return torch.tensor(low, dtype=torch.float64)
    if float(ratio.detach()) > high:
        return torch.tensor(high, dtype=torch.float64)
    return ratio


def reference_loss(logp, old, adv, mask, *, loss_type="grpo", clip=CLIP, clip_high=None, level="token",
                   truncated=None, mask_truncated=False, ref=None, kl_coef=0.0, micro_batch_size=None,
                   max_new_tokens=None):
    """The batch loss by loops; also returns the (sequence, token, side) of every token the clip silenced."""
    n, length = mask.shape
    high = clip if clip_high is None else clip_high
    counted = [[t for t in range(length) if mask[i, t] and not (mask_truncated and truncated[i])] for i in range(n)]
    terms, silenced = [], []
    for i in range(n):
        seq_ratio = None
        if level == "sequence":
            log_sum = sum((logp[i, t] - old[i, t] for t in counted[i]), torch.tensor(0.0, dtype=torch.float64))
            seq_ratio = torch.exp(log_sum / max(len(counted[i]), 1))
        row = []
        for t in counted[i]:
            ratio = torch.exp(logp[i, t] - old[i, t]) if seq_ratio is None else seq_ratio
            a = float(adv[i])
            plain, clipped = ratio * a, _clipped(ratio, 1 - clip, 1 + high) * a
            term = -(plain if float(plain.detach()) <= float(clipped.detach()) else clipped)
            if float(clipped.detach()) < float(plain.detach()):
                silenced.append((i, t, "low" if a < 0 else "high"))
            if kl_coef:
                q = ref[i, t] - logp[i, t]
                term = term + kl_coef * (torch.exp(q) - q - 1)
            row.append(term)
        terms.append(row)
    return _reference_aggregate(terms, loss_type, n, max_new_tokens or length, micro_batch_size or n), silenced


def _reference_aggregate(terms, loss_type, n, max_new_tokens, micro_batch_size):
    zero = torch.tensor(0.0, dtype=torch.float64)
    if loss_type == "grpo":
        return sum((sum(row, zero) / max(len(row), 1) for row in terms), zero) / n
    if loss_type == "dr_grpo":
        return sum((sum(row, zero) for row in terms), zero) / (n * max_new_tokens)
    if loss_type in ("token_mean", "dapo"):
        return sum((sum(row, zero) for row in terms), zero) / max(sum(len(row) for row in terms), 1)
    chunks = [terms[s:s + micro_batch_size] for s in range(0, n, micro_batch_size)]
    means = [sum((sum(row, zero) for row in chunk), zero) / max(sum(len(row) for row in chunk), 1) for chunk in chunks]
    return sum(means, zero) / len(chunks)


# --------------------------------------------------------------------------- a batch where the clip bites


def _off_policy_batch(seed=0, n=8, length=6):
    """Token log-ratios around a per-sequence level, so token and sequence ratios leave the band on both sides."""
    gen = torch.Generator().manual_seed(seed)
    levels = torch.tensor([0.6, 1.45, 1.0, 1.25, 0.7, 1.1, 1.6, 0.9], dtype=torch.float64)[:n]
    log_ratio = levels.log()[:, None] + 0.15 * torch.randn(n, length, generator=gen, dtype=torch.float64)
    logp = -1.0 - torch.rand(n, length, generator=gen, dtype=torch.float64)
    old = logp - log_ratio
    ref = logp + 0.3 * torch.randn(n, length, generator=gen, dtype=torch.float64)
    adv = torch.tensor([-1.2, 0.8, 0.5, 1.1, -0.7, -0.3, 1.4, -1.0], dtype=torch.float64)[:n]
    lengths = torch.tensor([6, 3, 5, 1, 4, 6, 2, 5])[:n]
    mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
    truncated = torch.tensor([True, False, False, True, False, True, False, False])[:n]
    return logp, old, adv, mask, truncated, ref


def _run_policy_loss(logp, old, adv, mask, *, micro_batch_size, max_new_tokens, truncated, ref, **options):
    """Loss summed over micro-batches and the gradient it leaves on ``logp``."""
    logp = logp.detach().clone().requires_grad_()
    denominators = LossDenominators.of_batch(mask, truncated, max_new_tokens=max_new_tokens,
                                             micro_batch_size=micro_batch_size,
                                             mask_truncated_completions=options.get("mask_truncated_completions",
                                                                                    False))
    total = 0.0
    for start in range(0, mask.shape[0], micro_batch_size):
        part = slice(start, start + micro_batch_size)
        loss, _ = policy_loss(logp[part], old[part], adv[part], mask[part], denominators=denominators,
                              truncated=truncated[part], ref_logp=ref[part], **options)
        loss.backward()
        total += float(loss.detach())
    return total, logp.grad


def _reference_with_grad(logp, old, adv, mask, **kw):
    logp = logp.detach().clone().requires_grad_()
    loss, silenced = reference_loss(logp, old, adv, mask, **kw)
    loss.backward()
    return float(loss.detach()), logp.grad, silenced


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("clip_high", [None, CLIP_HIGH])
@pytest.mark.parametrize("mask_truncated", [False, True])
@pytest.mark.parametrize("micro_batch_size", [8, 3])  # 3 splits groups of 4 and leaves a short last micro-batch
def test_policy_loss_matches_the_per_token_loop(loss_type, level, clip_high, mask_truncated, micro_batch_size):
    logp, old, adv, mask, truncated, ref = _off_policy_batch()
    max_new_tokens = 9
    got, got_grad = _run_policy_loss(
        logp, old, adv, mask, micro_batch_size=micro_batch_size, max_new_tokens=max_new_tokens, truncated=truncated,
        ref=ref, clip=CLIP, clip_high=clip_high, loss_type=loss_type, importance_sampling_level=level,
        mask_truncated_completions=mask_truncated, kl_coef=0.05)
    expected, expected_grad, silenced = _reference_with_grad(
        logp, old, adv, mask, loss_type=loss_type, clip_high=clip_high, level=level, truncated=truncated,
        mask_truncated=mask_truncated, ref=ref, kl_coef=0.05, micro_batch_size=micro_batch_size,
        max_new_tokens=max_new_tokens)
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-14)
    torch.testing.assert_close(got_grad, expected_grad, rtol=1e-12, atol=1e-14)
    # the batch exercises both clip bounds, so a wrong bound could not pass unnoticed
    assert {side for _, _, side in silenced} == {"low", "high"}


@pytest.mark.parametrize("level", ["token", "sequence"])
def test_clip_higher_and_sequence_ratios_change_the_objective_off_policy(level):
    """The options are live: each changes loss and gradient on the batch above (else the loop test proves little)."""
    logp, old, adv, mask, truncated, ref = _off_policy_batch()
    kw = dict(micro_batch_size=8, max_new_tokens=6, truncated=truncated, ref=ref, clip=CLIP, loss_type="grpo")
    symmetric = _run_policy_loss(logp, old, adv, mask, importance_sampling_level=level, **kw)
    higher = _run_policy_loss(logp, old, adv, mask, importance_sampling_level=level, clip_high=CLIP_HIGH, **kw)
    assert abs(symmetric[0] - higher[0]) > 1e-3
    other = "token" if level == "sequence" else "sequence"
    assert abs(symmetric[0] - _run_policy_loss(logp, old, adv, mask, importance_sampling_level=other, **kw)[0]) > 1e-3
    masked = _run_policy_loss(logp, old, adv, mask, importance_sampling_level=level,
                              mask_truncated_completions=True, **kw)
    assert torch.all(masked[1][truncated] == 0) and torch.any(symmetric[1][truncated] != 0)


# --------------------------------------------------------------------------- closed forms


def test_clip_higher_closed_form_on_one_token():
    """ratio 1.25, A = +1: the symmetric clip (0.2) holds it at 1.2 with no gradient; clip-higher (0.28) lets it through."""
    old = torch.zeros(1, 1, dtype=torch.float64)
    mask = torch.ones(1, 1)
    d = LossDenominators(1, 1, 1)
    for clip_high, value, grad in [(None, -1.2, 0.0), (0.28, -1.25, -1.25)]:
        logp = torch.tensor([[math.log(1.25)]], dtype=torch.float64, requires_grad=True)
        loss, stats = policy_loss(logp, old, torch.tensor([1.0]), mask, clip=0.2, clip_high=clip_high, denominators=d)
        loss.backward()
        assert float(loss.detach()) == pytest.approx(value, rel=1e-12)
        assert float(logp.grad) == pytest.approx(grad, rel=1e-12, abs=0)
        assert stats["clipped_tokens"] == stats["clipped_high_tokens"] == (1.0 if clip_high is None else 0.0)
        assert stats["clipped_low_tokens"] == 0.0
    # the low bound stays at 1 - clip whatever clip_high is: ratio 0.75, A = -1 is held at 0.8
    logp = torch.tensor([[math.log(0.75)]], dtype=torch.float64, requires_grad=True)
    loss, stats = policy_loss(logp, old, torch.tensor([-1.0]), mask, clip=0.2, clip_high=0.28, denominators=d)
    loss.backward()
    assert float(loss.detach()) == pytest.approx(0.8) and float(logp.grad) == 0.0 and stats["clipped_tokens"] == 1.0
    assert (stats["clipped_low_tokens"], stats["clipped_high_tokens"]) == (1.0, 0.0)


def test_sequence_ratio_is_the_exp_of_the_mean_log_ratio():
    """GSPO on one sequence of 3 counted tokens (and one padding token that must not count)."""
    log_ratio = [0.05, -0.02, 0.12, 5.0]
    old = torch.zeros(1, 4, dtype=torch.float64)
    logp = torch.tensor([log_ratio], dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 0]])
    s = math.exp(sum(log_ratio[:3]) / 3)
    loss, _ = policy_loss(logp, old, torch.tensor([2.0]), mask, clip=0.2, importance_sampling_level="sequence",
                          denominators=LossDenominators(1, 3, 4))
    loss.backward()
    assert float(loss.detach()) == pytest.approx(-2.0 * s, rel=1e-12)
    # d(-A s)/d logp_t = -A s / |o| on each counted token, 0 on padding
    torch.testing.assert_close(logp.grad, torch.tensor([[-2.0 * s / 3] * 3 + [0.0]], dtype=torch.float64))


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "token_mean", "bnpo"])
def test_on_policy_token_and_sequence_levels_give_the_same_gradient(loss_type):
    torch.manual_seed(3)
    mask = (torch.rand(5, 7) > 0.3).long()
    mask[:, 0] = 1
    adv = torch.randn(5, dtype=torch.float64)
    grads = []
    for level in ("token", "sequence"):
        logp = torch.randn(5, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(4)).requires_grad_()
        loss, _ = policy_loss(logp, logp.detach(), adv, mask, clip=0.2, loss_type=loss_type,
                              importance_sampling_level=level, denominators=LossDenominators.of_batch(
                                  mask, max_new_tokens=7))
        loss.backward()
        grads.append(logp.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-12, atol=1e-15)


def test_truncated_completions_leave_the_loss_and_the_denominators():
    """adv -1 at ratio 1 gives each counted token a loss of exactly 1; the second completion is truncated."""
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    truncated = torch.tensor([False, True])
    logp = torch.zeros(2, 3)
    adv = torch.tensor([-1.0, -1.0])
    d = LossDenominators.of_batch(mask, truncated, max_new_tokens=10, mask_truncated_completions=True)
    assert (d.n_sequences, d.n_tokens, d.max_new_tokens, d.n_micro_batches) == (2, 3, 10, 1)
    expected = {"grpo": (1 + 0) / 2, "dr_grpo": 3 / (2 * 10), "token_mean": 3 / 3, "bnpo": 3 / 3}
    for loss_type, value in expected.items():
        loss, stats = policy_loss(logp, logp, adv, mask, clip=0.2, denominators=d, loss_type=loss_type,
                                  truncated=truncated, mask_truncated_completions=True)
        assert float(loss) == pytest.approx(value), loss_type
        assert stats["tokens"] == 3.0
    # off, the same call counts all 4 tokens
    d_all = LossDenominators.of_batch(mask, truncated, max_new_tokens=10)
    loss, stats = policy_loss(logp, logp, adv, mask, clip=0.2, denominators=d_all, loss_type="token_mean",
                              truncated=truncated)
    assert float(loss) == pytest.approx(1.0) and stats["tokens"] == 4.0 and d_all.n_tokens == 4


def test_a_batch_of_only_truncated_completions_gives_a_zero_loss_and_gradient():
    mask = torch.ones(3, 4, dtype=torch.long)
    truncated = torch.ones(3, dtype=torch.bool)
    for loss_type in LOSS_TYPES:
        for level in ("token", "sequence"):
            logp = torch.randn(3, 4, requires_grad=True)
            d = LossDenominators.of_batch(mask, truncated, max_new_tokens=4, mask_truncated_completions=True)
            loss, stats = policy_loss(logp, logp.detach() + 0.3, torch.tensor([1.0, -1.0, 2.0]), mask, clip=0.2,
                                      denominators=d, loss_type=loss_type, importance_sampling_level=level,
                                      truncated=truncated, mask_truncated_completions=True,
                                      ref_logp=logp.detach() - 0.2, kl_coef=0.1)
            loss.backward()
            assert float(loss.detach()) == 0.0 and torch.all(logp.grad == 0) and stats["kl"] == 0.0


def test_bnpo_averages_micro_batch_token_means_and_dapo_is_token_mean():
    mask = torch.tensor([[1, 1, 1], [1, 0, 0], [1, 1, 0]])
    logp = torch.zeros(3, 3)
    adv = torch.tensor([-1.0, -3.0, -2.0])  # each counted token's loss is -A at ratio 1
    d = LossDenominators.of_batch(mask, max_new_tokens=3, micro_batch_size=2)
    assert d.n_micro_batches == 2
    bnpo = sum(float(policy_loss(logp[p], logp[p], adv[p], mask[p], clip=0.2, denominators=d,
                                 loss_type="bnpo")[0]) for p in (slice(0, 2), slice(2, 3)))
    assert bnpo == pytest.approx(((3 * 1 + 1 * 3) / 4 + (2 * 2) / 2) / 2)
    token_mean = float(policy_loss(logp, logp, adv, mask, clip=0.2, denominators=d, loss_type="token_mean")[0])
    assert token_mean == pytest.approx((3 + 3 + 4) / 6)
    dapo = float(policy_loss(logp, logp, adv, mask, clip=0.2, denominators=d, loss_type="dapo")[0])
    assert dapo == token_mean
    # with the whole batch in one micro-batch bnpo is token_mean
    one = LossDenominators.of_batch(mask, max_new_tokens=3)
    assert float(policy_loss(logp, logp, adv, mask, clip=0.2, denominators=one, loss_type="bnpo")[0]) == \
        pytest.approx(token_mean)


# --------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("kwargs, error, fragment", [
    ({"loss_type": "bnp"}, ValueError, "unknown loss_type 'bnp'; use one of grpo, dr_grpo, token_mean, bnpo, dapo"),
    ({"importance_sampling_level": "seq"}, ValueError, "use one of token, sequence"),
    ({"clip_high": 0.0}, ValueError, "clip_high must be a finite number > 0"),
    ({"clip_high": float("nan")}, ValueError, "clip_high must be a finite number > 0"),
    ({"mask_truncated_completions": True}, ValueError, "needs the truncated flags"),
    ({"mask_truncated_completions": True, "truncated": torch.zeros(3, dtype=torch.bool)}, ValueError,
     "truncated has shape (3,) but there are 2 completions"),
])
def test_policy_loss_refuses_bad_options(kwargs, error, fragment):
    logp = torch.zeros(2, 3)
    with pytest.raises(error) as info:
        policy_loss(logp, logp, torch.ones(2), torch.ones(2, 3), clip=0.2, denominators=LossDenominators(2, 6, 3),
                    **kwargs)
    assert fragment in str(info.value)


@pytest.mark.parametrize("kwargs, error, fragment", [
    ({"epsilon_high": 0.0}, ValueError, "epsilon_high must be > 0, got 0.0"),
    ({"epsilon_high": -0.1}, ValueError, "leave it None for a symmetric clip"),
    ({"epsilon_high": "high"}, TypeError, "epsilon_high must be a number"),
    ({"epsilon_high": float("inf")}, ValueError, "epsilon_high must be a finite number"),
    ({"importance_sampling_level": "sequense"}, ValueError, "did you mean 'sequence'"),
    ({"importance_sampling_level": 1}, TypeError, "importance_sampling_level must be a string"),
    ({"mask_truncated_completions": "yes"}, TypeError, "mask_truncated_completions must be True or False"),
    ({"loss_type": "dapoo"}, ValueError, "did you mean 'dapo'"),
])
def test_config_refuses_bad_loss_options(kwargs, error, fragment):
    with pytest.raises(error) as info:
        GRPOConfig(**kwargs)
    assert fragment in str(info.value)


def test_config_accepts_the_options_and_stores_dapo_as_token_mean():
    cfg = GRPOConfig(epsilon_high="0.28", importance_sampling_level="sequence", mask_truncated_completions=True,
                     loss_type="dapo")
    assert (cfg.epsilon_high, cfg.importance_sampling_level, cfg.mask_truncated_completions, cfg.loss_type) == \
        (0.28, "sequence", True, "token_mean")
    assert GRPOConfig(loss_type="bnpo").loss_type == "bnpo"
    assert GRPOConfig().epsilon_high is None and GRPOConfig().importance_sampling_level == "token"
    options = objective_options(cfg)
    assert options == {"clip": 0.2, "clip_high": 0.28, "loss_type": "token_mean", "importance_sampling_level":
                       "sequence", "mask_truncated_completions": True, "kl_coef": cfg.kl_coef}
    # a dict round trip (what checkpoints and --config files use) keeps them
    assert GRPOConfig.from_dict(cfg.to_dict()) == cfg


def test_loss_mask_does_not_modify_its_inputs():
    mask = torch.ones(2, 3, dtype=torch.long)
    truncated = torch.tensor([True, False])
    out = loss_mask(mask, truncated, mask_truncated_completions=True)
    assert out.tolist() == [[0, 0, 0], [1, 1, 1]] and mask.sum() == 6 and truncated.tolist() == [True, False]
    assert loss_mask(mask, None) is mask


# --------------------------------------------------------------------------- CLI and resume


def test_cli_flags_parse_and_reach_the_config(capsys):
    code = main(["train", "--epsilon-high", "0.28", "--importance-sampling-level", "sequence",
                 "--mask-truncated-completions", "--loss-type", "dapo", "--print-config"])
    assert code == 0
    config = json.loads(capsys.readouterr().out)
    assert (config["epsilon_high"], config["importance_sampling_level"], config["mask_truncated_completions"],
            config["loss_type"]) == (0.28, "sequence", True, "token_mean")
    code = main(["train", "--no-mask-truncated-completions", "--loss-type", "bnpo", "--print-config"])
    config = json.loads(capsys.readouterr().out)
    assert code == 0 and config["mask_truncated_completions"] is False and config["epsilon_high"] is None
    assert config["loss_type"] == "bnpo"


def test_cli_help_documents_every_loss_option(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for fragment in ("--epsilon-high", "clip-higher", "--importance-sampling-level", "GSPO",
                     "--mask-truncated-completions", "--no-mask-truncated-completions", "overlong filtering",
                     "bnpo", "its dapo = our token_mean"):
        assert fragment in text, fragment


@pytest.mark.parametrize("argv, fragment", [
    (["--importance-sampling-level", "seq"], "importance_sampling_level='seq'"),
    (["--epsilon-high", "-1"], "epsilon_high must be > 0"),
    (["--epsilon-high", "abc"], "epsilon_high must be a number"),
    (["--loss-type", "bnp"], "did you mean 'bnpo'"),
])
def test_cli_bad_loss_options_exit_2_with_one_line(argv, fragment, capsys):
    try:
        code = main(["train", *argv, "--print-config"])
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("field, value", [("epsilon_high", 0.28), ("importance_sampling_level", "sequence"),
                                          ("mask_truncated_completions", True), ("loss_type", "bnpo")])
def test_resume_refuses_a_changed_loss_option(field, value):
    saved = json.loads(json.dumps(GRPOConfig().to_dict()))
    refused, applied = _config_changes(saved, GRPOConfig(**{field: value}))
    assert [line.split(":")[0] for line in refused] == [field] and not applied


def test_resume_refuses_a_new_micro_batch_size_only_under_bnpo():
    for loss_type, refused_expected in [("bnpo", True), ("token_mean", False), ("grpo", False)]:
        saved = json.loads(json.dumps(GRPOConfig(loss_type=loss_type, micro_batch_size=4).to_dict()))
        refused, applied = _config_changes(saved, GRPOConfig(loss_type=loss_type, micro_batch_size=2))
        assert bool(refused) == refused_expected and ("micro_batch_size" in applied) != refused_expected
    # dapo and token_mean are one objective: switching between the names is no change
    saved = json.loads(json.dumps(GRPOConfig(loss_type="token_mean").to_dict()))
    assert _config_changes(saved, GRPOConfig(loss_type="dapo")) == ([], {})


def test_reference_loop_agrees_with_numpy_on_a_plain_case():
    """Sanity of the reference itself: on-policy grpo without KL is -mean_i A_i (each sequence's tokens average)."""
    logp, _, adv, mask, _, _ = _off_policy_batch()
    value, _ = reference_loss(logp, logp, adv, mask)
    assert float(value) == pytest.approx(-float(np.mean(adv.numpy())), rel=1e-12)


# --------------------------------------------------------------------------- the trainer passes them through


def _eos_bias_model(tokenizer, bias):
    """The tiny model with ``bias`` added to the EOS logit in every forward pass (sampling and loss passes alike)."""
    from tiny_lm import make_model

    model = make_model(tokenizer)
    eos = tokenizer.eos_token_id

    def add_bias(module, args, output):
        logits = output.logits.clone()
        logits[..., eos] += bias
        output.logits = logits
        return output

    model.register_forward_hook(add_bias)
    return model


class _InputSpy:
    """Wraps ``losses.policy_loss`` and keeps every call's inputs, options and loss."""

    def __init__(self, monkeypatch):
        from multireward_grpo.train import losses

        self.calls, self._real = [], losses.policy_loss
        monkeypatch.setattr(losses, "policy_loss", self)

    def __call__(self, logp, old_logp, advantages, mask, **kwargs):
        loss, stats = self._real(logp, old_logp, advantages, mask, **kwargs)
        self.calls.append({"logp": logp.detach().double(), "old": old_logp.detach().double(),
                           "adv": advantages.detach().double(), "mask": mask, "kwargs": kwargs,
                           "loss": float(loss.detach())})
        return loss, stats


@pytest.fixture(scope="module")
def tokenizer():
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    from tiny_lm import make_tokenizer

    return make_tokenizer()


@pytest.mark.parametrize("options", [
    dict(loss_type="bnpo", importance_sampling_level="sequence", epsilon_high=0.28, mask_truncated_completions=True),
    dict(loss_type="dapo", importance_sampling_level="token", epsilon_high=0.3, mask_truncated_completions=True),
    dict(loss_type="grpo", importance_sampling_level="sequence", mask_truncated_completions=False),
])
def test_trainer_step_loss_is_the_loop_reference_of_its_batch(tmp_path, tokenizer, monkeypatch, options):
    """Two updates per batch (the second off-policy), micro-batches of 3 splitting groups of 4, some completions cut."""
    from multireward_grpo import GRPOTrainer
    from trainer_helpers import PROMPTS, e_reward, tiny_config

    spy = _InputSpy(monkeypatch)
    config = tiny_config(tmp_path / "run", num_iterations=2, n_steps=1, kl_coef=0.05, lr=5e-2, ppo_clip=0.05,
                         max_new_tokens=5, **options)
    # EOS bias 4.5: with the trainer's per-row seeded sampling, 6 of the 8 completions are cut and 2 end
    trainer = GRPOTrainer(config, e_reward, PROMPTS, model=_eos_bias_model(tokenizer, 4.5), tokenizer=tokenizer)
    record = trainer.train_step()
    per_iteration = len(spy.calls) // 2
    assert per_iteration == math.ceil(8 / 3)
    flags = torch.cat([c["kwargs"]["truncated"] for c in spy.calls[:per_iteration]])
    assert 0 < int(flags.sum()) < 8, "the EOS bias should leave some completions cut and some ended"
    assert 0 < record["truncated_frac"] < 1
    for iteration in range(2):
        calls = spy.calls[iteration * per_iteration:(iteration + 1) * per_iteration]
        assert all(c["kwargs"][k] == v for c in calls for k, v in objective_options(config).items())
        batch = {key: torch.cat([c[key] for c in calls]) for key in ("logp", "old", "adv", "mask")}
        ref = torch.cat([c["kwargs"]["ref_logp"] for c in calls]).double()
        expected, silenced = reference_loss(
            batch["logp"], batch["old"], batch["adv"], batch["mask"], loss_type=config.loss_type, clip=config.ppo_clip,
            clip_high=config.epsilon_high, level=config.importance_sampling_level, truncated=flags,
            mask_truncated=config.mask_truncated_completions, ref=ref, kl_coef=config.kl_coef, micro_batch_size=3,
            max_new_tokens=config.max_new_tokens)
        assert sum(c["loss"] for c in calls) == pytest.approx(float(expected), rel=1e-5, abs=1e-7)
        if iteration == 1:
            assert silenced, "the second update should clip something (ppo_clip 0.05 after a large step)"
    kept = ~flags if config.mask_truncated_completions else torch.ones_like(flags)
    n_kept_tokens = int((batch["mask"] * kept[:, None]).sum())
    assert all(c["kwargs"]["denominators"] == LossDenominators(8, n_kept_tokens, 5, 3) for c in calls)


def test_masking_a_batch_of_only_truncated_completions_leaves_the_weights(tmp_path, tokenizer):
    """EOS can never be sampled: every completion is cut, so with masking the loss and gradient are exactly 0."""
    from multireward_grpo import GRPOTrainer
    from trainer_helpers import PROMPTS, e_reward, tiny_config

    config = tiny_config(tmp_path / "run", n_steps=1, kl_coef=0.05, mask_truncated_completions=True,
                         loss_type="token_mean")
    trainer = GRPOTrainer(config, e_reward, PROMPTS, model=_eos_bias_model(tokenizer, -1e4), tokenizer=tokenizer)
    before = {k: v.detach().clone() for k, v in trainer.model.named_parameters() if "lora_" in k}
    record = trainer.train_step()
    assert record["truncated_frac"] == 1.0
    assert record["loss"] == 0.0 and record["kl"] == 0.0 and record["grad_norm"] == 0.0
    after = dict(trainer.model.named_parameters())
    assert all(torch.equal(before[k], after[k]) for k in before)
