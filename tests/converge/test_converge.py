"""
Convergence on a machine nobody provisioned: a fresh Debian 12 container (debootstrap minbase,
plus a user `dev`) in which the deploy installs and starts its own Docker Engine. pyinfra reaches
it with its @docker connector, the host suite with testinfra's docker:// backend.

The tests run in order on one machine: first run, host suite, second run with zero changes,
drift repaired exactly, .env restored byte for byte, no secret in any output.
"""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.converge

ROOT = "/home/dev/mnemos"
STATE = "/home/dev/.config/mnemos/secrets.json"


def sha(machine, path: str) -> str:
    return machine.exec(f"sha256sum {path}").stdout.split()[0]


def secret_values(machine) -> list[str]:
    import json
    return list(json.loads(machine.exec(f"cat {STATE}").stdout).values())


def test_first_run_provisions_the_machine(provisioned):
    machine, first = provisioned
    assert first.returncode == 0, first.output[-4000:]
    assert not first.errors
    for op in ("Packages | Install the design's apt packages",
               "Docker Engine | Install the distribution's Docker Engine",
               "Docker Engine | Start Docker Engine",
               "MNEMOS tree | Lay out and render the MNEMOS tree at /home/dev/mnemos",
               "MNEMOS stack | Converge the compose stack (postgres, redis, prometheus)"):
        assert op in first.changed, f"{op} did not change anything:\n{first.rows}"


def test_host_suite_passes_after_the_first_run(provisioned):
    machine, _ = provisioned
    suite = machine.host_suite()
    assert suite.returncode == 0, suite.stdout[-4000:]


def test_second_run_changes_nothing(provisioned):
    machine, _ = provisioned
    second = machine.deploy(flags=("-v",))
    assert second.returncode == 0, second.output[-3000:]
    assert second.rows, "no result table in the output"
    assert second.changed == [], f"a converged host changed: {second.changed}"
    # and costs a handful of round trips, whatever the number of operations and files: the host
    # snapshot (plan time) and one batch of every fact the operations read (plus the secret state
    # file, read outside pyinfra's fact output)
    assert second.facts_read == [
        "mnemos_provision.facts.server.HostSnapshot",
        "mnemos_provision.fact_batch.FactBatch",
    ], second.facts_read


def test_drift_is_repaired_exactly(provisioned):
    machine, _ = provisioned
    before = {p: sha(machine, p) for p in (STATE, f"{ROOT}/.env")}
    machine.exec(
        f"rm {ROOT}/config/loki/loki-config.yaml"
        f" && chmod 644 {ROOT}/.env"
        f" && sed -i 's/memory: 2G/memory: 3G/' {ROOT}/docker-compose.yml"
        f" && rm -r {ROOT}/docs/api"
        " && DEBIAN_FRONTEND=noninteractive apt-get remove -y -q jq >/dev/null"
    )
    third = machine.deploy()
    assert third.returncode == 0, third.output[-3000:]
    assert sorted(third.changed) == sorted([
        "Packages | Install the design's apt packages",
        "MNEMOS tree | Lay out and render the MNEMOS tree at /home/dev/mnemos",
    ]), third.rows
    assert machine.exec(f"stat -c %a {ROOT}/.env").stdout.strip() == "600"
    after = {p: sha(machine, p) for p in before}
    assert after == before, "a secret changed while repairing drift"
    suite = machine.host_suite()
    assert suite.returncode == 0, suite.stdout[-4000:]


def test_deleted_env_is_restored_byte_for_byte(provisioned):
    machine, _ = provisioned
    before = sha(machine, f"{ROOT}/.env")
    machine.exec(f"rm {ROOT}/.env")
    run = machine.deploy("deploys/tree.py")
    assert run.returncode == 0, run.output[-3000:]
    assert sha(machine, f"{ROOT}/.env") == before


def test_no_secret_in_pyinfra_output_even_with_diff(provisioned):
    machine, first = provisioned
    secrets = secret_values(machine)
    # drift .env and a config so that --diff has something to print
    machine.exec(f"sed -i 's/^LOG_LEVEL=.*/LOG_LEVEL=DEBUG/' {ROOT}/.env && "
                 f"echo '# drift' >> {ROOT}/docker/redis/redis.conf")
    from tests.harness import sh, REPO, parse_results
    # the most verbose output pyinfra has: every command, its output and every fact
    args = machine.pyinfra_args("deploys/tree.py") + ["--diff", "-vvv", "--debug"]
    result = sh(args, check=False, cwd=REPO, env=machine.env())
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "drift" in output, "--diff printed no diff at all (the check would prove nothing)"
    assert f"Will modify {ROOT}/.env (holds secrets: diff not shown)" in output
    for value in secrets:
        assert value not in output, "a secret was printed by pyinfra"
        assert value not in first.output, "a secret was printed by the first run"
    for path in (STATE, f"{ROOT}/.env"):  # as the deploy reads them: base64, 76 per line
        encoded = machine.exec(f"head -c 57 {path} | base64").stdout.strip()
        assert len(encoded) == 76 and encoded not in output, f"{path} was printed as read"
    assert parse_results(output)


def test_a_killed_first_run_is_finished_by_the_next_run():
    """SIGKILL pyinfra part-way through a first run on another fresh machine, then run again."""
    from tests import harness
    machine = harness.FreshHost("mnemos-interrupted")
    machine.archive = harness.ensure_standin_archive()
    machine.start()
    try:
        killed = machine.deploy_killed_after(25)
        assert "--> Results:" not in killed, "the run finished before it was killed: kill it earlier"
        after = machine.deploy()
        assert after.returncode == 0, after.output[-4000:]
        suite = machine.host_suite()
        assert suite.returncode == 0, suite.stdout[-4000:]
        again = machine.deploy()
        assert again.changed == [], again.rows
    finally:
        if not os.environ.get("MNEMOS_KEEP_TEST_HOST"):
            machine.remove()
