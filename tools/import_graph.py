"""Print which ocp_dali module imports which (module-level and deferred imports alike) and check the direction.

    python3 tools/import_graph.py            # the graph, one line per module, then the checks
    python3 tools/import_graph.py --dot      # Graphviz dot instead

Checks (exit 1 when one fails): no import cycle among the modules; device code (``kernels/``, installed as
``ocp_dali.kernels``) imports nothing but ``plan``, ``sample``, ``reference``, what they import and modules that
import nothing of the project (``data.rle``, ``errors``, ...); no module
imports another module's private ``_name``. Reads the sources only (``ast``): nothing is imported.
"""
from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEVICE_MAY_IMPORT = {"ocp_dali.plan", "ocp_dali.sample", "ocp_dali.reference"}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[0] == "kernels":
        parts = ["ocp_dali", "kernels"] + parts[1:]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path, known: set[str]) -> tuple[set[str], list[str]]:
    """The project modules ``path`` imports, and its imports of private names."""
    found, private = set(), []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            base = node.module
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in known else base)
                if alias.name.startswith("_") and not alias.name.startswith("__") and base.startswith("ocp_dali"):
                    private.append(f"{module_name(path)} imports {alias.name} from {base}")
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m in known}, private


def graph() -> tuple[dict[str, set[str]], list[str]]:
    files = [p for d in ("ocp_dali", "kernels") for p in sorted((ROOT / d).rglob("*.py"))]
    known = {module_name(p) for p in files}
    edges, private = {}, []
    for p in files:
        deps, priv = imports_of(p, known)
        edges[module_name(p)] = deps - {module_name(p)}
        private += priv
    return edges, private


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles (depth-first search; a package importing its own submodules, as ``__init__`` files do to
    re-export, is not a cycle unless a submodule imports the package back)."""
    found, state, stack = [], {}, []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(edges.get(m, ())):
            if d.startswith(m + "."):
                continue
            if state.get(d) == 1 and not m.startswith(d + "."):
                found.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)
    return found


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dot", action="store_true", help="print Graphviz dot instead of the text listing")
    args = ap.parse_args()
    edges, private = graph()
    if args.dot:
        print("digraph ocp_dali {")
        print("\n".join(f'  "{m}" -> "{d}";' for m in sorted(edges) for d in sorted(edges[m])))
        print("}")
    else:
        for m in sorted(edges):
            print(f"{m:28s} -> {', '.join(sorted(d.replace('ocp_dali.', '') for d in edges[m])) or '-'}")
    # below the plan and the reference: those modules, what they import, and leaves that import nothing of ours
    allowed = set(DEVICE_MAY_IMPORT) | {m for m, deps in edges.items() if not deps and "kernels" not in m}
    for m in list(allowed):  # and what those import, transitively
        todo = [m]
        while todo:
            for d in edges.get(todo.pop(), ()):
                if d not in allowed:
                    allowed.add(d)
                    todo.append(d)
    device_up = [f"{m} imports {d}" for m in sorted(edges) if m.startswith("ocp_dali.kernels")
                 for d in sorted(edges[m]) if not d.startswith("ocp_dali.kernels") and d not in allowed]
    loops = cycles(edges)
    problems = ([f"cycle: {' -> '.join(c)}" for c in loops] + [f"device code reaches up: {d}" for d in device_up]
                + [f"private import: {p}" for p in private])
    for p in problems:
        print(p, file=sys.stderr)
    print(f"{len(edges)} modules, {sum(len(v) for v in edges.values())} imports: {len(loops)} cycles, "
          f"{len(device_up)} device imports reaching up, {len(private)} private imports", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
