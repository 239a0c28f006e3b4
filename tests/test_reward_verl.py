"""verl 0.9.1 really calls rewards/gsm8k.py, the way main_ppo wires it.

The trainer builds a `RewardLoopManager` from the composed `ppo_trainer` config; it starts
`RewardLoopWorker` Ray actors that load the function named by `reward.custom_reward_function`
and score one finished sample at a time. Here that runs for real on a local CPU Ray cluster.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

REWARD_FILE = Path(__file__).resolve().parent.parent / "rewards" / "gsm8k.py"
PROMPT_LEN, RESPONSE_LEN = 8, 768

# response, ground truth, what rewards/gsm8k.py (strict) scores, what verl's built-in scorer would score
SAMPLES = [
    ("48+24 = 72 clips.\n#### 72", "72", 1.0, 1.0),  # plain: both agree
    ("So the total is\n#### $1,234.00", "1234", 1.0, 0.0),  # dollar + decimals: built-in misses it
    ("#### 72\n" + "Let me double check that. " * 30, "72", 1.0, 0.0),  # marker > 300 chars from the end
    ("#### 12,500", "12500", 1.0, 1.0),  # separators
    ("I think it is 72.", "72", 0.0, 0.0),  # no marker
]


def _compose(tiny_model_dir: Path, *overrides: str):
    import verl
    from hydra import compose, initialize_config_dir

    config_dir = os.path.join(os.path.dirname(verl.__file__), "trainer", "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        return compose(
            "ppo_trainer",
            overrides=[f"actor_rollout_ref.model.path={tiny_model_dir}", "reward.num_workers=1", *overrides],
        )


def _batch(tokenizer, samples):
    from verl import DataProto

    n = len(samples)
    prompts = torch.full((n, PROMPT_LEN), tokenizer.pad_token_id)
    responses = torch.full((n, RESPONSE_LEN), tokenizer.pad_token_id)
    mask = torch.zeros(n, PROMPT_LEN + RESPONSE_LEN, dtype=torch.long)
    mask[:, :PROMPT_LEN] = 1
    lengths = []
    for i, (text, *_) in enumerate(samples):
        ids = tokenizer(text)["input_ids"]
        assert len(ids) <= RESPONSE_LEN
        responses[i, : len(ids)] = torch.tensor(ids)
        mask[i, PROMPT_LEN : PROMPT_LEN + len(ids)] = 1
        lengths.append(len(ids))
    data = DataProto.from_dict(
        tensors={
            "prompts": prompts,
            "responses": responses,
            "attention_mask": mask,
            "input_ids": torch.cat([prompts, responses], dim=1),
        },
        non_tensors={
            "data_source": np.array(["openai/gsm8k"] * n, dtype=object),
            "reward_model": np.array([{"style": "rule", "ground_truth": s[1]} for s in samples], dtype=object),
            "extra_info": np.array([{"index": i} for i in range(n)], dtype=object),
        },
    )
    return data, lengths


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, namespace="test-reward-verl")
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_verl_reward_loop_calls_this_repo_reward(ray_cluster, tiny_model_dir):
    from transformers import AutoTokenizer
    from verl.experimental.reward_loop import RewardLoopManager

    config = _compose(
        tiny_model_dir,
        f"reward.custom_reward_function.path={REWARD_FILE}",
        "reward.custom_reward_function.name=compute_score",
        "+reward.custom_reward_function.reward_kwargs.mode=strict",
    )
    manager = RewardLoopManager(config)
    try:
        data, lengths = _batch(AutoTokenizer.from_pretrained(tiny_model_dir), SAMPLES)
        out = manager.compute_rm_score(data)
    finally:
        for worker in manager.reward_loop_workers:
            ray_cluster.kill(worker)

    expected = torch.tensor([s[2] for s in SAMPLES])
    builtin = torch.tensor([s[3] for s in SAMPLES])
    rm_scores = out.batch["rm_scores"]
    # Our scorer, not verl's built-in one: the two differ on exactly the cases listed above.
    assert torch.equal(rm_scores.sum(dim=1), expected)
    assert not torch.equal(expected, builtin)
    # The extra keys verl logs come from our dict (the built-in scorer returns a bare float: no `pred`).
    assert out.meta_info["reward_extra_keys"] == ["score", "acc", "pred"]
    assert list(out.non_tensor_batch["pred"]) == ["72", "1234", "72", "12500", ""]
    # The whole reward sits on the last valid response token.
    for i, length in enumerate(lengths):
        assert rm_scores[i, length - 1] == expected[i]
        assert torch.count_nonzero(rm_scores[i]) == (1 if expected[i] else 0)


def test_reward_kwargs_reach_the_function(tiny_model_dir):
    """`+reward.custom_reward_function.reward_kwargs.*` is how the mode is chosen (same worker code, no Ray)."""
    from transformers import AutoTokenizer
    from verl.experimental.reward_loop.reward_loop import RewardLoopWorker

    config = _compose(
        tiny_model_dir,
        f"reward.custom_reward_function.path={REWARD_FILE}",
        "reward.custom_reward_function.name=compute_score",
        "+reward.custom_reward_function.reward_kwargs.mode=flexible",
        "+reward.custom_reward_function.reward_kwargs.format_score=0.1",
    )
    worker = RewardLoopWorker(config)
    samples = [("The answer is 72.", "72"), ("The answer is 71.", "72")]
    data, _ = _batch(AutoTokenizer.from_pretrained(tiny_model_dir), samples)
    results = worker.loop.run_until_complete(worker.compute_score_batch(data))
    assert [r["reward_score"] for r in results] == [1.0, 0.1]
    assert [r["reward_extra_info"]["pred"] for r in results] == ["72", "71"]


@pytest.mark.parametrize(("name", "scores"), [("gsm8k_strict", [0.0, 0.0]), ("gsm8k_flexible", [1.0, 0.0])])
def test_reward_chosen_by_name_is_what_verls_worker_calls(name, scores, tmp_path, tiny_model_dir, gsm8k_data_dir):
    """`REWARD=<name> bash scripts/run_grpo.sh`: the config the launcher composes makes verl's worker score by it."""
    from transformers import AutoTokenizer
    from verl.experimental.reward_loop.reward_loop import RewardLoopWorker

    from scripts.rl import launch as rl_launch

    env = {
        "MODEL_PATH": str(tiny_model_dir),
        "DATA_DIR": str(gsm8k_data_dir),
        "CHECKPOINT_DIR": str(tmp_path),
        "RAY_TMPDIR": str(tmp_path / "no-ray"),
        "N_GPUS": "1",
        "REWARD": name,
    }
    _, config, problems = rl_launch.build(rl_launch.Settings.from_env("grpo", env), [])
    assert not problems and config.reward.custom_reward_function.path == str(REWARD_FILE)
    worker = RewardLoopWorker(config)
    samples = [("The answer is 72.", "72"), ("The answer is 71.", "72")]  # no `####`: only flexible reads it
    data, _ = _batch(AutoTokenizer.from_pretrained(tiny_model_dir), samples)
    results = worker.loop.run_until_complete(worker.compute_score_batch(data))
    assert [r["reward_score"] for r in results] == scores


def test_legacy_top_level_key_is_silently_ignored_by_verl(tiny_model_dir):
    """Why docs/rewards.md and the dry run insist on `reward.custom_reward_function`: verl 0.9.1 takes the old
    top-level `custom_reward_function` key without complaint and scores with its built-in scorer."""
    from transformers import AutoTokenizer
    from verl.experimental.reward_loop.reward_loop import RewardLoopWorker

    config = _compose(
        tiny_model_dir,
        f"custom_reward_function.path={REWARD_FILE}",
        "custom_reward_function.name=compute_score",
    )
    worker = RewardLoopWorker(config)
    data, _ = _batch(AutoTokenizer.from_pretrained(tiny_model_dir), SAMPLES[:2])
    results = worker.loop.run_until_complete(worker.compute_score_batch(data))
    assert [r["reward_score"] for r in results] == [1.0, 0.0]  # built-in strict scorer misses "$1,234.00"
    assert "pred" not in results[0]["reward_extra_info"]
