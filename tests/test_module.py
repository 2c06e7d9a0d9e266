"""The LightningModule: frozen backbone, small checkpoints, schedule, heads, precision."""

import math

import lightning as L
import pytest
import torch

from clip_agiqa import CLIPAGIQA, MOSFolder
from clip_agiqa.module import FROZEN_PREFIX


def fit(model, root, tmp_path, epochs=1, **trainer_kwargs):
    data = MOSFolder(str(root), batch_size=8, num_workers=0)
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path,
                        callbacks=[L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True)],
                        **trainer_kwargs)
    trainer.fit(model, data)
    return trainer, data


def test_only_context_and_head_train(tiny_model, synthetic_root, tmp_path):
    frozen_before = {k: v.clone() for k, v in tiny_model.clip.state_dict().items()}
    ctx_before = tiny_model.prompt_learner.ctx.detach().clone()
    head_before = [p.detach().clone() for p in tiny_model.head.parameters()]
    fit(tiny_model, synthetic_root, tmp_path, epochs=2)
    for key, value in tiny_model.clip.state_dict().items():
        assert torch.equal(value, frozen_before[key]), key
    assert all(not p.requires_grad and p.grad is None for p in tiny_model.clip.parameters())
    assert not torch.equal(tiny_model.prompt_learner.ctx, ctx_before)
    assert any(not torch.equal(p, b) for p, b in zip(tiny_model.head.parameters(), head_before))
    trainable = {n for n, p in tiny_model.named_parameters() if p.requires_grad}
    assert trainable == {"prompt_learner.ctx", "head.mlp.1.weight", "head.mlp.1.bias",
                         "head.mlp.4.weight", "head.mlp.4.bias"}


def test_frozen_encoders_stay_in_eval_mode(tiny_model):
    tiny_model.train()
    assert tiny_model.head.training and not tiny_model.clip.training
    assert not any(m.training for m in tiny_model.clip.modules())


def test_checkpoint_holds_only_what_was_trained_and_round_trips(tiny_model, synthetic_root, tmp_path):
    trainer, data = fit(tiny_model, synthetic_root, tmp_path)
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
    with pytest.raises(RuntimeError, match="fingerprint"):
        CLIPAGIQA.load_from_checkpoint(tmp_path / "other.ckpt")


def test_schedule_is_constant_warmup_then_cosine(tiny_model):
    tiny_model.hparams.update(lr=0.002, warmup_epochs=1, warmup_lr=1e-5)

    class FakeTrainer:
        max_epochs = 10

    tiny_model._trainer = FakeTrainer()
    config = tiny_model.configure_optimizers()
    tiny_model._trainer = None
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.defaults["momentum"] == 0.9 and optimizer.defaults["weight_decay"] == 5e-4
    rates = []
    for _ in range(10):
        rates.append(optimizer.param_groups[0]["lr"])
        scheduler.step()
    assert rates[0] == pytest.approx(1e-5)
    assert rates[1] == pytest.approx(0.002 * 0.5 * (1 + math.cos(math.pi / 10)))
    assert rates[5] == pytest.approx(0.001)
    assert all(a > b for a, b in zip(rates[1:], rates[2:]))


def test_similarity_head_maps_levels_onto_the_mos_range():
    model = CLIPAGIQA("random:tiny", head="similarity", n_ctx=4, mos_range=(1.0, 5.0))
    model.eval()
    with torch.no_grad():
        scores = model(torch.randn(4, 3, 32, 32))
    assert scores.dtype == torch.float32 and scores.shape == (4,)
    assert ((scores >= 1.0) & (scores <= 5.0)).all()


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
    assert all(p.dtype == torch.bfloat16 for p in model.clip.parameters())
    assert model.prompt_learner.ctx.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in model.head.parameters())
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(2, 3, 32, 32))).all()


@pytest.mark.parametrize("frozen_dtype", ["float32", "bfloat16"])
def test_bf16_mixed_training_keeps_metrics_finite(synthetic_root, tmp_path, frozen_dtype):
    model = CLIPAGIQA("random:tiny", n_ctx=4, hidden_dim=16, frozen_dtype=frozen_dtype)
    trainer, _ = fit(model, synthetic_root, tmp_path, precision="bf16-mixed")
    metrics = trainer.callback_metrics
    for name in ("val/srcc", "val/plcc", "val/krcc", "val/rmse", "val/loss"):
        assert math.isfinite(float(metrics[name])), name
    assert math.isfinite(float(metrics["train/loss"]))


@pytest.mark.slow
def test_vit_b_16_checkpoint_is_small_and_trains_paper_sized_parameters(tmp_path):
    model = CLIPAGIQA("random:vit-b-16")
    trainable = sum(p.numel() for p in model.trainable_parameters())
    assert trainable == 16 * 512 + (3584 * 512 + 512) + (512 + 1)  # about 1.84 M, as in the paper
    checkpoint = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}
    model.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, tmp_path / "model.ckpt")
    assert (tmp_path / "model.ckpt").stat().st_size < 10 * 2**20


def test_similarity_head_warns_when_the_data_uses_another_mos_scale(synthetic_root, tmp_path):
    class HundredPointFolder(MOSFolder):
        mos_range = (0.0, 100.0)

    model = CLIPAGIQA("random:tiny", head="similarity", n_ctx=2, mos_range=(0.0, 5.0))
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, limit_val_batches=1)
    with pytest.warns(UserWarning, match=r"--model.mos_range"):
        trainer.validate(model, HundredPointFolder(str(synthetic_root), num_workers=0))
