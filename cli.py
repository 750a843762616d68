"""Headless grids: `python cli.py grid [--spec SPEC.json] --out DIR [flags]`.

This module owns the command line: a spec file and flags become a GridSpec and SweepOptions;
sweeps.run.Sweep checks the grid against the loaded model, renders it (this process's share of
it when `accelerate launch` started several) with a progress bar on stderr, and writes DIR
through report.run_folder.GridFolder:

    grid.png                   the labelled grid (A1111 "parameters" text of cell 0 + X/Y/Z plot);
                               not with --no-grid
    cells/<NNN>-<slug>.png     each cell that rendered, with its own "parameters" text
    cells/<NNN>-<slug>.json    its record, written after the PNG; a run again into DIR keeps the
                               cells these verify (--fresh: none)
    cells/<NNN>-<slug>.safetensors   with --latents: its final latents
    spec.json                  the resolved spec (random seeds fixed): `--spec DIR/spec.json` re-runs it
    grid.jpg, grid.webp        with --formats png,jpeg,webp (the text in EXIF, as A1111 writes it)
    animation.gif              with --animation: one frame per steps value, else per X value
    metrics.csv                each cell's distance to its series' reference (report.metrics)
    bundle.zip                 with --zip: every file above but the records, and the manifest
    manifest.json              written last: the spec as given, the resolved seed, every cell's
                               settings, labels, model calls, seconds, file and sha256, diffusers
                               script, totals, metrics

Every file is written under a temporary name and renamed, so none is ever half-written.
Exit codes: 0 every cell rendered; 1 some cells failed (the grid shows placeholders); 2 bad
input (spec, axis values, model, limits) or out of memory even one image at a time, reported as
one "error: ..." line on stderr (cells finished before are kept in DIR; a run again resumes).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grids
from core.progress import Progress
from grids import defaults
from report.exports import ExportError
from report.layout import LayoutOptions
from report.run_folder import FolderOptions, OutputFolderError, parse_formats
from sweeps.run import Sweep, SweepOptions
from sweeps.shards import DEFAULT_CHUNK

# Without --spec the grid is the app's default grid (grids.defaults): steps across, one row per
# sampler, the same prompt, seed and CFG. A default axis is left out when its setting is given as
# a flag (--sampler Euler means one sampler).
DEFAULT_AXES = {"x": ("steps", defaults.STEPS), "y": ("sampler", ", ".join(defaults.SAMPLERS))}
DEFAULT_FIELDS = {"prompt": defaults.PROMPT, "negative_prompt": defaults.NEGATIVE_PROMPT,
                  "seed": defaults.SEED, "cfg": defaults.CFG}
_FIELD_FLAGS = ("model", "prompt", "negative_prompt", "width", "height", "seed", "cfg", "sampler",
                "schedule", "steps", "eta", "eta_ddim", "s_noise", "shift", "guidance",
                "vary_seeds")
EXAMPLES = """examples (from the repository folder; `make run` or `make test` made .venv):
  .venv/bin/python cli.py grid --out out/first          # the app's default grid, built-in model
  .venv/bin/python cli.py grid --model stable-diffusion-v1-5/stable-diffusion-v1-5 --out out/g \\
      --prompt "a lighthouse at dusk" --seed 1 --x "sampler=Euler, Euler a, DPM++ 2M Karras" \\
      --y "steps=5-20 [4]"
  .venv/bin/python cli.py grid --spec out/g/spec.json --out out/again   # the same images again
  .venv/bin/python cli.py grid --out out/g --formats png,webp --animation --zip
"""


OUT_OF_MEMORY = ("ran out of memory even one image at a time — use a smaller size (--width/--height) or "
                 "--dtype float16; the cells finished so far are kept in --out and a run again resumes")


class UsageError(ValueError):
    """Bad command-line input; main() prints it as one line and exits 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own errors: one line too, exit 2
        sys.stderr.write(f"error: {message} (see {self.prog} --help)\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    """The `cli.py` argument parser with its `grid` subcommand."""
    parser = _Parser(prog="cli.py", description="Sampler Grid on the command line.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    g = sub.add_parser("grid", help="render an X/Y/Z grid to a folder", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Render a seed-locked X/Y/Z grid. Flags override the spec's fields.")
    g.add_argument("--spec", type=Path,
                   help="grid spec JSON (default: the app's default grid, steps x samplers)")
    g.add_argument("--out", type=Path, required=True, help="folder to write the grid into")
    for name, kind, text in (
            ("model", str, 'diffusers folder, .safetensors file, hub id, "builtin" or "builtin-flow"'),
            ("prompt", str, None), ("negative-prompt", str, None),
            ("width", int, "pixels (default: the model's)"), ("height", int, "pixels (default: the model's)"),
            ("seed", int, "-1 picks one at random (written to spec.json)"), ("cfg", float, "CFG scale"),
            ("sampler", str, 'e.g. "DPM++ 2M" or "DPM++ 2M Karras"'), ("schedule", str, "e.g. Karras"),
            ("steps", int, None),
            ("eta", float, "ancestral and SDE samplers' eta (default: theirs, 1)"),
            ("eta-ddim", float, "DDIM's eta (default 0: deterministic; A1111's \"Eta DDIM\")"),
            ("s-noise", float, None),
            ("shift", float, "flow models (SD3, Flux): timestep shift (default: the model's own)"),
            ("guidance", float, "Flux dev: distilled guidance (default 3.5)")):
        g.add_argument(f"--{name}", type=kind, default=None, help=text)
    g.add_argument("--vary-seeds", action="store_true", default=None, help="a different seed per cell")
    g.add_argument("--from-png", type=Path, default=None, metavar="FILE",
                   help="start from the settings an A1111 or ComfyUI PNG carries: a grid around that image "
                        "(its sampler beside DPM++ 2M and Euler a; half, its own and double its steps)")
    for pos in "xyz":
        g.add_argument(f"--{pos}", metavar="AXIS=VALUES",
                       help=f'{pos.upper()} axis, A1111 syntax: "steps=5-20 [4]"; "none" removes it')
    g.add_argument("--max-batch", type=int, default=None, help="model rows per call (default: automatic)")
    g.add_argument("--chunk", type=int, default=DEFAULT_CHUNK,
                   help="cells the engine renders together (default: %(default)s); memory grows with it")
    g.add_argument("--fresh", action="store_true",
                   help="render every cell again (default: keep cells a previous run of this grid left "
                        "in --out, verified by their sidecar and sha256)")
    g.add_argument("--latents", action="store_true",
                   help="also save each cell's final latents (cells/*.safetensors); metrics then add "
                        "latent RMSE")
    g.add_argument("--no-grid", action="store_true",
                   help="no grid image (sweeps too big to draw as one picture); cells, metrics, manifest")
    g.add_argument("--margin", type=int, default=0, help="pixels between cells")
    g.add_argument("--no-legend", action="store_true", help="draw the grid without labels")
    g.add_argument("--overlay", action="store_true",
                   help="write each cell's seconds and model calls over its foot in the grid")
    g.add_argument("--max-megapixels", type=float, default=grids.Limits().max_megapixels,
                   help="refuse a grid image larger than this (default: %(default)g)")
    g.add_argument("--max-cells", type=int, default=grids.Limits().max_cells,
                   help="refuse a grid with more cells (default: %(default)s; raise it for sweeps)")
    g.add_argument("--max-model-calls", type=int, default=grids.Limits().max_model_calls,
                   help="refuse a grid needing more model calls (default: %(default)s)")
    g.add_argument("--config", type=Path, default=None, metavar="DIR",
                   help="for a single .safetensors --model: the diffusers folder of the same model that "
                        "gives the parts the file lacks (text encoders, VAE, configs); default: the "
                        "model's repo in the Hugging Face cache")
    g.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    g.add_argument("--dtype", default=None, help="float32, float16 or bfloat16")
    g.add_argument("--formats", type=_formats, default=("png",), metavar="png,jpeg,webp",
                   help="grid image formats (grid.png is always written)")
    g.add_argument("--animation", action="store_true",
                   help="also write animation.gif: one frame per steps value (X or Y), else per X value")
    g.add_argument("--zip", action="store_true", help="also write bundle.zip with every file of the run")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _formats(text: str) -> tuple[str, ...]:
    try:
        return parse_formats(text)
    except ExportError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


# ---------------------------------------------------------------- the spec


def _axis_flag(pos: str, text: str) -> dict[str, str] | None:
    if text.strip().lower() in ("", "none"):
        return None
    name, sep, values = text.partition("=")
    if not sep or not name.strip():
        raise UsageError(f'--{pos} must look like AXIS=VALUES, e.g. --{pos} "sampler=Euler, Euler a"; '
                         f"got {text!r}")
    return {"axis": name.strip(), "values": values}


def _axis_name(text: str) -> str | None:
    """The setting an --x/--y/--z flag varies, in the spec's words ("Sampler" -> "sampler")."""
    name = text.partition("=")[0].strip()
    try:
        return grids.canonical_axis(name) if name and "=" in text else None
    except grids.AxisError:
        return None  # _axis_flag / the spec say what is wrong with it


def _read_spec(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or err
        raise UsageError(f"cannot read the spec file {str(path)!r}: {reason}") from err
    return grids.GridSpec.from_json(text).to_json()


def build_spec(args: argparse.Namespace) -> grids.GridSpec:
    """The spec file (or the defaults) with the flags laid over it; raises SpecError/UsageError."""
    flags = {f: getattr(args, f) for f in _FIELD_FLAGS if getattr(args, f) is not None}
    if args.spec is not None:
        data = _read_spec(args.spec)
    else:
        # the default axes not set by a flag, on the positions no --x/--y flag takes, in order:
        # --x "sampler=..." puts the steps on Y
        named = {_axis_name(getattr(args, pos)) for pos in "xyz" if getattr(args, pos) is not None}
        wanted = [(axis, values) for axis, values in DEFAULT_AXES.values() if axis not in {*flags, *named}]
        free = [pos for pos in DEFAULT_AXES if getattr(args, pos) is None]
        data = {pos: {"axis": axis, "values": values}
                for pos, (axis, values) in zip(free, wanted, strict=False)}
        data.update(DEFAULT_FIELDS)
    if args.from_png is not None:
        data.update(_png_settings(args.from_png, data if args.spec is not None else None))
    data.update(flags)
    for pos in "xyz":
        if getattr(args, pos) is not None:
            data[pos] = _axis_flag(pos, getattr(args, pos))
    return grids.GridSpec.from_json(data)


def _png_settings(path: Path, spec: dict[str, Any] | None) -> dict[str, Any]:
    """Spec fields from an image's settings; without a spec file, axes around the image's cell."""
    from report.infotext_reader import InfotextError, settings_from_image

    try:
        _kind, found = settings_from_image(path)
    except InfotextError as err:
        raise UsageError(f"--from-png {str(path)!r}: {err}") from None
    data = {k: v for k, v in found.items() if k in ("model", "prompt", "negative_prompt", "width",
                                                    "height", "seed", "cfg", "sampler", "schedule", "steps")}
    options = dict(found.get("sampler_options", ()))
    for option in ("eta", "s_noise"):
        if option in options:
            data[option] = options[option]
    if spec is None:
        data.update(around_image(data.get("sampler", "DPM++ 2M"), data.get("steps", 20)))
    return data


def around_image(sampler: str, steps: int) -> dict[str, Any]:
    """X: the image's sampler beside DPM++ 2M and Euler a; Y: half, the same and double its steps."""
    from samplers.schedules import MAX_STEPS

    names = list(dict.fromkeys([sampler, "DPM++ 2M", "Euler a"]))
    counts = sorted({max(1, steps // 2), steps, min(2 * steps, MAX_STEPS)})
    return {"x": {"axis": "sampler", "values": ", ".join(names)},
            "y": {"axis": "steps", "values": ", ".join(map(str, counts))}}


# ---------------------------------------------------------------- running


class ProgressBar:
    """tqdm on stderr, advancing by model calls (an even measure of work; cells finish in
    bursts because they run batched), showing cells and model calls done."""

    def __init__(self, cells_total: int, calls_total: int, enabled: bool, label: str = "") -> None:
        from tqdm import tqdm

        self.cells_total = cells_total
        self.cells_done = 0
        self.label = label
        self.bar = tqdm(total=max(1, calls_total), file=sys.stderr, disable=not enabled, dynamic_ncols=True,
                        desc=f"{label}cells 0/{cells_total}, model calls 0/{calls_total}",
                        bar_format="{percentage:3.0f}%|{bar}| {desc} [{elapsed}<{remaining}]")

    def _show(self, calls_done: int, calls_total: int) -> None:
        self.bar.set_description_str(f"{self.label}cells {self.cells_done}/{self.cells_total}, "
                                     f"model calls {calls_done}/{calls_total}", refresh=False)

    def on_progress(self, p: Progress) -> None:
        """Called after every engine tick with this process's progress (calls_done, calls_total)."""
        if p.calls_done > self.bar.total:  # DPM adaptive can take more calls than estimated
            self.bar.total = p.calls_done
        self._show(p.calls_done, p.calls_total)
        self.bar.update(p.calls_done - self.bar.n)

    def on_cell(self) -> None:
        self.cells_done += 1

    def close(self) -> None:
        self.bar.close()


@contextlib.contextmanager
def _stop_on_ctrl_c() -> Iterator[threading.Event]:
    """First Ctrl-C stops the run between ticks (the grid is still written); a second one aborts.
    The previous handler comes back afterwards (the CLI also runs in-process, in tests)."""
    stop = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        sys.stderr.write("\nstopping after this step; Ctrl-C again to abort\n")

    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def _config_folder(config: Path | None) -> Path | None:
    """--config, checked: a diffusers folder (model_index.json), or UsageError saying what it is."""
    if config is None:
        return None
    if not (config / "model_index.json").is_file():
        raise UsageError(f"--config {config} is not a diffusers model folder (no model_index.json): give "
                         "the folder of the same model the .safetensors file is, e.g. a downloaded hub repo")
    return config


def sweep_options(args: argparse.Namespace) -> SweepOptions:
    """The flags as SweepOptions (checked: bad values raise UsageError)."""
    if args.chunk < 1:
        raise UsageError(f"--chunk must be at least 1 cell, got {args.chunk}")
    if args.no_grid and args.animation:
        raise UsageError("--animation draws grids; drop --no-grid or --animation")
    if args.no_grid and args.formats != ("png",):
        raise UsageError("--formats sets the grid image's formats; drop --no-grid or --formats")
    folder = FolderOptions(formats=args.formats, animation=args.animation, zip=args.zip, journal=True,
                           latents=args.latents, grid=not args.no_grid)
    limits = grids.Limits(max_cells=args.max_cells, max_model_calls=args.max_model_calls,  # no grid: no size
                          max_megapixels=float("inf") if args.no_grid else args.max_megapixels)
    layout = LayoutOptions(margin=args.margin, legend=not args.no_legend, max_megapixels=args.max_megapixels,
                           overlay=args.overlay)
    return SweepOptions(out=args.out, folder=folder, layout=layout, limits=limits, max_batch=args.max_batch,
                        chunk=args.chunk, resume=not args.fresh, device=args.device, dtype=args.dtype,
                        config=_config_folder(args.config))


def run_grid(args: argparse.Namespace) -> int:
    """Check, render and write one grid (this process's share of it, when launched by Accelerate);
    returns the exit code (0 or 1)."""
    spec = build_spec(args)
    options = sweep_options(args)
    _quiet_loading()
    sweep = Sweep(spec, options)
    sweep.plan()
    procs = sweep.processes
    show = not args.quiet and procs.is_main
    if show and (sweep.kept or procs.count > 1):
        sys.stderr.write(_plan_line(sweep))
    label = f"process 1 of {procs.count}: " if procs.count > 1 else ""
    bar = ProgressBar(sweep.share_cells, sweep.share_calls, show, label)
    try:
        with _stop_on_ctrl_c() as stop:
            sweep.render(on_progress=bar.on_progress, on_cell=lambda _index: bar.on_cell(),
                         should_stop=stop.is_set)
    finally:
        bar.close()
    outcome = sweep.finish()
    if outcome.failed and procs.is_main:
        sys.stderr.write(f"{outcome.failed} of {outcome.cells} cells failed; "
                         f"see {args.out / 'manifest.json'}\n")
    if procs.is_main and outcome.manifest is not None:
        print(summary_line(args.out, outcome.manifest, grid=not args.no_grid), flush=True)
    return 1 if outcome.failed else 0


def summary_line(out: Path, manifest: dict[str, Any], grid: bool = True) -> str:
    """One line for the end of a run: where the grid is and each sampler's verdict in short."""
    series = (manifest.get("metrics") or {}).get("series") or []
    settled = [f"{s['label']} (by {s['converged_at']} steps)" for s in series if s.get("converged_at")]
    moving = [s["label"] for s in series if not s.get("converged_at") and s.get("metric")]
    where = f"grid: {out / 'grid.png'}" if grid else f"cells: {out / 'cells'}"
    parts = [where]
    if settled:
        parts.append(f"converged: {', '.join(settled)}")
    if moving:
        parts.append(f"not converged: {', '.join(moving)}")
    if not settled and not moving:
        parts.append("no verdicts (a series needs two step counts)")
    return "; ".join(parts) + f" (details: {out / 'metrics.csv'})"


def _plan_line(sweep: Sweep) -> str:
    cells = len(sweep.folder.cells)
    kept = f"resuming: {len(sweep.kept)} of {cells} cells already done and verified; " if sweep.kept else ""
    return (f"{kept}{sweep.units} work units of up to {sweep.options.chunk} cells "
            f"on {sweep.processes.count} process(es)\n")


def _quiet_loading() -> None:
    # Our own bar is the progress; diffusers' per-component loading bars would interleave with it.
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()


def _fail(err: object) -> int:
    message = " ".join(str(err).split())  # one line, whatever the message holds
    # Under `accelerate launch` every process reports; the main process's line is the plain one.
    rank, world = os.environ.get("RANK", "0"), os.environ.get("WORLD_SIZE", "1")
    where = f" (process {int(rank) + 1} of {world})" if rank != "0" and rank.isdigit() else ""
    sys.stderr.write(f"error{where}: {message}\n")
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 1 some cells failed, 2 bad input)."""
    args = build_parser().parse_args(argv)
    import torch

    from pipeline.model_sources import ModelLoadError

    try:
        return run_grid(args)
    except (UsageError, grids.SpecError, grids.AxisError, ModelLoadError, OutputFolderError) as err:
        return _fail(err)
    except torch.OutOfMemoryError:  # the engine already halved the batch down to one image
        return _fail(OUT_OF_MEMORY)
    except OSError as err:  # an output folder we cannot write to, a full disk
        return _fail(f"{err.strerror or err}: {err.filename}" if err.filename else err)
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
