import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cm3jax.errors import UserError
from cm3jax.model.config import DecoderConfig
from cm3jax.model.decoder import Decoder
from cm3jax.sampling.greedy import greedy_image
from cm3jax.vocab import MultimodalVocab

VOCAB = MultimodalVocab(100, 64, 16)


@pytest.fixture(scope="module")
def model():
    config = DecoderConfig(vocab_size=VOCAB.padded_size, d_model=32, n_layers=2, n_heads=2, mlp_hidden=64,
                           max_seq_len=64, zero_init_outputs=False, positions="rope")
    return Decoder(config, nnx.Rngs(0))


@nnx.jit
def _forward(model, tokens):
    return model(tokens)


def _one_by_one(model, prompt):
    """Re-reads the whole sequence for every new token (padded to one width: the model is causal)."""
    tokens = list(prompt)
    for _ in range(VOCAB.image_tokens):
        padded = tokens + [VOCAB.pad_id] * (64 - len(tokens))
        logits = np.array(_forward(model, jnp.asarray([padded]))[0, len(tokens) - 1])
        logits[:VOCAB.image_offset] = -np.inf
        logits[VOCAB.size:] = -np.inf
        tokens.append(int(logits.argmax()))
    return np.array(tokens[len(prompt):]) - VOCAB.image_offset


def test_greedy_matches_a_step_by_step_reference_and_batches(model):
    prompts = [np.array([30, 31, 32, VOCAB.break_id]), np.array([40, VOCAB.break_id])]
    batched = greedy_image(model, VOCAB, prompts, 64)
    for prompt, row in zip(prompts, batched):
        np.testing.assert_array_equal(row, _one_by_one(model, prompt))
        np.testing.assert_array_equal(greedy_image(model, VOCAB, [prompt], 64)[0], row)
    assert batched.min() >= 0 and batched.max() < VOCAB.image_codebook_size


def test_prompt_longer_than_the_context_is_refused(model):
    with pytest.raises(UserError, match="at most 48 tokens"):
        greedy_image(model, VOCAB, [np.zeros(50, np.int32)], 64)
