"""
Vault set-up against a SIMULATED Vault HTTP API (tests/simulated_vault.py): no Vault binary or
image can be fetched here. Requests go through the real transport (curl on the "host", here this
machine). The last test runs the same code against a REAL Vault server when one is available
(VAULT_TEST_ADDR, or a `vault` binary on PATH started in server mode), and is skipped otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time

import hvac
import pytest

from mnemos_provision import vault_setup
from mnemos_provision.host_http import HostHTTP, HostHTTPError, LocalRunner, host_session
from tests.conftest import REPO, run
from tests.simulated_vault import SimulatedVault

pytestmark = pytest.mark.unit


class MemoryKeyStore(vault_setup.KeyStore):
    def __init__(self, data=None):
        self.data = data

    def load(self):
        return None if self.data is None else json.loads(json.dumps(self.data))

    def save(self, data):
        self.data = data


def desired(url, shares=3, threshold=2) -> vault_setup.Desired:
    return vault_setup.Desired(
        url=url, keys_path="/home/dev/.config/mnemos/vault-keys.json",
        key_shares=shares, key_threshold=threshold, mount="mnemos",
        secrets={"postgres": {"username": "mnemos", "password": "p" * 32},
                 "redis": {"password": "r" * 32}},
        policy_name="mnemos-services", policy=vault_setup.policy_for("mnemos"),
        approle_name="mnemos-services",
        approle={"token_policies": ["mnemos-services"], "token_ttl": "1h", "token_max_ttl": "24h"},
        token_id="mnemosTESTTOKEN0123456789abcdefghijklmn")


@pytest.fixture
def vault():
    sim = SimulatedVault()
    url = sim.start()
    http = HostHTTP(LocalRunner())
    client = hvac.Client(url=url, session=host_session(http))
    yield sim, client, url
    http.close()
    sim.stop()


def test_fresh_vault_is_initialized_unsealed_and_configured_then_left_alone(vault):
    sim, client, url = vault
    store, want = MemoryKeyStore(), desired(url)
    assert vault_setup.plan(client, store, want) == ["initialize Vault (3 key shares, threshold 2)"]
    done = vault_setup.apply(client, store, want)
    assert done[:2] == ["initialized", "unsealed"]
    assert {"mounted kv-v2 at mnemos/", "wrote mnemos/postgres", "policy mnemos-services",
            "enabled approle", "approle role mnemos-services", "created VAULT_TOKEN",
            "file audit device"} <= set(done)
    assert len(store.data["keys_base64"]) == 3 and store.data["root_token"]
    assert not sim.sealed and sim.kv["mnemos/"]["postgres"][-1]["password"] == "p" * 32
    token = sim.tokens[want.token_id]
    assert "mnemos-services" in token["policies"] and token["renewable"] \
        and token["period"] == "768h"
    writes = list(sim.writes)
    assert vault_setup.plan(client, store, want) == []
    assert vault_setup.apply(client, store, want) == []
    assert sim.writes == writes, "a converged Vault was written to"


def test_restarted_vault_is_unsealed_and_nothing_else_changes(vault):
    sim, client, url = vault
    store, want = MemoryKeyStore(), desired(url)
    vault_setup.apply(client, store, want)
    sim.restart()
    assert vault_setup.plan(client, store, want)[0] == "unseal Vault"
    writes = len(sim.writes)
    assert vault_setup.apply(client, store, want) == ["unsealed"]
    assert sim.writes[writes:] == ["PUT sys/unseal"]


def test_initialized_vault_without_keys_file_stops_and_is_never_reinitialized(vault):
    sim, client, url = vault
    vault_setup.apply(client, MemoryKeyStore(), desired(url))
    sim.restart()
    with pytest.raises(vault_setup.VaultSetupError) as err:
        vault_setup.apply(client, MemoryKeyStore(None), desired(url))
    assert "vault-keys.json is missing: restore it" in str(err.value)
    assert "never re-initializes" in str(err.value)
    assert sim.writes.count("PUT sys/init") == 1 and sim.sealed


def test_wrong_keys_give_a_clear_error(vault):
    sim, client, url = vault
    vault_setup.apply(client, MemoryKeyStore(), desired(url))
    sim.restart()
    other = SimulatedVault()
    other_url = other.start()
    other_client = hvac.Client(url=other_url, session=host_session(HostHTTP(LocalRunner())))
    other_store = MemoryKeyStore()
    vault_setup.apply(other_client, other_store, desired(other_url))
    other.stop()
    with pytest.raises(vault_setup.VaultSetupError) as err:
        vault_setup.apply(client, other_store, desired(url))
    assert "do not unseal Vault" in str(err.value)
    assert sim.sealed


def test_too_few_keys_give_a_clear_error(vault):
    sim, client, url = vault
    store = MemoryKeyStore()
    vault_setup.apply(client, store, desired(url, shares=3, threshold=2))
    sim.restart()
    store.data["keys_base64"] = store.data["keys_base64"][:1]
    store.data["keys"] = store.data["keys"][:1]
    with pytest.raises(vault_setup.VaultSetupError) as err:
        vault_setup.apply(client, store, desired(url))
    assert "holds 1 unseal key(s); Vault needs 2" in str(err.value)


def test_drifted_policy_and_secret_are_repaired(vault):
    sim, client, url = vault
    store, want = MemoryKeyStore(), desired(url)
    vault_setup.apply(client, store, want)
    sim.policies["mnemos-services"] = 'path "*" { capabilities = ["sudo"] }'
    sim.kv["mnemos/"]["redis"].append({"password": "changed-by-hand"})
    assert set(vault_setup.plan(client, store, want)) == {"policy mnemos-services",
                                                          "secret mnemos/redis"}
    assert set(vault_setup.apply(client, store, want)) == {"policy mnemos-services",
                                                           "wrote mnemos/redis"}
    assert vault_setup.plan(client, store, want) == []


def client_with(url, token) -> hvac.Client:
    return hvac.Client(url=url, token=token, session=host_session(HostHTTP(LocalRunner())))


def test_simulated_vault_holds_the_scoped_token_to_its_policy(vault):
    """The simulation is strict where the deploy relies on Vault: VAULT_TOKEN reads the services'
    secrets (mnemos/data/*) and nothing else; a write is refused, there and elsewhere."""
    sim, client, url = vault
    want = desired(url)
    vault_setup.apply(client, MemoryKeyStore(), want)
    scoped = client_with(url, want.token_id)
    secret = scoped.secrets.kv.v2.read_secret_version(path="postgres", mount_point="mnemos",
                                                      raise_on_deleted_version=True)
    assert secret["data"]["data"]["password"] == "p" * 32
    assert scoped.auth.token.lookup_self()["data"]["policies"] == ["default", "mnemos-services"]
    refused = [
        lambda: scoped.secrets.kv.v2.create_or_update_secret(path="postgres",
                                                             secret={"password": "x"},
                                                             mount_point="mnemos"),
        lambda: scoped.secrets.kv.v2.create_or_update_secret(path="elsewhere", secret={"a": "b"},
                                                             mount_point="mnemos"),
        lambda: scoped.sys.create_or_update_policy(
            name="mine", policy='path "*" { capabilities = ["sudo"] }'),
        lambda: scoped.sys.enable_secrets_engine(backend_type="kv", path="mine"),
        lambda: scoped.sys.read_policy(name="mnemos-services"),
        lambda: scoped.sys.list_mounted_secrets_engines(),
        lambda: scoped.auth.token.create(policies=["mnemos-services"]),
    ]
    writes = list(sim.writes)
    for attempt in refused:
        with pytest.raises(hvac.exceptions.Forbidden):
            attempt()
    assert sim.writes == writes and sim.kv["mnemos/"]["postgres"][-1]["password"] == "p" * 32
    assert "mine" not in sim.policies and "mine/" not in sim.mounts


def test_simulated_vault_revokes_the_children_of_a_revoked_token_but_not_orphans(vault):
    sim, client, url = vault
    store = MemoryKeyStore()
    vault_setup.apply(client, store, desired(url))
    root = client_with(url, store.data["root_token"])
    child = root.auth.token.create(policies=["mnemos-services"])["auth"]["client_token"]
    orphan = root.auth.token.create(policies=["mnemos-services"],
                                    no_parent=True)["auth"]["client_token"]
    assert root.auth.token.lookup(child)["data"]["orphan"] is False
    assert root.auth.token.lookup(orphan)["data"]["orphan"] is True
    root.auth.token.revoke_self()
    assert child not in sim.tokens and store.data["root_token"] not in sim.tokens
    assert client_with(url, orphan).auth.token.lookup_self()["data"]["orphan"] is True


def test_simulated_vault_lets_only_root_or_sudo_choose_a_token_id_or_make_an_orphan(vault):
    sim, client, url = vault
    store = MemoryKeyStore()
    vault_setup.apply(client, store, desired(url))
    root = client_with(url, store.data["root_token"])
    root.sys.create_or_update_policy(
        name="creator", policy='path "auth/token/create" {\n  capabilities = ["update"]\n}\n')
    root.sys.create_or_update_policy(
        name="creator-sudo",
        policy='path "auth/token/create" {\n  capabilities = ["update", "sudo"]\n}\n')
    creator = client_with(url, root.auth.token.create(policies=["creator"])["auth"]["client_token"])
    for options, message in (
            ({"id": "chosen-id"}, "root or sudo privileges required to specify token id"),
            ({"no_parent": True}, "root or sudo privileges required to create orphan token"),
            ({"period": "768h"}, "root or sudo privileges required to create periodic token")):
        with pytest.raises(hvac.exceptions.InvalidRequest) as err:
            creator.auth.token.create(policies=["creator"], **options)
        assert message in str(err.value)
    with pytest.raises(hvac.exceptions.InvalidRequest) as err:
        creator.auth.token.create(policies=["mnemos-services"])
    assert "child policies must be subset of parent" in str(err.value)
    assert creator.auth.token.create(policies=["creator"])["auth"]["orphan"] is False
    sudo = client_with(url,
                       root.auth.token.create(policies=["creator-sudo"])["auth"]["client_token"])
    sudo.auth.token.create(id="chosen-id", no_parent=True, policies=["mnemos-services"])
    assert sim.tokens["chosen-id"]["parent"] == ""


def test_revoking_the_root_token_leaves_the_scoped_token_of_env_working(vault):
    """VAULT_TOKEN is an orphan: revoking the root token (vault_revoke_root_token), which revokes
    the root token's children, does not take it along."""
    sim, client, url = vault
    store, want = MemoryKeyStore(), desired(url)
    want.revoke_root_token = True
    done = vault_setup.apply(client, store, want)
    assert done[-1] == "revoked the root token" and "root_token" not in store.data
    assert not [t for t, info in sim.tokens.items() if "root" in info["policies"]]
    scoped = client_with(url, want.token_id)
    assert scoped.auth.token.lookup_self()["data"]["orphan"] is True
    secret = scoped.secrets.kv.v2.read_secret_version(path="postgres", mount_point="mnemos",
                                                      raise_on_deleted_version=True)
    assert secret["data"]["data"]["password"] == "p" * 32
    sim.restart()
    assert vault_setup.apply(client, store, want) == ["unsealed"]
    assert vault_setup.plan(client, store, want) == []
    assert want.token_id in sim.tokens


def test_a_scoped_token_made_as_a_child_of_the_root_token_is_made_again_as_an_orphan(vault):
    """Earlier deploys created VAULT_TOKEN as a child of the root token: the next run replaces it
    with an orphan of the same ID (so .env does not change)."""
    sim, client, url = vault
    store, want = MemoryKeyStore(), desired(url)
    vault_setup.apply(client, store, want)
    sim.tokens[want.token_id]["parent"] = store.data["root_token"]
    assert vault_setup.plan(client, store, want) == ["VAULT_TOKEN (the scoped token of .env)"]
    assert vault_setup.apply(client, store, want) == ["created VAULT_TOKEN"]
    assert sim.tokens[want.token_id]["parent"] == ""
    assert vault_setup.plan(client, store, want) == []


def test_a_converged_vault_is_planned_in_one_host_command_whatever_the_number_of_secrets(vault):
    """vault.setup's plan: every read of a converged Vault in one batch (host_http prefetch),
    with 2 secrets as with 12; a drifted secret is still found through the batch."""
    sim, client, url = vault
    store, want = MemoryKeyStore(), desired(url)
    for more in (0, 10):
        before = set(want.secrets) if more else set()  # the first apply writes them all
        want.secrets.update({f"service{i}": {"password": str(i) * 32} for i in range(more)})
        # as vault.setup converges: the configuration read in one batch once unsealed
        http = HostHTTP(LocalRunner())
        done = vault_setup.apply(hvac.Client(url=url, session=host_session(http)), store, want,
                                 prefetch=http.prefetch)
        assert {d for d in done if d.startswith("wrote ")} == {
            f"wrote mnemos/{name}" for name in set(want.secrets) - before}, done
        assert vault_setup.plan(client, store, want) == []
        http = HostHTTP(LocalRunner())
        planner = hvac.Client(url=url, session=host_session(http))
        planner.token = None
        assert vault_setup.plan(planner, store, want, prefetch=http.prefetch) == []
        assert http.commands == 1, f"{len(want.secrets)} secrets: {http.commands} host commands"
    root = hvac.Client(url=url, token=store.data["root_token"],
                       session=host_session(HostHTTP(LocalRunner())))
    root.secrets.kv.v2.create_or_update_secret(path="redis", secret={"password": "changed"},
                                               mount_point="mnemos")
    http = HostHTTP(LocalRunner())
    planner = hvac.Client(url=url, session=host_session(http))
    planner.token = None
    assert vault_setup.plan(planner, store, want, prefetch=http.prefetch) == ["secret mnemos/redis"]
    assert http.commands == 1


@pytest.mark.parametrize("where", ["VAULT_TOKEN", "~/.vault-token"])
def test_the_controllers_vault_token_is_never_sent_to_the_hosts_vault(where, monkeypatch,
                                                                      tmp_path):
    """hvac takes VAULT_TOKEN (or ~/.vault-token) of whoever runs pyinfra when given no token.
    vault.setup's client (operations.vault._client, which its plan and its converge use) goes
    through a plan, the set-up and a plan again against the simulated Vault, and the Vault sees
    every request's X-Vault-Token: the controller's token is never among them, the root token
    read from the keys is."""
    from mnemos_provision import host_http
    from mnemos_provision.operations import vault as vault_operation
    own = "the-controllers-own-token"
    monkeypatch.delenv("VAULT_TOKEN", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    if where == "VAULT_TOKEN":
        monkeypatch.setenv("VAULT_TOKEN", own)
    else:
        (tmp_path / ".vault-token").write_text(own)
    assert hvac.Client(url="http://127.0.0.1:9").token == own, "hvac would not take it anyway"
    sim = SimulatedVault()
    url = sim.start()
    seen: list[tuple[str, str, str]] = []
    handle = sim.handle

    def recording(method, path, body, token):
        seen.append((method, path, token))
        return handle(method, path, body, token)

    monkeypatch.setattr(sim, "handle", recording)
    monkeypatch.setattr(host_http, "PyinfraRunner", lambda _host: LocalRunner())
    store, want = MemoryKeyStore(), desired(url)
    try:
        for step in (vault_setup.plan, vault_setup.apply, vault_setup.plan):
            client, http = vault_operation._client(url, None)
            try:
                step(client, store, want, prefetch=http.prefetch)
            finally:
                http.close()
    finally:
        sim.stop()
    tokens = {token for _, _, token in seen}
    assert len(seen) > 10 and store.data["root_token"] in tokens, seen
    assert own not in tokens, [request for request in seen if request[2] == own]


def host_key_store(path):
    import getpass
    import grp

    from mnemos_provision.operations.vault import HostKeyStore
    return HostKeyStore(str(path), getpass.getuser(), grp.getgrgid(os.getgid()).gr_name,
                        runner=LocalRunner())


def test_host_key_store_writes_a_0600_file_in_a_0700_directory_and_reads_it_back(tmp_path):
    keys = tmp_path / "state" / "vault-keys.json"
    store = host_key_store(keys)
    assert store.load() is None
    store.save({"keys_base64": ["a2V5"], "root_token": "hvs.x"})
    assert oct(keys.stat().st_mode & 0o777) == "0o600"
    assert oct(keys.parent.stat().st_mode & 0o777) == "0o700"
    assert store.load() == {"keys_base64": ["a2V5"], "root_token": "hvs.x"}
    assert sorted(p.name for p in keys.parent.iterdir()) == ["vault-keys.json"]


class AnswerLostRunner(LocalRunner):
    """Runs every command on the "host", but the answer of the one that sends PUT sys/init never
    reaches the controller: the run dies (or its connection drops) right after Vault initialized."""

    def run(self, command, stdin=None):
        rc, out = super().run(command, stdin)
        # each request is a line of the command's input: METHOD URL HEADERS BODY
        if any(line.split(" ")[:1] == ["PUT"] and "/v1/sys/init " in line for line in stdin or []):
            raise HostHTTPError("the connection to the host was lost")
        return rc, out


def test_keys_are_on_the_host_before_the_controller_sees_them_and_the_next_run_unseals(
        vault, tmp_path):
    sim, client, url = vault
    keys = tmp_path / "state" / "vault-keys.json"
    store, want = host_key_store(keys), desired(url)
    lossy = HostHTTP(AnswerLostRunner())
    with pytest.raises(HostHTTPError):
        vault_setup.apply(hvac.Client(url=url, session=host_session(lossy)), store, want)
    lossy.close()
    assert sim.initialized and sim.sealed
    assert oct(keys.stat().st_mode & 0o777) == "0o600"
    assert oct(keys.parent.stat().st_mode & 0o777) == "0o700"
    kept = json.loads(keys.read_text())
    assert kept["root_token"] == sim.root_token and len(kept["keys_base64"]) == 3
    assert vault_setup.plan(client, store, want)[0] == "unseal Vault"
    done = vault_setup.apply(client, store, want)
    assert done[0] == "unsealed" and "created VAULT_TOKEN" in done and not sim.sealed
    assert sim.writes.count("PUT sys/init") == 1
    assert vault_setup.plan(client, store, want) == []


def test_initializing_keeps_an_earlier_keys_file_and_a_refused_init_touches_none(vault, tmp_path):
    """The keys of an earlier Vault (its data lost, or to be restored from a backup) are moved
    aside, never overwritten; an answer other than 200 is never written into the keys file."""
    sim, client, url = vault
    keys = tmp_path / "state" / "vault-keys.json"
    keys.parent.mkdir(mode=0o700)
    keys.write_text('{"keys_base64": ["ZWFybGllcg=="], "root_token": "hvs.earlier"}\n')
    store, want = host_key_store(keys), desired(url)
    vault_setup.apply(client, store, want)
    aside = list(keys.parent.glob("vault-keys.json.replaced-*"))
    assert len(aside) == 1 and json.loads(aside[0].read_text())["root_token"] == "hvs.earlier"
    assert json.loads(keys.read_text())["root_token"] == sim.root_token
    before = keys.read_bytes()
    with pytest.raises(hvac.exceptions.InvalidRequest):  # Vault is already initialized: 400
        store.initialize(client, want)
    assert keys.read_bytes() == before
    assert sorted(p.name for p in keys.parent.iterdir()) == ["vault-keys.json", aside[0].name]


def test_vault_role_over_pyinfra_local_twice_and_never_prints_a_secret(vault, tmp_path):
    """The pyinfra operation end to end on @local: first run changes, second run changes nothing."""
    sim, _, url = vault
    keys = tmp_path / "state" / "vault-keys.json"
    deploy = tmp_path / "vault_deploy.py"
    deploy.write_text(f"""
import getpass, grp, os
from mnemos_provision import vault_setup
from mnemos_provision.operations import vault
from tests.unit.test_vault_simulated import desired
user = getpass.getuser(); group = grp.getgrgid(os.getgid()).gr_name
vault.setup(name="Vault", url={url!r}, desired=desired({url!r}),
            store=vault.HostKeyStore({str(keys)!r}, user, group))
""")
    pyinfra = str(REPO / ".venv/bin/pyinfra")
    first = run([pyinfra, "@local", str(deploy), "-y", "-v"], cwd=REPO)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Vault: initialized, unsealed" in first.stdout + first.stderr
    assert oct(keys.stat().st_mode & 0o777) == "0o600"
    second = run([pyinfra, "@local", str(deploy), "-y", "-v"], cwd=REPO)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "Vault is initialized, unsealed and configured" in second.stdout + second.stderr
    from tests.harness import parse_results
    rows = parse_results(second.stdout + second.stderr)
    assert rows and not any(r["success"] for r in rows.values()), rows
    stored = json.loads(keys.read_text())
    output = first.stdout + first.stderr + second.stdout + second.stderr
    for secret in stored["keys"] + stored["keys_base64"] + [stored["root_token"], "p" * 32]:
        assert secret not in output


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def real_vault(tmp_path):
    """A REAL Vault: VAULT_TEST_ADDR (an uninitialized test server), or `vault server`
    (not -dev)."""
    if os.environ.get("VAULT_TEST_ADDR"):
        yield os.environ["VAULT_TEST_ADDR"]
        return
    binary = shutil.which("vault")
    if not binary:
        pytest.skip("no real Vault here: set VAULT_TEST_ADDR to an uninitialized test server, or "
                    "put a vault binary on PATH (docs/testing.md)")
    port = _free_port()
    config = tmp_path / "vault.hcl"
    config.write_text(f'storage "file" {{ path = "{tmp_path}/data" }}\n'
                      f'listener "tcp" {{ address = "127.0.0.1:{port}"\n tls_disable = true }}\n'
                      'disable_mlock = true\n')
    server = subprocess.Popen([binary, "server", f"-config={config}"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    time.sleep(2)
    yield f"http://127.0.0.1:{port}"
    server.terminate()
    server.wait(timeout=30)


def test_the_same_code_against_a_real_vault(real_vault):
    client = hvac.Client(url=real_vault, session=host_session(HostHTTP(LocalRunner())))
    store, want = MemoryKeyStore(), desired(real_vault)
    want.audit_file = "/dev/null"
    vault_setup.wait_for_api(client, 30)
    vault_setup.apply(client, store, want)
    assert vault_setup.plan(client, store, want) == []
    # as vault.setup plans: every read in one batch (one host command)
    http = HostHTTP(LocalRunner())
    planner = hvac.Client(url=real_vault, session=host_session(http))
    planner.token = None
    assert vault_setup.plan(planner, store, want, prefetch=http.prefetch) == []
    assert http.commands == 1


def test_a_vault_token_rotation_creates_the_new_token_revokes_the_old_and_is_resumable(vault):
    """vault_setup.rotate_token against the simulated Vault: the new token (same policy, an
    orphan, as apply creates it) reads the services' secrets, the old one is refused (403); a
    second call (a run killed after the revocation, finished by the next) changes nothing; a
    sealed Vault is unsealed first."""
    sim, client, url = vault
    store = MemoryKeyStore()
    old = desired(url)
    vault_setup.apply(client, store, old)
    new = desired(url)
    new.token_id = "mnemosNEWTOKEN0123456789abcdefghijklmnop"
    done = vault_setup.rotate_token(client, store, new, old.token_id)
    assert done == ["created the new VAULT_TOKEN", "revoked the old VAULT_TOKEN",
                    "checked: the new VAULT_TOKEN accepted, the old one refused (403)"]
    fresh = client_with(url, new.token_id)
    assert fresh.secrets.kv.v2.read_secret_version(
        path="postgres", mount_point="mnemos",
        raise_on_deleted_version=True)["data"]["data"]["password"] == "p" * 32
    info = fresh.auth.token.lookup_self()["data"]
    assert info["policies"] == ["default", "mnemos-services"] and info["orphan"]
    with pytest.raises(hvac.exceptions.Forbidden):
        client_with(url, old.token_id).auth.token.lookup_self()
    assert vault_setup.plan(client, store, new) == [], "vault.setup would change it again"
    sim.restart()
    assert vault_setup.rotate_token(client, store, new, old.token_id) == [
        "unsealed", "checked: the new VAULT_TOKEN accepted, the old one refused (403)"]


def test_a_converged_vault_is_read_by_the_fact_batchs_command_unprinted(vault, tmp_path):
    """As roles/vault.py does: the plan's reads registered at plan time (vault.plan_ahead, with
    the keys file as the secret read found it) go out with the fact batch's command, and the
    plan takes their answers: a converged Vault costs no host command of its own; at --debug no
    secret is printed, plain or in the command's base64 output."""
    from tests.harness import decoded_base64, host_commands

    sim, _, url = vault
    keys = tmp_path / "state" / "vault-keys.json"
    deploy = tmp_path / "vault_deploy.py"
    deploy.write_text(f"""
import getpass, grp, os
from mnemos_provision.operations import vault
from tests.unit.test_vault_simulated import desired
user = getpass.getuser(); group = grp.getgrgid(os.getgid()).gr_name
path = {str(keys)!r}
found = ("file", open(path, "rb").read()) if os.path.exists(path) else ("missing", None)
store = vault.HostKeyStore(path, user, group, found=found)
vault.plan_ahead({url!r}, desired({url!r}), store)
vault.setup(name="Vault", url={url!r}, desired=desired({url!r}), store=store)
""")
    pyinfra = str(REPO / ".venv/bin/pyinfra")
    first = run([pyinfra, "@local", str(deploy), "-y", "-v"], cwd=REPO)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Vault: initialized, unsealed" in first.stdout + first.stderr
    second = run([pyinfra, "@local", str(deploy), "-y", "-v", "--debug"], cwd=REPO)
    output = second.stdout + second.stderr
    assert second.returncode == 0, output
    assert "Vault is initialized, unsealed and configured" in output
    assert len(host_commands(output)) == 1, "\n".join(host_commands(output))
    assert "fact_batch: 0 fact(s) and 10 HTTP request(s) in one host command" in output, output
    assert "host_http: " not in output  # the plan sent nothing itself
    stored = json.loads(keys.read_text())
    for secret in stored["keys"] + stored["keys_base64"] + [stored["root_token"], "p" * 32]:
        assert secret not in output
        assert secret.encode() not in decoded_base64(output)
