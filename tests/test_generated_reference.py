"""The reference a language model's files are held to is transformers' own generate(do_sample=False): its tokens,
each step's logits before any processor, and each prompt's logits at its own positions from its prompt pass
(export/decoder_reference.generated_reference). A chat model's generation config (a repetition penalty, n-grams
it bans) does not change the reference's choice from the model's argmax; where a processor does (planted: the
model's config left in), export stops in one line naming the prompt and step."""
import numpy as np
import pytest
import torch

from ptx.errors import ValidationError

PROMPTS = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10], [3] * 12, list(range(64)) * 3]
STEPS = 12


def _llama(**generation):
    """A 2-layer Llama of 64 tokens, its generation config given ``generation`` (a chat model's settings)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                         initializer_range=0.2, bos_token_id=None, eos_token_id=None)).eval()
    for key, value in generation.items():
        setattr(model.generation_config, key, value)
    return model


def _plain_greedy(model, prompt):
    """Greedy decoding of one prompt alone by hand: a whole forward per step, no cache, no padding, no processor."""
    ids, logits = list(prompt), []
    with torch.no_grad():
        for _ in range(STEPS):
            row = model(torch.tensor([ids])).logits[0, -1].numpy()
            logits.append(row)
            ids.append(int(np.argmax(row)))
    return ids[len(prompt):], logits


def test_the_reference_is_the_model_s_argmax_with_its_own_logits_whatever_its_generation_config():
    from ptx.export.decoder_reference import generated_reference

    chat = _llama(repetition_penalty=50.0, no_repeat_ngram_size=1, do_sample=True, temperature=0.7)
    reference = generated_reference(chat, PROMPTS, STEPS, 0, print)
    for k, prompt in enumerate(PROMPTS):
        tokens, logits = _plain_greedy(chat, prompt)
        assert reference.steps.tokens[k] == tokens, k
        assert min(reference.steps.margins[k]) >= 0, k
        for step, row in enumerate(logits):
            assert np.allclose(reference.logits[k][step].values, row, atol=1e-4), (k, step)
        with torch.no_grad():  # the prompt pass's positions but the last: the next token of each is the prompt's
            own = chat(torch.tensor([prompt])).logits[0, :-1].numpy()
        positions = reference.prompt_positions[k]
        assert len(positions.next_logits) == len(prompt) - 1
        assert np.allclose(positions.next_logits, [row[t] for row, t in zip(own, prompt[1:])], atol=1e-4), k
    assert chat.generation_config.repetition_penalty == 50.0  # the model's own config given back


def test_a_processor_left_in_the_reference_stops_export_naming_prompt_and_step(monkeypatch):
    """Planted: the model's own config read (its repetition penalty and banned n-grams choose other tokens than
    its argmax): decoding_reference refuses in one line."""
    from contextlib import nullcontext

    from ptx.export import decoder_reference

    monkeypatch.setattr(decoder_reference, "_own_config_unread", lambda module: nullcontext())
    chat = _llama(repetition_penalty=50.0, no_repeat_ngram_size=1)
    reference = decoder_reference.generated_reference(chat, PROMPTS, STEPS, 0, print)
    assert min(min(m) for m in reference.steps.margins) < 0  # the processors chose other tokens
    with pytest.raises(ValidationError, match=r"generate\(do_sample=False\) .*: prompt \d+ step \d+: its logits put "
                                              r"\d+ above the \d+ it chose by .*: a processor of LlamaForCausalLM's "
                                              r"generation config changes greedy's choice"):
        decoder_reference.held_to_its_choices(reference, chat, "float32")
