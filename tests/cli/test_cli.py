"""The typer CLI: results on stdout, JSON mode, inspect's checks, demo."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from fastmtp_export.cli import app


def _export(runner: CliRunner, src: Path, out: Path, *extra: str):
    return runner.invoke(app, ["export", str(src), "--out", str(out), *extra])


def test_export_prints_the_artifact_path(
    runner: CliRunner, tiny_source: Path, tmp_path: Path
) -> None:
    r = _export(runner, tiny_source, tmp_path / "draft")
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == str((tmp_path / "draft").absolute())
    assert "--speculative-draft-model-path" in r.stderr  # the hint is a log line, not a result


def test_export_json(runner: CliRunner, tiny_source: Path, tmp_path: Path) -> None:
    r = _export(runner, tiny_source, tmp_path / "draft", "--json", "--dtype", "fp32")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["dtype"] == "float32"
    assert doc["num_parameters"] == 45504
    assert set(doc["files"]) == {"config.json", "model.safetensors"}
    cmd = doc["sglang_command"]
    assert cmd[cmd.index("--speculative-draft-model-path") + 1] == doc["out"]
    assert cmd[cmd.index("--speculative-num-steps") + 1] == "3"
    assert cmd[cmd.index("--speculative-eagle-topk") + 1] == "1"
    assert cmd[cmd.index("--speculative-num-draft-tokens") + 1] == "4"


def test_inspect_ok(runner: CliRunner, tiny_source: Path, tmp_path: Path) -> None:
    _export(runner, tiny_source, tmp_path / "draft")
    r = runner.invoke(app, ["inspect", str(tmp_path / "draft")])
    assert r.exit_code == 0, r.output
    assert "OK" in r.stdout.splitlines()[0]
    assert "2/2 files checked" in r.stdout
    assert re.search(r"model\.mtp_layers\.0\.input_proj\.weight +BF16 \[64, 128\]", r.stdout)
    assert "--speculative-algorithm EAGLE" in r.stdout
    doc = json.loads(runner.invoke(app, ["inspect", str(tmp_path / "draft"), "--json"]).stdout)
    assert doc["ok"] is True
    assert len(doc["tensors"]) == 16


def test_inspect_detects_a_changed_byte(
    runner: CliRunner, tiny_source: Path, tmp_path: Path
) -> None:
    out = tmp_path / "draft"
    _export(runner, tiny_source, out)
    f = out / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))
    r = runner.invoke(app, ["inspect", str(out)])
    assert r.exit_code == 1
    assert "model.safetensors sha256 differs" in r.stderr
    assert "INVALID" in r.stdout


def test_inspect_detects_contract_and_config_problems(
    runner: CliRunner, tiny_source: Path, tmp_path: Path
) -> None:
    out = tmp_path / "draft"
    _export(runner, tiny_source, out)
    cfg = json.loads((out / "config.json").read_text())
    cfg["num_nextn_predict_layers"] = 36
    cfg["hidden_size"] = 32
    (out / "config.json").write_text(json.dumps(cfg))
    r = runner.invoke(app, ["inspect", str(out), "--no-hashes", "--json"])
    assert r.exit_code == 1
    problems = json.loads(r.stdout)["problems"]
    assert any("config.json has" in p for p in problems)  # size no longer matches
    assert any("num_nextn_predict_layers is 36" in p for p in problems)
    assert any(
        "input_proj.weight has shape [64, 128], config implies [32, 64]" in p for p in problems
    )


def test_inspect_missing_file_and_not_an_artifact(
    runner: CliRunner, tiny_source: Path, tmp_path: Path
) -> None:
    out = tmp_path / "draft"
    _export(runner, tiny_source, out)
    (out / "model.safetensors").unlink()
    r = runner.invoke(app, ["inspect", str(out)])
    assert r.exit_code == 1
    assert "model.safetensors is listed in fastmtp.json but missing" in r.stderr
    r = runner.invoke(app, ["inspect", str(tiny_source)])
    assert r.exit_code == 1
    assert r.stderr.startswith("error: ")
    assert "no fastmtp.json" in r.stderr


def test_demo_runs_the_whole_job(runner: CliRunner, tmp_path: Path) -> None:
    r = runner.invoke(app, ["demo", "--cache-dir", str(tmp_path), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    ev = doc["evaluation"]
    assert ev["lossless"] is True
    tau = {
        (mode, lang): st["accept_length"]
        for mode, res in ev["modes"].items()
        for lang, st in res["languages"].items()
    }
    for lang in ("en", "zh"):  # the oracle accepts every draft its vocabulary holds
        assert tau["full", lang] == 4.0
        assert tau["auto", lang] == 4.0
        assert tau["union", lang] == 4.0
    assert tau["en", "en"] == 4.0
    assert tau["en", "zh"] < 1.1  # one static map loses the other language
    coverage = doc["coverage"]["128"]
    assert coverage["en"]["en"] == coverage["zh"]["zh"] == 1.0  # the maps came from the corpora
    draft = tmp_path / "demo" / "draft"
    assert {p.name for p in draft.glob("freq_*.pt")} == {
        "freq_en_128.pt",
        "freq_zh_128.pt",
        "freq_union_256.pt",
    }
    text = runner.invoke(app, ["demo", "--cache-dir", str(tmp_path)]).stdout
    assert "The static en map loses every Chinese draft" in text
    assert text.rstrip().splitlines()[-1].strip().startswith("python -m sglang.launch_server")


def test_version_and_help_do_not_import_torch() -> None:
    code = (
        "import sys; from fastmtp_export.cli import app; "
        "from typer.testing import CliRunner; r = CliRunner().invoke(app, ['--help']); "
        "assert r.exit_code == 0 and 'export' in r.stdout; "
        "bad = [m for m in ('torch', 'pydantic', 'safetensors') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    out = subprocess.run(
        [sys.executable, "-m", "fastmtp_export", "--version"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert out.startswith("fastmtp-export ")


def test_families_lists_every_reader_and_what_sglang_serves(runner: CliRunner) -> None:
    from fastmtp_export.checkpoints.readers import READERS

    r = runner.invoke(app, ["families", "--json"])
    assert r.exit_code == 0, r.output
    rows = {row["family"]: row for row in json.loads(r.stdout)}
    assert rows.keys() == READERS.keys()
    assert rows["mimo"]["sglang_class"] == "MiMoMTP"
    assert rows["mimo"]["token_maps"]
    assert rows["mimo"]["eval_and_train"]
    assert rows["deepseek_v3"]["token_maps"]
    # every family served with maps has a reference head; the multi-layer ones do not
    assert all(row["eval_and_train"] == row["token_maps"] for row in rows.values())
    assert not rows["mimo_v2"]["token_maps"]
    assert rows["mimo_v2"]["multi_layer_eagle"]
    assert "multi-layer EAGLE" in rows["step3p5"]["no_maps_reason"]
    # vLLM: every family has a class (test_vllm_contract.py loads each); NextN needs --for
    assert all(row["vllm_class"] for row in rows.values())
    assert rows["deepseek_v3"]["vllm_class"] == "DeepSeekMTP"
    assert [f for f, row in rows.items() if row["vllm_needs_for_vllm"]] == [
        "deepseek_v3",
        "glm4_moe",
    ]
    text = runner.invoke(app, ["families"]).stdout
    assert "vLLM DeepSeekMTP (--for vllm)" in text
    assert "qwen3_5" in text
    assert "full vocabulary only" in text
    assert "eval, train" in text


def test_demo_without_the_eval_extra_fails_before_any_work(tmp_path: Path) -> None:
    """A pip install without ``[eval]``: one line naming the extra, and nothing built
    (it used to build maps and export for a minute, then fail)."""
    code = (
        "import sys; sys.modules['transformers'] = None; "  # import transformers -> ImportError
        "from fastmtp_export.cli import main; "
        f"sys.argv = ['fastmtp-export', 'demo', '--cache-dir', {str(tmp_path)!r}]; main()"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert r.returncode == 1, r.stderr
    assert r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("error: ")
    assert "fastmtp-export[eval]" in r.stderr
    assert not (tmp_path / "demo").exists()


def test_make_demo_installs_the_eval_extra_before_running(tmp_path: Path) -> None:
    """``make demo`` on a fresh clone (an empty venv path): the eval extra is installed
    before the demo runs (the README's first command failed on a fresh machine without it)."""
    root = Path(__file__).resolve().parents[2]
    r = subprocess.run(
        ["make", "-n", "demo", f"VENV={tmp_path / 'venv'}"],
        cwd=root, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    run = next(i for i, line in enumerate(lines) if line.rstrip().endswith("fastmtp-export demo"))
    installs = [line for line in lines[:run] if "pip install" in line]
    assert any(re.search(r"-e '?\.\[[^]]*eval", line) for line in installs), lines


def test_cli_reference_lists_every_command() -> None:
    """docs/cli.md is generated from the live command tree: a command added later (distill,
    train, families were once missing) cannot be left out."""
    import importlib.util

    import typer

    script = Path(__file__).resolve().parents[2] / "scripts" / "gen_docs.py"
    spec = importlib.util.spec_from_file_location("gen_docs", script)
    assert spec is not None
    assert spec.loader is not None
    gen_docs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen_docs)
    root = typer.main.get_command(app)
    names = set(root.list_commands(root.context_class(root)))  # type: ignore[attr-defined]
    paths = {" ".join(p) for p in gen_docs.command_paths()}
    assert names <= paths
    assert {"distill", "train", "families", "token-map", "token-map build"} <= paths
    doc = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text()
    for path in paths:
        assert f"## `{' '.join(['fastmtp-export', path]).strip()}`" in doc
