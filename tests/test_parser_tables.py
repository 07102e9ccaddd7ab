"""The parser's LALR tables ship as JSON beside the grammar (ir_spec/xbar_tables.json):
loading them must give the parser that building them from xbar.lark gives, and they must be
rebuilt whenever the grammar changes (`python -m xbarc.ir.parser`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lark import __version__ as lark_version
from lark.exceptions import UnexpectedInput

from xbarc.diagnostics import XbarcError
from xbarc.ir import parser

ROOT = Path(__file__).resolve().parent.parent
TABLES = ROOT / "ir_spec" / parser.TABLES_FILE


def test_the_shipped_tables_were_built_from_this_grammar():
    built_from = json.loads(TABLES.read_text("utf-8"))["built_from"]
    grammar = (ROOT / "ir_spec" / "xbar.lark").read_text("utf-8")
    assert built_from["grammar_sha256"] == parser._tables_key(grammar)["grammar_sha256"], (
        "ir_spec/xbar.lark changed: regenerate the tables with `python -m xbarc.ir.parser`"
    )


def outcome(lark_parser, text: str) -> str:
    """What a parser makes of a text: the statements it builds, or the error it raises
    (its kind, token, place and the expected terminals as a sorted list: lark lists them
    from a set, in an order that differs between parsers)."""
    budget = parser._BUDGET.set(parser._Budget())  # what parse_program sets around a parse
    try:
        return repr(lark_parser.parse(text))
    except UnexpectedInput as error:
        place = (getattr(error, "token", None), error.line, error.column)
        expected = sorted(getattr(error, "expected", None) or getattr(error, "allowed", None) or [])
        return f"{type(error).__name__}: {place} expected {expected}"
    except Exception as error:  # raised by our transformer: the same from both
        return f"{type(error).__name__}: {error}"
    finally:
        parser._BUDGET.reset(budget)


def test_the_shipped_tables_parse_like_the_grammar():
    if json.loads(TABLES.read_text("utf-8"))["built_from"]["lark"] != lark_version:
        pytest.skip(f"the tables were built by another lark than {lark_version}")
    tables = parser._shipped_tables(parser._grammar())
    assert tables is not None  # this lark, this grammar: the tables are used
    loaded = parser.Lark.__new__(parser.Lark)._load(
        tables, transformer=parser._Builder(), postlex=parser._NamesEverywhere()
    )
    built = parser._build_parser(parser._grammar())
    texts = [path.read_text("utf-8") for path in sorted(ROOT.glob("tests/**/*.xbar"))]
    assert len(texts) > 50
    # damaged texts too: the same errors at the same tokens
    texts += [text[: len(text) // 3] for text in texts[:20]]
    texts += [text.replace("tile", "tiles", 1) for text in texts[:20]]
    outcomes = [outcome(built, text) for text in texts]
    assert (
        sum(
            not result.startswith(("UnexpectedToken", "UnexpectedCharacters", "Xbarc"))
            for result in outcomes
        )
        > 50
    )  # most texts parse: the comparison means something
    for text, expected in zip(texts, outcomes, strict=True):
        assert outcome(loaded, text) == expected


def test_tables_of_another_grammar_or_lark_are_not_used(monkeypatch):
    assert parser._shipped_tables("start: NAME\n") is None
    monkeypatch.setattr(parser, "lark_version", "0.0.0")
    assert parser._shipped_tables(parser._grammar()) is None


def test_a_program_parses_the_same_with_and_without_the_tables(monkeypatch):
    text = next(ROOT.glob("tests/golden/*.xbar")).read_text("utf-8")
    parser._parser.cache_clear()
    try:
        with_tables = parser.parse_program(text, "a.xbar").program
        monkeypatch.setattr(parser, "_shipped_tables", lambda grammar: None)
        parser._parser.cache_clear()
        built = parser.parse_program(text, "a.xbar").program
        assert with_tables == built
        with pytest.raises(XbarcError) as error:
            parser.parse_program(text.replace("=", "=>", 1), "a.xbar")
        assert "a.xbar:" in str(error.value)
    finally:
        parser._parser.cache_clear()
