"""Train the built-in model: a tiny Stable Diffusion 1.x-layout latent diffusion model on emoji.

A latent diffusion model (Rombach et al. 2022, "High-Resolution Image Synthesis with Latent
Diffusion Models", CVPR) at toy scale: a KL autoencoder 64x64x3 -> 16x16x4 (f=4), a small CLIP
text transformer (Radford et al. 2021) with a BPE vocabulary learnt from the training captions,
and a UNet with cross-attention at 8x8 and 4x4. The noise schedule is SD 1.x's own
(scaled_linear 0.00085..0.012, 1000 steps, epsilon), so every sampler sees SD's training sigmas.

Two phases, each with a time budget, checkpointed every few minutes and resumable (--resume):
  1. the VAE: L1 + L2 reconstruction plus a small KL term; a resumed run given --vae-minutes goes
     back to this phase, then re-encodes the latents (new scaling factor) and fine-tunes the UNet
     on them;
  2. UNet and text encoder jointly: epsilon-prediction loss (Ho et al. 2020) on VAE latents scaled
     to unit variance, Min-SNR-5 loss weights (Hang et al. 2023), 10% of captions dropped to the
     empty prompt so classifier-free guidance works (Ho & Salimans 2022), AdamW, EMA of the UNet.
After each checkpoint the pipeline folder is written with save_pretrained(safe_serialization=True)
to a sibling folder that then replaces --out, so --out is never half-written.

    nice -n 19 python scripts/train_builtin.py --vae-minutes 10 --minutes 50
    nice -n 19 python scripts/train_builtin.py --resume --minutes 30     # train 30 more minutes
    nice -n 19 python scripts/train_builtin.py --resume --vae-minutes 15 --minutes 60  # VAE, then UNet
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch
from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from torch import Tensor
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prepare_builtin_data import load as load_data  # noqa: E402
from training import append_loss, swap_in, update_ema  # noqa: E402

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MAX_TOKENS = 24  # longest caption is 12 tokens with BOS/EOS; SD pipelines pad to this
TEXT_HIDDEN = 192
BPE_VOCAB = 2048


def _byte_unicode() -> list[str]:
    """CLIP's reversible byte -> printable unicode table (256 entries), as transformers builds it."""
    table = bytes_to_unicode()
    return [table[b] for b in range(256)]


def learn_merges(captions: list[str], vocab_size: int = BPE_VOCAB) -> list[tuple[str, str]]:
    """BPE merges (Sennrich et al. 2016) learnt from the captions, CLIP-style "</w>" word ends."""
    bpe = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, end_of_word_suffix="</w>",
                                  show_progress=False, initial_alphabet=list("abcdefghijklmnopqrstuvwxyz"))
    bpe.train_from_iterator([c.lower() for c in captions], trainer)
    state = json.loads(bpe.to_str())["model"]["merges"]
    return [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in state]


def write_tokenizer(folder: Path, captions: list[str]) -> CLIPTokenizer:
    """A CLIPTokenizer whose vocabulary is CLIP's 512 byte symbols plus merges from the captions."""
    folder.mkdir(parents=True, exist_ok=True)
    merges = learn_merges(captions)
    base = _byte_unicode()
    tokens = base + [c + "</w>" for c in base]
    seen = set(tokens)
    for a, b in merges:
        if a + b not in seen:
            tokens.append(a + b)
            seen.add(a + b)
    tokens += [BOS, EOS]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}), encoding="utf-8")
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return CLIPTokenizer.from_pretrained(str(folder), model_max_length=MAX_TOKENS, pad_token=EOS)


def text_encoder(tok: CLIPTokenizer) -> CLIPTextModel:
    """A 3-layer CLIP text transformer; bos/eos ids are the tokenizer's (CLIP pools at eos)."""
    return CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tok), hidden_size=TEXT_HIDDEN, intermediate_size=4 * TEXT_HIDDEN,
        num_hidden_layers=3, num_attention_heads=4, max_position_embeddings=MAX_TOKENS,
        projection_dim=TEXT_HIDDEN, bos_token_id=tok.convert_tokens_to_ids(BOS),
        eos_token_id=tok.convert_tokens_to_ids(EOS), pad_token_id=tok.convert_tokens_to_ids(EOS),
        hidden_act="quick_gelu"))


def vae() -> AutoencoderKL:
    """KL autoencoder, three levels (two downsamples): 64x64x3 pixels <-> 16x16x4 latents."""
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32, 64),
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        layers_per_block=1, norm_num_groups=8, sample_size=64, force_upcast=False)


def unet() -> UNet2DConditionModel:
    """UNet on 16x16x4 latents: levels 16/8/4 with 64/128/128 channels, cross-attention at 8 and 4."""
    return UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(64, 128, 128),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_HIDDEN, attention_head_dim=4, norm_num_groups=32)


def scheduler() -> EulerDiscreteScheduler:
    """Stable Diffusion 1.x's training noise schedule (DDPM, Ho et al. 2020), epsilon prediction."""
    return EulerDiscreteScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        steps_offset=1, timestep_spacing="leading", prediction_type="epsilon")


# ------------------------------------------------------------------ training


def _device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


class Trainer:
    """Holds the models, optimisers and state of one training run; checkpoints and exports it."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.dev = _device()
        self.work = Path(args.work_dir)
        self.work.mkdir(parents=True, exist_ok=True)
        images, self.captions = load_data()
        self.pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1)
        self.tok = self._tokenizer()
        torch.manual_seed(args.seed)
        self.vae, self.te = vae().to(self.dev), text_encoder(self.tok).to(self.dev)
        self.unet = unet().to(self.dev)
        self.ema = copy.deepcopy(self.unet).requires_grad_(False)
        self.vae_opt = torch.optim.AdamW(self.vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
        params = list(self.unet.parameters()) + list(self.te.parameters())
        self.opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
        self.state = {"phase": "vae", "vae_step": 0, "step": 0, "vae_seconds": 0.0, "seconds": 0.0,
                      "scaling_factor": 1.0}
        self.latents: Tensor | None = None
        alphas = scheduler().alphas_cumprod
        self.alphas = alphas.to(self.dev)
        self.ids = self.tokens(self.captions)
        self.empty = self.tokens([""])[0]

    def _tokenizer(self) -> CLIPTokenizer:
        """A resumed run keeps its vocabulary (the text encoder's embeddings depend on it)."""
        folder = self.work / "tokenizer"
        if self.args.resume and (folder / "vocab.json").is_file():
            return CLIPTokenizer.from_pretrained(str(folder), model_max_length=MAX_TOKENS, pad_token=EOS)
        return write_tokenizer(folder, self.captions)

    def autocast(self):
        """bfloat16 autocast when --bf16 (about 1.3x faster on CPUs with AVX512-BF16), else a no-op."""
        return torch.autocast(self.dev.type, dtype=torch.bfloat16, enabled=self.args.bf16)

    def tokens(self, texts: list[str]) -> Tensor:
        return self.tok(texts, padding="max_length", max_length=MAX_TOKENS, truncation=True,
                        return_tensors="pt").input_ids.to(self.dev)

    # -------------------------------------------------------------- checkpoints

    @property
    def ckpt(self) -> Path:
        return self.work / "checkpoint.pt"

    def save(self) -> None:
        blob = {"vae": self.vae.state_dict(), "te": self.te.state_dict(), "unet": self.unet.state_dict(),
                "ema": self.ema.state_dict(), "vae_opt": self.vae_opt.state_dict(),
                "opt": self.opt.state_dict(), "state": self.state}
        torch.save(blob, self.ckpt.with_suffix(".tmp"))
        self.ckpt.with_suffix(".tmp").replace(self.ckpt)
        if self.state["phase"] == "unet":
            self.export()
        print(f"checkpoint {self.state}", flush=True)

    def load(self) -> None:
        blob = torch.load(self.ckpt, map_location=self.dev, weights_only=False)
        for name in ("vae", "te", "unet", "ema", "vae_opt", "opt"):
            getattr(self, name).load_state_dict(blob[name])
        self.state = blob["state"]

    def export(self) -> None:
        """Write the StableDiffusionPipeline folder (EMA UNet), safetensors only, then swap it into --out."""
        self.vae.register_to_config(scaling_factor=float(self.state["scaling_factor"]))
        pipe = StableDiffusionPipeline(
            vae=self.vae, text_encoder=self.te, tokenizer=self.tok, unet=self.ema, scheduler=scheduler(),
            safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        swap_in(Path(self.args.out), lambda folder: pipe.save_pretrained(folder, safe_serialization=True))

    # -------------------------------------------------------------- loops

    def _loop(self, phase: str, budget_s: float, max_steps: int, step_fn) -> None:
        """Run step_fn until the phase's time or step budget is spent; checkpoint periodically."""
        key_step, key_s = ("vae_step", "vae_seconds") if phase == "vae" else ("step", "seconds")
        start, last_ckpt, losses = time.time(), time.time(), []
        base_s = self.state[key_s]
        while self.state[key_s] < budget_s and self.state[key_step] < max_steps:
            losses.append(step_fn())
            self.state[key_step] += 1
            self.state[key_s] = base_s + time.time() - start
            if self.state[key_step] % 20 == 0:
                append_loss(self.work / "loss.csv", phase, self.state[key_step], sum(losses) / len(losses),
                            self.state[key_s])
                print(f"{phase} {self.state[key_step]} loss {sum(losses) / len(losses):.4f} "
                      f"{self.state[key_s]:.0f}s", flush=True)
                losses = []
            if time.time() - last_ckpt > 60 * self.args.checkpoint_minutes:
                self.save()
                last_ckpt = time.time()

    def vae_step(self) -> float:
        """One VAE step: L1 + L2 reconstruction and a small KL to N(0, I) (Kingma & Welling 2014)."""
        idx = torch.randint(0, len(self.pixels), (self.args.vae_batch,))
        x = self.pixels[idx].to(self.dev)
        with self.autocast():
            post = self.vae.encode(x).latent_dist
            rec = self.vae.decode(post.sample()).sample.float()
        kl = post.kl().float().mean() / x[0].numel()
        loss = (rec - x).abs().mean() + (rec - x).pow(2).mean() + self.args.kl * kl
        self.vae_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.vae_opt.step()
        return loss.item()

    @torch.no_grad()
    def encode_all(self) -> None:
        """Cache every image's posterior mean and std; scaling_factor = 1 / std of the latents."""
        self.vae.eval()
        means, stds = [], []
        for chunk in self.pixels.split(128):
            dist = self.vae.encode(chunk.to(self.dev)).latent_dist
            means.append(dist.mean)
            stds.append(dist.std)
        self.latents = torch.stack([torch.cat(means), torch.cat(stds)])
        if self.state["phase"] == "vae":
            self.state["scaling_factor"] = float(1.0 / self.latents[0].std())
            self.state["phase"] = "unet"

    def unet_step(self) -> float:
        """One epsilon-prediction step with Min-SNR-5 weights and 10% empty captions."""
        idx = torch.randint(0, len(self.captions), (self.args.batch,), device=self.dev)
        mean, std = self.latents[0][idx], self.latents[1][idx]
        z0 = (mean + std * torch.randn_like(std)) * self.state["scaling_factor"]
        ids = self.ids[idx].clone()
        drop = torch.rand(len(idx), device=self.dev) < self.args.caption_dropout
        ids[drop] = self.empty
        t = torch.randint(0, 1000, (len(idx),), device=self.dev)
        a = self.alphas[t].view(-1, 1, 1, 1)
        eps = torch.randn_like(z0)
        zt = a.sqrt() * z0 + (1 - a).sqrt() * eps
        with self.autocast():
            pred = self.unet(zt, t, self.te(ids)[0]).sample.float()
        snr = a.flatten() / (1 - a.flatten())
        weight = snr.clamp(max=5.0) / snr
        loss = (weight * (pred - eps).pow(2).mean(dim=(1, 2, 3))).mean()
        lr = self.args.lr * min(1.0, (self.state["step"] + 1) / 200)
        for group in self.opt.param_groups:
            group["lr"] = lr
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(self.unet.parameters()) + list(self.te.parameters()), 1.0)
        self.opt.step()
        update_ema(self.ema, self.unet, self.state["step"], self.args.ema)
        return loss.item()


    def reopen_vae(self) -> None:
        """Go back to the VAE phase; its end re-encodes the latents and resets the scaling factor."""
        self.state["phase"] = "vae"

    def run(self) -> None:
        """Train the VAE (if in that phase), then the UNet, each for this run's minutes or steps."""
        if self.state["phase"] == "vae":
            self.vae.train()
            budget = self.state["vae_seconds"] + 60 * self.args.vae_minutes
            self._loop("vae", budget, self.state["vae_step"] + self.args.vae_steps, self.vae_step)
        self.encode_all()
        self.unet.train()
        self.te.train()
        budget = self.state["seconds"] + 60 * self.args.minutes
        self._loop("unet", budget, self.state["step"] + self.args.steps, self.unet_step)
        self.save()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Train the built-in emoji latent diffusion model.")
    p.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "assets" / "builtin"))
    p.add_argument("--work-dir", default=str(Path.home() / ".cache" / "sampler-grid" / "builtin-train"))
    p.add_argument("--resume", action="store_true", help="continue from WORK_DIR/checkpoint.pt")
    p.add_argument("--vae-minutes", type=float, default=None,
                   help="VAE phase budget (default 10; on --resume 0, and N > 0 retrains the VAE N more "
                        "minutes, then fine-tunes the UNet on the new latents)")
    p.add_argument("--vae-steps", type=int, default=10**9, help="VAE phase steps (more on --resume)")
    p.add_argument("--minutes", type=float, default=50.0, help="UNet phase budget (more on --resume)")
    p.add_argument("--steps", type=int, default=10**9, help="UNet phase steps (more on --resume)")
    p.add_argument("--checkpoint-minutes", type=float, default=4.0)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--vae-batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=4e-4)
    p.add_argument("--vae-lr", type=float, default=1e-3)
    p.add_argument("--kl", type=float, default=1e-3, help="weight of the KL per image pixel")
    p.add_argument("--ema", type=float, default=0.995)
    p.add_argument("--caption-dropout", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the forward passes")
    args = p.parse_args(argv)
    if args.vae_minutes is None:
        args.vae_minutes = 0.0 if args.resume else 10.0
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    trainer = Trainer(args)
    if args.resume and trainer.ckpt.is_file():
        trainer.load()
        if args.vae_minutes > 0:
            trainer.reopen_vae()
    print(f"device {trainer.dev}, {len(trainer.captions)} images, state {trainer.state}", flush=True)
    trainer.run()


if __name__ == "__main__":
    main()
