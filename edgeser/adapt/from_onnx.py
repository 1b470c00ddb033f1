"""Rebuild an ``EmotionNet`` from an edgeser ONNX file (e.g. the bundled default model, shipped without
its checkpoint), to re-export it in another graph form or to adapt it.

Both graph forms are read. The bundled model is the incremental graph (``export_incremental_net``,
``weights="int8"``: its MatMul/Gemm weights stored int8, read dequantized through
:func:`edgeser.export.storage.stored_weights`); its metadata carries the network config. The whole-clip
graph (``export_onnx``: Conv nodes) gives the config through its layers.

The exporters fold each batch norm that follows a convolution or a linear layer into that layer (the
stem, the dilated blocks and the bottleneck get a bias; the whole-clip graph keeps the input norm as a
BatchNormalization node, the incremental graph folds its affine map into the stem too), so the original
batch-norm parameters cannot be recovered. The rebuilt net puts the folded weights in the conv/linear
layers and makes those batch norms an exact identity plus the folded bias (``running_var = 1 - eps``,
``running_mean = 0``, ``weight = 1``): in eval mode it computes what the ONNX graph computes (to float
rounding). Train-mode batch norm would normalise by batch statistics instead; call ``calibrate_batchnorm``
on real audio first to give the batch norms statistics that leave the eval output unchanged and make train
mode start close to it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import ModelError
from ..melscale import dft_kernels, mel_filterbank
from .model import EmotionNet, ModelConfig

METADATA_KEY = "edgeser"


def _attrs(node) -> dict:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _config(meta: dict, convs: list, gemms: list, mel: np.ndarray, weights: dict) -> ModelConfig:
    front, stem, blocks = convs[0], convs[1], convs[2:]
    fa, sa = _attrs(front), _attrs(stem)
    cfg = ModelConfig(
        labels=list(meta["labels"]),
        sample_rate=int(meta["sample_rate"]),
        n_fft=int(fa["kernel_shape"][0]),
        hop_length=int(fa["strides"][0]),
        n_mels=int(mel.shape[0]),
        channels=int(weights[stem.input[1]].shape[0]),
        stem_stride=int(sa["strides"][0]),
        dilations=tuple(int(_attrs(b)["dilations"][0]) for b in blocks),
        bottleneck=int(weights[gemms[0].input[1]].shape[0]),
        window_s=float(meta["window_s"]),
        hop_s=float(meta["hop_s"]),
    )
    if (cfg.receptive_field, cfg.embedding_stride, cfg.channels) != (
        meta["receptive_field"],
        meta["embedding_stride"],
        meta["embedding_dim"],
    ):
        raise ModelError("the graph's layers do not match its metadata (receptive field, stride, channels)")
    ref = mel_filterbank(cfg.n_fft // 2 + 1, cfg.n_mels, cfg.sample_rate, cfg.f_min, cfg.f_max)
    if ref.shape != mel.shape or np.abs(ref - mel).max() > 1e-6:
        raise ModelError("the graph's mel filterbank is not edgeser's default one (f_min/f_max differ)")
    return cfg


def _identity_bn(bn: nn.BatchNorm1d, bias: np.ndarray) -> None:
    """Make ``bn`` (eval mode) compute ``x + bias`` exactly: ``(x - 0) / sqrt((1 - eps) + eps) * 1 + bias``."""
    with torch.no_grad():
        bn.running_mean.zero_()
        bn.running_var.fill_(1.0 - bn.eps)
        bn.weight.fill_(1.0)
        bn.bias.copy_(torch.from_numpy(np.array(bias, np.float32)))


def _put(path: Path, param: torch.Tensor, name: str, value: np.ndarray) -> None:
    tensor = torch.from_numpy(np.array(value, np.float32))
    if tensor.shape != param.shape:
        raise ModelError(f"{path}: {name} has shape {tuple(tensor.shape)}, expected {tuple(param.shape)}")
    with torch.no_grad():
        param.copy_(tensor)


def _head(path: Path, net: EmotionNet, gemms: list, weights: dict) -> None:
    """Bottleneck and classifier from the two Gemm nodes (the bottleneck's batch norm is folded into the
    first: an identity here)."""
    lin, bn = net.bottleneck_layer[0], net.bottleneck_layer[1]
    _put(path, lin.weight, gemms[0].input[1], weights[gemms[0].input[1]])
    _put(path, lin.bias, gemms[0].input[2], weights[gemms[0].input[2]])
    _identity_bn(bn, np.zeros(net.cfg.bottleneck, np.float32))
    _put(path, net.classifier.weight, gemms[1].input[1], weights[gemms[1].input[1]])
    _put(path, net.classifier.bias, gemms[1].input[2], weights[gemms[1].input[2]])


def _frontend(path: Path, net: EmotionNet, weights: dict) -> None:
    """Check the incremental graph's DFT and mel matrices against what ``IncrementalGraph`` builds from
    edgeser's frontend for this config, to float rounding (``export_incremental_net`` keeps them fp32), so
    that the net's own frontend computes what the file computes."""
    from .incremental import IncrementalGraph

    ref = IncrementalGraph(net)
    for name in ("window", "stage1", "twiddle_cos", "twiddle_sin", "stage2", "dft", "mel"):
        if not hasattr(ref, name):  # the factored DFT's matrices, or one DFT product (n_fft prime)
            continue
        want = getattr(ref, name).numpy()
        got = weights.get(name)
        if got is None or got.shape != want.shape:
            raise ModelError(f"{path}: the graph's frontend ({name}) is not the one of its config")
        if np.abs(got - want).max() > 1e-6:
            what = "mel filterbank (f_min/f_max differ?)" if name == "mel" else "DFT"
            raise ModelError(f"{path}: the graph's {what} is not edgeser's for its config")


def _load_incremental(path: Path, model, meta: dict) -> EmotionNet:  # noqa: ANN001 (onnx.ModelProto)
    """The incremental graph (``IncrementalGraph``): layers as time-major MatMuls, batch norms and the
    input norm folded in; unfolded here into an EmotionNet with identity batch norms."""
    from ..export.storage import stored_weights

    inc = meta["incremental"]
    if not isinstance(inc, dict) or "config" not in inc:
        raise ModelError(
            f"{path}: incremental graph whose metadata lacks its network config (incremental.config); "
            "re-export it with this edgeser, or rebuild from the whole-clip model file"
        )
    try:
        # the rebuilt batch norms are identities (the file folds them into the layers), so training re-estimates
        # every statistic: the library's default applies unless the file says how its model was trained
        cfg = ModelConfig.from_dict({"masked_norm": ModelConfig.masked_norm, **inc["config"]})
    except (TypeError, ValueError) as e:
        raise ModelError(f"{path}: malformed network config in the metadata ({e})") from None
    try:
        if (list(cfg.labels), cfg.receptive_field, cfg.embedding_stride, cfg.channels) != (
            list(meta["labels"]),
            meta["receptive_field"],
            meta["embedding_stride"],
            meta["embedding_dim"],
        ):
            raise ModelError(
                f"{path}: the network config does not match the metadata (labels, receptive field, stride, channels)"
            )
    except KeyError as e:
        raise ModelError(f"{path}: edgeser metadata lacks {e}") from None
    weights = stored_weights(model)
    gemms = [n for n in model.graph.node if n.op_type == "Gemm"]
    if len(gemms) != 2 or any(_attrs(g).get("transB") != 1 or _attrs(g).get("transA", 0) != 0 for g in gemms):
        raise ModelError(f"{path}: not the graph of an edgeser EmotionNet (unexpected head)")
    if f"block{len(cfg.dilations)}_w" in weights:
        raise ModelError(f"{path}: the graph has more dilated blocks than its config ({len(cfg.dilations)})")
    net = EmotionNet(cfg).eval()
    c, k = cfg.channels, net.stem[0].kernel_size[0]
    try:
        _frontend(path, net, weights)
        # the input norm's affine map is folded into the stem: here an exact identity
        _identity_bn(net.input_norm, np.zeros(cfg.n_mels, np.float32))
        # a layer's matrix: rows tap-major (tap, input channel), columns the output channels
        # (adapt.incremental._fold: conv weight [out, in, tap] permuted to [tap, in, out]); undone here
        layers = [("stem", net.stem[0], net.stem[1], cfg.n_mels)]
        layers += [(f"block{i}", blk.conv, blk.bn, c) for i, blk in enumerate(net.blocks)]
        for name, conv, bn, c_in in layers:
            w = weights[f"{name}_w"]
            if w.shape != (k * c_in, c):
                raise ModelError(f"{path}: {name}_w has shape {w.shape}, expected {(k * c_in, c)}")
            _put(path, conv.weight, f"{name}_w", np.ascontiguousarray(w.reshape(k, c_in, c).transpose(2, 1, 0)))
            b = weights[f"{name}_b"]
            if b.shape != (c,):
                raise ModelError(f"{path}: {name}_b has shape {b.shape}, expected {(c,)}")
            _identity_bn(bn, b)
        _head(path, net, gemms, weights)
    except KeyError as e:
        raise ModelError(f"{path}: the graph lacks the weight {e}") from None
    return net


def load_onnx_weights(path: str | Path) -> EmotionNet:
    """An ``EmotionNet`` (eval mode) computing what the edgeser ONNX graph at ``path`` computes: the
    whole-clip graph (``export_onnx``) or the incremental one (``export_incremental_net``, fp32 or
    int8-stored weights; its metadata carries the network config). Checked: the layers must match the
    metadata and the frontend edgeser's."""
    import onnx

    from ..export.storage import stored_weights

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    try:
        model = onnx.load(str(path))
    except Exception as e:
        raise ModelError(f"{path}: not a readable ONNX file ({type(e).__name__})") from None
    meta_map = {p.key: p.value for p in model.metadata_props}
    if METADATA_KEY not in meta_map:
        raise ModelError(f"{path}: ONNX model without edgeser metadata")
    meta = json.loads(meta_map[METADATA_KEY])
    if "incremental" in meta:
        return _load_incremental(path, model, meta)
    weights = stored_weights(model)
    nodes = list(model.graph.node)
    convs = [n for n in nodes if n.op_type == "Conv"]
    bns = [n for n in nodes if n.op_type == "BatchNormalization"]
    gemms = [n for n in nodes if n.op_type == "Gemm"]
    mels = [n for n in nodes if n.op_type == "MatMul" and n.input[0] in weights]
    if (
        len(convs) < 3
        or len(bns) != 1
        or len(gemms) != 2
        or len(mels) != 1
        or any(len(c.input) != 3 for c in convs[1:])
        or any(_attrs(g).get("transB") != 1 for g in gemms)
    ):
        raise ModelError(f"{path}: not the graph of an edgeser EmotionNet (unexpected layers)")
    mel = weights[mels[0].input[0]]
    try:
        cfg = _config(meta, convs, gemms, mel, weights)
    except (KeyError, IndexError) as e:
        raise ModelError(f"{path}: cannot read the network's shape from the graph ({e})") from None
    net = EmotionNet(cfg).eval()
    re, im = dft_kernels(cfg.n_fft)
    if np.abs(np.concatenate([re, im])[:, None] - weights[convs[0].input[1]]).max() > 1e-6:
        raise ModelError(f"{path}: the graph's DFT kernels are not edgeser's")
    eps = float(_attrs(bns[0]).get("epsilon", 1e-5))
    if abs(eps - net.input_norm.eps) > 1e-9:
        raise ModelError(f"{path}: input norm epsilon {eps} differs from torch's {net.input_norm.eps}")
    w, b, mean, var = bns[0].input[1:5]
    for param, name in (
        (net.input_norm.weight, w),
        (net.input_norm.bias, b),
        (net.input_norm.running_mean, mean),
        (net.input_norm.running_var, var),
    ):
        _put(path, param, name, weights[name])
    layers = [(net.stem[0], net.stem[1])] + [(blk.conv, blk.bn) for blk in net.blocks]
    for (conv, bn), node in zip(layers, convs[1:]):
        _put(path, conv.weight, node.input[1], weights[node.input[1]])
        _identity_bn(bn, weights[node.input[2]])
    _head(path, net, gemms, weights)
    return net


@torch.no_grad()
def calibrate_batchnorm(net: EmotionNet, wavs: Sequence[np.ndarray]) -> EmotionNet:
    """Give the folded batch norms (stem, blocks, bottleneck; identity + bias after ``load_onnx_weights``)
    the mean and variance of their inputs over ``wavs`` (frames, or one pooled vector per clip for the
    bottleneck) and the affine parameters that undo them, so the eval output is unchanged (up to
    rounding) while train mode starts close to it. In place; returns ``net``."""
    net.eval()
    layers = [(net.stem[0], net.stem[1])] + [(blk.conv, blk.bn) for blk in net.blocks]
    layers.append((net.bottleneck_layer[0], net.bottleneck_layer[1]))
    sums: dict[int, list] = {i: [0.0, 0.0, 0] for i in range(len(layers))}
    hooks = []
    for i, (layer, _) in enumerate(layers):

        def hook(_m, _inp, out, i=i):
            x = out.double()
            x = x if x.dim() == 3 else x.unsqueeze(2)
            s = sums[i]
            s[0] = s[0] + x.sum(dim=(0, 2))
            s[1] = s[1] + (x * x).sum(dim=(0, 2))
            s[2] += x.shape[0] * x.shape[2]

        hooks.append(layer.register_forward_hook(hook))
    try:
        for w in wavs:
            if len(w) >= net.cfg.receptive_field:
                net(torch.from_numpy(np.asarray(w, np.float32))[None])
    finally:
        for h in hooks:
            h.remove()
    for i, (_, bn) in enumerate(layers):
        total, sq, n = sums[i]
        if not n:
            raise ValueError("calibrate_batchnorm needs audio at least one receptive field long")
        mean = total / n
        var = (sq / n - mean * mean).clamp_min(0.0)
        old_scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
        old_shift = bn.bias.double() - bn.running_mean.double() * old_scale
        # keep y = old_scale * x + old_shift with the new statistics: weight = old_scale * sqrt(var + eps)
        bn.running_mean.copy_(mean.float())
        bn.running_var.copy_(var.float())
        bn.weight.copy_((old_scale * torch.sqrt(var + bn.eps)).float())
        bn.bias.copy_((old_shift + old_scale * mean).float())
    return net
