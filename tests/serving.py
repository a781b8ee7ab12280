"""Helpers for tests that run `unite serve` in a real uvicorn process on 127.0.0.1 (stopped by the test)."""

from __future__ import annotations

import shutil
from pathlib import Path

from unite.index import IndexManifest, build_index, create_store, scan_folder
from unite.testing import ServerProcess


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


#: `unite serve` in a subprocess on 127.0.0.1 (see unite.testing.ServerProcess).
Server = ServerProcess
