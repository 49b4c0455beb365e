"""Fixtures: a real fake-vllm and vault-server on ephemeral ports, and a key from vault-cli.

The binaries come from target/debug (or VAULT_BIN_DIR); scripts/test builds them first.
"""

import json
import os
import pathlib
import subprocess
import tempfile
import threading

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN_DIR = pathlib.Path(os.environ.get("VAULT_BIN_DIR", REPO / "target" / "debug"))


def binary(name: str) -> str:
    path = BIN_DIR / name
    if not path.is_file():
        pytest.exit(f"{path} is missing: run `cargo build --workspace --bins` first", returncode=2)
    return str(path)


def read_until(proc: subprocess.Popen, pick):
    """Reads stdout lines until `pick` returns a value."""
    assert proc.stdout is not None
    for line in proc.stdout:
        found = pick(line.strip())
        if found:
            return found
    raise RuntimeError(f"{proc.args[0]} exited before reporting its address")


def fake_url(line: str):
    prefix = "fake-vllm listening on "
    return line[len(prefix):] if line.startswith(prefix) else None


def listening_addr(line: str):
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event.get("addr") if event.get("message") == "vault-server listening" else None


class Stack:
    """fake-vllm + vault-server + a data dir for vault-cli."""

    def __init__(self) -> None:
        self.tmp = tempfile.TemporaryDirectory()
        self.data_dir = os.path.join(self.tmp.name, "data")
        self.fake = subprocess.Popen(
            [binary("fake-vllm"), "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        self.fake_url = read_until(self.fake, fake_url)
        env = {"VAULT_PORT": "0", "VAULT_DATA_DIR": self.data_dir, "VLLM_BASE_URL": self.fake_url, "PATH": os.environ.get("PATH", "")}
        self.server = subprocess.Popen([binary("vault-server")], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.url = "http://" + read_until(self.server, listening_addr)
        # Keep draining the log so the server never blocks on a full pipe.
        threading.Thread(target=lambda: [None for _ in self.server.stdout], daemon=True).start()

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        env = {"VAULT_DATA_DIR": self.data_dir, "PATH": os.environ.get("PATH", "")}
        return subprocess.run([binary("vault-cli"), *args], env=env, capture_output=True, text=True, check=False)

    def create_key(self, scope: str = "user") -> str:
        out = self.cli("create-key", "--label", "pytest", "--scope", scope, "--json")
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)["key"]

    def close(self) -> None:
        for proc in (self.server, self.fake):
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.tmp.cleanup()


@pytest.fixture(scope="session")
def stack():
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
