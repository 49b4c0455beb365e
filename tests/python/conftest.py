"""Fixtures: a gateway and its fake vLLM running inside this Python process
(``vault.Gateway``, built from this checkout by ``maturin develop``), and keys made through
``vault.Vault`` on its database — so the tests run exactly the code under test."""

from __future__ import annotations

from typing import Iterator

import pytest

import vault


class Stack:
    """An in-process gateway with the built-in fake upstream, and its database."""

    def __init__(self) -> None:
        self.gateway = vault.Gateway()
        self.gateway.start()
        self.url = self.gateway.url
        self.fake_url = self.gateway.upstream_url
        self.vault = vault.Vault.open(data_dir=self.gateway.data_dir)

    def create_key(self, scope: str = "user") -> str:
        return str(self.vault.keys.create("pytest", scope=scope)["key"])

    def close(self) -> None:
        self.gateway.stop()


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    s = Stack()
    yield s
    s.close()


@pytest.fixture(scope="session")
def key(stack: Stack) -> str:
    return stack.create_key("user")


@pytest.fixture()
def client(stack: Stack, key: str):
    import openai

    return openai.OpenAI(base_url=stack.url + "/v1", api_key=key, max_retries=0, timeout=30)
