"""Hostile files: a model folder, a checkpoint or an init_from source runs nothing, exhausts nothing, hangs on
nothing, and each mistake is one line that names the file."""

import hashlib
import json
import os
import sys

import pytest
import torch
from experiment_helpers import fit_tiny, folder_args
from helpers import TINY_MODEL, TINY_MODEL_ARGS, run_cli, trainer_args
from safetensors.torch import load_file, save_file

from clip_agiqa import CLIPAGIQA, CLIPAGIQAModel, export_checkpoint
from clip_agiqa.errors import InputError
from clip_agiqa.saved import CONFIG_FILE, WEIGHTS_FILE, read_trained_weights


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved") / "model"
    CLIPAGIQAModel(**TINY_MODEL).save_pretrained(folder)
    return folder


@pytest.fixture
def copy(saved, tmp_path):
    """A writable copy of the saved folder."""
    target = tmp_path / "copy"
    target.mkdir()
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        (target / name).write_bytes((saved / name).read_bytes())
    return target


@pytest.fixture
def nothing_built(monkeypatch):
    """Fails the test if a backbone (the first thing a model builds) is loaded."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model was built from a config that should have been refused")

    monkeypatch.setattr("clip_agiqa.model.load_backbone", refuse)


def edit_config(folder, **changes):
    config = json.loads((folder / CONFIG_FILE).read_text())
    (folder / CONFIG_FILE).write_text(json.dumps({**config, **changes}))


def rewrite_weights(folder, state, raw: bytes | None = None):
    """New weights with the SHA-256 recomputed, as someone tampering with the folder would."""
    if raw is None:
        save_file(state, str(folder / WEIGHTS_FILE))
    else:
        (folder / WEIGHTS_FILE).write_bytes(raw)
    edit_config(folder, weights_sha256=hashlib.sha256((folder / WEIGHTS_FILE).read_bytes()).hexdigest())


def one_line_error(call, match: str) -> str:
    with pytest.raises(InputError, match=match) as error:
        call()
    assert "\n" not in str(error.value)
    return str(error.value)


@pytest.mark.parametrize("field, value", [("hidden_dim", 5_000_000), ("n_ctx", "4"), ("n_ctx", [16]),
                                          ("backbone", None), ("head", "evil"), ("categories", []),
                                          ("mos_scale", [[5.0, 1.0]]), ("mos_scale", [[0.0, float("nan")]]),
                                          ("targets", ["a", "a"]), ("dropout", 1.5), ("surprise", 1),
                                          ("weights_sha256", None), ("backbone_fingerprint", "../x"),
                                          ("training", {"data": ["nested"]}), ("image_settings", "big"),
                                          ("format_version", 1)])
def test_a_bad_config_field_is_one_line_before_anything_is_built(copy, nothing_built, field, value):
    """Seen: hidden_dim 5e6 built a 4.8 GB model before the weights were found not to fit; wrong types gave
    tracebacks."""
    edit_config(copy, **{field: value})
    message = one_line_error(lambda: CLIPAGIQAModel.from_pretrained(copy), field)
    assert CONFIG_FILE in message


def test_a_config_that_is_not_a_regular_file_or_too_large_is_refused_unread(copy, nothing_built):
    """Seen: a config.json linked to /dev/zero was read until memory ran out."""
    (copy / CONFIG_FILE).unlink()
    os.symlink("/dev/zero", copy / CONFIG_FILE)
    one_line_error(lambda: CLIPAGIQAModel.from_pretrained(copy), "not a regular file")
    (copy / CONFIG_FILE).unlink()
    os.mkfifo(copy / CONFIG_FILE)  # opening it would wait for a writer forever
    one_line_error(lambda: CLIPAGIQAModel.from_pretrained(copy), "not a regular file")
    (copy / CONFIG_FILE).unlink()
    (copy / CONFIG_FILE).write_text(json.dumps({"padding": "x" * (2 << 20)}))
    one_line_error(lambda: CLIPAGIQAModel.from_pretrained(copy), "bytes")


def tampered(saved, change):
    state = load_file(str(saved / WEIGHTS_FILE))
    change(state)
    return state


@pytest.mark.parametrize("change, match", [
    (lambda s: s.update({"head.mlp.4.weight": (s["head.mlp.4.weight"] * 1000).to(torch.int64)}), "not floating"),
    (lambda s: s["prompt_learner.ctx"].__setitem__((0, 0), float("nan")), "NaN"),
    (lambda s: s["head.mlp.1.bias"].__setitem__(0, float("inf")), "infinite"),
    (lambda s: s.update({"prompt_learner.ctx": s["prompt_learner.ctx"].double()}), "never cast"),
    (lambda s: s.update({"mos_scale": torch.tensor([[5.0, 1.0]], dtype=torch.float64)}), "mos_scale"),
    (lambda s: s.update({"mos_scale": torch.tensor([[0.0, 9.0]], dtype=torch.float64)}), "differs"),
], ids=["int64", "nan", "inf", "float64", "inverted_scale", "scale_unlike_config"])
def test_tampered_weights_with_a_recomputed_sha_are_refused(saved, copy, change, match):
    """Seen: int64 weights were cast silently (scores about 110,000), NaN/inf loaded, an inverted mos_scale in the
    weights skipped the checks config.json gets. The SHA-256 only catches damage: these recompute it."""
    rewrite_weights(copy, tampered(saved, change))
    message = one_line_error(lambda: CLIPAGIQAModel.from_pretrained(copy), match)
    assert str(copy) in message
    if match != "never cast":  # init_from reads the same checks (the dtype is checked against the model it starts)
        one_line_error(lambda: read_trained_weights(copy), match)


def test_a_pickle_renamed_to_safetensors_is_one_line(saved, copy):
    rewrite_weights(copy, None, raw=b"\x80\x04\x95" + os.urandom(64))  # what a pickle starts with
    message = one_line_error(lambda: CLIPAGIQAModel.from_pretrained(copy), "not a safetensors file")
    assert WEIGHTS_FILE in message
    torch.save({"ctx": torch.zeros(2)}, copy / "pickled")
    rewrite_weights(copy, None, raw=(copy / "pickled").read_bytes())
    one_line_error(lambda: CLIPAGIQAModel.from_pretrained(copy), "not a safetensors file")


# --- checkpoints -------------------------------------------------------------------------------------------------
def handmade_checkpoint(path, hyper_parameters=None, state=None):
    state = state if state is not None else {"model.prompt_learner.ctx": torch.zeros(4, 32)}
    torch.save({"state_dict": state, "hyper_parameters": {"backbone": "random:tiny", "n_ctx": 4,
                                                          **(hyper_parameters or {})}}, path)
    return path


def test_a_truncated_or_foreign_checkpoint_is_one_line_naming_it(tmp_path):
    path = handmade_checkpoint(tmp_path / "cut.ckpt")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    for call in (lambda: export_checkpoint(path, tmp_path / "out"), lambda: CLIPAGIQA(init_from=str(path))):
        assert str(path) in one_line_error(call, "not a checkpoint")
    ints = handmade_checkpoint(tmp_path / "ints.ckpt", state={"model.prompt_learner.ctx": torch.zeros(4, 32,
                                                                                                  dtype=torch.int64)})
    one_line_error(lambda: export_checkpoint(ints, tmp_path / "out"), "not floating point")
    wide = handmade_checkpoint(tmp_path / "wide.ckpt", {"hidden_dim": 5_000_000})
    one_line_error(lambda: CLIPAGIQA(init_from=str(wide)), "hidden_dim")


def test_checkpoints_are_read_with_weights_only(tmp_path, monkeypatch):
    seen = []
    original = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: seen.append(k.get("weights_only")) or original(*a, **k))
    read_trained_weights(handmade_checkpoint(tmp_path / "a.ckpt"))
    assert seen == [True]


@pytest.mark.parametrize("key, value", [("_class_path", "this.Nothing"), ("_class_path", "evil_module_x.Model"),
                                        ("_instantiator", "evil_module_x.make"),
                                        ("data_targets", {"class_path": "evil_module_x.Model"})])
def test_a_checkpoint_naming_another_class_imports_nothing(synthetic_root, tmp_path, monkeypatch, capsys, key, value):
    """Seen: `this.Nothing` printed the Zen of Python and `evilmod.Model` ran code, through --ckpt_path."""
    marker = tmp_path / "ran"
    (tmp_path / "evil_module_x.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\nclass Model: pass\n"
                                               "def make(*a, **k): pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "this", raising=False)
    checkpoint = handmade_checkpoint(tmp_path / "payload.ckpt", {key: value})
    with pytest.raises(InputError, match="refused, nothing imported"):
        run_cli(["test", *folder_args(synthetic_root), *trainer_args(tmp_path / "run"), "--ckpt_path", str(checkpoint)])
    assert "Beautiful is better than ugly" not in capsys.readouterr().out
    assert "this" not in sys.modules and "evil_module_x" not in sys.modules and not marker.exists()


@pytest.fixture(scope="module")
def prompt_blind(synthetic_root, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("blind")
    fit_tiny(synthetic_root, run_dir)
    return run_dir / "checkpoints" / "best.ckpt"


@pytest.mark.parametrize("option, value", [("use_prompt", "true"), ("targets", "[quality, align]"),
                                           ("n_ctx", "8"), ("head", "similarity")])
def test_an_option_contradicting_the_checkpoint_is_refused(prompt_blind, synthetic_root, tmp_path, option, value):
    """Seen: `test --model.use_prompt true --ckpt_path <prompt-blind best.ckpt>` built a prompt-blind model
    without a word (use_prompt and targets were missing from the CLI's list)."""
    with pytest.raises(InputError, match=f"--model.{option} is .* but the checkpoint's is"):
        run_cli(["test", *folder_args(synthetic_root), *trainer_args(tmp_path), f"--model.{option}", value,
                 "--ckpt_path", str(prompt_blind)])


def test_a_missing_or_truncated_ckpt_path_is_one_line(prompt_blind, synthetic_root, tmp_path):
    with pytest.raises(InputError, match="nope.ckpt not found"):
        run_cli(["test", *TINY_MODEL_ARGS, *folder_args(synthetic_root), *trainer_args(tmp_path),
                 "--ckpt_path", str(tmp_path / "nope.ckpt")])
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(prompt_blind.read_bytes()[:2000])  # what a kill during the write left
    with pytest.raises(InputError, match="cut.ckpt is not a checkpoint written by clip-agiqa fit"):
        run_cli(["test", *folder_args(synthetic_root), *trainer_args(tmp_path), "--ckpt_path", str(cut)])


def test_a_name_that_is_neither_a_folder_nor_a_hub_model_is_one_line(tmp_path, monkeypatch):
    """Seen: a typo in a local folder name gave the hub's LocalEntryNotFoundError traceback (37 lines)."""
    monkeypatch.chdir(tmp_path)
    one_line_error(lambda: CLIPAGIQAModel.from_pretrained("models/nope"), "models/nope: no such folder here")
    one_line_error(lambda: CLIPAGIQAModel.from_pretrained("./models/nope"), "not found")
