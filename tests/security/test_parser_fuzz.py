"""The card parser raises only RegistryError, whatever it is given (#20): fuzzed, plus the cases fuzzing found."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from zoo._card import parse_registry
from zoo._registry import MAX_REGISTRY_BYTES, load_yaml
from zoo.errors import RegistryError

set_hypothesis_home_dir(os.path.join(tempfile.gettempdir(), "zoo-hypothesis"))  # its caches stay out of the checkout
SHA = "a" * 64
FUZZ = settings(
    max_examples=300,
    deadline=None,
    database=None,  # no .hypothesis/ left in the checkout
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def parse_text(tmp_path: Path, text: str) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(text, encoding="utf-8")
    parse_registry(load_yaml(path), file=str(path), plugin="user")


# -- cases fuzzing found: each was a raw traceback ------------------------------------------------------

CARD = "models:\n  m:\n    task: t\n    builder: a:b\n"
FOUND = [
    ("huge int as a number", CARD + "    preprocess: {mean: [" + "9" * 400 + "], std: [1]}\n"),
    ("huge int in a message", CARD + "    params: 1" + "0" * 5000 + "\n"),
    (
        "huge metric value",
        CARD
        + f"    weights: {{v: {{uri: x, sha256: {SHA}, metrics: [{{name: n, value: "
        + "1" * 400
        + ", dataset: d, split: s, source: measured, command: c}]}}\n",
    ),
    (
        "rename regex overflow",
        CARD + f"    weights: {{v: {{uri: x, sha256: {SHA}, convert: {{rename: {{'a{{4294967296}}': b}}}}}}}}\n",
    ),
    ("bad timestamp", "models:\n  m: {task: 2001-13-45, builder: a:b}\n"),
    ("bad timestamp key", "models:\n  2001-02-30: {task: t, builder: a:b}\n"),
    ("bad base64", "models:\n  m: {task: !!binary '=', builder: a:b}\n"),
    ("merge of a scalar", "a: &a 1\nmodels:\n  m: {<<: *a, task: t, builder: a:b}\n"),
    ("set key", "models:\n  m: {task: t, builder: a:b, labels: !!set {a, b}}\n"),
    ("omap of a scalar", "models: !!omap 3\n"),
    ("pairs of a mapping", "models: !!pairs {a: 1}\n"),
    ("deep nesting", "models: " + "[" * 20000 + "]" * 20000 + "\n"),
    ("deep mapping", "models:\n  m: {task: t, builder: a:b, kwargs: " + "{a: " * 3000 + "1" + "}" * 3000 + "}\n"),
    ("float key", "models:\n  m: {task: t, builder: a:b, weights: {.nan: {uri: x}}}\n"),
    ("NUL byte", 'models:\n  m: {task: "\\0", builder: a:b}\n'),
    ("lone surrogate escape", 'models:\n  m: {task: "\\ud800", builder: a:b}\n'),
]


@pytest.mark.parametrize("text", [t for _, t in FOUND], ids=[i for i, _ in FOUND])
def test_found_cases_raise_registry_error(tmp_path, text):
    with pytest.raises(RegistryError):
        parse_text(tmp_path, text)


@pytest.mark.parametrize(
    "raw",
    [
        {"models": {"m": {"task": "t", "builder": "a:b", "params": 10**5000}}},
        {"models": {"m": {"task": "t", "builder": "a:b", "kwargs": {"x": object()}}}},
        {"models": {"m": {"task": "t", "builder": "a:b", "labels": ["x", 1.5]}}},
        {"models": {1: {}}},
        {
            "models": {
                "m": {"task": "t", "builder": "a:b", "weights": {"v": {"uri": "x", "sha256": SHA, "size": 1e999}}}
            }
        },
        {
            "models": {
                "m": {
                    "task": "t",
                    "builder": "a:b",
                    "weights": {"v": {"uri": "x", "sha256": SHA, "convert": {"rename": {"(": 1}}}},
                }
            }
        },
        {"models": {"m": {"task": "t", "builder": "a:b", "preprocess": {"mean": [float("nan")], "std": [1e999]}}}},
        {"schema": [1], "models": {}},
        {"schema": {"a": 1}, "models": {}},
    ],
)
def test_plugin_mappings_raise_registry_error(raw):
    with pytest.raises(RegistryError):
        parse_registry(raw, file="<plugin>", plugin="p")


# -- fuzzing -------------------------------------------------------------------------------------------

KEYS = st.sampled_from(
    [
        "schema",
        "models",
        "m",
        "task",
        "builder",
        "kwargs",
        "input",
        "shape",
        "preprocess",
        "resize",
        "crop",
        "interpolation",
        "mean",
        "std",
        "labels",
        "head",
        "params",
        "license",
        "weights",
        "v1",
        "uri",
        "sha256",
        "sha256_prefix",
        "size",
        "format",
        "dtype",
        "convert",
        "key",
        "strip_prefix",
        "rename",
        "metrics",
        "name",
        "value",
        "dataset",
        "split",
        "source",
        "reference",
        "command",
        "default",
        "plugin",
        "description",
    ]
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**300, max_value=10**5000)
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(
        [
            "a:b",
            "torch.nn:Identity",
            SHA,
            "a{99999}(",
            "x.safetensors",
            "safetensors",
            "float16",
            "measured",
            "published",
            "bilinear",
        ]
    )
)
TREES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(KEYS | st.integers() | st.text(max_size=5), children, max_size=5)
    ),
    max_leaves=40,
)


@FUZZ
@given(
    st.fixed_dictionaries(
        {"models": st.dictionaries(KEYS | st.text(max_size=8), TREES, max_size=3)}, optional={"schema": SCALARS}
    )
)
def test_fuzzed_structures_raise_only_registry_error(data):
    try:
        parse_registry(data, file="<fuzz>", plugin="p")
    except RegistryError:
        pass


YAML_PIECES = st.sampled_from(
    [
        "models:",
        "\n  m:",
        "\n    task: t",
        "\n    builder: a:b",
        " {",
        "}",
        "[",
        "]",
        ", ",
        ": ",
        "&a ",
        "*a",
        "<<: ",
        "!!binary ",
        "!!timestamp ",
        "!!set ",
        "!!omap ",
        "!!pairs ",
        "!!float ",
        "!!int ",
        "!!python/name:os.system ",
        "2001-13-45",
        "0x",
        "0o9",
        "1e999",
        "9" * 50,
        ".nan",
        "'\\u'",
        '"\\ud800"',
        '"\\x00"',
        "\t",
        "- ",
        "? ",
        "|",
        ">",
        "%YAML 1.1\n---\n",
        "---",
        "...",
        "#",
        "~",
        "=",
        "weights: {v: {uri: x, sha256: " + SHA + "}}",
        "rename: {'a{4294967296}': b}",
        "\n",
        " ",
    ]
)


@FUZZ
@given(st.lists(YAML_PIECES | st.text(max_size=6), max_size=30).map("".join))
def test_fuzzed_yaml_raises_only_registry_error(tmp_path_factory, text):
    path = tmp_path_factory.getbasetemp() / "fuzz.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        parse_registry(load_yaml(path), file=str(path), plugin="user")
    except RegistryError:
        pass


# -- registry files that are not files ------------------------------------------------------------------


def zoo_list(registry: str, timeout: float = 30) -> subprocess.CompletedProcess:
    env = {**os.environ, "ZOO_REGISTRY": registry}
    return subprocess.run(
        [sys.executable, "-m", "zoo", "list"], env=env, capture_output=True, text=True, timeout=timeout
    )


def one_line_error(result: subprocess.CompletedProcess, *expected: str) -> None:
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("Error: ") and all(e in line for e in expected), line


def test_dev_zero_is_refused():
    one_line_error(zoo_list("/dev/zero"), "/dev/zero", "not a regular file")


def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "registry.yaml"
    os.mkfifo(fifo)
    one_line_error(zoo_list(str(fifo), timeout=20), "not a regular file")


def test_symlink_loop_is_one_line(tmp_path):
    (tmp_path / "a.yaml").symlink_to(tmp_path / "b.yaml")
    (tmp_path / "b.yaml").symlink_to(tmp_path / "a.yaml")
    one_line_error(zoo_list(str(tmp_path / "a.yaml")), "a.yaml")


def test_oversized_registry_is_refused(tmp_path):
    path = tmp_path / "big.yaml"
    with path.open("wb") as f:
        f.truncate(MAX_REGISTRY_BYTES + 1)
    one_line_error(zoo_list(str(path)), "a registry is at most")
