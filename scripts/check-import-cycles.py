#!/usr/bin/env python3
"""Fails when modules of one crate import each other in a circle.

Reads every crate's src/ (a directory with src/lib.rs or src/main.rs), maps each file to its
module path, and collects the paths it names: `crate::…`, `super::…` and `self::…`, in `use`
items (grouped ones too) and in expressions. A reference from module A to module B is an edge
between the two siblings that hold them under their nearest common parent (a module naming its
own parent or child is no edge: that is how Rust nests). A circle among the siblings of any
parent is reported with the files that make each edge, and the script exits 1.

Usage: scripts/check-import-cycles.py [CRATE_DIR...]   (default: every crate in the workspace)
"""

import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PATH = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+|::\{)")
INLINE_MOD = re.compile(r"^(\s*)(?:pub(?:\([a-z]+\))?\s+)?mod\s+([a-z_][a-z0-9_]*)\s*\{")


def crates(args):
    if args:
        return [pathlib.Path(a).resolve() for a in args]
    found = []
    for toml in sorted(ROOT.glob("*/Cargo.toml")):
        src = toml.parent / "src"
        if (src / "lib.rs").exists() or (src / "main.rs").exists():
            found.append(toml.parent)
    return found


def module_of(src, file):
    """The module path of a file: src/a/b.rs and src/a/b/mod.rs are ("a", "b")."""
    parts = list(file.relative_to(src).with_suffix("").parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts.pop()
    return tuple(parts)


def grouped(text, start):
    """The paths inside the `{…}` that begins at text[start]: `a::b`, `c::{d, e}` → a::b, c::d, c::e."""
    depth, i = 0, start
    while i < len(text):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            break
        i += 1
    body = text[start + 1 : i]
    out, prefix, token, depth = [], [], "", 0
    for ch in body + ",":
        if ch == "{":
            prefix.append(token.strip().rstrip(":"))
            token = ""
        elif ch in ",}":
            if token.strip():
                out.append("::".join(p for p in prefix + [token.strip()] if p))
            token = ""
            if ch == "}":
                prefix.pop()
        else:
            token += ch
    return [p.split(" as ")[0].strip() for p in out]


def references(text):
    """(anchor, [segment…], inline-module depth) for every path the file names."""
    lines = text.split("\n")
    inline = []  # indentation of each inline `mod x {` we are inside
    offsets, pos = [], 0
    for line in lines:
        offsets.append(pos)
        pos += len(line) + 1
    depth_at = []
    for line in lines:
        while inline and re.match(r"^" + inline[-1] + r"\}", line):
            inline.pop()
        m = INLINE_MOD.match(line)
        depth_at.append(len(inline))
        if m:
            inline.append(m.group(1))
    code = re.sub(r"//[^\n]*", "", text)  # comments name paths that are not imports
    for m in PATH.finditer(code):
        line = code.count("\n", 0, m.start())
        depth = depth_at[line] if line < len(depth_at) else 0
        anchor, rest = m.group(1), m.group(2)
        if rest == "::{":
            for path in grouped(code, m.end() - 1):
                yield anchor, [s for s in path.split("::") if s], depth
        else:
            yield anchor, [s for s in rest.split("::") if s], depth


def resolve(module, anchor, segments, depth, modules):
    """The module a path lands in: the longest prefix of it that is a module of the crate."""
    if anchor == "crate":
        base = ()
    else:
        # Inside an inline `mod tests {`, `super` is the file's own module.
        here = module
        ups = 0
        while segments and segments[0] == "super":
            segments = segments[1:]
            ups += 1
        ups += 1 if anchor == "super" else 0
        ups = max(ups - depth, 0)
        base = here[: len(here) - ups] if ups else here
    path = base
    for segment in segments:
        if base + (segment,) in modules or path + (segment,) in modules:
            path = path + (segment,)
        else:
            break
    return path


def cycles(edges):
    """Strongly connected components of more than one node (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in list(edges):
        if v not in index:
            visit(v)
    return out


def check(crate):
    src = crate / "src"
    files = {module_of(src, f): f for f in sorted(src.rglob("*.rs"))}
    modules = set(files)
    # (parent, from-child, to-child) -> files that make the edge
    edges = {}
    for module, file in files.items():
        for anchor, segments, depth in references(file.read_text()):
            target = resolve(module, anchor, list(segments), depth, modules)
            common = 0
            while (
                common < len(module)
                and common < len(target)
                and module[common] == target[common]
            ):
                common += 1
            if common == len(module) or common == len(target):
                continue  # self, parent or child
            parent = module[:common]
            key = (parent, module[common], target[common])
            edges.setdefault(key, set()).add(str(file.relative_to(ROOT)))
    graphs = {}
    for parent, a, b in edges:
        graphs.setdefault(parent, {}).setdefault(a, set()).add(b)
    failed = False
    for parent, graph in sorted(graphs.items()):
        for component in cycles(graph):
            failed = True
            where = "::".join(("crate",) + parent)
            print(f"{crate.name}: import circle under {where}: {' <-> '.join(component)}")
            for a in component:
                for b in component:
                    for f in sorted(edges.get((parent, a, b), ())):
                        print(f"    {a} -> {b}  ({f})")
    return failed


def main():
    failed = False
    for crate in crates(sys.argv[1:]):
        failed |= check(crate)
    if failed:
        sys.exit(1)
    print("no import circles")


if __name__ == "__main__":
    main()
