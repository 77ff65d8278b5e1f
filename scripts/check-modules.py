#!/usr/bin/env python3
"""Checks the shape of src/ that the compiler does not:

1. Only the proxy-wasm host (src/wasm/) names proxy_wasm.
2. No import cycles, between files and between top-level modules (src/<name>.rs or src/<name>/):
   every `crate::`, `super::` and `self::` path of non-test code is resolved to the file that
   defines it. A cycle is printed as the chain of files or modules that form it.

Exits 1 with the findings, 0 when the tree is clean. `--graph` prints the module graph.
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
HOST_LAYER = "wasm"


def source_files(root):
    for directory, _, names in os.walk(root):
        for name in names:
            if name.endswith(".rs"):
                yield os.path.relpath(os.path.join(directory, name), root)


def module_path(file):
    """src/profile/http_cookie.rs -> ["profile", "http_cookie"]; lib.rs and mod.rs name their directory."""
    parts = file[:-3].split(os.sep)
    if parts[-1] in ("mod", "lib"):
        parts = parts[:-1]
    return parts


def without_tests(text):
    """Non-test code: drops `#[cfg(test)]` items (a `mod tests { ... }` block or a `mod x;` line)."""
    out, lines, i = [], text.split("\n"), 0
    while i < len(lines):
        if lines[i].strip() == "#[cfg(test)]":
            i += 1
            if i < len(lines) and lines[i].rstrip().endswith(";"):
                i += 1
                continue
            depth, started = 0, False
            while i < len(lines):
                depth += lines[i].count("{") - lines[i].count("}")
                started = started or "{" in lines[i]
                i += 1
                if started and depth <= 0:
                    break
            continue
        out.append(lines[i])
        i += 1
    return "\n".join(out)


def without_comments(text):
    """Drops `//` comments (doc comments too: they name modules without importing them)."""
    lines = []
    for line in text.split("\n"):
        at = line.find("//")
        while at >= 0 and line[:at].count('"') % 2 == 1:
            at = line.find("//", at + 2)
        lines.append(line if at < 0 else line[:at])
    return "\n".join(lines)


def check(root, graph=False):
    """The problems of the tree at `root` (a list of lines)."""
    files = sorted(f for f in source_files(root) if os.path.basename(f) != "tests.rs" and "fake" not in f)
    by_module = {tuple(module_path(f)): f for f in files}
    problems = []

    def resolve(parts):
        """The file defining the longest prefix of module path `parts`."""
        for end in range(len(parts), 0, -1):
            if tuple(parts[:end]) in by_module:
                return by_module[tuple(parts[:end])]
        return None

    edges = {f: set() for f in files}
    for file in files:
        text = without_comments(without_tests(open(os.path.join(root, file)).read()))
        if os.path.normpath(file).split(os.sep)[0] != HOST_LAYER and re.search(r"\bproxy_wasm\b", text):
            problems.append(f"src/{file} names proxy_wasm: only src/{HOST_LAYER}/ may")
        here = module_path(file)
        is_mod_file = os.path.basename(file) in ("mod.rs", "lib.rs")
        for match in re.finditer(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+)", text):
            anchor, rest = match.group(1), match.group(2).split("::")[1:]
            if anchor == "crate":
                parts = rest
            elif anchor == "self":
                parts = (here if is_mod_file else here[:-1]) + rest if is_mod_file else here + rest
            else:
                base = here[:-1] if not is_mod_file else here[:-1]
                parts = base + rest
            target = resolve(parts)
            if target and target != file:
                edges[file].add(target)

    def cycles(graph):
        found, state, stack = [], {}, []

        def visit(node):
            state[node] = "open"
            stack.append(node)
            for nxt in sorted(graph.get(node, ())):
                if state.get(nxt) == "open":
                    found.append(stack[stack.index(nxt):] + [nxt])
                elif nxt not in state:
                    visit(nxt)
            stack.pop()
            state[node] = "done"

        for node in sorted(graph):
            if node not in state:
                visit(node)
        return found

    # A parent module file declaring its children is not an import.
    def is_parent(a, b):
        return module_path(b)[:-1] == module_path(a) and os.path.basename(a) in ("mod.rs", "lib.rs")

    file_graph = {a: {b for b in bs if not is_parent(a, b)} for a, bs in edges.items()}
    for cycle in cycles(file_graph):
        problems.append("file import cycle: " + " -> ".join(f"src/{f}" for f in cycle))
    top = {}
    for a, bs in file_graph.items():
        ta = module_path(a)[0] if module_path(a) else "lib"
        for b in bs:
            tb = module_path(b)[0] if module_path(b) else "lib"
            if ta != tb:
                top.setdefault(ta, set()).add(tb)
    for cycle in cycles(top):
        problems.append("module import cycle: " + " -> ".join(cycle))
    if graph:
        for module in sorted(top):
            print(f"{module} -> {', '.join(sorted(top[module]))}")
    return problems


def self_test():
    """The checks find what they are for: a cycle and proxy_wasm outside the host layer."""
    import tempfile

    with tempfile.TemporaryDirectory() as root:
        os.makedirs(os.path.join(root, "wasm"))
        sources = {
            "lib.rs": "pub mod a;\npub mod b;\nmod wasm;\n",
            "a.rs": "//! uses crate::b only in this comment\nuse crate::b::B;\npub struct A;\n",
            "b.rs": "use crate::a::A;\npub struct B;\nfn f() { proxy_wasm::main!{{}} }\n",
            "wasm/mod.rs": "use proxy_wasm::traits::Context;\nuse crate::a::A;\n",
        }
        for name, text in sources.items():
            with open(os.path.join(root, name), "w") as out:
                out.write(text)
        problems = check(root)
        assert any("src/b.rs names proxy_wasm" in p for p in problems), problems
        assert any(p.startswith("module import cycle: a -> b -> a") for p in problems), problems
        assert not any(p.startswith("src/wasm/") for p in problems), problems
        assert len(problems) == 3, problems


if __name__ == "__main__":
    self_test()
    found = check(ROOT, graph="--graph" in sys.argv)
    for problem in found:
        print(problem, file=sys.stderr)
    sys.exit(1 if found else 0)
