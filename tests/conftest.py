"""Shared fixtures. Test text is written here by hand: no corpus text enters the repository."""

import json
import random

import pytest
from tiny import EXPORT_CONFIG, corrupt, pad

KHMER_SENTENCES = [
    "ខ្ញុំស្រឡាញ់ប្រទេសកម្ពុជា ហើយខ្ញុំចង់រៀនភាសាខ្មែរឱ្យបានល្អ។",
    "រាជធានីភ្នំពេញ គឺជាទីក្រុងធំជាងគេបំផុតនៅក្នុងប្រទេសកម្ពុជា។",
    "សិស្សានុសិស្សទាំងអស់ត្រូវមកសាលារៀនឱ្យបានទាន់ពេលវេលា។",
    "ថ្ងៃនេះអាកាសធាតុល្អណាស់ យើងទៅលេងសួនច្បារជាមួយគ្នា។",
    "ស្ត្រីម្នាក់កំពុងលក់ផ្លែឈើនៅផ្សារថ្មី ក្បែរវិមានឯករាជ្យ។",
    "កសិករនៅខេត្តបាត់ដំបងដាំស្រូវ និងបន្លែច្រើនប្រភេទ។",
    "សូមផ្ញើសំបុត្រមកអាសយដ្ឋាន info@example.org មុនថ្ងៃទី១៥ ខែមករា។",
    "ក្រសួងអប់រំបានប្រកាសកាលវិភាគប្រឡងថ្មីសម្រាប់ឆ្នាំ 2025 ។",
    "កូនៗរបស់គាត់ចូលចិត្តអានសៀវភៅរឿងព្រេងខ្មែរនៅពេលយប់។",
    "ព្រះអាទិត្យរះនៅទិសខាងកើត ហើយលិចនៅទិសខាងលិច។",
    "អ្នកភូមិបានជួយគ្នាសាងសង់ស្ពានឈើឆ្លងកាត់អូរតូចមួយ។",
    "តើអ្នកចង់ទិញកាហ្វេទឹកដោះគោទឹកកកមួយកែវទេ?",
]


@pytest.fixture(scope="session")
def khmer_sentences() -> list[str]:
    """Read-only: shared by the whole session."""
    return list(KHMER_SENTENCES)


@pytest.fixture(scope="session")
def vocab():
    from runtime.text import Vocab

    return Vocab.default()


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory):
    """A hybrid trained for 300 steps to repair the test sentences, so greedy output is real."""
    import torch

    from runtime.text import Vocab
    from training import checkpoint
    from training.models import build_model

    vocab = Vocab.default()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model on 2 busy cores: a second thread only adds contention
    rng = random.Random(0)
    torch.manual_seed(0)
    model = build_model("hybrid", len(vocab), "tiny")
    pairs = [(corrupt(s, rng), s) for s in KHMER_SENTENCES for _ in range(4)]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(300):
        batch = rng.sample(pairs, 12)
        src, mask = pad([vocab.encode(a) for a, _ in batch])
        tgt, _ = pad([[vocab.bos_id, *vocab.encode(b), vocab.eos_id] for _, b in batch])
        loss = model.loss(torch.from_numpy(src), torch.from_numpy(mask), torch.from_numpy(tgt))
        optimizer.zero_grad()
        loss.loss.backward()
        optimizer.step()
    torch.set_num_threads(threads)
    run = tmp_path_factory.mktemp("runs") / "tiny-hybrid"
    meta = {"metrics": {"val_cer": 0.05, "val_loss": loss.loss.item()}, "progress": {"step": 300}}
    checkpoint.save(
        run / "checkpoints", "best", model_name="hybrid", model=model.eval(), vocab=vocab, meta=meta
    )
    return run


@pytest.fixture(scope="session")
def char_transformer_run_dir(tmp_path_factory):
    """A tiny char_transformer trained for 300 steps to repair the test sentences."""
    import torch

    from runtime.text import Vocab
    from training import checkpoint
    from training.models import build_model

    vocab = Vocab.default()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rng = random.Random(0)
    torch.manual_seed(0)
    model = build_model("char_transformer", len(vocab), "tiny")
    pairs = [(corrupt(s, rng), s) for s in KHMER_SENTENCES for _ in range(4)]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(300):
        batch = rng.sample(pairs, 12)
        src, mask = pad([vocab.encode(a) for a, _ in batch])
        tgt, _ = pad([[vocab.bos_id, *vocab.encode(b), vocab.eos_id] for _, b in batch])
        loss = model.loss(torch.from_numpy(src), torch.from_numpy(mask), torch.from_numpy(tgt))
        optimizer.zero_grad()
        loss.loss.backward()
        optimizer.step()
    torch.set_num_threads(threads)
    run = tmp_path_factory.mktemp("runs") / "tiny-char-transformer"
    checkpoint.save(
        run / "checkpoints",
        "best",
        model_name="char_transformer",
        model=model.eval(),
        vocab=vocab,
        meta={"metrics": {"val_loss": loss.loss.item()}},
    )
    return run


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    rng = random.Random(1)
    folder = tmp_path_factory.mktemp("data")
    with open(folder / "test.jsonl", "w", encoding="utf-8") as f:
        for i in range(200):
            target = KHMER_SENTENCES[i % len(KHMER_SENTENCES)]
            row = {"input": corrupt(target, rng), "target": target, "channel": "synthetic"}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return folder


@pytest.fixture(scope="session")
def artifact(run_dir, data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("artifacts") / "tiny-hybrid"
    from export.build import export_artifact

    return export_artifact(run_dir, out, EXPORT_CONFIG, data=data_dir, log=lambda _: None)


@pytest.fixture(scope="session")
def editor_data_dir(tmp_path_factory):
    """val and test splits for the editor: damaged rows and clean ones (for the gate)."""
    rng = random.Random(2)
    folder = tmp_path_factory.mktemp("editor-data")
    for split, count in (("val", 120), ("test", 120)):
        with open(folder / f"{split}.jsonl", "w", encoding="utf-8") as f:
            for i in range(count):
                target = KHMER_SENTENCES[i % len(KHMER_SENTENCES)]
                clean = i % 4 == 0
                row = {
                    "input": target if clean else corrupt(target, rng),
                    "target": target,
                    "channel": "clean" if clean else "synthetic",
                }
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return folder


@pytest.fixture(scope="session")
def editor_run_dir(tmp_path_factory):
    """A tiny editor trained for 300 steps to repair the test sentences (and leave them alone
    when they are right), saved as a run directory."""
    import torch

    from runtime.text import Vocab
    from training import checkpoint
    from training.models import build_model

    vocab = Vocab.default()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rng = random.Random(0)
    torch.manual_seed(0)
    model = build_model("editor", len(vocab), "tiny")
    pairs = [(corrupt(s, rng), s) for s in KHMER_SENTENCES for _ in range(4)]
    pairs += [(s, s) for s in KHMER_SENTENCES]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(300):
        batch = rng.sample(pairs, 12)
        src, mask = pad([vocab.encode(a) for a, _ in batch])
        tgt, _ = pad([[vocab.bos_id, *vocab.encode(b), vocab.eos_id] for _, b in batch])
        loss = model.loss(torch.from_numpy(src), torch.from_numpy(mask), torch.from_numpy(tgt))
        optimizer.zero_grad()
        loss.loss.backward()
        optimizer.step()
    torch.set_num_threads(threads)
    run = tmp_path_factory.mktemp("runs") / "tiny-editor"
    meta = {"metrics": {"val_cer": 0.05, "val_loss": loss.loss.item()}, "progress": {"step": 300}}
    checkpoint.save(
        run / "checkpoints", "best", model_name="editor", model=model.eval(), vocab=vocab, meta=meta
    )
    return run


@pytest.fixture(scope="session")
def editor_artifact(editor_run_dir, editor_data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("artifacts") / "tiny-editor"
    from export.build import export_artifact

    return export_artifact(
        editor_run_dir, out, EXPORT_CONFIG, data=editor_data_dir, log=lambda _: None
    )
