"""An example task plugin: ``text.word_count`` counts the words of a text.

Load it in every web and worker process with ``GATEWAY_TASK_MODULES=examples.tasks.words``
(docs/TASKS.md). Its node, ``text``, is the RQ queue its runs wait in.
"""

from __future__ import annotations

import re
from collections import Counter

from gateway.tasks import TaskContext, task

#: A word: letters, with inner apostrophes ("don't", "l’eau"); digits and punctuation split.
WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*")
#: The most words ``top`` may ask for: the output stays small whatever the text.
MAX_TOP = 100


@task("text.word_count")
def word_count(input_data: dict, ctx: TaskContext) -> dict:
    """Count the words of ``input_data["text"]`` and list the ``input_data["top"]``
    (default 3, at most 100) most common, case-insensitively; ties keep the text's order.

    A bad input raises ``ValueError``: the stage ends ``FAILED`` with the message, and
    running it again cannot help, so the caller must send another input (under another
    ``task_id``, since a stage is reused by ``task_id`` and ``task_name`` alone).
    """
    text = input_data.get("text")
    if not isinstance(text, str):
        raise ValueError(f"input_data.text must be a string, got {type(text).__name__}")
    top = input_data.get("top", 3)
    if isinstance(top, bool) or not isinstance(top, int) or not 0 <= top <= MAX_TOP:
        raise ValueError(f"input_data.top must be a whole number from 0 to {MAX_TOP}, got {top!r}")
    words = [word.lower() for word in WORD.findall(text)]
    counts = Counter(words)
    return {
        "words": len(words),
        "distinct": len(counts),
        "top": [{"word": word, "count": count} for word, count in counts.most_common(top)],
    }
