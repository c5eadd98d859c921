"""How good is the shipped digits DDPM on its own? Samples of the bare chain, measured.

    python benchmarks/digits_base_quality.py --num-samples 2000

Reports the classifier's test accuracy; the class histogram of base samples (by the
shipped classifier's argmax) against the training set's; the classifier's mean
confidence (max probability) on base samples and on test images; and, to show the
model does not just replay its training images, the distance from each sample to its
nearest training image against the same distance for the held-out test images
(Euclidean, in pixels of [-1, 1]; quantiles, and the fraction of samples closer to a
training image than 1.0, about a quarter of a pixel's range on each of the 64 pixels'
root mean square).
"""
import argparse

import pyro
import torch

from pyro_twist import diffusion_chain
from pyro_twist.pretrained import digit_classifier, digits_kernel, load_digits


def base_samples(kernel, num_samples, batch):
    """Ancestral samples of the bare chain, drawn through the Pyro model in batches."""

    def model():
        return diffusion_chain("x", kernel, (1, 8, 8))

    samples = []
    with torch.no_grad():
        for start in range(0, num_samples, batch):
            with pyro.plate("samples", min(batch, num_samples - start), dim=-1):
                samples.append(model())
    return torch.cat(samples)


def nearest_distance(queries, references):
    return torch.cdist(queries.flatten(1), references.flatten(1)).min(1).values


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-samples", type=int, default=2000)
    parser.add_argument("--num-steps", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    pyro.set_rng_seed(args.seed)
    kernel, classifier = digits_kernel(num_steps=args.num_steps), digit_classifier()
    train, train_labels = load_digits("train")
    test, test_labels = load_digits("test")
    samples = base_samples(kernel, args.num_samples, 500)
    with torch.no_grad():
        probs_samples, probs_test = classifier(samples).softmax(-1), classifier(test).softmax(-1)
    accuracy = (probs_test.argmax(-1) == test_labels).double().mean().item()
    histogram = torch.bincount(probs_samples.argmax(-1), minlength=10) / args.num_samples
    train_histogram = torch.bincount(train_labels, minlength=10) / len(train_labels)
    d_samples, d_test = nearest_distance(samples, train), nearest_distance(test, train)
    quantiles = torch.tensor([0.05, 0.25, 0.5, 0.75])

    print(f"{args.num_samples} base samples, {kernel.num_steps} DDPM steps; "
          f"{len(train)} training and {len(test)} test images")
    print(f"classifier test accuracy: {accuracy:.4f}")
    print("| class | " + " | ".join(str(c) for c in range(10)) + " |")
    print("|---|" + "---|" * 10)
    print("| base samples | " + " | ".join(f"{h:.3f}" for h in histogram.tolist()) + " |")
    print("| training set | " + " | ".join(f"{h:.3f}" for h in train_histogram.tolist()) + " |")
    print(f"classifier confidence (mean max probability): base samples {probs_samples.max(-1).values.mean():.3f}, "
          f"test images {probs_test.max(-1).values.mean():.3f}; share of samples with max probability > 0.9: "
          f"{(probs_samples.max(-1).values > 0.9).double().mean():.3f} (test images "
          f"{(probs_test.max(-1).values > 0.9).double().mean():.3f})")
    print("| nearest training image, distance | 5% | 25% | median | 75% | share < 1.0 |")
    print("|---|---|---|---|---|---|")
    for label, d in (("base samples", d_samples), ("test images", d_test)):
        q = torch.quantile(d, quantiles.to(d.dtype))
        print(f"| {label} | " + " | ".join(f"{v:.2f}" for v in q.tolist()) + f" | {(d < 1.0).double().mean():.3f} |")


if __name__ == "__main__":
    main()
