"""docs/errors.md, generated from the catalogue so the two never disagree.

``python -m reconciler.render.catalogue`` rewrites the page; ``--check`` fails when it is stale
(CI runs that).
"""

from __future__ import annotations

import sys
from pathlib import Path

from reconciler.catalogue import Code

DOCS_FILE = Path(__file__).resolve().parents[2] / "docs" / "errors.md"

_RANGES = {
    1: "Input: YAML, Score files, reconciler.yaml, placeholders",
    2: "Planning",
    3: "Execution and drivers",
    4: "Git and status reporting",
    5: "Store",
    6: "API and authentication",
    9: "Command line",
}


def errors_markdown() -> str:
    lines = [
        "# Error codes",
        "",
        "Every problem the reconciler reports carries a code. `reconciler explain CODE` prints the",
        "same text on the command line. This page is generated from `reconciler/catalogue.py`",
        "(`python -m reconciler.render.catalogue`); do not edit it by hand.",
        "",
    ]
    current = None
    for code in sorted(Code, key=lambda c: c.value.number):
        group = code.value.number // 1000
        if group != current:
            current = group
            lines += [f"## {_RANGES.get(group, 'Other')}", ""]
        lines += [
            f'<a id="{code.anchor}"></a>',
            f"### {code.id}: {code.title}",
            "",
            code.hint,
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    text = errors_markdown()
    if "--check" in argv:
        current = DOCS_FILE.read_text(encoding="utf-8") if DOCS_FILE.exists() else ""
        if current != text:
            print(
                f"{DOCS_FILE} is stale: run python -m reconciler.render.catalogue", file=sys.stderr
            )
            return 1
        return 0
    DOCS_FILE.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
