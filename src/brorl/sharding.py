"""Fully sharded data parallelism for ``brorl train --sharding fsdp`` with PyTorch FSDP2 (docs/distributed.md).

The policy (and the KL reference) is wrapped with ``torch.distributed.fsdp.fully_shard``: one unit per decoder layer
and one at the root (embeddings, final norm, LM head, tied or not). At rest every rank holds 1/W of the parameters,
of the gradients and, because the optimizer is built over the sharded parameters, of the AdamW state.

Our ranks do not run the same passes: each generates its own share of the rollouts and trains on its own groups,
whose micro-batches depend on their lengths, with a prompt backward after each group's micro-batches. FSDP's
per-layer all-gathers inside every forward and backward need all ranks in lock-step, so they are not used. Instead
the parameters are gathered for a *phase* (``gathered``): every rank all-gathers every unit at the same point (one
all-gather per unit, same order everywhere), then runs any number of forwards and backwards with no collective
(``reshard_after_forward`` and ``reshard_after_backward`` off, gradient sync off: backward passes accumulate full
gradients locally), and reshards at the end. The phases are: a step's generation rounds, the recomputation of old
log-probs, the reference's log-probs (its own phase, on the sharded reference), each mini-batch's training passes,
and held-out evaluation. At the end of a mini-batch, ``Phase.reduce_scatter_gradients`` sums the ranks' gradients
and leaves each rank its shard: one reduce-scatter per unit, once per optimizer step, issued by FSDP itself from a
one-token forward/backward whose loss is 0 × logits (identical on every rank, so the collectives match; it adds
exact zeros to the accumulated gradients). Clipping then sees DTensor gradients, so ``clip_grad_norm_`` takes the
global norm, and AdamW updates each rank's shard.

Gradients are summed, not averaged (the loss is already divided by the global token count): the divide factor is
1 and reductions use ``SUM`` (gloo has no ``PREMUL_SUM``).

Checkpoints hold full, unsharded tensors gathered with ``torch.distributed.checkpoint.state_dict`` (rank 0 receives
them on the CPU), in the same format as a run without FSDP: the policy via ``save_pretrained``, the optimizer state
keyed by parameter index. So a checkpoint loads in transformers, and a run resumes with or without FSDP, on any
number of ranks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from brorl.config import ConfigError

__all__ = [
    "Phase",
    "decoder_layers",
    "full_model_state",
    "full_optimizer_state",
    "gathered",
    "is_sharded",
    "load_optimizer_state",
    "shard_model",
]

_GATHERED = "_brorl_gathered"  # on a sharded root module: its current Phase while gathered, else None
# FSDPModule methods the design relies on (fully_shard's runtime knobs; torch >= 2.8 has them all)
_API = (
    "unshard",
    "reshard",
    "set_requires_gradient_sync",
    "set_reshard_after_forward",
    "set_reshard_after_backward",
    "set_gradient_divide_factor",
    "set_force_sum_reduction_for_comms",
    "set_reduce_scatter_unused_params",
)


def _fsdp_module_class():
    try:
        from torch.distributed.fsdp import FSDPModule, fully_shard
    except ImportError:
        raise ConfigError(
            f"--sharding fsdp needs torch.distributed.fsdp.fully_shard (FSDP2); torch {torch.__version__} lacks it. "
            "Upgrade torch (tested with 2.13) or use --sharding none"
        ) from None
    missing = [name for name in _API if not hasattr(FSDPModule, name)]
    if missing:
        raise ConfigError(
            f"--sharding fsdp needs FSDPModule.{', '.join(missing)}, which torch {torch.__version__} lacks; "
            "upgrade torch (tested with 2.13) or use --sharding none"
        )
    return FSDPModule, fully_shard


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The modules that become FSDP units below the root: the model's decoder layers.

    Found through the Hugging Face ``_no_split_modules`` class names (the blocks a layer-wise device map keeps
    whole, the decoder layers of a causal LM); a module nested in an already chosen one is not chosen again. Raises
    ``ConfigError`` when the model has none, when a parameter is shared between a layer and anything outside it
    (FSDP needs a shared parameter in one unit: tied embeddings are fine, both live in the root), or when a unit
    mixes parameter dtypes.
    """
    names = set(getattr(model, "_no_split_modules", None) or ())
    kind = type(model).__name__
    chosen: list[tuple[str, torch.nn.Module]] = []
    for name, module in model.named_modules():
        if type(module).__name__ in names and not any(name.startswith(p + ".") for p, _ in chosen):
            chosen.append((name, module))
    if not chosen:
        raise ConfigError(
            f"--sharding fsdp cannot wrap {kind}: it names no decoder layer class (_no_split_modules = "
            f"{sorted(names)}), so there is nothing to shard per layer; use --sharding none"
        )
    layers = [m for _, m in chosen]
    owner: dict[int, int] = {}  # id(parameter) -> index of the layer holding it
    for i, layer in enumerate(layers):
        for p in layer.parameters():
            owner[id(p)] = i
    for name, p in model.named_parameters(remove_duplicate=False):
        i = owner.get(id(p))
        if i is not None and not name.startswith(chosen[i][0] + "."):
            raise ConfigError(
                f"--sharding fsdp cannot wrap {kind}: parameter {name} is shared with decoder layer {chosen[i][0]}, "
                "and FSDP needs a shared parameter inside one unit; use --sharding none"
            )
    units = [list(layer.parameters()) for layer in layers]
    units.append([p for p in model.parameters() if id(p) not in owner])
    for params in units:
        dtypes = {p.dtype for p in params if p.requires_grad}
        if len(dtypes) > 1:
            raise ConfigError(
                f"--sharding fsdp cannot wrap {kind}: one unit mixes parameter dtypes {sorted(map(str, dtypes))}; "
                "load the model in one dtype or use --sharding none"
            )
    return layers


def shard_model(model: torch.nn.Module, device: torch.device, world_size: int) -> torch.nn.Module:
    """Shard ``model`` in place over ``world_size`` ranks: one FSDP unit per decoder layer plus the root.

    Every rank must call it, in the same order for every model (it builds a device mesh). Afterwards the model's
    parameters are DTensors holding this rank's shard, and any forward must run inside ``gathered(model)``.
    """
    if world_size < 2:
        raise ConfigError(
            "--sharding fsdp shards the model across processes and needs at least 2: launch with "
            "torchrun --nproc_per_node K (K >= 2), or use --sharding none for one process"
        )
    FSDPModule, fully_shard = _fsdp_module_class()
    layers = decoder_layers(model)
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh(device.type, (world_size,))
    for layer in layers:  # children before the root, as fully_shard requires
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    for unit in (m for m in model.modules() if isinstance(m, FSDPModule)):
        unit.set_gradient_divide_factor(1.0)  # a sum: each rank's loss already has the global divisor
        unit.set_force_sum_reduction_for_comms(True)  # SUM, not PREMUL_SUM (gloo has none)
    # gathering is explicit (``gathered``), so forwards and backwards inside a phase never communicate
    model.set_reshard_after_forward(False)
    model.set_reshard_after_backward(False)
    model.set_requires_gradient_sync(False)  # backward passes accumulate full gradients locally
    model.set_reduce_scatter_unused_params(True)  # every rank reduces every parameter: same collective sizes
    model.register_forward_pre_hook(_refuse_ungathered_forward, prepend=True)
    setattr(model, _GATHERED, None)
    return model


def _refuse_ungathered_forward(module: torch.nn.Module, args: Any) -> None:
    if getattr(module, _GATHERED, module) is None:
        raise RuntimeError(
            f"forward of the sharded {type(module).__name__} outside brorl.sharding.gathered(): its implicit "
            "per-layer all-gathers would need every rank to run the same passes; gather the model for the phase"
        )


def is_sharded(model: Any) -> bool:
    """Whether ``model`` was sharded by ``shard_model``."""
    return model is not None and hasattr(model, _GATHERED)


def _units(model: torch.nn.Module) -> list[Any]:
    from torch.distributed.fsdp import FSDPModule

    return [m for m in model.modules() if isinstance(m, FSDPModule)]


class Phase:
    """What ``gathered`` yields: the model with full parameters, and the end-of-accumulation gradient reduction."""

    def __init__(self, model: torch.nn.Module | None) -> None:
        self.model = model
        self._has_grad: list[bool] | None = None

    def reduce_scatter_gradients(self, all_reduce: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Sum the gradients accumulated on every rank and keep this rank's shard (a collective: every rank calls it).

        Call after the phase's last backward. ``all_reduce`` sums a tensor over ranks (``Dist.sum``): it tells which
        parameters have a gradient on some rank, so a parameter no rank has one for keeps ``grad = None`` after the
        phase, as without FSDP. The reduce-scatter is FSDP's own, triggered by a one-token forward/backward whose
        loss is zero: the same graph on every rank, so the same collectives in the same order.
        """
        model = self.model
        if model is None:
            raise RuntimeError("reduce_scatter_gradients needs a model sharded with shard_model")
        params = list(model.parameters())  # the gathered (unsharded) parameters
        has = torch.tensor([p.grad is not None for p in params], dtype=torch.float32)
        self._has_grad = [h > 0 for h in all_reduce(has).tolist()]
        model.set_requires_gradient_sync(True)
        try:
            ids = torch.zeros((1, 1), dtype=torch.long, device=params[0].device)
            with torch.enable_grad():
                out = model(input_ids=ids, use_cache=False)
                (out.logits.float().sum() * 0.0).backward()
        finally:
            model.set_requires_gradient_sync(False)

    def _finish(self) -> None:
        if self._has_grad is None or self.model is None:
            return
        # the sharded parameters again, in the same order as the gathered ones were
        for p, has in zip(self.model.parameters(), self._has_grad, strict=True):
            if not has:
                p.grad = None
        self._has_grad = None


@contextmanager
def gathered(model: torch.nn.Module | None) -> Iterator[Phase]:
    """Full parameters of a sharded ``model`` for the duration of the block; a no-op for any other model.

    Every rank must enter the block at the same point (it all-gathers each unit) and may then run any forwards and
    backwards without communicating. On exit the parameters are resharded (no communication). A nested block is
    part of the enclosing phase.
    Memory: the full parameters (and, with backward passes, full gradients until they are reduce-scattered).
    """
    if not is_sharded(model):
        yield Phase(None)
        return
    outer = getattr(model, _GATHERED)
    if outer is not None:  # already gathered: the enclosing phase
        yield outer
        return
    units = _units(model)
    for unit in units:  # module order: the same on every rank
        unit.unshard()
    phase = Phase(model)
    setattr(model, _GATHERED, phase)
    try:
        yield phase
    finally:
        setattr(model, _GATHERED, None)
        for unit in units:
            unit.reshard()
    phase._finish()


def _options(**kwargs: Any):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(**kwargs)


def _tied_aliases(model: torch.nn.Module) -> dict[str, str]:
    """Parameter name -> the first name of the same parameter, for parameters registered under several names."""
    first: dict[int, str] = {}
    aliases = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in first:
            aliases[name] = first[id(p)]
        else:
            first[id(p)] = name
    return aliases


def full_model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The full (unsharded) state dict of a sharded model on rank 0, on the CPU; empty on other ranks.

    A collective: every rank calls it. Tied parameters point to one tensor again, so ``save_pretrained`` writes them
    once, as it does for an unsharded model.
    """
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    state = get_model_state_dict(model, options=_options(full_state_dict=True, cpu_offload=True))
    for alias, name in _tied_aliases(model).items():
        if alias in state and name in state:
            state[alias] = state[name]
    return state


def _parameter_names(model: torch.nn.Module, opt: torch.optim.Optimizer) -> list[str]:
    """Names of the optimizer's parameters in its index order (the order ``Optimizer.state_dict`` numbers them)."""
    name = {id(p): n for n, p in model.named_parameters()}
    return [name[id(p)] for group in opt.param_groups for p in group["params"]]


def full_optimizer_state(model: torch.nn.Module, opt: torch.optim.Optimizer) -> dict[str, Any]:
    """The full optimizer state of a sharded model on rank 0, as ``opt.state_dict()`` of an unsharded run would be.

    A collective: every rank calls it; other ranks get an empty dict. Keys are parameter indices (not names), so a
    checkpoint of an FSDP run resumes without FSDP and the other way round.
    """
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    names = _parameter_names(model, opt)
    full = get_optimizer_state_dict(model, opt, options=_options(full_state_dict=True, cpu_offload=True))
    if not full:
        return {}
    index = {n: i for i, n in enumerate(names)}
    groups = [dict(g, params=[index[n] for n in g["params"]]) for g in full["param_groups"]]
    return {"state": {index[n]: s for n, s in full["state"].items()}, "param_groups": groups}


def load_optimizer_state(model: torch.nn.Module, opt: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load a full, index-keyed optimizer state (any checkpoint) into the optimizer of a sharded model.

    Every rank passes the same full state and keeps its shard. The optimizer must have no gradients yet (torch
    initialises its state with a zero-learning-rate step first).
    """
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    names = _parameter_names(model, opt)
    if len(names) != sum(len(g["params"]) for g in state["param_groups"]):
        raise ValueError(
            f"the checkpoint's optimizer has {sum(len(g['params']) for g in state['param_groups'])} parameters, "
            f"this model {len(names)}; is it from another model?"
        )
    groups = [dict(g, params=[names[i] for i in g["params"]]) for g in state["param_groups"]]
    by_name = {"state": {names[i]: s for i, s in state["state"].items()}, "param_groups": groups}
    opt.zero_grad(set_to_none=True)
    set_optimizer_state_dict(model, opt, by_name, options=_options(full_state_dict=True))
    for group, saved in zip(opt.param_groups, state["param_groups"], strict=True):
        for key, value in saved.items():  # the round trip turns tuples (AdamW's betas) into lists
            if isinstance(value, tuple) and isinstance(group.get(key), list):
                group[key] = tuple(group[key])
