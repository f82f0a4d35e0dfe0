"""Docs that must stay true: the generated config reference, and help with an example on every command."""

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

from coordinator.cli import app
from shared.config import Config
from shared.config_doc import render
from tests.conftest import REPO

runner = CliRunner()


def test_config_doc_is_in_sync_with_the_schema():
    assert (REPO / "docs" / "generated" / "config.md").read_text() == render(), (
        "docs/generated/config.md is stale: run `python -m shared.config_doc > docs/generated/config.md`"
    )


def test_every_config_field_has_a_description():
    for name, field in Config.model_fields.items():
        fields = type(field.default).model_fields if isinstance(field.default, BaseModel) else {name: field}
        for fname, f in fields.items():
            assert f.description, f"{name}.{fname} has no description"


@pytest.mark.parametrize(
    "command",
    [
        "plan",
        "train",
        "sample",
        "eval",
        "serve",
        "submit",
        "status",
        "cancel",
        "retrain",
        "bench quality",
        "bench memory",
        "bench sampling",
        "bench scaling",
        "bench dispatch",
    ],
)
def test_every_command_has_help_with_an_example(command):
    result = runner.invoke(app, [*command.split(), "--help"], terminal_width=200)
    assert result.exit_code == 0
    assert "Example" in result.output, f"`dblocks {command} --help` shows no example"


def test_the_docs_index_names_every_page():
    """docs/README.md says which page answers what: a page added without a line there is missing from it."""
    docs = REPO / "docs"
    index = (docs / "README.md").read_text()
    pages = {p.relative_to(docs).as_posix() for p in docs.rglob("*.md")} | {"generated/openapi.json"}
    missing = sorted(p for p in pages - {"README.md"} if p not in index)
    assert not missing, missing


def test_every_committed_result_is_cited_and_named_by_the_convention():
    """Every file under benchmarks/results/ backs a number some doc states (cited by its path from README.md or a
    page of docs/), and is named `<benchmark>-<case>[-<device>].json` in the one folder (benchmarks/README.md)."""
    import re

    results = REPO / "benchmarks" / "results"
    texts = [(REPO / "README.md").read_text(), (REPO / "benchmarks" / "README.md").read_text()]
    texts += [p.read_text() for p in (REPO / "docs").rglob("*.md")]
    cited = "\n".join(texts)
    files = [p.relative_to(results).as_posix() for p in results.rglob("*") if p.is_file() and p.name != ".gitkeep"]
    assert files
    uncited = sorted(f for f in files if f not in cited)
    assert not uncited, f"results no doc cites: {uncited}"
    misnamed = sorted(f for f in files if not re.fullmatch(r"[a-z0-9]+(-[a-z0-9.]+)+\.(json|log)", f))
    assert not misnamed, f"results not named <benchmark>-<case>[-<device>].json: {misnamed}"
