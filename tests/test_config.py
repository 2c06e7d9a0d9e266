"""One model config (CLIPAGIQAConfig) drives the model, the saved folder, checkpoints, init_from and the CLI's
checks; what cannot be built or trained is refused in one line."""

import inspect
import json

import pytest
import torch
from helpers import TINY_MODEL

from clip_agiqa import CLIPAGIQA, CLIPAGIQAModel
from clip_agiqa.backbone import load_backbone
from clip_agiqa.cli.lightning import ARCHITECTURE_OPTIONS
from clip_agiqa.config import ARCHITECTURE, FIELDS, CLIPAGIQAConfig
from clip_agiqa.errors import InputError
from clip_agiqa.prompts import DEFAULT_CATEGORIES, PromptLearner
from clip_agiqa.saved import CONFIG_FILE, SAVED_FIELDS


def test_every_list_of_model_fields_comes_from_the_config(tmp_path):
    """Seen: five copies of the architecture had drifted (use_prompt and targets missing from the CLI's)."""
    assert ARCHITECTURE_OPTIONS == ARCHITECTURE and {"use_prompt", "targets"} <= set(ARCHITECTURE)
    assert set(FIELDS) <= set(inspect.signature(CLIPAGIQA).parameters)  # each field is a --model.* option
    task = CLIPAGIQA(**TINY_MODEL)
    assert task.model.config == CLIPAGIQAConfig.checked("hparams", **{k: task.hparams[k] for k in FIELDS})
    task.model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert set(saved) == set(FIELDS) | set(SAVED_FIELDS)
    assert CLIPAGIQAModel.from_pretrained(tmp_path).config == task.model.config


def test_keyword_construction_is_the_config_construction():
    by_keywords = CLIPAGIQAModel(**TINY_MODEL, targets=["a", "b"])
    config = CLIPAGIQAConfig(**TINY_MODEL, targets=["a", "b"])
    assert by_keywords.config == config == CLIPAGIQAModel(config).config
    assert by_keywords.config.mos_scale == [[0.0, 5.0], [0.0, 5.0]]  # one pair shared by every target
    assert CLIPAGIQAModel("random:tiny", n_ctx=4).config.backbone == "random:tiny"


@pytest.mark.parametrize("values, field", [({"hidden_dim": 5_000_000}, "hidden_dim"), ({"n_ctx": "4"}, "n_ctx"),
                                           ({"n_ctx": True}, "n_ctx"), ({"backbone": None}, "backbone"),
                                           ({"mos_scale": [5, 1]}, "mos_scale"), ({"targets": []}, "targets"),
                                           ({"use_prompt": "yes"}, "use_prompt"), ({"nonsense": 1}, "nonsense")])
def test_a_bad_value_is_one_line_naming_the_field_and_the_source(values, field):
    with pytest.raises(InputError, match=field) as error:
        CLIPAGIQAConfig.checked("somewhere.json", **values)
    assert str(error.value).startswith("somewhere.json: ") and "\n" not in str(error.value)


def test_context_that_does_not_fit_the_text_window_is_refused_with_the_limit():
    """Seen: n_ctx 75 silently cut the quality words off (all prompt features identical); 100 failed at the first
    forward with a transformers traceback."""
    backbone = load_backbone("random:tiny")
    # [SOS] ctx... <word> . [EOS]: each default word is one token with the offline tokenizer, so 73 fit in 77.
    assert PromptLearner(backbone.clip, backbone.tokenizer, DEFAULT_CATEGORIES, n_ctx=73).ctx.shape[0] == 73
    for n_ctx in (74, 75, 100):
        with pytest.raises(InputError, match="text encoder takes at most 77: use at most 73 context tokens"):
            PromptLearner(backbone.clip, backbone.tokenizer, DEFAULT_CATEGORIES, n_ctx=n_ctx)
    with pytest.raises(InputError, match="ctx_init"):
        PromptLearner(backbone.clip, backbone.tokenizer, DEFAULT_CATEGORIES, ctx_init="a photo of " * 30)
    with pytest.raises(InputError, match="at most 77"):
        CLIPAGIQAModel(backbone="random:tiny", n_ctx=75)


@pytest.mark.parametrize("option, value", [("lr", 0), ("lr", -0.1), ("lr", float("nan")), ("momentum", 1.5),
                                           ("weight_decay", -1.0), ("warmup_epochs", -1), ("warmup_lr", float("inf"))])
def test_impossible_optimiser_values_are_refused_before_anything_is_built(option, value, monkeypatch):
    """Seen: --model.lr 0 ended in a ZeroDivisionError in the warm-up."""
    monkeypatch.setattr("clip_agiqa.model.load_backbone", lambda *a, **k: pytest.fail("built a model"))
    with pytest.raises(InputError, match=f"--model.{option} must be"):
        CLIPAGIQA(**TINY_MODEL, **{option: value})


def test_the_model_card_is_rendered_from_the_template():
    model = CLIPAGIQAModel(**TINY_MODEL, targets=["quality", "align"],
                           mos_scale=[[0, 5], [1, 5]], use_prompt=True)
    model.training_info = {"data": "AGIQA3K", "val/srcc": 0.5, "epoch": 3}
    card = str(model.generate_model_card())
    assert card.startswith("---\n") and "library_name: clip-agiqa" in card
    assert "quality from 0 to 5, align from 1 to 5" in card and "yes (pass prompt=...)" in card
    assert "- Trained on: AGIQA3K" in card and "| val/srcc | 0.5000 |" in card and "epoch" not in card
    assert f"`{model.backbone_fingerprint}`" in card and "{{" not in card
    assert torch.equal(model.mos_scale, torch.tensor([[0.0, 5.0], [1.0, 5.0]], dtype=torch.float64))


# --- the default recipe and what was saved before it ------------------------------------------------
def test_a_fit_with_no_model_options_trains_the_default_recipe_the_paper_parts_spell_the_paper():
    """protocol/paper.yaml sets no recipe (tests/test_experiments.py): it is composed with model/clip_agiqa.yaml."""
    import yaml
    from helpers import REPO

    assert CLIPAGIQA(**TINY_MODEL).model.config.standardise
    assert not CLIPAGIQA(backbone="random:tiny", n_ctx=4, head="similarity").model.config.standardise  # concat only
    assert not CLIPAGIQA(**TINY_MODEL, standardise=False).model.config.standardise
    assert not CLIPAGIQAConfig().standardise  # the network's own defaults stay the published one
    assert CLIPAGIQA(**TINY_MODEL).model.config.input_dropout == 0.0 and CLIPAGIQAConfig().input_dropout is None
    for part in ("clip_agiqa.yaml", "clip_agiqa_prompt.yaml"):
        init_args = yaml.safe_load((REPO / "experiments" / "model" / part).read_text())["model"]["init_args"]
        assert init_args["standardise"] is False and init_args["input_dropout"] is None  # None: dropout, as published
        assert init_args["prompt_norm"] == "l2" and init_args["output"] == "score" and init_args["whiten"] == 0


def test_a_saved_folder_without_the_standardise_field_loads_as_before(tmp_path):
    model = CLIPAGIQAModel(**TINY_MODEL).eval()  # made before the field
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    del config["standardise"]
    (tmp_path / CONFIG_FILE).write_text(json.dumps(config))
    loaded = CLIPAGIQAModel.from_pretrained(tmp_path)
    assert not loaded.config.standardise and not hasattr(loaded.head, "image_norm")
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixels), model(pixels), rtol=0, atol=0)


def test_a_saved_folder_without_the_input_dropout_field_drops_its_inputs_as_before(tmp_path):
    CLIPAGIQAModel(**TINY_MODEL, standardise=True, dropout=0.3, input_dropout=0.0).save_pretrained(tmp_path)
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    del config["input_dropout"]
    (tmp_path / CONFIG_FILE).write_text(json.dumps(config))
    loaded = CLIPAGIQAModel.from_pretrained(tmp_path)
    assert loaded.config.input_dropout is None and loaded.head.mlp[0].p == 0.3


def test_a_checkpoint_without_the_standardise_field_loads_as_before(synthetic_root, tmp_path):
    """Its hyper-parameters lack the field: test --ckpt_path, load_from_checkpoint and init_from build the
    unstandardised model it holds, not today's default."""
    import lightning as L
    from helpers import run_cli, trainer_args

    from clip_agiqa import MOSFolder

    old = CLIPAGIQA(**TINY_MODEL, standardise=False)
    trainer = L.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, accelerator="cpu", logger=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(old, MOSFolder(str(synthetic_root), batch_size=8, num_workers=0))
    checkpoint = torch.load(trainer.checkpoint_callback.best_model_path, weights_only=False)
    del checkpoint["hyper_parameters"]["standardise"]
    path = tmp_path / "old.ckpt"
    torch.save(checkpoint, path)

    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = old.eval()(pixels)
        torch.testing.assert_close(CLIPAGIQA.load_from_checkpoint(path).eval()(pixels), expected, rtol=0, atol=0)
    assert not CLIPAGIQA(init_from=str(path)).model.config.standardise
    tested = run_cli(["test", "--data", "MOSFolder", "--data.root", str(synthetic_root), "--data.num_workers", "0",
                      *trainer_args(tmp_path / "test"), "--ckpt_path", str(path)])
    assert not tested.model.model.config.standardise and "test/srcc" in tested.trainer.callback_metrics
    with pytest.raises(InputError, match="--model.standardise is True but the checkpoint's is False"):
        run_cli(["test", "--data", "MOSFolder", "--data.root", str(synthetic_root), "--data.num_workers", "0",
                 *trainer_args(tmp_path / "test2"), "--ckpt_path", str(path), "--model.standardise", "true"])
