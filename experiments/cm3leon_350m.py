"""CM3Leon 350M (paper Table 3): 24 layers, d_model 1024.

    cm3jax model size --config experiments/cm3leon_350m.py --mesh 1,8,1

Paper-silent choices: 16 heads of 64, GELU MLP of 4 d_model, embeddings tied (OPT), a
56,320-entry vocabulary (the paper's) padded to a multiple of 128. Optimizer per CM3:
Adam (0.9, 0.98), clip 1.0.
"""

from cm3jax.config import decoder_experiment

TOKENS = 1_400_000_000_000  # Table 3
STEPS = TOKENS // (2048 * 4096)  # batches of 2048 x 4096 = 8.4M tokens (the paper's "8M")


def get_config(variant: str = ""):
    del variant
    return decoder_experiment(
        model=dict(vocab_size=56_320, d_model=1024, n_layers=24, n_heads=16, mlp_hidden=4096,
                   tie_embeddings=True, max_seq_len=4096, scan_layers=True),
        train=dict(batch_size=2048, seq_len=4096, steps=STEPS, warmup_steps=1500,
                   peak_lr=6e-4),
        paper_params=350e6,
    )
