"""CLIPAGIQAModel on its own: save_pretrained/from_pretrained, the data's MOS scale, fresh prompt features,
scoring without Lightning, no import cycles."""

import ast
import csv
import json
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import REPO, TINY_MODEL, TINY_MODEL_ARGS, run_cli, trainer_args

from clip_agiqa import CLIPAGIQA, CLIPAGIQAModel, MOSFolder
from clip_agiqa.model import CONFIG_FILE, WEIGHTS_FILE


def trained_tiny(scale=(0.0, 5.0), head="concat", seed=1) -> CLIPAGIQAModel:
    """A tiny model whose trained parts are moved away from their initial values, as training would."""
    model = CLIPAGIQAModel(**TINY_MODEL, head=head, mos_scale=scale)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if not name.startswith("clip."):
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.05)
    return model.eval()


def test_save_pretrained_round_trips_with_identical_scores(tmp_path):
    model = trained_tiny(scale=(27.0, 72.0))
    pixels = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        before = model(pixels)
    model.save_pretrained(tmp_path / "saved")
    assert sorted(p.name for p in (tmp_path / "saved").iterdir()) == ["README.md", CONFIG_FILE, WEIGHTS_FILE]
    loaded = CLIPAGIQAModel.from_pretrained(tmp_path / "saved")
    with torch.no_grad():
        after = loaded(pixels)
    assert torch.equal(after, before)  # the same weights and the very same computation: bit-equal
    config = json.loads((tmp_path / "saved" / CONFIG_FILE).read_text())
    assert config["mos_scale"] == [[27.0, 72.0]] and config["backbone"] == "random:tiny"
    assert len(config["weights_sha256"]) == 64 and config["backbone_fingerprint"] == model.backbone_fingerprint
    card = (tmp_path / "saved" / "README.md").read_text()
    assert "from 27 to 72" in card and "clip_agiqa.load" in card


def test_a_changed_weights_file_is_refused(tmp_path):
    """Seen: flipped bytes in model.safetensors loaded without complaint and scored 14.69 instead of 2.83."""
    trained_tiny().save_pretrained(tmp_path)
    weights = bytearray((tmp_path / WEIGHTS_FILE).read_bytes())
    weights[-20] ^= 0xFF  # inside the tensor data: the file still parses
    (tmp_path / WEIGHTS_FILE).write_bytes(bytes(weights))
    with pytest.raises(ValueError, match="SHA-256"):
        CLIPAGIQAModel.from_pretrained(tmp_path)


def test_scores_come_out_on_the_data_scale_and_train_on_the_fixed_one():
    model = trained_tiny(scale=(27.0, 72.0), head="similarity")
    mos = torch.tensor([27.0, 49.5, 72.0])
    mos = mos[:, None]  # (batch, targets)
    torch.testing.assert_close(model.to_training_scale(mos), torch.tensor([[0.0], [2.5], [5.0]]))
    torch.testing.assert_close(model.to_mos(model.to_training_scale(mos)), mos)
    with torch.no_grad():
        scores = model(torch.randn(6, 3, 32, 32))
    assert ((scores >= 27.0) & (scores <= 72.0)).all()  # the similarity head spans the data's range


def stale_free_scores(model, pixels):
    with torch.no_grad():
        return model(pixels)


def test_prompt_features_follow_load_state_dict_and_moves():
    """Seen: after load_state_dict or .to(device) the model reported outputs of its old weights."""
    pixels = torch.randn(3, 3, 32, 32)
    first, second = trained_tiny(seed=1), trained_tiny(seed=2)
    stale_free_scores(first, pixels)  # fills the reuse of prompt features
    first.load_state_dict(second.state_dict())
    torch.testing.assert_close(stale_free_scores(first, pixels), stale_free_scores(second, pixels))
    # .to(device) swaps each parameter's data (nn.Module._apply): simulated here on the CPU with new values
    ctx = first.prompt_learner.ctx
    ctx.data = ctx.data.clone() + 0.5
    with torch.no_grad():
        expected = first.to_mos(first.head(first.encode_images(pixels), first.prompt_learner(first.clip))).squeeze(-1)
    torch.testing.assert_close(stale_free_scores(first, pixels), expected)


def test_testing_a_checkpoint_after_another_evaluation_uses_its_weights(synthetic_root, tmp_path):
    """Seen: test SRCC -0.833 against -0.857 for the same checkpoint loaded cleanly."""
    data = MOSFolder(str(synthetic_root), batch_size=8, num_workers=0)
    task = CLIPAGIQA(**TINY_MODEL, lr=0.05, warmup_epochs=0)
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path,
                        callbacks=[L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path, filename="epoch{epoch}",
                                                                       save_top_k=-1)])
    trainer.fit(task, data)
    first = sorted(tmp_path.glob("epoch*.ckpt"))[0]
    trainer.test(task, data, verbose=False)  # evaluates the last weights first
    after_other = trainer.test(task, data, ckpt_path=first, verbose=False)[0]
    clean = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    reference = clean.test(CLIPAGIQA.load_from_checkpoint(first), data, verbose=False)[0]
    for name in ("test/srcc", "test/plcc", "test/rmse"):
        assert after_other[name] == pytest.approx(reference[name], abs=1e-6), name


def test_cli_links_the_measured_scale_into_the_model(synthetic_root, tmp_path):
    cli = run_cli(["fit", *TINY_MODEL_ARGS, "--data", "MOSFolder", "--data.root", str(synthetic_root),
                   "--data.num_workers", "0", "--data.batch_size", "8", *trainer_args(tmp_path)])
    train_mos = [r.mos for r in cli.datamodule.split_records("train")]
    assert cli.model.hparams.mos_scale == [[min(train_mos), max(train_mos)]] and cli.model.hparams.targets == ["mos"]
    torch.testing.assert_close(cli.model.model.mos_scale, torch.tensor([[min(train_mos), max(train_mos)]],
                                                                       dtype=torch.float64))
    about = json.loads((tmp_path / "checkpoints" / "data.json").read_text())
    assert about["targets"] == {"mos": [min(train_mos), max(train_mos)]}
    assert about["mos_scale_from"] == "training split"


def test_a_hundred_point_scale_is_learned_without_a_model_option(synthetic_root, tmp_path):
    """AIGCIQA2023-like MOS (27-72) with the similarity head: predictions span the data's range, not 0-5."""
    root = tmp_path / "data"
    root.mkdir()
    rows = list(csv.DictReader(open(synthetic_root / "metadata.csv")))
    for row in rows:
        (root / row["file_name"]).write_bytes((synthetic_root / row["file_name"]).read_bytes())
        row["mos"] = f"{27 + 9 * float(row['mos']):.4f}"
    with open(root / "metadata.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    run_cli(["fit", *TINY_MODEL_ARGS, "--model.head", "similarity", "--data", "MOSFolder", "--data.root", str(root),
             "--data.num_workers", "0", "--data.batch_size", "8", *trainer_args(tmp_path / "run")])
    output = tmp_path / "scores.csv"
    run_cli(["predict", "--data", "MOSFolder", "--data.root", str(root), "--data.num_workers", "0",
             "--data.predict_split", "all", "--ckpt_path", str(tmp_path / "run" / "checkpoints" / "last.ckpt"),
             "--predictions.output", str(output), *trainer_args(tmp_path / "predict")])
    scores = [float(r["score"]) for r in csv.DictReader(open(output))]
    assert min(scores) > 20 and max(scores) < 80  # on the data's scale (the old head capped them at 5)


def test_scoring_a_folder_imports_no_lightning(synthetic_root, tmp_path):
    trained_tiny().save_pretrained(tmp_path / "model")
    script = (
        "import sys, clip_agiqa\n"
        f"rows = clip_agiqa.load({str(tmp_path / 'model')!r}).score_folder({str(synthetic_root)!r}, "
        f"{str(tmp_path / 'scores.csv')!r})\n"
        "assert len(rows) == 41, len(rows)\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning', "
        "'torchmetrics'))\n"
        "assert not loaded, loaded[:5]\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}, timeout=1800)
    assert result.returncode == 0, result.stderr[-2000:]


def internal_imports(path: Path) -> set[str]:
    """The clip_agiqa modules a file imports anywhere (top level or inside functions), as dotted names."""
    package = ".".join(path.relative_to(REPO).with_suffix("").parts)
    if path.name == "__init__.py":
        package = package.rsplit(".", 1)[0] + ".__init__"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level)[0]
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            if target.startswith("clip_agiqa"):
                found.add(target)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("clip_agiqa."):
            found.add(node.value)  # importlib by name
    return found


def test_no_import_cycles_in_the_package():
    modules = {".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): p
               for p in (REPO / "clip_agiqa").rglob("*.py")}
    graph = {name: {t for t in internal_imports(path) if t in modules and t != name} for name, path in modules.items()}

    def visit(name, trail):
        if name in trail:
            raise AssertionError("import cycle: " + " -> ".join([*trail[trail.index(name):], name]))
        for target in graph[name]:
            visit(target, [*trail, name])

    for name in graph:
        visit(name, [])
