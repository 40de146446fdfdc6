"""Export benchmark on a MiMo-7B-shaped synthetic checkpoint (about 2.9 GB).

The checkpoint has the real MTP layer shapes and the real untied ``embed_tokens`` /
``lm_head`` (151680 x 4096 bf16), spread over 3 shards. Each export is timed against
``cp`` of exactly the MTP tensors' bytes, measured in the same run with the same
(warm) page cache, and reported as a ratio because shared machines are noisy. Peak RSS
comes from ``wait4`` on the child process.

Usage: python bench/bench_export.py [--workdir DIR] [--repeats N] [--json FILE]
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

from fastmtp_export.checkpoints.checkpoint import SourceCheckpoint
from fastmtp_export.checkpoints.readers import resolve_reader
from fastmtp_export.checkpoints.synthetic import MIMO_7B, mimo_config, write_synthetic_mimo

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


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--workdir", type=Path, default=Path(__file__).parent / "out")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None, help="also write results here")
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
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
