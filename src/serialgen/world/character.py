"""Character appearance: body, clothing, hair, face and accessories (docs/ARCHITECTURE.md, "The world").

A `Character` is drawn once per (seed, character id) and fixes everything about the
appearance; poses, views, backgrounds and expressions vary per sample.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .skeleton import Proportions

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (200, 40, 40), "orange": (235, 125, 35), "yellow": (240, 205, 50),
    "green": (50, 150, 65), "teal": (30, 150, 150), "blue": (45, 90, 200),
    "navy": (30, 40, 90), "purple": (120, 60, 170), "pink": (235, 130, 175),
    "brown": (115, 75, 45), "black": (30, 30, 32), "white": (238, 238, 235),
    "grey": (130, 130, 135), "beige": (215, 195, 155),
}
HAIR_COLORS: dict[str, tuple[int, int, int]] = {
    "black": (25, 22, 22), "brown": (95, 60, 35), "blonde": (225, 190, 110),
    "red": (170, 65, 30), "grey": (170, 170, 170), "blue": (60, 100, 210), "pink": (230, 120, 170),
}
SKIN_TONES = ((255, 220, 195), (240, 195, 160), (215, 165, 125), (180, 125, 90), (140, 95, 65), (100, 65, 45))
EYE_COLORS = ((60, 40, 25), (40, 80, 140), (50, 110, 60), (30, 30, 30))

TOPS = ("t-shirt", "long-sleeve shirt", "jacket", "tank top", "hoodie")
BOTTOMS = ("trousers", "shorts", "skirt")
SHOES = ("sneakers", "boots")
PATTERNS = ("plain", "striped", "checked", "dotted", "logo")
HAIR_STYLES = ("short", "bob", "long", "ponytail", "bun", "spiky", "buzz cut")
HAIR_PHRASE = {
    "short": "short {color} hair", "bob": "a {color} bob", "long": "long {color} hair", "ponytail": "a {color} ponytail",
    "bun": "{color} hair in a bun", "spiky": "spiky {color} hair", "buzz cut": "a buzz cut",
}
ACCESSORIES = ("glasses", "cap")
PLURAL = ("trousers", "shorts", "sneakers", "boots", "glasses")
EXPRESSIONS = ("neutral", "smiling", "surprised", "angry", "sad", "eyes closed")


def with_article(text: str) -> str:
    return ("an " if text[0] in "aeiou" else "a ") + text


@dataclass(frozen=True)
class Garment:
    kind: str
    color: str
    pattern: str = "plain"
    accent: str = "white"  # second colour of the pattern

    def phrase(self) -> str:
        """'a red and white striped t-shirt', 'blue trousers', 'a green jacket with a logo'."""
        if self.pattern == "logo":
            text = f"{self.color} {self.kind} with a logo"
        elif self.pattern == "plain":
            text = f"{self.color} {self.kind}"
        else:
            text = f"{self.color} and {self.accent} {self.pattern} {self.kind}"
        return text if self.kind in PLURAL else with_article(text)


@dataclass(frozen=True)
class Character:
    """Everything that makes one character look like itself."""

    character_id: int
    gender: str  # "female" | "male": only the caption's noun and a few priors follow it
    age: float  # 0 child .. 1 adult
    build: float
    body: Proportions
    skin: tuple[int, int, int]
    eye_color: tuple[int, int, int]
    hair_style: str
    hair_color: str
    top: Garment | None  # None when wearing a dress
    bottom: Garment | None  # None when wearing a dress
    dress: Garment | None
    shoes: Garment
    accessories: tuple[str, ...]
    accessory_color: str

    @staticmethod
    def sample(seed: int, character_id: int) -> Character:
        rng = np.random.default_rng([seed, character_id, 0xC4A2])
        gender = str(rng.choice(["female", "male"]))
        age = float(rng.choice([rng.uniform(0.0, 0.4), rng.uniform(0.6, 1.0)], p=[0.3, 0.7]))
        build = float(rng.uniform(0.8, 1.3))
        colors = list(COLORS)

        def garment(kinds, patterned=True, logo=True):
            color, accent = rng.choice(len(colors), 2, replace=False)
            patterns, p = (PATTERNS, [0.4, 0.15, 0.15, 0.15, 0.15]) if logo else (PATTERNS[:4], [0.4, 0.2, 0.2, 0.2])
            pattern = str(rng.choice(patterns, p=p)) if patterned else "plain"
            return Garment(str(rng.choice(kinds)), colors[color], pattern, colors[accent])

        if rng.random() < (0.3 if gender == "female" else 0.05):
            top = bottom = None
            dress = garment(("dress",))
        else:
            dress = None
            top = garment(TOPS)
            bottom = garment(BOTTOMS, patterned=rng.random() < 0.3, logo=False)  # logos go on the chest
        shoes = garment(SHOES, patterned=False)
        accessories = tuple(a for a, p in zip(ACCESSORIES, (0.2, 0.15)) if rng.random() < p)
        return Character(
            character_id=character_id, gender=gender, age=age, build=build,
            body=Proportions.sample(rng, age, build),
            skin=SKIN_TONES[rng.integers(len(SKIN_TONES))],
            eye_color=EYE_COLORS[rng.integers(len(EYE_COLORS))],
            hair_style=str(rng.choice(HAIR_STYLES)),
            hair_color=str(rng.choice(list(HAIR_COLORS))),
            top=top, bottom=bottom, dress=dress, shoes=shoes,
            accessories=accessories, accessory_color=colors[rng.integers(len(colors))],
        )

    @property
    def age_word(self) -> str:
        if self.age < 0.5:
            return "girl" if self.gender == "female" else "boy"
        return "woman" if self.gender == "female" else "man"

    def describe(self) -> str:
        """Appearance part of a caption, e.g. 'a child with short blonde hair, wearing ...'."""
        build = "slim " if self.build < 0.9 else ("broad " if self.build > 1.2 else "")
        hair = HAIR_PHRASE[self.hair_style].format(color=self.hair_color)
        worn = [self.dress.phrase()] if self.dress else [self.top.phrase(), self.bottom.phrase()]
        worn.append(self.shoes.phrase())
        worn += [with_article(f"{self.accessory_color} cap") if a == "cap" else a for a in self.accessories]
        return f"a {build}{self.age_word} with {hair}, wearing " + ", ".join(worn[:-1]) + " and " + worn[-1]

    def attributes(self) -> dict:
        """Attributes as plain JSON-able values, for captions, metadata and evaluation."""
        d = asdict(self)
        d["age_word"] = self.age_word
        return d
