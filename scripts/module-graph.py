#!/usr/bin/env python3
"""Prints the graph of wharf's modules and its cycles.

Each module under src/ is a node; an edge a -> b means that a names something in b
(`use crate::b::...`, a `crate::b::...` path, `super::...` from a submodule, or a child
module by its relative path). Test modules (from `#[cfg(test)]` to the end of the file) and
comments are left out. By default each folder under src/ is one node, as a reader sees the
tree; with --modules every module is.

Usage: scripts/module-graph.py [--modules]   (--modules: every module, not only the folders)

It exits with 1 when the graph has a cycle, so CI can keep it free of them.
"""

import os
import re
import sys

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")


def module_of(path):
    rel = os.path.relpath(path, SRC)[: -len(".rs")].split(os.sep)
    if rel[-1] in ("mod", "lib"):
        rel = rel[:-1]
    return tuple(rel)


def modules():
    found = {}
    for root, _, files in os.walk(SRC):
        for f in files:
            if f.endswith(".rs"):
                path = os.path.join(root, f)
                found[module_of(path)] = path
    return found


def code(path):
    lines = []
    with open(path) as f:
        for line in f:
            if line.strip().startswith("#[cfg(test)]"):
                break
            lines.append(re.sub(r"//.*", "", line))
    return "".join(lines)


def expand(prefix, tree):
    """`a::{b, c::{d, e}}` -> [a::b, a::c::d, a::c::e]."""
    tree = tree.strip()
    if not tree.startswith("{"):
        return [prefix + [p for p in tree.split("::") if p]]
    out, depth, start = [], 0, 1
    for i, ch in enumerate(tree):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if (ch == "," and depth == 1) or (ch == "}" and depth == 0):
            part = tree[start:i].strip()
            start = i + 1
            if part:
                head, _, rest = part.partition("::{")
                if rest:
                    out += expand(prefix + head.split("::"), "{" + rest)
                else:
                    out.append(prefix + part.split("::"))
    return out


def paths(text, here):
    """Every module path `text` names, as lists of segments from the crate root."""
    found = []
    for m in re.finditer(r"\buse\s+((?:crate|super)(?:::\w+)*)::(\{[^;]*\}|[\w:*]+)\s*(?:as\s+\w+\s*)?;", text, re.S):
        found += expand(m.group(1).split("::"), m.group(2))
    for m in re.finditer(r"(?<![\w:])((?:crate|super)(?:::\w+)+)", text):
        found.append(m.group(1).split("::"))
    out = []
    for p in found:
        base = list(here)
        while p and p[0] == "super":
            base = base[:-1]
            p = p[1:]
        if p and p[0] == "crate":
            base, p = [], p[1:]
        out.append(base + [s for s in p if s not in ("self", "*")])
    return out


def resolve(path, mods, reexports):
    for n in range(len(path), -1, -1):
        if tuple(path[:n]) in mods:
            target = tuple(path[:n])
            if target == () and len(path) > 0 and path[0] in reexports:
                return reexports[path[0]]
            return target
    return ()


def tarjan(graph):
    index, low, stack, on, comps, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            comps.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return comps


def main():
    per_module = "--modules" in sys.argv
    mods = modules()
    lib = code(mods[()])
    reexports = {m.group(2): tuple(m.group(1).split("::")) for m in re.finditer(r"pub use ([\w:]+)::(\w+);", lib)}

    def unit(m):
        # Folders are one unit unless --modules; the crate root is left out.
        return m if per_module else m[:1]

    graph = {}
    for m, path in mods.items():
        if m == ():
            continue
        graph.setdefault(unit(m), set())
        text = code(path)
        # A child module named by a relative path (`format::Manifest`, `use events::Target`).
        children = [c for c in mods if len(c) == len(m) + 1 and c[: len(m)] == m]
        relative = [list(c) for c in children if re.search(r"(?<![\w:])" + c[-1] + r"::", text)]
        for p in paths(text, m) + relative:
            t = resolve(p, mods, reexports)
            if t == () or unit(t) == unit(m):
                continue
            graph[unit(m)].add(unit(t))

    name = lambda m: "::".join(m)
    for m in sorted(graph):
        print(f"{name(m)} -> {', '.join(name(t) for t in sorted(graph[m]))}")
    cycles = [c for c in tarjan(graph) if len(c) > 1]
    print()
    if not cycles:
        print("no cycles")
        return 0
    for c in cycles:
        print("cycle: " + ", ".join(name(m) for m in c))
    return 1


if __name__ == "__main__":
    sys.exit(main())
