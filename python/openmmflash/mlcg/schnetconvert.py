"""Convert a pickled mlcg ``StandardSchNet`` (read by ``safeunpickler``) into a FlashSchNet model.

Every option of mlcg's StandardSchNet that FlashSchNet reproduces is mapped onto ``FlashSchNetConfig``; anything
else raises ``UnsupportedModelError`` naming the option. Weight layout (mlcg -> FlashSchNet)::

    embedding_layer.weight                                    -> embedding.weight            [E, F]
    rbf_layer.offset | rbf_layer.means                        -> mu                          [R]
    rbf_layer.betas (ExpNormal)                               -> rbf_betas                   [R]
    interaction_blocks.t.conv.filter_network.layers.0.{w,b}   -> blocks.t.filter1.{w,b}      [F', R]
    interaction_blocks.t.conv.filter_network.layers.2.weight  -> blocks.t.filter2.weight     [F', F']
    interaction_blocks.t.conv.lin1.weight                     -> blocks.t.lin1.weight        [F', F]
    interaction_blocks.t.conv.lin2.{weight,bias}              -> blocks.t.lin2.{...}         [F, F']
    interaction_blocks.t.lin.{weight,bias}                    -> blocks.t.lin.{...}          [F, F]
    output_network.layers.(2k).{weight,bias}                  -> readout.k.{...}
"""

import math
from typing import Dict, Optional, Tuple

import torch

from openmmflash.mlcg.safeunpickler import PickledObject
from openmmflash.schnet.config import FlashSchNetConfig
from openmmflash.schnet.model import FlashSchNet

SCHNET_CLASSES = ("mlcg.nn.schnet.StandardSchNet", "mlcg.nn.schnet.SchNet")
BASES = {"mlcg.nn.radial_basis.gaussian.GaussianBasis": "gaussian",
         "mlcg.nn.radial_basis.exp_normal.ExpNormalBasis": "expnormal"}
CUTOFFS = {"mlcg.nn.cutoff.CosineCutoff": "cosine", "mlcg.nn.cutoff.IdentityCutoff": "identity",
           "mlcg.nn.cutoff.ShiftedCosineCutoff": "shiftedcosine"}
TANH = "torch.nn.modules.activation.Tanh"
LINEAR = "torch.nn.modules.linear.Linear"


class UnsupportedModelError(ValueError):
    """The mlcg model uses an option FlashSchNet does not reproduce."""


def className(obj) -> str:
    return getattr(obj, "className", type(obj).__name__)


def children(obj) -> Dict[str, object]:
    """Sub-modules of a pickled torch module, in order."""
    return dict(getattr(obj, "_modules", None) or {})


def child(obj, name: str, where: str):
    sub = children(obj).get(name)
    if sub is None:
        raise UnsupportedModelError(f"{where} has no sub-module {name!r} (found {sorted(children(obj))}); this is "
                                    "not an mlcg StandardSchNet layout")
    return sub


def flatState(obj, prefix: str = "") -> Dict[str, torch.Tensor]:
    """``state_dict()``-style flat dict of a pickled module tree (parameters and buffers)."""
    out: Dict[str, torch.Tensor] = {}
    for table in ("_parameters", "_buffers"):
        for name, value in (getattr(obj, table, None) or {}).items():
            if isinstance(value, torch.Tensor):
                out[prefix + name] = value.detach()
    for name, sub in children(obj).items():
        if isinstance(sub, PickledObject):
            out.update(flatState(sub, f"{prefix}{name}."))
    return out


def cutoffSpec(obj, where: str) -> Tuple[str, float, float, float]:
    """(kind, lower, upper, smooth_width) of an mlcg cutoff module."""
    kind = CUTOFFS.get(className(obj))
    if kind is None:
        raise UnsupportedModelError(f"{where}: cutoff function {className(obj)} is not supported (supported: "
                                    f"{', '.join(sorted(CUTOFFS))})")
    lower = float(getattr(obj, "cutoff_lower", 0.0) or 0.0)
    upper = float(getattr(obj, "cutoff_upper"))
    return kind, lower, upper, float(getattr(obj, "smooth_width", 0.5))


def linearShape(obj, where: str) -> Tuple[int, int, bool]:
    if className(obj) != LINEAR:
        raise UnsupportedModelError(f"{where} is a {className(obj)}, expected torch.nn.Linear")
    weight = obj._parameters["weight"]
    return int(weight.shape[1]), int(weight.shape[0]), obj._parameters.get("bias") is not None


def mlpLayers(obj, where: str):
    """Linear layers of an mlcg MLP, checking that every activation between them is tanh."""
    if className(obj) != "mlcg.nn.mlp.MLP":
        raise UnsupportedModelError(f"{where} is a {className(obj)}, expected mlcg.nn.mlp.MLP")
    layers = list(children(child(obj, "layers", where)).items())
    linears = []
    for k, (name, layer) in enumerate(layers):
        if k % 2 == 0:
            linears.append((name, linearShape(layer, f"{where}.layers.{name}")))
        elif className(layer) != TANH:
            raise UnsupportedModelError(f"{where}.layers.{name}: activation {className(layer)} is not supported "
                                        "(FlashSchNet supports tanh, mlcg's default)")
    if len(layers) % 2 == 0:
        raise UnsupportedModelError(f"{where} ends with an activation; expected a final Linear layer")
    return linears


def findSchNet(model):
    """The StandardSchNet inside a pickled SumOut / GradientsOut / ModuleDict (or the model itself)."""
    stack = [("", model)]
    while stack:
        path, obj = stack.pop(0)
        if className(obj) in SCHNET_CLASSES:
            return path, obj
        stack += [(f"{path}{name}.", sub) for name, sub in children(obj).items()]
    names = sorted({className(sub) for _, sub in _walk(model)})
    raise UnsupportedModelError(f"no mlcg SchNet found in the model (it contains {', '.join(names[:12])}); only "
                                "mlcg.nn.schnet.StandardSchNet converts to FlashSchNet")


def _walk(obj, path=""):
    yield path, obj
    for name, sub in children(obj).items():
        yield from _walk(sub, f"{path}{name}.")


def convertSchNet(schnet, weights: Optional[Dict[str, torch.Tensor]] = None) -> FlashSchNet:
    """FlashSchNet equal to the pickled mlcg SchNet ``schnet``; ``weights`` (flat, relative to the SchNet) override
    the pickled tensors (a Lightning checkpoint's trained ``state_dict``)."""
    where = className(schnet)
    if className(schnet) not in SCHNET_CLASSES:
        raise UnsupportedModelError(f"{where} is not an mlcg SchNet")
    state = flatState(schnet)
    state.update(weights or {})
    if getattr(schnet, "self_interaction", False):
        raise UnsupportedModelError("SchNet.self_interaction=True is not supported (mlcg itself refuses it)")

    embedding = child(schnet, "embedding_layer", where)
    if className(embedding) != "torch.nn.modules.sparse.Embedding":
        raise UnsupportedModelError(f"embedding_layer is a {className(embedding)}, expected torch.nn.Embedding")
    num_types, hidden = (int(s) for s in state["embedding_layer.weight"].shape)

    rbf = child(schnet, "rbf_layer", where)
    rbf_type = BASES.get(className(rbf))
    if rbf_type is None:
        raise UnsupportedModelError(f"radial basis {className(rbf)} is not supported (supported: "
                                    f"{', '.join(sorted(BASES))})")
    rbf_kind, rbf_lower, rbf_upper, rbf_smooth = cutoffSpec(child(rbf, "cutoff", "rbf_layer"), "rbf_layer.cutoff")
    if not math.isfinite(rbf_upper):
        raise UnsupportedModelError("rbf_layer.cutoff has an infinite upper cutoff; the neighbour list needs a "
                                    "finite one")
    if rbf_kind == "shiftedcosine" and rbf_lower != 0.0:
        raise UnsupportedModelError("rbf_layer.cutoff: ShiftedCosineCutoff with a lower cutoff is not supported")
    if rbf_type == "expnormal":
        mu, betas = state["rbf_layer.means"], state["rbf_layer.betas"]
        alpha = float(getattr(rbf, "alpha", 5.0 / (rbf_upper - rbf_lower)))
        if not math.isclose(alpha, 5.0 / (rbf_upper - rbf_lower), rel_tol=1e-12):
            raise UnsupportedModelError(f"ExpNormalBasis.alpha = {alpha} differs from 5 / (upper - lower); an "
                                        "ExtendedExpNormalBasis-style internal cutoff is not supported")
        gamma = None
    else:
        mu, betas = state["rbf_layer.offset"], None
        gamma = float(state["rbf_layer.coeff"].reshape(-1)[0])
        if state["rbf_layer.coeff"].numel() != 1:
            raise UnsupportedModelError("GaussianBasis with one width per function is not supported")
    num_rbf = int(mu.shape[0])

    blocks = list(children(child(schnet, "interaction_blocks", where)).items())
    if not blocks:
        raise UnsupportedModelError("the SchNet has no interaction blocks")
    filters, filter_spec = None, None
    for name, block in blocks:
        bw = f"interaction_blocks.{name}"
        if className(block) != "mlcg.nn.schnet.InteractionBlock":
            raise UnsupportedModelError(f"{bw} is a {className(block)}; only mlcg.nn.schnet.InteractionBlock "
                                        "(CFConv) converts")
        if className(child(block, "activation", bw)) != TANH:
            raise UnsupportedModelError(f"{bw}.activation {className(child(block, 'activation', bw))} is not "
                                        "supported (tanh only)")
        conv = child(block, "conv", bw)
        if className(conv) != "mlcg.nn.schnet.CFConv":
            raise UnsupportedModelError(f"{bw}.conv is a {className(conv)}, expected mlcg.nn.schnet.CFConv")
        aggr = getattr(conv, "aggr", "add")
        if aggr not in ("add", "sum"):
            raise UnsupportedModelError(f"{bw}.conv aggregation {aggr!r} is not supported (sum/add only)")
        spec = cutoffSpec(child(conv, "cutoff", f"{bw}.conv"), f"{bw}.conv.cutoff")
        if filter_spec is not None and spec != filter_spec:
            raise UnsupportedModelError(f"{bw}.conv.cutoff {spec} differs from the first block's {filter_spec}")
        filter_spec = spec
        layers = mlpLayers(child(conv, "filter_network", f"{bw}.conv"), f"{bw}.conv.filter_network")
        if len(layers) != 2 or layers[0][1][2] is False or layers[1][1][2] is True:
            raise UnsupportedModelError(f"{bw}.conv.filter_network must be Linear(R, F', bias) -> tanh -> "
                                        f"Linear(F', F', no bias), found {[shape for _, shape in layers]}")
        filters = layers[0][1][1]
    if filter_spec[0] == "shiftedcosine" and filter_spec[1] != 0.0:
        raise UnsupportedModelError("CFConv cutoff: ShiftedCosineCutoff with a lower cutoff is not supported")

    readout = mlpLayers(child(schnet, "output_network", where), "output_network")
    if readout[-1][1][1] != 1:
        raise UnsupportedModelError(f"output_network ends in {readout[-1][1][1]} outputs, expected 1")
    for name, (_, _, bias) in readout[:-1]:
        if not bias:
            raise UnsupportedModelError(f"output_network.layers.{name} has no bias; only the last layer may lack it")

    config = FlashSchNetConfig(
        numBeadTypes=num_types, hiddenChannels=hidden, numFilters=filters, numRbf=num_rbf,
        numInteractions=len(blocks), cutoff=rbf_upper, rbfCutoff=rbf_kind != "identity",
        readoutHidden=[shape[1] for _, shape in readout[:-1]], rbfType=rbf_type, rbfLower=rbf_lower,
        rbfGamma=gamma, rbfCutoffType=rbf_kind if rbf_kind != "identity" else "cosine",
        rbfSmoothWidth=rbf_smooth, filterCutoffType=filter_spec[0], filterCutoffLower=filter_spec[1],
        filterCutoffUpper=filter_spec[2], filterSmoothWidth=filter_spec[3],
        readoutLastBias=bool(readout[-1][1][2]), maxNumNeighbors=int(getattr(schnet, "max_num_neighbors", 0) or 0))
    model = FlashSchNet(config)
    new = {"embedding.weight": state["embedding_layer.weight"], "mu": mu}
    if betas is not None:
        new["rbf_betas"] = betas
    for t, (name, _) in enumerate(blocks):
        p = f"interaction_blocks.{name}."
        new.update({f"blocks.{t}.filter1.weight": state[p + "conv.filter_network.layers.0.weight"],
                    f"blocks.{t}.filter1.bias": state[p + "conv.filter_network.layers.0.bias"],
                    f"blocks.{t}.filter2.weight": state[p + "conv.filter_network.layers.2.weight"],
                    f"blocks.{t}.lin1.weight": state[p + "conv.lin1.weight"],
                    f"blocks.{t}.lin2.weight": state[p + "conv.lin2.weight"],
                    f"blocks.{t}.lin2.bias": state[p + "conv.lin2.bias"],
                    f"blocks.{t}.lin.weight": state[p + "lin.weight"],
                    f"blocks.{t}.lin.bias": state[p + "lin.bias"]})
    for k, (name, (_, _, bias)) in enumerate(readout):
        new[f"readout.{k}.weight"] = state[f"output_network.layers.{name}.weight"]
        if bias:
            new[f"readout.{k}.bias"] = state[f"output_network.layers.{name}.bias"]
    expected = set(model.state_dict())
    if set(new) != expected:
        raise UnsupportedModelError(f"weight layout mismatch: missing {sorted(expected - set(new))}, extra "
                                    f"{sorted(set(new) - expected)}")
    model.load_state_dict({k: v.to(torch.float32) if v.is_floating_point() else v for k, v in new.items()})
    return model.eval()
