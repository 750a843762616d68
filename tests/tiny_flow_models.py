"""Tiny random-weight rectified-flow models (SD3 / SD3.5 and Flux), built offline for tests.

Everything is made in code, as in tests/tiny_models.py: configs, seeded weights, the CLIP
byte-level BPE tokenizers (tiny_models' vocabulary) and a T5 Unigram tokenizer whose
vocabulary is listed here (transformers' T5Tokenizer accepts a (piece, score) list, so no
sentencepiece model file is needed). A 32x32-pixel image has 16x16 latents with 16 channels,
as the real models' VAEs have.

    tiny_sd3(tmp)                    StableDiffusion3Pipeline folder: CLIP-L/G-style encoders,
                                     T5, 16-channel VAE with shift_factor, shift-3 scheduler
    tiny_sd3(tmp, t5=False)          the same without T5 (diffusers feeds zeros in its place)
    tiny_sd3(tmp, sd35=True)         SD3.5-style transformer (qk RMS norm, dual attention layer)
    tiny_sd3(tmp, single_file=True)  the same with CLIP-L's projection the identity, as an SD3
                                     single-file checkpoint is read back (tests/single_file_checkpoints.py)
    tiny_flux(tmp)                   FluxPipeline folder, dev-style (guidance embedding),
                                     dynamic-shift scheduler
    tiny_flux(tmp, guidance=False)   schnell-style (no guidance embedding)

The transformers' timestep embeddings are scaled up (TIME_GAIN) so the output depends
strongly on the timestep: a test that feeds a wrong schedule or a wrong timestep then
fails visibly instead of passing by accident. Builders are idempotent per folder.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
)
from transformers import (
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
)

from tests.tiny_models import SEED, TEXT_HIDDEN, _text_config, _tokenizer

T5_HIDDEN = 48  # wider than the two CLIPs' 2 x 32, so SD3's zero padding of the CLIP half is exercised
TIME_GAIN = 30.0
SD3_SHIFT = 3.0
# The real models' VAE latent normalisation (SD3: vae/config.json of SD3-medium; Flux: FLUX.1-dev).
SD3_VAE = {"scaling_factor": 1.5305, "shift_factor": 0.0609}
FLUX_VAE = {"scaling_factor": 0.3611, "shift_factor": 0.1159}
_WORDS = ["a", "the", "cat", "dog", "red", "blue", "photo", "of", "on", "in", "tree", "sky", "sun"]


def t5_tokenizer() -> T5Tokenizer:
    """A T5 Unigram tokenizer: pad 0, eos 1, unk 2 (T5's ids), a few whole words, single letters."""
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [("\u2581" + w, -1.0 - 0.1 * i) for i, w in enumerate(_WORDS)]
    letters = "abcdefghijklmnopqrstuvwxyz0123456789,.!?'-"
    vocab += [(c, -5.0) for c in letters] + [("\u2581" + c, -4.0) for c in letters]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def _t5(tok: T5Tokenizer, d_model: int = T5_HIDDEN) -> T5EncoderModel:
    return T5EncoderModel(T5Config(
        vocab_size=len(tok), d_model=d_model, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
        decoder_start_token_id=0, feed_forward_proj="gated-gelu", is_encoder_decoder=False))


def _vae(latent_norm: dict[str, float]) -> AutoencoderKL:
    # Two levels (scale factor 2): 32x32 px <-> 16x16 latents. SD3 and Flux VAEs have no quant convs.
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(32, 64),
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1, norm_num_groups=32, sample_size=32, use_quant_conv=False,
        use_post_quant_conv=False, **latent_norm)


def _amplify_time(embedder: torch.nn.Module) -> None:
    """Scale the timestep MLP's first layer so the conditioning swings with the timestep."""
    with torch.no_grad():
        embedder.linear_1.weight.mul_(TIME_GAIN)


def _sd3_clips(tok: CLIPTokenizer, tok_2: CLIPTokenizer,
               single_file: bool) -> tuple[CLIPTextModelWithProjection, CLIPTextModelWithProjection]:
    """SD3's CLIP-L and CLIP-G; single_file: CLIP-L's projection the identity, as diffusers' single-file
    loader sets it (SD3's reference code does not project CLIP-L's pooled output, so its files hold none)."""
    clip_l = CLIPTextModelWithProjection(_text_config(tok))
    clip_g = CLIPTextModelWithProjection(_text_config(tok_2))
    if single_file:
        with torch.no_grad():
            clip_l.text_projection.weight.copy_(torch.eye(TEXT_HIDDEN))
    return clip_l, clip_g


def tiny_sd3(tmp_path: Path, *, t5: bool = True, sd35: bool = False, single_file: bool = False) -> Path:
    """A tiny StableDiffusion3Pipeline folder (see the module docstring)."""
    name = ("tiny-sd35" if sd35 else "tiny-sd3") + ("-sf" if single_file else "")
    folder = Path(tmp_path) / (name if t5 else f"{name}-no-t5")
    if (folder / "model_index.json").is_file():
        return folder
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        tok, tok_2 = _tokenizer(Path(tmp_path)), _tokenizer(Path(tmp_path), pad_token="!")
        tok_3 = t5_tokenizer()
        transformer = SD3Transformer2DModel(
            sample_size=16, patch_size=2, in_channels=16, out_channels=16, num_layers=2,
            attention_head_dim=8, num_attention_heads=4, joint_attention_dim=T5_HIDDEN,
            caption_projection_dim=32, pooled_projection_dim=2 * TEXT_HIDDEN, pos_embed_max_size=16,
            **({"qk_norm": "rms_norm", "dual_attention_layers": (0,)} if sd35 else {}))
        _amplify_time(transformer.time_text_embed.timestep_embedder)
        scheduler, vae = FlowMatchEulerDiscreteScheduler(shift=SD3_SHIFT), _vae(SD3_VAE)
        clip_l, clip_g = _sd3_clips(tok, tok_2, single_file)  # made in this order: same weights as before
        pipe = StableDiffusion3Pipeline(
            transformer=transformer, scheduler=scheduler, vae=vae, text_encoder=clip_l, tokenizer=tok,
            text_encoder_2=clip_g, tokenizer_2=tok_2, text_encoder_3=_t5(tok_3) if t5 else None,
            tokenizer_3=tok_3 if t5 else None)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def flux_scheduler() -> FlowMatchEulerDiscreteScheduler:
    """FLUX.1's scheduler config: resolution-dependent (dynamic) shift between 0.5 and 1.15."""
    return FlowMatchEulerDiscreteScheduler(
        shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
        base_image_seq_len=256, max_image_seq_len=4096)


def tiny_flux(tmp_path: Path, *, guidance: bool = True) -> Path:
    """A tiny FluxPipeline folder: dev-style with a guidance embedding, or schnell-style without."""
    folder = Path(tmp_path) / ("tiny-flux-dev" if guidance else "tiny-flux-schnell")
    if (folder / "model_index.json").is_file():
        return folder
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        tok, tok_2 = _tokenizer(Path(tmp_path)), t5_tokenizer()
        transformer = FluxTransformer2DModel(
            patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=16,
            num_attention_heads=2, joint_attention_dim=T5_HIDDEN, pooled_projection_dim=TEXT_HIDDEN,
            guidance_embeds=guidance, axes_dims_rope=(4, 6, 6))
        _amplify_time(transformer.time_text_embed.timestep_embedder)
        if guidance:
            _amplify_time(transformer.time_text_embed.guidance_embedder)
        pipe = FluxPipeline(
            scheduler=flux_scheduler(), vae=_vae(FLUX_VAE), text_encoder=CLIPTextModel(_text_config(tok)),
            tokenizer=tok, text_encoder_2=_t5(tok_2), tokenizer_2=tok_2, transformer=transformer)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder
