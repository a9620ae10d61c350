"""The prompt an LLM explainer sees: exemplars with activations normalised to
0–10 and the strongest tokens marked, one polarity at a time (as in OpenAI's
and Transluce's pipelines, with the marking Transluce uses)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from neurodbg.describe.exemplars import NeuronExemplars

SYSTEM = ("We are studying neurons in a neural network. Each neuron looks for some particular thing in a short "
          "text. Look at the texts where the neuron activates and say, in one short sentence, what it looks for. "
          "Tokens marked <<like this>> are where it activates most; numbers after tokens are activations on a "
          "0-10 scale. Do not list many examples; name the concept.")

MARK = 7          # tokens normalised at or above this are marked <<…>>


def normalise(acts: np.ndarray, peak: float) -> np.ndarray:
    """Activations to integers 0–10 relative to the neuron's peak (negative -> 0)."""
    if peak <= 0:
        return np.zeros(len(acts), dtype=np.int64)
    return np.clip(np.round(acts / peak * 10), 0, 10).astype(np.int64)


def explain_messages(ex: NeuronExemplars, decode: Callable[[int], str], max_excerpts: int = 8
                     ) -> list[dict[str, str]]:
    peak = max((e.peak for e in ex.shown), default=0.0)
    lines = []
    for i, e in enumerate(ex.shown[:max_excerpts], 1):
        levels = normalise(e.acts, peak)
        text, active = [], []
        for pos in range(e.start, len(e.ids)):
            token = decode(int(e.ids[pos]))
            text.append(f"<<{token}>>" if levels[pos] >= MARK else token)
            if levels[pos] > 0:
                active.append(f"{token.strip() or repr(token)} {levels[pos]}")
        lines.append(f"Text {i}: {''.join(text).strip()}\nActivating tokens: {', '.join(active[:12]) or 'none'}")
    sign = "positive" if ex.polarity == "+" else "negative (most negative shown as 10)"
    user = (f"Neuron {ex.id}, {sign} activations.\n\n" + "\n\n".join(lines)
            + "\n\nIn one sentence, this neuron fires on:")
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def clean(reply: str) -> str:
    """The first non-empty line, without quotes or a leading 'This neuron fires on'."""
    line = next((s.strip() for s in reply.strip().splitlines() if s.strip()), "")
    for prefix in ("this neuron fires on", "the neuron fires on", "fires on"):
        if line.lower().startswith(prefix):
            line = line[len(prefix):].lstrip(" :")
    return line.strip("\"'“” ")
