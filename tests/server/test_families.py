"""Model families through one code path: random-weight pipelines with the real architectures of
SD 1.x, SD 2.x (ε- and v-prediction), SD-Turbo, SDXL and SDXL-Turbo — the same block layout,
layers per block, transformer depths, head counts, linear or convolutional attention projections,
text encoders (SDXL: two, pooled projection, size/crop ids) and schedulers as the released models —
at reduced widths (channels ÷ 8; SD text width 64, SDXL's encoders 768 ÷ 8 and 1280 ÷ 8; two text
encoder layers; stated so CPU tests stay in seconds), saved as diffusers folders and loaded with
``load_model``: layer listing, every bend kind, and batched frames equal to frames rendered alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bendbridge.protocol.plan import BendPlan
from bendbridge.protocol.render import RenderSettings
from bendbridge.server.model import EMBEDDED_MODEL, load_model
from bendbridge.server.render import FrameSpec, RenderConfig, Renderer

CROSS_ATTENTION_DOWN = ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",)
CROSS_ATTENTION_UP = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3

#: the released models' U-Net architecture, widths ÷ 8 (SD 1.x: 8 heads everywhere and conv
#: projections; SD 2.x: 5/10/20/20 heads of 64 channels, linear projections, 1024-wide text)
FAMILIES = {
    "sd1": dict(heads=8, linear=False, prediction="epsilon", scheduler="PNDMScheduler", spacing="leading"),
    "sd2-base": dict(heads=(5, 10, 20, 20), linear=True, prediction="epsilon", scheduler="DDIMScheduler",
                     spacing="leading"),
    "sd2-v": dict(heads=(5, 10, 20, 20), linear=True, prediction="v_prediction", scheduler="DDIMScheduler",
                  spacing="leading"),
    "sd-turbo": dict(heads=(5, 10, 20, 20), linear=True, prediction="epsilon", scheduler="EulerDiscreteScheduler",
                     spacing="trailing"),
    "sdxl": dict(prediction="epsilon", scheduler="EulerDiscreteScheduler", spacing="leading"),
    "sdxl-turbo": dict(prediction="epsilon", scheduler="EulerAncestralDiscreteScheduler", spacing="trailing"),
}  # fmt: skip
XL = ("sdxl", "sdxl-turbo")


def build(family: str, folder):
    if family in XL:
        return build_xl(family, folder)
    import diffusers
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    f = FAMILIES[family]
    torch.manual_seed(0)
    heads = f["heads"]
    widths = (40, 80, 160, 160)  # 320/640/1280/1280 ÷ 8
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=widths,
        down_block_types=CROSS_ATTENTION_DOWN, up_block_types=CROSS_ATTENTION_UP, cross_attention_dim=64,
        attention_head_dim=heads, use_linear_projection=f["linear"], norm_num_groups=8,
    )  # fmt: skip
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(16, 32, 64, 64), layers_per_block=1,
        norm_num_groups=8, sample_size=64,
    )  # fmt: skip
    tok = CLIPTokenizer.from_pretrained(EMBEDDED_MODEL / "tokenizer")
    text = CLIPTextModel(
        CLIPTextConfig(vocab_size=49408, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, max_position_embeddings=tok.model_max_length)
    )  # fmt: skip
    extra = {"skip_prk_steps": True, "set_alpha_to_one": False} if f["scheduler"] == "PNDMScheduler" else {}
    scheduler = getattr(diffusers, f["scheduler"])(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        prediction_type=f["prediction"],
        timestep_spacing=f["spacing"],
        steps_offset=1,
        **extra,
    )  # fmt: skip  (SD 1.5's own scheduler config: PNDM without the Runge-Kutta warm-up steps)
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text, tokenizer=tok, unet=unet, scheduler=scheduler, safety_checker=None,
        feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    pipe.save_pretrained(folder)
    return folder


def build_xl(family: str, folder):
    """SDXL's architecture ÷ 8: three levels (no attention at the first; 1, 2 and 10 transformer
    layers; 5/10/20 heads), CLIP-L and OpenCLIP-bigG-shaped text encoders side by side, the second's
    pooled projection and 6 size/crop ids of 256 ÷ 8 channels each as added conditioning."""
    import diffusers
    from diffusers import AutoencoderKL, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    f = FAMILIES[family]
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(40, 80, 160),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), use_linear_projection=True,
        cross_attention_dim=96 + 160, addition_embed_type="text_time", addition_time_embed_dim=32,
        projection_class_embeddings_input_dim=160 + 6 * 32, norm_num_groups=8,
    )  # fmt: skip
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(16, 32, 64, 64), layers_per_block=1,
        norm_num_groups=8, sample_size=64, scaling_factor=0.13025, force_upcast=True,
    )  # fmt: skip
    tok = CLIPTokenizer.from_pretrained(EMBEDDED_MODEL / "tokenizer")
    tok2 = CLIPTokenizer.from_pretrained(EMBEDDED_MODEL / "tokenizer", pad_token="!")
    common = dict(vocab_size=49408, intermediate_size=128, num_hidden_layers=2, max_position_embeddings=32)
    text = CLIPTextModel(CLIPTextConfig(hidden_size=96, num_attention_heads=4, **common))
    text2 = CLIPTextModelWithProjection(
        CLIPTextConfig(hidden_size=160, num_attention_heads=4, projection_dim=160, hidden_act="gelu", **common)
    )
    scheduler = getattr(diffusers, f["scheduler"])(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, prediction_type=f["prediction"],
        timestep_spacing=f["spacing"], steps_offset=1,
    )  # fmt: skip
    pipe = StableDiffusionXLPipeline(
        vae=vae, text_encoder=text, text_encoder_2=text2, tokenizer=tok, tokenizer_2=tok2, unet=unet,
        scheduler=scheduler, force_zeros_for_empty_prompt=True, add_watermarker=False,
    )  # fmt: skip
    pipe.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, tmp_path_factory):
    folder = build(request.param, tmp_path_factory.mktemp(request.param))
    return request.param, load_model(folder, "cpu"), folder


BENDS = [
    "rotate_plane:angle=0.8@latent:step=1",
    "multiply:factor=1.3@mid_block",
    "dilate:size=3@up_blocks.1:steps=0-1",
    "rotate:degrees=20@down_blocks.1.attentions.0",
    "weight:delta=1.5@text:word=red",
]


def test_bendbridge_layers_lists_each_familys_targets(family, capsys):
    from bendbridge.tools.cli import main

    name, _, folder = family
    assert main(["layers", "--model", str(folder), "--size", "64"]) == 0
    out = capsys.readouterr().out
    assert "latent:step=K" in out and "text[:word=W]" in out and "up_blocks.1.attentions.0" in out, name


def test_each_family_lists_its_layers_and_renders_every_bend_kind_batched_as_alone(family):
    name, model, _ = family
    assert model.pipe.scheduler.config.prediction_type == FAMILIES[name]["prediction"]
    plan = BendPlan.from_specs(BENDS)
    r = Renderer(model, RenderConfig(RenderSettings(("a red circle on a blue background",), steps=3, guidance=2.0,
                                                    width=64, height=64), plan))  # fmt: skip
    names = [layer.name for layer in r.layers]
    assert {"mid_block", "up_blocks.1", "down_blocks.1.attentions.0"} <= set(names)
    frames = [FrameSpec(seed=s, params={"rotate_plane": {"angle": a}}) for s, a in ((0, 0.0), (1, 0.8), (2, -0.4))]
    together = [f.image for f in r.render(frames)]
    alone = [r.render([f])[0].image for f in frames]
    for a, b in zip(together, alone):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    plain = Renderer(model, RenderConfig(RenderSettings(("a red circle on a blue background",), steps=3, guidance=2.0,
                                                        width=64, height=64)))  # fmt: skip
    unbent = plain.render([FrameSpec(seed=0)])[0].image
    assert np.abs(unbent.astype(int) - together[0].astype(int)).mean() > 0.5  # the plan bends it


def test_each_family_inverts_a_ddim_trajectory_and_moves_through_a_prompt_plane(family):
    from bendbridge.protocol.inversion import InversionSettings
    from bendbridge.server.render.inversion import invert

    name, model, _ = family
    settings = RenderSettings(("a red circle on a blue background",), steps=4, guidance=1.0, width=64, height=64)
    r = Renderer(model, RenderConfig(settings))
    start = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    clean = r.denoise([FrameSpec(start_latent=start[0], start_step=1)]).latents
    back = invert(r, clean, [FrameSpec()], InversionSettings(to_step=1, iterations=12))
    assert float((back - start).norm() / start.norm()) < 1e-2, name  # ε and v prediction alike
    prompts = ["a red circle", "a blue square", "a green star"]
    plane = BendPlan.from_dict(
        {"bend": [{"id": "move", "op": "pca_move", "target": "text", "params": {"prompts": prompts}}]}
    )
    moved = Renderer(model, RenderConfig(settings, plane))
    a, b = (moved.render([FrameSpec(params={"move": {"x": x, "y": 0.0}})])[0].image for x in (-1.0, 1.0))
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 0.1


def test_each_family_renders_unbent_what_the_diffusers_pipeline_renders(family):
    """Outside truth for the conditioning (SDXL: both encoders' penultimate states, the pooled
    projection, size ids, zeros for the empty negative prompt) and the sampling loop (ancestral
    step noise included): the family's own diffusers pipeline, given the same start noise and
    step-noise generator, draws the same picture."""
    from bendbridge.server.render.renderer import _STEP_NOISE_STREAM

    name, model, _ = family
    prompt = "a red circle on a blue background"
    r = Renderer(model, RenderConfig(RenderSettings((prompt,), steps=3, guidance=2.0, width=64, height=64, seed=5)))
    ours = r.render([FrameSpec(seed=5)])[0].image
    start = torch.randn(4, 8, 8, generator=torch.Generator().manual_seed(5))[None]
    theirs = model.pipe(
        prompt, num_inference_steps=3, guidance_scale=2.0, height=64, width=64, latents=start,
        generator=[torch.Generator().manual_seed(_STEP_NOISE_STREAM ^ 5)], output_type="np",
    ).images[0]  # fmt: skip
    theirs = np.round(theirs * 255).astype(int)
    assert np.abs(ours.astype(int) - theirs).max() <= 1, name


def test_each_family_shares_the_unbent_prefix_and_rows_without_changing_frames(family):
    name, model, _ = family
    settings = RenderSettings(("a red circle on a blue background",), steps=3, guidance=2.0, width=64, height=64)
    plan = BendPlan.from_specs(["multiply:factor=1.3@up_blocks.1:steps=1-2"])
    frames = [FrameSpec(seed=s, params={"multiply": {"factor": f}}) for s, f in ((0, 1.0), (0, 1.6), (1, 0.7))]
    shared = Renderer(model, RenderConfig(settings, plan, share_prefix=True))
    plain = Renderer(model, RenderConfig(settings, plan, share_prefix=False))
    a, b = shared.render(frames), plain.render(frames)
    for x, y in zip(a, b):
        assert np.abs(x.image.astype(int) - y.image.astype(int)).max() <= 1, name
    if FAMILIES[name]["scheduler"] in ("DDIMScheduler", "EulerDiscreteScheduler"):  # PNDM keeps history and
        assert shared.prefix.computed == 2, name  # ancestral Euler adds noise per sample: neither shares a prefix


@pytest.mark.parametrize("scheduler", ["euler-a", "lcm", "dpm"])
def test_stochastic_and_multistep_schedulers_render_batched_frames_as_alone_and_repeatably(scheduler, tmp_path):
    model = load_model(build("sd1", tmp_path / "sd1"), "cpu")
    settings = RenderSettings(("a red circle on a blue background",), steps=3, guidance=2.0, width=64, height=64)
    r = Renderer(model, RenderConfig(settings, BendPlan.from_specs(BENDS[:2]), scheduler=scheduler))
    frames = [FrameSpec(seed=s, params={"rotate_plane": {"angle": a}}) for s, a in ((0, 0.0), (1, 0.8), (0, 0.3))]
    together = [f.image for f in r.render(frames)]
    for f, image in zip(frames, together):
        alone = r.render([f])[0].image
        assert np.abs(alone.astype(int) - image.astype(int)).max() <= 1, scheduler
