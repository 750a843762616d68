"""The app's model: loaded in the background at start, then on demand, with a status line.

The page must be usable at once, so the default model loads in a background
thread while the page is already served; a grid that needs it waits for that
load instead of starting a second one. One model is in memory at a time
(pipeline.models keeps one); a failed load leaves the previous one usable and
its message is shown, not raised as a stack trace.
"""

from __future__ import annotations

import threading
from typing import Any

from ui.config import AppConfig


class ModelHolder:
    """Loads models for the app, one at a time, and says what it is doing."""

    def __init__(self, config: AppConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._state = "not loaded"
        self._error: str | None = None
        self._thread: threading.Thread | None = None
        self._loaded: str | None = None  # the name the loaded model was asked for

    def preload(self) -> None:
        """Start loading the default model in the background (returns at once)."""
        self._thread = threading.Thread(target=self._preload, name="model-preload", daemon=True)
        self._thread.start()

    def _preload(self) -> None:
        try:
            self.load(self.config.default_model)
        except ValueError:
            pass  # the message is in status(); the first grid shows it again

    def load(self, name: str) -> Any:
        """The loaded model `name` (pipeline.models.LoadedModel); raises ValueError with a clear message."""
        name = self.config.check_model(name)
        with self._lock:
            self._state, self._error = f"loading {name}…", None
            try:
                from pipeline.models import load_model

                model = load_model(name, device=self.config.device, dtype=self.config.dtype,
                                   allow_pickle=self.config.allow_pickle and not self.config.public,
                                   config=self.config.config_folder)
            except ValueError as err:
                self._error = str(err)
                self._state = "load failed"
                raise
            except Exception as err:  # a broken file, a library refusing it: never "loading…" forever
                self._error = f"could not load {name!r}: {err or type(err).__name__}"
                self._state = "load failed"
                raise ValueError(self._error) from err
            self._state = f"ready: {model.name} ({model.family}, {model.device.type})"
            self._loaded = name
            return model

    def needs_loading(self, name: str) -> bool:
        """True when a grid on `name` would first wait for it to load (or for the load under way)."""
        return (name or "").strip() != self._loaded or self._lock.locked()

    def status(self) -> str:
        """One line for the page: loading, ready (which model, where) or why loading failed."""
        if self._error:
            return f"Model: {self._state} — {self._error}"
        return f"Model: {self._state}"

    def wait(self, timeout: float | None = None) -> None:
        """Wait for the background load to end (tests and the API use this)."""
        if self._thread is not None:
            self._thread.join(timeout)
