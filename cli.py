"""Headless grids: `python cli.py grid [--spec SPEC.json] --out DIR [flags]`.

This module owns the command line: a spec file and flags become a GridSpec, which is checked
against the loaded model, rendered with a progress bar on stderr, and written to DIR by
grids.outputs.GridFolder:

    grid.png                   the labelled grid (A1111 "parameters" text of cell 0 + X/Y/Z plot)
    cells/<NNN>-<slug>.png     each cell that rendered, with its own "parameters" text
    spec.json                  the resolved spec (random seeds fixed): `--spec DIR/spec.json` re-runs it
    grid.jpg, grid.webp        with --formats png,jpeg,webp (the text in EXIF, as A1111 writes it)
    animation.gif              with --animation: one frame per steps value, else per X value
    bundle.zip                 with --zip: every file above and the manifest
    manifest.json              written last: the spec as given, the resolved seed, every cell's
                               settings, labels, model calls, seconds, file and sha256, diffusers
                               script, totals

Every file is written under a temporary name and renamed, so none is ever half-written.
Exit codes: 0 every cell rendered; 1 some cells failed (the grid shows placeholders); 2 bad
input (spec, axis values, model, limits), reported as one "error: ..." line on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grids
from grids.exports import ExportError
from grids.layout import GridLabels, LayoutOptions, plan_layout
from grids.outputs import FolderOptions, GridFolder, OutputFolderError, parse_formats

# Without --spec the grid is sampler x steps, the comparison this tool exists for. A default
# axis is left out when its setting is given as a flag (--sampler Euler means one sampler).
DEFAULT_AXES = {"x": ("sampler", "DPM++ 2M, Euler a, Euler, DPM++ 2M SDE"), "y": ("steps", "10, 20, 30")}
_FIELD_FLAGS = ("model", "prompt", "negative_prompt", "width", "height", "seed", "cfg", "sampler",
                "schedule", "steps", "eta", "s_noise", "vary_seeds")
EXAMPLES = """examples:
  python cli.py grid --out out/first --prompt "a lighthouse at dusk"
  python cli.py grid --model runwayml/stable-diffusion-v1-5 --out out/g --seed 1 \\
      --x "sampler=Euler, Euler a, DPM++ 2M Karras" --y "steps=5-20 [4]"
  python cli.py grid --spec out/g/spec.json --out out/again      # the same images again
  python cli.py grid --out out/g --formats png,webp --animation --zip
"""


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
    g.add_argument("--spec", type=Path, help="grid spec JSON (default: sampler x steps with defaults)")
    g.add_argument("--out", type=Path, required=True, help="folder to write the grid into")
    for name, kind, text in (
            ("model", str, 'diffusers folder, .safetensors file, hub id, or "builtin"'),
            ("prompt", str, None), ("negative-prompt", str, None),
            ("width", int, "pixels (default: the model's)"), ("height", int, "pixels (default: the model's)"),
            ("seed", int, "-1 picks one at random (written to spec.json)"), ("cfg", float, "CFG scale"),
            ("sampler", str, 'e.g. "DPM++ 2M" or "DPM++ 2M Karras"'), ("schedule", str, "e.g. Karras"),
            ("steps", int, None), ("eta", float, None), ("s-noise", float, None)):
        g.add_argument(f"--{name}", type=kind, default=None, help=text)
    g.add_argument("--vary-seeds", action="store_true", default=None, help="a different seed per cell")
    for pos in "xyz":
        g.add_argument(f"--{pos}", metavar="AXIS=VALUES",
                       help=f'{pos.upper()} axis, A1111 syntax: "steps=5-20 [4]"; "none" removes it')
    g.add_argument("--max-batch", type=int, default=None, help="model rows per call (default: automatic)")
    g.add_argument("--margin", type=int, default=0, help="pixels between cells")
    g.add_argument("--no-legend", action="store_true", help="draw the grid without labels")
    g.add_argument("--max-megapixels", type=float, default=grids.Limits().max_megapixels,
                   help="refuse a grid image larger than this (default: %(default)g)")
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
        data = {pos: {"axis": axis, "values": values} for pos, (axis, values) in DEFAULT_AXES.items()
                if axis not in flags}
    data.update(flags)
    for pos in "xyz":
        if getattr(args, pos) is not None:
            data[pos] = _axis_flag(pos, getattr(args, pos))
    return grids.GridSpec.from_json(data)


# ---------------------------------------------------------------- running


class ProgressBar:
    """tqdm on stderr, advancing by model calls (an even measure of work; cells finish in
    bursts because they run batched), showing cells and model calls done."""

    def __init__(self, cells_total: int, calls_total: int, enabled: bool) -> None:
        from tqdm import tqdm

        self.cells_total = cells_total
        self.cells_done = 0
        self.bar = tqdm(total=max(1, calls_total), file=sys.stderr, disable=not enabled, dynamic_ncols=True,
                        desc=f"cells 0/{cells_total}, model calls 0/{calls_total}",
                        bar_format="{percentage:3.0f}%|{bar}| {desc} [{elapsed}<{remaining}]")

    def _show(self, calls_done: int, calls_total: int) -> None:
        self.bar.set_description_str(f"cells {self.cells_done}/{self.cells_total}, "
                                     f"model calls {calls_done}/{calls_total}", refresh=False)

    def on_progress(self, p: Any) -> None:
        """Called by the engine after every tick."""
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


def run_grid(args: argparse.Namespace) -> int:
    """Check, render and write one grid; returns the exit code (0 or 1)."""
    spec = build_spec(args)
    resolved = spec.resolved()
    from pipeline.engine import RunOptions
    from pipeline.models import load_model
    from pipeline.render import render

    def loader(name: str) -> Any:
        return load_model(name, device=args.device, dtype=args.dtype)

    t0 = time.perf_counter()
    _quiet_loading()
    model = loader(resolved.model)
    load_s = time.perf_counter() - t0
    run = GridFolder(args.out, spec, resolved, model,
                     FolderOptions(formats=args.formats, animation=args.animation, zip=args.zip))
    sized = [c.spec.sized(model.default_size) for c in run.cells]
    grids.validate(run.cells, grids.Limits(max_megapixels=args.max_megapixels), model.default_size,
                   model.vae_scale_factor)
    layout = LayoutOptions(margin=args.margin, legend=not args.no_legend, max_megapixels=args.max_megapixels,
                           cell_size=(max(s.width for s in sized), max(s.height for s in sized)))
    plan_layout([None] * len(sized), GridLabels.from_spec(resolved), resolved.shape, layout)  # size check
    run.prepare()
    bar = ProgressBar(len(sized), sum(s.denoiser_calls() for s in sized), not args.quiet)

    def on_cell(index: int, result: Any) -> None:
        run.on_cell(index, result)
        bar.on_cell()

    t1 = time.perf_counter()
    try:
        with _stop_on_ctrl_c() as stop:
            results = render([c.spec for c in run.cells], RunOptions(
                max_batch=args.max_batch, on_cell=on_cell, on_progress=bar.on_progress,
                should_stop=stop.is_set), loader=loader)
    finally:
        bar.close()
    render_s = time.perf_counter() - t1
    run.finish(results, layout, {"load_seconds": load_s, "wall_seconds": render_s})
    failed = sum(not r.ok for r in results)
    if failed:
        sys.stderr.write(f"{failed} of {len(results)} cells failed; see {args.out / 'manifest.json'}\n")
    return 1 if failed else 0


def _quiet_loading() -> None:
    # Our own bar is the progress; diffusers' per-component loading bars would interleave with it.
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()


def _fail(err: object) -> int:
    message = " ".join(str(err).split())  # one line, whatever the message holds
    sys.stderr.write(f"error: {message}\n")
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 1 some cells failed, 2 bad input)."""
    args = build_parser().parse_args(argv)
    from pipeline.model_sources import ModelLoadError

    try:
        return run_grid(args)
    except (UsageError, grids.SpecError, grids.AxisError, ModelLoadError, OutputFolderError) as err:
        return _fail(err)
    except OSError as err:  # an output folder we cannot write to, a full disk
        return _fail(f"{err.strerror or err}: {err.filename}" if err.filename else err)
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
