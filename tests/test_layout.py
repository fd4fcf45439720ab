"""The house's layout, read from the code: no import cycle in agent/, and no module imports one
that stands later in the data flow (capture -> decode -> cards -> checkin -> feedback / outbox ->
mqtt). Imports inside functions count: they run too, and a cycle through one only waits for
the first call to bite."""

import ast
from pathlib import Path

AGENT = Path(__file__).resolve().parents[1] / "agent"

#: The data flow's stages, earliest first: a module may import its own stage and earlier ones.
#: Every other module is named in BASE (what everyone may import: config, paths, clock, jsonbound,
#: ...) or TOP (station, cli, admin, sim: may import anything); test_every_module_is_placed checks.
STAGES = [
    ("agent.capture",),
    ("agent.decode",),
    ("agent.cards",),
    ("agent.chip",),                    # the CCCD's chip, read after its QR code (issue 33)
    ("agent.checkin", "agent.event"),   # event: the check-in event, built from a card read
    ("agent.feedback", "agent.outbox", "agent.outputs"),
    ("agent.mqtt",),
]
#: The base: imports no stage and nothing on top.
BASE = ("agent.config", "agent.paths", "agent.clock", "agent.jsonbound", "agent.failpoints", "agent.worker",
        "agent.faults",   # Fault: what every room reports as wrong (the worker, the station, the link)
        "agent.runstate", "agent.status_types",   # status_types: the status file's sections, filled by the rooms
        "agent.schedule", "agent.sdnotify", "agent.control",
        "agent.cards.sanitize")   # text hygiene (imports nothing of agent), used from the worker to the link
TOP = ("agent.station", "agent.cli", "agent.__main__", "agent.admin", "agent.sim")


def module_name(path: Path) -> str:
    parts = path.relative_to(AGENT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str]) -> set[str]:
    """The agent modules `path` imports, at any depth of its code (`from agent.x import y` names
    agent.x.y when that is a module, else agent.x)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names}
    return {m for m in found if m in modules and m != name}


def graph() -> dict[str, set[str]]:
    files = [p for p in AGENT.rglob("*.py") if "vcam" not in p.parts]   # vcam: a stand-in picamera2 package
    modules = {module_name(p) for p in files}
    return {module_name(p): imports(p, modules) for p in files}


def within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def stage(module: str) -> int | None:
    """Its stage's place in the flow; None for the base and the top."""
    if within(module, BASE):
        return None
    return next((i for i, names in enumerate(STAGES) if within(module, names)), None)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected group of more than one module (Tarjan)."""
    index, low, stack, on, groups = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return groups


def test_the_graph_is_read():
    """The reader finds what is known to be there, so an empty graph cannot pass the tests below."""
    edges = graph()
    assert "agent.capture.source" in edges["agent.capture.replay"]
    assert "agent.capture.replay" in edges["agent.capture.factory"]     # inside open_source
    assert "agent.outbox" in edges["agent.station"]


def test_no_import_cycle():
    found = cycles(graph())
    assert found == [], "modules importing each other: " + "; ".join(" <-> ".join(g) for g in found)


def test_every_module_is_placed():
    """A new room is named here: a stage of the data flow, the base or the top."""
    unplaced = [m for m in graph() if m != "agent" and stage(m) is None and not within(m, BASE + TOP)]
    assert unplaced == []


def test_no_module_imports_a_later_stage_or_the_top():
    wrong = []
    for module, targets in sorted(graph().items()):
        if within(module, TOP) or module == "agent":
            continue
        mine = stage(module)
        for target in sorted(targets):
            theirs = stage(target)
            if within(target, TOP) or (theirs is not None and (mine is None or theirs > mine)):
                wrong.append(f"{module} -> {target}")
    assert wrong == [], "imports against the data flow: " + ", ".join(wrong)
