"""The label table: index, name, short code and display colour of each class.

Tables are data, not code: a model carries its own table in its ONNX metadata (as JSON), so a model
trained with another table works unchanged. ``default_label_table()`` is the project's table:
0 = background, then the 37 lower-limb muscles in alphabetical order (the paper numbers its labels
1-37 alphabetically; its exact table is not published).
"""

from __future__ import annotations

import colorsys
import json
from dataclasses import dataclass

_DEFAULT_MUSCLES: tuple[tuple[str, str], ...] = (
    ("adductor brevis", "ADB"),
    ("adductor longus", "ADL"),
    ("adductor magnus", "ADM"),
    ("biceps femoris long head", "BFL"),
    ("biceps femoris short head", "BFS"),
    ("extensor digitorum longus", "EDL"),
    ("extensor hallucis longus", "EHL"),
    ("flexor digitorum longus", "FDL"),
    ("flexor hallucis longus", "FHL"),
    ("gastrocnemius lateral head", "GL"),
    ("gastrocnemius medial head", "GM"),
    ("gemelli", "GEM"),
    ("gluteus maximus", "GMAX"),
    ("gluteus medius", "GMED"),
    ("gluteus minimus", "GMIN"),
    ("gracilis", "GRA"),
    ("iliacus", "ILI"),
    ("obturator externus", "OE"),
    ("obturator internus", "OI"),
    ("pectineus", "PEC"),
    ("peroneus brevis", "PB"),
    ("peroneus longus", "PL"),
    ("piriformis", "PIR"),
    ("popliteus", "POP"),
    ("psoas major", "PSO"),
    ("quadratus femoris", "QF"),
    ("rectus femoris", "RF"),
    ("sartorius", "SAR"),
    ("semimembranosus", "SM"),
    ("semitendinosus", "ST"),
    ("soleus", "SOL"),
    ("tensor fasciae latae", "TFL"),
    ("tibialis anterior", "TA"),
    ("tibialis posterior", "TP"),
    ("vastus intermedius", "VI"),
    ("vastus lateralis", "VL"),
    ("vastus medialis", "VM"),
)


@dataclass(frozen=True)
class Label:
    """One class. ``colour`` is 8-bit RGB; ``side``: ``"R"``/``"L"`` in a side-split table
    (``limbseg-rt run --split-sides``), else None."""

    index: int
    name: str
    code: str
    colour: tuple[int, int, int]
    side: str | None = None


@dataclass(frozen=True)
class LabelTable:
    """An ordered table of classes; ``labels[i].index == i`` and index 0 is background."""

    labels: tuple[Label, ...]

    def __post_init__(self) -> None:
        for i, lab in enumerate(self.labels):
            if lab.index != i:
                raise ValueError(f"label table entry {i} has index {lab.index}; indices must be 0..N-1")
        if len({lab.code for lab in self.labels}) != len(self.labels):
            raise ValueError("label table codes must be unique")

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> Label:
        return self.labels[index]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(lab.name for lab in self.labels)

    @property
    def muscles(self) -> tuple[Label, ...]:
        """All labels except background (index 0)."""
        return self.labels[1:]

    def to_list(self) -> list[dict]:
        return [
            {
                "index": lab.index,
                "name": lab.name,
                "code": lab.code,
                "colour": list(lab.colour),
                **({"side": lab.side} if lab.side is not None else {}),
            }
            for lab in self.labels
        ]

    def to_json(self) -> str:
        return json.dumps(self.to_list())

    @classmethod
    def from_list(cls, items: list[dict]) -> LabelTable:
        return cls(
            tuple(
                Label(int(d["index"]), str(d["name"]), str(d["code"]), _rgb(d["colour"]), d.get("side")) for d in items
            )
        )

    @classmethod
    def from_json(cls, text: str) -> LabelTable:
        return cls.from_list(json.loads(text))


def _palette(n: int) -> list[tuple[int, int, int]]:
    # Golden-ratio hue steps give neighbouring indices clearly different colours.
    colours = []
    for i in range(n):
        h = (i * 0.618033988749895) % 1.0
        s = 0.65 + 0.3 * ((i * 7) % 3) / 2
        v = 0.95 - 0.25 * ((i * 5) % 2)
        r, g, b = colorsys.hsv_to_rgb(h, s, v)
        colours.append((round(r * 255), round(g * 255), round(b * 255)))
    return colours


def default_label_table() -> LabelTable:
    """Background + the 37 muscles, alphabetical (38 classes)."""
    colours = _palette(len(_DEFAULT_MUSCLES))
    labels = [Label(0, "background", "BG", (0, 0, 0))]
    for i, ((name, code), colour) in enumerate(zip(_DEFAULT_MUSCLES, colours), start=1):
        labels.append(Label(i, name, code, colour))
    return LabelTable(tuple(labels))


def _rgb(colour) -> tuple[int, int, int]:
    """An (r, g, b) triple of ints 0..255 from a 3-item sequence."""
    r, g, b = (int(c) for c in colour)
    return r, g, b
