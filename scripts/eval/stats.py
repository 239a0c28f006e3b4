"""95% intervals and tests for accuracies on a fixed set of problems.

- `wilson_interval`: one model's accuracy (scipy's Wilson score interval).
- `newcombe_paired_interval`: the difference of two models on the SAME problems (Newcombe 1998, method 10).
- `mcnemar_exact_p`: do the problems only one of the two models solves split like a fair coin?
"""

from __future__ import annotations

import math

from scipy.stats import binomtest


def wilson_interval(successes: int, n: int) -> tuple[float, float]:
    """Wilson score interval (95%) for a binomial proportion; (0, 1) when n is 0.

    >>> [round(x, 4) for x in wilson_interval(5, 10)]
    [0.2366, 0.7634]
    >>> wilson_interval(0, 0)
    (0.0, 1.0)
    """
    if not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return 0.0, 1.0
    ci = binomtest(successes, n).proportion_ci(confidence_level=0.95, method="wilson")
    return float(ci.low) if successes else 0.0, float(ci.high) if successes < n else 1.0


def newcombe_paired_interval(both_correct: int, fixed: int, broke: int, both_wrong: int) -> tuple[float, float]:
    """Newcombe's square-and-add (Wilson score) interval for p_model - p_baseline on paired data.

    `fixed`: problems the model solves and the baseline does not; `broke`: the reverse. Newcombe (1998),
    Statistics in Medicine 17:2635, method 10, with its continuity-adjusted correlation. Fagerland, Lydersen &
    Laake's worked example (Cavo et al. 2012) gives -0.1186 to -0.0046:

    >>> [round(x, 4) for x in newcombe_paired_interval(59, 6, 16, 80)]
    [-0.1186, -0.0046]
    """
    n = both_correct + fixed + broke + both_wrong
    if n == 0:
        return -1.0, 1.0
    model_right, base_right = both_correct + fixed, both_correct + broke
    p1, p2 = model_right / n, base_right / n
    l1, u1 = wilson_interval(model_right, n)
    l2, u2 = wilson_interval(base_right, n)
    margins = model_right * (n - model_right) * base_right * (n - base_right)
    psi = 0.0
    if margins > 0:
        cross = both_correct * both_wrong - fixed * broke
        if cross > n / 2:
            psi = (cross - n / 2) / math.sqrt(margins)
        elif cross < 0:
            psi = cross / math.sqrt(margins)
    diff = p1 - p2
    lower = diff - math.sqrt(max(0.0, (p1 - l1) ** 2 + (u2 - p2) ** 2 - 2 * psi * (p1 - l1) * (u2 - p2)))
    upper = diff + math.sqrt(max(0.0, (p2 - l2) ** 2 + (u1 - p1) ** 2 - 2 * psi * (p2 - l2) * (u1 - p1)))
    return max(-1.0, lower), min(1.0, upper)


def mcnemar_exact_p(fixed: int, broke: int) -> float:
    """Two-sided exact McNemar p-value: scipy's binomial test of `fixed` of the discordant pairs at 1/2.

    >>> round(mcnemar_exact_p(6, 16), 6), mcnemar_exact_p(0, 0), mcnemar_exact_p(5, 5)
    (0.052479, 1.0, 1.0)
    """
    return float(binomtest(fixed, fixed + broke).pvalue) if fixed + broke else 1.0
