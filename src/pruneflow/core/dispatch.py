"""A streamed variant as one model object (for code that needs a model: lm-eval's zero-shot scoring, the speed job).

:func:`stream_dispatch` (zero-shot) keeps a declared number of decoder blocks loaded and reads every other block
from the variant when its forward runs, freeing it after: the job holds the embeddings and head, those blocks
and a batch's activations, whatever the model's size (as the perplexity job, which streams blocks itself).

:func:`dispatch_stream` asks accelerate's ``infer_auto_device_map`` where each decoder block fits within
``max_memory`` (every visible GPU first, then the CPU, then disk), loads each block from the stream straight
to its place, writes the blocks that fit nowhere to an offload folder (accelerate's memory-mapped format,
one block at a time), and lets ``dispatch_model`` attach the hooks that move weights and activations
as the forward goes. With no limit on a single device the result is a plain model on that device, the
same as loading it whole.
"""

from __future__ import annotations

import torch
from accelerate import dispatch_model, infer_auto_device_map
from accelerate.utils import offload_weight, save_offload_index

from pruneflow.spec.resources import parse_size


class DispatchError(ValueError):
    pass


def memory_budget(device, max_memory: dict | None) -> dict | None:
    """accelerate's ``max_memory`` ({gpu index | "cpu": bytes}) from ``runtime.max_memory`` ({"cuda" | "cuda:i" |
    "cpu": size}); None when nothing limits a single device (the model goes there whole)."""
    if not max_memory:
        if torch.device(device).type == "cuda" and torch.cuda.device_count() > 1:
            return {}  # accelerate's own budget: the free memory of every visible GPU, then the CPU
        return None
    budget = {}
    for key, size in max_memory.items():
        key = str(key)
        if key == "cpu":
            budget["cpu"] = parse_size(size)
        elif key == "cuda":
            budget.update({i: parse_size(size) for i in range(torch.cuda.device_count())})
        elif key.startswith("cuda:") and key[5:].isdigit():
            budget[int(key[5:])] = parse_size(size)
        else:
            raise DispatchError(f"runtime.max_memory key {key!r}: allowed cpu, cuda (every GPU) or cuda:<index>")
    return budget


def stream_dispatch(stream, device="cpu", held: int = 1):
    """The whole model of ``stream`` on ``device``, holding at most ``held`` decoder blocks at once: blocks
    0 .. held-2 are loaded once and kept; each other block is loaded from the stream when its forward runs and
    released when it returns (so every batch reads them again). ``held`` >= the number of blocks: the whole
    model, loaded once. lm-eval's numbers are those of the whole model: the same blocks run on the same inputs."""
    if held < 1:
        raise DispatchError(f"blocks held at once: {held!r}; allowed an integer >= 1")
    if stream.in_memory:
        raise DispatchError("a model in memory is whole already: evaluate it as it is (a stored variant streams)")
    model = stream.model
    with stream.arch.blocks_detached(model):
        model.to(device)
    for index, template in enumerate(stream.blocks_list()):
        if index < held - 1 or held >= stream.num_blocks:
            stream.load(index, device, place=True)
        else:  # the meta shell stays in the skeleton (its attributes are read by the model's forward); it runs the stored block
            template.forward = _streamed_forward(stream, index, device)
    return model


def _streamed_forward(stream, index: int, device):
    def forward(*args, **kwargs):
        with stream.loaded(index, device) as block:
            return block(*args, **kwargs)

    return forward


def dispatch_stream(stream, device="cpu", max_memory: dict | None = None, offload_dir=None):
    """The whole model of ``stream`` (a :class:`~pruneflow.core.stream.ModelStream`) ready for a forward pass:
    on ``device`` whole when ``max_memory`` sets no limit, otherwise spread by accelerate (GPUs, CPU, then
    ``offload_dir`` on disk). Returns the model; its blocks stay loaded until the stream releases them."""
    budget = memory_budget(device, max_memory)
    model = stream.model
    if budget is None:
        stream.load_all(device)
        with stream.arch.blocks_detached(model):
            model.to(device)
        return model
    no_split = sorted({type(block).__name__ for block in stream.blocks_list()})
    device_map = infer_auto_device_map(model, max_memory=budget or None, no_split_module_classes=no_split, dtype=stream.dtype)
    device_map = _expand(device_map, model, stream.blocks_path)
    for name, where in device_map.items():  # embeddings and head are held anyway (the skeleton): never on disk
        if where == "disk" and not _is_block(name, stream.blocks_path):
            device_map[name] = "cpu"
    placed = _block_places(device_map, stream.blocks_path, stream.num_blocks)
    if "disk" in device_map.values() and offload_dir is None:
        raise DispatchError(f"the model does not fit runtime.max_memory {max_memory}: blocks go to disk, and no offload folder was given")
    index: dict = {}  # accelerate's offload index: {tensor name: dtype, shape}
    for i, where in enumerate(placed):
        block = stream.load(i, "cpu" if where == "disk" else _torch_device(where), place=where != "disk")
        if where == "disk":  # written in accelerate's format, then dropped: its hooks read it back per forward
            for name, tensor in block.state_dict().items():
                offload_weight(tensor, f"{stream.blocks_path}.{i}.{name}", str(offload_dir), index=index)
            stream.release(i)
    if index:
        save_offload_index(index, str(offload_dir))
    for name, where in device_map.items():  # the modules outside the blocks are real: move them where they go
        if not _is_block(name, stream.blocks_path) and where != "disk":
            model.get_submodule(name).to(_torch_device(where))
    return dispatch_model(model, device_map, main_device=_main_device(device_map),
                          offload_dir=str(offload_dir) if index else None)


def _torch_device(where) -> torch.device:
    return torch.device("cuda", where) if isinstance(where, int) else torch.device(where)


def _main_device(device_map: dict):
    gpus = sorted(d for d in device_map.values() if isinstance(d, int))
    return torch.device("cuda", gpus[0]) if gpus else "cpu"  # the string: accelerate compares it with "cpu"


def _is_block(name: str, blocks_path: str) -> bool:
    return name == blocks_path or name.startswith(blocks_path + ".")


def _expand(device_map: dict, model, blocks_path: str) -> dict:
    """The map with every ancestor of the blocks ("", "model", "model.layers") split into its children, so each
    block and each module outside the blocks has its own entry."""
    expanded = dict(device_map)
    while True:
        ancestor = next((n for n in expanded if n == "" or n == blocks_path or blocks_path.startswith(n + ".")), None)
        if ancestor is None:
            return expanded
        where = expanded.pop(ancestor)
        for child, _ in model.get_submodule(ancestor).named_children():
            expanded.setdefault(f"{ancestor}.{child}" if ancestor else child, where)


def _block_places(device_map: dict, blocks_path: str, count: int) -> list:
    """Where each block goes; a device map that splits inside a block (it does not: blocks are no-split) fails."""
    places = []
    for index in range(count):
        name = f"{blocks_path}.{index}"
        where = device_map.get(name, device_map.get(blocks_path, device_map.get("")))
        if where is None:
            raise DispatchError(f"accelerate's device map has no place for {name}: {sorted(device_map)[:8]}")
        places.append(where)
    return places


def input_device(model) -> torch.device:
    """Where a (possibly dispatched) model takes its inputs: the device of its first parameter in memory."""
    return next(p.device for p in model.parameters() if p.device.type != "meta")


def placement(model) -> dict[str, int]:
    """How many of the model's top-level modules are on each device ({"cpu": 4, "disk": 30, "cuda:0": 2})."""
    counts: dict[str, int] = {}
    for where in getattr(model, "hf_device_map", {"": str(input_device(model))}).values():
        key = f"cuda:{where}" if isinstance(where, int) else str(where)
        counts[key] = counts.get(key, 0) + 1
    return counts
