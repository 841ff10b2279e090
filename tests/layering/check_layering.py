#!/usr/bin/env python3
"""The layering of ../shared/DESIGN.md, enforced: every #include "a/b.hpp" in the source tree must
go to the file's own layer or to one below it, and third-party headers stay in the layer that owns
them. runtime/ files get their layer from the table CMake writes (build/runtime_layers.txt, from
runtime/CMakeLists.txt's zf_layer calls); the other folders are one layer each.

    check_layering.py SOURCE_DIR LAYERS_TXT        # exit 1 listing every violation
    check_layering.py --self-test LAYERS_TXT       # proves the check can fail
"""
import os
import re
import sys
import tempfile

# Folder layers above runtime and what they may use (runtime layers come from the table).
FOLDERS = {
    "kernels": [],
    "storage": ["runtime"],
    "actors": ["storage", "runtime"],
    "pipelines": ["actors", "storage", "runtime"],
    "examples": ["pipelines", "actors", "storage", "runtime"],
    "fuzz": ["actors", "storage", "runtime"],
}
# Third-party headers and the layers (or files) allowed to include them.
THIRD_PARTY = [
    (re.compile(r"^gloo/"), {"dist"}),
    (re.compile(r"^caf/"), {"actors", "pipelines"}),
    (re.compile(r"^boost/(asio|beast)"),
     {"actors/gateway", "actors/http_server", "actors/http_connection", "actors/gateway_session",
      "actors/http_parse"}),
    (re.compile(r"^(capnp/|kj/|liburing)"), {"storage"}),
    (re.compile(r"^CLI/"), {"pipelines"}),
    (re.compile(r"^(cuda|cublas|nccl)"), {"kernels", "runtime/dist/comm_nccl"}),
]
INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]', re.M)


def read_table(path):
    files, deps = {}, {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if not parts:
                continue
            if parts[0] == "@deps":
                deps[parts[1]] = parts[2:]
            else:
                files[parts[0]] = parts[1]
    return files, deps


def closure(layer, deps):
    seen, todo = set(), [layer]
    while todo:
        for d in deps.get(todo.pop(), []):
            if d not in seen:
                seen.add(d)
                todo.append(d)
    return seen


def check(root, table_path):
    files, deps = read_table(table_path)
    runtime_layers = set(deps)
    for folder, allowed in FOLDERS.items():
        deps.setdefault(folder, [])
        for a in allowed:
            deps[folder] += sorted(runtime_layers) if a == "runtime" else [a]
    deps["kernels"] = []
    problems = []

    def layer_of(rel):
        if rel in files:
            return files[rel]
        top = rel.split("/")[0]
        if top == "runtime":
            return None
        return top if top in FOLDERS else "?"

    for folder in ["kernels", "runtime", "storage", "actors", "pipelines", "examples", "fuzz"]:
        base = os.path.join(root, folder)
        if not os.path.isdir(base):
            continue
        names = []
        for d, _, fs in os.walk(base):  # runtime/<layer>/ folders included
            names += [os.path.relpath(os.path.join(d, n), base) for n in fs]
        for name in sorted(names):
            if not name.endswith((".hpp", ".cpp", ".cu", ".cuh")):
                continue
            rel = f"{folder}/{name}"
            me = layer_of(rel)
            if me is None:
                problems.append(f"{rel}: in no runtime layer (add it to a zf_layer in runtime/CMakeLists.txt)")
                continue
            allowed = {me} | closure(me, deps)
            with open(os.path.join(base, name), encoding="utf-8") as f:
                text = f.read()
            for quote, inc in INCLUDE.findall(text):
                if quote == '"' and "/" in inc and inc.split("/")[0] in FOLDERS.keys() | {"runtime"}:
                    target = layer_of(inc)
                    if target is None or target == "?":
                        continue  # a generated or missing header: the compiler says so
                    if target not in allowed:
                        problems.append(f"{rel} ({me}) includes {inc} ({target}): {me} may use "
                                        f"{', '.join(sorted(allowed - {me})) or 'nothing'}")
                for pattern, owners in THIRD_PARTY:
                    stem = rel.rsplit(".", 1)[0]
                    if pattern.search(inc) and me not in owners and stem not in owners:
                        problems.append(f"{rel} ({me}) includes <{inc}>, which only "
                                        f"{', '.join(sorted(owners))} may use")
    return problems


def self_test(table_path):
    with tempfile.TemporaryDirectory() as d:
        for folder in ["kernels", "runtime/text"]:
            os.makedirs(os.path.join(d, folder))
        with open(os.path.join(d, "runtime", "text", "tokenizer.hpp"), "w") as f:
            f.write('#include "runtime/model/model.hpp"\n#include <caf/all.hpp>\n')
        with open(os.path.join(d, "kernels", "norm.hpp"), "w") as f:
            f.write('#include "runtime/core/error.hpp"\n')
        with open(os.path.join(d, "runtime", "stray.hpp"), "w") as f:
            f.write("\n")
        problems = check(d, table_path)
    want = ["runtime/text/tokenizer.hpp (text) includes runtime/model/model.hpp (model)",
            "runtime/text/tokenizer.hpp (text) includes <caf/all.hpp>",
            "kernels/norm.hpp (kernels) includes runtime/core/error.hpp (core)",
            "runtime/stray.hpp: in no runtime layer"]
    missing = [w for w in want if not any(p.startswith(w) for p in problems)]
    if missing:
        print("self-test: the check missed:", *missing, sep="\n  ")
        return 1
    print(f"self-test: all {len(want)} planted violations found")
    return 0


def main():
    if sys.argv[1] == "--self-test":
        return self_test(sys.argv[2])
    problems = check(sys.argv[1], sys.argv[2])
    for p in problems:
        print(p)
    print(f"layering: {len(problems)} violation(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
