"""The editor's frames → text: CTC collapse, edit regions, and the confidence gate.

The editor (``training/models/editor.py``) gives every source character k frames, and every
frame one label (a character id, or blank) with its probability. Its text is the CTC
collapse of those labels: drop blanks, merge a label repeated in consecutive frames. A
character emitted by the frames of source position i belongs to position i.

A source position whose frames emit exactly its own character is a copy; every other
position (emits nothing: a deletion; something else, or more: a substitution or insertion)
is part of an edit. An edit region is a maximal run of such positions, and its confidence is
the geometric mean of its frames' probabilities. (The weakest frame was tried first: measured
on the validation split, at the same clean-row damage it kept far fewer right edits, since a
long edit always holds some unsure frame; see docs/results.md.)
The gate keeps an edit only if its confidence reaches its threshold; otherwise the region's
source characters come back unchanged. So below the threshold, the input stands. An edit
that only deletes spaces may have a threshold of its own (`Gate`): the damage the editor
learned to undo most is a spurious space, and a real space deleted is most of what it does to
clean text. And text that holds sure edits is damaged text, where the gate admits less
confident edits too.

This module is the one road from frames to text: evaluation, the trainer's validation, export
checks, calibration and serving all go through `plan_edits` and `apply_edits`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Region:
    """Source positions ``start:end`` become ``ids`` (each with its frame's probability)."""

    start: int
    end: int
    ids: list[int]
    probs: list[float]
    confidence: float  # the geometric mean of the region's frame probabilities


@dataclass(frozen=True)
class Plan:
    """One row: its source ids, the probability of each copied position, its edit regions."""

    source: list[int]
    copy_probs: list[float]  # per source position; meaningful where no region covers it
    regions: list[Region]


@dataclass(frozen=True)
class Gate:
    """Edits apply from ``min_confidence``; edits that only delete spaces (``space_id``) from
    ``space_min_confidence`` (None: the same threshold).

    Damaged text (``damaged_min_confidence`` set): a piece holding at least ``damage_edits``
    edits each at least ``damage_confidence`` sure is text the damage reached, so there every
    edit applies from ``damaged_min_confidence``. An edit is unsure either because the model
    is unsure of the repair or because it cannot tell whether the text needed one; sure edits
    elsewhere in the piece settle the second doubt. Clean text rarely holds a sure edit, so it
    keeps the strict thresholds (measured on the 60-minute editor: see docs/results.md)."""

    min_confidence: float = 0.0
    space_min_confidence: float | None = None
    space_id: int | None = None
    damaged_min_confidence: float | None = None
    damage_confidence: float = 1.0
    damage_edits: int = 1

    # What export calibrates and writes to the manifest's "gate" (space_id is the vocabulary's).
    SETTINGS = (
        "min_confidence",
        "space_min_confidence",
        "damaged_min_confidence",
        "damage_confidence",
        "damage_edits",
    )

    @classmethod
    def of_settings(cls, settings: dict, space_id: int | None) -> Gate:
        known = {k: settings[k] for k in cls.SETTINGS if settings.get(k) is not None}
        return cls(**known, space_id=space_id)

    def settings(self) -> dict:
        return {name: getattr(self, name) for name in self.SETTINGS}

    def describe(self) -> str:
        text = f"edits applied from confidence {self.min_confidence:g}"
        if self.space_min_confidence is not None:
            text += f", space-only deletions from {self.space_min_confidence:g}"
        if self.damaged_min_confidence is not None:
            sure = "an edit" if self.damage_edits == 1 else f"{self.damage_edits} edits"
            text += (
                f"; in damaged text ({sure} at least {self.damage_confidence:g} sure) every edit"
                f" from {self.damaged_min_confidence:g}"
            )
        return text

    def thresholds(self, plan: Plan) -> list[float]:
        """The threshold of each of ``plan``'s regions."""
        if self.damaged_min_confidence is not None:
            sure = sum(region.confidence >= self.damage_confidence for region in plan.regions)
            if sure >= self.damage_edits:
                return [self.damaged_min_confidence] * len(plan.regions)
        return [self._threshold(plan, region) for region in plan.regions]

    def _threshold(self, plan: Plan, region: Region) -> float:
        if self.space_min_confidence is not None and deletes_only_spaces(
            plan, region, self.space_id
        ):
            return self.space_min_confidence
        return self.min_confidence


def deletes_only_spaces(plan: Plan, region: Region, space_id: int | None) -> bool:
    return not region.ids and all(t == space_id for t in plan.source[region.start : region.end])


@dataclass(frozen=True)
class Edited:
    """One row's output ids, where each came from, and each one's confidence."""

    ids: list[int]
    origin: list[int]  # the source position an output id copies, or -1 for a new one
    confidence: list[float]
    gated: int  # edit regions the gate turned down


def plan_edits(
    labels: np.ndarray,
    probs: np.ndarray,
    src_ids: np.ndarray,
    src_mask: np.ndarray,
    *,
    upsample: int,
    blank_id: int,
) -> list[Plan]:
    """Every row's edit regions from its best path (``labels, probs [b, src * k]``) against
    its source (``src_ids, src_mask [b, src]``).

    The collapse runs in array operations over the whole batch (serving pays for it per
    character, and most positions are copies): a frame emits where its label is not blank and
    differs from the frame before; a run of one label carries its best frame's probability,
    counting only its frames within the position that emitted it. Positions are numbered
    across the batch (row × src + position), and padded frames are blanks."""
    b, src = np.shape(src_ids)
    lengths = np.asarray(src_mask, dtype=bool).sum(1)
    frame = np.arange(src * upsample)
    in_row = frame < lengths[:, None] * upsample
    labels = np.where(in_row, labels, blank_id).ravel()
    probs = np.where(in_row, probs, 1.0).astype(np.float64).ravel()
    position = (np.arange(b)[:, None] * src + frame // upsample).ravel()
    real = labels != blank_id
    starts = real & (labels != np.concatenate(([blank_id], labels[:-1])))
    starts[:: src * upsample] = real[:: src * upsample]  # every row starts afresh
    first = np.flatnonzero(starts)  # each emission's frame
    emitter = position[first]  # the position of each emission, ascending
    run = np.cumsum(starts) - 1  # the emission each real frame continues
    counted = real & (position == np.append(emitter, -1)[run])
    run_prob = np.zeros(len(first))
    np.maximum.at(run_prob, run[counted], probs[counted])
    emitted = np.bincount(emitter, minlength=b * src)
    # Per position: its first emission (if any) and whether it copies its source character.
    head = np.full(b * src, -1)
    head[emitter[::-1]] = np.arange(len(first))[::-1]
    has = head >= 0
    head_label, copy_probs = np.full(b * src, -1), np.zeros(b * src)
    head_label[has], copy_probs[has] = labels[first[head[has]]], run_prob[head[has]]
    real_position = (np.arange(src) < lengths[:, None]).ravel()
    copies = (emitted == 1) & (head_label == np.asarray(src_ids).ravel()) | ~real_position
    # Per position, the mean log probability of its frames: the regions' confidences.
    log_prob = np.log(np.maximum(probs, 1e-12)).reshape(b * src, upsample).sum(1)

    regions: list[list[Region]] = [[] for _ in range(b)]
    edits = np.flatnonzero(~copies)
    if len(edits):
        breaks = np.flatnonzero((np.diff(edits) > 1) | (np.diff(edits // src) > 0))
        begins, ends = edits[np.r_[0, breaks + 1]], edits[np.r_[breaks, len(edits) - 1]] + 1
        lo, hi = np.searchsorted(emitter, begins), np.searchsorted(emitter, ends)
        for begin, end, i, j in zip(begins.tolist(), ends.tolist(), lo, hi, strict=True):
            row, offset = divmod(begin, src)
            regions[row].append(
                Region(
                    offset,
                    offset + end - begin,
                    labels[first[i:j]].tolist(),
                    run_prob[i:j].tolist(),
                    math.exp(log_prob[begin:end].sum() / ((end - begin) * upsample)),
                )
            )
    copy_probs = copy_probs.reshape(b, src)
    return [
        Plan(src_ids[row, :n].tolist(), copy_probs[row, :n].tolist(), regions[row])
        for row, n in enumerate(lengths.tolist())
    ]


def apply_edits(plan: Plan, gate: Gate | float = 0.0) -> Edited:
    """The row's output with the edits whose confidence reaches the gate's threshold (a
    number: one threshold for every edit).

    An applied edit's characters carry its confidence (a pure deletion lowers that of the
    character before it); a gated region's source characters carry 1 − its confidence, the
    model's doubt that the input was right there."""
    if not isinstance(gate, Gate):
        gate = Gate(float(gate))
    ids: list[int] = []
    origin: list[int] = []
    confidence: list[float] = []
    gated = 0
    position = 0

    def copy(start: int, end: int, probs: list[float]) -> None:
        ids.extend(plan.source[start:end])
        origin.extend(range(start, end))
        confidence.extend(probs)

    for region, threshold in zip(plan.regions, gate.thresholds(plan), strict=True):
        copy(position, region.start, plan.copy_probs[position : region.start])
        if region.confidence >= threshold:
            ids.extend(region.ids)
            origin.extend([-1] * len(region.ids))
            confidence.extend([region.confidence] * len(region.ids))
            if not region.ids and confidence:
                confidence[-1] = min(confidence[-1], region.confidence)
        else:
            gated += 1
            copy(region.start, region.end, [1.0 - region.confidence] * (region.end - region.start))
        position = region.end
    copy(position, len(plan.source), plan.copy_probs[position:])
    return Edited(ids, origin, confidence, gated)


def edit_texts(
    labels: np.ndarray,
    probs: np.ndarray,
    src_ids: np.ndarray,
    src_mask: np.ndarray,
    *,
    upsample: int,
    blank_id: int,
    min_confidence: float | np.ndarray = 0.0,
) -> list[Edited]:
    """`plan_edits` then `apply_edits` for every row, at one threshold or one per row."""
    plans = plan_edits(labels, probs, src_ids, src_mask, upsample=upsample, blank_id=blank_id)
    thresholds = np.broadcast_to(np.asarray(min_confidence, dtype=np.float64), (len(plans),))
    return [apply_edits(plan, float(t)) for plan, t in zip(plans, thresholds, strict=True)]
