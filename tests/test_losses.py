"""The GRPO objective: clipping, k3 KL, aggregation, micro-batch exactness."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from multireward_grpo.train.losses import LossDenominators, k3_kl, policy_loss  # noqa: E402


def _denoms(mask, max_new_tokens=None):
    return LossDenominators(mask.shape[0], int(mask.sum()), max_new_tokens or mask.shape[1])


def test_ratio_one_gives_plain_policy_gradient():
    torch.manual_seed(0)
    logp = torch.randn(3, 4, requires_grad=True)
    adv = torch.tensor([1.0, -2.0, 0.5])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]])
    loss, stats = policy_loss(logp, logp.detach(), adv, mask, clip=0.2, denominators=_denoms(mask))
    loss.backward()
    # grpo aggregation: d/dlogp_it = -A_i * mask_it / (|o_i| * N)
    lengths = mask.sum(1, keepdim=True).float()
    expected = -adv[:, None] * mask / (lengths * 3)
    torch.testing.assert_close(logp.grad, expected)
    assert stats["clipped_tokens"] == 0


def test_clipping_zeroes_gradient_outside_the_band():
    old = torch.zeros(1, 4)
    # ratios 1.5 (outside, A > 0: clipped), 0.5 (outside on the other side: not clipped for A > 0), 1.1, 1.0
    logp = torch.log(torch.tensor([[1.5, 0.5, 1.1, 1.0]])).requires_grad_()
    mask = torch.ones(1, 4)
    loss, stats = policy_loss(logp, old, torch.tensor([2.0]), mask, clip=0.2, denominators=_denoms(mask))
    loss.backward()
    grad = logp.grad[0]
    assert grad[0] == 0.0  # clipped token: no gradient
    assert grad[1] != 0 and grad[2] != 0 and grad[3] != 0
    assert stats["clipped_tokens"] == 1.0
    assert (stats["clipped_low_tokens"], stats["clipped_high_tokens"]) == (0.0, 1.0)  # above 1 + clip, A > 0
    # negative advantage: the low side is clipped instead
    logp2 = logp.detach().clone().requires_grad_()
    loss, stats = policy_loss(logp2, old, torch.tensor([-2.0]), mask, clip=0.2, denominators=_denoms(mask))
    loss.backward()
    assert logp2.grad[0, 1] == 0.0 and logp2.grad[0, 0] != 0.0
    assert stats["clipped_tokens"] == 1.0
    assert (stats["clipped_low_tokens"], stats["clipped_high_tokens"]) == (1.0, 0.0)  # below 1 - clip, A < 0


def test_k3_is_nonnegative_and_zero_at_reference():
    logp = torch.randn(5, 7)
    ref = logp + 0.3 * torch.randn(5, 7)
    assert torch.all(k3_kl(logp, ref) >= 0)
    assert torch.all(k3_kl(logp, logp) == 0)


def _expected_gradients(theta, ref_logits):
    """Exact expected gradients over a categorical policy (all tokens, weighted by pi)."""
    logp_all = torch.log_softmax(theta, -1)
    ref_all = torch.log_softmax(ref_logits, -1)
    probs = logp_all.exp().detach()
    k3_grad = torch.zeros_like(theta)
    naive_grad = torch.zeros_like(theta)
    for y in range(theta.shape[0]):
        logp = torch.log_softmax(theta, -1)[y]
        g_k3 = torch.autograd.grad(k3_kl(logp, ref_all[y]), theta, retain_graph=True)[0]
        g_naive = torch.autograd.grad(logp - ref_all[y], theta)[0]
        k3_grad += probs[y] * g_k3
        naive_grad += probs[y] * g_naive
    return k3_grad, naive_grad


def test_k3_gradient_pulls_toward_reference_and_the_naive_kl_does_not():
    torch.manual_seed(1)
    theta = torch.randn(6, requires_grad=True)
    ref_logits = torch.randn(6)
    k3_grad, naive_grad = _expected_gradients(theta, ref_logits)
    # The naive "KL" (mean of logp - logp_ref on the policy's own samples) has zero expected gradient.
    torch.testing.assert_close(naive_grad, torch.zeros(6), atol=1e-6, rtol=0)
    # k3 descends a true divergence: a small step along -grad lowers KL(pi || pi_ref).
    def true_kl(t):
        lp, lr = torch.log_softmax(t, -1), torch.log_softmax(ref_logits, -1)
        return float((lp.exp() * (lp - lr)).sum())

    before = true_kl(theta.detach())
    after = true_kl(theta.detach() - 0.1 * k3_grad)
    assert after < before
    # and the naive step leaves it where it was
    assert true_kl(theta.detach() - 0.1 * naive_grad) == pytest.approx(before, abs=1e-7)


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "token_mean"])
def test_micro_batches_add_up_to_the_full_batch(loss_type):
    torch.manual_seed(2)
    logp = torch.randn(6, 5, requires_grad=True)
    old = logp.detach() + 0.1 * torch.randn(6, 5)
    ref = logp.detach() + 0.2 * torch.randn(6, 5)
    adv = torch.randn(6)
    mask = (torch.rand(6, 5) > 0.3).long()
    mask[:, 0] = 1
    d = _denoms(mask, max_new_tokens=8)
    kw = dict(clip=0.2, denominators=d, loss_type=loss_type, kl_coef=0.1)
    full, _ = policy_loss(logp, old, adv, mask, ref_logp=ref, **kw)
    full.backward()
    full_grad = logp.grad.clone()
    logp.grad = None
    total = 0.0
    for part in (slice(0, 2), slice(2, 5), slice(5, 6)):
        loss, _ = policy_loss(logp[part], old[part], adv[part], mask[part], ref_logp=ref[part], **kw)
        loss.backward()
        total += float(loss.detach())
    assert total == pytest.approx(float(full.detach()), rel=1e-6)
    torch.testing.assert_close(logp.grad, full_grad)


def test_aggregations_closed_forms():
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    logp = torch.zeros(2, 3)
    # advantage -1 at ratio 1 makes every counted token's loss exactly 1
    d = LossDenominators(2, 4, 10)
    adv = torch.tensor([-1.0, -1.0])
    for loss_type, expected in [("grpo", (3 / 3 + 1 / 1) / 2), ("dr_grpo", 4 / (2 * 10)), ("token_mean", 4 / 4)]:
        loss, _ = policy_loss(logp, logp, adv, mask, clip=0.2, denominators=d, loss_type=loss_type)
        assert float(loss) == pytest.approx(expected)
    with pytest.raises(ValueError, match="kl_coef > 0 needs ref_logp"):
        policy_loss(logp, logp, adv, mask, clip=0.2, denominators=d, kl_coef=0.1)
