"""Finding a task's files as downloads lay them out (``unite.evaluation.locate``): candidates in order, data
folders, paths through zip archives extracted once, safely and atomically, and the messages when nothing matches."""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

import pytest

from unite.cli.main import main
from unite.errors import ConfigError, InputError
from unite.evaluation import REGISTRY, locate
from unite.evaluation.locate import candidates, data_folder, extract_zip, find


@pytest.fixture(autouse=True)
def extract_dir(tmp_path, monkeypatch) -> Path:
    """Archives are extracted under the test's own folder, never into the user's cache."""
    folder = tmp_path / "extracted"
    monkeypatch.setenv(locate.EXTRACT_DIR_ENV, str(folder))
    return folder


def _zip(path: Path, members: dict[str, bytes], stored: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    method = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(path, "w", method) as bundle:
        for name, data in members.items():
            bundle.writestr(zipfile.ZipInfo(name), data)
    return path


def _files(folder: Path) -> dict[str, bytes]:
    """Every regular file under ``folder`` (the completion marker left out) -> its bytes."""
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != ".complete"
    }


def test_candidates_are_tried_in_order(tmp_path):
    (tmp_path / "b.csv").write_text("b")
    assert find("T", tmp_path, "annotations", ["a.csv", "b.csv"]) == tmp_path / "b.csv"
    (tmp_path / "a.csv").write_text("a")
    assert find("T", tmp_path, "annotations", ["a.csv", "b.csv"]) == tmp_path / "a.csv"  # the first that exists
    (tmp_path / "videos").mkdir()
    (tmp_path / "c.csv").mkdir()  # a folder is not a file, and a file is not a folder
    assert find("T", tmp_path, "annotations", ["c.csv", "b.csv"]) == tmp_path / "b.csv"
    assert find("T", tmp_path, "media", ["a.csv", "videos"], kind="dir") == tmp_path / "videos"
    assert find("T", tmp_path, "media", ["missing"], kind="dir", required=False) is None
    assert candidates(None, "x.csv") == ["x.csv"] and candidates(("a", "b")) == ["a", "b"]


def test_data_folder_candidates_and_the_root_itself(tmp_path):
    assert data_folder("T", ["msrvtt", "."], tmp_path) == tmp_path  # "." is the data root
    (tmp_path / "msrvtt").mkdir()
    assert data_folder("T", ["msrvtt", "."], tmp_path) == tmp_path / "msrvtt"
    with pytest.raises(ConfigError) as error:
        data_folder("T", ["one", "two"], tmp_path)
    message = str(error.value)
    assert str(tmp_path / "one") in message and str(tmp_path / "two") in message
    assert "`unite eval layout T`" in message and "\n" not in message


def test_not_found_lists_every_path_tried_and_the_layout_command(tmp_path):
    paths = ["msrvtt_data/test.csv", "MSRVTT/msrvtt_data/test.csv", "test.csv"]
    with pytest.raises(ConfigError) as error:
        find("MSRVTT-1K-A-T2V", tmp_path, "annotations", paths)
    message = str(error.value)
    assert all(str(tmp_path / path) in message for path in paths)
    assert "annotations file not found" in message and "files.annotations" in message
    assert "`unite eval layout MSRVTT-1K-A-T2V`" in message and "\n" not in message


def test_a_folder_role_through_a_bare_zip_and_a_file_through_a_zip(tmp_path, extract_dir):
    members = {"v0.mp4": b"zero", "sub/v1.mp4": b"one"}
    _zip(tmp_path / "videos.zip", members)
    folder = find("T", tmp_path, "media", ["videos", "videos.zip"], kind="dir")
    assert folder.is_relative_to(extract_dir) and _files(folder) == members
    _zip(tmp_path / "annotations.zip", {"inner/test.csv": b"a,b\n"})
    path = find("T", tmp_path, "annotations", ["test.csv", "annotations.zip/inner/test.csv"])
    assert path.read_bytes() == b"a,b\n" and path.is_relative_to(extract_dir)
    # A zip inside a zip, and a folder inside a zip.
    inner = _zip(tmp_path / "build" / "inner.zip", {"clips/c.mp4": b"clip"}).read_bytes()
    _zip(tmp_path / "outer.zip", {"inner.zip": inner})
    assert _files(find("T", tmp_path, "media", ["outer.zip/inner.zip/clips"], kind="dir")) == {"c.mp4": b"clip"}
    # A bare zip named for a file role is the file itself (a loader may read archives).
    assert find("T", tmp_path, "annotations", ["videos.zip"]) == tmp_path / "videos.zip"


def test_extraction_happens_once(tmp_path, monkeypatch):
    archive = _zip(tmp_path / "videos.zip", {"a.mp4": b"a", "b.mp4": b"b"})
    calls = []
    original = zipfile.ZipFile.extract

    def counting(self, member, *args, **kwargs):
        calls.append(member)
        return original(self, member, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "extract", counting)
    first = extract_zip(archive)
    modified = {path: path.stat().st_mtime_ns for path in first.rglob("*")}
    assert len(calls) == 2
    second = find("T", tmp_path, "media", ["videos.zip"], kind="dir")
    assert second == first and len(calls) == 2  # nothing extracted again
    assert {path: path.stat().st_mtime_ns for path in second.rglob("*")} == modified


def test_a_changed_archive_is_extracted_again(tmp_path):
    archive = _zip(tmp_path / "videos.zip", {"a.mp4": b"old!"}, stored=True)
    first = extract_zip(archive)
    assert _files(first) == {"a.mp4": b"old!"}
    size, stamp = archive.stat().st_size, archive.stat().st_mtime_ns
    _zip(archive, {"a.mp4": b"new!"}, stored=True)
    os.utime(archive, ns=(stamp, stamp))  # the same size and modification time: only the content tells them apart
    assert archive.stat().st_size == size
    second = extract_zip(archive)
    assert second != first and _files(second) == {"a.mp4": b"new!"}
    _zip(archive, {"a.mp4": b"newer content"})
    assert _files(extract_zip(archive)) == {"a.mp4": b"newer content"}


def test_a_failure_midway_leaves_nothing_taken_as_complete(tmp_path, monkeypatch, extract_dir):
    archive = _zip(tmp_path / "videos.zip", {"a.mp4": b"a", "b.mp4": b"b", "c.mp4": b"c"})
    original = zipfile.ZipFile.extract
    done = []

    def failing(self, member, *args, **kwargs):
        if len(done) == 2:
            raise OSError("disk went away")
        done.append(member)
        return original(self, member, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "extract", failing)
    with pytest.raises(OSError, match="disk went away"):
        extract_zip(archive)
    assert list(extract_dir.iterdir()) == []  # neither the target nor the staging folder is left
    monkeypatch.setattr(zipfile.ZipFile, "extract", original)
    assert _files(extract_zip(archive)) == {"a.mp4": b"a", "b.mp4": b"b", "c.mp4": b"c"}


def test_a_folder_left_by_a_killed_extraction_is_not_taken_as_complete(tmp_path):
    archive = _zip(tmp_path / "videos.zip", {"a.mp4": b"a", "b.mp4": b"b"})
    target = extract_zip(archive)
    shutil.rmtree(target)
    target.mkdir()
    (target / "a.mp4").write_bytes(b"a")  # half of it, without the completion marker
    assert extract_zip(archive) == target and _files(target) == {"a.mp4": b"a", "b.mp4": b"b"}


def test_an_extraction_another_process_finished_first_is_kept(tmp_path, monkeypatch):
    """Ranks under torchrun load tasks at once: when another process completes the same extraction while this
    one works, its folder is kept (it may be read already) and this one's copy is dropped."""
    archive = _zip(tmp_path / "videos.zip", {"a.mp4": b"a"})
    target = extract_zip(archive)
    shutil.rmtree(target)
    original = zipfile.ZipFile.extract

    def racing(self, member, path=None, pwd=None):
        if not target.exists():  # the other process finishes first
            target.mkdir()
            (target / "a.mp4").write_bytes(b"a")
            (target / "theirs").write_text("")
            (target / ".complete").write_text("")
        return original(self, member, path, pwd)

    monkeypatch.setattr(zipfile.ZipFile, "extract", racing)
    assert extract_zip(archive) == target
    assert (target / "theirs").exists()  # not deleted nor replaced
    assert [p.name for p in target.parent.iterdir()] == [target.name]  # no staging folder left behind


@pytest.mark.parametrize("name", ["../evil.txt", "inner/../../evil.txt", "/tmp/evil.txt", "..\\evil.txt"])
def test_members_that_would_land_outside_are_refused(tmp_path, extract_dir, name):
    archive = _zip(tmp_path / "evil.zip", {"fine.txt": b"ok", name: b"pwned"})
    with pytest.raises(InputError, match="would land outside the extraction folder"):
        extract_zip(archive)
    assert not (tmp_path / "evil.txt").exists()
    assert not extract_dir.exists() or not any(extract_dir.iterdir())


def test_no_extraction_without_room_on_the_disk(tmp_path, monkeypatch, extract_dir):
    archive = _zip(tmp_path / "videos.zip", {"a.mp4": b"x" * 5000})

    def full(path):
        return shutil._ntuple_diskusage(10**9, 10**9 - 100, 100)  # 100 bytes free

    monkeypatch.setattr(shutil, "disk_usage", full)
    with pytest.raises(InputError, match=r"needs 5000 bytes, 100 are free"):
        extract_zip(archive)
    assert not any(extract_dir.iterdir())


def test_a_file_that_is_not_a_zip_is_named(tmp_path):
    (tmp_path / "videos.zip").write_bytes(b"not a zip at all")
    with pytest.raises(InputError, match=r"videos\.zip: not a readable zip archive"):
        find("T", tmp_path, "media", ["videos.zip"], kind="dir")


def test_unite_eval_layout_prints_the_source_and_every_role(capsys):
    name = "MSRVTT-1K-A-T2V"
    spec = REGISTRY[name]
    assert main(["eval", "layout", name]) == 0
    out = capsys.readouterr().out
    assert spec.source and spec.source in out
    for role, paths in spec.files.items():
        line = next(line for line in out.splitlines() if line.strip().startswith(f"{role} ("))
        assert all(path.rstrip("/") in line for path in candidates(paths)), role
    for folder in spec.data_dirs:
        assert (folder if folder not in ("", ".") else "DATA_ROOT itself") in out
    assert main(["eval", "layout"]) == 1 and "needs a task name" in capsys.readouterr().err


def test_unite_eval_layout_of_a_task_file(tmp_path, capsys):
    task = tmp_path / "mine" / "task.yaml"
    task.parent.mkdir()
    task.write_text("name: mine\nsource: my own files\nfiles: {queries: [q.jsonl, data.zip/q.jsonl], corpus: c.jsonl, "
                    "qrels: qrels.tsv}\n")
    for name in ("q.jsonl", "c.jsonl", "qrels.tsv"):
        (task.parent / name).write_text("")
    assert main(["eval", "layout", str(task)]) == 0
    out = capsys.readouterr().out
    assert "download: my own files" in out and "q.jsonl | data.zip/q.jsonl" in out
    assert "corpus (file)" in out and "qrels (file)" in out
