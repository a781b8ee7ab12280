"""Helpers for tests that run `unite serve` in a real uvicorn process on 127.0.0.1 (stopped by the test)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from unite.index import IndexManifest, build_index, create_store, scan_folder


def build_test_index(folder: Path, media_dir: Path, encoder, checkpoint: Path) -> Path:
    corpus = folder / "corpus"
    corpus.mkdir(parents=True)
    for name in ("a.png", "b.jpg", "grey.png", "clip.mp4", "long.mp4"):
        shutil.copy(media_dir / name, corpus / name)
    (corpus / "cat.txt").write_text("a cat asleep on a sofa")
    (corpus / "sea.txt").write_text("stormy clouds over the open sea")
    manifest = IndexManifest("lancedb", str(checkpoint), encoder.settings.to_dict(), encoder.embedding_dim)
    store = create_store(folder / "index", manifest)
    entries = scan_folder(corpus, clip_seconds=3.0, settings=encoder.settings)
    build_index(store, entries, lambda items: encoder.encode_with_errors(items, show_progress_bar=False))
    store.close()
    return folder / "index"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`unite serve` in a subprocess; its log goes to a file the tests can read."""

    def __init__(self, index: Path, log: Path, *extra: str, env: dict | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        command = [sys.executable, "-m", "unite.cli.main", "serve", "--index", str(index), "--port", str(self.port)]
        command += ["--device", "cpu", *extra]
        self._log_handle = log.open("w")
        environment = dict(os.environ, HF_HUB_OFFLINE="1", **(env or {}))
        self.process = subprocess.Popen(command, stdout=self._log_handle, stderr=subprocess.STDOUT, env=environment)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {log.read_text()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server did not start: {log.read_text()}")

    def alive(self) -> bool:
        return self.process.poll() is None and httpx.get(self.url + "/healthz", timeout=5).status_code == 200

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log_handle.close()
