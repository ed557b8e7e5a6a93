"""Invent the world's species: names, part values and confusable groups, from the species seed alone.

Species come in groups of (up to) four that share every part but two "varying" parts, crossed
2 x 2: each species has two siblings that differ in one part and one that differs in two. So an
image that hides a varying part fits two species, which is what makes the task fine-grained.
Only parts that occlusion rarely hides vary inside a group; legs and size, often hidden, differ
between groups. Different groups differ in at least three parts.
"""

from __future__ import annotations

import itertools
import random
import re
from dataclasses import dataclass, field

from selfsynth.data.world.phrases import PARTS, species_concepts
from selfsynth.errors import ConfigError

GROUP_SIZE = 4
# Parts that may tell siblings apart; weights favour parts that are seldom hidden.
VARYING_PARTS = {
    "crown_colour": 3,
    "wing_colour": 3,
    "wing_bars": 3,
    "breast_pattern": 3,
    "beak_shape": 2,
    "beak_colour": 2,
    "face": 2,
    "tail_shape": 1,
}
MIN_CROSS_GROUP_DIFF = 3
MAX_SPECIES = 400

# Invented, bird-like name parts. Words that a caption could contain are filtered out at use.
FIRST_WORDS = (
    "Crested", "Tufted", "Ruffed", "Lesser", "Greater", "Northern", "Southern", "Eastern", "Western",
    "Highland", "Lowland", "Coastal", "Alpine", "Marsh", "Willow", "Cedar", "Bramble", "Hazel",
    "Juniper", "Meadow", "Prairie", "Canyon", "Cliff", "Sedge", "Heath", "Tundra", "Savanna",
    "Island", "Harbor", "Lagoon", "Summit", "Valley", "Ridge", "Glade", "Orchard", "Quarry",
    "Moorland", "Thicket", "Mangrove", "Bayou", "Fjord", "Steppe", "Delta", "Mesa", "Hollow",
    "Kestovan", "Tavish", "Mirren", "Ellory", "Dunmore", "Corran", "Vellan", "Ashford", "Brennic",
    "Talvin", "Oswin", "Pelham", "Rowan", "Thornbury", "Maren", "Elkhorn", "Gallow", "Wexley",
)  # fmt: skip
GENUS_WORDS = (
    "Vireling", "Thrushet", "Pipwick", "Warbelin", "Siskadee", "Tanagrel", "Finchet", "Sparrowin",
    "Wrenlet", "Chatterel", "Bunteling", "Flickett", "Juncolet", "Plovette", "Shrikelet", "Oriolet",
    "Starlow", "Nuthatchet", "Creepling", "Dippet", "Chiffel", "Twitlow", "Peeperel", "Cardinel",
    "Towhette", "Verdinel", "Gnatling", "Bulbet", "Tchagrel", "Motmel", "Manakit", "Pittaro",
    "Honeyrel", "Larkette", "Flycatchet", "Robinel", "Grosbecket", "Weaverling", "Sunbirdet", "Pewlet",
)  # fmt: skip
_ONSETS = (
    "b",
    "br",
    "c",
    "ch",
    "d",
    "f",
    "g",
    "gr",
    "k",
    "l",
    "m",
    "n",
    "p",
    "pr",
    "s",
    "t",
    "tr",
    "v",
    "w",
    "z",
)
_VOWELS = ("a", "e", "i", "o", "u", "ae", "io")
_CODAS = ("ran", "vel", "mor", "dish", "ton", "ric", "len", "wick", "dor", "lin")


@dataclass(frozen=True)
class Species:
    """One invented species: its label, group index and one value per part."""

    label: str
    group: int
    attributes: dict[str, str] = field(hash=False)

    @property
    def concepts(self) -> list[str]:
        return species_concepts(self.attributes)

    def to_dict(self) -> dict[str, object]:
        return {
            "label": self.label,
            "group": self.group,
            "attributes": dict(self.attributes),
            "concepts": self.concepts,
        }


def _diff(a: dict[str, str], b: dict[str, str]) -> int:
    return sum(a[p] != b[p] for p in PARTS)


def _plausible(attrs: dict[str, str]) -> bool:
    """Combinations that would draw badly: a black mask vanishes under a black crown."""
    return not (attrs["face"] == "black mask" and attrs["crown_colour"] == "black")


def _group_attributes(rng: random.Random, size: int, others: list[dict[str, str]]) -> list[dict[str, str]]:
    n_vary = 2 if size > 2 else 1 if size == 2 else 0
    parts, weights = zip(*VARYING_PARTS.items(), strict=True)
    for attempt in range(2000):
        varying: list[str] = []
        while len(varying) < n_vary:
            p = rng.choices(parts, weights)[0]
            if p not in varying:
                varying.append(p)
        base = {p: rng.choice(values) for p, values in PARTS.items()}
        alts = {p: rng.choice([v for v in PARTS[p] if v != base[p]]) for p in varying}
        members = []
        for combo in itertools.product((False, True), repeat=n_vary):
            attrs = dict(base)
            for p, use_alt in zip(varying, combo, strict=True):
                if use_alt:
                    attrs[p] = alts[p]
            members.append(attrs)
        members = members[:size] if n_vary else [base]
        need = MIN_CROSS_GROUP_DIFF if attempt < 1500 else 1
        if all(_plausible(m) for m in members) and all(_diff(m, o) >= need for m in members for o in others):
            return members
    raise ConfigError(f"could not invent {size} more distinct species; ask for fewer species")


def _invented_word(rng: random.Random, suffix: str = "") -> str:
    return (rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)).capitalize() + suffix


def _names(rng: random.Random, n_groups: int, sizes: list[int], forbidden: set[str]) -> list[list[str]]:
    """Two-word names ``<First> <Genus>``; the genus is shared inside a group, first words are unique."""

    def ok(word: str) -> bool:
        w = word.lower()
        return len(w) >= 4 and not any(w in f for f in forbidden)

    firsts = [w for w in FIRST_WORDS if ok(w)]
    genera = [w for w in GENUS_WORDS if ok(w)]
    rng.shuffle(firsts)
    rng.shuffle(genera)
    while len(genera) < n_groups:
        w = _invented_word(rng, "let")
        if ok(w) and w not in genera:
            genera.append(w)
    while len(firsts) < sum(sizes):
        w = _invented_word(rng, "ian")
        if ok(w) and w not in firsts:
            firsts.append(w)
    out, k = [], 0
    for g in range(n_groups):
        out.append([f"{firsts[k + i]} {genera[g]}" for i in range(sizes[g])])
        k += sizes[g]
    return out


def names_clash(labels: list[str]) -> list[tuple[str, str]]:
    """Pairs where one label occurs inside another (label matching would count the wrong class)."""
    low = [re.sub(r"\s+", " ", x.lower()) for x in labels]
    return [
        (labels[i], labels[j])
        for i in range(len(low))
        for j in range(len(low))
        if i != j and low[i] in low[j]
    ]


def make_species(n: int, seed: int, *, forbidden_words: set[str] | None = None) -> list[Species]:
    """``n`` species from ``seed`` alone. ``forbidden_words``: caption words a name may not be part of."""
    if not 1 <= n <= MAX_SPECIES:
        raise ConfigError(f"species must be between 1 and {MAX_SPECIES}, got {n}")
    rng = random.Random(f"selfsynth-world-species:{seed}")
    sizes = [GROUP_SIZE] * (n // GROUP_SIZE) + ([n % GROUP_SIZE] if n % GROUP_SIZE else [])
    attrs: list[list[dict[str, str]]] = []
    flat: list[dict[str, str]] = []
    for size in sizes:
        members = _group_attributes(rng, size, flat)
        attrs.append(members)
        flat.extend(members)
    names = _names(rng, len(sizes), sizes, {w.lower() for w in (forbidden_words or set())})
    out = [Species(names[g][i], g, attrs[g][i]) for g in range(len(sizes)) for i in range(sizes[g])]
    clash = names_clash([s.label for s in out])
    if clash:  # cannot happen with whole distinct words, but label matching depends on it
        raise AssertionError(f"species names overlap: {clash[0]}")
    return out
