"""The verdict rule, alone so that readers of the index can re-check verdicts without torch.

confirmed      ablated >= min_damage x original AND ablated >= min_margin x control
not_confirmed  candidates were found but fail that test
none_found     detection found no candidate

A non-finite perplexity with the super weights zeroed counts as unbounded damage; a non-finite control
makes the comparison impossible, so the verdict is not_confirmed.
"""

from __future__ import annotations

import math

from .records import Verdict


def judge(original: float, ablated: float, control: float, *, min_damage: float, min_margin: float) -> Verdict:
    if not math.isfinite(control):
        return "not_confirmed"
    if not math.isfinite(ablated):
        return "confirmed"
    return "confirmed" if ablated >= min_damage * original and ablated >= min_margin * control else "not_confirmed"
