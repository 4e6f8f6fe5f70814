"""FCU-Net layer properties and shapes."""

from __future__ import annotations

import pytest
import torch

from fourdcrystal.model.fcunet import (ComplexConv2d, FCUNet, FCUNetConfig, cross_correlation, enable_mc_dropout,
                                       parameter_count, pattern_inputs)


def test_cross_correlation_ignores_cbed_scale():
    g = torch.Generator().manual_seed(0)
    cbed, probe = torch.rand(2, 1, 32, 32, generator=g), torch.rand(2, 1, 32, 32, generator=g)
    a = cross_correlation(cbed, probe)
    b = cross_correlation(cbed * torch.tensor([7.3, 0.01])[:, None, None, None], probe)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)
    for domain in ("pattern", "spectral"):
        model = FCUNet(FCUNetConfig(width=4, depth=2, dropout=0.0, domain=domain)).eval()
        with torch.no_grad():
            out1, out2 = model(cbed, probe), model(cbed * 1e3, probe)
        torch.testing.assert_close(out1["vg"], out2["vg"], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="domain must be pattern or spectral"):
        FCUNet(FCUNetConfig(domain="fourier"))


def test_cross_correlation_is_the_fourier_product():
    # a delta probe at q = 0 (pixel (H//2, W//2), where probes are recorded): the correlation is
    # FFT(cbed) itself, up to the normalisation
    cbed = torch.rand(1, 1, 16, 16)
    probe = torch.zeros(1, 1, 16, 16)
    probe[..., 8, 8] = 1.0
    re, im = cross_correlation(cbed, probe)
    f = torch.fft.fft2(cbed)
    f = f / f.abs().max()
    torch.testing.assert_close(re, f.real, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(im, f.imag, rtol=1e-5, atol=1e-6)


def test_cross_correlation_peaks_on_the_label_grid():
    # disks of radius 3 px at pixels (64, 64) (the zero beam) and (40, 90); the probe is the same disk
    # recorded at q = 0 (pixel (64, 64)). The inverse FFT of the correlation must peak at the disks'
    # own pixels, where the V_g label puts them, not half an image away.
    i, j = torch.meshgrid(torch.arange(128.0), torch.arange(128.0), indexing="ij")

    def disk(ci, cj):
        return (((i - ci) ** 2 + (j - cj) ** 2) <= 9).float()

    cbed = (disk(64, 64) + 0.5 * disk(40, 90))[None, None]
    re, im = cross_correlation(cbed, disk(64, 64)[None, None])
    corr = torch.fft.ifft2(torch.complex(re, im)).real[0, 0]
    assert divmod(int(corr.argmax()), 128) == (64, 64)
    masked = corr.clone()
    masked[56:73, 56:73] = -1
    assert divmod(int(masked.argmax()), 128) == (40, 90)
    # the pattern-domain network reads that map: its first input channel peaks at the same pixels
    x = pattern_inputs(cbed, disk(64, 64)[None, None])
    assert x.shape == (1, 2, 128, 128)
    torch.testing.assert_close(x[0, 0], corr / corr.max(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(x[0, 1], cbed[0, 0].sqrt(), rtol=1e-5, atol=1e-6)


def test_complex_conv_equals_complex_product_by_hand():
    conv = ComplexConv2d(1, 1, kernel=1, bias=False)
    with torch.no_grad():
        conv.re.weight.fill_(0.75)
        conv.im.weight.fill_(-1.25)
    a, b = torch.randn(1, 1, 4, 4), torch.randn(1, 1, 4, 4)
    re, im = conv((a, b))
    w = complex(0.75, -1.25)
    for i in range(4):
        for j in range(4):
            z = complex(a[0, 0, i, j].item(), b[0, 0, i, j].item()) * w
            assert re[0, 0, i, j].item() == pytest.approx(z.real, abs=1e-6)
            assert im[0, 0, i, j].item() == pytest.approx(z.imag, abs=1e-6)


def test_complex_conv_3x3_matches_torch_complex_conv():
    conv = ComplexConv2d(2, 3, kernel=3, bias=False)
    a, b = torch.randn(1, 2, 8, 8), torch.randn(1, 2, 8, 8)
    re, im = conv((a, b))
    w = torch.complex(conv.re.weight, conv.im.weight)
    x = torch.complex(a, b)
    ref = torch.nn.functional.conv2d(x, w, padding=1)
    torch.testing.assert_close(re, ref.real, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(im, ref.imag, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size,depth,decoders,domain", [(32, 2, 1, "pattern"), (64, 3, 2, "pattern"),
                                                         (128, 4, 1, "pattern"), (32, 2, 1, "spectral"),
                                                         (64, 3, 2, "spectral")])
def test_output_shapes(size, depth, decoders, domain):
    model = FCUNet(FCUNetConfig(width=4, depth=depth, decoders=decoders, real_width=4, domain=domain))
    out = model(torch.rand(2, 1, size, size), torch.rand(2, 1, size, size))
    assert set(out) == {"vg", "qz"}
    assert out["vg"].shape == out["qz"].shape == (2, 1, size, size)
    assert parameter_count(model) > 0


def test_bad_size_and_mc_dropout():
    torch.manual_seed(0)  # unseeded, one initialisation in some hundreds gave a network whose output no dropout moved
    model = FCUNet(FCUNetConfig(width=4, depth=3, dropout=0.5))
    with pytest.raises(ValueError, match="divisible by 2\\^depth = 8"):
        model(torch.rand(1, 1, 36, 36), torch.rand(1, 1, 36, 36))
    enable_mc_dropout(model)
    x, p = torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        a, b = model(x, p)["vg"], model(x, p)["vg"]
    assert not torch.equal(a, b)  # dropout still samples
    assert not any(m.training for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_losses_against_hand_computed_values():
    """vg: plain MSE, or pixel weights 1 + a·max(V_g, 0) with the zero beam at 1; qz: V_g-weighted, zero beam out."""
    import numpy as np

    from fourdcrystal.model.losses import MultiTaskLoss, qz_weighted_mse, vg_nmse, vg_peak_weighted_mse

    rng = np.random.default_rng(3)
    t = rng.uniform(-0.05, 0.3, (2, 1, 6, 6))
    t[..., 3, 3] = 1.0  # the zero beam
    p = t + rng.normal(0, 0.1, t.shape)
    w = 1 + 50 * np.clip(t, 0, None)
    w[..., 3, 3] = 1
    expect = (w * (p - t) ** 2).sum() / w.sum()
    tt, pt = torch.tensor(t, dtype=torch.float32), torch.tensor(p, dtype=torch.float32)
    assert float(vg_peak_weighted_mse(pt, tt, 50.0)) == pytest.approx(expect, rel=1e-5)
    assert float(vg_peak_weighted_mse(pt, tt, 0.0)) == pytest.approx(((p - t) ** 2).mean(), rel=1e-5)
    qt, qp = rng.normal(0, 0.01, t.shape), rng.normal(0, 0.01, t.shape)
    wq = np.clip(t, 0, None)
    wq[..., 3, 3] = 0
    assert float(qz_weighted_mse(torch.tensor(qp), torch.tensor(qt), tt)) == pytest.approx(
        (wq * (qp - qt) ** 2).sum() / wq.sum(), rel=1e-5)
    loss = MultiTaskLoss("fixed", 1.0, 2.0, vg_peak_weight=50.0, vg_loss="mse")
    total, parts = loss({"vg": pt, "qz": torch.tensor(qp)}, {"vg": tt, "qz": torch.tensor(qt)})
    assert float(total) == pytest.approx(expect + 2 * float(parts["qz_wmse"]), rel=1e-5)
    # NMSE: the weighted squared error over the weighted squared label; 1 for an all-zero prediction
    nmse = (w * (p - t) ** 2).sum() / (w * t**2).sum()
    assert float(vg_nmse(pt, tt, 50.0)) == pytest.approx(nmse, rel=1e-5)
    assert float(vg_nmse(pt, tt)) == pytest.approx(((p - t) ** 2).sum() / (t**2).sum(), rel=1e-5)
    assert float(vg_nmse(torch.zeros_like(tt), tt)) == pytest.approx(1.0, rel=1e-6)
    total, parts = MultiTaskLoss("fixed", 1.0, 2.0, vg_peak_weight=50.0)(
        {"vg": pt, "qz": torch.tensor(qp)}, {"vg": tt, "qz": torch.tensor(qt)})  # nmse is the default
    assert float(total) == pytest.approx(nmse + 2 * float(parts["qz_wmse"]), rel=1e-5)
    assert float(parts["vg_mse"]) == pytest.approx(((p - t) ** 2).mean(), rel=1e-5)
    with pytest.raises(ValueError, match="vg_loss must be one of nmse, mse, asinh"):
        MultiTaskLoss(vg_loss="l1")


def test_asinh_loss_weighs_weak_reflections_like_strong_ones():
    """asinh: the NMSE of asinh(V_g/c); a miss of a 5 % reflection costs a third of a zero-beam miss, not 1/400."""
    import numpy as np

    from fourdcrystal.model.losses import MultiTaskLoss, vg_asinh_nmse, vg_nmse

    rng = np.random.default_rng(4)
    t = rng.uniform(-0.01, 0.2, (2, 1, 6, 6))
    p = t + rng.normal(0, 0.05, t.shape)
    tt, pt = torch.tensor(t, dtype=torch.float32), torch.tensor(p, dtype=torch.float32)
    c = 0.02
    a, b = np.arcsinh(p / c), np.arcsinh(t / c)
    assert float(vg_asinh_nmse(pt, tt, c)) == pytest.approx(((a - b) ** 2).sum() / (b**2).sum(), rel=1e-5)
    assert float(vg_asinh_nmse(torch.zeros_like(tt), tt, c)) == pytest.approx(1.0, rel=1e-6)
    # one pattern: zero beam 1 and one reflection at 0.05; predicting nothing for either
    label = torch.zeros(1, 1, 8, 8)
    label[..., 4, 4], label[..., 2, 6] = 1.0, 0.05
    miss_weak, miss_zero = label.clone(), label.clone()
    miss_weak[..., 2, 6] = 0.0
    miss_zero[..., 4, 4] = 0.0
    ratio_asinh = float(vg_asinh_nmse(miss_weak, label, c)) / float(vg_asinh_nmse(miss_zero, label, c))
    ratio_nmse = float(vg_nmse(miss_weak, label)) / float(vg_nmse(miss_zero, label))
    assert ratio_nmse == pytest.approx(0.05**2, rel=1e-4)
    assert ratio_asinh == pytest.approx((np.arcsinh(2.5) / np.arcsinh(50)) ** 2, rel=1e-4)
    assert ratio_asinh > 0.1
    total, parts = MultiTaskLoss("fixed", 1.0, 0.0, vg_loss="asinh", vg_asinh_scale=c)(
        {"vg": pt, "qz": torch.zeros_like(pt)}, {"vg": tt, "qz": torch.zeros_like(tt)})
    assert float(total) == pytest.approx(float(vg_asinh_nmse(pt, tt, c)), rel=1e-6)


def test_cards_from_before_the_domain_field_load_the_spectral_network(tmp_path):
    from fourdcrystal.model.card import load_model, save_model

    torch.manual_seed(0)
    for domain in ("spectral", "pattern"):
        config = FCUNetConfig(width=4, depth=2, real_width=4, domain=domain)
        arch = config.as_dict()
        if domain == "spectral":
            del arch["domain"]  # as written before the pattern network existed
        save_model(tmp_path / f"{domain}.pt", FCUNet(config).state_dict(), {"architecture": arch})
        model, _ = load_model(tmp_path / f"{domain}.pt")
        assert model.config.domain == domain


@pytest.mark.parametrize("domain", ["pattern", "spectral"])
def test_explicit_initialisation_equals_torch_default_bit_for_bit(domain, monkeypatch):
    """init_weights writes out the rule torch applies when it builds the layers: a model built with it equals
    one left at torch's defaults, weight for weight, and leaves the random generator where they leave it; and
    the rule holds (bounds ±1/√fan_in) whatever torch's defaults become."""
    import math

    from fourdcrystal.model import fcunet

    cfg = FCUNetConfig(width=4, depth=2, domain=domain)
    torch.manual_seed(7)
    explicit = FCUNet(cfg)
    after_explicit = torch.rand(3)
    monkeypatch.setattr(fcunet, "init_weights", lambda model: None)
    monkeypatch.setattr(torch.random, "set_rng_state", lambda state: None)  # no rewind: torch's own draws stay
    torch.manual_seed(7)
    default = FCUNet(cfg)
    after_default = torch.rand(3)
    a, b = explicit.state_dict(), default.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert torch.equal(after_explicit, after_default)
    convs = [m for m in explicit.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs
    for m in convs:
        fan_in = m.weight.shape[1] * m.weight[0, 0].numel()
        assert m.weight.abs().max() <= 1 / math.sqrt(fan_in) + 1e-7


def test_coordinate_channels_measure_from_the_zero_beam():
    """model.coords adds each pixel's offset from q = 0, (H//2, W//2), in pixels / 64, whatever the grid size: the
    same q has the same value on a 128² training grid and a 176² prediction grid."""
    from fourdcrystal.model.fcunet import coordinate_channels

    for h in (128, 176):
        c = coordinate_channels(torch.zeros(1, 2, h, h))
        assert c.shape == (1, 2, h, h)
        assert c[0, 0, h // 2, h // 2 + 5] == 0 and c[0, 1, h // 2, h // 2 + 5] == pytest.approx(5 / 64)
        assert c[0, 0, h // 2 - 64, 0] == pytest.approx(-1.0)
    model = FCUNet(FCUNetConfig(width=4, depth=2, coords=True))
    assert model.encoder[0][0].in_channels == 4
    assert model(torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 32))["qz"].shape == (1, 1, 32, 32)
    with pytest.raises(ValueError, match="coords needs the pattern domain"):
        FCUNet(FCUNetConfig(width=4, depth=2, coords=True, domain="spectral"))


def test_qz_loss_on_the_reflections_only():
    """qz_min_vg: pixels whose relative V_g is below it count for nothing in the q_z loss; 0 keeps every pixel."""
    from fourdcrystal.model.losses import qz_weighted_mse

    vg = torch.zeros(1, 1, 5, 5)
    vg[0, 0, 2, 2] = 1.0  # the zero beam: left out either way
    vg[0, 0, 0, 0] = 0.5  # a reflection
    vg[0, 0, 4, 4] = 0.01  # diffuse background
    true = torch.zeros_like(vg)
    pred = torch.zeros_like(vg)
    pred[0, 0, 4, 4] = 1.0  # wrong only on the background
    assert qz_weighted_mse(pred, true, vg) == pytest.approx(0.01 / 0.51)
    assert qz_weighted_mse(pred, true, vg, min_vg=0.05) == 0.0
    pred[0, 0, 0, 0] = 2.0
    assert qz_weighted_mse(pred, true, vg, min_vg=0.05) == pytest.approx(4.0)


def test_test_time_mirrors_average_the_mirrored_answers_and_make_the_network_mirror_equivariant():
    """tta: the answer is the mean of the network's answers to the pattern's mirrors about the zero beam, each
    mirrored back; so (for d4) a mirrored or transposed pattern gets exactly the mirrored answer, which an
    untrained network alone does not give."""
    import numpy as np

    from fourdcrystal.model.inference import Predictor, _TTA_STEPS, mirror, unmirror

    torch.manual_seed(0)
    model = FCUNet(FCUNetConfig(width=4, depth=2, dropout=0.0)).eval()
    card = {"labels": {"qz_scale_invA": 1.0}, "input": {"shape": [32, 32]}}
    rng = np.random.default_rng(0)
    x = rng.random((3, 32, 32)).astype(np.float32)
    p = rng.random((32, 32)).astype(np.float32)
    plain = Predictor(model, card, "cpu")
    manual = np.mean([unmirror(plain(np.ascontiguousarray(mirror(x, st)), np.ascontiguousarray(mirror(p, st)))[0],
                               st) for st in _TTA_STEPS["flips"]], axis=0)
    np.testing.assert_allclose(Predictor(model, card, "cpu", tta="flips")(x, p)[0], manual, atol=1e-6)
    d4 = Predictor(model, card, "cpu", tta="d4")
    base = d4(x, p)[0]
    for st in ((-2,), ("T",), ("T", -1)):
        np.testing.assert_allclose(d4(np.ascontiguousarray(mirror(x, st)), np.ascontiguousarray(mirror(p, st)))[0],
                                   mirror(base, st), atol=1e-5)
    alone = plain(np.ascontiguousarray(mirror(x, (-2,))), np.ascontiguousarray(mirror(p, (-2,))))[0]
    assert np.abs(alone - mirror(plain(x, p)[0], (-2,))).max() > 1e-3  # the network alone is not equivariant
    with pytest.raises(ValueError, match="square patterns"):
        d4(x[:, :, :16], p[:, :16])
    with pytest.raises(ValueError, match="tta must be one of"):
        Predictor(model, card, "cpu", tta="rot90")


@pytest.mark.parametrize("domain", ["pattern", "spectral"])
def test_inference_copy_folds_batch_norm_and_answers_as_the_model(domain):
    """Predictor runs a copy with each batch norm folded into its convolution, channels-last: the same answers
    as the model in eval mode (batch-norm statistics made non-trivial first, or folding would be a no-op), the
    caller's model untouched; bf16 stays close to fp32 and is refused by name when misspelt."""
    import numpy as np

    from fourdcrystal.model.inference import Predictor, inference_copy

    torch.manual_seed(1)
    model = FCUNet(FCUNetConfig(width=4, depth=2, dropout=0.0, domain=domain))
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    model.eval()
    fast = inference_copy(model, torch.device("cpu"))
    n_bn = lambda mod: sum(isinstance(m, torch.nn.BatchNorm2d) for m in mod.modules())  # noqa: E731
    if domain == "pattern":
        assert n_bn(fast) == 0 < n_bn(model)  # every real block's norm folded
    else:
        assert 0 < n_bn(fast) < n_bn(model)  # the complex blocks' norms stay, the real block's are folded
    before = n_bn(model)
    rng = np.random.default_rng(0)
    x = rng.random((3, 32, 32)).astype(np.float32) * 50
    p = rng.random((32, 32)).astype(np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(x)[:, None], torch.from_numpy(np.broadcast_to(p, x.shape).copy())[:, None])
    card = {"labels": {"qz_scale_invA": 2.0}, "input": {"shape": [32, 32]}}
    vg, qz = Predictor(model, card, "cpu")(x, p)
    scale = float(want["vg"].abs().max())
    np.testing.assert_allclose(vg, want["vg"][:, 0].numpy(), atol=1e-5 * scale)
    np.testing.assert_allclose(qz, 2.0 * want["qz"][:, 0].numpy(), atol=2e-5 * float(want["qz"].abs().max()) * 2)
    vg16, _ = Predictor(model, card, "cpu", precision="bf16")(x, p)
    err = np.abs(vg16 - vg).max() / scale
    assert 0 < err < 0.1  # bfloat16 arithmetic: not the same numbers, but near them
    assert n_bn(model) == before  # the caller's model is not changed
    with pytest.raises(ValueError, match="precision must be one of"):
        Predictor(model, card, "cpu", precision="fp16")


def test_auto_precision_is_bf16_only_where_the_cpu_does_it_in_hardware(tmp_path):
    """auto resolves from the CPU's flags and the network's width: bf16 with AVX-512 BF16 or AMX for a network at
    least 16 channels wide, else fp32 (emulated bfloat16, and bfloat16 on a narrow network, are slower than fp32);
    an unreadable cpuinfo is fp32; fp32 and bf16 stay as given."""
    from fourdcrystal.model import inference
    from fourdcrystal.model.inference import native_bf16, resolve_precision

    cpu = torch.device("cpu")
    plain, bf, amx = tmp_path / "plain", tmp_path / "bf", tmp_path / "amx"
    plain.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_vnni\n")
    bf.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16 avx512_vnni\n")
    amx.write_text("processor\t: 0\nflags\t\t: fpu amx_bf16 amx_tile\n")
    assert not native_bf16(cpu, str(plain))
    assert native_bf16(cpu, str(bf)) and native_bf16(cpu, str(amx))
    assert not native_bf16(cpu, str(tmp_path / "missing"))
    for flags, want in ((bf, "bf16"), (plain, "fp32")):
        orig = inference.native_bf16
        inference.native_bf16 = lambda d, _f=str(flags): orig(d, _f)
        try:
            assert resolve_precision("auto", cpu) == want
        finally:
            inference.native_bf16 = orig
    orig = inference.native_bf16
    inference.native_bf16 = lambda d, _f=str(bf): orig(d, _f)
    try:  # a narrow network stays in fp32 (the casts cost it more than bfloat16 saves)
        assert resolve_precision("auto", cpu, width=8) == "fp32" and resolve_precision("auto", cpu, width=16) == "bf16"
    finally:
        inference.native_bf16 = orig
    assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("half", cpu)


def test_compiled_network_answers_as_the_eager_one():
    """Predictor(compile=True) runs the same copy through torch.compile: the same answers to float rounding."""
    import numpy as np

    from fourdcrystal.model.inference import Predictor

    torch.manual_seed(0)
    model = FCUNet(FCUNetConfig(width=4, depth=2, dropout=0.0)).eval()
    card = {"labels": {"qz_scale_invA": 1.0}, "input": {"shape": [32, 32]}}
    x = np.random.default_rng(0).random((2, 32, 32)).astype(np.float32)
    p = np.ones((32, 32), np.float32)
    eager = Predictor(model, card, "cpu")(x, p)[0]
    compiled = Predictor(model, card, "cpu", compile=True)
    assert compiled._run_model is not compiled.model  # it did go through torch.compile
    np.testing.assert_allclose(compiled(x, p)[0], eager, atol=1e-5 * float(np.abs(eager).max()))
