"""What a conversion did: boxes in and out per finding, images per split, and every skipped item with why.

Converters never drop anything silently: each skipped row, image or file is recorded here, and the
report is both printed (counts per reason) and written in full as JSON.
"""
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

import pandas as pd

_EXAMPLES_PER_REASON = 5


@dataclass
class ConversionReport:
    """Counts and skipped items of one conversion; `sections` keys are source splits ("train", "test")."""

    classes: Sequence[str]
    settings: Dict[str, object] = field(default_factory=dict)
    boxes_in: Dict[str, Counter] = field(default_factory=dict)
    boxes_out: Dict[str, Counter] = field(default_factory=dict)
    images: Dict[str, int] = field(default_factory=dict)
    skipped: List[Dict[str, object]] = field(default_factory=list)
    kept_with_rejected_rows: List[Dict[str, object]] = field(default_factory=list)  # images kept, rows lost
    notes: List[str] = field(default_factory=list)

    def skip(self, reason: str, file: Optional[str] = None, row: Optional[int] = None,
             image_id: Optional[str] = None, detail: Optional[str] = None) -> None:
        """Record one skipped item (a CSV row, an image, a file) and why; `detail` holds item-specific text
        (an error message) so that items with the same `reason` group together."""
        item = {"reason": reason}
        if file is not None:
            item["file"] = str(file)
        if row is not None:
            item["row"] = int(row)
        if image_id is not None:
            item["image_id"] = str(image_id)
        if detail is not None:
            item["detail"] = str(detail)
        self.skipped.append(item)

    def keep_with_rejected_rows(self, reason: str, image_id: str, detail: Optional[str] = None) -> None:
        """Record an image that is kept although some of its rows were rejected (those rows are skipped items)."""
        item = {"reason": reason, "image_id": str(image_id)}
        if detail is not None:
            item["detail"] = str(detail)
        self.kept_with_rejected_rows.append(item)

    def skip_rows(self, rows: pd.DataFrame, reason: str) -> None:
        """Record every row of `rows` (columns file, row, image_id) as skipped for `reason`."""
        for file, row, image_id in zip(rows["file"], rows["row"], rows["image_id"]):
            self.skip(reason, file=file, row=row, image_id=image_id)

    def count_boxes(self, section: str, stage: str, category_ids: Iterable[int]) -> None:
        """Add boxes (by contiguous category id) to the "in" (reader) or "out" (training) counts."""
        counts = {"in": self.boxes_in, "out": self.boxes_out}[stage].setdefault(section, Counter())
        for category_id, n in Counter(int(c) for c in category_ids).items():
            counts[self.classes[category_id]] += n

    def skipped_by_reason(self) -> Counter:
        """How many items were skipped for each reason."""
        return Counter(item["reason"] for item in self.skipped)

    def kept_by_reason(self) -> Counter:
        """How many images were kept with rejected rows, per reason ("kept with N rejected rows")."""
        return Counter(item["reason"] for item in self.kept_with_rejected_rows)

    def box_table(self, section: str) -> str:
        """Markdown table of boxes in and out per finding for one source split."""
        boxes_in = self.boxes_in.get(section, Counter())
        boxes_out = self.boxes_out.get(section, Counter())
        lines = ["| Finding | Boxes in | Boxes out |", "|---|---:|---:|"]
        for name in self.classes:
            lines.append(f"| {name} | {boxes_in[name]:,} | {boxes_out[name]:,} |")
        lines.append(f"| **Total** | {sum(boxes_in.values()):,} | {sum(boxes_out.values()):,} |")
        return "\n".join(lines)

    def summary(self) -> str:
        """A human-readable summary: images per split, box tables, skip counts with a few examples."""
        parts = ["Images per split: " + ", ".join(f"{k} {v:,}" for k, v in self.images.items())]
        for section in self.boxes_in:
            parts.append(f"\nBoxes per finding ({section}):\n" + self.box_table(section))
        by_reason = self.skipped_by_reason()
        if by_reason:
            parts.append(f"\nSkipped items: {len(self.skipped):,}")
            for reason, n in by_reason.most_common():
                examples = [item for item in self.skipped if item["reason"] == reason][:_EXAMPLES_PER_REASON]
                parts.append(f"  {n:,} x {reason}")
                parts.extend("      " + _describe(item) for item in examples)
        else:
            parts.append("\nSkipped items: none")
        if self.kept_with_rejected_rows:
            parts.append(f"\nImages kept with rejected rows: {len(self.kept_with_rejected_rows):,}")
            for reason, n in self.kept_by_reason().most_common():
                examples = [i for i in self.kept_with_rejected_rows if i["reason"] == reason][:_EXAMPLES_PER_REASON]
                parts.append(f"  {n:,} x {reason}")
                parts.extend("      " + _describe(item) for item in examples)
        parts.extend(f"Note: {note}" for note in self.notes)
        return "\n".join(parts)

    def to_dict(self) -> Dict[str, object]:
        """Everything in the report, JSON-serialisable."""
        return {
            "settings": self.settings,
            "images": self.images,
            "boxes_in": {k: {n: v[n] for n in self.classes} for k, v in self.boxes_in.items()},
            "boxes_out": {k: {n: v[n] for n in self.classes} for k, v in self.boxes_out.items()},
            "skipped_by_reason": dict(self.skipped_by_reason()),
            "skipped": self.skipped,
            "kept_by_reason": dict(self.kept_by_reason()),
            "kept_with_rejected_rows": self.kept_with_rejected_rows,
            "notes": self.notes,
        }

    def write_json(self, path: Path) -> None:
        """Write `to_dict()` to `path`."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1))


def _describe(item: Dict[str, object]) -> str:
    where = ":".join(str(item[k]) for k in ("file", "row") if k in item)
    image = f" image {item['image_id']}" if "image_id" in item else ""
    detail = f": {item['detail']}" if "detail" in item else ""
    return f"{where}{image}{detail}".strip()
