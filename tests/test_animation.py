"""Animated grids: GIF/WebP encoding with caption bands and a shared palette, frames per axis value,
and denoising trajectories from the cells' previews."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence

from core.cells import CellResult
from grids import GridSpec, expand
from report.animation import AnimationError, animate, axis_frames, labels_from_cells, trajectory_frames
from report.layout import GridLabels, LayoutOptions, plan_layout

COLOURS = [(200, 30, 30), (30, 160, 60), (40, 60, 210), (230, 200, 40), (120, 40, 160), (20, 180, 190)]


def gradient_frame(shift: int, size=(96, 64)) -> Image.Image:
    w, h = size
    x = (np.linspace(0, 200, w)[None, :] + shift).repeat(h, 0) % 256
    y = np.linspace(0, 255, h)[:, None].repeat(w, 1)
    return Image.fromarray(np.stack([x, y, 255 - y], -1).astype(np.uint8), "RGB")


def decode(data: bytes) -> list[Image.Image]:
    with Image.open(io.BytesIO(data)) as im:
        return [f.convert("RGB").copy() for f in ImageSequence.Iterator(im)]


def test_gif_frames_are_captioned_same_size_and_faithful():
    frames = [gradient_frame(s) for s in (0, 40, 80)]
    data = animate(frames, ["Steps: 10", "Steps: 20", "Steps: 30"], "gif", ms_per_frame=250)
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "GIF" and im.n_frames == 3 and im.info["loop"] == 0
        durations = [f.info["duration"] for f in ImageSequence.Iterator(im)]
    assert durations == [250, 250, 250]
    out = decode(data)
    band = out[0].height - 64
    assert all(f.size == (96, 64 + band) for f in out) and 12 <= band <= 40
    for original, got in zip(frames, out, strict=True):
        picture = np.asarray(got, dtype=int)[band:]
        # One 256-colour palette with dithering: close to the original on average and everywhere.
        err = np.abs(picture - np.asarray(original, dtype=int))
        assert err.mean() < 6 and np.abs(picture.mean((0, 1)) - np.asarray(original).mean((0, 1))).max() < 2
        text = np.asarray(got.convert("L"))[:band]
        assert (text < 100).sum() > 20 and (text > 250).mean() > 0.6  # dark caption on a white band
    assert not np.array_equal(np.asarray(out[0])[:band], np.asarray(out[1])[:band])  # captions differ


def test_gif_uses_one_palette_for_every_frame():
    data = animate([gradient_frame(s) for s in (0, 60, 120)], ["a", "b", "c"], "gif")
    with Image.open(io.BytesIO(data)) as im:
        palette = np.asarray(im.getpalette(), dtype=np.uint8).reshape(-1, 3)
    shared = {tuple(c) for c in palette}
    used = set().union(*({tuple(c) for c in np.asarray(f).reshape(-1, 3)} for f in decode(data)))
    # Every pixel of every frame is one of the first frame's 256 colours, and most of them are used.
    assert len(palette) == 256 and used <= shared and len(used) > 100


def test_play_once_webp_and_shrinking():
    frames = [gradient_frame(0, (400, 200)), gradient_frame(50, (100, 300))]
    with Image.open(io.BytesIO(animate(frames, ["one", "two"], "gif", loop=False))) as im:
        assert "loop" not in im.info
    data = animate(frames, ["one", "two"], "webp", ms_per_frame=100, max_side=200)
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "WEBP" and im.n_frames == 2 and im.info.get("loop") == 0
        width, height = im.size
    # 400x200 shrinks to 200x100 and 100x300 to 67x200, both centred on 200x200, under the band.
    assert width == 200 and 200 + 12 <= height <= 200 + 40


@pytest.mark.parametrize("args,message", [
    (([], []), "at least one frame"),
    (([gradient_frame(0)], ["a", "b"]), "1 frames need 1 captions, got 2"),
    (([gradient_frame(0)], ["a"], "mp4"), "unknown animation format 'mp4'"),
    (([gradient_frame(0)], ["a"], "gif", 5), "ms_per_frame must be a whole number from 20 to 60000"),
    ((["not an image"], ["a"]), "every frame must be a PIL image"),
])
def test_bad_animation_input(args, message):
    with pytest.raises(AnimationError, match=message):
        animate(*args)


# ---------------------------------------------------------------- frames from a grid


def grid(x="Euler, Euler a", y="steps=2, 3, 4"):
    axis, values = y.split("=")
    spec = GridSpec.from_json({"seed": 1, "width": 32, "height": 32, "x": {"axis": "sampler", "values": x},
                               "y": {"axis": axis, "values": values}})
    return spec, expand(spec)


def results_for(cells, previews=None, failed=()):
    out = []
    for i, c in enumerate(cells):
        image = Image.new("RGB", (32, 32), COLOURS[i % len(COLOURS)])
        out.append(CellResult(spec=c.spec, image=None if i in failed else image, latents=None,
                              denoiser_calls=2, seconds=0.1, previews=(previews or {}).get(i, {}),
                              error="the model returned NaN" if i in failed else None))
    return out


def centre(image: Image.Image, box) -> tuple[int, int, int]:
    x0, y0 = box
    return image.convert("RGB").getpixel((x0 + 16, y0 + 16))


def test_axis_frames_step_through_y_with_the_x_cells_in_place():
    spec, cells = grid()
    results = results_for(cells, failed={3})
    frames, captions = axis_frames(cells, results, "y")
    assert captions == ["Steps: 2", "Steps: 3", "Steps: 4"]
    labels = GridLabels(x=("Euler", "Euler a"), x_tags=(None, "ancestral"))
    layout = plan_layout([None, None], labels, (2, 1, 1), LayoutOptions(cell_size=(32, 32)))
    for row, frame in enumerate(frames):
        assert frame.size == (layout.width, layout.height) and layout.left == 0
        for ix in range(2):
            index = row * 2 + ix
            if index == 3:  # the failed cell is a placeholder
                assert centre(frame, layout.cell_origin(ix, 0, 0)) != COLOURS[3]
            else:
                assert centre(frame, layout.cell_origin(ix, 0, 0)) == COLOURS[index]
    assert labels_from_cells(cells) == GridLabels.from_spec(spec)


def test_axis_frames_along_x_keep_the_rows():
    _, cells = grid()
    frames, captions = axis_frames(cells, results_for(cells), "x")
    assert captions == ["Euler", "Euler a"] and len(frames) == 2
    labels = GridLabels(y=("Steps: 2", "Steps: 3", "Steps: 4"))
    layout = plan_layout([None] * 3, labels, (1, 3, 1), LayoutOptions(cell_size=(32, 32)))
    assert frames[1].size == (layout.width, layout.height)
    assert [centre(frames[1], layout.cell_origin(0, iy, 0)) for iy in range(3)] == [COLOURS[1], COLOURS[3],
                                                                                     COLOURS[5]]
    with pytest.raises(AnimationError, match="axis must be 'x', 'y' or 'z'"):
        axis_frames(cells, results_for(cells), "w")
    with pytest.raises(AnimationError, match="one result per cell"):
        axis_frames(cells, results_for(cells)[:-1], "x")


def solid_preview(colour) -> torch.Tensor:
    return torch.tensor(colour, dtype=torch.uint8).expand(16, 16, 3).clone()


def test_trajectory_frames_show_the_same_fraction_of_every_cells_steps():
    _, cells = grid(y="cfg=3, 5")  # 2 x 2 cells, all at the spec's steps
    red, green, blue, white = (250, 0, 0), (0, 250, 0), (0, 0, 250), (250, 250, 250)
    four = {0: solid_preview(red), 2: solid_preview(green), 3: solid_preview(blue)}  # 4 steps, every 2nd
    eight = {k: solid_preview(red if k < 4 else green if k < 7 else white) for k in range(8)}  # 8 steps
    results = results_for(cells, previews={0: four, 1: eight}, failed={3})
    frames, captions = trajectory_frames(cells, results, count=4)
    assert captions == ["25% of steps", "50% of steps", "75% of steps", "100% of steps", "final images"]
    layout = plan_layout([None] * 4, labels_from_cells(cells), (2, 2, 1), LayoutOptions(cell_size=(32, 32)))
    seen = [[centre(f, layout.cell_origin(ix, 0, 0)) for ix in range(2)] for f in frames]
    # 4-step cell: previews after steps 1, 3, 4 -> 25%: step 0 (first), 50%: step 0, 75%: step 2, 100%: 3.
    # 8-step cell: 25% -> step 1, 50% -> step 3, 75% -> step 5, 100% -> step 7.
    assert seen == [[red, red], [red, red], [green, green], [blue, white], [COLOURS[0], COLOURS[1]]]
    # A cell without previews shows its image throughout; a failed one its placeholder.
    assert all(centre(f, layout.cell_origin(0, 1, 0)) == COLOURS[2] for f in frames)
    assert centre(frames[0], layout.cell_origin(1, 1, 0)) != COLOURS[3]
    assert frames[0].size == frames[-1].size
    with pytest.raises(AnimationError, match="count must be a whole number >= 1"):
        trajectory_frames(cells, results, count=0)
