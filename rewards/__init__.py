"""Reward functions for GSM8K post-training, and the registry that names them.

Each reward is one pure function with verl's custom-reward signature
`fn(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -> dict`, defined in a
self-contained file under rewards/ (verl imports that file by path inside its Ray workers). A registry
entry is such a function or a `functools.partial` of one: `REWARD=<name> bash scripts/run_rl.sh <algo>`
hands verl its file, function name and keyword arguments (`reward.custom_reward_function.path`,
`.name`, `.reward_kwargs`); Python callers call it directly.

The registry's names are the only names: evaluation (scripts/eval/evaluation.py) scores every generation
with every registered reward, and the report, the report card and the SFT notebook's plots show one column
per name. A new reward is one function (returning verl's `score` and a 0/1 `acc`, which evaluation counts;
`pred`, the answer it read, is kept with each sample when present) plus one line here.

    >>> from rewards import get_reward
    >>> get_reward("gsm8k_flexible")(None, "The answer is 18.", "18")["acc"]
    1.0
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from rewards import gsm8k

RewardFn = Callable[..., dict[str, Any]]

REWARDS: dict[str, RewardFn] = {
    "gsm8k_strict": partial(gsm8k.compute_score, mode="strict"),  # the RL default: the `####` format SFT teaches
    "gsm8k_flexible": partial(gsm8k.compute_score, mode="flexible"),
}


def get_reward(name: str) -> RewardFn:
    """The reward registered as `name`; an unknown name raises KeyError listing the known ones."""
    try:
        return REWARDS[name]
    except KeyError:
        raise KeyError(f"unknown reward {name!r}; known rewards: {', '.join(sorted(REWARDS))}") from None
