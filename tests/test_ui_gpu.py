"""ZeroGPU: GPU work goes through spaces.GPU when the `spaces` package exists, untouched otherwise."""

from __future__ import annotations

import sys
import types

from ui import gpu


def test_without_spaces_functions_run_as_they_are(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "spaces", None)  # import spaces -> ImportError

    def work() -> int:
        return 3

    assert gpu.on_gpu(work) is work


def test_with_spaces_functions_are_wrapped_with_a_duration(monkeypatch) -> None:
    calls = []
    fake = types.ModuleType("spaces")

    def GPU(duration: int):  # noqa: N802 - the real decorator's name
        def wrap(fn):
            def wrapped(*args, **kwargs):
                calls.append(duration)
                return fn(*args, **kwargs)
            return wrapped
        return wrap

    fake.GPU = GPU
    monkeypatch.setitem(sys.modules, "spaces", fake)
    wrapped = gpu.on_gpu(lambda x: x * 2)
    assert wrapped(4) == 8 and calls == [gpu.GPU_SECONDS]
