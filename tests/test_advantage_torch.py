"""numpy and torch give the same advantages; torch stays torch, on its device."""

from __future__ import annotations

import numpy as np
import pytest

import multireward_grpo as mg

torch = pytest.importorskip("torch")

MODES = ("na", "an", "single", "gdpo")
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _rewards(seed=0, shape=(6, 5, 3)):
    rng = np.random.default_rng(seed)
    rewards = rng.normal(size=shape)
    rewards[..., 0] = rng.integers(0, 2, size=shape[:-1])
    rewards[1, :, 2] = 0.7  # a zero-variance channel
    return rewards


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("conditioning", [None, (0, 1), (0, 2, "subgroup")])
def test_batch_numpy_torch_agree(device, mode, conditioning):
    rewards = _rewards()
    w = [1.0, 0.5, 2.0]
    want = mg.compute_advantage_batch(rewards, w, mode, conditioning=conditioning)
    tensor = torch.tensor(rewards, dtype=torch.float64, device=device)
    got = mg.compute_advantage_batch(tensor, w, mode, conditioning=conditioning)
    assert isinstance(got, torch.Tensor) and got.device == tensor.device and got.dtype == torch.float64
    np.testing.assert_allclose(got.cpu().numpy(), want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
def test_float32_and_bfloat16_keep_their_dtype(device):
    rewards = torch.tensor(_rewards(1), device=device)
    for dtype, tol in [(torch.float32, 1e-5), (torch.bfloat16, 5e-2)]:
        got = mg.compute_advantage_batch(rewards.to(dtype), torch.tensor([1.0, 1.0, 0.5]), "na")
        assert got.dtype == dtype and got.device == rewards.device
        want = mg.compute_advantage_batch(rewards.to(dtype).double().cpu().numpy(), [1.0, 1.0, 0.5], "na")
        np.testing.assert_allclose(got.double().cpu().numpy(), want, atol=tol * 10)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("policy", ["omit", "propagate"])
def test_nan_policies_agree(device, policy):
    rewards = _rewards(2)
    rewards[3, 2, 1] = np.nan
    for mode in MODES:
        want = mg.compute_advantage_batch(rewards, None, mode, nan_policy=policy)
        got = mg.compute_advantage_batch(torch.tensor(rewards, device=device), None, mode, nan_policy=policy)
        np.testing.assert_allclose(got.cpu().numpy(), want, atol=1e-12, equal_nan=True)


@pytest.mark.parametrize("device", DEVICES)
def test_flat_ragged_torch_ids_and_string_ids(device):
    rng = np.random.default_rng(3)
    rewards = rng.normal(size=(11, 2))
    ids = np.array([4, 1, 4, 2, 1, 4, 2, 9, 1, 4, 2])
    want = mg.compute_advantage_flat(rewards, ids, None, "an")
    tensor = torch.tensor(rewards, device=device)
    got = mg.compute_advantage_flat(tensor, torch.tensor(ids, device=device), None, "an")
    assert got.device == tensor.device
    np.testing.assert_allclose(got.cpu().numpy(), want, atol=1e-12)
    labels = [f"u{i}" for i in ids]
    np.testing.assert_allclose(mg.compute_advantage_flat(tensor, labels, None, "an").cpu().numpy(), want, atol=1e-12)


def test_torch_inputs_not_modified_and_no_grad_leak():
    rewards = torch.tensor(_rewards(4), requires_grad=True)
    before = rewards.detach().clone()
    out = mg.compute_advantage_batch(rewards, None, "na", conditioning=(0, 1))
    assert not out.requires_grad  # advantages are constants of the policy-gradient loss
    assert torch.equal(rewards.detach(), before)


def test_torch_bad_input_errors():
    with pytest.raises(ValueError, match="rewards has 3 channels but weights has 2"):
        mg.compute_advantage_batch(torch.ones(2, 3, 3), [1.0, 1.0])
    bad = torch.zeros(2, 3, 2)
    bad[1, 0, 1] = float("nan")
    with pytest.raises(ValueError, match="group 1, rollout 0, channel 1"):
        mg.compute_advantage_batch(bad)
    with pytest.raises(TypeError, match="complex"):
        mg.compute_advantage(torch.ones(3, 2, dtype=torch.complex64))
