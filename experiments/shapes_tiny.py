"""A tiny CM3Leon on the Shapes world: trains on this 2-core CPU, text -> image and image -> text.

    cm3jax train --config experiments/shapes_tiny.py --workdir runs/shapes_tiny \
        --config.data.shapes_dir=runs/demo/shapes --config.data.codes_dir=runs/demo/codes \
        --config.data.text_tokenizer=runs/demo/text.model --config.data.image_tokenizer=runs/demo/vqgan

The CM3Leon recipe (LayerNorm without affine, GELU, std 0.006 init, zero output projections)
at toy size, with what the recipe study (docs/recipe.md, chosen on the dev split) found a
model this small needs: rotary positions, a learned embedding of each image token's place in
its image, each image code read also through its Shapes factors (which pixels of its patch
are background or which object's colour, and which colours), fewer CM3-masked (0.1) and
image-first (0.3) documents, a tenth of the examples throwaway emblems that only copying their
retrieved document can draw, and a fifth of the examples trained without their retrieved
documents (so a prompt with none, every caption prompt among them, is one the model has seen).

Variants: `default`, `retrieval` (what `cm3jax demo` trains: retrieval-augmented, each example
after up to two of its offline neighbours, `doc <eos> doc <eos> query`, in a 256-token
context; give the bank and neighbours with --config.data.retrieval_bank=DIR
--config.data.neighbours=DIR, as `cm3jax demo` does), and `test` / `test_retrieval` (a few
steps, for tests).
"""

import ml_collections

from cm3jax.config import decoder_experiment
from cm3jax.image_tokenizer.codebook import FACTOR_FEATURES

VARIANTS = ("default", "retrieval", "test", "test_retrieval")


def get_config(variant: str = "default"):
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    test, retrieval = variant.startswith("test"), variant.endswith("retrieval")
    # Two ~85-token documents and the query fill 256 tokens; half the rows keep the tokens per step.
    seq_len = 256 if retrieval else 128
    batch_size = 8 if test else 16 if retrieval else 32
    steps = 6 if test else 4000 if retrieval else 2000
    config = decoder_experiment(
        model=dict(vocab_size=0, d_model=128, n_layers=4, n_heads=4, mlp_hidden=512, max_seq_len=seq_len,
                   positions="rope", image_positions=64,
                   # each image code also embedded and predicted through its Shapes factors (mask, colours)
                   image_code_source="factors", image_code_features=FACTOR_FEATURES),
        train=dict(steps=steps, batch_size=batch_size, seq_len=seq_len, warmup_steps=min(100, steps // 2),
                   peak_lr=3e-3, weight_decay=0.0, seed=0),
    )
    config.data = ml_collections.ConfigDict(dict(
        shapes_dir="runs/demo/shapes", codes_dir="runs/demo/codes", text_tokenizer="runs/demo/text.model",
        image_tokenizer="runs/demo/vqgan", image_to_text=0.3, cfg_dropout=0.1, cm3_rate=0.1, span_rate=1.0,
        # loss weight of the image codes that draw something (not their image's most frequent code)
        drawn_code_weight=1.0,
        # retrieval augmentation: a memory bank (`cm3jax retrieval bank`) and the examples' offline
        # neighbours in it (`cm3jax retrieval neighbours`); empty: no retrieval
        retrieval_bank="", neighbours="", retrieved_documents=2 if retrieval else 3,
        # a share of the examples trained without their documents, as a prompt with 0 retrieved is asked
        no_documents=0.2,
        # a share of the examples that become emblems invented for them, drawn after their own
        # document and a distractor's (copying is the only way), and how many patterns to draw from
        throwaway_emblems=0.1, throwaway_patterns=2048))
    config.checkpoint = ml_collections.ConfigDict(dict(every=2 if test else 500, keep=2))
    # batches: eval-split batches whose next-token loss a finished run reports (`cm3jax eval` scores the rest)
    config.eval = ml_collections.ConfigDict(dict(batches=1 if test else 10))
    config.distributed = ml_collections.ConfigDict(dict(coordinator="", num_processes=0, process_id=0))
    return config
