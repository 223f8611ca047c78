"""
Vault (SOUL): the desired Vault of the settings and the secret state, converged by `vault.setup`
(mnemos_provision/operations/vault.py).
"""

from __future__ import annotations

from typing import Any

from pyinfra.api import deploy

from mnemos_provision import stack
from mnemos_provision.context import HostContext, skip_setup
from mnemos_provision.operations import rotation
from mnemos_provision.secret_store.load import found_with_secrets, load_secrets, secret_decision


def desired_fields(ctx: HostContext, secrets: dict) -> dict[str, Any]:
    """The Vault the settings and the secrets want: vault_setup.Desired's fields, its policy
    aside (vault_setup.policy_for(mount))."""
    s = ctx.settings
    mount = s.vault_mount_path.strip("/")
    return dict(
        url=vault_url(ctx), keys_path=ctx.vault_keys_path,
        key_shares=s.vault_key_shares, key_threshold=s.vault_key_threshold,
        mount=mount,
        secrets={
            "postgres": {"username": "mnemos", "password": secrets["POSTGRES_PASSWORD"],
                         "databases": "mnemos,mnemos_cortex,mnemos_genome,mnemos_synkron"},
            "redis": {"password": secrets["REDIS_PASSWORD"]},
            "minio": {"root_user": "mnemos", "root_password": secrets["MINIO_ROOT_PASSWORD"],
                      "access_key": s.minio_app_user,
                      "secret_key": secrets["MINIO_APP_SECRET_KEY"]},
            "grafana": {"admin_user": "admin", "admin_password": secrets["GRAFANA_ADMIN_PASSWORD"]},
            "jwt": {"secret_key": secrets["JWT_SECRET_KEY"], "algorithm": "HS256"},
        },
        policy_name=s.vault_policy_name,
        approle_name=s.vault_approle_name,
        approle={"token_policies": [s.vault_policy_name], "token_ttl": "1h",
                 "token_max_ttl": "24h"},
        token_id=secrets["VAULT_TOKEN"], token_period=s.vault_token_period,
        revoke_root_token=s.vault_revoke_root_token,
    )


def vault_url(ctx: HostContext) -> str:
    s = ctx.settings
    scheme = "https" if s.vault_tls else "http"
    return f"{scheme}://127.0.0.1:{s.ports['vault']}"


@deploy("Vault")
def vault_init(ctx: HostContext):
    s = ctx.settings
    if skip_setup(ctx, "vault", s.vault_init, "`docker compose exec vault vault operator init`"):
        return
    # The one lazy boundary: hvac and requests (about 0.3 s of start-up) load only when Vault is
    # set up; the modules behind it import everything at their top.
    from mnemos_provision import vault_setup
    from mnemos_provision.operations import vault

    secrets = load_secrets(ctx)
    fields = desired_fields(ctx, secrets)
    desired = vault_setup.Desired(**fields, policy=vault_setup.policy_for(fields["mount"]))
    store = vault.HostKeyStore(ctx.vault_keys_path, ctx.user, ctx.group,
                               found=found_with_secrets(ctx, "vault_keys"))
    cacert = f"{ctx.root}/config/vault/tls/vault.crt" if s.vault_tls else None
    url = vault_url(ctx)
    # the plan's first reads go out with the fact batch (one host command fewer)
    vault.plan_ahead(url, desired, store, cacert)
    vault.setup(name="Initialize, unseal and configure Vault", url=url,
                desired=desired, store=store, cacert=cacert)


@deploy("Vault: VAULT_TOKEN rotation")
def vault_token_rotation(ctx: HostContext):
    """
    A rotation of VAULT_TOKEN the run applies (deploys/rotate.py, or a converge finishing a
    recorded one; docs/rotation.md): after the rotation role, before the tree role writes the
    state. The new token is created in Vault and the old one revoked while the state records
    both, so a run killed between them leaves the new token, valid, in the record; then the new
    one is checked accepted and the old one refused. The rotation role checked, before any
    change, that the deploy sets Vault up and that the keys file holds the root token.
    """
    decision = secret_decision(ctx)
    if not (decision.applied and "VAULT_TOKEN" in decision.rotating):
        return
    from mnemos_provision import vault_setup  # the lazy boundary, as in vault_init
    from mnemos_provision.operations import vault

    s = ctx.settings
    old, _ = decision.rotating["VAULT_TOKEN"]
    fields = desired_fields(ctx, decision.effective())
    desired = vault_setup.Desired(**fields, policy=vault_setup.policy_for(fields["mount"]))
    vault.rotate_token(
        name="Create the new VAULT_TOKEN in Vault and revoke the old one (the new accepted, "
             "the old refused)",
        url=vault_url(ctx), desired=desired,
        store=vault.HostKeyStore(ctx.vault_keys_path, ctx.user, ctx.group),
        old=old, running=rotation.running(stack.service("vault").container_name(
            s.compose_project), ctx.root, "vault"),
        cacert=f"{ctx.root}/config/vault/tls/vault.crt" if s.vault_tls else None)
