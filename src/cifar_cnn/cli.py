"""The `cifar-cnn` command: a thin layer over the Python API.

Errors the user can fix print one line and exit with status 2; nothing prints a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cifar_cnn.errors import CifarCnnError

EXIT_USER_ERROR = 2


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USER_ERROR
    try:
        return args.func(args) or 0
    except CifarCnnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except ValueError as exc:  # bad option values (unknown model or recipe, bad device...)
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    from cifar_cnn import __version__

    p = argparse.ArgumentParser(prog="cifar-cnn", description="Train, evaluate and use CIFAR-10 CNNs.")
    p.add_argument("--version", action="version", version=f"cifar-cnn {__version__}")
    sub = p.add_subparsers(title="commands")

    t = sub.add_parser("train", help="train a recipe on CIFAR-10 and evaluate it on the test set")
    t.add_argument("--recipe", default="fast", help="fast (default), large or keras_cnn")
    t.add_argument("--out", help="run folder for checkpoints and model.safetensors (default runs/RECIPE)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--epochs", type=float, help="override the recipe's number of epochs")
    t.add_argument("--batch-size", type=int, help="override the recipe's batch size")
    t.add_argument("--lr", type=float, help="override the recipe's learning rate")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    t.add_argument("--overwrite", action="store_true", help="start over even if --out holds a run")
    t.add_argument("--data", help="CIFAR-10 folder or archive (default: $CIFAR_CNN_DATA, cache, download)")
    t.add_argument("--device", help="cpu, cuda, cuda:N (default: cuda if available)")
    t.add_argument("--train-subset", type=int, help="train on the first N images only")
    t.add_argument("--test-subset", type=int, help="evaluate on the first N test images only")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="test accuracy, per-class accuracy and confusion matrix")
    e.add_argument("model", nargs="?", help="model file or run folder (default: bundled pretrained)")
    e.add_argument("--tta", type=int, help="test-time augmentation: 0 none, 1 mirror, 2 mirror+translate")
    e.add_argument("--data", help="CIFAR-10 folder or archive")
    e.add_argument("--test-subset", type=int)
    e.add_argument("--json", action="store_true", help="print JSON")
    e.set_defaults(func=cmd_evaluate)

    pr = sub.add_parser("predict", help="classify image files (any size and format)")
    pr.add_argument("inputs", nargs="+", metavar="[MODEL] IMAGE", help="optional model file or run folder, then images")
    pr.add_argument("--model", "-m", help="model file or run folder (default: bundled pretrained)")
    pr.add_argument("--top-k", "-k", type=int, default=5)
    pr.add_argument("--json", action="store_true", help="print JSON")
    pr.set_defaults(func=cmd_predict)

    m = sub.add_parser("models", help="list the registered models")
    m.set_defaults(func=cmd_models)

    i = sub.add_parser("info", help="show a model file's metadata")
    i.add_argument("model", nargs="?")
    i.set_defaults(func=cmd_info)
    return p


def cmd_train(args) -> int:
    from cifar_cnn.data import load_cifar10
    from cifar_cnn.train import CHECKPOINT_NAME, train

    out = Path(args.out or f"runs/{args.recipe}")
    if (out / CHECKPOINT_NAME).exists() and not (args.resume or args.overwrite):
        raise CifarCnnError(f"{out} already holds a run: add --resume to continue it or --overwrite to start over")
    data = load_cifar10(args.data, verbose=not args.quiet)
    result = train(
        args.recipe, data=data, out_dir=out, seed=args.seed, resume=args.resume, device=args.device,
        train_subset=args.train_subset, test_subset=args.test_subset, progress=not args.quiet,
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
    )  # fmt: skip
    print(f"Test accuracy: {result.metrics.accuracy:.2%}  (model saved to {result.model_path})")
    return 0


def cmd_evaluate(args) -> int:
    from cifar_cnn.data import load_cifar10
    from cifar_cnn.evaluate import compute_metrics
    from cifar_cnn.predict import load

    clf = load(args.model)
    _, (x_test, y_test) = load_cifar10(args.data, verbose=not args.json)
    x_test, y_test = x_test[: args.test_subset], y_test[: args.test_subset]
    metrics = compute_metrics(clf.logits(x_test, tta=args.tta), y_test, clf.classes)
    if args.json:
        print(json.dumps({"model": clf.name, "tta": clf.tta if args.tta is None else args.tta, **metrics.to_dict()}))
    else:
        print(
            f"Model: {clf.name} ({args.model or 'bundled pretrained'}), tta={clf.tta if args.tta is None else args.tta}"
        )
        print(metrics.format())
    return 0


def _looks_like_model(path: str) -> bool:
    p = Path(path)
    return p.suffix == ".safetensors" or (p.is_dir() and (p / "model.safetensors").is_file())


def cmd_predict(args) -> int:
    from cifar_cnn.predict import Prediction, load

    inputs = list(args.inputs)
    model_path = args.model
    if model_path is None and len(inputs) > 1 and _looks_like_model(inputs[0]):
        model_path = inputs.pop(0)
    clf = load(model_path)
    results = clf.predict_files(inputs, top_k=args.top_k)
    failed = 0
    for r in results:
        if isinstance(r, Prediction):
            print(json.dumps(r.to_dict()) if args.json else _format_prediction(r))
        else:
            failed += 1
            if args.json:
                print(json.dumps({"error": str(r)}))
            print(f"error: {r}", file=sys.stderr)
    return 1 if failed else 0


def _format_prediction(p) -> str:
    flag = "  (uncertain: maybe none of these classes)" if p.uncertain else ""
    top = ", ".join(f"{label} {score:.1%}" for label, score in p.top_k)
    return f"{p.filename}: {p.label} ({p.score:.1%}){flag}\n    top-{len(p.top_k)}: {top}"


def cmd_models(args) -> int:
    from cifar_cnn.models import get_model_config, list_models

    for name in list_models():
        c = get_model_config(name)
        print(f"{name:<10} {c.description}")
    return 0


def cmd_info(args) -> int:
    from cifar_cnn.predict import load

    clf = load(args.model)
    meta = {k: v for k, v in clf.metadata.items() if k != "history"}
    print(json.dumps(meta, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
