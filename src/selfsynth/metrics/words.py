"""Word-level helpers the explanation metrics share: content words, clauses, class-name removal, cue words.

Explanation metrics must not reward an answer for naming the class, and must treat "grey bill"
and "gray bills" alike. Everything here works on ``selfsynth.text.normalize`` output, so the same
folding (case, unicode, punctuation) applies to answers, labels and concept phrases.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence

from selfsynth.text import normalize


def _words(block: str) -> frozenset[str]:
    return frozenset(block.split())


# Function words, hedges and answer-template words: none of them is a visual reason on its own.
STOPWORDS = _words(
    """
    a an the this that these those it its it's is are was were be been being am has have had having
    do does did of in on at to from by for with without as and or but so than then there here
    which who whom whose what when where why how i i'm me my we our you your he she his her they
    their them can could would should may might must will shall also very quite rather somewhat
    slightly fairly relatively typically usually often generally mostly mainly sometimes always
    especially particularly notably clearly distinct distinctive distinctively characteristic
    noticeable notable prominent prominently visible clear overall both each either any some all
    one two most more less much many such other own same just only not no yes
    image picture photo photograph photography shown show shows showing see seen look looks looking
    appear appears appearing seems seem like likely probably possibly believe think guess answer
    identify identified identification species breed model variant disease diagnosis finding
    category class type kind object bird dog aircraft plane airplane leaf plant skin lesion chest
    x ray xray scan because since due given based evidence indicates indicate indicating suggests
    suggest suggesting consistent typical feature features visual characteristics characteristic
    trait traits information explain explanation reason reasons therefore thus hence called named
    known name confirm confirms confirming sure certain example
    """
)

# Colour, shape, size, pattern, texture and part words across the supported dataset kinds.
CUE_WORDS = _words(
    """
    red orange yellow green blue purple violet pink brown black white gray grey buff olive tan
    chestnut rufous crimson scarlet golden gold silver cream beige ivory maroon rust cinnamon
    chocolate cobalt turquoise teal lime amber bronze dark light pale bright dull dusky glossy
    iridescent metallic colorful colourful color colour
    round rounded pointed hooked conical curved straight long short thick thin slender stout
    forked notched square squared wedge fan broad narrow tapered tapering flat upturned downcurved
    large small big tiny huge compact sleek bulky elongated oval triangular swept
    striped stripe streak streaked bar barred spot spotted speckled mottled patch patchy ring
    mask masked banded band crest crested edged edge outline border margin tip tipped line lined
    pattern solid plain contrasting uniform scaly marking markings blotch blotchy freckled
    beak bill crown cap head nape neck throat chin cheek face eye eyebrow brow supercilium lore
    wing wingbar wingtip tail rump back mantle breast belly flank side leg foot feet toe claw
    feather plumage ear snout muzzle nose coat fur tongue jaw paw
    fuselage engine propeller cockpit nose rudder fin winglet livery window door landing gear
    tailplane stabilizer vein midrib stem petiole lobe surface underside blight mold mould rot
    rust spotting yellowing wilting necrosis necrotic chlorosis halo powdery fuzzy
    pigment pigmentation network globule dot dots vessel vascular scale scaling asymmetric
    asymmetry irregular regular symmetric regression structure veil ulcer ulceration
    lung lungs opacity opacities consolidation infiltrate effusion lobar diaphragm heart rib ribs
    hazy haze translucent opaque texture smooth rough wrinkled shiny matte
    """
)

# Spelling and near-synonym folding so "grey bill" matches "gray beak".
SYNONYMS = {
    "grey": "gray",
    "colour": "color",
    "colourful": "colorful",
    "bill": "beak",
    "mould": "mold",
}

_CLAUSE_PUNCT = re.compile(r"[.!?;:\n,()\[\]]+")
_SENTENCE_PUNCT = re.compile(r"[.!?;\n]+")
_SPLIT_WORDS = ("and", "but", "with", "while", "whereas", "because", "since", "although", "which")


def stem(word: str) -> str:
    """A tiny plural folder: ``bars -> bar``, ``patches -> patch``, ``bodies -> body``; synonyms folded."""
    w = SYNONYMS.get(word, word)
    if len(w) > 4 and w.endswith("ies"):
        w = w[:-3] + "y"
    elif len(w) > 4 and w.endswith(("ches", "shes", "sses", "xes")):
        w = w[:-2]
    elif len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        w = w[:-1]
    return SYNONYMS.get(w, w)


def content_words(text: str) -> list[str]:
    """Stemmed words of ``text`` that are neither stop nor template words (order kept, repeats kept)."""
    out = []
    for w in normalize(text).split():
        w = w.strip("'")
        if not w or w in STOPWORDS or w.isdigit():
            continue
        s = stem(w)
        if s not in STOPWORDS:
            out.append(s)
    return out


@functools.lru_cache(maxsize=8)
def _label_index(labels: tuple[str, ...]) -> dict[str, list[tuple[str, ...]]]:
    """First word -> the normalised names starting with it, longest first (built once per label set)."""
    index: dict[str, list[tuple[str, ...]]] = {}
    for lab in labels:
        toks = tuple(normalize(lab).split())
        if toks:
            index.setdefault(toks[0], []).append(toks)
    for names in index.values():
        names.sort(key=len, reverse=True)
    return index


def strip_labels(text: str, labels: Sequence[str]) -> str:
    """``text`` normalised with every class-name mention removed (on word boundaries, longest name first).

    Same matching as ``selfsynth.text.mentions`` (too slow to call per clause with hundreds of
    classes), negated mentions included: a class name is never a visual reason.
    """
    words = normalize(text).split()
    index = _label_index(tuple(labels))
    out: list[str] = []
    i = 0
    while i < len(words):
        for toks in index.get(words[i], ()):
            if tuple(words[i : i + len(toks)]) == toks:
                i += len(toks)
                break
        else:
            out.append(words[i])
            i += 1
    return " ".join(out)


def clauses(text: str, split_and: bool = True) -> list[str]:
    """Short clauses of raw ``text``: split at punctuation and at joining words (``and``, ``with``...).

    ``split_and=False`` keeps "and" inside a clause, for phrases such as "black and white tail".
    """
    words = _SPLIT_WORDS if split_and else tuple(w for w in _SPLIT_WORDS if w != "and")
    pattern = re.compile(r"\b(?:" + "|".join(words) + r")\b", re.IGNORECASE)
    out = []
    for part in _CLAUSE_PUNCT.split(text):
        out.extend(p.strip() for p in pattern.split(part) if p.strip())
    return out


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_PUNCT.split(text) if s.strip()]


def concept_vocabulary(phrases: Iterable[str]) -> frozenset[str]:
    """Content words of every concept phrase (the "matches a concept by word overlap" half of EE)."""
    vocab: set[str] = set()
    for p in phrases:
        vocab.update(content_words(p))
    return frozenset(vocab)


CUE_STEMS = frozenset(stem(w) for w in CUE_WORDS)
