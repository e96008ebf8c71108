"""Stage II adapter: the decoupled cross-attention, scale 0 = the base model, and interop with
diffusers' IP-Adapter loading in both directions, on tiny random SD1.5- and SDXL-layout pipelines."""

import copy

import numpy as np
import pytest
import torch

from serialgen.models.ip_adapter import IPAdapter, cross_attention_layers
from serialgen.pipelines.personalize import PersonalizePipeline

from .tiny import TINY_UNET, tiny_image_encoder, tiny_sd_pipeline, tiny_sdxl_pipeline, tiny_tokenizer

PROMPTS = ["a girl with red hair waving on a beach", "a boy in a blue jacket running in a forest"]


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    return tiny_sd_pipeline(tiny_tokenizer(tmp_path_factory.mktemp("tok"), PROMPTS))


@pytest.fixture(scope="module")
def sdxl(tmp_path_factory):
    return tiny_sdxl_pipeline(tiny_tokenizer(tmp_path_factory.mktemp("tok"), PROMPTS))


def _reference():
    rng = np.random.default_rng(3)
    return rng.integers(0, 256, (96, 64, 3), dtype=np.uint8)


def _adapter(unet, clip_dim=24, seed=2):
    """A fresh adapter whose weights are moved off their initial values (so the image path matters)."""
    torch.manual_seed(seed)
    adapter = IPAdapter.for_unet(unet, clip_dim)
    with torch.no_grad():
        for p in adapter.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return adapter


def _noise(pipe, seed, index):
    """The initial noise PersonalizePipeline draws for image `index` of a series."""
    unet = pipe.unet
    h, w = unet.config.sample_size if not isinstance(unet.config.sample_size, int) else (unet.config.sample_size,) * 2
    g = torch.Generator().manual_seed(seed * 100_003 + index)
    return torch.randn((unet.config.in_channels, h, w), generator=g)[None]


def _as_float(images):
    return np.stack([np.asarray(im, dtype=np.float32) / 255 for im in images])


def test_to_k_ip_and_to_v_ip_start_as_the_text_projections(sd):
    adapter = IPAdapter.for_unet(sd.unet, clip_dim=24)
    layers = cross_attention_layers(sd.unet)
    assert len(layers) == len(adapter.to_k_ip) == 4  # down block 1 layer, mid block 1, up block 2
    for k, (_, attn) in enumerate(layers):
        assert torch.equal(adapter.to_k_ip[k].weight, attn.to_k.weight)
        assert torch.equal(adapter.to_v_ip[k].weight, attn.to_v.weight)
    tokens = adapter.tokens(torch.randn(2, 17, 24))
    assert tokens.shape == (2, 17, TINY_UNET.cross_attention_dim)
    assert torch.allclose(tokens.mean(-1), torch.zeros(2, 17), atol=1e-5)  # the projector ends in a LayerNorm


@pytest.mark.parametrize("kind", ["sd", "sdxl"])
def test_scale_zero_reproduces_the_base_model(kind, request):
    base = copy.deepcopy(request.getfixturevalue(kind))
    latents = torch.cat([_noise(base, 7, k) for k in range(2)])
    expected = base(PROMPTS, latents=latents, num_inference_steps=3, guidance_scale=4.0, height=192, width=128, output_type="np").images

    pipe = PersonalizePipeline(copy.deepcopy(base), tiny_image_encoder(), _adapter(base.unet))
    pipe.progress = False
    ours = pipe(_reference(), PROMPTS, num_inference_steps=3, guidance_scale=4.0, scale=0.0, seed=7)
    assert np.abs(_as_float(ours.images) - expected).max() <= 1.5 / 255
    adapted = pipe(_reference(), PROMPTS, num_inference_steps=3, guidance_scale=4.0, scale=1.0, seed=7)
    assert np.abs(_as_float(adapted.images) - expected).mean() > 0.01  # the image path is live at scale 1


def test_a_series_does_not_depend_on_batching(sd):
    pipe = PersonalizePipeline(copy.deepcopy(sd), tiny_image_encoder(), _adapter(sd.unet))
    pipe.progress = False
    prompts = PROMPTS + ["a girl with red hair, sad, front view"]
    together = pipe(_reference(), prompts, num_inference_steps=2, seed=5, batch_size=3).images
    apart = pipe(_reference(), prompts, num_inference_steps=2, seed=5, batch_size=2).images
    assert len(together) == 3
    assert np.abs(_as_float(together) - _as_float(apart)).max() <= 1.5 / 255
    other_seed = pipe(_reference(), prompts[:1], num_inference_steps=2, seed=6).images
    assert np.abs(_as_float(other_seed) - _as_float(together[:1])).mean() > 0.01


def test_a_reference_per_prompt_draws_each_prompt_as_its_own_series_would(sd):
    pipe = PersonalizePipeline(copy.deepcopy(sd), tiny_image_encoder(), _adapter(sd.unet))
    pipe.progress = False
    prompts = PROMPTS + ["a girl with red hair, sad, front view"]
    refs = [_reference(), 255 - _reference(), np.roll(_reference(), 20, 0)]
    together = pipe(refs, prompts, num_inference_steps=2, seed=5, batch_size=2).images
    for i, ref in enumerate(refs):
        alone = pipe(ref, prompts[i:i + 1], num_inference_steps=2, seed=5, first_index=i).images
        assert np.abs(_as_float(alone) - _as_float(together[i:i + 1])).max() <= 1.5 / 255, i
    shared = pipe(refs[0], prompts, num_inference_steps=2, seed=5).images
    assert np.abs(_as_float(shared[1:]) - _as_float(together[1:])).mean() > 0.01  # each read its own reference
    with pytest.raises(ValueError, match="one per prompt: got 2 for 3 prompts"):
        pipe(refs[:2], prompts, num_inference_steps=2)


@pytest.mark.parametrize("kind", ["sd", "sdxl"])
def test_our_file_loads_in_diffusers_and_gives_the_same_images(kind, request, tmp_path):
    base = request.getfixturevalue(kind)
    encoder = tiny_image_encoder()
    adapter = _adapter(base.unet)
    adapter.save(tmp_path / "ip-adapter.safetensors")
    from safetensors import safe_open

    with safe_open(str(tmp_path / "ip-adapter.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert {"image_proj.proj.0.weight", "image_proj.proj.2.weight", "image_proj.proj.3.weight",
            "ip_adapter.1.to_k_ip.weight", "ip_adapter.3.to_v_ip.weight"} <= keys

    ours = PersonalizePipeline(copy.deepcopy(base), encoder, adapter)
    ours.progress = False
    mine = ours([_reference()], PROMPTS[:1], num_inference_steps=3, guidance_scale=3.0, scale=0.8, seed=11).images

    theirs = copy.deepcopy(base)
    theirs.load_ip_adapter(str(tmp_path), subfolder="", weight_name="ip-adapter.safetensors", image_encoder_folder=None)
    theirs.set_ip_adapter_scale(0.8)
    hidden = torch.cat([ours.negative_hidden_states(), ours.clip_hidden_states(_reference())])  # [negative; positive]
    expected = theirs(PROMPTS[:1], latents=_noise(base, 11, 0), num_inference_steps=3, guidance_scale=3.0,
                      ip_adapter_image_embeds=[hidden[:, None]], height=192, width=128, output_type="np").images
    assert np.abs(_as_float(mine) - expected).max() <= 1.5 / 255


def _export_from_diffusers(unet) -> dict:
    """Read the adapter weights back out of a diffusers UNet into IP-Adapter's published (nested)
    layout, as the original release files hold them: diffusers' module names -> proj.0/2/3."""
    from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0

    proj = unet.encoder_hid_proj.image_projection_layers[0]
    image_proj = {"proj.0.weight": proj.ff.net[0].proj.weight, "proj.0.bias": proj.ff.net[0].proj.bias,
                  "proj.2.weight": proj.ff.net[2].weight, "proj.2.bias": proj.ff.net[2].bias,
                  "proj.3.weight": proj.norm.weight, "proj.3.bias": proj.norm.bias}
    ip_adapter, key = {}, 1
    for processor in unet.attn_processors.values():
        if isinstance(processor, IPAdapterAttnProcessor2_0):
            ip_adapter[f"{key}.to_k_ip.weight"] = processor.to_k_ip[0].weight
            ip_adapter[f"{key}.to_v_ip.weight"] = processor.to_v_ip[0].weight
            key += 2
    clone = lambda d: {k: v.detach().clone() for k, v in d.items()}  # noqa: E731
    return {"image_proj": clone(image_proj), "ip_adapter": clone(ip_adapter)}


def test_a_diffusers_adapter_loads_into_ours_and_gives_the_same_images(sd, tmp_path):
    encoder = tiny_image_encoder()
    theirs = copy.deepcopy(sd)
    theirs.load_ip_adapter(_adapter(sd.unet, seed=4).official_nested(), subfolder=None, weight_name="in-memory",
                           image_encoder_folder=None)
    with torch.no_grad():  # diffusers' modules now hold the weights; move them somewhere new
        for p in theirs.unet.encoder_hid_proj.parameters():
            p.add_(0.2 * torch.randn_like(p))
        for processor in theirs.unet.attn_processors.values():
            for p in getattr(processor, "parameters", lambda: [])():
                p.add_(0.2 * torch.randn_like(p))
    torch.save(_export_from_diffusers(theirs.unet), tmp_path / "ip-adapter_sd15.bin")

    with pytest.raises(ValueError, match="pickle"):
        IPAdapter.load(tmp_path / "ip-adapter_sd15.bin", sd.unet)
    adapter = IPAdapter.load(tmp_path / "ip-adapter_sd15.bin", sd.unet, allow_pickle=True)
    ours = PersonalizePipeline(copy.deepcopy(sd), encoder, adapter)
    ours.progress = False
    mine = ours(_reference(), PROMPTS[1:], num_inference_steps=3, guidance_scale=3.0, seed=2).images

    hidden = torch.cat([ours.negative_hidden_states(), ours.clip_hidden_states(_reference())])
    expected = theirs(PROMPTS[1:], latents=_noise(sd, 2, 0), num_inference_steps=3, guidance_scale=3.0,
                      ip_adapter_image_embeds=[hidden[:, None]], height=192, width=128, output_type="np").images
    assert np.abs(_as_float(mine) - expected).max() <= 1.5 / 255


def test_save_load_round_trip_and_bad_files(sd, tmp_path):
    adapter = _adapter(sd.unet)
    path = adapter.save(tmp_path / "a.safetensors", dtype=torch.float16)
    back = IPAdapter.load(path, sd.unet)
    assert back.image_proj.proj[0].weight.dtype == torch.float16
    for (ka, a), (kb, b) in zip(adapter.official_state_dict().items(), back.official_state_dict().items()):
        assert ka == kb and torch.equal(a.half(), b)
    with pytest.raises(FileNotFoundError, match="No image adapter"):
        IPAdapter.load(tmp_path / "missing.safetensors", sd.unet)
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in adapter.official_state_dict().items() if not k.startswith("image_proj.proj.3")}
    save_file(state, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ValueError, match="full-token"):
        IPAdapter.load(tmp_path / "plain.safetensors", sd.unet)


def test_a_token_grid_keeps_cls_and_pools_the_patches_and_survives_save_and_load(sd, tmp_path):
    from serialgen.models.ip_adapter import pool_tokens

    hidden = torch.arange(2 * 17 * 3, dtype=torch.float32).reshape(2, 17, 3)  # CLS + a 4x4 patch grid
    assert pool_tokens(hidden, None) is hidden
    assert torch.equal(pool_tokens(hidden, 0), hidden[:, :1])
    two = pool_tokens(hidden, 2)
    assert two.shape == (2, 5, 3) and torch.equal(two[:, 0], hidden[:, 0])
    grid = hidden[:, 1:].reshape(2, 4, 4, 3)
    assert torch.allclose(two[:, 1], grid[:, :2, :2].mean((1, 2)))  # top-left 2x2 block
    assert torch.allclose(two[:, 4], grid[:, 2:, 2:].mean((1, 2)))  # bottom-right
    assert torch.allclose(pool_tokens(hidden, 1)[:, 1], hidden[:, 1:].mean(1))
    with pytest.raises(ValueError, match="finer than"):
        pool_tokens(hidden, 5)
    with pytest.raises(ValueError, match="square patch grid"):
        pool_tokens(hidden[:, :16], 2)

    adapter = IPAdapter.for_unet(sd.unet, 24, token_grid=2)
    assert adapter.tokens(torch.randn(3, 17, 24)).shape == (3, 5, TINY_UNET.cross_attention_dim)
    back = IPAdapter.load(adapter.save(tmp_path / "g.safetensors"), sd.unet)
    assert back.token_grid == 2
    assert IPAdapter.load(_adapter(sd.unet).save(tmp_path / "all.safetensors"), sd.unet).token_grid is None
    pipe = PersonalizePipeline(copy.deepcopy(sd), tiny_image_encoder(), back)
    tokens, _ = pipe.image_tokens(_reference())
    assert tokens.shape[1] == 5  # the pipeline draws from the pooled tokens
    with pytest.raises(ValueError, match="token_grid must be >= 0"):
        IPAdapter.for_unet(sd.unet, 24, token_grid=-2)


def test_an_adapter_for_a_wider_unet_is_refused_with_what_to_do(sd, tmp_path):
    import dataclasses

    wider = dataclasses.replace(TINY_UNET, block_out_channels=(16, 64)).build()
    path = _adapter(wider).save(tmp_path / "wide.safetensors")
    assert IPAdapter.load(path, wider).to_k_ip[0].weight.shape[0] == 64
    with pytest.raises(ValueError, match="other widths.*64 channels.*32.*train stage2"):
        IPAdapter.load(path, sd.unet)
