"""Fashion-MNIST with few labels: what each lever of a semi-supervised step buys, one variant at a time.

Every variant is the real CLI on the real Fashion-MNIST with the same base (`fmnist_accuracy.py`'s `COMMON`: SmallCNN
width 16, 16 labeled + 112 unlabeled images per step) plus its overrides, trained for the same number of optimizer
steps, so its accuracy does not depend on how busy the machine is. Its cost is the run's whole wall time (start-up,
validation and test included) per step, recorded with the load average, from which the steps that fit a budget
follow. Results go to
`benchmarks/results/fmnist_levers.json` and to the `levers` section of docs/benchmarks.md.

    python benchmarks/fmnist_levers.py --variants fixmatch fixmatch_fast --steps 2000 --seeds 0

Several invocations add to one results file.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_results_args, publish, reproduce, write_json
from fmnist_accuracy import FMNIST, train

HEADING = "Fashion-MNIST: what each lever of a semi-supervised step buys"

BATCHED = ["augment.weak._target_=sesemi.data.batch_pipeline", "augment.strong._target_=sesemi.data.batch_pipeline"]
FASTEST = [*BATCHED, "run.channels_last=true", "run.precision=bf16-mixed"]


def _head(method: str, **settings: object) -> list[str]:
    """``method=<method>`` with settings of its unlabeled head, which has the method's name."""
    values = {k: str(v).lower() if isinstance(v, bool) else v for k, v in settings.items()}
    return [f"method={method}", *(f"method.loss_heads.{method}.{k}={v}" for k, v in values.items())]


def _softmatch_rotation(*settings: str) -> list[str]:
    """SoftMatch on the fastest step plus SESEMI's rotation head with ``settings`` (``key=value`` of that head)."""
    rotation = "+method.loss_heads.rotation"
    return [
        *_head("softmatch", separate_weak_forward=True),
        f"{rotation}._target_=sesemi.losses.RotationHead",
        *(f"{rotation}.{s}" for s in settings),
        *FASTEST,
    ]


# name -> (what it changes, overrides): the levers of docs/benchmarks.md, each alone and in the combinations tried
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "supervised": ("labeled images only", ["method=supervised"]),
    "supervised_fastest": ("labeled images only, channels-last + bf16", ["method=supervised", *FASTEST]),
    "fixmatch": ("FixMatch as before (per-image augmentation, joint weak+strong forward)", ["method=fixmatch"]),
    "fixmatch_batched": ("+ batched views", ["method=fixmatch", *BATCHED]),
    "fixmatch_fast": ("+ separate weak forward", [*_head("fixmatch", separate_weak_forward=True), *BATCHED]),
    "fixmatch_fastest": (
        "+ channels-last + bf16 autocast",
        [*_head("fixmatch", separate_weak_forward=True), *FASTEST],
    ),
    "freematch_fastest": ("FreeMatch on the fastest step", [*_head("freematch", separate_weak_forward=True), *FASTEST]),
    "softmatch_fastest": (
        "SoftMatch (uniform alignment) on the fastest step",
        [*_head("softmatch", separate_weak_forward=True), *FASTEST],
    ),
    "softmatch_wide": (
        "+ width 32 (4x the network's multiply-adds)",
        [*_head("softmatch", separate_weak_forward=True), "model.backbone.width=32", *FASTEST],
    ),
    "softmatch_uratio3": (
        "+ 48 unlabeled images per step instead of 112",
        [*_head("softmatch", separate_weak_forward=True), "data.unlabeled_batch_size=48", *FASTEST],
    ),
    "softmatch_warmup": (
        "+ supervised warm-up, first 20% of the steps",
        [*_head("softmatch", separate_weak_forward=True, start_step=0.2), *FASTEST],
    ),
    "softmatch_teacher": ("+ EMA-teacher pseudo-labels", [*_head("softmatch", pseudo_labels_from="teacher"), *FASTEST]),
    "softmatch_smoothing": (
        "+ label smoothing 0.1",
        [
            *_head("softmatch", separate_weak_forward=True),
            "method.loss_heads.supervised.label_smoothing=0.1",
            *FASTEST,
        ],
    ),
    "softmatch_cutout_small": (
        "+ Cutout of a quarter of the side instead of half",
        [*_head("softmatch", separate_weak_forward=True), "augment.strong.after.0.size=0.25", *FASTEST],
    ),
    "softmatch_ra5": (
        "+ RandAugment magnitude 5 instead of 10",
        [*_head("softmatch", separate_weak_forward=True), "augment.strong.steps.2.magnitude=5", *FASTEST],
    ),
    "softmatch_labeled_strong": (
        "+ the labeled loss on strong views (RandAugment + Cutout) instead of weak ones",
        [
            *_head("softmatch", separate_weak_forward=True),
            "+data.labeled_views.strong=${augment.strong}",
            "+method.loss_heads.supervised.view=strong",
            *FASTEST,
        ],
    ),
    "simmatch_fastest": (
        "SimMatch (labeled-memory calibration, 10 per class) on the fastest step",
        [*_head("simmatch", separate_weak_forward=True, bank_per_class=10), *FASTEST],
    ),
    "simmatch_mix": (
        "SimMatch with the authors' CIFAR aggregation (alpha 0.9)",
        [*_head("simmatch", separate_weak_forward=True, bank_per_class=10, aggregation_alpha=0.9), *FASTEST],
    ),
    "flexmatch_fastest": (
        "FlexMatch (curriculum per-class thresholds) on the fastest step",
        [*_head("flexmatch", separate_weak_forward=True), *FASTEST],
    ),
    "flexmatch_no_warmup": (
        "FlexMatch without threshold warm-up (Eq. 7: normalised by the best-learnt class only)",
        [*_head("flexmatch", separate_weak_forward=True, threshold_warmup=False), *FASTEST],
    ),
    "softmatch_deep": (
        "+ a fourth stage (128 channels at 3x3: 1.3x the multiply-adds)",
        [*_head("softmatch", separate_weak_forward=True), "model.backbone.stages=4", *FASTEST],
    ),
    "softmatch_rotation": (
        "+ SESEMI's rotation prediction on the labeled and unlabeled weak views (one rotation per image)",
        _softmatch_rotation(),
    ),
    "softmatch_rotation_strong": (
        "+ rotation prediction on the labeled weak and unlabeled strong views",
        _softmatch_rotation("sources=[[labeled,weak],[unlabeled,strong]]"),
    ),
    "softmatch_rotation_all": (
        "+ rotation prediction on the labeled and unlabeled weak views, all four rotations of each image",
        _softmatch_rotation("all_rotations=true"),
    ),
    "softmatch_rotation_half": (
        "+ rotation prediction (one rotation per image) at weight 0.5 instead of 1",
        _softmatch_rotation("weight=0.5"),
    ),
    "softmatch_rotation_double": (
        "+ rotation prediction (one rotation per image) at weight 2 instead of 1",
        _softmatch_rotation("weight=2"),
    ),
    "softmatch_rotation_joint": (
        "+ SLA's joint (class, rotation) classification of the labeled images' four rotations, an auxiliary task",
        [*_softmatch_rotation(), "+method.loss_heads.joint_rotation._target_=sesemi.losses.JointRotationHead"],
    ),
    "softmatch_rotation_graph": (
        "+ CoMatch's graph-contrastive loss (strong-view embeddings against the weak view's, pseudo-label graph)",
        [
            *_softmatch_rotation(),
            "+method.loss_heads.graph._target_=sesemi.losses.GraphContrastiveHead",
            "+method.loss_heads.graph.separate_weak_forward=true",
        ],
    ),
    "softmatch_rotation_wide": (
        "+ rotation prediction (one rotation per image), width 32 (4x the network's multiply-adds)",
        [*_softmatch_rotation(), "model.backbone.width=32"],
    ),
    "freematch_da": (
        "FreeMatch + distribution alignment on the fastest step",
        [*_head("freematch", separate_weak_forward=True, distribution_alignment=True), *FASTEST],
    ),
}


def run(variants: list[str], steps: int, labels: int, seeds: list[int], out: Path, common: list[str]) -> list[dict]:
    results = json.loads(out.read_text()) if out.exists() else []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        (workdir / "data").mkdir()
        (workdir / "data" / "fashion-mnist").symlink_to(FMNIST)
        for name in variants:
            overrides = VARIANTS[name][1]
            for seed in seeds:
                load_before = os.getloadavg()[0]
                started = time.time()
                metrics = train(
                    [
                        *overrides,
                        f"data.labels_per_class={labels}",
                        f"run.seed={seed}",
                        f"trainer.max_steps={steps}",
                        f"trainer.val_check_interval={max(1, steps // 8)}",
                        f"run.id=levers_{name}",
                    ],
                    workdir,
                    common,
                )
                row = {
                    "variant": name,
                    "labels_per_class": labels,
                    "seed": seed,
                    "steps": metrics["global_step"],
                    "test_acc": metrics["test"]["test/acc"],
                    "val_acc": metrics["objective"]["value"],
                    "wall_s": round(time.time() - started, 1),
                    "load": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                }
                row["s_per_step"] = round(row["wall_s"] / row["steps"], 4)
                print(json.dumps(row), flush=True)
                key = (name, labels, seed, steps)
                results = [r for r in results if (r["variant"], r["labels_per_class"], r["seed"], r["steps"]) != key]
                results.append(row)
                write_json(out, results)
    return results


def table(results: list[dict], command: str) -> str:
    lines = [
        "Fashion-MNIST, SmallCNN width 16, 16 labeled + 112 unlabeled images per step, the same number of steps for "
        "every variant; test accuracy (10,000 images) of the checkpoint best on validation (EMA weights); *s/step*: "
        "the run's wall time (start-up, 8 validations and the test included) per step on this 2-core machine, "
        "inflated by other jobs (load average before and after the run in the last column); *steps in 14 min*: "
        "what that cost fits in the issue's budget.",
        "",
        "| labels/class | variant | what changes | steps | test accuracy | seeds | s/step | steps in 14 min | load |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    order = list(VARIANTS)
    groups = sorted(
        {(r["labels_per_class"], r["steps"], r["variant"]) for r in results},
        key=lambda k: (k[0], k[1], order.index(k[2])),
    )
    for labels, steps, name in groups:
        rows = [r for r in results if (r["labels_per_class"], r["steps"], r["variant"]) == (labels, steps, name)]
        accs = [100 * r["test_acc"] for r in rows]
        spread = f" ± {statistics.stdev(accs):.1f}" if len(accs) > 1 else f" (seed {rows[0]['seed']})"
        per_step = statistics.mean(r["s_per_step"] for r in rows)
        loads = [x for r in rows for x in r["load"]]
        lines.append(
            f"| {labels} | {name} | {VARIANTS[name][0]} | {steps} | {statistics.mean(accs):.1f}{spread} | "
            f"{len(rows)} | {per_step:.3f} | {int(14 * 60 / per_step)} | {min(loads):.1f}-{max(loads):.1f} |"
        )
    return "\n".join([*lines, "", reproduce(command)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--labels", type=int, default=10)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    add_results_args(parser, "fmnist_levers")
    args = parser.parse_intermixed_args()
    if args.table_only:
        publish(args, "levers", HEADING, table)
        return
    if not FMNIST.is_dir():
        sys.exit(f"Fashion-MNIST not found at {FMNIST}: apt-get install dataset-fashion-mnist")
    results = run(args.variants, args.steps, args.labels, args.seeds, args.out, args.overrides)
    publish(args, "levers", HEADING, table, results)


if __name__ == "__main__":
    main()
