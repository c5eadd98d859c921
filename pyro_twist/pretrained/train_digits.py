"""Train the shipped digits models: a DDPM ``UNet2DModel`` and the digit classifier.

    python -m pyro_twist.pretrained.train_digits            # about 4 minutes on 2 CPU cores

Both are trained on the train split of scikit-learn's bundled 8x8 digits (see
``data.load_digits``) with a fixed seed, and written with ``save_pretrained`` to
``pyro_twist/pretrained/digits/`` (``unet/``, ``scheduler/``, ``classifier/``), where
``pyro_twist.pretrained`` loads them. The DDPM predicts the noise under a cosine
schedule of 1000 steps; the weights kept are an exponential moving average.
"""
import argparse
import copy
import json
import time
from pathlib import Path

import torch
from diffusers import DDPMScheduler, UNet2DModel
from tqdm.auto import tqdm

from .classifier import DigitClassifier
from .data import load_digits

DIGITS_DIR = Path(__file__).resolve().parent / "digits"


def make_unet():
    return UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
    )


def make_scheduler():
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=True)


def train_ddpm(images, num_steps, batch_size, lr, ema_decay, generator, progress_bar=True):
    unet, scheduler = make_unet(), make_scheduler()
    ema = copy.deepcopy(unet).requires_grad_(False)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=num_steps, pct_start=0.05)
    alphas_cumprod = scheduler.alphas_cumprod
    bar = tqdm(range(num_steps), desc="DDPM", disable=not progress_bar)
    for _ in bar:
        x0 = images[torch.randint(len(images), (batch_size,), generator=generator)]
        t = torch.randint(scheduler.config.num_train_timesteps, (batch_size,), generator=generator)
        noise = torch.randn(x0.shape, generator=generator)
        a = alphas_cumprod[t].reshape(-1, 1, 1, 1)
        loss = torch.nn.functional.mse_loss(unet(a.sqrt() * x0 + (1 - a).sqrt() * noise, t).sample, noise)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            for p_ema, p in zip(ema.parameters(), unet.parameters()):
                p_ema.lerp_(p, 1 - ema_decay)
        bar.set_postfix(loss=f"{loss.item():.4f}")
    return ema.eval(), scheduler


def train_classifier(images, labels, num_epochs, batch_size, lr, noise_std, generator):
    classifier = DigitClassifier()
    optimizer = torch.optim.Adam(classifier.parameters(), lr=lr)
    for _ in range(num_epochs):
        for batch in torch.randperm(len(images), generator=generator).split(batch_size):
            # Noisy copies: rewards are read off denoiser estimates, which are not clean digits.
            x = images[batch] + noise_std * torch.rand((len(batch), 1, 1, 1), generator=generator) * torch.randn(
                images[batch].shape, generator=generator)
            loss = torch.nn.functional.cross_entropy(classifier(x), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return classifier.eval()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DIGITS_DIR)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ddpm-steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--ema-decay", type=float, default=0.998)
    parser.add_argument("--classifier-epochs", type=int, default=40)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    train_images, train_labels = load_digits("train")
    test_images, test_labels = load_digits("test")

    start = time.perf_counter()
    classifier = train_classifier(train_images, train_labels, args.classifier_epochs, 64, 1e-3, 0.5, generator)
    with torch.no_grad():
        accuracy = (classifier(test_images).argmax(-1) == test_labels).double().mean().item()
    print(f"classifier test accuracy {accuracy:.4f}")
    unet, scheduler = train_ddpm(train_images, args.ddpm_steps, args.batch_size, args.lr, args.ema_decay, generator)
    seconds = time.perf_counter() - start

    unet.save_pretrained(args.out / "unet")
    scheduler.save_pretrained(args.out / "scheduler")
    classifier.save_pretrained(args.out / "classifier")
    record = {"seed": args.seed, "ddpm_steps": args.ddpm_steps, "batch_size": args.batch_size, "lr": args.lr,
              "ema_decay": args.ema_decay, "classifier_epochs": args.classifier_epochs,
              "classifier_test_accuracy": accuracy, "training_seconds": round(seconds, 1)}
    (args.out / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out} in {seconds:.0f} s")


if __name__ == "__main__":
    main()
