"""The optimizers ``--optimizer`` names: AdamW, or Muon for the hidden matrices beside AdamW.

Muon (Jordan et al. 2024; ``torch.optim.Muon``) replaces each weight matrix's update by the
nearest orthogonal matrix to its momentum (a few Newton-Schulz iterations), so that every
direction of the matrix learns at the same rate instead of the few that dominate the gradient.
It learns more per step than AdamW, which is what a 2-core budget needs (docs/results.md: the
editor at equal CPU time). It is only for the matrices inside the network: embeddings, output
heads, convolution kernels, biases and norm gains stay with AdamW, as in Muon's own recipe.
The update's scale is matched to AdamW's (``match_rms_adamw``), so both take the run's lr and
schedule.
"""

from __future__ import annotations

import torch
from torch import nn

OPTIMIZERS = ("adamw", "muon")
BETAS = (0.9, 0.98)


def adamw(params: list[nn.Parameter], lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW; matrices and embeddings decay, biases and norm gains do not (as nanoGPT). The fused
    update (one kernel for every tensor) is 3% of a CPU step faster than the per-tensor loop."""
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=BETAS, fused=True)


def hidden_matrices(model: nn.Module) -> list[nn.Parameter]:
    """The weights of the model's linear layers, output heads (``*head``) excepted."""
    return [
        module.weight
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and not name.endswith("head")
    ]


class MuonAdamW:
    """Muon over :func:`hidden_matrices`, AdamW over every other parameter, stepped as one
    optimizer: ``param_groups`` (Muon's first), ``step``, ``zero_grad``, ``state_dict`` and
    ``load_state_dict`` in ``torch.optim.Optimizer``'s format, parameters numbered across both,
    so that the trainer, its checkpoints and ``GradScaler`` treat it like any optimizer."""

    def __init__(self, model: nn.Module, lr: float, weight_decay: float) -> None:
        hidden = hidden_matrices(model)
        ids = {id(p) for p in hidden}
        rest = [p for p in model.parameters() if id(p) not in ids]
        self.parts = [
            torch.optim.Muon(
                hidden, lr=lr, weight_decay=weight_decay, adjust_lr_fn="match_rms_adamw"
            ),
            adamw(rest, lr, weight_decay),
        ]

    @property
    def param_groups(self) -> list[dict]:
        return [group for part in self.parts for group in part.param_groups]

    def step(self) -> None:
        for part in self.parts:
            part.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for part in self.parts:
            part.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        state, groups, offset = {}, [], 0
        for part in self.parts:
            saved = part.state_dict()
            state.update({index + offset: s for index, s in saved["state"].items()})
            groups += [
                {**group, "params": [i + offset for i in group["params"]]}
                for group in saved["param_groups"]
            ]
            offset += sum(len(group["params"]) for group in saved["param_groups"])
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, saved: dict) -> None:
        groups, offset = saved["param_groups"], 0
        for part in self.parts:
            own, groups = groups[: len(part.param_groups)], groups[len(part.param_groups) :]
            count = sum(len(group["params"]) for group in own)
            state = {
                index - offset: s
                for index, s in saved["state"].items()
                if offset <= index < offset + count
            }
            # Each part numbers its own parameters from 0 (as its state_dict does).
            own = [{**group, "params": [i - offset for i in group["params"]]} for group in own]
            part.load_state_dict({"state": state, "param_groups": own})
            offset += count


def make_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float):
    if name == "muon":
        return MuonAdamW(model, lr, weight_decay)
    return adamw(list(model.parameters()), lr, weight_decay)
