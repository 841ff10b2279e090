#!/usr/bin/env python3
"""CTest splits a discovered test name at ';' (it is CMake's list separator): a doctest
TEST_CASE whose name holds one becomes two CTest tests that match no case, pass, and run
nothing. This check fails on any such name, so no test is silently left out of CI.
Usage: check_test_names.py TESTS_DIR [--self-test]"""
import pathlib
import re
import sys

NAME = re.compile(r'TEST_CASE\(\s*((?:"(?:[^"\\]|\\.)*"\s*)+)\)', re.S)


def bad_names(text):
    out = []
    for m in NAME.finditer(text):
        name = "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', m.group(1)))
        if ";" in name:
            out.append(name)
    return out


def main():
    if "--self-test" in sys.argv:  # the check can fail
        sample = 'TEST_CASE("a; b") {}\nTEST_CASE(\n    "c, "\n    "d; e") {}\nTEST_CASE("ok") {}'
        return 0 if bad_names(sample) == ["a; b", "c, d; e"] else 1
    root = pathlib.Path(sys.argv[1])
    failures = []
    for p in sorted(root.rglob("*.cpp")):
        for name in bad_names(p.read_text(encoding="utf-8", errors="replace")):
            failures.append(f"{p}: TEST_CASE \"{name}\" has a ';' (CTest splits the name there "
                            "and the case never runs): use ','")
    for f in failures:
        print(f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
