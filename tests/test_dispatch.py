"""A streamed variant as one model: block by block (zero-shot) or dispatched over devices by accelerate; the same
logits as the whole model, at most the declared blocks in memory, bad sizes named."""

import weakref

import pytest
import torch

from pruneflow.core.artifacts import artifact_folder
from pruneflow.core.dispatch import DispatchError, dispatch_stream, memory_budget, parse_size, stream_dispatch
from pruneflow.core.stream import ModelStream, open_stream
from pruneflow.core.tiny import build_tiny_model
from pruneflow.core.writer import write_full_variant

IDS = torch.randint(2, 258, (2, 16), generator=torch.Generator().manual_seed(0))


@pytest.fixture()
def stored(tmp_path):
    model, tok = build_tiny_model()
    with artifact_folder(tmp_path / "dense") as out:
        write_full_variant(out, model, tok, {})
    with torch.no_grad():
        return tmp_path / "dense", model(IDS).logits


@pytest.mark.parametrize(
    "budget, places", [(None, {"cpu"}), ({"cpu": "1MB"}, {"cpu"}), ({"cpu": "100KB"}, {"cpu", "disk"}), ({"cpu": 1}, {"cpu", "disk"})]
)
def test_dispatched_logits_equal_the_whole_model(stored, tmp_path, budget, places):
    folder, expected = stored
    stream, offload = open_stream(folder), tmp_path / "offload"
    offload.mkdir()
    model = dispatch_stream(stream, "cpu", budget, offload)
    found = set(getattr(model, "hf_device_map", {"": "cpu"}).values())
    assert found == places
    with torch.no_grad():
        assert torch.equal(model(IDS).logits, expected)
    if "disk" in places:  # the blocks went to disk one by one; embeddings and head stay in memory (held anyway)
        assert {model.hf_device_map[f"model.layers.{i}"] for i in range(2)} == {"disk"} and model.hf_device_map["lm_head"] == "cpu"
        assert any(offload.glob("model.layers.1.*.dat"))


def test_sizes_and_budgets_name_what_is_wrong():
    assert parse_size("1.5GiB") == int(1.5 * 2**30) and parse_size(1024) == 1024 and parse_size("20 GB") == 20 * 10**9
    with pytest.raises(ValueError, match="'lots'"):
        parse_size("lots")
    with pytest.raises(DispatchError, match="'gpu0'.*allowed cpu, cuda"):
        memory_budget("cpu", {"gpu0": "1GB"})
    assert memory_budget("cpu", {}) is None and memory_budget("cpu", {"cpu": "2GB"}) == {"cpu": 2 * 10**9}


def test_blocks_on_disk_need_an_offload_folder(stored):
    with pytest.raises(DispatchError, match="offload folder"):
        dispatch_stream(open_stream(stored[0]), "cpu", {"cpu": 1}, None)


@pytest.fixture()
def stored_deeper(tmp_path):
    model, tok = build_tiny_model(num_hidden_layers=4)
    with artifact_folder(tmp_path / "deeper") as out:
        write_full_variant(out, model, tok, {})
    with torch.no_grad():
        return tmp_path / "deeper", model(IDS).logits, sum(p.numel() for p in model.model.layers[0].parameters())


@pytest.mark.parametrize("held", [1, 2, 4, 9])
def test_streamed_dispatch_holds_at_most_the_declared_blocks(stored_deeper, monkeypatch, held):
    """Blocks' parameters in memory (weakly referenced from every load, counted while each block runs) never exceed
    ``held`` blocks', blocks left behind are freed, and the logits are the whole model's."""
    folder, expected, per_block = stored_deeper
    stream = open_stream(folder)
    made, counts, load = [], [], stream.load

    def counting_load(index, *args, **kwargs):
        block = load(index, *args, **kwargs)
        made.extend(weakref.ref(p) for p in block.parameters())
        block.register_forward_pre_hook(lambda *_: counts.append(sum(p().numel() for p in made if p() is not None and not p().is_meta)))
        return block

    monkeypatch.setattr(stream, "load", counting_load)
    model = stream_dispatch(stream, "cpu", held)
    for _ in range(2):  # a second batch reads the streamed blocks again
        with torch.no_grad():
            assert torch.equal(model(IDS).logits, expected)
    assert len(counts) == 8 and max(counts) == min(held, 4) * per_block
    resident = 4 if held >= 4 else held - 1  # what stays between batches
    assert sum(p().numel() for p in made if p() is not None and not p().is_meta) == resident * per_block


def test_streamed_dispatch_needs_a_stored_model_and_a_block(stored):
    with pytest.raises(DispatchError, match="blocks held at once: 0; allowed an integer >= 1"):
        stream_dispatch(open_stream(stored[0]), "cpu", 0)
    model, _ = build_tiny_model()
    with pytest.raises(DispatchError, match="in memory"):
        stream_dispatch(ModelStream.wrap(model), "cpu", 1)
