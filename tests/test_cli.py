"""The `zoo` command line: exact output, one-line errors, and no torch on the listing path."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

import zoo._registry
from zoo.cli import cli

LIST_OUTPUT = """\
name                                 task        params  input      weights (default)                        metric                             cached  plugin
cgan-cifar                           gan         2.7M    3x32x32    zoo-e44-ema (safetensors, fp16)          val fid[resnet56-cifar] 1.40       yes     gan
dcgan-cifar                          gan         2.5M    3x32x32    zoo-e13-ema (safetensors, fp16)          val fid[resnet56-cifar] 8.92       yes     gan
ddpm-cifar                           diffusion   2.5M    3x32x32    zoo-e20-ema (safetensors, fp16)          val fid[resnet56-cifar] 3.59       yes     diffusion
ddpm-cifar10-google                  diffusion   35.7M   3x32x32    google (converted, fp32)                 train fid[inception-v3-fid] 3.17*  no      diffusion
fasterrcnn-mobilenetv3-320-fpn-coco  detector    19.4M   -          coco-v1 (converted, fp32)                val2017 map 22.80*                 no      detector
fasterrcnn-r50-fpn-v2-coco           detector    43.7M   -          coco-v1 (converted, fp32)                val2017 map 46.70*                 no      detector
fastestdet-coco                      detector    244K    3x352x352  upstream-coco (safetensors, fp16)        val2017 map 13.00*                 yes     detector
fastestdet-imagenet                  detector    244K    3x352x352  none                                     -                                  -       detector
fastestdet-raccoon                   detector    237K    3x352x352  zoo-e30 (safetensors, fp16)              test map 48.89                     yes     detector
fcos-r50-fpn-coco                    detector    32.3M   -          coco-v1 (converted, fp32)                val2017 map 39.20*                 no      detector
inception-v3-fid                     classifier  23.9M   3x299x299  tf-2015-12-05 (converted, fp32)          -                                  no      classifier
resnet18-cifar                       classifier  11.2M   3x32x32    zoo-cutout-e120-ema (safetensors, fp16)  val top1 93.32                     yes     classifier
resnet20-cifar                       classifier  270K    3x32x32    akamaster (converted, fp32)              test top1 91.73*                   no      classifier
resnet32-cifar                       classifier  464K    3x32x32    akamaster (converted, fp32)              test top1 92.63*                   no      classifier
resnet44-cifar                       classifier  659K    3x32x32    akamaster (converted, fp32)              test top1 93.10*                   no      classifier
resnet56-cifar                       classifier  853K    3x32x32    akamaster (converted, fp32)              test top1 93.39*                   no      classifier
retinanet-r50-fpn-v2-coco            detector    38.2M   -          coco-v1 (converted, fp32)                val2017 map 41.50*                 no      detector
ssdlite320-mobilenetv3-coco          detector    3.4M    -          coco-v1 (converted, fp32)                val2017 map 21.30*                 no      detector
vae-cifar                            vae         2.2M    3x32x32    zoo-e10 (safetensors, fp16)              val bits_per_dim 4.11              yes     vae
* published by the weights' authors; others measured by zoo ('zoo info NAME' gives the source or the command)
"""


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_list_table():
    result = run("list")
    assert result.exit_code == 0
    assert result.output == LIST_OUTPUT


def test_list_filters_and_json():
    records = json.loads(run("list", "--task", "classifier", "--pretrained", "--json").output)
    assert [r["name"] for r in records] == [
        "inception-v3-fid",
        "resnet18-cifar",
        "resnet20-cifar",
        "resnet32-cifar",
        "resnet44-cifar",
        "resnet56-cifar",
    ]
    first = records[2]
    assert first["params"] == 269722 and first["input"] == [3, 32, 32] and first["cached"] is False
    assert first["metric"] == {
        "name": "top1",
        "value": 91.73,
        "dataset": "cifar10",
        "split": "test",
        "source": "published",
        "reference": "https://github.com/akamaster/pytorch_resnet_cifar10#results (8.27% test error)",
    }
    assert run("list", "resnet5*").output.splitlines()[1].startswith("resnet56-cifar")
    assert (
        run("list", "--task", "nosuchtask").output == "No models match. Run 'zoo plugins' to see what is installed.\n"
    )


def test_info_shows_the_whole_card():
    output = run("info", "resnet56-cifar").output
    for expected in [
        "resnet56-cifar  (classifier/resnet56-cifar)",
        "builder:    zoo_classifier.models:build_cifar_resnet",
        "license:    BSD-2-Clause",
        "source:     https://github.com/akamaster/pytorch_resnet_cifar10",
        "preprocess: resize 32, center crop 32, bilinear, mean [0.485, 0.456, 0.406], std [0.229, 0.224, 0.225]",
        "labels:     airplane, automobile, bird, cat, deer, dog, frog, horse, ship, truck",
        "uri:      https://github.com/akamaster/pytorch_resnet_cifar10/raw/master/pretrained_models/resnet56-4bfd9763.th",
        "sha256:   4bfd97631478d6b638d2764fd2baff3edb1d7d82252d54439343b6596b9b5367",
        "size:     3.3 MiB (3,471,733 bytes)",
        "convert:  key 'state_dict', strip prefix 'module.'",
        "metric:   top1 93.39 on cifar10 test (published: https://github.com/akamaster/pytorch_resnet_cifar10#results",
    ]:
        assert expected in output, expected
    card = json.loads(run("info", "resnet56-cifar", "--json").output)
    assert card["weights"]["akamaster"]["size"] == 3471733 and card["weights"]["akamaster"]["default"] is True


@pytest.mark.parametrize(
    "args, message",
    [
        (["info", "resnet56-cifr"], "Error: Unknown model 'resnet56-cifr'. Did you mean 'resnet56-cifar'"),
        (["info", "resnet56-cifar.v2"], "Error: Model 'resnet56-cifar' has no weights tag 'v2'"),
    ],
)
def test_errors_are_one_line_with_exit_code_1(args, message):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert result.output.startswith(message) and result.output.count("\n") == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_fetch_of_a_card_without_weights_says_how_to_build_it(tmp_path, monkeypatch):
    registry = tmp_path / "registry.yaml"
    registry.write_text(
        "models:\n  bare-net:\n    task: classifier\n    builder: zoo_classifier.models:build_resnet18_cifar\n"
    )
    monkeypatch.setenv("ZOO_REGISTRY", str(registry))
    zoo._registry.reset_registry()
    result = CliRunner().invoke(cli, ["fetch", "bare-net"])
    assert result.exit_code == 1
    assert result.output == (
        "Error: Model 'bare-net' has no pretrained weights; use zoo.load('bare-net', "
        "pretrained=False) for random init.\n"
    )


def test_cache_commands_on_an_empty_cache(zoo_home):
    assert run("cache", "dir").output == f"{zoo_home}\n"
    assert run("cache", "ls").output == f"The cache at {zoo_home} is empty. 'zoo fetch NAME' fills it.\n"
    assert run("cache", "verify").output == "0 files verified.\n"


def test_plugins_json():
    records = {r["name"]: r for r in json.loads(run("plugins", "--json").output)}
    assert set(records) == {"classifier", "detector", "gan", "vae", "diffusion", "tv", "timm"}
    record = records["classifier"]
    assert {r["distribution"] for r in records.values()} == {"visionzoo"}
    assert record["models"] == [
        "resnet18-cifar",
        "resnet20-cifar",
        "resnet32-cifar",
        "resnet44-cifar",
        "resnet56-cifar",
        "inception-v3-fid",
    ]  # in the catalogue's order
    assert records["gan"]["models"] == ["dcgan-cifar", "cgan-cifar"] and records["vae"]["models"] == ["vae-cifar"]


def test_convert_refuses_a_wrong_sha256(tmp_path):
    import torch

    ckpt = tmp_path / "a.th"
    torch.save({"w": torch.ones(2)}, ckpt)
    result = CliRunner().invoke(cli, ["convert", str(ckpt), str(tmp_path / "a.safetensors"), "--sha256", "0" * 64])
    assert result.exit_code == 1 and "expected 0000" in result.output
    assert not (tmp_path / "a.safetensors").exists()
    ok = run("convert", str(ckpt), str(tmp_path / "a.safetensors"))
    assert ok.exit_code == 0
    from safetensors.torch import load_file

    assert load_file(str(tmp_path / "a.safetensors"))["w"].tolist() == [1.0, 1.0]


TORCH_FREE = """
import sys
from zoo.cli import main
try:
    main({args!r})
except SystemExit as exc:
    assert not exc.code, exc.code
heavy = sorted(m for m in ("torch", "torchvision", "timm", "numpy", "safetensors", "zoo_classifier.models")
               if m in sys.modules)
print("HEAVY", heavy)
"""


@pytest.mark.parametrize(
    "args", [["list"], ["info", "resnet56-cifar"], ["plugins"], ["list", "--json"], ["cache", "ls"]]
)
def test_listing_commands_import_no_torch(args):
    """Metadata before code: listing reads cards only (a fresh process, so nothing is pre-imported)."""
    result = subprocess.run(
        [sys.executable, "-c", TORCH_FREE.format(args=args)], capture_output=True, text=True, env=dict(os.environ)
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "HEAVY []"


def test_console_script_and_python_m_agree():
    script = os.path.join(os.path.dirname(sys.executable), "zoo")
    a = subprocess.run([script, "list"], capture_output=True, text=True)
    b = subprocess.run([sys.executable, "-m", "zoo", "list"], capture_output=True, text=True)
    assert a.returncode == b.returncode == 0 and a.stdout == b.stdout == LIST_OUTPUT


def test_convert_is_deterministic(tmp_path):
    import hashlib

    import torch

    ckpt = tmp_path / "a.th"
    torch.save({"net": {f"module.layer{i}.weight": torch.randn(4, 4) for i in range(6)}}, ckpt)
    digests = set()
    for i in range(3):
        out = tmp_path / f"a{i}.safetensors"
        assert run("convert", str(ckpt), str(out), "--key", "net", "--strip-prefix", "module.").exit_code == 0
        digests.add(hashlib.sha256(out.read_bytes()).hexdigest())
    assert len(digests) == 1


def test_convert_casts_a_safetensors_file_to_float16(tmp_path):
    """The release step for shipped weights: best.safetensors -> fp16, integer buffers untouched."""
    import torch
    from safetensors.torch import load_file, save_file

    from zoo._convert import read_provenance

    src = tmp_path / "best.safetensors"
    state = {"conv.weight": torch.randn(8, 3, 3, 3), "bn.num_batches_tracked": torch.tensor(7)}
    save_file(state, str(src))
    out = tmp_path / "half.safetensors"
    assert run("convert", str(src), str(out), "--dtype", "float16").exit_code == 0
    half = load_file(str(out))
    assert half["conv.weight"].dtype == torch.float16 and half["bn.num_batches_tracked"].dtype == torch.int64
    # fp16 rounds to within 2^-11 of the value: a relative tolerance (randn reaches |x| > 3, beyond atol alone)
    assert torch.allclose(half["conv.weight"].float(), state["conv.weight"], rtol=1e-3, atol=1e-3)
    assert half["bn.num_batches_tracked"].item() == 7
    assert read_provenance(out)["dtype"] == "float16" and read_provenance(out)["source_uri"] == "best.safetensors"
    assert out.stat().st_size < src.stat().st_size


def test_convert_names_a_damaged_safetensors_file(tmp_path):
    src = tmp_path / "cut.safetensors"
    src.write_bytes((200).to_bytes(8, "little") + b'{"w": {"dtype": "F32"')  # header cut short
    result = run("convert", str(src), str(tmp_path / "out.safetensors"))
    assert result.exit_code == 1 and "cut.safetensors" in result.output
    assert not (tmp_path / "out.safetensors").exists()
