"""The Markdown summary of a run: for the log, and as the body of the run's pull request."""

from __future__ import annotations

from collections import Counter

from .. import __version__
from ..markdown import code
from .report import RunReport


def cell(text: object) -> str:
    """A Markdown table cell for text from users or the Hub: a code span nothing inside can break out of."""
    return code(text, table=True)


def weights(record) -> str:
    if not record.super_weights:
        return "none"
    shown = ", ".join(
        f"L{w.layer}[{w.row}, {w.col}]" + (f" e{w.expert}" if w.expert is not None else "")
        for w in record.super_weights[:4]
    )
    more = f" +{len(record.super_weights) - 4}" if len(record.super_weights) > 4 else ""
    return f"{len(record.super_weights)}: {shown}{more}"


def audit_table(rows: list[tuple[str, object]]) -> list[str]:
    """The Markdown table of audits: (model, measured record) each."""
    lines = [
        "| model | revision | verdict | super weights | perplexity: original, zeroed, control |",
        "|---|---|---|---|---|",
    ]
    for model, r in rows:
        a = r.ablation
        figures = f"{a.perplexity_original:,.2f}"
        if a.perplexity_ablated is not None:
            figures += f", {a.perplexity_ablated:,.2f} (x{a.damage:,.1f}), {a.perplexity_control:,.2f}"
        lines.append(f"| {cell(model)} | {code(r.revision[:12])} | **{a.verdict}** | {weights(r)} | {figures} |")
    return lines


def render(report: RunReport) -> str:
    lines = [f"## Super Weight Index run {report.run_id}", ""]
    hardware = {r.hardware for _, r in report.audited}
    lines.append(
        f"{len(report.audited)} audited, {len(report.same_weights)} recognised as identical weights, "
        f"{len(report.failed)} failed; {report.pending} pending. superweight {__version__}"
        + (f" on {', '.join(sorted(hardware))}" if hardware else "")
        + f"; started {report.started}, finished {report.finished or '(not finished)'}."
    )
    if report.audited:
        lines += ["", "### Audited", "", *audit_table([(item.model, r) for item, r in report.audited])]
    if report.same_weights:
        lines += ["", "### Identical weights (no download)", ""]
        lines += [
            f"- {code(m)} {code(rev[:12])}: same files as {code(ref.model)} {code(ref.revision[:12])}"
            for m, rev, ref in report.same_weights
        ]
    if report.failed or report.retrying:
        lines += ["", "### Not audited", "", "| model | revision | reason | message |", "|---|---|---|---|"]
        for item in report.failed + report.retrying:
            state = "" if item.state == "failed" else " (will retry)"
            rev = code(item.revision[:12]) if item.revision else "-"
            lines.append(f"| {cell(item.model)} | {rev} | {cell(item.code)}{state} | {cell(item.message)} |")
    if report.stopped:
        lines += ["", f"Stopped early, the rest waits for a later run: {code(report.stopped)}"]
    if report.recovered:
        lines += ["", f"Recovered {len(report.recovered)} item(s) left running by a run that stopped."]
    if report.requests:
        lines += ["", "### Requests", ""] + [f"- {code(path)}: {code(outcome)}" for path, outcome in report.requests]
    d = report.discovery
    if d is not None:
        skipped = Counter(i.code for i in d.skipped)
        reasons = ", ".join(f"{why} {n}" for why, n in skipped.most_common()) or "none"
        lines += [
            "",
            "### Discovery",
            "",
            f"{d.examined} new model(s) examined: {len(d.queued)} queued, "
            f"{len(d.already_audited)} already audited, {len(d.same_weights)} identical weights; "
            f"skipped: {reasons}.",
        ]
        if d.screened:  # by range reads, each with its record in the index (listed in the pull request)
            outcomes = Counter(outcome for _, outcome in d.screened)
            lines.append(
                f"\n{len(d.screened)} derivative(s) of indexed models screened: "
                + ", ".join(f"{outcome} {n}" for outcome, n in sorted(outcomes.items()))
                + "."
            )
    return "\n".join(lines) + "\n"
