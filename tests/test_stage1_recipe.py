"""The fourth-phase Stage I recipe's mechanisms on tiny models: attention at every latent level,
the figure-weighted loss, saturated backdrops, the standard-pose estimator, and the metrics that
judge it (trivial baselines, body height, background leak)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from serialgen import evaluation
from serialgen.diffusion import epsilon_loss, region_weights, training_scheduler
from serialgen.models.backbones import attention_at_every_level
from serialgen.models.loading import bundled
from serialgen.models.pose_guider import PoseGuider
from serialgen.models.standard_pose import StandardPoseEstimator, normalized
from serialgen.models.standardizer import Standardizer, StandardizerConfig
from serialgen.preprocess import Reference
from serialgen.train import stage1
from serialgen.train.config import load_config

from .test_train_stage1 import _args, config, encoders  # noqa: F401  (fixtures)
from .tiny import TINY_UNET, train_with

# the mini world's A-pose (the bundled standardizer's template), as (x / W, y / H, visible)
TEMPLATE = tuple(tuple(r) for r in json.loads(
    (bundled("stage1") / "standardizer.json").read_text())["template_keypoints"])


def test_attention_at_every_level_adds_attention_that_starts_as_a_no_op():
    torch.manual_seed(0)
    unet = TINY_UNET.build().eval()
    wide = attention_at_every_level(unet).eval()
    assert all(b.startswith("CrossAttn") for b in wide.config.down_block_types + wide.config.up_block_types)
    new = [n for n in wide.state_dict() if n not in unet.state_dict()]
    assert new and all(".attentions." in n for n in new)
    x, t, e = torch.randn(2, 4, 24, 16), torch.tensor([10, 700]), torch.randn(2, 1, 32)
    with torch.no_grad():
        assert torch.allclose(unet(x, t, e).sample, wide(x, t, e).sample, atol=1e-5)
    assert attention_at_every_level(wide) is wide
    # inside a Standardizer the ReferenceNet now writes, and the denoiser reads, the full latent level
    model = Standardizer.from_unet(wide, StandardizerConfig(width=128, height=192, pose_channels=(4, 8, 8, 16)))
    bank = model.encode_reference(torch.randn(1, 4, 24, 16), torch.randn(1, 1, 32))
    assert any(f.shape[1] == 24 * 16 for f in bank.features.values())


def test_weighted_epsilon_loss_equals_the_plain_loss_at_weight_one_and_ignores_zero_weight():
    torch.manual_seed(0)
    x0 = torch.randn(3, 4, 6, 4)

    def model(x_t, t, cond):  # wrong by 1 in the left half, right in the right half
        noise = cond["noise"]
        return noise + torch.cat([torch.ones_like(noise[..., :2]), torch.zeros_like(noise[..., 2:])], -1)

    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    noise = torch.randn(x0.shape, generator=g())
    cond = {"noise": noise}
    plain = epsilon_loss(model, x0, cond, training_scheduler(), g())
    ones = epsilon_loss(model, x0, cond, training_scheduler(), g(), weights=torch.ones(3, 1, 6, 4))
    assert torch.allclose(plain, ones) and plain.item() == pytest.approx(0.5)
    right_only = torch.cat([torch.zeros(3, 1, 6, 2), torch.ones(3, 1, 6, 2)], -1)
    assert epsilon_loss(model, x0, cond, training_scheduler(), g(), weights=right_only).item() == pytest.approx(0.0)


def test_region_weights_put_the_weight_on_the_figure_at_mean_one():
    share = torch.zeros(2, 1, 6, 4)
    share[:, :, 2:4, 1:3] = 1.0
    w = region_weights(share, 4.0)
    assert torch.allclose(w.mean(dim=(1, 2, 3)), torch.ones(2))
    assert w[0, 0, 2, 1] / w[0, 0, 0, 0] == pytest.approx(5.0)


def test_legs_and_head_weights_weigh_those_rows_of_the_figure_more_at_mean_one():
    share = torch.zeros(2, 1, 6, 4)
    share[:, :, 0:5, 1:3] = 1.0  # the figure: latent rows 0-4
    kp = np.zeros((2, 18, 3), np.float32)
    kp[0, [8, 11], 1], kp[0, 1, 1] = 96.0, 40.0  # hips at canvas row 96, neck at 40
    kp[1, [8, 11], 1], kp[1, 1, 1] = (160.0, 180.0), 10.0  # hip line 170, neck above every row centre
    parts = stage1.part_weights(kp, (6, 4), 192, legs=4.0, head=2.0)  # row centres 16, 48, 80, 112, ...
    assert parts.shape == (2, 1, 6, 4)
    assert parts[0, 0, :, 0].tolist() == [2, 0, 0, 4, 4, 4] and parts[1, 0, :, 0].tolist() == [0, 0, 0, 0, 0, 4]
    w = region_weights(share, 4.0 + parts)  # as training weighs the loss
    assert torch.allclose(w.mean(dim=(1, 2, 3)), torch.ones(2))
    assert w[0, 0, 3, 1] / w[0, 0, 2, 1] == pytest.approx(9 / 5)  # legs: 1 + 4 + 4, the torso: 1 + 4
    assert w[0, 0, 0, 1] / w[0, 0, 2, 1] == pytest.approx(7 / 5)  # head: 1 + 4 + 2
    assert w[0, 0, 5, 0] == w[0, 0, 1, 0]  # canvas weighs as any canvas, below the hips or not


@pytest.mark.parametrize("bad", [{"legs_weight": -1.0}, {"head_weight": float("inf")}, {"figure_weight": float("nan")},
                                 {"template_pose": 1.5}, {"solid_backgrounds": -0.1}])
def test_stage1_recipe_refuses_bad_weights_and_shares(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        stage1.Stage1TrainConfig(**bad)


def test_solid_backgrounds_are_one_saturated_colour():
    rng = np.random.default_rng(0)
    for _ in range(5):
        bg = stage1.solid_background(rng, 16, 24)
        assert bg.shape == (24, 16, 3) and bg.dtype == np.uint8
        mid = bg[12, 8].astype(int)
        assert mid.max() - mid.min() >= 0.3 * mid.max()  # saturated, not grey
        assert np.abs(bg.astype(int) - mid).max() <= 0.12 * 255  # one colour, a faint gradient


def test_standard_pose_estimator_starts_at_the_template_and_learns_proportions():
    est = StandardPoseEstimator(TEMPLATE, hidden=32)
    kp = np.random.default_rng(0).uniform(0, 100, (5, 18, 3)).astype(np.float32)
    kp[..., 2] = 1
    out = est(torch.from_numpy(kp), 128, 192)
    assert torch.allclose(out[0], torch.tensor(TEMPLATE, dtype=torch.float32) * torch.tensor([128, 192, 1.0]))
    # features ignore where and how large the figure is
    moved = kp * np.array([2.0, 2.0, 1.0], np.float32) + np.array([7.0, -3.0, 0.0], np.float32)
    assert torch.allclose(normalized(torch.from_numpy(kp)), normalized(torch.from_numpy(moved)), atol=1e-5)
    # a world where the standard legs' length follows the reference's leg-to-torso ratio
    rng = np.random.default_rng(1)
    ratio = rng.uniform(0.6, 1.4, 2000).astype(np.float32)
    base = np.array(TEMPLATE, np.float32)[:, :2] * np.array([128, 192], np.float32)
    refs = np.repeat(base[None], 2000, 0)
    refs[:, [9, 10, 12, 13], 1] = refs[:, [8], 1] + (refs[:, [9, 10, 12, 13], 1] - refs[:, [8], 1]) * ratio[:, None]
    refs = np.concatenate([refs * rng.uniform(0.5, 1.5, (2000, 1, 1)), np.ones((2000, 18, 1), np.float32)], -1)
    standard = np.repeat(np.concatenate([base, np.ones((18, 1), np.float32)], -1)[None], 2000, 0)
    standard[:, 13, 1] = base[8, 1] + (base[13, 1] - base[8, 1]) * ratio
    torch.manual_seed(0)
    est = StandardPoseEstimator(TEMPLATE, hidden=64)
    losses = stage1.fit_standard_pose(est, refs[:1600], standard[:1600], 128, 192, steps=1500, lr=3e-3, progress=False)
    assert losses[-1] < 0.1 * losses[0]
    with torch.no_grad():
        pred = est(torch.from_numpy(refs[1600:]), 128, 192).numpy()
    err = np.abs(pred[:, 13, 1] - standard[1600:, 13, 1])
    spread = np.abs(standard[1600:, 13, 1] - base[13, 1])
    assert err.mean() < 0.25 * spread.mean()  # reads the proportion, far better than the template


def _posed_standardizer() -> Standardizer:
    """A tiny standardizer whose estimator is moved off the template (its output bias perturbed)."""
    torch.manual_seed(0)
    model = Standardizer.from_unet(TINY_UNET.build(), StandardizerConfig(
        width=128, height=192, pose_channels=(4, 8, 8, 16), template_keypoints=TEMPLATE, standard_pose=True))
    with torch.no_grad():
        model.standard_pose.net[-1].bias.normal_(0, 0.05)
    return model


def test_a_standardizer_with_an_estimator_round_trips_and_poses_each_reference(tmp_path):
    model = _posed_standardizer()
    model.save_pretrained(tmp_path / "s")
    back = Standardizer.from_pretrained(tmp_path / "s")
    kp = torch.rand(3, 18, 3) * torch.tensor([128, 192, 1.0])
    assert torch.equal(model.predict_standard_keypoints(kp), back.predict_standard_keypoints(kp))
    with pytest.raises(ValueError, match="template_keypoints"):
        Standardizer.from_unet(TINY_UNET.build(), StandardizerConfig(width=128, height=192, pose_channels=(4, 8, 8, 16),
                                                                     standard_pose=True))
    plain = Standardizer.from_unet(TINY_UNET.build(), StandardizerConfig(width=128, height=192,
                                                                        pose_channels=(4, 8, 8, 16)))
    with pytest.raises(ValueError, match="no StandardPoseEstimator"):
        plain.predict_standard_keypoints(kp)


def test_pipeline_gives_each_reference_its_predicted_pose_and_notes_the_template(tmp_path):
    from serialgen.diffusion import sampling_scheduler
    from serialgen.pipelines import StandardizePipeline

    from .tiny import TINY_VAE, tiny_image_encoder

    model = _posed_standardizer()
    pipe = StandardizePipeline(TINY_VAE.build(), tiny_image_encoder(32), model.eval(), sampling_scheduler())
    pipe.progress = False
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (192, 128, 3), dtype=np.uint8)
    kp = np.concatenate([rng.uniform(10, 110, (18, 2)), np.ones((18, 1))], -1).astype(np.float32)
    with_kp, without = Reference(image, keypoints=kp), Reference(image)
    poses = pipe.target_poses([with_kp, without])
    assert poses.shape == (2, 192, 128, 3)
    assert np.array_equal(poses[1], pipe.template_pose()) and not np.array_equal(poses[0], poses[1])
    assert any("template" in n for n in without.notes) and not with_kp.notes
    out = pipe([with_kp, without], num_inference_steps=2)
    assert len(out.images) == 2


def test_figure_height_and_height_error():
    img = np.full((40, 20, 3), 255, np.uint8)
    img[5:25, 8:12] = 30
    truth = np.full((40, 20, 3), 255, np.uint8)
    truth[4:29, 8:12] = 30
    assert evaluation.figure_height(img) == 20 and evaluation.figure_height(truth) == 25
    assert evaluation.height_error([img], [truth])[0] == pytest.approx(0.2)
    assert evaluation.figure_height(np.full((8, 8, 3), 255, np.uint8)) == 0


def _person(top, bottom, skin=(200, 160, 130), hair=(60, 40, 20), shoes=(10, 10, 200)):
    """A flat figure standing in the template pose, its parts in the given colours."""
    from PIL import Image, ImageDraw

    kp = np.array(TEMPLATE, np.float32) * np.array([128, 192, 1], np.float32)
    im = Image.new("RGB", (128, 192), (90, 200, 90))
    d = ImageDraw.Draw(im)
    p = {i: tuple(map(float, kp[i, :2])) for i in range(18)}
    d.rectangle((p[0][0] - 10, p[0][1] - 14, p[0][0] + 10, p[0][1] - 2), fill=hair)
    d.rectangle((p[0][0] - 10, p[0][1] - 2, p[0][0] + 10, p[0][1] + 6), fill=skin)
    d.polygon([p[2], p[5], p[11], p[8]], fill=top)
    for a, b in ((8, 9), (11, 12), (9, 10), (12, 13)):
        d.line([p[a], p[b]], fill=bottom, width=9)
    for i in (10, 13):
        d.rectangle((p[i][0] - 5, p[i][1], p[i][0] + 5, p[i][1] + 6), fill=shoes)
    a = np.asarray(im)
    mask = (np.abs(a.astype(int) - [90, 200, 90]).sum(-1) > 0).astype(np.float32)
    return Reference(a, mask=mask, keypoints=kp)


def test_colour_silhouette_fills_the_template_with_the_references_part_colours():
    ref = _person(top=(200, 30, 30), bottom=(30, 30, 200))
    colours = evaluation.region_colours(ref)
    assert np.allclose(colours["top"], (200, 30, 30), atol=2) and np.allclose(colours["bottom"], (30, 30, 200), atol=2)
    sil = evaluation.colour_silhouette(ref, TEMPLATE, 128, 192)
    kp = np.array(TEMPLATE)[:, :2] * [128, 192]
    torso = ((kp[2] + kp[5] + kp[8] + kp[11]) / 4).round().astype(int)
    thigh = ((kp[8] + kp[9]) / 2).round().astype(int)
    assert tuple(sil[torso[1], torso[0]]) == (200, 30, 30) and tuple(sil[thigh[1], thigh[0]]) == (30, 30, 200)
    assert tuple(sil[2, 2]) == (255, 255, 255)


class _ColourJudge:
    """Reads top and bottom colour as red or blue from the standardized image's torso and legs."""

    def read(self, images):
        kp = np.array(TEMPLATE)[:, :2] * [128, 192]
        torso = ((kp[2] + kp[5] + kp[8] + kp[11]) / 4).round().astype(int)
        thigh = ((kp[8] + kp[9]) / 2).round().astype(int)

        def name(rgb):
            return "red" if rgb[0] > rgb[2] else "blue"

        return {"top_color": [name(np.asarray(im)[torso[1], torso[0]]) for im in images],
                "bottom_color": [name(np.asarray(im)[thigh[1], thigh[0]]) for im in images]}


def test_background_leak_is_zero_for_a_clean_standardizer_and_positive_for_a_leaky_one(monkeypatch):
    from serialgen.data.memory import WorldArrays

    people = [_person((200, 30, 30), (30, 30, 200)), _person((30, 30, 200), (200, 30, 30))]
    fg = [np.concatenate([p.image, (p.mask[..., None] * 255).astype(np.uint8)], -1) for p in people]
    metas = [{"character_id": k, "keypoints": people[k].keypoints.tolist(),
              "attributes": {"dress": None, "top": {"color": t}, "bottom": {"color": b}}}
             for k, (t, b) in enumerate((("red", "blue"), ("blue", "red")))]
    test = WorldArrays({"image": np.stack([p.image for p in people]), "foreground": np.stack(fg)}, metas)

    def clean(pipe, refs, *sampling):  # reads the figure's own colours, whatever the backdrop
        return [evaluation.colour_silhouette(r, TEMPLATE, 128, 192) for r in refs]

    def leaky(pipe, refs, *sampling):  # paints the top in the backdrop's colour (white backdrops change nothing)
        kp = np.array(TEMPLATE)[:, :2] * [128, 192]
        c = ((kp[2] + kp[5] + kp[8] + kp[11]) / 4).round().astype(int)
        out = clean(pipe, refs)
        for r, im in zip(refs, out):
            if (r.image[2, 2] < 255).any():
                im[c[1] - 3:c[1] + 4, c[0] - 3:c[0] + 4] = r.image[2, 2]
        return out

    backdrops = {"red": (220, 0, 0), "blue": (0, 0, 220)}
    monkeypatch.setattr(evaluation.stage1, "standardize", clean)
    result = evaluation.background_leak(None, _ColourJudge(), test, count=2, backdrops=backdrops, bootstrap=50)
    assert result["accuracy"]["white"] == 1.0 and result["leak_ci"]["mean"] == 0.0
    monkeypatch.setattr(evaluation.stage1, "standardize", leaky)
    result = evaluation.background_leak(None, _ColourJudge(), test, count=2, backdrops=backdrops, bootstrap=50)
    # on each coloured backdrop the top takes its colour: wrong for one character of two, whose
    # top/bottom read-back falls from 1 to 0.5, so the mean drop is 0.25
    assert result["accuracy"]["white"] == 1.0 and result["accuracy"]["red"] == 0.75
    assert result["leak_ci"]["mean"] == pytest.approx(0.25) and result["per_backdrop"] == {"red": 0.25, "blue": 0.25}


def test_fourth_phase_options_train_and_record_adapter_norms(dataset, tmp_path, config):  # noqa: F811
    extra = ("attention_every_level = true\nfigure_weight = 4.0\nlegs_weight = 4.0\nhead_weight = 2.0\n"
             "fbdm_lr_scale = 100\nrpim_lr_scale = 10\n"
             "solid_backgrounds = 0.5\nrecomposite = 1.0\nstandard_pose = true\nstandard_pose_steps = 50\n")
    phase = tmp_path / "phase4.toml"
    phase.write_text(config.read_text() + extra)
    assert train_with(stage1, _args(dataset, tmp_path / "p4", phase)) == 0
    info = json.loads((tmp_path / "p4" / "model" / "training.json").read_text())
    assert set(info["adapter_rms"]) == {"fbdm_v_f", "fbdm_v_b", "rpim_conv"}
    assert info["adapter_rms"]["fbdm_v_f"] > 0 and info["adapter_rms"]["rpim_conv"] > 0  # they left zero
    model = Standardizer.from_pretrained(tmp_path / "p4" / "model")
    assert model.standard_pose is not None
    assert all(b.startswith("CrossAttn") for b in model.denoiser.config.down_block_types)
    # a later phase from it starts with every weight (the architecture comes from init_from)
    later = load_config(stage1.Stage1TrainConfig, stage1.PRESETS, "mini", phase, init_from=str(tmp_path / "p4" / "model"))
    a = Standardizer.from_pretrained(tmp_path / "p4" / "model").state_dict()
    b = stage1.initial_model(later, model.config).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k].float(), b[k].float()) for k in a if "standard_pose" not in k)


def _prior_standardizer(plain: Standardizer | None = None) -> Standardizer:
    """A tiny posed standardizer with the colour prior, from `plain`'s weights (widened) if given."""
    wide = dataclasses.replace((plain or _posed_standardizer()).config, colour_prior=True)
    model = Standardizer.from_unet(TINY_UNET.build(), wide)
    if plain is not None:
        state = PoseGuider.widened_state(plain.state_dict(), 6, prefix="pose_guider.")
        model.load_state_dict(state)
    return model


def test_a_colour_prior_widened_from_a_plain_guider_computes_the_same_until_its_inputs_train():
    plain = _posed_standardizer()
    with torch.no_grad():  # a trained guider: its zero output conv would hide any difference
        plain.pose_guider.conv_out.weight.normal_(0, 0.1)
    model = _prior_standardizer(plain)
    assert model.pose_guider.in_channels == 6 and plain.pose_guider.in_channels == 3
    pose, prior = torch.rand(2, 3, 192, 128) * 2 - 1, torch.rand(2, 3, 192, 128) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(model.pose_features(pose, prior), plain.pose_features(pose), atol=1e-6)
        model.pose_guider.body[0].weight[:, 3:].normal_(0, 1.0)
        assert (model.pose_features(pose, prior) - plain.pose_features(pose)).abs().max() > 1e-3
    with pytest.raises(ValueError, match="pass prior"):
        model.pose_features(pose)
    with pytest.raises(ValueError, match="no colour prior"):
        plain.pose_features(pose, prior)
    with pytest.raises(ValueError, match="must match"):
        model.pose_features(pose, prior[:, :, :96])
    with pytest.raises(ValueError, match="narrowed"):
        PoseGuider.widened_state(model.state_dict(), 3, prefix="pose_guider.")


def test_the_pipeline_gives_the_guider_each_references_colour_silhouette_at_its_predicted_pose(tmp_path):
    from serialgen.diffusion import sampling_scheduler
    from serialgen.pipelines import StandardizePipeline
    from serialgen.silhouette import colour_silhouette

    from .tiny import TINY_VAE, tiny_image_encoder

    model = _prior_standardizer()
    model.save_pretrained(tmp_path / "s")
    model = Standardizer.from_pretrained(tmp_path / "s")  # the option round-trips
    assert model.config.colour_prior
    pipe = StandardizePipeline(TINY_VAE.build(), tiny_image_encoder(32), model.eval(), sampling_scheduler())
    pipe.progress = False
    rng = np.random.default_rng(0)
    refs = []
    for colour in ((200, 30, 30), (30, 30, 200)):
        image = np.full((192, 128, 3), 255, np.uint8)
        image[40:160, 30:100] = colour
        kp = np.concatenate([rng.uniform(40, 90, (18, 2)), np.ones((18, 1))], -1).astype(np.float32)
        kp[:, 1] = np.linspace(45, 155, 18)
        mask = (image < 255).any(-1).astype(np.float32)
        refs.append(Reference(image, mask=mask, keypoints=kp))
    seen = []
    original = model.pose_guider.forward
    model.pose_guider.forward = lambda x: seen.append(x) or original(x)
    pipe(refs, num_inference_steps=2)
    (inputs,) = seen
    assert inputs.shape == (2, 6, 192, 128)
    keypoints = pipe.target_keypoints(refs)
    for k, r in enumerate(refs):
        want = colour_silhouette(r, keypoints[k], 128, 192, normalized=False)
        got = ((inputs[k, 3:].permute(1, 2, 0) + 1) * 127.5).round().byte().numpy()
        assert np.array_equal(got, want)
        assert np.array_equal(((inputs[k, :3].permute(1, 2, 0) + 1) * 127.5).round().byte().numpy(),
                              pipe.target_poses([r])[0])
    assert not torch.equal(inputs[0, 3:], inputs[1, 3:])  # red and blue figures: their own colours
    with pytest.raises(ValueError, match="no keypoints to draw"):
        pipe(refs[0], target_pose=np.zeros((192, 128, 3), np.uint8))


def test_colour_prior_trains_from_a_plain_standardizer_its_new_inputs_leaving_zero(dataset, tmp_path, config):  # noqa: F811
    assert train_with(stage1, _args(dataset, tmp_path / "plain", config)) == 0
    phase = tmp_path / "prior.toml"
    phase.write_text(config.read_text() + f"colour_prior = true\ninit_from = {json.dumps(str(tmp_path / 'plain' / 'model'))}\n")
    cfg = load_config(stage1.Stage1TrainConfig, stage1.PRESETS, "mini", phase)
    plain = Standardizer.from_pretrained(tmp_path / "plain" / "model")
    start = stage1.initial_model(cfg, dataclasses.replace(plain.config, colour_prior=True))
    first = start.pose_guider.body[0].weight
    assert first.shape[1] == 6 and torch.equal(first[:, :3], plain.pose_guider.body[0].weight.float())
    assert not first[:, 3:].any()
    assert train_with(stage1, _args(dataset, tmp_path / "prior", phase)) == 0
    trained = Standardizer.from_pretrained(tmp_path / "prior" / "model")
    assert trained.config.colour_prior and trained.pose_guider.body[0].weight[:, 3:].abs().max() > 0


def test_stage1_differences_pair_models_character_by_character():
    from serialgen.evaluation.commands import DIFFERENCES, stage1_differences, table

    rng = np.random.default_rng(0)
    base = rng.normal(15, 2, 40)

    def scores(shift: float, heights) -> dict:
        per = {"psnr": list(base + shift), "ssim": list(base / 20), "figure_psnr": list(base + 2 * shift),
               "figure_ssim": list(base / 20), "appearance": list(np.full(40, 0.2 + shift / 10))}
        return {"count": 40, "per_character": per, "height": {"per_character": heights}}

    a = scores(0.0, [0.0] * 20 + [0.2] * 20)
    b = scores(1.0, [0.0] * 30 + [0.2] * 10)
    (name, diff), = stage1_differences([("a", a), ("b", b)])
    assert name == "b - a"
    # the same shift on every character: paired, the interval has no width (unpaired, it would be wide)
    assert diff["psnr"]["mean"] == pytest.approx(1.0) and diff["psnr"]["hi"] - diff["psnr"]["lo"] < 1e-9
    assert diff["figure_psnr"]["mean"] == pytest.approx(2.0) and diff["ssim"]["mean"] == pytest.approx(0.0)
    assert diff["appearance"]["mean"] == pytest.approx(0.1)
    assert diff["within_5pct"]["mean"] == pytest.approx(0.25) and diff["within_5pct"]["lo"] > 0
    assert "b - a" in table([(name, diff)], DIFFERENCES)
