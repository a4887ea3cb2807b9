"""File bytes -> text, by file type: LangChain's document loaders where one fits, the libraries they wrap
otherwise. Every failure is a LoadError whose message is fit for a vector store file's `last_error`."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from service.platform.json_input import JsonInputError, parse_json

SUPPORTED = (".txt", ".md", ".markdown", ".html", ".htm", ".pdf", ".json", ".jsonl", ".docx")


class LoadError(ValueError):
    """The file cannot be turned into text; the message says why."""


@dataclass(frozen=True)
class Section:
    """A piece of a file's text, with where it came from (a PDF page, a JSONL line)."""

    text: str
    metadata: dict = field(default_factory=dict)


def load(filename: str, data: bytes) -> list[Section]:
    """The text of a file, in order. Raises LoadError for unsupported, corrupt or textless files."""
    suffix = Path(filename).suffix.lower()
    if suffix not in SUPPORTED:
        raise LoadError(f"unsupported file type '{suffix or filename}'; supported: {', '.join(SUPPORTED)}")
    if not data:
        raise LoadError("the file is empty")
    try:
        sections = _LOADERS[suffix](data)
    except LoadError:
        raise
    except Exception as exc:  # a parser's complaint about a corrupt file
        raise LoadError(f"cannot read this {suffix} file: {type(exc).__name__}: {exc}") from None
    sections = [s for s in sections if s.text.strip()]
    if not sections:
        what = "a PDF without extractable text (scanned?)" if suffix == ".pdf" else "no text"
        raise LoadError(f"the file has {what}")
    return sections


def _text(data: bytes) -> list[Section]:
    try:
        return [Section(data.decode("utf-8-sig"))]
    except UnicodeDecodeError as exc:
        raise LoadError(f"not UTF-8 text (byte {exc.start})") from None


def _with_temp_file(data: bytes, suffix: str, loader_cls):
    """LangChain's loaders read paths: hand them a temporary file."""
    with tempfile.NamedTemporaryFile(suffix=suffix) as tmp:
        tmp.write(data)
        tmp.flush()
        return [Section(d.page_content, _plain(d.metadata)) for d in loader_cls(tmp.name).load()]


def _html(data: bytes) -> list[Section]:
    from langchain_community.document_loaders import BSHTMLLoader

    return _with_temp_file(data, ".html", lambda p: BSHTMLLoader(p, open_encoding="utf-8"))


def _pdf(data: bytes) -> list[Section]:
    from langchain_community.document_loaders import PyPDFLoader

    return [
        Section(s.text, {"page": s.metadata.get("page", 0) + 1})
        for s in _with_temp_file(data, ".pdf", PyPDFLoader)
    ]


def _docx(data: bytes) -> list[Section]:
    from langchain_community.document_loaders import Docx2txtLoader

    return [Section(s.text) for s in _with_temp_file(data, ".docx", Docx2txtLoader)]


def _json(data: bytes) -> list[Section]:
    try:
        value = parse_json(data)
    except JsonInputError as exc:
        raise LoadError(str(exc)) from None
    return [Section("\n".join(_leaves(value)))]


def _jsonl(data: bytes) -> list[Section]:
    sections = []
    for n, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = parse_json(line)
        except JsonInputError as exc:
            raise LoadError(f"line {n}: {exc}") from None
        sections.append(Section("\n".join(_leaves(value)), {"line": n}))
    return sections


def _leaves(value: object) -> list[str]:
    """`path: text` for every string, number or boolean in a JSON value, in document order. Iterative: a
    value nested as deep as the JSON parser allows must not exhaust the stack here."""
    lines: list[str] = []
    stack: list[tuple[str, object]] = [("", value)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, dict):
            stack += reversed([(f"{path}.{k}" if path else str(k), v) for k, v in node.items()])
        elif isinstance(node, list):
            stack += reversed([(f"{path}[{i}]", v) for i, v in enumerate(node)])
        elif node is not None:
            lines.append(f"{path}: {node}" if path else str(node))
    return lines


def _plain(metadata: dict) -> dict:
    return {k: v for k, v in metadata.items() if isinstance(v, str | int | float | bool) and k != "source"}


_LOADERS = {
    ".txt": _text,
    ".md": _text,
    ".markdown": _text,
    ".html": _html,
    ".htm": _html,
    ".pdf": _pdf,
    ".json": _json,
    ".jsonl": _jsonl,
    ".docx": _docx,
}
