"""docs/examples/laq_callback.py, run as a user runs it: the callback on a model and data that are not ser's."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO

EXAMPLE = REPO / "docs" / "examples" / "laq_callback.py"
ROW = re.compile(r"^(\S+)\s+(\d+)\s+(\d+\.\d{4})\s+(\d)$", re.MULTILINE)


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """The example's output and its folder (seconds: it trains, then quantizes)."""
    out = tmp_path_factory.mktemp("laq_example")
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # this tree's ser, as an installed one would be
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE), "--out", str(out)],
        cwd=out,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, out


def test_the_example_prints_one_width_per_linear_layer_of_its_own_model(example):
    stdout, _ = example
    rows = ROW.findall(stdout)
    assert [(name, int(params)) for name, params, _, _ in rows] == [
        ("body.0", 16 * 64 + 64),
        ("body.2", 64 * 32 + 32),
        ("head", 32 * 4 + 4),
    ]
    assert all(1 <= int(bits) <= 8 for *_, bits in rows)


def test_the_printed_widths_are_the_ones_in_quantized_pt_and_average_as_eq_6(example):
    stdout, out = example
    rows = ROW.findall(stdout)
    saved = torch.load(out / "quantized.pt", weights_only=True)
    assert {name: layer["bits"] for name, layer in saved["layers"].items()} == {name: int(b) for name, _, _, b in rows}
    params = sum(int(p) for _, p, _, _ in rows)  # every parameter of the model is in these layers
    average = sum(int(p) * int(b) for _, p, _, b in rows) / params
    assert f"LAQ: {average:.2f} average bits" in stdout


def test_the_quantized_model_stays_far_above_chance_on_validation(example):
    stdout, _ = example
    laq, widest = map(float, re.search(r"validation accuracy (\d\.\d+) \(8 bits: (\d\.\d+)\)", stdout).groups())
    assert laq > 0.5 and widest > 0.5, "four classes: chance is 0.25"


def test_the_quantized_state_dict_loads_into_the_users_own_module(example):
    _, out = example
    spec = importlib.util.spec_from_file_location("laq_callback", EXAMPLE)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    saved = torch.load(out / "quantized.pt", weights_only=True)
    model = script.Classifier()
    model.load_state_dict(saved["state_dict"])
    codes = saved["layers"]["head"]["codes"]
    assert len(torch.unique(model.head.weight)) <= 2 ** saved["layers"]["head"]["bits"] and codes.dtype == torch.uint8
