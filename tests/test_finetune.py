"""Fine-tuning: start from a trained checkpoint or export (--model.init_from), train all, only the head, or only the
prompt."""

import shutil

import pytest
import torch
from experiment_helpers import fit_tiny, trained_parts
from helpers import TINY_MODEL

from clip_agiqa import CLIPAGIQA, export_checkpoint


@pytest.fixture(scope="module")
def start(synthetic_root, tmp_path_factory):
    """A trained checkpoint and its trained tensors."""
    run_dir = tmp_path_factory.mktemp("start")
    fit_tiny(synthetic_root, run_dir)
    checkpoint = run_dir / "checkpoints" / "best.ckpt"
    return checkpoint, trained_parts(CLIPAGIQA.load_from_checkpoint(checkpoint))


def changed(before: dict, after: dict, prefix: str) -> bool:
    keys = [k for k in before if k.startswith(prefix)]
    assert keys, prefix
    return any(not torch.equal(before[k], after[k]) for k in keys)


@pytest.mark.parametrize("trainable, moves, stays", [("head", "head.", "prompt_learner."),
                                                     ("prompt", "prompt_learner.", "head.")])
def test_init_from_a_checkpoint_trains_only_the_chosen_part(start, synthetic_root, tmp_path, trainable, moves, stays):
    checkpoint, before = start
    cli = fit_tiny(synthetic_root, tmp_path, "--model.init_from", str(checkpoint), "--model.trainable", trainable,
                   "--model.lr", "0.05", "--model.warmup_epochs", "0")
    after = trained_parts(cli.model)
    assert changed(before, after, moves)
    assert not changed(before, after, stays)  # started from the checkpoint and stayed frozen
    assert all(p.requires_grad == n.startswith(moves) for n, p in cli.model.model.named_parameters()
               if not n.startswith("clip."))


def test_init_from_an_export_and_reload_without_the_source(start, synthetic_root, tmp_path):
    checkpoint, before = start
    exported = export_checkpoint(checkpoint, tmp_path / "export")
    cli = fit_tiny(synthetic_root, tmp_path / "run", "--model.init_from", str(exported),
                   "--model.trainable", "head", "--model.lr", "0.05", "--model.warmup_epochs", "0")
    assert not changed(before, trained_parts(cli.model), "prompt_learner.")
    shutil.rmtree(exported)  # the fine-tuned checkpoint stands on its own
    reloaded = CLIPAGIQA.load_from_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    for key, value in trained_parts(cli.model).items():
        assert torch.equal(trained_parts(reloaded)[key], value), key


def test_init_from_takes_the_architecture_and_refuses_a_contradiction(start, synthetic_root, tmp_path):
    """Seen: the architecture of the start had to be repeated; now it comes from the checkpoint or export."""
    checkpoint, before = start
    exported = export_checkpoint(checkpoint, tmp_path / "export")
    for source in (checkpoint, exported):
        model = CLIPAGIQA(init_from=str(source))  # no n_ctx/hidden_dim/backbone: all from the source
        assert model.hparams.backbone == "random:tiny" and model.hparams.n_ctx == 4 and model.hparams.hidden_dim == 16
        for key, value in trained_parts(model).items():
            if key != "mos_scale":
                assert torch.equal(value, before[key]), key
    with pytest.raises(ValueError, match="n_ctx 2 differs from 4 of init_from"):
        CLIPAGIQA(init_from=str(checkpoint), n_ctx=2)
    with pytest.raises(ValueError, match="missing.ckpt"):
        CLIPAGIQA(init_from=str(tmp_path / "missing.ckpt"))


def test_default_trains_context_and_head_and_an_unknown_choice_is_refused():
    model = CLIPAGIQA(**TINY_MODEL)
    trained = {n for n, p in model.model.named_parameters() if p.requires_grad}
    assert any(n.startswith("head.") for n in trained) and "prompt_learner.ctx" in trained
    assert not any(n.startswith("clip.") for n in trained)
    with pytest.raises(ValueError, match="trainable"):
        CLIPAGIQA(**TINY_MODEL, trainable="everything")
