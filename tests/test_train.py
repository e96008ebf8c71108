"""Training infrastructure: checkpoints, exact resume, loss goes down, save/load round trips,
the tokenizer, and loading the published layouts (tiny random models, never downloads)."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from serialgen.data.memory import batch_indices
from serialgen.models.loading import load_clip, load_clip_text, load_tokenizer, load_unet, load_vae
from serialgen.models.tokenizer import build_tokenizer, save_tokenizer
from serialgen.train.checkpoint import load_checkpoint, save_checkpoint
from serialgen.world.character import Character

from .tiny import TINY_CLIP, TINY_UNET, TINY_VAE, train_killed_after_checkpoint, train_with


def _captions(n=60):
    return [Character.sample(0, c).describe() + ", waving, side view, smiling, on a beach, full body shot"
            for c in range(n)]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok")
    save_tokenizer(build_tokenizer(_captions(), vocab_size=600), path)
    return load_tokenizer(path)


def test_batches_are_a_function_of_step_and_cover_each_epoch():
    a = [batch_indices(10, 4, s, seed=1) for s in range(5)]
    assert all(np.array_equal(x, batch_indices(10, 4, s, seed=1)) for s, x in enumerate(a))
    first_epoch = np.concatenate(a)[:10]
    assert sorted(first_epoch.tolist()) == list(range(10))
    ranks = [batch_indices(100, 4, 3, seed=1, rank=r, world_size=2) for r in range(2)]  # ranks share no sample
    assert len(set(ranks[0]) & set(ranks[1])) == 0 and len(ranks[0]) == 4
    assert sorted(np.concatenate(ranks).tolist()) == sorted(batch_indices(100, 8, 3, seed=1).tolist())


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 2))
    ema = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.randn(3, 4)).sum().backward()
    opt.step()
    save_checkpoint(tmp_path, step=7, model=model, optimizer=opt, ema=ema, extra={"note": "x"})
    assert not list(tmp_path.glob("*.tmp*")) and not (tmp_path / "checkpoint.old").exists()
    assert all(p.suffix in (".safetensors", ".json") for p in (tmp_path / "checkpoint").iterdir())
    expected_next = torch.rand(3)
    model2 = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 2))
    ema2 = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 2))
    opt2 = torch.optim.AdamW(model2.parameters(), lr=1e-2)
    state = load_checkpoint(tmp_path, model=model2, optimizer=opt2, ema=ema2)
    assert state["step"] == 7 and state["extra"] == {"note": "x"}
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(ema.state_dict().values(), ema2.state_dict().values()):
        assert torch.equal(a, b)
    assert torch.equal(torch.rand(3), expected_next)  # torch RNG restored
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s1["param_groups"] == s2["param_groups"]
    for k in s1["state"]:
        for key, value in s1["state"][k].items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(s2["state"][k][key]))


def test_tokenizer_round_trip(tokenizer, tmp_path):
    from transformers import CLIPTokenizer

    caption = _captions(3)[2]
    ids = tokenizer(caption).input_ids
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    text = tokenizer.decode(ids, skip_special_tokens=True)
    assert text.replace(" ,", ",") == caption.lower()
    assert len(ids) < 0.6 * len(caption.split()) * 3  # caption words are mostly single tokens
    save_tokenizer(tokenizer, tmp_path)
    assert {"vocab.json", "merges.txt", "tokenizer.json"} <= {p.name for p in tmp_path.iterdir()}
    again = CLIPTokenizer.from_pretrained(tmp_path)
    assert again(caption).input_ids == ids
    odd = "A Zebra-striped UFO, 42!"
    assert again.decode(again(odd).input_ids, skip_special_tokens=True).replace(" ", "") == odd.lower().replace(" ", "")


def _args(data, out, config=None, resume=False):
    return argparse.Namespace(data=str(data), out=str(out), config=str(config) if config else None, resume=resume)


def _toml(path, **values):
    path.write_text("\n".join(f"{k} = {json.dumps(v)}" for k, v in values.items()) + "\n")
    return path


def test_vae_training_resumes_exactly_and_lowers_the_loss(dataset, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from serialgen.models import backbones
    from serialgen.train import vae as train_vae

    monkeypatch.setitem(backbones.VAE_PRESETS, "test", TINY_VAE)
    common = dict(architecture="test", batch_size=4, crop=[64, 64], checkpoint_every=3, sample_every=100, eval_images=8,
                  warmup=1, lr=2e-3, mixed_precision="no")
    straight = tmp_path / "straight"
    assert train_with(train_vae, _args(dataset, straight, _toml(tmp_path / "a.toml", steps=6, **common))) == 0
    # a run killed right after its step-3 checkpoint, then resumed with the same config
    split = tmp_path / "split"
    train_killed_after_checkpoint(monkeypatch, train_vae, _args(dataset, split, tmp_path / "a.toml"), step=3)
    assert not (split / "model").exists()
    assert train_with(train_vae, _args(dataset, split, tmp_path / "a.toml", resume=True)) == 0
    a = load_file(str(straight / "checkpoint" / "model.safetensors"))
    b = load_file(str(split / "checkpoint" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    trained = load_vae(straight / "model")
    assert trained.config.scaling_factor != 0.18215  # measured, not the default
    info = json.loads((straight / "model" / "training.json").read_text())
    assert "serialgen" in info["command"] or "pytest" in info["command"]
    longer = tmp_path / "longer"
    assert train_with(train_vae, _args(dataset, longer, _toml(tmp_path / "d.toml", steps=40, **common))) == 0
    losses = [json.loads(line)["loss"] for line in (longer / "log.jsonl").read_text().splitlines() if "loss" in line]
    assert losses[-1] < 0.7 * losses[0]


def test_a_run_directory_is_not_overwritten(dataset, tmp_path):
    from serialgen.train import vae as train_vae

    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "state.json").write_text("{}")
    with pytest.raises(ValueError, match="--resume"):
        train_with(train_vae, _args(dataset, tmp_path))


def test_save_load_equality_and_pickle_refusal(tmp_path, tokenizer):
    torch.manual_seed(0)
    vae = TINY_VAE.build().eval()
    x = torch.randn(1, 3, 64, 64)
    vae.save_pretrained(tmp_path / "vae")
    again = load_vae(tmp_path / "vae").eval()
    with torch.no_grad():
        assert torch.equal(vae.encode(x).latent_dist.mean, again.encode(x).latent_dist.mean)
    vae.save_pretrained(tmp_path / "pickled", safe_serialization=False)
    with pytest.raises(ValueError, match="allow_pickle"):
        load_vae(tmp_path / "pickled")
    assert load_vae(tmp_path / "pickled", allow_pickle=True) is not None
    with pytest.raises(FileNotFoundError, match="diffusers/transformers layout"):
        load_vae(tmp_path / "nothing")

    clip = TINY_CLIP.build(tokenizer).eval()
    clip.save_pretrained(tmp_path / "clip")
    save_tokenizer(tokenizer, tmp_path / "clip" / "tokenizer")
    clip2, tok2 = load_clip(tmp_path / "clip")
    ids = tok2(["a red t-shirt"], return_tensors="pt").input_ids
    with torch.no_grad():
        a = clip.get_text_features(input_ids=ids)
        b = clip2.eval().get_text_features(input_ids=ids)
    a, b = (t if isinstance(t, torch.Tensor) else t.pooler_output for t in (a, b))
    assert all(torch.equal(v, clip2.state_dict()[k]) for k, v in clip.state_dict().items())
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)  # the attention kernel may differ, the weights do not
    text, tok3 = load_clip_text(tmp_path / "clip")
    with torch.no_grad():
        h1 = clip.text_model(ids).last_hidden_state
        h2 = text.eval()(ids).last_hidden_state
    torch.testing.assert_close(h1, h2, rtol=0, atol=1e-5)
    assert tok3(["x"]).input_ids == tok2(["x"]).input_ids


def test_stable_diffusion_layout_loads(tmp_path, tokenizer):
    """A folder laid out as a published Stable Diffusion pipeline (vae/, unet/, text_encoder/,
    tokenizer/, scheduler/), with tiny random weights, loads through our loaders and through
    diffusers' own pipeline class."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline
    from transformers import CLIPTextConfig, CLIPTextModel

    from serialgen.diffusion import noise_scheduler_config
    from serialgen.train.t2i import make_pipeline

    torch.manual_seed(0)
    vae, unet = TINY_VAE.build(), TINY_UNET.build()
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                        num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=64,
                                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                        pad_token_id=tokenizer.pad_token_id))
    pipe = make_pipeline(unet, vae, text, tokenizer)
    pipe.save_pretrained(tmp_path / "sd")
    for sub in ("vae", "unet", "text_encoder", "tokenizer", "scheduler"):
        assert (tmp_path / "sd" / sub).is_dir()
    assert not list((tmp_path / "sd").rglob("*.bin"))
    assert isinstance(pipe.scheduler, DDIMScheduler) and pipe.scheduler.config.beta_schedule == "scaled_linear"
    unet2, vae2 = load_unet(tmp_path / "sd"), load_vae(tmp_path / "sd")
    text2, tok2 = load_clip_text(tmp_path / "sd")
    for a, b in ((unet, unet2), (vae, vae2), (text, text2)):
        for (k, v), (k2, v2) in zip(a.state_dict().items(), b.state_dict().items()):
            assert k == k2 and torch.equal(v, v2)
    again = StableDiffusionPipeline.from_pretrained(tmp_path / "sd", safety_checker=None, requires_safety_checker=False)
    out = again(["a red t-shirt"], height=64, width=64, num_inference_steps=2, output_type="np",
                generator=torch.Generator().manual_seed(0)).images
    assert out.shape == (1, 64, 64, 3) and np.isfinite(out).all()
    assert noise_scheduler_config()["prediction_type"] == "epsilon"


def test_clip_judge_and_t2i_trainers_run_end_to_end(dataset, tmp_path, monkeypatch, tokenizer):
    """Tiny versions of the clip, judge and t2i runs: each exports a loadable model with its
    provenance, and the t2i run samples through diffusers' pipeline from our components."""
    from serialgen.models import backbones
    from serialgen.train import clip as train_clip
    from serialgen.train import judge as train_judge
    from serialgen.train import t2i as train_t2i

    monkeypatch.setitem(backbones.CLIP_PRESETS, "test", TINY_CLIP)
    monkeypatch.setitem(backbones.UNET_PRESETS, "test", TINY_UNET)
    small = dict(architecture="test", steps=3, batch_size=4, checkpoint_every=3, sample_every=3, eval_samples=3,
                 zeroshot_samples=2, vocab_size=400, mixed_precision="no", warmup=1)
    assert train_with(train_clip, _args(dataset, tmp_path / "clip", _toml(tmp_path / "c.toml", **small))) == 0
    clip, tok = load_clip(tmp_path / "clip" / "model")
    info = json.loads((tmp_path / "clip" / "model" / "training.json").read_text())
    for key in ("retrieval_top1", "zeroshot_action", "chance_action", "zeroshot_view"):
        assert 0.0 <= info["heldout"][key] <= 1.0
    assert info["heldout"]["chance_view"] == pytest.approx(0.25)
    assert tok("a red t-shirt").input_ids[0] == tok.bos_token_id

    phase2 = dict(small, init_from=str(tmp_path / "clip" / "model"), hard_negatives=True)
    assert train_with(train_clip, _args(dataset, tmp_path / "clip2", _toml(tmp_path / "c2.toml", **phase2))) == 0
    assert load_clip(tmp_path / "clip2" / "model")[1].get_vocab() == tok.get_vocab()  # phase 2 keeps the tokenizer

    judge_cfg = _toml(tmp_path / "j.toml", classifier_steps=3, classifier_batch=4, classifier_widths=[8, 8, 8, 8],
                      classifier_depths=[1, 1, 1, 1], classifier_size=[48, 32], **small)
    assert train_with(train_judge, _args(dataset, tmp_path / "judge", judge_cfg)) == 0
    info = json.loads((tmp_path / "judge" / "model" / "training.json").read_text())
    assert set(info["classifier_accuracy"]) == {"top_color", "bottom_color", "shoes_color", "hair_color", "hair_style",
                                                "action", "view", "background", "expression"}
    from serialgen.evaluation import Judge

    judge = Judge.from_pretrained(tmp_path / "judge" / "model")
    assert judge.classifier.input_size == (48, 32)  # the size it was trained at comes back with it
    assert set(judge.read(np.zeros((2, 192, 128, 3), np.uint8))["view"]) <= {"front", "three-quarter", "side", "back"}
    # a second phase keeps the first one's CLIP and trains only a new classifier
    again = _toml(tmp_path / "j2.toml", classifier_steps=2, classifier_batch=4, classifier_widths=[8, 8, 8, 8],
                  classifier_depths=[1, 1, 1, 1], clip_from=str(tmp_path / "judge" / "model"), **small)
    assert train_with(train_judge, _args(dataset, tmp_path / "judge2", again)) == 0
    kept = Judge.from_pretrained(tmp_path / "judge2" / "model")
    assert all(torch.equal(v, kept.model.state_dict()[k]) for k, v in judge.model.state_dict().items())
    assert kept.tokenizer.get_vocab() == judge.tokenizer.get_vocab() and kept.classifier.input_size == ()
    assert not (tmp_path / "judge2" / "checkpoint").exists()  # no CLIP steps were taken
    info2 = json.loads((tmp_path / "judge2" / "model" / "training.json").read_text())
    assert info2["heldout"]["clip_from"] == str(tmp_path / "judge" / "model")
    assert info2["heldout"]["retrieval_top1"] == info["heldout"]["retrieval_top1"]

    torch.manual_seed(0)
    TINY_VAE.build().save_pretrained(tmp_path / "vae")
    t2i = dict(architecture="test", steps=2, batch_size=4, checkpoint_every=2, sample_every=2, sample_steps=2, warmup=1,
               vae=str(tmp_path / "vae"), clip=str(tmp_path / "clip" / "model"), snr_gamma=5.0, figure_weight=4.0)
    assert train_with(train_t2i, _args(dataset, tmp_path / "t2i", _toml(tmp_path / "t.toml", **t2i))) == 0
    assert (tmp_path / "t2i" / "cache.safetensors").exists()
    from safetensors.torch import load_file

    latents, masks = (load_file(str(tmp_path / "t2i" / f))[k] for f, k in (("cache.safetensors", "latents"),
                                                                           ("masks.safetensors", "masks")))
    assert masks.shape == (len(latents), 1, *latents.shape[-2:]) and 0 < masks.float().mean() < 0.5
    assert load_unet(tmp_path / "t2i" / "model").config.cross_attention_dim == 32
    assert (tmp_path / "t2i" / "samples" / "samples_000002.png").exists()

    # a second phase starts from the first one's UNet: one step at a negligible rate exports that UNet
    phase2 = dict(t2i, steps=1, lr=1e-30, init_from=str(tmp_path / "t2i" / "model"), schedule="constant")
    assert train_with(train_t2i, _args(dataset, tmp_path / "t2i2", _toml(tmp_path / "t2.toml", **phase2))) == 0
    first, second = load_unet(tmp_path / "t2i" / "model").state_dict(), load_unet(tmp_path / "t2i2" / "model").state_dict()
    assert all(torch.allclose(first[k], second[k], rtol=0, atol=1e-25) for k in first)
    fresh = TINY_UNET.build().state_dict()
    assert any(not torch.equal(first[k], fresh[k]) for k in first)


def test_hard_negative_changes_one_stated_attribute(small_world):
    from serialgen.train.clip import hard_negative
    from serialgen.world.attributes import ATTRIBUTES, attribute_value, caption_variants

    meta = [small_world.sample(c, 1)["meta"] for c in range(6)]
    captions = [m["caption"] for m in meta] + ["a standard image caption"]
    rng = np.random.default_rng(0)
    for k, m in enumerate(meta):
        negative = hard_negative(meta, k, captions, rng)
        assert negative != m["caption"]
        changed = [a for a in ATTRIBUTES if attribute_value(m, a) is not None
                   and negative in caption_variants(m, a)[0]]
        assert len(changed) == 1  # one attribute away from the truth, and a caption the world can write
    assert hard_negative(meta, len(meta), captions, rng) in captions  # a standard image: another caption


def test_contrastive_loss_is_clips_and_hard_negatives_only_raise_it():
    from serialgen.train.clip import contrastive_loss

    torch.manual_seed(0)
    model = TINY_CLIP.build().eval()
    ids, pixels = torch.randint(0, 100, (4, 8)), torch.randn(4, 3, 32, 32)
    out = model(input_ids=ids, pixel_values=pixels, return_loss=True)
    assert torch.allclose(contrastive_loss(out.logits_per_image), out.loss, atol=1e-6)
    extra = model(input_ids=torch.cat([ids, torch.randint(0, 100, (4, 8))]), pixel_values=pixels)
    assert extra.logits_per_image.shape == (4, 8)
    assert contrastive_loss(extra.logits_per_image) > out.loss  # more columns, more competition


def test_judge_classifier_learns_attributes_and_softening_keeps_images_in_range(dataset):
    """A few hundred steps on the tiny world's renders: the classifier fits its training images
    (loss falls well below its start); softened images stay in [-1, 1] and change."""
    import torch.nn.functional as F

    from serialgen.data.memory import WorldArrays, to_float
    from serialgen.models.judge import AttributeClassifier
    from serialgen.train.judge import _targets, soften

    train = WorldArrays.load(dataset, "train", progress=False)
    x = to_float(train.images["image"])
    soft = soften(x, np.random.default_rng(0))
    assert soft.shape == x.shape and soft.min() >= -1 and soft.max() <= 1 and not torch.equal(soft, x)
    targets = {a: torch.from_numpy(t) for a, t in _targets(train.meta).items()}
    torch.manual_seed(0)
    model = AttributeClassifier.build(widths=(8, 16, 16, 16), depths=(1, 1, 1, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)

    def loss_of():
        logits = model(x)
        return sum(F.cross_entropy(logits[a], targets[a], ignore_index=-1) for a in logits if (targets[a] >= 0).any())

    first = loss_of().item()
    for _ in range(60):
        loss = loss_of()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss_of().item() < 0.3 * first


def test_vae_decoder_fine_tune_keeps_the_encoder_and_the_scaling_factor(dataset, tmp_path, monkeypatch):
    from serialgen.models import backbones
    from serialgen.train import vae as train_vae

    monkeypatch.setitem(backbones.VAE_PRESETS, "test", TINY_VAE)
    common = dict(architecture="test", batch_size=4, crop=[64, 64], checkpoint_every=100, sample_every=100, eval_images=8,
                  warmup=1, lr=2e-3, mixed_precision="no")
    assert train_with(train_vae, _args(dataset, tmp_path / "first", _toml(tmp_path / "a.toml", steps=3, **common))) == 0
    config = _toml(tmp_path / "b.toml", steps=4, init_from=str(tmp_path / "first" / "model"), decoder_only=True,
                   latent_noise=0.3, **common)
    assert train_with(train_vae, _args(dataset, tmp_path / "second", config)) == 0
    before, after = load_vae(tmp_path / "first" / "model"), load_vae(tmp_path / "second" / "model")
    assert after.config.scaling_factor == before.config.scaling_factor
    b, a = before.state_dict(), after.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith(("encoder.", "quant_conv.")))
    assert any(not torch.equal(a[k], b[k]) for k in a if k.startswith("decoder."))
    with pytest.raises(ValueError, match="set init_from"):
        train_with(train_vae, _args(dataset, tmp_path / "third", _toml(tmp_path / "c.toml", steps=1, decoder_only=True,
                                                                **common)))


def test_offset_noise_shifts_whole_channels_and_zero_is_plain_randn():
    from serialgen.diffusion import training_noise

    plain = training_noise((64, 4, 24, 16), torch.Generator().manual_seed(0))
    assert torch.equal(plain, torch.randn((64, 4, 24, 16), generator=torch.Generator().manual_seed(0)))
    offset = training_noise((64, 4, 24, 16), torch.Generator().manual_seed(0), offset=0.5)
    shift = offset - plain  # one constant per (sample, channel)
    assert torch.allclose(shift, shift[:, :, :1, :1].expand_as(shift), atol=1e-6)
    assert 0.35 < shift[:, :, 0, 0].std().item() < 0.65  # the offset's scale
    assert plain.mean(dim=(2, 3)).std().item() < 0.1  # pure noise barely moves a channel's mean


def test_min_snr_weights_cap_the_clean_timesteps_at_gamma():
    from serialgen.diffusion import min_snr_weights, training_scheduler

    scheduler = training_scheduler()
    t = torch.arange(1000)
    w = min_snr_weights(scheduler, t, 5.0)
    a = scheduler.alphas_cumprod.double()
    snr = a / (1 - a)
    assert torch.allclose(w.double(), torch.where(snr > 5, 5 / snr, torch.ones_like(snr)), rtol=1e-5)
    crossing = int((snr > 5).sum())  # SNR falls with t: the first `crossing` steps are down-weighted
    assert 50 < crossing < 300 and torch.all(w[crossing:] == 1) and w[0] < 0.01
    assert torch.all(w[1:crossing] >= w[:crossing - 1])  # the cleaner, the lighter


def test_region_weights_put_the_figure_weight_on_the_figure_and_keep_the_mean():
    from serialgen.diffusion import latent_masks, region_weights

    masks = np.zeros((2, 192, 128), np.uint8)
    masks[0, 40:120, 48:80] = 255  # a figure on cells 5..15 x 6..10 of the 24x16 latent
    masks[0, 32:40, 44:48] = 255  # and half of cell (4, 5): its 8 rows, 4 of its 8 columns
    share = latent_masks(masks, (24, 16))
    assert share.shape == (2, 1, 24, 16) and share.dtype == torch.float16
    assert share[0, 0, 5:15, 6:10].eq(1).all() and share[0, 0, 4, 5].item() == 0.5 and share[1].eq(0).all()
    assert share[0].sum().item() == 40.5  # the figure's area, in latent pixels
    w = region_weights(share, 4.0)
    assert torch.allclose(w.mean(dim=(1, 2, 3)), torch.ones(2))
    assert torch.allclose(w[0, 0, 10, 8] / w[0, 0, 0, 0], torch.tensor(5.0))  # figure vs background
    assert torch.allclose(w[0, 0, 4, 5] / w[0, 0, 0, 0], torch.tensor(3.0))
    assert torch.equal(w[1], torch.ones_like(w[1]))  # no figure: the plain loss


def test_judge_classifier_reads_at_its_input_size_and_keeps_it(tmp_path):
    import torch.nn.functional as F

    from serialgen.models.judge import AttributeClassifier

    torch.manual_seed(0)
    model = AttributeClassifier.build(widths=(8, 8, 8, 8), depths=(1, 1, 1, 1), input_size=(96, 64)).eval()
    x = torch.rand(2, 3, 192, 128) * 2 - 1
    small = F.interpolate(x, size=(96, 64), mode="bilinear", antialias=True)
    with torch.no_grad():
        full, half = model(x), model(small)
    assert all(torch.allclose(full[a], half[a], atol=1e-6) for a in full)
    model.save_pretrained(tmp_path)
    again = AttributeClassifier.from_pretrained(tmp_path)
    assert again.input_size == (96, 64)
    with torch.no_grad():
        assert all(torch.allclose(again(x)[a], full[a], atol=1e-5) for a in full)
    native = AttributeClassifier.build(widths=(8, 8, 8, 8), depths=(1, 1, 1, 1))
    native.save_pretrained(tmp_path / "native")
    (tmp_path / "native" / "classifier.json").unlink()  # a judge saved before input sizes existed
    assert AttributeClassifier.from_pretrained(tmp_path / "native").input_size == ()


def test_weights_digest_follows_every_weight_and_name():
    from serialgen.data.latents import weights_digest

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    first = weights_digest(model)
    assert weights_digest(model) == first and len(first) == 32
    with torch.no_grad():
        model[1].bias[0] += 1e-3
    second = weights_digest(model)
    assert second != first
    assert weights_digest(model, ("0.",)) == weights_digest(torch.nn.Sequential(model[0]))  # only those named
    renamed = torch.nn.Sequential(torch.nn.Identity(), model[0], model[1])  # same tensors, other names
    assert weights_digest(renamed) not in (first, second)
