"""Passwords, roles and users: hashing, role checks, the users table, and the
`rlhf users` commands (passwords from a terminal or stdin, never from argv). No model
needed: a bare store, or a home that was never initialised."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import sys

import pytest

from app.cli import main
from rlhf import auth
from rlhf.auth import PermissionDenied, User, hash_password, require_role, verify_password
from storage.db import Store
from helpers import ANA, RESEARCHER


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "workbench.duckdb") as opened:
        yield opened


# -- passwords ------------------------------------------------------------------------------


def test_a_hash_verifies_its_password_and_describes_itself():
    stored = hash_password("correct horse")
    scheme, n, r, p, salt, digest = stored.split("$")
    assert (scheme, n, r, p) == ("scrypt", "16384", "8", "1")
    assert len(base64.b64decode(salt)) == 16
    assert verify_password("correct horse", stored)
    assert "correct horse" not in stored


def test_a_wrong_password_does_not_verify():
    stored = hash_password("correct horse")
    assert not verify_password("correct horsE", stored)
    assert not verify_password("", stored)


def test_the_same_password_hashes_differently_each_time():
    first, second = hash_password("same"), hash_password("same")
    assert first != second  # random salt: equal passwords are not visible as equal hashes
    assert verify_password("same", first) and verify_password("same", second)


@pytest.mark.parametrize("stored", ["", "plain", "bcrypt$1$2$3$c2FsdA==$aGFzaA==", "scrypt$x$8$1$c2FsdA==$aGFzaA==",
                                    "scrypt$16384$8$1$not base64$aGFzaA=="])
def test_a_stored_value_that_is_not_our_hash_never_verifies(stored):
    assert verify_password("anything", stored) is False


# -- roles ----------------------------------------------------------------------------------


def test_require_role_lets_the_right_roles_through():
    assert require_role(RESEARCHER, "researcher", "admin") is RESEARCHER


def test_require_role_refuses_with_one_sentence():
    with pytest.raises(PermissionDenied) as refused:
        require_role(ANA, "researcher", "admin")
    message = str(refused.value)
    assert message == "Only researchers or admins may do this, and ana is an annotator."
    with pytest.raises(PermissionDenied, match="log in"):
        require_role(None, *auth.ROLES)
    assert isinstance(refused.value, PermissionError)


def test_a_user_cannot_be_changed_after_login():
    with pytest.raises(dataclasses.FrozenInstanceError):
        ANA.role = "admin"


# -- users in the store ---------------------------------------------------------------------


def test_created_users_can_log_in_with_their_password_only(store):
    assert auth.create_user(store, " ana ", "annotator", "s3cret-pass") == ANA
    assert auth.authenticate(store, "ana", "s3cret-pass") == ANA
    assert auth.authenticate(store, "ana", "wrong-pass") is None
    assert auth.authenticate(store, "nobody", "s3cret-pass") is None
    assert auth.get_user(store, "ana") == ANA


def test_a_taken_name_is_refused_and_the_first_password_kept(store):
    auth.create_user(store, "ana", "annotator", "first-password")
    with pytest.raises(auth.AuthError, match="already a user named 'ana'"):
        auth.create_user(store, "ana", "admin", "second-password")
    assert auth.authenticate(store, "ana", "first-password") == ANA


@pytest.mark.parametrize("name, role, password, message", [
    ("", "annotator", "long-enough", "cannot be a user name"),
    ("two words", "annotator", "long-enough", "cannot be a user name"),
    ("ana", "boss", "long-enough", "'boss' is not a role"),
    ("ana", "annotator", "short", "at least 8 characters"),
])
def test_bad_users_are_refused(store, name, role, password, message):
    with pytest.raises(auth.AuthError, match=message):
        auth.create_user(store, name, role, password)
    assert auth.list_users(store).empty


def test_the_user_list_holds_no_password_hashes(store):
    auth.create_user(store, "rita", "researcher", "long-enough")
    auth.create_user(store, "root", "admin", "long-enough")
    frame = auth.list_users(store)
    assert list(frame.columns) == ["name", "role", "disabled", "must_change_password", "created_at"]
    assert frame[["name", "role"]].values.tolist() == [["rita", "researcher"], ["root", "admin"]]
    assert auth.count_admins(store) == 1


# -- the `rlhf users` commands --------------------------------------------------------------


@pytest.fixture
def cli(tmp_path, capsys, monkeypatch):
    """cli(stdin_text, *argv) -> (exit code, stdout, stderr) against a fresh home."""
    home = tmp_path / "home"

    def run(stdin_text: str, *argv: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin_text))
        code = main(list(argv) + ["--home", str(home)])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    run.home = home
    return run


def test_users_add_reads_the_password_from_stdin(cli):
    code, out, _ = cli("s3cret-pass\n", "users", "add", "ana")
    assert code == 0 and "Added annotator ana." in out and "no admin yet" in out
    code, out, _ = cli("root-pass-1\r\n", "users", "add", "root", "--role", "admin")
    assert code == 0 and out == "Added admin root.\n"
    code, out, _ = cli("", "users", "list", "--json")
    listed = json.loads(out)
    assert [(u["name"], u["role"]) for u in listed] == [("ana", "annotator"), ("root", "admin")]
    assert "password_hash" not in listed[0]
    with Store(cli.home / "workbench.duckdb") as store:
        assert auth.authenticate(store, "ana", "s3cret-pass") == ANA
        assert auth.authenticate(store, "root", "root-pass-1") == User("root", "admin")  # no stray '\r'


def test_users_add_asks_twice_at_a_terminal(cli, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    answers = iter(["typed-pass", "typed-pass"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    monkeypatch.setattr(sys, "stdin", Terminal(""))
    assert main(["users", "add", "tia", "--role", "researcher", "--home", str(cli.home)]) == 0

    answers = iter(["one-pass-1", "another-2"])
    assert main(["users", "add", "tom", "--home", str(cli.home)]) == 1
    with Store(cli.home / "workbench.duckdb") as store:
        assert auth.authenticate(store, "tia", "typed-pass") == User("tia", "researcher")
        assert auth.get_user(store, "tom") is None


def test_users_add_refusals_are_one_line(cli):
    cli("long-enough\n", "users", "add", "ana")
    code, out, err = cli("other-pass\n", "users", "add", "ana")
    assert code == 1 and out == "" and err == "rlhf: There is already a user named 'ana'.\n"
    code, _, err = cli("short\n", "users", "add", "bob")
    assert code == 1 and "at least 8 characters" in err


def test_the_password_is_never_an_argument(cli):
    with pytest.raises(SystemExit):
        cli("", "users", "add", "ana", "--password", "in-the-process-list")


def test_users_passwd_set_role_disable_and_enable(cli):
    cli("root-pass-1\n", "users", "add", "root", "--role", "admin")
    cli("first-pass\n", "users", "add", "ana")
    assert cli("second-pass\n", "users", "passwd", "ana", "--password-stdin")[:2] == (0, "ana has a new password.\n")
    assert cli("", "users", "set-role", "ana", "researcher")[:2] == (0, "ana is now a researcher.\n")
    code, out, _ = cli("", "users", "disable", "ana")
    assert code == 0 and out.startswith("ana is disabled")
    listed = {u["name"]: u for u in json.loads(cli("", "users", "list", "--json")[1])}
    assert listed["ana"]["disabled"] is True and listed["ana"]["role"] == "researcher"
    with Store(cli.home / "workbench.duckdb") as store:
        assert auth.authenticate(store, "ana", "second-pass") == User("ana", "researcher")
        with pytest.raises(PermissionDenied, match="The account 'ana' is disabled; ask an admin to enable it."):
            auth.session_user(store, "ana")
    assert cli("", "users", "enable", "ana")[:2] == (0, "ana is enabled again.\n")
    with Store(cli.home / "workbench.duckdb") as store:
        assert auth.session_user(store, "ana") == User("ana", "researcher")


def test_account_changes_are_refused_in_one_sentence_and_change_nothing(cli):
    cli("root-pass-1\n", "users", "add", "root", "--role", "admin")
    assert cli("", "users", "disable", "root")[2] == "rlhf: root is the last enabled admin; make another admin first.\n"
    assert cli("", "users", "set-role", "root", "annotator")[2].startswith("rlhf: root is the last enabled admin")
    code, _, err = cli("long-enough\n", "users", "passwd", "nobody")
    assert code == 1 and err == "rlhf: There is no user named 'nobody'; `rlhf users list` shows who there is.\n"
    assert "at least 8 characters" in cli("short\n", "users", "passwd", "root")[2]
    with Store(cli.home / "workbench.duckdb") as store:
        assert auth.session_user(store, "root") == User("root", "admin")
        assert auth.authenticate(store, "root", "root-pass-1") == User("root", "admin")


def test_a_changed_password_needs_the_current_one(store):
    auth.create_user(store, "ana", "annotator", "first-pass")
    with pytest.raises(auth.AuthError, match="current password is wrong"):
        auth.change_own_password(store, "ana", "not-it", "second-pass")
    with pytest.raises(auth.AuthError, match="must differ"):
        auth.change_own_password(store, "ana", "first-pass", "first-pass")
    auth.change_own_password(store, "ana", "first-pass", "second-pass")
    assert auth.authenticate(store, "ana", "first-pass") is None
    assert auth.authenticate(store, "ana", "second-pass") == ANA


def test_a_user_who_must_change_the_password_may_only_do_that(store):
    auth.create_user(store, "admin", "admin", "shown-once", must_change_password=True)
    with pytest.raises(PermissionDenied, match="admin must choose a new password first"):
        auth.session_user(store, "admin")
    assert auth.session_user(store, "admin", changing_password=True) == User("admin", "admin")
    auth.change_own_password(store, "admin", "shown-once", "my-own-pass")
    assert auth.session_user(store, "admin") == User("admin", "admin")
    with pytest.raises(PermissionDenied, match="log in"):
        auth.session_user(store, "nobody")


# -- `rlhf init`: the first admin, and a home for its owner only -----------------------------


def _bare_home(tmp_path):
    from conftest import placeholder_model_dir
    from rlhf.home import BASE_VERSION, Home

    home = Home(tmp_path / "home")
    placeholder_model_dir(home.model_dir(BASE_VERSION))
    return home


def test_inits_shown_once_admin_password_must_be_changed_at_first_sign_in(tmp_path):
    from rlhf.collect.workbench import Workbench

    with Workbench(_bare_home(tmp_path)) as wb:
        shown = wb.init().admin_password
        assert auth.authenticate(wb.store, "admin", shown) == User("admin", "admin")
        with pytest.raises(PermissionDenied, match="must choose a new password first"):
            auth.session_user(wb.store, "admin")


def test_init_at_a_terminal_asks_for_the_first_admins_password(tmp_path, monkeypatch, capsys):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    home = _bare_home(tmp_path)
    answers = iter(["typed-admin-pw", "typed-admin-pw"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    monkeypatch.setattr(sys, "stdin", Terminal(""))
    assert main(["init", "--home", str(home.root)]) == 0
    assert "with the password you chose" in capsys.readouterr().out
    with Store(home.db_path) as store:
        assert auth.session_user(store, "admin") == User("admin", "admin")  # no change forced
        assert auth.authenticate(store, "admin", "typed-admin-pw") == User("admin", "admin")


def test_the_home_and_database_are_readable_by_their_owner_only(tmp_path):
    import os
    import stat

    from rlhf.collect.workbench import Workbench

    home = _bare_home(tmp_path)  # the home exists already (its models/base), open to all
    with Workbench(home) as wb:
        wb.init()
    for directory in (home.root, home.jobs_dir, home.exports_dir):
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700, directory
    assert stat.S_IMODE(os.stat(home.db_path).st_mode) == 0o600


# -- sign-in throttling and sessions (in memory, with a fake clock) ---------------------------


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fail(guard, name="ana", address="10.0.0.1"):
    guard.admit(name, address)
    guard.settle(name, address, ok=False)


def test_failed_sign_ins_wait_longer_and_longer():
    clock = Clock()
    guard = auth.LoginGuard(auth.AccountSettings(free_failures=3, first_wait_s=1, max_wait_s=4), clock)
    for _ in range(3):
        fail(guard)
    with pytest.raises(auth.LoginRefused, match=r"^Too many failed sign-ins for 'ana' or from this address; "
                                                r"try again in 1 second\.$"):
        guard.admit("ana", "10.0.0.1")
    for expected in (2, 4, 4):  # doubling, up to max_wait_s
        clock.now += 10
        fail(guard)
        with pytest.raises(auth.LoginRefused, match=f"try again in {expected} seconds"):
            guard.admit("ana", "10.0.0.1")
    with pytest.raises(auth.LoginRefused):  # the same name from elsewhere waits as well
        guard.admit("ana", "10.9.9.9")
    with pytest.raises(auth.LoginRefused):  # and so does another name from the same address
        guard.admit("ben", "10.0.0.1")
    guard.admit("ben", "10.9.9.9")


def test_once_failing_tries_are_checked_one_at_a_time_and_a_crowd_is_not_held_up():
    clock = Clock()
    guard = auth.LoginGuard(auth.AccountSettings(free_failures=3), clock)
    for thread in range(20):
        guard.admit(f"worker{thread}", "10.0.0.1")  # twenty sign in at once from one address
    for thread in range(20):
        guard.settle(f"worker{thread}", "10.0.0.1", ok=thread >= 3)
    clock.now += 60
    guard.admit("name0", "10.0.0.1")  # past its wait, in flight
    with pytest.raises(auth.LoginRefused):
        guard.admit("name1", "10.0.0.1")


def test_a_success_forgives_the_names_failures():
    clock = Clock()
    guard = auth.LoginGuard(auth.AccountSettings(free_failures=2), clock)
    fail(guard, address="10.0.0.1")
    fail(guard, address="10.0.0.2")
    clock.now += 5
    guard.admit("ana", "10.0.0.3")
    guard.settle("ana", "10.0.0.3", ok=True)
    fail(guard, address="10.0.0.4")
    guard.admit("ana", "10.0.0.5")  # one failure since the success: no wait


def test_enough_failures_lock_the_name_until_the_lock_ends_or_an_admin_lifts_it():
    clock = Clock()
    guard = auth.LoginGuard(auth.AccountSettings(free_failures=100, lock_failures=4, lock_minutes=15), clock)
    for attempt in range(4):
        fail(guard, address=f"10.0.0.{attempt}")
    locked = r"^The account 'ana' is locked for 15 more minutes after 4 failed sign-ins; wait, or ask an admin\.$"
    with pytest.raises(auth.LoginRefused, match=locked):
        guard.admit("ana", "10.1.1.1")  # from any address, whatever the password
    clock.now += 14 * 60
    with pytest.raises(auth.LoginRefused, match="locked for 1 more minute after"):
        guard.admit("ana", "10.1.1.1")
    guard.admit("ben", "10.1.1.1")  # other names are not locked
    clock.now += 61
    guard.admit("ana", "10.1.1.1")
    guard.settle("ana", "10.1.1.1", ok=False)
    for attempt in range(3):
        fail(guard, address=f"10.2.0.{attempt}")
    with pytest.raises(auth.LoginRefused, match="locked"):
        guard.admit("ana", "10.1.1.1")
    guard.unlock("ana")
    guard.admit("ana", "10.1.1.1")


def test_the_guard_forgets_the_oldest_names_rather_than_fill_memory():
    guard = auth.LoginGuard(auth.AccountSettings(), Clock(), max_keys=50)
    for i in range(500):
        fail(guard, name=f"ghost{i}", address="10.0.0.1") if i < 3 else guard.settle(f"ghost{i}", "10.0.0.1", False)
    assert len(guard._strikes) <= 50


def test_an_idle_session_token_ends_and_use_keeps_it():
    from app.session import SessionTokens

    clock = Clock()
    tokens = SessionTokens(idle_seconds=60, clock=clock)
    tokens["t1"], tokens["t2"], tokens["t3"] = "ana", "ana", "ben"
    for _ in range(5):
        clock.now += 50
        assert tokens.get("t1") == "ana"  # used within the idle time: kept
    assert tokens.get("t2") is None and "t2" not in tokens  # unused for 250 s: ended
    assert tokens.get(None) is None
    assert tokens.end_user("ana") == 1 and tokens.get("t1") is None
    del tokens["t3"]
    assert tokens.get("t3") is None


def test_serve_refuses_account_settings_that_guard_nothing(cli):
    code, _, err = cli("", "serve", "--idle-hours", "0")
    assert code == 1 and err == "rlhf: idle hours must be above 0, not 0.0.\n"
