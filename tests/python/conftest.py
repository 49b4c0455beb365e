"""Fixtures: a gateway and its fake vLLM running inside this Python process
(``vault.Gateway``, built from this checkout by ``maturin develop``), and keys made through
``vault.Vault`` on its database — so the tests run exactly the code under test."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
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


@pytest.fixture(scope="session")
def https_url(stack: Stack) -> tuple[str, str]:
    """The gateway's URL in HTTPS (after installing a self-signed certificate through the
    setup wizard) and the certificate to trust."""
    import json
    import os
    import urllib.request

    request = urllib.request.Request(
        stack.url + "/vault/setup/tls",
        data=json.dumps({"mode": "self_signed"}).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request) as answer:
        assert answer.status == 200
    port = stack.url.rsplit(":", 1)[1]
    return f"https://localhost:{port}", os.path.join(stack.gateway.data_dir, "tls", "cert.pem")


@pytest.fixture(params=["http", "https"])
def client(request: pytest.FixtureRequest, stack: Stack, key: str):
    """The official client, in plain HTTP and over HTTPS (trusting the box's certificate)."""
    import ssl

    import openai

    if request.param == "http":
        return openai.OpenAI(base_url=stack.url + "/v1", api_key=key, max_retries=0, timeout=30)
    url, ca = request.getfixturevalue("https_url")
    http = openai.DefaultHttpxClient(verify=ssl.create_default_context(cafile=ca), timeout=30)
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, http_client=http)


NODE_DIR = Path(__file__).resolve().parents[1] / "node"


def _node_modules_current() -> bool:
    """Whether tests/node/node_modules holds what package-lock.json pins, and the lock still
    matches package.json (npm ci would refuse it otherwise), judged by npm's own record of
    the install (node_modules/.package-lock.json)."""
    try:
        lock = json.loads((NODE_DIR / "package-lock.json").read_text())["packages"]
        installed = json.loads((NODE_DIR / "node_modules" / ".package-lock.json").read_text())["packages"]
    except FileNotFoundError:
        return False
    wanted = json.loads((NODE_DIR / "package.json").read_text()).get("dependencies", {})
    pinned = {path: entry.get("integrity") for path, entry in lock.items() if path}
    have = {path: entry.get("integrity") for path, entry in installed.items()}
    return lock[""].get("dependencies", {}) == wanted and pinned == have


@pytest.fixture(scope="session")
def node_dir() -> Path:
    """tests/node with its packages installed (npm ci when missing or stale); skips, saying
    why, where node or npm is not on PATH."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node is not installed (node and npm must be on PATH): the Node SDK checks did not run")
    major = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout
    if int(major.lstrip("v").split(".")[0]) < 20:
        pytest.skip(f"node {major.strip()} is too old (the openai SDK needs 20 or later): the Node SDK checks did not run")
    if not _node_modules_current():
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, capture_output=True, text=True, timeout=600
        )
        if done.returncode != 0:
            pytest.fail(f"npm ci in {NODE_DIR} failed:\n{done.stdout}\n{done.stderr}", pytrace=False)
    return NODE_DIR
