"""The snippets of README.md's "Clients" section, run as written against the gateway.

Each snippet follows an invisible marker, ``<!-- client-snippet: NAME -->``. Only the address
is replaced (``http://localhost:8000`` by the gateway's); the key comes from ``VAULT_KEY``, as
the README says. Every proxy variable points at a port that refuses, and tiktoken's cache is
empty, so a Python or shell snippet that reaches for the internet fails here as it would on
a box offline, even where the machine running the tests is online (Node 20's fetch reads no
proxy variable; the Node SDK calls nothing but the gateway)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import Stack

README = Path(__file__).resolve().parents[2] / "README.md"
PLACEHOLDER = "http://localhost:8000"
MARKED = re.compile(r"^<!-- client-snippet: ([\w-]+) -->\n```(\w+)\n(.*?)^```$", re.M | re.S)
CLIENTS = ["curl", "python", "node", "langchain", "llm"]
REPLY = "This is a reply from fake-vllm to: Hello"


def snippets() -> dict[str, tuple[str, str]]:
    """name → (language, code) of every marked block of the README."""
    return {name: (lang, code) for name, lang, code in MARKED.findall(README.read_text())}


@pytest.fixture(scope="module")
def closed_port() -> int:
    """A local port with nothing listening: connecting to it is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_snippet(
    request: pytest.FixtureRequest, name: str, url: str, key: str, extra_env: dict[str, str] | None = None,
    code: str | None = None,
) -> subprocess.CompletedProcess[str]:
    lang, text = snippets()[name]
    if name == "curl" and shutil.which("curl") is None:
        pytest.skip("curl is not installed: the README's curl snippet did not run")
    code = (code or text).replace(PLACEHOLDER, url)
    tmp: Path = request.getfixturevalue("tmp_path")
    proxy = f"http://127.0.0.1:{request.getfixturevalue('closed_port')}"
    # No OpenAI settings from the caller's shell: a snippet must work with what it says.
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_") and not k.lower().endswith("_proxy")}
    env.update(
        VAULT_KEY=key,
        # The venv's `llm` first on PATH.
        PATH=os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", ""),
        LLM_USER_PATH=str(tmp / "llm"),  # never the user's own llm configuration
        TIKTOKEN_CACHE_DIR=str(tmp / "tiktoken"),
        **{var: proxy for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")},
        no_proxy="127.0.0.1,localhost",
        NO_PROXY="127.0.0.1,localhost",
        **(extra_env or {}),
    )
    if lang == "sh":
        argv, cwd, stdin = ["bash", "-euo", "pipefail", "-c", code], tmp, None
    elif lang == "python":
        (tmp / "snippet.py").write_text(code)
        argv, cwd, stdin = [sys.executable, "snippet.py"], tmp, None
    elif lang == "js":
        # From tests/node, so `import 'openai'` finds its node_modules.
        argv, cwd, stdin = ["node", "--input-type=module"], request.getfixturevalue("node_dir"), code
    else:
        raise AssertionError(f"snippet {name}: no way to run a {lang!r} block")
    return subprocess.run(argv, cwd=cwd, env=env, input=stdin, capture_output=True, text=True, timeout=60)


def shown(done: subprocess.CompletedProcess[str]) -> str:
    return f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"


def test_the_readme_has_a_snippet_for_every_client() -> None:
    found = snippets()
    assert sorted(found) == sorted(CLIENTS)
    for name, (_, code) in found.items():
        assert PLACEHOLDER in code, f"snippet {name} does not use {PLACEHOLDER}"


@pytest.mark.parametrize("scheme", ["http", "https"])
@pytest.mark.parametrize("name", CLIENTS)
def test_snippet_answers(request: pytest.FixtureRequest, stack: Stack, key: str, name: str, scheme: str) -> None:
    env: dict[str, str] = {}
    if scheme == "http":
        url = stack.url
    else:
        # The box's self-signed certificate, trusted the way the README says.
        url, ca = request.getfixturevalue("https_url")
        env = {"CURL_CA_BUNDLE": ca, "SSL_CERT_FILE": ca, "NODE_EXTRA_CA_CERTS": ca}
    done = run_snippet(request, name, url, key, env)
    assert done.returncode == 0, shown(done)
    assert REPLY in done.stdout, shown(done)
    if name == "langchain":
        assert re.search(r"^[1-9]\d*$", done.stdout, re.M), "the embedding's length is printed\n" + shown(done)


@pytest.mark.parametrize("name", CLIENTS)
def test_snippet_fails_loudly_with_a_bad_key(request: pytest.FixtureRequest, stack: Stack, name: str) -> None:
    done = run_snippet(request, name, stack.url, "vault_sk_" + "x" * 48)
    assert done.returncode != 0, shown(done)
    assert "401" in done.stdout + done.stderr, shown(done)


def test_langchain_embeddings_without_the_flag_reach_for_the_internet(
    request: pytest.FixtureRequest, stack: Stack, key: str
) -> None:
    """Why the README passes check_embedding_ctx_length=False, and proof that these tests
    would catch a snippet that downloads something."""
    _, code = snippets()["langchain"]
    assert "check_embedding_ctx_length=False, " in code
    done = run_snippet(request, "langchain", stack.url, key, code=code.replace("check_embedding_ctx_length=False, ", ""))
    assert done.returncode != 0, shown(done)
    assert "openaipublic.blob.core.windows.net" in done.stderr, shown(done)
