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
    researcher = User("rita", "researcher")
    assert require_role(researcher, "researcher", "admin") is researcher


def test_require_role_refuses_with_one_sentence():
    with pytest.raises(PermissionDenied) as refused:
        require_role(User("ana", "annotator"), "researcher", "admin")
    message = str(refused.value)
    assert message == "Only researchers or admins may do this, and ana is an annotator."
    with pytest.raises(PermissionDenied, match="log in"):
        require_role(None, *auth.ROLES)
    assert isinstance(refused.value, PermissionError)


def test_a_user_cannot_be_changed_after_login():
    user = User("ana", "annotator")
    with pytest.raises(dataclasses.FrozenInstanceError):
        user.role = "admin"


# -- users in the store ---------------------------------------------------------------------


def test_created_users_can_log_in_with_their_password_only(store):
    assert auth.create_user(store, " ana ", "annotator", "s3cret-pass") == User("ana", "annotator")
    assert auth.authenticate(store, "ana", "s3cret-pass") == User("ana", "annotator")
    assert auth.authenticate(store, "ana", "wrong-pass") is None
    assert auth.authenticate(store, "nobody", "s3cret-pass") is None
    assert auth.get_user(store, "ana") == User("ana", "annotator")


def test_a_taken_name_is_refused_and_the_first_password_kept(store):
    auth.create_user(store, "ana", "annotator", "first-password")
    with pytest.raises(auth.AuthError, match="already a user named 'ana'"):
        auth.create_user(store, "ana", "admin", "second-password")
    assert auth.authenticate(store, "ana", "first-password") == User("ana", "annotator")


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
        assert auth.authenticate(store, "ana", "s3cret-pass") == User("ana", "annotator")
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
