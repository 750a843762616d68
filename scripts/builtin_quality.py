"""Measure a built-in model against its targets and draw its sample sheet and loss curve.

`builtin` (issue 4) and `builtin-flow` (issue 16, `--model builtin-flow`: the fidelity and speed
cells run on the model's "Automatic" schedule, the one its own diffusers pipeline uses, instead of
Karras) are measured the same way.

Figures (all through the project's own engine, pipeline.render):
  - prompt fidelity: 24 training captions, DPM++ 2M Karras, 30 steps, CFG 5 (classifier-free
    guidance, Ho & Salimans 2022); a prompt counts when the generated image's nearest training
    image (pixel L2) carries that prompt's caption. Target: >= 18 of 24.
  - convergence: mean pixel RMSE (images in [0, 1]) Euler-100 vs DPM++ 2M-100, same seed
    (target < 0.03), and Euler a-100 vs Euler-100 (target > 3x that).
  - speed: one 30-step image at the default size; the default grid (6 samplers x [5, 10, 20, 40]).

    python scripts/builtin_quality.py --sheet docs/builtin-samples.png --loss-plot docs/builtin-loss.png
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]
from prepare_builtin_data import load as load_data  # noqa: E402

from core.cells import CellSpec  # noqa: E402
from pipeline.render import render  # noqa: E402

GRID_SAMPLERS = ["Euler", "Euler a", "DPM++ 2M", "Heun", "DDIM", "UniPC"]
GRID_STEPS = [5, 10, 20, 40]


def cell(prompt: str, sampler: str = "DPM++ 2M", schedule: str = "Karras", steps: int = 30,
         cfg: float = 5.0, seed: int = 0, model: str = "builtin", shift: float | None = None) -> CellSpec:
    return CellSpec(model=model, prompt=prompt, negative_prompt="", width=None, height=None, seed=seed,
                    sampler=sampler, sampler_options=(), schedule=schedule, steps=steps, cfg=cfg,
                    shift=shift)


def pixels(results) -> np.ndarray:
    """Images of finished cells as float arrays in [0, 1], (N, H, W, 3)."""
    for r in results:
        assert r.ok, r.error
    return np.stack([np.asarray(r.image, dtype=np.float32) / 255 for r in results])


def eval_prompts(captions: list[str], n: int = 24) -> list[int]:
    """n caption indices spread evenly over the data set."""
    return [i * len(captions) // n for i in range(n)]


def fidelity(images: np.ndarray, captions: list[str], idx: list[int], gen: np.ndarray) -> list[bool]:
    """Per prompt: is the nearest training image's caption (pixel L2) that prompt's caption?"""
    train = images.reshape(len(images), -1).astype(np.float32) / 255
    flat = gen.reshape(len(gen), -1)
    d = (flat ** 2).sum(1)[:, None] - 2 * flat @ train.T + (train ** 2).sum(1)[None, :]
    nearest = d.argmin(1)
    return [captions[j] == captions[i] for i, j in zip(idx, nearest, strict=True)]


def rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(((a - b) ** 2).mean(axis=(1, 2, 3))).mean())


def timed(cells) -> tuple[float, list]:
    start = time.perf_counter()
    out = render(cells)
    return time.perf_counter() - start, out


def convergence(prompts: list[str], model: str) -> dict[str, float]:
    """RMSE between 100-step Euler and DPM++ 2M (should agree) and Euler a vs Euler (should not)."""
    runs = {s: pixels(render([cell(t, sampler=s, schedule="Automatic", steps=100, seed=k, model=model)
                              for k, t in enumerate(prompts)])) for s in ("Euler", "DPM++ 2M", "Euler a")}
    return {"rmse_euler100_vs_dpmpp2m100": round(rmse(runs["Euler"], runs["DPM++ 2M"]), 4),
            "rmse_euler_a100_vs_euler100": round(rmse(runs["Euler a"], runs["Euler"]), 4)}


def speed(prompt: str, model: str, schedule: str) -> dict[str, float]:
    """Seconds for one 30-step image and for the default grid (after a warm-up render)."""
    render([cell(prompt, steps=2, model=model, schedule=schedule)])
    one, _ = timed([cell(prompt, seed=11, model=model, schedule=schedule)])
    grid = [cell(prompt, sampler=s, schedule="Automatic", steps=n, seed=5, model=model)
            for s in GRID_SAMPLERS for n in GRID_STEPS]
    full, _ = timed(grid)
    return {"one_image_30_steps_s": round(one, 3), "default_grid_6x4_s": round(full, 3)}


def sheet(results, prompts: list[str], path: Path, cols: int = 4, scale: int = 2) -> None:
    """Generated images, upscaled, each with its prompt underneath."""
    w, h = results[0].image.size
    cw, ch = w * scale + 8, h * scale + 30
    rows = (len(results) + cols - 1) // cols
    out = Image.new("RGB", (cols * cw, rows * ch), "white")
    draw = ImageDraw.Draw(out)
    for k, (r, p) in enumerate(zip(results, prompts, strict=True)):
        x, y = (k % cols) * cw + 4, (k // cols) * ch + 4
        out.paste(r.image.resize((w * scale, h * scale), Image.NEAREST), (x, y))
        draw.text((x, y + h * scale + 2), p[:24], fill="black")
        if len(p) > 24:
            draw.text((x, y + h * scale + 13), p[24:48], fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    out.save(path)


def read_loss(csv_path: Path) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """UNet-phase (step, loss) rows, and the UNet steps after which the VAE was retrained."""
    steps, loss, marks, in_vae = [], [], [], False
    with open(csv_path) as f:
        for r in csv.DictReader(f):
            if r["phase"] not in ("unet", "flow"):
                in_vae = True
                continue
            if in_vae and steps:
                marks.append(steps[-1])
            in_vae = False
            steps.append(float(r["step"]))
            loss.append(float(r["loss"]))
    return np.array(steps), np.array(loss), marks


def loss_plot(csv_path: Path, path: Path, title: str, width: int = 640, height: int = 300) -> None:
    """The UNet phase's logged loss against step (log y axis), drawn with PIL; red: VAE retrained."""
    steps, loss, marks = read_loss(csv_path)
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    pad = 40
    lo, hi = np.log10(float(loss.min())), np.log10(float(loss.max()))

    def x_of(step):
        return pad + (step - steps.min()) / max(1.0, np.ptp(steps)) * (width - 2 * pad)

    ys = height - pad - (np.log10(loss) - lo) / max(1e-9, hi - lo) * (height - 2 * pad)
    draw.rectangle([pad, pad, width - pad, height - pad], outline="gray")
    for m in marks:
        draw.line([(x_of(m), pad), (x_of(m), height - pad)], fill="red", width=1)
        draw.text((x_of(m) + 3, pad + 3), "VAE retrained, new data", fill="red")
    draw.line(list(zip(x_of(steps).tolist(), ys.tolist(), strict=True)), fill="navy", width=2)
    draw.text((pad, 10), f"{title} (log scale), steps {int(steps.min())}-{int(steps.max())}", fill="black")
    draw.text((4, pad), f"{10 ** hi:.3f}", fill="black")
    draw.text((4, height - pad - 10), f"{10 ** lo:.3f}", fill="black")
    draw.text((pad, height - pad + 4), f"{int(steps.min())}", fill="black")
    draw.text((width - pad - 30, height - pad + 4), f"{int(steps.max())}", fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Measure the built-in model (issue 4's figures).")
    p.add_argument("--sheet", type=Path, default=Path("docs/builtin-samples.png"))
    p.add_argument("--loss-csv", type=Path,
                   default=Path.home() / ".cache" / "sampler-grid" / "builtin-train" / "loss.csv")
    p.add_argument("--loss-plot", type=Path, default=Path("docs/builtin-loss.png"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--model", default="builtin", help="model to measure (default: the shipped one)")
    p.add_argument("--schedule", default=None,
                   help="schedule type of the fidelity and speed cells (default: Karras on builtin, "
                        "the model's Automatic on any other)")
    p.add_argument("--fidelity-only", action="store_true",
                   help="only prompt fidelity and the sheet: a cheap check during training")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    images, captions = load_data()
    idx = eval_prompts(captions)
    prompts = [captions[i] for i in idx]
    schedule = args.schedule or ("Karras" if args.model == "builtin" else "Automatic")
    fid = render([cell(t, seed=k, model=args.model, schedule=schedule) for k, t in enumerate(prompts)])
    hits = fidelity(images, captions, idx, pixels(fid))
    sheet(fid[:16], prompts[:16], args.sheet)
    report = {"prompt_fidelity": f"{sum(hits)}/24",
              "missed": [t for t, ok in zip(prompts, hits, strict=True) if not ok]}
    if not args.fidelity_only:
        report.update(convergence(prompts, args.model))
        if not args.skip_speed:
            report.update(speed(prompts[0], args.model, schedule))
    if args.loss_csv.is_file():
        title = ("UNet loss (Min-SNR-5 weighted eps MSE)" if args.model == "builtin"
                 else "transformer loss (flow matching, v MSE)")
        loss_plot(args.loss_csv, args.loss_plot, title)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
