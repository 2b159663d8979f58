"""The floor for the load benchmark: a Gradio app with one endpoint that does nothing,
behind the same login mechanism as `rlhf serve`, so that a client's round trip through
Gradio itself can be measured in the same run as the workbench's."""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402


def build() -> gr.Blocks:
    with gr.Blocks() as app:
        def submit_ranking(handout: str, ranking: str, fetch_next: bool = False) -> dict:
            """Answers the shape of a submit without doing any of its work."""
            return {"status": "stored", "ranking": ranking, "ranking_id": 0,
                    "next": {"handout": handout, "prompt": "", "completions": {}}}

        def next_comparison() -> dict:
            return {"handout": "0" * 32, "prompt": "", "completions": {}}

        gr.api(submit_ranking, api_name="submit_ranking", concurrency_limit=16)
        gr.api(next_comparison, api_name="next_comparison", concurrency_limit=16)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--password", required=True, help="every user name is accepted with this password")
    args = parser.parse_args()
    app = build()
    app.queue(default_concurrency_limit=16)
    app.launch(server_name="127.0.0.1", server_port=args.port, quiet=True,
               auth=lambda _name, password: password == args.password)


if __name__ == "__main__":
    main()
