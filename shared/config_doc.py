"""docs/generated/config.md, generated from the pydantic schema:
`python -m shared.config_doc > docs/generated/config.md`.

tests/test_docs.py fails when the committed file differs from what this prints (a field added without docs).
"""

from __future__ import annotations

import sys

from pydantic import BaseModel

from shared.config import CROSS_FIELD_BOUNDS, BlockResources, Config
from shared.tasks import TASKS


def _type_name(annotation) -> str:
    if "Annotated[int" in str(annotation):  # a list of bounded ints (blocks.layers): its bounds are in the doc
        return "list[int] or None"
    text = getattr(annotation, "__name__", None) if not getattr(annotation, "__args__", None) else None
    return text or str(annotation).replace("typing.", "").replace("shared.config.", "").replace(
        "shared.sections.", ""
    ).replace(" | ", " or ")


_BOUND_SYMBOLS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<", "min_length": "len >=", "max_length": "len <="}


def _bounds(field) -> str:
    """The field's limits as written in its schema, e.g. `>= 1, <= 64` (every number is also finite)."""
    parts = []
    for meta in field.metadata:
        for attr, symbol in _BOUND_SYMBOLS.items():
            value = getattr(meta, attr, None)
            if value is not None:
                parts.append(f"{symbol} {value:,}" if isinstance(value, int) else f"{symbol} {value:g}")
    return ", ".join(parts)


def _rows(prefix: str, section: type[BaseModel]) -> list[str]:
    rows = []
    for fname, f in section.model_fields.items():
        cells = [f"`{prefix}.{fname}`", f"`{_type_name(f.annotation)}`", f"`{f.default!r}`", _bounds(f)]
        rows.append(f"| {' | '.join(cells)} | {f.description or ''} |")
    return rows


def render() -> str:
    lines = [
        "# Config reference",
        "",
        "Generated from `shared/config.py` by `python -m shared.config_doc > docs/generated/config.md`; a test "
        "keeps it in sync. Every field has a default; unknown fields are errors; override any field with "
        "`--set section.field=value`. Every number must be finite (NaN and infinity are refused) and within its "
        "bounds; a value outside them is refused naming the field (exit 2 on the command line, 422 from the API), "
        "before anything is written.",
        "",
        "## Bounds across fields",
        "",
        "Products of fields that size one piece of work are bounded too (refused naming the fields):",
        "",
        *(f"- {bound}" for bound in CROSS_FIELD_BOUNDS),
        "",
    ]
    for name, field in Config.model_fields.items():
        if isinstance(field.default, BaseModel):
            section = type(field.default)
            lines += [f"## `{name}`", "", "| field | type | default | bounds | meaning |", "|---|---|---|---|---|"]
            lines += _rows(name, section)
            lines.append("")
            if name == "resources":
                lines += [
                    "Each `resources.per_block.<index>` entry may set:",
                    "",
                    "| field | type | default | bounds | meaning |",
                    "|---|---|---|---|---|",
                    *_rows("resources.per_block.<index>", BlockResources),
                    "",
                ]
        else:
            lines += [
                f"## `{name}`",
                "",
                f"`{_type_name(field.annotation)}`, default `{field.default!r}`: {field.description or ''}",
                "",
            ]
    lines += [
        "## Task sections",
        "",
        "A task with options of its own has a section named after it; a run sets only its own task's section "
        "(another task's is refused naming it). Defined in the task's folder (`shared/tasks/<name>/config.py`).",
        "",
    ]
    for name, task in sorted(TASKS.items()):
        if task.section is not None:
            lines += [
                f"### `{task.section}` (task `{name}`)",
                "",
                (task.section_model.__doc__ or "").strip(),
                "",
                "| field | type | default | bounds | meaning |",
                "|---|---|---|---|---|",
                *_rows(task.section, task.section_model),
                "",
            ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(render())
