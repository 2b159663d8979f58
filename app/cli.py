"""The `rlhf` command line. Every command takes --home; those that print data take --json."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import sys
from pathlib import Path

from app.cli_tables import print_table
from rlhf import auth
from rlhf.compare import summaries
from rlhf.collect import imports
from rlhf.collect.formats import FormatError
from rlhf.errors import UserError
from rlhf.home import Home
from rlhf.preference.ranking import RankingError
from rlhf.modeling.sampling import MAX_K, MIN_K, SamplingParams
from rlhf.collect.exports import EXPORT_FORMATS
from rlhf.collect.workbench import ServerHoldsStore, Workbench
from rlhf import backup
from rlhf.backup import StoreError

USER_ERRORS = (UserError, FormatError, RankingError, StoreError)


def cmd_init(wb: Workbench, args) -> None:
    # at a terminal the first admin's password is typed (twice, unseen); without one (make
    # run, scripts) it is random, shown once, and must be replaced at the first sign-in
    chosen = None
    if sys.stdin.isatty() and auth.count_admins(wb.store) == 0:
        print("Choose a password for the first admin, 'admin' (at least 8 characters).")
        chosen = _read_password()
        auth.check_new_user("admin", "admin", chosen)
    report = wb.init(admin_password=chosen)
    print(f"Home ready at {report.home}")
    print(f"  database: {wb.home.db_path} (schema version {report.schema_version})")
    print(f"  base model: {report.base_model}")
    print(f"  prompt set '{report.prompt_set}': {report.prompts_added} new prompts")
    if report.admin_password:
        print(f"  first admin created: log in as 'admin' with password {report.admin_password}")
        print("  (shown once, and to be replaced at the first sign-in; "
              "`rlhf users add NAME --role annotator|researcher|admin` adds people)")
    elif chosen is not None:
        print("  first admin created: log in as 'admin' with the password you chose")
    _prepare_first_comparison(wb)
    print("Next: `rlhf generate --n 8` to make comparisons, or `rlhf serve` to open the workbench.")


def _prepare_first_comparison(wb: Workbench) -> None:
    """A fresh home gets its first comparison now, so that `rlhf serve` has one to hand out
    the moment it answers; a model that cannot sample leaves it to the server, said in a line."""
    from rlhf.collect.annotation import Annotation
    from rlhf.collect.pregenerate import prepare_first

    try:
        made = prepare_first(Annotation(wb))
    except UserError as error:
        print(f"  no first comparison prepared ({error}); the server's pre-generator will make them")
        return
    if made:
        print(f"  first comparison prepared (id {made[0]}): annotators get one as soon as `rlhf serve` answers")


def cmd_serve(wb: Workbench, args) -> None:
    from app.server import serve  # Gradio is imported only by the command that needs it
    from rlhf.modeling import precision

    precision.requested()  # a bad RLHF_PRECISION refuses here, not in the sampling child
    accounts = auth.AccountSettings(lock_failures=args.lock_failures, lock_minutes=args.lock_minutes,
                                    idle_hours=args.idle_hours)
    serve(wb, host=args.host, port=args.port, accounts=accounts)


def cmd_prompts_import(wb: Workbench, args) -> None:
    added = wb.import_prompts(args.file, args.set)
    print(f"Imported {added} new prompts from {args.file} into set '{args.set or Path(args.file).name.split('.')[0]}'.")


def cmd_prompts_list(wb: Workbench, args) -> None:
    print_table(wb.prompt_sets(), args.json, "No prompt sets yet: run `rlhf init`.")


def cmd_generate(wb: Workbench, args) -> None:
    params = SamplingParams(args.temperature, args.top_p, args.max_new_tokens, args.seed)
    created = wb.generate(args.set, args.n, args.k, args.model, params)
    if args.json:
        print(json.dumps({"comparisons": created}))
    elif created:
        ids = f"id {created[0]}" if len(created) == 1 else f"ids {created[0]}–{created[-1]}"
        print(f"Made {len(created)} comparison{'s' if len(created) > 1 else ''} of {args.k} completions ({ids}).")
    else:
        print("Every prompt in the selection already has a comparison from this model; nothing to do.")


def cmd_comparisons(wb: Workbench, args) -> None:
    frame = wb.comparisons(pending=args.pending, limit=args.limit)
    if not args.json:
        frame = frame.assign(completions=frame["completions"].map(lambda c: " | ".join(t[:40] for t in c)))
        frame = frame.assign(prompt=frame["prompt"].str.slice(0, 60))[["id", "prompt_set", "prompt", "k", "rankings", "completions"]]
    print_table(frame, args.json, "No comparisons yet: `rlhf generate` makes some.")


def cmd_rank(wb: Workbench, args) -> None:
    ranking = wb.rank(args.comparison_id, args.ranking, args.user)
    print(f"Stored {ranking.canonical} for comparison {args.comparison_id} by {args.user.strip()}.")


def cmd_rankings_import(wb: Workbench, args) -> None:
    if args.from_tool:
        _import_from_tool(wb, args)
        return
    if args.data:
        raise UserError("--data goes with --from potato.")
    if args.skip_invalid and not args.pairs:
        raise UserError("--skip-invalid goes with --pairs; a rankings file is imported whole or not at all.")
    if args.pairs:
        skipped: list[FormatError] | None = [] if args.skip_invalid else None
        try:
            count = wb.import_pairs(args.file, args.set, skipped)
        except FormatError as error:
            if error.line is None or args.skip_invalid:
                raise
            raise UserError(f"{error} Nothing was imported; --skip-invalid imports the other rows.") from None
        for row in skipped or ():
            print(f"Skipped line {row.line}: {row.reason}.")
        left_out = f", skipped {len(skipped)} unusable rows" if skipped else ""
        print(f"Imported {count} preference pairs from {args.file} as ranked comparisons (source: import)"
              f"{left_out}.")
    else:
        count = wb.import_rankings(args.file)
        print(f"Imported {count} rankings from {args.file}.")


def _import_from_tool(wb: Workbench, args) -> None:
    if args.pairs or args.skip_invalid:
        raise UserError("--from imports another tool's rankings whole or not at all; it goes without --pairs and"
                        " --skip-invalid.")
    try:
        done = wb.import_from(args.from_tool, args.file, args.set, args.data)
    except FormatError as error:
        raise UserError(f"{error} Nothing was imported.") from None
    created = f"; new annotators (no password yet): {', '.join(done.users_created)}" if done.users_created else ""
    print(f"Imported {done.rankings} rankings of {done.comparisons} comparisons from {args.file} ({args.from_tool}),"
          f" prompts in set '{done.prompt_set}'{created}.")


def cmd_export(wb: Workbench, args) -> None:
    if args.format == "hf":
        _export_hf(wb, args)
        return
    if args.license or args.annotator_names:
        raise UserError("--license and --annotator-names go with --format hf.")
    path, rows = wb.export(args.format, args.out, args.selection)
    if args.json:
        print(json.dumps({"path": str(path), "rows": rows, "format": args.format}))
    else:
        print(f"Wrote {rows} {args.format} rows to {path}.")


def _export_hf(wb: Workbench, args) -> None:
    from rlhf.collect import hf_dataset

    if not args.license:
        raise UserError("--format hf needs --license ID, the dataset's licence as a Hub id (cc-by-4.0, apache-2.0,"
                        " other, ...); nothing was written.")
    settings = hf_dataset.HFExportSettings(args.license, args.selection, args.annotator_names)
    done = hf_dataset.export(wb, args.out, settings)
    if args.json:
        print(json.dumps({"path": str(done.path), "rows": done.rows, "format": "hf"}))
    else:
        counts = ", ".join(f"{name} {rows}" for name, rows in done.rows.items())
        print(f"Wrote a Hugging Face dataset to {done.path} ({counts} rows); "
              f"load it with datasets.load_dataset({str(done.path)!r}, 'preference').")


def cmd_backup(wb: Workbench, args) -> None:
    _print_backup(backup.write_backup(wb.store, Path(args.directory).resolve()).tables, args)


def backup_via_server(home: Home, args, url: str) -> None:
    from rlhf.jobs.requests import BACKUP_WAIT_SECONDS, send_request

    directory = Path(args.directory).resolve()  # the server runs elsewhere in the file system
    answer = send_request(home, {"action": "backup", "directory": str(directory)}, BACKUP_WAIT_SECONDS)
    if "error" in answer:
        raise UserError(answer["error"])
    _print_backup(answer["tables"], args, f" by the server at {url}")


def _print_backup(tables: dict[str, int], args, by: str = "") -> None:
    directory = Path(args.directory).resolve()
    if args.json:
        print(json.dumps({"directory": str(directory), "tables": tables}))
        return
    print(f"Backed up {len(tables)} tables ({tables.get('rankings', 0)} rankings) to {directory}{by}. Model weights"
          " are not in it: copy the home's models/ beside it (`rlhf restore DIR --home NEW` brings the store back).")


def cmd_restore(home: Home, args) -> None:
    if home.db_path.exists():
        raise UserError(f"{home.root} already has a store; restore into a new home.")
    home.prepare()
    restored = backup.restore_backup(Path(args.directory), home.db_path)
    with Workbench(home):  # applies the migrations newer than the backup, closes the file to its owner
        pass
    print(f"Restored {len(restored.tables)} tables ({restored.tables.get('rankings', 0)} rankings) into"
          f" {home.db_path}. Copy the old home's models/ into {home.models_dir} for its versions' weights.")


def cmd_models(wb: Workbench, args) -> None:
    frame = wb.models()
    evaluated = summaries.version_summaries(wb)
    frame["evaluation"] = [evaluated.get(name, "") for name in frame["name"]]
    if not args.json:
        from app.job_views import GUARD_COLUMNS, guard_figure, stored_metrics
        from rlhf.modeling.hard_prompt import one_line

        stored = [stored_metrics(m) for m in frame["metrics"]]
        figures = {column: [guard_figure(m, key) for m in stored] for column, key in GUARD_COLUMNS.items()}
        frame = frame.assign(**figures,
                             guardrail=[m.get("guard/verdict") or "" for m in stored])
        frame["system_prompt"] = [one_line(text) for text in frame["system_prompt"]]
        frame["template"] = [one_line(text) for text in frame["template"]]
        frame = frame[["name", "kind", "status", "parent", "method", "objective", "system_prompt", "template",
                       "base_model", "completions", *GUARD_COLUMNS, "guardrail", "evaluation", "created_at"]]
    print_table(frame, args.json, "No model versions yet: run `rlhf init`.")


def cmd_models_add_prompt(wb: Workbench, args) -> None:
    text = args.system_prompt
    if args.file is not None:
        try:
            text = args.file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            reason = getattr(error, "strerror", None) or error
            raise UserError(f"Cannot read the system prompt from {args.file}: {reason}.") from None
    version = wb.add_prompt_version(args.name, args.parent, text, args.template)
    given = " and ".join(what for what, value in (("a system prompt", text), ("a template", args.template)) if value)
    print(f"Registered {version.name}: the weights of {version.parent} with {given}.")


def cmd_models_combine(wb: Workbench, args) -> None:
    from rlhf.preference.combination import parse_combination

    version = wb.add_reward_combination(args.name, args.spec)
    print(f"Registered {version.name}: the reward {parse_combination(args.spec).canonical}.")


def _read_password(from_stdin: bool = False) -> str:
    """Typed twice at a terminal, unseen; else (or with `from_stdin`) one line from stdin
    (for scripts), never from argv, where other users of the machine could read it in
    the process list."""
    if sys.stdin.isatty() and not from_stdin:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Password again: ") != password:
            raise UserError("The two passwords differ; nothing was stored.")
        return password
    return sys.stdin.readline().rstrip("\r\n")


def cmd_users_add(wb: Workbench, args) -> None:
    user = auth.create_user(wb.store, args.name, args.role, _read_password())
    print(f"Added {user.role} {user.name}.")
    if auth.count_admins(wb.store) == 0:
        print("There is no admin yet: `rlhf users add NAME --role admin` makes one.")


def cmd_users_list(wb: Workbench, args) -> None:
    print_table(auth.list_users(wb.store), args.json, "No users yet: `rlhf users add NAME --role admin` adds the first.")


# -- rlhf users passwd / set-role / disable / enable: the Users tab's actions, for a store no
# server holds (while one runs, an admin uses its Users tab, which also ends open sessions)

def cmd_users_passwd(wb: Workbench, args) -> None:
    user = auth.set_password(wb.store, args.name, _read_password(args.password_stdin))
    print(f"{user.name} has a new password.")


def cmd_users_set_role(wb: Workbench, args) -> None:
    user = auth.set_role(wb.store, args.name, args.role)
    print(f"{user.name} is now {'an' if user.role[0] in 'aeiou' else 'a'} {user.role}.")


def cmd_users_disable(wb: Workbench, args) -> None:
    user = auth.set_disabled(wb.store, args.name, True)
    print(f"{user.name} is disabled: they cannot sign in, and their rankings are kept.")


def cmd_users_enable(wb: Workbench, args) -> None:
    user = auth.set_disabled(wb.store, args.name, False)
    print(f"{user.name} is enabled again.")


def add_account_commands(user_commands, home_option) -> None:
    passwd = user_commands.add_parser(
        "passwd", parents=[home_option], help="set a user's password",
        description="The password is asked for twice at a terminal, else read as one line from stdin.")
    passwd.add_argument("name")
    passwd.add_argument("--password-stdin", action="store_true",
                        help="read it as one line from stdin even at a terminal")
    passwd.set_defaults(handler=cmd_users_passwd)
    set_role = user_commands.add_parser("set-role", parents=[home_option], help="change a user's role")
    set_role.add_argument("name")
    set_role.add_argument("role", choices=auth.ROLES)
    set_role.set_defaults(handler=cmd_users_set_role)
    for name, handler, help in (("disable", cmd_users_disable, "stop a user from signing in (rankings are kept)"),
                                ("enable", cmd_users_enable, "let a disabled user sign in again")):
        sub = user_commands.add_parser(name, parents=[home_option], help=help)
        sub.add_argument("name")
        sub.set_defaults(handler=handler)


def build_parser() -> argparse.ArgumentParser:
    # --home and --json may come before a subcommand (`rlhf jobs --json show 3`) or after it:
    # suppressed defaults, so that a subcommand's parser, which takes the same options, does not
    # put its default over what was given before it; the defaults live on the top parser.
    home_option = argparse.ArgumentParser(add_help=False)
    home_option.add_argument("--home", default=argparse.SUPPRESS,
                             help="workbench home (default: $RLHF_HOME or ./workbench)")
    json_option = argparse.ArgumentParser(add_help=False)
    json_option.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                             help="print JSON instead of a table")

    parser = argparse.ArgumentParser(prog="rlhf", description="RLHF Workbench: collect rankings, train, compare.")
    parser.set_defaults(home=None, json=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name, handler, help, parents=(home_option,), **kwargs):
        sub = commands.add_parser(name, help=help, description=help, parents=list(parents), **kwargs)
        sub.set_defaults(handler=handler)
        return sub

    command("init", cmd_init, "create or upgrade the home, import the default model, seed the default prompts")

    serve = command("serve", cmd_serve, "serve the workbench in the browser (owns the database while it runs)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=7860)
    accounts = auth.AccountSettings()
    serve.add_argument("--lock-failures", type=int, default=accounts.lock_failures,
                       help=f"failed sign-ins in a row that lock a user name (default {accounts.lock_failures})")
    serve.add_argument("--lock-minutes", type=float, default=accounts.lock_minutes,
                       help="how long a lock lasts; kept in memory, a restart lifts it "
                       f"(default {accounts.lock_minutes:g})")
    serve.add_argument("--idle-hours", type=float, default=accounts.idle_hours,
                       help=f"a session unused this long is ended (default {accounts.idle_hours:g})")

    prompt_commands = commands.add_parser("prompts", help="import and list prompts").add_subparsers(
        dest="prompts_command", required=True, metavar="COMMAND")
    prompts_import = prompt_commands.add_parser("import", parents=[home_option], help="import a prompt file",
                                                description="CSV, JSONL or Parquet with a `prompt` or `messages` "
                                                "column, or the HH-RLHF chosen/rejected layout; gzip accepted.")
    prompts_import.add_argument("file")
    prompts_import.add_argument("--set", help="prompt set name (default: the file name)")
    prompts_import.set_defaults(handler=cmd_prompts_import)
    prompt_commands.add_parser("list", parents=[home_option, json_option], help="prompt sets and their sizes"
                               ).set_defaults(handler=cmd_prompts_list)

    generate = command("generate", cmd_generate, "make comparisons for prompts this model has not compared yet",
                       parents=(home_option, json_option))
    generate.add_argument("--set", help="prompt set (default: all sets)")
    generate.add_argument("--n", type=int, default=8, help="number of prompts (default 8)")
    generate.add_argument("--k", type=int, default=4, help=f"completions per prompt, {MIN_K}-{MAX_K} (default 4)")
    generate.add_argument("--model", help="model version (default: the active policy)")
    defaults = SamplingParams()
    generate.add_argument("--temperature", type=float, default=defaults.temperature)
    generate.add_argument("--top-p", type=float, default=defaults.top_p)
    generate.add_argument("--max-new-tokens", type=int, default=defaults.max_new_tokens)
    generate.add_argument("--seed", type=int, default=None)

    comparisons = command("comparisons", cmd_comparisons, "list comparisons with their completions",
                          parents=(home_option, json_option))
    comparisons.add_argument("--pending", action="store_true", help="only those nobody has ranked yet")
    comparisons.add_argument("--limit", type=int, default=None)

    rank = command("rank", cmd_rank, 'record a ranking, e.g. rlhf rank 12 "C > B = D > A" --user ana')
    rank.add_argument("comparison_id", type=int)
    rank.add_argument("ranking", help="letters in the order shown, '>' better, '=' tie")
    rank.add_argument("--user", required=True)

    ranking_commands = commands.add_parser("rankings", help="import rankings").add_subparsers(
        dest="rankings_command", required=True, metavar="COMMAND")
    rankings_import = ranking_commands.add_parser(
        "import", parents=[home_option], help="import rankings or external preference pairs",
        description="Without --pairs: JSONL of {comparison_id, ranking, user}. With --pairs: TRL preference "
        "format or HH-RLHF, JSONL or Parquet (gzip accepted), stored as two-completion comparisons ranked chosen "
        "over rejected, the chosen answer at a random letter. With --from TOOL: another tool's export (Label Studio, "
        "Argilla, Potato, OpenAssistant), each annotator's rankings kept apart; see docs/imports.md.")
    rankings_import.add_argument("file")
    rankings_import.add_argument("--pairs", action="store_true", help="the file holds chosen/rejected pairs")
    rankings_import.add_argument("--set", help="prompt set for the pairs' prompts (default: the file name)")
    rankings_import.add_argument("--skip-invalid", action="store_true",
                                 help="with --pairs: import the usable rows and list each skipped one with its"
                                 " line and reason (default: a bad row stops the import, nothing is stored)")
    rankings_import.add_argument("--from", dest="from_tool", choices=imports.TOOLS, metavar="TOOL",
                                 help="FILE is another tool's export, each annotator's rankings kept apart as"
                                 " TOOL:NAME (docs/imports.md): " + "; ".join(
                                     f"{tool}: {about}" for tool, about in imports.TOOL_HELP.items()))
    rankings_import.add_argument("--data", help="with --from potato: the instances file (JSONL) the annotations"
                                 " were made on, which holds the texts")
    rankings_import.set_defaults(handler=cmd_rankings_import)

    export = command("export", cmd_export, "export rankings for training (Parquet or JSONL by extension; "
                     "--format hf: a Hugging Face dataset folder with its card)", parents=(home_option, json_option))
    export.add_argument("--format", required=True, choices=(*EXPORT_FORMATS, "hf"))
    export.add_argument("--selection", default="all", choices=("all", "best_vs_worst"),
                        help="preference pairs: all pairs of a ranking, or best group vs worst group")
    export.add_argument("--license", help="with --format hf: the dataset's licence, a Hub licence id (required)")
    export.add_argument("--annotator-names", action="store_true",
                        help="with --format hf: keep user names in the rankings subset (default: annotator-N)")
    export.add_argument("out", help="the file, or with --format hf a new or empty folder")

    backup_command = command("backup", cmd_backup, "back up the store as Parquet, one file per table, from one"
                             " snapshot; while `rlhf serve` runs, the server takes it", parents=(home_option, json_option))
    backup_command.add_argument("directory", help="a new or empty folder")
    backup_command.set_defaults(via_server=backup_via_server)
    restore = command("restore", cmd_restore, "make a new home's store from `rlhf backup`'s folder")
    restore.add_argument("directory")
    restore.set_defaults(without_store=True)

    models_command = command("models", cmd_models, "list model versions with their lineage",
                             parents=(home_option, json_option))
    models_commands = models_command.add_subparsers(dest="models_command", metavar="COMMAND")
    add_prompt = models_commands.add_parser(
        "add-prompt", parents=[home_option], help="register a policy version that is a parent plus a written prompt",
        description="A prompt version (hard prompt tuning): the parent's weights, no training, and a system prompt"
        " given before every prompt it answers, a template around the user's prompt, or both.")
    add_prompt.add_argument("name", help="the new version's name")
    add_prompt.add_argument("--parent", required=True, help="the policy version whose weights it uses")
    text = add_prompt.add_mutually_exclusive_group()
    text.add_argument("--system-prompt", help="the system prompt's text")
    text.add_argument("--file", type=Path, help="a UTF-8 text file holding the system prompt")
    add_prompt.add_argument("--template", help="the user's prompt put inside a text at {prompt}, e.g."
                            " 'Answer in one sentence: {prompt}' (with or without a system prompt)")
    add_prompt.set_defaults(handler=cmd_models_add_prompt)
    combine = models_commands.add_parser(
        "combine", parents=[home_option], help="register a reward version that combines reward versions (weighted, or"
        " gated as Llama 2)",
        description="A combination of reward versions, usable wherever a reward version is (PPO, GRPO, RLOO, the"
        " queue's suggestions and uncertain-first order, rlhf compare): 'NAME*W + NAME*W' is a weighted sum;"
        " 'gate:safety=NAME,helpfulness=NAME[,threshold=X][,category=safety]' scores with the safety model where the"
        " prompt's category is the flagged one or the safety score is below the threshold, else with helpfulness.")
    combine.add_argument("name", help="the new version's name")
    combine.add_argument("spec", help="e.g. 'helpfulness-3*0.7 + safety-4*0.3' or"
                         " 'gate:safety=safety-4,helpfulness=helpfulness-3,threshold=-1.7'")
    combine.set_defaults(handler=cmd_models_combine)

    user_commands = commands.add_parser("users", help="add, list and manage users").add_subparsers(
        dest="users_command", required=True, metavar="COMMAND")
    users_add = user_commands.add_parser(
        "add", parents=[home_option], help="add a user",
        description="The password is asked for at a terminal, else read as one line from stdin.")
    users_add.add_argument("name")
    users_add.add_argument("--role", default="annotator", choices=auth.ROLES, help="(default: annotator)")
    users_add.set_defaults(handler=cmd_users_add)
    user_commands.add_parser("list", parents=[home_option, json_option], help="users and their roles"
                             ).set_defaults(handler=cmd_users_list)
    add_account_commands(user_commands, home_option)

    from app import cli_compare, cli_demo, cli_jobs

    for module in (cli_jobs, cli_compare, cli_demo):
        module.add_commands(command, commands, home_option, json_option)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    home = Home.resolve(args.home)
    try:
        if getattr(args, "without_store", False):
            return args.handler(home, args) or 0
        try:
            wb = Workbench(home)
        except ServerHoldsStore as held:
            if getattr(args, "via_server", None) is None:
                raise
            return args.via_server(home, args, held.url) or 0
        with wb:
            return args.handler(wb, args) or 0
    except USER_ERRORS as error:
        print(f"rlhf: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
