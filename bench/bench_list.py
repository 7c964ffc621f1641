"""Wall time of `zoo list` as a new process, against the model registries people compare it with.

What: how long a user waits for ``zoo list`` (the console script next to ``sys.executable``, and
``python -m zoo list``), anchored on ``python -c "import timm; timm.list_models()"`` measured in the
same run; also ``python -c "import torchvision.models as m; m.list_models()"`` and the interpreter floor
``python -c pass``.

How: every command is a fresh process (``subprocess.run``, output captured and discarded, exit status
checked), timed with ``time.perf_counter`` around the whole process. One warm-up round first (page
cache, .pyc files), then ``--runs`` rounds (default 7, at least 5) in which the commands take turns, so
slow drift of the machine hits all of them alike. Reports min and median per command and the ratio of
each median to timm's median (goal for zoo: <= 0.05). Every command runs with a fresh temporary ZOO_HOME
and without ZOO_REGISTRY / ZOO_LOAD_PLUGINS / ZOO_DISABLE_PLUGINS from the caller's environment.

Bytecode: an installed package has .pyc files, but a source checkout run with PYTHONDONTWRITEBYTECODE=1
(as on the project's dev VM) has none for zoo, so every start compiles zoo's modules again. The main
rows therefore run without PYTHONDONTWRITEBYTECODE and with PYTHONPYCACHEPREFIX pointing at a temporary
directory (filled by the warm-up round for every command alike; nothing is written into the repository).
When the caller's environment sets PYTHONDONTWRITEBYTECODE, one more row times ``zoo list`` exactly as
that environment runs it, to show what the missing .pyc files cost.

Then it checks that ``zoo list`` imports none of torch, torchvision, timm, numpy, safetensors or PIL,
two ways: the module names printed by ``python -X importtime -m zoo list``, and ``sys.modules`` after
``zoo.cli.main(['list'])`` in a fresh interpreter. Exit status 1 if either finds one.
``--importtime`` also prints the 10 largest cumulative import times of ``zoo list`` to stderr.

Run: .venv/bin/python bench/bench_list.py [--runs 7] [--importtime]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAVY = ("torch", "torchvision", "timm", "numpy", "safetensors", "PIL")
ANCHOR = "timm.list_models()"
NO_PYC = "zoo list, caller's env (no .pyc for zoo)"

SYS_MODULES_PROBE = f"""
import contextlib, io, json, sys
import zoo.cli
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        zoo.cli.main(["list"])
    except SystemExit as exc:
        code = exc.code
    else:
        code = 0
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})
print(json.dumps({{"exit": code, "listed": "resnet56-cifar" in out.getvalue(), "heavy": heavy}}))
"""


def run_once(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, env=env)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr.decode(errors='replace')}")
    return elapsed


def parse_importtime(stderr: str) -> list[tuple[str, int, int]]:
    """(module, self us, cumulative us) per line of `python -X importtime` output."""
    rows = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "[us]" in line:
            continue
        self_us, cumulative, module = line.removeprefix("import time:").split("|", 2)
        rows.append((module.strip(), int(self_us), int(cumulative)))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="timed runs per command after 1 warm-up (>= 5)")
    parser.add_argument(
        "--importtime", action="store_true", help="print the top 10 cumulative imports of `zoo list` to stderr"
    )
    args = parser.parse_args()
    if args.runs < 5:
        parser.error("--runs must be at least 5")

    py = sys.executable
    console_script = str(Path(py).with_name("zoo"))
    if not Path(console_script).is_file():
        sys.exit(f"no console script at {console_script}: is the project installed in this environment?")
    work = tempfile.mkdtemp(prefix="zoo-bench-list-")
    caller_env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("ZOO_REGISTRY", "ZOO_LOAD_PLUGINS", "ZOO_DISABLE_PLUGINS", "PYTHONPYCACHEPREFIX")
    }
    caller_env["ZOO_HOME"] = str(Path(work) / "home")
    env = {k: v for k, v in caller_env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(Path(work) / "pycache")
    commands: dict[str, tuple[list[str], dict[str, str]]] = {
        "python -c pass (floor)": ([py, "-c", "pass"], env),
        "zoo list (console script)": ([console_script, "list"], env),
        "python -m zoo list": ([py, "-m", "zoo", "list"], env),
    }
    if caller_env.get("PYTHONDONTWRITEBYTECODE"):
        commands[NO_PYC] = ([console_script, "list"], caller_env)
    commands["torchvision.models.list_models()"] = ([py, "-c", "import torchvision.models as m; m.list_models()"], env)
    commands[ANCHOR] = ([py, "-c", "import timm; timm.list_models()"], env)
    try:
        for cmd, cmd_env in commands.values():  # warm-up round (also writes the .pyc files)
            run_once(cmd, cmd_env)
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, (cmd, cmd_env) in commands.items():
                times[name].append(run_once(cmd, cmd_env))

        importtime = subprocess.run(
            [py, "-X", "importtime", "-m", "zoo", "list"], capture_output=True, text=True, env=env
        )
        probe = subprocess.run([py, "-c", SYS_MODULES_PROBE], capture_output=True, text=True, env=env)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    anchor = statistics.median(times[ANCHOR])
    print(
        f"zoo list vs timm / torchvision registries: new process each, {args.runs} runs after 1 warm-up; "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    print(f"{'command':<42}{'min s':>8}{'median s':>10}{'x timm':>9}")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"{name:<42}{min(values):>8.3f}{med:>10.3f}{med / anchor:>9.3f}")
    zoo_ratio = max(statistics.median(times[n]) for n in ("zoo list (console script)", "python -m zoo list")) / anchor
    print(
        f"zoo/timm (slower of the two zoo commands): {zoo_ratio:.3f} (goal <= 0.05: "
        f"{'met' if zoo_ratio <= 0.05 else 'NOT met'})"
    )

    failed = False
    rows = parse_importtime(importtime.stderr)
    if importtime.returncode != 0 or not rows:
        print(f"python -X importtime -m zoo list failed ({importtime.returncode})")
        failed = True
    else:
        heavy = sorted({m for m, _, _ in rows if m.split(".")[0] in HEAVY})
        total_ms = sum(s for _, s, _ in rows) / 1e3
        print(
            f"-X importtime: {len(rows)} modules imported, {total_ms:.0f} ms of import time in all; "
            f"heavy modules ({', '.join(HEAVY)}): {', '.join(heavy) or 'none'}"
        )
        failed |= bool(heavy)
        if args.importtime:
            print("top 10 cumulative imports of `python -m zoo list` (ms, self ms, module):", file=sys.stderr)
            for module, self_us, cumulative in sorted(rows, key=lambda r: -r[2])[:10]:
                print(f"  {cumulative / 1e3:8.1f} {self_us / 1e3:8.1f}  {module}", file=sys.stderr)
    try:
        result = json.loads(probe.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        print(f"sys.modules probe failed ({probe.returncode}): {probe.stderr.strip()[-500:]}")
        failed = True
    else:
        ok = result["exit"] in (0, None) and result["listed"]
        print(
            f"sys.modules after zoo.cli.main(['list']): exit {result['exit']}, listed resnet56-cifar: "
            f"{result['listed']}, heavy modules: {', '.join(result['heavy']) or 'none'}"
        )
        failed |= bool(result["heavy"]) or not ok
    if failed:
        print("FAILED: `zoo list` imported a heavy module or did not run cleanly", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
