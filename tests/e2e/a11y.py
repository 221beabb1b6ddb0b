"""The accessibility check of the browser tests: axe-core (the copy bundled in the axe-playwright-python
package, so nothing is fetched at test time) run on the page as it stands.

Only serious and critical violations fail a test: those stop someone from using the page (text below
WCAG AA contrast, a field without a label, a button without a name). Minor and moderate findings are
advice, reported by axe but not asserted here."""

from __future__ import annotations

from axe_playwright_python.sync_playwright import Axe

FAILING_IMPACTS = ("serious", "critical")
# The WCAG 2.1 A and AA rules, and axe's best practices (landmarks, one main, headings in order).
RULES = {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]}

_axe = Axe()


def serious_violations(page) -> list[str]:
    """Serious and critical axe violations on the page, one plain line each with the elements it
    found (empty when there are none). Frames are not entered: the only frames are prototypes'
    previews, which are the prototypes' own code (from another origin), not the store's pages."""
    results = _axe.run(page, options={"runOnly": RULES, "resultTypes": ["violations"], "iframes": False})
    found = []
    for violation in results.response["violations"]:
        if violation.get("impact") not in FAILING_IMPACTS:
            continue
        where = "; ".join(
            f"{' '.join(map(str, node.get('target', [])))} ({_last_line(node.get('failureSummary'))})"
            for node in violation["nodes"][:5]
        )
        found.append(f"{violation['id']} ({violation['impact']}): {violation['help']} — {where}")
    return found


def _last_line(summary: str | None) -> str:
    """axe's failure summary ends with the line that says what is wrong with this element."""
    lines = (summary or "").strip().splitlines()
    return lines[-1].strip() if lines else "no details"
