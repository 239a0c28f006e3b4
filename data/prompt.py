"""The one prompt template for GSM8K: SFT data, RL data and evaluation all import it from here.

The instruction is verl's own GSM8K recipe (examples/data_preprocess/gsm8k.py), the one behind
its published Qwen2.5-0.5B-Instruct baselines, so our numbers compare with theirs. It asks for the
final answer after `####`, which is what `rewards.gsm8k` in strict mode reads and what the SFT
targets end with.

    >>> user_message("Tom has 3 apples and eats one. How many are left?")["content"].endswith('after "####".')
    True
    >>> sft_completion("He has 3-1 = <<3-1=2>>2 left.\\n#### 2")
    'He has 3-1 = 2 left.\\n#### 2'
"""

from __future__ import annotations

import re

from rewards.gsm8k import canonical_number

# Bump when the wording changes: data manifests record it, so stale data is rebuilt, not reused.
PROMPT_VERSION = "gsm8k-v1"
INSTRUCTION = 'Let\'s think step by step and output the final answer after "####".'
DATA_SOURCE = "openai/gsm8k"

_CALCULATOR = re.compile(r"<<[^<>]*>>")


def prompt_text(question: str) -> str:
    """The user turn's text for one question."""
    return f"{question.strip()} {INSTRUCTION}"


def user_message(question: str) -> dict[str, str]:
    """The chat message a model is prompted with (training, rollout and evaluation alike)."""
    return {"role": "user", "content": prompt_text(question)}


def sft_completion(reference_answer: str) -> str:
    """The SFT target for a GSM8K reference solution: calculator annotations removed, ending in
    `#### N` with N canonical (no thousands separators), so it scores 1.0 in the strict reward."""
    reasoning, sep, final = reference_answer.rpartition("####")
    if not sep:
        raise ValueError("reference answer has no '####' line")
    number = canonical_number(final)
    if number is None:
        raise ValueError(f"final answer {final.strip()!r} is not a number")
    reasoning = _CALCULATOR.sub("", reasoning).rstrip()
    return f"{reasoning}\n#### {number}" if reasoning else f"#### {number}"
