from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")       # tests never touch a hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# before any test module imports transformers (which imports torchvision): neurodbg's torchvision hook
import neurodbg


@pytest.fixture(scope="session")
def default_model():
    return neurodbg.load_model("default", progress=False)


SMALL_ATLAS_SITES = "layers.0-1.mlp.act"


@pytest.fixture(scope="session")
def small_atlas(tmp_path_factory: pytest.TempPathFactory, default_model) -> Path:
    """A real atlas of the default model's first two layers over 24,576 default-corpus tokens."""
    from neurodbg.corpus import open_corpus
    from neurodbg.scan import ScanSettings, scan

    directory = tmp_path_factory.mktemp("small-atlas") / "atlas"
    scan(default_model, open_corpus("default"), directory, ScanSettings(sites=(SMALL_ATLAS_SITES,),
                                                                        max_tokens=24_576), progress=False)
    return directory


@pytest.fixture(scope="session")
def described_atlas(small_atlas: Path, default_model) -> Path:
    """`small_atlas` with every neuron described by the statistical explainer."""
    from neurodbg.atlas import AtlasStore
    from neurodbg.describe.exemplars import ExemplarReader
    from neurodbg.describe.explainers import make
    from neurodbg.describe.runner import background, describe
    from neurodbg.search.atlas_search import ensure_embeddings

    store = AtlasStore.open(small_atlas)
    reader = ExemplarReader(store)
    explainer, simulator = make("stat", background(store, default_model.tokenizer, reader))
    summary = describe(store, explainer, simulator, reader=reader, progress=False)
    assert summary.described == 2 * 1536 * 2 and summary.skipped == 0
    ensure_embeddings(store)      # once here, not in every copy and process that searches it
    store.close()
    return small_atlas


@pytest.fixture(scope="session")
def digits_atlas(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An image atlas of the digits CNN over all 1,797 digits (every canonical site), described by
    the statistical explainer and embedded for search."""
    from neurodbg.describe.runner import describe_atlas
    from neurodbg.vision.image_corpus import open_image_corpus
    from neurodbg.vision.image_scan import scan_images

    directory = tmp_path_factory.mktemp("digits-atlas") / "atlas"
    summary = scan_images(neurodbg.load_model("digits", progress=False), open_image_corpus("digits"), directory,
                          source="digits", progress=False)
    assert summary.status == "complete" and summary.sequences == 1797
    describe_atlas(directory, progress=False)
    return directory


@pytest.fixture(scope="session")
def default_lens(tmp_path_factory: pytest.TempPathFactory, default_model) -> Path:
    """A real tuned lens of the default model, trained briefly (one step of 128 default-corpus
    tokens) and scored on 128 held-out tokens; the file `train-lens --out` would write."""
    from neurodbg.analyze.tuned_lens_training import train_tuned_lens

    lens = train_tuned_lens(default_model, tokens=128, seq_len=64, batch=2, eval_tokens=128, progress=False)
    return lens.save(tmp_path_factory.mktemp("lens") / "default.safetensors")


@pytest.fixture(scope="session")
def served(default_model, described_atlas: Path, default_lens: Path):
    """The web app over the default model, the described small atlas and a tuned lens, on a real
    HTTP server. Tight limits keep generation short (the fuzzer and the browser tests ask for a lot)."""
    from serving import running

    from neurodbg.analyze.monitor import Monitor
    from neurodbg.analyze.tuned_lens import load_tuned_lens
    from neurodbg.serve import Limits, create_app

    app = create_app(Monitor(default_model, described_atlas),
                     limits=Limits(max_new_tokens=24, max_prompt_tokens=384, max_attention_tokens=128,
                                   max_samples=8, max_map_items=16),
                     tuned_lens=load_tuned_lens(default_lens, default_model))
    with running(app) as url:
        yield url
