"""Training in two processes (DistributedDataParallel over gloo, on CPU): the gradients of a
global batch, and the whole loop with an exact resume."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file
from test_train import config, pairs, train_losses, write
from torch.nn.parallel import DistributedDataParallel

from runtime.net import free_port
from runtime.text import Vocab
from training import checkpoint
from training.models import build_model
from training.train import Example, Objective, collate, connect, global_share, train

WORLD = 2
VOCAB = Vocab.default()


def join_as(rank: int, port: int) -> None:
    """What torchrun sets for each process it starts."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE=str(WORLD),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)


def examples(rows: list[dict]) -> list[Example]:
    return [
        Example(
            r["input"],
            r["target"],
            VOCAB.encode(r["input"]),
            [VOCAB.bos_id, *VOCAB.encode(r["target"]), VOCAB.eos_id],
        )
        for r in rows
    ]


def fresh(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(name, len(VOCAB), "tiny", dropout=0.0)


def gradients(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.grad.detach().clone() for name, p in model.named_parameters()}


# --------------------------------------------------------------------------- gradients


def _gradient_worker(rank: int, port: int, cases: dict, out: str) -> None:
    join_as(rank, port)
    dist = connect("cpu")
    try:
        for name, shards in cases.items():
            model = fresh(name)
            objective = DistributedDataParallel(Objective(model))
            src, mask, tgt = collate(examples(shards[rank]), VOCAB.pad_id)
            n_local = int((tgt[:, 1:] != VOCAB.pad_id).sum())
            (n_global,) = dist.all_sum(n_local)
            loss = global_share(objective(src, mask, tgt).loss, n_local, n_global, dist.world)
            loss.backward()
            if dist.main:
                save_file(gradients(model), str(Path(out) / f"{name}.safetensors"))
            del objective  # before the process group goes: a DDP outliving it aborts at exit
    finally:
        torch.distributed.destroy_process_group()


def reverse(row: dict) -> dict:
    """Other characters, the same lengths: a shard with the same token counts."""
    return {**row, "input": row["input"][::-1], "target": row["target"][::-1]}


@pytest.mark.timeout(120)
def test_two_processes_give_the_gradients_of_one(tmp_path: Path, khmer_sentences):
    """Each process takes its shard; the loss is scaled by its share of the global target tokens
    (train.global_share), and DDP averages: the gradient of one process on all the rows.

    The char transformer gets shards with different row and token counts. The hybrid's auxiliary
    loss is a mean over aligned positions, so its shards have equal counts of both."""
    rows = pairs(khmer_sentences, 6)
    cases = {
        "char_transformer": [rows[:4], rows[4:]],
        "hybrid": [rows[2:5], [reverse(r) for r in rows[2:5]]],
    }
    mp.spawn(_gradient_worker, args=(free_port(), cases, str(tmp_path)), nprocs=WORLD)
    for name, shards in cases.items():
        model = fresh(name)
        src, mask, tgt = collate(examples(shards[0] + shards[1]), VOCAB.pad_id)
        Objective(model)(src, mask, tgt).loss.backward()
        expected = gradients(model)
        got = load_file(tmp_path / f"{name}.safetensors")
        assert set(got) == set(expected)
        for key, grad in expected.items():
            assert grad.abs().sum() > 0 or key.endswith("bias"), key
            torch.testing.assert_close(got[key], grad, rtol=1e-4, atol=1e-6, msg=key)


# --------------------------------------------------------------------------- the whole loop


def _train_worker(rank: int, runs: list[tuple[int, object]]) -> None:
    for port, cfg in runs:
        join_as(rank, port)
        train(cfg)


@pytest.mark.timeout(180)
def test_two_process_training_resumes_exactly(tmp_path: Path, khmer_sentences):
    """7 steps and a resume to 12 give the losses of 12 steps in one go; only rank 0 writes."""
    rows = pairs(khmer_sentences)
    data = tmp_path / "data"
    data.mkdir()
    write(data / "train.jsonl", rows * 5)
    write(data / "val.jsonl", rows[:4])
    changes = dict(epochs=6, dropout=0.2, eval_rows=4, save_every=3, batch_tokens=600)
    runs = [
        (free_port(), config(data, tmp_path / "whole", max_steps=12, **changes)),
        (free_port(), config(data, tmp_path / "cut", max_steps=7, **changes)),
        (free_port(), config(data, tmp_path / "cut", max_steps=12, resume=True, **changes)),
    ]
    mp.spawn(_train_worker, args=(runs,), nprocs=WORLD)

    expected, got = train_losses(tmp_path / "whole"), train_losses(tmp_path / "cut")
    assert sorted(got) == list(range(1, 13))
    assert [got[s] for s in range(8, 13)] == pytest.approx([expected[s] for s in range(8, 13)])
    ck = checkpoint.load(tmp_path / "cut", "last")
    assert ck.meta["progress"]["world_size"] == WORLD
    assert {"rng.cpu.0", "rng.cpu.1"} <= set(ck.tensors)
    events = [p for p in (tmp_path / "cut").iterdir() if p.name.startswith("events.out")]
    assert len(events) == 2  # one per run of rank 0 (the fresh one and the resumed one)
