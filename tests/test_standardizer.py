"""Stage I model: reference attention, FBDM, RPIM and the PoseGuider on stock tiny UNets.

No-op starts, the bank's effect, guidance rows that must not see the
reference, and save/load equality."""

from __future__ import annotations

import copy

import pytest
import torch

from serialgen.models.reference_attention import ReferenceBank, block_size
from serialgen.models.standardizer import Standardizer, StandardizerConfig

from .tiny import TINY_UNET

CONFIG = StandardizerConfig(width=128, height=192, pose_channels=(4, 8, 8, 16))


def _inputs(n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(
        ref=torch.randn(n, 4, 24, 16, generator=g),
        embeds=torch.randn(n, 1, 32, generator=g),
        mask=(torch.rand(n, 1, 192, 128, generator=g) > 0.5).float(),
        ref_pose=torch.rand(n, 3, 192, 128, generator=g) * 2 - 1,
        pose=torch.rand(n, 3, 192, 128, generator=g) * 2 - 1,
        x=torch.randn(n, 4, 24, 16, generator=g),
        t=torch.tensor([10, 700][:n]),
    )


@pytest.fixture()
def unet():
    torch.manual_seed(0)
    return TINY_UNET.build().eval()


@pytest.fixture()
def model(unet):
    torch.manual_seed(1)
    return Standardizer.from_unet(unet, CONFIG).eval()


def _randomize(module, seed=2):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def _predict(model, i, bank=None, pose=True):
    cond = {"reference": bank, "image": i["embeds"], "pose": model.pose_features(i["pose"]) if pose else None}
    return model(i["x"], i["t"], cond)


@torch.no_grad()
def test_without_reference_or_pose_the_denoiser_is_the_stock_unet(unet, model):
    i = _inputs()
    stock = unet(i["x"], i["t"], encoder_hidden_states=i["embeds"]).sample
    ours = _predict(model, i, bank=None, pose=False)
    assert torch.allclose(ours, stock, atol=1e-5)


@torch.no_grad()
def test_a_fresh_pose_guider_changes_nothing_and_a_trained_one_does(model):
    i = _inputs()
    bank = model.encode_reference(i["ref"], i["embeds"])
    assert torch.equal(_predict(model, i, bank, pose=True), _predict(model, i, bank, pose=False))
    _randomize(model.pose_guider.conv_out)
    assert not torch.allclose(_predict(model, i, bank, pose=True), _predict(model, i, bank, pose=False), atol=1e-4)


@torch.no_grad()
def test_fresh_fbdm_and_rpim_leave_the_bank_unchanged_and_trained_ones_change_it(model):
    i = _inputs()
    plain = model.encode_reference(i["ref"], i["embeds"])
    adapted = model.encode_reference(i["ref"], i["embeds"], i["mask"], i["ref_pose"])
    assert plain.features.keys() == adapted.features.keys() and len(plain.features) == 4  # 1 down, 1 mid, 2 up
    for name in plain.features:
        assert torch.equal(plain.features[name], adapted.features[name])
    for adapter in model.adapters.values():
        _randomize(adapter)
    changed = model.encode_reference(i["ref"], i["embeds"], i["mask"], i["ref_pose"])
    for name in plain.features:
        assert not torch.allclose(plain.features[name], changed.features[name], atol=1e-4)


@torch.no_grad()
def test_fbdm_adds_v_b_on_background_and_v_f_on_foreground(model):
    name, adapter = next(iter(model.adapters.items()))
    width = adapter.v_f.numel()
    adapter.v_f.fill_(1.0)
    adapter.v_b.fill_(-2.0)
    mask = torch.zeros(1, 1, 24, 16)
    mask[..., :12, :] = 1  # top half is background
    bank = ReferenceBank(latent_size=(24, 16), background_mask=mask)
    f = torch.zeros(1, 24 * 16, width)
    out = adapter(f, bank).view(1, 24, 16, width)
    assert torch.all(out[:, :12] == -2.0) and torch.all(out[:, 12:] == 1.0)


@torch.no_grad()
def test_the_reference_changes_the_prediction_and_keep_false_rows_ignore_it(model):
    i = _inputs()
    bank = model.encode_reference(i["ref"], i["embeds"], i["mask"], i["ref_pose"])
    with_ref = _predict(model, i, bank)
    without = _predict(model, i, None)
    assert not torch.allclose(with_ref, without, atol=1e-4)
    masked = ReferenceBank(bank.latent_size, bank.features, keep=torch.tensor([False, True]))
    mixed = _predict(model, i, masked)
    assert torch.allclose(mixed[0], without[0], atol=1e-5)
    assert torch.allclose(mixed[1], with_ref[1], atol=1e-5)


@torch.no_grad()
def test_one_bank_serves_a_batch_that_repeats_its_references(model):
    i = _inputs(n=2)
    bank = model.encode_reference(i["ref"], i["embeds"])
    both = {k: torch.cat([v, v]) for k, v in i.items()}
    out = _predict(model, both, bank)
    assert torch.allclose(out[:2], out[2:], atol=1e-5)
    with pytest.raises(ValueError, match="multiple of 2"):
        _predict(model, {k: v[:1] if k != "ref" else v for k, v in i.items()}, bank)


def test_block_sizes_follow_diffusers_downsampling():
    assert block_size((24, 16), 384) == (24, 16)
    assert block_size((24, 16), 96) == (12, 8)
    assert block_size((96, 64), 6 * 4 * 16) == (24, 16)
    assert block_size((25, 17), 13 * 9) == (13, 9)
    with pytest.raises(ValueError, match="no downsampling"):
        block_size((24, 16), 100)


@torch.no_grad()
def test_save_load_round_trip_is_exact(model, tmp_path):
    for adapter in model.adapters.values():
        _randomize(adapter)
    _randomize(model.pose_guider.conv_out, seed=5)
    model.save_pretrained(tmp_path / "stage1")
    loaded = Standardizer.from_pretrained(tmp_path / "stage1").eval()
    assert loaded.config == model.config
    i = _inputs()
    a = _predict(model, i, model.encode_reference(i["ref"], i["embeds"], i["mask"], i["ref_pose"]))
    b = _predict(loaded, i, loaded.encode_reference(i["ref"], i["embeds"], i["mask"], i["ref_pose"]))
    assert torch.equal(a, b)
    model.save_pretrained(tmp_path / "stage1")  # overwrite in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stage1"]


def test_ablations_drop_their_parameters(unet):
    full = Standardizer.from_unet(unet, CONFIG)
    neither = Standardizer.from_unet(unet, StandardizerConfig(width=128, height=192, pose_channels=(4, 8, 8, 16),
                                                              fbdm=False, rpim=False))
    no_fbdm = Standardizer.from_unet(unet, StandardizerConfig(width=128, height=192, pose_channels=(4, 8, 8, 16), fbdm=False))
    assert neither.rpim is None and len(neither.adapters) == 0
    assert all(a.v_f is None and a.pose_proj is not None for a in no_fbdm.adapters.values())
    count = lambda m: sum(p.numel() for p in m.parameters())
    assert count(neither) < count(no_fbdm) < count(full)
    copy.deepcopy(full)  # EMA copies must keep processors pointing at their own adapters
    ema = copy.deepcopy(full)
    proc = next(m.processor for n, m in ema.reference_net.named_modules() if n.endswith("attn1"))
    assert any(proc.adapter is a for a in ema.adapters.values())
    assert not any(proc.adapter is a for a in full.adapters.values())
