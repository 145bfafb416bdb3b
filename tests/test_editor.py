"""The editor: copy-aware CTC on hand-made frames, the collapse and gate of runtime.editing,
the model's invariances, and its export."""

import math

import numpy as np
import pytest
import torch

from runtime.editing import Gate, apply_edits, edit_texts, plan_edits
from training.calibrate import choose_gate
from training.models import build_model
from training.models.editor import best_path, copy_aware_ctc, merge_keep

# A toy label space: ids 0..7 are the vocabulary (0 pad), 8 blank, 9 KEEP; two frames a char.
V, BLANK, KEEP, K = 8, 8, 9, 2
A, B, C, D = 4, 5, 6, 7


def frames(*labels: int, sure: float = 30.0) -> torch.Tensor:
    """Logits ``[1, len(labels), V + 2]`` that put (almost) all mass on each frame's label."""
    logits = torch.zeros(1, len(labels), V + 2)
    for t, label in enumerate(labels):
        logits[0, t, label] = sure
    return logits


def ctc(logits: torch.Tensor, source: list[int], target: list[int]) -> float:
    src = torch.tensor([source])
    return float(
        copy_aware_ctc(
            logits,
            src,
            torch.ones_like(src, dtype=torch.bool),
            torch.tensor([target]),
            torch.tensor([len(target)]),
            K,
            BLANK,
        )
    )


def decode(logits: torch.Tensor, source: list[int], min_confidence: float = 0.0) -> list[int]:
    src = torch.tensor([source])
    labels, probs = best_path(logits, src, K)
    mask = np.ones((1, len(source)), dtype=bool)
    (edited,) = edit_texts(
        labels.numpy(),
        probs.numpy(),
        src.numpy(),
        mask,
        upsample=K,
        blank_id=BLANK,
        min_confidence=min_confidence,
    )
    return edited.ids


CASES = {
    # name: (source, frames, target)
    "copy": ([A, B], [KEEP, BLANK, KEEP, BLANK], [A, B]),
    "copy, both frames": ([A, B], [KEEP, KEEP, KEEP, KEEP], [A, B]),
    "insert": ([A, C], [KEEP, B, KEEP, BLANK], [A, B, C]),
    "delete": ([A, D, B], [KEEP, BLANK, BLANK, BLANK, KEEP, BLANK], [A, B]),
    "substitute": ([A, D], [KEEP, BLANK, C, BLANK], [A, C]),
    "swap": ([B, A], [A, B, BLANK, BLANK], [A, B]),
    "doubled letter": ([A, A], [KEEP, BLANK, KEEP, BLANK], [A, A]),
}


@pytest.mark.parametrize("name", CASES)
def test_the_intended_alignment_costs_nothing_and_decodes_to_the_target(name):
    source, labels, target = CASES[name]
    logits = frames(*labels)
    assert ctc(logits, source, target) < 1e-3
    assert decode(logits, source) == target


def test_a_wrong_target_costs_a_lot():
    source, labels, _ = CASES["insert"]
    assert ctc(frames(*labels), source, [A, C]) > 10  # the frames insert B; "AC" is unlikely


def test_a_doubled_letter_needs_a_blank_between_its_copies():
    logits = frames(KEEP, KEEP, KEEP, KEEP)
    assert decode(logits, [A, A]) == [A]  # repeats merge: the collapse drops a letter
    assert ctc(logits, [A, A], [A, A]) > 10
    assert ctc(frames(KEEP, BLANK, KEEP, BLANK), [A, A], [A, A]) < 1e-3


def test_keep_is_the_source_character_whatever_it_is():
    # KEEP over a frame of source C emits C; the same frames over source D emit D.
    logits = frames(KEEP, BLANK)
    assert decode(logits, [C]) == [C]
    assert decode(logits, [D]) == [D]
    # KEEP and naming the character are one outcome: their probabilities add up.
    log_probs = torch.full((1, 2, V + 2), -9.0)
    log_probs[0, :, C] = np.log(0.3)
    log_probs[0, :, KEEP] = np.log(0.6)
    merged = merge_keep(log_probs, torch.tensor([[C]]), K)
    assert merged.shape == (1, 2, V + 1)
    assert torch.allclose(merged[0, :, C].exp(), torch.tensor([0.9, 0.9]), atol=1e-4)


def test_best_path_is_the_argmax_of_the_merged_distribution():
    """The decoder's shortcut on the logits picks what the merged distribution's argmax picks,
    with its probability, including frames where KEEP or the source character wins and ties."""
    torch.manual_seed(0)
    src = torch.randint(1, V, (6, 5))
    logits = torch.randn(6, 5 * K, V + 2) * 3
    logits[0, :, KEEP] = 20.0  # KEEP wins outright
    source = src.repeat_interleave(K, dim=1)
    # A label beats KEEP and the source character alone, but not the two together ...
    logits[1, :, A], logits[1, :, KEEP] = 20.0, 19.5
    logits[1].scatter_(-1, source[1, :, None], 19.6)
    # ... and here not even together.
    logits[4, :, A], logits[4, :, KEEP] = 20.0, 19.5
    logits[4].scatter_(-1, source[4, :, None], 19.0)
    logits[2].scatter_(-1, source[2, :, None], 20.0)  # the source character itself wins
    logits[3] = logits[3].round()  # integer logits: many exact ties
    merged = merge_keep(logits.log_softmax(-1), src, K).exp()
    want_probs, want_labels = merged.max(-1)
    labels, probs = best_path(logits, src, K)
    assert torch.equal(labels, want_labels)
    assert torch.allclose(probs, want_probs, atol=1e-5)


def test_a_character_outside_the_vocabulary_passes_through_by_keep(editor_artifact):
    from runtime.corrector import Corrector, ModelInfo
    from runtime.engines.onnx import OnnxEngine

    corrector = Corrector(
        ModelInfo.of_artifact(editor_artifact), OnnxEngine(editor_artifact, "fp32")
    )
    blank = len(corrector.vocab)
    text = "ក☃ខ"  # the snowman is outside the vocabulary: its id is unk
    src = np.array([corrector.vocab.encode(text)])
    assert corrector.vocab.unk_id in src[0]
    # KEEP at every character (the merged label of KEEP is the source id), then a blank.
    labels = np.stack([src[0], np.full(3, blank)], 1).reshape(1, 6)
    (plan,) = plan_edits(
        labels, np.ones((1, 6), np.float32), src, np.ones((1, 3), bool), upsample=2, blank_id=blank
    )
    assert not plan.regions
    assert corrector.gated(text, plan).text == text


def _plan_frame_by_frame(labels, probs, source, upsample, blank_id):
    """The collapse written as a loop over frames: what `plan_edits` must agree with."""
    emitted = [[] for _ in source]
    log_prob = [0.0] * len(source)
    previous = blank_id
    for frame, (label, prob) in enumerate(zip(labels, probs, strict=True)):
        position = frame // upsample
        log_prob[position] += math.log(max(prob, 1e-12))
        if label != blank_id and label != previous:
            emitted[position].append((label, prob))
        elif label != blank_id and emitted[position]:  # a repeat: the run's best frame
            emitted[position][-1] = (label, max(emitted[position][-1][1], prob))
        previous = label
    copies = [len(out) == 1 and out[0][0] == source[p] for p, out in enumerate(emitted)]
    regions, position = [], 0
    while position < len(source):
        end = position
        while end < len(source) and not copies[end]:
            end += 1
        if end == position:
            position += 1
            continue
        new = [pair for p in range(position, end) for pair in emitted[p]]
        confidence = math.exp(sum(log_prob[position:end]) / ((end - position) * upsample))
        regions.append((position, end, [t for t, _ in new], [q for _, q in new], confidence))
        position = end
    return [out[0][1] if out else 0.0 for out in emitted], regions


def test_plan_edits_is_the_frame_by_frame_collapse():
    """On random batches of frames rich in blanks, repeats and runs across positions (doubled
    letters, deletions, insertions), rows of different lengths padded with junk frames, the
    batch's array collapse finds each row's emissions, copies, regions and confidences as the
    loop over that row's frames does."""
    rng = np.random.default_rng(0)
    for _ in range(100):
        lengths = rng.integers(1, 12, 4)
        src = int(lengths.max())
        source = rng.integers(A, D + 1, (4, src))
        labels = np.where(
            rng.random((4, src * K)) < 0.6,
            np.repeat(source, K, axis=1),
            rng.integers(A, V + 1, (4, src * K)),
        )
        labels = np.where(rng.random(labels.shape) < 0.3, BLANK, labels)
        probs = rng.random(labels.shape).astype(np.float32)
        mask = np.arange(src) < lengths[:, None]
        plans = plan_edits(labels, probs, source, mask, upsample=K, blank_id=BLANK)
        for row, (n, plan) in enumerate(zip(lengths, plans, strict=True)):
            copy_probs, regions = _plan_frame_by_frame(
                labels[row, : n * K].tolist(),
                probs[row, : n * K].astype(np.float64).tolist(),
                source[row, :n].tolist(),
                K,
                BLANK,
            )
            assert plan.source == source[row, :n].tolist()
            assert plan.copy_probs == pytest.approx(copy_probs)
            assert [(r.start, r.end, r.ids) for r in plan.regions] == [r[:3] for r in regions]
            for region, (*_, probs_want, confidence) in zip(plan.regions, regions, strict=True):
                assert region.probs == pytest.approx(probs_want)
                assert region.confidence == pytest.approx(confidence)


def test_edit_regions_carry_the_geometric_mean_of_their_frames():
    # Source A D B C: D deleted (sure), B replaced by C (unsure), C kept.
    labels = np.array([[A, BLANK, BLANK, BLANK, C, BLANK, C, BLANK]])
    probs = np.array([[0.99, 0.98, 0.97, 0.96, 0.6, 0.9, 0.99, 0.99]], np.float32)
    src = np.array([[A, D, B, C]])
    (plan,) = plan_edits(labels, probs, src, np.ones((1, 4), bool), upsample=K, blank_id=BLANK)
    assert [(r.start, r.end, r.ids) for r in plan.regions] == [(1, 3, [C])]
    assert plan.regions[0].confidence == pytest.approx((0.97 * 0.96 * 0.6 * 0.9) ** 0.25)
    applied = apply_edits(plan, 0.5)
    assert applied.ids == [A, C, C] and applied.gated == 0
    assert applied.origin == [0, -1, 3]


def test_the_gate_leaves_an_edit_under_the_threshold_undone():
    labels = np.array([[A, BLANK, BLANK, BLANK, KEEP, BLANK]])
    src = np.array([[A, D, B]])
    probs = np.array([[0.99, 0.99, 0.7, 0.8, 0.99, 0.99]], np.float32)
    labels = np.where(labels == KEEP, np.repeat(src, 2, axis=1), labels)
    (plan,) = plan_edits(labels, probs, src, np.ones((1, 3), bool), upsample=K, blank_id=BLANK)
    assert apply_edits(plan, 0.6).ids == [A, B]  # the deletion of D is applied
    gated = apply_edits(plan, 0.75)
    assert gated.ids == [A, D, B] and gated.gated == 1  # ... and not above its confidence
    assert gated.confidence[1] == pytest.approx(1 - (0.7 * 0.8) ** 0.5)


def test_a_row_decodes_the_same_alone_and_in_a_padded_batch():
    torch.manual_seed(0)
    model = build_model("editor", 280, "tiny").eval()
    rows = [torch.randint(4, 280, (n,)) for n in (5, 11, 8)]
    batch = torch.zeros(3, 11, dtype=torch.long)
    for i, row in enumerate(rows):
        batch[i, : len(row)] = row
    labels, probs = model.best_path(batch, batch != 0)
    for i, row in enumerate(rows):
        alone_labels, alone_probs = model.best_path(row[None], torch.ones(1, len(row), dtype=bool))
        n = len(row) * model.config.upsample
        assert torch.equal(labels[i, :n], alone_labels[0])
        assert torch.allclose(probs[i, :n], alone_probs[0], atol=1e-5)


def test_the_editor_trains_through_its_loss():
    torch.manual_seed(0)
    model = build_model("editor", 280, "tiny")
    src = torch.randint(4, 280, (4, 9))
    tgt = torch.cat([torch.ones(4, 1, dtype=torch.long), src[:, :7], torch.full((4, 1), 2)], 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        out = model.loss(src, src != 0, tgt)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(float(out.loss.detach()))
    assert out.n_tokens == 4 * 7
    assert losses[-1] < 0.2 * losses[0]


def test_export_is_verified_and_calibrated(editor_artifact):
    manifest = editor_artifact.manifest
    assert list(editor_artifact.graphs) == ["editor"]
    report = manifest["verification"]
    assert not report["failures"]
    fp32 = report["variants"]["fp32"]
    assert fp32["greedy_identical"] == report["rows"]
    assert fp32["max_abs_diff"]["editor"] < 1e-4
    gate = manifest["gate"]
    assert gate["calibrated"] and gate["bounds_met"]
    chosen = gate["chosen"]
    assert chosen["clean_cer_introduced"] <= gate["bounds"]["max_clean_cer_introduced"]
    assert chosen["harm_rate"] <= gate["bounds"]["max_harm_rate"]
    assert chosen["min_confidence"] == gate["min_confidence"]
    thresholds = [point["min_confidence"] for point in gate["curve"]]
    assert thresholds == sorted(thresholds) and gate["min_confidence"] in thresholds
    # Damage-aware gates are tried on top of the best pair, each relaxing it in damaged text.
    assert gate["damaged"] and {p["min_confidence"] for p in gate["damaged"]} == {
        gate["min_confidence"]
    }
    assert all(p["damaged_min_confidence"] < p["min_confidence"] for p in gate["damaged"])
    assert all(chosen[k] == gate[k] for k in Gate.SETTINGS)


def test_deleting_only_spaces_is_held_to_its_own_threshold():
    # Source A _ B C (D plays the space): the space deleted and C replaced by A, both at 0.8.
    labels = np.array([[A, BLANK, BLANK, BLANK, B, BLANK, A, BLANK]])
    probs = np.array([[0.99, 0.99, 0.8, 0.8, 0.99, 0.99, 0.8, 0.8]], np.float32)
    src = np.array([[A, D, B, C]])
    (plan,) = plan_edits(labels, probs, src, np.ones((1, 4), bool), upsample=K, blank_id=BLANK)
    assert [(r.start, r.end) for r in plan.regions] == [(1, 2), (3, 4)]
    assert apply_edits(plan, Gate(0.7)).ids == [A, B, A]  # one threshold: both applied
    strict = apply_edits(plan, Gate(0.7, space_min_confidence=0.9, space_id=D))
    assert strict.ids == [A, D, B, A] and strict.gated == 1  # the space stays
    assert apply_edits(plan, Gate(0.7, space_min_confidence=0.9, space_id=C)).ids == [A, B, A]


def test_in_damaged_text_the_gate_admits_less_confident_edits():
    # Source A D B C C: D deleted at 0.995 (a sure edit), the last C replaced by A at 0.6.
    labels = np.array([[A, BLANK, BLANK, BLANK, B, BLANK, C, BLANK, A, BLANK]])
    probs = np.array([[0.99, 0.99, 0.995, 0.995, 0.99, 0.99, 0.99, 0.99, 0.6, 0.6]], np.float32)
    src = np.array([[A, D, B, C, C]])
    (plan,) = plan_edits(labels, probs, src, np.ones((1, 5), bool), upsample=K, blank_id=BLANK)
    assert [(r.start, r.end) for r in plan.regions] == [(1, 2), (4, 5)]
    damage = {"damaged_min_confidence": 0.5, "damage_confidence": 0.99}
    assert apply_edits(plan, Gate(0.9)).ids == [A, B, C, C]  # the unsure edit turned down
    assert apply_edits(plan, Gate(0.9, **damage)).ids == [A, B, C, A]  # damaged: applied
    # Not damaged enough: the sure edit is not sure enough, or there are too few of them.
    assert apply_edits(plan, Gate(0.9, **{**damage, "damage_confidence": 0.999})).ids == [
        A,
        B,
        C,
        C,
    ]
    assert apply_edits(plan, Gate(0.9, **damage, damage_edits=2)).ids == [A, B, C, C]
    # The settings export writes to the manifest give the same gate back.
    gate = Gate(0.9, 0.97, D, **damage, damage_edits=2)
    assert Gate.of_settings(gate.settings(), D) == gate
    assert Gate.of_settings({"min_confidence": 0.9}, D) == Gate(0.9, space_id=D)
    assert "damaged text (2 edits at least 0.99 sure) every edit from 0.5" in gate.describe()


def test_calibration_breaks_ties_towards_the_stricter_gate():
    scores = {"reduction": 0.5, "harm_rate": 0.0, "clean_cer_introduced": 0.0}
    damaged = {"damaged_min_confidence": 0.5}
    gates = [
        Gate(0.9, **damaged, damage_confidence=0.99),
        Gate(0.9, **damaged, damage_confidence=0.999),
        Gate(0.9, **damaged, damage_confidence=0.999, damage_edits=2),
        Gate(0.9, **damaged, damage_confidence=0.99, damage_edits=2),
    ]
    chosen = choose_gate([{**g.settings(), **scores} for g in gates])
    assert Gate.of_settings(chosen, None) == gates[2] and chosen["bounds_met"]
