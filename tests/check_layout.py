#!/usr/bin/env python3
"""Checks the layout rules of docs/architecture.md on the library's headers:
- no include cycle among tradeagg headers (an include that runs back up the flow would make one
  as soon as the lower header needed anything from the upper);
- the core (everything outside tradeagg/redis/ and the forwarding headers under sink/) includes
  nothing from tradeagg/redis/, hiredis, Beast or JSON;
- no header grows past 600 lines unless it is listed below with the reason it is not cut yet.
Usage: tests/check_layout.py [REPO_ROOT]; exit status 1 with one line per finding."""
import pathlib
import re
import sys

MAX_LINES = 600
# Headers over MAX_LINES, each one concept that is not cut, and why.
OVERSIZED = {
    # The facade users hold: every member delegates to the shards, the token table, the memory
    # budget or the push gate, and its API (lifecycle, pushes, event time, reclamation, tuning,
    # statistics) is one object's.
    "tradeagg/pipeline.hpp",
    # One worker's loop: drain, apply, flush, reclaim, resync, each a few dozen lines that share
    # the worker's state.
    "tradeagg/shard.hpp",
}
FORWARDING = re.compile(r"^tradeagg/sink/(redis_[a-z_]*|asio_hiredis)\.hpp$")
INCLUDE = re.compile(r'^\s*#\s*include\s*[<"]([^>"]+)[>"]', re.M)


def main() -> int:
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()
    include_dir = root / "include"
    headers = {p.relative_to(include_dir).as_posix(): p for p in include_dir.rglob("*.hpp")}
    graph = {}
    problems = []
    for name, path in sorted(headers.items()):
        text = path.read_text()
        includes = INCLUDE.findall(text)
        graph[name] = [i for i in includes if i in headers]
        core = not name.startswith("tradeagg/redis/") and not FORWARDING.match(name)
        if core:
            for inc in includes:
                if inc.startswith(("tradeagg/redis/", "hiredis/", "boost/beast", "boost/json")):
                    problems.append(f"{name}: the core includes {inc}")
        lines = text.count("\n")
        if lines > MAX_LINES and name not in OVERSIZED:
            problems.append(f"{name}: {lines} lines (over {MAX_LINES}); cut it along a seam")
    # Cycles, by depth-first search.
    state = {}

    def visit(node, stack):
        state[node] = "open"
        stack.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == "open":
                cycle = stack[stack.index(nxt):] + [nxt]
                problems.append("include cycle: " + " -> ".join(cycle))
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    for p in problems:
        print(f"check_layout: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
