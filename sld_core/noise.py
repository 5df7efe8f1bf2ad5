"""Where random numbers come from: the initial latent noise and the noise stochastic samplers inject.

Reproducing a ComfyUI image from its seed needs the same draws in the same order, so these follow
ComfyUI's rules: the initial noise is one CPU ``randn`` from ``torch.manual_seed(seed)`` (which also
reseeds torch's global CPU generator), ancestral samplers draw from a generator seeded with the same
seed on the latent's device, and the SDE samplers query a Brownian tree (torchsde) built from it.

A noise sampler is a callable ``noise_sampler(sigma, sigma_next) -> Tensor`` shaped like the latent,
with unit variance per element.
"""
import torch
import torchsde


def prepare_noise(latent, seed, batch_index=None):
    """Initial noise for ``latent`` ([B, C, h, w]) from ``seed``, as ComfyUI's ``prepare_noise``.

    Without ``batch_index`` this is a single ``randn`` of the whole batch on CPU. With it (a LATENT's
    ``batch_index`` list), one [1, C, h, w] draw is made per index from 0 to max(batch_index), in
    order, and the entry for each listed index is returned, so that image k of a batch gets the same
    noise as it would alone at position k. Note ``torch.manual_seed`` reseeds the global generator too.
    """
    generator = torch.manual_seed(seed)
    options = dict(dtype=latent.dtype, layout=latent.layout, generator=generator, device="cpu")
    if batch_index is None:
        return torch.randn(latent.size(), **options)
    wanted = sorted(set(int(i) for i in batch_index))
    draws = {}
    for index in range(wanted[-1] + 1):
        noise = torch.randn([1, *latent.shape[1:]], **options)
        if index in wanted:
            draws[index] = noise
    return torch.cat([draws[int(i)] for i in batch_index], dim=0)


def default_noise_sampler(x, seed=None):
    """Fresh Gaussian noise shaped like ``x`` on every call, from a generator on ``x.device`` seeded with
    ``seed`` (torch's global generator when ``seed`` is None). The σ arguments are ignored."""
    generator = None
    if seed is not None:
        generator = torch.Generator(device=x.device)
        generator.manual_seed(seed)

    def noise_sampler(sigma, sigma_next):
        return torch.randn(x.size(), dtype=x.dtype, layout=x.layout, device=x.device, generator=generator)

    return noise_sampler


class BrownianTreeNoiseSampler:
    """Noise from one Brownian motion W(σ) on [σ_min, σ_max]: ``(W(σ_next) − W(σ)) / √|σ_next − σ|``.

    Unlike independent draws, increments over the same σ interval are the same however a sampler
    subdivides it, which is what the SDE solvers of Lu et al. (2022, DPM-Solver++) need to converge.
    Built on ``torchsde.BrownianTree`` with entropy ``seed`` (a random one from torch's global
    generator when None). With ``cpu=True`` (ComfyUI's default for ``dpmpp_sde``/``dpmpp_2m_sde``)
    the tree lives on CPU whatever the latent's device, so results do not depend on the GPU; the
    ``*_gpu`` samplers build it on the latent's device.
    """

    def __init__(self, x, sigma_min, sigma_max, seed=None, cpu=True):
        t0, t1 = torch.as_tensor(sigma_min), torch.as_tensor(sigma_max)
        self.sign = 1 if t0 < t1 else -1
        t0, t1 = min(t0, t1), max(t0, t1)
        w0 = torch.zeros_like(x)
        if seed is None:
            seed = torch.randint(0, 2**63 - 1, ()).item()
        self.cpu = cpu
        if cpu:
            t0, w0, t1 = t0.detach().cpu(), w0.detach().cpu(), t1.detach().cpu()
        self.tree = torchsde.BrownianTree(t0, w0, t1, entropy=seed)

    def __call__(self, sigma, sigma_next):
        t0, t1 = torch.as_tensor(sigma), torch.as_tensor(sigma_next)
        sign = 1 if t0 < t1 else -1
        lo, hi = min(t0, t1), max(t0, t1)
        device, dtype = lo.device, lo.dtype
        if self.cpu:
            lo, hi = lo.detach().cpu().float(), hi.detach().cpu().float()
        w = self.tree(lo, hi).to(device=device, dtype=dtype) * (self.sign * sign)
        return w / (t1 - t0).abs().sqrt()


def brownian_noise_sampler(x, sigmas, seed=None, cpu=True):
    """The Brownian-tree noise sampler an SDE sampler builds for ``sigmas``: on [smallest σ > 0, largest σ]."""
    return BrownianTreeNoiseSampler(x, sigmas[sigmas > 0].min(), sigmas.max(), seed=seed, cpu=cpu)



class RandomNoise:
    """A NOISE value (ComfyUI's ``RandomNoise`` node): `prepare_noise` of a LATENT from ``seed``."""

    def __init__(self, seed):
        self.seed = seed

    def generate_noise(self, latent):
        return prepare_noise(latent["samples"], self.seed, latent.get("batch_index"))


class NoNoise:
    """A NOISE value that adds nothing (ComfyUI's ``DisableNoise``): for a latent that already holds
    the noise of an earlier, unfinished run."""

    seed = 0

    def generate_noise(self, latent):
        samples = latent["samples"]
        return torch.zeros(samples.shape, dtype=samples.dtype)
