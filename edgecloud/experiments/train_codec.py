"""Training a learned bottleneck (:mod:`edgecloud.codec.learned`) by distillation.

No labels: the frozen model's own softmax on the uncompressed feature is the target. Loss =
KL(teacher || tail(decoder(entropy(encoder(x))))) + ``beta`` * normalised feature MSE +
``lmbda`` * rate (bits per element of the cut feature, from the entropy model's likelihoods),
plus CompressAI's auxiliary loss for the entropy model's quantiles (own optimizer).

Training images are the LAST ``train_images`` of the sorted folder (the sweep evaluates the
first ones); each is seen as ``views`` augmented crops (random resized crop, flip, colour
jitter) whose head features and teacher outputs are computed once. Checkpoints (plain state
dicts, read back with ``weights_only=True``) make a run resumable.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

from edgecloud.codec.learned import BottleneckConfig, LearnedCodec, build_module
from edgecloud.datasets import ImageFolder
from edgecloud.errors import DatasetError
from edgecloud.models import ModelSpec
from edgecloud.partition import split


def checkpoint_path(out_dir: Path, name: str) -> Path:
    """Where a run of codec ``name`` keeps its checkpoint while it trains."""
    return out_dir / f"{name}.checkpoint.pt"


@dataclass
class TrainConfig:
    """What ``edgecloud train-codec`` trains and how long."""

    name: str
    cut: str
    lmbda: float = 0.05  # weight of the rate, per bit/element
    beta: float = 1.0  # weight of the normalised feature MSE (keeps it from memorising answers)
    latent: int = 24
    hidden: int = 192
    stride: int = 1
    steps: int = 2000
    batch_size: int = 32
    lr: float = 1e-3
    train_images: int = 400
    views: int = 4  # augmented views per training image
    seed: int = 0


@dataclass
class TrainResult:
    codec: LearnedCodec
    path: Path
    log: List[Dict[str, float]]
    seconds: float


def _augment(preprocessing, seed: int):
    from torchvision import transforms

    torch.manual_seed(seed)
    return transforms.Compose(
        [
            transforms.RandomResizedCrop(preprocessing.crop, scale=(0.35, 1.0)),
            transforms.RandomHorizontalFlip(),
            transforms.ColorJitter(0.3, 0.3, 0.3),
            transforms.ToTensor(),
            transforms.Normalize(preprocessing.mean, preprocessing.std),
        ]
    )


def training_features(
    model: ModelSpec,
    head: Callable,
    tail: Callable,
    folder: ImageFolder,
    indices: List[int],
    views: int,
    seed: int,
    progress: Callable[[int], None],
):
    """(features (V*N, C, H, W), teacher log-probabilities) of ``views`` augmented crops of
    each image (view 0: the plain centre crop)."""
    augment = _augment(model.preprocessing, seed)
    feats, teacher = [], []
    with torch.inference_mode():
        for view in range(views):
            for start in range(0, len(indices), 32):
                batch = []
                for i in indices[start : start + 32]:
                    image = folder.load_image(i)
                    batch.append(model.preprocessing(image) if view == 0 else augment(image))
                x = head(torch.stack(batch))
                feats.append(x)
                teacher.append(torch.log_softmax(tail(x), dim=1))
                progress(len(batch))
    return torch.cat(feats), torch.cat(teacher)


def train_codec(
    model: ModelSpec,
    data: str,
    config: TrainConfig,
    out_dir: Path,
    progress: Optional[Callable[[str, int, int], None]] = None,
    resume: bool = True,
) -> TrainResult:
    """Train, write ``<out_dir>/<name>.npz`` (the artifact), a JSON log and a loss/rate plot;
    resumes from ``<out_dir>/<name>.checkpoint.pt`` when it exists and ``resume``."""
    report = progress or (lambda stage, done, total: None)
    out_dir.mkdir(parents=True, exist_ok=True)
    folder = ImageFolder(data, model.preprocessing)
    total = len(folder.files)
    if not 0 < config.train_images < total:
        raise DatasetError(
            f"--train-images must be 1..{total - 1} for {data} (the rest is for evaluation)"
        )
    indices = list(range(total - config.train_images, total))
    head, tail = split(model, config.cut)
    for p in tail.parameters():
        p.requires_grad_(False)
    torch.manual_seed(config.seed)
    done = [0]

    def step_features(n: int) -> None:
        done[0] += n
        report("features", done[0], len(indices) * config.views)

    feats, teacher = training_features(
        model, head, tail, folder, indices, config.views, config.seed, step_features
    )
    feats, teacher = feats.clone(), teacher.clone()  # leave inference mode
    _, c, h, w = feats.shape
    shape = BottleneckConfig(c, h, w, config.latent, config.hidden, config.stride)
    module = build_module(shape)
    module.mean.copy_(feats.mean(dim=(0, 2, 3)).view(1, -1, 1, 1))
    module.scale.copy_(feats.std(dim=(0, 2, 3)).clamp_min(1e-6).view(1, -1, 1, 1))
    main = [p for n, p in module.named_parameters() if not n.endswith("quantiles")]
    aux = [p for n, p in module.named_parameters() if n.endswith("quantiles")]
    optimizer = torch.optim.Adam(main, lr=config.lr)
    aux_optimizer = torch.optim.Adam(aux, lr=config.lr)
    checkpoint = checkpoint_path(out_dir, config.name)
    log: List[Dict[str, float]] = []
    start_step, seconds = 0, 0.0
    if resume and checkpoint.is_file():
        state = torch.load(checkpoint, weights_only=True)
        if state["config"] != asdict(config):
            raise DatasetError(
                f"{checkpoint} was written for other settings; delete it or use the same ones"
            )
        module.load_state_dict(state["module"])
        optimizer.load_state_dict(state["optimizer"])
        aux_optimizer.load_state_dict(state["aux_optimizer"])
        start_step, seconds = state["step"], state["seconds"]
        log = json.loads(state["log"])
    elements = c * h * w
    generator = torch.Generator().manual_seed(config.seed + start_step)
    module.train()
    began = time.perf_counter()
    for step in range(start_step, config.steps):
        for group in optimizer.param_groups:
            cosine = 0.5 * (1 + math.cos(math.pi * step / config.steps))
            group["lr"] = config.lr * (0.05 + 0.95 * cosine)
        idx = torch.randint(0, len(feats), (config.batch_size,), generator=generator)
        x, target = feats[idx], teacher[idx]
        x_hat, likelihoods = module(x)
        logp = torch.log_softmax(tail(x_hat), dim=1)
        kl = (target.exp() * (target - logp)).sum(dim=1).mean()
        mse = (((x_hat - x) / module.scale) ** 2).mean()
        rate = -torch.log2(likelihoods).sum() / (len(x) * elements)
        loss = kl + config.beta * mse + config.lmbda * rate
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(main, 1.0)
        optimizer.step()
        aux_loss = module.entropy.loss()
        aux_optimizer.zero_grad()
        aux_loss.backward()
        aux_optimizer.step()
        if step % 25 == 0 or step == config.steps - 1:
            log.append(
                {
                    "step": step,
                    "loss": float(loss.detach()),
                    "kl": float(kl.detach()),
                    "mse": float(mse.detach()),
                    "bits_per_element": float(rate.detach()),
                }
            )
        report("train", step + 1, config.steps)
        if (step + 1) % 200 == 0 and step + 1 < config.steps:
            _save_checkpoint(
                checkpoint, module, optimizer, aux_optimizer, config, step + 1,
                seconds + time.perf_counter() - began, log,
            )  # fmt: skip
    seconds += time.perf_counter() - began
    module.eval()
    meta = {
        "model": model.name,
        "weights": model.weights_id,
        "cut": config.cut,
        "train": asdict(config),
        "train_files": [folder.files[i].name for i in indices],
        "train_seconds": round(seconds, 1),
        "final": log[-1] if log else {},
    }
    codec = LearnedCodec.from_module(config.name, shape, module, **meta)
    path = codec.save(out_dir)
    (out_dir / f"{config.name}.log.json").write_text(json.dumps(log, indent=1) + "\n")
    _plot(log, out_dir / f"{config.name}-training.png", config.name)
    checkpoint.unlink(missing_ok=True)
    return TrainResult(codec, path, log, seconds)


def _save_checkpoint(path, module, optimizer, aux_optimizer, config, step, seconds, log) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "module": module.state_dict(),
            "optimizer": optimizer.state_dict(),
            "aux_optimizer": aux_optimizer.state_dict(),
            "config": asdict(config),
            "step": step,
            "seconds": seconds,
            "log": json.dumps(log),
        },
        tmp,
    )
    tmp.replace(path)


def _plot(log: List[Dict[str, float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not log:
        return
    steps = [r["step"] for r in log]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax1.plot(steps, [r["kl"] for r in log], label="KL to the uncompressed model")
    ax1.plot(steps, [r["mse"] for r in log], label="feature MSE (normalised)")
    ax1.set_yscale("log")
    ax1.set_xlabel("step")
    ax1.legend()
    ax2.plot(steps, [r["bits_per_element"] for r in log], color="C2")
    ax2.set_xlabel("step")
    ax2.set_ylabel("bits / element (entropy model)")
    fig.suptitle(f"train-codec {title}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
