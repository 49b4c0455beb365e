"""The official `openai` Node SDK against the gateway: tests/node/clients.mjs runs its checks
(chat, stream, embeddings, models, errors) and exits non-zero naming any that failed."""

import os
import subprocess
from pathlib import Path

from conftest import Stack


def test_openai_node_sdk(stack: Stack, key: str, node_dir: Path) -> None:
    env = {**os.environ, "VAULT_URL": stack.url, "VAULT_KEY": key}
    done = subprocess.run(
        ["node", "clients.mjs"], cwd=node_dir, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, f"node clients.mjs exited {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert "all passed" in done.stdout
