"""llm_known's config with another known-answer law, for tests against the stub (no Triton).

The stub times a streamed answer by the model's config parameters (stub/catalog.StreamLaw):
first token a + b·words after the request, then one every c. A faster law than the committed
one (a = 250, b = 2, c = 20 ms) keeps a test short while its figures stay known.
"""

from __future__ import annotations

from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent / "model_repository"
FAST_LAW_MS = (40.0, 4.0, 10.0)  # a, b, c


def law_repository(root: Path, law_ms: tuple[float, float, float] = FAST_LAW_MS) -> Path:
    """A repository in `root` holding llm_known with the law (a, b, c) in ms."""
    text = (REPOSITORY / "llm_known" / "config.pbtxt").read_text()
    keys = ("ttft_base_ms", "ttft_per_input_token_ms", "ms_per_output_token")
    for key, value in zip(keys, law_ms, strict=True):
        head, tail = text.split(f'key: "{key}"', 1)
        old = tail.split('string_value: "', 1)[1].split('"', 1)[0]
        text = (
            head
            + f'key: "{key}"'
            + tail.replace(f'string_value: "{old}"', f'string_value: "{value:g}"', 1)
        )
    (root / "llm_known").mkdir()
    (root / "llm_known" / "config.pbtxt").write_text(text)
    return root
