"""Attribute-level questions about a sample, for zero-shot and judge accuracies.

`caption_variants` rebuilds a sample's caption from its metadata with one attribute swapped
for each alternative value, so a model's accuracy on that attribute is measured while
everything else in the caption stays true.
"""

from __future__ import annotations

import dataclasses

from .backgrounds import SCENES
from .character import COLORS, EXPRESSIONS, HAIR_COLORS, HAIR_STYLES, Character, Garment
from .generator import VIEWS, CharacterWorld, View
from .poses import ACTIONS
from .skeleton import Proportions

# attribute -> its possible values
ATTRIBUTES = {
    "shirt_color": tuple(COLORS),
    "hair_color": tuple(HAIR_COLORS),
    "action": tuple(a.name for a in ACTIONS),
    "view": VIEWS,
    "background": SCENES,
    "expression": EXPRESSIONS,
}


def character_from_attributes(attributes: dict) -> Character:
    """Inverse of `Character.attributes()`."""
    a = dict(attributes)
    a.pop("age_word", None)
    for key in ("top", "bottom", "dress", "shoes"):
        if a[key] is not None:
            a[key] = Garment(**a[key])
    a["body"] = Proportions(**a["body"])
    a["skin"], a["eye_color"] = tuple(a["skin"]), tuple(a["eye_color"])
    a["accessories"] = tuple(a["accessories"])
    return Character(**a)


def view_from_meta(meta: dict) -> View:
    return View(**{f.name: meta[f.name] for f in dataclasses.fields(View)})


def attribute_value(meta: dict, attribute: str) -> str | None:
    """The true value of `attribute` for a sample (None where the caption does not say it)."""
    attrs = meta["attributes"]
    if attribute == "shirt_color":
        return (attrs["dress"] or attrs["top"])["color"]
    if attribute == "hair_color":
        return None if attrs["hair_style"] == "buzz cut" else attrs["hair_color"]
    return meta[attribute]


def caption_variants(meta: dict, attribute: str) -> tuple[list[str], int]:
    """Captions with `attribute` set to each possible value. -> (captions, index of the truth);
    empty when the caption does not state the attribute."""
    truth = attribute_value(meta, attribute)
    if truth is None:
        return [], -1
    c, v = character_from_attributes(meta["attributes"]), view_from_meta(meta)
    values = [x for x in ATTRIBUTES[attribute]]
    if attribute == "shirt_color":  # a garment's two colours must differ for the phrase to read
        top = c.dress or c.top
        values = [x for x in values if x == top.color or x != top.accent]
    captions = []
    for value in values:
        cc, vv = c, v
        if attribute == "shirt_color":
            field = "dress" if c.dress else "top"
            cc = dataclasses.replace(c, **{field: dataclasses.replace(getattr(c, field), color=value)})
        elif attribute == "hair_color":
            cc = dataclasses.replace(c, hair_color=value)
        else:
            vv = dataclasses.replace(v, **{attribute: value})
        captions.append(CharacterWorld.caption(cc, vv))
    return captions, values.index(truth)


# What the judge's probes read from an image: everything the world varies that a viewer can see.
PROBE_ATTRIBUTES = {
    "top_color": tuple(COLORS),  # the top, or the dress
    "bottom_color": tuple(COLORS),  # none with a dress
    "shoes_color": tuple(COLORS),
    "hair_color": tuple(HAIR_COLORS),
    "hair_style": HAIR_STYLES,
    "action": tuple(a.name for a in ACTIONS),
    "view": VIEWS,
    "background": SCENES,
    "expression": EXPRESSIONS,
}


def probe_value(meta: dict, attribute: str) -> str | None:
    """The true value of a probe attribute (None where the sample has none, e.g. a dress's bottom)."""
    attrs = meta["attributes"]
    if attribute == "top_color":
        return (attrs["dress"] or attrs["top"])["color"]
    if attribute == "bottom_color":
        return attrs["bottom"]["color"] if attrs["bottom"] else None
    if attribute == "shoes_color":
        return attrs["shoes"]["color"]
    if attribute == "hair_color":
        return None if attrs["hair_style"] == "buzz cut" else attrs["hair_color"]
    if attribute == "hair_style":
        return attrs["hair_style"]
    return meta[attribute]


def scene_caption(meta: dict, subject: str = "a character") -> str:
    """The sample's caption with the character's appearance replaced by `subject`: what a user
    writes for a personalized series ("a character, waving, side view, ..., on a beach"), where
    the look comes from the reference image, not the words."""
    caption, appearance = meta["caption"], character_from_attributes(meta["attributes"]).describe()
    if not caption.startswith(appearance):
        raise ValueError(f"caption does not start with the character's description: {caption!r}")
    return subject + caption[len(appearance):]
