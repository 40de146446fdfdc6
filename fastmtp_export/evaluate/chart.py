"""The acceptance chart of ``eval``: acceptance per draft position, per language and mode."""

from __future__ import annotations

import io
from pathlib import Path

from .._util.atomic import atomic_write
from ..artifact.eval_record import EvaluationInfo
from ..errors import EvalError


def chart_png(info: EvaluationInfo) -> bytes:
    """A PNG, one panel per vocabulary mode: bars per draft position (1..K) and language.

    A bar is the % of verify steps accepting at least that many drafts; the legend
    carries each language's tau in that mode.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display, no GUI toolkit
        import matplotlib.pyplot as plt
    except ImportError:
        raise EvalError("the chart needs matplotlib: pip install 'fastmtp-export[eval]'") from None
    modes = list(info.modes)
    langs = sorted({lang for r in info.modes.values() for lang in r.languages})
    width = 0.8 / max(len(langs), 1)
    fig, axes = plt.subplots(
        1, len(modes), figsize=(3.2 * len(modes) + 1, 3.6), dpi=120, sharey=True, squeeze=False
    )
    for ax, mode in zip(axes[0], modes, strict=True):
        for i, lang in enumerate(langs):
            st = info.modes[mode].languages.get(lang)
            if st is None:
                continue
            xs = [p + (i - (len(langs) - 1) / 2) * width for p in range(1, info.k + 1)]
            ys = [0.0 if v is None else 100 * v for v in st.position_acceptance]
            tau = "-" if st.accept_length is None else f"{st.accept_length:.2f}"
            ax.bar(xs, ys, width, label=f"{lang} (tau {tau})", color=f"C{i}")
        ax.set_title(f"vocab {mode}")
        ax.set_xticks(range(1, info.k + 1))
        ax.set_xlabel("draft position")
        ax.set_ylim(0, 125)  # headroom for the legend above full bars
        ax.set_yticks(range(0, 101, 20))
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, loc="upper right")
    axes[0][0].set_ylabel("verify steps accepting it (%)")
    fig.suptitle(f"Acceptance per position, K={info.k}, {info.prompts} prompts, {info.device}")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def write_chart(info: EvaluationInfo, path: Path) -> None:
    atomic_write(path, chart_png(info))
