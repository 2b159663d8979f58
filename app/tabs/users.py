"""Account tab (everyone): change one's own password, the one thing a user who must
choose a new password may do. Users tab (admins): add people, reset passwords, change
roles, disable and enable accounts. Every handler checks the role on the server again."""

from __future__ import annotations

import gradio as gr

from app.context import AppContext
from app.session import user_error
from rlhf import auth

STATE_CHOICES = [("Enabled", "enable"), ("Disabled", "disable")]


def build(ctx: AppContext) -> tuple[gr.Tab, gr.Tab]:
    """The Account tab and the Users tab (hidden until the page knows the user is an admin)."""
    store = ctx.wb.store

    def on_change_password(current: str, new: str, again: str, request: gr.Request):
        user = ctx.user(request, changing_password=True)
        with user_error():
            if new != again:
                raise auth.AuthError("The two new passwords differ; nothing was changed.")
            auth.change_own_password(store, user.name, current, new)
        return "Your password is changed; it is the one to sign in with from now on.", "", "", ""

    def as_admin(request: gr.Request) -> auth.User:
        return ctx.user(request, "admin")

    def listing(request: gr.Request):
        as_admin(request)
        return auth.list_users(store)

    def on_add(name: str, role: str, password: str, request: gr.Request):
        as_admin(request)
        with user_error():
            added = auth.create_user(store, name, role, password)
        return f"Added {added.role} {added.name}.", auth.list_users(store), ""

    def on_passwd(name: str, password: str, request: gr.Request):
        as_admin(request)
        with user_error():
            changed = auth.set_password(store, name, password)
        ctx.sign_in.end_sessions(changed.name)
        return f"{changed.name} has a new password and was signed out everywhere.", auth.list_users(store), ""

    def on_role(name: str, role: str, request: gr.Request):
        as_admin(request)
        with user_error():
            changed = auth.set_role(store, name, role)
        return f"{changed.name} is now {'an' if role[0] in 'aeiou' else 'a'} {role}.", auth.list_users(store)

    def on_state(name: str, state: str, request: gr.Request):
        as_admin(request)
        with user_error():
            if state not in ("enable", "disable"):
                raise auth.AuthError("Choose enable or disable.")
            changed = auth.set_disabled(store, name, state == "disable")
        ctx.sign_in.end_sessions(changed.name)
        done = "disabled and signed out everywhere" if state == "disable" else "enabled again"
        return f"{changed.name} is {done}.", auth.list_users(store)

    with gr.Tab("Account", id="account") as account_tab:
        gr.Markdown("Change your password. The current one is asked again, so an unlocked screen is not enough.")
        current = gr.Textbox(label="Current password", type="password", max_length=1024)
        new = gr.Textbox(label="New password", type="password", max_length=1024)
        again = gr.Textbox(label="New password again", type="password", max_length=1024)
        change = gr.Button("Change password", variant="primary")
        changed = gr.Markdown()
        change.click(on_change_password, [current, new, again], [changed, current, new, again],
                     api_name="change_password")

    with gr.Tab("Users", id="users", visible=False) as users_tab:
        gr.Markdown("Everyone who may sign in. A disabled user's open sessions are refused at their next request.")
        table = gr.Dataframe(interactive=False, label="Users")
        result = gr.Markdown()
        name = gr.Textbox(label="User name", max_length=64)
        with gr.Row():
            role = gr.Dropdown(list(auth.ROLES), value="annotator", label="Role")
            password = gr.Textbox(label="Password (for add or reset)", type="password", max_length=1024)
        with gr.Row():
            add = gr.Button("Add user")
            passwd = gr.Button("Reset password")
            set_role = gr.Button("Set role")
            state = gr.Radio(STATE_CHOICES, value="disable", label="Account")
            apply_state = gr.Button("Apply")
        users_tab.select(listing, None, table, api_name="list_users")
        add.click(on_add, [name, role, password], [result, table, password], api_name="add_user")
        passwd.click(on_passwd, [name, password], [result, table, password], api_name="set_password")
        set_role.click(on_role, [name, role], [result, table], api_name="set_role")
        apply_state.click(on_state, [name, state], [result, table], api_name="set_account_state")
    return account_tab, users_tab
