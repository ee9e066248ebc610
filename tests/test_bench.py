import json

import pytest

from cifar_cnn.bench import run_flops, step_flops, time_to_accuracy
from cifar_cnn.cli import main
from cifar_cnn.recipes import get_recipe


def test_fast_recipe_flops_match_the_published_count():
    """airbench94_muon reports 0.29 PFLOPs for its 8-epoch run; we count the same network."""
    pflops = sum(run_flops(get_recipe("fast"), 50000, 10000)) / 1e15
    assert 0.25 < pflops < 0.33, pflops
    _train, forward = step_flops(get_recipe("keras_cnn"), 4)
    assert forward == pytest.approx(2 * 20.7e6, rel=0.05)  # 20.7 M multiply-adds per image


def test_time_to_accuracy():
    runs = [{"history": [{"seconds": 10, "test_accuracy": 0.5}, {"seconds": 10, "test_accuracy": 0.8}],
             "accuracy": 0.85, "train_seconds": 20}]  # fmt: skip
    assert time_to_accuracy(runs, 0.7) == 20
    assert time_to_accuracy(runs, 0.4) == 10
    assert time_to_accuracy(runs, 0.9) is None


@pytest.mark.slow
def test_bench_writes_valid_results(real_data, tmp_path, capsys):
    code = main(["bench", "--seeds", "2", "--epochs", "1", "--train-subset", "400", "--test-subset", "200",
                 "--out", str(tmp_path)])  # fmt: skip
    assert code == 0
    files = sorted(tmp_path.glob("fast-*.json"))
    assert len(files) == 1 and files[0].with_suffix(".md").is_file()
    report = json.loads(files[0].read_text())
    assert report["recipe"] == "fast" and report["seeds"] == [0, 1]
    assert 0 <= report["mean_accuracy"] <= 1 and report["train_seconds"] > 0
    # Each run's accuracy is that of the timed (selective TTA) evaluation; the card keeps every view's.
    assert all(0 <= r["card_accuracy"] <= 1 and r["tta_eval_seconds"] > 0 for r in report["runs"])
    assert report["baseline"]["recipe"] == "keras_cnn" and report["gemm_peak_flops"] > 0
    assert report["hardware"]["cpu"] and report["peak_rss_mib"] > 0
    assert main(["bench", "--seeds", "1", "--epochs", "1", "--train-subset", "400", "--test-subset", "200",
                 "--baseline", "none", "--out", str(tmp_path / "b"), "--compare", str(files[0])]) == 0  # fmt: skip
    assert "Compared with" in capsys.readouterr().out


def test_profile_writes_an_operator_table(tmp_path):
    from cifar_cnn.bench import profile_training

    path = profile_training("keras_cnn", steps=2, out_dir=tmp_path)
    text = path.read_text()
    assert "Self CPU" in text and "convolution" in text and "(batch 128)" in text
    assert ("(fp32, " in text or "(bf16 autocast, " in text) and " threads)" in text  # what it ran in, on record
    assert "Optimizer.step#Adam.step" in text or "adam" in text.lower()  # the trainer's own step, optimizer included


def test_bench_refuses_a_file_as_its_results_folder_before_working(tmp_path, capsys):
    taken = tmp_path / "results"
    taken.write_text("not a folder")
    assert main(["bench", "--profile", "--out", str(taken)]) == 2  # a usage error, as elsewhere
    assert "is a file: give a folder" in capsys.readouterr().err


def test_inference_paths_run_the_same_model(model_file, tmp_path, capsys):
    from cifar_cnn.backends import inference_backends

    result = inference_backends(str(model_file), batch=64, repeats=1, latency_calls=3, test_images=200,
                                calibration_images=100)  # fmt: skip
    paths = result["paths"]
    assert result["model"] == "keras_cnn"
    # CIFAR-10's class names: measured on its test images where the data is found, else on random ones
    assert result["test_images"] in (0, 200)
    assert all(("accuracy" in row) == bool(result["test_images"]) for row in paths.values() if "skipped" not in row)
    assert {"pytorch_fp32", "torchscript_frozen", "onnxruntime_fp32", "onnxruntime_int8"} <= set(paths)
    assert paths["pytorch_fp32"]["agreement"] == 1.0
    for name in ("torchscript_frozen", "onnxruntime_fp32"):  # the same graph: the same probabilities
        assert paths[name]["max_abs_diff"] < 1e-4, name
    int8 = paths["onnxruntime_int8"]  # quantized: close, not equal
    assert 0 < int8["max_abs_diff"] < 0.5 and int8["images_per_second"] > 0 and int8["latency_ms"] > 0
    assert main(["bench", "--inference", str(model_file), "--out", str(tmp_path)]) == 0
    written = list(tmp_path.glob("inference-keras_cnn-*.md"))
    assert len(written) == 1 and "onnxruntime_int8" in written[0].read_text()
    assert json.loads(written[0].with_suffix(".json").read_text())["paths"].keys() == paths.keys()


def test_progressive_resizing_counts_each_epoch_at_its_size():
    fast = get_recipe("fast")
    full, evaluation = run_flops(fast, 50000, 10000)
    half, evaluation_too = run_flops(fast.override(progressive_resize=(0.5, 1.0)), 50000, 10000)
    assert evaluation == evaluation_too  # tested at full size either way
    # 4 of 8 epochs at 16 px (a 15x15 stem output instead of 31x31: about a quarter of the work)
    assert 0.55 < half / full < 0.7, half / full


def test_fast_progressive_is_fast_at_lower_resolution_early_and_on_fewer_images_for_about_0_62x_the_work():
    fast, progressive = get_recipe("fast"), get_recipe("fast_progressive")
    assert [progressive.train_size(e, 10, 32) for e in range(10)] == [16, 16, 22, 24, 26, 28, 30, 32, 32, 32]
    # From the third epoch on, 30% of the images are left out: 17 steps of 2,000 instead of 24.
    assert progressive.epoch_steps(49000) == [24, 24] + [17] * 8
    # Everything else but Muon's lr (retuned for the shorter run) is `fast`'s.
    assert progressive.override(name="fast", epochs=8, lr=0.24, progressive_resize=(), drop_easy=0.0) == fast
    ratio = run_flops(progressive, 49000, 10000)[0] / run_flops(fast, 49000, 10000)[0]
    assert 0.58 < ratio < 0.65, ratio
