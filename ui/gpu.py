"""ZeroGPU support: on a Hugging Face Space with ZeroGPU hardware, GPU work must run inside a
function decorated with `spaces.GPU`, which attaches a GPU for the call. Elsewhere the
`spaces` package is absent and functions run as they are."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])
GPU_SECONDS = 120  # the longest a grid may hold a ZeroGPU device


def on_gpu(fn: F) -> F:
    """`spaces.GPU(duration=GPU_SECONDS)(fn)` when the `spaces` package is installed, else `fn`."""
    try:
        import spaces  # type: ignore[import-not-found]
    except ImportError:
        return fn
    return spaces.GPU(duration=GPU_SECONDS)(fn)
