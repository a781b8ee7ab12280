"""Finding a task's files where the official download and a plain unzip put them.

A task's data folder (``data_dir``) and each of its ``files`` roles may list several relative paths; they are
tried in order and the first that exists is used, so one spec reads the flattened layout the docs once asked
for and the trees that downloads produce (``msrvtt_data/MSRVTT_JSFUSION_test.csv``, ``MSRVTT/videos/all/``).

A path may pass through a zip archive, as datasets that ship their media zipped are read: in
``videos.zip/videos`` (or a bare ``videos.zip`` for a folder role) the archive is extracted once, with a progress
bar, into a cache folder (``$UNITE_EXTRACT_DIR``, default ``~/.cache/unite/extracted``), keyed by the archive's
real path, size, modification time and member list (names, CRCs, sizes); the rest of the path is looked up inside
it. Extraction is atomic (into a temporary folder, renamed when complete; a folder another process completed
first is kept), refuses members that would land outside its folder, and checks the free disk space first.
When nothing matches, the error lists every path tried and points at ``unite eval layout TASK``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from tqdm.auto import tqdm

from unite.errors import ConfigError, InputError

__all__ = ["EXTRACT_DIR_ENV", "FOLDER_ROLES", "candidates", "data_folder", "describe_layout", "extract_zip", "find"]

#: Environment variable naming the folder archives are extracted into.
EXTRACT_DIR_ENV = "UNITE_EXTRACT_DIR"
_ZIP = ".zip"
_DONE = ".complete"


def candidates(value: str | Sequence[str] | None, default: str | Sequence[str] = ()) -> list[str]:
    """The relative paths a ``files`` role (or ``data_dir``) lists, in order; ``default`` when unset."""
    chosen = default if value is None else value
    return [chosen] if isinstance(chosen, str) else [str(item) for item in chosen]


def data_folder(name: str, data_dirs: Sequence[str], root: str | Path) -> Path:
    """The first of ``data_dirs`` (relative to ``root``) that is a folder; ``.`` is ``root`` itself.

    Raises:
        ConfigError: none exists, listing what was tried.
    """
    root = Path(root)
    tried = [root / relative for relative in data_dirs]
    for folder in tried:
        if folder.is_dir():
            return folder
    raise ConfigError(
        f"task {name}: data folder not found; tried {', '.join(map(str, tried))} "
        f"(see `unite eval layout {name}` for the expected tree and where to download it)"
    )


def find(
    task: str, folder: str | Path, role: str, paths: Sequence[str], kind: str = "file", required: bool = True
) -> Path | None:
    """The first of ``paths`` (relative to ``folder``, possibly through a zip) that exists as a ``kind``.

    Args:
        task: the task's name, for messages.
        folder: the task's data folder.
        role: the ``files`` role looked up, for messages.
        paths: the candidates, in order.
        kind: ``file`` or ``dir``.
        required: raise when nothing matches (else return ``None``).

    Raises:
        ConfigError: nothing matches, naming the role, every path tried and ``unite eval layout TASK``.
    """
    folder = Path(folder)
    for relative in paths:
        path = _resolve(folder, relative, kind)
        if path is not None:
            return path
    if not required:
        return None
    tried = ", ".join(str(folder / relative) for relative in paths)
    raise ConfigError(
        f"task {task}: {role} {'folder' if kind == 'dir' else 'file'} not found; tried {tried} "
        f"(files.{role} in the task spec; see `unite eval layout {task}` for the expected tree and where to "
        "download it)"
    )


def _resolve(folder: Path, relative: str, kind: str) -> Path | None:
    """``folder / relative`` when it exists as ``kind``, entering zip archives met on the way."""
    path = folder
    parts = PurePosixPath(relative).parts if relative not in ("", ".") else ()
    for index, part in enumerate(parts):
        path = path / part
        last = index == len(parts) - 1
        if path.suffix.lower() == _ZIP and path.is_file() and (not last or kind == "dir"):
            path = extract_zip(path)
    if kind == "dir":
        return path if path.is_dir() else None
    return path if path.is_file() else None


def extract_dir() -> Path:
    """Where archives are extracted: ``$UNITE_EXTRACT_DIR``, else ``~/.cache/unite/extracted``."""
    configured = os.environ.get(EXTRACT_DIR_ENV)
    return Path(configured) if configured else Path.home() / ".cache" / "unite" / "extracted"


def extract_zip(archive: str | Path, into: str | Path | None = None) -> Path:
    """Extract ``archive`` once (later calls return at once) and return the folder holding its contents.

    The folder is named after the archive's identity: its real path, size, modification time and the name, CRC
    and size of every member, so a changed archive is extracted anew. Members are extracted into a temporary
    folder renamed into place when complete; a folder without the completion marker is never used, and one that
    another process completed meanwhile is kept (it may be in use).

    Raises:
        InputError: the archive is not a readable zip, a member would land outside the folder, or the disk
            lacks room for it.
    """
    archive = Path(archive)
    try:
        with zipfile.ZipFile(archive) as bundle:
            members = bundle.infolist()
            target = Path(into) if into is not None else extract_dir() / f"{archive.stem}-{_identity(archive, members)}"
            if (target / _DONE).is_file():
                return target
            target.parent.mkdir(parents=True, exist_ok=True)
            _check_members(archive, members, target.parent)
            staging = _extract_into_staging(bundle, archive, members, target)
    except (zipfile.BadZipFile, zipfile.LargeZipFile) as error:
        raise InputError(f"{archive}: not a readable zip archive ({error})") from None
    return _publish(staging, target)


def _identity(archive: Path, members: list[zipfile.ZipInfo]) -> str:
    """16 hex digits naming the archive's path, size, modification time and members (names, CRCs, sizes)."""
    status = archive.stat()
    digest = hashlib.sha256(f"{archive.resolve()}|{status.st_size}|{status.st_mtime_ns}".encode())
    for member in members:
        digest.update(f"|{member.filename}|{member.CRC}|{member.file_size}".encode())
    return digest.hexdigest()[:16]


def _extract_into_staging(
    bundle: zipfile.ZipFile, archive: Path, members: list[zipfile.ZipInfo], target: Path
) -> Path:
    """Every member into a new hidden folder beside ``target``, marked complete last; removed on any failure."""
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        total = sum(member.file_size for member in members)
        with tqdm(total=total, unit="B", unit_scale=True, desc=f"extracting {archive.name}") as bar:
            for member in members:
                bundle.extract(member, staging)
                bar.update(member.file_size)
        (staging / _DONE).write_text(str(archive.resolve()) + "\n")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return staging


def _publish(staging: Path, target: Path) -> Path:
    """Rename the complete ``staging`` folder to ``target``, unless another process completed ``target`` first."""
    if not (target / _DONE).is_file() and target.exists():
        shutil.rmtree(target)  # left by an extraction that never finished
    try:
        staging.replace(target)
    except OSError:
        if not (target / _DONE).is_file():
            shutil.rmtree(staging, ignore_errors=True)
            raise
    if staging.exists():  # another process completed target first: keep its folder, it may be in use
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _check_members(archive: Path, members: list[zipfile.ZipInfo], parent: Path) -> None:
    for member in members:
        name = PurePosixPath(member.filename)
        if name.is_absolute() or ".." in name.parts or "\\" in member.filename:
            raise InputError(f"{archive}: member {member.filename!r} would land outside the extraction folder")
    needed = sum(member.file_size for member in members)
    free = shutil.disk_usage(parent).free
    if needed > free:
        raise InputError(f"{archive}: extracting needs {needed} bytes, {free} are free in {parent}")


#: ``files`` roles that name folders (the others name files).
FOLDER_ROLES = frozenset({"media", "captions", "images", "videos", "frames"})


def describe_layout(spec: object) -> str:
    """What ``unite eval layout TASK`` prints: where the data comes from and the paths tried for each role."""
    name, files = spec.name, spec.files  # type: ignore[attr-defined]
    folders = [f"{path}/" if path not in ("", ".") else "(DATA_ROOT itself)" for path in spec.data_dirs]  # type: ignore[attr-defined]
    lines = [f"{name}: {spec.description}" if spec.description else name]  # type: ignore[attr-defined]
    if spec.source:  # type: ignore[attr-defined]
        lines += ["", f"download: {spec.source}"]  # type: ignore[attr-defined]
    lines += ["", "under DATA_ROOT (--data-root or $UNITE_EVAL_DATA); for each, the first path that exists is used:"]
    lines.append(f"  data folder: {' | '.join(folders)}")
    width = max((len(role) for role in files), default=0) + len(" (folder)")
    for role, paths in files.items():
        kind = "folder" if role in FOLDER_ROLES else "file"
        shown = [f"{path}/" if kind == "folder" and path not in ("", ".") else path or "(the data folder)"
                 for path in candidates(paths)]
        lines.append(f"  {f'{role} ({kind})':<{width}}: {' | '.join(shown)}")
    lines += ["", "a path through a .zip (videos.zip/videos) is extracted once into $UNITE_EXTRACT_DIR "
              "(default ~/.cache/unite/extracted)", "", "for example:", *_tree(spec)]
    return "\n".join(lines) + "\n"


def _tree(spec: object) -> list[str]:
    """The first candidate of every role, drawn as a tree under DATA_ROOT."""
    base = spec.data_dirs[0]  # type: ignore[attr-defined]
    paths = []
    for role, value in spec.files.items():  # type: ignore[attr-defined]
        first = candidates(value)[0] if candidates(value) else ""
        if first in ("", "."):
            continue
        paths.append(first.rstrip("/") + ("/" if role in FOLDER_ROLES else ""))
    lines = ["DATA_ROOT/"]
    indent = "  "
    if base not in ("", "."):
        lines.append(f"  {base}/")
        indent = "    "
    lines += [f"{indent}{path}" for path in paths]
    return lines
