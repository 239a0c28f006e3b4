"""Rule-based GSM8K rewards: the function verl calls for every rollout, and the one answer extractor.

verl loads this file by path (`reward.custom_reward_function.path=rewards/gsm8k.py`,
`.name=compute_score`), so it is self-contained: standard library only, no I/O, no randomness.

    >>> compute_score("openai/gsm8k", "48/2 = 24 in May, 48+24 = 72.\\n#### 72", "72")
    {'score': 1.0, 'acc': 1.0, 'pred': '72'}
    >>> compute_score("openai/gsm8k", "So she earned $12,500.00.", "12500")  # no `####`: strict says no
    {'score': 0.0, 'acc': 0.0, 'pred': ''}
    >>> compute_score("openai/gsm8k", "So she earned $12,500.00.", "12500", mode="flexible")
    {'score': 1.0, 'acc': 1.0, 'pred': '12500'}

Modes (kwarg `mode`: `REWARD=gsm8k_strict|gsm8k_flexible` for RL, see rewards/__init__.py):

- `strict`: the number after the LAST `####`. Accepts `#### $1,234.00.`, `####42`, `#### 007`,
  `#### 50%`, `#### 18 apples`, `#### -5`, `#### +5`, and the light decoration graders accept around
  the number: markdown emphasis (`#### **42**`, `*42*`, `__42__`), LaTeX (`#### $42$`, `\\(42\\)`,
  `\\boxed{42}`) and a short lead-in (`#### The final answer is 42`, `#### Answer: 42`). Anything else
  after the marker (`#### about 40`, `#### 6 x 7 = 42`, `#### The answer depends on 3`) still scores 0
  or reads the first number. Compares numerically. Finds the marker however much text follows it (verl's
  built-in scorer looks only at the last 300 characters).
- `flexible`: the answer the response commits to, in this order: the last `####` answer, the last
  `\\boxed{...}`, the last "answer is ..." / "Answer: ...", the last `<answer>...</answer>`, the last
  number in the text.

Every function here returns the same keys for every input and never raises on a bad response
(None, bytes, empty, megabytes, 10^6 digits, 10^5 markers, nested braces); each search runs from
the end of the text over a bounded window, so a 1 MB response costs about a millisecond.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

__all__ = ["MODES", "canonical_number", "compute_score", "extract_answer"]

MODES = ("strict", "flexible")
MARKER = "####"
# How far past a marker we look for its number; a longer number than this is rejected, not truncated.
_WINDOW = 64
# How many "answer" phrases flexible mode tries, from the last one back.
_MAX_PHRASES = 20

# A signed number with optional `$`, thousands separators and decimals, e.g. "-$1,234.50".
_NUMBER = re.compile(r"\s*(?P<sign>[-\u2212]?)[ \t]*\$?[ \t]*(?P<sign2>[-\u2212]?)(?P<num>\d[\d,]*(?:\.\d+)?|\.\d+)")
# What may sit between "answer" and its number: "answer is", "Answer:", "**Answer:** $", "answer = ".
_AFTER_PHRASE = re.compile(r"[ \t*:=]*(?:is|was|would be|will be|should be)?[ \t*:=]*(?:approximately|about)?[ \t]*")
# What strict mode skips between `####` and its number: emphasis, LaTeX openers, then at most one lead-in
# phrase ("The final answer is", "Answer:"), more decoration, and an explicit plus sign.
_DECORATION = r"(?:[\s*_$]|\\\(|\\\[|\\boxed\{|\\text\{|\{)*"
_LEAD_IN = r"(?:(?:the\s+)?(?:final\s+)?answer(?:\s+is)?\s*[:=]?" + _DECORATION + r")?"
_STRICT_LEAD = re.compile(_DECORATION + _LEAD_IN + r"(?:\+(?=[\d$]))?", re.IGNORECASE)
_CONTINUES = frozenset("0123456789,.")
_DIGITS = "0123456789"


def canonical_number(text: Any) -> str | None:
    """The canonical spelling of the number `text` starts with, or None.

    Canonical = what data prep writes as ground truth: digits, optional minus, no thousands
    separators, no trailing zeros after a decimal point.

    >>> [canonical_number(s) for s in ["12,500", "$-5", "42.00", "007", "0.50", "50%", "abc"]]
    ['12500', '-5', '42', '7', '0.5', '50', None]
    """
    if not isinstance(text, str):
        return None
    return _number_at(text.strip(), 0)


def _canonical(m: re.Match[str]) -> str | None:
    sign, sign2, digits = m.groups()
    if "," in digits:
        digits = digits.replace(",", "")
    if "." not in digits:  # the common case: an integer
        if digits[0] != "0":  # already canonical: no int() round trip
            return "-" + digits if sign or sign2 else digits
        value = int(digits)
        return str(-value) if sign or sign2 else str(value)
    try:
        decimal = Decimal(digits)
    except InvalidOperation:
        return None
    if sign or sign2:
        decimal = -decimal
    if decimal == decimal.to_integral_value():
        return str(int(decimal))
    return format(decimal.normalize(), "f")


def _number_at(text: str, start: int) -> str | None:
    """The number at text[start:], allowing leading whitespace and `$`; None if there is none."""
    end = start + _WINDOW
    m = _NUMBER.match(text, start, end)
    if m is None:
        return None
    # A match that fills the whole window may be the head of a longer number: reject, don't truncate.
    if m.end() == end and end < len(text) and text[end] in _CONTINUES:
        return None
    return _canonical(m)


def _first_number_in(snippet: str) -> str | None:
    """The first number inside a short snippet (a `\\boxed{}` or `<answer>` body)."""
    snippet = snippet.replace("{,}", ",").replace("\\$", "$").replace("\\!", "").replace("\\,", "")
    m = _NUMBER.search(snippet)
    if m is None:
        return None
    return _number_at(snippet, m.start())


def _strict(text: str) -> str | None:
    pos = text.rfind(MARKER)
    if pos < 0:
        return None
    start = pos + len(MARKER)
    number = _number_at(text, start)  # the common case: the number right after the marker
    if number is None:
        lead = _STRICT_LEAD.match(text, start, start + _WINDOW)
        if lead.end() > start:
            number = _number_at(text, lead.end())
    return number


def _boxed(text: str) -> str | None:
    pos = text.rfind("\\boxed{")
    if pos < 0:
        return None
    start = pos + len("\\boxed{")
    depth = 1
    for i in range(start, min(len(text), start + 4 * _WINDOW)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return _first_number_in(text[start:i])
    return None


def _answer_phrase(text: str) -> str | None:
    lowered = text.lower()
    end = len(lowered)
    for _ in range(_MAX_PHRASES):
        pos = lowered.rfind("answer", 0, end)
        if pos < 0:
            return None
        after = pos + len("answer")
        gap = _AFTER_PHRASE.match(lowered, after, after + _WINDOW)
        if gap is not None and gap.end() > after:
            number = _number_at(text, gap.end())
            if number is not None:
                return number
        end = pos
    return None


def _answer_tag(text: str) -> str | None:
    pos = text.rfind("<answer>")
    if pos < 0:
        return None
    start = pos + len("<answer>")
    close = text.find("</answer>", start, start + 4 * _WINDOW)
    body = text[start:close] if close >= 0 else text[start : start + _WINDOW]
    return _first_number_in(body)


def _last_number(text: str) -> str | None:
    last_digit = max(text.rfind(d) for d in _DIGITS)
    if last_digit < 0:
        return None
    start = last_digit
    floor = max(0, last_digit - _WINDOW)
    while start > floor and (text[start - 1] in _DIGITS or text[start - 1] in ",."):
        start -= 1
    if start == floor and floor > 0:
        return None  # a run of digits longer than any answer: adversarial, not an answer
    while start < last_digit and text[start] in ",.":  # "... total,1,234" starts at the digit
        start += 1
    if start > 0 and text[start - 1] in "-\u2212":
        start -= 1
    return _number_at(text, start)


_FLEXIBLE_ORDER = (_strict, _boxed, _answer_phrase, _answer_tag, _last_number)


def extract_answer(text: Any, mode: str = "strict") -> str | None:
    """The canonical final answer in a response (or a GSM8K reference solution), or None.

    >>> extract_answer("Natalia sold 48+24 = <<48+24=72>>72 clips.\\n#### 72")
    '72'
    >>> extract_answer("... so the answer is $1,008.", mode="flexible")
    '1008'
    """
    if not isinstance(text, str):
        return None
    if mode == "strict":
        return _strict(text)
    if mode != "flexible":
        raise ValueError(f"unknown GSM8K reward mode {mode!r}; known modes: {', '.join(MODES)}")
    for finder in _FLEXIBLE_ORDER:
        answer = finder(text)
        if answer is not None:
            return answer
    return None


@lru_cache(maxsize=4096)
def _truth(ground_truth: str) -> str | None:
    # Ground truths repeat across the n rollouts of a prompt and across epochs: parse each once.
    return canonical_number(ground_truth)


def compute_score(
    data_source: str | None,
    solution_str: Any,
    ground_truth: Any,
    extra_info: dict | None = None,
    mode: str = "strict",
    correct_score: float = 1.0,
    format_score: float = 0.0,
    **kwargs: Any,
) -> dict[str, float | str]:
    """verl's custom reward entry point for GSM8K.

    Args:
        data_source: the row's `data_source` (unused: every row is GSM8K).
        solution_str: the decoded response.
        ground_truth: the canonical answer data prep wrote ("12500", "-5"); "12,500" is accepted.
        extra_info: the row's `extra_info` (unused).
        mode: "strict" (answer after the last `####`) or "flexible" (see the module docstring).
        correct_score: reward for a correct answer.
        format_score: reward for an answer that was extracted but is wrong.

    Returns:
        Always the same keys: `score` (float reward), `acc` (1.0 if correct else 0.0) and `pred`
        (the canonical extracted answer, '' if none).

    >>> compute_score("openai/gsm8k", "#### 41", "42", format_score=0.1)
    {'score': 0.1, 'acc': 0.0, 'pred': '41'}
    """
    if mode == "strict" and isinstance(solution_str, str):  # the RL hot path, one call shorter
        pred = _strict(solution_str)
    else:
        pred = extract_answer(solution_str, mode)
    if pred is None:
        return {"score": 0.0, "acc": 0.0, "pred": ""}
    # Canonical spellings are unique (no separators, no trailing zeros), so equal numbers are equal strings.
    correct = pred == _truth(ground_truth if isinstance(ground_truth, str) else str(ground_truth))
    return {
        "score": float(correct_score if correct else format_score),
        "acc": 1.0 if correct else 0.0,
        "pred": pred,
    }
