"""The built-in backbones `mlp` and `unet`: shapes, gradients, conditioning, options and errors.

The U-Net is also checked against diffusers' UNet2DModel: at a matched configuration, with
diffusers' weights copied in, both must compute the same function.
"""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from workbench.errors import ConfigError
from workbench.plugins.nets.layers import timestep_embedding
from workbench.plugins.nets.unet import Attention, ResBlock

# Small widths keep every U-Net here fast; groups=4 lets them be that small.
SMALL = dict(channels=8, groups=4, num_heads=2)


def randomize_zero_init(model: torch.nn.Module, generator: torch.Generator) -> torch.nn.Module:
    """Give the zero-initialised layers random weights, so that every path carries signal."""
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.copy_(0.1 * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    return model


def inputs(shape: tuple[int, ...], batch: int, generator: torch.Generator, dtype=torch.float32):
    x = torch.randn(batch, *shape, generator=generator, dtype=dtype)
    t = torch.randint(0, 1000, (batch,), generator=generator)
    return x, t


def check_gradients(model: torch.nn.Module, x: torch.Tensor, t: torch.Tensor) -> None:
    """At initialisation only the zeroed output layer can learn; once it is not zero, every parameter gets a gradient."""
    out = model(x, t)
    assert not out.any(), "a fresh network outputs zeros (zero-initialised output layer)"
    (out - 1).square().sum().backward()
    output_layer = list(model.parameters())[-2]  # the output layer's weight (then its bias)
    assert output_layer.grad.abs().sum() > 0

    randomize_zero_init(model, torch.Generator().manual_seed(1))
    model.zero_grad(set_to_none=True)
    model(x, t).square().sum().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


# --- registration -------------------------------------------------------------


def test_both_backbones_are_registered(registry):
    assert {"mlp", "unet"} <= set(registry.names("backbone"))
    for name in ("mlp", "unet"):
        entry = registry.get("backbone", name)
        assert entry.cls.summary()
        assert all(option.description for option in entry.cls.options())


def test_plugin_module_does_not_import_torch():
    code = "import sys, workbench.plugins.backbones; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# --- the time embedding ---------------------------------------------------------


def test_timestep_embedding_matches_the_closed_form():
    t = torch.tensor([0, 1, 7, 999])
    dim = 6
    emb = timestep_embedding(t, dim)
    half = dim // 2
    u = 2.0**-24  # float32's unit roundoff: the embedding is computed in float32
    for row, step in enumerate(t.tolist()):
        for i in range(half):
            w = 10000 ** (-i / half)
            # w_i = exp(x_i), x_i = -ln(10^4) i / half rounded twice (2u |x_i|), exp within 1 ulp (2u):
            # w_i is within (2 |x_i| + 2) u relatively, t w_i one rounding more; cos and sin pass an
            # argument's error on at most unchanged and add their own ulp (2u).
            x = math.log(10000) * i / half
            bound = (abs(step * w) * (2 * x + 3) + 2) * u
            assert emb[row, i].item() == pytest.approx(math.cos(step * w), rel=0, abs=bound)
            assert emb[row, half + i].item() == pytest.approx(math.sin(step * w), rel=0, abs=bound)
    odd = timestep_embedding(t, 7)
    assert odd.shape == (4, 7) and torch.equal(odd[:, :6], emb) and not odd[:, 6].any()


# --- mlp ------------------------------------------------------------------------------


@pytest.mark.parametrize("dim", [2, 5])
@pytest.mark.parametrize("factor", [1, 2])
def test_mlp_shapes_and_gradients(registry, dim, factor):
    g = torch.Generator().manual_seed(0)
    model = registry.build("backbone", "mlp", width=32, depth=2, time_embed_dim=16).build((dim,), factor * dim)
    x, t = inputs((dim,), 7, g)
    assert model(x, t).shape == (7, factor * dim)
    check_gradients(model, x, t)


def test_mlp_layer_norm_option(registry):
    with_norm = registry.build("backbone", "mlp", width=16, depth=2).build((2,), 2)
    without = registry.build("backbone", "mlp", width=16, depth=2, layer_norm=False).build((2,), 2)
    count = lambda m: sum(isinstance(x, torch.nn.LayerNorm) for x in m.modules())  # noqa: E731
    assert count(with_norm) == 3 and count(without) == 0


def test_mlp_rejects_images(registry):
    with pytest.raises(ConfigError, match="unet"):
        registry.build("backbone", "mlp").build((1, 8, 8), 1)


# --- unet: shapes, gradients, conditioning ----------------------------------------------

UNET_CASES = [
    ((1, 8, 8), dict(channel_mult=[1, 2], attention_resolutions=[4])),
    ((3, 16, 16), dict(channel_mult=[1, 2], attention_resolutions=[8], scale_shift=False)),
    ((3, 32, 32), dict(channel_mult=[1, 2, 2], attention_resolutions=[16], num_res_blocks=1)),
    ((1, 28, 28), dict(channel_mult=[1, 2, 2], attention_resolutions=[7], downsample="avgpool")),
    ((3, 64, 64), dict(channels=4, channel_mult=[1, 1, 2, 2], attention_resolutions=[16], num_res_blocks=1)),
]


@pytest.mark.parametrize("shape, options", UNET_CASES, ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else "")
@pytest.mark.parametrize("factor", [1, 2])
def test_unet_shapes_and_gradients(registry, shape, options, factor):
    g = torch.Generator().manual_seed(0)
    model = registry.build("backbone", "unet", **{**SMALL, **options}).build(shape, factor * shape[0])
    x, t = inputs(shape, 2, g)
    assert model(x, t).shape == (2, factor * shape[0], *shape[1:])
    check_gradients(model, x, t)


@pytest.mark.parametrize("name, shape, options", [
    ("mlp", (3,), dict(width=16, depth=2)),
    ("unet", (1, 8, 8), dict(SMALL, channel_mult=[1, 2], attention_resolutions=[4])),
    ("unet", (1, 8, 8), dict(SMALL, channel_mult=[1, 2], scale_shift=False)),
])
def test_time_conditioning_is_per_example(registry, name, shape, options):
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)  # the layers' own initialisation, independent of which tests ran before
    model = registry.build("backbone", name, **options).build(shape, shape[0]).double()
    randomize_zero_init(model, g)
    x, _ = inputs(shape, 3, g, torch.float64)
    x = x[:1].expand_as(x)  # one image, three steps
    t = torch.tensor([0, 10, 500])
    out = model(x, t)
    # float64: any real dependence on t is far above rounding (1e-15)
    assert (out[0] - out[1]).abs().max() > 1e-6 and (out[1] - out[2]).abs().max() > 1e-6
    # Each example sees its own step only (no statistics across the batch).
    for i in range(3):
        torch.testing.assert_close(model(x[i : i + 1], t[i : i + 1]), out[i : i + 1])
    # One step index stands for the whole batch.
    torch.testing.assert_close(model(x, torch.tensor(10)), model(x, torch.full((3,), 10)))


@pytest.mark.parametrize("name, shape, options", [
    ("mlp", (2,), dict(width=16, depth=2)),
    ("unet", (1, 8, 8), dict(SMALL, channel_mult=[1, 2])),
])
def test_dropout_only_in_training(registry, name, shape, options):
    g = torch.Generator().manual_seed(0)
    model = randomize_zero_init(registry.build("backbone", name, dropout=0.5, **options).build(shape, shape[0]), g)
    x, t = inputs(shape, 4, g)
    model.train()
    assert not torch.equal(model(x, t), model(x, t))
    model.eval()
    assert torch.equal(model(x, t), model(x, t))
    quiet = registry.build("backbone", name, **options).build(shape, shape[0])
    quiet.load_state_dict(model.state_dict())
    quiet.train()
    assert torch.equal(quiet(x, t), model(x, t))  # dropout = 0 in training is the eval network


def attention_sizes(model: torch.nn.Module, x: torch.Tensor, t: torch.Tensor) -> list[int]:
    """The feature-map heights at which attention runs, in the order it runs."""
    sizes: list[int] = []
    hooks = [m.register_forward_hook(lambda m, args, out: sizes.append(args[0].shape[-2]))
             for m in model.modules() if isinstance(m, Attention)]
    model(x, t)
    for h in hooks:
        h.remove()
    return sizes


def test_attention_runs_at_the_chosen_sizes(registry):
    g = torch.Generator().manual_seed(0)
    x, t = inputs((1, 16, 16), 1, g)
    build = lambda **o: registry.build("backbone", "unet", **SMALL, channel_mult=[1, 2, 2], **o).build((1, 16, 16), 1)  # noqa: E731
    # levels of 16, 8 and 4; two res blocks down and three up per level; the middle block at 4
    assert attention_sizes(build(attention_resolutions=[8]), x, t) == [8, 8, 4, 8, 8, 8]
    assert attention_sizes(build(attention_resolutions=[16, 4]), x, t) == [16, 16, 4, 4, 4, 4, 4, 4, 16, 16, 16]
    assert attention_sizes(build(attention_resolutions=[], mid_attention=False), x, t) == []
    heads = [m.num_heads for m in build(attention_resolutions=[8], head_channels=4).modules() if isinstance(m, Attention)]
    assert heads == [4] * 6  # width 16 at 8x8 and at 4x4, 4 channels per head


def test_attention_is_multi_head_softmax_attention():
    """softmax(q k^T / sqrt(d)) v per head, written out by hand (Vaswani et al. 2017, eq. 1)."""
    g = torch.Generator().manual_seed(0)
    B, C, H, W, heads = 2, 8, 3, 2, 2
    attention = randomize_zero_init(Attention(C, heads, groups=2), g).double()
    x = torch.randn(B, C, H, W, generator=g, dtype=torch.float64)
    tokens = attention.norm(x).reshape(B, C, H * W).transpose(1, 2)  # [B, N, C]
    q, k, v = attention.qkv(tokens).split(C, dim=-1)
    d = C // heads
    outputs = []
    for h in range(heads):
        qh, kh, vh = (z[..., h * d : (h + 1) * d] for z in (q, k, v))
        weights = torch.softmax(qh @ kh.transpose(1, 2) / math.sqrt(d), dim=-1)
        outputs.append(weights @ vh)
    expected = x + attention.proj(torch.cat(outputs, dim=-1)).transpose(1, 2).reshape(B, C, H, W)
    torch.testing.assert_close(attention(x), expected)


def test_scale_shift_is_adagn():
    """With scale_shift the step modulates the second norm: norm(h) * (1 + scale) + shift."""
    g = torch.Generator().manual_seed(0)
    block = randomize_zero_init(ResBlock(4, 8, embed_dim=6, groups=2, dropout=0.0, scale_shift=True), g).double()
    x = torch.randn(2, 4, 5, 5, generator=g, dtype=torch.float64)
    emb = torch.randn(2, 6, generator=g, dtype=torch.float64)
    scale, shift = block.emb_proj(emb)[:, :, None, None].chunk(2, dim=1)
    h = block.norm2(block.conv1(torch.nn.functional.silu(block.norm1(x))))
    expected = block.skip(x) + block.conv2(torch.nn.functional.silu(h * (1 + scale) + shift))
    torch.testing.assert_close(block(x, emb), expected)


def test_channels_last_gives_the_same_output(registry):
    g = torch.Generator().manual_seed(0)
    model = registry.build("backbone", "unet", **SMALL, channel_mult=[1, 2], attention_resolutions=[8]).build((2, 8, 8), 2)
    model = randomize_zero_init(model, g).double()
    x, t = inputs((2, 8, 8), 2, g, torch.float64)
    expected = model(x, t)
    model = model.to(memory_format=torch.channels_last)
    torch.testing.assert_close(model(x.contiguous(memory_format=torch.channels_last), t), expected)


# --- unet against diffusers' UNet2DModel -------------------------------------------------


def copy_diffusers_weights(ours: torch.nn.Module, theirs: torch.nn.Module) -> None:
    """Load UNet2DModel's weights into our U-Net (the same layers, under other names)."""
    source = theirs.state_dict()
    renames = {
        "time_embedding.": "time_embed.", "down_blocks.": "down.", "up_blocks.": "up.",
        "mid_block.resnets.0.": "mid.resnet_1.", "mid_block.resnets.1.": "mid.resnet_2.",
        "mid_block.attentions.0.": "mid.attention.", "conv_norm_out.": "norm_out.",
        "downsamplers.0.": "downsample.", "upsamplers.0.": "upsample.", "time_emb_proj.": "emb_proj.",
        "conv_shortcut.": "skip.", "group_norm.": "norm.", "to_out.0.": "proj.",
        "class_embedding.": "label_embed.",
    }
    state = {}
    for key, value in source.items():
        if ".to_k." in key or ".to_v." in key:
            continue
        if ".to_q." in key:  # our attention computes q, k and v with one linear layer
            value = torch.cat([source[key], source[key.replace("to_q", "to_k")], source[key.replace("to_q", "to_v")]])
            key = key.replace("to_q.", "qkv.")
        for old, new in renames.items():
            key = key.replace(old, new)
        state[key] = value
    ours.load_state_dict(state, strict=True)


@pytest.mark.parametrize("options", [
    dict(head_channels=4, scale_shift=False),
    dict(num_heads=2, scale_shift=True, attention_resolutions=[8]),  # AdaGN; heads by count, one width attended
])
def test_unet_computes_the_same_function_as_diffusers_unet2dmodel(registry, options):
    """`diffusers_config` builds the twin: the same parameters and, with its weights copied in, the same output."""
    diffusers = pytest.importorskip("diffusers")
    g = torch.Generator().manual_seed(0)
    options = dict(channels=8, channel_mult=[1, 2, 2], num_res_blocks=1, attention_resolutions=[4], groups=4) | options
    shape = (3, 16, 16)
    component = registry.build("backbone", "unet", **options)
    ours = component.build(shape, 6).double()
    theirs = diffusers.UNet2DModel(**component.diffusers_config(shape, 6)).double()
    assert component.parameter_count(shape, 6) == sum(p.numel() for p in theirs.parameters())
    copy_diffusers_weights(ours, theirs)
    x, _ = inputs(shape, 2, g, torch.float64)
    t = torch.tensor([3, 870])
    torch.testing.assert_close(ours(x, t), theirs(x, t).sample)


def test_diffusers_config_refuses_what_unet2dmodel_cannot_express(registry):
    shape = (3, 16, 16)
    # 4 heads over widths 8 (the 8x8 level) and 16 (the middle block): head sizes 2 and 4.
    uneven = registry.build("backbone", "unet", channels=8, channel_mult=[1, 2], attention_resolutions=[16],
                            num_heads=4, groups=4)
    pooled = registry.build("backbone", "unet", channels=8, channel_mult=[1, 2], head_channels=4, groups=4,
                            downsample="avgpool")
    for component in (uneven, pooled):
        with pytest.raises(ConfigError, match="no twin"):
            component.diffusers_config(shape, 3)


# --- configuration errors -----------------------------------------------------------------


def test_unet_rejects_vectors(registry):
    with pytest.raises(ConfigError, match="mlp"):
        registry.build("backbone", "unet", **SMALL).build((2,), 2)


def test_unet_size_must_halve_once_per_level(registry):
    unet = registry.build("backbone", "unet", **SMALL, channel_mult=[1, 2, 2, 2])
    with pytest.raises(ConfigError, match=r"28x28.*channel_mult \[1, 2, 2, 2\].*divisible by 8") as error:
        unet.build((1, 28, 28), 1)
    assert "at most 3 levels" in str(error.value)
    assert unet.build((1, 32, 32), 1)(torch.zeros(1, 1, 32, 32), torch.zeros(1, dtype=torch.long)).shape == (1, 1, 32, 32)


def test_unet_groups_must_divide_every_width(registry):
    with pytest.raises(ConfigError, match=r"groups = 32 does not divide the width 16.*set groups = 16"):
        registry.build("backbone", "unet", channels=16, channel_mult=[1, 2])
    with pytest.raises(ConfigError, match=r"width 36 \(channels 12 x channel_mult 3\).*set groups = 6"):
        registry.build("backbone", "unet", channels=12, channel_mult=[2, 4, 3], groups=8)
    registry.build("backbone", "unet", channels=12, channel_mult=[2, 4, 3], groups=6)


def test_unet_attention_sizes_must_exist(registry):
    unet = registry.build("backbone", "unet", **SMALL, channel_mult=[1, 2], attention_resolutions=[16])
    with pytest.raises(ConfigError, match=r"height 16.*8x8.*heights 8, 4"):
        unet.build((1, 8, 8), 1)


def test_unet_heads_must_divide_attention_widths(registry):
    with pytest.raises(ConfigError, match="num_heads = 3"):
        registry.build("backbone", "unet", **{**SMALL, "num_heads": 3}).build((1, 8, 8), 1)
    with pytest.raises(ConfigError, match="head_channels = 24"):
        registry.build("backbone", "unet", **SMALL, head_channels=24).build((1, 8, 8), 1)
    # without any attention the heads do not matter
    registry.build("backbone", "unet", **{**SMALL, "num_heads": 3}, mid_attention=False).build((1, 8, 8), 1)


@pytest.mark.parametrize("name, options", [
    ("unet", dict(channel_mult=[])),
    ("unet", dict(channel_mult=[1, 0])),
    ("unet", dict(dropout=1.0)),
    ("unet", dict(downsample="maxpool")),
    ("unet", dict(chanels=32)),
    ("mlp", dict(depth=0)),
    ("mlp", dict(width=-1)),
])
def test_bad_option_values_are_config_errors(registry, name, options):
    with pytest.raises(ConfigError, match=next(iter(options))):
        registry.build("backbone", name, **options)


# --- parameter counts -----------------------------------------------------------------------


@pytest.mark.parametrize("name, shape, options", [
    ("mlp", (2,), {}),
    ("mlp", (5,), dict(width=64, depth=4, layer_norm=False)),
    ("unet", (1, 8, 8), dict(channels=32, channel_mult=[1, 2], attention_resolutions=[4])),
    ("unet", (3, 32, 32), dict(SMALL, channel_mult=[1, 2, 2], attention_resolutions=[16], scale_shift=False)),
])
def test_parameter_count_matches_the_built_module(registry, name, shape, options):
    backbone = registry.build("backbone", name, **options)
    out = 2 * shape[0]
    assert backbone.parameter_count(shape, out) == sum(p.numel() for p in backbone.build(shape, out).parameters())


# --- class labels ---------------------------------------------------------------------------


@pytest.mark.parametrize("name, shape, options", [
    ("mlp", (3,), dict(width=16, depth=2)),
    ("unet", (1, 8, 8), dict(SMALL, channel_mult=[1, 2])),
])
def test_labels_condition_each_example_and_none_is_the_null_label(registry, name, shape, options):
    """model(x_t, t, y): a learned label embedding (K classes plus "no label", index K) added to the time embedding."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    backbone = registry.build("backbone", name, **options)
    model = randomize_zero_init(backbone.build(shape, shape[0], num_classes=3).double(), g)
    assert model.label_embed.num_embeddings == 4
    assert backbone.parameter_count(shape, shape[0], num_classes=3) == sum(p.numel() for p in model.parameters())
    x, _ = inputs(shape, 1, g, torch.float64)
    x, t = x.expand(4, *shape), torch.full((4,), 20)
    y = torch.tensor([0, 1, 2, 3])
    out = model(x, t, y)
    # float64: a real dependence on y is far above rounding
    assert all((out[i] - out[j]).abs().max() > 1e-6 for i in range(4) for j in range(i))
    for i in range(4):
        torch.testing.assert_close(model(x[i : i + 1], t[i : i + 1], y[i : i + 1]), out[i : i + 1])
    assert torch.equal(model(x, t), model(x, t, torch.full((4,), 3)))  # y None: "no label"
    check_gradients_with_labels(backbone.build(shape, shape[0], num_classes=3), shape, g)


def check_gradients_with_labels(model: torch.nn.Module, shape: tuple[int, ...], g: torch.Generator) -> None:
    randomize_zero_init(model, g)
    x, t = inputs(shape, 4, g)
    model(x, t, torch.tensor([0, 1, 2, 3])).square().sum().backward()
    assert model.label_embed.weight.grad.abs().sum(dim=1).gt(0).all()  # every row, "no label" too, learns


def test_conditional_unet_computes_the_same_function_as_diffusers_with_num_class_embeds(registry):
    diffusers = pytest.importorskip("diffusers")
    g = torch.Generator().manual_seed(0)
    options = dict(channels=8, channel_mult=[1, 2], num_res_blocks=1, attention_resolutions=[4], groups=4, head_channels=4)
    shape = (1, 8, 8)
    component = registry.build("backbone", "unet", **options)
    ours = component.build(shape, 1, num_classes=10).double()
    config = component.diffusers_config(shape, 1, num_classes=10)
    assert config["num_class_embeds"] == 11
    theirs = diffusers.UNet2DModel(**config).double()
    assert component.parameter_count(shape, 1, num_classes=10) == sum(p.numel() for p in theirs.parameters())
    theirs.class_embedding.weight.data.normal_(generator=g)
    copy_diffusers_weights(ours, theirs)
    x, _ = inputs(shape, 3, g, torch.float64)
    t, y = torch.tensor([3, 500, 870]), torch.tensor([0, 7, 10])
    torch.testing.assert_close(ours(x, t, y), theirs(x, t, class_labels=y).sample)
