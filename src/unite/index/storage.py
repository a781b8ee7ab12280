"""Where index and embedding-shard folders live: a local folder, or a URI of a filesystem pyarrow knows.

A location is a local path (``str`` or :class:`~pathlib.Path`) or a URI such as ``file:///data/ix``,
``s3://bucket/ix`` or ``gs://bucket/ix``. Local paths are read and written with :mod:`pathlib` (no pyarrow needed);
URIs through ``pyarrow.fs.FileSystem.from_uri``, which takes its credentials the way pyarrow documents (for S3 the
usual ``AWS_*`` variables or the instance role). LanceDB opens the same URIs itself. Small files (manifests) are
written whole: a local file through a temporary file renamed over it, an object on object storage by one upload,
which readers see complete or not at all.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from unite.errors import ConfigError
from unite.outputs import write_atomically

__all__ = [
    "Location",
    "exists",
    "filesystem",
    "is_uri",
    "join",
    "local_path",
    "location_arg",
    "read_bytes",
    "tree_size",
    "write_bytes",
]

Location = str | Path
#: ``SCHEME://...`` with a scheme of two or more letters (one letter is a Windows drive), or ``file:/...``; a
#: local folder whose name holds a colon (``run:2``) stays a path.
_SCHEME = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.-]+://|file:/)")


def is_uri(location: Location) -> bool:
    """Whether ``location`` is a URI (``file://``, ``s3://``, ...) rather than a local path."""
    return isinstance(location, str) and bool(_SCHEME.match(location))


def location_arg(value: str) -> Location:
    """An argparse ``type``: a URI kept as written, anything else as a :class:`~pathlib.Path`."""
    return value if is_uri(value) else Path(value)


def local_path(location: Location) -> Path | None:
    """The local folder of ``location``: the path itself, the path of a ``file:`` URI, else ``None``."""
    if not is_uri(location):
        return Path(location)
    filesystem, path = _filesystem(str(location))
    return Path(path) if type(filesystem).__name__ == "LocalFileSystem" else None


def join(location: Location, name: str) -> Location:
    """``location/name``, keeping a URI a URI."""
    if is_uri(location):
        return str(location).rstrip("/") + "/" + name
    return Path(location) / name


def read_bytes(location: Location, name: str) -> bytes:
    """The whole file ``name`` under ``location``.

    Raises:
        FileNotFoundError: there is no such file.
        OSError: it cannot be read.
    """
    if not is_uri(location):
        return (Path(location) / name).read_bytes()
    filesystem, path = _filesystem(str(location))
    with filesystem.open_input_stream(f"{path.rstrip('/')}/{name}") as stream:
        return stream.read()


def write_bytes(location: Location, name: str, data: bytes) -> None:
    """Write ``name`` under ``location`` whole (creating the folder): readers see the old file or the new one."""
    if not is_uri(location):
        write_atomically(Path(location) / name, lambda handle: handle.write(data))
        return
    local = local_path(location)
    if local is not None:
        write_bytes(local, name, data)
        return
    filesystem, path = _filesystem(str(location))
    filesystem.create_dir(path, recursive=True)
    with filesystem.open_output_stream(f"{path.rstrip('/')}/{name}") as stream:
        stream.write(data)


def exists(location: Location, name: str) -> bool:
    """Whether the file ``name`` exists under ``location``."""
    if not is_uri(location):
        return (Path(location) / name).is_file()
    import pyarrow.fs

    filesystem, path = _filesystem(str(location))
    return filesystem.get_file_info(f"{path.rstrip('/')}/{name}").type == pyarrow.fs.FileType.File


def tree_size(location: Location) -> int:
    """Bytes of every file under ``location`` (0 when it does not exist)."""
    if not is_uri(location):
        folder = Path(location)
        return sum(file.stat().st_size for file in folder.rglob("*") if file.is_file()) if folder.is_dir() else 0
    import pyarrow.fs

    filesystem, path = _filesystem(str(location))
    selector = pyarrow.fs.FileSelector(path, recursive=True, allow_not_found=True)
    return sum(info.size or 0 for info in filesystem.get_file_info(selector) if info.type == pyarrow.fs.FileType.File)


def filesystem(location: Location) -> tuple[Any, str]:
    """``(pyarrow FileSystem, path in it)`` of ``location`` (a local path: the local filesystem, absolute path)."""
    if is_uri(location):
        return _filesystem(str(location))
    import pyarrow.fs

    return pyarrow.fs.LocalFileSystem(), str(Path(location).absolute())


def _filesystem(uri: str) -> tuple[Any, str]:
    try:
        import pyarrow.fs
    except ImportError:
        raise ConfigError(f"{uri}: storage URIs need pyarrow: pip install 'unite-embed[index]'") from None
    try:
        return pyarrow.fs.FileSystem.from_uri(uri)
    except (ValueError, OSError) as error:  # ArrowInvalid is a ValueError; unknown schemes, bad buckets
        raise ConfigError(f"{uri}: not a storage location pyarrow can open ({error})") from None
