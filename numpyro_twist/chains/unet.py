"""A pure-JAX forward pass of a diffusers ``UNet2DModel``, for the block types of the shipped digits model.

The parameters are a nested dict of arrays under diffusers' own names (``params["down_blocks"][1]
["attentions"][0]["to_q"]["weight"]``; numbered levels are lists), read from the model folder's
safetensors without torch, in diffusers' shapes (convolution kernels ``OIHW``). Images are ``(N, C, H, W)``
as in torch; inside, activations are ``NHWC`` (see :func:`conv2d`). Every layer computes what its diffusers
counterpart does in eval mode (no dropout):

* the sinusoidal time projection (``Timesteps``) and the ``TimestepEmbedding`` MLP;
* ``ResnetBlock2D`` with ``time_embedding_norm="default"`` (the time embedding added after ``conv1``);
* ``Attention`` over the ``H * W`` positions as its ``AttnProcessor2_0`` runs it for these blocks: a
  group norm, q/k/v projections, softmax attention per head, the output projection, the residual;
* ``Downsample2D`` (a stride-2 convolution) and ``Upsample2D`` (nearest 2x, then a convolution);
* ``DownBlock2D``, ``AttnDownBlock2D``, ``UNetMidBlock2D``, ``AttnUpBlock2D``, ``UpBlock2D`` and the
  skip connections between them.

Other options of ``UNet2DModel`` (Fourier or learned time embeddings, class labels, scale-shift norms,
resnet down/upsamplers, other block types) raise in :func:`unet_config`.
"""
import json
import math
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp

_HIGHEST = jax.lax.Precision.HIGHEST
_DOWN_BLOCKS = {"DownBlock2D": False, "AttnDownBlock2D": True}
_UP_BLOCKS = {"UpBlock2D": False, "AttnUpBlock2D": True}


class UNetConfig(NamedTuple):
    """The structure of a ``UNet2DModel`` (hashable: a static argument of :func:`unet_apply`)."""

    in_channels: int
    out_channels: int
    sample_size: int
    block_out_channels: tuple
    down_attention: tuple
    up_attention: tuple
    mid_attention: bool
    layers_per_block: int
    attention_head_dim: int
    norm_num_groups: int
    norm_eps: float
    flip_sin_to_cos: bool
    freq_shift: float
    downsample_padding: int
    mid_block_scale_factor: float


def unet_config(config):
    """A :class:`UNetConfig` from a ``UNet2DModel`` ``config.json`` (a dict); raises on options not built here."""
    expected = {"act_fn": "silu", "time_embedding_type": "positional", "class_embed_type": None,
                "num_class_embeds": None, "resnet_time_scale_shift": "default", "downsample_type": "conv",
                "upsample_type": "conv", "mid_block_type": "UNetMidBlock2D", "center_input_sample": False,
                "time_embedding_dim": None, "attn_norm_num_groups": None}
    for key, value in expected.items():
        if config.get(key, value) != value:
            raise ValueError(f"unet_apply supports {key}={value!r} only, got {config[key]!r}")
    unknown = [b for b in config["down_block_types"] if b not in _DOWN_BLOCKS]
    unknown += [b for b in config["up_block_types"] if b not in _UP_BLOCKS]
    if unknown:
        raise ValueError(f"unet_apply supports the blocks {sorted(_DOWN_BLOCKS) + sorted(_UP_BLOCKS)}, "
                         f"not {unknown}")
    channels = tuple(config["block_out_channels"])
    head_dim = config.get("attention_head_dim") or channels[-1]
    return UNetConfig(
        in_channels=config["in_channels"], out_channels=config["out_channels"], sample_size=config["sample_size"],
        block_out_channels=channels,
        down_attention=tuple(_DOWN_BLOCKS[b] for b in config["down_block_types"]),
        up_attention=tuple(_UP_BLOCKS[b] for b in config["up_block_types"]),
        mid_attention=bool(config.get("add_attention", True)), layers_per_block=config["layers_per_block"],
        attention_head_dim=head_dim, norm_num_groups=config["norm_num_groups"],
        norm_eps=float(config["norm_eps"]), flip_sin_to_cos=bool(config["flip_sin_to_cos"]),
        freq_shift=float(config["freq_shift"]), downsample_padding=config.get("downsample_padding", 1),
        mid_block_scale_factor=float(config.get("mid_block_scale_factor", 1.0)))


def _nest(flat):
    """``{"a.0.b": v}`` into ``{"a": [{"b": v}]}``: numbered levels become lists."""
    tree = {}
    for name, value in flat.items():
        node = tree
        *parents, leaf = name.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value

    def listify(node):
        if not isinstance(node, dict):
            return node
        node = {key: listify(child) for key, child in node.items()}
        if node and all(key.isdigit() for key in node):
            return [node[str(i)] for i in range(len(node))]
        return node

    return listify(tree)


def load_unet(folder, dtype=jnp.float32):
    """``(params, config)`` of the ``UNet2DModel`` saved in ``folder`` (its ``config.json`` and
    ``diffusion_pytorch_model.safetensors``), read with ``safetensors.numpy``."""
    from safetensors.numpy import load_file

    folder = Path(folder)
    config = unet_config(json.loads((folder / "config.json").read_text()))
    flat = load_file(folder / "diffusion_pytorch_model.safetensors")
    params = _nest({name: jnp.asarray(value, dtype) for name, value in flat.items()})
    return params, config


def linear(p, x):
    """torch's ``nn.Linear`` on the last axis: ``p`` holds its ``weight`` ``(out, in)`` and ``bias``."""
    return jnp.matmul(x, p["weight"].T, precision=_HIGHEST) + p["bias"]


def conv2d(p, x, stride=1, padding=None):
    """torch's ``nn.Conv2d`` on ``NHWC`` activations, with its ``OIHW`` ``weight`` and ``bias`` in ``p``;
    ``padding`` defaults to half the kernel (the shape-keeping padding of odd kernels)."""
    # NHWC activations and HWIO kernels: XLA:CPU runs this layout's convolutions ~60x faster than NCHW/OIHW
    # inside a while loop (a lax.scan over steps), and as fast outside one.
    weight = p["weight"].transpose(2, 3, 1, 0)  # diffusers' OIHW to HWIO
    if padding is None:
        padding = weight.shape[0] // 2
    out = jax.lax.conv_general_dilated(x, weight, (stride, stride), [(padding, padding)] * 2,
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=_HIGHEST)
    return out + p["bias"]


def _group_norm(p, x, groups, eps):
    # x is (N, ..., C): statistics over the positions and the channels of each group, as torch's GroupNorm
    n, c = x.shape[0], x.shape[-1]
    grouped = x.reshape(n, -1, groups, c // groups)
    mean = grouped.mean((1, 3), keepdims=True)
    var = jnp.square(grouped - mean).mean((1, 3), keepdims=True)
    normed = ((grouped - mean) * jax.lax.rsqrt(var + eps)).reshape(x.shape)
    return normed * p["weight"] + p["bias"]


def _resnet(p, x, temb, config, output_scale_factor=1.0):
    groups, eps = config.norm_num_groups, config.norm_eps
    h = conv2d(p["conv1"], jax.nn.silu(_group_norm(p["norm1"], x, groups, eps)))
    h = h + linear(p["time_emb_proj"], jax.nn.silu(temb))[:, None, None, :]
    h = conv2d(p["conv2"], jax.nn.silu(_group_norm(p["norm2"], h, groups, eps)))
    shortcut = conv2d(p["conv_shortcut"], x) if "conv_shortcut" in p else x
    return (shortcut + h) / output_scale_factor


def _attention(p, x, config, output_scale_factor=1.0):
    n, height, width, c = x.shape
    heads = c // config.attention_head_dim
    h = _group_norm(p["group_norm"], x, config.norm_num_groups, config.norm_eps)
    tokens = h.reshape(n, height * width, c)

    def split(t):  # (N, L, C) -> (N, heads, L, head_dim)
        return t.reshape(n, -1, heads, c // heads).transpose(0, 2, 1, 3)

    q, k, v = (split(linear(p[name], tokens)) for name in ("to_q", "to_k", "to_v"))
    scores = jnp.einsum("nhld,nhmd->nhlm", q, k, precision=_HIGHEST) / math.sqrt(c // heads)
    out = jnp.einsum("nhlm,nhmd->nhld", jax.nn.softmax(scores, axis=-1), v, precision=_HIGHEST)
    out = linear(p["to_out"][0], out.transpose(0, 2, 1, 3).reshape(n, -1, c))
    return (out.reshape(x.shape) + x) / output_scale_factor


def timestep_embedding(timesteps, dim, flip_sin_to_cos=True, freq_shift=0.0, max_period=10000):
    """diffusers' ``get_timestep_embedding``: ``(N,)`` timesteps into ``(N, dim)`` sinusoids, in float32."""
    half = dim // 2
    exponent = -math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / (half - freq_shift)
    angles = jnp.asarray(timesteps, jnp.float32)[:, None] * jnp.exp(exponent)[None, :]
    sin, cos = jnp.sin(angles), jnp.cos(angles)
    emb = jnp.concatenate([cos, sin] if flip_sin_to_cos else [sin, cos], axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


def unet_apply(params, x, timesteps, config):
    """The UNet's output (epsilon for the digits model) at images ``x`` ``(N, C, H, W)`` and ``timesteps``
    (a scalar or ``(N,)``). ``config`` is a :class:`UNetConfig` (static under ``jax.jit``)."""
    dtype = params["conv_in"]["weight"].dtype
    x = jnp.asarray(x, dtype)
    n = x.shape[0]
    timesteps = jnp.broadcast_to(jnp.asarray(timesteps), (n,))
    t_emb = timestep_embedding(timesteps, config.block_out_channels[0], config.flip_sin_to_cos,
                               config.freq_shift).astype(dtype)
    te = params["time_embedding"]
    temb = linear(te["linear_2"], jax.nn.silu(linear(te["linear_1"], t_emb)))

    h = conv2d(params["conv_in"], x.transpose(0, 2, 3, 1))  # NHWC inside
    skips = [h]
    last = len(config.block_out_channels) - 1
    for i, block in enumerate(params["down_blocks"]):
        for j in range(config.layers_per_block):
            h = _resnet(block["resnets"][j], h, temb, config)
            if config.down_attention[i]:
                h = _attention(block["attentions"][j], h, config)
            skips.append(h)
        if i < last:
            h = conv2d(block["downsamplers"][0]["conv"], h, stride=2, padding=config.downsample_padding)
            skips.append(h)

    mid, scale = params["mid_block"], config.mid_block_scale_factor
    h = _resnet(mid["resnets"][0], h, temb, config, scale)
    for j, resnet in enumerate(mid["resnets"][1:]):
        if config.mid_attention:
            h = _attention(mid["attentions"][j], h, config, scale)
        h = _resnet(resnet, h, temb, config, scale)

    for i, block in enumerate(params["up_blocks"]):
        for j in range(config.layers_per_block + 1):
            h = _resnet(block["resnets"][j], jnp.concatenate([h, skips.pop()], axis=-1), temb, config)
            if config.up_attention[i]:
                h = _attention(block["attentions"][j], h, config)
        if i < last:
            h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)
            h = conv2d(block["upsamplers"][0]["conv"], h)

    h = jax.nn.silu(_group_norm(params["conv_norm_out"], h, config.norm_num_groups, config.norm_eps))
    return conv2d(params["conv_out"], h).transpose(0, 3, 1, 2)

