"""Users (admins): add a user, set a role, reset a password, deactivate or reactivate, unlock; last sign-ins.

Every change is one transaction with its `user_admin` audit entry (dashboard.store.users). An edit applies only
to the version of the account this screen showed: when another admin changed it meanwhile, the edit is refused
and the admin reloads. A new password, a new role and deactivation end every session of that user at once.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard.access import ROLES, hash_password, password_problem
from dashboard.app.auth import accounts_engine, auth_config, current_role, current_user, require_screen
from dashboard.store import users

require_screen(__file__)  # first: signed in, in a role of SCREEN_ROLES, before any data is read

st.title("Users")
st.caption("Who may sign in, in which role. Users of the login configuration file are created from it; changes "
           "here are kept (see docs/security.md). Every change is in the audit log.")

config = auth_config()
engine = accounts_engine(config)
me, my_role = current_user(), current_role()
seen: dict[str, int] = st.session_state.setdefault("_users_seen", {})
notice = st.session_state.pop("_users_notice", None)
if notice:
    st.success(notice)

everyone = users.accounts(engine)
table = pd.DataFrame([{
    "User": a.username, "Name": a.name, "Role": a.role, "Active": a.active,
    "Last sign-in": a.last_sign_in.strftime("%Y-%m-%d %H:%M") if a.last_sign_in else "never",
    "Locked": users.is_locked(engine, users.user_subject(a.username, config.cookie_key)),
    "In file": a.from_file,
} for a in everyone])
st.dataframe(table, hide_index=True, width="stretch", key="users_table", column_config={  # fits 1024 pixels
    "User": st.column_config.TextColumn(width=80), "Name": st.column_config.TextColumn(width=115),
    "Role": st.column_config.TextColumn(width=80), "Active": st.column_config.CheckboxColumn(width=55),
    "Last sign-in": st.column_config.TextColumn(width=115, help="UTC"),
    "Locked": st.column_config.CheckboxColumn(width=55, help="locked out after repeated failed sign-ins"),
    "In file": st.column_config.CheckboxColumn(width=55, help="created from the login configuration file")})
st.caption("Last sign-in in UTC. Locked: locked out after repeated failed sign-ins. In file: created from the "
           "login configuration file.")

# ------------------------------------------------------------------------------------------ add a user
with st.form("users_add", clear_on_submit=True):
    st.subheader("Add a user")
    columns = st.columns(4)
    new_login = columns[0].text_input("User name", key="users_new_login")
    new_name = columns[1].text_input("Display name", key="users_new_name")
    new_role = columns[2].selectbox("Role", ROLES, key="users_new_role")
    new_password = columns[3].text_input("Password", type="password", key="users_new_password",
                                         autocomplete="new-password")
    add = st.form_submit_button("Add user")
if add:
    login = new_login.strip().lower()
    problem = password_problem(new_password, login)
    if not login or problem:
        st.error(problem or "Enter a user name.")
    else:
        try:
            users.add_user(engine, me, my_role, login, new_name, new_role, hash_password(new_password))
        except users.AccountError as error:
            st.error(str(error))
        else:
            st.session_state["_users_notice"] = f"User {login} added as {new_role}."
            st.rerun()

# --------------------------------------------------------------------------------------- change a user
st.subheader("Change a user")
names = [a.username for a in everyone]
picked = st.selectbox("User", names, key="users_pick", index=None, placeholder="Choose a user")
account = next((a for a in everyone if a.username == picked), None)
if account is not None:
    version = seen.setdefault(account.username, account.version)  # the version this screen showed first
    if version != account.version:
        st.warning("Another admin changed this user since you opened it: reload to see the changes.")
    if st.button("Reload", key="users_reload"):
        seen[account.username] = account.version
        st.rerun()
    with st.form(f"users_change_{account.username}", clear_on_submit=True):  # keys per user: its own values
        columns = st.columns(3)
        role = columns[0].selectbox("Role", ROLES, index=ROLES.index(account.role),
                                    key=f"users_role_{account.username}")
        password = columns[1].text_input("New password (leave empty to keep)", type="password",
                                         key=f"users_password_{account.username}",
                                         autocomplete="new-password")
        active = columns[2].checkbox("Active (may sign in)", value=account.active,
                                     key=f"users_active_{account.username}")
        save = st.form_submit_button("Save changes")
    if save:
        changes: dict = {}
        if role != account.role:
            changes["role"] = role
        if active != account.active:
            changes["active"] = active
        problem = password_problem(password, account.username) if password else None
        if password and not problem:
            changes["password_hash"] = hash_password(password)
        if problem:
            st.error(problem)
        elif account.username == me and ("role" in changes or changes.get("active") is False):
            st.error("You cannot change your own role or deactivate yourself: ask another admin.")
        elif not changes:
            st.info("Nothing to change.")
        else:
            try:
                changed = users.change_user(engine, me, my_role, account.username, version, **changes)
            except users.StaleEdit:
                st.error("Another admin changed this user meanwhile: nothing was saved. Reload and try again.")
            except users.AccountError as error:
                st.error(str(error))
            else:
                seen[account.username] = changed.version
                st.session_state["_users_notice"] = (f"User {account.username} changed; their sessions ended."
                                                     if changed.username != me else "Saved.")
                st.rerun()
    if st.button("Unlock sign-in", key="users_unlock",
                 help="Ends a lock-out after repeated failed sign-ins for this user name."):
        users.unlock(engine, me, my_role, account.username, config.cookie_key)
        st.session_state["_users_notice"] = f"Sign-in for {account.username} unlocked."
        st.rerun()
