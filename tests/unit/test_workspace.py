"""The Workspace owns every location: resolved once from settings, checked up front."""

from __future__ import annotations

import pytest

from regimes.app.workspace import Workspace
from regimes.config.settings import resolve_settings
from regimes.errors import ConfigError, RegimesError, StoreError

pytestmark = pytest.mark.unit


def test_every_location_derives_from_the_home(tmp_path):
    workspace = Workspace.open(home=tmp_path / "h", environ={})
    home = (tmp_path / "h").resolve()
    assert workspace.db_url == f"sqlite:///{home / 'regimes.db'}"
    assert workspace.models_dir == home / "models"
    assert workspace.registry_root == str(home / "registry")
    assert workspace.states_uri == str(home / "states")
    assert workspace.reports_dir == home / "reports"
    assert workspace.synth_dir == home / "synth"
    assert workspace.prefect_home == home / "prefect"
    assert workspace.storage_options is None
    assert workspace.state_store.root == str(home / "states")
    assert workspace.registry.root == str(home / "registry")
    assert not home.exists(), "opening a workspace creates nothing"


def test_an_object_store_root_takes_its_credentials_from_the_environment(tmp_path):
    environ = {
        "REGIMES_STATES_URI": "s3://bucket/states",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
        "AWS_ACCESS_KEY_ID": "key",
        "AWS_CONDITIONAL_PUT": "etag",
        "UNRELATED": "x",
    }
    workspace = Workspace.open(home=tmp_path, environ=environ)
    store = workspace.state_store
    assert store.root == "s3://bucket/states"
    assert store.storage_options == {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
        "AWS_ACCESS_KEY_ID": "key",
        "aws_conditional_put": "etag",
    }
    assert "key" not in repr(workspace.settings), "credentials must never be printed"
    assert "state store" not in workspace.local_locations()
    # A local root ignores the AWS variables: they belong to object stores only.
    local = Workspace.open(
        home=tmp_path, environ={"REGIMES_STATES_URI": str(tmp_path / "s"), "AWS_REGION": "x"}
    )
    assert local.state_store.storage_options is None
    assert local.local_locations()["state store"] == tmp_path / "s"


def test_params_rebuild_the_same_workspace(tmp_path):
    config_dir = resolve_settings(environ={}).config_dir
    workspace = Workspace.open(
        home=tmp_path, db_url="sqlite:///" + str(tmp_path / "x.db"), environ={}
    )
    again = Workspace.open(**workspace.params(), environ={})
    assert again.settings == workspace.settings
    assert again.config_dir == config_dir


def test_params_never_carry_a_database_password(tmp_path):
    """Flow parameters are stored and shown by Prefect: a URL with a password stays in
    REGIMES_DB_URL (the receiving side reads its own); in --db-url it is refused."""
    url = "postgresql+psycopg://regimes:pa55word-x@db:5432/regimes"
    environ = {"REGIMES_DB_URL": url}
    from_env = Workspace.open(home=tmp_path, environ=environ, check_locations=False)
    assert from_env.db_url == url and from_env.params()["db_url"] == ""
    again = Workspace.open(**from_env.params(), environ=environ, check_locations=False)
    assert again.db_url == url
    given = Workspace.open(home=tmp_path, db_url=url, environ=environ, check_locations=False)
    with pytest.raises(ConfigError) as refused:
        given.params()
    message = str(refused.value)
    assert "pa55word" not in message and "REGIMES_DB_URL" in message
    assert message.startswith("database URL postgresql+psycopg://regimes:***@db:5432/regimes:")
    # Without a password the URL is passed as it is.
    plain = "postgresql+psycopg://regimes@db:5432/regimes"
    assert Workspace.open(home=tmp_path, db_url=plain, environ={}).params()["db_url"] == plain


@pytest.mark.parametrize(
    "in_the_way, what",
    [
        ("", "home"),
        ("models", "models folder"),
        ("registry", "registry"),
        ("states", "state store"),
        ("reports", "reports folder"),
        ("prefect", "Prefect home"),
    ],
)
def test_a_file_in_the_way_of_a_location_is_one_line_naming_it(tmp_path, in_the_way, what):
    home = tmp_path / "home"
    if in_the_way:
        home.mkdir()
        (home / in_the_way).write_text("not a folder")
    else:
        home.write_text("not a folder")
    with pytest.raises(StoreError) as info:
        Workspace.open(home=home, environ={})
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"cannot create the {what} ")
    assert str(home / in_the_way if in_the_way else home) in message


def test_a_location_under_a_file_names_the_file(tmp_path):
    (tmp_path / "blocker").write_text("x")
    expected = r"cannot create the home .*blocker/h: .*blocker is a file"
    with pytest.raises(StoreError, match=expected):
        Workspace.open(home=tmp_path / "blocker" / "h", environ={})


def test_a_database_folder_in_the_way_is_refused_before_any_work(tmp_path):
    (tmp_path / "dbdir").write_text("x")
    url = f"sqlite:///{tmp_path / 'dbdir' / 'regimes.db'}"
    with pytest.raises(StoreError, match="cannot create the database folder"):
        Workspace.open(home=tmp_path / "h", db_url=url, environ={})


def test_a_read_only_location_is_refused(tmp_path):
    """A real read-only file system (a read-only bind mount needs privileges), else a
    folder without write permission for a non-root user."""
    import os
    import subprocess

    locked = tmp_path / "locked"
    locked.mkdir()
    mounted = False
    if os.geteuid() == 0:
        done = subprocess.run(
            ["mount", "--bind", "-o", "ro", str(locked), str(locked)], capture_output=True
        )
        if done.returncode != 0:
            pytest.fail(f"cannot make a read-only mount for the test: {done.stderr!r}")
        mounted = True
    else:
        locked.chmod(0o555)
    try:
        with pytest.raises(RegimesError, match=r"cannot (create|write) the home .*locked"):
            Workspace.open(home=locked / "home", environ={})
    finally:
        if mounted:
            subprocess.run(["umount", str(locked)], check=True)
        locked.chmod(0o755)


def test_close_disposes_the_engine_and_can_be_called_twice(tmp_path):
    with Workspace.open(home=tmp_path, environ={}) as workspace:
        engine = workspace.engine
        assert workspace.engine is engine
        with engine.connect():
            pass
        assert engine.pool.checkedin() == 1
    assert engine.pool.checkedin() == 0
    workspace.close()


def test_one_registry_and_one_state_store_per_workspace(tmp_path):
    """The registry's cache and its read-then-write concurrency check live in the object:
    the Workspace hands out the same one every time."""
    workspace = Workspace.open(home=tmp_path, environ={})
    assert workspace.registry is workspace.registry
    assert workspace.state_store is workspace.state_store


def test_the_registry_can_live_elsewhere_with_its_own_credentials(tmp_path):
    environ = {
        "REGIMES_REGISTRY_URI": "s3://bucket/registry",
        "AWS_ACCESS_KEY_ID": "key",
    }
    workspace = Workspace.open(home=tmp_path, environ=environ)
    assert workspace.registry.root == "s3://bucket/registry"
    assert workspace.registry.storage_options == {"AWS_ACCESS_KEY_ID": "key"}
    assert "registry" not in workspace.local_locations()
    assert workspace.state_store.storage_options is None  # the state store stayed local
    elsewhere = Workspace.open(
        home=tmp_path, environ={"REGIMES_REGISTRY_URI": str(tmp_path / "reg")}
    )
    assert elsewhere.local_locations()["registry"] == tmp_path / "reg"


def test_a_command_that_only_reads_is_not_stopped_by_a_location_it_never_uses(tmp_path):
    (tmp_path / "prefect").write_text("in the way")
    with pytest.raises(StoreError, match="Prefect home"):
        Workspace.open(home=tmp_path, environ={})
    reader = Workspace.open(home=tmp_path, environ={}, check_locations=False)
    assert reader.registry.current().empty


def test_object_store_retry_settings_come_from_the_environment_and_are_checked(tmp_path):
    environ = {
        "REGIMES_STATES_URI": "s3://bucket/states",
        "REGIMES_STORE_MAX_RETRIES": "2",
        "REGIMES_STORE_RETRY_TIMEOUT": "4s",
        "REGIMES_STORE_TIMEOUT": "1500ms",
        "REGIMES_STORE_BACKOFF_MAX": "1m 30s",
    }
    store = Workspace.open(home=tmp_path, environ=environ).state_store
    assert store.storage_options == {
        "max_retries": "2",
        "retry_timeout": "4s",
        "timeout": "1500ms",
        "backoff_config.max_backoff": "1m 30s",
    }
    for name, value in (("REGIMES_STORE_MAX_RETRIES", "-1"), ("REGIMES_STORE_TIMEOUT", "2")):
        with pytest.raises(ConfigError, match=f"{name}='{value}': expected"):
            resolve_settings(tmp_path, environ={**environ, name: value})
    # A local store has no client to retry: the variables are not its business.
    assert resolve_settings(tmp_path, environ={"REGIMES_STORE_TIMEOUT": "2"}).storage_options == {}
