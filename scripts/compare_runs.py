"""Compare two grid run folders: every file byte for byte, except that JSON files (the manifest,
cell records) and the manifest inside bundle.zip are compared with their timings stripped.

    .venv/bin/python scripts/compare_runs.py RUN_A RUN_B

Prints one line per file ("same", "same (timings aside)" or what differs) and exits 1 when
anything differs. What counts as a timing: any "seconds" / "elapsed" / per-phase seconds key
(the manifest's totals hold the run's phase timings besides "cells", "failed", "model_calls").
"""

from __future__ import annotations

import io
import json
import sys
import zipfile
from pathlib import Path
from typing import Any

# Manifest totals that are counts, not timings; every other key under "totals" is a timing.
_TOTAL_COUNTS = {"cells", "failed", "model_calls"}
_TIMING_KEYS = {"seconds", "elapsed", "eta"}


def strip_timings(data: Any, parent: str = "") -> Any:
    """`data` with every timing value removed (recursively)."""
    if isinstance(data, dict):
        out = {}
        for key, value in data.items():
            if key in _TIMING_KEYS or (parent == "totals" and key not in _TOTAL_COUNTS):
                continue
            out[key] = strip_timings(value, key)
        return out
    if isinstance(data, list):
        return [strip_timings(v, parent) for v in data]
    return data


def _json_same(a: bytes, b: bytes) -> bool:
    return strip_timings(json.loads(a)) == strip_timings(json.loads(b))


def _zip_diff(a: bytes, b: bytes) -> str | None:
    za, zb = zipfile.ZipFile(io.BytesIO(a)), zipfile.ZipFile(io.BytesIO(b))
    if za.namelist() != zb.namelist():
        return f"members differ: {sorted(set(za.namelist()) ^ set(zb.namelist()))}"
    for name in za.namelist():
        da, db = za.read(name), zb.read(name)
        if da == db or (name.endswith(".json") and _json_same(da, db)):
            continue
        return f"member {name} differs"
    return None


def compare(run_a: Path, run_b: Path) -> list[tuple[str, str]]:
    """(file, verdict) for every file in either folder; verdicts start with "same" when equal."""
    files_a = {p.relative_to(run_a).as_posix() for p in run_a.rglob("*") if p.is_file()}
    files_b = {p.relative_to(run_b).as_posix() for p in run_b.rglob("*") if p.is_file()}
    out = []
    for name in sorted(files_a | files_b):
        if name not in files_a or name not in files_b:
            out.append((name, f"only in {run_a if name in files_a else run_b}"))
            continue
        a, b = (run_a / name).read_bytes(), (run_b / name).read_bytes()
        if a == b:
            out.append((name, "same"))
        elif name.endswith(".json"):
            out.append((name, "same (timings aside)" if _json_same(a, b) else "DIFFERS"))
        elif name.endswith(".zip"):
            diff = _zip_diff(a, b)
            out.append((name, "same (manifest timings aside)" if diff is None else f"DIFFERS: {diff}"))
        else:
            out.append((name, "DIFFERS"))
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    rows = compare(Path(argv[0]), Path(argv[1]))
    for name, verdict in rows:
        print(f"{verdict:32s} {name}")
    bad = [name for name, verdict in rows if not verdict.startswith("same")]
    pngs = sum(name.endswith(".png") for name, _ in rows)
    print(f"{len(rows)} files ({pngs} PNG): " + ("all the same" if not bad else f"{len(bad)} differ"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
