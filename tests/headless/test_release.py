"""`sld run` holds one checkpoint at a time: the executor runs the longer branch first and, made with
keep_outputs=False, lets go of a loader's models after their last use. Checked with node classes that
record which loaded objects are still alive (weak references) when the next loader runs."""
import weakref

from comfyui_sld.headless.plan import execution_order
from comfyui_sld.headless.run import Executor
from comfyui_sld.nodes.context import Runtime


class Weights:
    """Stands for a loaded model; only its lifetime matters here."""


ALIVE = {}  # loader id -> weak reference to what it returned
SEEN_ALIVE = {}  # loader id -> the other loaders whose objects were alive when it ran


class Loader:
    RETURN_TYPES = ("MODEL", "CLIP")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"name": ("STRING", {})}, "hidden": {"unique_id": "UNIQUE_ID"}}

    def load(self, name, unique_id):
        SEEN_ALIVE[unique_id] = sorted(k for k, ref in ALIVE.items() if ref() is not None)
        weights = Weights()
        ALIVE[unique_id] = weakref.ref(weights)
        return weights, weights


class Sample:
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "positive": ("CLIP",)}, "optional": {"latent": ("LATENT",)}}

    def sample(self, model, positive, latent=None):
        return ({"samples": latent["samples"] + 1 if latent else 1},)


class Save:
    RETURN_TYPES = ()
    FUNCTION = "save"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",), "vae": ("CLIP",)}}

    def save(self, samples, vae):
        return {"ui": {"n": [samples["samples"]]}, "result": ()}


REGISTRY = {"Loader": Loader, "Sample": Sample, "Save": Save}
# A base + refiner graph: the refiner's sampler names its model (the refiner loader) before its
# latent (the base pass), and the save reads the refiner's VAE.
PROMPT = {
    "1": {"class_type": "Loader", "inputs": {"name": "base"}},
    "2": {"class_type": "Sample", "inputs": {"model": ["1", 0], "positive": ["1", 1]}},
    "3": {"class_type": "Loader", "inputs": {"name": "refiner"}},
    "4": {"class_type": "Sample", "inputs": {"model": ["3", 0], "positive": ["3", 1], "latent": ["2", 0]}},
    "5": {"class_type": "Save", "inputs": {"samples": ["4", 0], "vae": ["3", 1]}},
}


def test_the_longer_branch_runs_first():
    assert execution_order(PROMPT, ["5"]) == ["1", "2", "3", "4", "5"]
    # Equal branches keep the declared order.
    prompt = {"1": {"inputs": {}}, "2": {"inputs": {}}, "3": {"inputs": {"a": ["2", 0], "b": ["1", 0]}}}
    assert execution_order(prompt, ["3"]) == ["2", "1", "3"]


def run(keep_outputs):
    ALIVE.clear(), SEEN_ALIVE.clear()
    executor = Executor(Runtime(device="cpu"), registry=REGISTRY, progress=False, keep_outputs=keep_outputs)
    result = executor.run(PROMPT)
    assert result.ui["5"] == {"n": [2]}
    return executor, result


def test_sld_run_lets_go_of_a_model_after_its_last_use():
    executor, _ = run(keep_outputs=False)
    assert SEEN_ALIVE == {"1": [], "3": []}  # the base model was gone before the refiner loaded
    assert len(executor.cache) == 0
    assert [k for k, ref in ALIVE.items() if ref() is not None] == []


def test_a_caching_executor_keeps_both_and_reuses_them():
    executor, _ = run(keep_outputs=True)
    assert SEEN_ALIVE == {"1": [], "3": ["1"]}
    again = executor.run(PROMPT)
    assert again.executed == ["5"] and sorted(again.cached) == ["1", "2", "3", "4"]
