"""
Vault (SOUL): `vault.setup` converges Vault: init once, unseal on every converge, kv-v2, the
service secrets, policy, AppRole, the scoped VAULT_TOKEN of .env and a file audit device (the plan
and its steps: mnemos_provision/vault_setup.py). `HostKeyStore` keeps the unseal keys on the host.

The hvac client runs on the controller; its requests go out from the host through the pyinfra
connector (mnemos_provision/host_http.py), so Vault on a remote host's or a container's loopback
is reached the same way as on @local.

This module loads hvac and requests (start-up time): roles/vault.py imports it only when Vault is
set up, the one lazy boundary; everything here is imported at the top.
"""

from __future__ import annotations

import base64
import json
import posixpath
import shlex
import time
from typing import cast

import hvac
from pyinfra import host
from pyinfra.api import FunctionCommand, OperationError, operation

from mnemos_provision import fact_batch, host_http, vault_setup
from mnemos_provision.operations.util import AS_USER, install_as_user, make_dirs_script, stage_dir


class HostKeyStore:
    """
    The keys file on the host (a vault_setup.KeyStore): 0600, written by its owner from root's
    0700 staging directory (docs/security.md), never printed. Commands go through a
    host_http Runner: the current pyinfra host's connector unless another is given (tests).

    `found` is the keys file as this run's secret read found it (mnemos_provision.secret_store:
    ("file", its bytes) or ("missing", None)); the plan uses it instead of reading the file again
    (`planning`). Every other load reads the host.
    """

    def __init__(self, path: str, user: str, group: str, runner: host_http.Runner | None = None,
                 found: tuple[str, bytes | None] | None = None):
        self.path, self.user, self.group = path, user, group
        self._runner = runner
        self.found = found

    @property
    def runner(self) -> host_http.Runner:
        if self._runner is None:
            self._runner = host_http.PyinfraRunner(host)
        return self._runner

    def load(self) -> dict | None:
        q = shlex.quote(self.path)
        rc, out = self.runner.run(f"if [ -f {q} ]; then echo PRESENT; base64 {q}; "
                                  f"else echo MISSING; fi; echo @@END@@")
        lines = out.splitlines()
        if rc != 0 or not lines or lines[0] not in ("PRESENT", "MISSING") or "@@END@@" not in lines:
            raise OperationError(f"cannot read {self.path}: {out.strip()[-200:]}")
        if lines[0] == "MISSING":
            return None
        return self._parse(base64.b64decode("".join(lines[1:lines.index("@@END@@")])))

    def _parse(self, data: bytes) -> dict | None:
        try:
            keys = json.loads(data) if data else None
        except ValueError:
            keys = []
        if keys is not None and not isinstance(keys, dict):
            raise OperationError(f"{self.path} is not the keys file the deploy writes (not a JSON "
                                 "object): restore it from your backup")
        return keys

    def planning(self) -> "HostKeyStore":
        """A read-only view for the plan: its load answers from `found` when the secret read
        had the file (or knew it missing), from the host otherwise."""
        return _PlanningKeys(self.path, self.user, self.group, self._runner, self.found)

    def save(self, data: dict) -> None:
        # root stages the file in a directory of its own; the user makes the folder (0700 when
        # missing, never changed otherwise) and writes the file (docs/security.md)
        stage = stage_dir()
        q = shlex.quote
        folder = posixpath.dirname(self.path)
        rc, _ = self.runner.run(f"mkdir -m 700 {q(stage)}")
        try:
            if rc == 0:
                self.runner.put(vault_setup.dumps_keys(data), f"{stage}/keys")
        except host_http.HostHTTPError:
            rc = 1
        if rc == 0:
            rc, _ = self.runner.run(
                f"{AS_USER}; ( {make_dirs_script(folder, self.user, self.group, '700', False)} ) "
                f"&& {install_as_user(self.user, self.group, f'{stage}/keys', self.path, '600')}")
        self.runner.run(f"rm -rf {q(stage)}")
        if rc != 0:
            raise OperationError(f"cannot write {self.path}")

    def initialize(self, client, desired: "vault_setup.Desired") -> dict:
        """
        sys/init's answer is the only copy of the unseal keys and the root token: the host command
        that sends the request also writes a 200 answer into the keys file (0600) before the
        controller reads it, so a run that dies right after Vault initialized leaves the keys on
        the host, and the next run unseals with them. A keys file already there is moved aside
        (`<path>.replaced-<UTC time>`), never overwritten.
        """
        with host_http.responses_kept(client.session,
                                      host_http.Keep(self.path, f"{self.user}:{self.group}")):
            result = client.sys.initialize(secret_shares=desired.key_shares,
                                           secret_threshold=desired.key_threshold)
        self.save(vault_setup.keys_record(result, desired))
        return result


class _PlanningKeys(HostKeyStore):
    def load(self) -> dict | None:
        kind, data = self.found or ("not read", None)
        if kind == "file":
            return self._parse(data or b"")
        if kind == "missing":
            return None
        return super().load()  # not read with the secret state, or not a plain file: read it

    def save(self, data: dict) -> None:
        raise RuntimeError("the plan never writes the keys file")

    def initialize(self, client, desired: "vault_setup.Desired") -> dict:
        raise RuntimeError("the plan never initializes Vault")


def _client(url: str, cacert: str | None, ahead: bool = False):
    # ahead: the plan's client, whose prefetch takes the fact batch's answers while they hold
    http = host_http.HostHTTP(host_http.PyinfraRunner(host), cacert=cacert,
                              ahead=fact_batch.planned_answers if ahead else None)
    client = hvac.Client(url=url, session=host_http.host_session(http))
    # hvac takes VAULT_TOKEN or ~/.vault-token of the controller's user when given no token: never
    # send that to the host's Vault (the root token is set once read from the keys file)
    client.token = None
    return client, http


def plan_ahead(url: str, desired: "vault_setup.Desired", store: HostKeyStore,
               cacert: str | None = None) -> None:
    """
    At plan time (the role, before `setup` is called): register with the fact batch the reads
    `setup`'s plan sends first (vault_setup.planned_reads, as root with the keys file's root
    token), so that the fact batch's command sends them and a converged Vault costs no host
    command of its own (fact_batch.expect_http). Only when this run's secret read had the keys
    file (or knew it missing): no host command here.
    """
    if (store.found or ("not read", None))[0] not in ("file", "missing"):
        return
    client, http = _client(url, cacert)
    root_token = vault_setup.ReadOnce(cast("vault_setup.KeyStore", store.planning())).root_token()
    fact_batch.expect_http(http, vault_setup.planned_reads(client, root_token, desired))


@operation()
def setup(url: str, desired: "vault_setup.Desired", store: "vault_setup.KeyStore | HostKeyStore",
                   wait_timeout: int = 120, cacert: str | None = None):
    """
    Converge Vault at `url` (as seen from the host) to `desired`. Reads first (plan); writes only
    what differs. Stops with a clear error, and never re-initializes, when Vault is initialized
    but the keys file is missing, or when the keys do not unseal it.

    + url: Vault's address on the host, e.g. http://127.0.0.1:8200
    + desired: vault_setup.Desired
    + store: where the unseal keys and root token live (HostKeyStore)
    + wait_timeout: seconds to wait for the API
    + cacert: CA file on the host for a TLS listener

    **Example:**

    .. code:: python

        vault.setup(
            url="http://127.0.0.1:8200",
            desired=vault_setup.Desired(...),
            store=vault.HostKeyStore("/home/dev/.config/mnemos/vault-keys.json", "dev", "dev"),
        )
    """
    # HostKeyStore has KeyStore's methods (load, save, initialize) without inheriting it
    keys = cast("vault_setup.KeyStore", store)
    client, http = _client(url, cacert, ahead=True)
    planning = cast("vault_setup.KeyStore", store.planning())
    try:
        try:  # the plan's reads in one batch; a Vault that does not answer yet is waited for
            changes = vault_setup.plan(client, planning, desired, prefetch=http.prefetch)
        except (host_http.HostHTTPError, hvac.exceptions.VaultError):
            if not host.state.is_executing:
                raise
            vault_setup.wait_for_api(client, wait_timeout)
            changes = vault_setup.plan(client, planning, desired, prefetch=http.prefetch)
    except (host_http.HostHTTPError, vault_setup.VaultSetupError,
            hvac.exceptions.VaultError) as exc:
        if not host.state.is_executing:  # planning before the stack runs: converge at execution
            changes = [f"converge once Vault answers ({exc})"]
        else:
            raise OperationError(str(exc)) from None
    finally:
        http.close()
    if not changes:
        host.noop("Vault is initialized, unsealed and configured")
        return

    def converge() -> None:
        # said before it starts (a first initialization waits for the API, then initializes,
        # unseals and writes every secret) and with how long it took; no value is ever printed
        started = time.monotonic()
        host.log(f"Vault: {len(changes)} step(s) to converge, first: {changes[0]} ...")
        client, http = _client(url, cacert)
        try:
            done = vault_setup.apply(client, keys, desired, prefetch=http.prefetch)
        except (host_http.HostHTTPError, vault_setup.VaultSetupError,
            hvac.exceptions.VaultError) as exc:
            raise OperationError(f"Vault: {exc}") from None
        finally:
            http.close()
        host.log(f"Vault: {', '.join(done) or 'nothing to do'} "
                 f"(done in {int(time.monotonic() - started)} s)")

    yield FunctionCommand(converge, (), {})


@operation()
def rotate_token(url: str, desired: "vault_setup.Desired",
                 store: "vault_setup.KeyStore | HostKeyStore", old: str, running: str = "",
                 wait_timeout: int = 120, cacert: str | None = None):
    """
    Rotate the scoped token of .env (VAULT_TOKEN) while the secret state records the rotation:
    the new token (desired.token_id) created with the policy and period vault.setup gives it, the
    old one revoked, then the new one checked accepted and the old one refused (403)
    (vault_setup.rotate_token). Called only while a rotation is recorded, so it always runs; no
    token is ever printed.

    + url: Vault's address on the host
    + desired: vault_setup.Desired (token_id: the new token)
    + store: the keys file (HostKeyStore): its root token creates and revokes
    + old: the token being replaced
    + running: a shell command run first that starts Vault's container when it is not running
    + wait_timeout: seconds to wait for the API
    + cacert: CA file on the host for a TLS listener

    **Example:**

    .. code:: python

        vault.rotate_token(url="http://127.0.0.1:8200", desired=vault_setup.Desired(...),
                           store=vault.HostKeyStore(...), old=old_token)
    """
    keys = cast("vault_setup.KeyStore", store)
    if running:
        yield running

    def rotate() -> None:
        client, http = _client(url, cacert)
        try:
            vault_setup.wait_for_api(client, wait_timeout)
            done = vault_setup.rotate_token(client, keys, desired, old)
        except (host_http.HostHTTPError, vault_setup.VaultSetupError,
                hvac.exceptions.VaultError) as exc:
            raise OperationError(f"Vault: VAULT_TOKEN rotation: {exc}; the rotation stays "
                                 "recorded in the secret state") from None
        finally:
            http.close()
        host.log(f"Vault: {', '.join(done)}")

    yield FunctionCommand(rotate, (), {})
