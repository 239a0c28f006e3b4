"""Rule-based GSM8K rewards: the function verl calls for every rollout, and the one answer extractor.

verl loads this file by path (`reward.custom_reward_function.path=rewards/gsm8k.py`,
`.name=compute_score`), so it is self-contained: standard library only, no I/O, no randomness.

    >>> compute_score("openai/gsm8k", "48/2 = 24 in May, 48+24 = 72.\\n#### 72", "72")
    {'score': 1.0, 'acc': 1.0, 'pred': '72'}
    >>> compute_score("openai/gsm8k", "#### 18 or 19", "18")  # a hedge commits to nothing
    {'score': 0.0, 'acc': 0.0, 'pred': ''}
    >>> compute_score("openai/gsm8k", "So she earned $12,500.00.", "12500")  # no `####`: strict says no
    {'score': 0.0, 'acc': 0.0, 'pred': ''}
    >>> compute_score("openai/gsm8k", "So she earned $12,500.00.", "12500", mode="flexible")
    {'score': 1.0, 'acc': 1.0, 'pred': '12500'}

The rule: **the answer must commit to exactly one number.** An answer statement (the line after a
`####`, a `\\boxed{}`, an "answer is ..." / "Answer: ..." phrase, an `<answer>` tag) commits when it
is one number, spelled any way a grader reads without hesitation: `$1,234.00.`, `\\$18`, `1 000 000`,
`42.0`, `007`, `50%`, `18 apples`, `-5`, `+5`, emphasis (`**42**`), LaTeX (`$42$`, `\\(42\\)`,
`\\boxed{42}`, `12{,}500`), a lead-in (`The final answer is 42`), or a calculation whose every step
is right, read as its result (`3 * 6 = 18`, `\\frac{36}{2} = 18`). It does not commit when it names
several numbers (`18 or 19`, `18/19`, `17, 18, 19`, `17-19`, `between 17 and 19`), bounds or rounds
(`>= 17`, `at least 17`, `about 18`), negates (`not 18`, `18 is wrong`), is an expression without a
result (`\\frac{36}{2}`), a wrong calculation (`3 * 6 = 19`) or a number too long to be an answer.
A response commits when all its answer statements commit to the same number and nothing after the
last one puts forward a different number as the answer (`Wait, it's 19.`, `Actually, 19`, `Or 19.`, a
bare `19`, `\\boxed{19}`). Words alone take nothing back (`I hope this helps!`, `Wait, let me check:
3*6 = 18.`, `I am not sure.`): the response still names one number, so a policy gains nothing from
them; nor do other quantities (`That's 3 more than 15.`, `, which could buy 3 books`). Anything else
scores 0, in both modes, and whatever a response commits to is read the same way in both modes.

Modes (kwarg `mode`: `REWARD=gsm8k_strict|gsm8k_flexible` for RL, see rewards/__init__.py):

- `strict`: the response must have a `####` line; its answer is the committed number. Finds the
  marker however much text follows it (verl's built-in scorer looks only at the last 300 characters).
- `flexible`: the committed number of any answer statements; if there are none, the last number in
  the text, unless its sentence hedges (`It is 18 or 19.`).

Every function here returns the same keys for every input and never raises on a bad response
(None, bytes, empty, megabytes, 10^6 digits, 10^5 markers, nested braces); each search runs from
the end of the text over a bounded window (the last 16 statements of each kind, 512 characters after
the last one and the last 512 of the response), so a 1 MB response costs a few milliseconds.
"""

from __future__ import annotations

import re
import unicodedata
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from functools import lru_cache
from itertools import pairwise
from typing import Any

__all__ = ["MODES", "canonical_number", "compute_score", "extract_answer"]

MODES = ("strict", "flexible")
MARKER = "####"
# How far past a marker we look for its number; a longer number than this is rejected, not truncated.
_WINDOW = 64
# The longest answer statement read (a `####` line, a box, a phrase's sentence) and the longest
# stretch after the last statement (and at the end of the response) checked for a different answer.
_STATEMENT = 256
_TRAILER = 512
# How many statements of each kind are read, from the last one back.
_MAX_STATEMENTS = 16
# More digits than this is not an answer but an attempt to overflow one.
_MAX_DIGITS = 24
# A statement that names several numbers, bounds, rounds or negates: it commits to nothing.
HEDGE = "hedge"

# A signed number with optional `$`, thousands separators and decimals, e.g. "-$1,234.50" (ground truths).
_NUMBER = re.compile(r"\s*(?P<sign>[-\u2212]?)[ \t]*\$?[ \t]*(?P<sign2>[-\u2212]?)(?P<num>\d[\d,]*(?:\.\d+)?|\.\d+)")
# What may sit between "answer" and its statement: "answer is", "Answer:", "**Answer:** $", "answer = ".
_AFTER_PHRASE = re.compile(r"[ \t*:=]*(?:is|was|would be|will be|should be)?[ \t*:]*")
_CONTINUES = frozenset("0123456789,.")
_DIGITS = "0123456789"

# --- reading one answer statement --------------------------------------------------------------------------

_SPACES = " \u00a0\u2007\u2009\u202f"  # digit groups are separated by spaces, no-break and thin spaces too
_LATEX = [
    ("\\\\$", "$"),  # `\\$18`: an escaped escape
    ("\\$", "$"),  # `\$18`: LaTeX or Markdown escapes the dollar
    ("{,}", ","),  # `12{,}500`
    ("\\!", ""),
    ("\\,", "\u2009"),  # `1\,000`: LaTeX thin space
    ("\\;", " "),
    ("\\:", " "),
    ("\\times", " * "),
    ("\\cdot", " * "),
    ("\\div", " / "),
    ("\u00d7", " * "),
    ("\u00b7", " * "),
    ("\u2217", " * "),
    ("\u00f7", " / "),
    ("\u2212", "-"),
    ("\u2013", "-"),
    ("**", ""),
    ("__", ""),
]
_FRAC = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
# LaTeX and Markdown that wrap a number, and tags without digits (`<|im_end|>`, `</s>`).
_MARKUP = re.compile(
    r"\\(?:boxed|text(?:bf|rm)?|math(?:rm|bf)|displaystyle|left|right|quad)\b|\\[()\[\]]|[{}`]|<[^<>\d]*>"
)
_LEAD_IN = re.compile(r"(?:the\s+)?(?:final\s+)?answer(?:\s+(?:is|was))?\s*:?[\s*_]*", re.IGNORECASE)
_HEDGES = re.compile(
    r"\b(?:or|either|nor|between|about|approx(?:imately)?|around|roughly|nearly|almost|circa|maybe|perhaps"
    r"|possibly|probably|likely|guess|not|no|never|wrong|incorrect|false|unsure|uncertain|at\s+(?:least|most)"
    r"|up\s+to|(?:more|less|fewer|greater|higher|lower)\s+than|(?:over|under|above|below)(?=\s*[-+]?\s*\$?\s*[-+]?\d)|range)\b|ish\b"
    r"|n't\b|[<>\u2264\u2265\u2248~\u00b1\u2260]|\+/-|!=|\\(?:geq?|leq?|approx|sim|pm|neq?|lt|gt)\b",
    re.IGNORECASE,
)
_TOKEN = re.compile(
    r"(?P<num>[1-9]\d{0,2}(?:,\d{3})+(?:\.\d+)?(?!\d|,\d)"  # 1,234,567.50
    rf"|[1-9]\d{{0,2}}(?:[{_SPACES}]\d{{3}})+(?:\.\d+)?(?!\d|[{_SPACES}]\d)"  # 1 000 000
    r"|\d+(?:\.\d+)?|\.\d+)"
    r"|(?P<op>[-+*/=()%])|(?P<word>[^\W\d_]+)|(?P<other>\S)"
)
_TIMES = frozenset(("x", "X", "times"))
# A comma that opens a clause about something else: `18 dollars, which buys 3 books`.
_CLAUSE = re.compile(r",\s*(?=(?:which|so|because|since|meaning)\b)", re.IGNORECASE)


def _ascii_digits(text: str) -> str:
    """`１８` and `١٨` are 18 to a grader: every Unicode decimal digit as its ASCII digit."""
    if text.isascii():
        return text
    return re.sub(r"\d", lambda m: str(unicodedata.digit(m[0], 0)), text)


def _normalize(snippet: str) -> str:
    if snippet.isascii():
        if not any(c in snippet for c in "\\{}*_`<"):
            return snippet  # the common case: nothing to unwrap
    else:
        snippet = _ascii_digits(snippet)
    for old, new in _LATEX:
        if old in snippet:
            snippet = snippet.replace(old, new)
    if "frac" in snippet:
        snippet = _FRAC.sub(r"(\1)/(\2)", snippet)
    return _MARKUP.sub(" ", snippet)


def _tokens(text: str) -> list[tuple[str, str]] | None:
    """(kind, text) pairs; None if a number is too long to be an answer."""
    out = []
    for m in _TOKEN.finditer(text):
        kind = m.lastgroup
        value = m[kind]
        if kind == "num":
            if sum(c.isdigit() for c in value) > _MAX_DIGITS:
                return None
            value = value.replace(",", "")
            for space in _SPACES:
                value = value.replace(space, "")
        out.append((kind, value))
    # `6 x 12`, `6 times 12`: multiplication between two numbers, not a unit; a `*` elsewhere is emphasis
    operand = ("num", ("op", "("), ("op", ")"))
    for i in range(1, len(out) - 1):
        if out[i][0] == "word" and out[i][1] in _TIMES and out[i - 1][0] == "num" and out[i + 1][0] in ("num", "op"):
            out[i] = ("op", "*")
    return [
        t
        for i, t in enumerate(out)
        if t != ("op", "*")
        or (
            0 < i < len(out) - 1
            and {out[i - 1][0], out[i - 1]} & set(operand)
            and {out[i + 1][0], out[i + 1]} & set(operand)
        )
    ]


def _canonical_digits(negative: bool, digits: str) -> str | None:
    """Canonical spelling of an unsigned ASCII number: no separators, no leading or trailing zeros."""
    if "." not in digits:  # the common case: an integer
        if digits[0] != "0":  # already canonical: no int() round trip
            return "-" + digits if negative else digits
        value = int(digits)
        return str(-value) if negative else str(value)
    try:
        decimal = Decimal(digits)
    except InvalidOperation:
        return None
    if negative:
        decimal = -decimal
    if decimal == decimal.to_integral_value():
        return str(int(decimal))
    return format(decimal.normalize(), "f")


def _single(tokens: list[tuple[str, str]], words_before: bool = False) -> str | None:
    """`[sign] NUMBER [units, %, punctuation]` as a canonical number; HEDGE for more numbers; else None."""
    numbers = [i for i, (kind, _) in enumerate(tokens) if kind == "num"]
    if not numbers:
        return None
    if len(numbers) > 1:
        return HEDGE
    i = numbers[0]
    before = [t for t in tokens[:i] if t[1] not in ("$", "(")]
    negative = False
    if before and before[-1] in (("op", "-"), ("op", "+")):
        negative = before.pop()[1] == "-"
    if before and not words_before:
        return HEDGE  # `#### The answer depends on 72`, `#### + -72`: not an answer line
    if any(kind == "op" and text not in "%()" for kind, text in tokens[i + 1 :]):
        return HEDGE  # `18/19`, `18-19`, `18 + 1`: an expression, not one number
    return _canonical_digits(negative, tokens[i][1])


def _evaluate(tokens: list[tuple[str, str]]) -> Fraction | None:
    """The value of `48 + 24`, `(36)/(2)`, `6 * 12`, `50% of 36`; words (units) are skipped. None if not."""
    items: list[Any] = []
    for kind, text in tokens:
        if kind == "num":
            items.append(Fraction(text))
        elif kind == "op":
            items.append(text)
        elif kind == "word" and text.lower() == "of" and items and items[-1] == "%":
            items.append("*")
        elif kind == "other" and text not in "$.,:!?;":
            return None
    pos = 0

    def peek() -> Any:
        return items[pos] if pos < len(items) else None

    def expr() -> Fraction | None:
        nonlocal pos
        value = term()
        while value is not None and peek() in ("+", "-"):
            op = items[pos]
            pos += 1
            right = term()
            value = None if right is None else value + right if op == "+" else value - right
        return value

    def term() -> Fraction | None:
        nonlocal pos
        value = factor()
        while value is not None and peek() in ("*", "/"):
            op = items[pos]
            pos += 1
            right = factor()
            if right is None or (op == "/" and right == 0):
                return None
            value = value * right if op == "*" else value / right
        return value

    def factor() -> Fraction | None:
        nonlocal pos
        item = peek()
        pos += 1
        if item in ("-", "+"):
            value = factor()
            return None if value is None else -value if item == "-" else value
        if item == "(":
            value = expr()
            if peek() != ")":
                return None
            pos += 1
        elif isinstance(item, Fraction):
            value = item
        else:
            return None
        while peek() == "%":
            pos += 1
            value /= 100
        return value

    if not items:
        return None
    value = expr()
    return value if pos == len(items) else None


def _agrees(value: Fraction, result: str) -> bool:
    """A step's value equals the result, or rounds to it at the places the result is written with."""
    target = Fraction(result)
    if value == target:
        return True
    places = len(result.partition(".")[2])
    return places > 0 and abs(value - target) * 2 * 10**places <= 1


def _chain(tokens: list[tuple[str, str]], words_before: bool) -> str | None:
    """`3 * 6 = 18`: the result after the last `=`, if every step before it computes to it."""
    segments: list[list[tuple[str, str]]] = [[]]
    for token in tokens:
        if token == ("op", "="):
            segments.append([])
        else:
            segments[-1].append(token)
    if not any(kind == "num" for kind, _ in segments[0]):
        segments = segments[1:]  # `Total = 18`: a label, not a step
    if words_before:  # prose with calculations: each `=` joins the arithmetic just before and after it
        for left, right in pairwise(segments):
            value, head = _evaluate(_run(left[::-1])[::-1]), _single(_run(right))
            if value is None or head in (None, HEDGE) or not _agrees(value, head):
                return HEDGE
        return _last_in_sentence(segments[-1])
    *steps, last = segments
    result = _single(last)
    if result is None or result == HEDGE or not steps:
        return result or HEDGE
    for step in steps:  # an answer line: every step is the result
        value = _evaluate(step)
        if value is None or not _agrees(value, result):
            return HEDGE
    return result


def _run(tokens: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The arithmetic (numbers, operators, `$`) these tokens start with."""
    end = 0
    while end < len(tokens) and (tokens[end][0] in ("num", "op") or tokens[end][1] == "$"):
        end += 1
    return tokens[:end]


def _statement(snippet: str, words_before: bool = False) -> str | None:
    """The number an answer statement commits to (canonical), HEDGE if it does not commit, None if it
    names no number. `words_before`: prose may precede the number (a sentence, not an answer line).

    >>> [_statement(s) for s in ["**$1,234.00**", "\\\\$18", "3 * 6 = 18", "18 or 19", ">= 17", "none"]]
    ['1234', '18', '18', 'hedge', 'hedge', None]
    """
    text = _normalize(snippet).strip(" \t\n*_")
    if not words_before:
        lead = _LEAD_IN.match(text)
        if lead:
            text = text[lead.end() :]
        clause = _CLAUSE.search(text)
        if clause:  # the clause may name other quantities, not hedge or put forward another answer
            text, tail = text[: clause.start()], text[clause.end() :]
            value = _statement(text)
            hedges = value is not None and any(d in tail for d in _DIGITS) and _HEDGES.search(tail)
            return HEDGE if hedges or (value not in (None, HEDGE) and _puts_forward(tail, value)) else value
    if _HEDGES.search(text):
        return HEDGE if any(c.isdigit() for c in text) else None
    tokens = _tokens(text)
    if tokens is None:
        return HEDGE  # a number longer than any answer
    if ("op", "=") in tokens:
        return _chain(tokens, words_before)
    if words_before:
        return _last_in_sentence(tokens)
    return _single(tokens)


def _last_in_sentence(tokens: list[tuple[str, str]]) -> str | None:
    """The last number of a prose sentence, unless it is listed against another (`18, 19`, `18/19`)."""
    numbers = [i for i, (kind, _) in enumerate(tokens) if kind == "num"]
    if not numbers:
        return None
    last = numbers[-1]
    between = tokens[numbers[-2] + 1 : last] if len(numbers) > 1 else [("word", "")]
    if all(kind != "word" for kind, _ in between) and (
        {kind for kind, _ in between} & {"op"} or ({text for _, text in between} & {",", "&", ";"})
    ):
        return HEDGE  # `18, 19`, `18/19`, `17-19`, `48 + 24`: a list, a range or an expression
    return _single(tokens[last - 1 :] if last and tokens[last - 1] in (("op", "-"), ("op", "+")) else tokens[last:])


# --- finding the statements in a response ------------------------------------------------------------------

_SENTENCE_END = re.compile(r"\n|[.!?](?=\s|$)")
# After the last statement, the text is read clause by clause (not at the comma of `1,000`).
_CLAUSE_END = re.compile(r"\n|[.!?](?=\s|$)|[,;:](?!\d)")
# The words that put a number forward as the answer: `Wait, it is 19`, `Or 19`, `Oops, it should be 19`,
# `But maybe 19`, `Correction: 19`. A clause that starts with anything else (`That's 3 more than 39`,
# `which could buy 3 books`, `She bought 3 books`) is about another quantity.
_PUT_FORWARD = re.compile(
    r"(?:\s+|(?:wait|actually|oops|sorry|hmm+|um+|uh+|oh|well|ok(?:ay)?|no|nope|or|but|so|then|instead|rather"
    r"|correction|alternatively|maybe|perhaps|possibly|probably|i|mean|think|guess|it['\u2019]s|it|is|was|be"
    r"|should|would|could|might|may|must|will|also|really|the|a|final|correct|right|real|actual|true|answer)\b)*+",
    re.IGNORECASE,
)
_NUMBER_START = re.compile(r"[-+]?\s*\$?\s*[-+]?\.?\d")


def _line_statement(text: str, start: int) -> tuple[str | None, int]:
    """The statement that starts at text[start] (after blank space), up to the end of its sentence."""
    end = min(len(text), start + _STATEMENT)
    while start < end and text[start] in " \t\r\n":
        start += 1
    stop = _SENTENCE_END.search(text, start, end)
    stop_at = stop.start() if stop else end
    if stop_at == end and end < len(text) and text[end - 1] in _CONTINUES and text[end] in _CONTINUES:
        return HEDGE, end  # cut inside a number far longer than any answer
    return _statement(text[start:stop_at]), stop_at


def _markers(text: str) -> list[tuple[int, str | None]]:
    found = []
    end = len(text)
    for _ in range(_MAX_STATEMENTS):
        pos = text.rfind(MARKER, 0, end)
        if pos < 0:
            break
        if pos + len(MARKER) < end or end == len(text):  # `########` is one marker, read once
            value, stop = _line_statement(text, pos + len(MARKER))
            found.append((stop, value))
        end = pos
    return found


def _boxes(text: str) -> list[tuple[int, str | None]]:
    found = []
    end = len(text)
    for _ in range(_MAX_STATEMENTS):
        pos = text.rfind("\\boxed{", 0, end)
        if pos < 0:
            break
        start = pos + len("\\boxed{")
        depth = 1
        for i in range(start, min(len(text), start + _STATEMENT)):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    found.append((i + 1, _statement(text[start:i])))
                    break
        end = pos
    return found


def _phrases(text: str) -> list[tuple[int, str | None]]:
    found = []
    hits = {"nswer": text.rfind("nswer"), "NSWER": text.rfind("NSWER")}  # no lower() of a megabyte
    for _ in range(_MAX_STATEMENTS):
        needle = max(hits, key=hits.__getitem__)
        if hits[needle] < 1:
            break
        pos = hits[needle] - 1
        hits[needle] = text.rfind(needle, 0, pos)  # each search goes back only to the previous hit
        if text[pos] not in "aA":
            continue
        window = text[pos : pos + len("answer") + _WINDOW + _STATEMENT]
        gap = _AFTER_PHRASE.match(window.lower(), len("answer"), len("answer") + _WINDOW)
        if window[len("answer") : gap.end()].strip():  # `answer is`, `answer:`, not `answer to`
            stop = _SENTENCE_END.search(window, gap.end(), gap.end() + _STATEMENT)
            stop_at = stop.start() if stop else min(len(window), gap.end() + _STATEMENT)
            value = _statement(window[gap.end() : stop_at])
            if value is not None and value != HEDGE:  # a phrase mid-reasoning that names no number is prose
                found.append((pos + stop_at, value))
    return found


def _tags(text: str) -> list[tuple[int, str | None]]:
    found = []
    end = len(text)
    for _ in range(_MAX_STATEMENTS):
        pos = text.rfind("<answer>", 0, end)
        if pos < 0:
            break
        start = pos + len("<answer>")
        close = text.find("</answer>", start, start + _STATEMENT)
        if close >= 0:
            found.append((close + len("</answer>"), _statement(text[start:close])))
        end = pos
    return found


def _retracted(text: str, start: int, answer: str) -> bool:
    """Whether the text after the last statement puts forward a different number as the answer.

    Read are the 512 characters after the statement and the response's last 512. Words alone take
    nothing back (`Wait, let me check.`, `I am not sure.`): they leave one number committed.

    >>> [_retracted(t, 0, "18") for t in ["Wait, it is 19.", "Or 19", "19", "It might be 19, not 18."]]
    [True, True, True, True]
    >>> [_retracted(t, 0, "18") for t in ["Wait, I'm not sure.", "It buys 3 books.", "3 * 6 is 18.", "That's 3 more."]]
    [False, False, False, False]
    """
    if _puts_forward(text[start : start + _TRAILER], answer):
        return True
    if len(text) > start + _TRAILER:  # a correction at the very end of a long response
        tail = text[-_TRAILER:]
        first = _CLAUSE_END.search(tail)  # the window starts mid-clause: skip that part
        return first is not None and _puts_forward(tail[first.end() :], answer)
    return False


def _puts_forward(trailer: str, answer: str) -> bool:
    """Whether a clause of `trailer` is, after words like `Wait, it is`, a number (or a hedge) other than `answer`."""
    if not any(d in trailer for d in _DIGITS):
        return False
    begin = 0
    for stop in _CLAUSE_END.finditer(trailer + "\n"):
        clause = _normalize(trailer[begin : stop.start()])
        begin = stop.end()
        if "=" in clause or not any(d in clause for d in _DIGITS):
            continue  # `Check: 72 - 2 = 70.` is a calculation, not an answer
        rest = clause[_PUT_FORWARD.match(clause).end() :]
        if not _NUMBER_START.match(rest):
            continue  # prose about another quantity
        value = _statement(rest)
        if value == HEDGE:
            if _hedges_another(rest, answer):
                return True
        elif value not in (None, answer):
            return True
    return False


def _hedges_another(rest: str, answer: str) -> bool:
    """`19 or 20`, `19/20`, `19 20`: several numbers, one of them not the answer; not `3 * 6 is 18` or
    `3 books cost $18` (arithmetic that reaches the answer, prose between the numbers)."""
    tokens = _tokens(rest)
    if tokens is None:
        return True  # a number longer than any answer
    numbers = [i for i, (kind, _) in enumerate(tokens) if kind == "num"]
    signed = [_canonical_digits(i > 0 and tokens[i - 1] == ("op", "-"), tokens[i][1]) for i in numbers]
    if all(number == answer for number in signed):
        return False
    if _HEDGES.search(rest):
        return True
    run = _evaluate(_run(tokens))
    if run is not None and _agrees(run, answer):
        return False
    return len(numbers) > 1 and all(kind != "word" for kind, _ in tokens[numbers[0] + 1 : numbers[1]])


def _last_number(text: str) -> tuple[int, str | None]:
    last_digit = max(text.rfind(d) for d in _DIGITS)
    if last_digit < 0:
        return 0, None
    start = last_digit
    floor = max(0, last_digit - _WINDOW)
    while start > floor and (text[start - 1] in _DIGITS or text[start - 1] in ",. "):
        start -= 1
    if start == floor and floor > 0:
        return 0, HEDGE  # a run of digits longer than any answer: adversarial, not an answer
    sentence = max(text.rfind(". ", 0, start), text.rfind("\n", 0, start), text.rfind("? ", 0, start))
    begin = max(sentence + 1, start - _STATEMENT)
    stop = _SENTENCE_END.search(text, last_digit + 1, last_digit + 1 + _STATEMENT)
    stop_at = stop.start() if stop else min(len(text), last_digit + 1 + _STATEMENT)
    return stop_at, _statement(text[begin:stop_at], words_before=True)


# The shape most rollouts end in: one `####`, then a plain number, then nothing but a period or blank space.
_PLAIN_END = re.compile(r"[ \t]*(-?)\$?((?:[1-9][0-9]{0,2}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]+)?)[ \t]*\.?\s*")


def _commitment(text: str, mode: str) -> str | None:
    pos = text.rfind(MARKER)
    if 0 <= pos > len(text) - 32:  # the hot path: one `####`, a plain number, no other statement to compare
        plain = _PLAIN_END.fullmatch(text, pos + len(MARKER))
        others = "\\boxed{" in text or "nswer" in text or "NSWER" in text
        if plain and text.find(MARKER) == pos and not others and len(plain[2]) <= _MAX_DIGITS:
            return _canonical_digits(plain[1] == "-", plain[2].replace(",", ""))
    markers = _markers(text) if MARKER in text else []
    if mode == "strict" and not any(value is not None for _, value in markers):
        return None  # strict reads only responses with a `####` answer line
    statements = markers
    if "\\boxed{" in text:
        statements += _boxes(text)
    if "nswer" in text or "NSWER" in text:
        statements += _phrases(text)
    if "<answer>" in text:
        statements += _tags(text)
    values = {value for _, value in statements if value is not None}
    if not values:
        if mode == "strict":
            return None
        end, answer = _last_number(text)
    elif len(values) > 1:
        return None  # several answers, or one that hedges: no commitment
    else:
        (answer,) = values
        end = max(stop for stop, value in statements if value is not None)
    if answer is None or answer == HEDGE or _retracted(text, end, answer):
        return None
    return answer


# --- the public functions ----------------------------------------------------------------------------------


def canonical_number(text: Any) -> str | None:
    """The canonical spelling of the number `text` starts with, or None.

    Canonical = what data prep writes as ground truth: digits, optional minus, no thousands
    separators, no trailing zeros after a decimal point.

    >>> [canonical_number(s) for s in ["12,500", "$-5", "42.00", "007", "0.50", "50%", "abc"]]
    ['12500', '-5', '42', '7', '0.5', '50', None]
    """
    if not isinstance(text, str):
        return None
    text = text.strip()
    end = _WINDOW
    m = _NUMBER.match(text, 0, end)
    if m is None:
        return None
    # A match that fills the whole window may be the head of a longer number: reject, don't truncate.
    if m.end() == end and end < len(text) and text[end] in _CONTINUES:
        return None
    sign, sign2, digits = m.groups()
    return _canonical_digits(bool(sign or sign2), _ascii_digits(digits).replace(",", ""))


def extract_answer(text: Any, mode: str = "strict") -> str | None:
    """The canonical number a response (or a GSM8K reference solution) commits to, or None.

    >>> extract_answer("Natalia sold 48+24 = <<48+24=72>>72 clips.\\n#### 72")
    '72'
    >>> extract_answer("... so the answer is $1,008.", mode="flexible")
    '1008'
    >>> extract_answer("#### 18\\nWait, it is 19.", mode="flexible") is None  # retracted
    True
    """
    if mode not in MODES:
        raise ValueError(f"unknown GSM8K reward mode {mode!r}; known modes: {', '.join(MODES)}")
    if not isinstance(text, str):
        return None
    return _commitment(text, mode)


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
        mode: "strict" (a `####` answer line) or "flexible" (see the module docstring).
        correct_score: reward for a correct answer.
        format_score: reward for an answer that was extracted but is wrong.

    Returns:
        Always the same keys: `score` (float reward), `acc` (1.0 if correct else 0.0) and `pred`
        (the canonical committed answer, '' if none).

    >>> compute_score("openai/gsm8k", "#### 41", "42", format_score=0.1)
    {'score': 0.1, 'acc': 0.0, 'pred': '41'}
    """
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
