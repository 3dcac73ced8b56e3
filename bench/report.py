"""The results table (Markdown) and the raw results file (JSON lines); reading JSON lines files."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.harness import Options, Record

__all__ = ["PACKAGES", "machine", "read_jsonl", "samples_table", "table", "write_jsonl"]

PACKAGES = ("Django", "channels", "channels-redis", "daphne", "uvicorn", "websockets", "redis", "Twisted")
TARGETS = ("wsgroups", "bare", "raw")
HEADERS = ("scenario", "metric", "wsgroups", "bare Channels", "ratio", "raw websockets")


def machine() -> dict[str, Any]:
    """CPU count, memory, Python and package versions of this machine."""
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    versions: dict[str, str] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return {
        "nproc": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
    }


def _number(value: float) -> str:
    if (value == int(value) and abs(value) >= 1) or value == 0:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def _cell(record: Record | None) -> str:
    if record is None:
        return ""
    if record.value is None:
        return record.status
    return _number(record.value)


def table(records: list[Record], shards: int = 1) -> str:
    """A Markdown table, one row per (scenario, metric); ratio is wsgroups / bare Channels.

    Above it, when ``shards`` is above 1, a line saying the channel layer was sharded over
    that many Redis servers; below it, the notes of rows that were not measured (why not)
    and other notes.
    """
    rows: dict[tuple[str, str], dict[str, Record]] = {}
    for record in records:
        rows.setdefault((record.scenario, record.metric), {})[record.target] = record
    lines = [f"Channel layer sharded over {shards} Redis servers (`--shards {shards}`).", ""] if shards > 1 else []
    lines += ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    for (scenario, metric), by_target in rows.items():
        ours, bare = by_target.get("wsgroups"), by_target.get("bare")
        ratio = ""
        if ours and bare and ours.value is not None and bare.value:
            ratio = f"{ours.value / bare.value:.2f}"
        cells = [scenario, metric, _cell(ours), _cell(bare), ratio, _cell(by_target.get("raw"))]
        lines.append("| " + " | ".join(cells) + " |")
    notes = sorted({(r.scenario, r.target, r.status, r.note) for r in records if r.note})
    if notes:
        lines.append("")
        lines.extend(f"- {scenario} / {target}: {note}" for scenario, target, _, note in notes)
    return "\n".join(lines)


def samples_table(samples: list[dict[str, Any]]) -> str:
    """A Markdown table of time series samples, one row per sample: seconds since the load
    started, sockets open, messages sent and received so far, then per server process
    its RSS (MiB), open file descriptors and the sockets open on it."""
    if not samples:
        return ""
    names = [server["name"] for server in samples[0]["servers"]]
    headers = ["scenario", "t (s)", "open sockets", "sent", "received"]
    for name in names:
        headers += [f"{name} RSS (MiB)", f"{name} fds", f"{name} sockets"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for sample in samples:
        cells = [sample["scenario"], f"{sample['t']:.0f}", f"{sample['open']:,}"]
        cells += [f"{sample['sent']:,}", f"{sample['received']:,}"]
        for server in sample["servers"]:
            cells += [f"{server['rss_mib']:.1f}", f"{server['fds']:,}", f"{server['sockets']:,}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_jsonl(
    path: Path,
    run: dict[str, Any],
    options: Options,
    records: list[Record],
    samples: list[dict[str, Any]] | None = None,
) -> None:
    """Write a ``run`` line (machine, options, command), one ``result`` line per record and
    one ``sample`` line per time series sample."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as out:
        head = {"type": "run", **run, "options": dataclasses.asdict(options), "machine": machine()}
        out.write(json.dumps(head) + "\n")
        for record in records:
            out.write(json.dumps({"type": "result", **dataclasses.asdict(record)}) + "\n")
        for sample in samples or []:
            out.write(json.dumps({"type": "sample", **sample}) + "\n")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The objects of a JSON lines file (the senders' logs, the test servers' events), blank lines skipped."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
