"""verl integration: our estimators called through verl 0.9.1's own compute_advantage.

References: our ``compute_advantage_flat`` on the same rewards, written on the
response tokens (float32 tolerance, since verl's tensors are float32), and
verl's own ``gdpo`` / ``grpo`` estimators run on the same batch.

verl needs the ``verl`` extra plus ``pip install --no-deps verl==0.9.1
transferqueue==0.1.11`` (``.ci/run`` installs them). Without it these tests
skip, except under CI (``CI`` set), where a missing verl fails them.
"""

from __future__ import annotations

import importlib
import os
import shlex
import subprocess
import sys
import uuid
from types import SimpleNamespace

import numpy as np
import pytest

from multireward_grpo import (
    compute_advantage_flat,
    register_estimator,
    unregister_estimator,
)
from multireward_grpo.advantage import get_estimator
from multireward_grpo.integrations import verl as mr_verl

ATOL = 2e-5  # float32 advantages of size ~3, computed by verl in float32 and by us in float64
KEYS = ("format", "accuracy", "style")
T = 12  # response tokens
PROMPT = 3  # prompt tokens


def _need(module: str):
    if os.environ.get("CI"):
        return importlib.import_module(module)
    return pytest.importorskip(module, reason='needs verl: pip install "multireward-grpo[verl]" && pip install --no-deps verl==0.9.1 transferqueue==0.1.11')


@pytest.fixture(scope="module")
def verl():
    ray_trainer = _need("verl.trainer.ppo.ray_trainer")
    names = mr_verl.register()
    assert names == {"mr_na": "na", "mr_an": "an", "mr_single": "single", "mr_gdpo": "gdpo"}
    return SimpleNamespace(
        ray_trainer=ray_trainer,
        core_algos=importlib.import_module("verl.trainer.ppo.core_algos"),
        DataProto=importlib.import_module("verl").DataProto,
        OmegaConf=importlib.import_module("omegaconf").OmegaConf,
        torch=importlib.import_module("torch"),
    )


@pytest.fixture
def patched(verl):
    with mr_verl.patch_compute_advantage() as handle:
        yield handle


# --------------------------------------------------------------------------- data


def make_rollouts(seed=0, sizes=(4, 3, 5, 2, 6), shuffle=True, uid_kind="str"):
    """Ragged groups in shuffled order: rewards (N, 3), uids (N,), response lengths (N,)."""
    rng = np.random.default_rng(seed)
    group = np.repeat(np.arange(len(sizes)), sizes)
    if shuffle:
        group = group[rng.permutation(group.size)]
    n = group.size
    rewards = np.column_stack([
        rng.integers(0, 2, n).astype(float),  # a 0/1 gate
        rng.normal(size=n),
        rng.integers(0, 4, n).astype(float),
    ])
    uid_of = {"str": lambda g: f"prompt-{g}", "int": int, "uuid": lambda g: uuid.UUID(int=g + 1)}[uid_kind]
    uids = np.array([uid_of(g) for g in group], dtype=object)
    lengths = rng.integers(1, T + 1, n)
    return rewards, uids, lengths


def make_data(verl, rewards, uids, lengths, keys=KEYS):
    """A DataProto laid out as verl's trainer leaves it before compute_advantage."""
    torch = verl.torch
    n = len(uids)
    response_mask = (torch.arange(T)[None, :] < torch.as_tensor(lengths)[:, None]).long()
    token_level_rewards = torch.zeros(n, T)
    finite_first = np.nan_to_num(np.asarray(list(np.asarray(rewards)[:, 0]), dtype=float))
    token_level_rewards[torch.arange(n), torch.as_tensor(lengths) - 1] = torch.as_tensor(finite_first, dtype=torch.float32)
    tensors = {
        "token_level_rewards": token_level_rewards,
        "response_mask": response_mask,
        "prompts": torch.ones(n, PROMPT, dtype=torch.long),
        "attention_mask": torch.cat([torch.ones(n, PROMPT, dtype=torch.long), response_mask], dim=1),
    }
    columns = np.asarray(rewards, dtype=object)
    non_tensors = {"uid": uids, **{key: np.array(list(columns[:, i])) for i, key in enumerate(keys)}}
    return verl.DataProto.from_dict(tensors=tensors, non_tensors=non_tensors)


def algo_config(verl, keys=KEYS, verl_weights=None, norm=True, **options):
    """verl's algorithm config (a DictConfig, as the trainer passes it); ``options`` go to algorithm.multireward."""
    config = {"norm_adv_by_std_in_grpo": norm, "gdpo_reward_keys": list(keys), "gdpo_reward_weights": verl_weights}
    if options:
        config["multireward"] = options
    return verl.OmegaConf.create(config)


def through_verl(verl, data, name, config):
    """verl's own code path: ray_trainer.compute_advantage picks the estimator by name."""
    out = verl.ray_trainer.compute_advantage(data, adv_estimator=name, config=config)
    advantages, returns = out.batch["advantages"], out.batch["returns"]
    assert advantages.dtype == verl.torch.float32 and tuple(advantages.shape) == (len(data), T)
    assert verl.torch.equal(advantages, returns) or verl.torch.allclose(advantages, returns, equal_nan=True)
    return advantages.numpy()


def on_tokens(per_rollout, lengths):
    mask = np.arange(T)[None, :] < np.asarray(lengths)[:, None]
    return np.where(mask, per_rollout[:, None], 0.0)


def assert_close(actual, expected):
    np.testing.assert_allclose(actual, expected, rtol=0, atol=ATOL, equal_nan=True)
    assert np.array_equal(np.isnan(actual), np.isnan(expected))


# --------------------------------------------------------------------------- equality with ours


CASES = {
    "na": ("na", {}, {}),
    "an": ("an", {}, {}),
    "single": ("single", {}, {}),
    "gdpo": ("gdpo", {}, {}),
    "na weights ddof1 eps": ("na", {"weights": [0.5, 1.0, 2.0]}, {"ddof": 1, "eps": 1e-6}),
    "an verl weights": ("an", {"gdpo_weights": [1.0, 0.25, 3.0]}, {}),
    "na no std": ("na", {"norm": False}, {}),
    "zero_fill by name": ("na", {}, {"conditioning": [{"gate": "format", "target": "accuracy"}]}),
    "zero_fill gamma": ("an", {}, {"conditioning": [{"gate": 0, "target": 2, "gamma": 0.25}]}),
    "subgroup": ("na", {}, {"conditioning": [{"gate": "format", "target": "style", "method": "subgroup"}]}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_through_compute_advantage_equals_ours(verl, patched, case):
    mode, extra, options = CASES[case]
    rewards, uids, lengths = make_rollouts(seed=len(case))
    weights = extra.get("weights")
    config = algo_config(verl, verl_weights=extra.get("gdpo_weights"), norm=extra.get("norm", True),
                         **({"weights": weights} if weights else {}), **options)
    actual = through_verl(verl, make_data(verl, rewards, uids, lengths), f"mr_{mode}", config)

    ours_options = {key: value for key, value in options.items() if key != "conditioning"}
    conditioning = options.get("conditioning")
    if conditioning:  # key names as channel indices
        conditioning = [{k: (KEYS.index(v) if k in ("gate", "target") and isinstance(v, str) else v) for k, v in rule.items()}
                        for rule in conditioning]
    w = weights or extra.get("gdpo_weights")
    expected = compute_advantage_flat(rewards, list(uids), w, mode, conditioning=conditioning,
                                      scale_by_std=extra.get("norm", True), **ours_options)
    assert_close(actual, on_tokens(expected, lengths))
    assert np.abs(actual).max() > 0.1  # a real signal, not an all-zero batch


@pytest.mark.parametrize("mode", ["na", "an", "gdpo"])
def test_nan_under_omit_and_propagate(verl, patched, mode):
    rewards, uids, lengths = make_rollouts(seed=3)
    rewards = rewards.astype(object)
    rewards[1, 1] = None  # a reward function that returned None
    rewards[7, 2] = float("nan")
    as_float = np.array(rewards, dtype=float)
    for policy in ("omit", "propagate"):
        config = algo_config(verl, nan_policy=policy)
        actual = through_verl(verl, make_data(verl, rewards, uids, lengths), f"mr_{mode}", config)
        expected = compute_advantage_flat(as_float, list(uids), None, mode, nan_policy=policy)
        assert_close(actual, on_tokens(expected, lengths))
        assert np.isnan(actual).any() == (policy == "propagate")


def test_missing_reward_under_raise_names_key_and_rollout(verl, patched):
    rewards, uids, lengths = make_rollouts(seed=4)
    rewards = rewards.astype(object)
    rewards[5, 1] = None
    with pytest.raises(ValueError, match=r"non_tensor_batch\['accuracy'\] is missing .* rollout 5.*nan_policy=omit"):
        through_verl(verl, make_data(verl, rewards, uids, lengths), "mr_na", algo_config(verl))


@pytest.mark.parametrize("uid_kind", ["str", "int", "uuid"])
def test_uid_kinds_group_alike(verl, patched, uid_kind):
    rewards, uids, lengths = make_rollouts(seed=5, uid_kind=uid_kind)
    _, str_uids, _ = make_rollouts(seed=5, uid_kind="str")
    actual = through_verl(verl, make_data(verl, rewards, uids, lengths), "mr_na", algo_config(verl))
    expected = compute_advantage_flat(rewards, list(str_uids), None, "na")
    assert_close(actual, on_tokens(expected, lengths))


def test_direct_call_without_the_hook(verl):
    """verl's registry hands out our function; called with non_tensor_batch it needs no patch."""
    rewards, uids, lengths = make_rollouts(seed=6)
    data = make_data(verl, rewards, uids, lengths)
    fn = verl.core_algos.get_adv_estimator_fn("mr_an")
    advantages, returns = fn(token_level_rewards=data.batch["token_level_rewards"], response_mask=data.batch["response_mask"],
                             index=uids, config=algo_config(verl), non_tensor_batch=data.non_tensor_batch)
    assert advantages is returns
    assert_close(advantages.numpy(), on_tokens(compute_advantage_flat(rewards, list(uids), None, "an"), lengths))


# --------------------------------------------------------------------------- verl's own estimators as references


def test_mr_gdpo_with_verls_conventions_equals_verls_gdpo(verl, patched):
    # Groups of 2+ rollouts, unequal response lengths (token-weighted whitening matters), one group with
    # a constant channel (0/1 values, exact in float32, so verl's mean is exact too).
    rewards, uids, lengths = make_rollouts(seed=7, sizes=(4, 3, 5, 2, 6, 4))
    rewards[uids == "prompt-2", 0] = 1.0
    weights = [1.0, 0.5, 2.0]
    verl_config = algo_config(verl, verl_weights=weights)
    reference = through_verl(verl, make_data(verl, rewards, uids, lengths), "gdpo", verl_config)
    ours_config = algo_config(verl, verl_weights=weights, ddof=1, eps=1e-6, whiten="tokens")
    actual = through_verl(verl, make_data(verl, rewards, uids, lengths), "mr_gdpo", ours_config)
    assert_close(actual, reference)
    # Our default whitens rollouts, not tokens: with unequal lengths the two differ.
    default = through_verl(verl, make_data(verl, rewards, uids, lengths), "mr_gdpo", algo_config(verl, verl_weights=weights, ddof=1, eps=1e-6))
    assert np.abs(default - reference).max() > 1e-3


@pytest.mark.parametrize("policy", ["omit", "propagate"])
def test_token_whitening_against_a_loop(verl, patched, policy):
    """whiten='tokens': each response token counts once (Bessel over tokens, rsqrt(var + 1e-8)); NaN rollouts stay out."""
    rewards, uids, lengths = make_rollouts(seed=15)
    rewards[4, 0] = np.nan
    config = algo_config(verl, nan_policy=policy, whiten="tokens")
    actual = through_verl(verl, make_data(verl, rewards, uids, lengths), "mr_gdpo", config)
    na = compute_advantage_flat(rewards, list(uids), None, "na", nan_policy=policy)
    kept = [i for i in range(len(na)) if np.isfinite(na[i])]
    n_tokens = sum(lengths[i] for i in kept)
    mean = sum(lengths[i] * na[i] for i in kept) / n_tokens
    var = sum(lengths[i] * (na[i] - mean) ** 2 for i in kept) / (n_tokens - 1)
    expected = np.array([(a - mean) / np.sqrt(var + 1e-8) for a in na])
    assert_close(actual, on_tokens(expected, lengths))
    assert np.isnan(actual[4, : lengths[4]]).all() == (policy == "propagate")
    assert not np.isnan(actual[4, lengths[4]:]).any()  # padding stays 0


def test_mr_an_on_one_key_with_verls_conventions_equals_verls_grpo(verl, patched):
    rewards, uids, lengths = make_rollouts(seed=8)
    data = make_data(verl, rewards, uids, lengths)  # token_level_rewards holds channel 0 on the last token
    reference = verl.ray_trainer.compute_advantage(data, adv_estimator="grpo", config=algo_config(verl)).batch["advantages"].numpy()
    config = algo_config(verl, keys=("format",), ddof=1, eps=1e-6)
    actual = through_verl(verl, make_data(verl, rewards, uids, lengths), "mr_an", config)
    assert_close(actual, reference)


# --------------------------------------------------------------------------- registry and hook


def test_register_is_idempotent(verl):
    before = {name: verl.core_algos.get_adv_estimator_fn(name) for name in ("mr_na", "mr_an", "mr_single", "mr_gdpo")}
    assert mr_verl.register(["na", "gdpo"]) == {"mr_na": "na", "mr_gdpo": "gdpo"}
    assert mr_verl.register() == {name: name[3:] for name in before}
    for name, fn in before.items():
        assert verl.core_algos.get_adv_estimator_fn(name) is fn
        assert fn.__name__ == f"multireward_{name[3:]}_advantage"


def test_register_refuses_a_name_taken_by_another_function(verl):
    register_estimator("verltest_clash", get_estimator("na"))
    verl.core_algos.register_adv_est("mr_verltest_clash")(lambda **kwargs: None)
    try:
        with pytest.raises(ValueError, match="'mr_verltest_clash' that is not ours"):
            mr_verl.register(["verltest_clash"])
    finally:
        del verl.core_algos.ADV_ESTIMATOR_REGISTRY["mr_verltest_clash"]
        unregister_estimator("verltest_clash")


def test_register_errors(verl):
    with pytest.raises(ValueError, match="unknown mode 'gdp'.*did you mean 'gdpo'"):
        mr_verl.register(["gdp"])
    with pytest.raises(TypeError, match="list of estimator names"):
        mr_verl.register("na")


def test_a_user_estimator_runs_through_verl(verl, patched):
    def doubled_na(rewards, w, *, mask, options):
        return 2.0 * get_estimator("na")(rewards, w, mask=mask, options=options)

    register_estimator("verltest_double", doubled_na)
    try:
        assert mr_verl.register(["verltest_double"]) == {"mr_verltest_double": "verltest_double"}
        rewards, uids, lengths = make_rollouts(seed=9)
        actual = through_verl(verl, make_data(verl, rewards, uids, lengths), "mr_verltest_double", algo_config(verl))
        expected = 2.0 * compute_advantage_flat(rewards, list(uids), None, "na")
        assert_close(actual, on_tokens(expected, lengths))
    finally:
        del verl.core_algos.ADV_ESTIMATOR_REGISTRY["mr_verltest_double"]
        unregister_estimator("verltest_double")


def test_hook_nests_and_is_undone(verl):
    v1_utils = _need("verl.trainer.ppo.v1.utils")
    original = verl.ray_trainer.compute_advantage
    assert v1_utils.compute_advantage is original
    rewards, uids, lengths = make_rollouts(seed=10)
    config = algo_config(verl)

    outer = mr_verl.patch_compute_advantage()
    wrapper = verl.ray_trainer.compute_advantage
    assert wrapper is not original and wrapper.__wrapped__ is original
    assert v1_utils.compute_advantage is wrapper  # imported by name: rebound too
    with mr_verl.patch_compute_advantage():
        assert verl.ray_trainer.compute_advantage is wrapper  # nested: the same wrapper
    assert verl.ray_trainer.compute_advantage is wrapper  # the outer patch still holds
    through_verl(verl, make_data(verl, rewards, uids, lengths), "mr_na", config)
    outer.undo()
    outer.undo()  # idempotent: does not drop someone else's patch
    assert verl.ray_trainer.compute_advantage is original
    assert v1_utils.compute_advantage is original
    with pytest.raises(ValueError, match="passes only to 'gdpo'.*patch_compute_advantage"):
        through_verl(verl, make_data(verl, rewards, uids, lengths), "mr_na", config)
    # verl's own estimators are untouched by the patch being on or off.
    plain = through_verl(verl, make_data(verl, rewards, uids, lengths), "grpo_vectorized", config)
    with mr_verl.patch_compute_advantage():
        assert_close(through_verl(verl, make_data(verl, rewards, uids, lengths), "grpo_vectorized", config), plain)


def test_v1_trainer_path(verl, patched):
    """The v1 trainer's multi-trajectory helper hands non-GRPO estimators to compute_advantage."""
    v1_utils = _need("verl.trainer.ppo.v1.utils")
    rewards, uids, lengths = make_rollouts(seed=11)
    data = make_data(verl, rewards, uids, lengths)
    keys = [f"{uid}_0_{i}" for i, uid in enumerate(uids)]
    out = v1_utils.compute_advantage_for_multi_trajectories(data, batch_keys=keys, adv_estimator="mr_na", config=algo_config(verl))
    expected = compute_advantage_flat(rewards, list(uids), None, "na")
    assert_close(out.batch["advantages"].numpy(), on_tokens(expected, lengths))


def _recipe_overrides() -> list[str]:
    """The Hydra overrides of the recipe in the module docstring (which the README quotes)."""
    doc = mr_verl.__doc__
    start = doc.index("python -m verl.trainer.main_ppo")
    command = doc[start:doc.index("...", start)].replace("\\\n", " ")
    return shlex.split(command)[3:]


def test_recipe_composes_with_verls_config_and_runs(verl, patched):
    """The documented overrides against verl's own Hydra config, then the composed algorithm config in use."""
    hydra = _need("hydra")
    overrides = _recipe_overrides()
    assert "algorithm.adv_estimator=mr_na" in overrides and len(overrides) == 7
    overrides.append("+ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES=multireward_grpo.integrations.verl_plugin")
    config_dir = os.path.join(os.path.dirname(importlib.import_module("verl").__file__), "trainer", "config")
    with hydra.initialize_config_dir(config_dir=config_dir, version_base=None):
        config = hydra.compose(config_name="ppo_trainer", overrides=overrides)
    algorithm = config.algorithm
    assert config.trainer.use_v1 is False and config.reward.reward_manager.name == "gdpo"

    rewards, uids, lengths = make_rollouts(seed=16)
    rewards = rewards[:, :2].astype(object)
    rewards[2, 1] = None  # nan_policy=omit in the recipe
    data = make_data(verl, rewards, uids, lengths, keys=("format", "accuracy"))
    actual = through_verl(verl, data, algorithm.adv_estimator, algorithm)
    expected = compute_advantage_flat(np.array(rewards, dtype=float), list(uids), [0.5, 1.0], "na",
                                      conditioning=[(0, 1)], nan_policy="omit")
    assert_close(actual, on_tokens(expected, lengths))


# --------------------------------------------------------------------------- errors that name what is wrong


@pytest.mark.parametrize(
    ("options", "error", "pattern"),
    [
        ({"keys": ("format", "accuracy", "fluency")}, ValueError, r"names \['fluency'\] but non_tensor_batch has no such"),
        ({"keys": []}, ValueError, r"set algorithm.gdpo_reward_keys"),
        ({"keys": "format"}, TypeError, r"must be a list of names.*=\[format\]"),
        ({"weights": [1.0, 2.0]}, ValueError, r"has 3 components .*gdpo_reward_weights has 2 values"),
        ({"weights": [1.0, -1.0, 1.0]}, ValueError, r"gdpo_reward_weights\[1\] must be >= 0"),
        ({"nan_polcy": "omit"}, ValueError, r"unknown option algorithm.multireward.nan_polcy \(did you mean 'nan_policy'"),
        ({"whiten": "token"}, ValueError, r"unknown algorithm.multireward.whiten 'token' \(did you mean 'tokens'"),
        ({"conditioning": [{"gate": "fromat", "target": "accuracy"}]}, ValueError, r"names 'fromat'.*did you mean 'format'"),
        ({"ddof": -1}, ValueError, r"algorithm.multireward.ddof must be >= 0"),
        ({"scale_by_std": "yes"}, TypeError, r"scale_by_std must be true or false"),
    ],
)
def test_config_errors(verl, patched, options, error, pattern):
    options = dict(options)
    keys = options.pop("keys", KEYS)
    weights = options.pop("weights", None)
    rewards, uids, lengths = make_rollouts(seed=12)
    config = verl.OmegaConf.create({"gdpo_reward_keys": keys, "gdpo_reward_weights": weights, "multireward": options or None})
    with pytest.raises(error, match=pattern):
        through_verl(verl, make_data(verl, rewards, uids, lengths), "mr_na", config)


def test_weights_given_twice_must_agree(verl, patched):
    rewards, uids, lengths = make_rollouts(seed=13)
    config = algo_config(verl, verl_weights=[1.0, 1.0, 1.0], weights=[1.0, 2.0, 1.0])
    with pytest.raises(ValueError, match="disagree; give one of them"):
        through_verl(verl, make_data(verl, rewards, uids, lengths), "mr_na", config)
    same = algo_config(verl, verl_weights=[1.0, 2.0, 1.0], weights=[1.0, 2.0, 1.0])
    through_verl(verl, make_data(verl, rewards, uids, lengths), "mr_na", same)


def test_bad_group_ids_and_components(verl, patched):
    rewards, uids, lengths = make_rollouts(seed=14)
    mixed = uids.copy()
    mixed[0] = 7
    with pytest.raises(TypeError, match=r"mixes id types \['int', 'str'\]"):
        through_verl(verl, make_data(verl, rewards, mixed, lengths), "mr_na", algo_config(verl))
    missing_uid = uids.copy()
    missing_uid[2] = None
    with pytest.raises(TypeError, match=r"\['uid'\]\)\[2\] is NoneType"):
        through_verl(verl, make_data(verl, rewards, missing_uid, lengths), "mr_na", algo_config(verl))
    words = rewards.astype(object)
    words[3, 2] = "high"
    with pytest.raises(TypeError, match=r"non_tensor_batch\['style'\] must hold numbers.*'high'"):
        through_verl(verl, make_data(verl, words, uids, lengths), "mr_na", algo_config(verl))
    with pytest.raises(ValueError, match="need verl's algorithm config"):
        verl.core_algos.get_adv_estimator_fn("mr_na")(
            token_level_rewards=verl.torch.zeros(len(uids), T), response_mask=verl.torch.ones(len(uids), T), index=uids
        )


# --------------------------------------------------------------------------- import contract (no verl needed)


def _run(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, env={**os.environ, **env}, timeout=300)


def test_import_does_not_load_verl_or_torch():
    out = _run("import sys, multireward_grpo.integrations.verl; print([m for m in ('verl', 'torch', 'ray') if m in sys.modules])")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_missing_verl_names_the_install():
    code = (
        "import sys; sys.modules['verl'] = None\n"  # as if verl were not installed
        "from multireward_grpo.integrations import verl\n"
        "for call in (verl.register, verl.patch_compute_advantage):\n"
        "    try:\n"
        "        call()\n"
        "    except ImportError as exc:\n"
        "        print(exc)\n"
    )
    out = _run(code)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 2
    assert all("pip install --no-deps verl==0.9.1" in line and "multireward-grpo[verl]" in line for line in lines)


def test_plugin_loads_in_every_verl_process(verl):
    """VERL_USE_EXTERNAL_MODULES makes verl itself import the plugin, which registers and patches."""
    code = (
        "import verl\n"
        "from verl.trainer.ppo import core_algos, ray_trainer\n"
        "print(sorted(n for n in core_algos.ADV_ESTIMATOR_REGISTRY if n.startswith('mr_')))\n"
        "print(ray_trainer.compute_advantage.__wrapped__.__module__)\n"
    )
    out = _run(code, VERL_USE_EXTERNAL_MODULES="multireward_grpo.integrations.verl_plugin", PYTHONWARNINGS="ignore")
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[:2] == ["['mr_an', 'mr_gdpo', 'mr_na', 'mr_single']", "verl.trainer.ppo.ray_trainer"]
