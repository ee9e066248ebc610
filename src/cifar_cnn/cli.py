"""The `cifar-cnn` command: a thin layer over the Python API.

Errors the user can fix print one line and exit with status 2; nothing prints a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cifar_cnn.baselines import PRECISIONS
from cifar_cnn.errors import CifarCnnError
from cifar_cnn.recipes import RECIPES

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
    except OSError as exc:  # unwritable output folder, full disk...
        print(f"error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


def _fractions(text: str) -> tuple[float, ...]:
    """--progressive-resize's value: comma-separated fractions of the image side in (0, 1], or 'off'."""
    if text.strip().lower() in ("off", "none", ""):
        return ()
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        values = ()
    if not values or not all(0 < v <= 1 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: give fractions of the image side in (0, 1], e.g. 0.625,0.75,1")
    return values


def build_parser() -> argparse.ArgumentParser:
    from cifar_cnn import __version__

    p = argparse.ArgumentParser(prog="cifar-cnn", description="Train, evaluate and use CNN image classifiers: "
                                "CIFAR-10 or your own labelled images.")  # fmt: skip
    p.add_argument("--version", action="version", version=f"cifar-cnn {__version__}")
    sub = p.add_subparsers(title="commands")

    t = sub.add_parser("train", help="train a recipe on CIFAR-10 or on a labelled image folder, then evaluate it")
    t.add_argument("--recipe", default="fast", help=f"one of {', '.join(sorted(RECIPES))} (default: fast)")
    t.add_argument("--data", help="a labelled image folder (FOLDER/<class>/<images>, or train/ val/ test/ of them), "
                   "or a CIFAR-10 folder or archive (default: CIFAR-10 from $CIFAR_CNN_DATA, cache, download)")  # fmt: skip
    t.add_argument(
        "--out", help="run folder for checkpoints and model.safetensors (default runs/RECIPE or runs/FOLDER)"
    )
    t.add_argument("--init", default="auto", help="auto (default: fine-tune the bundled CIFAR-10 weights on small "
                   "folders), scratch, pretrained, or a model file to start from")  # fmt: skip
    t.add_argument("--image-size", type=int, default=32, help="folder images are resized to this square size (32, 64)")
    t.add_argument("--val-fraction", type=float, default=0.2, help="share of each class held out for validation when "
                   "the folder has no val/ (default 0.2)")  # fmt: skip
    t.add_argument("--class-weights", action="store_true", help="weight the loss by inverse class frequency")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--epochs", type=float, help="override the recipe's number of epochs")
    t.add_argument("--batch-size", type=int, help="override the recipe's batch size")
    t.add_argument("--lr", type=float, help="override the recipe's learning rate")
    t.add_argument("--progressive-resize", type=_fractions, metavar="F1,F2,...", help="train early epochs on "
                   "smaller images: the run split into equal parts, part i at this fraction of the image side "
                   "(e.g. 0.625,0.75,1 ; 'off' for full size throughout; the fast_progressive recipe uses one)")  # fmt: skip
    t.add_argument("--drop-easy", type=float, metavar="SHARE", help="hard-example focus: from the third epoch "
                   "on, leave this share of the images out of each epoch, those with the lowest loss (0 to turn "
                   "it off; the fast_progressive recipe uses 0.3)")  # fmt: skip
    t.add_argument(
        "--compile", action="store_true", help="run training through torch.compile (pays off only on long GPU runs)"
    )
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    t.add_argument("--overwrite", action="store_true", help="start over even if --out holds a run")
    t.add_argument("--device", help="cpu, cuda, cuda:N (default: cuda if available)")
    t.add_argument("--train-subset", type=int, help="train on the first N images only")
    t.add_argument("--test-subset", type=int, help="evaluate on the first N test images only")
    t.add_argument("--no-tensorboard", action="store_true", help="write no TensorBoard logs into --out "
                   "(default: per-epoch curves, confusion matrix, sample predictions, hyperparameters)")  # fmt: skip
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="accuracy, per-class accuracy and confusion matrix on test data")
    e.add_argument("model", nargs="?", help="model file or run folder (default: bundled pretrained)")
    e.add_argument("--tta", type=int, help="test-time augmentation: 0 none, 1 mirror, 2 mirror+translate")
    e.add_argument("--data", help="CIFAR-10 folder or archive (for CIFAR-10 models)")
    e.add_argument("--images", help="a labelled image folder DIR/<class name>/<images> (default: the model's own "
                   "folder's test split, or CIFAR-10's test set)")  # fmt: skip
    e.add_argument("--test-subset", type=int)
    e.add_argument("--json", action="store_true", help="print JSON")
    e.add_argument("--corruptions", action="store_true", help="robustness instead: accuracy under CIFAR-10-C's 15 "
                   "corruptions at 5 severities, and through the photo pipeline (cached per model and data)")  # fmt: skip
    e.add_argument("--severities", default="1,2,3,4,5", help="with --corruptions: which severities (default 1,2,3,4,5)")
    e.add_argument("--seed", type=int, default=0, help="with --corruptions: seed of the random corruptions")
    e.add_argument("--no-cache", action="store_true", help="with --corruptions: recompute, ignoring cached results")
    e.set_defaults(func=cmd_evaluate)

    pr = sub.add_parser("predict", help="classify image files or folders of them (any size and format)")
    pr.add_argument("inputs", nargs="+", metavar="[MODEL] IMAGE|DIR",
                    help="optional model file or run folder, then images and folders of images")  # fmt: skip
    pr.add_argument("--model", "-m", help="model file or run folder (default: bundled pretrained)")
    pr.add_argument("--top-k", "-k", type=int, default=5)
    pr.add_argument("--json", action="store_true", help="print JSON (one object per line)")
    pr.add_argument("--recursive", "-r", action="store_true", help="include the subfolders of folders")
    pr.add_argument("--out", "-o", metavar="FILE", help="write one row per file to FILE.csv or FILE.jsonl (streamed, "
                    "flushed every batch) and print a summary, instead of printing predictions")  # fmt: skip
    pr.add_argument("--resume", action="store_true", help="skip the files --out already has a row for")
    pr.add_argument("--overwrite", action="store_true", help="start --out over if it exists")
    pr.add_argument("--workers", type=int, help="decoding processes (default: one per core)")
    pr.add_argument("--batch-size", type=int, default=256, help="images per model call (default 256)")
    pr.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    pr.add_argument("--explain", nargs="?", const="explanations", metavar="DIR",
                    help="also write, per image, DIR/<name>.why.png: the picture with a heatmap of where the model "
                    "found its answer (LayerCAM; default DIR: ./explanations)")  # fmt: skip
    pr.set_defaults(func=cmd_predict)

    b = sub.add_parser("bench", help="time-to-accuracy benchmark over seeds; writes bench/results/*.json and .md")
    b.add_argument("--recipe", default="fast")
    b.add_argument("--seeds", type=int, default=5)
    b.add_argument("--baseline", nargs="+", default=["keras_cnn"], metavar="RECIPE | airbench SOURCE",
                   help="recipe to compare with in the same run ('none' to skip), or 'airbench SOURCE': the published "
                   "airbench94_muon from your copy (its .py or a git directory), ported to the CPU by "
                   "shared/tools/airbench-cpu")  # fmt: skip
    b.add_argument("--baseline-runs", type=int, default=3, help="runs of airbench (default 3)")
    b.add_argument("--baseline-precision", choices=PRECISIONS, default="auto",
                   help="airbench's precision: auto (default) is what our training uses on this CPU, "
                        "fp32 where bf16 is not native; bf16 is the port's autocast as published")  # fmt: skip
    b.add_argument("--out", default="bench/results")
    b.add_argument("--compare", help="a previous result JSON to compare with")
    b.add_argument("--save-models", help="also save each run's model under this folder")
    b.add_argument("--epochs", type=float, help="override epochs (both recipes; for quick checks)")
    b.add_argument("--train-subset", type=int)
    b.add_argument("--test-subset", type=int)
    b.add_argument("--profile", action="store_true", help="only profile a few training steps (torch.profiler)")
    b.add_argument(
        "--compile", action="store_true", help="train through torch.compile (compilation counted in the time)"
    )
    b.add_argument(
        "--inference",
        metavar="MODEL",
        nargs="?",
        const="",
        help="only compare inference paths: PyTorch fp32/bf16, frozen TorchScript, ONNX Runtime fp32/int8: "
        "images/s, one-image latency, accuracy (default: the bundled default model)",
    )
    b.set_defaults(func=cmd_bench)

    r = sub.add_parser("report", help="HTML report + PNG figures: per-class scores, confusion, mistakes, calibration")
    r.add_argument("model", nargs="?", help="model file or run folder (default: bundled pretrained)")
    r.add_argument("--out", default="report", help="folder for report.html, the PNGs and summary.json")
    r.add_argument("--images", help="a labelled image folder (DIR/<class>/<images>) instead of the CIFAR-10 test set")
    r.add_argument("--data", help="CIFAR-10 folder or archive")
    r.add_argument("--tta", type=int)
    r.add_argument("--test-subset", type=int)
    r.add_argument("--no-ood", action="store_true", help="skip the none-of-these (out-of-distribution) check")
    r.add_argument("--corruptions", action="store_true", help="add a robustness section (CIFAR-10-C's corruptions, "
                   "photo pipeline), computing what is not cached; without it, added when cached for this model")  # fmt: skip
    r.set_defaults(func=cmd_report)

    d = sub.add_parser("data", help="data utilities")
    dsub = d.add_subparsers(title="data commands")
    dp = dsub.add_parser("preview", help="save a grid of training images and of what augmentation does")
    dp.add_argument("--out", default="preview", help="folder for the PNGs")
    dp.add_argument("--data", help="CIFAR-10 folder or archive")
    dp.add_argument("--recipe", default="fast", help="whose augmentation to show")
    dp.set_defaults(func=cmd_data_preview)
    dc = dsub.add_parser("check", help="check a labelled image folder: classes, splits, skipped files, duplicates")
    dc.add_argument("folder")
    dc.add_argument("--image-size", type=int, default=32)
    dc.add_argument("--val-fraction", type=float, default=0.2)
    dc.add_argument("--seed", type=int, default=0)
    dc.add_argument("--json", action="store_true", help="print JSON")
    dc.set_defaults(func=cmd_data_check)

    s = sub.add_parser("serve", help="web page + HTTP API (FastAPI under uvicorn)")
    s.add_argument("model", nargs="?", help="model file or run folder (default: bundled pretrained)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--max-upload-mb", type=float, default=10, help="largest accepted image file (413 above)")
    s.add_argument("--max-batch", type=int, default=64, help="micro-batch size limit")
    s.add_argument("--max-wait-ms", type=float, default=5, help="how long a request waits for others to batch with")
    s.add_argument("--api-key", help="require 'Authorization: Bearer KEY' (default: $CIFAR_CNN_API_KEY); needed "
                   "when --host is not a loopback address")  # fmt: skip
    s.add_argument("--insecure", action="store_true", help="serve beyond loopback without an API key (not advised)")
    s.add_argument("--rate-limit", type=float, help="requests/s per client address, bursts of twice that; 0: off "
                   "(default: 10 beyond loopback, off on loopback)")  # fmt: skip
    s.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="allow browser pages from this origin (e.g. https://example.org) to call the API; repeatable")  # fmt: skip
    s.add_argument("--header-timeout", type=float, default=10, help="seconds a client has to send its headers")
    s.add_argument("--body-timeout", type=float, default=60, help="seconds a client has to send a request's body")
    s.add_argument("--max-connections", type=int, default=1000, help="open connections and requests (503 above)")
    s.add_argument("--studio", action="store_true", help="also serve the studio at /studio: classes, images, one-click "
                   "training in the browser (writes projects under --workdir)")  # fmt: skip
    s.add_argument("--workdir", help="the studio's projects folder (default ~/.local/share/cifar-cnn/studio, or "
                   "$XDG_DATA_HOME/cifar-cnn/studio)")  # fmt: skip
    s.set_defaults(func=cmd_serve)

    x = sub.add_parser("export", help="export to ONNX or TorchScript with the preprocessing folded in")
    x.add_argument("model", nargs="?", help="model file or run folder (default: bundled pretrained)")
    x.add_argument(
        "--format",
        choices=["onnx", "onnx-int8", "torchscript"],
        default="onnx",
        help="onnx-int8: quantized for CPUs (1.6-1.9x the images/s of fp32 on a Zen 3, same accuracy)",
    )
    x.add_argument(
        "--calibration",
        metavar="FOLDER",
        help="onnx-int8: training images to calibrate on (a labelled folder; default: CIFAR-10's for CIFAR-10 models)",
    )
    x.add_argument(
        "--out", help="output file (default: model.onnx / model.int8.onnx / model.pt beside the model, or in .)"
    )
    x.set_defaults(func=cmd_export)

    lt = sub.add_parser("loadtest", help="bounded load test of a running server (loopback only)")
    lt.add_argument("--url", default="http://127.0.0.1:8000")
    lt.add_argument("--clients", type=int, default=32)
    lt.add_argument("--requests", type=int, default=1000)
    lt.set_defaults(func=cmd_loadtest)

    m = sub.add_parser("models", help="list the registered models")
    m.add_argument("--summary", metavar="NAME", help="print a Keras-style summary of one model")
    m.set_defaults(func=cmd_models)

    i = sub.add_parser("info", help="show a model's card: classes, input size, normalization, recipe, metrics")
    i.add_argument("model", nargs="?")
    i.set_defaults(func=cmd_info)
    return p


def cmd_train(args) -> int:
    from cifar_cnn.data import is_cifar10_source, load_cifar10
    from cifar_cnn.recipes import get_recipe
    from cifar_cnn.train import CHECKPOINT_NAME, train

    get_recipe(args.recipe)  # a typo fails now, not after the data is read
    folder = args.data and Path(args.data).is_dir() and not is_cifar10_source(args.data)
    out = Path(args.out or (f"runs/{Path(args.data).resolve().name}" if folder else f"runs/{args.recipe}"))
    if (out / CHECKPOINT_NAME).exists() and not (args.resume or args.overwrite):
        raise CifarCnnError(f"{out} already holds a run: add --resume to continue it or --overwrite to start over")
    data = args.data if folder else load_cifar10(args.data, verbose=not args.quiet)
    result = train(
        args.recipe, data=data, out_dir=out, seed=args.seed, resume=args.resume, device=args.device,
        init=args.init, image_size=args.image_size, val_fraction=args.val_fraction, class_weights=args.class_weights,
        train_subset=args.train_subset, test_subset=args.test_subset, progress=not args.quiet,
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, compile=args.compile,
        progressive_resize=args.progressive_resize, drop_easy=args.drop_easy, tensorboard=not args.no_tensorboard,
    )  # fmt: skip
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_rank() == 0:
        split = result.card.metrics.get("split", "test")
        print(f"{split.capitalize()} accuracy: {result.metrics.accuracy:.2%}  (model saved to {result.model_path})")
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


def cmd_evaluate(args) -> int:
    from cifar_cnn.evaluate import compute_metrics
    from cifar_cnn.predict import load

    clf = load(args.model)
    x, y, name = _evaluation_set(args, clf)
    if args.corruptions:
        return _evaluate_robustness(args, clf, x, y, name)
    metrics = compute_metrics(clf.logits(x, tta=args.tta), y, clf.classes)
    tta = clf.tta if args.tta is None else args.tta
    if args.json:
        print(json.dumps({"model": clf.name, "data": name, "tta": tta, **metrics.to_dict()}))
    else:
        print(f"Model: {clf.name} ({args.model or 'bundled pretrained'}), tta={tta}, on the {name}")
        print(metrics.format())
    return 0


def _evaluate_robustness(args, clf, x, y, name) -> int:
    from cifar_cnn.evaluate import corruption_accuracy

    try:
        severities = [int(v) for v in args.severities.split(",") if v.strip()]
    except ValueError:
        raise CifarCnnError(f"--severities {args.severities}: give numbers 1 to 5 separated by commas") from None
    result = corruption_accuracy(clf, x, y, severities=severities, seed=args.seed, tta=args.tta,
                                 cache=not args.no_cache, progress=not args.json, dataset=name)  # fmt: skip
    print(json.dumps(result.to_dict()) if args.json else result.format())
    return 0


def _looks_like_model(path: str) -> bool:
    p = Path(path)
    return p.suffix == ".safetensors" or (p.is_dir() and (p / "model.safetensors").is_file())


def cmd_predict(args) -> int:
    """Exit status 0 when every file was predicted, 1 when some could not be read (their errors are
    in the output), 2 for a usage error (nothing written)."""
    from cifar_cnn.bulk import PredictionFile, predict_folder
    from cifar_cnn.predict import load

    inputs = list(args.inputs)
    model_path = args.model
    if model_path is None and len(inputs) > 1 and _looks_like_model(inputs[0]):
        model_path = inputs.pop(0)
    if args.out and args.explain:
        raise CifarCnnError("--explain writes a picture per image; use it without --out (for many files, on a few)")
    if args.out:  # a bad --out fails now, before the model is loaded
        PredictionFile.check(args.out, resume=args.resume, overwrite=args.overwrite)
    elif args.resume or args.overwrite:
        raise CifarCnnError("--resume and --overwrite apply to an --out file")
    clf = load(model_path)
    if args.explain:
        return _predict_and_explain(clf, inputs, args)
    progress = bool(args.out) and not args.quiet and sys.stderr.isatty()
    try:
        summary = predict_folder(
            clf, inputs, args.out or _PredictionPrinter(args.json), recursive=args.recursive, top_k=args.top_k,
            resume=args.resume, overwrite=args.overwrite, workers=args.workers, batch_size=args.batch_size,
            progress=progress,
        )  # fmt: skip
    except KeyboardInterrupt:
        if args.out:
            print(f"\nstopped: the rows so far are in {args.out}; add --resume to continue", file=sys.stderr)
        raise
    if args.out:
        print(summary.format(), file=sys.stderr)
    elif summary.subfolders:
        print(f"note: {summary.subfolders} subfolder(s) not entered: add --recursive", file=sys.stderr)
    return 1 if summary.errors or summary.errors_before else 0


def _predict_and_explain(clf, inputs: list[str], args) -> int:
    """`predict --explain`: each image predicted, printed, and its explanation written to
    args.explain/<stem>.why.png (numbered when two images share a name)."""
    from cifar_cnn.bulk import BulkSummary, walk
    from cifar_cnn.errors import ImageError

    out = Path(args.explain)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CifarCnnError(f"--explain: cannot create folder {out} ({exc.strerror or exc})") from exc
    printer, summary, used, errors, count = _PredictionPrinter(args.json), BulkSummary(), set(), 0, 0
    for path in walk(inputs, args.recursive, summary):
        count += 1
        try:
            why = clf.explain(path)
        except ImageError as exc:
            printer.write(path, exc)
            errors += 1
            continue
        why.prediction.top_k = why.prediction.top_k[: max(1, args.top_k)]
        stem, n = Path(path).stem, 1
        target = out / f"{stem}.why.png"
        while target in used:  # same name from another folder: number it (a rerun overwrites its own)
            n += 1
            target = out / f"{stem}-{n}.why.png"
        used.add(target)
        try:
            why.save(target)
        except OSError as exc:
            raise CifarCnnError(f"--explain: cannot write {target} ({exc.strerror or exc})") from exc
        if args.json:
            print(json.dumps(why.prediction.to_dict() | {"explanation": str(target)}))
        else:
            print(f"{_format_prediction(why.prediction)}\n    why: {target}")
    if count == 0:
        raise CifarCnnError(f"no images found in {', '.join(inputs)}")
    if summary.subfolders:
        print(f"note: {summary.subfolders} subfolder(s) not entered: add --recursive", file=sys.stderr)
    return 1 if errors else 0


class _PredictionPrinter:
    """Rows printed as they come (without --out): text or JSON lines on stdout, errors on stderr."""

    def __init__(self, as_json: bool):
        self.as_json = as_json

    def write(self, path: str, result) -> None:
        from cifar_cnn.errors import ImageError

        if not isinstance(result, ImageError):
            print(json.dumps(result.to_dict()) if self.as_json else _format_prediction(result))
            return
        if self.as_json:
            print(json.dumps({"error": str(result)}))
        print(f"error: {result}", file=sys.stderr)

    def flush(self) -> None:
        sys.stdout.flush()


def _format_prediction(p) -> str:
    flag = f"  (uncertain: {p.reason or 'maybe none of these classes'})" if p.uncertain else ""
    top = ", ".join(f"{label} {score:.1%}" for label, score in p.top_k)
    return f"{p.filename}: {p.label} ({p.score:.1%}){flag}\n    top-{len(p.top_k)}: {top}"


def cmd_bench(args) -> int:
    from cifar_cnn.bench import bench, profile_training

    if Path(args.out).exists() and not Path(args.out).is_dir():  # say so before minutes of work, not after
        raise CifarCnnError(f"--out {args.out} is a file: give a folder for the results")
    if args.profile:
        path = profile_training(args.recipe, out_dir=args.out)
        print(path.read_text())
        print(f"written to {path}")
        return 0
    if args.inference is not None:
        from cifar_cnn import backends

        path = backends.write(backends.inference_backends(args.inference or None), args.out)
        print(path.read_text())
        print(f"written to {path} and .json")
        return 0
    if args.seeds < 1:
        raise CifarCnnError("--seeds must be at least 1")
    baseline, airbench = args.baseline[0], None
    if baseline == "airbench":
        if len(args.baseline) != 2:
            raise CifarCnnError("--baseline airbench needs the path of your copy: --baseline airbench SOURCE")
        baseline, airbench = None, args.baseline[1]
        if args.baseline_runs < 1:
            raise CifarCnnError("--baseline-runs must be at least 1")
    elif len(args.baseline) != 1:
        raise CifarCnnError("--baseline takes one recipe name, or 'airbench SOURCE'")
    bench(
        args.recipe, seeds=args.seeds, baseline=None if baseline == "none" else baseline, airbench=airbench,
        airbench_runs=args.baseline_runs, airbench_precision=args.baseline_precision,
        out_dir=args.out, compare=args.compare, train_subset=args.train_subset, test_subset=args.test_subset,
        save_models=args.save_models, epochs=args.epochs, compile=args.compile,
    )  # fmt: skip
    return 0


def _evaluation_set(args, clf):
    from cifar_cnn.evaluate import evaluation_set

    x, y, name, problems = evaluation_set(clf, images=args.images, data=args.data, subset=args.test_subset,
                                          verbose=not getattr(args, "json", False))  # fmt: skip
    for problem in problems:
        print(f"warning: skipped {problem}", file=sys.stderr)
    return x, y, name


def cmd_report(args) -> int:
    from cifar_cnn.evaluate import corruption_accuracy
    from cifar_cnn.predict import load
    from cifar_cnn.report import build_report

    clf = load(args.model)
    x, y, name = _evaluation_set(args, clf)
    # computed (what is missing) with --corruptions; otherwise only what the cache has for this model and data
    robustness = corruption_accuracy(clf, x, y, tta=args.tta, dataset=name, compute=args.corruptions)
    report = build_report(clf, x, y, args.out, dataset=name, tta=args.tta, ood=not args.no_ood, robustness=robustness)
    print(report.text())
    return 0


def cmd_data_preview(args) -> int:
    from cifar_cnn.data import CLASS_NAMES, load_cifar10
    from cifar_cnn.preview import save_previews

    (x_train, y_train), _ = load_cifar10(args.data)
    for path in save_previews(x_train, y_train, args.out, classes=CLASS_NAMES, recipe=args.recipe):
        print(f"wrote {path}")
    return 0


def cmd_data_check(args) -> int:
    from cifar_cnn.datasets import check_folder

    check = check_folder(args.folder, image_size=args.image_size, val_fraction=args.val_fraction, seed=args.seed,
                         progress=not args.json)  # fmt: skip
    print(json.dumps(check.to_dict(), ensure_ascii=False) if args.json else check.format())
    return 0 if check.ok else 1


def cmd_serve(args) -> int:
    from cifar_cnn.serve import serve

    studio_dir = None
    if args.studio:
        from cifar_cnn.studio import default_workdir

        studio_dir = Path(args.workdir).expanduser() if args.workdir else default_workdir()
        print(f"Studio: http://{args.host}:{args.port}/studio (projects in {studio_dir})")
    elif args.workdir:
        raise CifarCnnError("--workdir is the studio's folder: add --studio to serve the studio")
    serve(args.model, host=args.host, port=args.port, max_upload_bytes=int(args.max_upload_mb * 2**20),
          max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, api_key=args.api_key, insecure=args.insecure,
          rate_limit=args.rate_limit, cors_origins=tuple(args.cors_origin), header_timeout=args.header_timeout,
          body_timeout=args.body_timeout, max_connections=args.max_connections, studio_dir=studio_dir)  # fmt: skip
    return 0


def cmd_export(args) -> int:
    from cifar_cnn.export import calibration_images, default_path, export, export_summary
    from cifar_cnn.predict import load

    clf = load(args.model)
    if args.calibration and args.format != "onnx-int8":
        raise CifarCnnError("--calibration is for --format onnx-int8")
    calibration = calibration_images(clf, args.calibration) if args.format == "onnx-int8" else None
    path = export(clf, Path(args.out) if args.out else default_path(clf, args.model, args.format), args.format,
                  calibration)  # fmt: skip
    print(export_summary(clf, path))
    return 0


def cmd_loadtest(args) -> int:
    from cifar_cnn.loadtest import load_test

    r = load_test(args.url, clients=args.clients, requests=args.requests)
    print(json.dumps(r))
    print(f"{r['requests']} requests from {r['clients']} clients: {r['requests_per_second']:.0f} req/s, "
          f"p50 {r['p50_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms, {r['errors']} errors")  # fmt: skip
    return 1 if r["errors"] else 0


def cmd_models(args) -> int:
    from cifar_cnn.models import create_model, get_model_config, list_models, summary

    if args.summary:
        print(summary(create_model(args.summary)))
        return 0
    for name in list_models():
        c = get_model_config(name)
        print(f"{name:<10} {c.description}")
    return 0


def cmd_info(args) -> int:
    from cifar_cnn.predict import load

    clf = load(args.model)
    meta = {k: v for k, v in clf.card.to_dict().items() if k != "history"}
    print(json.dumps(meta, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
