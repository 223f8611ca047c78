"""
scripts/bench: pyinfra start-up versus no-op converges, on @local and over @docker.

Start-up is a deploy of one no-op operation (files.directory of an existing directory): what any
pyinfra run costs before this project's work. Targets: a no-op deploys/bootstrap.py within 2x the
start-up on @local and within 3x over @docker. The start-up and no-op runs take turns (one of each,
RUNS times), so that a slower or faster phase of the machine weighs on both sides alike.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests import harness

REPO = harness.REPO
PYINFRA = str(REPO / ".venv/bin/pyinfra")
RUNS = int(os.environ.get("RUNS", "5"))
ONE_OP = ("from pyinfra.operations import files\n"
          "files.directory(name='one no-op operation', path='/tmp')\n")


def timed(args: list[str], env: dict, check=True) -> float:
    # Run as in a user's checkout, where the project's bytecode is cached on the first run and
    # read by every later one (mnemos_provision/__init__.py turns the cache back on after pyinfra's
    # CLI turned it off): this machine's environment sets PYTHONDONTWRITEBYTECODE, under which each
    # timed run compiled the project's modules again (0.06-0.07 s of the all-services no-op,
    # docs/performance.md). pyinfra's own modules were compiled when pip installed them.
    env = {key: value for key, value in env.items() if key != "PYTHONDONTWRITEBYTECODE"}
    start = time.perf_counter()
    result = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if check and result.returncode != 0:
        sys.exit(f"bench: {' '.join(args)} failed:\n{result.stdout[-3000:]}\n"
                 f"{result.stderr[-2000:]}")
    if check and env.get("BENCH_PHASE") == "noop":
        no_op_guard(args, result.stdout + result.stderr)
    return elapsed


def no_op_guard(args: list[str], output: str) -> None:
    """Stop the bench when a run timed as a no-op changed something or printed no result table
    (pyinfra prints its results on stderr)."""
    rows = harness.parse_results(output)
    if not rows:
        sys.exit(f"bench: {' '.join(args)} printed no result table:\n{output[-2000:]}")
    changed = [name for name, row in rows.items() if row["success"]]
    if changed:
        sys.exit(f"bench: a no-op run changed {changed}: {' '.join(args)}")


def interleaved(commands: list[tuple[list[str], dict]], runs=RUNS) -> list[list[float]]:
    """Each command `runs` times, taking turns, so that all see the same machine conditions."""
    times: list[list[float]] = [[] for _ in commands]
    for _ in range(runs):
        for (args, env), series in zip(commands, times):
            series.append(timed(args, env))
    return times


def fmt(values: list[float]) -> str:
    return f"{min(values):6.2f} s  {statistics.median(values):6.2f} s"


def fleet_rows() -> list[str]:
    """Over SSH with sudo (tests/fleet's machines): one host versus four, first and no-op runs."""
    from tests.fleet.test_fleet import Fleet
    work = Path(tempfile.mkdtemp(prefix="mnemos-bench-fleet-"))
    names = ["bench-solo", "bench-1", "bench-2", "bench-3", "bench-4"]
    fleet = Fleet(work, names, unreachable=None)
    fleet.archive = harness.ensure_standin_archive(("redis",))
    try:
        fleet.start()
        one = fleet.write_inventory(names=names[:1], path=work / "one" / "fleet.py")
        four = fleet.write_inventory(names=names[1:], path=work / "four" / "fleet.py")
        env = fleet.env()
        first_one = [timed(fleet.deploy_args(one), env)]
        first_four = [timed(fleet.deploy_args(four), env)]
        noop = dict(env, BENCH_PHASE="noop")
        noop_one, noop_four = interleaved([(fleet.deploy_args(one), noop),
                                           (fleet.deploy_args(four), noop)])
    finally:
        fleet.remove()
    ratio = statistics.median(noop_four) / statistics.median(noop_one)
    return [
        "\nover SSH with --sudo (deploys/bootstrap.py, Redis only)     1 host min  median   "
        "4 hosts min  median   4 / 1",
        f"{'first converge':58} {fmt(first_one)}   {fmt(first_four)}  "
        f"{statistics.median(first_four) / statistics.median(first_one):5.2f}x",
        f"{'no-op converge':58} {fmt(noop_one)}   {fmt(noop_four)}  {ratio:5.2f}x   target 1.5x",
    ]


def machine_rows(label: str, name: str, standins: tuple[str, ...], data: tuple[str, ...],
                 extra: tuple[str, ...] = (), target: str = "") -> list[str]:
    """Over @docker, one fresh machine with `data` on every run (the services of its stand-in
    images `standins`): the first converge, then no-op converges against pyinfra's start-up (the
    two taking turns), with the host commands of one no-op counted at --debug (every command
    pyinfra runs to reach the host) and the time of each (its --debug line stamped as it came)."""
    machine = harness.FreshHost(name)
    machine.archive = harness.ensure_standin_archive(standins)
    machine.data = data
    one_op = Path(tempfile.mkdtemp(prefix="mnemos-bench-one-op-")) / "one_op.py"
    one_op.write_text(ONE_OP)
    # MNEMOS_KEEP_TEST_HOST=1: the machine is kept at the end, and a kept one is used again (its
    # "first converge" is then a converge of a converged machine, said so in the row)
    running = harness.sh(["docker", "inspect", "-f", "{{.State.Running}}", name], check=False)
    kept = bool(os.environ.get("MNEMOS_KEEP_TEST_HOST")) and running.stdout.strip() == "true"
    if not kept:
        machine.start(extra=extra)
    try:
        env = machine.env()
        first = [timed(machine.pyinfra_args("deploys/bootstrap.py"), env)]
        noop_env = dict(env, BENCH_PHASE="noop")
        start, noop = interleaved([
            ([PYINFRA, f"@docker/{machine.name}", str(one_op), "-y"], env),
            (machine.pyinfra_args("deploys/bootstrap.py"), noop_env),
        ])
        debug = machine.deploy(flags=("--debug",))
        commands = harness.host_commands(debug.output)
    finally:
        if not os.environ.get("MNEMOS_KEEP_TEST_HOST"):
            machine.remove()
    return [
        f"\n{label:42} {'min':>8} {'median':>9}",
        f"{'pyinfra start-up (one no-op operation)':42} {fmt(start)}",
        f"{'first converge (deploys/bootstrap.py)':42} {fmt(first)}"
        + ("   (a kept machine: not a first converge)" if kept else ""),
        f"{'no-op deploys/bootstrap.py':42} {fmt(noop)}   "
        f"{statistics.median(noop) / statistics.median(start):5.2f}x start-up, "
        f"{len(commands)} host commands{target}",
        *(f"  {c}" for c in commands),
    ]


def all_services_rows() -> list[str]:
    """The converge tier's second machine (tests/converge/test_converge.py, its --data and its
    trust of this machine's CA for npm): all nine services, Vault, MinIO, Loki, Grafana and the
    collector from their STAND-IN images (tests/standins/<name>), the Claude Code CLI in tools."""
    from mnemos_provision import stack
    from tests.converge import test_converge as tc
    trust = ("-v", f"{tc.CA_BUNDLE}:/usr/local/share/ca-certificates/mnemos-test-host.crt:ro") \
        if os.path.exists(tc.CA_BUNDLE) else ()
    return machine_rows("@docker, all nine services (5 stand-ins)", "mnemos-bench-all-services",
                        tuple(s.name for s in stack.REGISTRY if s.standin), tc.ALL_SERVICES_DATA,
                        extra=trust, target=" (target: at most 6, 2.5x start-up)")


PHASES = (  # where a first run's time goes: the lines operations/progress.py prints
    ("apt-get update", r"apt-get update: done in (\d+) s"),
    ("apt-get install (the design's packages, then Docker Engine)",
     r"apt-get install of \d+ packages \(.*\): done in (\d+) s"),
    ("image archives loaded", None),
    ("pulls (every missing image, in parallel)", r"pulls done in (\d+) s"),
    ("docker compose up --wait (until healthy)", r"docker compose up --wait .*: done in (\d+) s"),
)


def phases(output: str) -> dict[str, int]:
    import re
    found = {}
    for label, pattern in PHASES:
        if pattern:
            found[label] = sum(int(m) for m in re.findall(pattern, output))
    return found


def first_run_rows() -> list[str]:
    """Over @docker, group_data/ci.py's stack (the STAND-IN images): one fresh machine's first
    converge with the images loaded from an archive (image_archives), one with them pulled from
    a registry (Debian's docker-registry on the machine's own 127.0.0.1, image_registry; the
    converge tier's first machine), and the seconds of each phase the run printed."""
    runs = {}
    for how in ("archive", "registry"):
        machine = harness.FreshHost(f"mnemos-bench-{how}")
        storage = None
        if how == "archive":
            machine.archive = harness.ensure_standin_archive()
        else:
            storage = harness.ensure_registry_storage()
        machine.start()
        try:
            if storage:
                machine.registry = harness.serve_registry_in(machine, storage)
                machine.data = (f"image_registry=127.0.0.1:{harness.REGISTRY_PORT}",)
            start = time.perf_counter()
            result = machine.deploy_timed()
            elapsed = time.perf_counter() - start
            if result.returncode != 0:
                sys.exit(f"bench: first converge ({how}) failed:\n{result.output[-3000:]}")
            runs[how] = (elapsed, phases(result.output), result)
        finally:
            if machine.registry:
                machine.registry.remove()
            machine.remove()
    lines = ["\n@docker first converge (deploys/bootstrap.py, ci.py's stack, stand-ins)"
             "        archives    registry",
             f"{'whole run':70} {runs['archive'][0]:7.1f} s  {runs['registry'][0]:7.1f} s"]
    for label, _ in PHASES:
        if label == "image archives loaded":
            op = "MNEMOS stack | Load the image archives (missing images only)"
            loaded = "(loaded)" if op in runs["archive"][2].changed else "-"
            lines.append(f"{label:70} {loaded:>9}  {'-':>9}")
            continue
        values = [runs[h][1].get(label) for h in ("archive", "registry")]
        lines.append(f"{label:70} " + "  ".join(
            f"{v:7d} s" if v is not None else "        -" for v in values))
    return lines


def main() -> None:
    if os.environ.get("BENCH_ONLY") == "first-run":
        print("\n".join(first_run_rows()))
        return
    if os.environ.get("BENCH_ONLY") == "fleet":
        print("\n".join(fleet_rows()))
        return
    if os.environ.get("BENCH_ONLY") == "all-services":
        print("\n".join(all_services_rows()))
        return
    work = Path(tempfile.mkdtemp(prefix="mnemos-bench-"))
    one_op = work / "one_op.py"
    one_op.write_text(ONE_OP)
    env = dict(os.environ)

    # ---------------------------------------------------------------- @local
    local_inventory = work / "local.py"
    local_inventory.write_text(
        "hosts = [('@local', {\n"
        f"    'mnemos_root': '{work}/mnemos', 'secrets_state_path': '{work}/state/secrets.json',\n"
        "    'docker_source': 'distro', 'docker_min_version': '20.10', 'preflight_strict': False,\n"
        f"    'compose_plugin_binary': '{harness.compose_binary()}', 'tools': [],\n"
        "    'compose_project': 'mnemosbench', 'compose_profiles': ['redis'],\n"
        "    'images': {**__import__('runpy').run_path('group_data/all.py')['images'],\n"
        "               'redis': 'mnemos-standin/redis:debian12'},\n"
        "    'ports': {**__import__('runpy').run_path('group_data/all.py')['ports'],\n"
        "              'redis': 16379},\n"
        "})]\n")
    harness.ensure_standin_archive()
    first_tree_local = [timed([PYINFRA, str(local_inventory), "deploys/tree.py", "-y"], env)]
    timed([PYINFRA, str(local_inventory), "deploys/bootstrap.py", "-y"], env)  # converge first
    start_local, noop_tree_local, noop_boot_local = interleaved([
        ([PYINFRA, "@local", str(one_op), "-y"], env),
        ([PYINFRA, str(local_inventory), "deploys/tree.py", "-y"], dict(env, BENCH_PHASE="noop")),
        ([PYINFRA, str(local_inventory), "deploys/bootstrap.py", "-y"],
         dict(env, BENCH_PHASE="noop")),
    ])
    subprocess.run(f"cd {work}/mnemos && docker compose down -v", shell=True, capture_output=True)

    # ---------------------------------------------------------------- @docker
    machine = harness.FreshHost("mnemos-bench")
    machine.archive = harness.ensure_standin_archive()
    machine.start()
    try:
        denv = machine.env()
        target = f"@docker/{machine.name}"
        first = machine.deploy()
        if first.returncode != 0:
            sys.exit("bench: first converge over @docker failed:\n" + first.output[-3000:])
        machine.exec("rm -rf /home/dev/mnemos")
        first_tree_docker = [timed([PYINFRA, "inventories/ci.py", "deploys/tree.py", "-y"], denv)]
        denv_noop = dict(denv, BENCH_PHASE="noop")
        start_docker, noop_tree_docker, noop_boot_docker = interleaved([
            ([PYINFRA, target, str(one_op), "-y"], denv),
            ([PYINFRA, "inventories/ci.py", "deploys/tree.py", "-y"], denv_noop),
            ([PYINFRA, "inventories/ci.py", "deploys/bootstrap.py", "-y"], denv_noop),
        ])
    finally:
        machine.remove()

    s_l, s_d = statistics.median(start_local), statistics.median(start_docker)
    rows = [
        ("pyinfra start-up (one no-op operation)", start_local, start_docker),
        ("first converge of the tree", first_tree_local, first_tree_docker),
        ("no-op deploys/tree.py", noop_tree_local, noop_tree_docker),
        ("no-op deploys/bootstrap.py", noop_boot_local, noop_boot_docker),
    ]
    print(f"\nMNEMOS provisioning benchmark ({RUNS} runs each; {platform.node()}, "
          f"{os.cpu_count()} CPUs, Python {platform.python_version()})")
    print(f"{'':42} {'@local min':>10} {'median':>9}   {'@docker min':>11} {'median':>9}")
    for label, local, docker in rows:
        print(f"{label:42} {fmt(local)}   {fmt(docker)}")
    print("\nratios (median no-op / median start-up)        @local   @docker   target")
    for label, local, docker, target in (
        ("no-op deploys/tree.py", noop_tree_local, noop_tree_docker, "-, 3x @docker"),
        ("no-op deploys/bootstrap.py", noop_boot_local, noop_boot_docker, "2x @local, 3x @docker"),
    ):
        local_x, docker_x = statistics.median(local) / s_l, statistics.median(docker) / s_d
        print(f"{label:46} {local_x:6.2f}x  {docker_x:6.2f}x   {target}")
    print("\n".join(all_services_rows()))
    print("\n".join(first_run_rows()))
    print("\n".join(fleet_rows()))


if __name__ == "__main__":
    main()
