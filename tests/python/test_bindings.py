"""`import vault`: every public class and method, against real databases and gateways."""

from __future__ import annotations

import http.server
import json
import os
import pathlib
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from typing import Any, Iterator

import openai
import pytest

import vault

REPO = pathlib.Path(__file__).resolve().parents[2]


def call_api(method: str, url: str, key: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Authorization", f"Bearer {key}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request) as response:
        text = response.read()
        return json.loads(text) if text else None


@pytest.fixture()
def v(tmp_path: pathlib.Path) -> vault.Vault:
    return vault.Vault.open(data_dir=str(tmp_path))


@pytest.fixture()
def gateway(tmp_path: pathlib.Path) -> Iterator[vault.Gateway]:
    with vault.Gateway(data_dir=str(tmp_path)) as gw:
        yield gw


def test_open_reads_settings_without_secrets(tmp_path: pathlib.Path) -> None:
    v = vault.Vault.open(data_dir=str(tmp_path))
    config = v.config
    assert config["db_url"] == str(tmp_path / "vault.db")
    assert config["vllm_base_url"] == "http://localhost:8001"
    assert "secret" not in json.dumps(config)
    explicit = vault.Vault.open(db_url=str(tmp_path / "other.db"))
    assert explicit.config["db_url"] == str(tmp_path / "other.db")
    assert "Vault(" in repr(v)


def test_setup_status_follows_the_flag_file(tmp_path: pathlib.Path, v: vault.Vault) -> None:
    pending = v.setup_status()
    assert (pending["status"], pending["flag_file"]) == ("pending", False)
    assert [(s["name"], s["state"]) for s in pending["steps"]] == [
        ("network", "pending"),
        ("admin", "pending"),
        ("tls", "pending"),
        ("model", "pending"),
    ]
    (tmp_path / ".setup_complete").write_text("")
    assert v.setup_status()["status"] == "complete"


def test_keys_are_created_listed_checked_and_revoked(v: vault.Vault) -> None:
    v.keys.create("spare admin", scope="admin")  # the last admin key cannot be revoked
    created = v.keys.create("notebook", scope="admin")
    assert created["key"].startswith("vault_sk_") and len(created["key"]) == 57
    assert created["prefix"] == created["key"][:13]
    listed = v.keys.list()
    assert [k["id"] for k in listed][-1] == created["id"]
    assert "key" not in listed[-1]
    assert v.keys.check(created["key"], scope="admin")["scope"] == "admin"
    v.keys.create("user")
    revoked = v.keys.revoke(created["prefix"])
    assert revoked["is_active"] is False and revoked["revoked_at"]
    with pytest.raises(vault.Unauthorized) as unauthorized:
        v.keys.check(created["key"])
    assert unauthorized.value.status == 401
    assert [k["is_active"] for k in v.keys.list(include_revoked=False)] == [True, True]
    with pytest.raises(vault.Conflict):
        v.keys.revoke(created["key"])


def test_users_are_created_listed_and_deactivated(v: vault.Vault) -> None:
    user = v.users.create("Dr. Okafor", "okafor@clinic.example", role="admin")
    assert user["role"] == "admin" and user["is_active"] is True
    assert [u["id"] for u in v.users.list()] == [user["id"]]
    with pytest.raises(vault.InvalidInput) as invalid:
        v.users.create("Bad", "not-an-email")
    assert invalid.value.message.startswith("email")
    key = v.keys.create("okafor", user_id=user["id"])["key"]
    assert v.users.deactivate(user["id"])["is_active"] is False
    with pytest.raises(vault.Unauthorized):
        v.keys.check(key)
    with pytest.raises(vault.NotFound) as missing:
        v.users.deactivate("nobody")
    assert missing.value.code == "user_not_found"


def test_a_key_made_in_python_works_and_revoking_it_stops_it(v: vault.Vault, gateway: vault.Gateway) -> None:
    key = v.keys.create("pytest")
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key["key"], max_retries=0)
    assert client.models.list().data
    v.keys.revoke(str(key["id"]))
    with pytest.raises(openai.AuthenticationError):
        client.models.list()


def test_audit_rows_of_the_gateway_are_queried_and_exported(
    tmp_path: pathlib.Path, v: vault.Vault, gateway: vault.Gateway
) -> None:
    user = v.users.create("Auditor", "auditor@clinic.example")
    key = v.keys.create("audited", user_id=user["id"])["key"]
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)
    for _ in range(3):
        client.chat.completions.create(model="qwen2.5-32b-awq", messages=[{"role": "user", "content": "hi there"}])
    client.models.list()
    gateway.flush_audit()
    rows = v.audit.query(user_id=user["id"])
    assert len(rows) == 4
    chats = v.audit.query(user_id=user["id"], path="/v1/chat", method="post", status=200)
    assert len(chats) == 3 and chats[0]["tokens_input"] == 3 and chats[0]["model"] == "qwen2.5-32b-awq"
    assert chats[0]["id"] > chats[1]["id"], "newest first"
    older = v.audit.query(user_id=user["id"], before_id=chats[0]["id"], limit=1)
    assert older[0]["id"] == chats[1]["id"]
    assert v.audit.query(model="no-such-model") == []
    assert v.audit.query(since="2000-01-01T00:00:00Z", until="2000-01-02T00:00:00Z") == []
    with pytest.raises(vault.InvalidInput):
        v.audit.query(since="last tuesday")

    csv_path = tmp_path / "audit.csv"
    assert v.audit.export(str(csv_path), user_id=user["id"]) == 4
    lines = csv_path.read_text().splitlines()
    assert lines[0].startswith("id,timestamp,request_id") and len(lines) == 5
    json_path = tmp_path / "audit.json"
    assert v.audit.export(str(json_path), "json", path_prefix="/v1/chat") == 3
    assert len(json.loads(json_path.read_text())) == 3
    with pytest.raises(vault.InvalidInput):
        v.audit.export(str(tmp_path / "x"), "xml")  # type: ignore[arg-type]
    with pytest.raises(vault.InvalidInput):
        v.audit.export(str(tmp_path / "missing-dir" / "x.csv"))


def test_conversations_of_a_user_are_listed_read_and_exported(v: vault.Vault, gateway: vault.Gateway) -> None:
    alice = v.users.create("Alice", "alice@clinic.example")
    bob = v.users.create("Bob", "bob@clinic.example")
    key = v.keys.create("alice", user_id=alice["id"])["key"]
    created = call_api("POST", gateway.url + "/vault/conversations", key, {"title": "Rounds"})
    call_api("POST", f"{gateway.url}/vault/conversations/{created['id']}/messages", key, {"role": "user", "content": "Bed 4 ok"})
    page = v.conversations.list(alice["id"])
    assert page["total"] == 1 and page["items"][0]["title"] == "Rounds"
    assert v.conversations.list(bob["id"])["total"] == 0
    full = v.conversations.get(alice["id"], created["id"])
    assert full["messages"][0]["content"] == "Bed 4 ok"
    markdown = v.conversations.export(alice["id"], created["id"], format="markdown")
    assert markdown.startswith("# Rounds") and "Bed 4 ok" in markdown
    assert json.loads(v.conversations.export(alice["id"], created["id"]))["title"] == "Rounds"
    with pytest.raises(vault.NotFound):
        v.conversations.get(bob["id"], created["id"])
    with pytest.raises(vault.InvalidInput):
        v.conversations.list(alice["id"], limit=0)


def test_training_jobs_are_listed_and_read(v: vault.Vault, gateway: vault.Gateway) -> None:
    admin = v.keys.create("admin", scope="admin")["key"]
    job = call_api("POST", gateway.url + "/vault/training/jobs", admin, {"name": "LoRA", "model": "m", "dataset": "d.jsonl"})
    assert [j["id"] for j in v.training.list()] == [job["id"]]
    assert v.training.list(status="running") == []
    assert v.training.get(job["id"])["status"] == "queued"
    with pytest.raises(vault.NotFound):
        v.training.get("missing")
    with pytest.raises(vault.InvalidInput):
        v.training.list(status="sleeping")


def test_gateway_lifecycle(tmp_path: pathlib.Path) -> None:
    gw = vault.Gateway(data_dir=str(tmp_path), token_delay_ms=1)
    assert not gw.running and repr(gw) == "Gateway(stopped)"
    with pytest.raises(vault.Conflict):
        _ = gw.url
    gw.start()
    try:
        assert gw.running and gw.url.startswith("http://127.0.0.1:")
        assert gw.data_dir == str(tmp_path)
        with pytest.raises(vault.Conflict):
            gw.start()
        # A second gateway in front of the first one's fake upstream.
        with vault.Gateway(gw.upstream_url, data_dir=str(tmp_path / "second")) as second:
            assert second.upstream_url == gw.upstream_url
            key = vault.Vault.open(data_dir=str(tmp_path / "second")).keys.create("k")["key"]
            client = openai.OpenAI(base_url=second.url + "/v1", api_key=key, max_retries=0)
            assert [m.id for m in client.models.list()][0] == "qwen2.5-32b-awq"
    finally:
        gw.stop()
    assert not gw.running
    gw.stop()  # stopping twice is fine


def serve_forever(handler: type[http.server.BaseHTTPRequestHandler]) -> tuple[str, http.server.HTTPServer]:
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", server


def test_check_upstream_maps_each_upstream_failure(gateway: vault.Gateway) -> None:
    models = vault.check_upstream(gateway.upstream_url)
    assert models["data"][0]["id"] == "qwen2.5-32b-awq"

    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    with pytest.raises(vault.UpstreamUnavailable) as unavailable:
        vault.check_upstream(f"http://127.0.0.1:{port}")
    assert unavailable.value.status == 503 and unavailable.value.details["suggestion"]

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    try:
        with pytest.raises(vault.UpstreamTimeout) as timeout:
            vault.check_upstream(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout=0.3)
        assert timeout.value.status == 504
    finally:
        silent.close()

    class Broken(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b'{"error": {"message": "engine dead", "type": "InternalServerError", "code": 500}}'
            self.send_response(500)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    url, server = serve_forever(Broken)
    try:
        with pytest.raises(vault.UpstreamError) as upstream:
            vault.check_upstream(url)
        assert upstream.value.status == 500 and upstream.value.message == "engine dead"
    finally:
        server.shutdown()
    with pytest.raises(vault.InvalidInput):
        vault.check_upstream("not a url")


def test_check_upstream_sends_the_api_key_vllm_was_started_with() -> None:
    class Keyed(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ok = self.headers.get("Authorization") == "Bearer upstream-key"
            body = b'{"object": "list", "data": []}' if ok else b'{"error": "Unauthorized"}'
            self.send_response(200 if ok else 401)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    url, server = serve_forever(Keyed)
    try:
        assert vault.check_upstream(url, api_key="upstream-key")["data"] == []
        with pytest.raises(vault.UpstreamError) as refused:
            vault.check_upstream(url)
        assert refused.value.status == 502 and "credentials" in refused.value.message
    finally:
        server.shutdown()


def test_a_database_that_is_not_one_raises_the_base_error(tmp_path: pathlib.Path) -> None:
    garbage = tmp_path / "vault.db"
    garbage.write_bytes(b"this is not a database file, not even close" * 100)
    with pytest.raises(vault.VaultError) as caught:
        vault.Vault.open(db_url=str(garbage))
    assert type(caught.value) is vault.VaultError
    assert caught.value.status == 500 and str(garbage) not in caught.value.message


def test_each_kind_of_failure_raises_its_own_class(v: vault.Vault) -> None:
    user_key = v.keys.create("u")["key"]
    v.users.create("A", "a@clinic.example")
    cases: list[tuple[Any, type[vault.VaultError], str]] = [
        (lambda: v.keys.create("x", scope="root"), vault.InvalidInput, "invalid_request"),
        (lambda: v.keys.check("vault_sk_" + "Z" * 48), vault.Unauthorized, "invalid_api_key"),
        (lambda: v.keys.check(user_key, scope="admin"), vault.Forbidden, "insufficient_scope"),
        (lambda: v.keys.revoke("999"), vault.NotFound, "key_not_found"),
        (lambda: v.users.create("B", "A@clinic.example"), vault.Conflict, "email_taken"),
    ]
    for call, cls, code in cases:
        with pytest.raises(vault.VaultError) as caught:
            call()
        assert type(caught.value) is cls and caught.value.code == code, (cls, caught.value)


def test_every_public_name_is_documented() -> None:
    for name in vault.__all__:
        obj = getattr(vault, name)
        assert (obj.__doc__ or "").strip(), f"vault.{name} has no docstring"
        for attr, member in vars(obj).items() if isinstance(obj, type) else []:
            if not attr.startswith("_") and callable(member):
                assert (member.__doc__ or "").strip(), f"vault.{name}.{attr} has no docstring"
    text = subprocess.run([sys.executable, "-c", "import vault; help(vault)"], capture_output=True, text=True).stdout
    assert "Gateway" in text and "check_upstream" in text


def test_the_example_runs_and_type_checks() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "examples/gateway_report.py"], cwd=REPO, capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    assert "audit: 4 requests" in run.stdout
    typed = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "examples/gateway_report.py"], cwd=REPO, capture_output=True, text=True
    )
    assert typed.returncode == 0, typed.stdout
