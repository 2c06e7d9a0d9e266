"""Backbone loading: offline presets, local folders, and refusing tokenizers that did not really load."""

import socket
import threading
from pathlib import Path

import pytest
import torch
from transformers import CLIPImageProcessor, CLIPTokenizer

from clip_agiqa.backbone import DEFAULT_BACKBONE, check_tokenizer, load_backbone, offline_tokenizer, weights_fingerprint
from clip_agiqa.errors import InputError
from clip_agiqa.prompts import DEFAULT_CATEGORIES


def test_random_preset_is_the_same_every_time():
    first, second = load_backbone("random:tiny"), load_backbone("random:tiny")
    assert weights_fingerprint(first.clip) == weights_fingerprint(second.clip)
    for a, b in zip(first.clip.parameters(), second.clip.parameters()):
        assert torch.equal(a, b)


def test_random_preset_does_not_touch_the_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    load_backbone("random:tiny")
    assert torch.equal(torch.rand(3), expected)


def test_offline_tokenizer_encodes_category_words_to_known_tokens():
    tokenizer = offline_tokenizer()
    check_tokenizer(tokenizer, list(DEFAULT_CATEGORIES), "random:tiny")
    ids = tokenizer("a photo of perfect quality.")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert len(ids) == 8  # bos, five whole words, the full stop, eos
    assert tokenizer.unk_token_id not in ids[1:-1]


def test_unknown_preset_is_refused():
    with pytest.raises(InputError, match="random:tiny"):
        load_backbone("random:huge")


def test_empty_tokenizer_is_refused_with_a_clear_message():
    # What CLIPTokenizer.from_pretrained(hub_id) returns offline: a vocabulary of special tokens only.
    with pytest.raises(InputError, match="did not load"):
        check_tokenizer(CLIPTokenizer(), ["terrible"], "openai/clip-vit-base-patch16")


def test_local_folder_backbone_round_trip(tmp_path):
    original = load_backbone("random:tiny")
    original.clip.save_pretrained(tmp_path)
    original.tokenizer.save_pretrained(tmp_path)
    loaded = load_backbone(str(tmp_path), check_words=tuple(DEFAULT_CATEGORIES))
    assert weights_fingerprint(loaded.clip) == weights_fingerprint(original.clip)
    assert loaded.image_settings.size == original.image_settings.size


def test_local_folder_with_broken_tokenizer_is_refused(tmp_path):
    original = load_backbone("random:tiny")
    original.clip.save_pretrained(tmp_path)
    CLIPTokenizer().save_pretrained(tmp_path)
    with pytest.raises(InputError, match="tokens"):
        load_backbone(str(tmp_path), check_words=("terrible",))


def test_default_backbone_offline_says_how_to_proceed(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(InputError) as error:
        load_backbone(DEFAULT_BACKBONE)
    message = str(error.value)
    assert "could not be downloaded" in message and "save_pretrained" in message
    assert "HF_HOME" in message and "random:tiny" in message and "\n" not in message


def test_a_folder_that_is_not_a_saved_backbone_is_named(tmp_path):
    with pytest.raises(InputError, match=f"backbone folder {tmp_path} could not be loaded"):
        load_backbone(str(tmp_path))


class CountingHub:
    """A local port that reads each request's first line and closes the connection unanswered: a hub that cannot
    be used. ``paths`` are the requested paths (the library may also ask for its own files, e.g. an agent
    registry, once per process)."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.paths: list[str] = []
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.getsockname()[1]}"

    def asked_for(self, repository: str) -> list[str]:
        return [path for path in self.paths if repository in path]

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            with connection:
                connection.settimeout(5)
                try:
                    request = connection.recv(4096).decode("latin-1")
                except OSError:
                    request = ""
                parts = request.split(" ")
                self.paths.append(parts[1] if len(parts) > 1 else "")


@pytest.fixture
def unusable_hub(tmp_path, monkeypatch):
    """No HF_HUB_OFFLINE, an empty Hugging Face cache, and a hub that never answers."""
    from huggingface_hub import constants

    hub = CountingHub()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", hub.endpoint)
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)  # whatever reads the address later: never the real hub
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    yield hub
    hub.server.close()


def test_an_unreachable_hub_is_one_line_after_one_attempt(unusable_hub, monkeypatch):
    """The library's own requests would retry for about a minute, with a warning line per retry."""
    import huggingface_hub

    session, requests = huggingface_hub.get_session(), []
    real_head = session.head
    monkeypatch.setattr(session, "head", lambda *args, **kwargs: requests.append(args) or real_head(*args, **kwargs))
    with pytest.raises(InputError) as error:
        load_backbone("someone/not-cached-clip")
    message = str(error.value)
    assert len(requests) == 1  # one request; the HTTP client may open a second connection for it when the first drops
    assert 1 <= len(unusable_hub.asked_for("someone/not-cached-clip")) <= 2
    assert f"the hub at {unusable_hub.endpoint} cannot be reached" in message and "\n" not in message
    assert "random:tiny" in message


def test_a_model_in_the_hugging_face_cache_loads_without_asking_the_hub(unusable_hub, tmp_path):
    from huggingface_hub import constants

    revision = "0" * 40
    repository = Path(constants.HF_HUB_CACHE) / "models--someone--cached-clip"
    snapshot = repository / "snapshots" / revision
    original = load_backbone("random:tiny")
    original.clip.save_pretrained(snapshot)
    original.tokenizer.save_pretrained(snapshot)
    CLIPImageProcessor().save_pretrained(snapshot)  # as the hub's CLIP repositories hold one
    (repository / "refs").mkdir()
    (repository / "refs" / "main").write_text(revision)
    loaded = load_backbone("someone/cached-clip", check_words=tuple(DEFAULT_CATEGORIES))
    assert weights_fingerprint(loaded.clip) == weights_fingerprint(original.clip)
    assert unusable_hub.asked_for("cached-clip") == []
