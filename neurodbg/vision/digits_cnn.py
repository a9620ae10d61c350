"""The embedded default vision model, `digits`: a small CNN trained at first use on
scikit-learn's digits (1,797 8x8 greyscale images inside the scikit-learn wheel),
since no package registry carries ImageNet weights.

Training is seeded, on the CPU, on one thread (so the reduction order, and with it
every weight, is the same on every run of one machine), and takes a few seconds.
The result is cached like the default language model — built in a hidden staging
directory and renamed into place, under the cache lock — with its held-out
accuracy in `neurodbg.json`.

Its layout follows a ResNet's, so the CNN adapter names its sites the same way:
`stem` (8x8), `stages.0.blocks.{0,1}.out` (8x8), `stages.1.blocks.{0,1}.out` (4x4,
the first block strides), `pool` and `logits`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from neurodbg import paths
from neurodbg.errors import ModelLoadError

NAME = "digits"
CACHE_NAME = "digits-cnn-v2"          # bump when the architecture or the recipe changes
WEIGHTS_FILE = "model.safetensors"
META_FILE = "neurodbg.json"
SEED = 0
EPOCHS = 12
BATCH = 32
PEAK_LR = 3e-3
MIN_ACCURACY = 0.97
LABELS = [str(d) for d in range(10)]


class ConvBlock(nn.Module):
    """3x3 convolution then ReLU: its output channels are the neurons of a block."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


class Stage(nn.Module):
    def __init__(self, blocks: list[ConvBlock]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class DigitsCNN(nn.Module):
    """[batch, 1, 8, 8] pixel intensities in [0, 1] -> [batch, 10] logits."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = ConvBlock(1, 16)
        self.stages = nn.ModuleList([Stage([ConvBlock(16, 32), ConvBlock(32, 32)]),
                                     Stage([ConvBlock(32, 64, stride=2), ConvBlock(64, 64)])])
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.logits = nn.Linear(64, 10)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.stem(pixels)
        for stage in self.stages:
            x = stage(x)
        return self.logits(self.pool(x))


@dataclass(frozen=True)
class DigitsModel:
    module: DigitsCNN
    accuracy: float            # on the held-out fifth of the digits (359 images)
    directory: Path


def images_of(x: torch.Tensor) -> torch.Tensor:
    """The digits' [n, 64] rows as [n, 1, 8, 8] images."""
    return x.reshape(-1, 1, 8, 8)


def train_digits_cnn(*, seed: int = SEED, epochs: int = EPOCHS) -> tuple[DigitsCNN, float]:
    """Train the CNN from scratch (seeded, CPU, one thread); return it with its held-out accuracy."""
    from neurodbg.train.digits import batches, digits_data

    data = digits_data(seed=seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        net = DigitsCNN()
        optimizer = torch.optim.Adam(net.parameters(), PEAK_LR)
        steps_per_epoch = len(data.y_train) // BATCH
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, PEAK_LR, total_steps=epochs * steps_per_epoch)
        net.train()
        stream = iter(batches(data, BATCH, seed))
        for _ in range(epochs * steps_per_epoch):
            x, y = next(stream)
            loss = F.cross_entropy(net(images_of(x)), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        net.eval()
        with torch.no_grad():
            accuracy = float((net(images_of(data.x_val)).argmax(-1) == data.y_val).float().mean())
    finally:
        torch.set_num_threads(threads)
    return net, accuracy


def cache_dir() -> Path:
    return paths.models_dir() / CACHE_NAME


def load_digits_cnn(*, progress: bool = True) -> DigitsModel:
    """The cached digits CNN, trained first if it is not cached yet."""
    from safetensors.torch import load_file, save_file

    from neurodbg.models.provision import cache_lock, staging_dir

    target = cache_dir()
    if not (target / META_FILE).is_file():
        with cache_lock(target.parent):
            if not (target / META_FILE).is_file():
                if progress:
                    import sys
                    sys.stderr.write("training the digits CNN (first use, a few seconds)...\n")
                net, accuracy = train_digits_cnn()
                if accuracy < MIN_ACCURACY:
                    raise ModelLoadError(f"the digits CNN reached only {accuracy:.1%} held-out accuracy "
                                         f"(expected at least {MIN_ACCURACY:.0%}); not caching it")
                with staging_dir(target) as staging:
                    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(staging / WEIGHTS_FILE))
                    meta = {"model": NAME, "architecture": "DigitsCNN", "accuracy": accuracy, "seed": SEED,
                            "epochs": EPOCHS, "batch": BATCH, "optimizer": f"Adam, one-cycle to {PEAK_LR}",
                            "held_out": "a seeded fifth of scikit-learn's digits (359 images)",
                            "labels": LABELS}
                    (staging / META_FILE).write_text(json.dumps(meta, indent=2))
    try:
        meta = json.loads((target / META_FILE).read_text())
        net = DigitsCNN()
        net.load_state_dict(load_file(str(target / WEIGHTS_FILE)))
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelLoadError(f"the cached digits CNN in {target} is damaged ({exc}); delete that directory "
                             f"to train it again") from None
    net.eval()
    return DigitsModel(net, float(meta["accuracy"]), target)
