"""Models from outside the package: a dotted path, an installed package's entry point
(examples/plugin, installed with pip as a user would) and RecBole's zoo (`recbole/ClassName`),
each measured, trained and gated like the built-in ten; a model that breaks the contract is
refused with one line."""
from __future__ import annotations

import csv
import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import models
from bench import adapters
from bench.grid import Point, parse_model_spec
from bench.sweep.point import run
from bench.train import data as seqdata
from tests.badinput import refused_cli

REPO_ROOT = Path(__file__).resolve().parents[1]
PLUGIN = REPO_ROOT / "examples" / "plugin"
TINY = {"seq_len": 12, "batch_size": 3, "n_layers": 1, "n_heads": 2, "d_model": 8, "n_items": 29}
SIZES = ["--batch-size", "3", "--layers", "1", "--heads", "2", "--d-model", "8", "--n-items", "29"]

GOOD = '''
from dataclasses import dataclass
import torch.nn as nn
from models.base import SeqRecConfig, SequentialRecommender

@dataclass
class MeanConfig(SeqRecConfig):
    scale: float = 1.0

class MeanRec(SequentialRecommender):
    """Running mean of the item vectors: slot t averages slots 0..t (no cost methods)."""
    causal = True
    config_class = MeanConfig

    def __init__(self, config):
        super().__init__(config)
        self.proj = nn.Linear(config.d_model, config.d_model)

    def forward(self, item_seq):
        x = self.item_embedding(item_seq)
        count = (item_seq != 0).cumsum(1).clamp(min=1).unsqueeze(-1)
        return self.proj(x.cumsum(1) / count) * self.config.scale

class NoForward(SequentialRecommender):
    causal = True

class NoCausal(SequentialRecommender):
    def forward(self, item_seq):
        return self.item_embedding(item_seq)

class BadConfig(MeanRec):
    config_class = dict

class LastOnly(MeanRec):
    """Breaks the output contract: [B, d], not [B, L, d]."""
    def forward(self, item_seq):
        return super().forward(item_seq)[:, -1]

NOT_A_CLASS = 3
'''


def point(model: str, workload: str = "train") -> Point:
    return Point(model, (), workload, "seq_len", threads=1, warmup=0, repeats=1, **TINY)


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """`usermods.good` on sys.path (and PYTHONPATH for child processes) and `usermods.broken`,
    whose import fails."""
    package = tmp_path / "usermods"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "good.py").write_text(textwrap.dedent(GOOD))
    (package / "broken.py").write_text("import torch\nraise RuntimeError('the plugin needs a GPU to import')\n")
    (package / "exits.py").write_text("import sys\nsys.exit(5)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), str(REPO_ROOT)]))
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("usermods")]:
        del sys.modules[name]


# --- the contract and its refusals ---------------------------------------------------------------
def test_a_dotted_path_builds_and_validates_like_a_builtin(user_module):
    model = models.build("usermods.good.MeanRec", n_items=20, max_len=6, d_model=8, scale=2.0)
    assert model(torch.tensor([[1, 2, 3, 0, 0, 0]])).shape == (1, 6, 8)
    assert parse_model_spec("usermods.good.MeanRec:scale=0.5").label == "usermods.good.MeanRec:scale=0.5"
    with pytest.raises(ValueError, match="unknown config key.*valid keys: .*scale"):
        parse_model_spec("usermods.good.MeanRec:nope=1")
    assert "no analytic cost method" in models.no_analytic_reason(models.model_class("usermods.good.MeanRec"))
    assert models.no_analytic_reason(models.model_class("recgrela")) is None


@pytest.mark.parametrize("name, message", [
    ("usermods.good.NOT_A_CLASS", "is a int, not a class"),
    ("usermods.good.SeqRecConfig", "does not derive from models.base.SequentialRecommender"),
    ("usermods.good.NoForward", "does not implement forward"),
    ("usermods.good.NoCausal", "does not declare `causal`"),
    ("usermods.good.BadConfig", "config_class must be a dataclass derived from"),
    ("usermods.good.Missing", "usermods.good has no attribute 'Missing'"),
    ("usermods.broken.Model", "importing usermods.broken failed: RuntimeError: the plugin needs a GPU to import"),
    ("nosuchpkg.models.MyRec", "no module named 'nosuchpkg'"),
    ("usermods.exits.Model", "importing usermods.exits failed: SystemExit: 5"),
])
def test_a_plugin_that_breaks_the_contract_is_refused_naming_the_fault(user_module, name, message):
    with pytest.raises(models.PluginError, match=message.replace("(", r"\(")):
        models.model_class(name)


@pytest.mark.slow
@pytest.mark.parametrize("name, message", [
    ("usermods.broken.Model", "RuntimeError: the plugin needs a GPU to import"),
    ("usermods.good.NoForward", "does not implement forward"),
    ("nosuchpkg.MyRec", "no module named 'nosuchpkg'"),
])
def test_the_sweep_refuses_a_bad_plugin_in_one_line(user_module, tmp_path, name, message):
    assert message in refused_cli("bench.sweep", ["--axis", "seqlen", "--values", "8", "--models", name,
                                                  "--out", str(tmp_path / "out"), *SIZES],
                                  env={"PYTHONPATH": os.environ["PYTHONPATH"]})


def test_a_plugin_without_cost_methods_is_measured_with_the_analytic_cells_empty_and_why(user_module, one_thread):
    row = run(point("usermods.good.MeanRec"))
    assert row["status"] == "ok", row["reason"]
    for column in ("time_median_ms", "tracked_peak_bytes", "fwd_flops_fvcore", "fwd_flops_flopcounter"):
        assert row[column] and row[column] > 0, column
    assert row.get("fwd_flops_analytic") is None and "no analytic cost method" in row["flops_analytic_reason"]


# --- examples/plugin, installed with pip as a user would ------------------------------------------
@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory):
    """examples/plugin installed by pip into a folder of its own (the suite's environment is left
    as it is); PYTHONPATH naming it makes its entry point visible to every command."""
    target = tmp_path_factory.mktemp("site")
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", *isolation, "--target", str(target),
                    str(PLUGIN)], check=True, capture_output=True, timeout=600)
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(target), str(REPO_ROOT)]))


def cli(env: dict, module: str, *argv: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", module, *argv], env=env, cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_the_installed_plugin_is_swept_trained_and_gated(installed_plugin, tmp_path):
    env = installed_plugin
    out = tmp_path / "sweep"
    cli(env, "bench.sweep", "--axis", "seqlen", "--values", "8,16", "--models", "recgrela,convrec", "--out", str(out),
        "--warmup", "0", "--repeats", "1", *SIZES)
    measured = {(r["model"], r["seq_len"]): r for r in rows(out / "results.csv")}
    for length in ("8", "16"):
        row = measured[("convrec", length)]
        assert row["status"] == "ok", row["reason"]
        assert row["causal"] == "True" and "example plugin" in row["faithful_to"]
        # its analytic formula is the dense convolution, which the counters see exactly
        assert int(row["fwd_flops_analytic"]) == int(row["fwd_flops_flopcounter"]) > 0
    data = tmp_path / "data.txt"
    seqdata.write_lines_file(seqdata.synthetic_dataset(n_users=40, n_items=20, mean_len=10, seed=3), data)
    cli(env, "bench.train", "--model", "convrec:kernel_size=2", "--data", str(data), "--max-len", "8", "--d-model", "8",
        "--layers", "1", "--heads", "2", "--epochs", "1", "--batch-size", "16", "--device", "cpu",
        "--out", str(tmp_path / "train"))
    assert any((tmp_path / "train").rglob("*.json"))
    baseline = tmp_path / "gate.json"
    cli(env, "bench.regress", "--update", "--models", "convrec", "--baseline", str(baseline))
    cli(env, "bench.regress", "--models", "convrec", "--baseline", str(baseline), "--no-time")
    assert '"convrec"' in baseline.read_text()


def test_an_entry_point_name_resolves_only_where_the_package_is_installed(installed_plugin):
    code = "import models; print(models.plugins()); print(models.model_class('convrec').__name__)"
    proc = subprocess.run([sys.executable, "-c", code], env=installed_plugin, cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "'convrec': 'seqrec_plugin_example:ConvRec'" in proc.stdout and "ConvRec" in proc.stdout
    assert "convrec" not in models.plugins()  # not installed in this process's environment


# --- RecBole's zoo --------------------------------------------------------------------------------
def _require_recbole():
    pytest.importorskip("recbole")
    adapters.register()


@pytest.mark.parametrize("name, message", [
    ("recbole/Caser", "needs user ids"),
    ("recbole/BERT4Rec", "'mask_itemseq' data transform"),
    ("recbole/FDSA", "needs item side features"),
    ("recbole/GRU4RecKG", "knowledge-graph"),
    ("recbole/NoSuchRec", "recbole/ names: .*GRU4Rec"),
])
def test_recbole_models_that_need_more_than_the_item_sequence_are_refused(name, message):
    _require_recbole()
    with pytest.raises(ValueError, match=message):
        models.build(name, n_items=500, max_len=12, d_model=16, n_layers=1, n_heads=2)


def test_recbole_models_take_the_grid_and_their_own_keys():
    _require_recbole()
    gru = models.build("recbole/GRU4Rec", n_items=40, max_len=10, d_model=16, hidden_size=32)
    assert gru.official.embedding_size == 16 and gru.official.hidden_size == 32
    assert gru.full_scores(torch.randint(1, 40, (2, 10))).shape == (2, 40)
    sasrec = models.build("recbole/SASRec", n_items=40, max_len=10, d_model=16, n_layers=3, n_heads=4)
    assert len(sasrec.official.trm_encoder.layer) == 3 and sasrec.official.n_heads == 4


@pytest.mark.slow
@pytest.mark.parametrize("name", ["recbole/GRU4Rec", "recbole/NARM", "recbole/STAMP"])
def test_a_recbole_model_is_measured_like_ours(name, one_thread):
    _require_recbole()
    row = run(point(name))
    assert row["status"] == "ok", row["reason"]
    for column in ("time_median_ms", "tracked_peak_bytes", "fwd_flops_fvcore", "fwd_flops_flopcounter",
                   "step_flops_flopcounter", "params_total"):
        assert row[column] and row[column] > 0, column
    assert row.get("fwd_flops_analytic") is None and "RecBole model" in row["flops_analytic_reason"]
    assert row["faithful_to"].startswith("RecBole ")


def test_a_recbole_model_that_needs_more_is_refused_before_anything_runs(tmp_path):
    """Resolving `recbole/Caser` builds it once at a tiny size: the sweep refuses it in one line,
    exit 2, and writes nothing (not an error row after the fact)."""
    _require_recbole()
    message = refused_cli("bench.sweep", ["--axis", "seqlen", "--values", "8", "--models", "recgrela,recbole/Caser",
                                          "--out", str(tmp_path / "out"), *SIZES])
    assert "recbole/Caser needs user ids" in message and not (tmp_path / "out").exists()


def test_a_baseline_entry_of_a_plugin_not_installed_here_is_kept_not_judged(user_module, tmp_path):
    """A baseline made where a plugin was installed stays valid where it is not: its empty
    analytic cells are not called corrupt, and the hint names the file the user gave."""
    from bench import regress

    baseline = tmp_path / "gate.json"
    assert regress.main(["--update", "--models", "usermods.good.MeanRec", "--baseline", str(baseline)]) == 0
    for name in [m for m in sys.modules if m.startswith("usermods")]:
        del sys.modules[name]
    sys.path.remove(str(user_module))
    data = regress.load_baseline(baseline)
    assert "usermods.good.MeanRec" in data["models"]
    hint = regress.update_command(baseline, ["linrec"])
    assert str(baseline) in hint and "--models linrec" in hint


def test_a_forward_of_the_wrong_shape_is_named_as_such(user_module):
    model = models.build("usermods.good.LastOnly", n_items=20, max_len=6, d_model=8)
    with pytest.raises(ValueError, match=r"LastOnly.forward returned \[2, 8\], expected \[B, L, d\] = \[2, 6, 8\]"):
        model.full_scores(torch.randint(1, 20, (2, 6)))


def test_training_a_model_that_cannot_take_a_step_is_refused_and_writes_nothing(user_module, tmp_path):
    data = tmp_path / "data.txt"
    seqdata.write_lines_file(seqdata.synthetic_dataset(n_users=30, n_items=15, mean_len=8, seed=4), data)
    out = tmp_path / "run"
    message = refused_cli("bench.train", ["--model", "usermods.good.LastOnly", "--data", str(data), "--max-len", "6",
                                          "--d-model", "8", "--layers", "1", "--heads", "2", "--epochs", "1",
                                          "--device", "cpu", "--out", str(out)],
                          env={"PYTHONPATH": os.environ["PYTHONPATH"]})
    assert "usermods.good.LastOnly cannot take a training step: ValueError: LastOnly.forward returned" in message
    assert not out.exists()
