"""Train `builtin-flow`: a tiny rectified-flow text-to-image model in SD3's pipeline layout, on emoji.

The flow-model counterpart of `assets/builtin` (scripts/train_builtin.py), trained on the same 314
emoji so the two can stand side by side on a grid's model axis:

- the model: a StableDiffusion3Pipeline folder (Esser et al. 2024, "Scaling Rectified Flow
  Transformers for High-Resolution Image Synthesis", ICML): an MM-DiT (SD3Transformer2DModel,
  joint attention over image and text tokens, qk RMS norm as in SD3.5) on 16x16x4 latents with
  patch size 2 (64 image tokens); two CLIP text encoders with projection, as SD3 has, and no T5
  (diffusers then feeds zeros in its place, as for SD3 run without T5). The first encoder and the
  tokenizer (both encoders use it) start from the built-in model's; the second is a small new one.
- the VAE is the built-in model's, frozen, with SD3's latent normalisation: shift_factor = mean and
  scaling_factor = 1 / std of the training latents (the pipeline decodes latents / scaling + shift).
- the loss: conditional flow matching (Lipman et al. 2023, "Flow Matching for Generative
  Modeling"; Liu et al. 2023, rectified flow): x_t = (1 - t) x0 + t eps, the transformer predicts
  v = eps - x0 at timestep 1000 t, MSE; t from SD3's logit-normal distribution
  (t = sigmoid(n), n ~ N(0, 1)), 10% empty captions so classifier-free guidance works (Ho & Salimans
  2022), AdamW with warm-up, grad-norm clip 1, EMA of the transformer (what gets exported).
- the shift (written to the scheduler config, used only at sampling time): --shift; how it was
  chosen is in docs/builtin-model.md.

Time-budgeted, checkpointed every few minutes to --work-dir and resumable (--resume); each
checkpoint exports the pipeline folder to a sibling of --out that then replaces it, so --out is
never half-written. Runs on the CPU (--bf16 autocasts the forward passes) or on CUDA when present.

    nice -n 5 python scripts/train_builtin_flow.py --bf16 --threads 2 --minutes 90
    nice -n 5 python scripts/train_builtin_flow.py --resume --bf16 --threads 2 --minutes 30
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
)
from torch import Tensor
from torch.nn import functional as F
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]
from prepare_builtin_data import load as load_data  # noqa: E402
from training import append_loss, swap_in, update_ema  # noqa: E402

from pipeline.zero_tokens import CollapsedZerosAttention  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BUILTIN = ROOT / "assets" / "builtin"
HIDDEN_2 = 64  # the second (new, small) CLIP encoder's width
T5_TOKENS = 256  # without T5, StableDiffusion3Pipeline appends this many zero tokens (max_sequence_length);
# training runs them as one (pipeline.zero_tokens.CollapsedZerosAttention), as the app's engine does


def text_encoders(tok: CLIPTokenizer) -> tuple[CLIPTextModelWithProjection, CLIPTextModelWithProjection]:
    """Encoder 1: the built-in model's CLIP text transformer plus a new projection; encoder 2: small, new."""
    base = CLIPTextModel.from_pretrained(BUILTIN / "text_encoder")
    te1 = CLIPTextModelWithProjection(base.config)
    te1.text_model.load_state_dict(base.state_dict())
    small = {"hidden_size": HIDDEN_2, "intermediate_size": 4 * HIDDEN_2, "num_hidden_layers": 2,
             "num_attention_heads": 2, "projection_dim": HIDDEN_2}
    cfg = base.config.to_dict() | small
    return te1, CLIPTextModelWithProjection(CLIPTextConfig(**cfg))


def transformer(layers: int, heads: int, pooled: int, joint: int) -> SD3Transformer2DModel:
    """MM-DiT on 16x16x4 latents, patch 2 (64 tokens), width 32 x heads, qk RMS norm (SD3.5)."""
    return SD3Transformer2DModel(
        sample_size=16, patch_size=2, in_channels=4, out_channels=4, num_layers=layers,
        attention_head_dim=32, num_attention_heads=heads, joint_attention_dim=joint,
        caption_projection_dim=32 * heads, pooled_projection_dim=pooled, pos_embed_max_size=16,
        qk_norm="rms_norm")


AUGMENT_SHIFT_PX = 4  # one latent pixel


def augmented(pixels: Tensor) -> Tensor:
    """Every picture mirrored and/or moved by AUGMENT_SHIFT_PX in x and y (white fills the gap):
    17 variants per picture, variant-major, the picture itself not included."""
    pad = AUGMENT_SHIFT_PX
    padded = {flip: F.pad(pixels.flip(-1) if flip else pixels, (pad,) * 4, value=1.0)
              for flip in (False, True)}
    size = pixels.shape[-1]
    out = [padded[flip][..., pad + dy:pad + dy + size, pad + dx:pad + dx + size]
           for flip in (False, True) for dy in (-pad, 0, pad) for dx in (-pad, 0, pad)
           if (flip, dy, dx) != (False, 0, 0)]
    return torch.cat(out)


def _device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


class FlowTrainer:
    """Models, optimiser and state of one run; encodes prompts exactly as StableDiffusion3Pipeline does."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.dev = args, _device()
        self.work = Path(args.work_dir)
        self.work.mkdir(parents=True, exist_ok=True)
        images, self.captions = load_data()
        pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1)
        self.tok = CLIPTokenizer.from_pretrained(BUILTIN / "tokenizer")
        torch.manual_seed(args.seed)
        self.vae = AutoencoderKL.from_pretrained(BUILTIN / "vae").requires_grad_(False).eval()
        self.te1, self.te2 = (m.to(self.dev) for m in text_encoders(self.tok))
        joint = self.te1.config.hidden_size + self.te2.config.hidden_size
        pooled = self.te1.config.projection_dim + self.te2.config.projection_dim
        self.dit = transformer(args.layers, args.heads, pooled, joint).to(self.dev)
        self.ema = copy.deepcopy(self.dit).requires_grad_(False)
        self.opt = torch.optim.AdamW([
            {"params": list(self.dit.parameters()), "lr": args.lr},
            {"params": [*self.te1.parameters(), *self.te2.parameters()], "lr": args.lr * args.te_lr_scale},
        ], weight_decay=0.01)
        self.state = {"step": 0, "seconds": 0.0}
        self.latents, self.shift_factor, self.scaling_factor = self.encode_images(pixels)
        # SD3's latent normalisation, in the exported VAE's config (encoding does not read it)
        self.vae.register_to_config(shift_factor=self.shift_factor, scaling_factor=self.scaling_factor)
        if args.augment:
            self.latents = torch.cat([self.latents, self.encode_images(augmented(pixels))[0]], dim=1)
        self.ids = self.tokens(self.captions)
        self.empty = self.tokens([""])[0]

    @torch.no_grad()
    def encode_images(self, pixels: Tensor) -> tuple[Tensor, float, float]:
        """Posterior means and stds of every image, and SD3-style shift / scaling factors from them."""
        means, stds = [], []
        for chunk in pixels.split(128):
            dist = self.vae.encode(chunk).latent_dist
            means.append(dist.mean)
            stds.append(dist.std)
        mean, std = torch.cat(means), torch.cat(stds)
        shift = float(mean.mean())
        scale = float(1.0 / (mean - shift).std())
        return torch.stack([mean, std]).to(self.dev), shift, scale

    def tokens(self, texts: list[str]) -> Tensor:
        return self.tok(texts, padding="max_length", max_length=self.tok.model_max_length, truncation=True,
                        return_tensors="pt").input_ids.to(self.dev)

    def encode(self, ids: Tensor, zeros: int = T5_TOKENS) -> tuple[Tensor, Tensor]:
        """(prompt_embeds, pooled) as StableDiffusion3Pipeline.encode_prompt builds them without T5:
        each CLIP's penultimate hidden states side by side, zero-padded to the joint width, followed by
        T5_TOKENS zero tokens (the pipeline's default max_sequence_length; `zeros` of them here, see
        CollapsedZerosAttention); pooled = both projections side by side."""
        out1 = self.te1(ids, output_hidden_states=True)
        out2 = self.te2(ids, output_hidden_states=True)
        clip = torch.cat([out1.hidden_states[-2], out2.hidden_states[-2]], dim=-1)
        embeds = torch.cat([clip, clip.new_zeros(clip.shape[0], zeros, clip.shape[2])], dim=1)
        return embeds, torch.cat([out1.text_embeds, out2.text_embeds], dim=-1)

    def autocast(self):
        return torch.autocast(self.dev.type, dtype=torch.bfloat16, enabled=self.args.bf16)

    # -------------------------------------------------------------- checkpoints

    @property
    def ckpt(self) -> Path:
        return self.work / "checkpoint.pt"

    def save(self) -> None:
        blob = {"te1": self.te1.state_dict(), "te2": self.te2.state_dict(), "dit": self.dit.state_dict(),
                "ema": self.ema.state_dict(), "opt": self.opt.state_dict(), "state": self.state}
        torch.save(blob, self.ckpt.with_suffix(".tmp"))
        self.ckpt.with_suffix(".tmp").replace(self.ckpt)
        self.export()
        print(f"checkpoint {self.state}", flush=True)

    def load(self) -> None:
        blob = torch.load(self.ckpt, map_location=self.dev, weights_only=False)
        for name in ("te1", "te2", "dit", "ema", "opt"):
            getattr(self, name).load_state_dict(blob[name])
        self.state = blob["state"]

    def pipeline(self) -> StableDiffusion3Pipeline:
        return StableDiffusion3Pipeline(
            transformer=self.ema, scheduler=FlowMatchEulerDiscreteScheduler(shift=self.args.shift),
            vae=self.vae,
            text_encoder=self.te1, tokenizer=self.tok, text_encoder_2=self.te2, tokenizer_2=self.tok,
            text_encoder_3=None, tokenizer_3=None)

    def export(self) -> None:
        """Write the StableDiffusion3Pipeline folder (EMA transformer, safetensors), swap it into --out."""
        pipe = self.pipeline()
        swap_in(Path(self.args.out), lambda folder: pipe.save_pretrained(folder, safe_serialization=True))

    @torch.no_grad()
    def check_encoding(self) -> None:
        """The training-time prompt encoding must be the pipeline's own, or sampling sees other inputs."""
        ids = self.tokens(self.captions[:3] + [""])
        mine, pooled = self.encode(ids)
        theirs, _, their_pooled, _ = self.pipeline().encode_prompt(
            prompt=self.captions[:3] + [""], prompt_2=None, prompt_3=None, do_classifier_free_guidance=False,
            device=self.dev)
        assert torch.allclose(mine, theirs, atol=1e-5) and torch.allclose(pooled, their_pooled, atol=1e-5)

    @torch.no_grad()
    def collapse_zeros(self) -> None:
        """Give the training transformer CollapsedZerosAttention, checking that on one zero token it
        computes what diffusers' processor computes on the pipeline's full sequence."""
        ids = self.tokens(self.captions[:4])
        x = torch.randn(4, 4, 16, 16, device=self.dev)
        t = torch.tensor([50.0, 300.0, 700.0, 990.0], device=self.dev)
        full_embeds, pooled = self.encode(ids)
        full = self.dit(hidden_states=x, encoder_hidden_states=full_embeds, pooled_projections=pooled,
                        timestep=t).sample
        self.dit.set_attn_processor(CollapsedZerosAttention(T5_TOKENS))
        embeds, _ = self.encode(ids, zeros=1)
        short = self.dit(hidden_states=x, encoder_hidden_states=embeds, pooled_projections=pooled,
                         timestep=t).sample
        assert torch.allclose(full, short, atol=1e-4), (full - short).abs().max()

    # -------------------------------------------------------------- training

    def step(self) -> float:
        """One flow-matching step: logit-normal t, v = eps - x0 target, 10% empty captions."""
        idx = torch.randint(0, len(self.captions), (self.args.batch,), device=self.dev)
        variant = torch.randint(0, self.latents.shape[1] // len(self.captions), idx.shape, device=self.dev)
        pick = variant * len(self.captions) + idx  # variant 0 is the picture itself
        mean, std = self.latents[0][pick], self.latents[1][pick]
        x0 = (mean + std * torch.randn_like(std) - self.shift_factor) * self.scaling_factor
        ids = self.ids[idx].clone()
        ids[torch.rand(len(idx), device=self.dev) < self.args.caption_dropout] = self.empty
        t = torch.sigmoid(torch.randn(len(idx), device=self.dev))
        eps = torch.randn_like(x0)
        xt = (1 - t.view(-1, 1, 1, 1)) * x0 + t.view(-1, 1, 1, 1) * eps
        with self.autocast():
            embeds, pooled = self.encode(ids, zeros=1)
            pred = self.dit(hidden_states=xt, encoder_hidden_states=embeds, pooled_projections=pooled,
                            timestep=t * 1000).sample.float()
        loss = (pred - (eps - x0)).pow(2).mean()
        warm = min(1.0, (self.state["step"] + 1) / 200)
        bases = (self.args.lr, self.args.lr * self.args.te_lr_scale)
        for group, base in zip(self.opt.param_groups, bases, strict=True):
            group["lr"] = base * warm
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for g in self.opt.param_groups for p in g["params"]]
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        self.opt.step()
        update_ema(self.ema, self.dit, self.state["step"], self.args.ema)
        return loss.item()


    def run(self) -> None:
        """Train for this run's minutes (or steps), checkpointing every --checkpoint-minutes."""
        self.check_encoding()
        self.collapse_zeros()
        self.dit.train()
        self.te1.train()
        self.te2.train()
        budget = self.state["seconds"] + 60 * self.args.minutes
        max_steps = self.state["step"] + self.args.steps
        start, base_s, last_ckpt, losses = time.time(), self.state["seconds"], time.time(), []
        while self.state["seconds"] < budget and self.state["step"] < max_steps:
            losses.append(self.step())
            self.state["step"] += 1
            self.state["seconds"] = base_s + time.time() - start
            if self.state["step"] % 20 == 0:
                mean = sum(losses) / len(losses)
                append_loss(self.work / "loss.csv", "flow", self.state["step"], mean, self.state["seconds"])
                print(f"step {self.state['step']} loss {mean:.4f} {self.state['seconds']:.0f}s", flush=True)
                losses = []
            if time.time() - last_ckpt > 60 * self.args.checkpoint_minutes:
                self.save()
                last_ckpt = time.time()
        self.save()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Train the built-in flow model (SD3 layout) on emoji.")
    p.add_argument("--out", default=str(ROOT / "assets" / "builtin-flow"))
    p.add_argument("--work-dir", default=str(Path.home() / ".cache" / "sampler-grid" / "builtin-flow-train"))
    p.add_argument("--resume", action="store_true", help="continue from WORK_DIR/checkpoint.pt")
    p.add_argument("--minutes", type=float, default=60.0, help="training budget (more on --resume)")
    p.add_argument("--steps", type=int, default=10**9, help="step budget (more on --resume)")
    p.add_argument("--checkpoint-minutes", type=float, default=5.0)
    p.add_argument("--layers", type=int, default=5)
    p.add_argument("--heads", type=int, default=6, help="attention heads of width 32")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--te-lr-scale", type=float, default=0.5, help="text encoders' lr relative to --lr")
    p.add_argument("--ema", type=float, default=0.995)
    p.add_argument("--caption-dropout", type=float, default=0.1)
    p.add_argument("--shift", type=float, default=1.0, help="sampling-time shift written to the scheduler")
    p.add_argument("--augment", action="store_true",
                   help="also train on mirrored and shifted copies, so a caption has more than one picture "
                        "and the seed picks among them")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the forward passes")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    trainer = FlowTrainer(args)
    if args.resume and trainer.ckpt.is_file():
        trainer.load()
    n = sum(p.numel() for p in trainer.dit.parameters())
    print(f"device {trainer.dev}, {len(trainer.captions)} images, transformer {n / 1e6:.2f}M params, "
          f"shift_factor {trainer.shift_factor:.4f}, scaling_factor {trainer.scaling_factor:.4f}, "
          f"state {trainer.state}", flush=True)
    trainer.run()


if __name__ == "__main__":
    main()
