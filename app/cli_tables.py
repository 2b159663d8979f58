"""How the CLI prints a table: JSON records with --json, else the frame as text; shared by
`app.cli` and the command groups it adds (`app.cli_jobs`, ...), which import it from here
so that no command module imports the CLI's entry point."""

from __future__ import annotations

import pandas as pd


def print_table(frame: pd.DataFrame, as_json: bool, empty: str) -> None:
    if as_json:
        print(frame.to_json(orient="records", date_format="iso", force_ascii=False))
    elif frame.empty:
        print(empty)
    else:
        with pd.option_context("display.max_colwidth", 60, "display.width", 200):
            print(frame.to_string(index=False))
