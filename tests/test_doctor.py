"""``unite doctor``: every check on a healthy set-up and on the broken ones users meet. Nothing touches the network:
the Hub check runs in offline mode, or with huggingface_hub's request replaced."""

from __future__ import annotations

import json
import re
import shutil
import sys
import threading
import time
from importlib import metadata
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from unite import doctor
from unite.cli.main import main
from unite.doctor import (
    Status,
    check_flash_attention,
    check_hub,
    check_model,
    check_packages,
    check_video_decoding,
    has_errors,
)
from unite.models.loading import weights_fingerprint

MODEL_CHECKS = ["checkpoint", "config", "weights", "fingerprint", "tokenizer", "encoding settings"]
#: config.json keys of the vision special tokens and the tokens they name (docs/reference.md section 1).
VISION_TOKEN_KEYS = {
    "vision_start_token_id": "<|vision_start|>",
    "vision_end_token_id": "<|vision_end|>",
    "image_token_id": "<|image_pad|>",
    "video_token_id": "<|video_pad|>",
}
LINE = re.compile(r"^(ok|info|warning|error) +[^ ].*: ")


def by_name(checks: list) -> dict:
    return {check.name: check for check in checks}


def copy_checkpoint(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def rewrite_weights(folder: Path, drop: str | None = None, add: dict | None = None) -> None:
    state = load_file(str(folder / "model.safetensors"))
    if drop is not None:
        del state[drop]
    state.update(add or {})
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})


def run_cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    status = main(["doctor", *argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def fake_version(monkeypatch: pytest.MonkeyPatch, **versions: str | None) -> None:
    """Make ``importlib.metadata.version`` answer ``versions`` (None: not installed) and the truth otherwise."""
    real = metadata.version

    def version(name: str) -> str:
        key = name.replace("-", "_")
        if key in versions:
            if versions[key] is None:
                raise metadata.PackageNotFoundError(name)
            return versions[key]
        return real(name)

    monkeypatch.setattr(metadata, "version", version)


# ------------------------------------------------------------------------------------------------- checkpoint


def test_tiny_checkpoint_is_all_ok(legacy_checkpoint: Path) -> None:
    checks = check_model(legacy_checkpoint)
    assert [check.name for check in checks] == MODEL_CHECKS
    assert all(check.status is Status.OK for check in checks), [check.line() for check in checks]
    found = by_name(checks)
    config = json.loads((legacy_checkpoint / "config.json").read_text())
    hidden = config["hidden_size"]  # a flat 4.47.1 config: the embedding is the text hidden state
    assert f"hidden size {hidden} -> {hidden}-d embeddings" in found["config"].message
    assert "UniteQwen2VL" in found["config"].message
    weights = found["weights"]
    assert "transformers-4.47 layout" in weights.message
    assert weights.details["tensors"] == len(load_file(str(legacy_checkpoint / "model.safetensors")))
    assert weights.details["missing"] == weights.details["unexpected"] == []
    # the fingerprint an index records for these weights
    assert found["fingerprint"].details["sha256"] == weights_fingerprint(legacy_checkpoint)
    for key, token in VISION_TOKEN_KEYS.items():
        assert f"{token}={config[key]}" in found["tokenizer"].message
    settings = found["encoding settings"]
    assert "released defaults" in settings.message
    # the released defaults of docs/encoding.md: 256*28*28 to 1280*28*28 pixels, 1 fps, 4 to 32 frames, 360*420
    for expected in (
        f"image_min_pixels={256 * 28 * 28}",
        f"image_max_pixels={1280 * 28 * 28}",
        "video_fps=1.0",
        "video_min_frames=4",
        "video_max_frames=32",
        f"video_max_pixels={360 * 420}",
        "position_scheme=sequential",
    ):
        assert expected in settings.message


def test_current_layout_and_recorded_settings(current_checkpoint: Path, tmp_path: Path) -> None:
    folder = copy_checkpoint(current_checkpoint, tmp_path / "current")
    (folder / "unite_config.json").write_text(json.dumps({"video_frames": 16, "video_max_pixels": 240 * 320}))
    found = by_name(check_model(folder))
    assert found["weights"].status is Status.OK
    assert "transformers-5 layout (current)" in found["weights"].message
    settings = found["encoding settings"]
    assert "from unite_config.json" in settings.message
    assert "video_frames=16" in settings.message and f"video_max_pixels={240 * 320}" in settings.message


def test_missing_tensor_is_named(legacy_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = copy_checkpoint(legacy_checkpoint, tmp_path / "missing")
    rewrite_weights(folder, drop="model.norm.weight")  # the final norm, named as the released files name it
    weights = by_name(check_model(folder))["weights"]
    assert weights.status is Status.ERROR
    assert weights.details["missing"] == ["model.norm.weight"] and weights.details["unexpected"] == []
    assert "1 missing: model.norm.weight" in weights.message
    status, out, err = run_cli(capsys, "--model", str(folder))
    assert status == 1
    assert any(line.startswith("error   weights:") and "model.norm.weight" in line for line in out.splitlines())
    assert "Traceback" not in out + err


def test_unexpected_tensor_is_named(legacy_checkpoint: Path, tmp_path: Path) -> None:
    folder = copy_checkpoint(legacy_checkpoint, tmp_path / "unexpected")
    rewrite_weights(folder, add={"visual.merger.extra.weight": torch.zeros(2, 2)})
    weights = by_name(check_model(folder))["weights"]
    assert weights.status is Status.ERROR
    assert weights.details["unexpected"] == ["visual.merger.extra.weight"] and weights.details["missing"] == []
    assert "1 unexpected: visual.merger.extra.weight" in weights.message


def test_shape_mismatch_is_named(legacy_checkpoint: Path, tmp_path: Path) -> None:
    folder = copy_checkpoint(legacy_checkpoint, tmp_path / "shape")
    norm = load_file(str(folder / "model.safetensors"))["model.norm.weight"]
    rewrite_weights(folder, add={"model.norm.weight": torch.zeros(norm.shape[0] + 1)})
    weights = by_name(check_model(folder))["weights"]
    assert weights.status is Status.ERROR
    assert f"model.norm.weight ({norm.shape[0] + 1},) vs ({norm.shape[0]},)" in weights.message


def test_missing_tokenizer_file(legacy_checkpoint: Path, tmp_path: Path) -> None:
    folder = copy_checkpoint(legacy_checkpoint, tmp_path / "no-tokenizer")
    (folder / "tokenizer.json").unlink()
    found = by_name(check_model(folder))
    assert found["tokenizer"].status is Status.ERROR
    assert "no tokenizer.json" in found["tokenizer"].message
    assert found["weights"].status is Status.OK  # one broken part does not hide the others


def test_tokenizer_ids_must_match_config(legacy_checkpoint: Path, tmp_path: Path) -> None:
    folder = copy_checkpoint(legacy_checkpoint, tmp_path / "ids")
    config = json.loads((folder / "config.json").read_text())
    image_pad = config["image_token_id"]
    config["image_token_id"] = image_pad + 1
    (folder / "config.json").write_text(json.dumps(config))
    tokenizer = by_name(check_model(folder))["tokenizer"]
    assert tokenizer.status is Status.ERROR
    assert f"<|image_pad|> is {image_pad} in the tokenizer but image_token_id is {image_pad + 1}" in tokenizer.message


def test_adapter_reports_its_base(legacy_checkpoint: Path, tmp_path: Path) -> None:
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    config = {"base_model_name_or_path": str(legacy_checkpoint), "peft_type": "LORA", "r": 8, "lora_alpha": 16}
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    save_file({"base_model.model.lora_A.weight": torch.zeros(8, 4)}, str(adapter / "adapter_model.safetensors"))
    checks = check_model(adapter)
    found = by_name(checks)
    assert found["adapter"].status is Status.OK
    assert f"(r=8, alpha=16) on base {legacy_checkpoint}" in found["adapter"].message
    assert [name for name in found if name.startswith("base ")] == [f"base {name}" for name in MODEL_CHECKS]
    assert not has_errors(checks), [check.line() for check in checks]
    base = weights_fingerprint(legacy_checkpoint)
    assert found["fingerprint"].details["sha256"] == weights_fingerprint(adapter, base_fingerprint=base)


def test_hub_id_missing_from_the_cache_is_not_downloaded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    (checkpoint,) = check_model("friedrichor/Unite-Base-Qwen2-VL-2B")
    assert checkpoint.status is Status.WARNING
    assert "not in the local Hugging Face cache" in checkpoint.message
    (nowhere,) = check_model(str(tmp_path / "no-such-folder"))
    assert nowhere.status is Status.ERROR and "no-such-folder" in nowhere.message


# ---------------------------------------------------------------------------------------- versions, PyAV


def pyproject_requirement(name: str) -> str:
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    return next(req for req in project["dependencies"] if re.match(rf"{name}\b(?![-_])", req))


def test_version_below_the_requirement_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    requirement = pyproject_requirement("torch")  # torch>=2.5
    fake_version(monkeypatch, torch="2.4.0")
    torch_check = by_name(check_packages())["torch"]
    assert torch_check.status is Status.ERROR
    assert torch_check.message == f"2.4.0 is outside the requirement {requirement} of unite-embed"
    assert torch_check.fix == f"pip install '{requirement}'"
    fake_version(monkeypatch, torch="2.5.0")
    assert by_name(check_packages())["torch"].status is Status.OK


def test_missing_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_version(monkeypatch, av=None, fastapi=None, transformers=None)
    found = by_name(check_packages())
    assert found["PyAV"].line() == (
        "error   PyAV: not installed: pip install 'unite-embed[video]' (video files cannot be read)"
    )
    assert found["transformers"].status is Status.ERROR  # a base dependency
    assert found["fastapi"].status is Status.INFO  # an optional extra
    assert found["fastapi"].fix == "pip install 'unite-embed[serve]' (unite serve cannot run)"


def test_unimportable_pyav(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` now fails, as without PyAV
    pyav = by_name(check_packages())["PyAV"]
    assert pyav.status is Status.ERROR and "cannot be imported" in pyav.message
    assert "pip install 'unite-embed[video]'" in pyav.fix
    video = check_video_decoding()
    assert video.status is Status.ERROR and "pip install 'unite-embed[video]'" in video.fix
    status, out, err = run_cli(capsys)
    assert status == 1
    assert any(line.startswith("error   PyAV:") for line in out.splitlines())
    assert "Traceback" not in out + err


# ------------------------------------------------------------------------------------ devices, video, flash


def test_video_decoding_returns_the_sampled_frames() -> None:
    video = check_video_decoding()
    assert video.status is Status.OK, video.line()
    # 8 frames at 8 fps last 1 s: 1 fps gives 1 frame, raised to the minimum of 4; round(linspace(0, 7, 4))
    assert video.details["expected_frames"] == video.details["decoded_frames"] == [0, 2, 5, 7]
    assert "frames 0, 2, 5, 7" in video.message


def test_flash_attention_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "flash_attn", None)
    on_gpu = check_flash_attention("cuda")
    assert on_gpu.status is Status.WARNING and "pip install flash-attn" in on_gpu.fix
    assert check_flash_attention("cpu").status is Status.INFO


def test_default_device_matches_resolve() -> None:
    checks = by_name(doctor.check_devices())
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    dtype = "float32" if expected == "cpu" else "bfloat16"  # README: bfloat16 on a GPU, float32 on the CPU
    assert checks["default device"].details == {"device": expected, "dtype": dtype}
    assert checks["CPU"].details["torch_threads"] == torch.get_num_threads()


def test_gpu_without_bf16_is_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CUDA machine (faked: no GPU here) whose GPU predates bf16 (compute capability 7.5 < 8, Ampere)."""
    from types import SimpleNamespace

    t4 = SimpleNamespace(name="Tesla T4", total_memory=16 * 2**30, major=7, minor=5)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: t4)
    monkeypatch.setattr(torch.version, "hip", None)
    checks = by_name(doctor.check_devices())
    assert checks["CUDA"].status is Status.OK
    assert "Tesla T4 (16.0 GiB, no native bf16)" in checks["CUDA"].message
    device = checks["default device"]
    assert device.details == {"device": "cuda", "dtype": "bfloat16"}
    assert device.status is Status.WARNING and "float16" in device.fix


# ------------------------------------------------------------------------------------------------------- Hub


@pytest.fixture
def hub_calls(monkeypatch: pytest.MonkeyPatch) -> list:
    """Replace huggingface_hub's HEAD request; the list records each call's (url, timeout)."""
    import huggingface_hub

    calls: list = []
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", lambda url, timeout: calls.append((url, timeout)))
    return calls


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


def test_hub_offline_mode_skips_the_network(hub_calls: list) -> None:
    check = check_hub("friedrichor/Unite-Base-Qwen2-VL-2B")
    assert check.status is Status.INFO and "offline mode is set" in check.message
    assert hub_calls == []


def test_hub_reachable(online: None, hub_calls: list) -> None:
    check = check_hub("friedrichor/Unite-Base-Qwen2-VL-2B", timeout=3.0)
    assert check.status is Status.OK and "reachable" in check.message
    ((url, timeout),) = hub_calls
    assert "friedrichor/Unite-Base-Qwen2-VL-2B" in url and url.endswith("config.json") and timeout == 3.0


def test_hub_timeout_is_a_warning(online: None, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    def timed_out(url: str, timeout: float) -> None:
        raise TimeoutError("timed out")

    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", timed_out)
    check = check_hub()
    assert check.status is Status.WARNING
    assert check.message.startswith("the Hugging Face Hub cannot be reached (offline?)")


def test_hub_check_never_hangs(online: None, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    release = threading.Event()
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", lambda url, timeout: release.wait(30))
    started = time.monotonic()
    try:
        check = check_hub(timeout=0.2)
    finally:
        release.set()
    assert time.monotonic() - started < 2
    assert check.status is Status.WARNING and "no answer within 0.2 s" in check.message


# ---------------------------------------------------------------------------------------- command, exit codes


def test_command_lines_and_exit_status(legacy_checkpoint: Path, capsys: pytest.CaptureFixture) -> None:
    status, out, err = run_cli(capsys, "--model", str(legacy_checkpoint))
    lines = out.splitlines()
    assert status == 0, out
    assert all(LINE.match(line) for line in lines), lines
    for name in MODEL_CHECKS:
        assert any(line.startswith(f"ok      {name}: ") for line in lines), name
    for name in ("unite-embed", "Python", "torch", "transformers", "PyAV", "default device", "video decoding"):
        assert any(re.match(rf"^\w+ +{re.escape(name)}: ", line) for line in lines), name
    assert "Traceback" not in out + err


def test_json_report(legacy_checkpoint: Path, capsys: pytest.CaptureFixture) -> None:
    status, out, _ = run_cli(capsys, "--model", str(legacy_checkpoint), "--json")
    report = json.loads(out)
    assert status == 0 and report["ok"] is True
    assert set(report) == {"ok", "counts", "checks"}
    assert set(report["counts"]) == {"ok", "info", "warning", "error"}
    assert sum(report["counts"].values()) == len(report["checks"])
    for check in report["checks"]:
        assert set(check) == {"name", "status", "message", "fix", "details"}
        assert check["status"] in report["counts"]
    weights = next(check for check in report["checks"] if check["name"] == "weights")
    assert weights["details"]["layout"] == "transformers-4.47" and weights["details"]["missing"] == []


def test_a_crashing_check_becomes_an_error_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    def crash() -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(doctor, "check_video_decoding", crash)
    status, out, err = run_cli(capsys)
    assert status == 1
    assert "error   video decoding: the check itself failed: RuntimeError: boom" in out.splitlines()
    assert "Traceback" not in out + err
    assert any(line.startswith("ok      torch:") for line in out.splitlines())  # the other checks still ran
