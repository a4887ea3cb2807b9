"""RAG building blocks: filters, loaders, splitting, the FAISS index and a store's collection. The
embedder is the real all-MiniLM-L6-v2 (it ships in a package)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rag.chunking import split
from rag.collection import Collection
from rag.filters import FilterError, matches, validate
from rag.index import VectorIndex
from rag.ingest import embedder, prepare_file
from rag.loaders import LoadError, Section, load
from rag.prompting import augment, last_user_text

ATTRS = {"lang": "en", "year": 2021, "draft": False}


@pytest.mark.parametrize(
    "f, expected",
    [
        ({"type": "eq", "key": "lang", "value": "en"}, True),
        ({"type": "ne", "key": "lang", "value": "en"}, False),
        ({"type": "gt", "key": "year", "value": 2020}, True),
        ({"type": "lte", "key": "year", "value": 2020}, False),
        ({"type": "gt", "key": "lang", "value": 3}, False),  # a string does not compare with a number
        ({"type": "in", "key": "lang", "value": ["fr", "en"]}, True),
        ({"type": "nin", "key": "lang", "value": ["fr", "en"]}, False),
        ({"type": "eq", "key": "missing", "value": 1}, False),
        ({"type": "ne", "key": "missing", "value": 1}, True),
        ({"type": "eq", "key": "draft", "value": 0}, False),  # a boolean is not a number
        (
            {
                "type": "and",
                "filters": [
                    {"type": "eq", "key": "lang", "value": "en"},
                    {
                        "type": "or",
                        "filters": [
                            {"type": "lt", "key": "year", "value": 2000},
                            {"type": "eq", "key": "draft", "value": False},
                        ],
                    },
                ],
            },
            True,
        ),
    ],
)
def test_filters(f: dict, expected: bool) -> None:
    validate(f)
    assert matches(f, ATTRS) is expected


@pytest.mark.parametrize(
    "f, where",
    [
        ({"key": "a", "value": 1}, "a filter is an object with a 'type'"),
        ({"type": "like", "key": "a", "value": 1}, "unknown filter type 'like'"),
        ({"type": "and", "filters": []}, "non-empty 'filters'"),
        (
            {"type": "and", "filters": [{"type": "eq", "key": "a"}]},
            r"filters\.filters\[0\]: 'eq' needs a 'value'",
        ),
        ({"type": "in", "key": "a", "value": "x"}, "list of strings"),
        ({"type": "eq", "key": "a", "value": {"x": 1}}, "string, number or boolean"),
    ],
)
def test_malformed_filters_are_named(f: dict, where: str) -> None:
    with pytest.raises(FilterError, match=where):
        validate(f)


def test_loaders_read_each_type() -> None:
    assert load("a.md", b"# Title\n\nBody")[0].text.startswith("# Title")
    html = load("a.html", b"<html><body><h1>Hi</h1><p>there</p><script>x</script></body></html>")
    assert "Hi" in html[0].text and "there" in html[0].text
    doc = load("a.json", json.dumps({"name": "Ada", "langs": ["en", "fr"]}).encode())
    assert doc[0].text == "name: Ada\nlangs[0]: en\nlangs[1]: fr"
    lines = load("a.jsonl", b'{"q": "one"}\n\n{"q": "two"}\n')
    assert [s.metadata["line"] for s in lines] == [1, 3]


def test_pdf_and_docx_are_read(tmp_path) -> None:
    from docx import Document
    from fpdf import FPDF

    pdf = FPDF()
    for text in ("First page about owls.", "Second page about bats."):
        pdf.add_page()
        pdf.set_font("Helvetica", size=12)
        pdf.cell(text=text)
    pages = load("a.pdf", bytes(pdf.output()))
    assert [p.metadata["page"] for p in pages] == [1, 2] and "bats" in pages[1].text

    document = Document()
    document.add_paragraph("A paragraph about herons.")
    document.save(tmp_path / "a.docx")
    assert "herons" in load("a.docx", (tmp_path / "a.docx").read_bytes())[0].text


@pytest.mark.parametrize(
    "name, data, message",
    [
        ("a.exe", b"MZ", "unsupported file type '.exe'"),
        ("a.txt", b"", "empty"),
        ("a.txt", b"   \n ", "no text"),
        ("a.txt", b"\xff\xfe\xfa bad", "not UTF-8"),
        ("a.pdf", b"%PDF-1.4 garbage", "cannot read this .pdf"),
        ("a.json", b"{nope", "invalid JSON"),
        ("a.jsonl", b'{"a": 1}\n{nope\n', "line 2"),
        ("a.docx", b"not a zip", "cannot read this .docx"),
    ],
)
def test_bad_files_get_a_clear_reason(name: str, data: bytes, message: str) -> None:
    with pytest.raises(LoadError, match=message):
        load(name, data)


def test_a_pdf_without_text_is_refused() -> None:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.rect(10, 10, 50, 50)  # a drawing, no text: what a scanned page looks like to a text extractor
    with pytest.raises(LoadError, match="PDF without extractable text"):
        load("scan.pdf", bytes(pdf.output()))


def test_splitting_respects_the_token_budget_and_overlaps() -> None:
    tok = embedder(None, "float32").tokenizer
    text = " ".join(f"Sentence number {i} talks about topic {i % 7}." for i in range(200))
    chunks = split([Section(text, {"page": 3})], tok, max_tokens=64, overlap=16)
    assert len(chunks) > 10
    assert all(len(tok.encode(c.text, add_special_tokens=False)) <= 64 for c in chunks)
    assert all(c.metadata == {"page": 3} for c in chunks)
    first_words = chunks[1].text.split()[:3]
    assert " ".join(first_words) in chunks[0].text  # the next chunk starts inside the previous one


def test_index_search_filter_remove_and_round_trip() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(100, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = VectorIndex(8)
    index.add(np.arange(100, 200), vectors)
    assert index.search(vectors[5], 1)[0][0] == 105
    assert [i for i, _ in index.search(vectors[5], 3, allowed=np.array([150, 160]))] in (
        [150, 160],
        [160, 150],
    )
    index.remove(np.array([105]))
    assert 105 not in [i for i, _ in index.search(vectors[5], 5)]
    again = VectorIndex.from_bytes(index.to_bytes(), 8)
    assert again.size == 99 and again.search(vectors[7], 1)[0][0] == 107


def test_past_the_flat_limit_the_index_becomes_an_ivf(monkeypatch: pytest.MonkeyPatch) -> None:
    import rag.index

    monkeypatch.setattr(rag.index, "FLAT_LIMIT", 500)
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(2000, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = VectorIndex(16)
    index.add(np.arange(1000), vectors[:1000])
    assert index.kind == "ivf"
    index.add(np.arange(1000, 2000), vectors[1000:])  # added to the trained lists, then retrained at 2x
    hits = sum(index.search(vectors[i], 1)[0][0] == i for i in range(0, 2000, 20))
    assert hits >= 95  # recall@1 of the exact vector, over 100 queries
    index.remove(np.array([40]))
    assert index.search(vectors[40], 1)[0][0] != 40
    assert VectorIndex.from_bytes(index.to_bytes(), 16).kind == "ivf"


def test_collection_reuses_vectors_of_identical_chunks_and_persists() -> None:
    prepared = prepare_file("a.txt", b"Owls hunt at night.\n\nBats too.", 64, 0, set())
    assert len(prepared.chunks) == 1 and len(prepared.new_vectors) == 1
    collection = Collection(embedder(None, "auto").dimension)
    collection.add_file("file-a", prepared.chunks, prepared.new_vectors)
    # The same text in another file: nothing new to embed.
    again = prepare_file("b.txt", b"Owls hunt at night.\n\nBats too.", 64, 0, set(collection.shas))
    assert again.new_vectors == {}
    collection.add_file("file-b", again.chunks, again.new_vectors)
    query = embedder(None, "auto").embed(["When do owls hunt?"])[0]
    assert {c.file_id for c, _ in collection.search(query, 5)} == {"file-a", "file-b"}
    restored = Collection.from_bytes(collection.to_bytes())
    legacy = Collection.from_objects(collection.to_objects())  # stores saved as two objects still load
    assert restored.chunks == legacy.chunks == collection.chunks
    assert restored.remove_file("file-a") == 1
    assert [c.file_id for c, _ in restored.search(query, 5)] == ["file-b"]
    assert restored.next_id == 2


def test_adding_a_file_again_keeps_it_searchable() -> None:
    """A file added a second time: its chunks' vectors are all known (from its first time), and must be
    taken before its old chunks go. It once failed with a KeyError and its chunks vanished from search."""
    collection = Collection(embedder(None, "auto").dimension)
    first = prepare_file("a.txt", b"Owls hunt at night.", 64, 0, set())
    collection.add_file("file-a", first.chunks, first.new_vectors)
    again = prepare_file("a.txt", b"Owls hunt at night.", 64, 0, set(collection.shas))
    assert again.new_vectors == {}
    collection.add_file("file-a", again.chunks, again.new_vectors)
    query = embedder(None, "auto").embed(["When do owls hunt?"])[0]
    assert [c.file_id for c, _ in collection.search(query, 5)] == ["file-a"]
    # A vector that went missing meanwhile: refused, and the file's chunks stay as they were.
    other = prepare_file("b.txt", b"Bats sleep by day.", 64, 0, {again.chunks[0].sha256, "x"})
    with pytest.raises(KeyError, match="store changed meanwhile"):
        collection.add_file("file-b", other.chunks, {})
    assert [c.file_id for c, _ in collection.search(query, 5)] == ["file-a"]


def test_retrieval_prompt() -> None:
    msgs = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Why?"}]},
    ]
    assert last_user_text(msgs) == "Why?"
    out = augment(msgs, [("doc.txt", "Because.")])
    assert out[0]["content"].startswith("Be brief.") and "[1] (doc.txt) Because." in out[0]["content"]
    assert augment([{"role": "user", "content": "x"}], [("d", "t")])[0]["role"] == "system"
