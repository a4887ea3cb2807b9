"""Token-aware recursive splitting (LangChain's text splitters) with a vector store's chunking strategy."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from rag.loaders import Section


@dataclass(frozen=True)
class Chunk:
    text: str
    sha256: str
    metadata: dict = field(default_factory=dict)


def split(sections: list[Section], tokenizer, max_tokens: int, overlap: int) -> list[Chunk]:
    """Chunks of at most `max_tokens` tokens of `tokenizer` (a Hugging Face tokenizer), each overlapping the
    previous one by up to `overlap` tokens, split at paragraph, then line, then sentence, then word bounds."""
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    splitter = RecursiveCharacterTextSplitter.from_huggingface_tokenizer(
        tokenizer,
        chunk_size=max_tokens,
        chunk_overlap=overlap,
        separators=["\n\n", "\n", ". ", " ", ""],
        keep_separator="end",
    )
    chunks = []
    for section in sections:
        for text in splitter.split_text(section.text):
            text = text.strip()
            if text:
                chunks.append(Chunk(text, hashlib.sha256(text.encode()).hexdigest(), dict(section.metadata)))
    return chunks
