"""Image benchmarks as users download them, scored by their published protocols (docs/evaluation.md, "Image
benchmarks: protocols"): MMEB (MMEB-eval and MMEB-V2 files), Flickr30K, MSCOCO-5K, ShareGPT4V-1K, Urban1K, DOCCI.

Expected values come from the protocol rules (first five captions in file order, Urban1k's first line, line breaks
as spaces, VLM2Vec's instruction placement and argmax over each query's own candidates), computed by hand here.
"""

from __future__ import annotations

import json
import math
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from unite.cli.main import main
from unite.data.prompts import IMAGE_BLOCK, build_content
from unite.errors import ConfigError, InputError
from unite.evaluation import REGISTRY, EvalConfig, evaluate, evaluate_task, load_task_data
from unite.evaluation.harness import load_tasks, resolve_tasks
from unite.evaluation.synthetic import (
    MMEB_V2_QUERY_INSTRUCTION,
    MMEB_V2_TARGET_INSTRUCTION,
    build_image_stand_in,
    caption,
)
from unite.settings import EncodingSettings
from unite.testing import make_image
from unite.types import Item


@pytest.fixture(autouse=True)
def extract_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Zips met on the way are extracted here, never into the user's cache."""
    folder = tmp_path / "extracted"
    monkeypatch.setenv("UNITE_EXTRACT_DIR", str(folder))
    return folder


def _loaded(name: str, root: Path):
    [task] = load_tasks([name], root)
    return task


def _image(path: Path, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    make_image(36, 48, seed=seed).save(path)


# --------------------------------------------------------------------------------------- layouts as downloaded

#: Queries per task built from two items: five captions per Karpathy image (COCO's first has seven), one otherwise.
_TWO_ITEMS = {
    "MMEB-CIRR": 2,
    "MMEB-ImageNet-1K": 2,
    "MSCOCO-5K-T2I": 10,
    "Flickr30K-T2I": 10,
    "Flickr30K-I2T": 2,
    "ShareGPT4V-1K-T2I": 2,
    "Urban1K-I2T": 2,
    "DOCCI-T2I": 2,
}


@pytest.mark.parametrize("form", ["download", "unzipped", "flattened"])
@pytest.mark.parametrize("name", list(_TWO_ITEMS))
def test_every_image_benchmark_loads_as_downloaded(tmp_path, name, form):
    root = tmp_path / "data"
    build_image_stand_in(REGISTRY[name], root, count=2, form=form)
    task = _loaded(name, root)  # resolves the data folder and every file as `unite eval` does, media checked
    assert len(task.data.queries) == _TWO_ITEMS[name]
    for path in task.data.media_paths():
        assert Path(path).is_file(), path
    if task.spec.layout.value == "mmeb":
        assert all(task.data.qrels[e.id] == {task.data.pools[e.id][0]: 1} for e in task.data.queries)
    if form == "download" and name in ("MMEB-CIRR", "MSCOCO-5K-T2I", "Flickr30K-I2T", "Urban1K-I2T"):
        assert all(str(tmp_path / "extracted") in path for path in task.data.media_paths())  # read from the zip


def _zip_tree(source: Path, archive: Path, prefix: str = "") -> None:
    with zipfile.ZipFile(archive, "w") as bundle:
        for path in sorted(source.rglob("*")):
            if path.is_file():
                bundle.write(path, prefix + path.relative_to(source).as_posix())
    shutil.rmtree(source)


def test_mmeb_images_zip_with_a_top_images_folder(tmp_path):
    root = tmp_path / "data"
    folder = build_image_stand_in(REGISTRY["MMEB-CIRR"], root, count=2, form="unzipped")
    _zip_tree(folder / "eval_images", folder / "images.zip", prefix="images/")
    task = _loaded("MMEB-CIRR", root)
    assert task.data.queries[0].item.images[0].endswith("images/CIRR/q0.jpg")


def test_mmeb_v2_trees_as_its_download_scripts_leave_them(tmp_path):
    root = tmp_path / "data"
    folder = build_image_stand_in(REGISTRY["MMEB-VisDial"], root, count=2, form="v2")
    # VLM2Vec's download_data.sh moves MMEB/* up into image-tasks/; the annotations may lie beside MMEB-V2/.
    tasks = folder / "image-tasks"
    for entry in (tasks / "MMEB").iterdir():
        entry.rename(tasks / entry.name)
    (folder / "MMEB_Test_Instruct").rename(root / "MMEB_Test_Instruct")
    task = _loaded("MMEB-VisDial", root)
    assert task.folder == folder and task.data.queries[0].item.images == (str(tasks / "VisDial" / "q0.jpg"),)
    assert task.data.protocol["files"] == ["../MMEB_Test_Instruct/VisDial/test-00000-of-00001.parquet"]
    # Only the annotations downloaded: the data folder is MMEB_Test_Instruct/, the images are found in MMEB-V2/.
    folder.rename(root / "MMEB-V2-images")
    with pytest.raises(ConfigError, match=r"images folder not found; tried .*MMEB-V2/image-tasks"):
        _loaded("MMEB-VisDial", root)


def test_mmeb_shards_and_the_hub_parquet_converter_path(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path / "data"
    folder = build_image_stand_in(REGISTRY["MMEB-NIGHTS"], root, count=3, form="unzipped")
    source = folder / "NIGHTS" / "test-00000-of-00001.parquet"
    rows = pq.read_table(source).to_pylist()
    source.unlink()
    pq.write_table(pa.Table.from_pylist(rows[2:]), folder / "NIGHTS" / "test-00001-of-00002.parquet")
    pq.write_table(pa.Table.from_pylist(rows[:2]), folder / "NIGHTS" / "test-00000-of-00002.parquet")
    shards = _loaded("MMEB-NIGHTS", root).data
    assert [Path(e.item.images[0]).stem for e in shards.queries] == ["q0", "q1", "q2"]  # shards in name order
    for shard in (folder / "NIGHTS").iterdir():
        shard.unlink()
    (folder / "NIGHTS" / "test").mkdir()
    pq.write_table(pa.Table.from_pylist(rows), folder / "NIGHTS" / "test" / "0000.parquet")
    assert len(_loaded("MMEB-NIGHTS", root).data.queries) == 3


def test_an_unreadable_parquet_file_is_an_input_error_naming_it(tmp_path):
    folder = build_image_stand_in(REGISTRY["MMEB-OK-VQA"], tmp_path, count=2, form="unzipped")
    path = folder / "OK-VQA" / "test-00000-of-00001.parquet"
    path.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(InputError, match=r"test-00000-of-00001\.parquet: not a readable parquet file"):
        load_task_data(REGISTRY["MMEB-OK-VQA"], folder)


def test_karpathy_and_urban1k_downloaded_straight_into_the_data_root(tmp_path):
    staging, root = tmp_path / "staging", tmp_path / "data"
    for name in ("MSCOCO-5K-I2T", "Urban1K-T2I"):
        folder = build_image_stand_in(REGISTRY[name], staging, count=2, form="download")
        root.mkdir(exist_ok=True)
        for archive in folder.iterdir():
            archive.rename(root / archive.name)  # caption_datasets.zip, val2014.zip, Urban1k.zip in DATA_ROOT
    coco = _loaded("MSCOCO-5K-I2T", root)
    assert coco.folder == root and len(coco.data.queries) == 2 and len(coco.data.corpus) == 10
    urban = _loaded("Urban1K-T2I", root)
    assert urban.folder == root and [e.item.text for e in urban.data.queries] == [caption(0), caption(1)]
    # caption_datasets.zip once in DATA_ROOT, the images in DATA_ROOT/coco/.
    (root / "coco").mkdir()
    (root / "val2014.zip").rename(root / "coco" / "val2014.zip")
    coco = _loaded("MSCOCO-5K-I2T", root)
    assert coco.folder == root / "coco" and coco.data.protocol["captions_per_item"] == 5


def test_missing_files_name_every_path_tried(tmp_path):
    (tmp_path / "MMEB-eval").mkdir()
    with pytest.raises(ConfigError) as error:
        resolve_tasks(["MMEB-CIRR"], tmp_path)
        load_task_data(REGISTRY["MMEB-CIRR"], tmp_path / "MMEB-eval")
    message = str(error.value)
    for tried in ("CIRR/test-*.parquet", "MMEB_Test_Instruct/CIRR/test-*.parquet", "CIRR.jsonl"):
        assert tried in message
    assert "unite eval layout MMEB-CIRR" in message and "\n" not in message
    (tmp_path / "coco").mkdir()
    with pytest.raises(ConfigError, match=r"caption_datasets\.zip/dataset_coco\.json.*unite eval layout"):
        load_task_data(REGISTRY["MSCOCO-5K-T2I"], tmp_path / "coco")


def test_layout_command_shows_the_downloads_and_every_candidate(capsys):
    assert main(["eval", "layout", "MSCOCO-5K-T2I", "MMEB-CIRR", "Urban1K-T2I", "ShareGPT4V-1K-T2I"]) == 0
    out = capsys.readouterr().out
    for expected in (
        "caption_datasets.zip/dataset_coco.json",
        "val2014.zip",
        "TIGER-Lab/MMEB-eval",
        "images.zip",
        "ziyjiang/MMEB_Test_Instruct",
        "qry_inst",
        "Urban1k.zip/Urban1k/caption",
        "first line",
        "Lin-Chen/ShareGPT4V",
    ):
        assert expected in out, expected


# ------------------------------------------------------------------------------------- protocol rules, by hand


def _write_karpathy(folder: Path, captions: list[list[str]]) -> None:
    """``dataset_coco.json``: one image per caption list, the last in split restval (left out), images in val2014/."""
    images = []
    for index, raws in enumerate(captions):
        name = f"COCO_val2014_{index:012d}.jpg"
        _image(folder / "val2014" / name, seed=index)
        split = "restval" if index == len(captions) - 1 else "test"
        sentences = [{"raw": raw} for raw in raws]
        images.append({"filepath": "val2014", "filename": name, "split": split, "sentences": sentences})
    (folder / "dataset_coco.json").write_text(json.dumps({"images": images}))


def test_karpathy_keeps_the_first_five_captions_in_file_order(tmp_path):
    seven = [f"image zero, sentence {n}" for n in range(7)]
    five = [f"image one, sentence {n}" for n in range(5)]
    _write_karpathy(tmp_path, [seven, five, ["a restval image"]])
    t2i = load_task_data(REGISTRY["MSCOCO-5K-T2I"], tmp_path)
    assert [e.item.text for e in t2i.queries] == seven[:5] + five  # 25,000 queries for 5,000 images
    i2t = load_task_data(REGISTRY["MSCOCO-5K-I2T"], tmp_path)
    first = i2t.queries[0].id
    assert sorted(i2t.qrels[first]) == [f"text:COCO_val2014_{0:012d}#{n}" for n in range(5)]
    assert {e.item.text for e in i2t.corpus} == set(seven[:5] + five)
    assert i2t.protocol["captions_per_item"] == 5 and i2t.protocol["captions_left_out"] == 2
    every = REGISTRY["MSCOCO-5K-T2I"].replace(options={"split": "test"})  # no limit: all seven are queries
    assert len(load_task_data(every, tmp_path).queries) == 12


@pytest.mark.parametrize("value", [0, -1, "5", True, 2.5])
def test_captions_per_item_must_be_a_positive_integer(tmp_path, value):
    _write_karpathy(tmp_path, [["a", "b"], ["c"]])
    spec = REGISTRY["MSCOCO-5K-T2I"].replace(options={"split": "test", "captions_per_item": value})
    with pytest.raises(ConfigError, match=r"options\.captions_per_item must be a positive integer"):
        load_task_data(spec, tmp_path)


def _write_urban(folder: Path, captions: dict[str, bytes]) -> None:
    for index, (name, content) in enumerate(captions.items()):
        (folder / "caption").mkdir(parents=True, exist_ok=True)
        (folder / "caption" / f"{name}.txt").write_bytes(content)
        _image(folder / "image" / f"{name}.jpg", seed=index)


def test_urban1k_reads_the_first_line_of_each_caption_file(tmp_path):
    _write_urban(
        tmp_path,
        {
            "1": b"A street at dusk.\nA second paragraph Long-CLIP never reads.\n",
            "2": b"One line without a newline",
            "3": b"\xef\xbb\xbfWindows line.\r\nNext line.\r\n",
            "4": b"Old Mac line.\rNext line.",
        },
    )
    data = load_task_data(REGISTRY["Urban1K-T2I"], tmp_path)
    expected = ["A street at dusk.", "One line without a newline", "Windows line.", "Old Mac line."]
    assert [e.item.text for e in data.queries] == expected
    assert data.protocol["caption_rule"] == "first_line"
    whole = REGISTRY["Urban1K-T2I"].replace(options={"caption_rule": "whole"})
    second = "\nA second paragraph Long-CLIP never reads."
    assert load_task_data(whole, tmp_path).queries[0].item.text == f"A street at dusk.{second}"
    (tmp_path / "caption" / "5.txt").write_bytes(b"\nText after an empty first line.\n")
    _image(tmp_path / "image" / "5.jpg")
    with pytest.raises(InputError, match=r"5\.txt: empty caption \(caption rule first_line\)"):
        load_task_data(REGISTRY["Urban1K-T2I"], tmp_path)


def _share_record(index: int, text: str) -> dict:
    image = f"sam/images/sa_{index}.jpg"
    turns = [{"from": "human", "value": "<image>\nDescribe it."}, {"from": "gpt", "value": text}]
    return {"id": str(index), "image": image, "conversations": turns}


def test_sharegpt4v_takes_the_first_records_with_line_breaks_as_spaces(tmp_path):
    texts = ["A dog.\nIt runs.\n\nThe end.", "Line one\r\nline two", "A third record, past the count."]
    records = [_share_record(index, text) for index, text in enumerate(texts)]
    for index in range(3):
        _image(tmp_path / "sam" / "images" / f"sa_{index}.jpg", seed=index)
    (tmp_path / "share-captioner_coco_lcs_sam_1246k_1107.json").write_text(json.dumps(records))
    spec = REGISTRY["ShareGPT4V-1K-T2I"]
    assert spec.options["count"] == 1000  # Long-CLIP: json_data[:1000]
    data = load_task_data(spec.replace(options={**spec.options, "count": 2}), tmp_path)
    assert [e.item.text for e in data.queries] == ["A dog. It runs.  The end.", "Line one line two"]
    assert [Path(e.item.images[0]).name for e in data.corpus] == ["sa_0.jpg", "sa_1.jpg"]
    assert data.protocol == {
        "annotations": "share-captioner_coco_lcs_sam_1246k_1107.json",
        "records": 2,
        "caption_rule": "newlines_to_spaces",
    }


def test_caption_rule_is_one_of_the_named_rules(tmp_path):
    _write_urban(tmp_path, {"1": b"a caption"})
    spec = REGISTRY["Urban1K-T2I"].replace(options={"caption_rule": "first_sentence"})
    with pytest.raises(ConfigError, match=r"options\.caption_rule must be one of whole, first_line, newlines_to_sp"):
        load_task_data(spec, tmp_path)


def test_docci_reads_the_test_split_with_whole_descriptions(tmp_path):
    lines = []
    for index, split in enumerate(("test", "train", "test", "qual_dev")):
        name = f"{split}_{index:05d}.jpg"
        _image(tmp_path / "images" / name, seed=index)
        record = {"example_id": name[:-4], "split": split, "image_file": name, "description": f"Line one {index}.\n"}
        lines.append(json.dumps(record))
    (tmp_path / "docci_descriptions.jsonlines").write_text("\n".join(lines) + "\n")
    data = load_task_data(REGISTRY["DOCCI-I2T"], tmp_path)
    assert [e.id for e in data.queries] == ["image:test_00000", "image:test_00002"]
    assert [e.item.text for e in data.corpus] == ["Line one 0.", "Line one 2."]


def _write_mmeb(folder: Path, rows: list[dict]) -> None:
    """``CIRR.jsonl`` and distinct images (the cache keys items by their bytes) under ``eval_images/``."""
    paths = dict.fromkeys(path for row in rows for path in [row["qry_img_path"], *row["tgt_img_path"]] if path)
    for seed, path in enumerate(paths):
        if not (folder / "eval_images" / path).exists():
            _image(folder / "eval_images" / path, seed=seed)
    (folder / "CIRR.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


def test_mmeb_v2_instructions_go_where_vlm2vec_puts_them(tmp_path):
    rows = [
        {  # classification: text candidates take tgt_text alone (VLM2Vec's image_cls parser ignores tgt_inst)
            "qry_inst": "<|image_1|> Represent the given image for classification",
            "qry_text": "",
            "qry_img_path": "CIRR/q0.jpg",
            "tgt_inst": "Represent the class label:",
            "tgt_text": ["tench", "goldfish"],
            "tgt_img_path": ["", ""],
        },
        {  # t2i-style: image candidates take tgt_inst (VLM2Vec's image_t2i parser)
            "qry_inst": "Find an everyday image that matches the given caption:",
            "qry_text": "A cat on a mat.",
            "qry_img_path": "",
            "tgt_inst": "<|image_1|>\nRepresent the given image.",
            "tgt_text": ["", ""],
            "tgt_img_path": ["CIRR/c0.jpg", "CIRR/c1.jpg"],
        },
    ]
    _write_mmeb(tmp_path, rows)
    spec = REGISTRY["MMEB-CIRR"]
    data = load_task_data(spec, tmp_path)
    first, second = (e.item for e in data.queries)
    classify = "Represent the given image for classification"
    assert first == Item(None, (str(tmp_path / "eval_images/CIRR/q0.jpg"),), (), classify)
    assert build_content(first) == f"{IMAGE_BLOCK}{classify}"
    assert build_content(second) == "Find an everyday image that matches the given caption: A cat on a mat."
    by_text = {e.item.text: e.item for e in data.corpus if e.item.text}
    assert by_text["tench"].instruction is None and by_text["goldfish"].instruction is None
    images = [e.item for e in data.corpus if e.item.images]
    assert [item.instruction for item in images] == ["Represent the given image."] * 2
    assert build_content(images[0]) == f"{IMAGE_BLOCK}Represent the given image."
    assert data.protocol["instruction_columns"] == ["qry_inst", "tgt_inst"]
    assert data.protocol["queries_with_instruction"] == 2 and data.protocol["candidates_with_instruction"] == 2
    # MMEB-eval (v1) rows carry no instruction columns: the instruction stays inside the text, placeholder in place.
    v1 = [{k: v for k, v in rows[0].items() if k not in ("qry_inst", "tgt_inst")}]
    v1[0]["qry_text"] = "<|image_1|> Represent the given image for classification"
    _write_mmeb(tmp_path, v1)
    [query] = load_task_data(spec, tmp_path).queries
    assert query.item.instruction is None and query.item.text == f"<|IMAGE|> {classify}"


class _ByAngle:
    """An encoder placing each item on the unit circle at the angle (degrees) its image's file name gives."""

    settings = EncodingSettings()
    name_or_path = "by-angle"
    device = torch.device("cpu")
    dtype = torch.float32

    def __init__(self, angles: dict[str, float]) -> None:
        self.angles = angles
        self.model = torch.nn.Linear(2, 2)
        self.model.config = type("Config", (), {"_attn_implementation": "none"})()

    def encode(self, items, **kwargs):
        radians = [math.radians(self.angles[Path(str(item.images[0])).stem]) for item in items]
        return np.array([[math.cos(r), math.sin(r)] for r in radians], dtype=np.float32)


def test_mmeb_precision_at_1_is_the_argmax_over_each_querys_own_candidates(tmp_path):
    def row(query: str, targets: list[str]) -> dict:
        return {
            "qry_text": "<|image_1|> Find the matching image",
            "qry_img_path": f"CIRR/{query}.jpg",
            "tgt_text": ["<|image_1|>"] * len(targets),
            "tgt_img_path": [f"CIRR/{t}.jpg" for t in targets],
        }

    angles = {"q0": 0, "p0": 10, "n0": 50, "n1": 90, "q1": 180, "p1": 230, "n2": 185, "x": 1, "q2": 100, "p2": 120}
    angles["n3"] = 160
    rows = [
        row("q0", ["p0", "n0", "n1"]),  # p0 is the closest of its own candidates (x, closer, is another row's)
        row("q1", ["p1", "n2", "x"]),  # n2 is closer than p1: a miss
        row("q2", ["p2", "n3", "p2"]),  # the positive listed twice counts once; p2 is closest: a hit
    ]
    _write_mmeb(tmp_path, rows)
    spec = REGISTRY["MMEB-CIRR"]
    data = load_task_data(spec, tmp_path)
    assert [len(data.pools[e.id]) for e in data.queries] == [3, 3, 2]
    result = evaluate_task(_ByAngle(angles), spec, data, EvalConfig(show_progress=False))
    assert result["metrics"]["precision@1"] == pytest.approx(2 / 3)


# ---------------------------------------------------------------------------------------------- end to end


def test_image_benchmarks_run_end_to_end_from_their_downloads(legacy_checkpoint, tmp_path, capsys):
    root, out = tmp_path / "data", tmp_path / "out"
    names = ["MMEB-CIRR", "MSCOCO-5K-T2I", "Flickr30K-I2T", "Urban1K-T2I", "ShareGPT4V-1K-I2T", "DOCCI-T2I"]
    for name in names:
        build_image_stand_in(REGISTRY[name], root, count=2, form="download")
    args = ["eval", "--model", str(legacy_checkpoint), "--data-root", str(root), "--output-dir", str(out)]
    args += [*[arg for name in names for arg in ("--task", name)], "--device", "cpu", "--batch-size", "8"]
    assert main([*args, "--no-progress"]) == 0, capsys.readouterr().err
    results = {name: json.loads((out / f"{name}.json").read_text()) for name in names}
    assert results["MMEB-CIRR"]["counts"]["queries"] == 2 and "precision@1" in results["MMEB-CIRR"]["metrics"]
    assert results["MMEB-CIRR"]["protocol"]["data"]["instruction_columns"] == []
    coco = results["MSCOCO-5K-T2I"]
    assert coco["counts"]["queries"] == 10 and coco["counts"]["candidates"] == 2  # 5 of image 0's 7 captions
    assert coco["protocol"]["data"]["captions_per_item"] == 5 and coco["protocol"]["data"]["captions_left_out"] == 2
    assert results["Flickr30K-I2T"]["counts"]["candidates"] == 10
    assert results["Urban1K-T2I"]["protocol"]["data"]["caption_rule"] == "first_line"
    assert results["ShareGPT4V-1K-I2T"]["protocol"]["data"]["caption_rule"] == "newlines_to_spaces"
    assert results["DOCCI-T2I"]["counts"]["queries"] == 2
    for result in results.values():
        assert 0.0 <= result["metrics"][result["main_metric"]] <= 1.0


class _Recording:
    """Wraps an encoder, keeping every item it encodes with its embedding."""

    def __init__(self, inner) -> None:
        self.inner, self.seen = inner, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode(self, items, **kwargs):
        vectors = self.inner.encode(items, **kwargs)
        self.seen += list(zip(items, np.asarray(vectors)))
        return vectors

    def encode_with_errors(self, items, **kwargs):
        result = self.inner.encode_with_errors(items, **kwargs)
        self.seen += [(item, vector) for item, vector, ok in zip(items, np.asarray(result.embeddings), result.ok) if ok]
        return result


def test_mmeb_v2_instruction_reaches_the_embedding(encoder, tmp_path):
    root = tmp_path / "data"
    folder = build_image_stand_in(REGISTRY["MMEB-CIRR"], root, count=2, form="v2")
    recording = _Recording(encoder)
    [result] = evaluate(recording, ["MMEB-CIRR"], data_root=root, config=EvalConfig(show_progress=False))
    images = folder / "image-tasks" / "MMEB" / "CIRR"
    instruction = MMEB_V2_QUERY_INSTRUCTION.replace("<|image_1|>", "").strip()
    query = Item(caption(0), (str(images / "q0.jpg"),), (), instruction)
    target = Item(None, (str(images / "c0.jpg"),), (), MMEB_V2_TARGET_INSTRUCTION.replace("<|image_1|>", "").strip())
    assert build_content(query) == f"{IMAGE_BLOCK}{instruction} {caption(0)}"  # image, instruction, text
    seen = dict(recording.seen)
    for item in (query, target):
        assert item in seen, item
        expected = encoder.encode([item], batch_size=1, show_progress_bar=False)[0]
        np.testing.assert_allclose(seen[item], expected, atol=1e-5)
    assert result["protocol"]["data"]["instruction_columns"] == ["qry_inst", "tgt_inst"]
    assert result["protocol"]["data"]["queries_with_instruction"] == 2
