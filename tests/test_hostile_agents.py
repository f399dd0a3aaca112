"""Hostile but realistic inputs to the agents' side (issue 19): CLI arguments, --env-arg, policy files, checkpoints,
resume and evaluation. Each case asserts the exact outcome: an error whose one line names the argument / value /
fix, or the correct result.

Every case is classified into one of :data:`OUTCOMES` (the columns of the issue's table) and must come out as
``clear error`` or ``handled``. With ``HOSTILE_TALLY=<file>`` set, each case appends ``{"case", "outcome"}`` to the
file, which is how the before/after table of the issue was counted (the same file run against the code before the
fixes)::

    HOSTILE_TALLY=/tmp/after.jsonl python -m pytest tests/test_hostile_agents.py -q
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from agents.testing import malicious_sb3_zip

OUTCOMES = ("clear error", "misleading", "silent wrong", "deep traceback", "hang", "data lost", "handled")
HASH = ["--env-arg", "text_encoder=hashing"]
TIMEOUT_S = 240


# ---------------------------------------------------------------------------------------------- fixtures
class Ctx:
    """Files shared by the cases: tiny trained runs (made once through the CLI), SB3 zips, a malicious zip."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.marker = root / "PWNED"  # the malicious pickle writes this file
        self.flags: dict[str, bool] = {}

    def policy(self, run: Path) -> Path:
        """The trained policy file of a run folder (policy.json; the old layout wrote model.zip)."""
        p = run / "policy.json"
        return p if p.is_file() else run / "model.zip"

    def copy_run(self, run: Path, name: str) -> Path:
        dst = self.root / "copies" / name
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(run, dst)
        return dst

    def resume_target(self, run: Path) -> str:
        """What a user passes to resume a run: the run folder (or, in the old layout, its model.zip)."""
        return str(run) if (run / "policy.json").is_file() else str(run / "model.zip")


def _cli(args: list[str]) -> Any:
    from agents.cli import app

    return CliRunner().invoke(app, args, catch_exceptions=True)


def _train(ctx_root: Path, name: str, *extra: str) -> Path:
    out = ctx_root / name
    res = _cli(["train", "--steps", "64", "--n-envs", "1", "--out", str(out), *extra])
    assert res.exit_code == 0, res.output
    return out / "seed0"


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> Ctx:
    from agents.algos import make_model, make_vec_env

    c = Ctx(tmp_path_factory.mktemp("hostile"))
    # several checkpoints in the short run where the CLI lets us ask for them (the old CLI could not)
    every = ["--checkpoint-every", "64"] if "--checkpoint-every" in _cli(["train", "--help"]).output else []
    c.hash_run = _train(c.root, "hash", *HASH, *every)  # type: ignore[attr-defined]
    c.paper_run = _train(c.root, "paper", "--env", "poser_env/ImagePoserPaper-v0", "--algo", "dqn",  # type: ignore[attr-defined]
                         *HASH)
    c.nofb_run = _train(c.root, "nofb", *HASH, "--env-arg", "feedback_in_obs=false")  # type: ignore[attr-defined]
    venv = make_vec_env("poser_env/ImagePoser-v0", n_envs=1, env_kwargs={"text_encoder": "hashing"})
    model = make_model("maskable_ppo", venv, seed=0)
    model.save(c.root / "legit.zip")
    venv.close()
    c.legit_zip = c.root / "legit.zip"  # type: ignore[attr-defined]
    c.evil_zip = malicious_sb3_zip(c.root / "legit.zip", c.root / "evil.zip", c.marker)  # type: ignore[attr-defined]
    return c


# ---------------------------------------------------------------------------------------------- cases
Args = list[str] | Callable[[Ctx], list[str]]
Check = Callable[[Ctx, Any], str | None]


@dataclass
class Case:
    """One hostile input. ``expect``: "error" (``words`` must all appear in the error) or "ok" (``check`` passes).

    ``check(ctx, result)`` returns None when the result is right, else the outcome it amounts to ("silent wrong",
    "data lost", "misleading"). ``setup(ctx)`` prepares files and returns nothing.
    """

    id: str
    args: Args
    expect: str = "error"
    words: tuple[str, ...] = ()
    setup: Callable[[Ctx], None] | None = None
    check: Check | None = None
    lib: Callable[[Ctx], Any] | None = None  # a library call instead of the CLI
    lib_error: tuple[type[BaseException], ...] | str = field(default=ValueError)


def _no_marker(c: Ctx, res: Any) -> str | None:
    return "silent wrong" if c.marker.exists() else None


def _cases() -> list[Case]:
    cases: list[Case] = []

    def add(*a: Any, **k: Any) -> None:
        cases.append(Case(*a, **k))

    # ------------------------------------------------------------------ train: arguments
    t = ["train", "--n-envs", "1"]

    def out(c: Ctx, name: str) -> list[str]:
        return ["--out", str(c.root / "t" / name)]

    add("train-steps-0", lambda c: [*t, "--steps", "0", *out(c, "s0")], words=("--steps", "0", ">= 1"))
    add("train-steps-negative", lambda c: [*t, "--steps", "-5", *out(c, "s5")], words=("--steps", "-5"))
    add("train-steps-not-int", lambda c: [*t, "--steps", "abc", *out(c, "sa")], words=("--steps", "integer"))
    add("train-n-envs-0", lambda c: ["train", "--n-envs", "0", "--steps", "64", *out(c, "n0")], words=("--n-envs", "0"))
    add("train-seed-negative", lambda c: [*t, "--steps", "64", "--seed", "-1", *out(c, "sn")], words=("--seed", "-1"))
    add("train-seed-repeated", lambda c: [*t, "--steps", "64", "--seed", "0", "--seed", "0", *out(c, "sr")],
        words=("--seed", "repeat"))
    add("train-algo-unknown", lambda c: [*t, "--steps", "64", "--algo", "a2c", *out(c, "a2c")], words=("algo", "a2c"))
    add("train-algo-typo", lambda c: [*t, "--steps", "64", "--algo", "maskable_pp", *out(c, "mpp")],
        words=("maskable_pp", "did you mean"))
    add("train-checkpoint-every-0", lambda c: [*t, "--steps", "64", "--checkpoint-every", "0", *out(c, "ce0")],
        words=("--checkpoint-every", "0"))
    add("train-warm-episodes-0", lambda c: [*t, "--steps", "64", "--warm-start", "fixed:sim/layout",
                                            "--warm-start-episodes", "0", *out(c, "we0")],
        words=("--warm-start-episodes", "0"))
    add("train-warm-unknown-expert", lambda c: [*t, "--steps", "64", "--warm-start", "fixed:sim/nope", *HASH,
                                                *out(c, "wn")], words=("fixed:sim/nope",))
    add("train-warm-unknown-name", lambda c: [*t, "--steps", "64", "--warm-start", "bogus", *HASH, *out(c, "wb")],
        words=("bogus",))
    add("train-warm-with-dqn", lambda c: [*t, "--steps", "64", "--warm-start", "fixed:sim/layout", "--algo", "dqn",
                                          "--env", "poser_env/ImagePoserPaper-v0", *HASH, *out(c, "wd")],
        words=("warm-start", "dqn"))
    add("train-env-unknown", lambda c: [*t, "--steps", "64", "--env", "poser_env/ImagePoser-v9", *out(c, "ev")],
        words=("ImagePoser-v9", "ImagePoser-v0"))
    add("train-out-is-file", lambda c: [*t, "--steps", "64", *HASH, "--out", str(c.root / "afile")],
        setup=lambda c: (c.root / "afile").write_text("x"), words=("afile", "file"))

    # ------------------------------------------------------------------ --env-arg typing (train and eval)
    bad_env_args = [
        ("cost-weight-true", "cost_weight=True", ("cost_weight", "True", "number")),
        ("cost-weight-nan", "cost_weight=nan", ("cost_weight", "nan")),
        ("cost-weight-negative", "cost_weight=-1", ("cost_weight", "-1")),
        ("thumbnail-maybe", "thumbnail=maybe", ("thumbnail", "maybe", "true/false")),
        ("feedback-2", "feedback_in_obs=2", ("feedback_in_obs", "2")),
        ("max-steps-float", "max_steps=1.5", ("max_steps", "1.5", "integer")),
        ("max-steps-zero", "max_steps=0", ("max_steps", "0")),
        ("max-steps-word", "max_steps=ten", ("max_steps", "ten")),
        ("key-typo", "cost_weght=0", ("cost_weght", "did you mean", "cost_weight")),
        ("key-unknown", "colour=red", ("colour", "not an argument")),
        ("no-equals", "cost_weight", ("cost_weight", "key=value")),
        ("empty-key", "=3", ("=3", "no key")),
        ("reward-weights-number", "reward_weights=2", ("reward_weights", "json object")),
        ("reward-weights-bad-json", "reward_weights={bad", ("reward_weights", "json")),
        ("experts-not-list", "experts=sim/sketch", ("experts", "json list")),
        ("text-encoder-unknown", "text_encoder=bert", ("text_encoder", "bert")),
    ]
    for name, arg, words in bad_env_args:
        add(f"train-envarg-{name}", lambda c, a=arg, n=name: [*t, "--steps", "64", "--env-arg", a, *out(c, f"ea-{n}")],
            words=words)
    for name, arg, words in bad_env_args[:8]:
        add(f"eval-envarg-{name}", ["eval", "--policy", "random", "--n-prompts", "1", "--runs", "1", "--env-arg", arg],
            words=words)
    add("train-envarg-given-twice", lambda c: [*t, "--steps", "64", "--env-arg", "max_steps=8", "--env-arg",
                                               "max_steps=9", *out(c, "tw")], words=("max_steps", "twice"))

    def obs_keys(c: Ctx, run: Path) -> set[str]:
        p = c.policy(run)
        if p.suffix == ".json":
            return set(json.loads(p.read_text())["observation_space"]["spaces"])
        from sb3_contrib import MaskablePPO

        return set(MaskablePPO.load(p, device="cpu").observation_space.spaces)

    def no_key(key: str) -> Check:
        def check(c: Ctx, res: Any) -> str | None:
            return "silent wrong" if key in obs_keys(c, c.root / "t" / f"k-{key}" / "seed0") else None
        return check

    add("train-envarg-thumbnail-False-is-false", lambda c: [*t, "--steps", "64", *HASH, "--env-arg", "thumbnail=False",
                                                            *out(c, "k-thumbnail")], expect="ok",
        check=no_key("thumbnail"))
    add("train-envarg-feedback-no-is-false", lambda c: [*t, "--steps", "64", *HASH, "--env-arg", "feedback_in_obs=no",
                                                        *out(c, "k-feedback")], expect="ok", check=no_key("feedback"))

    def cost_zero(c: Ctx, res: Any) -> str | None:
        info = json.loads((c.root / "t" / "cw0" / "seed0" / "train.json").read_text())
        return None if info["env_kwargs"]["cost_weight"] == 0 else "silent wrong"

    add("train-envarg-cost-weight-0", lambda c: [*t, "--steps", "64", *HASH, "--env-arg", "cost_weight=0",
                                                 *out(c, "cw0")], expect="ok", check=cost_zero)

    # ------------------------------------------------------------------ train: output folder, checkpoints, resume
    def ckpt_files(run: Path) -> list[Path]:
        d = run / "checkpoints"
        return sorted(d.glob("model_*_steps.json")) + sorted(d.glob("model_*_steps.zip")) if d.is_dir() else []

    def has_end_checkpoint(c: Ctx, res: Any) -> str | None:
        return None if ckpt_files(c.hash_run) else "data lost"  # type: ignore[attr-defined]

    add("train-short-run-gets-checkpoint", ["--help"], expect="ok", check=has_end_checkpoint)

    def curve_written(c: Ctx, res: Any) -> str | None:
        curve = c.hash_run / "curve.json"  # type: ignore[attr-defined]
        return None if curve.is_file() and json.loads(curve.read_text()) else "data lost"

    add("train-curve-written", ["--help"], expect="ok", check=curve_written)

    def snapshot(run: Path) -> dict[str, bytes]:
        return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()
                and "tb" not in p.parts}

    def setup_existing(c: Ctx) -> None:
        run = c.copy_run(c.hash_run, "existing/seed0")  # type: ignore[attr-defined]
        c.flags["snap"] = snapshot(run)  # type: ignore[assignment]

    def existing_untouched(c: Ctx, res: Any) -> str | None:
        run = c.root / "copies" / "existing" / "seed0"
        return None if snapshot(run) == c.flags["snap"] else "data lost"  # type: ignore[comparison-overlap]

    add("train-into-existing-run-refused", lambda c: [*t, "--steps", "64", *HASH, "--out",
                                                      str(c.root / "copies" / "existing")],
        setup=setup_existing, check=existing_untouched, words=("already holds", "--resume", "--overwrite"))

    def overwritten(c: Ctx, res: Any) -> str | None:
        info = json.loads((c.root / "copies" / "ow" / "seed0" / "train.json").read_text())
        return None if len(info.get("runs", [info])) == 1 else "silent wrong"

    add("train-overwrite-replaces-run", lambda c: [*t, "--steps", "64", *HASH, "--overwrite", "--out",
                                                   str(c.root / "copies" / "ow")],
        setup=lambda c: c.copy_run(c.hash_run, "ow/seed0") and None, expect="ok", check=overwritten)  # type: ignore[attr-defined]

    def resumed_history(c: Ctx, res: Any) -> str | None:
        run = c.root / "copies" / "res" / "seed0"
        info = json.loads((run / "train.json").read_text())
        curve = json.loads((run / "curve.json").read_text())
        runs = info.get("runs", [])
        first_end = 256  # n_steps=256 rounds the 64 steps of the first run up
        if len(runs) != 2 or runs[0]["num_timesteps"] != first_end or runs[1]["start_timesteps"] != first_end:
            return "data lost"
        if info["num_timesteps"] != 2 * first_end or min(p["timesteps"] for p in curve) > first_end:
            return "data lost"
        return None

    add("train-resume-appends-history", lambda c: [*t, "--steps", "64", "--resume",
                                                   c.resume_target(c.root / "copies" / "res" / "seed0"),
                                                   "--out", str(c.root / "copies" / "res")],
        setup=lambda c: c.copy_run(c.hash_run, "res/seed0") and None, expect="ok", check=resumed_history)  # type: ignore[attr-defined]
    def setup_other_run(c: Ctx) -> None:
        run = c.copy_run(c.nofb_run, "other/seed0")  # type: ignore[attr-defined]
        c.flags["snap-other"] = snapshot(run)  # type: ignore[assignment]

    def other_untouched(c: Ctx, res: Any) -> str | None:
        same = snapshot(c.root / "copies" / "other" / "seed0") == c.flags["snap-other"]  # type: ignore[comparison-overlap]
        return None if same else "data lost"

    add("train-resume-into-other-run-refused", lambda c: [*t, "--steps", "64", "--resume", c.resume_target(c.hash_run),  # type: ignore[attr-defined]
                                                          "--out", str(c.root / "copies" / "other")],
        setup=setup_other_run, check=other_untouched, words=("already holds another run",))

    def newest_ckpt_arg(c: Ctx) -> list[str]:
        run = c.root / "copies" / "dflt" / "seed0"
        files = ckpt_files(run)
        target = str(max(files, key=lambda p: int(p.name.split("_")[1]))) if files else str(run / "model.zip")
        return [*t, "--steps", "64", "--resume", target]

    def default_out_continues(c: Ctx, res: Any) -> str | None:
        info = json.loads((c.root / "copies" / "dflt" / "seed0" / "train.json").read_text())
        return None if len(info.get("runs", [])) == 2 else "data lost"

    add("train-resume-checkpoint-without-out", newest_ckpt_arg,
        setup=lambda c: c.copy_run(c.hash_run, "dflt/seed0") and None, expect="ok", check=default_out_continues)  # type: ignore[attr-defined]
    add("train-resume-missing", lambda c: [*t, "--steps", "64", "--resume", str(c.root / "nope"), *out(c, "rm")],
        words=("nope", "does not exist"))
    add("train-resume-evil-zip", lambda c: [*t, "--steps", "64", *HASH, "--resume", str(c.evil_zip), *out(c, "rz")],  # type: ignore[attr-defined]
        words=("trust-pickle",), check=_no_marker)
    add("train-resume-algo-mismatch", lambda c: [*t, "--steps", "64", "--algo", "ppo", "--resume",
                                                 c.resume_target(c.hash_run), *out(c, "ram")],  # type: ignore[attr-defined]
        words=("maskable", "--algo"))
    add("train-resume-two-seeds", lambda c: [*t, "--steps", "64", "--seed", "0", "--seed", "1", "--resume",
                                             c.resume_target(c.hash_run), *out(c, "r2")], words=("one",))  # type: ignore[attr-defined]
    add("train-resume-other-env-kwargs", lambda c: [*t, "--steps", "64", *HASH, "--env-arg", "cost_weight=0.5",
                                                    "--resume", c.resume_target(c.hash_run), *out(c, "rek")],  # type: ignore[attr-defined]
        words=("cost_weight", "0.5"))
    add("train-resume-other-env", lambda c: [*t, "--steps", "64", "--algo", "dqn", "--env",
                                             "poser_env/ImagePoserPaper-v0", "--resume", c.resume_target(c.hash_run),  # type: ignore[attr-defined]
                                             *out(c, "roe")], words=("ImagePoser-v0",))

    def damage(kind: str) -> Callable[[Ctx], None]:
        def setup(c: Ctx) -> None:
            run = c.copy_run(c.hash_run, f"dmg-{kind}/seed0")  # type: ignore[attr-defined]
            files = ckpt_files(run)
            if not files:  # the old layout had no checkpoint for a short run: nothing to damage
                c.flags[f"dmg-{kind}"] = str(run / "checkpoints" / "no-checkpoint.json")  # type: ignore[assignment]
                return
            newest = max(files, key=lambda p: int(p.name.split("_")[1]))
            c.flags[f"dmg-{kind}"] = str(newest)  # type: ignore[assignment]
            if kind == "json":
                newest.write_text("{ truncated")
            elif kind == "weights":
                w = newest.with_suffix(".safetensors") if newest.suffix == ".json" else newest
                w.write_bytes(w.read_bytes()[: len(w.read_bytes()) // 2])
        return setup

    add("train-resume-checkpoint-bad-json", lambda c: [*t, "--steps", "64", "--resume", str(c.flags["dmg-json"]),
                                                       *out(c, "rbj")], setup=damage("json"), words=("json",))
    add("train-resume-checkpoint-truncated-weights",
        lambda c: [*t, "--steps", "64", "--resume", str(c.flags["dmg-weights"]), *out(c, "rbw")],
        setup=damage("weights"), words=("sha256",))

    def older_used(c: Ctx, res: Any) -> str | None:
        info = json.loads((c.root / "copies" / "dmg-folder" / "seed0" / "train.json").read_text())
        seg = info.get("runs", [{}])[-1]
        return None if seg.get("start_timesteps", -1) < 256 and seg.get("status") == "finished" else "silent wrong"

    add("train-resume-folder-skips-damaged-newest",
        lambda c: [*t, "--steps", "64", "--resume", c.resume_target(c.root / "copies" / "dmg-folder" / "seed0"),
                   "--out", str(c.root / "copies" / "dmg-folder")],
        setup=lambda c: damage("weights")(c) or _rename_dmg(c, "weights", "folder"), expect="ok", check=older_used)
    add("train-resume-empty-folder", lambda c: [*t, "--steps", "64", "--resume", str(c.root / "emptydir"),
                                                *out(c, "ref")],
        setup=lambda c: (c.root / "emptydir").mkdir(exist_ok=True), words=("emptydir", "checkpoint"))

    # ------------------------------------------------------------------ eval
    e = ["eval", "--n-prompts", "1", "--runs", "1", "--json"]
    add("eval-runs-0", ["eval", "--policy", "random", "--n-prompts", "1", "--runs", "0"], words=("--runs", "0"))
    add("eval-runs-negative", ["eval", "--policy", "random", "--n-prompts", "1", "--runs", "-1"], words=("--runs",))
    add("eval-images-0", ["eval", "--policy", "random", "--n-prompts", "1", "--runs", "1", "--images", "0"],
        words=("--images", "0"))
    add("eval-n-prompts-negative", ["eval", "--policy", "random", "--n-prompts", "-1", "--runs", "1"],
        words=("--n-prompts", "-1"))
    add("eval-split-unknown", ["eval", "--policy", "random", "--n-prompts", "1", "--runs", "1", "--split", "val"],
        words=("--split", "val"))
    add("eval-prompts-missing", lambda c: [*e, "--policy", "random", "--prompts", str(c.root / "missing.jsonl")],
        words=("missing.jsonl",))
    add("eval-prompts-empty", lambda c: [*e, "--policy", "random", "--prompts", str(c.root / "empty.jsonl")],
        setup=lambda c: (c.root / "empty.jsonl").write_text(""), words=("no prompts",))
    add("eval-prompts-bad-json", lambda c: [*e, "--policy", "random", "--prompts", str(c.root / "bad.jsonl")],
        setup=lambda c: (c.root / "bad.jsonl").write_text("{not json\n"), words=("bad.jsonl:1",))
    add("eval-policy-missing-file", lambda c: [*e, "--policy", str(c.root / "nosuch.json")],
        words=("nosuch.json", "does not exist"))
    add("eval-policy-missing-zip", lambda c: [*e, "--policy", str(c.root / "nosuch.zip")],
        words=("nosuch.zip", "does not exist"))
    add("eval-baseline-typo", [*e, "--policy", "randm"], words=("randm", "did you mean", "random"))
    add("eval-baseline-unknown-expert", [*e, "--policy", "single:sim/nope"], words=("single:sim/nope",))
    add("eval-baseline-editor-as-t2i", [*e, "--policy", "fixed:sim/add"], words=("fixed:sim/add",))
    add("eval-evil-zip-refused", lambda c: [*e, *HASH, "--policy", str(c.evil_zip)], words=("trust-pickle",),  # type: ignore[attr-defined]
        check=_no_marker)
    add("eval-sb3-zip-needs-trust", lambda c: [*e, *HASH, "--policy", str(c.legit_zip)], words=("trust-pickle",))  # type: ignore[attr-defined]

    def learned_and_random(c: Ctx, res: Any) -> str | None:
        text = res.output
        data = json.loads(text[text.index("{"):])
        return None if set(data) == {"learned", "random"} else "silent wrong"

    add("eval-sb3-zip-with-trust", lambda c: [*e, *HASH, "--trust-pickle", "--policy", str(c.legit_zip),  # type: ignore[attr-defined]
                                              "--policy", "random"], expect="ok", check=learned_and_random)
    add("eval-policy-ok", lambda c: [*e, *HASH, "--policy", str(c.policy(c.hash_run)), "--policy", "random"],  # type: ignore[attr-defined]
        expect="ok", check=learned_and_random)
    add("eval-run-folder-as-policy", lambda c: [*e, *HASH, "--policy", str(c.hash_run), "--policy", "random"],  # type: ignore[attr-defined]
        expect="ok", check=learned_and_random)
    add("eval-encoder-mismatch", lambda c: [*e, "--env-arg", "text_encoder=minilm", "--policy",
                                            str(c.policy(c.hash_run))],  # type: ignore[attr-defined]
        words=("text_encoder", "hashing", "minilm"))
    add("eval-other-env-policy", lambda c: [*e, *HASH, "--policy", str(c.policy(c.paper_run))],  # type: ignore[attr-defined]
        words=("ImagePoserPaper-v0",))
    add("eval-obs-mismatch-feedback", lambda c: [*e, *HASH, "--policy", str(c.policy(c.nofb_run))],  # type: ignore[attr-defined]
        words=("observation", "feedback"))
    add("eval-experts-mismatch", lambda c: [*e, *HASH, "--env-arg", 'experts=["sim/sketch", "sim/add"]', "--policy",
                                            str(c.policy(c.hash_run))], words=("experts",))  # type: ignore[attr-defined]
    add("eval-thumbnail-mismatch", lambda c: [*e, *HASH, "--env-arg", "thumbnail=true", "--env-arg",
                                              "thumbnail_size=32", "--policy", str(c.policy(c.hash_run))],  # type: ignore[attr-defined]
        words=("observation", "thumbnail"))

    # tampered safe policy files (a copy of the trained one)
    def tampered(kind: str) -> Callable[[Ctx], None]:
        def setup(c: Ctx) -> None:
            run = c.copy_run(c.hash_run, f"tamper-{kind}")  # type: ignore[attr-defined]
            cfg = run / "policy.json"
            w = run / "policy.safetensors"
            if not cfg.is_file():  # old layout: nothing of this format to tamper with; pass the path anyway
                return
            config = json.loads(cfg.read_text())
            if kind == "weights-flipped":
                b = bytearray(w.read_bytes())
                b[-1] ^= 0xFF
                w.write_bytes(bytes(b))
            elif kind == "weights-missing":
                w.unlink()
            elif kind == "garbage":
                cfg.write_text("not json at all")
            elif kind == "extractor-class":
                config["policy_params"]["features_extractor_class"] = {"class": "os.system"}
                cfg.write_text(json.dumps(config))
            elif kind == "activation":
                config["policy_params"]["activation_fn"] = {"class": "subprocess.Popen"}
                cfg.write_text(json.dumps(config))
            elif kind == "algo":
                config["algo"] = "a2c"
                cfg.write_text(json.dumps(config))
            elif kind == "policy-alias":
                config["policy"] = "builtins.eval"
                cfg.write_text(json.dumps(config))
            elif kind == "path-traversal":
                config["weights"] = "../../../../etc/passwd"
                cfg.write_text(json.dumps(config))
            elif kind == "format":
                config["format"] = "something-else"
                cfg.write_text(json.dumps(config))
            elif kind == "version":
                config["format_version"] = 99
                cfg.write_text(json.dumps(config))
            elif kind == "space-type":
                config["observation_space"] = {"type": "Graph"}
                cfg.write_text(json.dumps(config))
            elif kind == "net-arch":
                config["policy_params"]["net_arch"] = {"pi": [8], "vf": [8]}
                cfg.write_text(json.dumps(config))
        return setup

    for kind, words in [("weights-flipped", ("sha256",)), ("weights-missing", ("missing",)),
                        ("garbage", ("not valid json",)), ("extractor-class", ("features_extractor_class",)),
                        ("activation", ("activation_fn",)), ("algo", ("a2c",)),
                        ("policy-alias", ("builtins.eval",)), ("path-traversal", ("weights", "passwd", "missing")),
                        ("format", ("something-else",)), ("version", ("format_version", "99")),
                        ("space-type", ("graph",)), ("net-arch", ("weights do not fit",))]:
        add(f"eval-policy-tampered-{kind}", lambda c, k=kind: [*e, *HASH, "--policy",
                                                               str(c.policy(c.root / "copies" / f"tamper-{k}"))],
            setup=tampered(kind), words=words)
    add("eval-policy-folder-without-config", lambda c: [*e, *HASH, "--policy", str(c.root / "emptydir2")],
        setup=lambda c: (c.root / "emptydir2").mkdir(exist_ok=True), words=("emptydir2",))
    add("eval-env-unknown", [*e, "--policy", "random", "--env", "ImagePoser-v0"], words=("ImagePoser-v0",
                                                                                          "poser_env/ImagePoser-v0"))
    add("eval-out-is-file", lambda c: [*e, "--policy", "random", "--out", str(c.root / "afile2")],
        setup=lambda c: (c.root / "afile2").write_text("x"), words=("--out", "afile2"))
    add("eval-algo-unknown", lambda c: [*e, *HASH, "--algo", "a2c", "--policy", str(c.legit_zip)], words=("a2c",))  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ generate
    g = ["generate"]

    def gen_out(c: Ctx, name: str) -> list[str]:
        return ["--out", str(c.root / "gen" / name)]

    def no_baselines_first(c: Ctx, res: Any) -> str | None:
        return "misleading" if c.flags.get("best_single_expert") else None

    def spy_best(c: Ctx) -> None:
        import agents.pipeline as pl

        real = pl.best_single_expert

        def spy(*a: Any, **k: Any) -> str:
            c.flags["best_single_expert"] = True
            return real(*a, **k)

        c.flags["best_single_expert"] = False
        c.monkeypatch.setattr(pl, "best_single_expert", spy)  # type: ignore[attr-defined]

    add("generate-empty-prompt", lambda c: [*g, "", *gen_out(c, "empty")], setup=spy_best, check=no_baselines_first,
        words=("prompt", "empty"))
    add("generate-blank-prompt", lambda c: [*g, "   ", *gen_out(c, "blank")], setup=spy_best,
        check=no_baselines_first, words=("prompt", "empty"))
    add("generate-seed-negative", lambda c: [*g, "a red cup", "--seed", "-1", "--policy", "random",
                                             *gen_out(c, "sn")], words=("--seed", "-1"))
    add("generate-policy-missing", lambda c: [*g, "a red cup", "--policy", str(c.root / "nosuch.json"),
                                              *gen_out(c, "pm")], words=("nosuch.json",))
    add("generate-policy-typo", lambda c: [*g, "a red cup", "--policy", "critic-gredy", *gen_out(c, "pt")],
        words=("critic-gredy", "critic-greedy"))
    add("generate-evil-zip", lambda c: [*g, "a red cup", "--policy", str(c.evil_zip), *gen_out(c, "ez")],  # type: ignore[attr-defined]
        words=("trust-pickle",), check=_no_marker)
    add("generate-encoder-mismatch", lambda c: [*g, "a red cup", "--env", "poser_env/ImagePoser-v0", "--policy",
                                                str(c.policy(c.hash_run)),  # type: ignore[attr-defined]
                                                "--env-arg", "text_encoder=minilm", *gen_out(c, "em")],
        words=("text_encoder", "hashing"))
    add("generate-envarg-bad-bool", lambda c: [*g, "a red cup", "--policy", "random", "--env-arg",
                                               "render_panel=perhaps", *gen_out(c, "bb")],
        words=("render_panel", "perhaps"))
    add("generate-out-is-file", lambda c: [*g, "a red cup", "--policy", "random", "--out", str(c.root / "afile3")],
        setup=lambda c: (c.root / "afile3").write_text("x"), words=("afile3",))
    add("generate-algo-unknown", lambda c: [*g, "a red cup", "--algo", "sac", "--policy", "random",
                                            *gen_out(c, "au")], words=("sac",))

    def plant_previous(c: Ctx) -> None:
        d = c.root / "gen" / "prev"
        d.mkdir(parents=True, exist_ok=True)
        (d / "final.png").write_bytes(b"previous run's image")
        (d / "trace.json").write_text(json.dumps({"prompt": "an earlier prompt"}))

    def previous_kept(c: Ctx, res: Any) -> str | None:
        d = c.root / "gen" / "prev"
        same = (d / "final.png").read_bytes() == b"previous run's image" and \
            json.loads((d / "trace.json").read_text())["prompt"] == "an earlier prompt"
        return None if same else "silent wrong"

    add("generate-into-previous-run-refused", lambda c: [*g, "two blue cups", "--policy", "random",
                                                         *gen_out(c, "prev")],
        setup=plant_previous, check=previous_kept, words=("already holds", "--overwrite"))

    def replaced(c: Ctx, res: Any) -> str | None:
        d = c.root / "gen" / "prev2"
        trace = json.loads((d / "trace.json").read_text())
        stale = (d / "final.png").is_file() and (d / "final.png").read_bytes() == b"previous run's image"
        return "silent wrong" if stale or trace["prompt"] != "two blue cups" else None

    add("generate-overwrite-replaces-previous", lambda c: [*g, "two blue cups", "--policy", "random", "--overwrite",
                                                           *gen_out(c, "prev2")],
        setup=lambda c: (shutil.copytree(c.root / "gen" / "prev", c.root / "gen" / "prev2", dirs_exist_ok=True)
                         if (c.root / "gen" / "prev").is_dir() else plant_previous(c)) and None,
        expect="ok", check=replaced)

    def generated(c: Ctx, res: Any) -> str | None:
        d = c.root / "gen" / "okp"
        return None if (d / "trace.json").is_file() and (d / "contact_sheet.png").is_file() else "silent wrong"

    add("generate-with-trained-policy", lambda c: [*g, "a photo of a red cup", "--env", "poser_env/ImagePoser-v0",
                                                   "--policy", str(c.policy(c.hash_run)),  # type: ignore[attr-defined]
                                                   *gen_out(c, "okp")], expect="ok", check=generated)

    add("bench-long-evil-zip", lambda c: ["bench", "long", "--policy", str(c.evil_zip), "--limit", "1", "--runs", "1",  # type: ignore[attr-defined]
                                          "--out", str(c.root / "bench")], words=("trust-pickle",), check=_no_marker)

    # ------------------------------------------------------------------ other commands and the CLI itself
    add("experts-registry-missing", lambda c: ["experts", "--registry", str(c.root / "missing.toml")],
        words=("missing.toml",))
    add("command-typo", ["trian"], words=("trian", "train"))

    def debug_shows(c: Ctx, res: Any) -> str | None:
        return None if res.exception is not None and "steps" in str(res.exception) else "misleading"

    add("debug-shows-traceback", ["--debug", "train", "--steps", "0"], expect="debug", check=debug_shows)

    # ------------------------------------------------------------------ library calls (no CLI)
    def lib_load_zip(c: Ctx) -> Any:
        from agents.algos import load_model

        return load_model(c.evil_zip, "maskable_ppo")  # type: ignore[attr-defined]

    add("lib-load-model-evil-zip", [], lib=lib_load_zip, words=("trust_pickle",), check=_no_marker)

    def lib_resume_training_zip(c: Ctx) -> Any:
        from agents.algos import make_vec_env
        from agents.callbacks import resume_training

        venv = make_vec_env("poser_env/ImagePoser-v0", n_envs=1, env_kwargs={"text_encoder": "hashing"})
        return resume_training(c.evil_zip, venv, "maskable_ppo", total_timesteps=10)  # type: ignore[attr-defined]

    add("lib-resume-training-evil-zip", [], lib=lib_resume_training_zip, words=("trust_pickle",), check=_no_marker)

    def lib_train_steps_bool(c: Ctx) -> Any:
        from agents.train import train_one

        return train_one(env_id="poser_env/ImagePoser-v0", algo="ppo", steps=True, seed=0, out=c.root / "lib1")

    add("lib-train-steps-bool", [], lib=lib_train_steps_bool, words=("steps=True",))

    def lib_train_model_kwarg_typo(c: Ctx) -> Any:
        from agents.train import train_one

        return train_one(env_id="poser_env/ImagePoser-v0", algo="ppo", steps=64, seed=0, out=c.root / "lib2",
                         n_envs=1, env_kwargs={"text_encoder": "hashing"}, model_kwargs={"n_step": 32})

    add("lib-train-model-kwarg-typo", [], lib=lib_train_model_kwarg_typo, words=("n_step", "n_steps"))

    def lib_eval_runs_0(c: Ctx) -> Any:
        from agents.pipeline import evaluate_methods

        return evaluate_methods(["random"], ["a red cup"], runs=0, progress=False,
                                env_kwargs={"text_encoder": "hashing"})

    add("lib-evaluate-methods-runs-0", [], lib=lib_eval_runs_0, words=("runs=0",))

    def lib_eval_no_specs(c: Ctx) -> Any:
        from agents.pipeline import evaluate_methods

        return evaluate_methods(["random"], [], runs=1, progress=False, env_kwargs={"text_encoder": "hashing"})

    add("lib-evaluate-methods-no-prompts", [], lib=lib_eval_no_specs, words=("empty",))

    def lib_generate_empty(c: Ctx) -> Any:
        from agents.pipeline import generate_one

        return generate_one("", policy="random", out=c.root / "lib-gen")

    add("lib-generate-empty-prompt", [], lib=lib_generate_empty, words=("prompt", "empty"))

    def lib_train_seeds_empty(c: Ctx) -> Any:
        from agents.train import train_runs

        return train_runs(env_id="poser_env/ImagePoser-v0", algo="ppo", steps=10, seeds=[], out=c.root / "lib3")

    add("lib-train-runs-no-seeds", [], lib=lib_train_seeds_empty, words=("seeds",))
    return cases


def _rename_dmg(c: Ctx, kind: str, new: str) -> None:
    src = c.root / "copies" / f"dmg-{kind}"
    dst = c.root / "copies" / f"dmg-{new}"
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)


CASES = _cases()


# ---------------------------------------------------------------------------------------------- classification
class _Timeout(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise _Timeout


def classify(case: Case, c: Ctx) -> tuple[str, str]:
    """Run a case; return (outcome, detail)."""
    if case.setup is not None:
        case.setup(c)
    if c.marker.exists():
        c.marker.unlink()
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(TIMEOUT_S)
    try:
        if case.lib is not None:
            return _classify_lib(case, c)
        args = case.args(c) if callable(case.args) else list(case.args)
        res = _cli(args)
    except _Timeout:
        return "hang", f"no answer in {TIMEOUT_S} s"
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    text = res.output
    low = " ".join(text.lower().split())
    exc = res.exception if not isinstance(res.exception, SystemExit) else None
    if case.expect == "debug":
        return (case.check(c, res) or "handled") if case.check else "handled", text[-300:]
    if case.expect == "ok":
        if res.exit_code != 0 or exc is not None:
            return ("deep traceback" if exc is not None else "misleading"), f"{exc!r} {text[-400:]}"
        return (case.check(c, res) if case.check else None) or "handled", text[-200:]
    # an error was expected
    if exc is not None:
        return "deep traceback", f"{type(exc).__name__}: {exc}"
    if res.exit_code == 0:
        return (case.check(c, res) if case.check else None) or "silent wrong", text[-300:]
    verdict = case.check(c, res) if case.check else None
    if verdict is not None:
        return verdict, text[-300:]
    if "traceback (most recent call last)" in low:
        return "deep traceback", text[-300:]
    missing = [w for w in case.words if " ".join(w.lower().split()) not in low]
    return ("misleading", f"missing {missing}: {text[-400:]}") if missing else ("clear error", text.strip()[-300:])


def _classify_lib(case: Case, c: Ctx) -> tuple[str, str]:
    assert case.lib is not None
    try:
        case.lib(c)
    except _Timeout:
        raise
    except Exception as exc:
        verdict = case.check(c, None) if case.check else None
        if verdict is not None:
            return verdict, repr(exc)
        expected = case.lib_error if isinstance(case.lib_error, tuple) else (ValueError,)
        if not isinstance(exc, expected):
            return "deep traceback", f"{type(exc).__name__}: {exc}"
        low = " ".join(str(exc).lower().split())
        missing = [w for w in case.words if w.lower() not in low]
        return ("misleading", f"missing {missing}: {exc}") if missing else ("clear error", str(exc))
    return (case.check(c, None) if case.check else None) or "silent wrong", "no error"


def _record(case_id: str, outcome: str, detail: str) -> None:
    path = os.environ.get("HOSTILE_TALLY")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"case": case_id, "outcome": outcome, "detail": detail[:500]}) + "\n")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile(case: Case, ctx: Ctx, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx.monkeypatch = monkeypatch  # type: ignore[attr-defined]
    outcome, detail = classify(case, ctx)
    _record(case.id, outcome, detail)
    want = "handled" if case.expect in ("ok", "debug") else "clear error"
    assert outcome == want, detail


def test_case_count() -> None:
    assert len(CASES) >= 80
    assert len({c.id for c in CASES}) == len(CASES)

