"""Task specs, the registry of the paper's benchmarks, and the loader of every public layout on stand-ins."""

from __future__ import annotations

import json
import os
import pickle
import re
from pathlib import Path

import pytest

from unite.cli.main import main
from unite.errors import ConfigError, InputError, UniteError
from unite.evaluation import GROUPS, REGISTRY, Direction, Layout, TaskSpec, load_task_data, load_task_spec
from unite.evaluation.harness import resolve_tasks
from unite.evaluation.locate import extract_dir
from unite.evaluation.registry import MMEB_AGGREGATES
from unite.evaluation.synthetic import build_image_stand_in, build_stand_in, caption, write_generic_task

# ------------------------------------------------------------------------------------------------ generic


@pytest.fixture()
def generic_task(tmp_path: Path) -> Path:
    return write_generic_task(tmp_path / "task", count=4)


def test_generic_task_loads_by_the_format(generic_task):
    spec, folder = load_task_spec(generic_task)
    assert spec.name == "synthetic-generic" and spec.main_metric == "ndcg@10"
    data = load_task_data(spec, folder)
    assert [e.id for e in data.queries] == ["q0", "q1", "q2", "q3"]
    assert data.queries[0].item.text == caption(0)
    assert data.corpus[1].item.images == (str(folder / "images" / "d1.png"),)  # relative to the task folder
    assert data.qrels["q0"] == {"d0": 1, "d1": 2}  # the header line of qrels.tsv is skipped


def _edit(path: Path, old: str, new: str) -> None:
    path.write_text(path.read_text().replace(old, new))


def test_missing_file_is_named(generic_task):
    (generic_task.parent / "corpus.jsonl").unlink()
    spec, folder = load_task_spec(generic_task)
    words = r"corpus file not found; tried .*corpus\.jsonl \(files\.corpus.*unite eval layout"
    with pytest.raises(ConfigError, match=words):
        load_task_data(spec, folder)


def test_unknown_metric_and_field_are_named(generic_task):
    _edit(generic_task, "ndcg@10, mrr@10", "ndcg@10, mrrr@10")
    with pytest.raises(ConfigError, match=r"task\.yaml: unknown metric 'mrrr@10'"):
        load_task_spec(generic_task)
    generic_task.write_text("name: x\nquery_file: q.jsonl\n")
    with pytest.raises(ConfigError, match=r"task\.yaml: unknown field\(s\) query_file"):
        load_task_spec(generic_task)
    generic_task.write_text("name: x\nsettings: {video_frame: 4}\n")
    with pytest.raises(ConfigError, match="unknown encoding setting"):
        load_task_spec(generic_task)


def test_qrels_pointing_at_unknown_ids_are_named_by_line(generic_task):
    qrels = generic_task.parent / "qrels.tsv"
    qrels.write_text(qrels.read_text() + "q1\td9\t1\n")
    spec, folder = load_task_spec(generic_task)
    with pytest.raises(InputError, match=r"qrels\.tsv:7: corpus id 'd9' is not in corpus\.jsonl"):
        load_task_data(spec, folder)
    qrels.write_text("qx\td0\t1\n")
    with pytest.raises(InputError, match=r"qrels\.tsv:1: query id 'qx' is not in queries\.jsonl"):
        load_task_data(spec, folder)
    qrels.write_text("q0\td0\t1\nq1\td1\thigh\n")
    with pytest.raises(InputError, match=r"qrels\.tsv:2: relevance must be an integer"):
        load_task_data(spec, folder)


def test_bad_query_lines_are_named(generic_task):
    queries = generic_task.parent / "queries.jsonl"
    queries.write_text('{"id": "q0", "text": "a"}\n{"id": "q0", "text": "b"}\n')
    spec, folder = load_task_spec(generic_task)
    with pytest.raises(InputError, match=r"queries\.jsonl:2: duplicate id 'q0'"):
        load_task_data(spec, folder)
    queries.write_text('{"text": "a"}\n')
    with pytest.raises(InputError, match=r"queries\.jsonl:1: missing 'id'"):
        load_task_data(spec, folder)


def test_queries_without_judgements_are_dropped_and_counted(generic_task):
    qrels = generic_task.parent / "qrels.tsv"
    qrels.write_text("q0\td0\t1\nq1\td1\t0\n")
    spec, folder = load_task_spec(generic_task)
    data = load_task_data(spec, folder)
    assert [e.id for e in data.queries] == ["q0"]
    assert data.dropped_queries == ["q1", "q2", "q3"]


def test_cli_reports_a_bad_spec_in_one_line_before_loading_a_model(generic_task, tmp_path, capsys):
    _edit(generic_task, "main_metric: ndcg@10", "main_metric: ndcg@ten")
    code = main(["eval", "--model", str(tmp_path / "no-model"), "--task", str(generic_task), "--output-dir", "x"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and "unknown metric 'ndcg@ten'" in err and "Traceback" not in err


def test_cli_needs_its_arguments(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("UNITE_EVAL_DATA", raising=False)
    assert main(["eval", "--task", "MSVD-T2V"]) == 1
    assert "needs --model, --output-dir" in capsys.readouterr().err
    assert main(["eval", "--model", "m", "--task", "MSVD-T2V", "--output-dir", str(tmp_path)]) == 1
    assert "--data-root" in capsys.readouterr().err
    assert main(["eval", "--model", "m", "--task", "NoSuchBench", "--output-dir", str(tmp_path)]) == 1
    assert "unknown task 'NoSuchBench'" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------- registry


def test_registry_holds_every_benchmark_of_the_paper():
    mmeb = [REGISTRY[name] for name in GROUPS["mmeb"]]
    assert len(mmeb) == 36 and len(GROUPS["mmeb-ind"]) == 20 and len(GROUPS["mmeb-ood"]) == 16
    counts = {meta: len(GROUPS[f"mmeb-{meta}"]) for meta in ("classification", "vqa", "retrieval", "grounding")}
    assert counts == {"classification": 10, "vqa": 10, "retrieval": 12, "grounding": 4}
    assert all(spec.main_metric == "precision@1" and spec.layout is Layout.MMEB for spec in mmeb)
    pairs = ["CaReBench-General", "CaReBench-Spatial", "CaReBench-Temporal", "MSRVTT-1K-A", "MSVD", "DiDeMo"]
    images = ["ShareGPT4V-1K", "Urban1K", "DOCCI", "Flickr30K", "MSCOCO-5K"]
    expected = [f"{name}-{d}" for name in pairs for d in ("T2V", "V2T")]
    expected += [f"{name}-{d}" for name in images for d in ("T2I", "I2T")]
    expected.append("WebVid-CoVR")
    for name in expected:
        assert REGISTRY[name].main_metric == "recall@1", name
    assert len(REGISTRY) == 36 + len(expected)


def test_registry_carries_the_papers_settings_and_numbers():
    # docs/reference.md section 8: 48 frames for MSR-VTT, MSVD, DiDeMo; 32 for CaReBench; 16 for WebVid-CoVR.
    frames = {name: spec.settings.get("video_frames") for name, spec in REGISTRY.items()}
    for name in ("MSRVTT-1K-A-T2V", "MSVD-V2T", "DiDeMo-T2V"):
        assert frames[name] == 48
    assert frames["CaReBench-Temporal-V2T"] == 32 and frames["WebVid-CoVR"] == 16
    assert frames["Flickr30K-T2I"] is None and frames["MMEB-ImageNet-1K"] is None
    # docs/reference.md section 10.
    assert REGISTRY["WebVid-CoVR"].paper == {"UNITE-Instruct 2B": 69.1, "UNITE-Instruct 7B": 72.5}
    assert REGISTRY["CaReBench-Temporal-V2T"].paper == {"UNITE 2B": 50.0, "UNITE 7B": 55.4}
    assert REGISTRY["DOCCI-I2T"].paper == {"UNITE 2B": 72.3, "UNITE 7B": 85.8}
    assert REGISTRY["Flickr30K-T2I"].paper == {}
    assert MMEB_AGGREGATES["Overall"]["UNITE-Instruct 7B"] == 70.3
    assert MMEB_AGGREGATES["OOD"] == {"UNITE-Instruct 2B": 60.1, "UNITE-Instruct 7B": 66.3}


def test_registered_tasks_need_a_data_root(monkeypatch, tmp_path):
    monkeypatch.delenv("UNITE_EVAL_DATA", raising=False)
    with pytest.raises(ConfigError, match="--data-root"):
        resolve_tasks(["MSVD-T2V"])
    monkeypatch.setenv("UNITE_EVAL_DATA", str(tmp_path))
    with pytest.raises(ConfigError, match=r"data folder not found; tried .*msvd.*unite eval layout MSVD-T2V"):
        resolve_tasks(["msvd-t2v"])
    (tmp_path / "msvd").mkdir()
    [(spec, folder)] = resolve_tasks(["msvd-t2v"])
    assert spec.name == "MSVD-T2V" and folder == tmp_path / "msvd"
    (tmp_path / "MMEB-eval").mkdir()
    assert len(resolve_tasks(["mmeb-grounding"])) == 4
    with pytest.raises(ConfigError, match="given twice"):
        resolve_tasks(["MSVD-T2V", "msvd-t2v"])


def test_spec_validation():
    with pytest.raises(ConfigError, match="task name"):
        TaskSpec(name="a/b")
    with pytest.raises(ConfigError, match="layout must be one of"):
        TaskSpec(name="a", layout="mmeb-v2")
    assert TaskSpec(name="a", main_metric="recall@50").metrics[0] == "recall@50"


# ------------------------------------------------------------------------------------------ layouts, by rule

STAND_IN_COUNT = 3


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    for spec in REGISTRY.values():
        build_stand_in(spec, root, count=STAND_IN_COUNT)
    return root


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_registered_task_loads_its_stand_in(stand_ins, name):
    spec = REGISTRY[name]
    data = load_task_data(spec, stand_ins / spec.data_dirs[0])
    data.check_media()
    n = STAND_IN_COUNT
    # Karpathy: the first 5 sentences of each image (the COCO stand-in's first image has 7).
    captions_per_item = {Layout.KARPATHY: 5, Layout.MSVD: 2}.get(spec.layout, 1)
    if spec.layout is Layout.MMEB:
        assert len(data.queries) == n
        for entry in data.queries:
            pool = data.pools[entry.id]
            assert len(pool) == 3 and data.qrels[entry.id] == {pool[0]: 1}  # the positive is candidate 0
        assert data.queries[0].item.images and "<|IMAGE|>" in data.queries[0].item.text
    elif spec.direction is Direction.COMPOSED:
        assert len(data.queries) == len(data.corpus) == n
        assert data.queries[0].item.text == "make it red" and len(data.queries[0].item.videos) == 1
        assert data.qrels["q0"] == {data.corpus[0].id: 1}
    elif spec.direction.text_queries:
        assert len(data.queries) == n * captions_per_item and len(data.corpus) == n
        assert all(len(judged) == 1 for judged in data.qrels.values())
    else:
        assert len(data.queries) == n and len(data.corpus) == n * captions_per_item
        assert all(len(judged) == captions_per_item for judged in data.qrels.values())
    media = [e.item for e in (data.corpus if spec.direction.text_queries else data.queries)]
    if spec.layout not in (Layout.MMEB, Layout.GENERIC) and spec.direction is not Direction.COMPOSED:
        kind = "videos" if spec.direction in (Direction.TEXT_TO_VIDEO, Direction.VIDEO_TO_TEXT) else "images"
        assert all(len(getattr(item, kind)) == 1 for item in media)


def test_pair_layout_rules(stand_ins):
    # Karpathy and DOCCI: only the test split; one train record in each stand-in is skipped.
    flickr = load_task_data(REGISTRY["Flickr30K-I2T"], stand_ins / "flickr30k")
    assert flickr.qrels["image:1000000000"] == {f"text:1000000000#{n}": 1 for n in range(5)}
    assert [e.item.text for e in flickr.corpus[:2]] == [caption(0, 0), caption(0, 1)]
    # DiDeMo: the descriptions of a video become one paragraph.
    didemo = load_task_data(REGISTRY["DiDeMo-T2V"], stand_ins / "didemo")
    assert didemo.queries[0].item.text == f"{caption(0, 0)} {caption(0, 1)}"
    # CaReBench: the spatial task reads the spatial caption.
    spatial = load_task_data(REGISTRY["CaReBench-Spatial-T2V"], stand_ins / "CaReBench")
    assert spatial.queries[0].item.text == caption(0, 1)
    # MSVD: the token lists of the pickle become captions.
    msvd = load_task_data(REGISTRY["MSVD-T2V"], stand_ins / "msvd")
    assert msvd.queries[1].item.text == caption(0, 1)


def test_msvd_pickle_cannot_run_code(stand_ins, tmp_path):
    folder = tmp_path / "msvd"
    folder.mkdir()
    (folder / "test_list.txt").write_text("a\n")
    (folder / "YouTubeClips").mkdir()
    (folder / "raw-captions.pkl").write_bytes(pickle.dumps({"a": [[os.getcwd.__name__]], "f": os.getcwd}))
    with pytest.raises(InputError, match="refusing to load"):
        load_task_data(REGISTRY["MSVD-T2V"], folder)


def test_mmeb_parquet_and_limit(stand_ins, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    spec = REGISTRY["MMEB-CIRR"]
    flat = build_image_stand_in(spec, tmp_path / "flat", count=STAND_IN_COUNT, form="flattened")
    records = [json.loads(line) for line in (flat / "CIRR.jsonl").read_text().splitlines()]
    folder = tmp_path / "MMEB-eval"
    (folder / "CIRR").mkdir(parents=True)
    (folder / "eval_images").symlink_to(flat / "eval_images")
    pq.write_table(pa.Table.from_pylist(records), folder / "CIRR" / "test-00000-of-00001.parquet")
    data = load_task_data(spec, folder)
    assert len(data.queries) == STAND_IN_COUNT and data.corpus[0].item.images
    small = data.limited(1)
    assert len(small.queries) == 1 and set(small.pools) == {"q0"}
    assert {e.id for e in small.corpus} == set(small.pools["q0"])


def test_missing_media_is_reported_before_encoding(stand_ins, tmp_path):
    spec = REGISTRY["Urban1K-T2I"]
    folder = tmp_path / "Urban1k"
    (folder / "caption").mkdir(parents=True)
    (folder / "image").mkdir()
    (folder / "caption" / "7.txt").write_text("a caption")
    data = load_task_data(spec, folder)
    with pytest.raises(UniteError, match=r"1 media file\(s\) not found, e\.g\. .*image/7"):
        data.check_media()


# ---------------------------------------------------------------------------------- hostile annotation files

_TEXT_SUFFIXES = (".json", ".jsonl", ".jsonlines", ".csv", ".tsv", ".txt")
_ONE_SPEC_PER_LAYOUT = {spec.layout: name for name, spec in reversed(list(REGISTRY.items()))}


def _summary(data, folder: Path) -> str:
    text = repr((data.queries, data.corpus, data.qrels, data.pools)).replace(str(folder), "<root>")
    # Media read from a zip (CaReBench's videos.zip) live in its extraction folder, named after the archive's path.
    return re.sub(re.escape(str(extract_dir())) + r"/[^/']+-[0-9a-f]{16}", "<extracted>", text)


@pytest.mark.parametrize("name", sorted(_ONE_SPEC_PER_LAYOUT.values()))
def test_every_layout_reads_files_with_a_bom_and_crlf(stand_ins, tmp_path, name):
    import shutil

    spec = REGISTRY[name]
    original = stand_ins / spec.data_dirs[0]
    copy = tmp_path / spec.data_dirs[0]
    shutil.copytree(original, copy, symlinks=True)
    for path in copy.rglob("*"):
        if path.is_file() and path.suffix in _TEXT_SUFFIXES:
            path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
    assert _summary(load_task_data(spec, copy), copy) == _summary(load_task_data(spec, original), original)


def test_generic_files_with_a_bom_and_pools_load_alike(generic_task):
    folder = generic_task.parent
    before = _summary(load_task_data(*load_task_spec(generic_task)), folder)
    for name in ("queries.jsonl", "corpus.jsonl", "qrels.tsv"):
        path = folder / name
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert _summary(load_task_data(*load_task_spec(generic_task)), folder) == before
    pools = ['{"query_id": "q0", "candidates": ["d0", "d1"]}', "", '{"query_id": "q1", "candidates": ["d1"]}']
    (folder / "pools.jsonl").write_bytes(b"\xef\xbb\xbf" + "\r\n".join(pools).encode() + b"\r\n")
    files = "files: {queries: queries.jsonl, corpus: corpus.jsonl, qrels: qrels.tsv, pools: pools.jsonl}\n"
    generic_task.write_text(generic_task.read_text() + files)
    data = load_task_data(*load_task_spec(generic_task))
    assert data.pools == {"q0": ["d0", "d1"], "q1": ["d1"]}
    (folder / "pools.jsonl").write_bytes(b'{"query_id": "q0", "candidates": ["d0"]}\n' + b"[" * 20000 + b"\n")
    with pytest.raises(InputError, match=r"pools\.jsonl:2: invalid JSON"):
        load_task_data(*load_task_spec(generic_task))


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("corpus.jsonl", b'{"id": "d0", "text": "a"}\n{"id": "d1", "text": "\xfe"}\n', r"corpus\.jsonl:2: not UTF-8"),
        ("queries.jsonl", b'{"id": "q0", "text": "a"}\n' + b"[" * 20000 + b"\n", r"queries\.jsonl:2: invalid JSON"),
        ("queries.jsonl", b'{"id": "q0", "text": "a\\ud800"}\n', r"queries\.jsonl:1: 'text' holds a lone surrogate"),
        ("qrels.tsv", b"q0\td0\t1\nq1\td1\t\xff1\n", r"qrels\.tsv:2: not UTF-8: byte 0xff at column 7"),
    ],
)
def test_generic_hostile_lines_are_named_by_file_and_line(generic_task, name, content, message):
    (generic_task.parent / name).write_bytes(content)
    with pytest.raises(InputError, match=message):
        load_task_data(*load_task_spec(generic_task))


def _copy_stand_in(stand_ins: Path, tmp_path: Path, name: str) -> tuple[TaskSpec, Path]:
    import shutil

    spec = REGISTRY[name]
    shutil.copytree(stand_ins / spec.data_dirs[0], tmp_path / spec.data_dirs[0], symlinks=True)
    return spec, tmp_path / spec.data_dirs[0]


def test_mmeb_and_docci_lines_are_read_by_bytes_and_named(stand_ins, tmp_path):
    spec = REGISTRY["MMEB-CIRR"]
    folder = build_image_stand_in(spec, tmp_path / "flat", count=STAND_IN_COUNT, form="flattened")  # JSON lines
    path = folder / "CIRR.jsonl"
    records = [json.loads(line) for line in path.read_text().split("\n") if line]
    records[0]["qry_text"] += " \u2028 \x85"  # raw line separators inside a string: still one line
    lines = [json.dumps(record, ensure_ascii=False) for record in records]
    path.write_text("\n".join([lines[0], "[" * 20000, *lines[1:]]) + "\n")
    with pytest.raises(InputError, match=r"CIRR\.jsonl:2: invalid JSON"):
        load_task_data(spec, folder)
    broken = dict(records[1], tgt_text=5)
    path.write_text("\n".join([lines[0], json.dumps(broken)]) + "\n")
    with pytest.raises(InputError, match=r"CIRR\.jsonl:2: .*tgt_text"):
        load_task_data(spec, folder)
    broken = dict(records[1], tgt_img_path=[3, 4, 5])
    path.write_text("\n".join([lines[0], json.dumps(broken)]) + "\n")
    with pytest.raises(InputError, match=r"CIRR\.jsonl:2: "):
        load_task_data(spec, folder)
    spec, folder = _copy_stand_in(stand_ins, tmp_path, "DOCCI-T2I")
    path = folder / "docci_descriptions.jsonlines"
    lines = path.read_bytes().split(b"\n")
    record = json.loads(lines[1])
    path.write_bytes(b"\n".join([lines[0], json.dumps(dict(record, description=7)).encode(), *lines[2:]]))
    with pytest.raises(InputError, match=r"jsonlines:2: .*description"):
        load_task_data(spec, folder)
    path.write_bytes(b"\n".join([lines[0], b'{"split": "test", "image_file": "\xff"}', *lines[2:]]))
    with pytest.raises(InputError, match=r"jsonlines:2: not UTF-8: byte 0xff at column 34"):
        load_task_data(spec, folder)


@pytest.mark.parametrize(
    ("name", "relative"),
    [
        ("MSRVTT-1K-A-T2V", "msrvtt_data/MSRVTT_JSFUSION_test.csv"),
        ("WebVid-CoVR", "annotation/webvid-covr/webvid8m-covr_test.csv"),
        ("Urban1K-T2I", "Urban1k/caption/0.txt"),  # Urban1k.zip unzipped in the data folder
        ("MSVD-T2V", "msvd_data/test_list.txt"),
        ("Flickr30K-T2I", "dataset_flickr30k.json"),
    ],
)
def test_undecodable_annotation_files_are_input_errors_naming_the_file(stand_ins, tmp_path, name, relative):
    spec, folder = _copy_stand_in(stand_ins, tmp_path, name)
    path = folder / relative
    path.write_bytes(path.read_bytes() + b"\xff\xfe broken\n")
    with pytest.raises(InputError, match=rf"{path.name}.*not UTF-8: byte 0xff"):
        load_task_data(spec, folder)
