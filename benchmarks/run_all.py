"""Run every benchmark in ``benchmarks/`` with short settings, one after the other, and
print each one's output and then one table of the figures they report (their lines that
state a ratio, a goal or a latency). The whole report, with the machine it ran on, is also
written to ``benchmarks/results/run_all.txt``.

    python benchmarks/run_all.py                 # all of them (a few minutes)
    python benchmarks/run_all.py --only startup,http_overhead
    python benchmarks/run_all.py --list

Benchmarks written by others are picked up when present; flags they do not know are not
passed. Each runs in its own process with a time limit, so one failing does not stop the
rest (its row says so).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")

# name -> (short flags, time limit in seconds); order is the order of the report.
SHORT: dict[str, tuple[list[str], int]] = {
    "startup": (["--rounds", "5"], 300),
    "asgi_stack": (["--calls", "1500", "--rounds", "7"], 300),
    "http_overhead": (["--seconds", "3", "--rounds", "5", "--connections", "16"], 400),
    "realtime": (["--seconds", "1", "--rounds", "3"], 300),
    "hot_swap": (["--swaps", "10", "--restarts", "2"], 300),
    "kernel_responsiveness": (["--seconds", "5"], 300),
    "scaling": (["--seconds", "1", "--rounds", "3"], 500),
    "soak": (["--seconds", "20"], 300),
    "ray_overhead": (["--seconds", "2", "--rounds", "2"], 400),
    "gpu_check": ([], 360),
}
FIGURE = re.compile(
    r"ratio|goal|MISSED|p99|round trip|freed|import falkit|serve to ready|Server-Timing|"
    r"_dispatch|clients|body",
    re.I,
)


def available() -> list[str]:
    """The benchmarks present, in report order (unknown new ones last)."""
    names = sorted(
        f[:-3]
        for f in os.listdir(HERE)
        if f.endswith(".py") and not f.startswith("_") and f != "run_all.py"
    )
    if os.path.exists(os.path.join(HERE, "gpu_check.sh")):
        names.append("gpu_check")
    order = list(SHORT)
    return sorted(names, key=lambda n: order.index(n) if n in order else len(order))


def command(name: str) -> list[str]:
    if name == "gpu_check":
        return ["bash", os.path.join(HERE, "gpu_check.sh")]
    script = os.path.join(HERE, f"{name}.py")
    flags = SHORT.get(name, ([], 0))[0]
    known = _help(script)
    kept: list[str] = []
    for flag, value in zip(flags[::2], flags[1::2], strict=True):
        if flag in known:
            kept += [flag, value]
    return [sys.executable, script, *kept]


def _help(script: str) -> str:
    try:
        return subprocess.run(
            [sys.executable, script, "--help"], capture_output=True, text=True, timeout=60, cwd=HERE
        ).stdout
    except subprocess.TimeoutExpired:
        return ""


def run(name: str) -> tuple[str, float, str]:
    """(status, seconds, output) of one benchmark."""
    limit = SHORT.get(name, ([], 300))[1]
    began = time.monotonic()
    try:
        done = subprocess.run(
            command(name), capture_output=True, text=True, timeout=limit, cwd=HERE
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout or ""
        out = out.decode() if isinstance(out, bytes) else out
        return f"timed out ({limit} s)", time.monotonic() - began, out
    status = "ok" if done.returncode == 0 else f"failed (exit {done.returncode})"
    output = done.stdout + (f"\n{done.stderr[-1500:]}" if done.returncode else "")
    return status, time.monotonic() - began, output


def machine() -> str:
    """One line about the machine: CPU, cores, RAM, GPU, Python, load when started."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
        with open("/proc/meminfo") as f:
            ram = f"{int(f.readline().split()[1]) / 2**20:.0f} GiB RAM"
    except (OSError, StopIteration):
        ram = "RAM unknown"
    gpu = subprocess.run(
        "nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null || true",
        shell=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{cpu}, {os.cpu_count()} cores, {ram}, GPU: {gpu or 'none'}; "
        f"Python {platform.python_version()} on {platform.system()}; load average {load}"
    )


def figures(output: str) -> list[str]:
    """The lines of ``output`` that state a figure (table headings have no digits)."""
    return [
        line.strip()
        for line in output.splitlines()
        if FIGURE.search(line) and re.search(r"\d", line)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated benchmark names")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args()
    names = available()
    if args.list:
        print("\n".join(names))
        return
    if args.only:
        wanted = args.only.split(",")
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            raise SystemExit(f"unknown benchmarks: {unknown}; see --list")
        names = [n for n in names if n in wanted]
    report = [f"machine: {machine()}", ""]
    rows = []
    for name in names:
        print(f"== {name}: {' '.join(os.path.basename(c) for c in command(name))}", flush=True)
        status, seconds, output = run(name)
        print(output.rstrip(), f"\n-- {name}: {status} in {seconds:.0f} s\n", flush=True)
        report += [f"== {name} ({status}, {seconds:.0f} s)", output.rstrip(), ""]
        rows.append((name, status, figures(output) or ["(no figure lines)"]))
    table = ["", f"{'benchmark':<24}{'status':<22}figures", "-" * 100]
    for name, status, lines in rows:
        table.append(f"{name:<24}{status:<22}{lines[0]}")
        table += [f"{'':<46}{line}" for line in lines[1:]]
    print("\n".join(table))
    print(f"\nmachine: {machine()}")
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "run_all.txt"), "w") as f:
        f.write("\n".join([*report, *table, ""]))


if __name__ == "__main__":
    main()
