"""One model config (CLIPAGIQAConfig) drives the model, the saved folder, checkpoints, init_from and the CLI's
checks; what cannot be built or trained is refused in one line (issues 16, 17)."""

import inspect
import json

import pytest
import torch

from clip_agiqa import CLIPAGIQA, CLIPAGIQAModel
from clip_agiqa.backbone import load_backbone
from clip_agiqa.cli import ARCHITECTURE_OPTIONS
from clip_agiqa.config import ARCHITECTURE, FIELDS, CLIPAGIQAConfig
from clip_agiqa.errors import InputError
from clip_agiqa.prompts import DEFAULT_CATEGORIES, PromptLearner
from clip_agiqa.saved import CONFIG_FILE, SAVED_FIELDS


def test_every_list_of_model_fields_comes_from_the_config(tmp_path):
    """Seen: five copies of the architecture had drifted (use_prompt and targets missing from the CLI's)."""
    assert ARCHITECTURE_OPTIONS == ARCHITECTURE and {"use_prompt", "targets"} <= set(ARCHITECTURE)
    assert set(FIELDS) <= set(inspect.signature(CLIPAGIQA).parameters)  # each field is a --model.* option
    task = CLIPAGIQA(backbone="random:tiny", n_ctx=4, hidden_dim=16)
    assert task.model.config == CLIPAGIQAConfig.checked("hparams", **{k: task.hparams[k] for k in FIELDS})
    task.model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert set(saved) == set(FIELDS) | set(SAVED_FIELDS)
    assert CLIPAGIQAModel.from_pretrained(tmp_path).config == task.model.config


def test_keyword_construction_is_the_config_construction():
    by_keywords = CLIPAGIQAModel(backbone="random:tiny", n_ctx=4, hidden_dim=16, targets=["a", "b"])
    config = CLIPAGIQAConfig(backbone="random:tiny", n_ctx=4, hidden_dim=16, targets=["a", "b"])
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
        CLIPAGIQA(backbone="random:tiny", n_ctx=4, hidden_dim=16, **{option: value})


def test_the_model_card_is_rendered_from_the_template():
    model = CLIPAGIQAModel(backbone="random:tiny", n_ctx=4, hidden_dim=16, targets=["quality", "align"],
                           mos_scale=[[0, 5], [1, 5]], use_prompt=True)
    model.training_info = {"data": "AGIQA3K", "val/srcc": 0.5, "epoch": 3}
    card = str(model.generate_model_card())
    assert card.startswith("---\n") and "library_name: clip-agiqa" in card
    assert "quality from 0 to 5, align from 1 to 5" in card and "yes (pass prompt=...)" in card
    assert "- Trained on: AGIQA3K" in card and "| val/srcc | 0.5000 |" in card and "epoch" not in card
    assert f"`{model.backbone_fingerprint}`" in card and "{{" not in card
    assert torch.equal(model.mos_scale, torch.tensor([[0.0, 5.0], [1.0, 5.0]], dtype=torch.float64))
