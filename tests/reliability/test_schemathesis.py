"""Schemathesis: requests generated from the server's own OpenAPI schema, against the real server.

Every operation gets valid and invalid requests (bounded counts, so CI stays
quick); every answer must be no 5xx, a documented status code and content
type, and a body matching the schema. Admin operations run with the token.
"""

from __future__ import annotations

from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from store.directory import DirectoryStore
from tests.conftest import Server
from tests.reliability.conftest import AUTH, TOKEN

EXAMPLES_PER_OPERATION = 50
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def _fuzz(operation: schemathesis.APIOperation, mode: GenerationMode, count: int) -> int:
    calls = [0]

    @settings(
        max_examples=count,
        deadline=None,
        database=None,
        derandomize=True,  # the same requests on every CI run: a failure is reproducible
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        case.call_and_validate(headers=AUTH, checks=CHECKS, timeout=30)
        calls[0] += 1

    try:
        run()
    except Unsatisfiable:
        # No invalid request exists for an operation without parameters or body (GET /healthz).
        assert mode is GenerationMode.NEGATIVE, operation.label
    return calls[0]


def test_every_operation_answers_within_its_schema(serve, tiny_store: Path, capsys) -> None:
    store = DirectoryStore(tiny_store)
    versions, active = store.list_ids(), store.active()
    # The review inbox on, so that its routes answer for real (off, each is one documented 409).
    env = {"INTENTLY_MODEL_STORE": str(tiny_store), "INTENTLY_ADMIN_TOKEN": TOKEN, "INTENTLY_REVIEW": "true"}
    server: Server = serve(env=env)
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 14  # every route, admin ones included
    sent = {}
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            sent[(operation.label, mode.value)] = _fuzz(operation, mode, EXAMPLES_PER_OPERATION)
    # The server is still healthy and answering after everything it was sent, its store intact.
    assert server.proc.poll() is None
    assert store.list_ids() == versions and store.active() == active
    with capsys.disabled():
        print(f"\nschemathesis: {sum(sent.values())} requests over {len(operations)} operations, no failure")
    assert sum(sent.values()) > 10 * len(operations)
