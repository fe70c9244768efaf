"""BBN parity facts: our ``BBN`` against the official computation (Megvii-Nanjing/BBN, METHODS.md §4), side by side.

Prints, item by item, the α schedule per epoch, the reversed sampler's class frequencies, the composition of one
epoch of paired batches, one training step (loss, every gradient, the BatchNorm running statistics, the parameters
after one optimizer step) with identical weights on a fixed batch, the weight-decayed parameters, the LR of every
epoch, and the inference logits. The reference side is the official formula as METHODS.md §4 documents it; with
``--official DIR`` (a local checkout of github.com/Megvii-Nanjing/BBN, which this repository does not ship) it is
the official code itself, run on the CPU (its ``Network``, ``Combiner.bbn_mix``, ``get_optimizer``,
``get_scheduler``, the dataset's ``get_weight`` / ``sample_class_index_by_weight``) with its CIFAR-10 config.

    .venv/bin/python benchmarks/bbn_parity.py                        # ours vs the documented official formulas
    .venv/bin/python benchmarks/bbn_parity.py --official ../BBN      # ours vs the official code itself
    .venv/bin/python benchmarks/bbn_parity.py --write-cifar-digits data/digits_cifar   # data for methods.py

``--write-cifar-digits DIR`` writes the embedded digits in the CIFAR-10 python layout (``DIR/cifar-10-batches-py``):
the same train / test images as the ``digits`` dataset (uint8 0..255), 8x8 upsampled x3 (nearest) to 24x24,
zero-padded to 32x32 and repeated over 3 channels, so ``--dataset cifar10 --root DIR`` trains ResNet-32 on them with
the CIFAR transforms (random crop 32 / padding 4, horizontal flip), as the official loader would.
"""

from __future__ import annotations

import argparse
import ast
import pickle
import random
import sys
import types
from collections import Counter
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lt_lightning.data.paired import PairedSampler
from lt_lightning.data.samplers import InstanceSampler, ReversedSampler
from lt_lightning.methods import BBN
from lt_lightning.schedules import bbn_alpha

CIFAR10_RHO100 = (5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50)  # METHODS.md §1.1
EPOCHS = 200


# ----------------------------------------------------------------- the official code, optional
def load_official(root: Path) -> types.SimpleNamespace:
    """Import the official modules from a checkout (CPU; cv2 is stubbed: only the iNaturalist dataset uses it)."""
    import yaml

    sys.modules.setdefault("cv2", types.ModuleType("cv2"))
    sys.path.insert(0, str(root / "lib"))
    from core.combiner import Combiner
    from dataset.imbalance_cifar import IMBALANCECIFAR10
    from utils.utils import get_model, get_optimizer, get_scheduler

    def ns(d):
        return types.SimpleNamespace(**{k: ns(v) if isinstance(v, dict) else v for k, v in d.items()})

    def num(v):
        return ast.literal_eval(v) if isinstance(v, str) and v[:1].isdigit() else v

    c = yaml.safe_load((root / "configs" / "cifar10.yaml").read_text())
    t = c["TRAIN"]
    cfg = ns(
        {
            "CPU_MODE": True,
            "RESUME_MODEL": "",
            "BACKBONE": {"TYPE": c["BACKBONE"]["TYPE"], "FREEZE": False, "PRETRAINED_MODEL": ""},
            "MODULE": {"TYPE": c["MODULE"]["TYPE"]},
            "CLASSIFIER": {"TYPE": c["CLASSIFIER"]["TYPE"], "BIAS": c["CLASSIFIER"]["BIAS"]},
            "TRAIN": {
                "MAX_EPOCH": t["MAX_EPOCH"],
                "BATCH_SIZE": t["BATCH_SIZE"],
                "COMBINER": {"TYPE": t["COMBINER"]["TYPE"]},
                "OPTIMIZER": {k: num(v) for k, v in t["OPTIMIZER"].items()},
                "LR_SCHEDULER": {k: num(v) for k, v in t["LR_SCHEDULER"].items()},
            },
        }
    )
    return types.SimpleNamespace(
        cfg=cfg,
        Combiner=Combiner,
        dataset=IMBALANCECIFAR10,
        get_model=get_model,
        get_optimizer=get_optimizer,
        get_scheduler=get_scheduler,
    )


def official_alpha(off, epoch_1idx: int) -> float:
    """α read out of ``Combiner.bbn_mix``: features 1 (conventional) and 0 (re-balancing) give mixed = 2 (α, 0)."""
    seen = {}

    def model(x, **kw):
        if "classifier_flag" in kw:
            seen["mixed"] = x
            return torch.zeros(1, 2)
        return torch.ones(1, 1) if "feature_cb" in kw else torch.zeros(1, 1)

    combiner = off.Combiner(off.cfg, torch.device("cpu"))
    combiner.reset_epoch(epoch_1idx)
    meta = {"sample_image": torch.zeros(1), "sample_label": torch.zeros(1, dtype=torch.long)}
    combiner.bbn_mix(model, lambda z, y: z.sum(), torch.zeros(1), torch.zeros(1, dtype=torch.long), meta)
    return float(seen["mixed"][0, 0]) / 2


def to_official_key(key: str) -> str | None:
    """Our BBN(resnet32) state-dict key -> the official ``Network(bbn_res32_cifar)`` key (None: not a weight)."""
    if key.startswith("criterion."):
        return None
    key = key.replace("backbone.stem.0.", "backbone.conv1.").replace("backbone.stem.1.", "backbone.bn1.")
    key = key.replace("backbone.layer3.4.", "backbone.cb_block.").replace("rb_branch.", "backbone.rb_block.")
    return key


# ----------------------------------------------------------------- helpers
def attach(model: BBN, epoch: int, max_epochs: int = EPOCHS) -> L.Trainer:
    trainer = L.Trainer(max_epochs=max_epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    model.trainer = trainer
    trainer.fit_loop.epoch_progress.current.completed = epoch  # what trainer.current_epoch reads
    return trainer


def line(name: str, ours, ref, diff: float | None = None) -> None:
    verdict = "" if diff is None else ("  SAME" if diff <= 1e-5 else "  DIFFERENT")
    print(f"  {name:<38} ours {ours!s:<22} ref {ref!s:<22}" + ("" if diff is None else f" |diff| {diff:.2e}{verdict}"))


def section(title: str) -> None:
    print(f"\n## {title}")


# ----------------------------------------------------------------- the checks
def check_alpha(off) -> None:
    section(f"alpha per epoch ({EPOCHS} epochs; official combiner: 1 - ((e-1)/div)^2, e 1-indexed)")
    for e in (1, 2, 50, 100, 120, 160, 200):
        ours = bbn_alpha(e - 1, EPOCHS, "code")
        ref = official_alpha(off, e) if off else 1 - ((e - 1) / EPOCHS) ** 2
        line(f"epoch {e} (0-idx {e - 1})", f"{ours:.6f}", f"{ref:.6f}", abs(ours - ref))
    for total in (90, 180):  # the official div_epoch quirk
        ours = bbn_alpha(total - 1, total)
        ref = 1 - ((total - 1) / (100 * (total // 100 + 1))) ** 2
        if off:
            saved = off.cfg.TRAIN.MAX_EPOCH
            off.cfg.TRAIN.MAX_EPOCH = total
            ref = official_alpha(off, total)
            off.cfg.TRAIN.MAX_EPOCH = saved
        line(f"last epoch of a {total}-epoch run", f"{ours:.6f}", f"{ref:.6f}", abs(ours - ref))


def check_sampler(off, draws: int) -> None:
    section(f"reversed sampler: class frequencies over {draws} draws (CIFAR-10-LT rho 100 counts)")
    counts = np.array(CIFAR10_RHO100)
    targets = np.repeat(np.arange(10), counts)
    expected = (1 / counts) / (1 / counts).sum()
    sampler = ReversedSampler(targets, seed=0, num_samples=draws)
    ours = np.bincount(targets[np.fromiter(iter(sampler), int)], minlength=10) / draws
    if off:
        annotations = [{"category_id": int(t)} for t in targets]
        me = types.SimpleNamespace(cls_num=10)
        me.class_weight, me.sum_weight = off.dataset.get_weight(me, annotations, 10)
        random.seed(0)
        ref = np.bincount([off.dataset.sample_class_index_by_weight(me) for _ in range(draws)], minlength=10) / draws
        ref_exact = np.array(me.class_weight) / me.sum_weight
    else:
        ref, ref_exact = expected, expected
    se = np.sqrt(expected * (1 - expected) / draws)
    exact = float(np.abs(sampler.class_probabilities() - expected).max())
    line("exact P(class): ours vs (1/n)/sum(1/n)", "", "", exact)
    line("exact P(class): ref vs (1/n)/sum(1/n)", "", "", float(np.abs(ref_exact - expected).max()))
    for c in (0, 4, 9):
        line(f"class {c} (n={counts[c]})", f"{ours[c]:.4f}", f"{ref[c]:.4f}")
    z, z_ref = (float((np.abs(f - expected) / se).max()) for f in (ours, ref))
    print(
        f"  largest deviation from (1/n_c)/sum(1/n_j), in standard errors: ours {z:.2f}, ref {z_ref:.2f}"
        " (over 10 classes, sampling noise alone stays under ~3)"
    )


def check_batches(batch_size: int = 128) -> None:
    section("one epoch of paired batches (CIFAR-10-LT rho 100, batch 128, drop_last as the official loader)")
    targets = np.repeat(np.arange(10), CIFAR10_RHO100)
    pairs = list(PairedSampler(InstanceSampler(targets, seed=0), ReversedSampler(targets, seed=1_000_003)))
    full = len(pairs) // batch_size
    first = [i for i, _ in pairs[: full * batch_size]]
    print(f"  {len(pairs)} pairs -> {full} full batches of {batch_size} (official: len // batch with drop_last=True)")
    print(f"  conventional stream: {len(set(first))} distinct of {len(first)} (uniform, without replacement: equal)")
    second = Counter(int(targets[j]) for _, j in pairs)
    print(
        f"  re-balancing stream labels, head / tail: {second[0]} / {second[9]} (expected ~{0.0040 * len(pairs):.0f}"
        f" / ~{0.4024 * len(pairs):.0f}); pairs independent, each image with the training transform"
    )


def fixed_batch(n: int = 8):
    g = torch.Generator().manual_seed(0)
    return (
        torch.randn(n, 3, 32, 32, generator=g),
        torch.randint(0, 10, (n,), generator=g),
        torch.randn(n, 3, 32, 32, generator=g),
        torch.randint(0, 10, (n,), generator=g),
    )


def check_step(off, epoch: int = 49) -> None:
    section(f"one training step, identical weights, fixed batch of 8 + 8, epoch {epoch + 1} of {EPOCHS} (1-indexed)")
    torch.manual_seed(0)
    ours = BBN(CIFAR10_RHO100, backbone="resnet32")
    attach(ours, epoch)
    ours.train()
    x_c, y_c, x_r, y_r = fixed_batch()
    if off:
        theirs = off.get_model(off.cfg, 10, torch.device("cpu"), None)
        theirs.load_state_dict({to_official_key(k): v for k, v in ours.state_dict().items() if to_official_key(k)})
        theirs.train()
        combiner = off.Combiner(off.cfg, torch.device("cpu"))
        combiner.reset_epoch(epoch + 1)
        ref_loss, _ = combiner.bbn_mix(theirs, F.cross_entropy, x_c, y_c, {"sample_image": x_r, "sample_label": y_r})
        ref_params = dict(theirs.named_parameters())
        ref_buffers = dict(theirs.named_buffers())
    else:  # the documented formula, computed by hand on a copy
        theirs = BBN(CIFAR10_RHO100, backbone="resnet32")
        theirs.load_state_dict(ours.state_dict())
        theirs.train()
        a = 1 - (epoch / EPOCHS) ** 2
        f_c = theirs.backbone.forward_pool(theirs.backbone.layer3[4](theirs.backbone.forward_trunk(x_c)))
        f_r = theirs.backbone.forward_pool(theirs.rb_branch(theirs.backbone.forward_trunk(x_r)))
        z = 2 * a * f_c @ theirs.classifier.weight[:, :64].T + 2 * (1 - a) * f_r @ theirs.classifier.weight[:, 64:].T
        z = z + theirs.classifier.bias
        ref_loss = a * F.cross_entropy(z, y_c) + (1 - a) * F.cross_entropy(z, y_r)
        ref_params = {to_official_key(k): p for k, p in theirs.named_parameters()}
        ref_buffers = {to_official_key(k): b for k, b in theirs.named_buffers() if "metrics" not in k}
        ref_buffers = {k: b for k, b in ref_buffers.items() if k}
    loss, _, _ = ours.training_loss((x_c, y_c, x_r, y_r))
    line("loss", f"{loss.item():.6f}", f"{ref_loss.item():.6f}", abs(loss.item() - ref_loss.item()))
    loss.backward()
    ref_loss.backward()
    named = {to_official_key(k): p for k, p in ours.named_parameters()}
    grad_diff = max(float((p.grad - ref_params[k].grad).abs().max()) for k, p in named.items())
    line(f"gradients ({len(named)} tensors), max", "", "", grad_diff)
    buffers = {to_official_key(k): b for k, b in ours.named_buffers() if to_official_key(k) in ref_buffers}
    bn_diff = max(float((b.float() - ref_buffers[k].float()).abs().max()) for k, b in buffers.items())
    n_tracked = int(buffers["backbone.bn1.num_batches_tracked"])
    line(
        f"BN running stats ({len(buffers)} buffers), max",
        f"trunk BN batches={n_tracked}",
        f"{int(ref_buffers['backbone.bn1.num_batches_tracked'])}",
        bn_diff,
    )

    section("optimizer: which parameters are decayed, Nesterov, one step")
    opt = ours.build_optimizer()
    if off:
        ref_opt = off.get_optimizer(off.cfg, theirs)
    else:
        ref_opt = torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=0.9, weight_decay=2e-4, nesterov=True)

    def decayed(o):
        return sum(p.numel() for g in o.param_groups if g["weight_decay"] > 0 for p in g["params"])

    def groups(o):
        return sorted({(g["lr"], g["momentum"], g["weight_decay"], g["nesterov"]) for g in o.param_groups})

    total = sum(p.numel() for p in ours.parameters())
    line("decayed parameters (of all)", f"{decayed(opt)}/{total}", f"{decayed(ref_opt)}/{total}")
    line("(lr, momentum, wd, nesterov)", groups(opt), groups(ref_opt))
    opt.step()
    ref_opt.step()
    step_diff = max(float((p.detach() - ref_params[k].detach()).abs().max()) for k, p in named.items())
    line("parameters after one step, max", "", "", step_diff)

    section("inference (eval mode): logits on the fixed images")
    ours.eval()
    theirs.eval()
    with torch.no_grad():
        z = ours.predict_logits(x_c)
        if off:
            ref_z = theirs(theirs(x_c, feature_flag=True), classifier_flag=True)
        else:
            trunk = theirs.backbone.forward_trunk(x_c)
            feats = [theirs.backbone.forward_pool(b(trunk)) for b in (theirs.backbone.layer3[4], theirs.rb_branch)]
            ref_z = theirs.classifier(torch.cat(feats, 1))
        mixed = ours.mixed_logits(x_c, x_c, 0.5)
    scale = float(ref_z.abs().max())  # eval-mode logits after one BN update are large: compare relatively
    line(
        "logits, max |diff| / max |ref|",
        f"max |z| {float(z.abs().max()):.4g}",
        f"{scale:.4g}",
        float((z - ref_z).abs().max()) / scale,
    )
    line("= training formula at alpha 0.5, relative", "", "", float((mixed - ref_z).abs().max()) / scale)


def check_lr(off) -> None:
    section(f"learning rate per epoch ({EPOCHS} epochs; official: scheduler.step() before each epoch)")
    model = BBN(CIFAR10_RHO100, backbone="resnet32")
    attach(model, 0)
    opt = model.build_optimizer()
    sched = model.build_lr_scheduler(opt)
    ours = []
    for _ in range(EPOCHS):
        ours.append(opt.param_groups[0]["lr"])
        sched.step()
    if off:
        ref_opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=off.cfg.TRAIN.OPTIMIZER.BASE_LR)
        ref_sched = off.get_scheduler(off.cfg, ref_opt)
        ref = []
        for _ in range(EPOCHS):
            ref_sched.step()  # main/train.py: step, then train the epoch
            ref.append(ref_opt.param_groups[0]["lr"])
    else:

        def warm(k):
            return (1 / 3) * (1 - k / 5) + k / 5 if k < 5 else 1.0

        ref = [0.1 * warm(e) * 0.01 ** sum(e >= m for m in (120, 160)) for e in range(1, EPOCHS + 1)]
    for e in (1, 2, 3, 4, 5, 119, 120, 159, 160, 200):
        line(f"epoch {e} (0-idx {e - 1})", f"{ours[e - 1]:.6g}", f"{ref[e - 1]:.6g}", abs(ours[e - 1] - ref[e - 1]))
    line("all epochs, max", "", "", max(abs(a - b) for a, b in zip(ours, ref, strict=True)))


# ----------------------------------------------------------------- CIFAR-layout digits
def write_cifar_digits(root: Path) -> None:
    from lt_lightning.data.datasets import load_digits

    base = load_digits()
    out = root / "cifar-10-batches-py"
    out.mkdir(parents=True, exist_ok=True)

    def cifar_rows(images: np.ndarray) -> np.ndarray:
        x = np.asarray(images, dtype=np.uint8)  # (N, 8, 8), already 0..255
        x = x.repeat(3, axis=1).repeat(3, axis=2)  # 8x8 -> 24x24, nearest
        x = np.pad(x, ((0, 0), (4, 4), (4, 4)))  # -> 32x32
        return np.repeat(x[:, None], 3, axis=1).reshape(len(x), -1)  # 3 channels, CIFAR row layout

    train_x, train_y = cifar_rows(base.train.images), [int(t) for t in base.train.targets]
    chunks = np.array_split(np.arange(len(train_y)), 5)
    for i, idx in enumerate(chunks, 1):
        batch = {"data": train_x[idx], "labels": [train_y[j] for j in idx]}
        (out / f"data_batch_{i}").write_bytes(pickle.dumps(batch))
    test = {"data": cifar_rows(base.test.images), "labels": [int(t) for t in base.test.targets]}
    (out / "test_batch").write_bytes(pickle.dumps(test))
    (out / "batches.meta").write_bytes(pickle.dumps({"label_names": [str(c) for c in range(10)]}))
    print(f"wrote {len(train_y)} training and {len(test['labels'])} test images (32x32x3) to {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", type=Path, help="a local checkout of Megvii-Nanjing/BBN (never committed)")
    parser.add_argument("--draws", type=int, default=200_000, help="sampler draws for the frequency check")
    parser.add_argument("--write-cifar-digits", type=Path, metavar="DIR", help="write CIFAR-layout digits, exit")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.write_cifar_digits:
        write_cifar_digits(args.write_cifar_digits)
        return
    off = load_official(args.official) if args.official else None
    print("reference: " + (f"the official code at {args.official}" if off else "the official formulas (METHODS.md §4)"))
    check_alpha(off)
    check_sampler(off, args.draws)
    check_batches()
    check_step(off)
    check_lr(off)


if __name__ == "__main__":
    main()
