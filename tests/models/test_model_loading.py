"""Loading models and tokenizers from directories: round-trips through transformers and clear errors."""

from __future__ import annotations

import json

import pytest

from brorl.models import check_model_dir, load_causal_lm, load_tokenizer


def test_saved_fixture_model_and_tokenizer_load_through_brorl(tiny_model_dir, tiny_model):
    import torch

    model = load_causal_lm(tiny_model_dir)
    tok = load_tokenizer(tiny_model_dir)
    assert not model.training
    ids = torch.tensor([tok("Q: what is 1+2? A:")["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, tiny_model(ids).logits)


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        # nothing there at all
        (lambda tmp: tmp / "missing", "does not exist"),
        # looks like a hub id: say that brorl does not download
        (lambda tmp: "someorg/some-model", "does not download"),
        # a file, not a directory
        (lambda tmp: (tmp / "f.txt").write_text("x") and tmp / "f.txt", "is a file"),
        # a directory without config.json
        (lambda tmp: (tmp / "d").mkdir() or tmp / "d", "no config.json"),
    ],
)
def test_check_model_dir_explains_what_is_wrong(tmp_path, make, needle):
    with pytest.raises(ValueError, match=needle):
        check_model_dir(make(tmp_path))


def test_config_without_weights_is_reported_as_interrupted_save(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match="no weights"):
        load_causal_lm(tmp_path)


def test_tokenizer_without_pad_token_gets_eos_as_pad(tmp_path, tiny_tokenizer):
    import copy

    tok = copy.deepcopy(tiny_tokenizer)
    tok.pad_token = None
    tok.save_pretrained(tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert loaded.pad_token_id == loaded.eos_token_id == tiny_tokenizer.eos_token_id


def test_unknown_dtype_is_rejected_with_choices(tiny_model_dir):
    with pytest.raises(ValueError, match="float32"):
        load_causal_lm(tiny_model_dir, dtype="float8")
