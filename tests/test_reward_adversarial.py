"""rewards/gsm8k.py against a policy looking for free reward: every answer that does not commit to exactly
one number scores 0, in both modes, whatever the gold answer; whatever an answer commits to is read the same
way in both modes.

Each strategy below is one a policy finds when it is paid for any candidate that happens to be right: it
writes the gold answer among others (hedges), around it (bounds) or takes it back (retractions). The gold
value is drawn by hypothesis, so no table of examples can be special-cased.
"""

from __future__ import annotations

import functools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rewards.gsm8k import compute_score, extract_answer
from tests.timing import fastest

MODES = ("strict", "flexible")
ZERO = {"score": 0.0, "acc": 0.0, "pred": ""}
REASONING = "She had some apples and bought more, so we add them up.\n"

golds = st.integers(min_value=-(10**7), max_value=10**9)
others = st.integers(min_value=0, max_value=10**6)


def _score(response: str, gold: int, mode: str) -> dict:
    return compute_score("openai/gsm8k", response, str(gold), mode=mode)


def _assert_zero_in_both_modes(response: str, gold: int) -> None:
    """Not paid, and the gold is not what was read (`17 180` reads as 17180, one number, and it is wrong)."""
    for mode in MODES:
        result = _score(response, gold, mode)
        assert result["score"] == result["acc"] == 0.0 and result["pred"] != str(gold), (mode, response, result)


def _candidates(gold: int, other: int) -> list[str]:
    """The gold answer and another, different number, in either order."""
    other = other if other != gold else other + 1
    return [str(gold), str(other)]


# --- hedges: several numbers after the marker -----------------------------------------------------------------

HEDGES = [
    "{a} or {b}",
    "{a} OR {b}",
    "{a}/{b}",
    "{a} / {b}",
    "{a}, {b}",
    "{a},{b}",
    "{a}; {b}",
    "{a} and {b}",
    "{a} & {b}",
    "{a} to {b}",
    "{a}-{b}",
    "{a} - {b}",
    "{a}\u2013{b}",
    "between {a} and {b}",
    "either {a} or {b}",
    "{a} (or {b})",
    "{a} or maybe {b}",
    "{a} \\text{{ or }} {b}",
    "\\boxed{{{a}}} or \\boxed{{{b}}}",
    "**{a}** or **{b}**",
    "${a}$ or ${b}$",
    "{a} apples or {b} apples",
    "{a} = {b}",
    "{a} {b}",
    "[{a}, {b}]",
    "({a}, {b})",
    "{{{a}, {b}}}",
    "{a}\n{b}",
    "- {a}\n- {b}",
    "1. {a}\n2. {b}",
    "{a} | {b}",
    "{a} \\pm {b}",
]


@settings(max_examples=150, deadline=None)
@given(gold=golds, other=others, template=st.sampled_from(HEDGES), flip=st.booleans())
def test_several_candidates_after_the_marker_score_zero(gold, other, template, flip):
    a, b = _candidates(gold, other)[:: -1 if flip else 1]
    _assert_zero_in_both_modes(f"{REASONING}#### {template.format(a=a, b=b)}", gold)


@settings(max_examples=100, deadline=None)
@given(gold=golds, extra=st.lists(others, min_size=2, max_size=6), position=st.integers(0, 6))
def test_a_list_of_candidates_scores_zero(gold, extra, position):
    candidates = [str(n) for n in extra if n != gold]
    if len(candidates) < 1:
        candidates = [str(gold + 1)]
    candidates.insert(position % (len(candidates) + 1), str(gold))
    for sep in (", ", " or ", "/", " "):
        _assert_zero_in_both_modes(f"{REASONING}#### {sep.join(candidates)}", gold)


@settings(max_examples=100, deadline=None)
@given(
    gold=golds, other=others, flip=st.booleans(), between=st.sampled_from(["\n", "\n\n", " ", "\nWait.\n", "\nOr:\n"])
)
def test_one_marker_per_candidate_scores_zero(gold, other, flip, between):
    a, b = _candidates(gold, other)[:: -1 if flip else 1]
    _assert_zero_in_both_modes(f"{REASONING}#### {a}{between}#### {b}", gold)


@settings(max_examples=100, deadline=None)
@given(gold=golds, other=others, flip=st.booleans(), form=st.integers(0, 3))
def test_disagreeing_answer_forms_score_zero(gold, other, flip, form):
    """`\\boxed{}`, "The answer is", `<answer>` and `####` naming different numbers: no commitment."""
    a, b = _candidates(gold, other)[:: -1 if flip else 1]
    other_form = [f"\\boxed{{{a}}}", f"The answer is {a}.", f"<answer>{a}</answer>", f"**Answer:** {a}"][form]
    for response in (f"{REASONING}{other_form}\n#### {b}", f"{REASONING}#### {b}\n{other_form}"):
        _assert_zero_in_both_modes(response, gold)


@settings(max_examples=60, deadline=None)
@given(gold=golds, other=others, flip=st.booleans())
def test_disagreeing_boxes_without_a_marker_score_zero_in_flexible(gold, other, flip):
    a, b = _candidates(gold, other)[:: -1 if flip else 1]
    for response in (f"\\boxed{{{a}}} or \\boxed{{{b}}}", f"The answer is {a}. The answer is {b}."):
        assert _score(response, gold, "flexible") == ZERO, response


@settings(max_examples=60, deadline=None)
@given(gold=golds, other=others, flip=st.booleans(), template=st.sampled_from(["{a} or {b}", "{a}, {b}", "{a}/{b}"]))
def test_a_hedge_in_flexible_fallbacks_scores_zero(gold, other, flip, template):
    """Without a marker, flexible reads a box, a phrase or the last number: none of them may hedge."""
    a, b = _candidates(gold, other)[:: -1 if flip else 1]
    hedge = template.format(a=a, b=b)
    for response in (f"\\boxed{{{hedge}}}", f"The answer is {hedge}.", f"<answer>{hedge}</answer>", f"So {hedge}."):
        assert _score(response, gold, "flexible") == ZERO, response


# --- the question's own numbers echoed ------------------------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(gold=golds, question_numbers=st.lists(others, min_size=2, max_size=5))
def test_echoing_the_questions_numbers_scores_zero(gold, question_numbers):
    numbers = [str(n) for n in question_numbers] + [str(gold)]
    echoed = ", ".join(numbers)
    for response in (
        f"#### {echoed}",
        f"#### {' '.join(numbers)}",
        "".join(f"#### {n}\n" for n in numbers) if len(set(numbers)) > 1 else f"#### {echoed}",
        f"The numbers are {echoed}.\n#### {echoed}",
    ):
        _assert_zero_in_both_modes(response, gold)


# --- bounds, ranges, inequalities, approximations ------------------------------------------------------------

BOUNDS = [
    ">= {g}",
    "> {g}",
    "<= {g}",
    "< {g}",
    "\u2265 {g}",
    "\u2264 {g}",
    "\\geq {g}",
    "\\le {g}",
    "$\\geq {g}$",
    "\u2248 {g}",
    "~{g}",
    "\\approx {g}",
    "at least {g}",
    "at most {g}",
    "more than {g}",
    "less than {g}",
    "up to {g}",
    "over {g}",
    "under {g}",
    "about {g}",
    "approximately {g}",
    "around {g}",
    "roughly {g}",
    "nearly {g}",
    "almost {g}",
    "{g} or more",
    "{g} or less",
    "{g}ish",
    "{g}+",
    "{g} \\pm 1",
    "{g} +/- 1",
    "!= {g}",
    "\\neq {g}",
    "probably {g}",
    "maybe {g}",
    "x > {g}",
    "x \\geq {g}",
]


@settings(max_examples=150, deadline=None)
@given(gold=golds, template=st.sampled_from(BOUNDS))
def test_the_gold_inside_a_bound_or_approximation_scores_zero(gold, template):
    _assert_zero_in_both_modes(f"{REASONING}#### {template.format(g=gold)}", gold)


@settings(max_examples=60, deadline=None)
@given(gold=golds, low=st.integers(1, 1000), high=st.integers(1, 1000))
def test_the_gold_inside_a_range_scores_zero(gold, low, high):
    a, b = gold - low, gold + high
    for template in ("{a}-{b}", "{a} to {b}", "between {a} and {b}", "from {a} to {b}", "[{a}, {b}]", "{a}..{b}"):
        _assert_zero_in_both_modes(f"{REASONING}#### {template.format(a=a, b=b)}", gold)


# --- numbers too long to be an answer ------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(gold=st.integers(0, 10**9), pad=st.integers(25, 3000), where=st.sampled_from(["lead", "tail", "decimals"]))
def test_a_huge_number_of_digits_scores_zero(gold, pad, where):
    g = str(gold)
    number = {"lead": "0" * pad + g, "tail": g + "0" * pad, "decimals": g + "." + "0" * pad + "1"}[where]
    _, seconds = fastest(lambda: _assert_zero_in_both_modes(f"#### {number}", gold))
    assert seconds < 0.04


def test_every_digit_string_is_not_a_jackpot():
    """A response that writes every short number, or the digits 0-9 many times, is paid nothing."""
    everything = " ".join(str(n) for n in range(1000))
    for response in (f"#### {everything}", "#### " + "0123456789" * 1000, everything):
        for gold in (0, 18, 72, 999):
            _assert_zero_in_both_modes(response, gold)


# --- the answer, then its negation or a correction -----------------------------------------------------------

RETRACTIONS = [
    "{g}\nWait, it is {o}.",
    "{g}\nWait, it's {o}.",
    "{g}\nActually, {o}.",
    "{g}\nActually, I made a mistake: {o}.",
    "{g}\nWait, that's wrong. It is {o}.",
    "{g}\nNo, that is not right. It should be {o}.",
    "{g}\nOops, it should be {o}.",
    "{g}\nSorry, the answer is {o}",
    "{g}\nCorrection: {o}",
    "{g}\nOr {o}.",
    "{g}. Or {o}.",
    "{g}\n{o}",
    "{g}\n**{o}**",
    "{g}\n\\boxed{{{o}}}",
    "{g}\nThe answer is {o}.",
    "{g}\nHmm, let me recompute. {o}.",
    "{g}\nI am not sure. Maybe {o}.",
    "{g}\nIt might also be {o}, not {g}.",
    "{g}\nIt might be {g} or {o}.",
    "{g}, no wait, {o}",
    "{g}, so {o}",
    "{g} dollars, which is {g} or {o}",
    "{g} (not {g})",
    "not {g}",
    "{g} is wrong",
    "{g} is incorrect",
    "{g} isn't right",
    "{g}\nBut maybe {o}.",
    "{g}\nAlternatively, {o}.",
    "{g}\nWait, {o} or {g}?",
    "{g}\nIt might be {g} or -{o}.",
]


@settings(max_examples=150, deadline=None)
@given(gold=golds, other=others, template=st.sampled_from(RETRACTIONS))
def test_the_answer_then_a_retraction_scores_zero(gold, other, template):
    other = other if other != gold else other + 1
    _assert_zero_in_both_modes(f"{REASONING}#### {template.format(g=gold, o=other)}", gold)


# Words after the answer without another number: the response still names one number, so a policy gains
# nothing from them, and a grader reads the answer. They are paid exactly as the bare answer is.
WORDS_ONLY = [
    "Wait, that's wrong.",
    "Actually, I made a mistake.",
    "No, that is not right.",
    "Hmm, let me recompute.",
    "I am not sure.",
    "Maybe, maybe not. Perhaps. Possibly. Could be an error.",
    "Wait, let me double check. Yes.",
]


@settings(max_examples=60, deadline=None)
@given(gold=golds, other=others, words=st.sampled_from(WORDS_ONLY), repeat=st.sampled_from([1, 2, 100]))
def test_words_without_another_number_read_as_the_answer(gold, other, words, repeat):
    response = f"{REASONING}#### {gold}\n" + " ".join([words] * repeat)
    for mode in MODES:
        assert extract_answer(response, mode) == str(gold), (mode, response)
        assert _score(response, gold + other + 1, mode)["acc"] == 0.0  # no pay for any other gold


# --- what a committed answer is paid, and that both modes read it alike --------------------------------------

COMMITTED = [
    "{g}",
    "{g}.",
    "**{g}**",
    "${g}$",
    "\\boxed{{{g}}}",
    "The final answer is {g}",
    "{g} apples",
    "{g}\nI double-checked every step.",
    "{g}\nSo she has {g} apples in total.",
    "{g}\n#### {g}",
]


@settings(max_examples=150, deadline=None)
@given(gold=golds, other=others, template=st.sampled_from(COMMITTED), extra=st.sampled_from(["", "\\boxed", "phrase"]))
def test_a_committed_answer_is_read_the_same_in_both_modes(gold, other, template, extra):
    body = template.format(g=gold)
    before = {"": "", "\\boxed": f"So \\boxed{{{gold}}}.\n", "phrase": f"The answer is {gold}.\n"}[extra]
    response = f"{REASONING}{before}#### {body}"
    assert extract_answer(response, "strict") == extract_answer(response, "flexible") == str(gold), response
    for mode in MODES:
        assert _score(response, gold, mode)["acc"] == 1.0
        assert _score(response, gold + other + 1, mode)["acc"] == 0.0  # a wrong gold: the same answer, no pay


@settings(max_examples=200, deadline=None)
@given(
    text=st.text(alphabet=st.sampled_from(list("0123456789 ,./-+*=$%#()\\{}<>~abcdeorntxw\n")), max_size=80),
    prefix=st.sampled_from(["", REASONING, "#### ", "\\boxed{", "The answer is "]),
)
def test_both_modes_never_read_different_numbers(text, prefix):
    """For any text, flexible either agrees with strict or strict reads nothing (no `####` line)."""
    response = prefix + text
    strict, flexible = extract_answer(response, "strict"), extract_answer(response, "flexible")
    assert strict is None or strict == flexible, (response, strict, flexible)


@pytest.mark.parametrize(
    "response",
    [
        "#### 18\n" * 10_000 + "#### 19",  # many agreeing markers, one dissenter last
        "\\boxed{18} " * 10_000 + "#### 19",  # many boxes against the marker
        "The answer is 18. " * 10_000 + "#### 19",  # many phrases against the marker
        "<answer>18</answer>" * 10_000 + "#### 19",  # many tags against the marker
        "#### 18\n" + "Actually, " * 100_000 + "19",  # a megabyte of retraction
        "#### 18 " + "or 19 " * 100_000,  # a megabyte of hedging
    ],
    ids=range(6),
)
def test_mass_hedges_score_zero_fast(response):
    """Only the last statements of each kind are read (bounded time); a dissent among them still counts."""
    for mode in MODES:
        for gold in (18, 19):
            result, elapsed = fastest(functools.partial(_score, response, gold, mode))
            assert result == ZERO, (mode, gold, response[:80])
            assert elapsed < 0.02, f"{elapsed * 1e3:.1f} ms"
