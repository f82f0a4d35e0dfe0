"""docs/config.md, generated from the pydantic schema: `python -m shared.config_doc > docs/config.md`.

tests/test_docs.py fails when the committed file differs from what this prints (a field added without docs).
"""

from __future__ import annotations

import sys

from pydantic import BaseModel

from shared.config import BlockResources, Config


def _type_name(annotation) -> str:
    text = getattr(annotation, "__name__", None) if not getattr(annotation, "__args__", None) else None
    return text or str(annotation).replace("typing.", "").replace("shared.config.", "").replace(" | ", " or ")


def _rows(prefix: str, section: type[BaseModel]) -> list[str]:
    return [
        f"| `{prefix}.{fname}` | `{_type_name(f.annotation)}` | `{f.default!r}` | {f.description or ''} |"
        for fname, f in section.model_fields.items()
    ]


def render() -> str:
    lines = [
        "# Config reference",
        "",
        "Generated from `shared/config.py` by `python -m shared.config_doc > docs/config.md`; a test keeps it "
        "in sync. Every field has a default; unknown fields are errors; override any field with "
        "`--set section.field=value`.",
        "",
    ]
    for name, field in Config.model_fields.items():
        if isinstance(field.default, BaseModel):
            section = type(field.default)
            lines += [f"## `{name}`", "", "| field | type | default | meaning |", "|---|---|---|---|"]
            lines += _rows(name, section)
            lines.append("")
            if name == "resources":
                lines += [
                    "Each `resources.per_block.<index>` entry may set:",
                    "",
                    "| field | type | default | meaning |",
                    "|---|---|---|---|",
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
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(render())
