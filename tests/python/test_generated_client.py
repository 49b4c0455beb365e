"""A client generated from the committed OpenAPI document (``openapi-python-client``), used
for a call of each tag: what a team that generates its client from ``/openapi.json`` gets.
Its methods are named after the operationIds, and an error the document declares (429 from
the engine, here) comes back parsed, not as ``UnexpectedStatus``."""

from __future__ import annotations

import importlib
import pathlib
import subprocess
import sys
from types import ModuleType
from typing import Any, Iterator

import pytest

from conftest import Stack

SPEC = pathlib.Path(__file__).resolve().parents[2] / "openapi" / "openapi.json"


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    out = tmp_path_factory.mktemp("generated")
    config = out / "config.yaml"
    # No formatter run after generating: the code is imported, not read.
    config.write_text("post_hooks: []\n")
    result = subprocess.run(
        [sys.executable, "-m", "openapi_python_client", "generate", "--path", str(SPEC), "--meta", "none",
         "--output-path", str(out / "vault_client"), "--config", str(config)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # The one expected gap: the generator cannot type the OpenMetrics text of /metrics.
    output = result.stdout + result.stderr
    warnings = [line for line in output.splitlines() if line.startswith("WARNING")]
    assert warnings == ["WARNING parsing GET /metrics within system."], output
    sys.path.insert(0, str(out))
    try:
        yield importlib.import_module("vault_client")
    finally:
        sys.path.remove(str(out))
        for name in [n for n in sys.modules if n == "vault_client" or n.startswith("vault_client.")]:
            del sys.modules[name]


def op(tag: str, operation: str) -> Any:
    """The generated module of an operation (``api/<tag>/<operation_id in snake case>``)."""
    return importlib.import_module(f"vault_client.api.{tag}.{operation}")


def model(name: str) -> Any:
    return importlib.import_module("vault_client.models").__dict__[name]


def test_one_call_of_each_tag(generated: ModuleType, stack: Stack, key: str) -> None:
    anonymous = generated.Client(base_url=stack.url, raise_on_unexpected_status=True)
    user = generated.AuthenticatedClient(base_url=stack.url, token=key, raise_on_unexpected_status=True)
    admin = generated.AuthenticatedClient(
        base_url=stack.url, token=stack.create_key("admin"), raise_on_unexpected_status=True
    )

    health = op("health", "get_health").sync(client=anonymous)
    assert health.status == "ok"
    setup = op("setup", "get_setup_status").sync(client=anonymous)
    assert setup.status in ("pending", "in_progress", "complete")

    request = model("ChatCompletionRequest").from_dict(
        {"messages": [{"role": "user", "content": "hello there"}], "max_tokens": 5}
    )
    answer = op("inference", "create_chat_completion").sync(client=user, body=request)
    assert answer.object_ == "chat.completion" and answer.choices
    models = op("inference", "list_models").sync(client=user)
    assert "qwen2.5-32b-awq" in [card.id for card in models.data]

    created = op("conversations", "create_conversation").sync(
        client=user, body=model("CreateConversation").from_dict({"title": "generated"})
    )
    assert created.title == "generated"
    listed = op("conversations", "list_conversations").sync(client=user)
    assert created.id in [c.id for c in listed.items]

    keys = op("admin", "list_keys").sync(client=admin)
    assert len(keys.items) >= 2
    local = op("models", "list_local_models").sync(client=user)
    assert isinstance(local.items, list)
    resources = op("system", "get_system_resources").sync(client=admin)
    assert resources.memory.total_bytes > 0
    jobs = op("training", "list_training_jobs").sync(client=user)
    assert isinstance(jobs.items, list)


def test_declared_errors_come_back_parsed(generated: ModuleType, stack: Stack, key: str) -> None:
    user = generated.AuthenticatedClient(base_url=stack.url, token=key, raise_on_unexpected_status=True)
    # The engine is busy (fake_mode reaches the fake upstream untouched): a declared 429.
    request = model("ChatCompletionRequest").from_dict(
        {"messages": [{"role": "user", "content": "hi"}], "fake_mode": "error:429"}
    )
    busy = op("inference", "create_chat_completion").sync_detailed(client=user, body=request)
    assert busy.status_code == 429
    assert busy.parsed.error.code == "rate_limited" and busy.parsed.error.type_ == "rate_limit_error"
    assert busy.headers["retry-after"] == "1"
    bad_key = generated.AuthenticatedClient(base_url=stack.url, token="vault_sk_wrong", raise_on_unexpected_status=True)
    refused = op("inference", "list_models").sync_detailed(client=bad_key)
    assert refused.status_code == 401 and refused.parsed.error.type_ == "authentication_error"
