"""100,000 fuzzed rollouts through the reward verl calls: no exception, the same keys, a consistent verdict.

The inputs mix what models really emit (reasoning, `####`, `\\boxed{}`, "The answer is", tags, money, commas,
signs, decimals) with what they emit when they break (cut-off markers, unbalanced braces, control characters,
lone surrogates, runs of digits and separators), plus byte-level mutations of correct answers. Seeded: a failure
prints the input and reproduces.
"""

from __future__ import annotations

import random

import pytest

from rewards.gsm8k import canonical_number, compute_score

N = 100_000
SEED = 20261130

FRAGMENTS = [
    "#### ",
    "####",
    "# ",
    "\\boxed{",
    "}",
    "{",
    "$",
    "\\(",
    "\\)",
    "**",
    "__",
    "*",
    "The answer is ",
    "Answer: ",
    "final answer",
    "<answer>",
    "</answer>",
    "<reasoning>",
    "</reasoning>",
    ", ",
    ".",
    "-",
    "+",
    "\u2212",
    "%",
    " apples",
    "\n",
    "\t",
    " ",
    "=",
    "x",
    "/",
    "1,000",
    "12,500.00",
    "0.5",
    ".25",
    "007",
    "\x00",
    "\ud800",
    "\uffff",
    "\u00a0",
    "\u0661\u0662",
    "e10",
    "1e5",
    "NaN",
    "inf",
    "-0",
    "1,2,3",
    "48/2 = 24",
    "She has ",
    "so ",
    "approximately ",
    "about ",
]
TRUTHS = ["72", "12500", "-5", "0.5", "0", "1008", "3", "18"]
KEYS = {"score", "acc", "pred"}


def _number(rng: random.Random) -> str:
    return (
        rng.choice(["", "-", "+", "$", "-$"])
        + str(rng.randint(0, 10 ** rng.randint(1, 8)))
        + rng.choice(["", ".0", ".5", ",000", "%", ".", "!"])
    )


def _response(rng: random.Random, truth: str) -> str:
    kind = rng.random()
    if kind < 0.6:  # a grammar of fragments and numbers
        parts = [rng.choice(FRAGMENTS) if rng.random() < 0.7 else _number(rng) for _ in range(rng.randint(0, 40))]
        return "".join(parts)
    if kind < 0.9:  # a correct answer with bytes flipped, dropped or duplicated
        text = list(f"Some reasoning, 6 x 12 = 72.\n#### {truth}")
        for _ in range(rng.randint(1, 6)):
            i = rng.randrange(len(text))
            op = rng.random()
            if op < 0.4:
                text[i] = chr(rng.randint(0, 0x2FFF))
            elif op < 0.7:
                del text[i]
                if not text:
                    break
            else:
                text.insert(i, text[i] * rng.randint(1, 50))
        return "".join(text)
    return "".join(chr(rng.randint(0, 0x10FFFF)) for _ in range(rng.randint(0, 200)))  # any code points


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["strict", "flexible"])
def test_100k_fuzzed_rollouts_never_raise_and_score_consistently(mode):
    rng = random.Random(f"{SEED}-{mode}")
    correct = 0
    for i in range(N):
        truth = rng.choice(TRUTHS)
        response = _response(rng, truth)
        try:
            result = compute_score("openai/gsm8k", response, truth, mode=mode)
        except Exception as exc:  # noqa: BLE001 - the point of the test
            pytest.fail(f"input {i} raised {exc!r}: {response[:300]!r} (truth {truth})")
        assert set(result) == KEYS, (i, response[:300])
        assert result["score"] in (0.0, 1.0) and result["acc"] == result["score"], (i, response[:300], result)
        # A full mark means the extracted answer really is the ground truth, numerically.
        expected = 1.0 if result["pred"] and canonical_number(result["pred"]) == canonical_number(truth) else 0.0
        assert result["acc"] == expected, (i, response[:300], truth, result)
        correct += int(result["acc"])
    # The mutated correct answers keep a share of full marks: the fuzz is not all noise.
    assert correct > N * 0.05, correct
