"""Vault from Python: keys, users, conversations, training jobs and the audit log of a Vault
database, and an in-process gateway for test harnesses and notebooks.

    import vault

    v = vault.Vault.open(data_dir="/opt/vault/data")
    key = v.keys.create("notebook", scope="user")["key"]

    with vault.Gateway() as gw:          # built-in fake upstream
        print(gw.url)                    # http://127.0.0.1:<port>
"""

from ._errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    Unauthorized,
    Unavailable,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
    VaultError,
)
from ._vault import Audit, Conversations, Gateway, Keys, TrainingJobs, Users, Vault, check_upstream

__all__ = [
    "Audit",
    "Conflict",
    "Conversations",
    "Forbidden",
    "Gateway",
    "InvalidInput",
    "Keys",
    "NotFound",
    "TrainingJobs",
    "Unauthorized",
    "Unavailable",
    "UpstreamError",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "Users",
    "Vault",
    "VaultError",
    "check_upstream",
]
