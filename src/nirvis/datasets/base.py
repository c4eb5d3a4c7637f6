"""The one sample model shared by every dataset, and the evaluation split it feeds."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from nirvis._io import CHANNELS

Modality = Literal["nir", "vis"]
MODALITIES: tuple[str, ...] = ("nir", "vis")


@dataclass(frozen=True)
class Sample:
    """One image of one person.

    Attributes
    ----------
    person
        Person (identity) id, unique within a dataset.
    modality
        ``"nir"`` or ``"vis"``.
    path
        Image file.
    capture_id
        Unique id of this capture within the dataset.
    pair_id
        ``capture_id`` of the simultaneous capture in the other modality, if any (RAP3DF RGB/IR frames).
    channel
        How to read the file: ``None`` (RGB as stored), ``"red"`` (RAP3DF IR: intensity in the red channel)
        or ``"gray"``.
    meta
        Anything else: pose, session, subset, ...
    """

    person: str
    modality: Modality
    path: Path
    capture_id: str
    pair_id: str | None = None
    channel: str | None = None
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ValueError(f"Sample {self.capture_id!r}: modality must be 'nir' or 'vis', got {self.modality!r}")
        if self.channel is not None and self.channel not in CHANNELS:
            raise ValueError(f"Sample {self.capture_id!r}: channel must be None or one of {', '.join(CHANNELS)}, "
                             f"got {self.channel!r}")

    @property
    def pose(self) -> str | None:
        return self.meta.get("pose")

    def read(self):
        """Read the image: gray ``(H, W)`` uint8 for NIR, RGB ``(H, W, 3)`` uint8 for VIS."""
        from nirvis._io import read_image

        if self.modality == "nir":
            return read_image(self.path, channel=self.channel or "gray")
        return read_image(self.path, channel=self.channel)


@dataclass(frozen=True)
class Split:
    """One evaluation split (fold): who trains, the VIS gallery and the NIR probes.

    ``missing`` lists protocol entries whose files do not exist; they are reported, and a missing
    probe counts as a miss in the evaluation.
    """

    name: str
    train: tuple[Sample, ...]
    gallery: tuple[Sample, ...]
    probes: tuple[Sample, ...]
    missing: tuple[str, ...] = ()

    @property
    def train_people(self) -> list[str]:
        return sorted({s.person for s in self.train})

    @property
    def test_people(self) -> list[str]:
        return sorted({s.person for s in self.gallery} | {s.person for s in self.probes})


def people(samples: Iterable[Sample]) -> list[str]:
    """Sorted unique person ids of ``samples``."""
    return sorted({s.person for s in samples})


def by_person(samples: Sequence[Sample], wanted: Iterable[str]) -> tuple[Sample, ...]:
    """The samples whose person is in ``wanted``, in their original order."""
    keep = set(wanted)
    return tuple(s for s in samples if s.person in keep)
