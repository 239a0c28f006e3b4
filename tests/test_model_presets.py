"""Model presets by name (MODEL=qwen2.5-0.5b ... qwen2.5-7b): the files, how every stage resolves them, the RL
launcher's per-role memory estimate and its refusal, the SFT notebook's preset knobs, and docs/rl.md's table.

The launcher cases run the real code path dry runs and launches share (`build()`, then the dry run's summary),
in-process, with the tiny offline model as MODEL_PATH: the preset gives the sizes, the tiny model the weights.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from notebooks import sft
from scripts.eval import run_all
from scripts.lib import model_presets
from scripts.lib.paths import VERL_CONFIGS, algorithms
from scripts.rl import config as rl_config
from scripts.rl import launch as rl_launch
from scripts.rl import memory
from scripts.rl.preflight import LaunchError

REPO = Path(__file__).resolve().parent.parent
PRESETS = ["qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2.5-3b", "qwen2.5-7b"]
SIZES = {"qwen2.5-0.5b": "0.5B", "qwen2.5-1.5b": "1.5B", "qwen2.5-3b": "3B", "qwen2.5-7b": "7B"}


# --- the files ---------------------------------------------------------------------------------------


def test_the_folder_is_the_list_of_presets_and_each_names_its_instruct_model():
    assert model_presets.names() == PRESETS
    assert model_presets.DEFAULT_PRESET == "qwen2.5-0.5b"
    for name in PRESETS:
        assert model_presets.preset(name).id == f"Qwen/Qwen2.5-{SIZES[name]}-Instruct"
    assert model_presets.DEFAULT_MODEL == "Qwen/Qwen2.5-0.5B-Instruct"


@pytest.mark.parametrize("name", PRESETS)
def test_a_preset_holds_the_same_keys_as_every_other_and_its_shapes_count_its_parameters(name):
    preset, default = model_presets.preset(name), model_presets.preset(model_presets.DEFAULT_PRESET)
    assert preset.arch.counted_params() == preset.arch.params  # config.json's shapes give the model card's count
    assert set(preset.sft) == set(sft.PRESET_KNOBS)  # exactly the knobs the notebook may leave None
    assert isinstance(preset.sft["learning_rate"], float)  # `1e-5` would be a string in YAML 1.1
    keys = [k for k, _ in rl_config.leaves(preset.rl)]
    assert keys == [k for k, _ in rl_config.leaves(default.rl)]  # switching presets replaces every such value
    cfg = rl_config.compose_config("ppo_gsm8k", [f"++{k}={json.dumps(v)}" for k, v in rl_config.leaves(preset.rl)])
    assert all(OmegaConf.select(cfg, k) == v for k, v in rl_config.leaves(preset.rl))  # real verl keys


@pytest.mark.parametrize("name", PRESETS)
def test_every_value_in_a_preset_says_where_it_comes_from(name):
    """The comment block above each value (or on its line) names a [tag] defined in the file's header, a verl path
    or a URL."""
    text = (model_presets.PRESETS_DIR / f"{name}.yaml").read_text()
    tags = set(re.findall(r"^#\s+\[([\w-]+)\]\s", text, re.M))
    above, unsourced, used = [], [], set()
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            above.append(stripped)
        elif not stripped:
            above = []
        elif not stripped.endswith(":"):  # a value, not a mapping
            comment = " ".join(above)
            found = re.findall(r"\[([a-z][\w-]*)[]:]", comment)
            used |= set(found)
            if not (found or re.search(r"examples/|docs/|https?://", comment)):
                unsourced.append(stripped)
            above = []
    assert not unsourced, f"values without a source: {unsourced}"
    assert used <= tags, f"tags used but not defined in the header: {sorted(used - tags)}"


def test_the_default_model_id_is_written_once():
    """Compose, .env.example, the setup job, verl's base config, the notebook and the code read it from the default
    preset's file."""
    needle = "Qwen/Qwen2.5-0.5B-Instruct"
    files = [
        "docker-compose.yml",
        "docker-compose.worker.yml",
        "services/verl/prefetch.sh",
        "verl_configs/gsm8k_base.yaml",
        "scripts/lib/paths.py",
        "scripts/rl/launch.py",
        "scripts/eval/run_all.py",
        "notebooks/sft.py",
    ]
    assert [f for f in files if needle in (REPO / f).read_text()] == []
    cell = "".join(map(repr, sft.notebook_parameters().values()))  # the notebook's parameters cell
    assert needle not in cell and "'qwen2.5-0.5b'" in cell
    settings = [line for line in (REPO / ".env.example").read_text().splitlines() if not line.startswith("#")]
    assert not [line for line in settings if needle in line]  # its comments may name it, no setting holds it
    assert f"id: {needle}" in (model_presets.PRESETS_DIR / "qwen2.5-0.5b.yaml").read_text()
    assert (
        yaml.safe_load((VERL_CONFIGS / "gsm8k_base.yaml").read_text())["actor_rollout_ref"]["model"]["path"] == "???"
    )


def test_env_example_names_the_default_preset_and_no_base_model():
    example = dict(
        line.split("=", 1) for line in (REPO / ".env.example").read_text().splitlines() if re.match(r"^[A-Z_]+=", line)
    )
    assert example["MODEL"] == model_presets.DEFAULT_PRESET and example["BASE_MODEL"] == ""


# --- MODEL and BASE_MODEL: one rule for every stage ------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "base", "preset", "loads", "why"),
    [
        ("", "", "qwen2.5-0.5b", "Qwen/Qwen2.5-0.5B-Instruct", "the default preset qwen2.5-0.5b (MODEL unset)"),
        ("qwen2.5-3b", "", "qwen2.5-3b", "Qwen/Qwen2.5-3B-Instruct", "MODEL=qwen2.5-3b"),
        ("Qwen/Qwen2.5-3B-Instruct", "", "qwen2.5-3b", "Qwen/Qwen2.5-3B-Instruct", "MODEL=Qwen/Qwen2.5-3B-Instruct"),
        ("", "Qwen/Qwen2.5-7B-Instruct", "qwen2.5-7b", "Qwen/Qwen2.5-7B-Instruct", "preset qwen2.5-7b's model"),
        ("", "/models/mine", "qwen2.5-0.5b", "/models/mine", "with the default preset qwen2.5-0.5b's sizes"),
        ("qwen2.5-7b", "/models/mine", "qwen2.5-7b", "/models/mine", "with preset qwen2.5-7b's sizes (MODEL="),
        ("qwen2.5-7b", "qwen/qwen2.5-7b-instruct", "qwen2.5-7b", "qwen/qwen2.5-7b-instruct", "qwen2.5-7b's sizes"),
    ],
)
def test_model_picks_the_preset_and_base_model_may_replace_its_model(model, base, preset, loads, why):
    chosen, model_id, reason = model_presets.choose(model, base)
    assert (chosen.name, model_id) == (preset, loads)
    assert why in reason


def test_an_unknown_preset_or_two_presets_models_are_refused():
    with pytest.raises(model_presets.PresetError) as unknown:
        model_presets.choose("qwen2.5-14b", "")
    assert "the presets: qwen2.5-0.5b, qwen2.5-1.5b, qwen2.5-3b, qwen2.5-7b (verl_configs/models/)" in str(
        unknown.value
    )
    with pytest.raises(
        model_presets.PresetError, match="BASE_MODEL=Qwen/Qwen2.5-0.5B-Instruct is preset qwen2.5-0.5b"
    ):
        model_presets.choose("qwen2.5-7b", "Qwen/Qwen2.5-0.5B-Instruct")  # an old .env's BASE_MODEL
    assert model_presets.resolve("qwen2.5-1.5b") == "Qwen/Qwen2.5-1.5B-Instruct"
    assert model_presets.resolve("/models/x") == "/models/x" and model_presets.preset_for("/models/x") is None


def test_the_setup_job_downloads_what_model_and_base_model_choose():
    """`python -m scripts.lib.model_presets`, as services/verl/prefetch.sh runs it."""

    def run(**env: str) -> subprocess.CompletedProcess:
        clean = {k: v for k, v in os.environ.items() if k not in ("MODEL", "BASE_MODEL")} | env
        cmd = [sys.executable, "-m", "scripts.lib.model_presets"]
        return subprocess.run(cmd, cwd=REPO, env=clean, capture_output=True, text=True, timeout=60)

    assert run().stdout == "Qwen/Qwen2.5-0.5B-Instruct\n"
    assert run(MODEL="qwen2.5-7b").stdout == "Qwen/Qwen2.5-7B-Instruct\n"
    refused = run(MODEL="qwen2.5-9b")
    assert refused.returncode == 2 and "unknown model preset" in refused.stderr and refused.stdout == ""
    assert "scripts.lib.model_presets" in (REPO / "services" / "verl" / "prefetch.sh").read_text()


def test_evaluation_reports_the_presets_model_as_base(tmp_path):
    assert run_all.resolve_model("base", {"MODEL": "qwen2.5-3b"}, tmp_path) == "Qwen/Qwen2.5-3B-Instruct"
    assert run_all.resolve_model("base", {}, tmp_path) == "Qwen/Qwen2.5-0.5B-Instruct"
    assert run_all.resolve_model("base", {"BASE_MODEL": str(tmp_path)}, tmp_path) == str(tmp_path)
    with pytest.raises(run_all.Skip, match="unknown model preset"):
        run_all.resolve_model("base", {"MODEL": "llama"}, tmp_path)


# --- the RL launcher -----------------------------------------------------------------------------------


def knobs(tmp_path: Path, model_path: Path | str, **extra: str) -> dict[str, str]:
    """The environment run_rl.sh passes on (the launcher reads nothing else)."""
    return {
        "MODEL_PATH": str(model_path),
        "DATA_DIR": str(tmp_path / "data"),
        "CHECKPOINT_DIR": str(tmp_path / "ckpt"),
        "RAY_TMPDIR": str(tmp_path / "no-ray"),
        **extra,
    }


def composed(tmp_path, tiny_model_dir, algo: str, *user: str, **env: str):
    settings = rl_launch.Settings.from_env(algo, knobs(tmp_path, tiny_model_dir, **env))
    overrides, cfg, problems = rl_launch.build(settings, list(user))
    return settings, overrides, cfg, {p.key: p.message for p in problems}


# Per preset and GPU count: does PPO (actor, critic, reference, vLLM: the most roles) fit? The estimator's verdict.
FITS = {
    (name, gpus): not (name == "qwen2.5-7b" and gpus == 1) and (name, gpus) != ("qwen2.5-3b", 1)
    for name in PRESETS
    for gpus in (1, 4)
}


@pytest.mark.parametrize(("name", "gpus"), sorted(FITS))
def test_each_presets_values_reach_the_config_and_its_memory_is_estimated_per_role(
    name, gpus, tmp_path, tiny_model_dir
):
    settings, overrides, cfg, problems = composed(tmp_path, tiny_model_dir, "ppo", MODEL=name, N_GPUS=str(gpus))
    preset = model_presets.preset(name)
    assert settings.preset == name and settings.model == str(tiny_model_dir)  # the preset's sizes, any weights
    for key, value in rl_config.leaves(preset.rl):  # after the launcher's own, before the user's
        assert OmegaConf.select(cfg, key) == value, key
        assert f"++{key}={rl_launch.hydra_str(value)}" in overrides
    assert ("memory" not in problems) == FITS[name, gpus], problems.get("memory")
    if not FITS[name, gpus]:
        assert re.search(
            rf"preset {name} on {gpus} x H100 80GB needs ~\d+\.\d GiB per GPU at its peak", problems["memory"]
        )
        return
    out = rl_launch.summary(settings, cfg, "<reward>", ("resolved", tmp_path / "x.yaml"))
    assert f"preset      {name}: {preset.path} (MODEL={name})" in out
    assert f"memory      estimate per GPU, {gpus} x H100 80GB, {name}'s shapes (scripts/rl/memory.py)" in out
    for role, says in [
        ("actor", "GiB to train: weights+grads+Adam"),
        ("critic", "GiB to train: weights+grads+Adam"),
        ("reference", "GiB for its log-probs"),
        ("vLLM", "GiB while generating (gpu_memory_utilization 0.5)"),
        ("peak", "GiB of 79.6 in"),
    ]:
        assert re.search(rf"^    {role:<10}\d+\.\d {re.escape(says)}", out, re.M), (role, out)
    assert out.count("fits") == 1


def test_grpo_has_no_critic_line_and_cpu_no_estimate(tmp_path, tiny_model_dir):
    settings, _, cfg, problems = composed(tmp_path, tiny_model_dir, "grpo", MODEL="qwen2.5-3b", N_GPUS="1")
    out = rl_launch.summary(settings, cfg, "<reward>", ("resolved", tmp_path / "x.yaml"))
    assert "    actor" in out and "    reference" in out and "    critic" not in out and not problems
    settings, _, cfg, problems = composed(tmp_path, tiny_model_dir, "grpo", MODEL="qwen2.5-7b", N_GPUS="0")
    assert "memory" not in problems  # N_GPUS=0 trains on CPU: no GPU to fill
    assert "  memory      no GPU estimate on CPU" in rl_launch.summary(settings, cfg, "<r>", ("resolved", tmp_path))


def test_a_preset_that_cannot_fit_is_refused_by_the_dry_run_with_the_numbers(tmp_path, tiny_model_dir):
    """`MODEL=qwen2.5-7b N_GPUS=2 bash scripts/run_rl.sh grpo --dry-run`: the real script, refused in about a second
    (before verl is imported), with each role's numbers and what to change."""
    shell = ("MODEL", "BASE_MODEL", "N_GPUS", "NNODES", "EXPERIMENT", "REWARD", "RAY_ADDRESS")  # not the developer's
    env = {k: v for k, v in os.environ.items() if k not in shell}
    env |= knobs(tmp_path, tiny_model_dir, MODEL="qwen2.5-7b", N_GPUS="2", PYTHON=sys.executable)
    cmd = ["bash", str(REPO / "scripts" / "run_rl.sh"), "grpo", "--dry-run"]
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    error = next(line for line in result.stderr.splitlines() if line.startswith("error: memory:"))
    assert "preset qwen2.5-7b on 2 x H100 80GB needs ~86.4 GiB per GPU at its peak, over the 79.6 GiB" in error
    assert "in generation (vLLM 39.8 + actor kept 42.6 + overhead 4.0): does NOT fit" in error
    assert "actor: 81.8 GiB to train: weights+grads+Adam 56.7" in error and " vLLM: 39.8 GiB while generating" in error
    assert "To fit: offload the actor and critic between phases" in error  # the peak is generation: offload helps
    assert not (tmp_path / "ckpt" / "dry_run_config.yaml").exists()


def test_qwen_7b_on_one_gpu_is_refused_by_the_launch_as_by_the_dry_run(capsys, monkeypatch, tmp_path, tiny_model_dir):
    for var, value in knobs(tmp_path, tiny_model_dir, MODEL="qwen2.5-7b", N_GPUS="1").items():
        monkeypatch.setenv(var, value)
    for var in ("RAY_ADDRESS", "BASE_MODEL", "NNODES", "EXPERIMENT", "REWARD"):
        monkeypatch.delenv(var, raising=False)
    for dry_run in (["--dry-run"], []):  # the same build(): refused before any preflight, data prep or MLflow
        assert rl_launch.main(["--algo", "ppo", *dry_run]) == 2
        err = capsys.readouterr().err
        assert "error: memory: preset qwen2.5-7b on 1 x H100 80GB needs ~207.4 GiB per GPU" in err
        assert "To fit: use more GPUs (N_GPUS) to shard its 16 B/param" in err


def test_a_user_override_wins_over_the_preset_and_the_estimate_follows(tmp_path, tiny_model_dir):
    """GRPO with qwen2.5-7b on 2 GPUs does not fit as the preset has it; offload and smaller budgets make it."""
    ar = "actor_rollout_ref"
    user = [
        f"{ar}.actor.fsdp_config.param_offload=true",
        f"{ar}.actor.fsdp_config.optimizer_offload=true",
        f"{ar}.actor.ppo_max_token_len_per_gpu=8192",
        f"{ar}.rollout.log_prob_max_token_len_per_gpu=16384",
        f"{ar}.ref.log_prob_max_token_len_per_gpu=16384",
        f"{ar}.rollout.gpu_memory_utilization=0.4",
    ]
    settings, overrides, cfg, problems = composed(
        tmp_path, tiny_model_dir, "grpo", *user, MODEL="qwen2.5-7b", N_GPUS="2"
    )
    assert overrides.index(f"++{ar}.rollout.gpu_memory_utilization=0.5") < overrides.index(user[-1])
    assert OmegaConf.select(cfg, f"{ar}.rollout.gpu_memory_utilization") == 0.4
    assert OmegaConf.select(cfg, f"{ar}.actor.fsdp_config.param_offload") is True
    assert problems == {}
    estimate = rl_launch.memory_estimate(settings, cfg)
    assert estimate.fits and estimate.peak.name == "actor update" and round(estimate.peak.gib, 1) == 73.3


def test_model_and_base_model_together_are_said_in_the_summary(tmp_path, monkeypatch, tiny_model_dir):
    monkeypatch.setattr(rl_launch, "SFT_MANIFEST", tmp_path / "no-manifest.json")
    env = knobs(tmp_path, "", MODEL="qwen2.5-1.5b", BASE_MODEL=str(tiny_model_dir), N_GPUS="4")
    settings = rl_launch.Settings.from_env("grpo", env)
    assert (settings.model, settings.preset) == (str(tiny_model_dir), "qwen2.5-1.5b")
    _, cfg, _ = rl_launch.build(settings, [])
    out = rl_launch.summary(settings, cfg, "<reward>", ("resolved", tmp_path / "x.yaml"))
    said = f"BASE_MODEL={tiny_model_dir} with preset qwen2.5-1.5b's sizes (MODEL=qwen2.5-1.5b)"
    assert f"(no SFT manifest at {tmp_path / 'no-manifest.json'}: the base model ({said}))" in out
    assert f"preset      qwen2.5-1.5b: {model_presets.preset('qwen2.5-1.5b').path} ({said})" in out
    assert settings.experiment == f"grpo-{tiny_model_dir.name}"
    with pytest.raises(LaunchError, match="BASE_MODEL=Qwen/Qwen2.5-0.5B-Instruct is preset qwen2.5-0.5b's model"):
        rl_launch.Settings.from_env("grpo", env | {"MODEL": "qwen2.5-7b", "BASE_MODEL": "Qwen/Qwen2.5-0.5B-Instruct"})


def test_an_unknown_model_is_refused_listing_the_presets(capsys, monkeypatch, tmp_path, tiny_model_dir):
    for var, value in knobs(tmp_path, tiny_model_dir, MODEL="qwen2.5-05b").items():
        monkeypatch.setenv(var, value)
    assert rl_launch.main(["--algo", "grpo", "--dry-run"]) == 1
    out = capsys.readouterr()
    assert "error: MODEL='qwen2.5-05b': unknown model preset; the presets: qwen2.5-0.5b, qwen2.5-1.5b" in out.err
    assert "model:" not in out.out and not (tmp_path / "ckpt").exists()


def test_an_sft_checkpoint_of_another_preset_is_refused(tmp_path, monkeypatch, tiny_model_dir):
    manifest = tmp_path / "latest.json"
    manifest.write_text(json.dumps({"path": str(tiny_model_dir), "base_model": "Qwen/Qwen2.5-0.5B-Instruct"}))
    monkeypatch.setattr(rl_launch, "SFT_MANIFEST", manifest)
    env = knobs(tmp_path, "", MODEL="qwen2.5-3b")
    with pytest.raises(LaunchError, match="names an SFT of Qwen/Qwen2.5-0.5B-Instruct .* set MODEL=qwen2.5-0.5b"):
        rl_launch.Settings.from_env("ppo", env)
    settings = rl_launch.Settings.from_env("ppo", env | {"MODEL": "qwen2.5-0.5b"})  # the SFT's own preset
    assert settings.model == str(tiny_model_dir) and settings.model_reason.startswith("latest SFT checkpoint")


@pytest.mark.slow
@pytest.mark.parametrize("algo", algorithms())
@pytest.mark.parametrize("name", PRESETS)
def test_every_algorithm_dry_runs_with_every_preset_through_verls_own_checks(
    name, algo, capsys, monkeypatch, tmp_path, tiny_model_dir
):
    """`MODEL=<preset> bash scripts/run_rl.sh <algo> --dry-run` for every pair: the whole dry run (verl's
    validate_config and reward loader included) on 4 GPUs, the reference hardware, fits and keeps the preset."""
    for var, value in knobs(tmp_path, tiny_model_dir, MODEL=name, N_GPUS="4").items():
        monkeypatch.setenv(var, value)
    for var in ("RAY_ADDRESS", "BASE_MODEL", "NNODES", "EXPERIMENT", "REWARD"):
        monkeypatch.delenv(var, raising=False)
    assert rl_launch.main(["--algo", algo, "--dry-run"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert f"verl {algo.upper()} on GSM8K, dry run" in out
    assert "    peak      " in out and ": fits" in out and f"{name}'s shapes" in out
    resolved = OmegaConf.load(tmp_path / "ckpt" / "dry_run_config.yaml")
    assert all(OmegaConf.select(resolved, k) == v for k, v in rl_config.leaves(model_presets.preset(name).rl))


# --- the estimator on its own ----------------------------------------------------------------------------


def test_the_estimate_follows_the_formula_in_its_docstring():
    preset = model_presets.preset("qwen2.5-0.5b")
    arch, ar = preset.arch, "actor_rollout_ref.rollout"

    def estimate(*overrides: str, arch=arch, gpus: int = 4) -> memory.Estimate:
        values = [f"++{k}={json.dumps(v)}" for k, v in rl_config.leaves(preset.rl)]
        return memory.estimate(rl_config.compose_config("ppo_gsm8k", [*values, *overrides]), arch, gpus)

    phases = {p.name: p for p in estimate().phases}
    kept = 12 * arch.params / 4 / 2**30  # fp32 weights + Adam, sharded over 4 GPUs (gradients are freed)
    states = 16 * arch.params / 4 / 2**30  # ... and the gradients while the role trains
    act = 16384 * (arch.layers * 2 * arch.hidden + memory.act_layer_bytes(arch)) / 2**30  # checkpointed
    logits = 16384 * arch.vocab * 8 / 2**30
    assert phases["actor update"].parts == {
        "actor": pytest.approx(states + act + logits),
        "critic kept": pytest.approx(kept),
        "overhead": memory.OVERHEAD_GIB,
    }
    assert phases["generation"].parts == {
        "vLLM": pytest.approx(0.5 * memory.GPU_GIB),
        "actor kept": pytest.approx(kept),
        "critic kept": pytest.approx(kept),
        "overhead": memory.OVERHEAD_GIB,
    }
    assert set(phases["reference log-probs"].parts) == {
        "activations",
        "logits",
        "actor kept",
        "critic kept",
        "overhead",
    }
    # Offload empties what a role keeps; without sleep mode vLLM keeps its share through every phase.
    offloaded = estimate("++critic.fsdp.param_offload=true", "++critic.fsdp.optimizer_offload=true")
    assert offloaded.phases[0].parts["critic kept"] == 0 and "critic kept" not in offloaded.phases[0].explain()
    assert all("vLLM" in p.parts for p in estimate(f"++{ar}.enable_sleep_mode=false").phases)
    # Weights that leave vLLM no KV cache: refused whatever the sum.
    starved = estimate(f"++{ar}.gpu_memory_utilization=0.1", arch=model_presets.preset("qwen2.5-7b").arch, gpus=8)
    assert not starved.fits and "leave no KV cache" in starved.problems[0]


# --- SFT ----------------------------------------------------------------------------------------------


def test_sft_takes_the_size_dependent_knobs_from_the_preset_and_explicit_values_win():
    cfg = sft.SFTRunConfig.from_notebook(model="qwen2.5-1.5b")
    preset = model_presets.preset("qwen2.5-1.5b")
    assert cfg.model_path == "Qwen/Qwen2.5-1.5B-Instruct" and cfg.preset == preset
    assert (cfg.per_device_train_batch_size, cfg.learning_rate) == (8, 7e-6)
    assert {k: getattr(cfg, k) for k in sft.PRESET_KNOBS} == preset.sft
    explicit = sft.SFTRunConfig.from_notebook(model="qwen2.5-1.5b", per_device_train_batch_size=2, learning_rate=3e-5)
    assert (explicit.per_device_train_batch_size, explicit.learning_rate) == (2, 3e-5)
    assert explicit.gradient_checkpointing is True  # the one left None: the preset's
    default = sft.SFTRunConfig.from_notebook()
    assert default.model == "qwen2.5-0.5b" and default.model_path == "Qwen/Qwen2.5-0.5B-Instruct"
    assert (default.per_device_train_batch_size, default.learning_rate, default.gradient_checkpointing) == (
        8,
        1e-5,
        False,
    )
    assert sft.SFTRunConfig.from_notebook(model="Qwen/Qwen2.5-3B-Instruct").per_device_train_batch_size == 4  # by id
    assert sft.SFTRunConfig.from_notebook(model="").model == "qwen2.5-0.5b"  # `-p model ""`: unset, the default
    folder = sft.SFTRunConfig.from_notebook(model="/models/mine")  # a folder: the default preset's sizes
    assert folder.model_path == "/models/mine" and folder.preset.name == model_presets.DEFAULT_PRESET
    assert folder.params()["sft.learning_rate"] == 1e-5  # MLflow gets the values the run used


def test_sft_keeps_the_knobs_old_name_for_papermill_callers():
    """scripts/speedrun.sh and older callers pass `-p model_path X`: it sets `model`."""
    by_old_name = sft.SFTRunConfig.from_notebook(model_path="qwen2.5-3b")
    assert by_old_name.model == "qwen2.5-3b" and by_old_name.gradient_accumulation_steps == 2
    namespace = {**sft.notebook_parameters(), "model_path": "Qwen/Qwen2.5-7B-Instruct"}  # papermill's injected cell
    assert sft.SFTRunConfig.from_namespace(namespace).preset.name == "qwen2.5-7b"


# --- docs/rl.md --------------------------------------------------------------------------------------------


def test_the_readmes_fits_table_is_the_estimators():
    """The README's "what fits" table is what `fits_table()` prints; on a mismatch, paste the table below there."""
    text = (REPO / "README.md").read_text()
    found = re.search(r"<!-- fits-table:[^>]*-->\n(.*?)\n<!-- /fits-table -->", text, re.S)
    assert found, "README.md has no fits-table markers"
    table = rl_launch.fits_table()
    assert found.group(1) == table, f"the README's table is stale; the estimator's:\n{table}"
    assert "| `qwen2.5-7b` | ppo | **no**" in table and "| `qwen2.5-0.5b` | ppo | fits" in table
