"""The two per-row stages of bulk encoding, as plain functions any engine calls (a local process pool, Ray tasks
and actors, ...).

1. :func:`prepare_rows` (CPU, no model): records read by :func:`unite.bulk.sources.read_rows` become
   :class:`PreparedRow` objects holding :class:`~unite.data.collator.Features` (token ids, decoded and resized
   pixels) or the row's error. It builds its :class:`~unite.data.collator.ItemProcessor` from the tokenizer
   folder and the settings (once per process, cached), never from the model.
2. :func:`embed_rows` (the model): prepared rows become L2-normalised embeddings, batched by token budget
   through :meth:`unite.UniteEncoder.embed_prepared`, a batch that fails inside the model retried item by item.

Together they give each row exactly what ``UniteEncoder.encode_with_errors`` gives it in one process: the item
is parsed, measured (``estimate_length``) and prepared, any exception of one row is that row's error (an
unexpected one as ``internal error while preparing the item: TYPE: message``), and every error is named
``FILE:LINE: reason`` as ``unite encode`` names it. Neither function raises for a row. Both take and return
picklable values.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from unite.data.collator import Features, ItemProcessor
from unite.data.jsonl import JsonlRecord
from unite.errors import CheckpointError, InputError, UniteError
from unite.models.encoder import DEFAULT_BATCH_SIZE, as_item_error
from unite.settings import EncodingSettings

if TYPE_CHECKING:
    from unite.models.encoder import UniteEncoder

__all__ = ["EmbeddedRows", "PreparedRow", "embed_rows", "located", "prepare_rows", "processor_for", "row_id"]


@dataclass
class PreparedRow:
    """One row after the CPU stage.

    Attributes:
        source: the source as given.
        line: its 1-based line (row).
        id: the item's id as a string, None when it has none.
        features: what the model takes, None when the row failed.
        error: why it failed (message ``FILE:LINE: reason``), None when prepared.
    """

    source: str
    line: int
    id: str | None = None
    features: Features | None = None
    error: UniteError | None = None


@dataclass
class EmbeddedRows:
    """Rows after the model, in the order they were given.

    Attributes:
        embeddings: (N, D) float32, L2-normalised; zero rows where failed.
        ok: (N,) bool.
        errors: (N,) the error of each failed row (``FILE:LINE: reason``), None where ok.
    """

    embeddings: np.ndarray
    ok: np.ndarray
    errors: list[UniteError | None]


def row_id(value: Any) -> str | None:
    """An item's id as the shards store it: a string, an integer as its decimal string, or None."""
    return None if value is None else str(value)


def located(error: UniteError, source: str, line: int) -> UniteError:
    """``error`` of the same type, its message prefixed with ``SOURCE:LINE: ``."""
    return type(error)(f"{source}:{line}: {error}")


@functools.lru_cache(maxsize=4)
def processor_for(tokenizer_folder: str, settings: EncodingSettings) -> ItemProcessor:
    """The item processor of a tokenizer folder and settings, built once per process.

    Raises:
        CheckpointError: the tokenizer cannot be loaded from the folder.
    """
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder)
    except Exception as error:  # tokenizer loading raises OSError, ValueError, or library-specific errors
        raise CheckpointError(f"{tokenizer_folder}: cannot load the tokenizer ({error})") from None
    return ItemProcessor(tokenizer, settings)


def prepare_rows(
    records: Sequence[JsonlRecord],
    source: str,
    settings: EncodingSettings,
    tokenizer_folder: str,
    instruction: str | None = None,
) -> list[PreparedRow]:
    """Decode the media and tokenize the items of ``records`` (rows of ``source``), one :class:`PreparedRow`
    per record, in order. A record that failed to parse keeps its error.

    Raises:
        CheckpointError: the tokenizer cannot be loaded (never for a row).
    """
    processor = processor_for(tokenizer_folder, settings)
    return [_prepare(record, source, processor, instruction) for record in records]


def embed_rows(
    encoder: UniteEncoder,
    rows: Sequence[PreparedRow],
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_tokens_per_batch: int | None = None,
) -> EmbeddedRows:
    """Embed the prepared rows (any sources, any order); failed rows stay failed with their error."""
    prepared = [index for index, row in enumerate(rows) if row.features is not None]
    result = encoder.embed_prepared(
        [rows[index].features for index in prepared],  # type: ignore[misc]
        batch_size=batch_size,
        max_tokens_per_batch=max_tokens_per_batch,
    )
    embeddings = np.zeros((len(rows), encoder.embedding_dim), dtype=np.float32)
    ok = np.zeros(len(rows), dtype=bool)
    if prepared:
        embeddings[prepared] = result.embeddings
        ok[prepared] = result.ok
    errors = [row.error for row in rows]
    for index, message in result.errors:
        row = rows[prepared[index]]
        errors[prepared[index]] = InputError(f"{row.source}:{row.line}: {message}")
    return EmbeddedRows(embeddings, ok, errors)


def _prepare(record: JsonlRecord, source: str, processor: ItemProcessor, instruction: str | None) -> PreparedRow:
    row = PreparedRow(source, record.line, row_id(record.id))
    if record.error is not None or record.item is None:
        row.error = record.error or InputError(f"{source}:{record.line}: no item")
        return row
    try:
        item = record.item.with_instruction(instruction)
        processor.estimate_length(item)  # measured first, as encode_with_errors does: its errors are the same
        row.features = processor.prepare(item)
    except Exception as error:  # any exception of one row is that row's error, never the run's
        row.error = located(as_item_error(error), source, record.line)
    return row
