"""docker-compose.yml, deploy/nginx.conf and the Dockerfile agree with the code (issue
8). No Docker engine runs here, so this reads the files: every ``SECURECHAT_*`` variable
is a real setting and the whole environment passes ``from_env``; the nodes run the
image's own command and port; health checks hit real routes; migrations run first; the
master key comes from a compose secret; nginx sends ``/ws`` upgrades to every node, and
no one node in particular."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from server.app import create_app
from server.settings import PREFIX, Settings, from_env
from tests.conftest import repo_root

ROOT = Path(repo_root())
PUBLIC_URL = "https://chat.clinic.example"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def dockerfile() -> dict[str, list[str]]:
    """Each Dockerfile instruction's arguments, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            found.setdefault(word.upper(), []).append(rest.strip())
    return found


def services_running(compose: dict, command: str) -> dict[str, dict]:
    return {name: spec for name, spec in compose["services"].items()
            if spec.get("command", [])[1:2] == [command]}


def environment(spec: dict) -> dict[str, str]:
    """A service's environment with ``${PUBLIC_URL...}`` as the operator's .env sets it."""
    return {key: re.sub(r"\$\{PUBLIC_URL[^}]*\}", PUBLIC_URL, str(value))
            for key, value in spec.get("environment", {}).items()}


def nginx_blocks(text: str) -> list:
    """deploy/nginx.conf as nested [directive-words, children-or-None] lists."""
    tokens = re.findall(r"'[^']*'|\"[^\"]*\"|[{};]|[^\s{};]+", re.sub(r"#.*", "", text))
    root: list = []
    stack, words = [root], []
    for token in tokens:
        if token == "{":
            block: list = []
            stack[-1].append([words, block])
            stack.append(block)
            words = []
        elif token == "}":
            stack.pop()
        elif token == ";":
            stack[-1].append([words, None])
            words = []
        else:
            words.append(token)
    return root


def walk(blocks: list):
    for words, children in blocks:
        yield words, children
        if children is not None:
            yield from walk(children)


def test_every_setting_is_real_and_the_environment_is_valid(compose: dict) -> None:
    fields = {name.upper() for name in Settings.__struct_fields__}
    for name, spec in compose["services"].items():
        env = environment(spec)
        unknown = {key for key in env if key.startswith(PREFIX)
                   and key[len(PREFIX):] not in fields}
        assert not unknown, f"{name}: {unknown}"
        settings = {key[len(PREFIX):].lower(): value for key, value in env.items()
                    if key.startswith(PREFIX)}
        if settings:
            from_env({f"{PREFIX}{k.upper()}": v for k, v in settings.items()})


def test_nodes_run_the_image_command_after_migrations(compose: dict,
                                                      dockerfile: dict) -> None:
    nodes = services_running(compose, "serve")
    assert len(nodes) >= 2
    cmd = json.loads(dockerfile["CMD"][-1])
    port = cmd[cmd.index("--port") + 1]
    assert dockerfile["EXPOSE"] == [port]
    migrate = services_running(compose, "migrate")
    assert len(migrate) == 1
    (migrate_name,) = migrate
    for name, spec in nodes.items():
        assert spec["command"] == cmd, name
        assert spec["depends_on"][migrate_name]["condition"] == \
            "service_completed_successfully"
        assert spec["stop_grace_period"] == "40s"  # tests/ops/test_drain.py's bound
    assert migrate[migrate_name].get("restart") == "no"


def test_health_checks_probe_real_routes(compose: dict, dockerfile: dict,
                                         master_key: bytes) -> None:
    app = create_app(from_env({}), master_key)
    paths = {route.path for route in app.routes}
    probes = [" ".join(spec["healthcheck"]["test"])
              for spec in services_running(compose, "serve").values()]
    probes += dockerfile["HEALTHCHECK"]
    for probe in probes:
        found = re.findall(r"http://127\.0\.0\.1:8000(/[a-z]+)", probe)
        assert found and set(found) <= paths, probe


def test_master_key_and_passwords_come_from_secrets(compose: dict) -> None:
    declared = compose["secrets"]
    for name, spec in compose["services"].items():
        env = environment(spec)
        assert f"{PREFIX}MASTER_KEY" not in env, name
        for key, value in env.items():
            if "://" in value:
                assert urlsplit(value).password is None, f"{name}: {key} holds a password"
            if value.startswith("/run/secrets/"):
                secret = value.removeprefix("/run/secrets/")
                assert secret in declared and secret in spec.get("secrets", []), \
                    f"{name}: {key} names a secret it does not mount"
        for secret in spec.get("secrets", []):
            assert set(declared[secret]) == {"file"}, secret  # a file, not an inline value
    nodes = services_running(compose, "serve").values()
    assert all(environment(n)[f"{PREFIX}MASTER_KEY_FILE"].startswith("/run/secrets/")
               for n in nodes)


def test_urls_name_compose_services(compose: dict) -> None:
    for spec in services_running(compose, "serve").values():
        env = environment(spec)
        for key in (f"{PREFIX}DATABASE_URL", f"{PREFIX}REDIS_URL"):
            host = urlsplit(env[key]).hostname
            assert host in compose["services"], f"{key} points at {host}"
            assert host in spec["depends_on"] or host in (
                compose["services"]["migrate"]["depends_on"]), key


def test_proxy_sends_websocket_upgrades_to_every_node(compose: dict) -> None:
    proxy = compose["services"]["proxy"]
    (mount,) = [v for v in proxy["volumes"] if "nginx.conf" in v]
    config = ROOT / mount.split(":")[0]
    blocks = nginx_blocks(config.read_text())
    upstreams = {words[1]: children for words, children in walk(blocks)
                 if words[:1] == ["upstream"]}
    node_port = compose["services"]["node1"]["command"][-1]
    nodes = set(services_running(compose, "serve"))
    ws_locations = [children for words, children in walk(blocks)
                    if words == ["location", "=", "/ws"]]
    assert ws_locations
    for location in ws_locations:
        directives = {" ".join(words) for words, _ in location}
        (target,) = [d.split("//")[1] for d in directives if d.startswith("proxy_pass ")]
        assert {"proxy_http_version 1.1", "proxy_set_header Upgrade $http_upgrade",
                "proxy_set_header Connection $connection_upgrade"} <= directives
        servers = {words[1] for words, _ in upstreams[target] if words[0] == "server"}
        assert servers == {f"{node}:{node_port}" for node in nodes}
        # No stickiness: none of nginx's ways to pin a client to one server.
        assert not {words[0] for words, _ in upstreams[target]} & {
            "ip_hash", "hash", "sticky"}
        read_timeout = next(w[1] for w, _ in location if w[0] == "proxy_read_timeout")
        assert int(read_timeout.rstrip("s")) > 20  # uvicorn's ping interval
    (upgrade_map,) = [children for words, children in walk(blocks)
                      if words[:3] == ["map", "$http_upgrade", "$connection_upgrade"]]
    assert ["default", "upgrade"] in [words for words, _ in upgrade_map]


def test_dockerfile_copies_what_exists(dockerfile: dict) -> None:
    for args in dockerfile["COPY"]:
        words = shlex.split(args)
        if any(w.startswith("--from") for w in words):
            continue
        for source in words[:-1]:
            assert (ROOT / source).exists(), source
