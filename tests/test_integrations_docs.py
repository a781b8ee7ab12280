"""The "LanceDB and Qdrant directly" examples of docs/integrations.md run as written against indexes that
`unite index build` made, and find what `unite search` finds."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

pytest.importorskip("lancedb")

from unite.cli.main import main  # noqa: E402

DOC = Path(__file__).resolve().parents[1] / "docs" / "integrations.md"


def python_blocks(section: str) -> list[str]:
    text = DOC.read_text(encoding="utf-8")
    body = text[text.index(f"## {section}") :]
    body = body[: body.find("\n## ", 1)] if "\n## " in body[1:] else body
    return re.findall(r"```python\n(.*?)```", body, flags=re.S)


@pytest.fixture(scope="module")
def photos(tmp_path_factory, media_dir, legacy_checkpoint):
    folder = tmp_path_factory.mktemp("direct")
    corpus = folder / "corpus"
    corpus.mkdir()
    for name in ("a.png", "b.jpg", "grey.png"):
        shutil.copy(media_dir / name, corpus / name)
    (corpus / "cat.txt").write_text("a cat asleep on a sofa")
    for backend in ("lancedb", "qdrant"):
        index = folder / f"{backend}.index"
        build = ["index", "build", str(corpus), "--index", str(index), "--model", str(legacy_checkpoint)]
        assert main([*build, "--backend", backend, "--device", "cpu", "--no-progress"]) == 0
    return folder


def expected_images(index: Path, capsys) -> list[str]:
    capsys.readouterr()
    query = ["search", "--index", str(index), "a cat asleep on a sofa", "--modality", "image", "-k", "5", "--json"]
    assert main([*query, "--device", "cpu", "--exact"]) == 0
    return [hit["id"] for hit in json.loads(capsys.readouterr().out)["results"]]


def test_lancedb_example_runs_and_agrees_with_unite_search(photos, capsys, monkeypatch):
    monkeypatch.chdir(photos)
    shutil.copytree(photos / "lancedb.index", photos / "photos.index", dirs_exist_ok=True)
    lance_block, _ = python_blocks("LanceDB and Qdrant directly")
    scope: dict = {}
    exec(compile(lance_block, str(DOC), "exec"), scope)  # noqa: S102 (the documented example, run as written)
    assert [hit["id"] for hit in scope["hits"]] == expected_images(photos / "photos.index", capsys)


def test_qdrant_example_runs_and_agrees_with_unite_search(photos, capsys, monkeypatch):
    monkeypatch.chdir(photos)
    shutil.rmtree(photos / "photos.index", ignore_errors=True)
    shutil.copytree(photos / "qdrant.index", photos / "photos.index")
    lance_block, qdrant_block = python_blocks("LanceDB and Qdrant directly")
    expected = expected_images(photos / "photos.index", capsys)
    from unite.cli.search import encoder_for_index
    from unite.index import read_manifest

    vector = encoder_for_index(read_manifest("photos.index")).encode(["a cat asleep on a sofa"])[0]
    scope: dict = {"vector": vector}
    exec(compile(qdrant_block, str(DOC), "exec"), scope)  # noqa: S102
    scope["client"].close()
    assert [point.payload["uid"] for point in scope["hits"]] == expected
