"""The training task around CLIPAGIQAModel: frozen backbone, small checkpoints, schedule, heads, precision, loss."""

import math

import lightning as L
import pytest
import torch
from helpers import TINY_MODEL

from clip_agiqa import CLIPAGIQA, MOSFolder
from clip_agiqa.module import FROZEN_PREFIX


def make_trainer(tmp_path, epochs=1, **kwargs):
    kwargs.setdefault("callbacks", [L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True)])
    return L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_progress_bar=False,
                     enable_model_summary=False, default_root_dir=tmp_path, **kwargs)


def fit(model, root, tmp_path, epochs=1, **trainer_kwargs):
    data = MOSFolder(str(root), batch_size=8, num_workers=0)
    trainer = make_trainer(tmp_path, epochs, **trainer_kwargs)
    trainer.fit(model, data)
    return trainer, data


def test_only_context_and_head_train(tiny_model, synthetic_root, tmp_path):
    frozen_before = {k: v.clone() for k, v in tiny_model.model.clip.state_dict().items()}
    ctx_before = tiny_model.model.prompt_learner.ctx.detach().clone()
    head_before = [p.detach().clone() for p in tiny_model.model.head.parameters()]
    fit(tiny_model, synthetic_root, tmp_path, epochs=2)
    for key, value in tiny_model.model.clip.state_dict().items():
        assert torch.equal(value, frozen_before[key]), key  # never touched: the very same tensors
    assert all(not p.requires_grad and p.grad is None for p in tiny_model.model.clip.parameters())
    assert not torch.equal(tiny_model.model.prompt_learner.ctx, ctx_before)
    assert any(not torch.equal(p, b) for p, b in zip(tiny_model.model.head.parameters(), head_before))
    trainable = {n for n, p in tiny_model.named_parameters() if p.requires_grad}
    assert trainable == {"model.prompt_learner.ctx", "model.head.mlp.1.weight", "model.head.mlp.1.bias",
                         "model.head.mlp.4.weight", "model.head.mlp.4.bias"}


def test_frozen_encoders_stay_in_eval_mode(tiny_model):
    tiny_model.train()
    assert tiny_model.model.head.training and not tiny_model.model.clip.training
    assert not any(m.training for m in tiny_model.model.clip.modules())


def test_checkpoint_holds_only_what_was_trained_and_round_trips(tiny_model, synthetic_root, tmp_path):
    fit(tiny_model, synthetic_root, tmp_path)
    path = tmp_path / "last.ckpt"
    checkpoint = torch.load(path, weights_only=False)
    assert not [k for k in checkpoint["state_dict"] if k.startswith(FROZEN_PREFIX)]
    assert "optimizer_states" in checkpoint and checkpoint["hyper_parameters"]["backbone"] == "random:tiny"
    restored = CLIPAGIQA.load_from_checkpoint(path)
    images = torch.randn(3, 3, 32, 32)
    tiny_model.eval()
    restored.eval()
    with torch.no_grad():
        torch.testing.assert_close(restored(images), tiny_model(images))


def test_checkpoint_from_other_frozen_weights_is_refused(tiny_model, synthetic_root, tmp_path):
    fit(tiny_model, synthetic_root, tmp_path)
    checkpoint = torch.load(tmp_path / "last.ckpt", weights_only=False)
    checkpoint["backbone_fingerprint"] = "0123456789abcdef"
    torch.save(checkpoint, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="fingerprint"):
        CLIPAGIQA.load_from_checkpoint(tmp_path / "other.ckpt")


def expected_factor(step, total, warmup_steps, lr=0.002, warmup_lr=1e-5):
    return warmup_lr / lr if step < warmup_steps else 0.5 * (1 + math.cos(math.pi * step / total))


class LearningRates(L.Callback):
    def __init__(self):
        self.rates = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.rates.append(trainer.optimizers[0].param_groups[0]["lr"])


def test_schedule_spans_a_run_bounded_by_max_steps(synthetic_root, tmp_path):
    """Seen: with max_steps and no max_epochs the lr was 0 from the second epoch on."""
    model = CLIPAGIQA(**TINY_MODEL, lr=0.002, warmup_lr=1e-5)
    rates = LearningRates()
    data = MOSFolder(str(synthetic_root), batch_size=8, num_workers=0)  # 29 training images: 4 steps per epoch
    trainer = L.Trainer(max_steps=10, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, callbacks=[rates],
                        limit_val_batches=0, default_root_dir=tmp_path)
    trainer.fit(model, data)
    assert len(rates.rates) == 10
    expected = [0.002 * expected_factor(step, 10, 4) for step in range(10)]
    assert rates.rates == pytest.approx(expected, rel=1e-6)
    assert rates.rates[4] > rates.rates[9] > 0  # cosine down over the whole run, not ended after one epoch


def test_resume_with_more_epochs_goes_on_with_a_sensible_learning_rate(synthetic_root, tmp_path):
    """Seen: the first resumed epoch ran at lr 0 because the restored schedule had ended."""
    model = CLIPAGIQA(**TINY_MODEL, warmup_epochs=0, lr=0.002)
    fit(model, synthetic_root, tmp_path, epochs=2, limit_val_batches=0)
    rates = LearningRates()
    resumed = CLIPAGIQA(**TINY_MODEL, warmup_epochs=0, lr=0.002)
    trainer = make_trainer(tmp_path / "resumed", epochs=4, limit_val_batches=0,
                           callbacks=[rates, L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "resumed")])
    trainer.fit(resumed, MOSFolder(str(synthetic_root), batch_size=8, num_workers=0),
                ckpt_path=tmp_path / "last.ckpt")
    assert len(rates.rates) == 8  # epochs 3 and 4, 4 steps each
    expected = [0.002 * expected_factor(step, 16, 0) for step in range(8, 16)]
    assert rates.rates == pytest.approx(expected, rel=1e-6)
    assert rates.rates[0] == pytest.approx(0.001, rel=1e-6)  # half way along the longer cosine


def test_true_half_precision_is_refused_with_what_to_use(synthetic_root, tmp_path):
    """Seen: bf16-true crashed with `mat1 and mat2 must have the same dtype`."""
    model = CLIPAGIQA(**TINY_MODEL)
    with pytest.raises(ValueError, match="bf16-mixed.*frozen_dtype bfloat16"):
        fit(model, synthetic_root, tmp_path, precision="bf16-true")


def test_val_loss_is_the_per_sample_mean(tiny_model, synthetic_root, tmp_path):
    """Seen: val/loss was the unweighted mean of per-batch means (5.726 against a true MSE of 6.366)."""
    data = MOSFolder(str(synthetic_root), batch_size=8, eval_batch_size=3, num_workers=0, val_size=0.3)
    trainer = make_trainer(tmp_path)
    logged = trainer.validate(tiny_model, data, verbose=False)[0]
    tiny_model.eval()
    scores, mos = [], []
    with torch.no_grad():
        for batch in trainer.val_dataloaders:
            scores.append(tiny_model(batch["image"]))
            mos.append(batch["mos"])
    scores, mos = torch.cat(scores), torch.cat(mos)
    assert len(mos) % 3  # the last batch is short, so batch means and sample means differ
    scale = tiny_model.model
    true_mse = torch.mean((scale.to_training_scale(scores) - scale.to_training_scale(mos)) ** 2).item()
    assert logged["val/loss"] == pytest.approx(true_mse, rel=1e-5)


def test_heads_are_batched_and_fp32_under_autocast(tiny_model):
    tiny_model.eval()
    images = torch.randn(5, 3, 32, 32)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        batched = tiny_model(images)
    assert batched.dtype == torch.float32
    with torch.no_grad():
        one_by_one = torch.cat([tiny_model(images[i: i + 1]) for i in range(5)])
        torch.testing.assert_close(tiny_model(images), one_by_one, rtol=1e-5, atol=1e-5)


def test_frozen_dtype_holds_encoders_in_bfloat16():
    model = CLIPAGIQA("random:tiny", n_ctx=4, frozen_dtype="bfloat16")
    assert all(p.dtype == torch.bfloat16 for p in model.model.clip.parameters())
    assert model.model.prompt_learner.ctx.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in model.model.head.parameters())
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(2, 3, 32, 32))).all()


@pytest.mark.parametrize("frozen_dtype", ["float32", "bfloat16"])
def test_bf16_mixed_training_keeps_metrics_finite(synthetic_root, tmp_path, frozen_dtype):
    model = CLIPAGIQA(**TINY_MODEL, frozen_dtype=frozen_dtype)
    trainer, _ = fit(model, synthetic_root, tmp_path, precision="bf16-mixed")
    metrics = trainer.callback_metrics
    for name in ("val/srcc", "val/plcc", "val/krcc", "val/rmse", "val/loss"):
        assert math.isfinite(float(metrics[name])), name
    assert math.isfinite(float(metrics["train/loss"]))


@pytest.mark.slow
def test_vit_b_16_checkpoint_is_small_and_trains_paper_sized_parameters(tmp_path):
    model = CLIPAGIQA("random:vit-b-16", n_ctx=16, hidden_dim=512, output="score")  # the paper's sizes
    trainable = sum(p.numel() for p in model.trainable_parameters())
    assert trainable == 16 * 512 + (3584 * 512 + 512) + (512 + 1)  # about 1.84 M, as in the paper
    checkpoint = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}
    model.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, tmp_path / "model.ckpt")
    assert (tmp_path / "model.ckpt").stat().st_size < 10 * 2**20
