"""ComfyUI's own conditioning machinery on random multi-entry conditionings, for
test_conditioning_ops.py's opt-in check: run with a real ComfyUI's Python,

    python tests/comfyui_conditioning_reference.py COMFYUI_DIR OUT.pt

It builds seeded random CONDITIONING lists for positive, negative and a safety concept (areas in
cells and percentages, strengths, timestep ranges, 77/154 tokens), prepares them with ComfyUI's
`process_conds` and averages a fake denoiser's predictions with its `calc_cond_batch` at several σ,
and saves inputs and outputs with torch.save. Imports nothing of comfyui_sld.
"""
import random
import sys

COMFYUI_DIR, OUT = sys.argv[1], sys.argv[2]
sys.argv = [sys.argv[0], "--cpu"]  # what ComfyUI's main.py would parse: no CUDA device is asked for
sys.path.insert(0, COMFYUI_DIR)
import comfy.options  # noqa: E402

comfy.options.enable_args_parsing()
import comfy.conds  # noqa: E402
import comfy.model_sampling  # noqa: E402
import comfy.sampler_helpers  # noqa: E402
import comfy.samplers  # noqa: E402
import torch  # noqa: E402

SIGMAS = [14.6, 3.0, 1.6155803203582764, 0.5, 0.03]  # 1.6156 = σ at 50% of the SD schedule: a range boundary


def fake_prediction(x, context):
    """Must equal test_conditioning_ops.fake_prediction (without pooled output)."""
    return context.mean(dim=(1, 2)).view(-1, 1, 1, 1) + 0.5 * x.mean(dim=(1, 2, 3), keepdim=True) + 0.25 * x


class Patcher:
    def prepare_state(self, timestep):
        pass

    def apply_hooks(self, hooks):
        return {}


class FakeModel:
    """What calc_cond_batch and process_conds use of ComfyUI's BaseModel."""
    model_sampling = comfy.model_sampling.ModelSamplingDiscrete()
    current_patcher = Patcher()

    def memory_required(self, *args, **kwargs):
        return 0

    def extra_conds(self, **kwargs):
        return {"c_crossattn": comfy.conds.CONDCrossAttn(kwargs["cross_attn"])}

    def apply_model(self, x, timestep, c_crossattn=None, **kwargs):
        return fake_prediction(x, c_crossattn)


def random_entry(rng, seed, height, width):
    extras = {}
    kind = rng.random()
    if kind < 0.35:
        extras["area"] = (rng.randint(1, height + 4), rng.randint(1, width + 4), rng.randint(0, height - 1),
                          rng.randint(0, width - 1))
        extras["strength"] = rng.choice([1.0, 0.5, 1.5, 2.0])
    elif kind < 0.55:
        extras["area"] = ("percentage", rng.choice([0.25, 0.5, 0.3, 1.0]), rng.choice([0.2, 0.5, 0.75]),
                          rng.choice([0.0, 0.1, 0.5]), rng.choice([0.0, 0.3, 0.6]))
        extras["strength"] = rng.choice([1.0, 0.8])
    if rng.random() < 0.4:
        extras["start_percent"] = rng.choice([0.0, 0.2, 0.5])
        extras["end_percent"] = rng.choice([0.5, 0.8, 1.0])
    tokens = rng.choice([77, 154])
    return [torch.randn(1, tokens, 8, generator=torch.Generator().manual_seed(seed)), extras]


def main(count=60):
    rng = random.Random(0)
    cases = []
    for case in range(count):
        height, width = rng.choice([(8, 8), (16, 24), (12, 20), (9, 13), (40, 36)])
        x = torch.randn(2, 4, height, width, generator=torch.Generator().manual_seed(case))
        lists = {name: [random_entry(rng, case * 100 + k * 10 + e, height, width)
                        for e in range(rng.choice([1, 1, 2, 3]))]
                 for k, name in enumerate(("positive", "negative", "safety_concept"))}
        model = FakeModel()
        conds = {name: comfy.sampler_helpers.convert_cond(listed) for name, listed in lists.items()}
        conds = comfy.samplers.process_conds(model, torch.zeros_like(x), conds, "cpu")
        order = [conds["positive"], conds["negative"], conds["safety_concept"]]
        outputs = [comfy.samplers.calc_cond_batch(model, order, x, torch.full((2,), s), {}) for s in SIGMAS]
        cases.append({"x": x, "lists": lists, "sigmas": SIGMAS, "outputs": outputs})
    torch.save(cases, OUT)


if __name__ == "__main__":
    main()
