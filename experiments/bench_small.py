"""bench-small (docs/benchmarks.md): the shared speed config, exactly expressible as a Hugging Face
`ChameleonConfig` (vocab 16384, width 512, 8 layers of 8 heads, SwiGLU 1408, RMSNorm, RoPE,
QK-norm, no biases), so that `ChameleonForConditionalGeneration` is the side-by-side peer.

    python experiments/bench/train_tokens.py        # training tokens/s against the peer
"""

import ml_collections

from cm3jax.config import decoder_experiment


def get_config(variant: str = ""):
    del variant
    config = decoder_experiment(
        model=dict(vocab_size=16_384, d_model=512, n_layers=8, n_heads=8, n_kv_heads=8, mlp_hidden=1408,
                   norm="rmsnorm", mlp="swiglu", positions="rope", rope_theta=10_000.0, qk_norm=True,
                   max_seq_len=4096),
        train=dict(batch_size=8, seq_len=512, steps=1000, warmup_steps=10, peak_lr=1e-4),
    )
    config.decode = ml_collections.ConfigDict(dict(prompt_len=32, new_tokens=256, top_p=0.9, cfg_scale=3.0))
    return config
