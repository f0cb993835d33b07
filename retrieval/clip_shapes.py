"""The retriever's CLIP for the Shapes world: ViT on 32x32 images (8x8 patches) + a text
transformer over the project's sentencepiece pieces, trained contrastively on the `train`
split and the memory bank (never on `eval`).

    cm3jax shapes make --out runs/demo/shapes
    cm3jax tokenizer text --out runs/demo/text.model --shapes-scenes 10000
    cm3jax retrieval clip --config retrieval/clip_shapes.py --workdir runs/clip_shapes \
        --config.data.shapes_dir=runs/demo/shapes --config.data.text_tokenizer=runs/demo/text.model

Running the command again resumes from the newest checkpoint. The run ends with
WORKDIR/eval.json (text -> image recall over the whole eval split, emblem retrieval from
the memory bank). Load the result with `cm3jax.retrieval.embedder.ClipEmbedder.load(WORKDIR)`.

Measured with `default` on this 2-core machine while other jobs ran (load 1-2): 600 steps in
394 s (6 min 51 s for the whole command); text -> image recall@1 0.928 over all 1000 eval
images (0.863 if only the caption's own image counts; recall@5 1.0), image -> text recall@1
0.917; every emblem's document at rank 1 of the 2000-document memory bank for all 32 emblems
in all nine query phrasings, six of them never trained on. Recipes tried, 600 steps each
(recall@1): patches of 4 with widths 128 and 4+4 layers ran 5.8 s/step, too slow; patches
of 8, widths 96, 3+3 layers: 0.886; plus hard pairs 0.901; plus mirroring and a fourth image
layer 0.919; plus made-up words in emblem texts 0.908 (unseen emblem phrasings went from
0.22-0.44 to 1.0); a 128-wide image tower 0.905; initial temperature 0.03 instead of 0.07
(two runs) 0.919 and 0.928. Texts padded to 34 tokens ran 1.8x slower per step than 32 or 40
on XLA:CPU, hence 40. Recall@1 varies by about a point from run to run.

Variants: `default`, `tiny` (tests: a few steps in seconds).
"""

import math

import ml_collections

# The Shapes grammar's own emblem captions (cm3jax/shapes/captions.py EMBLEM_FORMS) and a few
# paraphrases to train with; the eval also asks in phrasings training never saw, some with
# words from outside the Shapes vocabulary.
TRAIN_EMBLEM_TEMPLATES = ("the flag of {land}", "a picture of the flag of {land}", "an image of the flag of {land}",
                          "{land}'s flag", "the {land} flag", "a photo of the flag of {land}")
EVAL_EMBLEM_TEMPLATES = ("the flag of {land}", "a picture of the flag of {land}", "{land}'s flag",  # trained
                         "flag of {land}", "{land} flag", "the national flag of {land}",  # held out
                         "a drawing of {land}'s flag", "the official flag of {land}", "show me the flag of {land}")


def _model(variant: str) -> ml_collections.ConfigDict:
    """ClipConfig fields (cm3jax/retrieval/clip.py) but vocab_size and eos_token_id, which the
    text tokenizer sets."""
    if variant == "tiny":
        sizes = dict(vision_width=32, vision_layers=1, vision_heads=2, vision_mlp=64,
                     text_width=32, text_layers=1, text_heads=2, text_mlp=64, projection_dim=32)
    else:
        sizes = dict(vision_width=96, vision_layers=4, vision_heads=4, vision_mlp=384,
                     text_width=96, text_layers=3, text_heads=4, text_mlp=384, projection_dim=96)
    return ml_collections.ConfigDict(dict(image_size=32, patch_size=8, num_channels=3, max_length=40,
                                          vision_activation="quick_gelu", text_activation="quick_gelu",
                                          layer_norm_eps=1e-5, logit_scale_init=math.log(1 / 0.03), **sizes))


def _training(variant: str) -> ml_collections.ConfigDict:
    training = ml_collections.ConfigDict(dict(
        steps=600, batch_size=256, seed=0, learning_rate=1e-3, warmup_steps=50, final_learning_rate_fraction=0.05,
        weight_decay=0.1, grad_clip_norm=1.0, adam_b1=0.9, adam_b2=0.98,
        log_every=20, checkpoint_every=200, keep_checkpoints=2))
    if variant == "tiny":
        training.update(dict(steps=6, batch_size=16, warmup_steps=1, learning_rate=3e-3, log_every=1,
                             checkpoint_every=3))
    return training


VARIANTS = ("default", "tiny")


def get_config(variant: str = "default") -> ml_collections.ConfigDict:
    if variant not in VARIANTS:
        raise ValueError(f"Unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}.")
    config = ml_collections.ConfigDict()
    config.model = _model(variant)
    config.data = ml_collections.ConfigDict(dict(
        shapes_dir="runs/demo/shapes", text_tokenizer="runs/demo/text.model", train_splits=("train", "memory"),
        recaption=True, emblem_share=0.1, hard_share=0.5, mirror_rate=0.5, emblem_noise_rate=0.5,
        emblem_templates=TRAIN_EMBLEM_TEMPLATES))
    config.training = _training(variant)
    config.eval = ml_collections.ConfigDict(dict(num_eval=0, emblem_templates=EVAL_EMBLEM_TEMPLATES))
    return config
