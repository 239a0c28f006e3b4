"""Benchmark: rewards/gsm8k.py against verl's built-in GSM8K scorer, side by side in one run.

Prints, for the same realistic responses: scores per second of each scorer and their ratio, how
often each agrees with the known label (is this response's final answer right?), and the worst-case
latency of ours on adversarial inputs. Run: `make bench` or `python -m scripts.bench.reward`.

The responses are built from tests/fixtures/gsm8k_sample.jsonl in the shapes a policy produces
during GSM8K RL: the reference format, `$`/separators/units/decimals after `####`, long text after
the marker, the answer twice, a courteous ending or a re-check after it, no marker at all, wrong answers,
and the hedges a policy learns when a reward pays for them (two answers, `a or b`, a list, a box against
the marker, a bound, a correction to another number).
The adversarial inputs include those hedges at megabyte scale.
"""

from __future__ import annotations

import argparse
import json
import random
import time

from rewards.gsm8k import canonical_number, compute_score
from scripts.lib.tiny_model import FIXTURE

TAIL = " I double-checked each step of the computation above and I am confident it is right."


def realistic_responses(seed: int = 0) -> list[tuple[str, str, bool]]:
    """(response, ground truth, is the response's final answer right?) in rollout-like shapes."""
    rng = random.Random(seed)
    rows = [json.loads(line) for line in FIXTURE.read_text().splitlines() if line.strip()]
    out = []
    for row in rows:
        reasoning, _, final = row["answer"].rpartition("####")
        truth = canonical_number(final)
        n = float(truth)
        wrong = truth.replace("1", "7") if "1" in truth else str(int(n) + 1)
        shapes = [
            (f"{reasoning}#### {truth}", True),  # reference format
            (f"{reasoning}#### {int(n):,}" if n == int(n) else f"{reasoning}#### {truth}", True),  # separators
            (f"{reasoning}#### ${truth}", True),  # dollar sign
            (f"{reasoning}#### {truth}.00" if n == int(n) else f"{reasoning}#### {truth}", True),  # decimals
            (f"{reasoning}####{truth}", True),  # no space
            (f"{reasoning}#### {truth} units", True),  # trailing unit
            (f"{reasoning}#### {truth}\n" + TAIL * rng.randint(4, 12), True),  # keeps writing after the marker
            (f"{reasoning}#### {truth}\n#### {truth}", True),  # the answer twice
            (f"{reasoning}#### {truth}\nI checked: {reasoning}", True),  # numbers after the answer, no retraction
            (f"{reasoning}#### **{truth}**", True),  # markdown emphasis
            (f"{reasoning}#### The final answer is {truth}", True),  # lead-in phrase
            (f"{reasoning}#### {truth}\n\nI hope this helps! Let me know if you need more help.", True),  # courtesy
            (f"{reasoning}#### {truth}\n\nWait, let me double check: {reasoning}Yes.", True),  # a re-check after it
            (f"{reasoning}#### {wrong}", False),  # wrong answer
            (f"{reasoning}The answer is {truth}.", False),  # right number, no marker: strict says 0
            (f"{reasoning}#### {truth}\nActually, it is\n#### {wrong}", False),  # final answer is wrong
            (f"{reasoning}#### {wrong}\nWait, let me recompute.\n{reasoning}#### {truth}", False),  # two answers
            (f"{reasoning}#### {truth} or {wrong}", False),  # a hedge
            (f"{reasoning}#### {wrong}, {truth}", False),  # a list
            (f"{reasoning}\\boxed{{{wrong}}}\n#### {truth}", False),  # box and marker disagree
            (f"{reasoning}#### >= {truth}", False),  # a bound
            (f"{reasoning}#### {truth}\nWait, it is {wrong}.", False),  # retracted
        ]
        out += [(text, truth, label) for text, label in shapes]
    rng.shuffle(out)
    return out


def adversarial() -> dict[str, str]:
    return {
        "1 MB of prose, answer at the start": "#### 72\n" + TAIL * 12_000,
        "10^6 digits": "7" * 1_000_000,
        "10^6 digits after ####": "#### " + "9" * 1_000_000,
        "10^5 ####": "####" * 100_000,
        "10^5 nested \\boxed{": "\\boxed{" * 100_000,
        "10^5 braces": "{" * 100_000 + "}" * 100_000,
        "10^5 'answer is'": "answer is " * 100_000,
        "1 MB of '1,'": "1," * 500_000,
        "10^5 '#### **' decorations": "#### " + "**" * 100_000,
        "10^5 markers, one per candidate": "".join(f"#### {n}\n" for n in range(100_000)),
        "10^5 boxes against ####": "\\boxed{18} " * 100_000 + "#### 19",
        "10^5 'The answer is 18.' + ####": "The answer is 18. " * 100_000 + "#### 18",
        "1 MB of 'or 19' after ####": "#### 18 " + "or 19 " * 170_000,
        "1 MB of '1 000' groups": "#### " + "1 000 " * 170_000,
        "1 MB of calculation": "#### " + "1 + " * 250_000 + "1 = 250001",
        "1 MB of numbers after ####": "#### 18\n" + "19 20 " * 170_000,
        "1 MB of hedge words after ####": "#### 18\n" + "Wait, maybe I am not sure. " * 40_000,
        "1 MB of 'Actually, ' then 19": "#### 18\n" + "Actually, " * 100_000 + "19",
        "1 MB of unicode digits": "#### " + "\u0661\uff18 " * 330_000,
    }


def _throughput(fn, items, repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        for text, truth, _ in items:
            fn(text, truth)
    return repeats * len(items) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50, help="passes over the response set per round")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds; the best counts")
    args = parser.parse_args(argv)

    from verl.utils.reward_score import gsm8k as verl_gsm8k

    items = realistic_responses()

    def ours(text, truth):
        return compute_score("openai/gsm8k", text, truth)["score"]

    def verls(text, truth):
        return float(verl_gsm8k.compute_score(text, truth))

    print(f"{len(items)} responses from {FIXTURE.name}, strict mode, same process,", end=" ")
    print(f"best of {args.rounds} interleaved rounds x {args.repeats} passes\n")
    print(f"{'scorer':<34}{'scores/s':>12}{'agrees with label':>20}")
    scorers = {"rewards/gsm8k.py compute_score": ours, "verl.utils.reward_score.gsm8k": verls}
    # Interleave rounds and keep each scorer's best, so a busy machine penalises both alike.
    rates = dict.fromkeys(scorers, 0.0)
    for _ in range(args.rounds):
        for name, fn in scorers.items():
            rates[name] = max(rates[name], _throughput(fn, items, args.repeats))
    for name, fn in scorers.items():
        right = sum((fn(text, truth) == 1.0) == label for text, truth, label in items)
        print(f"{name:<34}{rates[name]:>12,.0f}{right:>11}/{len(items)} ({right / len(items):.1%})")
    ours_rate, verl_rate = rates.values()
    print(f"\nthroughput ratio (ours / verl): {ours_rate / verl_rate:.2f}x\n")

    print(f"{'adversarial input (ours, both modes)':<40}{'worst ms':>10}")
    worst = 0.0
    for name, text in adversarial().items():
        times = []
        for mode in ("strict", "flexible"):
            for _ in range(5):
                start = time.perf_counter()
                compute_score("openai/gsm8k", text, "72", mode=mode)
                times.append(time.perf_counter() - start)
        worst = max(worst, max(times))
        print(f"{name:<40}{max(times) * 1e3:>10.2f}")
    print(f"{'worst case':<40}{worst * 1e3:>10.2f}")


if __name__ == "__main__":
    main()
