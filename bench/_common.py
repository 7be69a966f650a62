"""Helpers shared by the benchmark scripts (not a benchmark itself: running it does nothing).

Every benchmark prints a table of figures beside a baseline measured in the same run and writes
the same figures to ``bench/results/<name>.json`` (gitignored). Nothing here asserts anything.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, Sequence

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
TESTS_DIR = ROOT / "tests"

if str(ROOT) not in sys.path:  # crm_meta importable even without the editable install
    sys.path.insert(0, str(ROOT))


def python() -> str:
    """The interpreter to run child processes with: the project's venv when present."""
    venv = ROOT / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def clean_env(**extra: str) -> dict[str, str]:
    """os.environ without CRM_* variables (a developer's CRM_DATABASE_URL must not leak in)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


def percentile(samples: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (pct in 0..100) of ``samples``."""
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), int(round(pct / 100 * len(ordered) + 0.5))))
    return ordered[rank - 1]


def summary_ms(samples_s: Sequence[float]) -> dict[str, float]:
    """p50/p95/mean/min/max of durations given in seconds, in milliseconds."""
    ms = [s * 1000 for s in samples_s]
    return {
        "n": len(ms),
        "p50_ms": round(percentile(ms, 50), 3),
        "p95_ms": round(percentile(ms, 95), 3),
        "mean_ms": round(statistics.fmean(ms), 3) if ms else float("nan"),
        "min_ms": round(min(ms), 3) if ms else float("nan"),
        "max_ms": round(max(ms), 3) if ms else float("nan"),
    }


def time_calls(fn: Callable[[], Any], n: int, warmup: int = 5) -> list[float]:
    """Durations (seconds) of ``n`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A plain-text table, numbers right-aligned."""
    rows = [[_cell(c) for c in r] for r in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in rows)) if rows else len(str(h))
              for i, h in enumerate(headers)]
    numeric = [all(_is_num(r[i]) for r in rows) if rows else False for i in range(len(headers))]

    def line(cells):
        return "  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric))

    out = [line([str(h) for h in headers]), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in rows]
    return "\n".join(out)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def _is_num(text: str) -> bool:
    try:
        float(text.rstrip("x×s%"))
        return True
    except ValueError:
        return text in ("-", "")


def goal(ok: bool) -> str:
    return "OK" if ok else "MISSED"


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def load_note() -> str:
    """A warning when other processes keep the machine busy (figures are then noisy)."""
    load1 = os.getloadavg()[0]
    cpus = os.cpu_count() or 1
    if load1 > cpus:  # the benchmark itself keeps about one CPU busy
        return (f"note: load average {load1:.1f} on {cpus} CPUs — other processes are running, "
                "expect noisy figures")
    return ""


def print_load_note() -> None:
    """Print ``load_note()`` when there is one (at the end of a bench's report)."""
    note = load_note()
    if note:
        print(note)


def write_results(name: str, data: dict[str, Any]) -> Path:
    """Write ``data`` (plus machine info) to bench/results/<name>.json and return the path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **data}, indent=2, default=str) + "\n")
    return path


if __name__ == "__main__":  # `make bench` runs every bench/*.py; this one is only a library
    pass


@contextmanager
def databases(spec: str, work: Path, prefix: str) -> Iterator[list[tuple[str, Callable[[str], str]]]]:
    """``[(backend, new_url)]`` for ``spec`` ("sqlite,postgresql"): ``new_url(name)`` gives a fresh database —
    a file under ``work`` for SQLite, a database on one throwaway PostgreSQL server (started on first use,
    stopped on exit) — named ``<prefix>_<name>``."""
    servers: list = []

    def maker(backend: str) -> Callable[[str], str]:
        if backend == "sqlite":
            return lambda name: f"sqlite:///{work / f'{prefix}_{name}.db'}"
        if backend == "postgresql":
            def new_url(name: str) -> str:
                if not servers:
                    sys.path.insert(0, str(TESTS_DIR))
                    from pgserver import PgServer

                    servers.append(PgServer().start())
                return servers[0].create_database(f"bench_{prefix}_{name}")
            return new_url
        raise SystemExit(f"unknown database {backend!r}")

    chosen = [(b, maker(b)) for b in (x.strip() for x in spec.split(",")) if b]
    try:
        yield chosen
    finally:
        for server in servers:
            server.stop()


def per_database(spec: str, prefix: str, run: Callable[[str, Callable[[str], str], Path], Any]) -> list:
    """``run(backend, new_url, work)`` for each database of ``spec`` (see ``databases``), in a temp
    dir ``work`` removed afterwards; their results in order."""
    results = []
    work = Path(tempfile.mkdtemp(prefix=f"crm-bench-{prefix}-"))
    try:
        with databases(spec, work, prefix) as dbs:
            for backend, new_url in dbs:
                results.append(run(backend, new_url, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return results
