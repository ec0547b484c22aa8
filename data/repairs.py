"""What a converter changed in the data, counted, with examples, and allowed only on request.

A converter never changes data silently. Each change it would make (a box clipped to its
image, an invalid box dropped, an unlabelled image added) is noted here with where it
happened; `Repairs.check()` then raises `RepairsNeeded` for every kind the caller did not
allow, BEFORE anything is written. Kinds without an option (what the target format
cannot hold, e.g. segmentations in YOLO box labels) are always allowed and still told.

    repairs = Repairs(clip_boxes=True)
    payload = voc_to_coco(xml_dir, image_dir, repairs=repairs)   # raises if a box needs dropping
    print("\n".join(repairs.summary_lines()))                    # "2 boxes clipped to ..."
"""

from __future__ import annotations

from dataclasses import dataclass, field

from detseg.data.errors import OptionError

EXAMPLES_SHOWN = 3


@dataclass(frozen=True)
class RepairKind:
    """One kind of change. `option`: the switch that allows it (None: always allowed)."""

    option: str | None
    needed: str   # strict message: "box(es) reach outside their image"
    done: str     # report: "box(es) clipped to their image"
    remedy: str = ""  # what the option does: "to clip them"


CLIP_BOXES = RepairKind("clip_boxes", "box(es) reach outside their image",
                        "box(es) clipped to their image", "to clip them to the image")
DROP_INVALID = RepairKind("drop_invalid", "box(es) have no area inside their image",
                          "box(es) with no area inside their image dropped", "to drop them")
INCLUDE_UNLABELED = RepairKind("include_unlabeled", "image(s) in the image folder have no label file",
                               "image(s) without a label file added as images without objects",
                               "to add them as images without objects")
SEGMENTATIONS_NOT_WRITTEN = RepairKind(None, "", "segmentations not written: YOLO detection labels hold boxes only")
CROWDS_NOT_WRITTEN = RepairKind(None, "", "crowd annotations not written: YOLO labels cannot mark crowd regions")


class RepairsNeeded(OptionError):
    """The input needs changes the caller did not allow; nothing was written."""


@dataclass
class Repairs:
    """The changes a caller allows (`clip_boxes`, `drop_invalid`, `include_unlabeled`)
    and, once a converter ran, the changes it made: `{kind: [where, ...]}` in order."""

    clip_boxes: bool = False
    drop_invalid: bool = False
    include_unlabeled: bool = False
    made: dict[RepairKind, list[str]] = field(default_factory=dict)

    def allows(self, kind: RepairKind) -> bool:
        return kind.option is None or bool(getattr(self, kind.option))

    def note(self, kind: RepairKind, where: str) -> None:
        """Record one change of `kind` at `where` (a file and line, record id or element)."""
        self.made.setdefault(kind, []).append(where)

    def count(self, kind: RepairKind) -> int:
        return len(self.made.get(kind, []))

    def check(self) -> None:
        """Raise `RepairsNeeded` naming every noted kind that is not allowed (count, first
        examples, the option that allows it)."""
        refused = [kind for kind in self.made if not self.allows(kind)]
        if not refused:
            return
        parts = [f"{len(self.made[k])} {k.needed} ({_examples(self.made[k])}): pass {{{k.option}}} {k.remedy}"
                 for k in refused]
        raise RepairsNeeded("the input needs changes, nothing was written: " + "; ".join(parts),
                            **{k.option: f"{k.option}=True" for k in refused})

    def summary_lines(self) -> list[str]:
        """One line per kind of change made: `N <done> (<first examples>)`."""
        return [f"{len(places)} {kind.done} ({_examples(places)})" for kind, places in self.made.items()]


def _examples(places: list[str]) -> str:
    shown = "; ".join(places[:EXAMPLES_SHOWN])
    more = len(places) - EXAMPLES_SHOWN
    return f"{shown}; and {more} more" if more > 0 else shown
