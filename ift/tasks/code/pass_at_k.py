"""pass@k: the chance that at least one of k completions drawn from n passes.

With ``n`` completions of one problem of which ``c`` pass, the unbiased estimator of the
Codex paper (arXiv 2107.03374) is ``1 - C(n-c, k) / C(n, k)``: one minus the share of the
k-subsets of the n completions that hold no passing one. The binomials overflow floats
for n in the hundreds, so :func:`pass_at_k` computes the same ratio as a product of terms
in (0, 1]: ``C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k / i)``.
"""

from __future__ import annotations

from typing import Iterable, Tuple


def _check_counts(n: int, c: int, k: int) -> None:
    for name, value in (("n", n), ("c", c), ("k", k)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"pass_at_k: {name} must be an int, got {value!r}")
    if n < 1:
        raise ValueError(f"pass_at_k: n (completions per problem) must be at least 1, got {n}")
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k: c (passing completions) must be in [0, n={n}], got {c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k: k must be in [1, n={n}] (pass@{k} needs at least {k} completions per "
                         f"problem); sample more completions or ask for a smaller k")


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k of one problem with ``n`` completions, ``c`` of them passing.

    ``k > n`` is refused (the estimator is undefined: no k-subset exists); when fewer than
    ``k`` completions fail (``n - c < k``) every k-subset holds a passing one and the
    result is exactly 1.
    """
    _check_counts(n, c, k)
    if n - c < k:
        return 1.0
    none_passes = 1.0
    for i in range(n - c + 1, n + 1):
        none_passes *= 1.0 - k / i
    return 1.0 - none_passes


def mean_pass_at_k(counts: Iterable[Tuple[int, int]], k: int) -> float:
    """The mean over problems of :func:`pass_at_k`, each problem given as ``(n, c)``."""
    values = [pass_at_k(n, c, k) for n, c in counts]
    if not values:
        raise ValueError("mean_pass_at_k: no problems to average over")
    return sum(values) / len(values)


__all__ = ["mean_pass_at_k", "pass_at_k"]
