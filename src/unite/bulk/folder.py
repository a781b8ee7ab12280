"""The output folder of a sharded run, on any filesystem pyarrow reaches.

``--output`` is a local path or a URI: ``file:///data/out/`` (tested), ``s3://bucket/out/``, ``gs://bucket/out/``,
``hdfs://...`` (through the same code, with pyarrow's own credentials lookup; not tested here, no network). Every
file is written whole to a hidden temporary name in the folder (``.NAME.tmp-PID-RANDOM``) and then moved over
``NAME``: on a local filesystem that is a rename, so a reader (or a rerun after a kill) sees the old file or
the whole new one; on object stores the move is a copy, and an object appears whole or not at all anyway.
Temporary files left by a killed run are removed when the next run opens the folder.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from unite.errors import ConfigError, InputError
from unite.index import storage

__all__ = ["OutputFolder", "is_folder_output"]

_TEMPORARY_MARK = ".tmp-"
_READ_CHUNK = 1 << 20


def is_folder_output(output: str) -> bool:
    """Whether ``--output`` names a folder of shards: it ends with ``/`` or is an existing folder."""
    if output.endswith(("/", os.sep)):
        return True
    if storage.is_uri(output):
        return OutputFolder.exists_as_folder(output)
    return Path(output).is_dir()


class OutputFolder:
    """A folder on a pyarrow filesystem, with atomic writes and streamed reads.

    Args:
        output: a local path or a URI that pyarrow's ``FileSystem.from_uri`` understands.
    """

    def __init__(self, output: str) -> None:
        self.output = output
        self.filesystem, self.root = _filesystem(output)

    @staticmethod
    def exists_as_folder(output: str) -> bool:
        from pyarrow import fs

        filesystem, root = _filesystem(output)
        return filesystem.get_file_info(root).type == fs.FileType.Directory

    def path(self, name: str) -> str:
        return f"{self.root}/{name}"

    def uri(self, name: str = "") -> str:
        """Where ``name`` is, spelt as the user gave the folder (for messages)."""
        return self.output.rstrip("/" + os.sep) + "/" + name

    def create(self) -> None:
        """Create the folder and remove the temporary files a killed run left in it."""
        try:
            self.filesystem.create_dir(self.root, recursive=True)
            for name in self.names():
                if name.startswith(".") and _TEMPORARY_MARK in name:
                    self.filesystem.delete_file(self.path(name))
        except OSError as error:
            raise ConfigError(f"{self.output}: cannot create or clean the output folder ({error})") from None

    def names(self) -> list[str]:
        """The names of the files in the folder (none when it does not exist)."""
        from pyarrow import fs

        selector = fs.FileSelector(self.root, allow_not_found=True, recursive=False)
        infos = self.filesystem.get_file_info(selector)
        return sorted(info.base_name for info in infos if info.type == fs.FileType.File)

    def exists(self, name: str) -> bool:
        from pyarrow import fs

        return self.filesystem.get_file_info(self.path(name)).type == fs.FileType.File

    def write_atomically(self, name: str, data: bytes) -> None:
        """Write ``data`` to a temporary file in the folder, then move it over ``name``."""
        temporary = self.path(f".{name}{_TEMPORARY_MARK}{os.getpid()}-{secrets.token_hex(4)}")
        try:
            with self.filesystem.open_output_stream(temporary) as stream:
                stream.write(data)
            self.filesystem.move(temporary, self.path(name))
        except BaseException as error:
            try:
                self.filesystem.delete_file(temporary)
            except OSError:
                pass
            if isinstance(error, OSError):
                raise ConfigError(f"{self.uri(name)}: cannot write ({error})") from None
            raise

    def read_bytes(self, name: str) -> bytes:
        try:
            with self.filesystem.open_input_stream(self.path(name)) as stream:
                return stream.read()
        except OSError as error:
            raise InputError(f"{self.uri(name)}: cannot read ({error})") from None

    def sha256(self, name: str) -> str | None:
        """The sha256 of a file of the folder, streamed; None when it is missing or unreadable."""
        digest = hashlib.sha256()
        try:
            with self.filesystem.open_input_stream(self.path(name)) as stream:
                for chunk in _chunks(stream):
                    digest.update(chunk)
        except OSError:
            return None
        return digest.hexdigest()


def _chunks(stream: Any) -> Iterator[bytes]:
    while True:
        chunk = stream.read(_READ_CHUNK)
        if not chunk:
            return
        yield chunk


def _filesystem(output: str) -> tuple[Any, str]:
    """``(pyarrow FileSystem, folder path in it)`` of ``--output``, resolved as index locations are."""
    filesystem, root = storage.filesystem(storage.location_arg(output))
    return filesystem, root.rstrip("/") or "/"
