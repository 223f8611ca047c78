"""
Docker Compose: `compose.stack` (a compose project up, in its configuration, healthy).
"""

from __future__ import annotations

import shlex

from pyinfra import host

from mnemos_provision.fact_batch import DeclaredFacts, batched_operation
from mnemos_provision.facts.docker import ComposeStatus
from mnemos_provision.operations import progress, upgrade
from mnemos_provision.operations.util import fail_command, stage_dir


def stack_differences(wanted: dict[str, str] | None, running: dict[str, dict] | None) -> list[str]:
    """Why the stack must be (re)converged; [] when every wanted service runs its config healthy."""
    if wanted is None or running is None:
        return ["Docker or the rendered compose file is not there yet"]
    reasons = []
    for service, config_hash in sorted(wanted.items()):
        current = running.get(service)
        if current is None:
            reasons.append(f"{service}: no container")
        elif current["hash"] != config_hash:
            reasons.append(f"{service}: configuration changed")
        elif current["state"] != "running":
            reasons.append(f"{service}: {current['state']}")
        elif current["health"] not in ("healthy", "none"):
            reasons.append(f"{service}: {current['health']}")
    for service in sorted(set(running) - set(wanted)):
        reasons.append(f"{service}: orphan container of a disabled service")
    return reasons


@batched_operation(lambda root, project, **_: {
    "status": (ComposeStatus, {"root": root, "project": project}),
    "images": upgrade.facts_args(project)})
def stack(facts: DeclaredFacts, root: str, project: str, images: dict[str, str],
          services: list[str], timeout: int):
    """
    Converge a compose stack: `docker compose up -d --wait --remove-orphans` only when a wanted
    service has no container, another configuration (compose config hash), is not running or is
    unhealthy, or an orphan is left. Missing images are pulled first, all at once, with progress
    shown while they arrive (operations/progress.py); a pull that fails names the image, the
    registry's answer and the setting to change. A service that does not become healthy is an
    error with its health output and last log lines. An image change recreates that service
    alone, health-gated, and rolls it back to the image it ran when it does not become healthy;
    a PostgreSQL major change or a forbidden Vault/MinIO downgrade stops before anything is
    pulled or stopped (operations/upgrade.py, docs/upgrading.md). Volumes are never removed.

    + root: directory of docker-compose.yml and .env
    + project: compose project name (container labels)
    + images: {service: image} of the enabled services
    + services: the enabled services
    + timeout: seconds `--wait` may take

    **Example:**

    .. code:: python

        compose.stack(root="/home/dev/mnemos", project="mnemos",
                      images={"redis": "redis:7.4.6-alpine"}, services=["redis"], timeout=300)
    """
    status = facts["status"]
    wanted, running = status["wanted"], status["running"]
    # While pyinfra plans (change detection, `--dry` without -y), nothing yielded here runs: what
    # the run would do is said in the log instead. Its facts are then read at plan time, on their
    # own (fact_batch.read): a dry run has no execution, so no batch.
    planning = not host.state.is_executing
    problems = upgrade.guard_problems(images, facts["images"], project)
    if problems:  # before anything is pulled or stopped (docs/upgrading.md)
        if planning:
            for problem in problems:
                host.log(f"Will stop the run: {problem}")
        yield fail_command("; ".join(problems))
        return
    reasons = stack_differences(wanted, running)
    # an image change recreates that service alone, health-gated, rolled back on failure; it is
    # a change even when the compose file on the host still names the old image (a dry run does
    # not render the tree, so its config hash has not changed yet)
    changed = upgrade.image_changes(images, facts["images"])
    if not reasons and not changed:
        host.noop(f"stack {project}: {len(wanted)} services running their configuration, healthy")
        return
    q = shlex.quote
    report = (
        "echo 'the stack did not become healthy:' >&2; docker compose ps -a >&2; "
        "for c in $(docker compose ps -a --format '{{.Service}}'); do "
        "s=$(docker compose ps -a --format '{{.Health}}' \"$c\"); "
        "case \"$s\" in healthy|'') ;; *) echo \"--- $c ($s): last log lines\" >&2; "
        "docker compose logs --no-color --tail 20 \"$c\" >&2 ;; esac; done; exit 1"
    )
    recreate = []
    for service, before in changed.items():
        host.log(f"Will recreate {service} alone: image {before} -> {images[service]} "
                 "(rolled back if it does not become healthy)")
        previous = facts["images"]["containers"][service]
        recreate.append(upgrade.recreate_script(service, images[service], previous, timeout,
                                                stage_dir(), upgrade.last_good(project)))
    rest = [r for r in reasons if r not in {f"{s}: configuration changed" for s in changed}]
    up = progress.alive("docker compose up --wait (until every service is healthy)", "docker",
                        "compose", "up", "-d", "--wait", "--wait-timeout", str(int(timeout)),
                        "--remove-orphans")
    yield progress.ShownCommand(
        f"cd {q(root)}\n{progress.pull_script({s: images[s] for s in services})}\n"
        f"{progress.ALIVE}\n" + "".join(f"{r}\n" for r in recreate)
        + (f"{up} || {{ {report}; }}\n" if rest else "")
        # healthy: this configuration is the one a later image change rolls back to
        + upgrade.keep_last_good(upgrade.last_good(project))
    )
