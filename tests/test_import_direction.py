"""The house is one-way: a module imports only from its own layer or the layers below.

The allowed direction is written once, in ``LAYERS`` (lowest first). ``services`` and
``realtime`` share a floor and may not import each other: services reach the hub through
the notifier the runtime injects, and the hub reads the store through a Protocol.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

SERVER = pathlib.Path(__file__).resolve().parent.parent / "server"

# (layer, module prefixes). A module belongs to the layer of its longest matching prefix.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("server.protocol", "server.events", "server.errors", "server.clock",
              "server.settings", "server.logs", "server.metrics", "server.phones",
              "server.crypto", "server.passwords", "server.password_blocklist",
              "server.sms.segments", "server.sms.keywords", "server.notify", "server")),
    ("store", ("server.store",)),
    ("adapters", ("server.audit", "server.audit_upgrade", "server.auth",
                  "server.patient_auth", "server.sign_in_limits", "server.read_batch",
                  "server.address_limits", "server.keys", "server.brokers", "server.sms")),
    ("services|realtime", ("server.services", "server.realtime")),
    ("runtime", ("server.runtime", "server.frames")),
    ("web", ("server.web",)),
    ("entry", ("server.app", "server.cli", "server.__main__")),
]
# Same floor, never each other.
SIBLINGS = {("server.services", "server.realtime"), ("server.realtime", "server.services")}


def _layer(module: str) -> tuple[int, str]:
    best = (-1, -1, "")
    for rank, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            matches = module == prefix or module.startswith(prefix + ".")
            if matches and len(prefix) > best[1]:
                best = (rank, len(prefix), prefix)
    assert best[0] >= 0, f"{module} is in no layer: add it to LAYERS"
    return best[0], best[2]


def _module_name(path: pathlib.Path, root: pathlib.Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(root: pathlib.Path, name: str) -> bool:
    return root.parent.joinpath(*name.split(".")).with_suffix(".py").exists()


def _imports(path: pathlib.Path, module: str, root: pathlib.Path) -> list[str]:
    found = []
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            # ``from server import events`` imports the module server.events.
            modules = [f"{name}.{alias.name}" for alias in node.names
                       if _is_module(root, f"{name}.{alias.name}")]
            found += modules or [name]
    return [name for name in found if name == "server" or name.startswith("server.")]


def upward_imports(root: pathlib.Path = SERVER) -> list[str]:
    wrong = []
    for path in sorted(root.rglob("*.py")):
        module = _module_name(path, root)
        rank, home = _layer(module)
        for target in _imports(path, module, root):
            if target == "server":
                continue
            target_rank, target_home = _layer(target)
            if target_rank > rank:
                wrong.append(f"{module} imports {target} ({LAYERS[rank][0]} -> "
                             f"{LAYERS[target_rank][0]})")
            elif (home, target_home) in SIBLINGS:
                wrong.append(f"{module} imports its sibling {target}")
    return wrong


def test_no_module_imports_upward():
    assert upward_imports() == []


def test_an_upward_import_is_caught(tmp_path):
    """The check itself can fail: a store module importing a service is reported."""
    fake = tmp_path / "server"
    (fake / "store").mkdir(parents=True)
    (fake / "services").mkdir()
    (fake / "services" / "accounts.py").write_text("")
    (fake / "store" / "rows.py").write_text("from server.services import accounts\n")
    assert upward_imports(fake) == [
        "server.store.rows imports server.services.accounts (store -> services|realtime)"]


@pytest.mark.parametrize("module,layer", [
    ("server.store.db", "store"), ("server.services.sending", "services|realtime"),
    ("server.events", "base"), ("server.web.api", "web"), ("server.sms.twilio", "adapters")])
def test_layer_table(module, layer):
    assert LAYERS[_layer(module)[0]][0] == layer
