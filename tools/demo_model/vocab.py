"""A CLIP tokenizer whose vocabulary holds every caption word as one token.

The merges are learned by byte-pair encoding over the word list itself, so applying them in rank
order rebuilds each known word from its characters; every single byte (alone and word-final)
stays in the vocabulary, so unknown words still tokenize, character by character.
"""

from __future__ import annotations

import json
from collections import Counter
from functools import cache
from pathlib import Path

from transformers import CLIPTokenizer

from .data import POSITION_WORDS, SCENERY, SHAPE_COLOURS, SHAPES, SIZES

MODEL_MAX_LENGTH = 77
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
END = "</w>"
# Words users are likely to type around the caption vocabulary, so their tokens are not split.
EXTRA_WORDS = ("an", "one", "two", "three", "of", "with", "picture", "shape", "big", "tiny")


def caption_words() -> list[str]:
    phrases = [*SHAPE_COLOURS, *SHAPES, *SIZES, *POSITION_WORDS.values(), *SCENERY, "gradient background to"]
    words = {word for phrase in phrases for word in phrase.split()}
    return sorted(words | {"a", "and"} | set(EXTRA_WORDS))


@cache
def clip_byte_characters() -> dict[int, str]:
    """CLIP's reversible byte -> printable character table, in CLIP's order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars), strict=True))


def learn_merges(words: list[str]) -> list[tuple[str, str]]:
    """Byte-pair merges that turn each word into the single token `word</w>`.

    The most frequent adjacent pair is merged first (ties broken alphabetically) until every word is
    one symbol; replaying the merges by rank reproduces exactly these segmentations.
    """
    segmented = [tuple(word[:-1]) + (word[-1] + END,) for word in words]
    merges: list[tuple[str, str]] = []
    while any(len(symbols) > 1 for symbols in segmented):
        pairs = Counter(pair for symbols in segmented for pair in zip(symbols, symbols[1:], strict=False))
        best = min(pairs, key=lambda pair: (-pairs[pair], pair))
        merges.append(best)
        segmented = [_merge(symbols, best) for symbols in segmented]
    return merges


def _merge(symbols: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    out: list[str] = []
    i = 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            out.append(symbols[i] + symbols[i + 1])
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return tuple(out)


def vocabulary(merges: list[tuple[str, str]]) -> dict[str, int]:
    """CLIP's layout: bytes, word-final bytes, merge results, then the two special tokens."""
    base = list(clip_byte_characters().values())
    tokens = base + [b + END for b in base] + ["".join(pair) for pair in merges] + [BOS, EOS]
    return {token: i for i, token in enumerate(dict.fromkeys(tokens))}


def write_vocab_files(folder: Path) -> None:
    """vocab.json and merges.txt: what every version of CLIPTokenizer can load."""
    merges = learn_merges(caption_words())
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocabulary(merges), ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


def build_tokenizer(folder: Path) -> CLIPTokenizer:
    write_vocab_files(folder)
    return CLIPTokenizer.from_pretrained(folder, model_max_length=MODEL_MAX_LENGTH)
