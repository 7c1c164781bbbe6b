"""One benchmark figure: a measured value next to its goal, as ``dirtylog bench`` reports it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Figure:
    id: int | str  # "5a"… for the variants of one figure
    name: str
    value: float | None
    unit: str
    goal: str
    met: bool | None
    detail: dict[str, object] | None = None

    def as_dict(self) -> dict[str, object]:
        d = {
            "id": self.id,
            "name": self.name,
            "value": self.value,
            "unit": self.unit,
            "goal": self.goal,
            "met": self.met,
        }
        if self.detail:
            d["detail"] = self.detail
        return d
