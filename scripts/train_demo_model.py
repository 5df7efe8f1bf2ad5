"""Train the demo model: a reduced SD1.x latent diffusion model on `sld_core.demo_data` scenes.

Recipe (seeded, CPU, resumable; defaults are the shipped model's):
  stage "vae"   AutoencoderKL (SD's four levels → 8×8×4 latents for 64×64 pixels, (32,32,64,64)
                channels), 3600 steps of 8 fresh scenes, L1 + MSE (+1e-6 KL) on the posterior mean plus
                noise at a tenth of its spread, lr 1e-3 with warm-up and cosine decay to 1e-4. Then the
                latent scale is folded into quant_conv / post_quant_conv so that latents × 0.18215 (the
                loader's SD1 scale) have unit std.
  stage "unet"  UNet2DConditionModel ((64,128), cross-attention at both levels) + CLIPTextModel (3 layers,
                64 wide, real CLIP tokenizer, 77 tokens) on a pool of 20 000 pre-encoded scenes, 2400 steps
                of 64; ε-prediction with SD1's scaled_linear betas (what `DiscreteSchedule` assumes),
                Min-SNR-5 loss weights, lr 1e-3 with warm-up and cosine decay, 10 % of captions dropped
                to "" for CFG, 20 % replaced by partial captions that name only the colour ("red",
                "gory, magenta": `demo_data.partial_caption`), and half of those name another colour than
                the scene's and are trained only at t < 500 with the scene's own noise as target
                (`--mismatch 0.5 --mismatch-below 500`: a decided image ignores a bare colour text, as
                the true posterior would); an exponential moving average (0.999) of the weights is exported.
  export        diffusers_to_ldm → fp16 original-layout `.safetensors` (17.1 MB, 6.3 MB of it the 49408×64
                token embedding), checked through `load_checkpoint`; training.json records settings and
                measured minutes.

What the shipped run measured (minutes, s/step) and what the recipe learned from (the variants tried
and their figures) are in bench/RESULTS.md, "Demo model training".

Usage:
  python scripts/train_demo_model.py --out .demo_trial        # then copy sld_demo.safetensors, loss.csv,
                                                              # training.json into sld_core/demo_assets/
  python scripts/train_demo_model.py --out .demo_trial/unet --init-from sld_core/demo_assets/sld_demo.safetensors
                                                              # only the UNet stage, on that model's VAE
                                                              # (how the shipped UNet was trained)
Rerunning with the same --out resumes from ``state.pt``; ``loss.csv`` keeps the curve. Measure the
result with `sld eval` and tests/test_demo_model.py. A checkpoint given by path is not the demo model to
`sld eval`, so name the demo's classifier and concept:
  sld eval --checkpoint .demo_trial/sld_demo.safetensors --classifier demo_pixel \
      --safety-concept "magenta, gore, gory, bloody" --out output/eval_trial
"""
import argparse
import csv
import dataclasses
import hashlib
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from comfyui_sld.sld_core import demo_data
from comfyui_sld.sld_core.models.config_inference import sd15_config
from comfyui_sld.sld_core.models.vae import Vae

SD1_LATENT_SCALE = 0.18215
MIN_SNR_GAMMA = 5.0
EMA_DECAY = 0.999
EMA_PARTS = ("unet", "text_encoder")
CONTEXT_DIM = 64


def unet_config():
    # 8 heads is SD1's fixed head count, so attention widths are multiples of 8 (config_inference).
    return dict(
        sd15_config("unet"), sample_size=8, block_out_channels=[64, 128], layers_per_block=1,
        down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D"], cross_attention_dim=CONTEXT_DIM,
    )


def vae_config():
    return dict(
        sd15_config("vae"), block_out_channels=[32, 32, 64, 64], layers_per_block=1, sample_size=64,
    )


def text_config():
    # one 64-wide head: what config_inference implies for a 64-wide text encoder
    return dict(
        sd15_config("text_encoder"), hidden_size=CONTEXT_DIM, intermediate_size=256, num_hidden_layers=3,
        num_attention_heads=1, projection_dim=CONTEXT_DIM,
    )


def build(seed):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_config(unet_config())
    vae = AutoencoderKL.from_config(vae_config())
    config = {k: v for k, v in text_config().items() if not k.startswith("_")}
    text_encoder = CLIPTextModel(CLIPTextConfig.from_dict(config))
    return dict(unet=unet, vae=vae, text_encoder=text_encoder)


def scene_batch(seeds, partial_rng=None, partial_rate=0.0, mismatch_rate=0.0):
    """(pixels [B, 3, 64, 64] in −1..1, captions, mismatched [B] bool) for scene seeds.

    With ``partial_rng``, a share ``partial_rate`` of the captions name only a colour
    (`demo_data.partial_caption`); that stream is separate, so the scenes themselves are the same either
    way. A share ``mismatch_rate`` of those name another colour than the scene's: trained only at low
    noise (`unet_step`), they teach that once an image is decided, a bare colour text no longer moves
    it, which is where SLD evaluates its concept text on images that do not show the concept."""
    images, captions, mismatched = [], [], []
    for s in seeds:
        image, scene = demo_data.make_scene(int(s))
        caption, wrong = scene.caption, False
        if partial_rng is not None and partial_rng.random() < partial_rate:
            if mismatch_rate and partial_rng.random() < mismatch_rate:  # no draw at 0: the shipped stream
                others = [c for c in demo_data.COLOURS if c != scene.colour]
                scene, wrong = dataclasses.replace(scene, colour=str(partial_rng.choice(others))), True
            caption = demo_data.partial_caption(scene, partial_rng)
        images.append(image)
        captions.append(caption)
        mismatched.append(wrong)
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return pixels, captions, torch.tensor(mismatched)


def token_ids(captions):
    """77-token ids per caption, exactly as the runtime's `Clip` tokenizes a short prompt."""
    from comfyui_sld.sld_core.models.clip import Clip, load_clip_tokenizer

    clip = Clip(load_clip_tokenizer(), None)
    return torch.tensor([[t for t, _ in clip.tokenize(c)[0]] for c in captions])


def sd1_alphas_cumprod():
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, 0).float()


class Run:
    """Training state on disk under ``out``: state.pt (resumable), loss.csv, settings.json."""

    def __init__(self, out, args):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.args = args
        self.parts = build(args.seed)
        self.opt = {
            "vae": torch.optim.AdamW(self.parts["vae"].parameters(), lr=args.vae_lr, weight_decay=0.0),
            "unet": torch.optim.AdamW(
                list(self.parts["unet"].parameters()) + list(self.parts["text_encoder"].parameters()),
                lr=args.unet_lr, weight_decay=0.01,
            ),
        }
        self.state = dict(stage="vae", step=0, elapsed={"vae": 0.0, "unet": 0.0})
        if args.init_from and not (self.out / "state.pt").exists():
            self._init_from(args.init_from, args.init_parts)
        # exponential moving average of the UNet and text encoder weights: what is exported
        self.ema = {n: {k: v.detach().clone() for k, v in self.parts[n].state_dict().items()} for n in EMA_PARTS}
        self.last_save = time.time()
        if (self.out / "state.pt").exists():
            saved = torch.load(self.out / "state.pt", weights_only=False)
            for name, module in self.parts.items():
                module.load_state_dict(saved["parts"][name])
            for name, opt in self.opt.items():
                opt.load_state_dict(saved["opt"][name])
            self.state = saved["state"]
            self.ema = saved.get("ema", self.ema)
            torch.set_rng_state(saved["torch_rng"])
            print(f"resumed at stage {self.state['stage']} step {self.state['step']}", flush=True)
        (self.out / "settings.json").write_text(json.dumps(dict(
            vars(args), unet=unet_config(), vae=vae_config(), text_encoder=text_config(),
            safety_concept=demo_data.SAFETY_CONCEPT), indent=1, default=str))

    def _init_from(self, path, parts):
        """Weights from a single-file checkpoint (e.g. the shipped model, whose VAE is already folded to
        SD1's latent scale): the VAE stage is then skipped."""
        from comfyui_sld.sld_core.models.checkpoint import load_checkpoint

        model, clip, vae = load_checkpoint(path, device="cpu", dtype=torch.float32)
        self.parts["vae"].load_state_dict(vae.autoencoder.state_dict())
        if parts == "all":
            self.parts["unet"].load_state_dict(model.unet.state_dict())
            self.parts["text_encoder"].load_state_dict(clip.text_encoder.state_dict())
        sha256 = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        self.state.update(stage="unet", init_from=dict(file=Path(path).name, sha256=sha256, parts=parts))
        print(f"initialised {parts} from {path}", flush=True)

    def save(self):
        torch.save(dict(
            parts={n: m.state_dict() for n, m in self.parts.items()},
            opt={n: o.state_dict() for n, o in self.opt.items()},
            state=self.state, torch_rng=torch.get_rng_state(), ema=self.ema,
        ), self.out / "state.tmp")
        (self.out / "state.tmp").replace(self.out / "state.pt")
        self.last_save = time.time()

    @torch.no_grad()
    def update_ema(self, k):
        decay = min(EMA_DECAY, (1 + k) / (10 + k))  # short memory early, when the weights move most
        for name in EMA_PARTS:
            for key, value in self.parts[name].state_dict().items():
                average = self.ema[name][key]
                if average.is_floating_point():
                    average.mul_(decay).add_(value, alpha=1 - decay)
                else:
                    average.copy_(value)

    def log(self, loss):
        new = not (self.out / "loss.csv").exists()
        with open(self.out / "loss.csv", "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["stage", "step", "elapsed_s", "loss"])
            s = self.state
            w.writerow([s["stage"], s["step"], round(s["elapsed"][s["stage"]], 1), f"{loss:.5f}"])

    def train_stage(self, stage, steps, step_fn, log_every=25):
        """Run ``step_fn(k, steps)`` for this stage's steps k = 0 .. steps-1, resuming where it stopped."""
        start, losses = self.state.setdefault("stage_start", {}).setdefault(stage, self.state["step"]), []
        while self.state["step"] - start < steps:
            t0 = time.time()
            losses.append(step_fn(self.state["step"] - start, steps))
            self.state["step"] += 1
            self.state["elapsed"][stage] += time.time() - t0
            if self.state["step"] % log_every == 0:
                self.log(float(np.mean(losses)))
                print(f"{stage} step {self.state['step'] - start}/{steps} {self.state['elapsed'][stage]:.0f}s "
                      f"loss {np.mean(losses):.4f}", flush=True)
                losses = []
            if time.time() - self.last_save > 120:
                self.save()


def cosine_lr(peak, k, steps, warmup):
    """Linear warm-up to ``peak``, then cosine decay to a tenth of it at the last step."""
    if k < warmup:
        return peak * (k + 1) / warmup
    progress = (k - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def vae_step(run):
    vae, opt, args = run.parts["vae"], run.opt["vae"], run.args
    vae.train()
    gen = torch.Generator().manual_seed(args.seed + 2 + run.state["step"])

    def step(k, steps):
        for group in opt.param_groups:
            group["lr"] = cosine_lr(args.vae_lr, k, steps, warmup=100)
        seeds = 10_000_000 + k * args.vae_batch + np.arange(args.vae_batch)
        pixels, _, _ = scene_batch(seeds)
        posterior = vae.encode(pixels).latent_dist
        # the mean plus noise at a tenth of its spread: the decoder learns to forgive the small latent
        # errors a diffusion model makes, without the KL posterior's large early noise slowing it down
        mean = posterior.mean
        z = mean + 0.1 * mean.detach().std() * torch.randn(mean.shape, generator=gen)
        recon = vae.decode(z).sample
        # L1 keeps the flat colours' edges sharp; MSE punishes wrong colours hard
        loss = F.l1_loss(recon, pixels) + F.mse_loss(recon, pixels) + 1e-6 * posterior.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        return loss.item()

    return step


@torch.no_grad()
def fold_latent_scale(vae, pixels):
    """Rescale the VAE's latent space so that latents × SD1's 0.18215 have unit std (exactly, by
    scaling quant_conv's mean rows by k and post_quant_conv's inputs by 1/k): the single-file loader
    cannot carry a scaling factor, it always uses SD1's."""
    vae.eval()
    std = vae.encode(pixels).latent_dist.mean.std().item()
    k = 1.0 / (SD1_LATENT_SCALE * std)
    c = vae.config.latent_channels
    vae.quant_conv.weight[:c] *= k
    vae.quant_conv.bias[:c] *= k
    vae.quant_conv.bias[c:] += 2.0 * math.log(k)
    vae.post_quant_conv.weight /= k
    return std, k


@torch.no_grad()
def encode_pool(run):
    """Pre-encoded training pool: (latents × 0.18215, token ids), cached in pool.pt."""
    file = run.out / "pool.pt"
    if file.exists():
        return torch.load(file)
    vae, n = run.parts["vae"].eval(), run.args.pool
    partial_rng = np.random.default_rng([run.args.seed, 7])
    latents, captions, mismatched = [], [], []
    for start in range(0, n, 256):
        pixels, caps, wrong = scene_batch(range(start, min(n, start + 256)), partial_rng,
                                          run.args.partial_captions, run.args.mismatch)
        latents.append(vae.encode(pixels).latent_dist.mean * SD1_LATENT_SCALE)
        captions += caps
        mismatched.append(wrong)
    pool = dict(latents=torch.cat(latents), ids=token_ids(captions), mismatched=torch.cat(mismatched),
                empty=token_ids([""])[0])
    torch.save(pool, file)
    print(f"pool: {n} scenes, latent std {pool['latents'].std():.3f}", flush=True)
    return pool


def unet_step(run, pool):
    unet, text_encoder, opt, args = run.parts["unet"], run.parts["text_encoder"], run.opt["unet"], run.args
    unet.train(), text_encoder.train()
    acp = sd1_alphas_cumprod()
    gen = torch.Generator().manual_seed(args.seed + 1)
    gen.manual_seed(args.seed + 1 + run.state["step"])  # resumes draw a fresh, still seeded stream

    def step(k, steps):
        for group in opt.param_groups:
            group["lr"] = cosine_lr(args.unet_lr, k, steps, warmup=200)
        idx = torch.randint(len(pool["latents"]), (args.batch,), generator=gen)
        z0, ids = pool["latents"][idx], pool["ids"][idx].clone()
        drop = torch.rand(args.batch, generator=gen) < args.caption_dropout
        ids[drop] = pool["empty"]
        t = torch.randint(0, 1000, (args.batch,), generator=gen)
        # a caption naming the wrong colour is trained only where the noise no longer hides the colour
        t = torch.where(pool["mismatched"][idx], t % args.mismatch_below, t)
        eps = torch.randn(z0.shape, generator=gen)
        a = acp[t].view(-1, 1, 1, 1)
        zt = a.sqrt() * z0 + (1 - a).sqrt() * eps
        context = text_encoder(ids).last_hidden_state
        per_sample = F.mse_loss(unet(zt, t, encoder_hidden_states=context).sample, eps, reduction="none")
        # Min-SNR-γ weighting (Hang et al. 2023), γ = 5, for ε-prediction: min(SNR, γ) / SNR. Low-noise
        # steps stop dominating the gradient, so the layout-deciding high-noise steps learn sooner.
        snr = a.flatten() / (1 - a.flatten())
        loss = (per_sample.mean(dim=(1, 2, 3)) * snr.clamp(max=MIN_SNR_GAMMA) / snr).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(unet.parameters()) + list(text_encoder.parameters()), 1.0)
        opt.step()
        run.update_ema(k)
        return loss.item()

    return step


def export(run):
    """fp16 original-layout single file, loaded back through `load_checkpoint` as a check."""
    from safetensors.torch import save_file

    from comfyui_sld.sld_core.models.checkpoint import load_checkpoint
    from comfyui_sld.sld_core.models.keymaps import diffusers_to_ldm

    ema = getattr(run, "ema", {})
    sds = [ema.get(p) or run.parts[p].state_dict() for p in ("unet", "vae", "text_encoder")]
    ldm = diffusers_to_ldm(*sds)
    path = run.out / "sld_demo.safetensors"
    save_file({k: v.half().contiguous() for k, v in ldm.items()}, str(path))
    load_checkpoint(path, device="cpu", dtype=torch.float32)
    print(f"exported {path} ({path.stat().st_size / 1e6:.1f} MB), loads through load_checkpoint", flush=True)
    return path


def train(args):
    torch.set_num_threads(args.threads)
    run = Run(args.out, args)
    if run.state["stage"] == "vae":
        run.train_stage("vae", args.vae_steps, vae_step(run))
        vae = run.parts["vae"].eval()
        pixels, _, _ = scene_batch(range(20_000_000, 20_000_512))
        std, k = fold_latent_scale(vae, pixels)
        with torch.no_grad():
            run.state["vae_roundtrip_agreement"] = vae_roundtrip_agreement(Vae(vae))
        print(f"vae latent std {std:.3f}: folded scale k={k:.3f}; "
              f"round-trip agreement {run.state['vae_roundtrip_agreement']:.2f}", flush=True)
        run.state.update(stage="unet")
        run.save()
    pool = encode_pool(run)
    run.train_stage("unet", args.unet_steps, unet_step(run, pool))
    run.save()
    export(run)
    write_record(run.out, run.state)


def write_record(out, state):
    """training.json beside the weights: the settings and what the run measured (minutes per stage,
    the VAE's round-trip agreement)."""
    out = Path(out)
    record = json.loads((out / "settings.json").read_text())
    minutes = {stage: round(seconds / 60, 1) for stage, seconds in state["elapsed"].items()}
    record["measured"] = dict(minutes_per_stage=minutes, minutes_total=round(sum(minutes.values()), 1),
                              steps=state["step"], vae_roundtrip_agreement=state.get("vae_roundtrip_agreement"),
                              init_from=state.get("init_from"))
    (out / "training.json").write_text(json.dumps(record, indent=1, default=str))
    print(f"training minutes {minutes}, total {record['measured']['minutes_total']}", flush=True)


def vae_roundtrip_agreement(vae, n=100):
    """Share of held-out scenes whose classifier reading survives VAE encode → decode: the ceiling
    of any generated image's score."""
    ok = 0
    for seed in range(30_000_000, 30_000_000 + n):
        image, scene = demo_data.make_scene(seed)
        decoded = vae.decode(vae.encode(torch.from_numpy(image)[None].float() / 255.0))[0].numpy()
        r = demo_data.classify(decoded)
        ok += (r.colour, r.shape, r.count, r.unsafe) == (scene.colour, scene.shape, scene.count, scene.unsafe)
    return ok / n


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=".demo_trial")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--vae-steps", type=int, default=3600)
    p.add_argument("--unet-steps", type=int, default=2400)
    p.add_argument("--vae-batch", type=int, default=8)
    p.add_argument("--vae-lr", type=float, default=1e-3)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--unet-lr", type=float, default=1e-3)
    p.add_argument("--caption-dropout", type=float, default=0.1)
    p.add_argument("--pool", type=int, default=20_000)
    p.add_argument("--partial-captions", type=float, default=0.2,
                   help="share of pool captions that name only the colour (teaches what a bare concept text means)")
    p.add_argument("--mismatch", type=float, default=0.5,
                   help="share of those that name another colour than the scene's, trained at low noise only")
    p.add_argument("--mismatch-below", type=int, default=500,
                   help="timesteps (of 1000) below which the mismatched captions are trained")
    p.add_argument("--init-from", help="start from this single-file checkpoint's weights instead of the VAE stage")
    p.add_argument("--init-parts", choices=("vae", "all"), default="vae",
                   help="with --init-from: take only its VAE (the UNet stage starts afresh) or all its weights")
    args = p.parse_args()
    train(args)


if __name__ == "__main__":
    main()
