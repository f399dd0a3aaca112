"""Smoke runs with tiny budgets: the examples, the notebook, and every `poser` subcommand."""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", ROOT / "examples" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[f"example_{name}"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_example_train_ppo():
    mod = _load("train_ppo")
    out = mod.main(mod.Args(steps=256, n_envs=2, text_encoder="hashing", eval_episodes=3, algo="ppo"))
    assert 0.0 <= out["test_success"] <= 1.0


def test_example_custom_loop():
    mod = _load("custom_loop")
    out = mod.main(mod.Args(episodes=12))
    assert set(out) == {"first_return", "last_return", "last_success"}


def test_example_generate(tmp_path):
    mod = _load("generate")
    paths = mod.main(mod.Args(prompt="a photo of two blue cups", policy="random", out=str(tmp_path)))
    assert {Path(p).name for p in paths} >= {"contact_sheet.png", "trace.json"}


def test_notebook_quickstart_executes(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(ROOT / "examples" / "quickstart.ipynb", as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(ROOT)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert len(images) >= 3

    def text_of(marker: str) -> str:
        cell = next(c for c in nb.cells if c.cell_type == "code" and marker in c.source)
        return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.output_type == "stream")

    # the random episode as pictures shows several steps (it used to end after one)
    steps = int(re.search(r"^steps: (\d+)$", text_of("rng = np.random.default_rng(0)"), re.M).group(1))
    assert steps >= 2
    # the training cell prints the scalar metrics and every expert's share (its filter used to drop all but STOP)
    out = text_of("metrics = PoserMetricsCallback()")
    scalars = ast.literal_eval(re.search(r"^training metrics: (\{.*\})$", out, re.M).group(1))
    usage = ast.literal_eval(re.search(r"^expert usage \(share of steps\): (\{.*\})$", out, re.M).group(1))
    assert {"success", "judge_alignment", "cost", "calls", "ep_return", "invalid_rate"} <= set(scalars)
    assert {"STOP", "sim/layout", "sim/dense"} <= set(usage)
    assert sum(usage.values()) + scalars["invalid_rate"] == pytest.approx(1.0, abs=0.01)


def _cli(*args: str):
    from agents.cli import app

    res = runner.invoke(app, list(args), catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output


def test_cli_help_and_experts():
    out = _cli("--help")
    for cmd in ("train", "eval", "generate", "bench", "experts", "report", "main"):
        assert cmd in out
    table = _cli("experts", "--markdown")
    assert "sim/sketch" in table and "|" in table


def test_cli_train_eval_generate_report(tmp_path):
    _cli("train", "--steps", "128", "--seed", "0", "--n-envs", "1", "--out", str(tmp_path / "train"),
         "--env-arg", "text_encoder=hashing")
    model = tmp_path / "train" / "seed0" / "policy.json"
    assert model.is_file() and (tmp_path / "train" / "seed0" / "curve.json").is_file()
    out = _cli("eval", "--policy", str(model), "--policy", "random", "--n-prompts", "3", "--runs", "1", "--json",
               "--env-arg", "text_encoder=hashing")
    data = json.loads(out[out.index("{"):])
    assert set(data) == {"learned", "random"} and 0 <= data["random"]["overall"] <= 1
    _cli("generate", "a photo of a red kite", "--env", "poser_env/ImagePoser-v0", "--policy", str(model), "--out",
         str(tmp_path / "gen"),
         "--env-arg", "text_encoder=hashing")
    assert (tmp_path / "gen" / "contact_sheet.png").is_file()


def test_cli_main_quick_writes_report(tmp_path):
    _cli("main", "--quick", "--ablation", "--out", str(tmp_path / "main"))
    report = (tmp_path / "main" / "report.md").read_text()
    assert "SceneSim" in report and "learned" in report and "oracle" in report
    assert "## Claims checked" in report and "fixed:sim/lmd" in report
    assert "learned (no feedback in obs)" in report and "oracle-deep" in report and "headroom: deep oracle" in report
    config = json.loads((tmp_path / "main" / "config.json").read_text())
    assert config["warm_start"].startswith("fixed:sim/")
    assert (tmp_path / "main" / "per_tag.png").is_file()
    assert "## Aggregate results (rliable)" in report and "P(learned > method)" in report
    html = (tmp_path / "main" / "report.html").read_text()
    assert "data:image/gif;base64," in html and "data:image/png;base64," in html  # GIFs and charts inlined
    assert (tmp_path / "main" / "examples" / "example-0" / "episode.gif").is_file()
    (tmp_path / "main" / "report.html").unlink()
    _cli("report", str(tmp_path / "main"))
    assert (tmp_path / "main" / "report.html").is_file()
    # --reuse keeps the models this recipe already trained (their train.json is not rewritten)
    hist = [(tmp_path / "main" / d / "seed0" / "train.json").read_bytes() for d in ("maskable-ppo", "no-feedback")]
    _cli("main", "--quick", "--ablation", "--reuse", "--out", str(tmp_path / "main"))
    assert hist == [(tmp_path / "main" / d / "seed0" / "train.json").read_bytes() for d in ("maskable-ppo", "no-feedback")]


def test_cli_train_with_warm_start(tmp_path):
    _cli("train", "--steps", "64", "--seed", "0", "--n-envs", "1", "--out", str(tmp_path / "w"),
         "--env-arg", "text_encoder=hashing", "--warm-start", "fixed:sim/photoreal", "--warm-start-episodes", "3")
    info = json.loads((tmp_path / "w" / "seed0" / "train.json").read_text())
    assert info["warm_start"]["teacher"] == "fixed:sim/photoreal" and info["warm_start"]["episodes"] == 3


def test_cli_bench_perf_and_geneval_fixture(tmp_path):
    out = _cli("bench", "perf", "--steps", "50", "--vector-steps", "8", "--ppo-steps", "0")
    assert "steps/s" in out and "CartPole-v1" in out and "2 worker(s)" in out
    fixture = tmp_path / "g.jsonl"
    fixture.write_text(
        '{"tag": "colors", "include": [{"class": "cup", "count": 1, "color": "red"}], "prompt": "a photo of a red cup"}\n'
        '{"tag": "counting", "include": [{"class": "clock", "count": 2}], "exclude": [{"class": "clock", "count": 3}], '
        '"prompt": "a photo of two clocks"}\n'
    )
    md = _cli("bench", "geneval", str(fixture), "--policy", "random", "--images", "2", "--runs", "1",
              "--out", str(tmp_path / "b"))
    assert "random" in md
    data = json.loads((tmp_path / "b" / "bench.json").read_text())
    rec = data["methods"]["random"]
    assert {"overall", "per_tag", "mean_calls", "mean_cost", "n_prompts", "method"} <= set(rec)
    assert rec["n_prompts"] == 2
    assert set(data["rliable"]["iqm"]) == {"random"} and "IQM (95% CI)" in md  # rliable aggregates


def test_cli_bench_long_and_compbench_with_workers(tmp_path):
    one = _cli("bench", "long", "--policy", "random", "--policy", "fixed:sim/ella", "--limit", "2", "--runs", "2",
               "--out", str(tmp_path / "l1"))
    _cli("bench", "long", "--policy", "random", "--policy", "fixed:sim/ella", "--limit", "2", "--runs", "2",
               "--workers", "2", "--out", str(tmp_path / "l2"))
    assert "fixed:sim/ella" in one
    def episodes(folder: str) -> list[dict]:
        data = json.loads((tmp_path / folder / "bench.json").read_text())
        return [{k: v for k, v in e.items() if k != "wall_time"} for e in data["episodes"]]

    assert episodes("l1") == episodes("l2")  # parallel evaluation changes nothing
    cb = tmp_path / "color_val.txt"
    cb.write_text("a red cup and a blue bowl\na green apple\n")
    md = _cli("bench", "compbench", str(cb), "--policy", "random", "--runs", "1", "--workers", "2",
              "--out", str(tmp_path / "c"))
    assert "random" in md
