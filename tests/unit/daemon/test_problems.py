"""Problem documents (RFC 9457) and the API's codes, which must not collide with the catalogue."""

from __future__ import annotations

import json

from reconciler.catalogue import Code
from reconciler.daemon.problems import FieldError, Problem


def test_a_problem_document_carries_the_code_its_docs_and_the_errors() -> None:
    problem = Problem(
        Code.WEBHOOK_PAYLOAD_INVALID,
        400,
        "ref: expected a non-empty string",
        "/webhooks/github",
        (FieldError("ref: expected a non-empty string", "#/ref"),),
    )
    assert json.loads(problem.body()) == {
        "type": Code.WEBHOOK_PAYLOAD_INVALID.docs_url,
        "title": "webhook payload is not valid",
        "status": 400,
        "detail": "ref: expected a non-empty string",
        "instance": "/webhooks/github",
        "code": "RCN-6002",
        "hint": Code.WEBHOOK_PAYLOAD_INVALID.hint,
        "errors": [{"detail": "ref: expected a non-empty string", "pointer": "#/ref"}],
    }


def test_a_catalogue_code_makes_a_problem_too_and_errors_are_left_out_when_none() -> None:
    document = Problem(Code.RUN_NOT_FOUND, 404, "no run 'x'", "/api/v1/runs/x").document()
    assert document["code"] == "RCN-3015"
    assert str(document["type"]).endswith("#rcn-3015")
    assert "errors" not in document


def test_api_codes_live_in_the_catalogue_in_the_6xxx_range() -> None:
    numbers = [code.value.number for code in Code if code.name.startswith(("WEBHOOK_", "REQUEST_"))]
    assert numbers
    assert all(6000 <= number < 7000 for number in numbers)
