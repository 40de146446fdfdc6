"""Export benchmark on a MiMo-7B-shaped synthetic checkpoint (about 2.9 GB).

The checkpoint has the real MTP layer shapes and the real untied ``embed_tokens`` /
``lm_head`` (151680 x 4096 bf16), spread over 3 shards. Each export is timed against
``cp`` of exactly the MTP tensors' bytes, measured in the same run with the same
(warm) page cache, and reported as a ratio because shared machines are noisy. Peak RSS
comes from ``wait4`` on the child process.

Export from a Hub repo id (``--hub``, on by default): the same checkpoint is served by
the test suite's local Hub (tests/hub/fake_hub.py, real HTTP on 127.0.0.1, files read
from disk), and ``export ORG/NAME`` (HTTP ranges: headers and MTP tensors only) is timed
against downloading the whole checkpoint with huggingface_hub's ``snapshot_download``
into a fresh cache, with the bytes the server sent for each. Loopback HTTP is far faster
than a real network, so the byte ratio is the figure that carries over; the time ratio
is a lower bound of the gain.

Usage: python bench/bench_export.py [--workdir DIR] [--repeats N] [--json FILE] [--no-hub]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

from _child import run_child

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fastmtp_export.checkpoints.checkpoint import SourceCheckpoint  # noqa: E402
from fastmtp_export.checkpoints.readers import resolve_reader  # noqa: E402
from fastmtp_export.checkpoints.synthetic import (  # noqa: E402
    MIMO_7B,
    mimo_config,
    write_synthetic_mimo,
)

CLI = [sys.executable, "-m", "fastmtp_export"]


def build_source(workdir: Path) -> Path:
    src = workdir / "mimo7b-synthetic"
    cfg = mimo_config(MIMO_7B)
    if (src / "config.json").exists() and json.loads((src / "config.json").read_text()) == cfg:
        return src
    shutil.rmtree(src, ignore_errors=True)
    t = time.perf_counter()
    write_synthetic_mimo(src, cfg, seed=0, num_shards=3, include_trunk=False)
    print(f"built {src} in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    return src


def mtp_bytes_file(src: Path, workdir: Path) -> tuple[Path, int]:
    """A file holding exactly the MTP tensors' bytes: the ``cp`` baseline's input."""
    ckpt = SourceCheckpoint.open(src)
    plan = resolve_reader(ckpt).plan(ckpt, None)
    path = workdir / "mtp-bytes.bin"
    total = sum(i.nbytes for i in plan.tensors.values())
    if not path.exists() or path.stat().st_size != total:
        with path.open("wb") as out:
            for info in plan.tensors.values():
                with (src / ckpt.weight_map[info.name]).open("rb") as fh:
                    fh.seek(info.begin)
                    out.write(fh.read(info.nbytes))
    return path, total


def warm(paths: list[Path]) -> None:
    """Read files once so every timed run starts from the same warm page cache."""
    for p in paths:
        with p.open("rb") as fh:
            while fh.read(64 << 20):
                pass


def hub_export(src: Path, workdir: Path, repeats: int) -> dict[str, object]:
    """Export by repo id (ranges) against a full snapshot download, both from a local Hub."""
    from tests.hub.fake_hub import FakeHub

    repo = "bench/mimo7b-synthetic"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env["HF_HUB_DISABLE_TELEMETRY"] = "1"
    runs: dict[str, list[float]] = {"export_repo_id": [], "snapshot_download": []}
    sent: dict[str, int] = {}
    with FakeHub() as hub:
        hub.add_model(repo, {f.name: f for f in sorted(src.iterdir()) if f.is_file()})
        env["HF_ENDPOINT"] = hub.url
        for i in range(repeats):
            for name, argv in (
                ("export_repo_id",
                 [*CLI, "export", repo, "--out", str(workdir / "draft-hub"), "--quiet"]),
                ("snapshot_download",
                 [sys.executable, "-c",
                  f"from huggingface_hub import snapshot_download; snapshot_download({repo!r})"]),
            ):  # fmt: skip
                home = workdir / f"hf-home-{name}-{i}"
                shutil.rmtree(home, ignore_errors=True)
                shutil.rmtree(workdir / "draft-hub", ignore_errors=True)
                before = sum(n for _p, n in hub.served)
                wall, _peak = run_child(argv, env={**env, "HF_HOME": str(home)})
                runs[name].append(wall)
                sent[name] = sum(n for _p, n in hub.served) - before
                shutil.rmtree(home, ignore_errors=True)
    ranged = statistics.median(runs["export_repo_id"])
    full = statistics.median(runs["snapshot_download"])
    return {
        "hub_export_repo_id_s": round(ranged, 3),
        "hub_snapshot_download_s": round(full, 3),
        "hub_time_ratio_vs_download": round(ranged / full, 3),
        "hub_bytes_sent_export": sent["export_repo_id"],
        "hub_bytes_sent_download": sent["snapshot_download"],
        "hub_bytes_ratio_vs_download": round(sent["export_repo_id"] / sent["snapshot_download"], 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--workdir", type=Path, default=Path(__file__).parent / "out")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None, help="also write results here")
    ap.add_argument("--no-hub", action="store_true", help="skip the export from a repo id")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    src = build_source(args.workdir)
    baseline_in, mtp_total = mtp_bytes_file(src, args.workdir)
    ckpt_bytes = sum(p.stat().st_size for p in src.glob("*.safetensors"))
    warm([*src.glob("*.safetensors"), baseline_in])

    results: dict[str, list[float]] = {
        "cp": [],
        "cp_sha256sum": [],
        "export_keep": [],
        "export_fp32": [],
    }
    rss: dict[str, int] = {}
    for _ in range(args.repeats):
        dst = args.workdir / "cp-out.bin"
        dst.unlink(missing_ok=True)
        results["cp"].append(run_child(["cp", "--reflink=never", str(baseline_in), str(dst)])[0])
        dst.unlink()
        # what export also does: hash the bytes it writes (the manifest's sha256)
        script = f"cp --reflink=never {baseline_in} {dst} && sha256sum {dst} >/dev/null"
        results["cp_sha256sum"].append(run_child(["sh", "-c", script])[0])
        for name, extra in (("export_keep", []), ("export_fp32", ["--dtype", "fp32"])):
            out = args.workdir / f"draft-{name}"
            shutil.rmtree(out, ignore_errors=True)  # like cp's target: a fresh path
            wall, peak = run_child([*CLI, "export", str(src), "--out", str(out), "--quiet", *extra])
            results[name].append(wall)
            rss[name] = max(rss.get(name, 0), peak)
    # interpreter start-up share: `--version` imports the CLI but does no work
    startup = statistics.median(run_child([*CLI, "--version"])[0] for _ in range(args.repeats))
    cp = statistics.median(results["cp"])
    cp_hash = statistics.median(results["cp_sha256sum"])
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "checkpoint_bytes": ckpt_bytes,
        "mtp_bytes": mtp_total,
        "repeats": args.repeats,
        "cp_s": round(cp, 3),
        "cp_sha256sum_s": round(cp_hash, 3),
        "cli_startup_s": round(startup, 3),
    }
    for name in ("export_keep", "export_fp32"):
        wall = statistics.median(results[name])
        report[f"{name}_s"] = round(wall, 3)
        report[f"{name}_ratio_vs_cp"] = round(wall / cp, 2)
        report[f"{name}_minus_startup_ratio_vs_cp"] = round((wall - startup) / cp, 2)
        report[f"{name}_ratio_vs_cp_sha256sum"] = round(wall / cp_hash, 2)
        report[f"{name}_peak_rss_bytes"] = rss[name]
    if not args.no_hub:
        report |= hub_export(src, args.workdir, args.repeats)
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
