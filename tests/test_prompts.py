"""The prompt strings are pinned exactly (docs/reference.md section 3)."""

from __future__ import annotations

import pytest

from unite.data.prompts import build_prompt
from unite.errors import InputError
from unite.types import Item, Modality

HEAD = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
TAIL = "<|im_end|>\n<|im_start|>assistant\n<|endoftext|>"
IMG = "<|vision_start|><|image_pad|><|vision_end|>"
VID = "<|vision_start|><|video_pad|><|vision_end|>"


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        (Item(text="  A cat on a mat. "), "A cat on a mat.\nSummary above sentence in one word:"),
        (Item(images=("x.png",)), f"{IMG}\nSummary above image in one word:"),
        (Item(videos=("x.mp4",)), f"{VID}\nSummary above video in one word:"),
        (
            Item(text="What is the name of this place?", images=("x.png",)),
            f"{IMG}What is the name of this place?\nSummary above sentence and image in one word:",
        ),
        (
            Item(text="<|IMAGE|>\nWhat is the name of this place?", images=("x.png",)),
            f"{IMG}\nWhat is the name of this place?\nSummary above sentence and image in one word:",
        ),
        (Item(text="a storm", videos=("x.mp4",)), f"{VID}a storm\nSummary above sentence and video in one word:"),
        (
            Item(text="<|IMAGE|> then <|IMAGE|>", images=("a.png", "b.png")),
            f"{IMG} then {IMG}\nSummary above sentence and image in one word:",
        ),
        (Item(images=("a.png", "b.png")), f"{IMG}{IMG}\nSummary above image in one word:"),
        (Item(text="<|IMAGE|>", images=("a.png",)), f"{IMG}\nSummary above image in one word:"),
        (
            Item(text="<|VIDEO|> and <|IMAGE|>", images=("a.png",), videos=("v.mp4",)),
            f"{VID} and {IMG}\nSummary above sentence and image and video in one word:",
        ),
        (
            Item(
                text="What is shown?",
                images=("a.png",),
                instruction="Represent the given image with the following question:",
            ),
            f"{IMG}Represent the given image with the following question: What is shown?"
            "\nSummary above sentence and image in one word:",
        ),
    ],
)
def test_prompt_is_pinned(item, expected):
    assert build_prompt(item) == HEAD + expected + TAIL


def test_placeholder_count_must_match_media():
    with pytest.raises(InputError, match="2 <\\|IMAGE\\|> placeholder"):
        Item(text="<|IMAGE|> <|IMAGE|>", images=("a.png",))
    with pytest.raises(InputError, match="<\\|VIDEO\\|> placeholder"):
        Item(text="<|VIDEO|>")


def test_empty_item_is_refused():
    with pytest.raises(InputError, match="empty item"):
        Item(text="   ")


def test_modality_bits_and_words():
    assert Modality.parse("text,image") == Modality.TEXT | Modality.IMAGE == 3
    assert Modality.parse("video") == 4
    assert (Modality.TEXT | Modality.VIDEO).prompt_words == "sentence and video"
    with pytest.raises(InputError):
        Modality.parse("audio")


def test_dict_items_parse_paths_and_frames(tmp_path):
    item = Item.from_dict({"text": "x", "image": "a.png", "video": ["f1.jpg", "f2.jpg"]}, base_dir=tmp_path)
    assert item.images == (str(tmp_path / "a.png"),)
    assert item.videos == ([str(tmp_path / "f1.jpg"), str(tmp_path / "f2.jpg")],)
    two_files = Item.from_dict({"video": ["a.mp4", "b.mp4"], "text": "<|VIDEO|><|VIDEO|>"})
    assert two_files.videos == ("a.mp4", "b.mp4")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"txt": "typo"}, "unknown key"),
        ({"text": 3}, "must be a string"),
        ({"image": 5}, "must be a path"),
        ({}, "empty item"),
        (["not", "a", "dict"], "JSON object"),
    ],
)
def test_bad_dicts_are_refused(data, message):
    with pytest.raises(InputError, match=message):
        Item.from_dict(data)
