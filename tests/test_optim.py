"""The optimizers: which parameters Muon takes, and a MuonAdamW that saves and resumes exactly."""

import copy

import torch

from training.models.editor import Editor, EditorConfig
from training.optim import MuonAdamW, hidden_matrices, make_optimizer

TINY = EditorConfig(vocab_size=40, d_model=32, n_heads=2, n_layers=1, n_frame_layers=1, ffn_dim=64)


def batch():
    g = torch.Generator().manual_seed(1)
    src = torch.randint(3, 40, (4, 12), generator=g)
    tgt = torch.cat([torch.ones(4, 1, dtype=torch.long), src[:, :9], torch.full((4, 1), 2)], 1)
    return src, torch.ones(4, 12, dtype=torch.bool), tgt


def train_steps(model, optimizer, n):
    for _ in range(n):
        model.loss(*batch()).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def test_muon_takes_the_hidden_matrices_only():
    model = Editor(TINY)
    hidden = {id(p) for p in hidden_matrices(model)}
    names = {n for n, p in model.named_parameters() if id(p) in hidden}
    assert "upsample.weight" in names and "blocks.0.attn.wq.weight" in names
    assert "blocks.0.ffn.up.weight" in names and "frame_blocks.0.ffn.down.weight" in names
    # Embeddings, the output head, the slot vectors, convolutions, biases and gains: AdamW.
    for name in ("embed.weight", "head.weight", "slot", "blocks.0.conv.weight", "norm.weight"):
        assert name not in names
    assert all(model.get_parameter(n).dim() == 2 for n in names)
    optimizer = make_optimizer(model, "muon", 1e-3, 0.01)
    assert isinstance(optimizer.parts[0], torch.optim.Muon)
    owned = [p for group in optimizer.param_groups for p in group["params"]]
    assert len(owned) == len({id(p) for p in owned}) == len(list(model.parameters()))


def test_adamw_is_one_plain_optimizer():
    optimizer = make_optimizer(Editor(TINY), "adamw", 1e-3, 0.01)
    assert isinstance(optimizer, torch.optim.AdamW)


def test_muon_adamw_resumes_exactly_from_its_state_dict():
    torch.manual_seed(0)
    model = Editor(TINY)
    optimizer = MuonAdamW(model, 3e-3, 0.01)
    train_steps(model, optimizer, 3)
    saved_model = {k: v.clone() for k, v in model.state_dict().items()}
    saved = copy.deepcopy(optimizer.state_dict())  # as written to disk: not the live tensors
    # Numbered across both parts, as torch.optim.Optimizer numbers across its groups.
    ids = [i for group in saved["param_groups"] for i in group["params"]]
    assert ids == list(range(len(ids))) and set(saved["state"]) == set(ids)
    train_steps(model, optimizer, 2)
    expected = {k: v.clone() for k, v in model.state_dict().items()}

    resumed = Editor(TINY)
    resumed.load_state_dict(saved_model)
    again = MuonAdamW(resumed, 3e-3, 0.01)
    again.load_state_dict(saved)
    train_steps(resumed, again, 2)
    for name, value in resumed.state_dict().items():
        assert torch.equal(value, expected[name]), name
    # And the moments matter: a fresh optimizer from the same weights lands elsewhere.
    fresh = Editor(TINY)
    fresh.load_state_dict(saved_model)
    train_steps(fresh, MuonAdamW(fresh, 3e-3, 0.01), 2)
    assert not torch.equal(fresh.head.weight, expected["head.weight"])
