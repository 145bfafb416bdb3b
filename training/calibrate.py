"""The editor's confidence gate, calibrated on held-out rows.

Every edit the editor proposes carries a confidence (`runtime.editing`); edits under the
gate's threshold are not applied. A low threshold applies more of the right edits and more of
the wrong ones. Calibration corrects the validation rows once, then re-applies the edits at
each gate of a grid and keeps the one that corrects most while

* clean text gets at most ``max_clean_introduced`` CER, and
* at most ``max_harm`` of all rows come out worse than they went in.

Clean text is measured on every row's target fed in as input, not only on the split's clean
rows: a few dozen clean rows (76 in the 5k-sentence corpus's val split) put 0.05% at two
characters, and on the 60-minute editor they passed a gate that, on all 3,515 targets,
introduces 0.11%.

A gate is one threshold for every edit, or a pair: one for edits, a stricter one for edits
that only delete spaces (`runtime.editing.Gate`; measured on the first 60-minute editor's
validation split: 62.6% CER reduction within the bounds with a pair, 41.9% with one
threshold). On top of the best of those, calibration tries damage-aware gates: in a piece
holding a sure edit, every edit applies from a lower threshold (measured on the 60-minute
editor with clean copies: validation 63.0% → 67.4%, test PDF rows 54.7% → 60.4%; see
docs/results.md). Every point's scores are returned too (the gate curve), for the reports.
"""

from __future__ import annotations

from collections.abc import Sequence

from runtime.corrector import Corrector
from runtime.editing import Gate
from runtime.pipeline import assemble, prepare
from runtime.text import ScoreBoard

THRESHOLDS = (
    0.0,
    0.5,
    0.7,
    0.8,
    0.85,
    0.9,
    0.93,
    0.95,
    0.96,
    0.97,
    0.98,
    0.99,
    0.995,
    0.998,
    0.999,
    0.9995,
    0.9999,
    1.0,
)
# Pairs tried besides one threshold for all: edits from each of these, space-only deletions
# from a stricter threshold of THRESHOLDS (runtime.editing.Gate).
EDIT_THRESHOLDS = (0.7, 0.8, 0.85, 0.9, 0.93, 0.95)
# Damage-aware gates tried on top of the best of those: how sure an edit must be, and how
# many such edits a piece must hold, to call it damaged; where edits then apply from.
DAMAGE_CONFIDENCES = (0.99, 0.995, 0.999)
DAMAGE_EDITS = (1, 2)
DAMAGED_THRESHOLDS = (0.0, 0.3, 0.5, 0.7, 0.8)
MAX_CLEAN_INTRODUCED = 0.0005  # CER introduced on clean rows
MAX_HARM = 0.01  # share of rows made worse


class PlannedRows:
    """Rows (``input``/``target``) with the editor's plans computed once, so that any number
    of gates can be scored without running the model again."""

    def __init__(self, corrector: Corrector, rows: Sequence[dict], batch_size: int = 32):
        self.corrector = corrector
        self.rows = rows
        self.prepared = [
            prepare(row["input"], corrector.vocab, corrector.max_src_len) for row in rows
        ]
        pieces = sorted({piece for p in self.prepared for piece in p.model_inputs}, key=len)
        self.plans = {}
        for start in range(0, len(pieces), batch_size):
            batch = pieces[start : start + batch_size]
            self.plans.update(zip(batch, corrector.plan(batch), strict=True))

    def score(self, gate: Gate) -> dict:
        board = ScoreBoard()
        for row, p in zip(self.rows, self.prepared, strict=True):
            pieces_out = [
                self.corrector.gated(piece, self.plans[piece], gate) for piece in p.model_inputs
            ]
            board.add(row["input"], assemble(p, pieces_out, with_spans=False).text, row["target"])
        return {
            **gate.settings(),
            "cer_before": board.cer_before,
            "cer_after": board.cer_after,
            "reduction": board.relative_reduction,
            "harm_rate": board.harm_rate,
            "clean_rows": board.clean_rows,
            "clean_cer_introduced": board.clean_cer_introduced,
        }


def gate_points(rows: PlannedRows, targets: PlannedRows, gates: Sequence[Gate]) -> list[dict]:
    """Each gate's scores on ``rows``, with clean damage measured on ``targets`` (the same
    rows' targets given as input)."""
    points = []
    for gate in gates:
        on_clean = targets.score(gate)
        points.append(
            {
                **rows.score(gate),
                "clean_rows": on_clean["clean_rows"],
                "clean_cer_introduced": on_clean["clean_cer_introduced"],
            }
        )
    return points


def _strictness(p: dict) -> tuple[float, ...]:
    """Higher is stricter: higher thresholds, and damage that takes surer or more edits."""
    damaged = p["damaged_min_confidence"]
    return (
        p["min_confidence"],
        p["space_min_confidence"] or p["min_confidence"],
        p["min_confidence"] if damaged is None else damaged,
        p["damage_confidence"],
        p["damage_edits"],
    )


def choose_gate(
    points: list[dict],
    max_clean_introduced: float = MAX_CLEAN_INTRODUCED,
    max_harm: float = MAX_HARM,
) -> dict:
    """The point of most CER reduction within both bounds (ties: the stricter), with whether
    the bounds were met; none within them: the strictest point there is."""
    within = [
        p
        for p in points
        if p["clean_cer_introduced"] <= max_clean_introduced and p["harm_rate"] <= max_harm
    ]
    if within:
        return {**max(within, key=lambda p: (p["reduction"], _strictness(p))), "bounds_met": True}
    return {**max(points, key=_strictness), "bounds_met": False}


def damage_aware(base: Gate) -> list[Gate]:
    """The damage-aware gates tried on top of ``base``: only those that relax it."""
    return [
        Gate(
            base.min_confidence,
            base.space_min_confidence,
            base.space_id,
            damaged_min_confidence=relaxed,
            damage_confidence=sure,
            damage_edits=edits,
        )
        for sure in DAMAGE_CONFIDENCES
        for edits in DAMAGE_EDITS
        for relaxed in DAMAGED_THRESHOLDS
        if relaxed < base.min_confidence
    ]


def calibrate(
    corrector: Corrector,
    rows: Sequence[dict],
    *,
    max_clean_introduced: float = MAX_CLEAN_INTRODUCED,
    max_harm: float = MAX_HARM,
) -> dict:
    """The gate for ``corrector``'s model from ``rows`` (a validation split): the chosen
    settings (`Gate.SETTINGS`), the bounds, the curve of one threshold for every edit, the
    pairs and the damage-aware gates tried."""
    space_id = corrector.gate.space_id
    planned = PlannedRows(corrector, rows)
    targets = PlannedRows(corrector, [{**row, "input": row["target"]} for row in rows])
    single = [Gate(t) for t in THRESHOLDS]
    pairs = [Gate(t, s, space_id) for t in EDIT_THRESHOLDS for s in THRESHOLDS if s > t]
    points = gate_points(planned, targets, single + pairs)
    base = choose_gate(points, max_clean_introduced, max_harm)
    damaged = []
    if base["bounds_met"]:
        base_gate = Gate.of_settings(base, space_id)
        damaged = gate_points(planned, targets, damage_aware(base_gate))
    chosen = choose_gate(points + damaged, max_clean_introduced, max_harm)
    settings = {k: chosen[k] for k in Gate.SETTINGS}
    return {
        **settings,
        "bounds": {"max_clean_cer_introduced": max_clean_introduced, "max_harm_rate": max_harm},
        "bounds_met": chosen["bounds_met"],
        "rows": len(rows),
        "chosen": {k: v for k, v in chosen.items() if k != "bounds_met"},
        "curve": points[: len(single)],
        "pairs": points[len(single) :],
        "damaged": damaged,
    }
