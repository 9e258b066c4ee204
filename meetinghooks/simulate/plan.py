"""What the simulator will do to each meeting: which path starts it, what is repeated or swapped."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass

# Proportions are exact within each block of this many meetings, so that even a short run
# (`--meetings 10`) holds every kind of meeting its flags ask for, not merely by chance.
BLOCK = 100
# Platform meetings happened this long ago at most: their event times are in the past, as a
# platform's late reports are; each meeting gets a length of its own for durationSeconds.
MAX_LENGTH_SECONDS = 3600


@dataclass(frozen=True)
class Mix:
    """The shares chosen on the command line, each between 0 and 1."""

    ingest: float = 0.5  # meetings the platform reports through signed POST /v1/events
    ends: float = 1.0  # meetings that end (the others are left running)
    duplicates: float = 0.1  # ingest events sent a second time with the same webhook-id
    out_of_order: float = 0.1  # ended platform meetings whose end is sent before the start

    def __post_init__(self) -> None:
        for name in ("ingest", "ends", "duplicates", "out_of_order"):
            share = getattr(self, name)
            if not 0 <= share <= 1:
                raise ValueError(f"--{name.replace('_', '-')} must be between 0 and 1")


@dataclass(frozen=True)
class MeetingPlan:
    """One meeting's script.

    A platform meeting starts and ends through signed ingest; the others through the
    presenter link and `POST /v1/meetings/{id}/end`, as a host in a browser would.
    """

    index: int
    via_ingest: bool
    ends: bool
    out_of_order: bool = False
    duplicate_start: bool = False
    duplicate_end: bool = False
    length_seconds: int = 0

    @property
    def requests(self) -> int:
        """How many requests the script sends, the meeting's creation included."""
        return 2 + int(self.ends) + int(self.duplicate_start) + int(self.duplicate_end)


def _chosen(among: list[int], share: float, rng: random.Random) -> set[int]:
    return set(rng.sample(among, round(len(among) * share)))


def _block(first: int, size: int, mix: Mix, rng: random.Random) -> list[MeetingPlan]:
    indices = list(range(first, first + size))
    ingest = _chosen(indices, mix.ingest, rng)
    ends = _chosen(indices, mix.ends, rng)
    ended_platform = sorted(ingest & ends)
    swapped = _chosen(ended_platform, mix.out_of_order, rng)
    events = [(i, "start") for i in sorted(ingest)] + [(i, "end") for i in ended_platform]
    repeated = set(rng.sample(events, round(len(events) * mix.duplicates)))
    return [
        MeetingPlan(
            index=i,
            via_ingest=i in ingest,
            ends=i in ends,
            out_of_order=i in swapped,
            duplicate_start=(i, "start") in repeated,
            duplicate_end=(i, "end") in repeated,
            length_seconds=rng.randint(1, MAX_LENGTH_SECONDS) if i in ingest else 0,
        )
        for i in indices
    ]


def plans(mix: Mix, *, meetings: int | None, seed: int | None = None) -> Iterator[MeetingPlan]:
    """Yield the meetings' scripts, `meetings` of them or without end (bounded by time)."""
    rng = random.Random(seed)  # noqa: S311  (a load mix, not a secret)
    for first in itertools.count(0, BLOCK):
        size = BLOCK if meetings is None else min(BLOCK, meetings - first)
        if size <= 0:
            return
        yield from _block(first, size, mix, rng)
