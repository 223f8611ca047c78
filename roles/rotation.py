"""
Secret rotation (deploys/rotate.py, docs/rotation.md): the new values recorded in the secret state
beside the old ones, then set in the services that hold them (PostgreSQL, Redis, Grafana's admin;
MinIO's application user by the MinIO role, after the state; MinIO's root by the container's
recreation with the new .env). The tree role then writes the state
(the new values only) and .env, the stack role recreates exactly the containers whose
configuration holds them, `rotation_checks` logs in with the new values and is refused the old
ones. A rotation the state records as in progress (a run killed part-way) is finished the same way
by the next `rotate` or the next plain converge (deploys/bootstrap.py).
"""

from __future__ import annotations

import json
import os
import socket
import time

from pyinfra.api import deploy

from mnemos_provision import dotenv, stack
from mnemos_provision.context import HostContext, fail
from mnemos_provision.operations import files, rotation
from mnemos_provision.operations.util import StateSwap
from mnemos_provision.render import dotenv_context
from mnemos_provision.secret_store.load import (
    found_with_secrets,
    secret_decision,
    start_rotation,
)


def secrets_of(entries: list[str]) -> list[str]:
    """The secrets a rotation of `entries` (the `rotate` setting) changes (stack.ROTATABLE)."""
    return [secret for name in entries for secret in stack.ROTATABLE[name][1]]


def _service_of(secret: str) -> str:
    return next(service for service, secrets in stack.ROTATABLE.values() if secret in secrets)


def _env_value(ctx: HostContext, name: str) -> str:
    """A variable of .env that is not a secret (POSTGRES_USER, GRAFANA_ADMIN_USER, ...)."""
    return dotenv.resolve(dotenv_context(ctx.settings, ctx.home), {},
                          ctx.settings.dotenv_overrides, with_secrets=False)[name]


def _postgres_user(ctx: HostContext) -> str:
    return _env_value(ctx, "POSTGRES_USER")


# The login check (rotation.LOGIN_CHECKS) of a secret and the .env variable of the account that
# logs in with it; a secret not here is checked by its service's name (PostgreSQL, Redis).
_CHECK_OF = {"GRAFANA_ADMIN_PASSWORD": ("grafana", "GRAFANA_ADMIN_USER"),
             "MINIO_ROOT_PASSWORD": ("minio-root", "MINIO_ROOT_USER")}


def _check_services(ctx: HostContext, secrets: list[str]) -> None:
    """Before any change: each service involved runs here (launch_stack, its profile), and MinIO
    is set up by the deploy (it sets the application user's new key)."""
    s = ctx.settings
    problems = [f"{secret}: the {_service_of(secret)} service is not enabled on this host "
                f"(compose_profiles) or launch_stack is false; a rotation sets the new value in "
                "the running service" for secret in secrets if _service_of(secret)
                and not (s.launch_stack and s.service_enabled(_service_of(secret)))]
    if "MINIO_APP_SECRET_KEY" in secrets and not (s.minio_init and s.publish_ports):
        problems.append("MINIO_APP_SECRET_KEY: minio_init and publish_ports must be true: the "
                        "deploy sets the application user's new key through MinIO's admin API")
    if "VAULT_TOKEN" in secrets:
        problems += _vault_token_problems(ctx)
    if problems:
        fail("the rotation cannot run; nothing on the host was changed:", problems)


def _vault_token_problems(ctx: HostContext) -> list[str]:
    """VAULT_TOKEN: the deploy sets Vault up (it creates the new token through Vault's API) and
    the keys file holds the root token (it creates and revokes); read before any change."""
    s = ctx.settings
    if not (s.vault_init and s.publish_ports):
        return ["VAULT_TOKEN: vault_init and publish_ports must be true: the deploy creates the "
                "new token and revokes the old one through Vault's API"]
    kind, data = found_with_secrets(ctx, "vault_keys") or ("not read", None)
    try:
        root = kind == "file" and bool(json.loads(data or b"{}").get("root_token"))
    except (ValueError, AttributeError):
        root = False
    if not root:
        return [f"VAULT_TOKEN: {ctx.vault_keys_path} holds no root token ({kind}; "
                "vault_revoke_root_token revokes it): the deploy cannot create the new token. "
                "Rotate it by hand with a root or sudo token (docs/secrets.md)"]
    return []


@deploy("Secret rotation")
def rotation_start(ctx: HostContext, services: list[str]):
    """
    Rotate the secrets of `services` (or finish the rotations the state records, with none):
    the state that records them (old and new values) written first, by compare-and-swap, then
    each new value set in its service. The roles that follow write the state and .env.
    """
    decision = secret_decision(ctx)
    if services:
        _check_services(ctx, secrets_of(services))
        read, decision = start_rotation(ctx, secrets_of(services))
        holder = (f"{socket.gethostname()} pid {os.getpid()} at "
                  f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}")
        files.secret(
            name="Record the rotation in progress (old and new values) in the secret state",
            path=ctx.secrets_state_path, content=decision.in_progress(),
            user=ctx.user, group=ctx.group,
            swap=StateSwap(expected=read.expected, lock=ctx.secrets_state_path + ".lock",
                           holder=holder, keep_damaged=read.damaged),
            create_dirs=read.state_dir_missing)
    if not decision.rotating:
        return
    _check_services(ctx, list(decision.rotating))
    decision.applied = True  # the roles after this one write, render and send the new values
    project = ctx.settings.compose_project
    for secret, (old, new) in decision.rotating.items():
        service = _service_of(secret)
        if not service:
            continue  # JWT_SECRET_KEY, BACKUP_ENCRYPTION_KEY: the state, .env, the tree, Vault
        container = stack.service(service).container_name(project)
        if secret == "POSTGRES_PASSWORD":
            rotation.postgres_password(
                name=f"Set the new {secret} in PostgreSQL (ALTER ROLE)", container=container,
                root=ctx.root, service=service, role=_postgres_user(ctx),
                verifier=rotation.scram_sha_256(new))
        elif secret == "REDIS_PASSWORD":
            rotation.redis_password(
                name=f"Set the new {secret} in Redis's running config (CONFIG SET requirepass)",
                container=container, root=ctx.root, service=service, new=new, old=old)
        elif secret == "GRAFANA_ADMIN_PASSWORD":
            rotation.grafana_password(
                name=f"Set the new {secret} in Grafana's database (grafana cli admin "
                     "reset-admin-password)",
                container=container, root=ctx.root, service=service, new=new)
        # MINIO_ROOT_PASSWORD: MinIO reads its root credentials from its environment at start
        # only (its IAM data is not encrypted with them since RELEASE.2021-04-22T15-44-28Z: plain
        # text without a KMS), so nothing is set in the running server: the tree role writes
        # .env and compose recreates the container with it; a run killed before that leaves the
        # old credentials working and the record in the state, which the next run finishes.
        # VAULT_TOKEN: created in Vault, the old one revoked, by the Vault role's
        # vault_token_rotation, which runs next (roles/vault.py: the lazy boundary of hvac)
        # MINIO_APP_SECRET_KEY: set by the MinIO role (minio.setup: the application user's
        # credentials refused, it sets the state's key with the root credentials) after the tree
        # role wrote the state: a run killed between them leaves MinIO behind the state, and
        # every converge catches it up


@deploy("Secret rotation: checks")
def rotation_checks(ctx: HostContext):
    """Each rotated secret: the new value accepted by its service, the old one refused."""
    decision = secret_decision(ctx)
    project = ctx.settings.compose_project
    for secret, (old, new) in decision.rotating.items():
        service = _service_of(secret)
        kind, user_var = _CHECK_OF.get(secret, (service, "POSTGRES_USER"))
        if kind not in rotation.LOGIN_CHECKS:
            continue  # MinIO's app key: minio.setup checks the user's credentials every run
        rotation.check_password(
            name=f"{stack.service(service).label}: the new {secret} is accepted, the old one "
                 "refused",
            kind=kind, container=stack.service(service).container_name(project),
            user=_env_value(ctx, user_var) if kind != "redis" else "", new=new, old=old)
