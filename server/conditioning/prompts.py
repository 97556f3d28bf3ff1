"""Prompt text as artists write it, translated to compel's prompt structure.

Three syntaxes (`prompt_syntax`), documented with examples in docs/prompts.md:
- `a1111` (default): `(word)` x1.1, `((word))` x1.21, `[word]` /1.1, `(word:1.3)`, nesting, `\\(` escapes,
  `BREAK` starts a new 77-token chunk;
- `novelai`: `{word}` x1.05 and `[word]` /1.05 per pair, stacking multiplies; `BREAK` as in a1111;
- `compel`: compel's own syntax (`word+`, `(word)1.2`, `.blend()`, `.and()`), parsed by compel.

In every syntax `<lora:name:weight>` tags are taken out of the text (compel's `withLora(name, weight)`
works too), and textual-inversion embeddings are written by their file name, as in A1111.

Only the translation lives here; the embedding math is compel's (encoder.py).
"""

from __future__ import annotations

import math
import re
import threading
from dataclasses import dataclass
from functools import lru_cache

from compel.prompt_parser import (
    Blend,
    Conjunction,
    FlattenedPrompt,
    Fragment,
    PromptParser,
)

from ..errors import BadInput, Unsupported

PARSE_CACHE = 512
# pyparsing's caches are not thread-safe; checks run on the server's loop, jobs on its worker.
_COMPEL_LOCK = threading.Lock()


@dataclass(frozen=True)
class LoraTag:
    name: str
    weight: float


@dataclass(frozen=True)
class Brackets:
    """The weighting brackets of one syntax: opener -> (closer, factor per pair)."""

    pairs: dict[str, tuple[str, float]]
    # The opener whose pair may end in `:weight)` to set the weight instead of the factor.
    explicit: str | None = None


A1111 = Brackets({"(": (")", 1.1), "[": ("]", 1 / 1.1)}, explicit="(")
NOVELAI = Brackets({"{": ("}", 1.05), "[": ("]", 1 / 1.05)})

WeightedChunk = list[tuple[str, float]]

_TOKENS = re.compile(
    r"""
      \\(?P<escaped>[()\[\]{}\\])                          # an escaped bracket or backslash
    | (?P<open>[(\[{])
    | :\s*(?P<weight>[+-]?(?:\d+\.?\d*|\.\d+))\s*\)        # the end of (text:1.3)
    | (?P<close>[)\]}])
    | (?P<text>[^\\()\[\]{}:]+|[:\\])
    """,
    re.VERBOSE,
)
_BREAK = re.compile(r"\s*\bBREAK\b\s*")
_LORA = re.compile(r"<(?:lora|lyco):([^<>]*)>", re.IGNORECASE)


def weighted_chunks(text: str, brackets: Brackets) -> list[WeightedChunk]:
    """`text` as chunks (split at BREAK) of (text, weight) runs, neighbours of equal weight merged.

    Brackets follow A1111's rules: a closer without an opener is text, an opener never closed
    weights everything after it, and pairs may overlap (`(a [b) c]`).
    """
    closers = {closer: opener for opener, (closer, _) in brackets.pairs.items()}
    pieces: list[list] = []  # [text, weight]; a BREAK is [None, 1.0]
    opened: dict[str, list[int]] = {opener: [] for opener in brackets.pairs}

    def weigh_from(start: int, factor: float) -> None:
        for piece in pieces[start:]:
            piece[1] *= factor

    for match in _TOKENS.finditer(text):
        kind, value = match.lastgroup, match.group(match.lastgroup)
        if kind == "escaped":
            pieces.append([value, 1.0])
        elif kind == "open" and value in opened:
            opened[value].append(len(pieces))
        elif kind == "weight" and brackets.explicit and opened[brackets.explicit] and _is_number(value):
            weigh_from(opened[brackets.explicit].pop(), float(value))
        elif kind == "close" and value in closers and opened[closers[value]]:
            opener = closers[value]
            weigh_from(opened[opener].pop(), brackets.pairs[opener][1])
        else:
            for i, part in enumerate(_BREAK.split(match.group(0))):
                if i:
                    pieces.append([None, 1.0])
                pieces.append([part, 1.0])
    for opener, starts in opened.items():
        for start in starts:
            weigh_from(start, brackets.pairs[opener][1])
    return _chunks(pieces)


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _chunks(pieces: list[list]) -> list[WeightedChunk]:
    chunks: list[WeightedChunk] = [[]]
    for text, weight in pieces:
        if text is None:
            chunks.append([])
        elif text:
            chunk = chunks[-1]
            if chunk and chunk[-1][1] == weight:
                chunk[-1] = (chunk[-1][0] + text, weight)
            else:
                chunk.append((text, weight))
    # Whitespace carries no token; compel cannot down-weight a fragment without tokens.
    chunks = [[(t, w) for t, w in chunk if t.strip()] for chunk in chunks]
    return [chunk for chunk in chunks if chunk] or [[]]


def split_loras(text: str, field: str) -> tuple[str, tuple[LoraTag, ...]]:
    """`text` without its `<lora:name:weight>` tags, and the tags (weight 1 when left out)."""
    tags = []
    for match in _LORA.finditer(text):
        parts = [p.strip() for p in match.group(1).split(":")]
        if not parts[0] or len(parts) > 2 or (len(parts) == 2 and not _is_number(parts[1])):
            raise BadInput(f"{field}: {match.group(0)!r} is not a LoRA tag; write <lora:name:0.8>", field)
        tags.append(LoraTag(parts[0], float(parts[1]) if len(parts) == 2 else 1.0))
    return _LORA.sub("", text), tuple(tags)


@dataclass(frozen=True)
class Parsed:
    """One prompt text, read. `conjunction` is compel's structure and is shared: never modify it."""

    text: str  # without LoRA tags
    syntax: str
    loras: tuple[LoraTag, ...]
    conjunction: Conjunction


def parse(text: str, syntax: str, field: str = "prompt") -> Parsed:
    """Read `text` in `syntax`; errors name `field`."""
    clean, loras = split_loras(text, field)
    try:
        conjunction, compel_loras = _conjunction(clean, syntax)
    except PromptParser.ParsingException as exc:
        raise BadInput(f"{field} is not valid {syntax} syntax: {exc}", field) from None
    except _Unsupported as exc:
        raise Unsupported(f"{field}: {exc}", field) from None
    return Parsed(clean, syntax, loras + compel_loras, conjunction)


class _Unsupported(Exception):
    pass


@lru_cache(maxsize=PARSE_CACHE)
def _conjunction(text: str, syntax: str) -> tuple[Conjunction, tuple[LoraTag, ...]]:
    if syntax == "compel":
        return _compel_conjunction(text)
    brackets = NOVELAI if syntax == "novelai" else A1111
    chunks = weighted_chunks(text, brackets)
    return Conjunction([FlattenedPrompt(chunk or [("", 1.0)]) for chunk in chunks]), ()


def _compel_conjunction(text: str) -> tuple[Conjunction, tuple[LoraTag, ...]]:
    try:
        with _COMPEL_LOCK:
            conjunction = _compel_parser().parse_conjunction(text)
    except Exception as exc:  # noqa: BLE001 - pyparsing raises many kinds; all mean "cannot read"
        raise PromptParser.ParsingException(str(exc).splitlines()[0][:200]) from None
    for prompt in conjunction.prompts:
        if isinstance(prompt, FlattenedPrompt) and prompt.wants_cross_attention_control:
            raise _Unsupported(".swap() (cross-attention control) is not supported")
    loras = tuple(LoraTag(str(w.model), float(w.weight)) for w in conjunction.lora_weights)
    return Conjunction(conjunction.prompts, conjunction.weights), loras


@lru_cache(maxsize=1)
def _compel_parser() -> PromptParser:
    # Building compel's grammar takes milliseconds; once is enough.
    return PromptParser()


def _flat_prompts(conjunction: Conjunction) -> list[FlattenedPrompt]:
    flat = []
    for prompt in conjunction.prompts:
        flat.extend(prompt.prompts if isinstance(prompt, Blend) else [prompt])
    return flat


def plain_text(conjunction: Conjunction) -> str:
    """The first part's words without weights: what SDXL's pooled embedding is made from."""
    first = _flat_prompts(conjunction)[0]
    # Runs are tokenized apart, so a space between them keeps the same words.
    return " ".join(f.text.strip() for f in first.children if isinstance(f, Fragment) and f.text.strip())


def names_in(text: str, names: list[str]) -> set[str]:
    """Which of `names` (embedding names) `text` mentions as whole words, any case; lower-cased."""
    pattern = _names_pattern(tuple(sorted({n.lower() for n in names}, key=len, reverse=True)))
    return {m.group(0).lower() for m in pattern.finditer(text)} if pattern else set()


@lru_cache(maxsize=64)
def _names_pattern(names: tuple[str, ...]) -> re.Pattern[str] | None:
    if not names:
        return None
    # Names like `bad-hands-5` contain hyphens, so a hyphen does not end a word here.
    alternatives = "|".join(re.escape(n) for n in names)
    return re.compile(rf"(?<![\w-])(?:{alternatives})(?![\w-])", re.IGNORECASE)


def substitute(conjunction: Conjunction, replacements: dict[str, str]) -> Conjunction:
    """A new conjunction with each whole-word mention of a name (lower-case keys) replaced."""
    pattern = _names_pattern(tuple(sorted(replacements, key=len, reverse=True)))
    if pattern is None:
        return conjunction

    def swap(prompt: FlattenedPrompt) -> FlattenedPrompt:
        return FlattenedPrompt([
            (pattern.sub(lambda m: replacements[m.group(0).lower()], f.text), f.weight) for f in prompt.children
        ])

    parts = [
        Blend([swap(p) for p in part.prompts], part.weights, part.normalize_weights) if isinstance(part, Blend)
        else swap(part)
        for part in conjunction.prompts
    ]
    return Conjunction(parts, conjunction.weights)

