"""The import-layers contract: mmcache's modules form a stack, imports point down.

Every module of the package has a place in LAYERS (bottom first); a module
may import only from its own layer or below, and the graph has no cycle. A
new module must be placed here, so the stack stays the map of the code.
KNOWN_UPWARD lists upward imports tolerated for a while (issue 18 emptied
it: the writer escalates a rebuild by return value). The test fails on any
other upward import or cycle, and on a KNOWN_UPWARD entry that is gone (so
the list shrinks as the debt is paid).
"""

from __future__ import annotations

import import_graph

# Bottom first. One line per layer; modules in one layer may import each other.
LAYERS: list[tuple[str, ...]] = [
    ("mmcache.errors", "mmcache._platform", "mmcache._metrics", "mmcache.serialization", "mmcache._core"),
    ("mmcache._cli_format",),
    ("mmcache._core.layout",),  # every struct, offset and file name
    ("mmcache.keys", "mmcache._core.fs"),  # key encoding; checked opens, reserve, sizes
    ("mmcache._core.lock", "mmcache._core.heap", "mmcache._cli_paths"),  # owner locks; heap segments
    ("mmcache._core.generation",),  # one generation's files, header numbers, roster snapshot
    # parse and check a record; the capacity rule; the format-upgrade path; a handle's policy
    ("mmcache._core.record", "mmcache._core.capacity", "mmcache._core.upgrade", "mmcache._core.options"),
    ("mmcache._core.stats", "mmcache._core.memo"),  # per-process: stats stripes; the hit memo
    ("mmcache._core.process", "mmcache._core.evict"),  # per-process state; victim choice
    # fill a generation; the general read path; fix a generation's numbers
    ("mmcache._core.slots",),  # find a slot, take one out, log a change, a record's recorded size
    ("mmcache._core.builders", "mmcache._core.lookup", "mmcache._core.repair"),
    ("mmcache._core.writer",),  # put / add / delete / evict under the lock
    ("mmcache._core.rebuild",),  # locked and concurrent rebuilds
    ("mmcache._core.args",),  # argument checks, creating a table
    ("mmcache._core.maintenance",),  # listing, verify, repair, stats
    ("mmcache._core.table_maintenance", "mmcache._core.table_writes"),  # MmapCache's mixins
    ("mmcache._native",),  # the compiled get (reads the handle's state; imports nothing of ours)
    ("mmcache.table",),  # MmapCache: the hot read path, thin delegation
    ("mmcache.tags",),
    ("mmcache.l2",),  # the Redis tier (package)
    ("mmcache.decorators", "mmcache.contrib", "mmcache.cli", "mmcache.__main__", "mmcache"),  # faces
]

# (importer, imported): upward imports tolerated for now. None: the writer's grow /
# purge rebuilds and the rebuild past a damaged heap segment are answers
# (capacity.Room) its caller acts on; the writer fixes numbers itself (repair.fix).
KNOWN_UPWARD: set[tuple[str, str]] = set()


def rank(module: str) -> int:
    """The layer of ``module``: its own entry, else its package's."""
    best = None
    for i, layer in enumerate(LAYERS):
        for name in layer:
            inside = module == name or (name != "mmcache" and module.startswith(name + "."))
            if inside and (best is None or len(name) > best[1]):
                best = (i, len(name))
    assert best is not None, f"{module} is in no layer: add it to LAYERS in {__file__}"
    return best[0]


def upward(graph: dict[tuple[str, str], bool]) -> set[tuple[str, str]]:
    return {(a, b) for a, b in graph if rank(a) < rank(b)}


def test_every_module_has_a_layer() -> None:
    for a, b in import_graph.edges():
        rank(a), rank(b)
    for path in import_graph.PKG.rglob("*.py"):
        rank(import_graph.module_name(path))


def test_imports_point_down() -> None:
    graph = import_graph.edges()
    found = upward(graph)
    assert found - KNOWN_UPWARD == set(), "imports running up the layers"
    assert KNOWN_UPWARD - found == set(), "paid debt: remove these from KNOWN_UPWARD"


def test_no_cycle() -> None:
    graph = {e: lazy for e, lazy in import_graph.edges().items() if e not in KNOWN_UPWARD}
    assert import_graph.cycles(graph) == []


def test_the_check_catches_an_upward_import_and_a_cycle() -> None:
    """The checks above can fail: an added upward edge is found, and so is
    the cycle it closes."""
    graph = dict(import_graph.edges())
    graph[("mmcache._core.layout", "mmcache.table")] = True  # a lazy import counts too
    assert ("mmcache._core.layout", "mmcache.table") in upward(graph) - KNOWN_UPWARD
    assert any("mmcache._core.layout" in c and "mmcache.table" in c for c in import_graph.cycles(graph))
