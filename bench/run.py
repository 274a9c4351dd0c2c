"""The published benchmark: this service against a bare redis-py loop and two peer libraries, side by side.

bench/run [--quick] [--parser hiredis|python] [--out docs]: starts its own redis-server, then measures

1. latency (p50/p99) per route at 10, 100 and 1000 turns, interleaved call by call: each round runs every
   route once on every implementation, the order of implementations rotating from round to round, so
   drift (other processes, CPU frequency, the server's memory) hits all of them alike; warm-up discarded;
2. Redis round trips and server cost per call, one implementation at a time (the counters are server-wide):
   INFO commandstats usec of the commands the client sent, and used_cpu_sys+used_cpu_user of redis-server;
3. 1..32 writer processes on one room (append, then set reactions on the turn just appended):
   throughput, compare-and-set conflicts and 409s;
4. cold import of the API function on Python 3.13 against the built layer, with and without bytecode.

It writes docs/benchmark.md and docs/benchmark.png. Figures, not assertions: the tests prove behaviour.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import time
from collections import Counter
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIZES = (10, 100, 1000)
ROUTE_NAMES = {
    "read": "read (GET messages)",
    "append": "append + window back",
    "edit": "edit (PATCH)",
    "state": "room state (GET room)",
    "budget": "read, max_tokens 4000",
    "batch": "batch of 5 turns (POST)",
    "compact": "compact through the oldest turn",
}
WRITERS = (1, 2, 4, 8, 16, 32)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run (under a minute)")
    parser.add_argument(
        "--parser",
        choices=("auto", "hiredis", "python"),
        default="auto",
        help="redis-py reply parser for every client (auto: hiredis if the layer ships it)",
    )
    parser.add_argument("--out", default=str(ROOT / "docs"), help="where benchmark.md and benchmark.png go")
    parser.add_argument("--sizes", nargs="+", type=int, default=SIZES, choices=SIZES, help="window sizes to run")
    parser.add_argument("--skip", nargs="*", default=(), choices=("latency", "cost", "writers", "cold"))
    return parser.parse_args(argv)


def layer_ships_hiredis() -> bool:
    text = (ROOT / "layers/room_history/requirements.txt").read_text()
    return "hiredis" in text.lower()


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


# ---------------------------------------------------------------- 1. latency


def measure_latency(url: str, sizes, rounds: dict[int, int], warmup: int) -> dict:
    """{turns: {route: {implementation name: [ms, ...]}}}, interleaved call by call."""
    import redis

    from bench.peers import build

    admin = redis.Redis.from_url(url)
    results: dict = {}
    for turns in sizes:
        implementations = build(url, turns)
        samples: dict = {
            route: {impl.name: [] for impl in implementations if route in impl.routes} for route in ROUTE_NAMES
        }
        started = time.monotonic()
        for round_number in range(warmup + rounds[turns]):
            shift = round_number % len(implementations)
            order = implementations[shift:] + implementations[:shift]
            for route in ROUTE_NAMES:
                for impl in order:
                    if route not in impl.routes:
                        continue
                    call = getattr(impl, route)()
                    begin = time.perf_counter()
                    call()
                    elapsed = (time.perf_counter() - begin) * 1000
                    if route == "append":
                        impl.settle(admin)
                    if round_number >= warmup:
                        samples[route][impl.name].append(elapsed)
        results[turns] = samples
        print(f"  latency at {turns} turns: {rounds[turns]} rounds in {time.monotonic() - started:.1f} s", flush=True)
    return results


# ---------------------------------------------------------------- 2. round trips and server cost


@contextmanager
def client_commands():
    """Counts requests written to Redis (a pipeline is one) and the names of the commands sent."""
    import redis

    seen = {"trips": 0, "names": set(), "on": True}
    connection = redis.connection.AbstractConnection
    send, one, many = connection.send_packed_command, connection.send_command, connection.pack_commands

    def name(command) -> None:
        if seen["on"] and command:
            first = command[0].decode() if isinstance(command[0], bytes) else str(command[0])
            seen["names"].add(first.split()[0].lower())

    def counting_send(self, packed, check_health=True):
        if seen["on"]:
            seen["trips"] += 1
        return send(self, packed, check_health)

    def naming_send(self, *args, **kwargs):
        name(args)
        return one(self, *args, **kwargs)

    def naming_pack(self, commands):
        commands = list(commands)
        for command in commands:
            name(command)
        return many(self, commands)

    connection.send_packed_command, connection.send_command = counting_send, naming_send
    connection.pack_commands = naming_pack
    try:
        yield seen
    finally:
        connection.send_packed_command, connection.send_command, connection.pack_commands = send, one, many


def server_counters(admin) -> tuple[dict, float]:
    stats = admin.info("commandstats")
    usec = {name.removeprefix("cmdstat_"): values["usec"] for name, values in stats.items()}
    cpu = admin.info("cpu")
    return usec, cpu["used_cpu_sys"] + cpu["used_cpu_user"]


def measure_cost(url: str, sizes, block: int, repeats: int) -> dict:
    """{turns: {route: {name: (round trips, command µs, server CPU µs) per call}}}, median of repeats."""
    import redis

    from bench.peers import build

    admin = redis.Redis.from_url(url)
    results: dict = {}
    with client_commands() as seen:
        for turns in sizes:
            seen["on"] = False
            implementations = build(url, turns)
            calls = min(block, turns)  # peers' lists grow during a block: start it half a block short
            raw: dict = {}
            for repeat in range(repeats):
                shift = repeat % len(implementations)
                for impl in implementations[shift:] + implementations[:shift]:
                    for route in ROUTE_NAMES:
                        if route not in impl.routes:
                            continue
                        if route == "append" and not impl.keeps_window:
                            impl.settle(admin, turns - calls // 2)
                        prepared = []
                        for _ in range(calls):
                            prepared.append(getattr(impl, route)())
                            if route == "edit":  # each edit targets the turn the last append stored
                                break
                        prepared = prepared * (calls // len(prepared))
                        seen["trips"], seen["names"] = 0, set()
                        usec_before, cpu_before = server_counters(admin)
                        seen["on"] = True
                        for call in prepared:
                            call()
                        seen["on"] = False
                        usec_after, cpu_after = server_counters(admin)
                        if route == "append":
                            impl.settle(admin)
                        command_usec = sum(usec_after.get(name, 0) - usec_before.get(name, 0) for name in seen["names"])
                        raw.setdefault(route, {}).setdefault(impl.name, []).append(
                            (
                                seen["trips"] / calls,
                                command_usec / calls,
                                (cpu_after - cpu_before) * 1e6 / calls,
                            )
                        )
            results[turns] = {
                route: {
                    name: tuple(statistics.median(values) for values in zip(*runs, strict=True))
                    for name, runs in by_name.items()
                }
                for route, by_name in raw.items()
            }
            print(f"  server cost at {turns} turns: {calls} calls x {repeats} per route", flush=True)
            seen["on"] = True
    return results


# ---------------------------------------------------------------- 3. writers on one room


def _writer(url: str, room: str, index: int, seconds: float, barrier, queue) -> None:
    from bench.peers import Ours, chat_text

    ours = Ours(url, 100, room)
    counts: Counter = Counter()
    barrier.wait()
    deadline = time.monotonic() + seconds
    for number in range(10**9):
        if time.monotonic() >= deadline:
            break
        message_id = f"p{index}-{number}"
        status = ours.status("POST", f"{ours.base}/messages", {"role": "user", "content": chat_text(message_id)})
        counts[f"append {status}"] += 1
        status = ours.status("PUT", f"{ours.base}/messages/{message_id}/reactions", {"reactions": f"+1 x{number}"})
        counts[f"react {status}"] += 1
    counts["conflicts"] = ours.conflicts()
    queue.put(counts)


def measure_writers(url: str, levels, seconds: float) -> list[dict]:
    """Per level: requests/s, appends/s, reactions/s, CAS conflicts per reaction, 409 rate, other failures."""
    context = multiprocessing.get_context("fork")
    rows = []
    for writers in levels:
        room = f"writers-{writers}-{time.time_ns()}"
        barrier, queue = context.Barrier(writers + 1), context.Queue()
        processes = [
            context.Process(target=_writer, args=(url, room, index, seconds, barrier, queue))
            for index in range(writers)
        ]
        for process in processes:
            process.start()
        barrier.wait()
        started = time.monotonic()
        total: Counter = Counter()
        for _ in processes:
            total.update(queue.get())
        elapsed = time.monotonic() - started
        for process in processes:
            process.join()
        reactions = sum(count for key, count in total.items() if key.startswith("react "))
        appends = sum(count for key, count in total.items() if key.startswith("append "))
        failed = {
            key: count for key, count in total.items() if key[-3:].isdigit() and key[-3] in "45" and key[-3:] != "409"
        }
        rows.append(
            {
                "writers": writers,
                "requests_per_s": (appends + reactions) / elapsed,
                "appends_per_s": total["append 201"] / elapsed,
                "reactions_per_s": total["react 200"] / elapsed,
                "conflicts_per_reaction": total["conflicts"] / max(1, reactions),
                "rate_409": (total["react 409"] + total["append 409"]) / max(1, appends + reactions),
                "other_failures": failed,
            }
        )
        print(f"  {writers} writers: {rows[-1]['requests_per_s']:.0f} requests/s", flush=True)
    return rows


# ---------------------------------------------------------------- 4. cold import


def find_python313() -> str | None:
    candidates = sorted(Path.home().glob(".pyenv/versions/3.13*/bin/python3.13"))
    if candidates:
        return str(candidates[-1])
    from shutil import which

    return which("python3.13")


def build_layer(python: str) -> Path:
    """The layer as `sam build` makes it (the layer's Makefile: manylinux wheels for 3.13, unchecked-hash
    bytecode), and the same tree without bytecode; the API function's files beside each, as its build copies them.

    The Makefile's output is cached under .venv-bench/ by the requirements and the Makefile; the package is
    refreshed from the working tree and compiled again on every run."""
    import hashlib
    import shutil

    layer = ROOT / "layers/room_history"
    digest = hashlib.sha256((layer / "requirements.txt").read_bytes() + (layer / "Makefile").read_bytes())
    base = ROOT / ".venv-bench" / f"layer-{digest.hexdigest()[:12]}"
    built = base / "built"
    if not (base / "ok").exists():
        shutil.rmtree(base, ignore_errors=True)
        built.mkdir(parents=True)
        subprocess.run(
            ["make", "-s", "-C", str(layer), "build-RoomHistoryLayer", f"ARTIFACTS_DIR={built}"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        (base / "ok").write_text("")
    shutil.rmtree(built / "python/room_history")
    shutil.copytree(layer / "room_history", built / "python/room_history", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [python, "-m", "compileall", "-q", "--invalidation-mode", "unchecked-hash", str(built / "python/room_history")],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    for variant in ("source", "bytecode"):
        target = base / variant
        shutil.rmtree(target, ignore_errors=True)
        ignore = shutil.ignore_patterns("__pycache__") if variant == "source" else None
        shutil.copytree(built / "python", target / "python", ignore=ignore)
        (target / "task").mkdir()
        for file in (ROOT / "functions/api").glob("*.py"):
            shutil.copy(file, target / "task")
    return base


IMPORT_PROBE = """
import sys, time
sys.path[:0] = [sys.argv[1], sys.argv[2]]
started, cpu = time.perf_counter(), time.process_time()
import app
print(time.perf_counter() - started, time.process_time() - cpu)
"""


def measure_cold_import(runs: int) -> dict | None:
    """Median ms of `import app` in fresh 3.13 processes (-B: nothing written, so each one is cold)."""
    from local.lambda_harness import environment_defaults, load_template

    python = find_python313()
    if python is None:
        print("  cold import: no python3.13 found, skipped", flush=True)
        return None
    base = build_layer(python)
    env = {
        "PATH": os.environ.get("PATH", ""),
        **environment_defaults(load_template()),
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "AWS_REGION": "us-east-1",
        "AWS_LAMBDA_FUNCTION_NAME": "ApiFunction",
    }
    results = {"python": subprocess.run([python, "--version"], capture_output=True, text=True).stdout.strip()}
    samples: dict = {"source": [], "bytecode": []}
    for _ in range(runs):
        for variant in samples:  # alternate, so drift hits both
            target = base / variant
            output = subprocess.run(
                [python, "-I", "-B", "-c", IMPORT_PROBE, str(target / "task"), str(target / "python")],
                capture_output=True,
                text=True,
                env=env,
                check=True,
            ).stdout
            samples[variant].append([float(value) * 1000 for value in output.split()])
    for variant, values in samples.items():  # wall and CPU time: on a busy machine, CPU time is the steadier one
        wall, cpu = zip(*values, strict=True)
        results[variant] = (statistics.median(wall), min(wall), statistics.median(cpu), min(cpu))
    print(
        f"  cold import: {results['bytecode'][0]:.0f} ms with bytecode, {results['source'][0]:.0f} ms without",
        flush=True,
    )
    return results


# ---------------------------------------------------------------- report


def versions() -> dict:
    names = (
        "redis",
        "hiredis",
        "langchain-community",
        "langchain-core",
        "llama-index-storage-chat-store-redis",
        "llama-index-core",
        "aws-lambda-powertools",
    )
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "-"
    return found


def machine() -> str:
    model = ""
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    server = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()
    redis_version = next((part[2:] for part in server if part.startswith("v=")), "?")
    return (
        f"{model or platform.processor()} ({os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f} at start), "
        f"Python {platform.python_version()}, redis-server {redis_version} on loopback"
    )


def render(args, latency, cost, writers, cold, parser: str, settings: str, started: float) -> str:
    names = ["this service", "bare redis-py", "langchain-community", "llama-index"]
    lines = [
        "# Benchmark",
        "",
        f"`bench/run{' --quick' if args.quick else ''}` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"{time.monotonic() - started:.0f} s. {machine()}. redis-py reply parser: **{parser}**, for every client.",
        f"Versions: {', '.join(f'{k} {v}' for k, v in versions().items())}. {settings}",
        "",
        "One redis-server, one process, the same room size for everyone. *This service* is the API function",
        "called in process as the Lambda runtime calls it (event JSON parsed, response JSON written, INFO logs",
        "to /dev/null); *bare redis-py* does only the necessary work (one pipeline, `json.loads` of every row,",
        "`json.dumps` of the response); the peers are charged only their library calls (no JSON response).",
        "The peers keep no window: their list is trimmed back after each append, untimed.",
        "",
    ]
    if latency:
        lines += ["## Latency per call (ms): p50 / p99, and p50 as a multiple of the bare loop's", ""]
        lines += ["| turns | route | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
        for turns, routes in latency.items():
            for route, by_name in routes.items():
                bare = by_name.get("bare redis-py")
                bare_p50 = statistics.median(bare) if bare else None
                cells = []
                for name in names:
                    samples = by_name.get(name)
                    if not samples:
                        cells.append("")
                        continue
                    p50 = statistics.median(samples)
                    ratio = f" ({p50 / bare_p50:.2f}×)" if bare_p50 else ""
                    cells.append(f"{p50:.3f} / {percentile(samples, 0.99):.3f}{ratio}")
                lines.append(f"| {turns} | {ROUTE_NAMES[route]} | " + " | ".join(cells) + " |")
        lines.append("")
    if cost:
        lines += [
            "## Redis per call: round trips, command time (µs, INFO commandstats of the commands the client sent),"
            " server CPU (µs, used_cpu_sys+user of redis-server), and server CPU as a multiple of the bare loop's",
            "",
            "| turns | route | " + " | ".join(names) + " |",
            "|---|---|" + "---|" * len(names),
        ]
        for turns, routes in cost.items():
            for route in ROUTE_NAMES:
                by_name = routes.get(route, {})
                bare = by_name.get("bare redis-py")
                cells = []
                for name in names:
                    if name not in by_name:
                        cells.append("")
                        continue
                    trips, command, cpu = by_name[name]
                    ratio = f" ({cpu / bare[2]:.1f}×)" if bare and bare[2] > 0 else ""
                    cells.append(f"{trips:.0f} rt, {command:.0f} µs, CPU {cpu:.0f} µs{ratio}")
                lines.append(f"| {turns} | {ROUTE_NAMES[route]} | " + " | ".join(cells) + " |")
        lines.append("")
    if writers:
        lines += [
            "## Writers on one room (this service, 100-turn window): each process appends a turn, then sets",
            "reactions on it (a read + compare-and-set that loses when another writer got in first)",
            "",
            "| writer processes | requests/s | appends/s | reactions/s | CAS conflicts per reaction | 409 rate "
            "| other failures |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in writers:
            lines.append(
                f"| {row['writers']} | {row['requests_per_s']:.0f} | {row['appends_per_s']:.0f} | "
                f"{row['reactions_per_s']:.0f} | {row['conflicts_per_reaction']:.3f} | {row['rate_409']:.2%} | "
                f"{', '.join(f'{count} × {key}' for key, count in sorted(row['other_failures'].items())) or 0} |"
            )
        lines += [
            "",
            f"The machine has {os.cpu_count()} CPUs: beyond that, writers queue for the CPU, not for Redis."
            " A reaction answered 404 is one whose turn left the 100-turn window while it waited out conflicts.",
            "",
        ]
    if cold:
        lines += [
            f"## Cold import of the API function ({cold['python']}, built layer, median of {cold['runs']} fresh "
            "processes)",
            "",
            "| layer | wall ms, median | wall min | CPU ms, median | CPU min |",
            "|---|---|---|---|---|",
            "| as built (the layer's Makefile: bytecode, unchecked-hash) | {:.0f} | {:.0f} | {:.0f} | {:.0f} |".format(
                *cold["bytecode"]
            ),
            "| the same without bytecode (compiled on every cold start) | {:.0f} | {:.0f} | {:.0f} | {:.0f} |".format(
                *cold["source"]
            ),
            "",
        ]
    lines += ["![benchmark](benchmark.png)", ""]
    return "\n".join(lines)


def plot(path: Path, latency, cost, writers) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["this service", "bare redis-py", "langchain-community", "llama-index"]
    figure, axes = plt.subplots(2, 2, figsize=(12, 9))
    for axis, route in zip(axes[0], ("read", "append"), strict=True):
        for name in names:
            sizes = [turns for turns in latency if name in latency[turns][route]]
            if sizes:
                axis.plot(sizes, [statistics.median(latency[t][route][name]) for t in sizes], marker="o", label=name)
        axis.set(xscale="log", yscale="log", xlabel="turns in the window", ylabel="p50 ms", title=ROUTE_NAMES[route])
        axis.grid(True, which="both", alpha=0.3)
        axis.legend()
    axis = axes[1][0]
    if cost:
        turns = max(cost)
        width = 0.2
        for offset, name in enumerate(names):
            values = [cost[turns].get(route, {}).get(name, (0, 0, 0))[2] for route in ("read", "append")]
            axis.bar([i + offset * width for i in range(2)], values, width, label=name)
        axis.set_xticks([i + 1.5 * width for i in range(2)], ["read", "append"])
        axis.set(ylabel="µs of redis-server CPU per call", title=f"Server CPU per call, {turns} turns")
        axis.legend()
    axis = axes[1][1]
    if writers:
        counts = [row["writers"] for row in writers]
        axis.plot(counts, [row["requests_per_s"] for row in writers], marker="o", label="requests/s")
        axis.set(
            xscale="log",
            xlabel="writer processes on one room",
            ylabel="requests/s",
            title="Writers on one room (this service)",
        )
        axis.set_xticks(counts, [str(c) for c in counts])
        twin = axis.twinx()
        twin.plot(
            counts,
            [row["conflicts_per_reaction"] for row in writers],
            marker="s",
            color="tab:red",
            label="CAS conflicts per reaction",
        )
        twin.set_ylabel("conflicts per reaction")
        axis.legend(loc="upper left")
        twin.legend(loc="upper right")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    parser = args.parser if args.parser != "auto" else ("hiredis" if layer_ships_hiredis() else "python")
    if parser == "python":
        sys.modules["hiredis"] = None  # redis-py then finds no hiredis and uses its own parser
    import redis.utils

    if parser == "hiredis" and not redis.utils.HIREDIS_AVAILABLE:
        raise SystemExit("bench: --parser hiredis, but hiredis is not installed")
    sys.path.insert(0, str(ROOT))
    from local.redis_server import RedisServer

    started = time.monotonic()
    if args.quick:
        rounds, warmup, block, repeats, seconds, runs = {10: 60, 100: 60, 1000: 30}, 10, 20, 1, 0.5, 3
    else:  # the 1000-turn rounds take ~15 times as long as the 100-turn ones
        rounds, warmup, block, repeats, seconds, runs = {10: 1000, 100: 1000, 1000: 300}, 30, 100, 3, 3.0, 9
    settings = (
        f"Rounds per size {rounds} after {warmup} warm-up rounds; server cost over {block} calls × {repeats}; "
        f"writers {seconds:g} s per level."
    )
    latency = cost = writers = cold = None
    with RedisServer() as server:
        print(f"bench: redis-server at {server.url}, parser {parser}", flush=True)
        if "latency" not in args.skip:
            latency = measure_latency(server.url, args.sizes, rounds, warmup)
        if "cost" not in args.skip:
            cost = measure_cost(server.url, args.sizes, block, repeats)
        if "writers" not in args.skip:
            writers = measure_writers(server.url, WRITERS, seconds)
    if "cold" not in args.skip:
        cold = measure_cold_import(runs)
        if cold:
            cold["runs"] = runs
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = render(args, latency, cost, writers, cold, parser, settings, started)
    (out / "benchmark.md").write_text(report)
    if latency:
        plot(out / "benchmark.png", latency, cost, writers)
    print(report)


if __name__ == "__main__":
    main()
