"""Sampler Grid: the web app. `python app.py` serves it at http://127.0.0.1:7860.

Options: --host, --port, --share (a public gradio.live link), --model (a model to offer;
repeat it; the first is the default; the built-in models "builtin" and "builtin-flow" are always
offered), --config (a single .safetensors model's diffusers folder), --public (the mode for
pages strangers use; on by default on a Hugging Face Space). See README.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from core.cells import BUILTIN_MODELS
from ui.config import AppConfig, on_space


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="app.py", description="Compare diffusion samplers on seed-locked grids.")
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                   help="address to listen on (0.0.0.0 for every interface)")
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    p.add_argument("--share", action="store_true", help="also make a temporary public gradio.live link")
    p.add_argument("--model", action="append", default=[],
                   help="a model to offer (hub id, diffusers folder or .safetensors file); repeatable; "
                        "the first is the default")
    p.add_argument("--public", action="store_true", default=None,
                   help="public mode: only the listed models, safetensors only, smaller grids, bounded "
                        "queue (default on a Hugging Face Space)")
    p.add_argument("--local", dest="public", action="store_false", help="turn public mode off on a Space")
    p.add_argument("--config", type=Path, default=None, metavar="DIR",
                   help="for a single .safetensors model: the diffusers folder of the same model that gives "
                        "the parts the file lacks (default: the model's repo in the Hugging Face cache)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    p.add_argument("--dtype", default=None, help="float32, float16 or bfloat16 (default: float16 on CUDA)")
    p.add_argument("--max-batch", type=int, default=None, help="model rows per batched call")
    p.add_argument("--allow-pickle", action="store_true",
                   help="allow .ckpt/.bin/.pt checkpoints (they can run code; never in public mode)")
    p.add_argument("--queue-size", type=int, default=16, help="most requests waiting (public mode)")
    return p


def config_from(args: argparse.Namespace) -> AppConfig:
    if args.config is not None and not (args.config / "model_index.json").is_file():
        raise SystemExit(f"app.py: --config {args.config} is not a diffusers model folder "
                         "(no model_index.json)")
    public = on_space() if args.public is None else args.public
    models = tuple(dict.fromkeys([*args.model, *BUILTIN_MODELS]))
    return AppConfig(public=public, models=models, device=args.device, dtype=args.dtype,
                     config_folder=args.config,
                     allow_pickle=args.allow_pickle and not public, max_batch=args.max_batch,
                     queue_size=args.queue_size)


def create(config: AppConfig):
    """The app for `config`: (demo, models). Nothing here imports torch; call `models.preload()`
    once the page is served, so the model loads in the background without delaying the page."""
    from ui.models import ModelHolder
    from ui.page import build_demo

    models = ModelHolder(config)
    demo = build_demo(config, models)
    demo.queue(max_size=config.queue_size if config.public else None,
               default_concurrency_limit=config.concurrency)
    return demo, models


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline by default: no telemetry calls
    config = config_from(args)
    from ui.page import launch_kwargs

    demo, models = create(config)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, prevent_thread_lock=True,
                allowed_paths=[str(config.out_root)], footer_links=["api", "gradio"], **launch_kwargs())
    models.preload()  # after the page is up: importing torch and loading take seconds
    demo.block_thread()
    return 0


if __name__ == "__main__":
    sys.exit(main())
