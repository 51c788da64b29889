"""Finding a benchmark's manually downloaded files, and the errors that say what is missing.

A benchmark is described by `Part`s: a folder (or the manual directory itself) holding some
required files, obtainable either already extracted or as an archive placed in the manual
directory. `resolve_parts` finds every part, extracting archives through the TFDS download
manager when needed, and otherwise raises `MissingManualFilesError` listing every expected file
and every directory searched (METHOD §5). `read_lines`, `format_error` and `image_file` read the
annotation files and name the file and line of anything malformed.
"""

from __future__ import annotations

import dataclasses
import os
import textwrap
from collections.abc import Callable, Sequence

from etils import epath


class ManualDataError(ValueError):
    """A manually downloaded file is missing or does not have the expected format."""


class MissingManualFilesError(ManualDataError, FileNotFoundError):
    """Some required files of a benchmark were not found in the manual directory."""


@dataclasses.dataclass(frozen=True)
class Part:
    """One folder of a benchmark and the files it must contain.

    Args:
        root: folder name the files live in ("CUB_200_2011"); "" means the top of the manual
            directory (or of an extracted archive).
        files: paths inside `root` that must exist; a trailing "/" marks a folder.
        archives: archive file names (relative to the manual directory) that unpack to `root`,
            tried in order when no extracted folder is found (default none).
    """

    root: str
    files: tuple[str, ...]
    archives: tuple[str, ...] = ()

    def required(self) -> tuple[str, ...]:
        """What must exist inside `root`: `files`, or the folder itself ("") when none."""
        return self.files or ("",)

    def paths(self) -> list[str]:
        """Expected paths relative to the manual directory, one per `required()` entry."""
        prefix = f"{self.root}/" if self.root else ""
        return [f"{prefix}{f}" if f else (prefix or "./") for f in self.required()]

    def expected(self) -> list[str]:
        """Human-readable expected paths, with the archive alternative."""
        lines = self.paths()
        if self.archives:
            lines.append(f"  (or the archive {' or '.join(self.archives)} containing them)")
        return lines


def _children(path) -> list:
    try:
        return sorted((c for c in path.iterdir() if c.is_dir()), key=lambda c: c.name)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _root_candidates(base) -> list:
    """`base` and its direct sub-folders: where an extracted folder may sit."""
    return [base, *_children(base)]


def _present(root, required: Sequence[str]) -> list[bool]:
    """Whether each `Part.required()` entry exists in `root` ("" is `root` itself)."""
    if not root.is_dir():
        return [False] * len(required)
    return [(root / f.rstrip("/")).exists() for f in required]


def _find_root(bases, part: Part, searched: list, seen: list[bool]):
    """First candidate folder holding every file of `part`; `seen[i]` records file i seen anywhere."""
    candidates = []
    for base in bases:
        candidates += [c / part.root if part.root else c for c in _root_candidates(base)]
        if part.root and base.name == part.root:  # `base` is itself the extracted folder
            candidates.append(base)
    for root in candidates:
        if root not in searched:
            searched.append(root)
        present = _present(root, part.required())
        seen[:] = [a or b for a, b in zip(seen, present, strict=True)]
        if all(present):
            return root
    return None


def resolve_parts(
    dataset: str,
    manual_dir,
    parts: Sequence[Part],
    extract: Callable | None,
    instructions: str,
):
    """Locate every part of a benchmark in `manual_dir`, extracting archives when needed.

    Search order for each part: `manual_dir/root`, `manual_dir/<sub>/root` (one level down), the
    manual directory itself when it *is* the extracted folder, then each archive found in
    `manual_dir` or one level down, extracted with `extract(path) -> extracted_dir`.

    Args:
        dataset: display name used in messages.
        manual_dir: `epath.Path` (or os path) of the manual directory.
        parts: the `Part`s to find.
        extract: callable extracting an archive (the TFDS `dl_manager.extract`); None disables
            archives.
        instructions: the builder's `MANUAL_DOWNLOAD_INSTRUCTIONS`, appended to errors.

    Returns:
        list of resolved folder paths, one per part.

    Raises:
        MissingManualFilesError: listing every expected file, the missing ones and every
            directory searched.
    """
    manual_dir = epath.Path(manual_dir)
    if not manual_dir.is_dir():
        raise missing_files_error(dataset, manual_dir, parts, [manual_dir], instructions)
    searched: list = []
    problems: list[str] = []
    missing: list[str] = []
    found = []
    for part in parts:
        seen = [False] * len(part.required())
        root = _find_root([manual_dir], part, searched, seen)
        archives = [
            base / a
            for a in part.archives
            for base in _root_candidates(manual_dir)
            if (base / a).is_file()
        ]
        for path in archives if root is None and extract is not None else []:
            try:
                extracted = epath.Path(extract(path))
            except Exception as err:  # corrupt or truncated archive
                problems.append(
                    f"could not extract {path} (damaged or truncated archive: download it "
                    f"again): {err}"
                )
                continue
            root = _find_root([extracted], part, searched, seen)
            if root is not None:
                break
            problems.append(f"{path} was extracted but does not hold {', '.join(part.paths())}")
        if root is None:
            absent = [p for p, s in zip(part.paths(), seen, strict=True) if not s] or part.paths()
            missing += absent
            if part.archives and not archives:
                missing.append(f"  (nor the archive {' or '.join(part.archives)})")
        found.append(root)
    if missing:
        raise missing_files_error(
            dataset, manual_dir, parts, searched, instructions, missing, problems
        )
    return found


def missing_files_error(
    dataset, manual_dir, parts, searched, instructions, missing=(), problems=()
) -> MissingManualFilesError:
    """Error listing every expected file, which ones are missing and the directories searched."""
    lines = [f"{dataset}: required files not found in the manual directory {manual_dir}."]
    lines.append("Expected (relative to the manual directory):")
    for part in parts:
        lines.extend(f"  {e}" for e in part.expected())
    if missing:
        lines.append("Not found:")
        lines.extend(f"  {m}" for m in missing)
    lines.extend(f"Problem: {p}" for p in problems)
    lines.append("Searched in:")
    lines.extend(f"  {os.fspath(s)}" for s in searched)
    lines.append("How to obtain the files:")
    lines.append(textwrap.indent(textwrap.dedent(instructions).strip(), "  "))
    return MissingManualFilesError("\n".join(lines))


def read_lines(path) -> list[str]:
    """Non-empty stripped lines of a text annotation file."""
    text = epath.Path(path).read_text()
    return [line.strip() for line in text.splitlines() if line.strip()]


def format_error(path, line_no: int, expected: str, received: str) -> ManualDataError:
    """Error for a malformed annotation line: file, 1-based line number, expected vs received."""
    return ManualDataError(
        f"{os.fspath(path)} line {line_no}: expected {expected}; received {received!r}. "
        "The file is not the official one or is truncated; download it again "
        "(see the builder's MANUAL_DOWNLOAD_INSTRUCTIONS)."
    )


def image_file(root, relative: str, listed_in):
    """`root/relative`, raising a clear error when an annotated image file is absent."""
    path = root / relative
    if not path.is_file():
        raise MissingManualFilesError(
            f"Image {os.fspath(path)} listed in {os.fspath(listed_in)} was not found. "
            "The image folder is incomplete; extract the official archive again."
        )
    return path
