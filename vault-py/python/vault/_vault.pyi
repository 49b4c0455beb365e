"""Type stubs of the native part of ``vault`` (built from vault-py/src)."""

from types import TracebackType
from typing import Any, Literal

JsonDict = dict[str, Any]

def check_upstream(url: str, timeout: float = 5.0, api_key: str | None = None) -> JsonDict:
    """Asks an inference upstream for its model list; raises Upstream* errors."""

class Vault:
    """An open Vault database."""

    @staticmethod
    def open(db_url: str | None = None, data_dir: str | None = None) -> Vault:
        """Opens (creating if needed) the database."""
    @property
    def keys(self) -> Keys: ...
    @property
    def users(self) -> Users: ...
    @property
    def conversations(self) -> Conversations: ...
    @property
    def training(self) -> TrainingJobs: ...
    @property
    def audit(self) -> Audit: ...
    @property
    def config(self) -> JsonDict:
        """The resolved settings, without secrets."""
    def setup_status(self) -> JsonDict:
        """``{"status": "pending" | "in_progress" | "complete", "flag_file": bool}``."""

class Keys:
    """API keys."""

    def create(self, label: str, scope: Literal["user", "admin"] = "user", user_id: str | None = None) -> JsonDict:
        """Creates a key; ``result["key"]`` is the raw key, shown this once."""
    def list(self, include_revoked: bool = True) -> list[JsonDict]: ...
    def check(self, key: str, scope: Literal["user", "admin"] | None = None) -> JsonDict:
        """Checks a raw key as the gateway would; raises Unauthorized or Forbidden."""
    def revoke(self, key: str) -> JsonDict:
        """Revokes a key named by the whole key, its prefix, or its id."""

class Users:
    """Users."""

    def create(self, name: str, email: str, role: Literal["user", "admin"] = "user") -> JsonDict: ...
    def list(self) -> list[JsonDict]: ...
    def deactivate(self, user_id: str) -> JsonDict: ...

class Conversations:
    """One user's conversations."""

    def list(self, user_id: str, limit: int = 20, offset: int = 0) -> JsonDict: ...
    def get(self, user_id: str, conversation_id: str) -> JsonDict: ...
    def export(self, user_id: str, conversation_id: str, format: Literal["json", "markdown"] = "json") -> str: ...

class TrainingJobs:
    """Training job records."""

    def list(self, status: str | None = None) -> list[JsonDict]: ...
    def get(self, job_id: str) -> JsonDict: ...

class Audit:
    """The audit log."""

    def query(
        self,
        *,
        user_id: str | None = None,
        key_prefix: str | None = None,
        method: str | None = None,
        path: str | None = None,
        status: int | None = None,
        model: str | None = None,
        since: str | None = None,
        until: str | None = None,
        limit: int = 100,
        before_id: int | None = None,
    ) -> list[JsonDict]:
        """Rows matching every filter given, newest first."""
    def export(
        self,
        path: str,
        format: Literal["csv", "json"] = "csv",
        *,
        user_id: str | None = None,
        key_prefix: str | None = None,
        method: str | None = None,
        path_prefix: str | None = None,
        status: int | None = None,
        model: str | None = None,
        since: str | None = None,
        until: str | None = None,
    ) -> int:
        """Writes matching rows to a file; returns how many."""

class Gateway:
    """A gateway running in this process on 127.0.0.1 and a free port."""

    def __init__(
        self,
        upstream: str | None = None,
        *,
        data_dir: str | None = None,
        db_url: str | None = None,
        token_delay_ms: int = 0,
        upstream_timeout: float | None = None,
    ) -> None: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def flush_audit(self) -> None: ...
    @property
    def running(self) -> bool: ...
    @property
    def url(self) -> str: ...
    @property
    def upstream_url(self) -> str: ...
    @property
    def data_dir(self) -> str: ...
    def __enter__(self) -> Gateway: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool: ...
