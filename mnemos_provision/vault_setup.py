"""
Vault (SOUL) set-up, idempotent: init once, unseal whenever sealed, kv-v2 at the design's mount,
the stack's service secrets, a read policy for the MNEMOS services, AppRole with a role for them,
the scoped token of .env (VAULT_TOKEN, created with the ID the secret state holds, as an orphan so
that it outlives the root token), a file audit device, and optionally the root token revoked.

`plan` reads only and says what differs; `apply` makes it so. Both take an hvac.Client (its
transport is mnemos_provision.host_http: requests go out from the host) and a KeyStore (the 0600
keys file on the host). Nothing here prints a key or a token.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import hvac
import hvac.exceptions as vault_errors


class VaultSetupError(Exception):
    """A state the deploy must not repair by itself; the message says what to do."""


@dataclass
class Desired:
    url: str
    keys_path: str  # for messages
    key_shares: int
    key_threshold: int
    mount: str  # "mnemos" (the design's VAULT_MOUNT_PATH=mnemos/)
    secrets: dict  # {"postgres": {...}, ...} written under <mount>/data/<name>
    policy_name: str
    policy: str
    approle_name: str
    approle: dict = field(default_factory=dict)  # token_policies, token_ttl, token_max_ttl
    token_id: str = ""  # VAULT_TOKEN of .env
    token_period: str = "768h"
    audit_file: str = "/vault/logs/audit.log"
    revoke_root_token: bool = False


class KeyStore:
    """The unseal keys and root token: load() -> dict | None, save(dict), initialize(...)."""

    def load(self) -> dict | None:
        raise NotImplementedError

    def save(self, data: dict) -> None:
        raise NotImplementedError

    def planning(self) -> KeyStore:
        """The store the plan reads: this one; a store that already read the keys may answer from
        that (operations.vault.HostKeyStore, given the secret state's read)."""
        return self

    def initialize(self, client: hvac.Client, desired: Desired) -> dict:
        """
        Initialize Vault and store its answer, the only copy of the unseal keys and the root
        token. Here the answer is saved once the controller has it; a store that can, keeps it
        before (operations.vault.HostKeyStore: written on the host by the command that sends the
        request), so that a run that dies in between does not lose it.
        """
        result = client.sys.initialize(secret_shares=desired.key_shares,
                                       secret_threshold=desired.key_threshold)
        self.save(keys_record(result, desired))
        return result


class ReadOnce(KeyStore):
    """A KeyStore read at most once (the plan reads only): later loads answer the first one's
    result, or raise its error again."""

    def __init__(self, store: KeyStore):
        self.store = store
        self._read: tuple[dict | None, Exception | None] | None = None

    def load(self) -> dict | None:
        if self._read is None:
            try:
                self._read = (self.store.load(), None)
            except Exception as exc:  # kept, raised where plan needs the keys
                self._read = (None, exc)
        keys, error = self._read
        if error is not None:
            raise error
        return keys

    def root_token(self) -> str | None:
        """The root token when the keys can be read and hold one; None otherwise (never raises:
        plan reports an unreadable keys file where it needs it)."""
        try:
            return (self.load() or {}).get("root_token")
        except Exception:
            return None


def keys_record(result: dict, desired: Desired) -> dict:
    """What the keys file holds, from sys/init's answer (as the answer itself, plus the shape)."""
    return {"keys": result["keys"], "keys_base64": result["keys_base64"],
            "root_token": result["root_token"], "shares": desired.key_shares,
            "threshold": desired.key_threshold}


def policy_for(mount: str) -> str:
    return (f'# MNEMOS services: read the stack\'s secrets\n'
            f'path "{mount}/data/*" {{\n  capabilities = ["read"]\n}}\n'
            f'path "{mount}/metadata/*" {{\n  capabilities = ["read", "list"]\n}}\n')


def wait_for_api(client: hvac.Client, timeout: float, sleep=time.sleep) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            client.sys.read_init_status()
            return
        except Exception as exc:  # transport errors, 5xx while starting
            last = exc
        if time.monotonic() >= deadline:
            raise VaultSetupError(f"Vault at {client.url} does not answer after {timeout:.0f} s "
                                  f"({last})")
        sleep(2)


def _keys(store: KeyStore, desired: Desired) -> dict:
    keys = store.load()
    if keys is None:
        raise VaultSetupError(
            f"Vault at {desired.url} is initialized but {desired.keys_path} is missing: restore it "
            "from your backup. The deploy never re-initializes an initialized Vault (that would "
            "lose every secret stored in it).")
    return keys


def _unseal(client: hvac.Client, keys: dict, desired: Desired) -> None:
    status = client.sys.read_seal_status()
    if not status["sealed"]:
        return
    needed = status["t"]
    available = keys.get("keys_base64") or keys.get("keys") or []
    if len(available) < needed:
        raise VaultSetupError(f"{desired.keys_path} holds {len(available)} unseal key(s); Vault "
                              f"needs {needed}: restore the complete keys file")
    client.sys.submit_unseal_key(reset=True)
    for key in available[:needed]:
        try:
            status = client.sys.submit_unseal_key(key=key)
        except vault_errors.VaultError as exc:
            raise VaultSetupError(f"the unseal keys in {desired.keys_path} do not unseal Vault at "
                                  f"{desired.url} ({type(exc).__name__}): they belong to another "
                                  "Vault, or the file was altered") from None
    if status["sealed"]:
        raise VaultSetupError(f"Vault at {desired.url} is still sealed after {needed} keys from "
                              f"{desired.keys_path}")


def _root_client(client: hvac.Client, keys: dict) -> hvac.Client | None:
    token = keys.get("root_token")
    if not token:
        return None
    client.token = token
    return client


def _unsealed_root(client: hvac.Client, store: KeyStore, desired: Desired,
                   done: list[str]) -> tuple[dict, hvac.Client | None]:
    """The keys file's keys, Vault unsealed with them if it is sealed ("unsealed" added to
    `done`), and a client of the root token (None when it was revoked)."""
    keys = _keys(store, desired)
    if client.sys.read_seal_status()["sealed"]:
        _unseal(client, keys, desired)
        done.append("unsealed")
    return keys, _root_client(client, keys)


def _mounts(client) -> dict:
    data = client.sys.list_mounted_secrets_engines()
    return data.get("data", data)


def _auth_methods(client) -> dict:
    data = client.sys.list_auth_methods()
    return data.get("data", data)


def _audit_devices(client) -> dict:
    data = client.sys.list_enabled_audit_devices()
    return data.get("data", data)


def _read_secret(client, desired: Desired, name: str) -> dict | None:
    try:
        return client.secrets.kv.v2.read_secret_version(
            path=name, mount_point=desired.mount, raise_on_deleted_version=True)["data"]["data"]
    except vault_errors.InvalidPath:
        return None


def _policy_current(client, desired: Desired) -> bool:
    try:
        rules = client.sys.read_policy(name=desired.policy_name)
    except vault_errors.InvalidPath:
        return False
    return rules.get("rules", (rules.get("data") or {}).get("rules")) == desired.policy


def _role_current(client, desired: Desired) -> bool:
    try:
        role = client.auth.approle.read_role(role_name=desired.approle_name)["data"]
    except vault_errors.InvalidPath:
        return False
    return all(_normal(role.get(k)) == _normal(v) for k, v in desired.approle.items())


def _token_state(client, desired: Desired) -> str:
    """
    "valid", "wrong-policies", "not-orphan" or "missing" for the scoped token of .env. It must be
    an orphan: a token is revoked with its parent (Vault's token hierarchy), and the root token may
    be revoked (revoke_root_token) or replaced.
    """
    try:
        token = client.auth.token.lookup(token=desired.token_id)["data"]
    except (vault_errors.Forbidden, vault_errors.InvalidRequest, vault_errors.InvalidPath):
        return "missing"
    if desired.policy_name not in token.get("policies", []):
        return "wrong-policies"
    return "valid" if token.get("orphan") else "not-orphan"


def _ensure_token(root: hvac.Client, desired: Desired) -> bool:
    """The scoped token of .env (desired.token_id) valid, created when it is not; True when
    created."""
    state = _token_state(root, desired)
    if state in ("wrong-policies", "not-orphan"):
        root.auth.token.revoke(token=desired.token_id)
    if state == "valid":
        return False
    # no_parent (root or sudo only, as id and period): an orphan, which survives the
    # revocation of the root token that creates it
    root.auth.token.create(id=desired.token_id, policies=[desired.policy_name],
                           period=desired.token_period, renewable=True, no_parent=True,
                           display_name="mnemos-env", no_default_policy=False)
    return True


def _token_answers(client: hvac.Client, token: str) -> bool:
    """Whether Vault accepts `token` (auth/token/lookup-self with it: 200, or 403 refused)."""
    before, client.token = client.token, token
    try:
        client.auth.token.lookup_self()
        return True
    except vault_errors.Forbidden:
        return False
    finally:
        client.token = before


def rotate_token(client: hvac.Client, store: KeyStore, desired: Desired, old: str) -> list[str]:
    """
    A rotation of VAULT_TOKEN (deploys/rotate.py, docs/rotation.md), while the secret state
    records it (old and new): Vault unsealed if it is sealed; the new token (desired.token_id)
    created as vault.setup creates it (same policy, period, orphan); the old one revoked; then
    the check: the new token accepted, the old one refused (403). Each step is skipped when
    already done, so a run killed part-way is finished by the next. Returns what was done.
    """
    done: list[str] = []
    _, root = _unsealed_root(client, store, desired, done)
    if root is None:
        raise VaultSetupError(
            f"{desired.keys_path} holds no root token (vault_revoke_root_token): the deploy "
            "cannot create the new VAULT_TOKEN; create it with a root or sudo token (or "
            "`vault operator generate-root`), or end the rotation by removing the "
            "rotating:VAULT_TOKEN line of the secret state")
    if _ensure_token(root, desired):
        done.append("created the new VAULT_TOKEN")
    if old and old != desired.token_id:
        try:
            root.auth.token.lookup(token=old)
            exists = True
        except (vault_errors.Forbidden, vault_errors.InvalidRequest, vault_errors.InvalidPath):
            exists = False
        if exists:
            root.auth.token.revoke(token=old)
            done.append("revoked the old VAULT_TOKEN")
    if not _token_answers(client, desired.token_id):
        raise VaultSetupError("the new VAULT_TOKEN is refused by Vault after it was created")
    if old and old != desired.token_id and _token_answers(client, old):
        raise VaultSetupError("the old VAULT_TOKEN is still accepted by Vault after its "
                              "revocation")
    done.append("checked: the new VAULT_TOKEN accepted, the old one refused (403)")
    return done


def _check_mount(mount: dict | None, desired: Desired) -> None:
    if mount is not None and (mount.get("type") != "kv"
                              or str((mount.get("options") or {}).get("version")) != "2"):
        raise VaultSetupError(f"{desired.mount}/ is mounted as {mount.get('type')} "
                              f"{mount.get('options')}, not kv version 2: move it away or choose "
                              "another mount")


def _config_differences(client: hvac.Client, desired: Desired) -> list[str]:
    diffs = []
    mount = _mounts(client).get(desired.mount + "/")
    _check_mount(mount, desired)
    if mount is None:
        diffs.append(f"kv-v2 secrets engine at {desired.mount}/")
    for name, secret in desired.secrets.items():
        if mount is None or _read_secret(client, desired, name) != secret:
            diffs.append(f"secret {desired.mount}/{name}")
    if not _policy_current(client, desired):
        diffs.append(f"policy {desired.policy_name}")
    if "approle/" not in _auth_methods(client):
        diffs += ["approle auth method", f"approle role {desired.approle_name}"]
    elif not _role_current(client, desired):
        diffs.append(f"approle role {desired.approle_name}")
    if desired.token_id and _token_state(client, desired) != "valid":
        diffs.append("VAULT_TOKEN (the scoped token of .env)")
    if "file/" not in _audit_devices(client):
        diffs.append("file audit device")
    return diffs


def _normal(value):
    """Vault returns TTLs as seconds; accept "1h" and 3600 as the same."""
    if isinstance(value, str) and value[-1:] in "smh" and value[:-1].isdigit():
        return int(value[:-1]) * {"s": 1, "m": 60, "h": 3600}[value[-1]]
    if isinstance(value, list):
        return sorted(value)
    return value


def planned_reads(client: hvac.Client, root_token: str | None,
                  desired: Desired) -> list[Callable[[], object]]:
    """
    The reads `plan` makes of a converged Vault (initialized, unsealed, configured), as calls of
    `client` for `prefetch` to record and send in one batch before plan runs: each is the very
    helper plan calls, so the requests are the same. A read plan makes that is not here is still
    made, one host command later (the converge test counts them).
    """
    return [client.sys.read_init_status, client.sys.read_seal_status,
            *configuration_reads(client, root_token, desired)]


def configuration_reads(client: hvac.Client, root_token: str | None,
                        desired: Desired) -> list[Callable[[], object]]:
    """The reads of the configuration (mount, secrets, policy, AppRole, token, audit), as root;
    none without a root token."""
    reads: list[Callable[[], object]] = []
    if not root_token:
        return reads

    def as_root(read: Callable[[hvac.Client], object]) -> Callable[[], object]:
        def call() -> object:
            before, client.token = client.token, root_token
            try:
                return read(client)
            finally:
                client.token = before
        return call
    reads += [as_root(_mounts)]
    reads += [as_root(partial(_read_secret, desired=desired, name=name))
              for name in desired.secrets]
    reads += [as_root(lambda c: _policy_current(c, desired)), as_root(_auth_methods),
              as_root(lambda c: _role_current(c, desired)), as_root(_audit_devices)]
    if desired.token_id:
        reads.append(as_root(lambda c: _token_state(c, desired)))
    return reads


def plan(client: hvac.Client, store: KeyStore, desired: Desired,
         prefetch: Callable[[list[Callable[[], object]]], None] | None = None) -> list[str]:
    """
    What `apply` would change, read-only. [] on a converged Vault. The keys are read once. With
    `prefetch` (host_http.HostHTTP.prefetch), the reads of a converged Vault go out first, in one
    batch (`planned_reads`), whatever the number of secrets.
    """
    store = ReadOnce(store)
    if prefetch is not None:
        prefetch(planned_reads(client, store.root_token(), desired))
    if not client.sys.read_init_status()["initialized"]:
        return [f"initialize Vault ({desired.key_shares} key shares, "
                f"threshold {desired.key_threshold})"]
    keys = _keys(store, desired)
    diffs = []
    if client.sys.read_seal_status()["sealed"]:
        diffs.append("unseal Vault")
        # configuration is read after unsealing, in apply
        return diffs + ["configuration (read once unsealed)"]
    root = _root_client(client, keys)
    if root is None:
        return diffs  # root token revoked: only unsealing is managed
    diffs += _config_differences(root, desired)
    if desired.revoke_root_token:
        diffs.append("revoke the root token")
    return diffs


def apply(client: hvac.Client, store: KeyStore, desired: Desired,
          prefetch: Callable[[list[Callable[[], object]]], None] | None = None) -> list[str]:
    """Converge Vault; returns what was done. With `prefetch`, the configuration is read in one
    batch once Vault is unsealed (each read comes before the write it decides, and no write
    changes what another read answers)."""
    done = []
    if not client.sys.read_init_status()["initialized"]:
        store.initialize(client, desired)
        done.append("initialized")
    keys, root = _unsealed_root(client, store, desired, done)
    if root is None:
        return done
    if prefetch is not None:
        prefetch(configuration_reads(root, keys.get("root_token"), desired))
    mount = _mounts(root).get(desired.mount + "/")
    _check_mount(mount, desired)
    if mount is None:
        root.sys.enable_secrets_engine(backend_type="kv", path=desired.mount,
                                       options={"version": "2"})
        done.append(f"mounted kv-v2 at {desired.mount}/")
    for name, secret in desired.secrets.items():
        if _read_secret(root, desired, name) != secret:
            root.secrets.kv.v2.create_or_update_secret(path=name, secret=secret,
                                                       mount_point=desired.mount)
            done.append(f"wrote {desired.mount}/{name}")
    if not _policy_current(root, desired):
        root.sys.create_or_update_policy(name=desired.policy_name, policy=desired.policy)
        done.append(f"policy {desired.policy_name}")
    if "approle/" not in _auth_methods(root):
        root.sys.enable_auth_method(method_type="approle")
        done.append("enabled approle")
    if not _role_current(root, desired):
        root.auth.approle.create_or_update_approle(role_name=desired.approle_name,
                                                   **desired.approle)
        done.append(f"approle role {desired.approle_name}")
    if desired.token_id and _ensure_token(root, desired):
        done.append("created VAULT_TOKEN")
    if "file/" not in _audit_devices(root):
        root.sys.enable_audit_device(device_type="file", options={"file_path": desired.audit_file})
        done.append("file audit device")
    if desired.revoke_root_token:
        root.auth.token.revoke_self()
        keys = dict(keys)
        keys.pop("root_token", None)
        store.save(keys)
        done.append("revoked the root token")
    return done


def dumps_keys(data: dict) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()
