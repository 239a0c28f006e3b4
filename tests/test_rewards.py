"""rewards/: what each mode accepts and rejects, the dict contract, and bounded time on hostile input."""

from __future__ import annotations

import doctest

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import data.prompt
import rewards
import rewards.gsm8k
from rewards.gsm8k import canonical_number, compute_score, extract_answer
from tests.timing import fastest

KEYS = {"score", "acc", "pred"}


def score(response, truth, **kwargs):
    return compute_score("openai/gsm8k", response, truth, **kwargs)


STRICT_CASES = [
    ("Natalia sold 48+24 = 72 clips.\n#### 72", "72", 1.0),  # the reference format
    ("#### 72", "72", 1.0),  # marker only
    ("####72", "72", 1.0),  # no space after the marker
    ("#### 12,500", "12500", 1.0),  # thousands separator in the response
    ("#### 12500", "12,500", 1.0),  # thousands separator in the ground truth
    ("#### 1,234,567", "1234567", 1.0),  # several separators
    ("#### $18", "18", 1.0),  # leading dollar sign
    ("#### $ 18", "18", 1.0),  # dollar sign and a space
    ("#### 18.", "18", 1.0),  # trailing period
    ("#### 18 dollars", "18", 1.0),  # trailing unit
    ("#### 25%", "25", 1.0),  # trailing percent
    ("#### 42.0", "42", 1.0),  # trailing zero decimal
    ("#### 42.00", "42", 1.0),  # two trailing zeros
    ("#### 007", "7", 1.0),  # leading zeros
    ("#### -5", "-5", 1.0),  # negative answer
    ("#### -$5", "-5", 1.0),  # minus before the dollar sign
    ("#### $-5", "-5", 1.0),  # minus after the dollar sign
    ("#### 2.5", "2.5", 1.0),  # decimal answer
    ("#### 0.50", "0.5", 1.0),  # decimal with a trailing zero
    ("#### \n 72", "72", 1.0),  # newline between marker and number
    ("#### 72\n#### 72", "72", 1.0),  # the same answer twice commits to it
    ("#### 5\nWait, I made an error.\n#### 72", "72", 0.0),  # two different answers: a hedge, whatever the last
    ("#### 72\nWait, I made an error.\n#### 5", "72", 0.0),  # ... in either order
    ("#### 72\n" + "I am confident in this. " * 200, "72", 1.0),  # marker far from the end
    ("#### **72**", "72", 1.0),  # markdown bold around the number
    ("#### *72*", "72", 1.0),  # markdown italics
    ("#### __72__", "72", 1.0),  # markdown bold, underscores
    ("#### +72", "72", 1.0),  # explicit plus sign
    ("#### $72$", "72", 1.0),  # LaTeX inline math
    ("#### \\(72\\)", "72", 1.0),  # LaTeX \( \)
    ("#### \\boxed{72}", "72", 1.0),  # boxed after the marker
    ("#### $\\boxed{72}$", "72", 1.0),  # boxed in inline math
    ("#### The final answer is 72", "72", 1.0),  # lead-in phrase
    ("#### Answer: 72", "72", 1.0),  # short lead-in with a colon
    ("#### **Answer:** $1,008.", "1008", 1.0),  # emphasis, lead-in, dollar and separators together
    ("#### The answer is **-5**", "-5", 1.0),  # lead-in, emphasis, negative
    ("#### about 72", "72", 0.0),  # a hedge is not a final number
    ("#### The answer depends on 72", "72", 0.0),  # not a lead-in phrase
    ("#### 6 x 12 = 72", "72", 1.0),  # a right calculation commits to its result
    ("#### 3 * 6 = 18", "18", 1.0),  # ... with `*`
    ("#### \\frac{36}{2} = 18", "18", 1.0),  # ... with a LaTeX fraction
    ("#### 48 + 24 = 72 clips", "72", 1.0),  # ... with a unit
    ("#### 10 / 3 = 3.33", "3.33", 1.0),  # ... rounded at the places written
    ("#### 6 x 12 = 73", "73", 0.0),  # a wrong calculation commits to nothing
    ("#### \\$18", "18", 1.0),  # LaTeX / Markdown escaped dollar
    ("#### \\\\$18", "18", 1.0),  # escaped escape
    ("#### $\\$18$", "18", 1.0),  # escaped dollar in inline math
    ("#### 1 000 000", "1000000", 1.0),  # digits grouped with spaces
    ("#### 1\u2009000\u2009000", "1000000", 1.0),  # ... thin spaces
    ("#### 1\u202f000", "1000", 1.0),  # ... narrow no-break space
    ("#### 1\\,000", "1000", 1.0),  # ... LaTeX thin space
    ("#### 12{,}500", "12500", 1.0),  # LaTeX comma
    ("#### \uff11\uff18", "18", 1.0),  # full-width digits
    ("#### 72<|im_end|>", "72", 1.0),  # an end-of-turn token left in the text
    ("#### 1 00", "100", 0.0),  # not groups of three: two numbers
    ("#### \\frac{144}{2}", "72", 0.0),  # LaTeX that is not a plain number
    ("#### + -72", "-72", 0.0),  # a plus then a minus is not clearly a number
    ("#### 71", "72", 0.0),  # wrong number
    ("#### 720", "72", 0.0),  # a prefix of the right number is not right
    ("#### 7.2", "72", 0.0),  # decimal point is not a separator
    ("#### -72", "72", 0.0),  # sign matters
    ("The answer is 72.", "72", 0.0),  # no marker: strict wants the format
    ("\\boxed{72}", "72", 0.0),  # boxed is not the strict format
    ("####", "72", 0.0),  # marker with nothing after it
    ("#### seventy-two", "72", 0.0),  # words are not numbers
    ("", "72", 0.0),  # empty response
    ("#### 18\n\nI hope this helps!", "18", 1.0),  # a closing courtesy
    ("#### 18\nLet me know if you could use more help.", "18", 1.0),  # `could` without another number
    ("#### 18\nNote: this could also be computed as 6 * 3.", "18", 1.0),  # another way to the same answer
    ("#### 18\nNote that this might vary if prices change.", "18", 1.0),  # a caveat without another number
    ("#### 18\n\nWait, let me double check: 3*6 = 18. Yes.", "18", 1.0),  # a re-check that reaches the answer
    ("#### 18\nTo verify, 3 * 6 is 18, which matches.", "18", 1.0),  # ... in words
    ("#### 18\nVerification: 6 + 6 + 6 = 18 \u2713", "18", 1.0),  # a verification line
    ("#### 18 dollars, which could buy 3 books.", "18", 1.0),  # a clause about another quantity
    ("#### 18\nThis means each of the 3 friends pays $6.", "18", 1.0),  # "This means ..." with other quantities
    ("#### 18\nSo, Janet has 18 dollars left after buying 3 books.", "18", 1.0),  # restates the answer
    ("#### 18\nI am not sure.", "18", 1.0),  # hedge words alone: one number is still committed
    ("#### 18\nWait, it's 19.", "18", 0.0),  # a correction to another number
    ("#### 18\nSorry, the answer is 19", "18", 0.0),  # ... as an answer phrase
    ("#### 18 dollars, which is 18 or 19.", "18", 0.0),  # a hedge in the clause after the answer
]

FLEXIBLE_CASES = [
    ("Reasoning...\n#### 72", "72", 1.0),  # marker wins
    ("so 70 + 2 = 72\n#### 72\nThat's 3 more than 69.", "72", 1.0),  # marker beats a later number
    ("The total is \\boxed{72}.", "72", 1.0),  # boxed
    ("\\boxed{12{,}500}", "12500", 1.0),  # LaTeX thousands separator
    ("\\boxed{\\$18}", "18", 1.0),  # escaped dollar in boxed
    ("\\boxed{72} so \\boxed{72}", "72", 1.0),  # the same box twice
    ("First \\boxed{5}, no wait \\boxed{72}", "72", 0.0),  # two different boxes: a hedge, whatever the last
    ("She has \\$18 left.", "18", 1.0),  # escaped dollar, last number
    ("She saves 3 * 6 = 18 dollars.", "18", 1.0),  # a calculation in prose
    ("The answer is 3 * 6 = 18.", "18", 1.0),  # a calculation after the phrase
    ("It is 18 or 19.", "18", 0.0),  # a hedge in the last sentence
    ("It is 17, 18, 19.", "19", 0.0),  # a list in the last sentence
    ("The answer is 72.", "72", 1.0),  # answer phrase
    ("The answer is: $1,008.", "1008", 1.0),  # phrase with colon, dollar, separators
    ("**Answer:** 72", "72", 1.0),  # markdown bold answer line
    ("Final answer: -5 degrees", "-5", 1.0),  # negative via phrase
    ("The answer is 72. Check: 72 - 2 = 70.", "72", 1.0),  # phrase beats the last number
    ("<answer>72</answer>", "72", 1.0),  # answer tag
    ("<reasoning>6*12</reasoning><answer> 72 </answer>", "72", 1.0),  # tag with spaces
    ("She has 48 + 24 = 72 clips", "72", 1.0),  # last number fallback
    ("It drops to -5 degrees", "-5", 1.0),  # last number, negative
    ("Total: 12,500 loaves", "12500", 1.0),  # last number with separator
    ("She has 72 clips. That is 3 bags.", "72", 0.0),  # last number is not the answer
    ("No digits here.", "72", 0.0),  # nothing to extract
    ("So the answer is 18. I hope this helps! Let me know if you could use more help.", "18", 1.0),  # courtesy
    ("Therefore, the final answer is $\\boxed{18}$. Note that this might vary if prices change.", "18", 1.0),  # caveat
    ("The answer is 18.\n\nWait, let me double check: 3*6 = 18. Yes.", "18", 1.0),  # a re-check reaching the answer
    ("The answer is 18 dollars, which could buy 3 books.", "18", 1.0),  # a clause about another quantity
    ("#### 18\n\nI hope this helps!", "18", 1.0),  # a closing courtesy after the marker
    ("#### 18\nNote: this could also be computed as 6 * 3.", "18", 1.0),  # another way to the same answer
    ("Therefore, Janet makes \\(\\boxed{18}\\) dollars every day at the market.", "18", 1.0),  # box mid-sentence
    ("The final answer is 18. This means each of the 3 friends pays $6.", "18", 1.0),  # "This means ..."
    ("The answer is 18.\n\nLet me know if you have any other questions or need help!", "18", 1.0),  # "Let me know"
    ("\\boxed{18}\n\nI am not sure.", "18", 1.0),  # hedge words alone: one number is still committed
    ("The answer is 18.\nWait, it's 19.", "18", 0.0),  # a correction to another number
    ("\\boxed{18} Actually, 19.", "18", 0.0),  # ... after a box
]


@pytest.mark.parametrize(("response", "truth", "expected"), STRICT_CASES)
def test_strict(response, truth, expected):
    assert score(response, truth)["score"] == expected


@pytest.mark.parametrize(("response", "truth", "expected"), FLEXIBLE_CASES)
def test_flexible(response, truth, expected):
    assert score(response, truth, mode="flexible")["score"] == expected


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("#### 72", {"score": 1.0, "acc": 1.0, "pred": "72"}),  # correct
        ("#### 71", {"score": 0.1, "acc": 0.0, "pred": "71"}),  # well-formed but wrong: format_score
        ("72", {"score": 0.0, "acc": 0.0, "pred": ""}),  # nothing extracted: no format credit
    ],
)
def test_shaping_kwargs(response, expected):
    assert score(response, "72", correct_score=1.0, format_score=0.1) == expected


def test_correct_score_scales_the_reward():
    assert score("#### 72", "72", correct_score=2.0) == {"score": 2.0, "acc": 1.0, "pred": "72"}


HOSTILE = [
    None,  # not a string
    42,  # an int
    b"#### 72",  # bytes are not decoded
    ["#### 72"],  # a list
    "",  # empty
    " " * 1_000_000,  # a megabyte of spaces
    "7" * 1_000_000,  # 10^6 digits
    "#### " + "9" * 1_000_000,  # 10^6 digits after the marker: not truncated into an answer
    "####" * 100_000,  # 10^5 markers
    "\\boxed{" * 100_000,  # 10^5 unclosed boxes
    "{" * 100_000 + "}" * 100_000,  # deeply nested braces
    "answer is " * 100_000,  # 10^5 answer phrases without a number
    "<answer>" * 100_000,  # 10^5 open tags
    "1," * 500_000,  # a megabyte of separators
    "-" * 1_000_000,  # a megabyte of minus signs
    "\x00\ud800\uffff" * 1000,  # NUL, lone surrogate, non-characters
]


@pytest.mark.parametrize("mode", ["strict", "flexible"])
@pytest.mark.parametrize("response", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_input_scores_zero_fast(response, mode):
    result, elapsed = fastest(lambda: compute_score("openai/gsm8k", response, "72", mode=mode))
    assert result == {"score": 0.0, "acc": 0.0, "pred": ""}
    assert elapsed < 0.05, f"{elapsed * 1e3:.1f} ms"


def test_megabyte_response_with_answer_far_from_the_end():
    response = "#### 72\n" + "The reasoning goes on and on. " * 35_000  # ~1 MB after the marker
    result, seconds = fastest(lambda: score(response, "72"))
    assert result == {"score": 1.0, "acc": 1.0, "pred": "72"}
    assert seconds < 0.02


@pytest.mark.parametrize("truth", [None, "", "abc", 72, "12,500", " 72 "])
def test_odd_ground_truths_never_raise(truth):
    result = score("#### 72", truth)
    assert set(result) == KEYS
    assert result["acc"] == (1.0 if str(truth).strip() == "72" else 0.0)


def test_unknown_mode_is_a_config_error():
    with pytest.raises(ValueError, match="strict, flexible"):
        score("#### 72", "72", mode="lenient")


def test_registry_names_and_errors():
    assert rewards.get_reward("gsm8k_flexible")(None, "The answer is 9", "9")["acc"] == 1.0
    assert rewards.get_reward("gsm8k_strict")(None, "The answer is 9", "9")["acc"] == 0.0
    with pytest.raises(KeyError, match=r"known rewards: gsm8k_flexible, gsm8k_strict\W*$"):
        rewards.get_reward("gsm8k")


def test_docstring_examples():
    for module in (rewards, rewards.gsm8k, data.prompt):
        assert doctest.testmod(module).failed == 0, module.__name__


def test_reference_solutions_score_full_marks(gsm8k_rows):
    """Every fixture reference solution scores 1 against its own final answer, in both modes."""
    for row in gsm8k_rows:
        truth = canonical_number(row["answer"].rsplit("####", 1)[1])
        assert truth is not None
        for mode in ("strict", "flexible"):
            assert score(row["answer"], truth, mode=mode)["acc"] == 1.0, row["answer"]


# --- property-based -------------------------------------------------------------------------------------------

integers = st.integers(min_value=-(10**9), max_value=10**12)


def spellings(n: int) -> st.SearchStrategy[str]:
    """Ways a correct answer N can be written after `####`."""
    sign = "-" if n < 0 else ""
    digits = str(abs(n))
    grouped = f"{abs(n):,}"
    return st.sampled_from(
        [
            f"{sign}{digits}",
            f"{sign}{grouped}",
            f"{sign}${grouped}",
            f"{sign}{digits}.",
            f"{sign}{digits}.0",
            f"{sign}{digits}.00",
            f"{sign}00{digits}",
            f"{sign}{digits} apples",
            f"{sign}{digits}%",
        ]
    )


@settings(max_examples=300, deadline=None)
@given(data=st.data(), n=integers, prefix=st.text(max_size=200), space=st.sampled_from(["", " ", "  ", "\n"]))
def test_any_accepted_spelling_scores_one(data, n, prefix, space):
    spelled = data.draw(spellings(n))
    response = f"{prefix.replace('####', '')}\n####{space}{spelled}"
    for mode in ("strict", "flexible"):
        assert score(response, str(n), mode=mode) == {"score": 1.0, "acc": 1.0, "pred": str(n)}


@settings(max_examples=300, deadline=None)
@given(n=integers, m=integers)
def test_a_different_number_scores_zero(n, m):
    assume(n != m)
    for truth in (str(m), f"{m:,}"):
        result = score(f"#### {n:,}", truth)
        assert result["acc"] == 0.0 and result["score"] == 0.0 and result["pred"] == str(n)


@settings(max_examples=500, deadline=None)
@given(
    text=st.text(
        alphabet=st.sampled_from(list("0123456789,.-$%# {}\\boxed<answer>/ is:\n")) | st.characters(), max_size=400
    ),
    mode=st.sampled_from(["strict", "flexible"]),
)
def test_random_text_never_raises(text, mode):
    result = score(text, "72", mode=mode, format_score=0.5)
    assert set(result) == KEYS
    assert isinstance(result["score"], float) and isinstance(result["acc"], float)
    assert isinstance(result["pred"], str)
    assert result["acc"] in (0.0, 1.0)
    if result["pred"]:
        assert canonical_number(result["pred"]) == result["pred"]  # pred is always canonical
    assert extract_answer(text, mode) == (result["pred"] or None)
