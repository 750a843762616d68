"""Render the app's default grid (Settings() as the page starts) through the app's own code path
(ui.runner.GridJob: engine, cell writes, grid, animation, zip, metrics) into a folder.

    .venv/bin/python scripts/app_grid.py OUT_DIR

Used with scripts/compare_runs.py to show that a restructure leaves the app's output unchanged.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(out: Path) -> None:
    from ui.config import AppConfig
    from ui.models import ModelHolder
    from ui.runner import GridJob
    from ui.settings import Settings

    with tempfile.TemporaryDirectory() as root:
        config = AppConfig(out_root=Path(root))
        job = GridJob(Settings().to_spec(), config, ModelHolder(config))
        job.check()
        for snap in job.snapshots():
            if snap.done:
                break
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(job.folder, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
