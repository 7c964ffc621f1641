"""Choosing a model (#19 part 5): `zoo list` sorts and filters on what people choose on, `zoo bench` times models
on this machine. Sorting and filtering run on the real catalogue; the benchmark uses random init (speed does not
depend on the weights, and nothing is downloaded)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import zoo
import zoo._registry
from zoo._registry import parse_count
from zoo.cli import cli
from zoo.errors import ZooError


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def names(*args: str) -> list[str]:
    result = run("list", *args, "--json")
    assert result.exit_code == 0, result.output
    return [r["name"] for r in json.loads(result.output)]


CIFAR_RESNETS_BY_TOP1 = ["resnet56-cifar", "resnet18-cifar", "resnet44-cifar", "resnet32-cifar", "resnet20-cifar"]


def test_sort_top1_puts_the_best_classifier_first_and_cards_without_top1_last():
    ordered = names("--sort", "top1")
    assert ordered[:5] == CIFAR_RESNETS_BY_TOP1
    rest = ordered[5:]
    assert "inception-v3-fid" in rest and "cgan-cifar" in rest and rest == sorted(rest)  # lacking top1: by name
    assert names("--task", "classifier", "--sort", "top1") == [*CIFAR_RESNETS_BY_TOP1, "inception-v3-fid"]


def test_sort_map_with_dataset_compares_figures_on_one_dataset():
    # across datasets the raccoon detector's 48.89 on raccoon would lead; on COCO the torchvision detectors do
    assert names("--sort", "map")[0] == "fastestdet-raccoon"
    assert names("--sort", "map", "--dataset", "coco") == [
        "fasterrcnn-r50-fpn-v2-coco",
        "retinanet-r50-fpn-v2-coco",
        "fcos-r50-fpn-coco",
        "fasterrcnn-mobilenetv3-320-fpn-coco",
        "ssdlite320-mobilenetv3-coco",
        "fastestdet-coco",
    ]


def test_sort_params_is_ascending_with_ties_by_name():
    records = json.loads(run("list", "--sort", "params", "--json").output)
    params = [r["params"] for r in records]
    assert params == sorted(params) and len(params) == 19
    assert [r["name"] for r in records[:4]] == [
        "fastestdet-raccoon",
        "fastestdet-coco",
        "fastestdet-imagenet",
        "resnet20-cifar",
    ]
    assert records[-1]["name"] == "fasterrcnn-r50-fpn-v2-coco"


def test_sort_by_a_lower_is_better_metric_puts_the_lowest_first(tmp_path, monkeypatch):
    sha = "a" * 64
    cards = "".join(
        f"  {name}:\n    task: gan\n    builder: somewhere.models:build\n    params: {params}\n"
        f"    license: {license}\n"
        f"    weights:\n      v1:\n        uri: https://example.invalid/{name}.safetensors\n        sha256: {sha}\n"
        f"        metrics:\n          - {{name: 'fid[resnet56-cifar]', value: {fid}, dataset: cifar10, split: test,"
        f" source: measured, command: zoo eval {name}}}\n"
        for name, fid, params, license in [
            ("gan-a", 9.5, 1000, "MIT"),
            ("gan-b", 3.25, 2000000, "mit"),
            ("gan-c", 20.0, 300, "Apache-2.0"),
        ]
    )
    registry = tmp_path / "registry.yaml"
    registry.write_text("models:\n" + cards)
    monkeypatch.setenv("ZOO_REGISTRY", str(registry))
    zoo._registry.reset_registry()
    assert names("--sort", "fid", "--plugin", "user") == ["gan-b", "gan-a", "gan-c"]
    # the shipped cards' figures sort among the user's: cgan 1.40, ddpm 3.59, dcgan 8.92
    assert names("--sort", "fid[resnet56-cifar]")[:6] == [
        "cgan-cifar",
        "gan-b",
        "ddpm-cifar",
        "dcgan-cifar",
        "gan-a",
        "gan-c",
    ]
    assert names("--license", "MIT") == ["gan-a", "gan-b"]  # case-insensitive
    assert names("--max-params", "1.5K") == ["gan-a", "gan-c"]
    table = run("list", "--plugin", "user", "--sort", "fid").output.splitlines()
    assert table[1].startswith("gan-b") and "test fid[resnet56-cifar] 3.25" in table[1]
    assert zoo.list_models(plugin="user", sort="fid", license="mit", max_params="5M") == ["gan-b", "gan-a"]


def test_max_params_keeps_only_small_models():
    small = names("--max-params", "1M")
    assert small == [
        "fastestdet-coco",
        "fastestdet-imagenet",
        "fastestdet-raccoon",
        "resnet20-cifar",
        "resnet32-cifar",
        "resnet44-cifar",
        "resnet56-cifar",
    ]
    assert names("--max-params", "270K") == [
        "fastestdet-coco",
        "fastestdet-imagenet",
        "fastestdet-raccoon",
        "resnet20-cifar",
    ]
    assert names("--max-params", "269721") == ["fastestdet-coco", "fastestdet-imagenet", "fastestdet-raccoon"]
    assert names("--max-params", "5M", "--task", "classifier", "--sort", "top1") == [
        "resnet56-cifar",
        "resnet44-cifar",
        "resnet32-cifar",
        "resnet20-cifar",
    ]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("270K", 270_000),
        ("5M", 5_000_000),
        ("1.2G", 1_200_000_000),
        ("853018", 853_018),
        ("5m", 5_000_000),
        (" 2.5k ", 2_500),
        ("1_000", 1_000),
        (42, 42),
    ],
)
def test_parse_count(text, expected):
    assert parse_count(text) == expected


@pytest.mark.parametrize(
    "args, message",
    [
        (["--max-params", "5X"], "Error: --max-params: expected a count like 270K, 5M, 1.2G or 5000000, got '5X'."),
        (["--max-params", "-5M"], "Error: --max-params: expected a count like 270K, 5M, 1.2G or 5000000, got '-5M'."),
        (["--max-params", "0"], "Error: --max-params: must be positive, got '0'."),
        (["--max-params", "nan"], "Error: --max-params: expected a count like 270K, 5M, 1.2G or 5000000, got 'nan'."),
        (
            ["--sort", "top"],
            "Error: Unknown sort key 'top'. Did you mean 'top1'? Sort by name, params, task or a metric on the cards:",
        ),
    ],
)
def test_list_parse_errors_are_one_line_exit_1(args, message):
    result = run("list", *args)
    assert result.exit_code == 1
    assert result.output.startswith(message) and result.output.count("\n") == 1, result.output


def test_dataset_filter_and_the_metric_it_shows():
    assert names("--dataset", "cifar10") == [
        "ddpm-cifar10-google",
        "resnet20-cifar",
        "resnet32-cifar",
        "resnet44-cifar",
        "resnet56-cifar",
    ]
    assert names("--dataset", "CIFAR10*") == [
        "cgan-cifar",
        "dcgan-cifar",
        "ddpm-cifar",
        "ddpm-cifar10-google",
        "resnet18-cifar",
        "resnet20-cifar",
        "resnet32-cifar",
        "resnet44-cifar",
        "resnet56-cifar",
        "vae-cifar",
    ]
    assert names("--dataset", "raccoon") == ["fastestdet-raccoon"]
    # the metric column shows the figure on the dataset asked for, not the card's headline
    record = json.loads(run("list", "fastestdet-coco", "--dataset", "coco128", "--json").output)[0]
    assert record["metric"]["dataset"] == "coco128" and record["metric"]["value"] == 19.97
    row = run("list", "fastestdet-coco", "--dataset", "coco128").output.splitlines()[1]
    assert "train (coco128) map 19.97" in row
    assert run("list", "--dataset", "imagenet").output.startswith("No models match.")


def test_license_filter_matches_the_identifier_case_insensitively():
    assert names("--license", "bsd-2-clause") == [
        "resnet20-cifar",
        "resnet32-cifar",
        "resnet44-cifar",
        "resnet56-cifar",
    ]
    assert names("--license", "Apache*") == ["ddpm-cifar10-google", "inception-v3-fid"]
    assert "fcos-r50-fpn-coco" in names("--license", "BSD-3-Clause")  # "BSD-3-Clause (torchvision)"
    # "MIT" appears only inside fastestdet-raccoon's note on its data ("MIT-licensed repository"): no match
    assert run("list", "--license", "MIT").output.startswith("No models match.")
    record = json.loads(run("list", "resnet56-cifar", "--json").output)[0]
    assert record["license"] == "BSD-2-Clause"


def test_list_models_takes_the_same_filters():
    assert zoo.list_models(sort="params", max_params=500_000, task="classifier") == ["resnet20-cifar", "resnet32-cifar"]
    assert zoo.list_models("resnet*", sort="top1", dataset="cifar10")[0] == "resnet56-cifar"
    with pytest.raises(ZooError, match="max_params: expected a count"):
        zoo.list_models(max_params="lots")


def test_sort_name_is_the_plain_order():
    # the plain table itself is pinned by tests/test_cli.py (LIST_OUTPUT)
    plain = run("list")
    assert plain.exit_code == 0 and plain.output.count("\n") == 21
    assert run("list", "--sort", "name").output == plain.output
    assert run("list", "--sort", "NAME", "--json").output == run("list", "--json").output


# -- zoo bench --------------------------------------------------------------------------------------


def test_bench_writes_latency_and_throughput(tmp_path):
    out = tmp_path / "results.json"
    result = CliRunner().invoke(
        cli,
        [
            "bench",
            "resnet20-cifar",
            "fastestdet-coco",
            "--random-init",
            "--device",
            "cpu",
            "--precision",
            "fp32",
            "--batch-sizes",
            "1,4",
            "--seconds",
            "0.2",
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    machine = record["machine"]
    assert machine["device"] == "cpu" and machine["precision"] == "fp32" and machine["threads"] >= 1
    assert machine["cpu"] and machine["torch"]
    assert [m["name"] for m in record["models"]] == ["resnet20-cifar", "fastestdet-coco"]
    for model in record["models"]:
        assert model["weights"] is None  # random init: nothing downloaded
        assert model["latency"]["median_ms"] > 0 and model["latency"]["calls"] >= 5
        assert model["throughput"]["images_per_second"] > 0
        assert model["throughput"]["batch_size"] in (1, 4) and set(model["throughput"]["by_batch_size"]) == {"1", "4"}
    assert record["models"][0]["input"]["model_input"] == [3, 32, 32]
    assert record["models"][1]["input"]["model_input"] == [3, 352, 352]
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["model", "task", "params"]
    assert lines[1].startswith("resnet20-cifar") and lines[2].startswith("fastestdet-coco")
    assert f"wrote {out}" in result.stdout
    # the figures belong to this machine: the card is untouched
    assert zoo.card("resnet20-cifar").variant().metrics[0].name == "top1"


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["cgan-cifar"],
            "Error: zoo bench measures models that predict on images (classifiers, detectors); "
            "'cgan-cifar' is a gan model, which generates: time 'zoo sample cgan-cifar' instead.",
        ),
        (
            ["vae-cifar"],
            "Error: zoo bench measures models that predict on images (classifiers, detectors); "
            "'vae-cifar' is a vae model, which generates: time 'zoo sample vae-cifar' instead.",
        ),
        (["resnet20-cifr"], "Error: Unknown model 'resnet20-cifr'. Did you mean 'resnet20-cifar'"),
        (
            ["resnet20-cifar", "--batch-sizes", "1,x"],
            "Error: --batch-sizes: expected positive integers separated by commas, like 1,8,32,64,128; got '1,x'.",
        ),
        (["resnet20-cifar", "--batch-sizes", "0,8"], "Error: --batch-sizes: every size must be between 1 and 4096"),
        (["resnet20-cifar", "--seconds", "0"], "Error: --seconds must be positive, got 0."),
    ],
)
def test_bench_refusals_are_one_line_exit_1(args, message):
    result = run("bench", *args)
    assert result.exit_code == 1
    assert result.output.startswith(message) and result.output.count("\n") == 1, result.output
