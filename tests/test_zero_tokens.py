"""SD3 without T5: the pipeline's 256 zero text tokens computed as one give the same output."""

from __future__ import annotations

import pytest
import torch
from diffusers import SD3Transformer2DModel

from pipeline.zero_tokens import CollapsedZerosAttention, collapsed, joint_attentions, trailing_zero_tokens


def test_trailing_zero_tokens_counts_the_run_of_all_zero_tokens_at_the_end():
    ctx = torch.randn(2, 10, 4)
    assert trailing_zero_tokens(ctx) == 0
    ctx[:, 6:] = 0
    assert trailing_zero_tokens(ctx) == 4
    ctx[1, 8, 2] = 1e-30  # one non-zero value in one row ends the run there
    assert trailing_zero_tokens(ctx) == 1
    ctx[:, 3, :] = 0  # zeros in the middle are not trailing
    assert trailing_zero_tokens(ctx) == 1
    assert trailing_zero_tokens(torch.zeros(1, 5, 3)) == 5


SD35 = {"qk_norm": "rms_norm", "dual_attention_layers": (0, 1)}  # SD3.5's extra image-only attention


def _transformer(sd35: bool) -> SD3Transformer2DModel:
    torch.manual_seed(0)
    return SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=4, out_channels=4, num_layers=3, attention_head_dim=8,
        num_attention_heads=4, joint_attention_dim=24, caption_projection_dim=32, pooled_projection_dim=16,
        pos_embed_max_size=8, **(SD35 if sd35 else {})).eval()


@pytest.mark.parametrize("sd35", [False, True])
@pytest.mark.parametrize("zeros", [2, 7, 256])
def test_one_token_counted_n_times_equals_n_zero_tokens(sd35, zeros):
    model = _transformer(sd35)
    x, pooled, t = torch.randn(3, 4, 8, 8), torch.randn(3, 16), torch.tensor([20.0, 500.0, 990.0])
    ctx = torch.cat([torch.randn(3, 5, 24), torch.zeros(3, zeros, 24)], dim=1)
    with torch.no_grad():
        full = model(hidden_states=x, encoder_hidden_states=ctx, pooled_projections=pooled, timestep=t).sample
        with collapsed(model, zeros):
            short = model(hidden_states=x, encoder_hidden_states=ctx[:, :6], pooled_projections=pooled,
                          timestep=t).sample
        wrong = model(hidden_states=x, encoder_hidden_states=ctx[:, :6], pooled_projections=pooled,
                      timestep=t).sample
    assert torch.allclose(full, short, atol=2e-5), (full - short).abs().max()
    assert (full - wrong).abs().max() > 1e-3  # dropping the zeros without the count is not the same


def test_the_processors_are_restored_even_when_the_call_fails():
    model = _transformer(False)
    before = [layer.processor for layer in joint_attentions(model)]
    with pytest.raises(RuntimeError), collapsed(model, 4):
        assert all(isinstance(layer.processor, CollapsedZerosAttention) for layer in joint_attentions(model))
        raise RuntimeError("the transformer failed")
    assert [layer.processor for layer in joint_attentions(model)] == before
