"""A tiny CM3Leon on the Shapes world: trains on this 2-core CPU, text -> image and image -> text.

    cm3jax train --config experiments/shapes_tiny.py --workdir runs/shapes_tiny \
        --config.data.shapes_dir=runs/demo/shapes --config.data.codes_dir=runs/demo/codes \
        --config.data.text_tokenizer=runs/demo/text.model --config.data.image_tokenizer=runs/demo/vqgan

The CM3Leon recipe (LayerNorm without affine, GELU, learned positions, std 0.006 init,
zero output projections) at toy size. Variants: `default`, `test` (a few steps, for tests).
"""

import ml_collections

from cm3jax.experiment import decoder_experiment


def get_config(variant: str = "default"):
    steps = {"default": 2000, "test": 6}[variant]
    config = decoder_experiment(
        model=dict(vocab_size=0, d_model=128, n_layers=4, n_heads=4, mlp_hidden=512, max_seq_len=128),
        train=dict(steps=steps, batch_size=32 if variant == "default" else 8, seq_len=128,
                   warmup_steps=min(100, steps // 2), peak_lr=3e-3, weight_decay=0.0, seed=0),
    )
    config.data = ml_collections.ConfigDict(dict(
        shapes_dir="runs/demo/shapes", codes_dir="runs/demo/codes", text_tokenizer="runs/demo/text.model",
        image_tokenizer="runs/demo/vqgan", image_to_text=0.5, cfg_dropout=0.1, cm3_rate=0.5, span_rate=1.0,
        # retrieval augmentation: a memory bank (`cm3jax retrieval bank`) and the examples' offline
        # neighbours in it (`cm3jax retrieval neighbours`); empty: no retrieval
        retrieval_bank="", neighbours="", retrieved_documents=3))
    config.checkpoint = ml_collections.ConfigDict(dict(every=500 if variant == "default" else 2, keep=2))
    config.eval = ml_collections.ConfigDict(dict(batches=10 if variant == "default" else 1,
                                                 samples=32 if variant == "default" else 4))
    config.distributed = ml_collections.ConfigDict(dict(coordinator="", num_processes=0, process_id=0))
    return config
