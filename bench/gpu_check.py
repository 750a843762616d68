"""GPU truth in one process: every GPU figure the project claims, measured unattended in < 8 minutes.

    python bench/gpu_check.py --out docs/gpu/<date>            # one large CUDA GPU
    .venv/bin/python bench/gpu_check.py --smoke --out out/gpu  # the same code on the CPU, tiny models

Five sections of items, run as grid, memory, throughput for SD 1.5, the same for SDXL, then
precision, then flow; each item under its own time budget:

    grid        SD 1.5 size (860 M UNet, 512 px, fp16) and SDXL size (2.6 B UNet, 1024 px, fp16 UNet +
                float32 VAE): pipeline.render against one diffusers pipeline call per cell, speed-up and
                same-image check (the largest step set whose estimated cost fits the budget)
    memory      auto_max_batch's per-row estimate against the measured peak at 3 batch sizes
    throughput  UNet ms per row at batch 1/2/8/16/32
    precision   float16 and bfloat16 against float32 on the same cells: latent and pixel differences
                (and, on SDXL, the VAE decoding in float16: why the engine keeps it float32)
    flow        SD3-Medium- and Flux.1-dev-size models (1024 px, bf16): the grid benchmark with native
                Euler (engine vs one pipeline call per cell, same images by pixels), memory and
                throughput; run only when this build's engine supports flow models

Models are random-weight, built from config dicts on the device itself (bench/models.py): nothing
is downloaded or written besides the report. An item whose budget would not fit is skipped and
says so; an exception in one item is recorded and the next item runs. The JSON is rewritten after
every item, so a run killed from outside still leaves everything measured up to then.
See docs/PERFORMANCE.md ("GPU check").
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

START = time.monotonic()
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
from diffusers.utils import logging as diffusers_logging  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import gpu_capacity as capacity  # noqa: E402
from bench import gpu_parts as parts  # noqa: E402
from bench import grid_bench as gb  # noqa: E402
from bench.gpu_summary import summary  # noqa: E402

SECTIONS = ("grid", "memory", "throughput", "precision", "flow")
FLOW_UNSUPPORTED = "skipped: flow models not supported by this build"


@dataclass(frozen=True)
class Profile:
    """Sizes and time budgets of one kind of run (the GPU run or --smoke)."""

    name: str
    device: str
    total_s: float  # the whole process, imports included
    kinds: dict[str, str]  # family -> bench.models.PIPELINE_CONFIGS key
    px: dict[str, int]
    dtype: torch.dtype  # the grid's, memory's and throughput's (SDXL's VAE stays float32 under fp16)
    grid_steps: dict[str, tuple[tuple[int, ...], ...]]  # step sets, largest first
    tolerance: float  # same-image: max latent difference / max latent value
    precision_steps: dict[str, int]
    memory_rows: dict[str, tuple[int, ...]]
    throughput_rows: tuple[int, ...]
    probe_seconds: float
    flow: dict[str, tuple[str, int, int]]  # family -> (FLOW_CONFIGS key, px, text tokens)
    flow_dtype: torch.dtype
    flow_grid_steps: tuple[tuple[int, ...], ...]
    flow_tolerance: float  # same-image: mean 8-bit pixel difference / 255, every cell
    flow_memory_rows: tuple[int, ...]
    flow_throughput_rows: tuple[int, ...]
    budgets: dict[str, float] = field(default_factory=dict)  # "section.family" -> seconds


GPU = Profile(
    name="gpu", device="cuda", total_s=450.0, kinds={"sd15": "sd15", "sdxl": "sdxl"},
    px={"sd15": 512, "sdxl": 1024}, dtype=torch.float16,
    grid_steps={"sd15": ((10, 20, 30, 40), (10, 20), (5, 10)), "sdxl": ((10, 20, 30, 40), (10, 20), (5, 10))},
    tolerance=1e-2, precision_steps={"sd15": 20, "sdxl": 10},
    memory_rows={"sd15": (8, 32, 96), "sdxl": (4, 16, 48)},
    throughput_rows=(1, 2, 8, 16, 32), probe_seconds=1.0,
    flow={"sd3": ("sd3", 1024, 333), "flux": ("flux", 1024, 512)}, flow_dtype=torch.bfloat16,
    flow_grid_steps=((8, 16, 24, 32), (4, 8, 12, 16), (2, 4)), flow_tolerance=4 / 255,
    flow_memory_rows=(1, 4, 16), flow_throughput_rows=(1, 2, 8),
    budgets={"grid.sd15": 100, "memory.sd15": 15, "throughput.sd15": 25, "grid.sdxl": 110,
             "memory.sdxl": 20, "throughput.sdxl": 35, "precision.sd15": 35, "precision.sdxl": 50,
             "flow.sd3": 50, "flow.flux": 80},
)

SMOKE = Profile(
    name="smoke", device="cpu", total_s=170.0, kinds={"sd15": "sd15-tiny", "sdxl": "sdxl-tiny"},
    px={"sd15": 32, "sdxl": 32}, dtype=torch.float32,
    grid_steps={"sd15": ((2, 3), (2,)), "sdxl": ((2, 3), (2,))},
    tolerance=1e-3, precision_steps={"sd15": 4, "sdxl": 4},
    memory_rows={"sd15": (1, 4, 16), "sdxl": (1, 4, 16)},
    throughput_rows=(1, 2, 8, 16, 32), probe_seconds=0.05,
    flow={"sd3": ("sd3-tiny", 64, 8), "flux": ("flux-tiny", 64, 8)}, flow_dtype=torch.float32,
    flow_grid_steps=((2, 3),), flow_tolerance=2 / 255,
    flow_memory_rows=(1, 2, 4), flow_throughput_rows=(1, 2, 8),
    budgets={"grid.sd15": 40, "memory.sd15": 10, "throughput.sd15": 10, "grid.sdxl": 40, "memory.sdxl": 10,
             "throughput.sdxl": 10, "precision.sd15": 20, "precision.sdxl": 20, "flow.sd3": 25,
             "flow.flux": 25},
)

MIN_START_S = 1.0  # an item with less than this left of the run is not started


def with_budget(profile: Profile, total_s: float) -> Profile:
    """The profile with the whole run's time set to total_s and every item's budget scaled with it
    (a grid item then picks a smaller step set; nothing is dropped for lack of a share)."""
    scale = total_s / profile.total_s
    return Profile(**{**profile.__dict__, "total_s": total_s,
                      "budgets": {k: v * scale for k, v in profile.budgets.items()}})


class Run:
    """The report, the run's deadline, and the one model kept between items."""

    def __init__(self, profile: Profile, out: Path, device: torch.device, command: str) -> None:
        self.profile, self.out, self.device = profile, out, device
        self.deadline = START + profile.total_s
        self.tokenizer_dir = Path(tempfile.mkdtemp(prefix="gpu-check-tok-"))
        self._model: tuple[tuple[str, torch.dtype], Any] | None = None
        self.report: dict[str, Any] = {
            "command": command, "profile": profile.name, "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                      time.gmtime()),
            "budget_s": profile.total_s, "machine": machine(device), "items": [],
            **{s: {} for s in SECTIONS}}

    def model(self, kind: str, dtype: torch.dtype):
        """The random-weight model of `kind` (bench.models) in `dtype`, built on first use (one kept
        at a time)."""
        key = (kind, dtype)
        if self._model is None or self._model[0] != key:
            self.drop_model()
            self._model = (key, parts.random_model(key[0], self.device, dtype, self.tokenizer_dir))
        return self._model[1]

    def drop_model(self) -> None:
        self._model = None
        parts.free_memory()

    def item(self, section: str, family: str, fn: Callable[[parts.Clock, dict[str, Any]], None]) -> None:
        """Run one item under min(its budget, what is left of the run); record ok / partial / skipped /
        error with its seconds, keep whatever it measured, and write the report."""
        budget = self.profile.budgets[f"{section}.{family}"]
        left = self.deadline - time.monotonic()
        entry: dict[str, Any] = {"budget_s": budget}
        t0 = time.monotonic()
        if left < MIN_START_S:
            entry.update(status="skipped", reason=f"not started: {max(0.0, left):.0f} s left of the run's "
                                                  f"{self.profile.total_s:.0f} s")
        else:
            clock = parts.Clock(t0 + min(budget, left))
            data: dict[str, Any] = {}
            try:
                fn(clock, data)
                entry["status"] = "ok"
            except parts.OutOfTime as err:
                entry.update(status="partial" if data else "skipped", reason=f"over budget: {err}")
            except Exception as err:  # noqa: BLE001 (one item's failure must not end the GPU window)
                entry.update(status="error", error=f"{type(err).__name__}: {err}",
                             traceback=traceback.format_exc(limit=6).splitlines()[-12:])
                if isinstance(err, torch.OutOfMemoryError):
                    self.drop_model()
            entry.update(data)
        entry["seconds"] = time.monotonic() - t0
        self.report[section][family] = entry
        self.report["items"].append({"item": f"{section}.{family}", "status": entry["status"],
                                     "seconds": entry["seconds"], "budget_s": budget})
        print(f"[{time.monotonic() - START:6.1f} s] {section}.{family}: {entry['status']} "
              f"({entry['seconds']:.1f} s of {budget:.0f} s)", flush=True)
        self.write()

    def write(self) -> None:
        self.report["elapsed_s"] = time.monotonic() - START
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "gpu_check.json").write_text(json.dumps(self.report, indent=2, default=str) + "\n",
                                                 encoding="utf-8")
        try:
            text = summary(self.report)
        except Exception as err:  # noqa: BLE001 (the JSON is written; the summary must not end the run)
            text = (f"# GPU check\n\nThe summary could not be made ({type(err).__name__}: {err}); "
                    "see gpu_check.json.\n")
        (self.out / "summary.md").write_text(text, encoding="utf-8")


def machine(device: torch.device) -> dict[str, Any]:
    info = gb.machine(device)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu_memory_mib=props.total_memory / 2**20, cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version())
    return info


def unet_items(run: Run, family: str, wanted: set[str]) -> None:
    """grid, memory and throughput of one UNet family (those wanted), on one model in the run's dtype."""
    p, dev = run.profile, run.device
    px = p.px[family]
    model = lambda: run.model(p.kinds[family], p.dtype)  # noqa: E731
    make = lambda rows: parts.unet_call(model(), rows, px)  # noqa: E731
    if "grid" in wanted:
        run.item("grid", family, lambda c, o: parts.grid_item(model(), px, p.grid_steps[family], p.tolerance,
                                                              c, o))
    if "memory" in wanted:
        run.item("memory", family, lambda c, o: capacity.memory_item(
            make, dev, p.dtype, (px // model().vae_scale_factor) ** 2, p.memory_rows[family], c, o))
    if "throughput" in wanted:
        run.item("throughput", family, lambda c, o: capacity.throughput_item(
            make, dev, p.throughput_rows, p.probe_seconds, c, o))


def precision_items(run: Run) -> None:
    p = run.profile
    run.drop_model()
    for family in p.kinds:
        build = lambda dt, f=family: parts.random_model(p.kinds[f], run.device, dt, run.tokenizer_dir)  # noqa: E731
        run.item("precision", family, lambda c, o, b=build, f=family: parts.precision_item(
            b, p.px[f], p.precision_steps[f], (torch.float16, torch.bfloat16), c, o))


def flow_items(run: Run) -> None:
    p = run.profile
    run.drop_model()
    try:
        support = capacity.flow_support()
    except Exception as err:  # noqa: BLE001
        support = {"supported": False, "reason": f"the check failed: {type(err).__name__}: {err}"}
    run.report["flow_support"] = support
    for family, (kind, px, tokens) in p.flow.items():
        if not support["supported"]:
            budget = p.budgets[f"flow.{family}"]
            run.report["flow"][family] = {"status": "skipped", "reason": FLOW_UNSUPPORTED,
                                          "detail": support["reason"], "budget_s": budget, "seconds": 0.0}
            run.report["items"].append({"item": f"flow.{family}", "status": "skipped", "seconds": 0.0,
                                        "budget_s": budget})
            run.write()
            continue
        run.item("flow", family, lambda c, o, k=kind, x=px, t=tokens: capacity.flow_item(
            run.model(k, p.flow_dtype), x, t, p.flow_grid_steps, p.flow_tolerance, p.flow_memory_rows,
            p.flow_throughput_rows, p.probe_seconds, c, o))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for gpu_check.json and summary.md")
    ap.add_argument("--smoke", action="store_true", help="tiny models on the CPU, same code and sections")
    ap.add_argument("--device", help="default: cuda (cpu with --smoke)")
    ap.add_argument("--budget", type=float, help="seconds for the whole run, imports included (default 450; "
                    "170 with --smoke); every item's budget scales with it")
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--only", nargs="+", choices=SECTIONS, help="run only these sections")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    profile = SMOKE if args.smoke else GPU
    if args.budget:
        profile = with_budget(profile, args.budget)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or profile.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device here; use --smoke (or --device cpu) to run on the CPU")
    command = " ".join(["bench/gpu_check.py", *(sys.argv[1:] if argv is None else argv)])
    run = Run(profile, args.out, device, command)
    wanted = set(args.only or SECTIONS)
    for family in profile.kinds:
        unet_items(run, family, wanted)
    if "precision" in wanted:
        precision_items(run)
    if "flow" in wanted:
        flow_items(run)
    run.drop_model()
    run.write()
    print(f"wrote {args.out / 'gpu_check.json'} and {args.out / 'summary.md'} "
          f"({time.monotonic() - START:.0f} s)", flush=True)
    return run.report


if __name__ == "__main__":
    diffusers_logging.set_verbosity_error()  # casting random-weight modules warns once per build
    diffusers_logging.disable_progress_bar()
    main()
