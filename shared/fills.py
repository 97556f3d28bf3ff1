"""The fill modes of an inpaint (`Generate.fill`) and what each one implies, in one table.

The plugin offers them (plugin/requests.py), the crop rule reads what it needs of the canvas by
them (crop.py), and the server's inpaint mode starts from and prompts by them
(server/modes/inpaint.py). docs/inpaint.md explains each in words. Plain Python, no dependencies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Replaces = Literal["never", "at_full_strength", "always"]


@dataclass(frozen=True)
class Fill:
    name: str
    # Whether the start picture hides what is selected (infilled from the surroundings) so the model
    # paints something new: never, only at strength 1 (below it the selection is refined), or always.
    replaces: Replaces = "never"
    # The selection marks what to keep: the mask is inverted, so a mask that selects nothing is valid.
    inverted: bool = False
    # What it repaints surrounds the selection: the context is the whole canvas, not the crop rule's.
    whole_canvas: bool = False
    # The prompt an empty (or blank) one stands for.
    empty_prompt: str | None = None

    def replaces_content(self, strength: float) -> bool:
        return self.replaces == "always" or (self.replaces == "at_full_strength" and strength >= 1.0)

    def prompt(self, prompt: str) -> str:
        """The prompt this fill paints with, given the one the artist wrote."""
        return self.empty_prompt if self.empty_prompt is not None and not prompt.strip() else prompt


# In the order the plugin offers them; `auto` first, the protocol's default.
FILLS: dict[str, Fill] = {
    fill.name: fill
    for fill in (
        Fill("auto"),  # resolved by `resolve` before anything else is read from it
        Fill("fill", replaces="at_full_strength"),
        Fill("expand"),
        Fill("add"),
        # An empty prompt asks for what is around the object, not for anything new.
        Fill("remove", replaces="always", empty_prompt="background"),
        Fill("replace_background", replaces="at_full_strength", inverted=True, whole_canvas=True),
    )
}
DEFAULT = "auto"


def resolve(name: str, reaches_transparent: bool) -> Fill:
    """The fill an inpaint runs with: `auto` is `expand` where the grown selection reaches transparent
    canvas (outpainting), `fill` elsewhere."""
    if name == "auto":
        name = "expand" if reaches_transparent else "fill"
    return FILLS[name]
