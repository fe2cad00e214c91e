"""ONNX export (`--to onnx`): ONNX Runtime's logits match gptcore's for the prompt and for decoding steps that read
the past key values, and greedy decoding gives the same tokens. One export (through the command line) serves all."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("onnxscript", reason="ONNX export needs onnx and onnxscript (pip install 'gptcore[deploy]')")
ort = pytest.importorskip("onnxruntime", reason="needs onnxruntime (pip install 'gptcore[deploy]')")

from gptcore.conversion.cli import main  # noqa: E402
from gptcore.conversion.onnx_export import export_onnx, greedy_generate, input_names, output_names  # noqa: E402
from tests.conversion.support import END_OF_TEXT, N_EMBD, N_HEAD, N_LAYER, N_POS, VOCAB, token_ids  # noqa: E402
from tests.oracle import ORT_TOL, random_gptcore, save_with_gpt2_tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A gptcore folder (with tokenizer files) exported by `python -m gptcore.conversion SRC DST --to onnx`."""
    src, dst = tmp_path_factory.mktemp("gptcore"), tmp_path_factory.mktemp("out") / "onnx"
    model = random_gptcore(seed=3, every_tensor=True, tie_word_embeddings=False, **END_OF_TEXT)
    save_with_gpt2_tokenizer(model, src)  # the tokenizer is only copied along: the test feeds token ids
    assert main([str(src), str(dst), "--to", "onnx", "-q"]) == 0
    return model, ort.InferenceSession(str(dst / "model.onnx")), dst


def run(session, ids, past=None, start=0):
    """One call of the graph: `ids` at positions start.. after the cached `past` (none: length-0 tensors);
    returns the logits and the presents, named as the next call's past."""
    batch, seq = ids.shape
    if past is None:
        past = {name: np.zeros((batch, N_HEAD, 0, N_EMBD // N_HEAD), np.float32) for name in input_names(N_LAYER)[3:]}
    past_len = next(iter(past.values())).shape[2]
    feeds = {
        "input_ids": ids.numpy(),
        "attention_mask": np.ones((batch, past_len + seq), np.int64),
        "position_ids": np.arange(start, start + seq)[None].repeat(batch, 0),
        **past,
    }
    logits, *presents = session.run(None, feeds)
    return torch.from_numpy(logits), dict(zip(input_names(N_LAYER)[3:], presents))


def reference_logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def test_folder_layout(exported):
    _, session, folder = exported
    assert [i.name for i in session.get_inputs()] == input_names(N_LAYER)
    assert [o.name for o in session.get_outputs()] == output_names(N_LAYER)
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "gpt2" and config["n_positions"] == config["n_ctx"] == N_POS
    assert (folder / "generation_config.json").is_file() and (folder / "tokenizer.json").is_file()


def test_prompt_and_cached_decode_steps_match_gptcore(exported):
    model, session, _ = exported
    ids = token_ids()  # (2, 11)
    prompt, step, chunk = ids[:, :6], ids[:, 6:7], ids[:, 7:]
    full = reference_logits(model, ids)

    logits, past = run(session, prompt)
    assert (logits - full[:, :6]).abs().max() <= ORT_TOL
    logits, past = run(session, step, past, start=6)  # one token, the prompt's keys/values from the cache
    assert (logits - full[:, 6:7]).abs().max() <= ORT_TOL
    logits, _ = run(session, chunk, past, start=7)  # several new tokens after cached ones
    assert (logits - full[:, 7:]).abs().max() <= ORT_TOL

    # The comparison can tell: the same step without the cache predicts something else.
    uncached, _ = run(session, step, start=6)
    assert (uncached - full[:, 6:7]).abs().max() > 100 * ORT_TOL


def test_greedy_tokens_match_gptcore(exported):
    model, session, _ = exported
    prompt = token_ids(seed=1)[:, :5]
    expected = model.generate(prompt, max_new_tokens=20, do_sample=False, pad_token_id=VOCAB - 1)
    assert greedy_generate(session, prompt.numpy(), 20).tolist() == expected.tolist()


def test_greedy_tokens_match_gptcore_with_left_padding(exported):
    model, session, _ = exported
    prompt = token_ids(seed=2)[:, :6]
    mask = torch.ones_like(prompt)
    mask[0, :2] = 0  # the first row is a 4-token prompt, padded on the left
    expected = model.generate(prompt, attention_mask=mask, max_new_tokens=12, do_sample=False, pad_token_id=0)
    got = greedy_generate(session, prompt.numpy(), 12, attention_mask=mask.numpy())
    assert got.tolist() == expected.tolist()


def test_export_refuses_other_models(tmp_path):
    with pytest.raises(ValueError, match="GPTCoreForCausalLM"):
        export_onnx(torch.nn.Linear(2, 2), tmp_path / "out")


def test_tokenizer_option_only_for_runtimes(tmp_path, capsys):
    assert main([str(tmp_path), str(tmp_path / "out"), "--tokenizer", "gpt2"]) == 1
    assert "--tokenizer applies to --to onnx and --to gguf only" in capsys.readouterr().err
