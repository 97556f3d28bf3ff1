"""Prompt syntax translation: A1111, NovelAI and compel text -> (text, weight) runs in compel's structure."""

from __future__ import annotations

import pytest
from compel.prompt_parser import Blend, Conjunction

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
