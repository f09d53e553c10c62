"""Does a thread count hold up on a busy machine? Training steps timed alone and beside a
competing busy process, each condition its own `ecbench bench train` process (the thread
count is chosen when a process starts, as a user's run chooses it).

torch's threads meet at a barrier after every operation; a thread whose core another process
also wants is descheduled for a time slice and the others spin until it returns. A step of a
few milliseconds then takes a scheduler quantum per operation.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from ecbench.bench.errors import EcbenchError
from ecbench.bench.records import load_record, now_iso, provenance, write_json

# (name, --threads, with a competing busy process)
CONDITIONS = (("alone", "auto", False), ("busy", "auto", True), ("busy-fixed-2", "2", True))
SPINNER = "import time\nend = time.time() + 3600\nwhile time.time() < end:\n    pass\n"


def _bench_train(data: str, data_root: str | None, threads: str, steps: int, out: Path
                 ) -> tuple[float, int]:
    """The median step seconds and the thread count of one `ecbench bench train` process."""
    command = [sys.executable, "-m", "ecbench.bench.cli", "bench", "train", "--data", data,
               "--steps", str(steps), "--threads", threads, "--results", str(out)]
    if data_root:
        command += ["--data-root", data_root]
    done = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    found = re.search(r"^record: (.+)$", done.stdout, re.M)
    if done.returncode != 0 or not found:
        raise EcbenchError(f"bench train failed: {done.stderr.strip().splitlines()[-1:]}")
    record = load_record(Path(found.group(1)))
    return (record["measurements"]["median_step_seconds"],
            record["provenance"]["machine"]["torch_threads"])


def benchmark_threads(*, data: str, data_root: str | None, steps: int, results_dir: Path,
                      log: Callable[[str], None] = print) -> tuple[dict[str, Any], Path]:
    """Median training step alone (`--threads auto`), beside one busy process with auto, and
    beside it with 2 threads fixed; the slowdowns against alone. Written to
    RESULTS/bench/threads-<data>.json."""
    conditions: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name, threads, busy in CONDITIONS:
            spinner = subprocess.Popen([sys.executable, "-c", SPINNER]) if busy else None
            try:
                if spinner is not None:
                    time.sleep(1.0)  # let it take its core before the run looks
                step, used = _bench_train(data, data_root, threads, steps, Path(scratch))
            finally:
                if spinner is not None:
                    spinner.kill()
                    spinner.wait()
            conditions[name] = {"threads_option": threads, "threads": used,
                                "competing_process": busy, "median_step_seconds": step}
            log(f"{name}: --threads {threads} -> {used} threads, {step * 1e3:.1f} ms a step")
    alone = conditions["alone"]["median_step_seconds"]
    for entry in conditions.values():
        entry["slowdown_vs_alone"] = entry["median_step_seconds"] / alone
    result = {"benchmark": "threads", "dataset": Path(data).name, "steps": steps,
              "conditions": conditions, "provenance": provenance(0), "date": now_iso()}
    path = Path(results_dir) / "bench" / f"threads-{Path(data).name}.json"
    write_json(path, result)
    return result, path
