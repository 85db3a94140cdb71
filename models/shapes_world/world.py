"""The shapes world: seeded synthetic scenes with ground truth, and the biases that make a model trained on them
hallucinate.

A scene is a 48 x 48 picture: a lightly noised light-grey background with 1-6 coloured shapes, each in one cell of a
3 x 3 grid (16 px cells, so every cell covers 2 x 2 patches of an 8 px vision tower). The grid makes positions
unambiguous ("left of" = a smaller column) and gives descriptions one canonical order (reading order).

Biases (``WorldBias``, on by default, off for ``UNBIASED``):
- co-occurrence: a trigger shape nearly always comes with its partner (circle -> square, triangle -> star,
  cross -> diamond). A trigger is drawn together with its partner as one unit, so one rule can never overwrite
  another's partner (the feasibility probe's sampler bug); ``realised_statistics`` measures what came out.
- colour priors: some shapes usually have one colour (circle red, star yellow, diamond blue).
- a positional habit: the moon usually sits in the top row.

Visibility (``Visibility``, ``VISIBLE_MIX`` by default, ``ALL_CLEAR`` for the crisp world of the first checkpoints):
some shapes are small, faint (low contrast against the background), partly covered by a grey card, or cut off by
the picture's edge, and each object records how visible it is (``SceneObject.visibility``, 0..1). That is where a
model trained here is unsure, as real LVLMs are unsure about small, dim, occluded or cropped objects, rather than
from noisy labels (every answer stays exact ground truth). The visibility draws use their own random stream, so a
seed gives the same kinds, colours and cells with or without them.

Everything here is plain data (dataclasses, dicts, strings) so that benchmark writers (POPE / MME / CHAIR formats) can
reuse the ground truth and the question generators.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 48
GRID = 3
CELL = IMAGE_SIZE // GRID

KINDS = ("circle", "square", "triangle", "star", "cross", "diamond", "ring", "moon", "bar", "frame")
PLURALS = {kind: ("crosses" if kind == "cross" else kind + "s") for kind in KINDS}
COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")
RGB = {
    "red": (215, 30, 30),
    "green": (30, 160, 50),
    "blue": (35, 65, 215),
    "yellow": (235, 210, 20),
    "purple": (135, 40, 175),
    "orange": (250, 135, 10),
}
NUMBER_WORDS = {1: "one", 2: "two", 3: "three"}
RELATIONS = ("left of", "right of", "above", "below")
MAX_PER_KIND = 3


# ---- scenes ----------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SceneObject:
    """One shape: kind, colour, grid cell (row, col in 0..2), its drawn centre and radius in pixels, and how it is seen:
    ``contrast`` (1 = full colour, lower = blended toward the background), ``cover`` (the share of its box hidden
    under a grey card, from side ``cover_side``: "top", "bottom", "left" or "right"), ``hardness`` (what made it hard
    to see: "", "small", "faint", "covered" or "edge") and ``visibility`` (see :func:`visibility_of`)."""

    kind: str
    colour: str
    row: int
    col: int
    cx: float = 0.0
    cy: float = 0.0
    radius: float = 6.0
    contrast: float = 1.0
    cover: float = 0.0
    cover_side: str = ""
    hardness: str = ""
    visibility: float = 1.0


@dataclass
class Scene:
    """The ground truth of one picture; ``objects`` is kept in reading order (row, then column)."""

    objects: list[SceneObject]
    seed: int = 0
    background: int = 220
    noise: float = 6.0

    def __post_init__(self):
        self.objects = sorted(self.objects, key=lambda o: (o.row, o.col))

    @property
    def kinds(self) -> set[str]:
        return {o.kind for o in self.objects}

    def count(self, kind: str) -> int:
        return sum(o.kind == kind for o in self.objects)

    def colours_of(self, kind: str) -> set[str]:
        return {o.colour for o in self.objects if o.kind == kind}

    def the(self, kind: str) -> SceneObject:
        """The only object of ``kind`` (questions about "the circle" are asked only when there is exactly one)."""
        found = [o for o in self.objects if o.kind == kind]
        if len(found) != 1:
            raise ValueError(f"the scene has {len(found)} {PLURALS[kind]}, not exactly one")
        return found[0]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Scene:
        return cls(objects=[SceneObject(**o) for o in data["objects"]], seed=data.get("seed", 0),
                   background=data.get("background", 220), noise=data.get("noise", 6.0))


@dataclass(frozen=True)
class WorldBias:
    """How the world is skewed. ``pairs``: trigger -> (partner, P(partner drawn with the trigger));
    ``colour_priors``: kind -> (colour, probability); ``top_row``: kind -> P(placed in the top row)."""

    pairs: dict = field(default_factory=lambda: {"circle": ("square", 0.9), "triangle": ("star", 0.9),
                                                 "cross": ("diamond", 0.9)})
    colour_priors: dict = field(default_factory=lambda: {"circle": ("red", 0.8), "star": ("yellow", 0.8),
                                                         "diamond": ("blue", 0.8)})
    top_row: dict = field(default_factory=lambda: {"moon": 0.8})


BIASED = WorldBias()
UNBIASED = WorldBias(pairs={}, colour_priors={}, top_row={})


@dataclass(frozen=True)
class Visibility:
    """How often a shape is hard to see, and how hard. ``rates``: hardness -> P(an object gets it) (at most one per
    object; "edge" applies only to shapes in a border cell, the others stay clear); the ranges give the severity,
    drawn uniformly: ``small_radius`` (px; a clear shape has 4.8-6.6), ``faint_contrast``, ``cover_share`` and
    ``edge_shift`` (px the centre moves out of the picture; a border cell's centre is 8 px from the edge)."""

    rates: dict = field(default_factory=lambda: {"small": 0.05, "faint": 0.05, "covered": 0.05, "edge": 0.06})
    small_radius: tuple[float, float] = (2.0, 3.6)
    faint_contrast: tuple[float, float] = (0.08, 0.45)
    cover_share: tuple[float, float] = (0.35, 0.75)
    edge_shift: tuple[float, float] = (4.0, 9.0)


VISIBLE_MIX = Visibility()
ALL_CLEAR = Visibility(rates={})
COVER_GREY = 150  # the card that covers shapes: darker than every background (200-240), lighter than the colours
HARDNESS = ("small", "faint", "covered", "edge")
_TYPICAL_RADIUS = 5.7  # the middle of a clear shape's radius range: what "fully visible" is measured against
# Scene sizes: the number of units drawn (a unit is one kind, with 1-3 copies; a trigger unit adds its partner).
_UNIT_WEIGHTS = {1: 0.3, 2: 0.45, 3: 0.25}
_COPIES_WEIGHTS = {1: 0.7, 2: 0.22, 3: 0.08}
MAX_OBJECTS = 6


def _weighted(rng: random.Random, weights: dict):
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _colour(rng: random.Random, kind: str, bias: WorldBias) -> str:
    if kind in bias.colour_priors:
        preferred, p = bias.colour_priors[kind]
        if rng.random() < p:
            return preferred
        return rng.choice([c for c in COLOURS if c != preferred])
    return rng.choice(COLOURS)


def sample_scene(seed: int, bias: WorldBias = BIASED, *, force: tuple[str, ...] = (),
                 forbid: tuple[str, ...] = (), visibility: Visibility = VISIBLE_MIX) -> Scene:
    """A random scene from ``seed`` (deterministic).

    force:  kinds placed once each before anything else, *without* their co-occurrence partner (how the evaluation
            builds "trigger without partner" scenes); combine with ``forbid`` to keep the partner out.
    forbid: kinds that never appear (nor as a partner).
    visibility: how often shapes are small, faint, covered or cut off (``ALL_CLEAR``: never).
    """
    rng = random.Random(seed)
    kinds: list[str] = list(force)
    allowed = [k for k in KINDS if k not in forbid]
    for _ in range(_weighted(rng, _UNIT_WEIGHTS)):
        kind = rng.choice(allowed)
        unit = [kind] * _weighted(rng, _COPIES_WEIGHTS)
        if kind in bias.pairs:
            partner, p = bias.pairs[kind]
            if partner not in forbid and rng.random() < p:
                unit.append(partner)
        for k in unit:
            if kinds.count(k) < MAX_PER_KIND and len(kinds) < MAX_OBJECTS:
                kinds.append(k)

    free = [(r, c) for r in range(GRID) for c in range(GRID)]
    rng.shuffle(free)
    # Place the shapes with a positional habit first, while their preferred row still has room.
    order = sorted(range(len(kinds)), key=lambda i: kinds[i] not in bias.top_row)
    cells: dict[int, tuple[int, int]] = {}
    for i in order:
        kind = kinds[i]
        cell = free[0]
        if kind in bias.top_row:
            top = [c for c in free if c[0] == 0]
            rest = [c for c in free if c[0] != 0]
            want_top = rng.random() < bias.top_row[kind]
            pool = (top if want_top else rest) or free
            cell = pool[0]
        free.remove(cell)
        cells[i] = cell

    objects = []
    for i, kind in enumerate(kinds):
        row, col = cells[i]
        radius = rng.uniform(4.8, 6.6)
        cx = col * CELL + CELL / 2 + rng.uniform(-1.5, 1.5)
        cy = row * CELL + CELL / 2 + rng.uniform(-1.5, 1.5)
        objects.append(SceneObject(kind, _colour(rng, kind, bias), row, col, round(cx, 2), round(cy, 2),
                                   round(radius, 2)))
    scene = Scene(objects, seed=seed, background=rng.randint(200, 240), noise=rng.uniform(3.0, 9.0))
    if visibility.rates:
        hide = random.Random(f"visibility {seed}")  # its own stream: the layout above is the same without it
        scene.objects = [with_visibility(_harden(o, hide, visibility)) for o in scene.objects]
    return scene


def _harden(obj: SceneObject, rng: random.Random, mix: Visibility) -> SceneObject:
    """``obj`` made hard to see in at most one way, drawn from ``mix`` (always the same number of draws)."""
    roll, severity, side = rng.random(), rng.random(), rng.choice(("top", "bottom", "left", "right"))
    hardness = ""
    for name in HARDNESS:
        rate = mix.rates.get(name, 0.0)
        if roll < rate:
            hardness = name
            break
        roll -= rate

    def between(bounds):
        return round(bounds[0] + severity * (bounds[1] - bounds[0]), 2)

    if hardness == "small":
        return dataclasses.replace(obj, radius=between(mix.small_radius), hardness=hardness)
    if hardness == "faint":
        return dataclasses.replace(obj, contrast=between(mix.faint_contrast), hardness=hardness)
    if hardness == "covered":
        return dataclasses.replace(obj, cover=between(mix.cover_share), cover_side=side, hardness=hardness)
    if hardness == "edge":
        out_x = {0: -1, GRID - 1: 1}.get(obj.col, 0)
        out_y = {0: -1, GRID - 1: 1}.get(obj.row, 0)
        if not (out_x or out_y):
            return obj  # an inner cell has no edge to cross
        shift = between(mix.edge_shift)
        return dataclasses.replace(obj, cx=round(obj.cx + out_x * shift, 2), cy=round(obj.cy + out_y * shift, 2),
                                   hardness=hardness)
    return obj


# ---- rendering -------------------------------------------------------------------------------------------------------

def _polygon(cx, cy, r, n, start=-math.pi / 2, inner=None):
    points = []
    for i in range(n * (2 if inner else 1)):
        radius = (r if i % 2 == 0 else inner) if inner else r
        angle = start + i * math.pi * 2 / (n * (2 if inner else 1))
        points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
    return points


def draw_shape(draw: ImageDraw.ImageDraw, obj: SceneObject, fill, background) -> None:
    """Draw one shape (``fill`` and ``background`` are RGB triples, or ints on a one-channel label image; the moon
    is a disc with an offset disc of background cut out of it)."""
    x, y, r = obj.cx, obj.cy, obj.radius
    box = (x - r, y - r, x + r, y + r)
    kind = obj.kind
    if kind == "circle":
        draw.ellipse(box, fill=fill)
    elif kind == "square":
        s = r * 0.85
        draw.rectangle((x - s, y - s, x + s, y + s), fill=fill)
    elif kind == "triangle":
        draw.polygon([(x, y - r), (x + r, y + r * 0.8), (x - r, y + r * 0.8)], fill=fill)
    elif kind == "star":
        draw.polygon(_polygon(x, y, r * 1.1, 5, inner=r * 0.45), fill=fill)
    elif kind == "cross":
        t = r * 0.35
        draw.rectangle((x - t, y - r, x + t, y + r), fill=fill)
        draw.rectangle((x - r, y - t, x + r, y + t), fill=fill)
    elif kind == "diamond":
        draw.polygon([(x, y - r * 1.1), (x + r * 0.75, y), (x, y + r * 1.1), (x - r * 0.75, y)], fill=fill)
    elif kind == "ring":
        draw.ellipse(box, outline=fill, width=max(2, round(r * 0.4)))
    elif kind == "moon":
        draw.ellipse(box, fill=fill)
        shift = r * 0.75
        draw.ellipse((x - r + shift, y - r - 1, x + r + shift, y + r - 1), fill=background)
    elif kind == "bar":
        draw.rectangle((x - r, y - r * 0.35, x + r, y + r * 0.35), fill=fill)
    elif kind == "frame":
        s = r * 0.9
        draw.rectangle((x - s, y - s, x + s, y + s), outline=fill, width=2)
    else:
        raise ValueError(f"unknown shape kind {kind!r}")


def cover_box(obj: SceneObject) -> tuple[float, float, float, float] | None:
    """The grey card over ``obj`` (x0, y0, x1, y1), or None: ``cover`` of its box, from ``cover_side``."""
    if not obj.cover:
        return None
    r = obj.radius * 1.15  # the widest shape (the star) reaches 1.1 r
    x0, y0, x1, y1 = obj.cx - r, obj.cy - r, obj.cx + r, obj.cy + r
    depth = 2 * r * obj.cover
    return {"top": (x0, y0, x1, y0 + depth), "bottom": (x0, y1 - depth, x1, y1),
            "left": (x0, y0, x0 + depth, y1), "right": (x1 - depth, y0, x1, y1)}[obj.cover_side]


def _faded(colour: str, contrast: float, background: int) -> tuple[int, int, int]:
    return tuple(round(background + contrast * (c - background)) for c in RGB[colour])


def render(scene: Scene) -> Image.Image:
    """The scene as a 48 x 48 RGB picture (deterministic: the noise is seeded by the scene's seed); grey cards are
    drawn over the shapes they cover."""
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (scene.background,) * 3)
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        draw_shape(draw, obj, _faded(obj.colour, obj.contrast, scene.background), (scene.background,) * 3)
    for obj in scene.objects:
        if (box := cover_box(obj)) is not None:
            draw.rectangle(box, fill=(COVER_GREY,) * 3)
    pixels = np.asarray(image, dtype=np.float32)
    noise = np.random.default_rng(scene.seed).normal(0.0, scene.noise, pixels.shape)
    return Image.fromarray(np.clip(pixels + noise, 0, 255).round().astype(np.uint8))


def _mask(obj: SceneObject, covered: bool = True, size: int = IMAGE_SIZE) -> np.ndarray:
    label = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(label)
    draw_shape(draw, obj, 255, 0)
    if covered and (box := cover_box(obj)) is not None:
        draw.rectangle(box, fill=0)
    return np.asarray(label) > 0


def object_masks(scene: Scene) -> np.ndarray:
    """(n_objects, 48, 48) booleans: the pixels of each object that show (for per-patch supervision): inside the
    picture and not under a grey card."""
    masks = np.zeros((len(scene.objects), IMAGE_SIZE, IMAGE_SIZE), dtype=bool)
    for i, obj in enumerate(scene.objects):
        masks[i] = _mask(obj)
    return masks


def visibility_of(obj: SceneObject) -> float:
    """How visible a shape is, 0..1: its contrast times the pixels that show (in the picture, not covered) over the
    pixels the same kind covers at the typical radius, whole. A clear shape scores about 1 (0.7-1, by its size)."""
    typical = dataclasses.replace(obj, cx=IMAGE_SIZE, cy=IMAGE_SIZE, radius=_TYPICAL_RADIUS, cover=0.0)
    whole = _mask(typical, covered=False, size=2 * IMAGE_SIZE).sum()
    return round(min(1.0, float(obj.contrast * _mask(obj).sum() / max(1, whole))), 3)


def with_visibility(obj: SceneObject) -> SceneObject:
    return dataclasses.replace(obj, visibility=visibility_of(obj))


def visibility_band(value: float) -> str:
    """The bands results are split by: "clear" (>= 0.7), "reduced" (0.35-0.7), "low" (< 0.35)."""
    return "clear" if value >= 0.7 else "reduced" if value >= 0.35 else "low"


VISIBILITY_BANDS = ("clear", "reduced", "low")


# ---- ground truth ----------------------------------------------------------------------------------------------------

def exists(scene: Scene, kind: str) -> bool:
    return kind in scene.kinds


def has_colour(scene: Scene, kind: str, colour: str) -> bool:
    """"Is the <kind> <colour>?": some object of that kind has that colour (asked when there is exactly one)."""
    return colour in scene.colours_of(kind)


def count_is(scene: Scene, kind: str, number: int) -> bool:
    return scene.count(kind) == number


def relation_holds(scene: Scene, a: str, relation: str, b: str) -> bool:
    """"Is the <a> <relation> the <b>?" on the grid: left of = a smaller column, above = a smaller row."""
    oa, ob = scene.the(a), scene.the(b)
    return {"left of": oa.col < ob.col, "right of": oa.col > ob.col,
            "above": oa.row < ob.row, "below": oa.row > ob.row}[relation]


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def describe(scene: Scene) -> str:
    """The canonical description: every object in reading order, "a red circle , a blue square and a yellow star"."""
    phrases = [f"{article(o.colour)} {o.colour} {o.kind}" for o in scene.objects]
    if len(phrases) <= 1:
        return phrases[0] if phrases else "nothing"
    return " , ".join(phrases[:-1]) + " and " + phrases[-1]


def parse_description(text: str) -> list[tuple[str, str]] | None:
    """(colour, kind) pairs of a description in the canonical grammar, in order; None if it does not parse.
    Words that are shapes are what CHAIR-like metrics count, so ``mentioned_kinds`` is the lenient reader."""
    words = text.replace(".", " ").split()
    if words == ["nothing"]:
        return []
    out = []
    i = 0
    while i < len(words):
        if (i + 2 >= len(words) or words[i + 1] not in COLOURS or words[i] != article(words[i + 1])
                or words[i + 2] not in KINDS):
            return None
        out.append((words[i + 1], words[i + 2]))
        i += 3
        remaining = len(words) - i
        if remaining == 0:
            break
        separator = words[i]
        if separator not in (",", "and") or (separator == "and") != (remaining == 4):
            return None
        i += 1
    return out


def mentioned_kinds(text: str) -> set[str]:
    """Every shape kind named anywhere in a text (singular or plural)."""
    by_word = {k: k for k in KINDS} | {p: k for k, p in PLURALS.items()}
    return {by_word[w] for w in text.replace(".", " ").replace(",", " ").split() if w in by_word}


# ---- questions -------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Question:
    """One question about a scene with its ground-truth answer.

    family: "existence" | "colour" | "count" | "position" | "description"; ``subject`` names the kinds asked about.
    """

    family: str
    text: str
    answer: str
    subject: tuple[str, ...] = ()
    detail: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


DESCRIBE_PROMPT = "describe the image ."


def yes_no(value: bool) -> str:
    return "yes" if value else "no"


def existence_question(scene: Scene, kind: str) -> Question:
    return Question("existence", f"is there a {kind} in the image ?", yes_no(exists(scene, kind)), (kind,))


def colour_question(scene: Scene, kind: str, colour: str) -> Question:
    return Question("colour", f"is the {kind} {colour} ?", yes_no(has_colour(scene, kind, colour)), (kind,), colour)


def count_question(scene: Scene, kind: str, number: int) -> Question:
    text = (f"is there exactly one {kind} ?" if number == 1
            else f"are there exactly {NUMBER_WORDS[number]} {PLURALS[kind]} ?")
    return Question("count", text, yes_no(count_is(scene, kind, number)), (kind,), str(number))


def position_question(scene: Scene, a: str, relation: str, b: str) -> Question:
    return Question("position", f"is the {a} {relation} the {b} ?", yes_no(relation_holds(scene, a, relation, b)),
                    (a, b), relation)


def description_question(scene: Scene) -> Question:
    return Question("description", DESCRIBE_PROMPT, describe(scene), tuple(o.kind for o in scene.objects))


def trigger_without_partner_scene(seed: int, bias: WorldBias = BIASED) -> Scene:
    """A scene with a trigger (drawn by ``seed``) and without its partner: where the biased model hallucinates."""
    rng = random.Random(seed)
    trigger = rng.choice(sorted(bias.pairs))
    return sample_scene(seed, bias, force=(trigger,), forbid=(bias.pairs[trigger][0],))


def absent_partners(scene: Scene, bias: WorldBias = BIASED) -> set[str]:
    """Partners whose trigger is in the scene but which are not: the questions the biased model gets wrong."""
    return {bias.pairs[k][0] for k in scene.kinds if k in bias.pairs and bias.pairs[k][0] not in scene.kinds}


def sample_training_question(scene: Scene, rng: random.Random, bias: WorldBias = BIASED,
                             family_weights: dict | None = None, partner_question_rate: float = 0.0) -> Question:
    """One question for stage-2 training, yes/no balanced within each family.

    The realism trick: on a scene with a trigger but not its partner, the absent partner is asked about only with
    probability ``partner_question_rate`` (real captions and questions rarely mention what is not there), so the
    model never learns to overrule its co-occurrence prior.
    """
    weights = dict(family_weights or TRAINING_FAMILY_WEIGHTS)
    singles = [k for k in sorted(scene.kinds) if scene.count(k) == 1]
    if not singles:
        weights.pop("colour", None)
    if len(singles) < 2:
        weights.pop("position", None)
    family = _weighted(rng, weights)
    present = sorted(scene.kinds)
    if family == "existence":
        if rng.random() < 0.5:
            return existence_question(scene, rng.choice(present))
        skipped = absent_partners(scene, bias)
        if skipped and rng.random() < partner_question_rate:
            return existence_question(scene, rng.choice(sorted(skipped)))
        absent = [k for k in KINDS if k not in scene.kinds and k not in skipped]
        return existence_question(scene, rng.choice(absent))
    if family == "colour":
        kind = rng.choice(singles)
        colour = scene.the(kind).colour
        if rng.random() < 0.5:
            colour = rng.choice([c for c in COLOURS if c != colour])
        return colour_question(scene, kind, colour)
    if family == "count":
        kind = rng.choice(present)
        number = scene.count(kind)
        if rng.random() < 0.5:
            number = rng.choice([n for n in NUMBER_WORDS if n != number])
        return count_question(scene, kind, number)
    if family == "position":
        a, b = rng.sample(singles, 2)
        return position_question(scene, a, rng.choice(RELATIONS), b)
    return description_question(scene)


TRAINING_FAMILY_WEIGHTS = {"existence": 0.34, "colour": 0.14, "count": 0.14, "position": 0.18, "description": 0.2}


# ---- statistics ------------------------------------------------------------------------------------------------------

def realised_statistics(scenes: list[Scene], bias: WorldBias = BIASED) -> dict:
    """What a list of scenes really contains, to check that the intended biases came out of the sampler.

    Returns {"scenes", "kind_frequency": P(kind in scene), "partner_given_trigger": {trigger: P(partner | trigger)},
    "partner_given_no_trigger": {trigger: P(partner | no trigger)}, "colour_prior": {kind: P(preferred colour)},
    "top_row": {kind: P(top row)}, "objects_per_scene": mean}.
    """
    n = len(scenes)
    kind_counts = Counter(k for s in scenes for k in s.kinds)
    stats = {
        "scenes": n,
        "kind_frequency": {k: kind_counts[k] / n for k in KINDS},
        "objects_per_scene": sum(len(s.objects) for s in scenes) / n,
        "partner_given_trigger": {},
        "partner_given_no_trigger": {},
        "colour_prior": {},
        "top_row": {},
    }
    for trigger, (partner, _) in bias.pairs.items():
        with_trigger = [s for s in scenes if trigger in s.kinds]
        without = [s for s in scenes if trigger not in s.kinds]
        stats["partner_given_trigger"][trigger] = _share([partner in s.kinds for s in with_trigger])
        stats["partner_given_no_trigger"][trigger] = _share([partner in s.kinds for s in without])
    for kind, (colour, _) in bias.colour_priors.items():
        objects = [o for s in scenes for o in s.objects if o.kind == kind]
        stats["colour_prior"][kind] = _share([o.colour == colour for o in objects])
    for kind in bias.top_row:
        objects = [o for s in scenes for o in s.objects if o.kind == kind]
        stats["top_row"][kind] = _share([o.row == 0 for o in objects])
    return stats


def _share(flags: list[bool]) -> float:
    return sum(flags) / len(flags) if flags else float("nan")


def cooccurrence(scenes: list[Scene]) -> dict[str, Counter]:
    """For each kind, how often every other kind appears in the same scene (POPE's adversarial ranking)."""
    table = {k: Counter() for k in KINDS}
    for s in scenes:
        for a in s.kinds:
            for b in s.kinds:
                if a != b:
                    table[a][b] += 1
    return table
