"""Generative image models: trainer throughput FP32 / BF16 / FP16 per kind, and quality at a budget.

Not a test. Imports models/ and records/ (and benchmarks.train_vision's sample-image writer:
numpy + PIL); a GPU image needs torch, numpy, PIL, pyarrow, fsspec, protobuf and
torchdiffeq, no TensorFlow. The sample images (shapes on noise, 3 classes) are written
once as image shards under ``--out`` and reused.

Throughput (default): every kind -- vqgan (discriminator on from step 0), vae gaussian and
gumbel, flow additive (NICE) and affine (Glow), rectified_flow -- trains through the one
trainer (models.kinds.train_model) in
    fp32: FP32 eager, NCHW, TF32 off                               -- the baseline
    bf16: BF16 autocast, channels-last, torch.compile
    fp16: FP16 autocast + GradScaler (VQGAN's discriminator: its own scaler), compiled
and images/s after ``--warmup`` steps is read from metrics.jsonl; ``--repeats`` runs give
the median and the spread ((max - min) / median). A config that fails to compile is rerun
eagerly and says so.

Quality (``--quality``), every model at the same ``--budget`` steps, bf16:
  * two Frechet feature networks: an EfficientNet trained on the same shards (FID-like)
    and seeded random features (``models.perceptual``), which do not depend on how well
    the small classifier learned; every FD is reported on both;
  * VQ-VAE vs VQGAN (same VQ architecture): FD of eval reconstructions, codebook usage;
  * NICE vs RealNVP/Glow (same depth and width): eval bits/dim;
  * rectified flow, logit-normal vs uniform timesteps (SD3's ablation): FD of samples at
    1, 2, 4, 8, 32 Euler steps and with dopri5 (NFE reported);
  * reflow: a 2-RF trained from the logit-normal 1-RF for ``--reflow-budget`` steps, one
    student per ``--reflow-timesteps`` sampling (``rf_2rf``: logit-normal, ``rf_2rf_uniform``);
    FD at 1 step of 1-RF vs 2-RF.

    python3 benchmarks/generative.py                      # H100: throughput table
    python3 benchmarks/generative.py --quality            # H100: the quality comparisons
    python3 benchmarks/generative.py --smoke              # CPU: tiny, both modes, seconds

``--resume`` makes a quality run that a time limit cut short continue on a rerun with the
same ``--out``: every training run saves ``ckpt.pt`` every ``--ckpt-every`` steps and a
rerun continues from it (a finished run is only reloaded), and the rectified flow's FDs are
kept in ``fd_scores.json`` beside each run's checkpoint as they are computed (a rerun
computes only the missing ones). Each FD also prints its own line as soon as it is computed,
so a cut process leaves every finished number in its log.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import torch  # noqa: E402

from benchmarks.train_vision import write_dataset  # noqa: E402
from models.checkpoint import load_checkpoint  # noqa: E402
from models.efficientnet import EfficientNetConfig  # noqa: E402
from models.flow_config import FlowConfig  # noqa: E402
from models.frechet import fd_from_sums, feature_net, feature_sums  # noqa: E402
from models.kinds import train_model  # noqa: E402
from models.rectified_flow import (  # noqa: E402
    RectifiedFlow,
    RectifiedFlowConfig,
    adaptive_sample,
    euler_sample,
)
from models.rectified_flow_config import RECTIFIED_FLOW_PRESETS, TIMESTEP_SAMPLING  # noqa: E402
from models.runlog import throughput_after  # noqa: E402
from models.train_config import TrainConfig  # noqa: E402
from models.vae_config import VAEConfig  # noqa: E402
from models.vision_data import decode_images, image_spec, to_model_input  # noqa: E402
from models.vqgan import VQGANConfig, load_vq  # noqa: E402
from models.vqvae import VQVAEConfig  # noqa: E402
from records.reader import RecordDataset  # noqa: E402

CONFIGS = {"fp32": ("fp32", False, False), "bf16": ("bf16", True, True),
           "fp16": ("fp16", True, True)}  # name -> (precision, compile, channels_last)


def model_configs(smoke: bool, size: int) -> dict[str, tuple[str, object]]:
    """name -> (kind, model config) of the throughput table."""
    preset = "tiny" if smoke else "base"
    rf_preset = "tiny" if smoke else "small"
    return {
        "vqgan": ("vqgan", VQGANConfig.preset(preset, disc_start=0)),
        "vae-gaussian": ("vae", VAEConfig.preset(preset)),
        "vae-gumbel": ("vae", VAEConfig.preset(preset, latent="gumbel", straight_through=True)),
        "flow-nice": ("flow", FlowConfig.preset(preset, coupling="additive", image_size=size)),
        "flow-glow": ("flow", FlowConfig.preset(preset, coupling="affine", image_size=size)),
        "rectified_flow": ("rectified_flow",
                           RectifiedFlowConfig.preset(rf_preset, image_size=size, num_classes=3)),
    }


def train(kind: str, model_config, args, *, steps: int, precision: str, compile_: bool,
          channels_last: bool, out: str, eval_batches: int = 1, lr: float | None = None,
          resume: bool = False):
    """One run of the one trainer under ``<--out>/runs/<out>``; with ``resume``, a
    checkpoint every ``--ckpt-every`` steps and a continuation from the run's own
    ``ckpt.pt`` where one is there (a finished run then trains no step)."""
    cuda = args.device == "cuda"
    lr = lr or args.lr
    cfg = TrainConfig(kind=kind, steps=steps, batch_size=args.batch_size, lr=lr,
                      min_lr=lr / 10, warmup_steps=max(1, min(100, steps // 20)),
                      device=args.device, precision=precision, compile=compile_ and cuda,
                      channels_last=channels_last and cuda, image_size=args.size,
                      log_every=args.warmup, num_workers=args.num_workers,
                      eval_batches=eval_batches, progress=False,
                      ckpt_every=args.ckpt_every if resume else 0)
    torch._dynamo.reset()
    return train_model(kind, dataset_uri=args.dataset, model_config=model_config,
                       out_uri=f"file://{os.path.abspath(args.out)}/runs/{out}",
                       train_config=cfg, resume=resume)


def throughput(args) -> dict:
    rows: dict[str, dict] = {}
    for name, (kind, mcfg) in model_configs(args.smoke, args.size).items():
        if args.kinds and name not in args.kinds:
            continue
        rows[name] = {}
        for c in args.configs:
            precision, compile_, cl = CONFIGS[c]
            compile_ = compile_ and not args.no_compile
            rates, note, last = [], None, None
            for r in range(args.repeats):
                try:
                    last = train(kind, mcfg, args, steps=args.warmup + args.steps,
                                 precision=precision, compile_=compile_ and note is None,
                                 channels_last=cl, out=f"tp-{name}-{c}-{r}")
                except Exception as exc:  # a compile failure: say so, measure eagerly
                    if not compile_ or note is not None or args.device != "cuda":
                        raise
                    note = f"compile failed ({type(exc).__name__}: {str(exc)[:120]}); eager"
                    last = train(kind, mcfg, args, steps=args.warmup + args.steps,
                                 precision=precision, compile_=False, channels_last=cl,
                                 out=f"tp-{name}-{c}-{r}")
                rates.append(throughput_after(last.metrics_uri, warmup=args.warmup,
                                              items_per_step=args.batch_size,
                                              unit="images")["images_per_s"])
            med = statistics.median(rates)
            rows[name][c] = {"images_per_s": med, "spread": (max(rates) - min(rates)) / med,
                             "runs": rates, "skipped_steps": last.skipped_steps,
                             "final_loss": last.final_loss, "note": note}
            print(f"{name:>15} {c}: {med:>9,.0f} images/s (spread {rows[name][c]['spread']:.1%}"
                  f", {len(rates)} runs){'  ' + note if note else ''}", file=sys.stderr)
    for name, by in rows.items():
        if "fp32" in by:
            print(f"{name:>15}: " + "  ".join(f"{c} {v['images_per_s'] / by['fp32']['images_per_s']:.2f}x"
                                              for c, v in by.items()), file=sys.stderr)
    return rows


def eval_batches(args, n_batches: int):
    """The eval split's first ``n_batches`` batches: images in [-1, 1] and labels, on the device."""
    reader = RecordDataset(args.dataset, "eval", batch_size=args.batch_size, shuffle=False,
                           rank=0, world_size=1, feature_spec=image_spec(labels=True),
                           bytes_as="uint8")
    out = []
    for batch in reader:
        images, labels = decode_images(batch, labels=True)
        x = to_model_input(images.to(args.device), mean=(0.5,) * 3, std=(0.5,) * 3, size=args.size)
        out.append((x, labels.to(args.device)))
        if len(out) == n_batches:
            break
    return out


@torch.no_grad()
def frechet(nets: dict, batches, make) -> dict[str, float]:
    """FD between the eval images and ``make(x, y)`` for each eval batch, on each feature
    network of ``nets`` (name -> :class:`models.perceptual.ImageFeatures`)."""
    sums: dict[str, dict[str, torch.Tensor]] = {name: {} for name in nets}
    for x, y in batches:
        for prefix, imgs in (("real", x), ("fake", make(x, y))):
            imgs = imgs.float().clamp(-1, 1)
            for name, net in nets.items():
                for k, v in feature_sums(net.embed(imgs), prefix).items():
                    acc = sums[name]
                    acc[k] = acc[k] + v if k in acc else v
    return {name: fd_from_sums(acc) for name, acc in sums.items()}


QUALITY_PARTS = ("vq", "flow", "rf")


def quality(args) -> dict:
    """The comparisons of ``--parts`` (vq, flow, rf); each part is self-contained, so the
    parts can run as separate processes on one GPU. The FD parts train their own feature
    classifier (``--classifier-steps``): FDs compare models scored by the same network only."""
    p, budget = args.quality_precision, args.budget
    parts = [x for x in args.parts.split(",") if x]
    unknown = sorted(set(parts) - set(QUALITY_PARTS))
    if unknown:
        raise SystemExit(f"--parts: unknown {unknown}; choose from {list(QUALITY_PARTS)}")
    run = lambda kind, cfg, name, steps=budget, lr=None: train(  # noqa: E731
        kind, cfg, args, steps=steps, precision=p, compile_=False, channels_last=True,
        out=f"q-{name}", eval_batches=args.eval_batches, lr=lr, resume=args.resume)
    out: dict = {"budget": budget, "precision": p, "parts": parts}
    preset = "tiny" if args.smoke else "base"
    net = batches = None
    if {"vq", "rf"} & set(parts):
        effnet = run("efficientnet", EfficientNetConfig.preset(
            "tiny" if args.smoke else "b0", num_classes=3, resolution=args.size),
            f"classifier-{'-'.join(parts)}", steps=args.classifier_steps or budget,
            lr=args.classifier_lr)
        out["classifier_top1"] = effnet.eval_metrics.get("accuracy")
        # Two embeddings: the trained classifier's (FID-like) and seeded random features,
        # which do not depend on how well the small classifier learned.
        device = torch.device(args.device)
        net = {"classifier": feature_net(effnet.checkpoint_uri, 3, device),
               "random": feature_net(None, 3, device)}
        batches = eval_batches(args, args.eval_batches or 10**9)

    if "vq" in parts:
        gan = VQGANConfig.preset(preset, disc_start=budget // 4)  # D joins after a quarter
        vq = VQVAEConfig(**{f.name: getattr(gan, f.name) for f in dataclasses.fields(VQVAEConfig)})
        for kind, cfg in (("vqvae", vq), ("vqgan", gan)):  # one VQ-VAE, with and without GAN
            res = run(kind, cfg, kind)
            model = load_vq(load_checkpoint(res.checkpoint_uri)).to(args.device)
            out[kind] = {"fd_reconstruction": frechet(net, batches, lambda x, y, m=model:
                                                      m.decode_indices(m.encode(x))),
                         "usage": res.eval_metrics.get("usage"),
                         "psnr": res.eval_metrics.get("psnr")}
            print(kind, json.dumps(out[kind]), flush=True)
    if "flow" in parts:
        for coupling, name in (("additive", "nice"), ("affine", "realnvp_glow")):
            res = run("flow", FlowConfig.preset(preset, coupling=coupling, image_size=args.size),
                      name)
            out[name] = {"bpd": res.eval_metrics.get("bpd")}
            print(name, json.dumps(out[name]), flush=True)
    if "rf" in parts:
        rf_base = RectifiedFlowConfig.preset(args.rf_preset, image_size=args.size,
                                             num_classes=3)
        rf_runs = {}
        for sampling in args.rf_timesteps:
            res = run("rectified_flow", dataclasses.replace(rf_base, timesteps=sampling), sampling)
            rf_runs[sampling] = res.checkpoint_uri
            out[f"rf_{sampling}"] = rf_scores(res.checkpoint_uri, net, batches, args.euler_steps,
                                              label=f"rf_{sampling}",
                                              keep=scores_file(args, sampling))
            print(f"rf_{sampling}", json.dumps(out[f"rf_{sampling}"]), flush=True)
        if args.reflow_budget > 0 and "logit_normal" in rf_runs:  # 2-RF from the SD3 default
            for sampling in args.reflow_timesteps:  # the student's own timestep sampling
                suffix = "" if sampling == "logit_normal" else f"_{sampling}"
                student = dataclasses.replace(rf_base, reflow_from=rf_runs["logit_normal"],
                                              reflow_steps=32, timesteps=sampling)
                name = f"reflow{suffix.replace('_', '-')}"
                res = run("rectified_flow", student, name, steps=args.reflow_budget)
                label = f"rf_2rf{suffix}"
                out[label] = rf_scores(res.checkpoint_uri, net, batches, [1, 2, 4], label=label,
                                       keep=scores_file(args, name))
                print(label, json.dumps(out[label]), flush=True)
    return out


def scores_file(args, run: str) -> str | None:
    """Where ``--resume`` keeps the FDs of the quality run ``q-<run>``, beside its checkpoint;
    None without ``--resume`` (nothing is kept)."""
    if not args.resume:
        return None
    return os.path.join(args.out, "runs", f"q-{run}", "fd_scores.json")


@torch.no_grad()
def coupling_mse(model: RectifiedFlow, batches, steps_list, ref_steps: int = 32) -> dict:
    """What reflow trains for: the mean squared distance between an ``n``-step Euler sample
    of each noise and the 1-RF's ``ref_steps``-step sample of the same noise, for each ``n`` of
    ``steps_list`` below ``ref_steps``. The 1-RF is the model's reflow teacher, or the model
    itself (a 1-RF's own straightness). Labels are the eval batches'; noise from seed 0."""
    teacher = model.teacher if model.teacher is not None else model
    steps_list = [n for n in steps_list if n < ref_steps]
    sums = dict.fromkeys(steps_list, 0.0)
    count = 0
    gen = torch.Generator(device=batches[0][0].device).manual_seed(0)
    for x, y in batches:
        z = torch.randn((x.shape[0], *model.shape), device=x.device, generator=gen)
        ref = euler_sample(lambda v, t, y=y: teacher.velocity(v, t, y), z, ref_steps)
        for n in steps_list:
            out = euler_sample(lambda v, t, y=y: model.velocity(v, t, y), z, n)
            sums[n] += (out.float() - ref.float()).pow(2).mean().item() * x.shape[0]
        count += x.shape[0]
    return {str(n): total / count for n, total in sums.items()}


def rf_scores(uri: str, net, batches, steps_list, label: str = "rf",
              keep: str | None = None) -> dict:
    """FDs of the checkpoint's samples at each Euler step count of ``steps_list`` and with
    dopri5 (and its mean NFE), and :func:`coupling_mse` at those step counts; each printed as
    ``<label> <name> <json>`` when computed.

    ``keep``: a JSON file that holds the FDs computed so far, read first and rewritten after
    each one, so a rerun after a cut computes only the missing ones. They are kept with the
    checkpoint's step and used only for the same step (``--resume`` reloads the same
    checkpoint and feature networks; a larger budget trains on and scores afresh).
    """
    ckpt = load_checkpoint(uri)
    scores: dict = {}
    if keep and os.path.exists(keep):
        with open(keep) as f:
            saved = json.load(f)
        if saved.get("checkpoint_step") == ckpt["step"]:
            scores = saved["scores"]

    def record(name: str, value) -> None:
        scores[name] = value
        print(label, name, json.dumps(value), flush=True)
        if keep:
            with open(keep, "w") as f:
                json.dump({"checkpoint_step": ckpt["step"], "scores": scores}, f)

    cfg = RectifiedFlowConfig(**ckpt["model_config"])
    model = RectifiedFlow(cfg)
    model.load_state_dict(ckpt["model"])
    model.to(batches[0][0].device).eval()
    # Each FD draws its noise from its own seed, so its value does not depend on which FDs
    # ran before it in the process (a rerun computes only the missing ones).
    for n in steps_list:
        if f"fd_euler_{n}" not in scores:
            torch.manual_seed(n)
            record(f"fd_euler_{n}", frechet(net, batches, lambda x, y, n=n: model.sample(
                x.shape[0], y=y, steps=n, guidance=1.0)))
    if "coupling_mse" not in scores:
        record("coupling_mse", coupling_mse(model, batches, steps_list))
    if "fd_dopri5" in scores:
        return scores
    torch.manual_seed(0)
    nfe = []

    def dopri(x, y):
        noise = torch.randn((x.shape[0], *model.shape), device=x.device)
        z, n = adaptive_sample(lambda v, t: model.velocity(v, t, y, 1.0), noise, rtol=1e-4,
                               atol=1e-4)
        nfe.append(n)
        return model.from_latent(z)

    fd = frechet(net, batches, dopri)
    scores["dopri5_nfe"] = statistics.mean(nfe)
    record("fd_dopri5", fd)
    return scores


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="/tmp/shardforge-generative-bench")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-compile", action="store_true",
                   help="fp16/bf16 eager too: a pure precision comparison, no compile time")
    p.add_argument("--configs", default=None,
                   help="comma list of fp32,bf16,fp16 (default all; smoke: fp32,bf16)")
    p.add_argument("--kinds", default=None,
                   help="throughput rows to run, a comma list of vqgan, vae-gaussian, vae-gumbel, "
                        "flow-nice, flow-glow, rectified_flow (default all)")
    p.add_argument("--size", type=int, default=None, help="image side (default 32)")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 50; smoke 2)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps (default 10; smoke 1)")
    p.add_argument("--repeats", type=int, default=None, help="runs per cell (default 3; smoke 1)")
    p.add_argument("--batch-size", type=int, default=None, help="default 128; smoke 4")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--num-workers", type=int, default=None)
    p.add_argument("--images", type=int, default=None, help="train images (default 32768)")
    p.add_argument("--quality", action="store_true", help="the comparisons at a fixed budget")
    p.add_argument("--budget", type=int, default=None, help="quality steps (default 3000)")
    p.add_argument("--reflow-budget", type=int, default=None,
                   help="2-RF steps (default 1000; 0: no reflow)")
    p.add_argument("--rf-timesteps", default="logit_normal,uniform",
                   help="quality rf: the 1-RF timestep samplings to train, in order (one per "
                        "process lets two processes share a GPU; reflow needs logit_normal)")
    p.add_argument("--reflow-timesteps", default="logit_normal",
                   help="quality rf: the 2-RF students' timestep samplings, one student each "
                        "(uniform is the Rectified Flow paper's reflow; logit-normal rarely "
                        "trains t near 1, the only t a one-step sample uses)")
    p.add_argument("--rf-preset", default=None,
                   help="quality rf: the DiT preset (default small; smoke tiny)")
    p.add_argument("--eval-batches", type=int, default=None, help="FD batches (default 16)")
    p.add_argument("--euler-steps", default="1,2,4,8,32")
    p.add_argument("--parts", default=",".join(QUALITY_PARTS),
                   help="quality: comma list of vq,flow,rf (separate processes can share a GPU)")
    p.add_argument("--classifier-steps", type=int, default=None,
                   help="steps of the FD feature classifier (default: --budget)")
    p.add_argument("--classifier-lr", type=float, default=2e-3,
                   help="the classifier's peak lr (EfficientNet wants more than the generators)")
    p.add_argument("--quality-precision", default=None, help="default bf16 on CUDA, fp32 on CPU")
    p.add_argument("--resume", action="store_true",
                   help="quality: continue each run from its own checkpoint under --out (a "
                        "rerun after a time limit; finished runs are reused)")
    p.add_argument("--ckpt-every", type=int, default=250,
                   help="with --resume: save a checkpoint every this many steps")
    p.add_argument("--smoke", action="store_true", help="tiny models, a few steps, both modes")
    args = p.parse_args(argv)
    cuda = args.device == "cuda"
    s = args.smoke
    args.size = args.size or (16 if s else 32)
    args.steps = args.steps or (2 if s else 50)
    args.warmup = args.warmup or (1 if s else 10)
    args.repeats = args.repeats or (1 if s else 3)
    args.batch_size = args.batch_size or (4 if s else 128)
    args.num_workers = args.num_workers if args.num_workers is not None else (4 if cuda else 0)
    args.images = args.images or (48 if s else 32768)
    args.budget = args.budget or (4 if s else 3000)
    if args.reflow_budget is None:
        args.reflow_budget = 2 if s else 1000
    for flag in ("rf_timesteps", "reflow_timesteps"):
        samplings = [t for t in getattr(args, flag).split(",") if t]
        unknown = sorted(set(samplings) - set(TIMESTEP_SAMPLING))
        if unknown:
            p.error(f"--{flag.replace('_', '-')}: unknown {unknown}; choose from "
                    f"{', '.join(TIMESTEP_SAMPLING)}")
        setattr(args, flag, samplings)
    args.rf_preset = args.rf_preset or ("tiny" if s else "small")
    if args.rf_preset not in RECTIFIED_FLOW_PRESETS:
        p.error(f"--rf-preset: unknown {args.rf_preset!r}; choose from "
                f"{', '.join(RECTIFIED_FLOW_PRESETS)}")
    args.eval_batches = args.eval_batches or (1 if s else 16)
    args.euler_steps = [int(n) for n in args.euler_steps.split(",")]
    args.quality_precision = args.quality_precision or ("bf16" if cuda else "fp32")
    args.configs = [c.strip() for c in (args.configs or ("fp32,bf16" if s else "fp32,bf16,fp16")
                                        ).split(",") if c.strip()]
    if set(args.configs) - set(CONFIGS):
        p.error(f"unknown --configs {args.configs}")
    args.kinds = [k.strip() for k in (args.kinds or "").split(",") if k.strip()]
    if set(args.kinds) - set(model_configs(True, 32)):
        p.error(f"unknown --kinds {args.kinds} (expected {list(model_configs(True, 32))})")
    args.dataset = write_dataset(args.out, size=args.size, count=args.images,
                                 eval_count=max(args.batch_size, args.images // 16))
    name = torch.cuda.get_device_name() if cuda else platform.processor() or "cpu"
    result = {"device": name, "torch": torch.__version__, "batch_size": args.batch_size,
              "size": args.size, "warmup": args.warmup, "steps": args.steps}
    t0 = time.perf_counter()
    if s or not args.quality:
        result["throughput"] = throughput(args)
    if s or args.quality:
        result["quality"] = quality(args)
        print(json.dumps(result["quality"], indent=1), file=sys.stderr)
    result["wall_s"] = time.perf_counter() - t0
    print("RESULT " + json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
