"""The catalogue of error codes: unique, well-formed, and documented."""

from __future__ import annotations

import re

from reconciler.catalogue import Code, by_id
from reconciler.render.catalogue import DOCS_FILE, errors_markdown


def test_numbers_are_unique_and_in_their_ranges() -> None:
    numbers = [c.value.number for c in Code]
    assert len(numbers) == len(set(numbers))
    assert all(1000 <= n <= 6999 for n in numbers)


def test_every_code_has_a_title_and_an_actionable_hint() -> None:
    for code in Code:
        assert re.fullmatch(r"RCN-\d{4}", code.id)
        assert code.title
        assert code.hint.endswith((".", "?"))
        assert by_id(code.id) is code


def test_docs_page_is_current_and_has_an_anchor_per_code() -> None:
    text = DOCS_FILE.read_text(encoding="utf-8")
    assert text == errors_markdown()
    for code in Code:
        assert f'<a id="{code.anchor}"></a>' in text
        assert code.docs_url.endswith(f"docs/errors.md#{code.anchor}")
