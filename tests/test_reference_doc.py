"""docs/reference.md stays the repository's contract: cited sections exist, the old external file is cited
nowhere, and the facts the page tabulates equal the code's constants, so neither can drift from the other.

Conventions checked here (docs/reference.md explains them at its top):

- a citation reads "docs/reference.md section N" (or "sections N and M", "sections N to M"; in Markdown the path
  may be a link, ``[docs/reference.md](reference.md) section N``);
- a table of the page whose header has a ``code`` column names, in that column, a ``unite.`` object (attributes
  and ``["key"]`` subscripts allowed) whose value must equal the row's ``value`` cell;
- the training table's ``recipe key`` column names a key of the 2B recipes;
- ``pycon`` blocks are doctests.
"""

from __future__ import annotations

import ast
import doctest
import importlib
import io
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "reference.md"
THIS_FILE = Path(__file__).resolve()

#: Folders never searched: version control, environments, caches and build outputs (what .gitignore lists).
SKIPPED_DIRS = {"__pycache__", "build", "dist", "demo_output", "runs", "node_modules"}
#: Larger files are data, not text that could cite anything.
MAX_TEXT_BYTES = 2 * 2**20

SECTION_HEADING = re.compile(r"^## (\d+)\. (.+)$", re.MULTILINE)
NUMBER_LIST = r"(\d+(?:\s*(?:,|and|to|-)\s*\d+)*)"
CITATION = re.compile(r"docs/reference\.md(?:\]\([^)\s]*\))?`?\s+sections?\s+" + NUMBER_LIST)
SELF_CITATION = re.compile(r"\bsections?\s+" + NUMBER_LIST)
LEGACY_CITATION = re.compile(r"REFERENCE\.md|\bREFERENCE\b")
CODE_NAME = re.compile(r"^`(unite(?:\.\w+)+)((?:\[[^\]]+\])*)`$")


# ------------------------------------------------------------------------------------------------ helpers


def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


def section_numbers(text: str) -> list[int]:
    return [int(number) for number, _ in SECTION_HEADING.findall(text)]


def cited_numbers(numbers: str) -> list[int]:
    """``"3 to 5"`` -> [3, 4, 5]; ``"6 and 7"`` -> [6, 7]; ``"2, 4"`` -> [2, 4]."""
    values = [int(n) for n in re.findall(r"\d+", numbers)]
    joiners = re.findall(r"\d+\s*(,|and|to|-)\s*(?=\d)", numbers)
    out = values[:1]
    for joiner, value in zip(joiners, values[1:]):
        out.extend(range(out[-1] + 1, value + 1) if joiner in ("to", "-") else [value])
    return out


def bad_citations(text: str, sections: set[int], pattern: re.Pattern = CITATION) -> list[str]:
    """Every citation in ``text`` naming a section that ``sections`` lacks, as ``"line L: ..."``."""
    bad = []
    for match in pattern.finditer(text):
        missing = [n for n in cited_numbers(match.group(1)) if n not in sections]
        if missing:
            line = text.count("\n", 0, match.start()) + 1
            bad.append(f"line {line}: {match.group(0)!r} (no section {', '.join(map(str, missing))})")
    return bad


def repository_texts() -> dict[Path, str]:
    """Every text file of the working tree, outside hidden folders (``.ci`` excepted) and build outputs."""
    texts = {}
    for folder, subfolders, files in os.walk(ROOT):
        subfolders[:] = sorted(
            name
            for name in subfolders
            if not ((name.startswith(".") and name != ".ci") or name in SKIPPED_DIRS or name.endswith(".egg-info"))
        )
        for name in sorted(files):
            path = Path(folder) / name
            if path.is_symlink() or not path.is_file() or path.stat().st_size > MAX_TEXT_BYTES:
                continue
            data = path.read_bytes()
            if b"\0" in data[:8192]:
                continue
            try:
                texts[path] = data.decode("utf-8")
            except UnicodeDecodeError:
                continue
    return texts


def markdown_tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """(header cells, body rows) of every pipe table, with ``\\|`` unescaped inside cells."""
    tables, block = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            block.append(line)
            continue
        if len(block) >= 2 and set(block[1].replace("|", "").strip()) <= set("-: "):
            rows = [_cells(row) for row in block]
            tables.append((rows[0], rows[2:]))
        block = []
    return tables


def _cells(row: str) -> list[str]:
    return [cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", row.strip())[1:-1]]


def table_with(text: str, *headers: str) -> tuple[list[str], list[list[str]]]:
    """The one table whose header holds all ``headers``."""
    found = [table for table in markdown_tables(text) if all(h in table[0] for h in headers)]
    assert len(found) == 1, f"expected one table with columns {headers}, found {len(found)}"
    return found[0]


def parse_value(cell: str) -> Any:
    """A table cell as a value: the part after the last ``=``; numbers, tuples, products, booleans, else text.

    ``"4 × 28 × 28 = 3136"`` -> 3136, ``"0.5, 0.25"`` -> (0.5, 0.25), ``"360 × 420"`` -> 151200,
    ``"`false`"`` -> False, ``"`cosine`"`` -> "cosine".
    """
    text = cell.split("=")[-1].strip().strip("`").replace("×", "*").replace("·", "*").strip()
    if text in ("true", "false"):
        return text == "true"
    try:
        return _arithmetic(ast.parse(text, mode="eval").body)
    except (SyntaxError, ValueError):
        return text


def _arithmetic(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return node.value
    if isinstance(node, ast.Tuple):
        return tuple(_arithmetic(element) for element in node.elts)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_arithmetic(node.operand)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mult, ast.Div)):
        left, right = _arithmetic(node.left), _arithmetic(node.right)
        return left * right if isinstance(node.op, ast.Mult) else left / right
    raise ValueError("not arithmetic")


def resolve_code_name(cell: str) -> Any:
    """The object a ``code`` cell names: ``unite.module.NAME``, attributes, then ``["key"]`` subscripts."""
    match = CODE_NAME.match(cell)
    assert match, f"code cell {cell!r} does not name a unite object"
    parts, subscripts = match.group(1).split("."), re.findall(r"\[([^\]]+)\]", match.group(2))
    for split in range(len(parts), 0, -1):
        try:
            value: Any = importlib.import_module(".".join(parts[:split]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[split:]:
            value = getattr(value, attribute)
        for key in subscripts:
            value = value[ast.literal_eval(key)]
        return value
    raise AssertionError(f"no module in {cell!r}")


def same(documented: Any, actual: Any) -> bool:
    """Equal values; sequences compare as tuples, and a boolean only equals a boolean."""
    sequences = (list, tuple)
    if isinstance(documented, sequences) or isinstance(actual, sequences):
        both = isinstance(documented, sequences) and isinstance(actual, sequences)
        return both and tuple(documented) == tuple(actual)
    if isinstance(documented, bool) or isinstance(actual, bool):
        return documented is actual
    return documented == actual


def code_table_mismatches(text: str) -> tuple[list[str], set[str]]:
    """(mismatches, names checked) over every table with ``value`` and ``code`` columns."""
    mismatches, checked = [], set()
    for header, rows in markdown_tables(text):
        if "code" not in header or "value" not in header:
            continue
        value_at, code_at = header.index("value"), header.index("code")
        for row in rows:
            if not row[code_at]:
                continue
            documented, actual = parse_value(row[value_at]), resolve_code_name(row[code_at])
            checked.add(row[code_at].strip("`"))
            if not same(documented, actual):
                mismatches.append(f"{row[code_at]}: the page says {documented!r}, the code holds {actual!r}")
    return mismatches, checked


# ------------------------------------------------------------------------------------------ the page itself


def test_sections_are_numbered_one_to_n():
    numbers = section_numbers(doc_text())
    assert numbers == list(range(1, len(numbers) + 1)), numbers
    assert len(numbers) >= 10


def test_the_pages_own_section_references_and_anchors_exist():
    text = doc_text()
    assert bad_citations(text, set(section_numbers(text)), SELF_CITATION) == []
    slugs = {_slug(title) for title in re.findall(r"^#+ (.+)$", text, re.MULTILINE)}
    anchors = re.findall(r"\]\(#([^)]+)\)", text)
    assert anchors, "the page lists its sections as links"
    assert [a for a in anchors if a not in slugs] == []


def _slug(title: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def test_the_pages_examples_run():
    blocks = re.findall(r"```pycon\n(.*?)```", doc_text(), re.DOTALL)
    assert len(blocks) >= 3
    parser = doctest.DocTestParser()
    for index, block in enumerate(blocks):
        test = parser.get_doctest(block, {}, f"docs/reference.md pycon block {index + 1}", str(DOC), 0)
        output = io.StringIO()
        result = doctest.DocTestRunner(verbose=False).run(test, out=output.write)
        assert result.failed == 0, output.getvalue()


# ------------------------------------------------------------------------------------- citations elsewhere


def test_citation_parsing_reads_lists_and_ranges():
    assert cited_numbers("3 to 5") == [3, 4, 5]
    assert cited_numbers("6 and 7") == [6, 7]
    text = (
        "see docs/reference.md section 2, [docs/reference.md](reference.md) sections 4 to 6 and "
        "docs/reference.md\nsection 99"
    )
    assert bad_citations(text, {1, 2, 3, 4, 5, 6}) == ["line 1: 'docs/reference.md\\nsection 99' (no section 99)"]
    assert bad_citations(text, {2, 4, 6}) != []  # 5 is inside the range


def test_every_citation_names_an_existing_section():
    sections = set(section_numbers(doc_text()))
    found, bad = 0, []
    for path, text in repository_texts().items():
        found += len(CITATION.findall(text))
        bad += [f"{path.relative_to(ROOT)} {problem}" for problem in bad_citations(text, sections)]
    assert bad == []
    assert found >= 20, "the code, tests and docs cite the page; the citation pattern must still find them"


def test_the_old_external_file_is_cited_nowhere():
    legacy = []
    for path, text in repository_texts().items():
        if path == THIS_FILE:
            continue
        allowed_until = text.index("\n## 1. ") if path == DOC else 0
        for match in LEGACY_CITATION.finditer(text):
            if match.start() >= allowed_until:
                line = text.count("\n", 0, match.start()) + 1
                legacy.append(f"{path.relative_to(ROOT)}:{line}: {match.group(0)}")
    assert legacy == [], "cite docs/reference.md section N instead"
    assert LEGACY_CITATION.search(doc_text()[: doc_text().index("\n## 1. ")]), "the page's note names its origin"


# ------------------------------------------------------------------------------------- facts against code


def test_tabulated_constants_equal_the_code():
    mismatches, checked = code_table_mismatches(doc_text())
    assert mismatches == []
    required = {
        "unite.settings.IMAGE_MEAN",
        "unite.settings.IMAGE_STD",
        "unite.settings.IMAGE_FACTOR",
        "unite.settings.LOADER_IMAGE_MIN_PIXELS",
        "unite.settings.LOADER_IMAGE_MAX_PIXELS",
        "unite.settings.LOADER_VIDEO_MIN_PIXELS",
        "unite.settings.DEFAULT_IMAGE_MIN_PIXELS",
        "unite.settings.DEFAULT_IMAGE_MAX_PIXELS",
        "unite.settings.DEFAULT_VIDEO_FPS",
        "unite.settings.DEFAULT_VIDEO_MIN_FRAMES",
        "unite.settings.DEFAULT_VIDEO_MAX_FRAMES",
        "unite.settings.DEFAULT_VIDEO_MAX_PIXELS",
        "unite.evaluation.registry.MSRVTT_MSVD_DIDEMO_FRAMES",
        "unite.evaluation.registry.CAREBENCH_FRAMES",
        "unite.evaluation.registry.WEBVID_COVR_FRAMES",
    }
    assert required <= checked, f"no longer tabulated: {sorted(required - checked)}"


def test_a_drifted_value_is_caught():
    text = doc_text()
    assert "| 0.48145466, 0.4578275, 0.40821073 |" in text
    drifted = text.replace("| 0.48145466, 0.4578275, 0.40821073 |", "| 0.485, 0.456, 0.406 |")
    mismatches, _ = code_table_mismatches(drifted)
    assert len(mismatches) == 1 and "IMAGE_MEAN" in mismatches[0]
    assert parse_value("4 × 28 × 28 = 3136") == 3136 and parse_value("360 × 420") == 151200
    assert parse_value("`false`") is False and parse_value("16, 24, 24") == (16, 24, 24)


def test_special_token_ids_keep_qwen2_vl_order_and_cover_the_prompt():
    from unite.data.prompts import IMAGE_BLOCK, VIDEO_BLOCK
    from unite.settings import PROMPT_TEMPLATE
    from unite.testing import make_tokenizer

    _, rows = table_with(doc_text(), "token", "id")
    ids = {row[0].strip("`"): int(row[1]) for row in rows}
    used = set(re.findall(r"<\|\w+\|>", PROMPT_TEMPLATE + IMAGE_BLOCK + VIDEO_BLOCK))
    assert used <= set(ids), f"tokens the prompt uses but the page omits: {sorted(used - set(ids))}"
    # Qwen2-VL numbers its special tokens consecutively from <|endoftext|>; the tiny tokenizer declares them in
    # the same order from 0, so each documented id minus the first must be the tiny id.
    tokenizer = make_tokenizer()
    first = ids["<|endoftext|>"]
    assert first == 151643
    assert {token: value - first for token, value in ids.items()} == {
        token: tokenizer.convert_tokens_to_ids(token) for token in ids
    }
    pad = [row[0].strip("`") for row in rows if "pad token" in row[2]]
    assert pad == [tokenizer.pad_token]


def test_prompt_template_and_modality_words_equal_the_code():
    from unite.settings import PROMPT_TEMPLATE, SYSTEM_PROMPT
    from unite.types import Modality

    text = doc_text()
    block = re.search(r"```\n(<\|im_start\|>system.*?)\n```", text, re.DOTALL).group(1)
    assert block.replace("\\n", "\n") == PROMPT_TEMPLATE
    assert f'"{SYSTEM_PROMPT}"' in text
    _, rows = table_with(text, "the item holds", "`{modalities}`")
    assert len(rows) >= 6
    for holds, words in rows:
        modality = Modality(0)
        for name, flag in (("text", Modality.TEXT), ("image", Modality.IMAGE), ("video", Modality.VIDEO)):
            if name in holds:
                modality |= flag
        assert modality.prompt_words == words.strip("`"), holds


def test_weight_layout_mapping_equals_the_loader():
    import torch

    from unite.models.loading import RELEASED_CHECKPOINTS, to_current_layout

    text = doc_text()
    _, rows = table_with(text, 'in current transformers (`CURRENT_LAYOUT`, "transformers-5")')

    def example(cell: str) -> str:
        return cell.split()[0].strip("`").replace("N", "0").replace("*", "weight")

    legacy = {example(row[0]): torch.zeros(1) for row in rows}
    renamed, origin, layout = to_current_layout(legacy)
    assert layout == "transformers-4.47"
    assert {origin[new]: new for new in renamed} == {example(row[0]): example(row[1]) for row in rows}
    _, checkpoints = table_with(text, "Hugging Face id", "embedding size")
    assert tuple(row[0].strip("`") for row in checkpoints) == RELEASED_CHECKPOINTS


def test_training_table_equals_the_2b_recipes():
    header, rows = table_with(doc_text(), "recipe key")
    recipes = [
        yaml.safe_load((ROOT / "recipes" / name).read_text())
        for name in ("stage1_adaptation.yaml", "stage2_instruction.yaml")
    ]
    checked = []
    for row in rows:
        key = row[header.index("recipe key")].strip("`")
        if not key:
            continue
        for stage, recipe in zip((1, 2), recipes):
            documented = parse_value(row[stage])
            assert same(documented, recipe[key]), f"{key}, stage {stage}: page {documented!r}, recipe {recipe[key]!r}"
        checked.append(key)
    assert {"loss", "modality_mask", "temperature", "lora_r", "lora_alpha", "learning_rate"} <= set(checked)


@pytest.mark.parametrize("model", ["UNITE-Instruct 2B", "UNITE-Instruct 7B", "VLM2Vec 7B"])
def test_mmeb_numbers_equal_the_registry(model):
    from unite.evaluation.registry import MMEB_AGGREGATES, REGISTRY

    header, rows = table_with(doc_text(), "model", "Overall", "WebVid-CoVR")
    row = next(row for row in rows if row[0] == model)
    for column, cell in zip(header[1:], row[1:]):
        paper = REGISTRY["WebVid-CoVR"].paper if column == "WebVid-CoVR" else MMEB_AGGREGATES[column]
        assert parse_value(cell) == paper.get(model, "-"), f"{model}, {column}"


def test_fine_grained_numbers_and_class_counts_equal_the_registry():
    from unite.evaluation.registry import MMEB_CLASS_COUNTS, REGISTRY

    _, rows = table_with(doc_text(), "benchmark", "direction", "UNITE 2B", "UNITE 7B")
    assert len(rows) == 12
    for benchmark, direction, small, large in rows:
        paper = REGISTRY[f"{benchmark}-{direction}"].paper
        assert paper == {"UNITE 2B": parse_value(small), "UNITE 7B": parse_value(large)}, benchmark
    _, counts = table_with(doc_text(), "dataset", "candidates")
    assert {name: int(count) for name, count in counts} == MMEB_CLASS_COUNTS
