import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from cm3jax.sampling.modality import AFTER, CLOSING, IMAGE, TEXT, advance, allowed_table, state_after
from cm3jax.sampling.strategies import SamplingSettings, choose
from cm3jax.vocab import MultimodalVocab

VOCAB = MultimodalVocab(40, 24, 4)
WIDTH = 128
TABLE = jnp.asarray(allowed_table(VOCAB, WIDTH))


@jax.jit
def _roll(logits_TV, key, state, count):
    """Draws a token per step from the given logits under the modality masks."""
    settings = SamplingSettings()

    def step(carry, inputs):
        state, count = carry
        logits_V, t = inputs
        token = choose(logits_V[None], TABLE[state], jax.random.fold_in(key, t), jnp.bool_(False), settings,
                       settings.dynamic())
        return advance(state, count, token, VOCAB, xp=jnp), token

    return jax.lax.scan(step, (state, count), (logits_TV, jnp.arange(logits_TV.shape[0])))[1]


def _check_spans(tokens, start_state, start_count):
    """Every image span is exactly image_tokens codes (the last may be cut by the end of the
    sample), opened by <break> and followed by <break> or <eos>; no text or padding id appears
    inside; text never holds an image code without a <break> before it."""
    n = VOCAB.image_tokens
    in_image, count = start_state in (IMAGE, CLOSING), start_count
    previous_break = start_state in (IMAGE, AFTER) and start_count == 0
    for i, token in enumerate(tokens):
        assert token != VOCAB.pad_id and token < VOCAB.size
        if VOCAB.is_image(token):
            assert (in_image and count < n) or previous_break, (i, tokens)
            count = count + 1 if in_image and count < n else 1
            in_image = True
        else:
            assert not in_image or count == n, (i, tokens)  # an image span closes only when complete
            if in_image:
                assert token in (VOCAB.break_id, VOCAB.eos_id), (i, tokens)
            in_image, count = False, 0
        previous_break = token == VOCAB.break_id


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), image_bias=st.floats(-20, 20), break_bias=st.floats(-5, 20),
       start=st.sampled_from([(TEXT, 0), (IMAGE, 0), (IMAGE, 3), (CLOSING, 4), (AFTER, 0)]))
def test_image_spans_hold_only_codes_and_exactly_the_configured_number_for_any_logits(seed, image_bias, break_bias,
                                                                                   start):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(60, WIDTH)) * rng.uniform(0.1, 10)
    logits[:, VOCAB.image_offset:VOCAB.size] += image_bias
    logits[:, VOCAB.break_id] += break_bias
    tokens = np.asarray(_roll(jnp.asarray(logits, jnp.float32), jax.random.key(seed), jnp.int32(start[0]),
                              jnp.int32(start[1])))
    _check_spans(tokens.tolist(), *start)


def test_state_after_a_prompt():
    caption = [VOCAB.text_offset + 3, VOCAB.text_offset + 4]
    image = list(VOCAB.image_ids([1, 2, 3, 4]))
    assert state_after(np.array(caption), VOCAB) == (TEXT, 0)
    assert state_after(np.array(caption + [VOCAB.break_id]), VOCAB) == (IMAGE, 0)
    assert state_after(np.array(caption + [VOCAB.break_id] + image[:2]), VOCAB) == (IMAGE, 2)
    assert state_after(np.array(caption + [VOCAB.break_id] + image), VOCAB) == (CLOSING, 4)
    assert state_after(np.array(image + [VOCAB.break_id]), VOCAB) == (AFTER, 0)
    assert state_after(np.array(image + [VOCAB.break_id] + caption), VOCAB) == (TEXT, 0)


def test_allowed_table():
    table = allowed_table(VOCAB, WIDTH)
    ids = np.arange(WIDTH)
    assert not table[:, VOCAB.pad_id].any() and not table[:, VOCAB.size:].any()
    np.testing.assert_array_equal(table[IMAGE], VOCAB.is_image(ids))
    assert not (table[TEXT] & VOCAB.is_image(ids)).any() and table[TEXT, VOCAB.break_id]
    assert set(np.flatnonzero(table[CLOSING])) == {VOCAB.break_id, VOCAB.eos_id}
    assert table[AFTER][VOCAB.is_image(ids)].all() and not table[AFTER, VOCAB.break_id]
