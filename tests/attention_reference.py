"""ABSGD's reference weighting (``mylosses.py:21-56``) transcribed line for line in Python floats, for the tests."""

from __future__ import annotations

import math

# Batches of different sizes for a 4-step moving average.
BATCHES = [
    [0.3, 2.1, 0.9],
    [1.5, 0.1, 4.0, 2.2, 0.7],
    [0.05, 3.3, 1.1, 0.6],
    [2.5, 2.5, 0.2, 5.0, 1.9, 0.4],
]


def naive_steps(batches, lam, gamma, alpha):
    """Per step ``(p, u, loss)``; ``lam >= 200`` is the plain mean and leaves ``u`` alone. Overflows like the
    reference (``math.exp`` raises OverflowError) for large ``loss / lam``."""
    u, out = 0.0, []
    for losses in batches:
        if lam >= 200:
            p = [1 / len(losses)] * len(losses)
        else:
            e = [math.exp(loss / lam) for loss in losses]
            u = (1 - gamma) * u + gamma * alpha * sum(e) / len(e)
            p = [ei / (u * len(e)) for ei in e]
        out.append((p, u, sum(pi * li for pi, li in zip(p, losses, strict=True))))
    return out
