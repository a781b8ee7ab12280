"""Training data: released formats, sources with weights or shares, samplers, the bad-record policy, config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from unite.data.collator import ItemProcessor
from unite.errors import ConfigError, InputError, MediaError
from unite.settings import EncodingSettings
from unite.training.arguments import load_config
from unite.training.data import PairCollator, PairDataset, PlannedSampler, TrainSource, parse_record
from unite.types import Modality

RECIPES = Path(__file__).resolve().parent.parent / "recipes"


@pytest.fixture(scope="module")
def processor(encoder):
    return ItemProcessor(encoder.tokenizer, EncodingSettings(image_min_pixels=3136, image_max_pixels=50176))


def _jsonl(path: Path, records: list) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return str(path)


def test_unite_record_with_negatives_and_target_modality(tmp_path):
    record = parse_record(
        {
            "query": {"text": "<|IMAGE|> what?", "image": "q.png"},
            "candidate": {"text": "a beach"},
            "negative": [{"text": "a forest"}, {"image": "n.png"}],
            "target_modal": "text",
        },
        tmp_path,
        "f.jsonl:1",
        "f",
    )
    assert record.query.images == (str(tmp_path / "q.png"),)
    assert len(record.negatives) == 2 and record.negatives[1].images == (str(tmp_path / "n.png"),)
    assert record.target_modality == Modality.TEXT
    fused = parse_record({"query": {"text": "x"}, "candidate": {"text": "y", "image": "c.png"}}, tmp_path, "w", "f")
    assert fused.target_modality == Modality.TEXT | Modality.IMAGE  # default: the candidate's own modality


def test_mmeb_record_is_converted(tmp_path):
    record = parse_record(
        {
            "qry": "<|image_1|> Represent the given image with the following question: what is it?",
            "qry_image_path": "images/q.jpg",
            "pos_text": "a cat",
            "pos_image_path": "",
            "neg_text": "",
            "neg_image_path": "images/n.jpg",
        },
        tmp_path,
        "mmeb.jsonl:3",
        "mmeb",
    )
    assert record.query.text.startswith("<|IMAGE|> Represent")
    assert record.query.images == (str(tmp_path / "images/q.jpg"),)
    assert record.candidate.text == "a cat" and not record.candidate.images
    assert record.negatives[0].images == (str(tmp_path / "images/n.jpg"),)
    assert record.target_modality == Modality.TEXT


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"query": {"text": "a"}}, "missing 'candidate'"),
        ({"query": {"text": "a"}, "candidate": "b"}, "must be an object"),
        ({"query": {"text": 3}, "candidate": {"text": "b"}}, "must be a string"),
        ({"query": {"text": "a"}, "candidate": {"text": "b"}, "target_modal": "audio"}, "unknown modality"),
        ({"query": {"text": "a"}, "candidate": {"text": "b"}, "weight": 2}, "unknown key"),
        ({"qry": "<|image_1|> hi", "pos_text": "x"}, "placeholder but no image"),
    ],
)
def test_bad_records_name_where(tmp_path, record, message):
    with pytest.raises(InputError, match=f"f.jsonl:7.*{message}"):
        parse_record(record, tmp_path, "f.jsonl:7", "f")


def test_bad_record_policy_raise_and_skip(tmp_path, media_dir, processor):
    (tmp_path / "a.png").write_bytes((media_dir / "a.png").read_bytes())
    path = _jsonl(
        tmp_path / "train.jsonl",
        [
            {"query": {"text": "one"}, "candidate": {"image": "a.png"}},
            "{broken json",
            {"query": {"text": 5}, "candidate": {"text": "x"}},
            {"query": {"text": "two"}, "candidate": {"image": "missing.png"}},
            {"query": {"text": "three"}, "candidate": {"text": "fine"}},
        ],
    )
    with pytest.raises(InputError, match="train.jsonl:2: invalid JSON"):
        PairDataset([TrainSource(path)], processor, tmp_path, on_bad_record="raise")
    dataset = PairDataset([TrainSource(path)], processor, tmp_path, on_bad_record="skip")
    assert len(dataset) == 3 and len(dataset.bad) == 2
    examples = [dataset[i] for i in range(3)]
    assert examples[1] is None and len(dataset.bad) == 3  # missing media: skipped, counted, never replaced
    assert "missing.png" in dataset.bad.entries[-1]["error"]
    batch = PairCollator()(examples)
    assert batch["skipped"] == 1 and len(batch["query"]) == 2
    dataset.bad.write(tmp_path / "skipped.jsonl")
    assert len((tmp_path / "skipped.jsonl").read_text().splitlines()) == 3
    strict = PairDataset([TrainSource(path)], processor, tmp_path, on_bad_record="skip")
    strict.on_bad_record = "raise"
    with pytest.raises(MediaError, match="missing.png"):
        strict[1]


def test_an_unexpected_error_in_one_record_is_that_records(tmp_path, processor, monkeypatch):
    """A TypeError raised while preparing one record (a tokenizer refusing a value, say) skips or names that
    record; it never stops training with a raw exception."""
    path = _jsonl(
        tmp_path / "train.jsonl",
        [
            {"query": {"text": "poison"}, "candidate": {"text": "x"}},
            {"query": {"text": "fine"}, "candidate": {"text": "y"}},
        ],
    )
    prepare = processor.prepare

    def fussy(item):
        if item.text == "poison":
            raise TypeError("TextEncodeInput must be Union[TextInputSequence, ...]")
        return prepare(item)

    monkeypatch.setattr(processor, "prepare", fussy)
    dataset = PairDataset([TrainSource(path)], processor, tmp_path, on_bad_record="skip")
    assert dataset[0] is None and dataset[1] is not None
    assert "TypeError" in dataset.bad.entries[-1]["error"]
    dataset.on_bad_record = "raise"
    with pytest.raises(InputError, match="internal error while preparing the record: TypeError"):
        dataset[0]


def _sources(tmp_path, sizes, modalities=None):
    paths = []
    for number, size in enumerate(sizes):
        modality = (modalities or ["text"] * len(sizes))[number]
        paths.append(
            _jsonl(
                tmp_path / f"s{number}.jsonl",
                [
                    {"query": {"text": f"q{number}-{i}"}, "candidate": {"text": f"c{i}"}, "target_modal": modality}
                    for i in range(size)
                ],
            )
        )
    return paths


def test_weights_and_shares_decide_the_epoch(tmp_path, processor):
    a, b = _sources(tmp_path, [10, 30])
    weighted = PairDataset([TrainSource(a, weight=2.0), TrainSource(b, weight=0.5)], processor)
    plan = weighted.plan(0, seed=1)
    assert sum(i < 10 for i in plan) == 20 and sum(i >= 10 for i in plan) == 15
    assert sorted(i for i in plan if i < 10) == sorted(list(range(10)) * 2)  # each record twice
    shared = PairDataset([TrainSource(a, share=0.5), TrainSource(b, share=0.5)], processor)
    plan = shared.plan(0, seed=1)
    assert sum(i < 10 for i in plan) == 20 and sum(i >= 10 for i in plan) == 20
    assert weighted.plan(3, seed=1) == weighted.plan(3, seed=1) != weighted.plan(4, seed=1)
    with pytest.raises(ConfigError, match="weight or a share"):
        TrainSource.parse({"path": a, "weight": 1, "share": 0.5})
    with pytest.raises(ConfigError, match="a share, or none"):
        PairDataset([TrainSource(a, share=0.5), TrainSource(b)], processor).plan(0, 1)


@pytest.mark.parametrize("group_by", ["source", "modality"])
def test_homogeneous_batches(tmp_path, processor, group_by):
    paths = _sources(tmp_path, [9, 13, 7], ["text", "image", "image" if group_by == "source" else "text"])
    dataset = PairDataset([TrainSource(p) for p in paths], processor)
    order = PlannedSampler(dataset, seed=0, batch_size=4, group_by=group_by).order()
    key = (
        (lambda i: dataset.records[i].source)
        if group_by == "source"
        else (lambda i: dataset.records[i].target_modality)
    )
    batches = [order[i : i + 4] for i in range(0, len(order), 4)]
    assert all(len(batch) == 4 and len({key(i) for i in batch}) == 1 for batch in batches)
    share = dataset.modality_share(order)
    assert pytest.approx(sum(share.values())) == 1.0


def test_recipes_parse_and_overrides_apply():
    for recipe in RECIPES.glob("*.yaml"):
        config = load_config(recipe)
        for name in (
            "model_name_or_path",
            "train_data",
            "media_root",
            "output_dir",
            "loss",
            "modality_mask",
            "temperature",
            "per_device_train_batch_size",
            "gradcache_chunk_size",
            "learning_rate",
            "num_train_epochs",
            "max_steps",
            "lora",
            "lora_r",
            "lora_alpha",
            "seed",
            "video_max_frames",
            "image_max_pixels",
        ):
            assert hasattr(config, name)
    stage1 = load_config(RECIPES / "stage1_adaptation.yaml")
    assert (stage1.loss, stage1.temperature, stage1.lora_r, stage1.lora_alpha, stage1.learning_rate) == (
        "symmetric",
        0.03,
        8,
        16,
        1e-4,
    )
    assert stage1.per_device_train_batch_size * 64 == 4096
    stage2 = load_config(RECIPES / "stage2_instruction.yaml", {"lora_alpha": "32", "modality_mask": "false"})
    assert stage2.loss == "query_to_candidate" and stage2.learning_rate == 2e-5 and stage2.lora_alpha == 32
    assert stage2.modality_mask is False
    assert load_config(RECIPES / "stage1_adaptation_7b.yaml").per_device_train_batch_size * 64 == 1024


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"learning_rat": 1}, "unknown setting"),
        ({"lora": "maybe"}, "true or false"),
        ({"lora_r": "eight"}, "integer"),
        ({"loss": "triplet"}, "symmetric or query_to_candidate"),
        ({"deepspeed": "z.json", "fsdp": "full_shard"}, "not both"),
        ({"paper_mamcl": True, "modality_mask": False}, "modality_mask"),
    ],
)
def test_bad_settings_raise(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(RECIPES / "tiny_cpu.yaml", overrides)


def test_bad_yaml_names_the_line(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("lora: true\nlora_r: [8\n")
    with pytest.raises(ConfigError, match="bad.yaml:"):
        load_config(recipe)


# ------------------------------------------------------------------------------------ hostile training files

_PAIR = b'{"query": {"text": "q"}, "candidate": {"text": "c"}}'


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (b'{"query": {"text": "q\xff"}, "candidate": {"text": "c"}}', "not UTF-8: byte 0xff at column 22"),
        (b"[" * 20000, "invalid JSON"),
        (b'{"query": {"text": "\\ud800"}, "candidate": {"text": "c"}}', "'text' holds a lone surrogate U+D800"),
        (b'{"id": "x\\udfff", "query": {"text": "q"}, "candidate": {"text": "c"}}', "'id' holds a lone surrogate"),
        (b'{"id": [1], "query": {"text": "q"}, "candidate": {"text": "c"}}', "'id' must be a string or an integer"),
    ],
)
def test_a_hostile_training_line_names_its_line_or_is_skipped(tmp_path, processor, bad, message):
    path = tmp_path / "train.jsonl"
    # A raw U+2028 in line 2 must not shift the line numbers that follow.
    path.write_bytes(_PAIR + b"\n" + _PAIR.replace(b'"q"', b'"a\xe2\x80\xa8b"') + b"\n\n" + bad + b"\n" + _PAIR)
    with pytest.raises(InputError, match=f"train.jsonl:4: .*{message}".replace("+", r"\+")):
        PairDataset([TrainSource(str(path))], processor, tmp_path, on_bad_record="raise")
    dataset = PairDataset([TrainSource(str(path))], processor, tmp_path, on_bad_record="skip")
    assert len(dataset) == 3 and [entry["record"] for entry in dataset.bad.entries] == [f"{path}:4"]
    assert dataset.records[1].query.text == "a\u2028b"


@pytest.mark.parametrize("array", [False, True])
def test_training_files_with_a_bom_and_crlf_read_whole(tmp_path, processor, array):
    path = tmp_path / ("train.json" if array else "train.jsonl")
    body = (b"[" + _PAIR + b",\r\n" + _PAIR + b"]") if array else (_PAIR + b"\r\n" + _PAIR + b"\r\n")
    path.write_bytes(b"\xef\xbb\xbf" + body)
    dataset = PairDataset([TrainSource(str(path))], processor, tmp_path, on_bad_record="raise")
    assert [record.query.text for record in dataset.records] == ["q", "q"]


def test_a_broken_json_array_file_names_its_line(tmp_path, processor):
    path = tmp_path / "train.json"
    path.write_bytes(b"[\n" + _PAIR + b",\n" + b'{"query": "\xc3\x28"}]')
    with pytest.raises(ConfigError, match=r"train\.json:3: not UTF-8: byte 0xc3 at column 12"):
        PairDataset([TrainSource(str(path))], processor, tmp_path)
    path.write_bytes(b"[" * 20000)
    with pytest.raises(ConfigError, match=r"train\.json.*invalid JSON"):
        PairDataset([TrainSource(str(path))], processor, tmp_path)
