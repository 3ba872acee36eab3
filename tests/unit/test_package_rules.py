"""The package's import rules, checked at run time (import-linter's contracts in pyproject.toml
check the static graph): a broker process never loads the client stack, `import shmlog` is
lazy, `from shmlog import *` is the public API, and no shmlog modules import each other in a
cycle."""
import ast
import json
import os
import pathlib
import subprocess
import sys
import textwrap

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "shmlog"

PUBLIC_NAMES = sorted([
    "AdminClient", "Broker", "ConfigResource", "Consumer", "DeserializingConsumer", "SerializingProducer",
    "KafkaError", "KafkaException", "Message", "NewPartitions", "NewTopic", "OFFSET_BEGINNING", "OFFSET_END",
    "OFFSET_INVALID", "OFFSET_STORED", "Producer", "RecordBatchView", "TIMESTAMP_CREATE_TIME",
    "TIMESTAMP_LOG_APPEND_TIME", "TIMESTAMP_NOT_AVAILABLE", "TopicPartition",
    # the rest of confluent_kafka.__all__ (tests/unit/test_public_names.py)
    "AcknowledgeType", "ConcurrentModificationException", "ConsumerGroupState", "ConsumerGroupTopicPartitions",
    "ConsumerGroupType", "DeserializingShareConsumer", "ElectionType", "IllegalStateException", "IsolationLevel",
    "Messages", "Node", "ShareConsumer", "TopicCollection", "TopicPartitionInfo", "Uuid", "admin", "aio",
    "consistent", "fnv1a", "libversion", "murmur2", "version",
])


def run_python(source):
    """Run source in a fresh interpreter (this tree's shmlog first on the path); its last stdout line as JSON."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(source)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_broker_processes_load_no_client_module():
    loaded = run_python("""
        import json, sys
        import shmlog.broker.supervisor, shmlog.broker.persister
        print(json.dumps(sorted(sys.modules)))
    """)
    assert "shmlog.broker.supervisor" in loaded and "shmlog.broker.persister" in loaded
    client_side = [m for m in loaded if m.split(".")[:2] in (["shmlog", "client"], ["shmlog", "cli"],
                                                            ["shmlog", "pipeline"])]
    assert client_side == []


def test_import_shmlog_loads_no_submodule_until_a_public_name_is_used():
    before, after, value = run_python("""
        import json, sys
        import shmlog
        before = sorted(m for m in sys.modules if m.startswith("shmlog."))
        value = shmlog.OFFSET_BEGINNING
        after = sorted(m for m in sys.modules if m.startswith("shmlog."))
        print(json.dumps([before, after, value]))
    """)
    assert before == []
    assert "shmlog.message" in after
    assert not [m for m in after if m.startswith(("shmlog.client", "shmlog.broker", "shmlog.cli"))]
    assert value == -2  # Kafka's OFFSET_BEGINNING


def test_star_import_gives_exactly_the_public_names():
    names = run_python("""
        import json
        namespace = {}
        exec("from shmlog import *", namespace)
        print(json.dumps(sorted(k for k in namespace if k != "__builtins__")))
    """)
    assert names == PUBLIC_NAMES


# ---------------------------------------------------------------------------- import cycles

def module_name(path, root):
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def module_level_imports(tree):
    """Import statements that run when the module is imported: everywhere but inside function
    bodies and `if TYPE_CHECKING:` blocks."""
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
            continue
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def import_graph(root):
    """{module: {modules of the package it imports at module level}} for the package at root."""
    files = {module_name(p, root): p for p in root.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        targets = set()
        for node in module_level_imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = name.split(".")
                    anchor = anchor[:len(anchor) - node.level + (1 if is_package else 0)]
                    base = ".".join(anchor + ([base] if base else []))
                candidates = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base
                              for alias in node.names]
            for target in candidates:
                while target and target not in files:  # `import a.b.X` where X is not a module
                    target = target.rpartition(".")[0]
                if target and target != name:
                    targets.add(target)
        graph[name] = targets
    return graph


def cycles(graph):
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph) + 100))
    try:
        for v in sorted(graph):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    return found


def test_no_import_cycles_among_shmlog_modules():
    graph = import_graph(PACKAGE)
    assert "shmlog.broker.supervisor" in graph and "shmlog.client.producer" in graph
    assert "shmlog.log.segment" in graph["shmlog.broker.persister"]  # the walk sees real imports
    assert cycles(graph) == []


def test_the_cycle_check_finds_a_cycle(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.sub import b\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("from .. import c\n")
    (pkg / "c.py").write_text("import pkg.a\n")
    (pkg / "d.py").write_text("def later():\n    import pkg.a\n")          # inside a function: not counted
    (pkg / "e.py").write_text("import pkg.d\nfrom pkg import d\n")
    graph = import_graph(pkg)
    assert graph["pkg.sub.b"] == {"pkg.c"}
    assert graph["pkg.d"] == set()
    assert cycles(graph) == [["pkg.a", "pkg.c", "pkg.sub.b"]]


def test_the_keeper_loads_no_shmlog_module_but_its_own_and_its_packages():
    """The keeper must be too small to fail: `python -m shmlog.broker.keeper` loads the lazy
    package inits and itself, nothing of the broker, the client or the native core."""
    done = subprocess.run([sys.executable, "-c", "import sys; import shmlog.broker.keeper; "
                           "print(' '.join(sorted(m for m in sys.modules if m.startswith('shmlog'))))"],
                          capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.split() == ["shmlog", "shmlog.broker", "shmlog.broker.keeper"]
