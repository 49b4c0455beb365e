"""The OpenAPI document against the server that serves it: schemathesis generates requests
from the document for every operation, with an admin key and with a user key, and runs all
of its checks on each answer (no server error, statuses, headers and bodies as documented,
data the document allows accepted, data it forbids refused, ...). The seed is fixed, so a
run is repeatable; the examples are bounded so it takes about a minute."""

from __future__ import annotations

from typing import Any

import schemathesis
from schemathesis import GenerationMode
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from conftest import Stack

EXAMPLES_PER_OPERATION = 40

# Where a request the document allows may still be refused, for a reason the document
# cannot state: the engine checks the inference fields itself (vLLM decides what it
# accepts), a static address needs its prefix length and address together, a time zone
# must exist on this host, a certificate must parse and match its key, a model must be in
# the manifest, an audit or log time bound must be an RFC 3339 timestamp (with a period's
# start before its end), a cursor must be one the API gave, a model id must name a
# folder of the models dir (complete, and fitting the GPUs to load), an import a model
# folder under an import root, and an operation id one that was started.
ACCEPTANCE_DECIDED_ELSEWHERE = {
    "POST /v1/chat/completions",
    "POST /v1/completions",
    "POST /v1/embeddings",
    "PUT /vault/admin/config/network",
    "PUT /vault/admin/config/system",
    "POST /vault/setup/network",
    "POST /vault/setup/tls",
    "POST /vault/admin/config/tls",
    "PUT /vault/admin/config",
    "GET /vault/admin/audit",
    "GET /vault/admin/audit/export",
    "GET /vault/admin/audit/stats",
    "GET /vault/system/logs",
    "GET /vault/models/{model_id}",
    "DELETE /vault/models/{model_id}",
    "POST /vault/models/{model_id}/load",
    "POST /vault/models/{model_id}/unload",
    "GET /vault/models/operations/{operation_id}",
    "POST /vault/models/import",
    "POST /vault/setup/model",
}


def test_every_operation_keeps_to_the_document() -> None:
    # A gateway of its own: generated requests create, change and revoke things.
    stack = Stack()
    try:
        schema = schemathesis.openapi.from_url(stack.url + "/openapi.json")
        failures = []
        operations = [result.ok() for result in schema.get_all_operations()]
        documented = sum(len(methods) for methods in schema.raw_schema["paths"].values())
        assert len(operations) == documented > 0
        for operation in operations:
            try:
                check_operation(operation, stack)
            except (Exception, BaseExceptionGroup) as failure:  # try all, show every failure
                failures.append(f"{operation.label}: {failure}")
        assert not failures, "\n\n".join(failures)
    finally:
        stack.close()


def check_operation(operation: Any, stack: Stack) -> None:
    # Requests the document forbids are generated too, and every answer to them is checked
    # (no server error, the error shape as documented), but their refusal is not required:
    # by design the gateway ignores query parameters it does not know, and passes body
    # fields it does not know to the engine as sent, as OpenAI-compatible servers do.
    excluded = [negative_data_rejection]
    if operation.label in ACCEPTANCE_DECIDED_ELSEWHERE:
        excluded.append(positive_data_acceptance)

    modes = operation.as_strategy(GenerationMode.POSITIVE) | operation.as_strategy(GenerationMode.NEGATIVE)

    @given(case=modes)
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        for scope in ("admin", "user"):
            # A fresh key each time: a generated request may revoke the key it was sent with.
            key = stack.create_key(scope)
            case.call_and_validate(headers={"Authorization": f"Bearer {key}"}, excluded_checks=excluded)

    run()
