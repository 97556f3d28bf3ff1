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
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

import pyparsing
from compel.prompt_parser import (
    Blend,
    Conjunction,
    FlattenedPrompt,
    Fragment,
    PromptParser,
)

from ..errors import BadInput, TooLarge, Unsupported

PARSE_CACHE = 512
# pyparsing's caches are not thread-safe; requests are checked on reading threads, jobs run on the worker.
_COMPEL_LOCK = threading.Lock()
# compel's grammar costs about a millisecond per word even with pyparsing's packrat cache; longer
# prompts in compel syntax are refused rather than read for seconds (a1111 and novelai read 20 000
# characters in milliseconds).
COMPEL_LENGTH = 1000


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

# Possessive quantifiers: a failed match never backtracks, so a long run of digits or spaces is read once.
_TOKENS = re.compile(
    r"""
      \\(?P<escaped>[()\[\]{}\\])                               # an escaped bracket or backslash
    | (?P<open>[(\[{])
    | :\s*+(?P<weight>[+-]?(?:\d++(?:\.\d*+)?|\.\d++))\s*+\)         # the end of (text:1.3)
    | (?P<close>[)\]}])
    | (?P<text>[^\\()\[\]{}:]++|[:\\])
    """,
    re.VERBOSE,
)
_BREAK = re.compile(r"\bBREAK\b")
_LORA = re.compile(r"<(?:lora|lyco):([^<>]*)>", re.IGNORECASE)
# Brackets open at once. Each text run is weighed once per bracket open around it, so this bound keeps
# reading a prompt linear in its length; real prompts nest a handful deep.
MAX_OPEN = 16


class TooManyBrackets(Exception):
    pass


def weighted_chunks(text: str, brackets: Brackets) -> list[WeightedChunk]:
    """`text` as chunks (split at BREAK) of (text, weight) runs, neighbours of equal weight merged.

    Brackets follow A1111's rules: a closer without an opener is text, an opener never closed
    weights everything after it, and pairs may overlap (`(a [b) c]`). More than MAX_OPEN brackets
    open at once raise TooManyBrackets.
    """
    closers = {closer: opener for opener, (closer, _) in brackets.pairs.items()}
    # [texts, weight]: texts read with no bracket between them share one weight, so they share a
    # piece; a BREAK is [None, 1.0].
    pieces: list[list] = []
    opened: dict[str, list[int]] = {opener: [] for opener in brackets.pairs}
    depth = 0
    extendable = False  # whether text may join the last piece: no bracket came since it began

    def weigh_from(start: int, factor: float) -> None:
        nonlocal extendable
        for i in range(start, len(pieces)):
            pieces[i][1] *= factor
        extendable = False

    def add(part: str) -> None:
        nonlocal extendable
        if extendable:
            pieces[-1][0].append(part)
        elif part:
            pieces.append([[part], 1.0])
            extendable = True

    for match in _TOKENS.finditer(text):
        kind, value = match.lastgroup, match.group(match.lastgroup)
        if kind == "escaped":
            add(value)
        elif kind == "open" and value in opened:
            depth += 1
            if depth > MAX_OPEN:
                raise TooManyBrackets
            opened[value].append(len(pieces))
            extendable = False
        elif kind == "weight" and brackets.explicit and opened[brackets.explicit] and _is_number(value):
            depth -= 1
            weigh_from(opened[brackets.explicit].pop(), float(value))
        elif kind == "close" and value in closers and opened[closers[value]]:
            opener = closers[value]
            depth -= 1
            weigh_from(opened[opener].pop(), brackets.pairs[opener][1])
        else:
            for i, part in enumerate(_split_breaks(match.group(0))):
                if i:
                    pieces.append([None, 1.0])
                    extendable = False
                add(part)
    for opener, starts in opened.items():
        for start in starts:
            weigh_from(start, brackets.pairs[opener][1])
    return _chunks(pieces)


def _split_breaks(text: str) -> list[str]:
    """`text` split at each BREAK, the whitespace around a BREAK belonging to neither side."""
    parts = _BREAK.split(text)
    if len(parts) == 1:
        return parts
    return [parts[0].rstrip(), *(part.strip() for part in parts[1:-1]), parts[-1].lstrip()]


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _chunks(pieces: list[list]) -> list[WeightedChunk]:
    chunks: list[list[list]] = [[]]
    for texts, weight in pieces:
        if texts is None:
            chunks.append([])
            continue
        chunk = chunks[-1]
        if chunk and chunk[-1][1] == weight:
            chunk[-1][0].extend(texts)
        else:
            chunk.append([list(texts), weight])
    # Whitespace carries no token; compel cannot down-weight a fragment without tokens.
    joined = [[(text, weight) for texts, weight in chunk if (text := "".join(texts)).strip()] for chunk in chunks]
    return [chunk for chunk in joined if chunk] or [[]]


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


# The time by which the prompts being read on this thread must be read (time_budget()).
_reading = threading.local()


@contextmanager
def time_budget(seconds: float) -> Iterator[None]:
    """Within the block, parse() on this thread raises TooLarge once `seconds` have passed: checked
    before each prompt and, inside compel's parser, at each step of its grammar."""
    _reading.deadline = time.monotonic() + seconds
    _reading.seconds = seconds
    try:
        yield
    finally:
        _reading.deadline = None


def parse(text: str, syntax: str, field: str = "prompt") -> Parsed:
    """Read `text` in `syntax`; errors name `field`."""
    clean, loras = split_loras(text, field)
    if syntax == "compel" and len(clean) > COMPEL_LENGTH:
        raise TooLarge(f"{field} is {len(clean)} characters; prompts in compel syntax are read up to "
                       f"{COMPEL_LENGTH} (a1111 and novelai syntax take longer ones)", field)
    try:
        _check_time()
        if syntax == "compel" and _nesting(clean) > MAX_OPEN:
            raise TooManyBrackets  # compel's grammar costs more per character the deeper it nests
        conjunction, compel_loras = _conjunction(clean, syntax)
    except PromptParser.ParsingException as exc:
        raise BadInput(f"{field} is not valid {syntax} syntax: {exc}", field) from None
    except _Unsupported as exc:
        raise Unsupported(f"{field}: {exc}", field) from None
    except TooManyBrackets:
        raise BadInput(f"{field} has more than {MAX_OPEN} brackets open at once; close some, or write a "
                       "bracket that is text as \\( or \\[", field) from None
    except _OutOfTime:
        raise TooLarge(f"reading the prompts took more than {_reading.seconds:g} s, the most allowed; "
                       f"{field} was being read: shorten it", field) from None
    return Parsed(clean, syntax, loras + compel_loras, conjunction)


def _nesting(text: str) -> int:
    """How deep unescaped parentheses nest in `text`."""
    deepest = depth = 0
    for match in _PARENTHESES.finditer(text):
        depth = depth + 1 if match.group() == "(" else max(0, depth - 1)
        deepest = max(deepest, depth)
    return deepest


_PARENTHESES = re.compile(r"(?<!\\)[()]")


class _Unsupported(Exception):
    pass


class _OutOfTime(Exception):
    pass


def _check_time(*_: object) -> None:
    deadline = getattr(_reading, "deadline", None)
    if deadline is not None and time.monotonic() > deadline:
        raise _OutOfTime


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
    except _OutOfTime:
        raise
    except Exception as exc:  # noqa: BLE001 - pyparsing raises many kinds; all mean "cannot read"
        raise PromptParser.ParsingException(str(exc).splitlines()[0][:200]) from None
    for prompt in conjunction.prompts:
        if isinstance(prompt, FlattenedPrompt) and prompt.wants_cross_attention_control:
            raise _Unsupported(".swap() (cross-attention control) is not supported")
    loras = tuple(LoraTag(str(w.model), float(w.weight)) for w in conjunction.lora_weights)
    return Conjunction(conjunction.prompts, conjunction.weights), loras


@lru_cache(maxsize=1)
def _compel_parser() -> PromptParser:
    """compel's parser (building its grammar takes milliseconds; once is enough), made to keep time."""
    # Without packrat caching compel's grammar backtracks exponentially in the nesting depth: 8 nested
    # parentheses took 150 s. pyparsing's switch is process-wide; nothing else here uses pyparsing.
    pyparsing.ParserElement.enable_packrat()
    parser = PromptParser()
    # Its recursive rules are tried at every step of a parse, so the time budget is checked there.
    for element in _elements(parser.conjunction):
        if isinstance(element, pyparsing.Forward):
            element.set_debug_actions(_check_time, _quiet, _quiet)
    return parser


def _quiet(*_: object) -> None:
    return None


def _elements(root: pyparsing.ParserElement) -> list[pyparsing.ParserElement]:
    seen: dict[int, pyparsing.ParserElement] = {}
    stack = [root]
    while stack:
        element = stack.pop()
        if id(element) not in seen:
            seen[id(element)] = element
            stack.extend(element.recurse())
    return list(seen.values())


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

