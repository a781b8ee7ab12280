"""Items prepared in worker processes (unite.data.workers) give what the thread path gives, fail the same way,
survive a killed worker, and the workers live as long as the encoder asks."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from unite.data import workers as workers_module
from unite.data.workers import PreparationWorkers, in_memory
from unite.errors import ConfigError, MediaError
from unite.testing import make_image
from unite.types import VideoClip, to_item

pytest.importorskip("av")

WORKERS = 2


@pytest.fixture(scope="module")
def corpus(media_dir) -> list:
    """Texts, images of odd sizes and modes, clips, a clip range, frame lists, fused items, an in-memory image."""
    return [
        "a short text",
        {"image": str(media_dir / "a.png")},
        {"image": str(media_dir / "b.jpg"), "text": "fused with a caption"},
        {"image": str(media_dir / "rgba.png")},
        {"image": str(media_dir / "grey.png")},
        {"video": str(media_dir / "clip.mp4")},
        {"video": str(media_dir / "long.mp4"), "text": "a longer clip"},
        {"video": VideoClip(str(media_dir / "long.mp4"), 1.0, 4.0)},
        {"video": [str(media_dir / f"frame{i}.png") for i in range(3)]},
        {"image": make_image(40, 70, seed=9)},
        "another text, a little longer than the first one",
    ]


def _features(encoder, item):
    return encoder.processor.prepare(to_item(item))


def test_processes_and_threads_give_identical_pixels_and_embeddings(encoder, corpus):
    workers = PreparationWorkers(encoder.tokenizer, encoder.settings, WORKERS)
    try:
        futures = [workers.submit(to_item(item)) for item in corpus]
        for item, future in zip(corpus, futures):
            remote, local = future.result(timeout=120), _features(encoder, item)
            assert remote.input_ids == local.input_ids
            for kind in ("images", "videos"):
                pairs = list(zip(getattr(remote, kind), getattr(local, kind), strict=True))
                for a, b in pairs:
                    assert tuple(a.grid_thw) == tuple(b.grid_thw)
                    assert np.array_equal(a.pixel_values, b.pixel_values)
    finally:
        workers.close()
    threads = encoder.encode(corpus, prepare_in="threads", num_workers=WORKERS, batch_size=4)
    processes = encoder.encode(corpus, prepare_in="processes", num_workers=WORKERS, batch_size=4)
    np.testing.assert_allclose(processes, threads, rtol=0, atol=1e-6)


def test_in_memory_items_stay_in_the_driver(media_dir):
    assert in_memory(to_item("text only"))
    assert in_memory(to_item({"image": make_image(30, 30, seed=1)}))
    assert not in_memory(to_item({"image": str(media_dir / "a.png")}))
    assert not in_memory(to_item({"video": VideoClip(str(media_dir / "clip.mp4"), 0.0, 1.0)}))


def test_an_item_failing_in_a_worker_has_the_thread_message(encoder, media_dir, tmp_path):
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    make_image(10, 2500, seed=3).save(tmp_path / "thin.png")
    items = [
        {"image": str(media_dir / "a.png")},
        {"image": str(tmp_path / "missing.png")},
        {"image": str(tmp_path / "corrupt.jpg")},
        {"image": str(tmp_path / "thin.png")},
        {"video": str(media_dir / "a.png")},
        {"text": "fine", "image": str(media_dir / "b.jpg")},
    ]
    threads = encoder.encode_with_errors(items, prepare_in="threads", num_workers=WORKERS)
    processes = encoder.encode_with_errors(items, prepare_in="processes", num_workers=WORKERS)
    assert [index for index, _ in threads.errors] == [1, 2, 3, 4]
    assert processes.errors == threads.errors
    assert processes.ok.tolist() == threads.ok.tolist()
    with pytest.raises(MediaError) as raised:
        encoder.encode(items, num_workers=WORKERS, prepare_in="processes")
    assert raised.value.item_index == 1
    assert raised.value.reason == threads.errors[0][1]


def test_an_unexpected_exception_in_a_worker_reads_as_in_a_thread(encoder, media_dir, monkeypatch):
    workers = PreparationWorkers(encoder.tokenizer, encoder.settings, 1)
    try:
        monkeypatch.setattr(workers_module, "_prepare_task", _failing_task)  # pickled by name, run by the worker
        future = workers.submit(to_item({"image": str(media_dir / "a.png")}))
        with pytest.raises(Exception) as raised:
            future.result(timeout=120)
        assert type(raised.value).__name__ == "ZeroDivisionError"
        assert str(raised.value) == "not a number"
        foreign = workers.submit(to_item({"image": str(media_dir / "b.jpg")}))
        with pytest.raises(Exception) as raised:
            foreign.result(timeout=120)
        assert type(raised.value).__name__ == "Unpicklable"
        assert str(raised.value) == "cannot travel"
    finally:
        workers.close()


def _failing_task(item, path, cwd):
    if str(item.images[0]).endswith("a.png"):
        raise ZeroDivisionError("not a number")
    raise workers_module._portable(Unpicklable("cannot travel")) from None


class Unpicklable(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = __import__("threading").Lock()


def _poisoned_task(item, path, cwd):
    """Dies (SIGKILL) on the item whose text is "poison", as a decoder crash or the OOM killer would."""
    if item.text and "poison" in item.text:
        os.kill(os.getpid(), signal.SIGKILL)
    return workers_module._prepare_task(item, path, cwd)


def test_a_killed_worker_costs_only_its_item(encoder, media_dir, monkeypatch):
    image = str(media_dir / "a.png")
    items = [{"text": f"item {i}", "image": image} for i in range(6)]
    items[3] = {"text": "poison", "image": image}
    expected = encoder.encode_with_errors(items, prepare_in="threads", num_workers=WORKERS)
    assert expected.ok.all()
    monkeypatch.setattr(workers_module, "_prepare_task", _poisoned_task)
    result = encoder.encode_with_errors(items, num_workers=WORKERS, prepare_in="processes", batch_size=2)
    assert result.errors == [(3, "the worker process preparing this item died (exit code -9)")]
    keep = [i for i in range(6) if i != 3]
    np.testing.assert_allclose(result.embeddings[keep], expected.embeddings[keep], rtol=0, atol=1e-6)
    assert not result.embeddings[3].any()
    monkeypatch.undo()
    # a replacement took the dead worker's place
    again = encoder.encode_with_errors(items, num_workers=WORKERS, prepare_in="processes")
    assert again.ok.all()
    assert not list(workers_module.shared_folder().glob(f"unite-prepare-{os.getpid()}-*"))  # no file left behind


def test_workers_are_reused_across_calls_and_gone_after_close(encoder, media_dir):
    item = {"image": str(media_dir / "b.jpg")}
    encoder.encode([item], num_workers=WORKERS, prepare_in="processes")
    pids = encoder._preparation_workers.pids()
    assert len(pids) == WORKERS
    encoder.encode([item, "text"], num_workers=WORKERS, prepare_in="processes")
    assert encoder._preparation_workers.pids() == pids
    encoder.close()
    assert encoder._preparation_workers is None
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in pids)
    encoder.encode([item], num_workers=WORKERS, prepare_in="processes")  # starts anew
    assert not set(encoder._preparation_workers.pids()) & set(pids)


def test_text_only_calls_start_no_worker(legacy_checkpoint):
    from unite import UniteEncoder

    fresh = UniteEncoder.from_pretrained(legacy_checkpoint, device="cpu")
    fresh.encode(["a text", {"image": make_image(30, 40, seed=2)}])
    assert getattr(fresh, "_preparation_workers", None) is None


def test_auto_prepares_in_threads_on_two_cores_and_in_processes_above(encoder, media_dir, monkeypatch):
    from unite.data.workers import THREADS_UP_TO_CORES, PrepareIn

    assert PrepareIn.AUTO.resolve(cores=1) is PrepareIn.THREADS
    assert PrepareIn.AUTO.resolve(cores=THREADS_UP_TO_CORES) is PrepareIn.THREADS
    assert PrepareIn.AUTO.resolve(cores=THREADS_UP_TO_CORES + 1) is PrepareIn.PROCESSES
    assert PrepareIn.PROCESSES.resolve(cores=1) is PrepareIn.PROCESSES
    assert PrepareIn.THREADS.resolve(cores=64) is PrepareIn.THREADS
    encoder.close()
    item = {"image": str(media_dir / "b.jpg")}
    monkeypatch.setattr(workers_module, "available_cores", lambda: THREADS_UP_TO_CORES)
    encoder.encode([item], num_workers=1)  # the default is "auto"
    assert getattr(encoder, "_preparation_workers", None) is None
    monkeypatch.setattr(workers_module, "available_cores", lambda: THREADS_UP_TO_CORES + 2)
    encoder.encode([item], num_workers=1)
    assert len(encoder._preparation_workers.pids()) == 1
    encoder.close()


def test_prepare_in_is_checked(encoder):
    with pytest.raises(ConfigError, match="prepare_in"):
        encoder.encode(["x"], prepare_in="gpu")
    with pytest.raises(ConfigError):
        encoder.encode(["x"], num_workers=0)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def _failing_init(tokenizer, settings):
    raise OSError("no shared memory here")


def test_workers_that_cannot_start_leave_the_items_to_threads(encoder, media_dir, monkeypatch, caplog):
    monkeypatch.setattr(workers_module, "_init_worker", _failing_init)  # pickled by name, run by the workers
    item = to_item({"image": str(media_dir / "a.png")})
    strict = PreparationWorkers(encoder.tokenizer, encoder.settings, 1)
    lenient = PreparationWorkers(encoder.tokenizer, encoder.settings, 1, fallback=encoder.processor.prepare)
    try:
        with pytest.raises(Exception, match="no shared memory here"):
            strict.submit(item).result(timeout=120)
        features = lenient.submit(item).result(timeout=120)
        assert np.array_equal(features.images[0].pixel_values, _features(encoder, item).images[0].pixel_values)
        assert lenient.failed
        again = lenient.submit(item).result(timeout=120)  # straight to the threads now
        assert again.input_ids == features.input_ids
    finally:
        strict.close()
        lenient.close()
    assert "preparing in threads" in caplog.text


@pytest.mark.parametrize("how", ["-c", "stdin"])
def test_workers_start_from_a_main_module_that_cannot_be_imported_again(how, legacy_checkpoint, media_dir, tmp_path):
    """``python -c`` / ``python -`` (and scripts without a main guard): the workers never import the driver's
    main module again, so they start, and prepare the item in a process of their own."""
    import subprocess
    import sys

    script = (
        "import os\n"
        "from unite import UniteEncoder\n"
        f"encoder = UniteEncoder.from_pretrained({str(legacy_checkpoint)!r}, device='cpu')\n"
        f"encoder.encode([{{'image': {str(media_dir / 'a.png')!r}}}], num_workers=1, prepare_in='processes')\n"
        "workers = encoder._preparation_workers\n"
        "assert not workers.failed and workers.pids() and os.getpid() not in workers.pids(), workers.pids()\n"
        "print('MARKER-ONCE')\n"
    )
    argv, stdin = ([sys.executable, "-c", script], None) if how == "-c" else ([sys.executable, "-"], script)
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, cwd=tmp_path, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("MARKER-ONCE") == 1  # the main module ran once, in the driver only
    assert "Traceback" not in done.stderr and "FileNotFoundError" not in done.stderr


def test_without_room_in_shared_memory_the_pixels_come_through_the_pipe(encoder, corpus, tmp_path):
    """A full or missing shared-memory folder (Docker gives /dev/shm 64 MB) fails no item: the arrays travel
    through the worker's pipe instead, the same bit for bit."""
    workers = PreparationWorkers(encoder.tokenizer, encoder.settings, WORKERS)
    workers._folder = tmp_path / "missing"  # every file the workers would write there fails to open
    try:
        with_media = [item for item in corpus if not isinstance(item, str) and not in_memory(to_item(item))]
        futures = [workers.submit(to_item(item)) for item in with_media]
        for item, future in zip(with_media, futures):
            remote, local = future.result(timeout=120), _features(encoder, item)
            assert remote.input_ids == local.input_ids
            for kind in ("images", "videos"):
                for a, b in zip(getattr(remote, kind), getattr(local, kind), strict=True):
                    assert tuple(a.grid_thw) == tuple(b.grid_thw)
                    assert np.array_equal(a.pixel_values, b.pixel_values)
    finally:
        workers.close()
    assert not (tmp_path / "missing").exists()
