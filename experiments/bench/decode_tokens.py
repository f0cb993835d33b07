"""Benchmark: KV-cached decoding tokens/s on bench-small, side by side with Hugging Face
`generate` on `ChameleonForConditionalGeneration` in PyTorch on CPU (docs/benchmarks.md).

    python experiments/bench/decode_tokens.py [--rounds 3] [--allow-busy] [--max-isa AVX2]
        [--json runs/bench/decode_tokens.json]

Every case samples 256 new tokens after a 32-token prompt with top-p 0.9 at temperature 1,
float32, random weights (speed does not depend on them); neither side may stop early (the
peer runs with min_new_tokens = max_new_tokens; ours generates one 256-code image span, so the
modality masks are active). Cases: batch 1, batch 8, and classifier-free guidance at scale 3
(ours: conditional and unconditional streams as two rows of one batch; the peer:
`generate(guidance_scale=3, negative_prompt_ids=...)`). The two sides alternate in rounds and
each figure is the median over the quiet rounds (the idle CPU share is sampled before each;
a round begun while other work held more than a tenth of the machine is flagged and left out
unless --allow-busy). Also: batch-1 decoding against the memory-bandwidth bound (weight
bytes read per step at a large gemv's rate, measured in every round beside the decoding and
taken as the median: this machine's bandwidth moves between runs), compile times, and the latency of one
Shapes image (64 codes, CFG 3, 8 samples) at the shapes_tiny size, and the vector ISA each side
used (--max-isa AVX2 holds both to AVX2, as in train_tokens.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

import numpy as np
from flax import nnx

from cm3jax.benchmarking import (ISA_CAPS, QuietCheck, chameleon_peer, gemv_gb_per_second, jax_vector_isa, machine,
                                 restart_with_isa_cap, time_calls, torch_vector_isa)
from cm3jax.config import load_config
from cm3jax.config import decoder_config
from cm3jax.errors import UserError
from cm3jax.fileio import atomic_write_text
from cm3jax.model.decoder import Decoder
from cm3jax.sampling.sampler import generate
from cm3jax.sampling.strategies import SamplingSettings
from cm3jax.vocab import MultimodalVocab

EXPERIMENTS = Path(__file__).resolve().parents[1]
CASES = {"batch 1": (1, 1.0), "batch 8": (8, 1.0), "CFG 3, batch 1": (1, 3.0)}


def bench_vocab(model_config, image_tokens: int) -> MultimodalVocab:
    """bench-small's 16,384 ids as a multimodal vocabulary: 8,192 image codes, `image_tokens`-code images."""
    specials = len(MultimodalVocab(1, 1, 1).specials)
    return MultimodalVocab(model_config.vocab_size - 8192 - specials, 8192, image_tokens)


class JaxSide:
    def __init__(self, model_config, vocab: MultimodalVocab, prompt_len: int, new_tokens: int, top_p: float):
        self.model = Decoder(model_config, nnx.Rngs(0))
        self.vocab, self.new_tokens, self.top_p = vocab, new_tokens, top_p
        rng = np.random.default_rng(0)
        self.prompts = [np.append(rng.integers(vocab.text_offset, vocab.image_offset, prompt_len - 1), vocab.break_id)
                        for _ in range(8)]
        self.uncond = np.array([vocab.mask_id, vocab.break_id], np.int32)
        self.compile_seconds = {case: time_calls(lambda c=case: self.run(c), 1)[0] for case in CASES}

    def run(self, case: str) -> np.ndarray:
        batch, scale = CASES[case]
        requests = [(p, self.uncond) if scale != 1.0 else (p,) for p in self.prompts[:batch]]
        out = generate(self.model, self.vocab, requests, SamplingSettings(top_p=self.top_p, cfg_scale=scale),
                       self.new_tokens, until="image")
        assert out.lengths.min() == self.new_tokens, out.lengths
        return out.tokens


class TorchSide:
    def __init__(self, model_config, prompts: list[np.ndarray], new_tokens: int, top_p: float):
        import torch
        self.torch = torch
        self.model = chameleon_peer(model_config).eval()
        self.prompts = torch.from_numpy(np.stack(prompts).astype(np.int64))
        self.new_tokens, self.top_p = new_tokens, top_p
        self.threads = torch.get_num_threads()
        self.run("batch 1")  # first call: allocations

    def run(self, case: str):
        batch, scale = CASES[case]
        ids = self.prompts[:batch]
        extra = {}
        if scale != 1.0:
            extra = dict(guidance_scale=scale, negative_prompt_ids=self.torch.tensor([[3, 2]]))
        with self.torch.inference_mode():
            out = self.model.generate(ids, attention_mask=self.torch.ones_like(ids), do_sample=True, top_p=self.top_p,
                                      top_k=0, temperature=1.0, max_new_tokens=self.new_tokens,
                                      min_new_tokens=self.new_tokens, pad_token_id=0, **extra)
        assert out.shape[1] - ids.shape[1] == self.new_tokens
        return out


def shapes_image_latency(samples: int = 8, rounds: int = 3) -> dict:
    """Seconds for `samples` CFG images of the Shapes world (64 codes each) at the shapes_tiny size."""
    config = load_config(str(EXPERIMENTS / "shapes_tiny.py"))
    vocab = MultimodalVocab(512, 8192, 64)
    config.model.vocab_size = vocab.padded_size
    config.model.image_id_start, config.model.image_id_end = vocab.image_offset, vocab.size  # its image switches
    model = Decoder(decoder_config(config), nnx.Rngs(0))
    caption = np.append(np.arange(vocab.text_offset, vocab.text_offset + 14), vocab.break_id).astype(np.int32)
    requests = [(caption, np.array([vocab.mask_id, vocab.break_id], np.int32))] * samples
    settings = SamplingSettings(top_p=0.9, cfg_scale=3.0)
    first = time_calls(lambda: generate(model, vocab, requests, settings, 64, until="image"), 1)[0]
    seconds = statistics.median(time_calls(lambda: generate(model, vocab, requests, settings, 64, until="image"),
                                           rounds))
    return {"samples": samples, "tokens_per_image": 64, "first_call_seconds": first, "seconds": seconds,
            "seconds_per_token_step": seconds / 64}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--allow-busy", action="store_true", help="keep rounds timed beside other work in the medians")
    parser.add_argument("--max-isa", choices=sorted(ISA_CAPS),
                        help="hold both sides to this vector ISA (approximates a machine without the wider one)")
    parser.add_argument("--json", default="runs/bench/decode_tokens.json")
    args = parser.parse_args()
    restart_with_isa_cap(args.max_isa)
    load_before = os.getloadavg()[0]
    quiet = QuietCheck(allow_busy=args.allow_busy)

    config = load_config(str(EXPERIMENTS / "bench_small.py"))
    model_config = decoder_config(config)
    d = config.decode
    ours = JaxSide(model_config, bench_vocab(model_config, d.new_tokens), d.prompt_len, d.new_tokens, d.top_p)
    peer = TorchSide(model_config, ours.prompts, d.new_tokens, d.top_p)
    times = {side: {case: [] for case in CASES} for side in ("cm3jax", "peer")}  # one entry per round
    gemv_rounds = []
    for _ in range(args.rounds):
        quiet.check()
        for case in CASES:
            times["cm3jax"][case] += time_calls(lambda: ours.run(case), 1)
            times["peer"][case] += time_calls(lambda: peer.run(case), 1)
        gemv_rounds.append(gemv_gb_per_second())
    os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
    atomic_write_text(args.json, json.dumps({"machine": machine(), "quiet": quiet.record(), "seconds": times},
                                            indent=2) + "\n")  # the raw rounds, kept whatever follows
    gemv = statistics.median(quiet.select(gemv_rounds))
    weight_bytes = 4 * model_config.param_count()
    bound = gemv * 1e9 / weight_bytes  # batch-1 steps/s if every step reads every weight once at gemv speed
    latency = shapes_image_latency()

    rows, targets = {}, {"batch 1": 3.0, "batch 8": 4.0, "CFG 3, batch 1": 5.0}
    for case, (batch, _) in CASES.items():
        ours_s, peer_s = (statistics.median(quiet.select(times[side][case])) for side in ("cm3jax", "peer"))
        rows[case] = {"batch": batch, "cm3jax_seconds": ours_s, "peer_seconds": peer_s,
                      "cm3jax_tokens_per_second": batch * d.new_tokens / ours_s,
                      "peer_tokens_per_second": batch * d.new_tokens / peer_s, "speedup": peer_s / ours_s,
                      "target": targets[case], "cm3jax_compile_seconds": ours.compile_seconds[case],
                      "cm3jax_all_seconds": times["cm3jax"][case], "peer_all_seconds": times["peer"][case]}
    fraction = rows["batch 1"]["cm3jax_tokens_per_second"] / bound
    result = {"machine": machine(), "model": config.model.to_dict(), "prompt_len": d.prompt_len,
              "new_tokens": d.new_tokens, "top_p": d.top_p, "gemv_gb_per_second": gemv, "gemv_rounds": gemv_rounds,
              "weight_bytes": weight_bytes, "bandwidth_bound_tokens_per_second": bound,
              "batch1_fraction_of_bound": fraction, "cases": rows, "shapes_image": latency,
              "vector_isa": {"cm3jax": jax_vector_isa(), "peer": torch_vector_isa(peer.torch)},
              "peer": {"torch": peer.torch.__version__, "threads": peer.threads},
              "load_average": [load_before, os.getloadavg()[0]], "quiet": quiet.record()}

    print(f"\nbench-small decoding, {d.prompt_len}-token prompt + {d.new_tokens} new tokens, top-p {d.top_p}, "
          f"float32; {machine()}")
    print(f"| case | cm3jax tokens/s | HF generate tokens/s (torch {peer.torch.__version__}, {peer.threads} threads) "
          f"| ratio | target | cm3jax compile s |\n|---|---|---|---|---|---|")
    for case, r in rows.items():
        print(f"| {case} | {r['cm3jax_tokens_per_second']:.1f} | {r['peer_tokens_per_second']:.1f} | "
              f"{r['speedup']:.2f}x | {r['target']:.0f}x | {r['cm3jax_compile_seconds']:.1f} |")
    print(f"\nbatch 1 runs at {fraction:.2f} of the bandwidth bound ({bound:.0f} tokens/s: {weight_bytes / 1e6:.0f} MB "
          f"of weights per step at the gemv rate of {gemv:.1f} GB/s, median of "
          f"{', '.join(f'{g:.1f}' for g in gemv_rounds)} measured in the rounds)")
    print(f"vector ISA: cm3jax {result['vector_isa']['cm3jax']}; peer {result['vector_isa']['peer']}")
    print(f"{quiet.summary()}; load average (1 min) {load_before:.1f} before, {os.getloadavg()[0]:.1f} after")
    print(f"Shapes image (shapes_tiny size, 64 codes, CFG 3, {latency['samples']} samples): {latency['seconds']:.2f} s "
          f"({1e3 * latency['seconds_per_token_step']:.1f} ms per step), first call {latency['first_call_seconds']:.1f} s")
    atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    try:
        main()
    except UserError as error:
        raise SystemExit(f"decode_tokens: {error}")
