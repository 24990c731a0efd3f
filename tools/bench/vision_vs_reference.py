#!/usr/bin/env python3
"""Ours vs the reference PyTorch Moondream: encode one 378x378 image + prefix.

Times, in one run and on the same machine, the work of turning one 378x378
image (2 crops: global + 1 tile) into its 730-position prefix KV in bf16:
vision encoder + projection + prefill of BOS + 729 image embeddings through
the text model. That is the reference's `MoondreamModel.encode_image` and our
`md::EncodeImage` (via `moondream-bench image-prefix --stdin`). Both start
from the image's uint8 crops (the overlap-crop resizing is not timed on
either side; for this size the crops are the image itself twice: the
reference encodes both, ours each distinct crop once) and both use RANDOM
weights of the moondream 0.5B shapes: speed only.

Each repeat times ours and the reference back to back, alternating which
goes first, after one warm-up of each; the medians and every sample are
printed as JSON (stdout, and --json FILE), with ratio = reference / ours
(of the medians, and the median of each repeat's paired ratio).

The reference is imported at run time from --reference, a directory holding
the `moondream` package of vikhyat/moondream (moondream/torch and
moondream/config); none of its code is part of this repository:

  git -C MIRROR archive de34f29 moondream/__init__.py moondream/torch \
      moondream/config | tar -x -C /tmp/mdref
  apt-get install -y python3-torch      # Debian 12: torch 1.13
  nice -n 19 /usr/bin/python3 tools/bench/vision_vs_reference.py \
      --reference /tmp/mdref --reference-commit de34f29 --threads 2 \
      --repeats 5 --stages

Run-time adaptations (all listed under "shims" in the output):
- import stubs for packages Debian 12 lacks and this path never calls
  (pyvips, tokenizers, safetensors) and a one-pattern einops.rearrange;
- torch < 2: a math F.scaled_dot_product_attention and a no-op
  torch._dynamo.mark_dynamic;
- the reference hard-codes float16 for its crops and its KV cache (it targets
  GPUs; in bf16 its encode_image fails on dtype mismatches), so the crops are
  normalised in the model's dtype and its KV cache is made in that dtype.
"""

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
import types

import numpy as np
import torch
import torch.nn.functional as F

CONFIG_05B = "moondream/config/config_md05.json"
CROP = 378


# ---- Run-time shims ----


def _rearrange(x, pattern, p1, p2):
    """The one einops pattern the reference's vision encoder uses."""
    if pattern != "b c (h p1) (w p2) -> b (h w) (c p1 p2)":
        raise NotImplementedError(f"einops shim: {pattern}")
    b, c, hp, wp = x.shape
    h, w = hp // p1, wp // p2
    x = x.reshape(b, c, h, p1, w, p2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, h * w, c * p1 * p2)


def _sdpa(q, k, v, attn_mask=None):
    """torch 2's F.scaled_dot_product_attention, math form (no dropout)."""
    if k.dtype != q.dtype:
        k, v = k.to(q.dtype), v.to(q.dtype)
    scores = torch.matmul(q * (1.0 / math.sqrt(q.size(-1))), k.transpose(-2, -1))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        else:
            scores = scores + attn_mask
    return torch.matmul(torch.softmax(scores, dim=-1), v)


def _stub(name, attrs, why):
    """Installs module `name` with `attrs` unless it is importable."""
    try:
        __import__(name)
        return []
    except ImportError:
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        sys.modules[name] = module
        return [f"stub module '{name}' (not installed): {why}"]


def install_shims():
    """Makes the reference importable here; returns what was patched."""
    unused = "imported, never called on this path"
    notes = (_stub("pyvips", {}, unused) + _stub("safetensors", {}, unused)
             + _stub("tokenizers", {"Tokenizer": _NoTokenizer}, unused)
             + _stub("einops", {"rearrange": _rearrange},
                     "rearrange for the vision patchify pattern only"))
    if not hasattr(F, "scaled_dot_product_attention"):
        F.scaled_dot_product_attention = _sdpa
        notes.append("torch < 2: F.scaled_dot_product_attention = math shim "
                     "(matmul, masked_fill, softmax, matmul)")
    if not hasattr(torch, "_dynamo"):
        torch._dynamo = types.SimpleNamespace(mark_dynamic=lambda *a, **k: None)
        notes.append("torch < 2: torch._dynamo.mark_dynamic = no-op")
    return notes


class _NoTokenizer:
    """Replaces the reference's tokenizer, which it would download from the
    Hugging Face hub; encode_image does not use it."""

    @staticmethod
    def from_pretrained(*args, **kwargs):
        return None


class _TorchWithCacheDtype:
    """`torch` for the reference's moondream.py: float16 zeros (its KV cache)
    come out in the model's dtype instead."""

    def __init__(self, dtype):
        self._dtype = dtype

    def __getattr__(self, name):
        return getattr(torch, name)

    def zeros(self, *args, dtype=None, **kwargs):
        if dtype == torch.float16:
            dtype = self._dtype
        return torch.zeros(*args, dtype=dtype, **kwargs)


# ---- The reference ----


class Reference:
    """The reference model, its encode_image timed whole and by stage."""

    def __init__(self, ref_dir, dtype, crops_u8):
        sys.path.insert(0, os.path.abspath(ref_dir))
        from moondream.torch import moondream as md_mod
        from moondream.torch.config import MoondreamConfig
        from PIL import Image

        with open(os.path.join(ref_dir, CONFIG_05B)) as f:
            self.config = MoondreamConfig.from_dict(json.load(f))
        md_mod.Tokenizer = _NoTokenizer
        md_mod.torch = _TorchWithCacheDtype(dtype)
        md_mod.prepare_crops = self._prepare_crops
        self.dtype = dtype
        self.crops_u8 = crops_u8
        self.model = md_mod.MoondreamModel(self.config, dtype=dtype).eval()
        self._randomize()
        self.stage_s = {}
        for name in ("vision_encoder", "vision_projection", "prefill"):
            self.model.ops[name] = self._timed(name, self.model.ops[name])
        self.image = Image.fromarray(crops_u8[0])

    def _prepare_crops(self, image, config, device):
        # vision.prepare_crops after overlap_crop_image, in the model dtype.
        crops = np.transpose(self.crops_u8, (0, 3, 1, 2))
        crops = torch.from_numpy(crops).to(device=device, dtype=self.dtype)
        return crops.div_(255.0).sub_(0.5).div_(0.5), (1, 1)

    def _randomize(self):
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in self.model.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)

    def _timed(self, name, fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            self.stage_s[name] = self.stage_s.get(name, 0.0) + time.perf_counter() - start
            return out
        return wrapper

    def encode(self):
        """Seconds for one encode_image, and its stages in ms."""
        self.stage_s = {}
        start = time.perf_counter()
        encoded = self.model.encode_image(self.image)
        total = time.perf_counter() - start
        assert encoded.pos == 730, encoded.pos
        stages = {k: v * 1e3 for k, v in self.stage_s.items()}
        stages["other"] = total * 1e3 - sum(stages.values())
        return total, stages


# ---- Ours ----


class Ours:
    """`moondream-bench image-prefix --stdin`, one command per timing."""

    def __init__(self, bench, threads):
        cmd = [bench, "image-prefix", "--stdin", "--config=moondream-0.5b",
               "--dtype=bf16", f"--threads={threads}"]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.header = self._read()
        if not self.header.get("ready"):
            raise RuntimeError(f"moondream-bench did not start: {self.header}")

    def _read(self):
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"moondream-bench exited ({self.proc.wait()})")
        return json.loads(line)

    def _ask(self, command):
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._read()

    def encode(self):
        return self._ask("encode")["encode_ms"] / 1e3

    def stages(self):
        return self._ask("stages")

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


# ---- Run ----


def check_same_shapes(header, config):
    t, v = config.text, config.vision
    want = {
        "text": {"dim": t.dim, "n_layers": t.n_layers, "n_heads": t.n_heads},
        "vision": {"enc_dim": v.enc_dim, "enc_n_layers": v.enc_n_layers,
                   "enc_ff_dim": v.enc_ff_dim, "enc_n_heads": v.enc_n_heads,
                   "proj_inner_dim": v.proj_inner_dim,
                   "proj_out_dim": v.proj_out_dim},
    }
    got = {k: header[k] for k in want}
    if got != want:
        raise RuntimeError(f"shapes differ: ours {got}, reference {want}")


def median_stages(samples):
    return {k: statistics.median(s[k] for s in samples) for k in samples[0]}


def run(args):
    shims = install_shims()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, (CROP, CROP, 3), dtype=np.uint8)
    # overlap_crop_image of a 378x378 image: tiling (1, 1), scale 1 resizes.
    crops_u8 = np.stack([image, image])

    ref = Reference(args.reference, torch.bfloat16, crops_u8)
    ours = Ours(args.bench, args.threads)
    check_same_shapes(ours.header, ref.config)
    load_start = os.getloadavg()[0]

    ref.encode()  # warm-up (ours warmed up before its 'ready' line)
    ours.encode()
    ours_s, ref_s, ref_stages, our_stages = [], [], [], []
    for rep in range(args.repeats):
        sides = ["ours", "reference"] if rep % 2 == 0 else ["reference", "ours"]
        for side in sides:
            if side == "ours":
                ours_s.append(ours.encode())
            else:
                seconds, stages = ref.encode()
                ref_s.append(seconds)
                ref_stages.append(stages)
        if args.stages:
            our_stages.append(ours.stages())
        print(f"repeat {rep + 1}/{args.repeats}: ours {ours_s[-1]:.3f} s, "
              f"reference {ref_s[-1]:.3f} s", file=sys.stderr)
    ours.close()

    ours_med, ref_med = statistics.median(ours_s), statistics.median(ref_s)
    result = {
        "what": "encode one 378x378 image (2 crops) + 730-position prefix "
                "prefill, bf16, random 0.5B weights, from uint8 crops",
        "ours_s": ours_med,
        "reference_s": ref_med,
        "ratio_reference_over_ours": ref_med / ours_med,
        # Each repeat times both sides back to back: the median of those
        # paired ratios is less moved by a noisy neighbour than the ratio of
        # the two medians.
        "ratio_median_of_repeats": statistics.median(
            r / o for r, o in zip(ref_s, ours_s)),
        "ours_samples_s": ours_s,
        "reference_samples_s": ref_s,
        "repeats": args.repeats,
        "threads": args.threads,
        "torch_version": torch.__version__,
        "reference": {"dir": os.path.abspath(args.reference),
                      "commit": args.reference_commit,
                      "stages_median_ms": median_stages(ref_stages)},
        "ours": {"bench": args.bench, "header": ours.header},
        "shims": shims + [
            "reference: crops normalised in bf16 and KV cache made in bf16 "
            "(it hard-codes float16 for both)",
            "reference: tokenizer not loaded (from_pretrained downloads; "
            "encode_image does not use it)"],
        "load_average": {"start": load_start, "end": os.getloadavg()[0]},
    }
    if our_stages:
        result["ours"]["stages_median_ms"] = median_stages(our_stages)
    return result


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    default_bench = os.path.join(here, "..", "..", "build", "tools", "moondream-bench")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reference", required=True,
                        help="directory holding the reference's moondream/ package")
    parser.add_argument("--reference-commit", default="unknown",
                        help="the commit it was exported from (only reported)")
    parser.add_argument("--bench", default=os.path.normpath(default_bench),
                        help="our moondream-bench binary")
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="compute threads on both sides")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed repeats per side (after one warm-up)")
    parser.add_argument("--stages", action="store_true",
                        help="also time our stages (a separate run per repeat)")
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args()
    result = run(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
