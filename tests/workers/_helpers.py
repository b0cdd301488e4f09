"""Builders shared by the worker tests (unit and integration): tiny checkpoints, images, a local image server."""

from __future__ import annotations

import http.server
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from state.settings import Settings


def save_tiny_checkpoint(directory: Path, version: str, seed: int = 0) -> Path:
    """A test-tiny MKT checkpoint (random weights, 32 px) saved under ``directory``."""
    import torch

    from assistant.calibration import Calibrator
    from assistant.checkpoint import load_model, save_checkpoint

    torch.manual_seed(seed)
    loaded = load_model("test-tiny", allow_random=True)
    # A gentle slope spreads a random model's cosine scores over (0, 1), so that comparisons of
    # scores mean something (the default prior maps them all to ~0).
    loaded.calibrator = Calibrator(slope=10.0, intercept=0.0, threshold=0.5, method="default")
    save_checkpoint(loaded, directory, version=version)
    return directory


def write_images(directory: Path, n: int, *, seed: int = 0, size: tuple[int, int] = (48, 40)) -> list[Path]:
    """``n`` distinct random PNG images."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = directory / f"img{i:03d}.png"
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def worker_settings(home: Path, base_model: Path | str, **overrides: Any) -> Settings:
    """Settings for tests: everything under ``home``, CPU, small batches, no env surprises."""
    values: dict[str, Any] = {
        "home": home,
        "base_model": str(base_model),
        "device": "cpu",
        "batch_size": 4,
        "media_concurrency": 4,
        "media_retries": 1,
        "media_retry_backoff_s": 0.0,
        "label_studio_url": "http://ls.test:8080",
        "label_studio_api_key": "",
    }
    values.update(overrides)
    return Settings(**values)


class ImageServer:
    """A threaded ``http.server`` on 127.0.0.1 serving a folder, with a per-request delay knob.

    Attributes:
        delay_s: Seconds to wait before answering each request (slow storage).
        requests: How many times each path was requested.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.delay_s = 0.0
        self.requests: Counter[str] = Counter()
        self._lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                with server._lock:
                    server.requests[self.path] += 1
                if server.delay_s:
                    time.sleep(server.delay_s)
                path = server.root / self.path.lstrip("/").split("?")[0]
                if not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the http.server API
                pass

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = int(self._httpd.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def start(self) -> ImageServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def total_requests(self) -> int:
        with self._lock:
            return sum(self.requests.values())


@contextmanager
def serving(root: Path) -> Iterator[ImageServer]:
    """An :class:`ImageServer` for the duration of a ``with`` block."""
    server = ImageServer(root).start()
    try:
        yield server
    finally:
        server.stop()
