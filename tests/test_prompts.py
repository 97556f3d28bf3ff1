"""Prompt syntax translation: A1111, NovelAI and compel text -> (text, weight) runs in compel's structure."""

from __future__ import annotations

import gc
import re
import sys
import time

import pytest
from compel.prompt_parser import Blend, Conjunction
from hypothesis import given, settings
from hypothesis import strategies as st

from server.conditioning import prompts
from server.errors import RequestError

UP, DOWN = 1.1, 1 / 1.1  # A1111's factors per bracket pair
NAI_UP, NAI_DOWN = 1.05, 1 / 1.05


def approx(chunks):
    return [[(text, pytest.approx(weight)) for text, weight in chunk] for chunk in chunks]


def fragments(conjunction: Conjunction) -> list[list[tuple[str, float]]]:
    """The (text, weight) runs compel is handed, per part of the conjunction (blends flattened)."""
    parts = [p for part in conjunction.prompts for p in (part.prompts if isinstance(part, Blend) else [part])]
    return [[(f.text, f.weight) for f in part.children] for part in parts]


# The examples of A1111's wiki and its parser's own documentation; runs that are only whitespace
# are left out (they hold no token).
A1111_CASES = [
    ("normal text", [[("normal text", 1.0)]]),
    ("an (important) word", [[("an ", 1.0), ("important", UP), (" word", 1.0)]]),
    ("(unbalanced", [[("unbalanced", UP)]]),
    ("\\(literal\\]", [[("(literal]", 1.0)]]),
    ("(unnecessary)(parens)", [[("unnecessaryparens", UP)]]),
    ("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
     [[("a ", 1.0), ("house", 1.3 * UP * UP), ("on", 1.0), (" a ", UP), ("hill", 0.5 * UP), (", sun, ", UP),
       ("sky", UP**4), (".", UP)]]),
    ("((word))", [[("word", UP * UP)]]),
    ("[word]", [[("word", DOWN)]]),
    ("[[word]]", [[("word", DOWN * DOWN)]]),
    ("(word:1.3)", [[("word", 1.3)]]),
    ("(word: 0.5 )", [[("word", 0.5)]]),
    ("((word:1.5))", [[("word", 1.5 * UP)]]),
    ("[(word:1.5)]", [[("word", 1.5 * DOWN)]]),
    ("(a [b] c)", [[("a ", UP), ("b", UP * DOWN), (" c", UP)]]),
    ("(a [b) c]", [[("a ", UP), ("b", 1.0), (" c", DOWN)]]),  # overlapping pairs, as A1111 reads them
    ("closing) without] opening", [[("closing) without] opening", 1.0)]]),
    ("x:1.3) alone", [[("x:1.3) alone", 1.0)]]),
    ("(x:1.0)", [[("x", 1.0)]]),
    ("a (x:1.0) b", [[("a x b", 1.0)]]),
    ("{curly} braces", [[("{curly} braces", 1.0)]]),
    ("smile :) ok", [[("smile :) ok", 1.0)]]),
    ("back\\\\slash", [[("back\\slash", 1.0)]]),
    ("a BREAK b", [[("a", 1.0)], [("b", 1.0)]]),
    ("(a BREAK b)", [[("a", UP)], [("b", UP)]]),
    ("BREAK a", [[("a", 1.0)]]),
    ("aBREAK b BREAKING", [[("aBREAK b BREAKING", 1.0)]]),
    ("", [[]]),
]


@pytest.mark.parametrize(("text", "expected"), A1111_CASES)
def test_a1111(text, expected):
    assert prompts.weighted_chunks(text, prompts.A1111) == approx(expected)


NOVELAI_CASES = [
    ("{word}", [[("word", NAI_UP)]]),
    ("{{word}}", [[("word", NAI_UP**2)]]),
    ("{{{word}}}", [[("word", NAI_UP**3)]]),
    ("[word]", [[("word", NAI_DOWN)]]),
    ("[[word]]", [[("word", NAI_DOWN**2)]]),
    ("{a [b] c}", [[("a ", NAI_UP), ("b", 1.0), (" c", NAI_UP)]]),
    ("(parens) are text", [[("(parens) are text", 1.0)]]),
    ("(word:1.3)", [[("(word:1.3)", 1.0)]]),
    ("\\{literal\\}", [[("{literal}", 1.0)]]),
    ("{unclosed", [[("unclosed", NAI_UP)]]),
    ("{a BREAK b}", [[("a", NAI_UP)], [("b", NAI_UP)]]),
]


@pytest.mark.parametrize(("text", "expected"), NOVELAI_CASES)
def test_novelai(text, expected):
    assert prompts.weighted_chunks(text, prompts.NOVELAI) == approx(expected)


@pytest.mark.parametrize(("text", "syntax", "expected"), [
    ("a (cat:1.2) BREAK dog", "a1111", [[("a ", 1.0), ("cat", 1.2)], [("dog", 1.0)]]),
    ("a {cat}", "novelai", [[("a ", 1.0), ("cat", 1.05)]]),
    ("a cat+ (dog)0.5", "compel", [[("a", 1.0), ("cat", 1.1), ("dog", 0.5)]]),
    ('("a cat", "a dog").and()', "compel", [[("a cat", 1.0)], [("a dog", 1.0)]]),
    ("", "a1111", [[("", 1.0)]]),
    ("", "compel", [[("", 1.0)]]),
])
def test_parse_gives_compel_structure(text, syntax, expected):
    assert fragments(prompts.parse(text, syntax).conjunction) == approx(expected)


def test_weight_one_is_the_plain_prompt():
    plain = prompts.parse("a red x on grass", "a1111").conjunction
    assert fragments(prompts.parse("a red (x:1.0) on grass", "a1111").conjunction) == fragments(plain)


@pytest.mark.parametrize(("text", "clean", "loras"), [
    ("a cat <lora:ink:0.8>", "a cat ", (("ink", 0.8),)),
    ("<lora:ink> a cat", " a cat", (("ink", 1.0),)),
    ("<lora:ink:0.5>, <LORA:paper style:-0.25> cat", ",  cat", (("ink", 0.5), ("paper style", -0.25))),
    ("<lyco:grain:1.2>x", "x", (("grain", 1.2),)),
    ("no tags <3", "no tags <3", ()),
])
def test_lora_tags_are_taken_out(text, clean, loras):
    assert prompts.split_loras(text, "prompt") == (clean, tuple(prompts.LoraTag(n, w) for n, w in loras))


@pytest.mark.parametrize("tag", ["<lora::0.5>", "<lora:ink:heavy>", "<lora:ink:0.5:0.3>", "<lora:ink:nan>"])
def test_malformed_lora_tags_name_the_field(tag):
    with pytest.raises(RequestError) as caught:
        prompts.parse(f"a cat {tag}", "a1111", "regions[1].prompt")
    assert (caught.value.code, caught.value.field) == ("bad_request", "regions[1].prompt")
    assert tag in caught.value.message


def test_lora_tags_in_every_syntax_and_compel_with_lora():
    assert prompts.parse("{a} <lora:ink:0.3>", "novelai").loras == (prompts.LoraTag("ink", 0.3),)
    parsed = prompts.parse("a cat withLora(ink, 0.6) <lora:paper:1>", "compel")
    assert set(parsed.loras) == {prompts.LoraTag("ink", 0.6), prompts.LoraTag("paper", 1.0)}
    assert fragments(parsed.conjunction) == [[("a cat", 1.0)]]


def test_compel_errors():
    with pytest.raises(RequestError) as swap:
        prompts.parse("a cat.swap(dog)", "compel", "negative_prompt")
    assert (swap.value.code, swap.value.field) == ("unsupported", "negative_prompt")
    with pytest.raises(RequestError) as blend:
        prompts.parse('("a", "b").blend(1, 2, 3)', "compel")
    assert (blend.value.code, blend.value.field) == ("bad_request", "prompt")


@pytest.mark.parametrize(("text", "found"), [
    ("a photo, EasyNegative, blurry", {"easynegative"}),
    ("(easynegative:1.2)", {"easynegative"}),
    ("easynegative-v2 and noteasynegative", set()),
    ("bad-hands-5 and easynegative", {"bad-hands-5", "easynegative"}),
    ("nothing here", set()),
])
def test_embedding_names_are_whole_words_in_any_case(text, found):
    assert prompts.names_in(text, ["EasyNegative", "bad-hands-5", "easynegative-v3"]) == found


def test_substitute_replaces_names_inside_weighted_runs():
    conjunction = prompts.parse("a (EasyNegative:1.2), easynegatives BREAK easynegative", "a1111").conjunction
    swapped = prompts.substitute(conjunction, {"easynegative": "<ti> <ti>_1"})
    assert fragments(swapped) == approx([[("a ", 1.0), ("<ti> <ti>_1", 1.2), (", easynegatives", 1.0)],
                                                 [("<ti> <ti>_1", 1.0)]])
    assert fragments(conjunction)[0][1] == ("EasyNegative", pytest.approx(1.2))  # cached parse untouched


def test_plain_text_for_the_pooled_embedding():
    assert prompts.plain_text(prompts.parse("a (red:1.3) [cat] BREAK more", "a1111").conjunction) == "a red cat"


# --- hostile prompts: the same weights as A1111's rules, in time linear in the length -----------------


def reference_chunks(text: str, brackets: prompts.Brackets) -> list[list[tuple[str, float]]]:
    """A1111's rules read the plain way (each closing bracket re-weighs everything after its opener,
    quadratic in the number of brackets): what the server's reading must agree with, weight for weight."""
    tokens = re.compile(r"\\(?P<escaped>[()\[\]{}\\])|(?P<open>[(\[{])|:\s*(?P<weight>[+-]?(?:\d+\.?\d*|\.\d+))\s*\)"
                        r"|(?P<close>[)\]}])|(?P<text>[^\\()\[\]{}:]+|[:\\])")
    closers = {closer: opener for opener, (closer, _) in brackets.pairs.items()}
    pieces, opened = [], {opener: [] for opener in brackets.pairs}

    def weigh_from(start, factor):
        for piece in pieces[start:]:
            piece[1] *= factor

    for match in tokens.finditer(text):
        kind, value = match.lastgroup, match.group(match.lastgroup)
        if kind == "escaped":
            pieces.append([value, 1.0])
        elif kind == "open" and value in opened:
            opened[value].append(len(pieces))
        elif kind == "weight" and brackets.explicit and opened[brackets.explicit] and prompts._is_number(value):
            weigh_from(opened[brackets.explicit].pop(), float(value))
        elif kind == "close" and value in closers and opened[closers[value]]:
            weigh_from(opened[closers[value]].pop(), brackets.pairs[closers[value]][1])
        else:
            for i, part in enumerate(re.split(r"\s*\bBREAK\b\s*", match.group(0))):
                if i:
                    pieces.append([None, 1.0])
                pieces.append([part, 1.0])
    for opener, starts in opened.items():
        for start in starts:
            weigh_from(start, brackets.pairs[opener][1])
    chunks = [[]]
    for text_, weight in pieces:
        if text_ is None:
            chunks.append([])
        elif text_:
            if chunks[-1] and chunks[-1][-1][1] == weight:
                chunks[-1][-1] = (chunks[-1][-1][0] + text_, weight)
            else:
                chunks[-1].append((text_, weight))
    chunks = [[(t, w) for t, w in chunk if t.strip()] for chunk in chunks]
    return [chunk for chunk in chunks if chunk] or [[]]


PROMPT_PIECES = st.sampled_from(["(", ")", "[", "]", "{", "}", "\\(", "\\]", "\\\\", ":", ":1.3)", ": 0.5 )",
                                 ":-2)", ":.)", ":1e3)", "a", "red cat", " ", "  ", ",", "BREAK", " BREAK ",
                                 "xBREAK", "1", "<lora:ink:0.5>", "<lora:", ">", "\n"])
PROMPT_TEXT = st.lists(PROMPT_PIECES, max_size=40).map("".join)
SYNTAXES = {"a1111": prompts.A1111, "novelai": prompts.NOVELAI}


@settings(max_examples=400, deadline=None, database=None)
@given(PROMPT_TEXT, st.sampled_from(sorted(SYNTAXES)))
def test_random_prompts_read_as_a1111_reads_them(text, syntax):
    try:
        chunks = prompts.weighted_chunks(text, SYNTAXES[syntax])
    except prompts.TooManyBrackets:
        return
    assert chunks == reference_chunks(text, SYNTAXES[syntax])  # the very same floats


@settings(max_examples=200, deadline=None, database=None)
@given(st.lists(st.sampled_from(["a", "red cat", " ", ",", "x:y", "1.5"]), min_size=1, max_size=10).map("".join))
def test_weight_one_changes_nothing_whatever_the_words(words):
    assert fragments(prompts.parse(f"a ({words}:1.0) b", "a1111").conjunction) == \
        fragments(prompts.parse(f"a {words} b", "a1111").conjunction)


def lines_run(text: str, syntax: str) -> int:
    """Python lines run to read `text`: its reading time as a count that the machine's load cannot change."""
    prompts._conjunction.cache_clear()
    count = 0

    def trace(frame, event, arg):
        nonlocal count
        count += 1
        return trace

    previous = sys.gettrace()
    sys.settrace(trace)
    try:
        prompts.parse(text, syntax)
    except RequestError:
        pass
    finally:
        sys.settrace(previous)
    return count


@settings(max_examples=60, deadline=None, database=None)
@given(st.lists(PROMPT_PIECES, min_size=1, max_size=8).map("".join), st.sampled_from(["a1111", "novelai"]))
def test_reading_takes_time_linear_in_the_length(fragment, syntax):
    once, twice = lines_run(fragment * 40, syntax), lines_run(fragment * 80, syntax)
    assert twice <= 2.2 * once + 200, (once, twice)


COMPEL_PIECES = st.sampled_from(["(", ")", "a", "cat", " ", "+", "-", "++", "1.2", ",", '"', "(a)1.3", ".and()",
                                 '("a", "b").blend(1, 1)', "withLora(ink, 0.5)", "\\(", ".", ")-"])


def calls_made(text: str) -> int:
    """Python functions called to read `text` in compel syntax (pyparsing's work is all calls)."""
    prompts._conjunction.cache_clear()
    count = 0

    def profile(frame, event, arg):
        nonlocal count
        count += event == "call"

    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        prompts.parse(text, "compel")
    except RequestError:
        pass
    finally:
        sys.setprofile(previous)
    return count


@settings(max_examples=25, deadline=None, database=None)
@given(st.lists(COMPEL_PIECES, min_size=1, max_size=6).map("".join))
def test_compel_reading_takes_time_linear_in_the_length(fragment):
    # Nesting deepens with the repeats (a deeper prompt costs more per character) until it is refused.
    short, long = calls_made(fragment * 8), calls_made(fragment * 32)
    assert long <= 5 * short + 5000, (fragment, short, long)


@pytest.mark.parametrize("depth", [6, 8, 12])
def test_nested_compel_parentheses_are_read_at_once(depth):
    # pyparsing without its packrat cache backtracked exponentially: 8 levels took 150 s.
    nested = "(" * depth + "cat" + ")1.1" * depth
    assert calls_made(nested) < 20 * calls_made("(cat)1.1")


# The frame: distinct 20 000-character prompts of unclosed brackets, and the worst the limits allow.
WORST_CASES = {
    "unclosed brackets": "(a" * 10_000,
    "the deepest nesting allowed, then pairs": "(" * (prompts.MAX_OPEN - 1) + "(a)" * 6_650,
    "a run of spaces": "a" + " " * 19_998 + "b",
    "a long number after a colon": "(x:" + "1" * 19_997,
    "BREAK after BREAK": "a BREAK " * 2_500,
}


@pytest.mark.parametrize("text", WORST_CASES.values(), ids=WORST_CASES)
def test_the_worst_20000_characters_are_read_in_milliseconds(text):
    # Generous: a few tens of milliseconds at worst here; the quadratic reading took seconds. Garbage
    # collection is held off: a full collection of a test session's objects alone can take 0.5 s.
    gc.collect()
    gc.disable()
    try:
        started = time.thread_time()
        try:
            prompts.parse(text, "a1111")
        except RequestError as exc:
            assert (exc.code, exc.field) == ("bad_request", "prompt") and "16 brackets" in exc.message
        spent = time.thread_time() - started
    finally:
        gc.enable()
    assert spent < 0.5


def test_long_compel_prompts_and_slow_reading_are_too_large():
    with pytest.raises(RequestError) as long:
        prompts.parse("a " * 600, "compel", "regions[3].prompt")
    assert (long.value.code, long.value.field) == ("too_large", "regions[3].prompt")
    prompts._conjunction.cache_clear()
    with prompts.time_budget(0.05), pytest.raises(RequestError) as slow:
        prompts.parse('"ab" ' * 199, "compel", "negative_prompt")  # about a second of pyparsing
    assert (slow.value.code, slow.value.field) == ("too_large", "negative_prompt")
    assert "0.05 s" in slow.value.message
